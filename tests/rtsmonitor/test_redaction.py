"""Secrets taken out of text and log records: signed URLs, connection strings, auth headers, function keys."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from rtsmonitor.redaction import (
    REDACTED,
    RedactedError,
    RedactingFilter,
    RedactingRecordFactory,
    install_redaction,
    redact,
    redacted_exception,
)

SIG = "AbC%2Bdef%3D"
SKOID = "9c8ff44a-6a2c-4dfb-b298-1c9212f64d9a"
SKTID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
PC_SAS = (
    "st=2026-11-24T10%3A00%3A00Z&se=2026-11-25T10%3A00%3A00Z&sp=rl&sv=2024-05-04&sr=c"
    f"&skoid={SKOID}&sktid={SKTID}&skt=2026-11-24T09%3A14%3A43Z&ske=2026-12-01T09%3A14%3A43Z"
    f"&sks=b&skv=2024-05-04&sig={SIG}"
)
"""The query of a Planetary Computer signed asset href (a user delegation SAS), values made up."""
PC_HREF = (
    "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/08/W/MC/2021/07/18/"
    "S2B_MSIL2A_20210718T205029_N0301_R057_T08WMC_20210719T001813.SAFE/GRANULE/"
    "L2A_T08WMC_A022789_20210718T205029/IMG_DATA/R10m/T08WMC_20210718T205029_B04_10m.tif"
)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known account key (public, but an AccountKey all the same)."""
MADE_UP_KEY = "q1w2E3r4T5y6U7i8O9p0+aSdFgHjKlZxCvBnM/1234567890abcdefABCDEF=="


def secrets_of(text: str) -> list[str]:
    """The secret values of these tests that ``text`` still holds."""
    return [s for s in (SIG, SKOID, SKTID, AZURITE_KEY, MADE_UP_KEY, "SECRETSIG", "s3cr3t-k3y") if s in text]


# --- redact() ---------------------------------------------------------------------------------------


def test_signed_planetary_computer_href_loses_its_whole_sas_query() -> None:
    out = redact(f"{PC_HREF}?{PC_SAS}")
    assert out.startswith(f"{PC_HREF}?")  # the path stays: a log still says which file
    assert secrets_of(out) == []
    query = out.split("?", 1)[1]
    assert all(value == REDACTED for _, value in (p.split("=", 1) for p in query.split("&")))
    assert [p.split("=")[0] for p in query.split("&")] == [p.split("=")[0] for p in PC_SAS.split("&")]


@pytest.mark.parametrize(
    "text",
    [
        f"RasterioIOError: '/vsicurl/{PC_HREF}?{PC_SAS}' not recognized as a supported file format.",
        f"CPLE_HttpResponseError: HTTP response code: 403 - /vsicurl/{PC_HREF}?{PC_SAS}",
        f"[('{PC_HREF}?{PC_SAS}', 404)]",
        f'{{"href": "{PC_HREF}?{PC_SAS}", "type": "image/tiff"}}',
        f"https://host/x.tif?SIG={SIG}&SV=2024-05-04",  # parameter names are case-insensitive
        f"token {PC_SAS}",  # a SAS token on its own (planetary_computer's token response)
        f"/vsicurl?use_head=no&url=https%3A%2F%2Fa.blob.core.windows.net%2Fc%2Fx.tif%3Fsv%3D2024-05-04%26sig%3D{SIG}",
    ],
    ids=["rasterio", "gdal", "repr", "json", "upper-case", "bare-token", "percent-encoded"],
)
def test_sas_signature_is_removed_wherever_it_appears(text: str) -> None:
    out = redact(text)
    assert secrets_of(out) == [] and REDACTED in out


