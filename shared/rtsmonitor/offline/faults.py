"""A loopback HTTP reverse proxy that injects faults, for testing retries and partial reads.

Put a :class:`FaultProxy` in front of an HTTP server (the local STAC server of
:mod:`rtsmonitor.offline.stacserver`, or one of Azurite's blob, queue and table endpoints) and point
the client at :attr:`FaultProxy.url`. Requests are forwarded unchanged (method, request target,
headers including ``Host``, ``Range``, ``Authorization`` and ``x-ms-*``, and body) and responses are
streamed back, except where the :class:`FaultPlan` says to inject a :class:`FaultKind`: answer 500,
503 or 429 (with ``Retry-After``) without asking the upstream, hang without answering, cut the
body short after the full ``Content-Length`` was announced, or flip some body bytes. A plan picks
the eligible requests (methods, a regex on the path) and injects faults on a script (the 1st,
2nd, ... eligible request), at random with a seed, or both (script first), up to an optional cap.

Because ``Host`` is forwarded as the client sent it, the STAC server's absolute links point back
at the proxy (asset reads go through it too), and Azure shared-key signatures still verify: they
cover the path, headers and account, not the host. Only the origin differs between the proxy and
the upstream: the upstream's path (e.g. Azurite's ``/devstoreaccount1``) is kept in
:attr:`FaultProxy.url`, so that URL replaces the upstream's endpoint in a connection string.

What the Azure SDKs do with the faults (azure-storage-blob 12.31, azure-data-tables 12.7): the
storage SDKs' default retry policy waits about 15 s before its first retry (pass a ``LinearRetry``
with ``backoff=0`` in tests); they retry 500 and 503 but not 429; a ``short`` blob download is
retried ("Incomplete download"); a ``corrupt`` body is accepted unless ``validate_content=True``;
a ``hang`` needs the client's ``read_timeout``, not the server-side ``timeout``. The Tables SDK
retries 429 after its ``Retry-After``.

Limits: plain HTTP only (no TLS, no ``CONNECT``, no WebSocket upgrade); clients must speak HTTP/1.1
(requests, urllib3, GDAL's curl and the Azure SDKs do) because responses without a
``Content-Length`` are re-sent chunked; chunked request bodies are forwarded chunked without their
trailers; each request opens its own upstream connection. The proxy binds loopback addresses only.
"""

from __future__ import annotations

import bisect
import contextlib
import http.client
import ipaddress
import logging
import random
import re
import socket
import socketserver
import threading
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
"""Bodies are relayed in pieces of at most this many bytes (nothing is buffered whole)."""
UPSTREAM_TIMEOUT_S = 60.0
"""Timeout in seconds for connecting to the upstream and for each read from it."""
CLIENT_IDLE_TIMEOUT_S = 60.0
"""A client connection that sends nothing for this many seconds is closed."""
DEFAULT_HANG_S = 30.0
"""How long, in seconds, a ``hang`` fault holds the connection before closing it."""
DEFAULT_RETRY_AFTER_S = 1
"""``Retry-After`` value, in whole seconds, of a ``status_429`` fault."""
DEFAULT_SHORT_FRACTION = 0.5
"""Fraction of the body a ``short`` fault sends before closing the connection."""
DEFAULT_CORRUPT_BYTES = 8
"""How many body bytes a ``corrupt`` fault flips."""
INJECTION_LOG_SIZE = 1000
""":attr:`ProxyStats.injections` keeps the latest this many injected faults."""
STOP_TIMEOUT_S = 5.0
""":meth:`FaultProxy.stop` waits at most this many seconds for the serving thread."""
_MAX_LINE_BYTES = 65536  # as http.server's limit on request and header lines

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1); ``expect`` too,
# because the handler already answers ``100-continue`` itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "expect"}
)
_BODYLESS_STATUSES = frozenset({204, 304})


class FaultKind(StrEnum):
    """What the proxy does instead of a faithful relay."""

    STATUS_500 = "status_500"
    """Answer 500 Internal Server Error without forwarding the request."""
    STATUS_503 = "status_503"
    """Answer 503 Service Unavailable without forwarding the request."""
    STATUS_429 = "status_429"
    """Answer 429 Too Many Requests with ``Retry-After: <FaultPlan.retry_after_s>``, not forwarding."""
    HANG = "hang"
    """Answer nothing for ``FaultPlan.hang_s`` seconds (or until the proxy stops), then close."""
    SHORT = "short"
    """Forward; relay status and headers (with the full ``Content-Length``) and part of the body; close."""
    CORRUPT = "corrupt"
    """Forward; relay the response with ``FaultPlan.corrupt_bytes`` body bytes inverted (same length)."""


