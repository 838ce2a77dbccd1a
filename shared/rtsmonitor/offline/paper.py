"""A synthetic corpus that mirrors the paper's training data: six sites, their real labels, 41 images.

Rustemeyer et al. 2022, "Tracking rapid permafrost thaw through time: exploring the potential of
convolutional neural network based models", IGARSS 2022, doi:10.1109/IGARSS46834.2022.9884869,
trained on 41 Sentinel-2 L2A images of six sites (Herschel 4, Horton01 3, Horton02 4, Kolguev01 5,
Kolguev02 7, Lena 18), made from the RTS polygons of Nitze et al. 2021 (ARTS data set, CC0 1.0)
grouped by site and label date, each group paired with the closest scene with < 10 % cloud.

:func:`build_paper_corpus` renders an offline Sentinel-2 L2A + Copernicus DEM corpus (folder layout
as :mod:`rtsmonitor.offline.corpus`, served by :mod:`rtsmonitor.offline.stacserver`) in which the
dataset builder (``rtstrain.dataset.build_dataset`` with its defaults: cloud over the site <= 10 %,
at least half the site clear, +-45 days) yields exactly these counts:

- slumps are drawn at the real label polygons (:data:`SLUMP_RULE`), each on a local hillslope
  (:meth:`rtsmonitor.offline.synthetic.World.generate`);
- each site's label dates are split into as many time clusters as the paper has images of the site
  (:data:`CLUSTER_RULE`), and each cluster gets one acquisition clear over the site, placed so that
  every label date of the cluster, and no other, has it as its closest clear scene;
- distractors (cloudy, snowy, or cut by the swath edge over the site) sit nearer to some label dates
  than the clear scene of their cluster: in real archives the closest scene is often unusable;
- before an acquisition is written, its cloud, snow and no-data over every site its tiles cover are
  measured on the rendered scene classification and the acquisition is redrawn until they match
  the design with a margin (:data:`CLEAR_MAX_CLOUD_PCT`, :data:`BLOCKED_MIN_CLOUD_PCT`, ...).

The labels are written to ``root/labels/`` under their original file names (copied unchanged, or
filtered to the kept label dates in the quick variant), so the dataset builder reads them exactly as
real labels; ``root/paper_corpus.json`` records sites, dates, clusters and which acquisition serves
which cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
from shapely.geometry import box
from tqdm import tqdm

from rtsmonitor.grid import SiteGrid, project_geometry
from rtsmonitor.imagery import LABEL_SEARCH_DAYS, SCL_CLOUDY, SCL_NO_DATA, SCL_SNOW_ICE, SCL_UNUSABLE
from rtsmonitor.labels import Label, by_date, read_labels
from rtsmonitor.offline.corpus import OVERPASS_SOLAR_HOUR, REGION_MARGIN_M, processing_baseline_for_year
from rtsmonitor.offline.synthetic import (
    DEFAULT_TILE_OVERLAP_M,
    DEFAULT_TILE_SIZE_M,
    REAL_TILE_OVERLAP_M,
    REAL_TILE_SIZE_M,
    Bounds,
    SceneSpec,
    Slump,
    TileLayout,
    World,
    seeded_rng,
    slumps_from_wgs84,
    truth_scl,
    utm_to_lonlat,
    write_dem,
    write_scene,
)
from rtsmonitor.sites import LABELS_DIR_PREFIX, PAPER_SITE_IDS, LabelSource, SiteConfig, paper_sites

PAPER_IMAGE_COUNTS: dict[str, int] = {
    "herschel": 4,
    "horton01": 3,
    "horton02": 4,
    "kolguev01": 5,
    "kolguev02": 7,
    "lena": 18,
}
"""Images per site in Rustemeyer et al. 2022 (Table 1; 41 in all)."""

SLUMP_RULE = (
    "The labels draw the same slump again on every label date, so each physical slump is taken once: "
    "all of a site's polygons, latest label date first; a polygon that overlaps one already taken is the "
    "same slump drawn again and is skipped. Each slump thus has the shape of its latest drawing (reference "
    "year = that date's year; smaller before, larger after). Polygons that do not reach the site grid plus "
    f"{REGION_MARGIN_M:g} m are left out."
)
"""How the real label polygons become synthetic slumps."""

CLUSTER_RULE = (
    "A site's label dates, in order, are split at their N-1 widest gaps (ties: the earlier gap), N = the "
    "paper's image count of the site. Each cluster gets one acquisition clear over the site, at a day chosen "
    "(dynamic programming over the clusters) so that every label date of the cluster is strictly closer to it "
    "than to any other cluster's clear acquisition and within the search window, preferring days close to "
    "the cluster's dates, inside its span, and not on a label date (so that a distractor can be nearer)."
)
"""How label dates become time clusters and clear acquisitions."""

SEARCH_DAYS = LABEL_SEARCH_DAYS
"""The dataset builder's search half-window around a label date, in days (the design stays 2 days inside)."""
DESIGN_MAX_CLOUD_PCT = 10.0
"""The dataset builder's cloud limit over the site, in % (Rustemeyer et al. 2022)."""
DESIGN_MIN_VALID_FRACTION = 0.5
"""The dataset builder's minimum clear fraction of the site."""
CLEAR_MAX_CLOUD_PCT = 3.0
"""A clear acquisition has at most this much cloud (and shadow) over its site, in % (margin below 10 %)."""
CLEAR_MIN_VALID_FRACTION = 0.7
"""A clear acquisition observes at least this fraction of its site clear."""
BLOCKED_MIN_CLOUD_PCT = 20.0
"""An acquisition that must not be chosen for a site has at least this much cloud over it, in %, ..."""
BLOCKED_MAX_VALID_FRACTION = 0.4
"""... or at most this fraction of the site observed clear (snow, no data beyond the swath edge)."""
CLEAR_MAX_TILE_CLOUD_PCT = 70.0
"""A clear acquisition's items have at most this tile-wide ``eo:cloud_cover`` in % (the scene search
drops items over 80 %)."""
DISTRACTOR_PROBABILITY = 0.5
"""Chance that a cluster gets a distractor acquisition nearer to one of its label dates."""
MAX_TRIES = 12
"""Redraws of an acquisition whose measured conditions miss the design before giving up."""


