"""The training job's settings come from the environment, with every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtsmonitor.errors import ConfigError
from rtstrain.pipeline import JobSettings


def test_defaults_and_overrides(tmp_path: Path) -> None:
    env = {"RTS_LABELS_DIR": str(tmp_path), "RTS_STORE": str(tmp_path / "store"), "RTS_SITES": "lena,horton01"}
    settings = JobSettings.from_env(env)
    assert [s.id for s in settings.sites] == ["lena", "horton01"]
    assert settings.preset == "paper" and settings.loso
    assert settings.stac_url.startswith("https://planetarycomputer.microsoft.com")
    assert len(JobSettings.from_env({k: v for k, v in env.items() if k != "RTS_SITES"}).sites) == 6


def test_every_problem_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        JobSettings.from_env({"RTS_PRESET": "fast", "RTS_LOSO": "some", "RTS_SITES": "atlantis"})
    fields = [field for field, _ in info.value.problems]
    assert fields == ["RTS_LABELS_DIR", "RTS_PRESET", "RTS_LOSO", "RTS_STORE", "RTS_SITES"]
    assert "'fast'" in str(info.value) and "'atlantis'" in str(info.value)
