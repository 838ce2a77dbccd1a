"""Start and stop Azurite, the Azure Storage emulator (``npm ci`` installs it), for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
AZURITE_BIN = Path(os.environ.get("RTS_AZURITE_BIN") or REPO_ROOT / "node_modules" / ".bin" / "azurite")
"""The Azurite launcher: ``$RTS_AZURITE_BIN``, else ``node_modules/.bin/azurite`` of this checkout."""

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite is not installed or did not start."""


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def connection_string(blob_port: int, queue_port: int, table_port: int) -> str:
    """Return the connection string of the development account on the given loopback ports."""
    base = "http://127.0.0.1:{}/" + ACCOUNT_NAME
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={base.format(blob_port)};QueueEndpoint={base.format(queue_port)};"
        f"TableEndpoint={base.format(table_port)};"
    )


@contextlib.contextmanager
def running_azurite(location: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """Run Azurite with its data in ``location``; yield its connection string; stop it after.

    Raises
    ------
    AzuriteError
        If ``node_modules/.bin/azurite`` is missing (run ``npm ci``), or Azurite exits or does not
        listen within ``timeout_s`` seconds.
    """
    if not AZURITE_BIN.exists():
        raise AzuriteError(
            f"Azurite is not installed ({AZURITE_BIN} is missing): run `npm ci` in {REPO_ROOT} "
            "(it installs the version pinned in package-lock.json)"
        )
    location.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(3)
    log_path = location / "azurite.log"
    command = [
        str(AZURITE_BIN), "--silent", "--location", str(location), "--disableTelemetry", "--loose",
        "--skipApiVersionCheck", "--blobPort", str(ports[0]), "--queuePort", str(ports[1]),
        "--tablePort", str(ports[2]),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not all(_accepts(port) for port in ports):
            if process.poll() is not None:
                raise AzuriteError(
                    f"Azurite exited with code {process.returncode} before listening; "
                    f"its log ({log_path}):\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise AzuriteError(
                    f"Azurite did not listen on 127.0.0.1 ports {ports} within {timeout_s:.0f} s; "
                    f"its log ({log_path}):\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.1)
        yield connection_string(*ports)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop Azurite by its process id: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