@dataclass(frozen=True)
class SiteCondition:
    """An acquisition over one site, measured on its rendered scene classification."""

    coverage: float
    """Fraction of the site with data."""
    cloud_pct: float
    """Cloud, shadow and cirrus in % of the observed part (as :func:`rtsmonitor.imagery.assess`)."""
    snow_pct: float
    """Snow and ice in % of the observed part."""
    valid_fraction: float
    """Fraction of the whole site observed clear."""

    @property
    def clear(self) -> bool:
        """Acceptable with a margin: little cloud and most of the site clear."""
        return (
            self.coverage > 0.99
            and self.cloud_pct <= CLEAR_MAX_CLOUD_PCT
            and (self.valid_fraction >= CLEAR_MIN_VALID_FRACTION)
        )

    @property
    def blocked(self) -> bool:
        """Unacceptable with a margin: cloudy, or too little of the site clear."""
        return (
            self.coverage == 0.0
            or self.cloud_pct >= BLOCKED_MIN_CLOUD_PCT
            or self.valid_fraction <= BLOCKED_MAX_VALID_FRACTION
        )

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form."""
        return {
            "coverage": round(self.coverage, 5),
            "cloud_pct": round(self.cloud_pct, 3),
            "snow_pct": round(self.snow_pct, 3),
            "valid_fraction": round(self.valid_fraction, 5),
        }


@dataclass(frozen=True)
class SitePlan:
    """The design of one site.

    Attributes
    ----------
    site_id : the paper site.
    grid : its 10 m grid.
    label_files : the label files written under ``root/labels`` for it.
    label_dates : the label dates kept (all, or those of the kept clusters in the quick variant).
    clusters : the kept time clusters of label dates, in date order.
    clear_dates : the day of each cluster's clear acquisition.
    image_label_dates : the label date whose polygons make each cluster's image (the date closest to
        the clear acquisition, ties to the earlier: the dataset builder's rule).
    slumps : how many slumps were drawn at the site's labels.
    paper_images : the site's image count in the paper.
    """

    site_id: str
    grid: SiteGrid
    label_files: tuple[str, ...]
    label_dates: tuple[dt.date, ...]
    clusters: tuple[tuple[dt.date, ...], ...]
    clear_dates: tuple[dt.date, ...]
    image_label_dates: tuple[dt.date, ...]
    slumps: int
    paper_images: int

    @property
    def expected_images(self) -> int:
        """Images the dataset builder makes for the site."""
        return len(self.clusters)


@dataclass(frozen=True)
class PaperAcquisition:
    """One rendered acquisition of the paper corpus.

    Attributes
    ----------
    kind : "clear" or a distractor: "cloudy", "snow", "swath_edge".
    site_ids : the sites its tiles cover (one site group).
    clear_over : the sites it is meant to be (and was measured) clear over; empty for distractors.
    serves : (site id, cluster index) pairs: the cluster it is the clear scene of, or, for a
        distractor, the cluster of the label date it lies nearer to than that cluster's clear scene.
    spec : the acquisition.
    item_ids : the STAC items written.
    conditions : measured conditions over each site of ``site_ids``.
    tries : how many draws it took to match the design.
    """

    kind: str
    site_ids: tuple[str, ...]
    clear_over: tuple[str, ...]
    serves: tuple[tuple[str, int], ...]
    spec: SceneSpec
    item_ids: tuple[str, ...]
    conditions: Mapping[str, SiteCondition]
    tries: int

    @property
    def date(self) -> dt.date:
        """Acquisition date (UTC)."""
        return self.spec.datetime.date()


@dataclass(frozen=True)
class PaperCorpusSummary:
    """What :func:`build_paper_corpus` wrote.

    Attributes
    ----------
    root : the corpus folder (serve it with :class:`rtsmonitor.offline.stacserver.LocalStacServer`).
    labels_dir : ``root/labels``: give it to the dataset builder as the labels directory.
    sites : the design of every site.
    acquisitions : every acquisition, in generation order.
    dem_item_ids : the ``cop-dem-glo-30`` items written.
    seconds : wall time of the build.
    """

    root: Path
    labels_dir: Path
    sites: Mapping[str, SitePlan]
    acquisitions: tuple[PaperAcquisition, ...]
    dem_item_ids: tuple[str, ...]
    seconds: float

    @property
    def manifest_path(self) -> Path:
        """``root/paper_corpus.json``."""
        return self.root / "paper_corpus.json"

    def expected_counts(self) -> dict[str, int]:
        """Images per site that the dataset builder makes from this corpus."""
        return {site_id: plan.expected_images for site_id, plan in self.sites.items()}


# --- Labels to slumps and clusters -------------------------------------------------------------------


def site_labels(site: SiteConfig, labels_dir: Path) -> list[Label]:
    """Every label polygon of ``site`` (all its label sources); ValueError when it has none."""
    labels = [label for source in site.labels for label in read_labels(source, labels_dir)]
    if not labels:
        raise ValueError(f"site {site.id} has no label polygons in {labels_dir} (label sources: {site.labels})")
    return labels


def label_slumps(labels: Sequence[Label], grid: SiteGrid, seed: int) -> list[Slump]:
    """The slumps drawn at a site's labels, one per physical slump (see :data:`SLUMP_RULE`)."""
    reach = box(*grid.bounds).buffer(REGION_MARGIN_M)
    taken: list[Any] = []
    chosen: list[Label] = []
    for label in sorted(labels, key=lambda lab: lab.date, reverse=True):
        shape = project_geometry(label.geometry, grid.epsg)
        if not shape.intersects(reach) or any(shape.intersects(other) for other in taken):
            continue
        taken.append(shape)
        chosen.append(label)
    return slumps_from_wgs84([(lab.geometry, lab.date.year) for lab in chosen], grid.epsg, seed=seed)


