"""The slices the model saw, as small PNGs per series (written by the preparer, read by the gRPC preview call).

Saved once the tensor is made, before the series is scored, in their own transaction; a series that fails loses
them with its other patient data (SeriesTable.set_state). Saving again replaces them (a series prepared twice after
a restart shows the tensor that was scored).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from appliance.handovers import Thumbnail
from appliance.store.database import Database


class Thumbnails:
    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, series_uid: str, thumbnails: Sequence[Thumbnail]) -> None:
        now = time.time()
        with self._db.transaction() as db:
            db.execute("DELETE FROM thumbnails WHERE series_uid=?", (series_uid,))
            db.executemany("INSERT INTO thumbnails (series_uid, position, label, width, height, png, made_at)"
                           " VALUES (?,?,?,?,?,?,?)",
                           [(series_uid, t.position, t.label, t.width, t.height, t.png, now) for t in thumbnails])

    def for_series(self, series_uid: str) -> list[Thumbnail]:
        rows = self._db.reader().execute(
            "SELECT position, label, width, height, png FROM thumbnails WHERE series_uid=? ORDER BY position",
            (series_uid,)).fetchall()
        return [Thumbnail(int(r["position"]), r["label"], int(r["width"]), int(r["height"]), bytes(r["png"]))
                for r in rows]
