"""Storage: blobs, table rows and queue messages behind one small interface, local or on Azure.

``open_storage(spec)`` returns a ``Storage`` for a local folder (the default: files + SQLite) or an
Azure storage account. The Azure backend lives in ``rtsmonitor.storage.azure`` and is imported only
when an ``azure:`` spec is opened, so code that only uses the local store never loads the Azure SDK.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from rtsmonitor.errors import NotFoundError, StorageError
from rtsmonitor.storage.base import BlobStore, Entity, QueueMessage, QueueStore, Storage, TableStore, TableValue
from rtsmonitor.storage.local import LocalStorage

__all__ = [
    "CONNECTION_STRING_VARS",
    "BlobStore",
    "Entity",
    "LocalStorage",
    "NotFoundError",
    "QueueMessage",
    "QueueStore",
    "Storage",
    "StorageError",
    "TableStore",
    "TableValue",
    "open_storage",
]

#: Environment variables ``open_storage("azure:")`` reads the connection string from, in order.
CONNECTION_STRING_VARS = ("RTS_STORAGE_CONNECTION_STRING", "AzureWebJobsStorage")

_SPEC_FORMS = (
    "a local folder path (e.g. ./rts-data) or 'local:PATH'; "
    f"'azure:' (connection string from ${CONNECTION_STRING_VARS[0]} or ${CONNECTION_STRING_VARS[1]}); "
    "or 'azure://ACCOUNT' (Entra ID login via DefaultAzureCredential)"
)
# A URL-like scheme: two or more characters, so that a Windows drive ("C:\\data") reads as a path.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def open_storage(spec: str, *, environ: Mapping[str, str] | None = None) -> Storage:
    """Open the storage named by ``spec``.

    Parameters
    ----------
    spec
        One of:

        - a folder path, or ``local:PATH``: ``LocalStorage(PATH)`` (created on first write);
        - ``azure:``: the Azure account (or Azurite) of the connection string in
          ``$RTS_STORAGE_CONNECTION_STRING``, else ``$AzureWebJobsStorage``;
        - ``azure://ACCOUNT``: ``https://ACCOUNT.{blob,table,queue}.core.windows.net`` with
          ``DefaultAzureCredential``.
    environ
        Where to read environment variables; ``os.environ`` by default.

    Raises
    ------
    StorageError
        If ``spec`` has none of these forms, or ``azure:`` finds no connection string.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise StorageError(f"empty storage spec {spec!r}; expected {_SPEC_FORMS}")
    match = _SCHEME_RE.match(spec)
    scheme = match.group(1).lower() if match else None
    if scheme is None:
        return LocalStorage(Path(spec))
    rest = spec[len(scheme) + 1 :]
    if scheme == "local" and rest:
        return LocalStorage(Path(rest))
    if scheme == "azure" and rest == "":
        env = os.environ if environ is None else environ
        for var in CONNECTION_STRING_VARS:
            connection_string = env.get(var, "").strip()
            if connection_string:
                from rtsmonitor.storage.azure import AzureStorage  # lazy: keep the SDK out of local use

                return AzureStorage.from_connection_string(connection_string)
        raise StorageError(
            f"storage spec 'azure:' needs a connection string in ${CONNECTION_STRING_VARS[0]} or "
            f"${CONNECTION_STRING_VARS[1]}, and neither is set"
        )
    if scheme == "azure" and rest.startswith("//"):
        account = rest[2:].rstrip("/")
        if re.fullmatch(r"[a-z0-9]{3,24}", account):
            from rtsmonitor.storage.azure import AzureStorage

            return AzureStorage.from_account(account)
        raise StorageError(
            f"invalid storage spec {spec!r}: the account name must be 3-24 lower-case letters and digits"
        )
    raise StorageError(f"invalid storage spec {spec!r}; expected {_SPEC_FORMS}")
