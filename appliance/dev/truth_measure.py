"""How well `extract` reads the synthetic reports: `python -m appliance.dev.truth_measure --n 2000`.

Plans synthetic studies (vendors A, B, C in turn), writes each one's report the way the training cohort does
(`impression(plan.params, np.random.default_rng(seed + 7))`, training/cohort.py), reads it with the extractor
(silence read as absent: a complete report) and compares with `study_labels`. Prints per finding the accuracy,
sensitivity, specificity, the counts, and how often the report states the finding either way (the rest are read
from silence); `--show N` prints up to N misread reports per finding. A development tool
(it imports appliance.dev); it lives in dev/ because no runtime room may import the synthetic generator.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import numpy as np

from appliance.dev.synth import plan_study
from appliance.dev.synth.reports import impression, study_labels
from appliance.truth.extract import FINDINGS, extract

DEFAULT_SEED = 7_100_000  # away from the cohort's seeds (20261130 + k * 1e6), so these are unseen reports


def cases(n: int, seed: int = DEFAULT_SEED) -> Iterator[tuple[str, dict[str, bool]]]:
    for i in range(n):
        s = seed + i
        plan = plan_study(seed=s, vendor="ABC"[i % 3])
        yield impression(plan.params, np.random.default_rng(s + 7)), study_labels(plan.params)


def measure(n: int, seed: int = DEFAULT_SEED, show: int = 0) -> dict[str, dict[str, float]]:
    counts = {f: {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "said": 0} for f in FINDINGS}
    shown = dict.fromkeys(FINDINGS, 0)
    for text, truth in cases(n, seed):
        labels = extract(text)
        read, said = labels.as_bools(), set(labels.mentioned())
        for f in FINDINGS:
            counts[f]["said"] += f in said
            key = ("t" if read[f] == truth[f] else "f") + ("p" if read[f] else "n")
            counts[f][key] += 1
            if read[f] != truth[f] and shown[f] < show:
                shown[f] += 1
                print(f"--- {f}: truth {truth[f]}, read {read[f]}\n{text}\n", file=sys.stderr)
    out = {}
    for f, c in counts.items():
        pos, neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
        out[f] = {**{k: float(v) for k, v in c.items()},
                  "accuracy": (c["tp"] + c["tn"]) / max(1, pos + neg),
                  "sensitivity": c["tp"] / pos if pos else float("nan"),
                  "specificity": c["tn"] / neg if neg else float("nan")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--show", type=int, default=0, help="print up to this many misread reports per finding")
    args = ap.parse_args(argv)
    result = measure(args.n, args.seed, args.show)
    print(f"{args.n} synthetic reports (seeds {args.seed}..{args.seed + args.n - 1}, vendors A/B/C)")
    print(f"{'finding':26s} {'pos':>5s} {'neg':>5s} {'accuracy':>9s} {'sensitivity':>11s} {'specificity':>11s} "
          f"{'stated':>7s}")
    worst = 1.0
    for f, r in result.items():
        pos, neg = int(r["tp"] + r["fn"]), int(r["tn"] + r["fp"])
        print(f"{f:26s} {pos:5d} {neg:5d} {100 * r['accuracy']:8.2f}% {100 * r['sensitivity']:10.2f}% "
              f"{100 * r['specificity']:10.2f}% {100 * r['said'] / args.n:6.1f}%")
        worst = min(worst, r["accuracy"])
    print(f"lowest accuracy {100 * worst:.2f}% (target >= 98 %)")
    return 0 if worst >= 0.98 else 1


if __name__ == "__main__":
    raise SystemExit(main())
