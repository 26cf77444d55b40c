"""`scanside status`: is the appliance ready, what is it running, and is anything piling up.

Where each line comes from: readiness from grpc.health.v1 (SERVING once the engine is loaded and warm); bundle,
label bank, backend and mode from GetModelInfo (the ops role; anonymous callers on the appliance's host have it);
the inference queue, series in progress, quarantined files, failed series and the SR backlog from the Prometheus
endpoint (scanside_inference_queue_depth, scanside_series{state}, scanside_files_quarantined_total{reason},
scanside_sr_exports{destination,state}), which the appliance serves on loopback by default. No value read here
carries a patient identifier.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from appliance.api import pb
from appliance.cli.table import labelled, terminal_width
from appliance.serve.client import ApplianceClient


class Unreachable(Exception):
    """The appliance's gRPC port does not answer (the message says where and why)."""


@dataclass
class Metrics:
    queue_depth: int = 0
    series: Counter[str] = field(default_factory=Counter)  # state -> series
    quarantined: Counter[str] = field(default_factory=Counter)  # reason -> files, since the appliance started
    exports: Counter[tuple[str, str]] = field(default_factory=Counter)  # (destination, state) -> SRs


@dataclass
class Status:
    address: str
    serving: bool
    info: pb.ModelInfo | None
    info_error: str  # why there is no model information
    metrics_url: str | None
    metrics: Metrics | None
    metrics_error: str


_READ = ("scanside_inference_queue_depth", "scanside_series", "scanside_files_quarantined_total",
         "scanside_sr_exports")


def read_metrics(url: str, timeout_s: float = 5.0) -> Metrics:
    """The appliance's metrics that status shows; raises OSError (urllib's errors included) or ValueError."""
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        text = reply.read().decode("utf-8")
    m = Metrics()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name not in _READ:
                continue
            value = int(value)
            if sample.name == "scanside_inference_queue_depth":
                m.queue_depth = value
            elif sample.name == "scanside_series":
                m.series[labels["state"]] += value
            elif sample.name == "scanside_files_quarantined_total":
                m.quarantined[labels["reason"]] += value
            elif sample.name == "scanside_sr_exports":
                m.exports[(labels["destination"], labels["state"])] += value
    return m


def gather(client: ApplianceClient, metrics_url: str | None) -> Status:
    try:
        reply = client.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=client.timeout_s)
    except grpc.RpcError as exc:
        raise Unreachable(f"no answer from the appliance at {client.address}: {exc.code().name}: "
                          f"{exc.details()}") from None
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    info, info_error = None, ""
    try:
        info = client.model_info()
    except grpc.RpcError as exc:
        info_error = f"GetModelInfo: {exc.code().name}: {exc.details()}"
    metrics, metrics_error = None, ""
    if metrics_url is None:
        metrics_error = "metrics are off in this configuration ([metrics] enabled = false)"
    else:
        try:
            metrics = read_metrics(metrics_url)
        except (OSError, ValueError, KeyError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            metrics_error = f"no metrics from {metrics_url}: {reason}"
    return Status(client.address, serving, info, info_error, metrics_url, metrics, metrics_error)


def _counts(counter: Counter[str]) -> str:
    parts = [f"{name} {n}" for name, n in sorted(counter.items()) if n]
    return f" ({', '.join(parts)})" if parts else ""


def lines(s: Status) -> list[tuple[str, str]]:
    """(label, text) pairs, in the order shown."""
    out = [("appliance", f"{s.address}: {'READY' if s.serving else 'NOT READY (engine loading or stopping)'}")]
    if s.info is not None:
        i = s.info
        out.append(("model", f"{i.bundle_name} {i.bundle_version}, label bank {i.bank_version or '-'}"
                             f"{' - RESEARCH USE ONLY' if i.research_only else ''}"))
        out.append(("backend", f"{i.backend} {i.backend_version} ({i.precision})"
                               + (f": {i.backend_note}" if i.backend_note else "")))
        out.append(("mode", i.mode + (": results to admin callers only, no SR sent" if i.mode == "shadow" else "")))
    else:
        out.append(("model", s.info_error))
    m = s.metrics
    if m is None:
        out.append(("metrics", s.metrics_error))
        return out
    out.append(("queue", f"{m.queue_depth} series waiting for the engine; {m.series['receiving']} receiving, "
                         f"{m.series['complete']} complete and not yet scored"))
    out.append(("quarantine", f"{sum(m.quarantined.values())} files since start{_counts(m.quarantined)}; "
                              f"{m.series['quarantined']} series quarantined, {m.series['failed']} failed"))
    pending = Counter({d: n for (d, st), n in m.exports.items() if st == "pending"})
    failed = Counter({d: n for (d, st), n in m.exports.items() if st == "failed"})
    out.append(("SR backlog", f"{sum(pending.values())} pending{_counts(pending)}, {sum(failed.values())} failed"
                              f"{_counts(failed)}"))
    out.append(("sources", f"gRPC health and GetModelInfo at {s.address}; metrics at {s.metrics_url}"))
    return out


def show(s: Status, out: TextIO, width: int | None = None) -> None:
    for line in labelled(lines(s), terminal_width() if width is None else width):
        out.write(line.rstrip() + "\n")
