"""The RTS monitor's Azure Functions app (Python v2 programming model).

Bindings only: each function adapts its trigger object to a call of :mod:`rtsmonitor.handlers`,
where the logic lives (and where ``rts monitor`` calls the same code without the Functions host).

- ``register_site``: blob trigger on ``sites/{name}``: validate a config, register it, queue its backfill;
- ``yearly_run``: timer (app setting ``RTS_YEARLY_SCHEDULE``, 1 October by default): queue the new summer;
- ``process_site_year``: queue trigger on ``site-years``: one site-year end to end;
- ``record_poison``: queue trigger on ``site-years-poison``: record a site-year that failed for good;
- ``get_sites``, ``get_site``, ``get_records``, ``get_site_records``: HTTP GET, JSON or CSV;
- ``get_site_report``: HTTP GET, one site's self-contained HTML report (:mod:`rtsmonitor.htmlreport`).

Security (functions/README.md, "Security"): the HTTP functions need a function key
(``AuthLevel.FUNCTION``); every route parameter and query parameter is checked before storage is
read (400 names the parameter); a response holds at most one page of rows
(:data:`rtsmonitor.handlers.MAX_RESPONSE_ROWS`, :data:`~rtsmonitor.handlers.MAX_RESPONSE_BYTES`;
header ``X-Continuation``); error bodies are redacted and short, and storage or internal errors
answer a generic 503/500 while their details go to the (redacted) log.

Logs are redacted (:mod:`rtsmonitor.redaction`): :func:`~rtsmonitor.redaction.install_redaction`
runs once when this module is imported, the one import-time side effect here, on purpose: it must
be in place before any function logs, and it is cheap and idempotent. It installs a redacting
log-record factory, which covers every logger and every handler, including the gRPC handler the
Python worker adds to the root logger and any handler added later, and puts a redacting filter on
the root logger's current handlers for records made without the factory. An exception that
escapes a function is not logged by Python but sent by the worker to the host, which logs its
message: the triggers re-raise it redacted (``_redacted_errors``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import azure.functions as func

from rtsmonitor import handlers, htmlreport
from rtsmonitor.errors import NotFoundError, StorageError
from rtsmonitor.jobs import POISON_QUEUE, SITE_YEARS_QUEUE
from rtsmonitor.redaction import install_redaction, redact, redacted_exception
from rtsmonitor.registry import MAX_CONFIG_BYTES, SITES_CONTAINER
from rtsmonitor.siteyear import Services
from rtsmonitor.storage import Storage

STORAGE_CONNECTION = "AzureWebJobsStorage"
"""App setting with the storage account the triggers listen on (identity-based in Azure: see infra/)."""
SCHEDULE_SETTING = "RTS_YEARLY_SCHEDULE"
"""App setting with the yearly run's NCRONTAB schedule; ``0 0 6 1 10 *`` = 1 October, 06:00 UTC."""
MAX_ERROR_CHARS = 300
"""Longest error message in an HTTP response body (after redaction)."""

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("rtsmonitor.functions")
install_redaction()  # before any function logs: see the module docstring


@cache
def storage() -> Storage:
    """The storage the handlers read and write (``RTS_STORAGE``, default the AzureWebJobsStorage account)."""
    return handlers.storage_from_env()


@cache
def live_services() -> handlers.LiveServices:
    """Catalogue, DEM and the live model, rebuilt when another model is published."""
    return handlers.LiveServices(storage())


def services() -> Services:
    """The services for the next site-year."""
    return live_services()()


@contextmanager
def _redacted_errors() -> Iterator[None]:
    """Let an exception escape (so the host retries) with its message redacted.

    The worker sends an escaping exception's message and stack to the host, which logs them; a
    message with a secret is replaced by :func:`~rtsmonitor.redaction.redacted_exception` and its
    chain is cut (``from None``), the rest escape unchanged.
    """
    try:
        yield
    except Exception as exc:
        safe = redacted_exception(exc)
        if safe is exc:
            raise
        raise safe from None


@app.blob_trigger(arg_name="blob", path=f"{SITES_CONTAINER}/{{name}}", connection=STORAGE_CONNECTION)
def register_site(blob: func.InputStream) -> None:
    """A site config was uploaded: register it or record why not (never raises on bad content)."""
    name = (blob.name or "").removeprefix(f"{SITES_CONTAINER}/")
    with _redacted_errors():
        handlers.on_site_blob(storage(), name, blob.read(MAX_CONFIG_BYTES + 1))  # never more than the cap


