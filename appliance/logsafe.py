"""Describing an exception for a log line without its message: messages of OS and parser errors carry file paths
and values, and paths in a scanner's export folder are often patient names."""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from typing import Any


def describe(exc: BaseException) -> str:
    """`TypeName at module.py:123 (function)` for the innermost frame: enough to find the bug, nothing about whom."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {os.path.basename(last.filename)}:{last.lineno} ({last.name})"


def withhold_warning_texts() -> None:
    """Route Python warnings to the log as category and place only. Libraries word warnings with the values they
    choke on (pydicom: "Invalid value for VR DA: '1980-01-01'"; highdicom quotes odd patient names), and a warning
    printed to stderr lands in the journal like any log line."""
    import logging
    import warnings

    log = logging.getLogger("scanside.warnings")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        log.warning("%s from %s:%d (text withheld: it may quote data)", category.__name__,
                    os.path.basename(filename), lineno)

    warnings.showwarning = show


def silence_value_echoes() -> None:
    """pydicom checks values as it reads and writes them and reports a bad one by quoting it, through its logger
    and as a warning ("Invalid value for VR DA: '1980-01-01'": a birth date). The appliance copes with odd values
    where it uses them, so the check is switched off for the process, and with it the echo. pynetdicom's DEBUG
    output is held back for the same reason."""
    import logging

    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    # At DEBUG pynetdicom prints every message's UIDs (each received image's SOP Instance UID): never below INFO.
    net = logging.getLogger("pynetdicom")
    net.setLevel(max(net.getEffectiveLevel(), logging.INFO))


class RateLimitedLog:
    """At most one line per key every `seconds`: refusals of a flood (junk connections, denied calls) are counted
    by metrics one by one, and must not flood the journal as well."""

    def __init__(self, logger: logging.Logger, seconds: float = 10.0) -> None:
        self.logger = logger
        self.seconds = seconds
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e18) < self.seconds:
                return
            self._last[key] = now
        self.logger.warning(message, *args)
