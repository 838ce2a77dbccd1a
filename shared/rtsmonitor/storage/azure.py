"""The Azure Storage backend: Blob Storage, Table Storage and Queue Storage of one account.

Works against Azure itself and against Azurite (the emulator the tests start). Containers, tables
and queues are created when a write finds them missing, so a fresh account (or one whose resources
Terraform created) works without a setup step. Every request is retried and timed out as
:mod:`rtsmonitor.retry` says (the SDKs' own retry policy, configured there). Queue messages are
base64-encoded, as the Azure Functions queue trigger expects by default.

Azure Tables has no nulls and distinguishes 32- and 64-bit integers; ``int`` values outside the
32-bit range are sent as Edm.Int64 and every integer comes back as a plain ``int``.
"""

from __future__ import annotations

import os
import re
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from rtsmonitor.errors import ConflictError, NotFoundError, StorageError
from rtsmonitor.retry import azure_client_options
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
    entity_sort_key,
    normalize_entity,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_T = TypeVar("_T")

_ACCOUNT_RE = re.compile(r"^[a-z0-9]{3,24}$")
_PREFIX_RE = re.compile(r"^(?:[a-z][a-z0-9]{0,19})?$")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _describe(exc: AzureError) -> str:
    """Return a one-line description of an Azure error (its code and first message line)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # the SDKs' error codes are str enums
    return f"{code}: {text}" if code and str(code) not in text else text


@contextmanager
def _azure_errors(what: str) -> Iterator[None]:
    """Turn ``ResourceNotFoundError`` into ``NotFoundError`` and other Azure errors into ``StorageError``."""
    try:
        yield
    except ResourceNotFoundError as exc:
        raise NotFoundError(f"{what}: not found ({_describe(exc)})") from exc
    except AzureError as exc:
        raise StorageError(f"{what}: Azure Storage error: {_describe(exc)}") from exc
    except AttributeError as exc:
        if not _raised_in_sdk(exc):
            raise
        # azure-data-tables 12.7 fails so on an error answer cut short (its _decode_error reads the
        # headers of a response it does not have): a transport failure like any other
        raise StorageError(f"{what}: unreadable answer from Azure Storage ({exc})") from exc


def _raised_in_sdk(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside an Azure SDK package (not in this module's own code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}azure{os.sep}" in frames[-1].filename


def _create_on_miss(operation: Callable[[], _T], create: Callable[[], object]) -> _T:
    """Run ``operation``; if its container/table/queue is missing, create it and run it again."""
    try:
        return operation()
    except ResourceNotFoundError:
        with suppress(ResourceExistsError):  # created meanwhile by someone else
            create()
        return operation()


def _physical_name(prefix: str, name: str, kind: str) -> str:
    """Return the account-level name of a container, queue or table (``prefix + name``)."""
    if kind == "table":
        check_table_name(name)
        return check_table_name(prefix + name)
    check_container_name(name, kind)
    return check_container_name(prefix + name, kind)


class AzureBlobStore(BlobStore):
    """Blobs in Azure Blob Storage; container ``c`` is ``name_prefix + c`` in the account."""

    def __init__(self, service: BlobServiceClient, name_prefix: str = "") -> None:
        self._service = service
        self._prefix = name_prefix

    def _client(self, container: str, name: str) -> BlobClient:
        check_blob_name(container, name)
        return self._service.get_blob_client(_physical_name(self._prefix, container, "container"), name)

    def _create_container(self, container: str) -> Callable[[], object]:
        physical = _physical_name(self._prefix, container, "container")
        return lambda: self._service.create_container(physical)

    def read_bytes(self, container: str, name: str) -> bytes:
        """Return the whole content of a blob (see ``BlobStore.read_bytes``)."""
        client = self._client(container, name)
        with _azure_errors(f"read blob {container}/{name}"):
            data: bytes = client.download_blob().readall()
        return data

    def write_bytes(self, container: str, name: str, data: bytes, *, content_type: str | None = None) -> None:
        """Upload a blob in one committed operation (see ``BlobStore.write_bytes``)."""
        client = self._client(container, name)
        options = _upload_options(content_type)
        with _azure_errors(f"write blob {container}/{name}"):
            _create_on_miss(
                lambda: client.upload_blob(bytes(data), overwrite=True, **options),
                self._create_container(container),
            )

    def write_file(self, container: str, name: str, path: Path, *, content_type: str | None = None) -> None:
        """Upload a local file in blocks; the blob changes only when the block list is committed."""
        client = self._client(container, name)
        options = _upload_options(content_type)

        def upload() -> object:
            with open(path, "rb") as source:
                return client.upload_blob(source, overwrite=True, **options)

        with _azure_errors(f"write blob {container}/{name}"):
            try:
                _create_on_miss(upload, self._create_container(container))
            except OSError as exc:
                raise StorageError(f"write blob {container}/{name}: cannot read {path}: {exc}") from exc

    def exists(self, container: str, name: str) -> bool:
        """Return whether the blob exists."""
        client = self._client(container, name)
        with _azure_errors(f"check blob {container}/{name}"):
            return bool(client.exists())

    def list(self, container: str, prefix: str = "") -> list[str]:
        """Return the sorted names of the blobs starting with ``prefix`` (see ``BlobStore.list``)."""
        physical = _physical_name(self._prefix, container, "container")
        client = self._service.get_container_client(physical)
        with _azure_errors(f"list container {container!r}"):
            try:
                return sorted(client.list_blob_names(name_starts_with=prefix or None))
            except ResourceNotFoundError:
                return []

    def delete(self, container: str, name: str) -> None:
        """Delete a blob (and its snapshots) if it exists."""
        client = self._client(container, name)
        with _azure_errors(f"delete blob {container}/{name}"), suppress(ResourceNotFoundError):
            client.delete_blob(delete_snapshots="include")

    def _download(self, container: str, name: str, path: Path) -> None:
        client = self._client(container, name)
        with _azure_errors(f"read blob {container}/{name}"):
            downloader = client.download_blob()
            with open(path, "wb") as out:
                downloader.readinto(out)


def _upload_options(content_type: str | None) -> dict[str, Any]:
    if content_type is None:
        return {}
    return {"content_settings": ContentSettings(content_type=content_type)}


def _to_azure(entity: Entity) -> dict[str, Any]:
    """Return the entity as the SDK sends it (large ``int`` values marked Edm.Int64)."""
    result: dict[str, Any] = {}
    for name, value in entity.items():
        if isinstance(value, int) and not isinstance(value, bool) and not _INT32_MIN <= value <= _INT32_MAX:
            result[name] = EntityProperty(value, EdmType.INT64)
        else:
            result[name] = value
    return result


def _from_azure(entity: Mapping[str, Any]) -> Entity:
    """Return a plain dict of plain Python values from an SDK entity (metadata left out)."""
    result: Entity = {}
    for name, value in entity.items():
        converted: TableValue
        if isinstance(value, EntityProperty):
            raw = value.value
            converted = int(raw) if value.edm_type == EdmType.INT64 else str(raw)
        elif isinstance(value, datetime):
            converted = datetime(
                value.year, value.month, value.day, value.hour, value.minute, value.second,
                value.microsecond, tzinfo=UTC,
            )  # fmt: skip
        elif value is None or isinstance(value, str | bool | int | float):
            converted = value
        else:
            converted = str(value)  # a GUID or binary property written by another tool
        result[name] = converted
    return result


class AzureTableStore(TableStore):
    """Rows in Azure Table Storage; table ``t`` is ``name_prefix + t`` in the account."""

    def __init__(self, service: TableServiceClient, name_prefix: str = "") -> None:
        self._service = service
        self._prefix = name_prefix

    def _client(self, table: str) -> TableClient:
        return self._service.get_table_client(_physical_name(self._prefix, table, "table"))

    def upsert(self, table: str, entity: Mapping[str, object]) -> None:
        """Insert or replace a row (see ``TableStore.upsert``)."""
        client = self._client(table)
        row = normalize_entity(table, entity)
        physical = client.table_name
        with _azure_errors(f"upsert into table {table!r}, row ({row['PartitionKey']!r}, {row['RowKey']!r})"):
            _create_on_miss(
                lambda: client.upsert_entity(_to_azure(row), mode=UpdateMode.REPLACE),
                lambda: self._service.create_table(physical),
            )

    def get(self, table: str, partition_key: str, row_key: str) -> Entity:
        """Return one row (see ``TableStore.get``)."""
        client = self._client(table)
        check_keys(table, partition_key, row_key)
        with _azure_errors(f"table {table!r}, row ({partition_key!r}, {row_key!r})"):
            return _from_azure(client.get_entity(partition_key, row_key))

    def get_versioned(self, table: str, partition_key: str, row_key: str) -> tuple[Entity, str]:
        """Return one row and its ETag (see ``TableStore.get_versioned``)."""
        client = self._client(table)
        check_keys(table, partition_key, row_key)
        with _azure_errors(f"table {table!r}, row ({partition_key!r}, {row_key!r})"):
            entity = client.get_entity(partition_key, row_key)
        return _from_azure(entity), str(entity.metadata["etag"])

    def put_if(self, table: str, entity: Mapping[str, object], etag: str | None) -> str:
        """Insert (``etag=None``) or replace a row only if unchanged since read (see ``TableStore.put_if``)."""
        client = self._client(table)
        row = normalize_entity(table, entity)
        physical = client.table_name
        where = f"table {table!r}, row ({row['PartitionKey']!r}, {row['RowKey']!r})"

        def write() -> Mapping[str, Any]:
            if etag is None:
                return client.create_entity(_to_azure(row))
            return client.update_entity(
                _to_azure(row), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )

        with _azure_errors(f"conditional write to {where}"):
            try:
                written = _create_on_miss(write, lambda: self._service.create_table(physical))
            except ResourceExistsError as exc:
                raise ConflictError(f"{where}: exists already (insert expected a new row)") from exc
            except ResourceNotFoundError as exc:
                raise ConflictError(f"{where}: deleted since it was read (ETag {etag!r})") from exc
            except (ResourceModifiedError, HttpResponseError) as exc:
                if getattr(exc, "status_code", None) != 412:
                    raise
                raise ConflictError(f"{where}: changed since it was read (ETag {etag!r})") from exc
        return str(written["etag"])

    def query(self, table: str, partition_key: str | None = None) -> list[Entity]:
        """Return rows sorted by (PartitionKey, RowKey) (see ``TableStore.query``)."""
        client = self._client(table)
        with _azure_errors(f"query table {table!r}"):
            try:
                if partition_key is None:
                    found = list(client.list_entities())
                else:
                    found = list(client.query_entities("PartitionKey eq @pk", parameters={"pk": partition_key}))
            except ResourceNotFoundError:
                return []
        return sorted((_from_azure(entity) for entity in found), key=entity_sort_key)

    def delete(self, table: str, partition_key: str, row_key: str) -> None:
        """Delete a row if it exists."""
        client = self._client(table)
        check_keys(table, partition_key, row_key)
        where = f"delete from table {table!r}, row ({partition_key!r}, {row_key!r})"
        with _azure_errors(where), suppress(ResourceNotFoundError):
            client.delete_entity(partition_key, row_key)


class AzureQueueStore(QueueStore):
    """Messages in Azure Queue Storage (base64-encoded text); queue ``q`` is ``name_prefix + q``."""

    def __init__(self, service: QueueServiceClient, name_prefix: str = "") -> None:
        self._service = service
        self._prefix = name_prefix
        self._clients: dict[str, QueueClient] = {}
        self._lock = threading.Lock()

    def _client(self, queue: str) -> QueueClient:
        physical = _physical_name(self._prefix, queue, "queue")
        with self._lock:
            client = self._clients.get(physical)
            if client is None:
                client = self._service.get_queue_client(
                    physical,
                    message_encode_policy=TextBase64EncodePolicy(),
                    message_decode_policy=TextBase64DecodePolicy(),
                )
                self._clients[physical] = client
        return client

    def send(self, queue: str, text: str) -> None:
        """Append a message to the queue."""
        client = self._client(queue)
        check_message(queue, text)
        with _azure_errors(f"send to queue {queue!r}"):
            _create_on_miss(lambda: client.send_message(text), client.create_queue)

    def receive(self, queue: str, max_messages: int = 1, visibility_timeout_s: int = 300) -> list[QueueMessage]:
        """Receive and hide up to ``max_messages`` visible messages (see ``QueueStore.receive``)."""
        client = self._client(queue)
        check_receive_args(queue, max_messages, visibility_timeout_s)
        with _azure_errors(f"receive from queue {queue!r}"):
            try:
                pages = client.receive_messages(
                    messages_per_page=max_messages,
                    max_messages=max_messages,
                    visibility_timeout=visibility_timeout_s,
                )
                return [
                    QueueMessage(
                        id=str(message.id),
                        pop_receipt=str(message.pop_receipt),
                        content=str(message.content),
                        dequeue_count=int(message.dequeue_count or 0),
                    )
                    for message in pages
                ]
            except ResourceNotFoundError:
                return []

    def delete(self, queue: str, message: QueueMessage) -> None:
        """Delete a received message (see ``QueueStore.delete``)."""
        client = self._client(queue)
        where = f"queue {queue!r}, message {message.id!r}"
        with _azure_errors(f"delete from {where}"):
            try:
                client.delete_message(message.id, message.pop_receipt)
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) == "PopReceiptMismatch":
                    raise StorageError(
                        f"{where}: pop receipt mismatch: the message was received again after this copy"
                    ) from exc
                raise  # ResourceNotFoundError (already deleted) becomes NotFoundError

    def release(self, queue: str, message: QueueMessage, visibility_timeout_s: int = 0) -> None:
        """Make a received message visible again after a delay (see ``QueueStore.release``)."""
        check_release_delay(queue, visibility_timeout_s)
        client = self._client(queue)
        where = f"queue {queue!r}, message {message.id!r}"
        with _azure_errors(f"release {where}"):
            try:
                client.update_message(message.id, message.pop_receipt, visibility_timeout=visibility_timeout_s)
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) == "PopReceiptMismatch":
                    raise StorageError(
                        f"{where}: pop receipt mismatch: the message was received again after this copy"
                    ) from exc
                raise

    def peek_count(self, queue: str) -> int:
        """Return the approximate number of messages in the queue, hidden ones included."""
        client = self._client(queue)
        with _azure_errors(f"count queue {queue!r}"):
            try:
                return int(client.get_queue_properties().approximate_message_count or 0)
            except ResourceNotFoundError:
                return 0


def _check_prefix(name_prefix: str) -> str:
    if not _PREFIX_RE.match(name_prefix):
        raise StorageError(
            f"invalid name_prefix {name_prefix!r}: use up to 20 lower-case letters and digits, "
            "starting with a letter (it is prepended to container, table and queue names)"
        )
    return name_prefix


@dataclass(frozen=True, init=False)
class AzureStorage(Storage):
    """The storage of one Azure storage account (or Azurite).

    Build it with ``from_connection_string`` or ``from_account``; no request is made until the
    first operation.

    Parameters
    ----------
    blob_service, table_service, queue_service
        The SDK service clients of the account.
    name_prefix
        Prepended to every container, table and queue name (lower-case letters and digits), so that
        several deployments or test runs can share one account. Empty by default.
    """

    name_prefix: str

    def __init__(
        self,
        blob_service: BlobServiceClient,
        table_service: TableServiceClient,
        queue_service: QueueServiceClient,
        *,
        name_prefix: str = "",
    ) -> None:
        _check_prefix(name_prefix)
        object.__setattr__(self, "name_prefix", name_prefix)
        object.__setattr__(self, "blobs", AzureBlobStore(blob_service, name_prefix))
        object.__setattr__(self, "tables", AzureTableStore(table_service, name_prefix))
        object.__setattr__(self, "queues", AzureQueueStore(queue_service, name_prefix))

    @classmethod
    def from_connection_string(cls, connection_string: str, *, name_prefix: str = "") -> AzureStorage:
        """Build the storage from a connection string (an account key or SAS; Azurite's works too).

        Raises
        ------
        StorageError
            If the connection string cannot be parsed (the message does not repeat it: it holds a key).
        """
        _check_prefix(name_prefix)
        try:
            blob_service = BlobServiceClient.from_connection_string(connection_string, **azure_client_options("blob"))
            table_service = TableServiceClient.from_connection_string(
                connection_string, **azure_client_options("table")
            )
            queue_service = QueueServiceClient.from_connection_string(
                connection_string, **azure_client_options("queue")
            )
        except (ValueError, AzureError) as exc:
            raise StorageError(
                f"invalid Azure Storage connection string ({type(exc).__name__}: {str(exc)[:200]}); "
                "expected 'DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;...'"
            ) from None
        return cls(blob_service, table_service, queue_service, name_prefix=name_prefix)

    @classmethod
    def from_account(
        cls, account: str, *, credential: TokenCredential | None = None, name_prefix: str = ""
    ) -> AzureStorage:
        """Build the storage of ``https://<account>.{blob,table,queue}.core.windows.net``.

        Parameters
        ----------
        account
            The storage account name (3-24 lower-case letters and digits).
        credential
            An Entra ID token credential; by default ``azure.identity.DefaultAzureCredential()``
            (managed identity in Azure, the Azure CLI login on a laptop). The identity needs the
            Storage Blob, Table and Queue Data Contributor roles.
        name_prefix
            See the class docstring.
        """
        if not isinstance(account, str) or not _ACCOUNT_RE.match(account):
            raise StorageError(f"invalid storage account name {account!r}: use 3-24 lower-case letters and digits")
        _check_prefix(name_prefix)
        if credential is None:
            from azure.identity import DefaultAzureCredential  # lazy: slow import, only needed here

            credential = DefaultAzureCredential()
        return cls(
            BlobServiceClient(
                f"https://{account}.blob.core.windows.net", credential=credential, **azure_client_options("blob")
            ),
            TableServiceClient(
                f"https://{account}.table.core.windows.net", credential=credential, **azure_client_options("table")
            ),
            QueueServiceClient(
                f"https://{account}.queue.core.windows.net", credential=credential, **azure_client_options("queue")
            ),
            name_prefix=name_prefix,
        )
