"""The local storage backend: blobs as files in a folder, tables and queues in one SQLite file.

Layout under the root folder::

    blobs/<container>/<blob name>   one file per blob ('/' in the name makes sub-folders)
    tables.sqlite                   table rows and queue messages (WAL mode)

Blob writes go to a temporary file in the blob's folder which is fsynced and then renamed over the
blob (``os.replace``), so readers see the old or the new content, never a mix. SQLite waits up to
``BUSY_TIMEOUT_S`` for another process's write lock, so several processes (the CLI, a worker, the
tests) can share one root.

Unlike Azure, a folder cannot be both a blob and a virtual folder: with a blob ``a/b`` stored, writing
a blob ``a`` raises ``StorageError`` (and the other way round).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from rtsmonitor.errors import ConflictError, NotFoundError, StorageError
from rtsmonitor.storage.base import (
    BlobStore,
    Entity,
    QueueMessage,
    QueueStore,
    Storage,
    TableStore,
    TableValue,
    check_blob_name,
    check_container_name,
    check_keys,
    check_message,
    check_receive_args,
    check_release_delay,
    check_table_name,
    normalize_entity,
)

#: Seconds a SQLite call waits for another connection's lock before failing.
BUSY_TIMEOUT_S = 30.0
#: Suffix of the temporary files blob writes rename into place; ``list`` skips them.
TEMP_SUFFIX = ".rtstmp"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    rk TEXT NOT NULL,
    props TEXT NOT NULL,
    etag TEXT,
    PRIMARY KEY (tbl, pk, rk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    content TEXT NOT NULL,
    visible_at REAL NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0,
    pop_receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, visible_at, seq);
"""


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root/<container>/<name>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, container: str, name: str) -> Path:
        check_container_name(container)
        check_blob_name(container, name)
        segments = name.split("/")
        if segments[-1].endswith(TEMP_SUFFIX):
            raise StorageError(
                f"invalid blob name {name!r} in container {container!r}: names ending in "
                f"{TEMP_SUFFIX!r} are reserved for the local store's temporary files"
            )
        return self.root.joinpath(container, *segments)

    def read_bytes(self, container: str, name: str) -> bytes:
        """Return the whole content of a blob (see ``BlobStore.read_bytes``)."""
        path = self._path(container, name)
        with _blob_errors("read", container, name):
            return path.read_bytes()

    def write_bytes(self, container: str, name: str, data: bytes, *, content_type: str | None = None) -> None:
        """Create or overwrite a blob atomically (see ``BlobStore.write_bytes``)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StorageError(f"blob {container}/{name}: data must be bytes, got {type(data).__name__}")
        self._write(container, name, lambda out: out.write(data))

    def write_file(self, container: str, name: str, path: Path, *, content_type: str | None = None) -> None:
        """Copy a local file into a blob atomically, in chunks."""
        source_path = Path(path)

        def fill(out: BinaryIO) -> None:
            with open(source_path, "rb") as source:
                shutil.copyfileobj(source, out)

        self._write(container, name, fill)

    def _write(self, container: str, name: str, fill: Callable[[BinaryIO], object]) -> None:
        path = self._path(container, name)
        with _blob_errors("write", container, name):
            fd, temp_name = self._temp_file(container, name, path)
            try:
                with os.fdopen(fd, "wb") as out:
                    fill(out)
                    out.flush()
                    os.fsync(out.fileno())
                if os.name == "posix":
                    os.chmod(temp_name, 0o644)
                try:
                    os.replace(temp_name, path)
                except IsADirectoryError:
                    raise StorageError(
                        f"cannot write blob {container}/{name}: the local store holds blobs named "
                        f"'{name}/...', and a name cannot be both a blob and a folder here"
                    ) from None
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
            _fsync_folder(path.parent)

    def _temp_file(self, container: str, name: str, path: Path) -> tuple[int, str]:
        # A concurrent ``delete`` may remove the (empty) folder between mkdir and mkstemp: retry.
        for attempt in range(5):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
            except FileNotFoundError:
                if attempt == 4:
                    raise
            except (FileExistsError, NotADirectoryError):
                raise StorageError(
                    f"cannot write blob {container}/{name}: a blob named like one of its folders "
                    "exists, and a name cannot be both a blob and a folder in the local store"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def exists(self, container: str, name: str) -> bool:
        """Return whether the blob exists."""
        return self._path(container, name).is_file()

    def list(self, container: str, prefix: str = "") -> list[str]:
        """Return the sorted names of the blobs starting with ``prefix`` (see ``BlobStore.list``)."""
        check_container_name(container)
        base = self.root / container
        folders = prefix.split("/")[:-1]
        if "\\" in prefix or any(folder in ("", ".", "..") for folder in folders):
            return []  # no valid blob name starts like this
        start = base.joinpath(*folders)
        names = []
        for folder, _, files in os.walk(start):
            relative = Path(folder).relative_to(base).as_posix()
            for file_name in files:
                if file_name.endswith(TEMP_SUFFIX):
                    continue
                name = file_name if relative == "." else f"{relative}/{file_name}"
                if name.startswith(prefix):
                    names.append(name)
        return sorted(names)

    def delete(self, container: str, name: str) -> None:
        """Delete a blob if it exists, and the folders its deletion leaves empty."""
        path = self._path(container, name)
        with _blob_errors("delete", container, name):
            try:
                path.unlink(missing_ok=True)
            except (IsADirectoryError, NotADirectoryError, PermissionError):
                if path.is_dir() or not path.exists():
                    return  # a folder (or under a blob) is not a blob: nothing to delete
                raise
        container_folder = self.root / container
        folder = path.parent
        while folder != container_folder:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or already gone)
            folder = folder.parent

    def _download(self, container: str, name: str, path: Path) -> None:
        source = self._path(container, name)
        with _blob_errors("read", container, name):
            shutil.copyfile(source, path)


@contextmanager
def _blob_errors(action: str, container: str, name: str) -> Iterator[None]:
    """Turn OS errors into ``NotFoundError`` / ``StorageError`` naming the blob."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if action == "write":
            raise StorageError(f"cannot write blob {container}/{name}: {exc}") from exc
        raise NotFoundError(f"blob {container}/{name} not found") from exc
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot {action} blob {container}/{name}: {exc}") from exc


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX only; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Database:
    """The SQLite file shared by the local table and queue stores: one connection per call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ready = False
        self._lock = threading.Lock()

    @contextmanager
    def connect(self, what: str) -> Iterator[sqlite3.Connection]:
        """Yield a connection in autocommit mode; SQLite errors become ``StorageError`` naming ``what``."""
        try:
            self._ensure_schema()
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                yield connection
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise StorageError(f"{what}: SQLite error in {self.path}: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"{what}: cannot open {self.path}: {exc}") from exc

    def _ensure_schema(self) -> None:
        with self._lock:
            if self._ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                _use_wal(connection)
                connection.executescript(_SCHEMA)
                _add_etag_column(connection)
            finally:
                connection.close()
            self._ready = True


def _add_etag_column(connection: sqlite3.Connection) -> None:
    """Give a table file written before ETags existed its ``etag`` column (rows without one read as ``"0"``)."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(entities)")}
    if "etag" not in columns:
        with suppress(sqlite3.OperationalError):  # another process added it first
            connection.execute("ALTER TABLE entities ADD COLUMN etag TEXT")