def test_percent_encoded_url_keeps_its_encoding() -> None:
    out = redact("/vsicurl?url=https%3A%2F%2Fa%2Fx.tif%3Fsv%3D2024-05-04%26sig%3DSECRETSIG%26foo%3Dbar")
    assert out == f"/vsicurl?url=https%3A%2F%2Fa%2Fx.tif%3Fsv%3D{REDACTED}%26sig%3D{REDACTED}%26foo%3Dbar"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={REDACTED};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        ),
        (
            f"invalid connection string 'DefaultEndpointsProtocol=https;AccountName=rtsprod;accountkey={MADE_UP_KEY}'",
            f"invalid connection string 'DefaultEndpointsProtocol=https;AccountName=rtsprod;accountkey={REDACTED}'",
        ),
        (
            f"BlobEndpoint=https://rtsprod.blob.core.windows.net/;SharedAccessSignature=sv=2024-05-04&ss=b&sig={SIG}",
            f"BlobEndpoint=https://rtsprod.blob.core.windows.net/;SharedAccessSignature={REDACTED}",
        ),
        (
            f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey={MADE_UP_KEY}",
            f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey={REDACTED}",
        ),
    ],
    ids=["azurite", "made-up-key", "sas-connection-string", "shared-access-key"],
)
def test_connection_string_keeps_its_shape_without_the_key(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"Authorization: SharedKey devstoreaccount1:{MADE_UP_KEY}",
            f"Authorization: SharedKey {REDACTED}",
        ),
        (
            "authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
            f"authorization: Bearer {REDACTED}",
        ),
        (
            f"Request headers: {{'x-ms-version': '2025-01-05', 'Authorization': 'SharedKey acct:{MADE_UP_KEY}'}}",
            f"Request headers: {{'x-ms-version': '2025-01-05', 'Authorization': 'SharedKey {REDACTED}'}}",
        ),
        ("x-functions-key: s3cr3t-k3y", f"x-functions-key: {REDACTED}"),
        ("GET /api/records?format=csv&code=s3cr3t-k3y==", f"GET /api/records?format=csv&code={REDACTED}"),
        ("token Bearer abc.def-ghi_jkl", f"token Bearer {REDACTED}"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", REDACTED),
    ],
    ids=["sharedkey", "bearer", "header-dict", "function-key-header", "function-key-query", "bearer-anywhere", "jwt"],
)
def test_auth_headers_and_function_keys_are_removed(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "horton01 2021: stack 3.21 s, inference 9.80 s",
        "https://planetarycomputer.microsoft.com/api/stac/v1/search?collections=sentinel-2-l2a&limit=10&token=next:x",
        "/vsicurl/http://127.0.0.1:5000/files/sentinel-2-l2a/T08WMC_20210718_B04_10m.tif",
        "DefaultEndpointsProtocol=https;AccountName=rtsprod;EndpointSuffix=core.windows.net",
        "UseDevelopmentStorage=true",
        "process exited with code=1; se=0.5 (standard error); authorization failed",
        "GET /api/records?format=csv&year=2021",
        "",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_redacting_twice_changes_nothing_more() -> None:
    text = f"{PC_HREF}?{PC_SAS} AccountKey={AZURITE_KEY}; Authorization: Bearer abcdefgh"
    assert redact(redact(text)) == redact(text)


def test_redacted_exception_replaces_only_messages_with_secrets() -> None:
    plain = ValueError("no scene in July 2021")
    assert redacted_exception(plain) is plain
    safe = redacted_exception(OSError(f"HTTP 404: {PC_HREF}?{PC_SAS}"))
    assert isinstance(safe, RedactedError) and str(safe).startswith("OSError: HTTP 404: ")
    assert secrets_of(str(safe)) == []


# --- logging ----------------------------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A child logger whose records propagate to a handler on a private parent logger."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    parent = logging.getLogger("rts-redaction-test")
    parent.addHandler(handler)
    parent.setLevel(logging.DEBUG)
    parent.propagate = False
    try:
        yield logging.getLogger("rts-redaction-test.child.gdal"), stream, handler
    finally:
        parent.removeHandler(handler)


def log_secrets(logger: logging.Logger) -> None:
    logger.warning("read %s failed (try %d of %d)", f"/vsicurl/{PC_HREF}?{PC_SAS}", 1, 3)
    logger.info({"connection": f"AccountName=a;AccountKey={MADE_UP_KEY}"})  # a non-str message
    try:
        raise OSError(f"'/vsicurl/{PC_HREF}?{PC_SAS}' not recognized; AccountKey={AZURITE_KEY}")
    except OSError:
        logger.exception("site-year failed")


def test_filter_on_a_handler_redacts_args_messages_and_tracebacks_of_child_loggers(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = capture
    handler.addFilter(RedactingFilter())
    log_secrets(logger)
    text = stream.getvalue()
    assert "read /vsicurl/https://sentinel2l2a01" in text and "(try 1 of 3)" in text  # formatted with its args
    assert "Traceback (most recent call last)" in text and "OSError" in text  # the traceback is kept
    assert text.count(REDACTED) >= 4 and secrets_of(text) == []


def test_record_factory_redacts_records_before_any_handler_sees_them(
    capture: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, _ = capture
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):  # a handler that reads the record's fields itself, not via a Formatter
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(keep := Keep())
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(RedactingRecordFactory(previous))
    try:
        log_secrets(logger)
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(keep)
    assert secrets_of(stream.getvalue()) == [] and "Traceback" in stream.getvalue()
    assert len(seen) == 3 and all(r.args is None and r.exc_info is None for r in seen)
    assert secrets_of(" ".join(f"{r.msg} {r.exc_text}" for r in seen)) == []


def test_install_redaction_covers_root_handlers_and_later_handlers_once() -> None:
    root = logging.getLogger()
    early, late = io.StringIO(), io.StringIO()
    early_handler = logging.StreamHandler(early)
    root.addHandler(early_handler)
    previous = logging.getLogRecordFactory()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        install_redaction()
        install_redaction()  # idempotent
        assert isinstance(logging.getLogRecordFactory(), RedactingRecordFactory)
        assert not isinstance(logging.getLogRecordFactory().inner, RedactingRecordFactory)  # type: ignore[attr-defined]
        assert sum(isinstance(f, RedactingFilter) for f in early_handler.filters) == 1
        late_handler = logging.StreamHandler(late)  # added after install, as the Functions worker does
        root.addHandler(late_handler)
        try:
            logging.getLogger("rasterio._env").warning("HTTP 403: %s?%s", PC_HREF, PC_SAS)
        finally:
            root.removeHandler(late_handler)
    finally:
        logging.setLogRecordFactory(previous)
        root.removeHandler(early_handler)
        root.setLevel(level)
    for stream in (early, late):
        assert PC_HREF in stream.getvalue() and secrets_of(stream.getvalue()) == []