@app.timer_trigger(arg_name="timer", schedule=f"%{SCHEDULE_SETTING}%", run_on_startup=False, use_monitor=True)
def yearly_run(timer: func.TimerRequest) -> None:
    """Queue one site-year per active site for the summer that just ended."""
    if timer.past_due:
        log.warning("yearly run is past due; running now")
    with _redacted_errors():
        handlers.on_timer(storage())


@app.queue_trigger(arg_name="message", queue_name=SITE_YEARS_QUEUE, connection=STORAGE_CONNECTION)
def process_site_year(message: func.QueueMessage) -> None:
    """Process one site-year; an error propagates (redacted) so the host retries, then poisons the message."""
    with _redacted_errors():
        handlers.on_job(storage(), services, message.get_body().decode("utf-8"), message.dequeue_count or 1)


@app.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection=STORAGE_CONNECTION)
def record_poison(message: func.QueueMessage) -> None:
    """Record the failure of a site-year whose retries are spent."""
    with _redacted_errors():
        handlers.on_poison(storage(), message.get_body().decode("utf-8"), message.dequeue_count or 1)


def _json(data: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data, indent=2), status_code=status, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    """An error response whose message is redacted and at most :data:`MAX_ERROR_CHARS` long."""
    text = redact(message)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return _json({"error": text}, status)


def _page(page: handlers.Page) -> func.HttpResponse:
    headers = {handlers.CONTINUATION_HEADER: page.continuation} if page.continuation else None
    return func.HttpResponse(page.body, status_code=200, mimetype=page.mimetype, headers=headers)


def _answer(request: func.HttpRequest, answer: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    """``answer()``, or the error response of what it raised: 400 bad request, 404, 503 storage, 500.

    ``answer`` checks the request before it reads storage. The details of a storage or internal
    error are logged (redacted), never answered: they can name accounts, URLs and keys.
    """
    try:
        return answer()
    except handlers.RequestError as exc:
        return _error(400, str(exc))
    except NotFoundError as exc:
        return _error(404, str(exc))
    except StorageError:
        log.exception("%s %s: storage error", request.method, request.url)
        return _error(503, "storage is not available; try again later")
    except Exception:
        log.exception("%s %s: internal error", request.method, request.url)
        return _error(500, "internal error; the details are in the app's log")


def _sites(request: func.HttpRequest) -> func.HttpResponse:
    handlers.check_params(request.params, handlers.SITES_PARAMS)
    after = handlers.sites_after(request.params)  # checked before storage is touched
    return _page(handlers.sites_page(storage(), after))


def _site(request: func.HttpRequest) -> func.HttpResponse:
    handlers.check_params(request.params, handlers.SITE_PARAMS)
    site_id = handlers.check_site_id(request.route_params["site_id"])  # checked before storage is touched
    return _json(handlers.sites_json(storage(), site_id)[0])


def _report(request: func.HttpRequest) -> func.HttpResponse:
    handlers.check_params(request.params, htmlreport.REPORT_PARAMS)
    site_id = handlers.check_site_id(request.route_params["site_id"])  # checked before storage is touched
    page = htmlreport.report_html(storage(), site_id)
    headers = {"Content-Security-Policy": htmlreport.CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
    return func.HttpResponse(page, status_code=200, mimetype="text/html", charset="utf-8", headers=headers)


def _records(request: func.HttpRequest, site_id: str | None) -> func.HttpResponse:
    query = handlers.RecordsQuery.from_params(request.params, site_id)  # checked before storage is touched
    return _page(handlers.records_page(storage(), query))


@app.route(route="sites", methods=["GET"])
def get_sites(req: func.HttpRequest) -> func.HttpResponse:
    """Registered (and rejected) sites by id, one page (``?after=SITE_ID`` for the next)."""
    return _answer(req, lambda: _sites(req))


@app.route(route="sites/{site_id}", methods=["GET"])
def get_site(req: func.HttpRequest) -> func.HttpResponse:
    """One site's row: config, status, problems."""
    return _answer(req, lambda: _site(req))


@app.route(route="records", methods=["GET"])
def get_records(req: func.HttpRequest) -> func.HttpResponse:
    """Site-year records, one page (``?format=csv``, ``?year=`` or ``?from=&to=``, ``?after=``)."""
    return _answer(req, lambda: _records(req, None))


@app.route(route="sites/{site_id}/records", methods=["GET"])
def get_site_records(req: func.HttpRequest) -> func.HttpResponse:
    """One site's records by year, one page (the parameters of ``get_records``)."""
    return _answer(req, lambda: _records(req, req.route_params["site_id"]))


@app.route(route="sites/{site_id}/report", methods=["GET"])
def get_site_report(req: func.HttpRequest) -> func.HttpResponse:
    """One site's report: a self-contained HTML page (chart, map with a year slider, slump table); 404 if none."""
    return _answer(req, lambda: _report(req))