def split_dates(dates: Sequence[dt.date], n: int) -> list[tuple[dt.date, ...]]:
    """Split distinct dates into ``n`` runs at their ``n - 1`` widest gaps (ties: the earlier gap).

    Raises ValueError when there are fewer than ``n`` dates.
    """
    ordered = sorted(set(dates))
    if not 1 <= n <= len(ordered):
        raise ValueError(f"cannot split {len(ordered)} label date(s) into {n} cluster(s)")
    gaps = sorted(range(len(ordered) - 1), key=lambda i: (-(ordered[i + 1] - ordered[i]).days, i))[: n - 1]
    clusters: list[tuple[dt.date, ...]] = []
    start = 0
    for cut in sorted(gaps):
        clusters.append(tuple(ordered[start : cut + 1]))
        start = cut + 1
    clusters.append(tuple(ordered[start:]))
    return clusters


def image_label_date(cluster: Sequence[dt.date], scene_date: dt.date) -> dt.date:
    """The label date of ``cluster`` whose polygons make the image: closest to the scene, ties to the earlier."""
    return min(cluster, key=lambda d: (abs((d - scene_date).days), d))


def place_clear_dates(
    clusters: Sequence[Sequence[dt.date]],
    rng: np.random.Generator,
    forbidden: frozenset[dt.date] = frozenset(),
    search_days: int = SEARCH_DAYS,
) -> list[dt.date]:
    """One clear-acquisition day per cluster such that each cluster's dates are closest to their own.

    Every date of cluster k is strictly closer to day k than to any other day and at most
    ``search_days - 2`` days from it; among such placements the one of least cost is chosen (cost
    per cluster, in days: the largest distance to its dates, +4 on a label date, +1.5 per day
    outside the cluster's span, plus a seeded jitter in [0, 2) for variety: a single label date
    mostly gets its clear scene a day or two away). ``forbidden`` days (taken by other acquisitions
    of the site group) are not used. RuntimeError if no placement exists.
    """
    label_days = {d.toordinal() for cluster in clusters for d in cluster}
    reach = search_days - 2
    candidates: list[list[int]] = []
    costs: list[dict[int, float]] = []
    for cluster in clusters:
        first, last = cluster[0].toordinal(), cluster[-1].toordinal()
        days = [
            c
            for c in range(max(last - reach, first - 8), min(first + reach, last + 8) + 1)
            if dt.date.fromordinal(c) not in forbidden
        ]
        jitter = rng.uniform(0.0, 2.0, len(days))
        cost = {
            c: max(abs(d.toordinal() - c) for d in cluster)
            + (4.0 if c in label_days else 0.0)
            + 1.5 * max(first - c, c - last, 0)
            + float(j)
            for c, j in zip(days, jitter, strict=True)
        }
        candidates.append(days)
        costs.append(cost)
    best: list[dict[int, tuple[float, int | None]]] = [{c: (costs[0][c], None) for c in candidates[0]}]
    for k in range(1, len(clusters)):
        left_last, right_first = clusters[k - 1][-1].toordinal(), clusters[k][0].toordinal()
        layer: dict[int, tuple[float, int | None]] = {}
        for c in candidates[k]:
            options = [
                (total, prev)
                for prev, (total, _) in best[-1].items()
                if prev < c and 2 * left_last < prev + c < 2 * right_first
            ]
            if options:
                total, prev = min(options)
                layer[c] = (total + costs[k][c], prev)
        if not layer:
            raise RuntimeError(
                f"no clear-scene days separate the label-date clusters {clusters[k - 1]} and {clusters[k]}"
            )
        best.append(layer)
    day: int | None = min(best[-1], key=lambda c: (best[-1][c][0], c))
    out: list[int] = []
    for k in range(len(clusters) - 1, -1, -1):
        assert day is not None
        out.append(day)
        day = best[k][day][1]
    return [dt.date.fromordinal(c) for c in reversed(out)]


