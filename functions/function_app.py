"""The RTS monitor's Azure Functions app (Python v2 programming model).

Bindings only: each function adapts its trigger object to a call of :mod:`rtsmonitor.handlers`,
where the logic lives (and where ``rts monitor`` calls the same code without the Functions host).

- ``register_site``: blob trigger on ``sites/{name}``: validate a config, register it, queue its backfill;
- ``yearly_run``: timer (app setting ``RTS_YEARLY_SCHEDULE``, 1 October by default): queue the new summer;
- ``process_site_year``: queue trigger on ``site-years``: one site-year end to end;
- ``record_poison``: queue trigger on ``site-years-poison``: record a site-year that failed for good;
- ``get_sites``, ``get_site``, ``get_records``, ``get_site_records``: HTTP GET, JSON or CSV.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Literal, cast

import azure.functions as func

from rtsmonitor import handlers
from rtsmonitor.errors import NotFoundError, RtsError
from rtsmonitor.jobs import POISON_QUEUE, SITE_YEARS_QUEUE
from rtsmonitor.registry import MAX_CONFIG_BYTES, SITES_CONTAINER
from rtsmonitor.siteyear import Services
from rtsmonitor.storage import Storage

STORAGE_CONNECTION = "AzureWebJobsStorage"
"""App setting with the storage account the triggers listen on (identity-based in Azure: see infra/)."""
SCHEDULE_SETTING = "RTS_YEARLY_SCHEDULE"
"""App setting with the yearly run's NCRONTAB schedule; ``0 0 6 1 10 *`` = 1 October, 06:00 UTC."""

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("rtsmonitor.functions")


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


@app.blob_trigger(arg_name="blob", path=f"{SITES_CONTAINER}/{{name}}", connection=STORAGE_CONNECTION)
def register_site(blob: func.InputStream) -> None:
    """A site config was uploaded: register it or record why not (never raises on bad content)."""
    name = (blob.name or "").removeprefix(f"{SITES_CONTAINER}/")
    handlers.on_site_blob(storage(), name, blob.read(MAX_CONFIG_BYTES + 1))  # never more than the cap


@app.timer_trigger(arg_name="timer", schedule=f"%{SCHEDULE_SETTING}%", run_on_startup=False, use_monitor=True)
def yearly_run(timer: func.TimerRequest) -> None:
    """Queue one site-year per active site for the summer that just ended."""
    if timer.past_due:
        log.warning("yearly run is past due; running now")
    handlers.on_timer(storage())


@app.queue_trigger(arg_name="message", queue_name=SITE_YEARS_QUEUE, connection=STORAGE_CONNECTION)
def process_site_year(message: func.QueueMessage) -> None:
    """Process one site-year; an error propagates so the host retries, then poisons the message."""
    handlers.on_job(storage(), services, message.get_body().decode("utf-8"), message.dequeue_count or 1)


@app.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection=STORAGE_CONNECTION)
def record_poison(message: func.QueueMessage) -> None:
    """Record the failure of a site-year whose retries are spent."""
    handlers.on_poison(storage(), message.get_body().decode("utf-8"), message.dequeue_count or 1)


def _json(data: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data, indent=2), status_code=status, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    return _json({"error": message}, status)


def _records(request: func.HttpRequest, site_id: str | None) -> func.HttpResponse:
    fmt = (request.params.get("format") or "json").lower()
    if fmt not in ("json", "csv"):
        return _error(400, f"format={fmt!r}: use json or csv")
    try:
        body, mimetype = handlers.records_body(storage(), site_id, cast(Literal["json", "csv"], fmt))
    except RtsError as exc:
        return _error(400, str(exc))
    return func.HttpResponse(body, status_code=200, mimetype=mimetype)


@app.route(route="sites", methods=["GET"])
def get_sites(req: func.HttpRequest) -> func.HttpResponse:
    """Every registered (or rejected) site."""
    return _json(handlers.sites_json(storage()))


@app.route(route="sites/{site_id}", methods=["GET"])
def get_site(req: func.HttpRequest) -> func.HttpResponse:
    """One site's row: config, status, problems."""
    try:
        return _json(handlers.sites_json(storage(), req.route_params["site_id"])[0])
    except NotFoundError as exc:
        return _error(404, str(exc))
    except RtsError as exc:  # a malformed site id, refused before storage is touched
        return _error(400, str(exc))


@app.route(route="records", methods=["GET"])
def get_records(req: func.HttpRequest) -> func.HttpResponse:
    """Every site-year record (``?format=csv`` for CSV)."""
    return _records(req, None)


@app.route(route="sites/{site_id}/records", methods=["GET"])
def get_site_records(req: func.HttpRequest) -> func.HttpResponse:
    """One site's records by year (``?format=csv`` for CSV)."""
    return _records(req, req.route_params["site_id"])
