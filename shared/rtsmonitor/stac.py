"""Access to a STAC API: the client (signed for Planetary Computer) and GDAL settings for COG reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import planetary_computer
import rasterio
from pystac_client import Client

from rtsmonitor.retry import GDAL_RETRY_OPTIONS, stac_io, stac_timeouts

PLANETARY_COMPUTER_STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
"""The Microsoft Planetary Computer STAC API (default imagery and DEM source)."""
STAC_URL_ENV = "RTS_STAC_URL"
"""Environment variable (and Functions app setting) naming the STAC API; Planetary Computer if unset."""

GDAL_REMOTE_READ_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
    "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/",
    "GDAL_CACHEMAX": 128,
    **GDAL_RETRY_OPTIONS,
}
"""GDAL options for reading COGs over HTTP: no directory listing, merged range requests, the
retries and timeouts of :data:`rtsmonitor.retry.GDAL_RETRY_OPTIONS`, no process-wide ``/vsicurl/``
cache (GDAL keeps a response cut short in it and every later read of that tile in the process
fails without a request: a worker would fail every redelivery; found by the soak run), and a
raster block cache of 128 MB (GDAL's default is 5 % of RAM, which lets a worker's memory grow with the machine rather
than with the window it reads)."""


def is_planetary_computer(url: str) -> bool:
    """True when ``url`` is the Planetary Computer STAC API, whose assets need a SAS signature."""
    return url.rstrip("/").startswith("https://planetarycomputer.microsoft.com")


def open_catalog(url: str) -> Client:
    """Open a STAC API, its requests retried as :mod:`rtsmonitor.retry` says.

    Items from Planetary Computer come back with signed asset hrefs.
    """
    modifier = planetary_computer.sign_inplace if is_planetary_computer(url) else None
    return Client.open(url, modifier=modifier, stac_io=stac_io(), timeout=stac_timeouts())


@contextlib.contextmanager
def read_env() -> Iterator[None]:
    """A rasterio/GDAL environment tuned for windowed reads of remote COGs."""
    with rasterio.Env(**GDAL_REMOTE_READ_OPTIONS):
        yield
