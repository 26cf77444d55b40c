"""Where SRs go: every destination is one module with a factory, registered under its kind.

The queue (`exports` table) holds one item per series and destination kind; the Exporter hands each destination its
due SRs as one batch and counts the outcomes. A destination knows only how to deliver documents:

    @register("pacs", hint="export.pacs_ae_title")   # the setting that turns it on, named when it is off
    def from_settings(settings: Settings) -> PacsSender | None: ...   # None: not configured

`build_destinations` makes the ones `[export]` names. Adding one: a module here, its name in BUILTIN.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from appliance.config import Settings
from appliance.handovers import StoredReport

BUILTIN = ("pacs", "folder", "stowrs")  # modules of this package, imported below so that they register


@dataclass(frozen=True, slots=True)
class SendOutcome:
    delivered: bool
    detail: str = ""  # why not, or the warning status when delivered with one; never patient values
    tried: bool = True  # False: never left the appliance (shutdown), so it costs no try
    # True: refused for good (the peer read the document and will answer the same to the same bytes): failed now,
    # not after export.max_attempts; `scanside exports retry` queues it again
    final: bool = False
    # Set: the try is not decided yet (stored, its storage commitment report not yet in): the item waits until
    # then, or until the destination's confirmation makes it due, and the try is counted when it is decided.
    awaiting_until: float | None = None


class Destination(Protocol):
    kind: str  # its registry key, as stored in exports.destination and used as the metrics label

    def check(self) -> None:
        """At start-up: raise ValueError or OSError, naming the setting to fix, if it cannot work as configured
        (a certificate that does not load, a folder path that is a file). May prepare (create its folder)."""

    def deliver(self, reports: Sequence[StoredReport]) -> list[SendOutcome]:
        """Deliver a batch; one outcome per report, in order. Should not raise (the Exporter counts an exception
        as a failed try of the whole batch). tried=False for what was left untried because of abort()."""

    def abort(self) -> None:
        """Shutdown, from another thread: end a delivery in progress, refuse further ones."""


# A destination that keeps state of its own in the database (the PACS with storage commitment) also has
# `attach(store, metrics)`, which build_exporter calls before check().


Factory = Callable[[Settings], "Destination | None"]  # None: not configured in these settings
F = TypeVar("F", bound=Factory)

FACTORIES: dict[str, Factory] = {}
HINTS: dict[str, str] = {}  # kind -> the setting that configures it


def register(kind: str, hint: str = "") -> Callable[[F], F]:
    """Decorate a destination's factory: `@register("stow", hint="export.stow_url")`."""

    def add(factory: F) -> F:
        if kind in FACTORIES:
            raise ValueError(f"export destination {kind!r} is registered twice")
        FACTORIES[kind] = factory
        HINTS[kind] = hint
        return factory

    return add


def not_configured(kind: str) -> SendOutcome:
    """The failed try of an item whose destination is not built (the configuration changed since it was queued)."""
    if kind not in FACTORIES:
        return SendOutcome(False, f"no destination {kind!r} is known (known: {', '.join(sorted(FACTORIES))})")
    hint = HINTS.get(kind)
    return SendOutcome(False, f"destination {kind!r} is not configured" + (f" ({hint})" if hint else ""))


def build_destinations(settings: Settings, kinds: Iterable[str] | None = None) -> dict[str, Destination]:
    """The configured destinations among `kinds` (default: the ones `[export]` names), not yet checked."""
    built: dict[str, Destination] = {}
    for kind in settings.export.destinations if kinds is None else kinds:
        factory = FACTORIES.get(kind)
        if factory is None:
            raise ValueError(f"export destination {kind!r} is not known (known: {', '.join(sorted(FACTORIES))})")
        destination = factory(settings)
        if destination is not None:
            built[kind] = destination
    return built


for _module in BUILTIN:
    importlib.import_module(f"{__name__}.{_module}")
