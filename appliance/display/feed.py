"""The display's side of the gRPC API: one thread following StreamResults, resumed after the last event the board
applied, so an appliance restart or a network cut costs a reconnect and nothing else (no gap, no repeat).

For each scored result it asks GetSeriesPreview first and applies the event only once both have arrived: an event
whose preview could not be fetched is not applied, so the resumed stream sends it again. Log lines name series by
their opaque key and errors by their gRPC status; never a patient identifier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from appliance.api import pb
from appliance.display.board import Board
from appliance.display.view import failed_view, series_view
from appliance.serve.client import ApplianceClient, ResultStream

log = logging.getLogger(__name__)

# Refusals that retrying soon will not change (a role, a token, shadow mode): retried at the slowest pace.
_REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


class Feed:
    def __init__(self, connect: Callable[[], ApplianceClient], board: Board, retry_initial_s: float = 0.5,
                 retry_max_s: float = 5.0) -> None:
        self.connect = connect
        self.board = board
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._delay = retry_initial_s  # the next wait after an interruption: doubles up to retry_max_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: ResultStream | None = None
        self._thread = threading.Thread(target=self._run, name="scanside-display-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.cancel()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.connect() as client:
                    self._follow(client)
                if not self._stop.is_set():  # the appliance ended the stream (it is stopping): resume soon
                    self.board.set_connection("reconnecting", "the appliance closed the results stream")
                    self._stop.wait(self._delay)
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    # The appliance's event log is not the one this board followed (its database was replaced).
                    log.warning("the appliance's event log starts before event %d: showing its results afresh",
                                self.board.last_event_id)
                    self.board.clear()
                    continue
                refused = code in _REFUSED
                words = details if refused else f"appliance not reachable ({code.name.lower()})"
                self.board.set_connection("refused" if refused else "reconnecting", words)
                wait = self.retry_max_s if refused else self._delay
                log.warning("results stream %s (%s); resuming after event %d in %.1f s", "refused" if refused else
                            "interrupted", code.name, self.board.last_event_id, wait)
                self._stop.wait(wait)
                self._delay = min(self._delay * 2, self.retry_max_s)
            except Exception as exc:  # a bug here must not end the display: say so, and try again. By its type
                # only: a message could quote a value from a result.
                log.error("display feed failed (%s); retrying", type(exc).__name__)
                self.board.set_connection("reconnecting", "display error; retrying")
                self._stop.wait(self.retry_max_s)

    def _follow(self, client: ApplianceClient) -> None:
        info = client.model_info()
        self.board.set_model({"bundle": f"{info.bundle_name} {info.bundle_version}", "backend": info.backend,
                              "mode": info.mode or "assist", "research_only": info.research_only})
        stream = client.stream(after_event_id=self.board.last_event_id, include_sr_updates=True)
        with self._lock:
            if self._stop.is_set():
                stream.cancel()
                return
            self._stream = stream
        self.board.set_connection("live")
        self._delay = self.retry_initial_s  # connected: the next interruption starts the backoff again
        log.info("following results at %s after event %d", client.address, self.board.last_event_id)
        try:
            for event in stream:
                self._apply(client, event)
        finally:
            with self._lock:
                self._stream = None

    def _apply(self, client: ApplianceClient, event: pb.ResultEvent) -> None:
        if event.kind == pb.ResultEvent.FAILED:
            s = event.status
            self.board.apply(event.event_id, s.study_instance_uid, failed_view(s, at=time.time()), {})
            return
        if event.kind not in (pb.ResultEvent.SCORED, pb.ResultEvent.SR_UPDATED) or not event.HasField("result"):
            self.board.apply(event.event_id, "", None, {})  # a kind this display does not show: still applied
            return
        r = event.result
        sr_only = event.kind == pb.ResultEvent.SR_UPDATED
        preview = None
        if not sr_only or not self.board.has_series(r.study_instance_uid, r.series_key):
            preview = _preview(client, r.series_instance_uid)
        thumbs = {t.position: t.png for t in preview.thumbnails} if preview is not None else {}
        self.board.apply(event.event_id, r.study_instance_uid, series_view(r, preview), thumbs, sr_only=sr_only)


def _preview(client: ApplianceClient, series_uid: str) -> pb.SeriesPreview | None:
    """None when the appliance has none to give (an older appliance without the call); any other error raises,
    and the event is not applied."""
    try:
        return client.preview(series_uid)
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
            return None
        raise
