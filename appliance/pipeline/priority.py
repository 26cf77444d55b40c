"""The scoring path goes first: work that can wait a moment (final reports arriving over MLLP) waits, within a bound,
while a series is between its last image and its stored result.

A report's ACK may take a few hundred milliseconds without harm (HL7 senders wait seconds for one); a study's score
is what the technologist is waiting for at the scanner. Parsing a report, reading its labels and storing them costs
~2 ms of Python each, in the same process and under the same interpreter lock as the preprocessing and scoring of a
series, so a RIS sending a backlog back to back slowed scan-to-score measurably (docs/benchmarks.md). A series is
marked from the moment it is queued for scoring until it is stored or failed; `wait_idle` blocks until none is
marked or the bound passes, whichever is first, so reports still flow (at least one per bound per connection)
while scanners keep the engine busy.
"""

from __future__ import annotations

import threading
import time

STALE_S = 120.0  # a mark older than this is dropped: a series lost between stages must not hold reports forever


class ScoringPriority:
    def __init__(self) -> None:
        self._marks: dict[str, float] = {}
        self._cond = threading.Condition()

    def begin(self, series_uid: str) -> None:
        with self._cond:
            self._marks[series_uid] = time.monotonic()

    def end(self, series_uid: str) -> None:
        with self._cond:
            if self._marks.pop(series_uid, None) is not None and not self._marks:
                self._cond.notify_all()

    def busy(self) -> int:
        with self._cond:
            self._drop_stale()
            return len(self._marks)

    def wait_idle(self, timeout_s: float) -> bool:
        """True once no series is in flight, False when `timeout_s` passed first (the caller goes on regardless)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._drop_stale()
                if not self._marks:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def _drop_stale(self) -> None:
        now = time.monotonic()
        for uid in [u for u, t in self._marks.items() if now - t > STALE_S]:
            del self._marks[uid]
