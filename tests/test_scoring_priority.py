"""The scoring path goes first (appliance/pipeline/priority.py): a final report waits, within a bound, while a series
is between its last image and its stored result; a real MLLP listener on loopback holds its ACK meanwhile."""

from __future__ import annotations

import threading
import time

from appliance.config.sections import Hl7Config
from appliance.dev.oru import MllpClient, oru_message
from appliance.dev.synth import plan_study
from appliance.pipeline.priority import ScoringPriority
from appliance.truth.mllp import MllpListener


def test_wait_idle_returns_at_once_when_nothing_is_scored_and_waits_while_something_is():
    p = ScoringPriority()
    assert p.wait_idle(5.0) is True and p.busy() == 0
    p.begin("1.2.3")
    started = time.monotonic()
    assert p.wait_idle(0.2) is False  # bounded: the caller goes on
    assert 0.18 <= time.monotonic() - started < 2.0
    threading.Timer(0.1, p.end, args=("1.2.3",)).start()
    started = time.monotonic()
    assert p.wait_idle(5.0) is True  # woken by the end, not by the bound
    assert time.monotonic() - started < 2.0
    p.end("never begun")  # harmless
    assert p.busy() == 0


def test_a_report_is_acked_only_after_the_series_in_flight_is_done(tmp_path):
    priority = ScoringPriority()
    stored: list[float] = []
    listener = MllpListener(Hl7Config(enabled=True, port=0), lambda report: stored.append(time.monotonic()),
                            before_message=lambda: priority.wait_idle(5.0))
    listener.start()
    try:
        plan = plan_study(seed=5, vendor="A")
        priority.begin("series-being-scored")
        ended = []

        def finish() -> None:
            ended.append(time.monotonic())
            priority.end("series-being-scored")

        threading.Timer(0.4, finish).start()
        with MllpClient("127.0.0.1", listener.port) as ris:
            code, _ = ris.send(oru_message(plan, "M1"))
            acked = time.monotonic()
            assert code == "AA"
            assert stored and stored[0] >= ended[0]  # read and stored after the series was done, not before
            assert acked >= ended[0]
            started = time.monotonic()  # nothing in flight now: no wait
            assert ris.send(oru_message(plan, "M2"))[0] == "AA"
            assert time.monotonic() - started < 1.0
    finally:
        listener.stop()
