"""The synthetic cohort: studies from the synthetic scanner, split the way a CMR service's archive would be used.

- train: vendors A and B, each study with report impressions (several readers' wordings) - teacher training;
- val: vendors A and B, with labels - thresholds, calibration;
- test: vendors A and B - the internal test split;
- external: vendor C only, never seen in training - "the other hospital";
- distill: vendors A and B, images only - the unlabelled archive the student is distilled on.

Tensors come from the appliance's own preprocessing (`appliance.dev.synth.arrays.study_tensor` ends in
`appliance.preprocess.stack_from_arrays`), stored as float16 to halve memory; labels and reports from the
generating parameters. Deterministic from the seed; built in parallel worker processes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from appliance.dev.synth import plan_study
from appliance.dev.synth.arrays import study_tensor
from appliance.dev.synth.reports import impression, study_labels
from appliance.preprocess import PreprocessSpec
from training.prompts import FINDING_IDS

SPLIT_VENDORS = {"train": "AB", "val": "AB", "test": "AB", "external": "C", "distill": "AB"}
REPORTS_PER_STUDY = {"train": 3, "val": 1, "test": 1, "external": 1, "distill": 0}


@dataclass(frozen=True)
class CohortSpec:
    train: int = 1600
    val: int = 400
    test: int = 500
    external: int = 300
    distill: int = 2000
    seed: int = 20261130

    def sizes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in SPLIT_VENDORS}


@dataclass
class Split:
    name: str
    tensors: np.ndarray  # (N, T, C, H, W) float16
    labels: np.ndarray  # (N, F) bool, columns in FINDING_IDS order
    reports: list[list[str]]  # per study, 0..k impressions
    vendors: list[str]
    conditions: list[str]
    seeds: list[int]


def _study(args: tuple[int, str, int, dict]) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    seed, vendor, n_reports, spec_dict = args
    spec = PreprocessSpec.from_dict(spec_dict)
    plan = plan_study(seed=seed, vendor=vendor)
    tensor = study_tensor(plan, spec).astype(np.float16)
    labels = study_labels(plan.params)
    rng = np.random.default_rng(seed + 7)
    reports = [impression(plan.params, rng) for _ in range(n_reports)]
    return tensor, np.array([labels[f] for f in FINDING_IDS], dtype=bool), reports, plan.condition


def _seeds(spec: CohortSpec) -> dict[str, list[tuple[int, str]]]:
    out, offset = {}, 0
    for name, n in spec.sizes().items():
        vendors = SPLIT_VENDORS[name]
        # Seeds are disjoint between splits, so no study (or its phantom) appears in two of them.
        out[name] = [(spec.seed + offset + i, vendors[i % len(vendors)]) for i in range(n)]
        offset += 1_000_000
    return out


def build_cohort(spec: CohortSpec, preprocess: PreprocessSpec, workdir: Path, processes: int = 2,
                 log=print) -> dict[str, Split]:
    """Build (or load from `workdir`, if built with the same settings) every split."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    key = json.dumps({"cohort": asdict(spec), "preprocess": preprocess.to_dict(), "version": 3}, sort_keys=True)
    stamp = workdir / "cohort.json"
    if stamp.exists() and stamp.read_text() == key:
        return {name: _load(workdir, name) for name in SPLIT_VENDORS}
    seeds = _seeds(spec)
    splits = {}
    with mp.get_context("spawn").Pool(processes) as pool:
        for name, items in seeds.items():
            started = time.perf_counter()
            jobs = [(seed, vendor, REPORTS_PER_STUDY[name], preprocess.to_dict()) for seed, vendor in items]
            results = pool.map(_study, jobs, chunksize=8)
            split = Split(name, np.stack([r[0] for r in results]), np.stack([r[1] for r in results]),
                          [r[2] for r in results], [v for _, v in items], [r[3] for r in results],
                          [s for s, _ in items])
            _save(workdir, split)
            splits[name] = split
            log(f"cohort: {name}: {len(items)} studies in {time.perf_counter() - started:.0f} s")
    stamp.write_text(key)
    return splits


def _save(workdir: Path, split: Split) -> None:
    np.save(workdir / f"{split.name}.tensors.npy", split.tensors)
    np.save(workdir / f"{split.name}.labels.npy", split.labels)
    (workdir / f"{split.name}.meta.json").write_text(json.dumps(
        {"reports": split.reports, "vendors": split.vendors, "conditions": split.conditions, "seeds": split.seeds}))


def _load(workdir: Path, name: str) -> Split:
    meta = json.loads((workdir / f"{name}.meta.json").read_text())
    return Split(name, np.load(workdir / f"{name}.tensors.npy", mmap_mode="r"),
                 np.load(workdir / f"{name}.labels.npy"), meta["reports"], meta["vendors"], meta["conditions"],
                 meta["seeds"])
