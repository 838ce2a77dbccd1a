"""Retries with exponential backoff for transient failures of remote reads (STAC API, COGs).

A site-year first retries its own remote reads here (seconds apart); if they keep failing the job
fails and the Functions host redelivers it minutes later (``host.json``), and after
:data:`rtsmonitor.jobs.MAX_DEQUEUE_COUNT` deliveries it goes to the poison queue.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from pystac_client.exceptions import APIError
from rasterio.errors import RasterioIOError

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3
"""Tries of one remote step before its error reaches the job (1 try + 2 retries)."""
BASE_DELAY_S = 2.0
"""Delay before the first retry, in seconds; it doubles on every retry."""
MAX_DELAY_S = 30.0
"""Longest delay between two tries, in seconds."""

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    APIError,
    RasterioIOError,
    ConnectionError,
    TimeoutError,
)
"""Errors worth trying again: network failures, HTTP errors of the STAC API, unreadable remote files.
(Storage calls are retried by the Azure SDK's own retry policy.)"""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a transient remote failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TRANSIENT_ERRORS):
            return True
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return False


def with_retries(
    step: Callable[[], T],
    what: str,
    *,
    attempts: int = ATTEMPTS,
    base_delay_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``step``; on a transient error wait (exponential backoff with jitter) and try again.

    Non-transient errors, and the last transient one, propagate unchanged. ``base_delay_s``
    defaults to :data:`BASE_DELAY_S`.
    """
    first_delay_s = BASE_DELAY_S if base_delay_s is None else base_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(MAX_DELAY_S, first_delay_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            log.warning("%s failed (try %d of %d): %s; retrying in %.1f s", what, attempt, attempts, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