# --- Acquisitions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    date: dt.date
    kind: str
    clear_over: tuple[str, ...]
    serves: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class _Group:
    epsg: int
    site_ids: tuple[str, ...]
    aoi: Bounds


def _union(bounds: Sequence[Bounds]) -> Bounds:
    return (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )


def _site_groups(plans: Mapping[str, SitePlan], layouts: Mapping[int, TileLayout]) -> list[_Group]:
    """Sites of one UTM zone whose tiles overlap, grouped (they share acquisitions)."""
    groups: list[_Group] = []
    for epsg, layout in layouts.items():
        members = [(site_id, plan.grid) for site_id, plan in plans.items() if plan.grid.epsg == epsg]
        tiles = {site_id: {t.name for t in layout.tiles_for_bounds(grid.bounds)} for site_id, grid in members}
        clusters: list[list[str]] = []
        for site_id, _ in members:
            touching = [c for c in clusters if any(tiles[site_id] & tiles[other] for other in c)]
            merged = [site_id]
            for c in touching:
                merged.extend(c)
                clusters.remove(c)
            clusters.append(merged)
        for cluster in clusters:
            ids = tuple(sorted(cluster, key=lambda s: list(plans).index(s)))
            groups.append(_Group(epsg, ids, _union([plans[s].grid.bounds for s in ids])))
    return groups


def _plan_group(group: _Group, plans: Mapping[str, SitePlan], seed: int, distractors: bool) -> list[_Planned]:
    """The acquisitions of one site group: clear ones per cluster, then distractors."""
    planned: list[_Planned] = []
    used: set[dt.date] = set()
    for site_id in group.site_ids:
        plan = plans[site_id]
        for k, day in enumerate(plan.clear_dates):
            planned.append(_Planned(day, "clear", (site_id,), ((site_id, k),)))
            used.add(day)
    if not distractors:
        return planned
    clear_days = set(used)
    for site_id in group.site_ids:
        plan = plans[site_id]
        rng = seeded_rng("paper-distractors", seed, site_id)
        for k, (cluster, clear_day) in enumerate(zip(plan.clusters, plan.clear_dates, strict=True)):
            if rng.random() >= DISTRACTOR_PROBABILITY:
                continue
            target = max(cluster, key=lambda d: (abs((d - clear_day).days), d))
            gap = abs((target - clear_day).days)
            options = [
                target + dt.timedelta(days=o)
                for o in sorted(range(-gap + 1, gap), key=lambda o: (abs(o), o))
                if target + dt.timedelta(days=o) not in used | clear_days
            ]
            if not options:
                continue
            day = options[0]
            early_or_late = (day.month == 6 and day.day <= 20) or (day.month == 9 and day.day >= 12)
            u = rng.random()
            if early_or_late and u < 0.6:
                kind = "snow"
            elif len(group.site_ids) == 1 and u > 0.75:
                kind = "swath_edge"
            else:
                kind = "cloudy"
            planned.append(_Planned(day, kind, (), ((site_id, k),)))
            used.add(day)
    return sorted(planned, key=lambda p: p.date)


