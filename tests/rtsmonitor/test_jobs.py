"""Site-year jobs, the local stand-in for the Functions host's queue delivery, and retries of remote reads."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from pystac_client.exceptions import APIError
from rasterio.errors import RasterioIOError

from rtsmonitor import retry
from rtsmonitor.errors import ConfigError, RtsError, SceneError
from rtsmonitor.jobs import (
    POISON_QUEUE,
    SITE_YEARS_QUEUE,
    JobError,
    SiteYearJob,
    completed_years,
    enqueue,
    run_queue,
    yearly_jobs,
)
from rtsmonitor.retry import is_transient, with_retries
from rtsmonitor.sites import SiteConfig
from rtsmonitor.storage import LocalStorage, QueueMessage


def site(site_id: str = "s1", **changes: Any) -> SiteConfig:
    data: dict[str, Any] = {
        "id": site_id,
        "name": site_id,
        "centre": {"lon": -126.75, "lat": 69.75, "size_km": 2.0},
        "first_year": 2020,
        "last_year": None,
    }
    data.update(changes)
    return SiteConfig.model_validate(data)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


# --- messages -------------------------------------------------------------------------------------


def test_message_round_trip() -> None:
    job = SiteYearJob("horton01", 2021)
    text = job.to_message()
    assert json.loads(text) == {"site_id": "horton01", "year": 2021}
    assert SiteYearJob.from_message(text) == job
    assert SiteYearJob.from_message('{"year": 2016, "site_id": "a", "extra": 1}') == SiteYearJob("a", 2016)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not JSON"),
        ("", "not JSON"),
        ('["horton01", 2021]', "JSON object"),
        ("2021", "JSON object"),
        ('"horton01"', "JSON object"),
        ("null", "JSON object"),
        ('{"year": 2021}', "site_id"),
        ('{"site_id": "", "year": 2021}', "site_id"),
        ('{"site_id": 7, "year": 2021}', "site_id"),
        ('{"site_id": null, "year": 2021}', "site_id"),
        ('{"site_id": "horton01"}', "year"),
        ('{"site_id": "horton01", "year": "2021"}', "year"),
        ('{"site_id": "horton01", "year": true}', "year"),
        ('{"site_id": "horton01", "year": 2021.0}', "year"),
        ('{"site_id": "horton01", "year": null}', "year"),
    ],
)
def test_from_message_refuses_what_is_not_a_job(text: str, match: str) -> None:
    with pytest.raises(JobError, match=match):
        SiteYearJob.from_message(text)


def test_job_error_is_an_rts_error() -> None:
    with pytest.raises(RtsError):
        SiteYearJob.from_message("{")


# --- which years --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "years"),
    [
        (dt.date(2022, 1, 1), [2020, 2021]),
        (dt.date(2022, 8, 31), [2020, 2021]),  # the season's last day: not ended
        (dt.date(2022, 9, 1), [2020, 2021, 2022]),
        (dt.date(2022, 12, 31), [2020, 2021, 2022]),
        (dt.date(2020, 8, 31), []),
    ],
)
def test_completed_years_around_season_end(today: dt.date, years: list[int]) -> None:
    assert completed_years(site(), today) == years


def test_completed_years_with_a_last_year_and_an_own_season() -> None:
    assert completed_years(site(last_year=2021), dt.date(2026, 1, 1)) == [2020, 2021]
    late = site(season={"start": "09-01", "end": "10-15"})
    assert completed_years(late, dt.date(2022, 10, 15)) == [2020, 2021]
    assert completed_years(late, dt.date(2022, 10, 16)) == [2020, 2021, 2022]


def test_yearly_jobs_selects_active_sites_whose_years_include_the_year() -> None:
    sites = [
        site("zeta"),
        site("alpha"),
        site("paused", active=False),
        site("ended", last_year=2021),
        site("ends-now", last_year=2022),
        site("starts-later", first_year=2023),
        site("starts-now", first_year=2022),
    ]
    assert yearly_jobs(sites, 2022) == [
        SiteYearJob("alpha", 2022),
        SiteYearJob("ends-now", 2022),
        SiteYearJob("starts-now", 2022),
        SiteYearJob("zeta", 2022),
    ]
    assert yearly_jobs([], 2022) == []


def test_enqueue_sends_one_message_per_job(storage: LocalStorage) -> None:
    enqueue(storage, [SiteYearJob("a", 2020), SiteYearJob("b", 2021)])
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 2
    messages = storage.queues.receive(SITE_YEARS_QUEUE, 32)
    assert [SiteYearJob.from_message(m.content) for m in messages] == [SiteYearJob("a", 2020), SiteYearJob("b", 2021)]


# --- run_queue ------------------------------------------------------------------------------------


def poison_contents(storage: LocalStorage) -> list[str]:
    return [m.content for m in storage.queues.receive(POISON_QUEUE, 32, visibility_timeout_s=30)]


def test_run_queue_delivers_and_deletes_successful_messages(storage: LocalStorage) -> None:
    jobs = [SiteYearJob("a", 2020), SiteYearJob("a", 2021), SiteYearJob("b", 2020)]
    enqueue(storage, jobs)
    seen: list[QueueMessage] = []
    poisoned: list[Any] = []
    run = run_queue(storage, seen.append, lambda m, e: poisoned.append(m), retry_delay_s=1, idle_wait_s=0.05)
    assert [SiteYearJob.from_message(m.content) for m in seen] == jobs
    assert all(m.dequeue_count == 1 for m in seen)
    assert run.succeeded == [j.to_message() for j in jobs] and run.poisoned == [] and run.failures == 0
    assert poisoned == []
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0
    assert storage.queues.peek_count(POISON_QUEUE) == 0


def test_run_queue_on_an_empty_queue_returns_at_once(storage: LocalStorage) -> None:
    run = run_queue(storage, lambda m: None, lambda m, e: None)
    assert run.succeeded == [] and run.poisoned == [] and run.failures == 0


def test_always_failing_message_goes_to_poison_after_max_deliveries(storage: LocalStorage) -> None:
    job = SiteYearJob("broken", 2021)
    enqueue(storage, [job])
    deliveries: list[int] = []
    errors: list[BaseException] = []
    poisoned: list[tuple[QueueMessage, BaseException]] = []

    def handle(message: QueueMessage) -> None:
        deliveries.append(message.dequeue_count)
        error = RuntimeError(f"boom {message.dequeue_count}")
        errors.append(error)
        raise error

    run = run_queue(
        storage,
        handle,
        lambda m, e: poisoned.append((m, e)),
        max_dequeue_count=2,
        retry_delay_s=1,
        idle_wait_s=0.05,
    )
    assert deliveries == [1, 2]
    assert len(poisoned) == 1
    message, error = poisoned[0]
    assert message.content == job.to_message() and message.dequeue_count == 2
    assert error is errors[-1]
    assert run.poisoned == [job.to_message()] and run.succeeded == [] and run.failures == 2
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0
    assert poison_contents(storage) == [job.to_message()]


def test_message_failing_once_then_succeeding_is_not_poisoned(storage: LocalStorage) -> None:
    enqueue(storage, [SiteYearJob("flaky", 2021), SiteYearJob("fine", 2021)])
    deliveries: list[tuple[str, int]] = []
    poisoned: list[Any] = []

    def handle(message: QueueMessage) -> None:
        job = SiteYearJob.from_message(message.content)
        deliveries.append((job.site_id, message.dequeue_count))
        if job.site_id == "flaky" and message.dequeue_count == 1:
            raise ConnectionError("blip")

    run = run_queue(
        storage,
        handle,
        lambda m, e: poisoned.append(m),
        max_dequeue_count=2,
        retry_delay_s=1,
        idle_wait_s=0.05,
    )
    assert deliveries == [("flaky", 1), ("fine", 1), ("flaky", 2)]
    assert run.succeeded == [SiteYearJob("fine", 2021).to_message(), SiteYearJob("flaky", 2021).to_message()]
    assert run.poisoned == [] and run.failures == 1 and poisoned == []
    assert storage.queues.peek_count(SITE_YEARS_QUEUE) == 0
    assert storage.queues.peek_count(POISON_QUEUE) == 0


def test_run_queue_uses_the_given_queue_and_its_poison_queue(storage: LocalStorage) -> None:
    storage.queues.send("other-jobs", "x")
    run = run_queue(
        storage,
        lambda m: (_ for _ in ()).throw(ValueError("no")),
        lambda m, e: None,
        max_dequeue_count=1,
        retry_delay_s=1,
        queue="other-jobs",
    )
    assert run.poisoned == ["x"]
    assert storage.queues.peek_count("other-jobs") == 0
    assert [m.content for m in storage.queues.receive("other-jobs-poison", 32)] == ["x"]
    assert storage.queues.peek_count(POISON_QUEUE) == 0


# --- retries --------------------------------------------------------------------------------------


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry.random, "uniform", lambda a, b: 1.0)


def flaky(errors: list[BaseException], value: object = "done") -> tuple[list[int], Any]:
    """A step that raises each of ``errors`` in turn, then returns ``value``; and its call log."""
    calls: list[int] = []

    def step() -> object:
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return value

    return calls, step


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError("refused"),
        requests.Timeout("slow"),
        RasterioIOError("HTTP response code: 503"),
        APIError("502 Bad Gateway"),
        ConnectionResetError("reset"),
        TimeoutError("timed out"),
    ],
)
def test_with_retries_retries_a_transient_error_with_growing_delays(no_jitter: None, error: BaseException) -> None:
    delays: list[float] = []
    calls, step = flaky([error, error])
    assert with_retries(step, "read", attempts=3, sleep=delays.append) == "done"
    assert calls == [1, 2, 3]
    assert delays == [retry.BASE_DELAY_S, 2 * retry.BASE_DELAY_S]


def test_with_retries_delays_are_jittered_growing_and_capped() -> None:
    delays: list[float] = []
    error = requests.ConnectionError("down")
    calls, step = flaky([error] * 5)
    assert with_retries(step, "read", attempts=6, base_delay_s=10.0, sleep=delays.append) == "done"
    assert len(delays) == 5 and len(calls) == 6
    assert 8.0 <= delays[0] <= 12.0 and 16.0 <= delays[1] <= 24.0
    assert delays[0] < delays[1]
    assert all(d <= retry.MAX_DELAY_S * 1.2 for d in delays)
    assert all(d >= retry.MAX_DELAY_S * 0.8 for d in delays[2:])


@pytest.mark.parametrize("error", [ValueError("bad value"), ConfigError("site.json", [("id", "bad")]), KeyError("k")])
def test_with_retries_lets_a_non_transient_error_through_at_once(error: BaseException) -> None:
    delays: list[float] = []
    calls, step = flaky([error])
    with pytest.raises(type(error)) as raised:
        with_retries(step, "read", attempts=5, sleep=delays.append)
    assert raised.value is error
    assert calls == [1] and delays == []


def test_with_retries_raises_the_last_transient_error_after_all_attempts(no_jitter: None) -> None:
    delays: list[float] = []
    errors = [requests.ConnectionError(f"try {i}") for i in range(1, 5)]
    calls, step = flaky(errors)
    with pytest.raises(requests.ConnectionError) as raised:
        with_retries(step, "read", attempts=4, base_delay_s=0.5, sleep=delays.append)
    assert raised.value is errors[3]
    assert calls == [1, 2, 3, 4]
    assert delays == [0.5, 1.0, 2.0]  # no wait after the last try


def test_with_retries_with_one_attempt_never_sleeps() -> None:
    delays: list[float] = []
    calls, step = flaky([TimeoutError("t")])
    with pytest.raises(TimeoutError):
        with_retries(step, "read", attempts=1, sleep=delays.append)
    assert calls == [1] and delays == []


def test_with_retries_retries_an_error_raised_from_a_transient_one(no_jitter: None) -> None:
    def wrapped() -> SceneError:
        try:
            raise RasterioIOError("HTTP 500")
        except RasterioIOError as exc:
            try:
                raise SceneError("cannot read band B04") from exc
            except SceneError as outer:
                return outer

    delays: list[float] = []
    calls, step = flaky([wrapped()], value=42)
    assert with_retries(step, "read", sleep=delays.append) == 42
    assert calls == [1, 2] and delays == [retry.BASE_DELAY_S]


def test_is_transient_follows_cause_and_context() -> None:
    assert is_transient(requests.ConnectionError("x"))
    assert not is_transient(ValueError("x"))
    assert not is_transient(FileNotFoundError("x"))

    caused = RtsError("stack failed")
    caused.__cause__ = RuntimeError("middle")
    caused.__cause__.__cause__ = RasterioIOError("deep")
    assert is_transient(caused)

    context = SceneError("during handling")
    context.__context__ = TimeoutError("t")
    assert is_transient(context)

    plain = RtsError("stack failed")
    plain.__cause__ = ValueError("bad")
    assert not is_transient(plain)
