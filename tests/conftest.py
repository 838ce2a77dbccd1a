"""Shared fixtures."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from rtsmonitor.offline.azurite import AzuriteError, running_azurite
from rtsmonitor.offline.faults import FaultProxy
from rtsmonitor.storage import Storage

# --- Azurite (the Azure Storage emulator) -------------------------------------------------------


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run one Azurite for the test session and yield its connection string.

    Fails (does not skip) when Azurite is not installed: run ``npm ci``.
    """
    try:
        with running_azurite(tmp_path_factory.mktemp("azurite")) as connection_string:
            yield connection_string
    except AzuriteError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def azure_storage(azurite_connection_string: str) -> Storage:
    """Return an Azurite-backed ``Storage`` whose container, table and queue names are unique to the test.

    Every name the test uses is prefixed with a fresh ``name_prefix`` (e.g. ``t3f9a0c1d2e``), so tests
    sharing the session's Azurite never see each other's data.
    """
    from rtsmonitor.storage.azure import AzureStorage  # the Azure SDK loads only for tests that use it

    return AzureStorage.from_connection_string(azurite_connection_string, name_prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def azurite_proxies(azurite_connection_string: str) -> Iterator[tuple[str, dict[str, FaultProxy]]]:
    """One fault-injecting proxy per Azurite service (``Blob``, ``Queue``, ``Table``), passing everything.

    Yields a connection string on the proxies and the proxies by service; set a plan to inject faults.
    """
    settings = dict(part.split("=", 1) for part in azurite_connection_string.split(";") if part)
    proxies = {service: FaultProxy(settings[f"{service}Endpoint"]) for service in ("Blob", "Queue", "Table")}
    with contextlib.ExitStack() as stack:
        for proxy in proxies.values():
            stack.enter_context(proxy)
        settings.update({f"{service}Endpoint": proxy.url for service, proxy in proxies.items()})
        yield ";".join(f"{key}={value}" for key, value in settings.items()) + ";", proxies