def _spec(
    planned: _Planned,
    attempt: int,
    group: _Group,
    plans: Mapping[str, SitePlan],
    orbits: tuple[int, int],
    seed: int,
) -> SceneSpec:
    """The scene spec of a planned acquisition, redrawn (more cloud, snow or no data) on each attempt."""
    rng = seeded_rng("paper-acquisition", seed, group.site_ids, planned.date.isoformat(), attempt)
    lon, _ = utm_to_lonlat(group.epsg, (group.aoi[0] + group.aoi[2]) / 2, (group.aoi[1] + group.aoi[3]) / 2)
    second = rng.random() < 0.5
    hours = (OVERPASS_SOLAR_HOUR - lon / 15.0 + (0.3 if second else 0.0)) % 24.0
    when = dt.datetime(planned.date.year, planned.date.month, planned.date.day, tzinfo=dt.UTC) + dt.timedelta(
        hours=hours, milliseconds=int(rng.integers(0, 1000))
    )
    push = min(attempt, 6) / 6.0  # later attempts push the conditions further from the limits
    u = rng.uniform
    aoi = group.aoi
    cloud = tile_cloud = snow = nodata = 0.0
    if planned.kind == "clear":
        aoi = _union([plans[s].grid.bounds for s in planned.clear_over])
        others = len(group.site_ids) > len(planned.clear_over)
        tile_cloud = u(0.3, 0.5) + 0.15 * push if others else u(0.0, 0.35)
    elif planned.kind == "cloudy":
        cloud = min(1.0, u(0.35, 0.9) + 0.6 * push)
        tile_cloud = min(0.6, max(0.1, cloud - u(0.1, 0.4)))
    elif planned.kind == "snow":
        snow = min(1.0, u(0.6, 0.9) + 0.3 * push)
        cloud, tile_cloud = u(0.0, 0.03), u(0.0, 0.2)
    elif planned.kind == "swath_edge":
        nodata = min(0.95, u(0.6, 0.8) + 0.3 * push)
        tile_cloud = u(0.0, 0.2)
    else:
        raise ValueError(f"unknown acquisition kind {planned.kind!r}")
    return SceneSpec(
        datetime=when,
        platform="Sentinel-2A" if rng.random() < 0.5 else "Sentinel-2B",
        processing_baseline=processing_baseline_for_year(planned.date.year),
        relative_orbit=orbits[1] if second else orbits[0],
        aoi_bounds=aoi,
        cloud_fraction=cloud,
        tile_cloud_fraction=tile_cloud,
        snow_fraction=snow,
        nodata_fraction=nodata,
        seed=int(rng.integers(0, 2**62)),
    )


def measure(world: World, spec: SceneSpec, grid: SiteGrid) -> SiteCondition:
    """Coverage, cloud, snow and clear fraction of ``spec`` over ``grid`` from its rendered SCL."""
    scl = truth_scl(world, spec, grid)
    total = scl.size
    observed = int(np.count_nonzero(scl != SCL_NO_DATA))
    cloudy = int(np.isin(scl, list(SCL_CLOUDY)).sum())
    snow = int(np.count_nonzero(scl == SCL_SNOW_ICE))
    valid = int(np.count_nonzero(~np.isin(scl, list(SCL_UNUSABLE))))
    return SiteCondition(
        coverage=observed / total,
        cloud_pct=100.0 * cloudy / observed if observed else 100.0,
        snow_pct=100.0 * snow / observed if observed else 0.0,
        valid_fraction=valid / total,
    )


def _matches(planned: _Planned, conditions: Mapping[str, SiteCondition]) -> bool:
    return all(
        condition.clear if site_id in planned.clear_over else condition.blocked
        for site_id, condition in conditions.items()
    )


def _remove_items(root: Path, items: Sequence[dict[str, Any]]) -> None:
    """Delete written items and their asset files (a redrawn acquisition replaces them)."""
    for item in items:
        (root / "collections" / str(item["collection"]) / "items" / f"{item['id']}.json").unlink(missing_ok=True)
        for asset in item["assets"].values():
            path = root / str(asset["href"])
            path.unlink(missing_ok=True)
            if path.parent.exists() and not any(path.parent.iterdir()):
                path.parent.rmdir()


