"""Scene search, ranking and windowed band reads against the local STAC server and synthetic scenes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from pystac_client import Client
from rio_cogeo.cogeo import cog_validate

from rtsmonitor.cli import main
from rtsmonitor.errors import NoSceneError, SceneError
from rtsmonitor.grid import SiteGrid, grid_for_bounds
from rtsmonitor.imagery import (
    SCL_UNUSABLE,
    Acquisition,
    boa_offset_dn,
    choose_summer_scene,
    closest_clear_scene,
    harmonise,
    read_scene,
    search_acquisitions,
)
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.offline.synthetic import (
    SceneSpec,
    TileLayout,
    World,
    truth_reflectance,
    truth_scl,
    write_dem,
    write_scene,
)
from rtsmonitor.stack import INPUT_LAYERS, build_stack, read_stack, write_stack
from rtsmonitor.terrain import StacDem

EPSG = 32609  # UTM 9N, Horton 01
TILE_M = 12_000.0
LAYOUT = TileLayout(EPSG, tile_size_m=TILE_M, overlap_m=1200.0)
STEP = LAYOUT.step_m
# a 2 x 2 km site well inside tile (50, 645) of the layout, and one across its eastern edge
ORIGIN_X, ORIGIN_Y = 50 * STEP, 645 * STEP
INSIDE = grid_for_bounds(EPSG, (ORIGIN_X + 3000, ORIGIN_Y + 4000, ORIGIN_X + 5000, ORIGIN_Y + 6000))
ACROSS = grid_for_bounds(EPSG, (ORIGIN_X + TILE_M - 2000, ORIGIN_Y + 4000, ORIGIN_X + TILE_M + 1000, ORIGIN_Y + 6000))


def when(day: int, year: int = 2021) -> dt.datetime:
    return dt.datetime(year, 7, 1, 20, 5, tzinfo=dt.UTC) + dt.timedelta(days=day)


def spec(
    day: int, *, year: int = 2021, baseline: str = "03.01", aoi: SiteGrid = INSIDE, **fractions: float
) -> SceneSpec:
    return SceneSpec(
        datetime=when(day, year),
        platform="Sentinel-2A",
        processing_baseline=baseline,
        relative_orbit=43,
        aoi_bounds=aoi.bounds,
        seed=1000 * year + day,
        **fractions,
    )


@dataclass
class Corpus:
    world: World
    url: str
    server: LocalStacServer
    specs: dict[str, SceneSpec]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("stac")
    region = (ORIGIN_X + 1000, ORIGIN_Y + 2000, ORIGIN_X + TILE_M + 3000, ORIGIN_Y + 8000)
    world = World.generate(EPSG, [region], seed=7)
    specs = {
        # 2021: one scene cloudy over the site in a clear tile, one clear over the site in a cloudy tile
        "site_cloudy": spec(10, cloud_fraction=0.4, tile_cloud_fraction=0.05),
        "site_clear": spec(30, cloud_fraction=0.0, tile_cloud_fraction=0.45),
        # 2022: baseline 04.00 (+1000 DN), half the site beyond the swath edge
        "offset_half_nodata": spec(20, year=2022, baseline="04.00", nodata_fraction=0.5),
        "offset_clear": spec(40, year=2022, baseline="04.00"),
        # 2023: only a snowy and a cloudy scene in the season: nothing acceptable
        "snowy": spec(5, year=2023, baseline="05.09", snow_fraction=0.7),
        "cloudy": spec(25, year=2023, baseline="05.09", cloud_fraction=0.9, tile_cloud_fraction=0.5),
        # across two tiles
        "across": spec(15, year=2020, baseline="02.14", aoi=ACROSS),
    }
    for s in specs.values():
        write_scene(world, LAYOUT, s, root)
    write_dem(world, root, world_bbox(region))
    with LocalStacServer(root) as server:
        yield Corpus(world, server.url, server, specs)


def world_bbox(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return grid_for_bounds(EPSG, bounds).bbox_wgs84()


def acquisition_of(corpus: Corpus, name: str, grid: SiteGrid = INSIDE) -> Acquisition:
    s = corpus.specs[name]
    day = s.datetime.date()
    found = [a for a in search_acquisitions(Client.open(corpus.url), grid, day, day)]
    assert len(found) == 1, [a.id for a in found]
    return found[0]


def test_harmonise_keys_on_baseline() -> None:
    dn = np.array([[0.0, 1000.0, 1500.0, np.nan]], dtype=np.float32)
    assert boa_offset_dn("02.12") == 0
    assert boa_offset_dn("04.00") == 1000
    assert boa_offset_dn("05.10") == 1000
    np.testing.assert_allclose(harmonise(dn, "03.01")[0, :3], [0.0, 0.1, 0.15])
    np.testing.assert_allclose(harmonise(dn, "04.00")[0, :3], [0.0, 0.0, 0.05])
    assert np.isnan(harmonise(dn, "04.00")[0, 3])
    with pytest.raises(SceneError, match="'4'"):
        boa_offset_dn("4")


@pytest.mark.parametrize("name", ["site_clear", "offset_clear"])
def test_reflectance_matches_truth_on_both_baselines(corpus: Corpus, name: str) -> None:
    scene = read_scene(acquisition_of(corpus, name), INSIDE)
    truth = truth_reflectance(corpus.world, corpus.specs[name], INSIDE)
    assert scene.reflectance.shape == truth.shape == (4, *INSIDE.shape)
    assert np.array_equal(np.isnan(scene.reflectance), np.isnan(truth))
    assert np.nanmax(np.abs(scene.reflectance - truth)) <= 1e-4
    assert np.array_equal(scene.scl, truth_scl(corpus.world, corpus.specs[name], INSIDE))


def test_baselines_give_the_same_scale(corpus: Corpus) -> None:
    """Same landscape, 2021 (no offset) vs 2022 (+1000 DN): tundra reflectance agrees, not 10 % brighter."""
    old = read_scene(acquisition_of(corpus, "site_clear"), INSIDE)
    new = read_scene(acquisition_of(corpus, "offset_clear"), INSIDE)
    both = old.clear & new.clear
    ratio = np.nanmedian(new.reflectance[:3, both]) / np.nanmedian(old.reflectance[:3, both])
    assert 0.9 < ratio < 1.1


def test_half_nodata_window(corpus: Corpus) -> None:
    scene = read_scene(acquisition_of(corpus, "offset_half_nodata"), INSIDE)
    truth = truth_reflectance(corpus.world, corpus.specs["offset_half_nodata"], INSIDE)
    nodata = np.isnan(scene.reflectance).all(axis=0)
    assert 0.4 < nodata.mean() < 0.6
    assert np.array_equal(nodata, np.isnan(truth).all(axis=0))
    assert (scene.scl[nodata] == 0).all()
    assert np.nanmax(np.abs(scene.reflectance - truth)) <= 1e-4
    assert scene.valid_fraction <= 1 - nodata.mean() + 1e-9


def test_site_across_two_tiles_is_mosaicked(corpus: Corpus) -> None:
    assert len(LAYOUT.tiles_for_bounds(ACROSS.bounds)) == 2
    acquisition = acquisition_of(corpus, "across", ACROSS)
    assert len(acquisition.items) == 2
    scene = read_scene(acquisition, ACROSS)
    truth = truth_reflectance(corpus.world, corpus.specs["across"], ACROSS)
    assert np.isfinite(scene.reflectance).all()  # no seam of missing pixels
    assert np.max(np.abs(scene.reflectance - truth)) <= 1e-4


def test_cloud_ranking_uses_scl_over_the_site(corpus: Corpus) -> None:
    choice = choose_summer_scene(
        Client.open(corpus.url), INSIDE, (dt.date(2021, 7, 1), dt.date(2021, 8, 31)), 10.0, 0.5
    )
    cloudy = next(c for c in choice.candidates if c.acquisition.date == corpus.specs["site_cloudy"].datetime.date())
    clear = next(c for c in choice.candidates if c.acquisition.date == corpus.specs["site_clear"].datetime.date())
    assert clear.acquisition.tile_cloud_pct > cloudy.acquisition.tile_cloud_pct  # tile-wide says the opposite
    assert choice.chosen is clear
    assert cloudy.cloud_pct > 30 and not cloudy.acceptable
    assert clear.cloud_pct < 1 and clear.acceptable
    assert "acceptable" in choice.reason and not choice.fallback


def test_no_acceptable_scene_says_why(corpus: Corpus) -> None:
    choice = choose_summer_scene(
        Client.open(corpus.url), INSIDE, (dt.date(2023, 7, 1), dt.date(2023, 8, 31)), 10.0, 0.5
    )
    assert choice.chosen is None and choice.fallback
    assert len(choice.candidates) == 2
    assert "no scene in 2023-06-16..2023-09-15" in choice.reason
    with pytest.raises(NoSceneError, match=r"valid fraction >= 0\.5"):
        choice.require()


def test_closest_clear_scene_to_a_label_date(corpus: Corpus) -> None:
    client = Client.open(corpus.url)
    label_date = dt.date(2021, 7, 12)  # two days after the scene cloudy over the site
    choice = closest_clear_scene(client, INSIDE, label_date, max_cloud_pct=10.0)
    assert choice.chosen is not None
    assert choice.chosen.acquisition.date == corpus.specs["site_clear"].datetime.date()
    loose = closest_clear_scene(client, INSIDE, label_date, max_cloud_pct=60.0)
    assert loose.chosen is not None
    assert loose.chosen.acquisition.date == corpus.specs["site_cloudy"].datetime.date()


def test_a_window_read_transfers_a_small_part_of_the_tile(corpus: Corpus) -> None:
    acquisition = acquisition_of(corpus, "site_clear")
    file_bytes = 0
    for asset in ("B02", "B03", "B04", "B08", "SCL"):
        ((_, href),) = acquisition.hrefs(asset)
        with rasterio.open(href) as src:
            assert src.width == TILE_M / src.res[0]  # the whole tile is behind the href
        file_bytes += (corpus.server.root / href.removeprefix(corpus.url + "/")).stat().st_size
    corpus.server.reset_stats()
    read_scene(acquisition, INSIDE)
    served = corpus.server.stats().bytes_total
    assert file_bytes > 0
    assert served < 0.25 * file_bytes, (served, file_bytes)  # a 2 x 2 km window of a 12 x 12 km tile


def test_stack_end_to_end(corpus: Corpus, tmp_path: Path) -> None:
    client = Client.open(corpus.url)
    choice = choose_summer_scene(client, INSIDE, (dt.date(2022, 7, 1), dt.date(2022, 8, 31)), 10.0, 0.5)
    stack = build_stack(INSIDE, choice, StacDem(corpus.url), meta={"site_id": "test"})
    path = write_stack(stack, tmp_path / "s.tif")
    again = read_stack(path)
    assert again.layers == INPUT_LAYERS
    assert again.grid == INSIDE
    np.testing.assert_array_equal(np.isnan(again.data), np.isnan(stack.data))
    slope = again.layer("slope")
    assert np.isfinite(slope).all() and slope.min() >= 0 and slope.max() < 60
    scl = truth_scl(corpus.world, corpus.specs["offset_clear"], INSIDE)
    unusable = np.isin(scl, list(SCL_UNUSABLE))
    assert np.isnan(again.layer("blue")[unusable]).all()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["choice"]["processing_baselines"] == ["04.00"]
    assert meta["site_id"] == "test" and 0 < meta["valid_fraction"] <= 1
    with rasterio.open(path) as src:
        assert src.descriptions == INPUT_LAYERS
    valid_cog, errors, _ = cog_validate(path)
    assert valid_cog, errors


def test_scenes_cli_lists_candidates_and_choice(corpus: Corpus, tmp_path: Path) -> None:
    config = tmp_path / "site.json"
    west, south, east, north = INSIDE.bbox_wgs84()
    lon, lat = (west + east) / 2, (south + north) / 2
    config.write_text(
        json.dumps({"id": "test-site", "name": "Test", "centre": {"lon": lon, "lat": lat, "size_km": 1.5}})
    )
    result = CliRunner().invoke(main, ["scenes", str(config), "--year", "2021", "--stac-url", corpus.url])
    assert result.exit_code == 0, result.output
    assert "2 candidate(s)" in result.output
    assert result.output.count(" * ") == 1
    assert "choice: lowest cost" in result.output
