"""A synthetic scanner that exports studies into a folder at scanner pace, from a background thread.

Several can run at once (one per vendor, say) to exercise an ingest pipeline the way a busy department would.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from appliance.dev.synth.conditions import CONDITIONS, sample_condition
from appliance.dev.synth.plan import StudyPlan, plan_study
from appliance.dev.synth.vendors import VENDORS
from appliance.dev.synth.writer import SynthInstance, iter_instances, write_instance

log = logging.getLogger(__name__)


class SyntheticScanner:
    """Writes ``plans`` under ``root`` one file at a time, ``pace_s`` apart, until done or stopped."""

    def __init__(self, root: Path, plans: Sequence[StudyPlan], pace_s: float = 0.0, mode: str | None = None,
                 on_file: Callable[[Path, SynthInstance], None] | None = None, chunk_delay_s: float = 0.0,
                 name: str = "synthetic-scanner") -> None:
        self.root = Path(root)
        self.plans = list(plans)
        self.pace_s = float(pace_s)
        self.mode = mode
        self.chunk_delay_s = float(chunk_delay_s)
        self._on_file = on_file
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._files: list[Path] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def files_written(self) -> list[Path]:
        with self._lock:
            return list(self._files)

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> SyntheticScanner:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the scanner to finish; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Ask the scanner to stop after the file in progress; True when it has stopped."""
        self._stop.set()
        if self._thread.ident is None:
            return True
        return self.join(timeout)

    def _run(self) -> None:
        first = True
        try:
            for plan in self.plans:
                for inst in iter_instances(plan):
                    if not first and self.pace_s > 0.0 and self._stop.wait(self.pace_s):
                        return
                    if self._stop.is_set():
                        return
                    first = False
                    path = write_instance(inst, self.root, self.mode, self.chunk_delay_s)
                    with self._lock:
                        self._files.append(path)
                    if self._on_file is not None:
                        self._on_file(path, inst)
        except BaseException as exc:  # the thread must not die silently; the owner reads .error
            self._error = exc
            log.exception("synthetic scanner %s failed", self._thread.name)


def demo_cohort(n: int, seed: int, vendors: Sequence[str] | None = None) -> list[StudyPlan]:
    """``n`` study plans mixing vendors and conditions; the first ones cover every condition once."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = np.random.default_rng([seed, 424242])
    vendor_keys = list(vendors) if vendors is not None else sorted(VENDORS)
    covered = list(CONDITIONS)
    rng.shuffle(covered)
    offset = int(rng.integers(0, len(vendor_keys)))
    plans = []
    for i in range(n):
        condition = covered[i] if i < len(covered) else sample_condition(rng)
        vendor = vendor_keys[(i + offset) % len(vendor_keys)]
        plans.append(plan_study(int(rng.integers(0, 2**31 - 1)), vendor=vendor, condition=condition))
    return plans
