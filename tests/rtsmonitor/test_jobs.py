"""Site-year jobs and the local stand-in for the Functions host's queue delivery."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from rtsmonitor.errors import RtsError, StorageError
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


def test_a_failure_that_cannot_be_recorded_leaves_the_message_in_the_queue(storage: LocalStorage) -> None:
    """If the poison handler fails (say the table is down), the message is released, not lost."""
    job = SiteYearJob("lost01", 2021)
    storage.queues.send(SITE_YEARS_QUEUE, job.to_message())
    recorded: list[str] = []

    def record_once_the_table_is_back(message: QueueMessage, error: BaseException) -> None:
        if message.dequeue_count < 3:
            raise StorageError("table unavailable")
        recorded.append(message.content)

    def always_fail(message: QueueMessage) -> None:
        raise RuntimeError("transient")

    run = run_queue(
        storage, always_fail, record_once_the_table_is_back, max_dequeue_count=1, retry_delay_s=0, idle_wait_s=0.01
    )
    assert recorded == [job.to_message()] and run.poisoned == [job.to_message()] and run.failures == 3
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
