"""The newest studies, in memory, as the feed applies the appliance's events to them; the web server reads
snapshots and waits for the next change.

Events are applied once each, in order, by id: the board keeps the last id it applied (the feed resumes after it)
and counts what it would not apply (a repeat) and ids it skipped (a gap), so both show on the page and in tests.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any


def study_key(study_uid: str) -> str:
    """An opaque, stable key for a study (the page and its URLs carry no UID)."""
    return hashlib.sha256(study_uid.encode("utf-8")).hexdigest()[:12]


@dataclass
class _Study:
    key: str
    newest: int  # the id of the latest event that touched it: the board's order, newest first
    series: dict[str, dict[str, Any]] = field(default_factory=dict)


class Board:
    def __init__(self, keep_studies: int = 50) -> None:
        if keep_studies < 1:
            raise ValueError("keep_studies must be at least 1")
        self.keep_studies = keep_studies
        self._cond = threading.Condition()
        self._studies: dict[str, _Study] = {}
        self._thumbs: dict[tuple[str, int], bytes] = {}
        self.version = 0
        self.last_event_id = 0
        self.applied = 0
        self.repeats = 0
        self.gaps = 0
        self.reconnects = 0
        self.connection: dict[str, Any] = {"state": "connecting", "since": time.time(), "detail": ""}
        self.model: dict[str, Any] = {}

    # --- written by the feed -------------------------------------------------------------------------------------

    def apply(self, event_id: int, study_uid: str, view: dict[str, Any] | None, thumbs: dict[int, bytes],
              sr_only: bool = False) -> bool:
        """Apply one event: `view` is the series as the page shows it (None for an event of a kind this board does
        not show); with `sr_only` only its SR state is taken when the series is already shown. False for a repeat
        (an id at or before the last one applied), which changes nothing."""
        with self._cond:
            if event_id <= self.last_event_id:
                self.repeats += 1
                return False
            if event_id != self.last_event_id + 1:
                self.gaps += 1
            self.last_event_id = event_id
            self.applied += 1
            if view is not None:
                self._put(event_id, study_uid, view, thumbs, sr_only)
            self._changed()
            return True

    def _put(self, event_id: int, study_uid: str, view: dict[str, Any], thumbs: dict[int, bytes],
             sr_only: bool) -> None:
        key = study_key(study_uid)
        study = self._studies.get(key)
        if study is None:
            study = self._studies[key] = _Study(key, event_id)
        known = study.series.get(view["key"])
        if sr_only and known is not None:
            known["sr"] = view["sr"]
        else:
            study.series[view["key"]] = view
            study.newest = event_id
            for position, png in thumbs.items():
                self._thumbs[(view["key"], position)] = png
        for old in sorted(self._studies.values(), key=lambda s: s.newest)[: -self.keep_studies]:
            del self._studies[old.key]
            for series_key in old.series:
                for thumb in [k for k in self._thumbs if k[0] == series_key]:
                    del self._thumbs[thumb]

    def clear(self) -> None:
        """The appliance's event log is not the one this board followed (a new database): start again."""
        with self._cond:
            self._studies.clear()
            self._thumbs.clear()
            self.last_event_id = 0
            self._changed()

    def set_connection(self, state: str, detail: str = "") -> None:
        with self._cond:
            if state == "live" and self.connection["state"] != "live" and self.applied + self.repeats > 0:
                self.reconnects += 1
            if state != self.connection["state"] or detail != self.connection["detail"]:
                self.connection = {"state": state, "since": time.time(), "detail": detail}
                self._changed()

    def set_model(self, model: dict[str, Any]) -> None:
        with self._cond:
            self.model = model
            self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._cond.notify_all()

    # --- read by the web server ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            studies = []
            for s in sorted(self._studies.values(), key=lambda s: s.newest, reverse=True):
                series = sorted(s.series.values(), key=lambda v: v["scored_at"] or 0, reverse=True)
                studies.append({"id": s.key, "needs_review": any(v["needs_review"] for v in series),
                                "series": series})
            return {"version": self.version, "connection": dict(self.connection), "model": dict(self.model),
                    "studies": studies,
                    "feed": {"last_event_id": self.last_event_id, "applied": self.applied, "repeats": self.repeats,
                             "gaps": self.gaps, "reconnects": self.reconnects}}

    def has_series(self, study_uid: str, series_key: str) -> bool:
        with self._cond:
            study = self._studies.get(study_key(study_uid))
            return study is not None and series_key in study.series

    def thumbnail(self, series_key: str, position: int) -> bytes | None:
        with self._cond:
            return self._thumbs.get((series_key, position))

    def wait(self, version: int, timeout: float) -> int:
        """Block until the board is past `version` (or the timeout); returns the version now."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != version, timeout)
            return self.version