_STATUS_FAULTS = {
    FaultKind.STATUS_500: HTTPStatus.INTERNAL_SERVER_ERROR,
    FaultKind.STATUS_503: HTTPStatus.SERVICE_UNAVAILABLE,
    FaultKind.STATUS_429: HTTPStatus.TOO_MANY_REQUESTS,
}


@dataclass(frozen=True)
class FaultPlan:
    """Which requests get which faults; the default plan forwards everything faithfully.

    A request is *eligible* when its method is in ``methods`` (all methods if ``None``) and
    ``path_regex`` is found (``re.search``) in its path (without the query string). The n-th
    eligible request (from 0) gets ``script[n]`` (``None``: pass through); eligible requests beyond
    the script get a fault with probability ``rate``, its kind drawn from ``kinds``, from a
    ``random.Random(seed)`` (so the same plan over the same request sequence injects the same
    faults). No more than ``max_faults`` faults are injected in all (no cap if ``None``).
    """

    script: tuple[FaultKind | None, ...] = ()
    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    seed: int = 0
    methods: frozenset[str] | None = None
    path_regex: str | None = None
    max_faults: int | None = None
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    hang_s: float = DEFAULT_HANG_S
    short_fraction: float = DEFAULT_SHORT_FRACTION
    corrupt_bytes: int = DEFAULT_CORRUPT_BYTES
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the values; normalise kinds and methods; compile the path regex."""
        object.__setattr__(self, "script", tuple(None if k is None else FaultKind(k) for k in self.script))
        object.__setattr__(self, "kinds", tuple(FaultKind(k) for k in self.kinds))
        if self.methods is not None:
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"FaultPlan.rate must be within [0, 1], got {self.rate}")
        if self.rate > 0 and not self.kinds:
            raise ValueError("FaultPlan.kinds is empty but rate > 0: give the kinds to draw from")
        if self.max_faults is not None and self.max_faults < 0:
            raise ValueError(f"FaultPlan.max_faults must be >= 0 or None, got {self.max_faults}")
        if self.retry_after_s < 0 or self.hang_s < 0 or self.corrupt_bytes < 0:
            raise ValueError(
                "FaultPlan.retry_after_s, hang_s and corrupt_bytes must be >= 0, got "
                f"{self.retry_after_s}, {self.hang_s}, {self.corrupt_bytes}"
            )
        if not 0.0 <= self.short_fraction < 1.0:
            raise ValueError(f"FaultPlan.short_fraction must be within [0, 1), got {self.short_fraction}")
        object.__setattr__(self, "_pattern", None if self.path_regex is None else re.compile(self.path_regex))

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with ``method`` and ``path`` (no query string) is eligible."""
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self._pattern is None or self._pattern.search(path) is not None


@dataclass(frozen=True)
class Injection:
    """One injected fault: the eligible request's number under its plan (from 0), method, path, kind."""

    index: int
    method: str
    path: str
    kind: FaultKind


@dataclass(frozen=True)
class ProxyStats:
    """Counts since the proxy started or since :meth:`FaultProxy.reset_stats`."""

    seen: int
    """Requests received."""
    eligible: int
    """Requests the plan in force found eligible."""
    forwarded: int
    """Requests sent to the upstream (pass-through, ``short`` and ``corrupt``)."""
    upstream_errors: int
    """Forwarded requests the upstream did not answer (refused, timed out): answered 502."""
    faults: dict[FaultKind, int]
    """Faults injected, per kind (kinds not injected are absent)."""
    injections: tuple[Injection, ...]
    """The latest :data:`INJECTION_LOG_SIZE` injected faults, oldest first."""

    @property
    def total_faults(self) -> int:
        """Faults injected, all kinds together."""
        return sum(self.faults.values())


class _Server(socketserver.ThreadingTCPServer):
    """The listening socket; one daemon thread per client connection."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a handler's exception at debug level (clients hanging up mid-response are expected)."""
        logger.debug("fault proxy: error serving %s", client_address, exc_info=True)