def _render_group(
    root: Path,
    world: World,
    layout: TileLayout,
    group: _Group,
    plans: Mapping[str, SitePlan],
    planned: _Planned,
    orbits: tuple[int, int],
    seed: int,
) -> PaperAcquisition:
    """Draw, measure and write one acquisition until it matches the design."""
    grids = {site_id: plans[site_id].grid for site_id in group.site_ids}
    for attempt in range(MAX_TRIES):
        spec = _spec(planned, attempt, group, plans, orbits, seed)
        conditions = {site_id: measure(world, spec, grid) for site_id, grid in grids.items()}
        if not _matches(planned, conditions):
            continue
        items = write_scene(world, layout, spec, root, aoi_bounds=group.aoi)
        if planned.clear_over and any(
            float(item["properties"]["eo:cloud_cover"]) > CLEAR_MAX_TILE_CLOUD_PCT for item in items
        ):
            _remove_items(root, items)
            continue
        return PaperAcquisition(
            kind=planned.kind,
            site_ids=group.site_ids,
            clear_over=planned.clear_over,
            serves=planned.serves,
            spec=spec,
            item_ids=tuple(item["id"] for item in items),
            conditions=conditions,
            tries=attempt + 1,
        )
    raise RuntimeError(
        f"no draw of the {planned.kind} acquisition of {planned.date} over {group.site_ids} matched the design "
        f"in {MAX_TRIES} tries"
    )


# --- Labels out ---------------------------------------------------------------------------------------


def _label_name(source: LabelSource) -> str:
    return Path(source.path.removeprefix(LABELS_DIR_PREFIX)).name


