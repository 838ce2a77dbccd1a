"""Secrets taken out of text before it is logged or answered: SAS tokens, account keys, auth headers, function keys.

The monitor reads Planetary Computer assets through signed URLs (``...tif?st=...&se=...&sig=...``),
and GDAL, rasterio, requests and the Azure SDK put such URLs, and sometimes connection strings or
request headers, into their error messages and debug logs. :func:`redact` replaces every secret it
recognises with :data:`REDACTED`; :func:`install_redaction` makes every log record of the process
pass through it; :func:`redacted_exception` gives an exception whose message is safe to let escape
(the Functions worker sends an escaping exception's message to the host, which logs it).

What is recognised (case-insensitive):

- the values of the SAS query parameters :data:`SAS_QUERY_PARAMS` and of :data:`SECRET_QUERY_PARAMS`
  (the function key ``code``) after ``?`` or ``&`` (also percent-encoded, ``%3F``/``%26``/``%3D``,
  as in ``/vsicurl?url=...``), so a signed URL keeps its path and loses its whole signature;
  ``sig`` (:data:`BARE_SECRET_PARAMS`) wherever ``sig=`` starts a word;
- the values of the connection-string keys :data:`CONNECTION_STRING_SECRETS` (``AccountKey=...;``);
- the values of the headers :data:`SECRET_HEADERS` (``Authorization: SharedKey acct:sig``,
  ``'x-functions-key': '...'``), ``Bearer <token>`` anywhere, and JSON web tokens (``eyJ...``).

It is a safety net, not a licence: code should still not log secrets on purpose.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

REDACTED = "REDACTED"
"""What a secret value is replaced with (the word azure-core's HTTP logging policy uses too)."""

SAS_QUERY_PARAMS: tuple[str, ...] = (
    "sv", "ss", "srt", "sp", "se", "st", "sip", "spr", "sr", "si", "sig", "sdd", "ses",
    "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
    "rscc", "rscd", "rsce", "rscl", "rsct", "tn", "spk", "srk", "epk", "erk",
)  # fmt: skip
"""Query parameters of an Azure Storage shared access signature (service, account and user
delegation SAS, Azure Storage REST API 2024-05-04): their values are redacted after ``?`` or ``&``.
Only ``sig`` is the secret; the others (times, permissions, the signing key's object and tenant ids)
are redacted too so that a signed URL in a log shows no part of its signature."""

SECRET_QUERY_PARAMS: tuple[str, ...] = ("code", "access_token", "client_secret")
"""Other query parameters whose value is a secret after ``?`` or ``&``: an Azure Functions key
(``?code=``), OAuth tokens and client secrets."""

BARE_SECRET_PARAMS: tuple[str, ...] = ("sig", "access_token", "client_secret")
"""Parameters redacted wherever ``name=`` starts a word, not only in a query: a SAS token logged
on its own (``sv=...&sig=...``) or as a connection string's ``SharedAccessSignature``."""

CONNECTION_STRING_SECRETS: tuple[str, ...] = ("AccountKey", "SharedAccessKey", "SharedAccessSignature")
"""Connection-string keys whose value (up to ``;``, a quote or white space) is a secret."""

SECRET_HEADERS: tuple[str, ...] = (
    "authorization",
    "proxy-authorization",
    "x-functions-key",
    "x-ms-copy-source-authorization",
    "ocp-apim-subscription-key",
)
"""HTTP headers whose value is a secret: ``Name: value``, ``Name=value`` and ``'Name': 'value'``
(a logged header dict) are all recognised; an auth scheme (``Bearer``, ``SharedKey``) is kept."""

REDACTED_ATTR = "rts_redacted"
"""Attribute set on a :class:`logging.LogRecord` once redacted, so a record is redacted only once."""

_VALUE_END = r"&\s\"'<>#,;)\]}\\"  # characters that end a query value (none occurs in a SAS value)
_QUERY_SEP = r"(?:[?&]|%3F|%26)"
_EQUALS = r"(?P<eq>=|%3D)"


def _names(names: tuple[str, ...]) -> str:
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


_VALUE = rf"(?:(?!%26)[^{_VALUE_END}])*"
_QUERY_PARAM_RE = re.compile(
    rf"(?P<lead>{_QUERY_SEP})(?P<key>{_names(SAS_QUERY_PARAMS + SECRET_QUERY_PARAMS)}){_EQUALS}{_VALUE}",
    re.IGNORECASE,
)
_BARE_PARAM_RE = re.compile(
    rf"(?P<lead>(?<![\w.:%-]))(?P<key>{_names(BARE_SECRET_PARAMS)}){_EQUALS}{_VALUE}", re.IGNORECASE
)
_CONNECTION_RE = re.compile(rf"\b(?P<key>{_names(CONNECTION_STRING_SECRETS)})=[^;\s\"'<>]+", re.IGNORECASE)
_HEADER_RE = re.compile(
    rf"(?P<head>\b(?:{_names(SECRET_HEADERS)})[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:Bearer|SharedKey|SharedKeyLite|Basic|Digest|SharedAccessSignature)\s+)?)"
    r"[^\s\"',;}]+",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]+=*")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")

