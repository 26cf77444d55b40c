"""Reading a JSON file that a person or another program wrote, with errors that say which file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path, error: type[Exception], what: str) -> Any:
    """The parsed content of `path`; `error(...)` naming `what` if it is missing, unreadable or not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