def _write_labels(
    out_dir: Path, configs: Sequence[SiteConfig], labels_dir: Path, kept: Mapping[str, frozenset[dt.date]] | None
) -> dict[str, tuple[str, ...]]:
    """Write the label files of ``configs`` to ``out_dir``: copies, or filtered to ``kept`` dates per site.

    Returns the file names written per site. The filtered files keep the source's format, fields
    and CRS; only rows are dropped.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[Path, list[tuple[str, LabelSource]]] = {}
    names: dict[str, tuple[str, ...]] = {}
    for config in configs:
        names[config.id] = tuple(_label_name(source) for source in config.labels)
        for source in config.labels:
            files.setdefault(source.resolved_path(labels_dir), []).append((config.id, source))
    for path, users in files.items():
        target = out_dir / _label_name(users[0][1])
        if kept is None:
            shutil.copyfile(path, target)
            continue
        meta, _, geometry, columns = pyogrio.raw.read(path)
        fields = [str(f) for f in meta["fields"]]
        values = dict(zip(fields, columns, strict=True))
        keep = np.zeros(len(geometry), dtype=bool)
        for site_id, source in users:
            dates = kept[site_id]
            if source.site_field:
                mine = np.array([str(v) == source.site_value for v in values[source.site_field]], dtype=bool)
            else:
                mine = np.ones(len(geometry), dtype=bool)
            if source.date is not None:
                on_date = np.full(len(geometry), source.date in dates)
            else:
                on_date = np.array([str(v)[:10] in {d.isoformat() for d in dates} for v in values[source.date_field]])
            keep |= mine & on_date
        target.unlink(missing_ok=True)
        driver = pyogrio.detect_write_driver(str(target))
        pyogrio.raw.write(
            target,
            geometry[keep],
            [column[keep] for column in columns],
            fields,
            driver=driver,
            geometry_type=meta["geometry_type"],
            crs=meta["crs"],
        )
    return names


# --- The corpus ---------------------------------------------------------------------------------------


def _overlap_m(tile_size_m: float) -> float:
    if tile_size_m == DEFAULT_TILE_SIZE_M:
        return DEFAULT_TILE_OVERLAP_M
    if tile_size_m == REAL_TILE_SIZE_M:
        return REAL_TILE_OVERLAP_M
    return float(max(1, round(0.09 * tile_size_m / 60.0)) * 60)


def build_paper_corpus(
    root: Path,
    labels_dir: Path,
    seed: int = 0,
    tile_size_m: float = DEFAULT_TILE_SIZE_M,
    progress: bool = True,
    *,
    sites: Sequence[str] | None = None,
    max_images_per_site: int | None = None,
    distractors: bool = True,
) -> PaperCorpusSummary:
    """Render the paper corpus: the six sites, slumps at their real labels, 41 images by design.

    Parameters
    ----------
    root : output folder (created). Serve it with the local STAC server; its ``labels`` folder is the
        labels directory for the dataset builder.
    labels_dir : the real label files (``../shared/data/labels``: Nitze et al. 2021 GeoJSON).
    seed : seeds the landscape, the placement of acquisitions and their clouds.
    tile_size_m : side of the synthetic Sentinel-2 tiles in metres.
    progress : show a tqdm progress bar.
    sites : paper site ids to render (default: all six, :data:`PAPER_SITE_IDS`).
    max_images_per_site : quick variant: keep only this many clusters per site (those with the
        most label dates, ties to the earlier), and write only their label dates to ``root/labels``.
    distractors : add the cloudy/snowy/cut distractor acquisitions.

    Returns
    -------
    A :class:`PaperCorpusSummary`; :meth:`PaperCorpusSummary.expected_counts` are the images per site
    the dataset builder makes (4, 3, 4, 5, 7, 18 for the full corpus).
    """
    started = time.perf_counter()
    root = Path(root)
    labels_dir = Path(labels_dir)
    wanted = list(PAPER_SITE_IDS if sites is None else sites)
    unknown = sorted(set(wanted) - set(PAPER_SITE_IDS))
    if unknown:
        raise ValueError(f"not paper sites: {unknown} (known: {', '.join(PAPER_SITE_IDS)})")
    if max_images_per_site is not None and max_images_per_site < 1:
        raise ValueError(f"max_images_per_site must be >= 1, got {max_images_per_site}")
    configs = [c for c in paper_sites() if c.id in wanted]
    root.mkdir(parents=True, exist_ok=True)

    plans: dict[str, SitePlan] = {}
    slumps: dict[str, list[Slump]] = {}
    for config in configs:
        grid = config.grid()
        labels = site_labels(config, labels_dir)
        clusters = split_dates(list(by_date(labels)), PAPER_IMAGE_COUNTS[config.id])
        if max_images_per_site is not None and max_images_per_site < len(clusters):
            ranked = sorted(range(len(clusters)), key=lambda k: (-len(clusters[k]), k))[:max_images_per_site]
            clusters = [clusters[k] for k in sorted(ranked)]
        slumps[config.id] = label_slumps(
            labels, grid, int(seeded_rng("paper-slumps", seed, config.id).integers(0, 2**62))
        )
        plans[config.id] = SitePlan(
            site_id=config.id,
            grid=grid,
            label_files=tuple(_label_name(s) for s in config.labels),
            label_dates=tuple(d for cluster in clusters for d in cluster),
            clusters=tuple(clusters),
            clear_dates=(),
            image_label_dates=(),
            slumps=len(slumps[config.id]),
            paper_images=PAPER_IMAGE_COUNTS[config.id],
        )

    layouts = {
        epsg: TileLayout(epsg, tile_size_m, _overlap_m(tile_size_m)) for epsg in {p.grid.epsg for p in plans.values()}
    }
    groups = _site_groups(plans, layouts)
    for group in groups:  # clear days per site; a group's sites never share a day
        taken: set[dt.date] = set()
        for site_id in group.site_ids:
            plan = plans[site_id]
            rng = seeded_rng("paper-clear", seed, site_id)
            days = place_clear_dates(plan.clusters, rng, frozenset(taken))
            taken.update(days)
            image_dates = tuple(image_label_date(c, d) for c, d in zip(plan.clusters, days, strict=True))
            plans[site_id] = replace(plan, clear_dates=tuple(days), image_label_dates=image_dates)

    worlds: dict[int, World] = {}
    for epsg in layouts:
        zone = [p for p in plans.values() if p.grid.epsg == epsg]
        regions = [
            (
                p.grid.bounds[0] - REGION_MARGIN_M,
                p.grid.bounds[1] - REGION_MARGIN_M,
                p.grid.bounds[2] + REGION_MARGIN_M,
                p.grid.bounds[3] + REGION_MARGIN_M,
            )
            for p in zone
        ]
        worlds[epsg] = World.generate(
            epsg,
            regions,
            seed=int(seeded_rng("paper-world", seed, epsg).integers(0, 2**62)),
            slumps=[s for p in zone for s in slumps[p.site_id]],
            slumps_per_km2=0.0,
        )

    schedule = [(group, planned) for group in groups for planned in _plan_group(group, plans, seed, distractors)]
    acquisitions: list[PaperAcquisition] = []
    dem_ids: list[str] = []
    with tqdm(total=len(schedule) + len(plans), desc="paper corpus", unit="scene", disable=not progress) as bar:
        for group, planned in schedule:
            orbit_rng = seeded_rng("paper-orbits", seed, group.site_ids)
            orbits = tuple(int(o) for o in orbit_rng.choice(np.arange(1, 144), size=2, replace=False))
            acquisitions.append(
                _render_group(
                    root, worlds[group.epsg], layouts[group.epsg], group, plans, planned, (orbits[0], orbits[1]), seed
                )
            )
            bar.update(1)
        for plan in plans.values():
            for item in write_dem(worlds[plan.grid.epsg], root, plan.grid.bbox_wgs84()):
                if item["id"] not in dem_ids:
                    dem_ids.append(item["id"])
            bar.update(1)

    kept = None if max_images_per_site is None else {s: frozenset(p.label_dates) for s, p in plans.items()}
    _write_labels(root / "labels", configs, labels_dir, kept)
    summary = PaperCorpusSummary(
        root=root,
        labels_dir=root / "labels",
        sites=plans,
        acquisitions=tuple(acquisitions),
        dem_item_ids=tuple(dem_ids),
        seconds=time.perf_counter() - started,
    )
    _write_manifest(summary, seed, tile_size_m, max_images_per_site, distractors)
    return summary


def _write_manifest(
    summary: PaperCorpusSummary, seed: int, tile_size_m: float, max_images_per_site: int | None, distractors: bool
) -> None:
    """``paper_corpus.json``: the design and what was written, for people and tests."""
    index = {id(a): i for i, a in enumerate(summary.acquisitions)}

    def stamp(a: PaperAcquisition) -> str:
        return a.spec.datetime.isoformat().replace("+00:00", "Z")

    sites: dict[str, Any] = {}
    for site_id, plan in summary.sites.items():
        clusters = []
        for k, (cluster, clear_day, image_date) in enumerate(
            zip(plan.clusters, plan.clear_dates, plan.image_label_dates, strict=True)
        ):
            serving = [a for a in summary.acquisitions if (site_id, k) in a.serves]
            clear = next(a for a in serving if a.kind == "clear")
            clusters.append(
                {
                    "index": k,
                    "label_dates": [d.isoformat() for d in cluster],
                    "clear_acquisition": index[id(clear)],
                    "clear_date": clear_day.isoformat(),
                    "image_label_date": image_date.isoformat(),
                    "merged_label_dates": [d.isoformat() for d in cluster if d != image_date],
                    "distractors": [index[id(a)] for a in serving if a.kind != "clear"],
                }
            )
        sites[site_id] = {
            "grid": plan.grid.to_dict(),
            "paper_images": plan.paper_images,
            "expected_images": plan.expected_images,
            "label_files": list(plan.label_files),
            "label_dates": [d.isoformat() for d in plan.label_dates],
            "slumps": plan.slumps,
            "clusters": clusters,
        }
    manifest = {
        "generator": "rtsmonitor.offline.paper",
        "paper": "Rustemeyer et al. 2022, IGARSS, doi:10.1109/IGARSS46834.2022.9884869",
        "seed": seed,
        "tile_size_m": tile_size_m,
        "max_images_per_site": max_images_per_site,
        "distractors": distractors,
        "design": {
            "max_cloud_pct": DESIGN_MAX_CLOUD_PCT,
            "min_valid_fraction": DESIGN_MIN_VALID_FRACTION,
            "search_days": SEARCH_DAYS,
            "slump_rule": SLUMP_RULE,
            "cluster_rule": CLUSTER_RULE,
        },
        "labels_dir": "labels",
        "expected_images": summary.expected_counts(),
        "sites": sites,
        "acquisitions": [
            {
                "index": i,
                "kind": a.kind,
                "datetime": stamp(a),
                "sites": list(a.site_ids),
                "clear_over": list(a.clear_over),
                "serves": [{"site": s, "cluster": k} for s, k in a.serves],
                "platform": a.spec.platform,
                "processing_baseline": a.spec.processing_baseline,
                "relative_orbit": a.spec.relative_orbit,
                "aoi_bounds": list(a.spec.aoi_bounds),
                "cloud_fraction": round(a.spec.cloud_fraction, 5),
                "tile_cloud_fraction": round(a.spec.tile_cloud_fraction, 5),
                "snow_fraction": round(a.spec.snow_fraction, 5),
                "nodata_fraction": round(a.spec.nodata_fraction, 5),
                "seed": a.spec.seed,
                "tries": a.tries,
                "measured": {s: c.to_dict() for s, c in a.conditions.items()},
                "item_ids": list(a.item_ids),
            }
            for i, a in enumerate(summary.acquisitions)
        ],
        "dem_item_ids": list(summary.dem_item_ids),
        "seconds": round(summary.seconds, 1),
    }
    text = json.dumps(manifest, indent=2)
    tmp = summary.manifest_path.with_name(f".{summary.manifest_path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(summary.manifest_path)
