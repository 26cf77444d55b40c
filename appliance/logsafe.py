"""Describing an exception for a log line without its message: messages of OS and parser errors carry file paths
and values, and paths in a scanner's export folder are often patient names."""

from __future__ import annotations

import os
import traceback


def describe(exc: BaseException) -> str:
    """`TypeName at module.py:123 (function)` for the innermost frame: enough to find the bug, nothing about whom."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {os.path.basename(last.filename)}:{last.lineno} ({last.name})"
