"""The storage interface: blobs, table rows and queue messages, whichever backend holds them.

Both backends (the local folder + SQLite store and Azure Storage) implement these classes and
check names and values by the same rules (Azure's), so code that works against the local store also
works against Azure.

Rules worth knowing:

- container and queue names: 3-63 lower-case letters, digits and single hyphens, starting and
  ending with a letter or digit; table names: 3-63 letters and digits, starting with a letter;
- blob names: ``/``-separated relative paths (virtual folders); no empty, ``.`` or ``..`` segment,
  no backslash, no leading ``/``;
- table entities are flat: ``PartitionKey`` and ``RowKey`` strings plus values of type ``str``,
  ``int`` (64-bit), ``float``, ``bool``, timezone-aware ``datetime`` or ``None``. A ``None`` value is
  not stored: the property is absent when the row is read back (Azure Tables has no nulls).
  Datetimes come back in UTC.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rtsmonitor.errors import StorageError

#: The types a table value may have (``None`` means "no such property").
TableValue = str | int | float | bool | datetime | None

#: A table row as the stores return it: ``PartitionKey``, ``RowKey`` and the stored properties.
Entity = dict[str, TableValue]

#: Largest ``int`` a table holds (Azure Tables Edm.Int64).
INT64_MAX = 2**63 - 1
#: Smallest ``int`` a table holds.
INT64_MIN = -(2**63)
#: Longest string property, in UTF-16 code units (Azure Tables: 64 KiB).
MAX_STRING_UNITS = 32 * 1024
#: Longest queue message, in UTF-8 bytes (64 KiB Azure limit after base64 encoding).
MAX_MESSAGE_BYTES = 48 * 1024
#: Most messages one ``receive`` returns (Azure Queue Storage limit).
MAX_RECEIVE = 32
#: Longest visibility timeout, in seconds (7 days, the Azure Queue Storage limit).
MAX_VISIBILITY_TIMEOUT_S = 7 * 24 * 3600

_CONTAINER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_PROPERTY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_KEY_FORBIDDEN_RE = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_RESERVED_PROPERTIES = frozenset({"Timestamp", "ETag", "odata"})
_MAX_BLOB_NAME = 1024
_MAX_KEY_BYTES = 1024


def check_container_name(name: str, kind: str = "container") -> str:
    """Return ``name`` if it is a valid container or queue name.

    Parameters
    ----------
    name
        The container (or queue) name.
    kind
        ``"container"`` or ``"queue"``, for the error message.

    Raises
    ------
    StorageError
        If the name breaks Azure's rules (3-63 lower-case letters, digits and single hyphens).
    """
    if not isinstance(name, str) or not _CONTAINER_RE.match(name):
        raise StorageError(
            f"invalid {kind} name {name!r}: use 3-63 lower-case letters, digits and single hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def check_table_name(name: str) -> str:
    """Return ``name`` if it is a valid table name.

    Raises
    ------
    StorageError
        If the name is not 3-63 letters and digits starting with a letter.
    """
    if not isinstance(name, str) or not _TABLE_RE.match(name):
        raise StorageError(f"invalid table name {name!r}: use 3-63 letters and digits, starting with a letter")
    return name


def check_blob_name(container: str, name: str) -> str:
    """Return ``name`` if it is a valid blob name.

    Raises
    ------
    StorageError
        If the name is empty, absolute, has a backslash, or an empty, ``.`` or ``..`` segment.
    """
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it is empty"
    elif len(name) > _MAX_BLOB_NAME:
        problem = f"it is longer than {_MAX_BLOB_NAME} characters"
    elif "\\" in name:
        problem = "it contains a backslash (use '/' for virtual folders)"
    elif name.startswith("/"):
        problem = "it is an absolute path (blob names are relative to the container)"
    elif any(segment in ("", ".", "..") for segment in name.split("/")):
        problem = "it has an empty, '.' or '..' path segment"
    elif any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        problem = "it contains a control character"
    if problem is not None:
        raise StorageError(f"invalid blob name {name!r} in container {container!r}: {problem}")
    return name


def _check_key(table: str, key_name: str, key: object) -> str:
    if not isinstance(key, str):
        raise StorageError(f"table {table!r}: {key_name} must be a str, got {type(key).__name__}")
    if _KEY_FORBIDDEN_RE.search(key) or len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        raise StorageError(
            f"table {table!r}: invalid {key_name} {key!r}: no '/', '\\', '#', '?' or control "
            f"characters, at most {_MAX_KEY_BYTES} bytes"
        )
    return key


def check_keys(table: str, partition_key: object, row_key: object) -> tuple[str, str]:
    r"""Return the two keys if both are valid table keys.

    Raises
    ------
    StorageError
        If a key is not a ``str`` or holds ``/``, ``\``, ``#``, ``?`` or control characters.
    """
    return _check_key(table, "PartitionKey", partition_key), _check_key(table, "RowKey", row_key)


def normalize_entity(table: str, entity: Mapping[str, object]) -> Entity:
    """Check an entity and return the copy the stores write.

    ``None`` values are dropped and datetimes are converted to UTC.

    Parameters
    ----------
    table
        The table name, for error messages.
    entity
        The row: ``PartitionKey``, ``RowKey`` and flat values.

    Raises
    ------
    StorageError
        If a key is missing or invalid, a property name is invalid, a value has an unsupported type,
        an ``int`` does not fit in 64 bits, a string is too long or a datetime is naive.
    """
    if "PartitionKey" not in entity or "RowKey" not in entity:
        raise StorageError(f"table {table!r}: an entity needs both 'PartitionKey' and 'RowKey'")
    partition_key, row_key = check_keys(table, entity["PartitionKey"], entity["RowKey"])
    where = f"table {table!r}, row ({partition_key!r}, {row_key!r})"
    result: Entity = {"PartitionKey": partition_key, "RowKey": row_key}
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        if not isinstance(name, str) or not _PROPERTY_RE.match(name) or name in _RESERVED_PROPERTIES:
            raise StorageError(
                f"{where}: invalid property name {name!r}: use letters, digits and '_', not starting "
                f"with a digit, at most 255 characters, not one of {sorted(_RESERVED_PROPERTIES)}"
            )
        if value is None:
            continue
        if isinstance(value, bool | float):
            result[name] = value
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise StorageError(f"{where}: property {name!r} = {value} does not fit in 64 bits")
            result[name] = value
        elif isinstance(value, str):
            if len(value.encode("utf-16-le")) > 2 * MAX_STRING_UNITS:
                raise StorageError(
                    f"{where}: property {name!r} is longer than {MAX_STRING_UNITS} UTF-16 code units; "
                    "store large values in a blob and keep its name in the row"
                )
            result[name] = value
        elif isinstance(value, datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                raise StorageError(
                    f"{where}: property {name!r} is a naive datetime; pass a timezone-aware one "
                    "(e.g. datetime.now(UTC))"
                )
            result[name] = value.astimezone(UTC)
        else:
            raise StorageError(
                f"{where}: property {name!r} has unsupported type {type(value).__name__}; "
                "use str, int, float, bool, datetime or None"
            )
    return result


def entity_sort_key(entity: Mapping[str, object]) -> tuple[str, str]:
    """Return ``(PartitionKey, RowKey)``, the order ``TableStore.query`` sorts by."""
    return str(entity["PartitionKey"]), str(entity["RowKey"])


def check_message(queue: str, text: object) -> str:
    """Return ``text`` if it can be sent as a queue message.

    Raises
    ------
    StorageError
        If ``text`` is not a ``str`` or is longer than ``MAX_MESSAGE_BYTES`` in UTF-8.
    """
    if not isinstance(text, str):
        raise StorageError(f"queue {queue!r}: a message must be a str, got {type(text).__name__}")
    size = len(text.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        raise StorageError(
            f"queue {queue!r}: message of {size} bytes is longer than {MAX_MESSAGE_BYTES} bytes; "
            "put large payloads in a blob and send its name"
        )
    return text


def check_receive_args(queue: str, max_messages: int, visibility_timeout_s: int) -> None:
    """Check the arguments of ``QueueStore.receive``.

    Raises
    ------
    StorageError
        If ``max_messages`` is not 1-32 or ``visibility_timeout_s`` not 1 s to 7 days.
    """
    if not 1 <= max_messages <= MAX_RECEIVE:
        raise StorageError(f"queue {queue!r}: max_messages must be 1-{MAX_RECEIVE}, got {max_messages}")
    if not 1 <= visibility_timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
        raise StorageError(
            f"queue {queue!r}: visibility_timeout_s must be 1-{MAX_VISIBILITY_TIMEOUT_S} s, got {visibility_timeout_s}"
        )


def check_release_delay(queue: str, visibility_timeout_s: int) -> None:
    """Check the delay of ``QueueStore.release``: 0 s to 7 days; :class:`StorageError` otherwise."""
    if not 0 <= visibility_timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
        raise StorageError(
            f"queue {queue!r}: a release delay must be 0-{MAX_VISIBILITY_TIMEOUT_S} s, got {visibility_timeout_s}"
        )


@dataclass(frozen=True)
class QueueMessage:
    """A message received from a queue.

    Attributes
    ----------
    id
        The message id, stable across deliveries.
    pop_receipt
        Proof of this delivery; ``QueueStore.delete`` needs it. It changes on every delivery.
    content
        The message text.
    dequeue_count
        How many times the message has been delivered, this delivery included (1 the first time).
    """

    id: str
    pop_receipt: str
    content: str
    dequeue_count: int


class BlobStore(ABC):
    """Named byte strings ("blobs") in containers.

    Containers are created on first write; reading from a container that does not exist is the
    same as reading a blob that does not exist.
    """

    @abstractmethod
    def read_bytes(self, container: str, name: str) -> bytes:
        """Return the whole content of a blob.

        Raises
        ------
        NotFoundError
            If the blob (or its container) does not exist.
        StorageError
            If the backend fails.
        """

    @abstractmethod
    def write_bytes(self, container: str, name: str, data: bytes, *, content_type: str | None = None) -> None:
        """Create or overwrite a blob atomically: readers see the old or the new content, never a mix.

        Parameters
        ----------
        container, name
            Where to write.
        data
            The new content.
        content_type
            MIME type recorded with the blob (Azure); the local store ignores it.
        """

    @abstractmethod
    def exists(self, container: str, name: str) -> bool:
        """Return whether the blob exists."""

    @abstractmethod
    def list(self, container: str, prefix: str = "") -> list[str]:
        """Return the sorted names of the blobs whose name starts with ``prefix``.

        ``prefix`` is a plain string prefix, not a folder: ``"results/a"`` matches
        ``"results/a1/x.tif"``. A missing container has no blobs.
        """

    @abstractmethod
    def delete(self, container: str, name: str) -> None:
        """Delete a blob; do nothing if it does not exist."""

    def write_file(self, container: str, name: str, path: Path, *, content_type: str | None = None) -> None:
        """Upload a local file as a blob, atomically (see ``write_bytes``).

        The default reads the file into memory; backends override it to stream.
        """
        self.write_bytes(container, name, Path(path).read_bytes(), content_type=content_type)

    def read_to_file(self, container: str, name: str, path: Path) -> None:
        """Download a blob into a local file, replacing the file only once the download is complete.

        Raises
        ------
        NotFoundError
            If the blob does not exist (``path`` is left untouched).
        """
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        try:
            self._download(container, name, partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)

    def _download(self, container: str, name: str, path: Path) -> None:
        """Write the blob to ``path``; the default reads it into memory."""
        path.write_bytes(self.read_bytes(container, name))


class TableStore(ABC):
    """Rows ("entities") keyed by ``(PartitionKey, RowKey)`` in named tables.

    See the module docstring for the value types. Tables are created on first write.
    """

    @abstractmethod
    def upsert(self, table: str, entity: Mapping[str, object]) -> None:
        """Insert or replace a row: the stored row becomes exactly ``entity`` (``None`` values dropped).

        Raises
        ------
        StorageError
            If the entity breaks the rules (see ``normalize_entity``) or the backend fails.
        """

    @abstractmethod
    def get(self, table: str, partition_key: str, row_key: str) -> Entity:
        """Return one row.

        Raises
        ------
        NotFoundError
            If the row (or the table) does not exist.
        """

    @abstractmethod
    def get_versioned(self, table: str, partition_key: str, row_key: str) -> tuple[Entity, str]:
        """Return one row and its ETag, an opaque text that changes on every write of the row.

        Raises
        ------
        NotFoundError
            If the row (or the table) does not exist.
        """

    @abstractmethod
    def put_if(self, table: str, entity: Mapping[str, object], etag: str | None) -> str:
        """Write a row only if nobody wrote it since it was read; return its new ETag.

        With ``etag=None`` the row is inserted only if it does not exist; otherwise it is replaced
        only if its ETag still equals ``etag`` (optimistic concurrency, as Azure Tables' If-Match).

        Raises
        ------
        ConflictError
            If the row exists (``etag=None``), or was changed or deleted since ``etag`` was read.
        StorageError
            If the entity breaks the rules (see ``normalize_entity``) or the backend fails.
        """

    @abstractmethod
    def query(self, table: str, partition_key: str | None = None) -> list[Entity]:
        """Return the rows of one partition, or of the whole table, sorted by (PartitionKey, RowKey).

        A missing table has no rows.
        """

    @abstractmethod
    def delete(self, table: str, partition_key: str, row_key: str) -> None:
        """Delete a row; do nothing if it does not exist."""


class QueueStore(ABC):
    """Text messages in named queues, delivered at least once.

    A received message is hidden for ``visibility_timeout_s`` seconds; unless it is deleted in that
    time it becomes visible again and is delivered once more with a higher ``dequeue_count``.
    Queues are created on first send.
    """

    @abstractmethod
    def send(self, queue: str, text: str) -> None:
        """Append a message to the queue."""

    @abstractmethod
    def receive(self, queue: str, max_messages: int = 1, visibility_timeout_s: int = 300) -> list[QueueMessage]:
        """Receive up to ``max_messages`` (1-32) visible messages, oldest first, hiding them meanwhile.

        Returns an empty list when no message is visible (or the queue does not exist).
        """

    @abstractmethod
    def delete(self, queue: str, message: QueueMessage) -> None:
        """Delete a received message.

        Raises
        ------
        NotFoundError
            If the message is gone (already deleted).
        StorageError
            If the message was delivered again since, so ``message.pop_receipt`` is stale.
        """

    @abstractmethod
    def release(self, queue: str, message: QueueMessage, visibility_timeout_s: int = 0) -> None:
        """Give a received message back: it becomes visible again after ``visibility_timeout_s``.

        This is how a failed delivery is retried later (Azure: Update Message). ``message.pop_receipt``
        is stale afterwards.

        Raises
        ------
        NotFoundError
            If the message is gone (deleted).
        StorageError
            If the message was delivered again since, so ``message.pop_receipt`` is stale.
        """

    @abstractmethod
    def peek_count(self, queue: str) -> int:
        """Return the number of messages in the queue, hidden ones included (approximate in Azure)."""


@dataclass(frozen=True)
class Storage:
    """The three stores of one storage location (a local folder or an Azure storage account)."""

    blobs: BlobStore
    tables: TableStore
    queues: QueueStore
