"""A blob store whose writes and deletes a test can intercept (races, crashes, concurrent commits)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rtsmonitor.storage import BlobStore

Hook = Callable[[str, tuple[object, ...]], None]
"""``hook(operation, args)``: ``operation`` names the call ("blob write", "blob delete", ...)."""


class HookedBlobs(BlobStore):
    """Blobs of ``inner``; ``hook(operation, (container, name))`` runs before every write and delete."""

    def __init__(self, inner: BlobStore, hook: Hook) -> None:
        self.inner, self.hook = inner, hook

    def read_bytes(self, container: str, name: str) -> bytes:
        return self.inner.read_bytes(container, name)

    def write_bytes(self, container: str, name: str, data: bytes, *, content_type: str | None = None) -> None:
        self.hook("blob write", (container, name))
        self.inner.write_bytes(container, name, data, content_type=content_type)

    def write_file(self, container: str, name: str, path: Path, *, content_type: str | None = None) -> None:
        self.hook("blob write", (container, name))
        self.inner.write_file(container, name, path, content_type=content_type)

    def exists(self, container: str, name: str) -> bool:
        return self.inner.exists(container, name)

    def list(self, container: str, prefix: str = "") -> list[str]:
        return self.inner.list(container, prefix)

    def delete(self, container: str, name: str) -> None:
        self.hook("blob delete", (container, name))
        self.inner.delete(container, name)

    def read_to_file(self, container: str, name: str, path: Path) -> None:
        self.inner.read_to_file(container, name, path)