def _new_etag() -> str:
    return uuid.uuid4().hex


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to write-ahead logging (persistent), waiting while other connections hold it.

    Changing the journal mode needs the file to itself, and SQLite does not call its busy handler
    for it: when another process or thread is using the file, retry until :data:`BUSY_TIMEOUT_S`.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() == "wal":
                return
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a write transaction that takes the write lock at once (so it waits, never deadlocks)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _encode_properties(entity: Entity) -> str:
    """Encode the non-key properties as JSON ``{name: [type tag, value]}`` so types round-trip."""
    encoded: dict[str, list[object]] = {}
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey") or value is None:
            continue
        if isinstance(value, bool):
            encoded[name] = ["b", value]
        elif isinstance(value, int):
            encoded[name] = ["i", value]
        elif isinstance(value, float):
            encoded[name] = ["f", value]
        elif isinstance(value, datetime):
            encoded[name] = ["d", value.isoformat()]
        else:
            encoded[name] = ["s", value]
    return json.dumps(encoded, ensure_ascii=False)


def _decode_row(partition_key: str, row_key: str, props: str) -> Entity:
    entity: Entity = {"PartitionKey": partition_key, "RowKey": row_key}
    decoded: Mapping[str, list[object]] = json.loads(props)
    for name, (tag, raw) in decoded.items():
        value: TableValue
        if tag == "b":
            value = bool(raw)
        elif tag == "i":
            value = int(str(raw))
        elif tag == "f":
            value = float(str(raw))
        elif tag == "d":
            value = datetime.fromisoformat(str(raw))
        else:
            value = str(raw)
        entity[name] = value
    return entity


