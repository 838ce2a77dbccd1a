"""Local files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``fill`` into a temporary file in its folder, then rename it into place.

    Readers (and a process killed mid-write) see the old file or the whole new one, never a part;
    the temporary file is removed on failure. Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all (:func:`write_atomically`). Returns ``path``."""
    data = text.encode("utf-8")
    return write_atomically(path, lambda out: out.write(data))
