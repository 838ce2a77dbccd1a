"""How every remote call is retried: one policy, set here, carried out by each client's own retry code.

Three kinds of remote call, three clients, one rule (capped exponential backoff with jitter, a
server's ``Retry-After`` honoured where the client can, a bounded number of retries, and timeouts
so a hung connection becomes an error that is retried):

- **STAC API searches** (pystac-client on ``requests``): a ``urllib3`` :class:`~urllib3.util.Retry`
  mounted on the session (:func:`stac_io`).
- **Storage** (Blob, Queue and Table SDKs on ``azure-core``): each SDK's own retry policy with
  ``Retry-After`` honoured, :func:`backoff_s` as the Blob and Queue backoff (the Tables client only
  takes the backoff factor and cap), plus connection and read timeouts (:func:`azure_client_options`).
- **COG reads** (GDAL ``/vsicurl/``): ``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY`` and
  ``GDAL_HTTP_RETRY_CODES`` (:data:`GDAL_RETRY_OPTIONS`). GDAL doubles its delay with jitter but
  does not read ``Retry-After``.

Transient means: the connection failed or timed out, or the server answered one of
:data:`TRANSIENT_HTTP_STATUSES`. Anything else (another 4xx, invalid data) is not retried by the
clients. Above the clients, the queue host redelivers a failed site-year (``host.json``: minutes
apart, :data:`rtsmonitor.jobs.MAX_DEQUEUE_COUNT` deliveries) unless :func:`is_permanent` says no
delivery can succeed, and then the poison handler records the failure.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from azure.storage.blob import ExponentialRetry as BlobExponentialRetry
from azure.storage.queue import ExponentialRetry as QueueExponentialRetry
from pystac_client.stac_api_io import StacApiIO
from urllib3.util import Retry

from rtsmonitor.errors import ConfigError, ModelError, NoSceneError, causes

RETRIES = 4
"""Retries of one remote request after its first try (so at most 5 tries)."""
BACKOFF_FACTOR_S = 0.5
"""Backoff base in seconds: the n-th retry waits about ``BACKOFF_FACTOR_S * 2**(n-1)``."""
MAX_BACKOFF_S = 30
"""Longest wait between two tries, in seconds (also the longest ``Retry-After`` honoured)."""
JITTER_FRACTION = 0.5
"""Waits are drawn uniformly from ``[1 - JITTER_FRACTION, 1]`` times the backoff, so workers that
failed together do not retry together."""
CONNECT_TIMEOUT_S = 10
"""Seconds to establish a connection before it counts as failed (and is retried)."""
READ_TIMEOUT_S = 60
"""Seconds without a byte from the server before a request counts as failed (and is retried)."""
TRANSIENT_HTTP_STATUSES: tuple[int, ...] = (408, 429, 500, 502, 503, 504)
"""HTTP statuses worth another try: timeout, throttling, server errors (RFC 9110 sections 15.5.9,
15.6; RFC 6585 section 4). Azure Storage throttles with 503 ``ServerBusy``; Planetary Computer with 429."""


def http_retry() -> Retry:
    """The ``urllib3`` retry of STAC API requests (POST searches included: they change nothing)."""
    return Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        backoff_factor=BACKOFF_FACTOR_S,
        backoff_max=MAX_BACKOFF_S,
        backoff_jitter=BACKOFF_FACTOR_S * JITTER_FRACTION,
        status_forcelist=TRANSIENT_HTTP_STATUSES,
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def stac_timeouts() -> tuple[float, float]:
    """The (connect, read) timeouts of STAC API requests, in seconds."""
    return (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)


def stac_io() -> StacApiIO:
    """A pystac-client I/O object with :func:`http_retry` and :func:`stac_timeouts`.

    (``Client.open`` resets the timeout of the I/O object it is given: pass it there too.)
    """
    return StacApiIO(max_retries=http_retry(), timeout=stac_timeouts())


def backoff_s(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...): capped exponential, with jitter."""
    exponential: float = BACKOFF_FACTOR_S * 2.0 ** (retry - 1)
    return min(MAX_BACKOFF_S, exponential) * random.uniform(1 - JITTER_FRACTION, 1)


def _retry_after_s(history: list[Any]) -> float | None:
    """The ``Retry-After`` (seconds, capped) of the last answer in an SDK's retry history, if it gave one."""
    response = getattr(history[-1], "http_response", None) if history else None
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(float(MAX_BACKOFF_S), max(0.0, float(str(value)))) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


class _StorageBackoff:
    """The backoff of the Blob and Queue SDKs' ``ExponentialRetry``: :func:`backoff_s`, or ``Retry-After``.

    These SDKs retry connection errors, timeouts, 408 and 5xx (Azure Storage throttles with 503).
    """

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        """:func:`backoff_s` of this retry."""
        return backoff_s(max(1, int(settings["count"])))

    def sleep(self, settings: dict[str, Any], transport: Any) -> None:
        """Wait ``Retry-After`` if the last answer gave one, else :meth:`get_backoff_time`."""
        retry_after = _retry_after_s(settings["history"])
        transport.sleep(self.get_backoff_time(settings) if retry_after is None else retry_after)


class BlobRetry(_StorageBackoff, BlobExponentialRetry):
    """Retry policy of the Blob SDK (see :class:`_StorageBackoff`)."""


class QueueRetry(_StorageBackoff, QueueExponentialRetry):
    """Retry policy of the Queue SDK (see :class:`_StorageBackoff`)."""


def azure_client_options(service: Literal["blob", "queue", "table"]) -> dict[str, Any]:
    """Keyword arguments for a Blob, Queue or Table service client: its retry policy and timeouts.

    The Blob and Queue clients take a policy object (:class:`BlobRetry`, :class:`QueueRetry`). The
    Tables client (azure-data-tables 12.7) ignores ``retry_policy`` and always builds its own
    ``TablesRetryPolicy`` from keyword arguments: it gets the same counts and backoff factor and
    cap, but azure-core's backoff has no jitter (its first retry is immediate).
    """
    counts: dict[str, Any] = {
        "retry_total": RETRIES,
        "retry_connect": RETRIES,
        "retry_read": RETRIES,
        "retry_status": RETRIES,
    }
    timeouts = {"connection_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}
    if service == "table":
        return {**counts, "retry_backoff_factor": BACKOFF_FACTOR_S, "retry_backoff_max": MAX_BACKOFF_S, **timeouts}
    policy = {"blob": BlobRetry, "queue": QueueRetry}[service](**counts)
    return {"retry_policy": policy, **timeouts}


GDAL_RETRY_OPTIONS: dict[str, str] = {
    "GDAL_HTTP_MAX_RETRY": str(RETRIES),
    "GDAL_HTTP_RETRY_DELAY": str(BACKOFF_FACTOR_S),
    "GDAL_HTTP_RETRY_CODES": ",".join(str(code) for code in TRANSIENT_HTTP_STATUSES),
    "GDAL_HTTP_CONNECTTIMEOUT": str(CONNECT_TIMEOUT_S),
    "GDAL_HTTP_TIMEOUT": str(READ_TIMEOUT_S),
}
"""GDAL settings for the same policy on ``/vsicurl/`` reads (GDAL >= 3.10 for the retry codes)."""

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ModelError, NoSceneError)
"""Errors no redelivery can fix: an invalid site config, a missing or corrupt model, a site-year
that needs a scene that does not exist. (The storage's own "not found" is not here: the site or
model may be written a moment later.)"""


def is_permanent(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is one of :data:`PERMANENT_ERRORS`."""
    return any(isinstance(link, PERMANENT_ERRORS) for link in causes(exc))