class LocalTableStore(TableStore):
    """Table rows in the ``entities`` table of the local SQLite file."""

    def __init__(self, database: _Database) -> None:
        self._db = database

    def upsert(self, table: str, entity: Mapping[str, object]) -> None:
        """Insert or replace a row (see ``TableStore.upsert``)."""
        check_table_name(table)
        row = normalize_entity(table, entity)
        where = f"upsert into table {table!r}, row ({row['PartitionKey']!r}, {row['RowKey']!r})"
        with self._db.connect(where) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO entities (tbl, pk, rk, props, etag) VALUES (?, ?, ?, ?, ?)",
                (table, row["PartitionKey"], row["RowKey"], _encode_properties(row), _new_etag()),
            )

    def put_if(self, table: str, entity: Mapping[str, object], etag: str | None) -> str:
        """Insert (``etag=None``) or replace a row only if unchanged since read (see ``TableStore.put_if``)."""
        check_table_name(table)
        row = normalize_entity(table, entity)
        keys = (table, row["PartitionKey"], row["RowKey"])
        where = f"table {table!r}, row ({row['PartitionKey']!r}, {row['RowKey']!r})"
        new_etag = _new_etag()
        with self._db.connect(f"conditional write to {where}") as connection, _transaction(connection):
            found = connection.execute(
                "SELECT coalesce(etag, '0') FROM entities WHERE tbl = ? AND pk = ? AND rk = ?", keys
            ).fetchone()
            if etag is None and found is not None:
                raise ConflictError(f"{where}: exists already (insert expected a new row)")
            if etag is not None and (found is None or found[0] != etag):
                now = "deleted" if found is None else "changed"
                raise ConflictError(f"{where}: {now} since it was read (ETag {etag!r})")
            connection.execute(
                "INSERT OR REPLACE INTO entities (tbl, pk, rk, props, etag) VALUES (?, ?, ?, ?, ?)",
                (*keys, _encode_properties(row), new_etag),
            )
        return new_etag

    def get(self, table: str, partition_key: str, row_key: str) -> Entity:
        """Return one row (see ``TableStore.get``)."""
        return self.get_versioned(table, partition_key, row_key)[0]

    def get_versioned(self, table: str, partition_key: str, row_key: str) -> tuple[Entity, str]:
        """Return one row and its ETag (see ``TableStore.get_versioned``)."""
        check_table_name(table)
        check_keys(table, partition_key, row_key)
        where = f"table {table!r}, row ({partition_key!r}, {row_key!r})"
        with self._db.connect(f"get from {where}") as connection:
            found = connection.execute(
                "SELECT props, coalesce(etag, '0') FROM entities WHERE tbl = ? AND pk = ? AND rk = ?",
                (table, partition_key, row_key),
            ).fetchone()
        if found is None:
            raise NotFoundError(f"{where} not found")
        return _decode_row(partition_key, row_key, found[0]), str(found[1])

    def query(self, table: str, partition_key: str | None = None) -> list[Entity]:
        """Return rows sorted by (PartitionKey, RowKey) (see ``TableStore.query``)."""
        check_table_name(table)
        with self._db.connect(f"query table {table!r}") as connection:
            if partition_key is None:
                rows = connection.execute(
                    "SELECT pk, rk, props FROM entities WHERE tbl = ? ORDER BY pk, rk", (table,)
                ).fetchall()
            else:
                rows = connection.execute(
                    "SELECT pk, rk, props FROM entities WHERE tbl = ? AND pk = ? ORDER BY pk, rk",
                    (table, partition_key),
                ).fetchall()
        return [_decode_row(pk, rk, props) for pk, rk, props in rows]

    def delete(self, table: str, partition_key: str, row_key: str) -> None:
        """Delete a row if it exists."""
        check_table_name(table)
        check_keys(table, partition_key, row_key)
        where = f"delete from table {table!r}, row ({partition_key!r}, {row_key!r})"
        with self._db.connect(where) as connection:
            connection.execute(
                "DELETE FROM entities WHERE tbl = ? AND pk = ? AND rk = ?", (table, partition_key, row_key)
            )