class FaultProxy:
    """A reverse proxy on a loopback port in front of ``upstream``, injecting the faults of ``plan``.

    ``upstream`` is ``http://host:port`` optionally followed by a path (kept in :attr:`url`).
    Use as a context manager or with :meth:`start` and :meth:`stop`::

        with LocalStacServer(root) as stac, FaultProxy(stac.url, FaultPlan(script=(FaultKind.HANG,))) as proxy:
            requests.get(proxy.url + "/files/a.tif", timeout=1)  # times out
    """

    def __init__(self, upstream: str, plan: FaultPlan | None = None, host: str = "127.0.0.1") -> None:
        _check_loopback(host)
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"upstream must be http://host:port with an optional path, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_path = parts.path.rstrip("/")
        self.host = host
        self._plan = plan or FaultPlan()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._reset_plan_progress()
        self._reset_counts()

    # --- life cycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The loopback port the proxy listens on (known once started)."""
        if self._server is None:
            raise RuntimeError("the fault proxy is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The proxy's base URL: ``http://<host>:<port>`` plus the upstream's path (no trailing slash)."""
        return f"http://{self.host}:{self.port}{self.upstream_path}"

    def start(self) -> None:
        """Bind the port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the fault proxy is already running")
        self._stopping.clear()
        self._server = _Server((self.host, 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fault-proxy", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: end hangs, close client connections and the listening socket."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- plan and counters ----------------------------------------------------------------------

    @property
    def plan(self) -> FaultPlan:
        """The plan in force."""
        with self._lock:
            return self._plan

    def set_plan(self, plan: FaultPlan) -> None:
        """Put ``plan`` in force from its start (script position 0, fresh random stream, no faults yet)."""
        with self._lock:
            self._plan = plan
            self._reset_plan_progress()

    def stats(self) -> ProxyStats:
        """The counts so far."""
        with self._lock:
            return ProxyStats(
                seen=self._seen,
                eligible=self._eligible,
                forwarded=self._forwarded,
                upstream_errors=self._upstream_errors,
                faults=dict(self._faults),
                injections=tuple(self._injections),
            )

    def reset_stats(self) -> None:
        """Zero the counts of :meth:`stats` (the plan's progress is kept)."""
        with self._lock:
            self._reset_counts()

    def _reset_plan_progress(self) -> None:
        self._plan_eligible = 0
        self._plan_faults = 0
        self._rng = random.Random(self._plan.seed)

    def _reset_counts(self) -> None:
        self._seen = self._eligible = self._forwarded = self._upstream_errors = 0
        self._faults: Counter[FaultKind] = Counter()
        self._injections: deque[Injection] = deque(maxlen=INJECTION_LOG_SIZE)

    def _decide(self, method: str, path: str) -> tuple[FaultKind | None, FaultPlan, int]:
        """Count a request; return its fault (``None``: relay), the plan in force and its eligible number."""
        with self._lock:
            self._seen += 1
            plan = self._plan
            if not plan.matches(method, path):
                return None, plan, -1
            index = self._plan_eligible
            self._plan_eligible += 1
            self._eligible += 1
            kind: FaultKind | None = None
            if plan.max_faults is None or self._plan_faults < plan.max_faults:
                if index < len(plan.script):
                    kind = plan.script[index]
                elif plan.rate > 0 and self._rng.random() < plan.rate:
                    kind = self._rng.choice(plan.kinds)
            if kind is not None:
                self._plan_faults += 1
                self._faults[kind] += 1
                self._injections.append(Injection(index, method, path, kind))
            return kind, plan, index

    def _count_forwarded(self) -> None:
        with self._lock:
            self._forwarded += 1

    def _count_upstream_error(self) -> None:
        with self._lock:
            self._upstream_errors += 1

    def _track(self, connection: socket.socket, active: bool) -> None:
        with self._lock:
            if active:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


def _check_loopback(host: str) -> None:
    """Raise ``ValueError`` unless ``host`` is ``localhost`` or an IPv4 loopback address."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(
            f"FaultProxy binds loopback only: host must be 127.0.0.1, 127.x.y.z or 'localhost', got {host!r}"
        )


class _Handler(BaseHTTPRequestHandler):
    """Relays one client connection's requests (keep-alive), injecting the plan's faults."""

    protocol_version = "HTTP/1.1"
    timeout = CLIENT_IDLE_TIMEOUT_S
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def setup(self) -> None:
        """Register the connection so that :meth:`FaultProxy.stop` can close it."""
        super().setup()
        self.server.proxy._track(self.connection, active=True)

    def finish(self) -> None:
        """Unregister the connection."""
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, active=False)

    def log_message(self, format: str, *args: object) -> None:
        """Log at debug level, not to stderr."""
        logger.debug("fault proxy: " + format, *args)

    def _handle(self) -> None:
        proxy = self.server.proxy
        kind, plan, index = proxy._decide(self.command, urlsplit(self.path).path)
        try:
            if kind is FaultKind.HANG:
                proxy._stopping.wait(plan.hang_s)
                self.close_connection = True
            elif kind is not None and kind in _STATUS_FAULTS:
                for _ in self._request_body():
                    pass
                self._answer_fault_status(kind, plan)
            else:
                self._forward(kind, plan, index)
        except OSError:  # the client hung up, or the upstream failed mid-body
            logger.debug("fault proxy: connection dropped during %s %s", self.command, self.path, exc_info=True)
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_MERGE = do_OPTIONS = _handle

    def _request_body(self) -> Iterator[bytes]:
        """The request body in pieces (de-chunked if it came chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(_MAX_LINE_BYTES).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(_MAX_LINE_BYTES) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return
                yield from self._read_exactly(size)
                self.rfile.readline(_MAX_LINE_BYTES)  # the CRLF closing the chunk
        else:
            yield from self._read_exactly(int(self.headers.get("Content-Length") or 0))

    def _read_exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            piece = self.rfile.read(min(size, CHUNK_BYTES))
            if not piece:
                raise ConnectionError("the client closed the connection inside the request body")
            size -= len(piece)
            yield piece

    def _answer_fault_status(self, kind: FaultKind, plan: FaultPlan) -> None:
        status = _STATUS_FAULTS[kind]
        body = f"fault injected by the test proxy: {kind.value}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if kind is FaultKind.STATUS_429:
            self.send_header("Retry-After", str(plan.retry_after_s))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, kind: FaultKind | None, plan: FaultPlan, index: int) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        upstream.putheader(name, value)
                if chunked:
                    upstream.putheader("Transfer-Encoding", "chunked")
                upstream.endheaders()
                for piece in self._request_body():
                    upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if chunked:
                    upstream.send(b"0\r\n\r\n")
                proxy._count_forwarded()
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                proxy._count_upstream_error()
                self.send_error(
                    HTTPStatus.BAD_GATEWAY, explain=f"upstream {proxy.upstream_host}:{proxy.upstream_port}: {exc}"
                )
                return
            self._relay(response, kind, plan, index)
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, kind: FaultKind | None, plan: FaultPlan, index: int) -> None:
        """Send the upstream's response on, cut short or corrupted as ``kind`` says."""
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD" or response.status in _BODYLESS_STATUSES or response.status < 200:
            self.end_headers()
            self.close_connection = self.close_connection or kind is FaultKind.SHORT
            return
        declared = response.getheader("Content-Length")
        length = int(declared) if declared is not None and not response.chunked else None
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cutoff = None if kind is not FaultKind.SHORT or length is None else int(length * plan.short_fraction)
        flips: list[int] | None = None
        sent = 0
        while piece := response.read1(CHUNK_BYTES):
            if kind is FaultKind.SHORT and cutoff is None:  # length unknown: cut within the first piece
                cutoff = int(len(piece) * plan.short_fraction)
            if kind is FaultKind.CORRUPT:
                if flips is None:  # length unknown: flip within the first piece
                    flips = _flip_positions(plan, index, length if length is not None else len(piece))
                piece = _flip(piece, sent, flips)
            if cutoff is not None and sent + len(piece) >= cutoff:
                self._write_body(piece[: cutoff - sent], chunked=length is None)
                self.close_connection = True
                return
            self._write_body(piece, chunked=length is None)
            sent += len(piece)
        if kind is FaultKind.SHORT:  # an empty body: nothing to cut, but the connection still closes
            self.close_connection = True
        elif length is None:
            self.wfile.write(b"0\r\n\r\n")

    def _write_body(self, piece: bytes, chunked: bool) -> None:
        if not piece:
            return
        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)


def _flip_positions(plan: FaultPlan, index: int, length: int) -> list[int]:
    """The sorted body offsets a ``corrupt`` fault inverts, fixed by the plan's seed and the request number."""
    rng = random.Random(f"{plan.seed}:corrupt:{index}")
    return sorted(rng.sample(range(length), min(plan.corrupt_bytes, length)))


def _flip(piece: bytes, offset: int, positions: Sequence[int]) -> bytes:
    """``piece`` (which starts at body ``offset``) with the bytes at ``positions`` inverted."""
    start = bisect.bisect_left(positions, offset)
    stop = bisect.bisect_left(positions, offset + len(piece))
    if start == stop:
        return piece
    data = bytearray(piece)
    for position in positions[start:stop]:
        data[position - offset] ^= 0xFF
    return bytes(data)