_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (_QUERY_PARAM_RE, lambda m: f"{m['lead']}{m['key']}{m['eq']}{REDACTED}"),
    (_BARE_PARAM_RE, lambda m: f"{m['lead']}{m['key']}{m['eq']}{REDACTED}"),
    (_CONNECTION_RE, lambda m: f"{m['key']}={REDACTED}"),
    (_HEADER_RE, lambda m: f"{m['head']}{REDACTED}"),
    (_BEARER_RE, lambda m: f"Bearer {REDACTED}"),
    (_JWT_RE, lambda m: REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by :data:`REDACTED` (see the module docstring).

    Text without secrets comes back unchanged; redacting twice changes nothing more.

    Examples
    --------
    >>> redact("GET https://acct.blob.core.windows.net/c/B04.tif?sv=2024-05-04&sp=r&sig=AbC%2Bd%3D (HTTP 403)")
    'GET https://acct.blob.core.windows.net/c/B04.tif?sv=REDACTED&sp=REDACTED&sig=REDACTED (HTTP 403)'
    >>> redact("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bXlrZXk=;EndpointSuffix=core.windows.net")
    'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=REDACTED;EndpointSuffix=core.windows.net'
    """
    for pattern, replace in _RULES:
        text = pattern.sub(replace, text)
    return text


_EXCEPTION_FORMATTER = logging.Formatter()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place (once) and return it.

    The message is formatted (``record.getMessage()``), redacted and stored as ``record.msg`` with
    ``record.args = None``, so no handler or formatter can format the raw arguments again. An
    exception is formatted into ``record.exc_text`` (redacted) and ``record.exc_info`` is cleared:
    :class:`logging.Formatter` prints ``exc_text`` as it would have printed ``exc_info``, and a
    handler that reads ``exc_info`` itself (an OpenTelemetry exporter, say) finds no raw exception
    message to send. ``stack_info`` is redacted too.
    """
    if getattr(record, REDACTED_ATTR, False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: show both rather than fail later
        message = f"{record.msg} (arguments {record.args!r})"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    setattr(record, REDACTED_ATTR, True)
    return record


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record it sees (:func:`redact_record`) and drops none.

    Attach it to handlers, not loggers: a handler's filters see every record that reaches the
    handler, those propagated from child loggers included, while a logger's filters see only the
    records logged on that very logger (``logging.getLogger("rasterio._env")`` records would pass a
    filter on the root logger unredacted).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        redact_record(record)
        return True


class RedactingRecordFactory:
    """A log-record factory (:func:`logging.setLogRecordFactory`) that redacts each record it makes.

    It wraps the factory installed before it, so other factories keep working.
    """

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        """Make the record with the wrapped factory, then redact it."""
        return redact_record(self.inner(*args, **kwargs))


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every log record of this process; safe to call again (it installs nothing twice).

    Two layers:

    1. a :class:`RedactingRecordFactory` as the process's log-record factory: every record any
       logger makes is redacted when it is made, whichever handlers exist, including handlers added
       later (the Azure Functions Python worker adds its gRPC handler to the root logger when it
       starts; the Azure Monitor OpenTelemetry distro adds its own);
    2. a :class:`RedactingFilter` on every handler the root logger (or ``logger``) has now, for
       records that bypass the factory (``logging.makeLogRecord`` and code that builds
       :class:`logging.LogRecord` directly, or a library that replaces the factory after us).

    Filters go on handlers, not on the logger: a logger's filters do not see records propagated
    from its children. What neither layer can catch is text written straight to stdout or stderr
    (``print``, GDAL's own console output when no Python error handler is set).
    """
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, RedactingRecordFactory):
        logging.setLogRecordFactory(RedactingRecordFactory(factory))
    target = logging.getLogger() if logger is None else logger
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class RedactedError(Exception):
    """Raised in place of an exception whose message held a secret; the message names the original type."""


def redacted_exception(exc: BaseException) -> BaseException:
    """``exc`` if its message holds no secret, else a :class:`RedactedError` with the redacted message.

    Raise the result ``from None`` when it is not ``exc``: the original (and its chain) stays out of
    the traceback that the Functions worker sends to the host and the host logs.
    """
    text = f"{type(exc).__name__}: {exc}"
    safe = redact(text)
    return exc if safe == text else RedactedError(safe)