class LocalQueueStore(QueueStore):
    """Queue messages in the ``messages`` table of the local SQLite file.

    Visibility uses the wall clock (``time.time``), which all processes on one machine share.
    Messages do not expire (Azure drops them after 7 days by default).
    """

    def __init__(self, database: _Database) -> None:
        self._db = database

    def send(self, queue: str, text: str) -> None:
        """Append a message to the queue."""
        check_container_name(queue, "queue")
        check_message(queue, text)
        with self._db.connect(f"send to queue {queue!r}") as connection:
            connection.execute(
                "INSERT INTO messages (queue, id, content, visible_at) VALUES (?, ?, ?, ?)",
                (queue, str(uuid.uuid4()), text, time.time()),
            )

    def receive(self, queue: str, max_messages: int = 1, visibility_timeout_s: int = 300) -> list[QueueMessage]:
        """Receive and hide up to ``max_messages`` visible messages (see ``QueueStore.receive``)."""
        check_container_name(queue, "queue")
        check_receive_args(queue, max_messages, visibility_timeout_s)
        received = []
        with self._db.connect(f"receive from queue {queue!r}") as connection, _transaction(connection):
            now = time.time()
            rows = connection.execute(
                "SELECT seq, id, content, dequeue_count FROM messages "
                "WHERE queue = ? AND visible_at <= ? ORDER BY seq LIMIT ?",
                (queue, now, max_messages),
            ).fetchall()
            for seq, message_id, content, dequeue_count in rows:
                receipt = uuid.uuid4().hex
                connection.execute(
                    "UPDATE messages SET visible_at = ?, dequeue_count = ?, pop_receipt = ? WHERE seq = ?",
                    (now + visibility_timeout_s, dequeue_count + 1, receipt, seq),
                )
                received.append(QueueMessage(message_id, receipt, content, dequeue_count + 1))
        return received

    def delete(self, queue: str, message: QueueMessage) -> None:
        """Delete a received message (see ``QueueStore.delete``)."""
        check_container_name(queue, "queue")
        where = f"queue {queue!r}, message {message.id!r}"
        with self._db.connect(f"delete from {where}") as connection, _transaction(connection):
            seq = _held_message(connection, queue, message, where)
            connection.execute("DELETE FROM messages WHERE seq = ?", (seq,))

    def release(self, queue: str, message: QueueMessage, visibility_timeout_s: int = 0) -> None:
        """Make a received message visible again after a delay (see ``QueueStore.release``)."""
        check_container_name(queue, "queue")
        check_release_delay(queue, visibility_timeout_s)
        where = f"queue {queue!r}, message {message.id!r}"
        with self._db.connect(f"release {where}") as connection, _transaction(connection):
            seq = _held_message(connection, queue, message, where)
            connection.execute(
                "UPDATE messages SET visible_at = ?, pop_receipt = ? WHERE seq = ?",
                (time.time() + visibility_timeout_s, uuid.uuid4().hex, seq),
            )

    def peek_count(self, queue: str) -> int:
        """Return the number of messages in the queue, hidden ones included."""
        check_container_name(queue, "queue")
        with self._db.connect(f"count queue {queue!r}") as connection:
            (count,) = connection.execute("SELECT COUNT(*) FROM messages WHERE queue = ?", (queue,)).fetchone()
        return int(count)


def _held_message(connection: sqlite3.Connection, queue: str, message: QueueMessage, where: str) -> int:
    """The row (``seq``) of a received message whose pop receipt is still current, inside a transaction."""
    found = connection.execute(
        "SELECT seq, pop_receipt FROM messages WHERE queue = ? AND id = ?", (queue, message.id)
    ).fetchone()
    if found is None:
        raise NotFoundError(f"{where} not found (already deleted?)")
    if found[1] != message.pop_receipt:
        raise StorageError(f"{where}: pop receipt mismatch: the message was received again after this copy")
    return int(found[0])


@dataclass(frozen=True, init=False)
class LocalStorage(Storage):
    """The storage of a local folder: ``root/blobs/`` for blobs, ``root/tables.sqlite`` for the rest.

    Nothing is created until the first write.

    Parameters
    ----------
    root
        The folder; relative paths are made absolute at construction.
    """

    root: Path

    def __init__(self, root: Path | str) -> None:
        root = Path(root).expanduser().absolute()
        database = _Database(root / "tables.sqlite")
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "blobs", LocalBlobStore(root / "blobs"))
        object.__setattr__(self, "tables", LocalTableStore(database))
        object.__setattr__(self, "queues", LocalQueueStore(database))
