"""Results back to PACS: each scored series becomes a DICOM SR (TID 1500 by default) in the source study, queued in the
database and delivered to each configured destination (C-STORE to a PACS, a folder, ...).

source.py captures what the SR copies from the images (patient and study modules, instance references) while the
images are still in the spool; sr.py builds the document; destinations/ holds one module per destination kind,
behind one protocol and a registry; outbox.py is the thread that works the persistent queue with bounded retries.

Importing this package costs nothing: highdicom (~30 MB) and pynetdicom load in `build_exporter`, and only where
`[export]` names a destination.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.config import ConfigError, Settings

if TYPE_CHECKING:
    from appliance.export.outbox import Exporter
    from appliance.metrics import Metrics
    from appliance.store import Store

__all__ = ["build_exporter"]

log = logging.getLogger(__name__)


def build_exporter(settings: Settings, store: Store, metrics: Metrics) -> Exporter | None:
    """The SR exporter of these settings, its destinations built and checked, not started; None where export is
    off, and in shadow mode (appliance.mode: nothing is sent to PACS then, not even what an earlier assist run left
    queued; it waits for the switch back). ConfigError, naming the setting, where a destination cannot work as
    configured."""
    e = settings.export
    if not e.enabled or settings.appliance.shadow:
        return None
    from appliance.export.destinations import build_destinations
    from appliance.export.outbox import Exporter, RetryPolicy
    from appliance.export.sr import SrSettings

    try:
        destinations = build_destinations(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for kind, destination in destinations.items():
        attach = getattr(destination, "attach", None)
        if attach is not None:
            attach(store, metrics)
        try:
            destination.check()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        except OSError as exc:
            raise ConfigError(f"export destination {kind!r} cannot be used: {exc}") from None
    if e.pacs_commitment and not settings.dicom.enabled:
        log.warning("export.pacs_commitment without [dicom] enabled: only a PACS that reports on the association "
                    "it was asked on can commit an SR (Orthanc, for one, reports on a new association)")
    return Exporter(store, metrics, RetryPolicy(e.max_attempts, e.retry_initial_s, e.retry_max_s),
                    SrSettings(series_number=e.series_number, institution_name=e.institution_name,
                               template=e.sr_template),
                    destinations, keep_failed_days=e.keep_failed_days)
