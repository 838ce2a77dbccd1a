"""Smoke run of the soak benchmark (``--quick``): a dozen messages, 2 workers, faults, a killed worker; a clean audit.

The full run (``python -m bench.soak``) takes minutes; this one checks that the machinery works
end to end (Azurite and the STAC server behind fault proxies, worker processes, the kill, the audit)
and that what it finds is clean. It takes 25-40 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the benchmarks live in ROOT/bench, outside the installed packages
    sys.path.insert(0, str(ROOT))

from bench import soak  # noqa: E402


@pytest.mark.azurite
def test_quick_soak_accounts_for_every_message_and_leaves_a_clean_store() -> None:
    said: list[str] = []
    config = soak.SoakConfig.quick()
    rows, audit = soak.soak(config, say=said.append)
    assert audit.clean, {name: (value, audit.notes.get(name)) for name, value in audit.must_be_zero.items() if value}
    values = {(row.case, row.metric): row.value for row in rows}
    assert len(values) == len(rows), "a (case, metric) pair appears twice"
    assert values["messages", "malformed"] == len(config.malformed) >= 1
    assert values["messages", "in"] == sum(
        values["messages", kind] for kind in ("backfill", "duplicates", "permanent faults", "malformed")
    )
    records = sum(values["records", status] for status in ("ok", "no-scene", "failed"))
    assert records == values["messages", "site-years"]
    assert values["records", "ok"] >= 1 and values["records", "no-scene"] >= 1
    assert values["records", "failed"] >= values["messages", "permanent faults"] == 3
    assert values["audit", "malformed messages in the poison queue"] == len(config.malformed)
    assert values["delivery", "poisoned"] >= 3  # the permanent faults, after their last delivery
    assert values["delivery", "workers killed"] == 1 and any("killed worker" in line for line in said)
    assert values["faults all", "injected"] > 0
    assert all(values[f"faults {service}", "requests"] > 0 for service in ("blob", "queue", "table", "stac", "cog"))
    assert 0 < values["time", "drain"] < values["time", "wall"]
    table = soak.markdown(rows, "python -m bench.soak --quick")
    assert table.count("must be 0: PASS") == len(audit.must_be_zero)
