"""Benchmark: the full paper corpus (six sites, real labels) and the dataset built from it (41 images).

Renders the synthetic corpus that mirrors Rustemeyer et al. 2022 (``rts offline paper``), serves it
with the local STAC server (a separate process, so HTTP is real), builds the training dataset from
the labels it wrote (``rts dataset build``), and prints the images per site against the paper's
counts, the merged and dropped label groups, and the time of each stage. Usage::

    .venv/bin/python bench/paper_dataset.py                 # in a temporary folder (about 2.5 GB)
    .venv/bin/python bench/paper_dataset.py --root /tmp/paper --keep
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rtsmonitor.offline.paper import PAPER_IMAGE_COUNTS, build_paper_corpus
from rtsmonitor.offline.stacserver import LocalStacServer
from rtsmonitor.sites import DEFAULT_LABELS_DIR, paper_sites
from rtstrain.dataset import build_dataset


def main() -> int:
    """Run the benchmark, print its table; exit 1 when a count differs from the paper's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="Work folder (default: a temporary one).")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    parser.add_argument("--labels-dir", type=Path, default=DEFAULT_LABELS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="paper-dataset-"))
    try:
        t0 = time.perf_counter()
        corpus = build_paper_corpus(root / "corpus", args.labels_dir, args.seed)
        t1 = time.perf_counter()
        with LocalStacServer(corpus.root) as server:
            manifest = build_dataset(paper_sites(), server.url, root / "dataset", corpus.labels_dir)
        t2 = time.perf_counter()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    kinds: dict[str, int] = {}
    for acquisition in corpus.acquisitions:
        kinds[acquisition.kind] = kinds.get(acquisition.kind, 0) + 1
    counts = manifest.counts()
    print(f"{'site':10s}{'paper':>7s}{'design':>8s}{'built':>7s}{'groups':>8s}{'merged':>8s}{'dropped':>9s}")
    for site_id, paper in PAPER_IMAGE_COUNTS.items():
        images = [i for i in manifest.images if i.site_id == site_id]
        merged = sum(len(i.merged_label_dates) for i in images)
        dropped = sum(1 for d in manifest.dropped if d.site_id == site_id)
        design = corpus.sites[site_id].expected_images
        groups = len(images) + merged + dropped
        print(f"{site_id:10s}{paper:7d}{design:8d}{counts.get(site_id, 0):7d}{groups:8d}{merged:8d}{dropped:9d}")
    total = sum(counts.values())
    print(f"{'total':10s}{sum(PAPER_IMAGE_COUNTS.values()):7d}{sum(corpus.expected_counts().values()):8d}{total:7d}")
    print(f"acquisitions: {len(corpus.acquisitions)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")
    print(f"corpus: {t1 - t0:.0f} s; dataset: {t2 - t1:.0f} s; total {t2 - t0:.0f} s")
    print(f"manifest sha256 {manifest.manifest_sha256}")
    if args.keep:
        print(f"kept in {root}")
    return 0 if counts == PAPER_IMAGE_COUNTS else 1


if __name__ == "__main__":
    sys.exit(main())
