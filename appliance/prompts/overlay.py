"""The site's label-bank overlay: prompt edits kept in the data folder, never in the shipped bundle.

    <data_dir>/label_bank/
      edits.jsonl        append-only: one JSON object per edit (who, when, what, previous and new version)
      banks/<hash>.json  every effective bank an edit made, by content hash (immutable; what `revert` returns to)
      current.json       the effective bank now in force, with its version (replaced atomically; the one file the
                         running appliance stats before scoring)

An edit writes its bank under banks/, then appends its log line (fsynced), then replaces current.json, so a crash
at any point loses nothing: a log line whose current.json was never written is rolled forward on the next read.

A bank version is the first 12 hex digits of the SHA-256 of the effective bank's canonical JSON; an edit's version
adds its sequence number (``3f9a0c1d2e4b.4``). The shipped bank's version is its hash alone. An overlay made on
another shipped bank (the bundle was replaced) is not applied: the shipped bank scores, and the next edit starts
from it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.bundle import BundleError, LabelBank
from appliance.fileio import sync_folder, write_bytes_atomic

log = logging.getLogger(__name__)

FORMAT = "scanside-bank-overlay/1"
LOG_NAME = "edits.jsonl"
CURRENT_NAME = "current.json"
ACTIONS = ("add_prompt", "add_finding", "remove_prompt", "remove_finding", "revert")


class OverlayError(ValueError):
    """The overlay cannot do what was asked (an unknown version, a damaged file); the message says which."""


def overlay_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "label_bank"


def version_of(bank_hash: str, seq: int) -> str:
    return bank_hash if seq == 0 else f"{bank_hash}.{seq}"


@dataclass(frozen=True)
class EditRecord:
    """One line of edits.jsonl."""

    seq: int
    at: str  # UTC, ISO 8601
    by: str
    action: str  # one of ACTIONS
    finding: str
    prompt: str | None
    previous: str  # bank version before the edit
    version: str  # bank version after it
    base: str  # hash of the shipped bank the edit was made on
    note: str = ""

    @property
    def bank_hash(self) -> str:
        return self.version.split(".", 1)[0]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditRecord:
        return cls(seq=int(data["seq"]), at=str(data["at"]), by=str(data["by"]), action=str(data["action"]),
                   finding=str(data.get("finding", "")), prompt=data.get("prompt"), previous=str(data["previous"]),
                   version=str(data["version"]), base=str(data["base"]), note=str(data.get("note", "")))


@dataclass(frozen=True, eq=False)
class Effective:
    """The bank in force: the shipped one, or the overlay's latest edit made on it."""

    bank: LabelBank
    version: str
    seq: int
    stale_overlay: bool = False  # the overlay was made on another shipped bank and is not applied


class Overlay:
    def __init__(self, folder: Path, shipped: LabelBank) -> None:
        self.folder = Path(folder)
        self.shipped = shipped
        self.log_path = self.folder / LOG_NAME
        self.current_path = self.folder / CURRENT_NAME
        self.banks = self.folder / "banks"

    # --- reading -----------------------------------------------------------------------------------------------

    def entries(self) -> list[EditRecord]:
        """Every edit, oldest first. A last line cut short by a crash mid-append is not an edit and is skipped."""
        try:
            lines = self.log_path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(EditRecord.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                if n == len(lines) - 1:  # torn final line: the edit never completed
                    continue
                raise OverlayError(f"{self.log_path} line {n + 1} is damaged ({exc}); the edit history cannot be "
                                   "read") from None
        return out

    def _read_current(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.current_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise OverlayError(f"{self.current_path} cannot be read: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise OverlayError(f"{self.current_path} is not a {FORMAT} file")
        return data

    def stored_bank(self, bank_hash: str) -> LabelBank:
        if bank_hash == self.shipped.content_hash:
            return self.shipped
        path = self.banks / f"{bank_hash}.json"
        try:
            bank = LabelBank.from_json(path.read_bytes())
        except FileNotFoundError:
            raise OverlayError(f"the bank of version {bank_hash} is missing ({path})") from None
        if bank.content_hash != bank_hash:
            raise OverlayError(f"{path} does not hold bank {bank_hash} (its content hashes to {bank.content_hash})")
        return bank

    def current(self) -> Effective:
        """The effective bank: the shipped bank plus this site's edits made on it."""
        shipped_hash = self.shipped.content_hash
        data = self._read_current()
        entries = self.entries()
        last = entries[-1] if entries else None
        if last is not None and (data is None or int(data.get("seq", 0)) < last.seq):
            if last.base != shipped_hash:
                return Effective(self.shipped, shipped_hash, 0, stale_overlay=True)
            # The last edit's log line is on disk but its current.json was never written: roll forward.
            return Effective(self.stored_bank(last.bank_hash), last.version, last.seq)
        if data is None:
            return Effective(self.shipped, shipped_hash, 0, stale_overlay=False)
        if data.get("base") != shipped_hash:
            return Effective(self.shipped, shipped_hash, 0, stale_overlay=True)
        try:
            bank = LabelBank.from_dict(data["bank"])
        except (BundleError, KeyError) as exc:
            raise OverlayError(f"{self.current_path} holds no usable label bank: {exc}") from None
        version, seq = str(data["version"]), int(data["seq"])
        if version != version_of(bank.content_hash, seq):
            raise OverlayError(f"{self.current_path} says version {version} but holds bank {bank.content_hash}")
        return Effective(bank, version, seq)

    def resolve(self, wanted: str) -> tuple[str, LabelBank]:
        """A version as `prompts history` shows it (or its sequence number, or the shipped bank's hash) ->
        (version, bank)."""
        shipped_hash = self.shipped.content_hash
        wanted = wanted.strip()
        if wanted in (shipped_hash, "0", "shipped"):
            return shipped_hash, self.shipped
        for e in reversed(self.entries()):
            if wanted in (e.version, str(e.seq)):
                if e.base != shipped_hash:
                    raise OverlayError(f"version {e.version} was made on another shipped bank ({e.base}), not on "
                                       f"this bundle's ({shipped_hash}); it cannot be returned to")
                return e.version, self.stored_bank(e.bank_hash)
        raise OverlayError(f"no bank version {wanted!r}; `scanside prompts history` lists them")

    # --- writing -----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One edit at a time (two technologists, two terminals)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def record(self, before: Effective, bank: LabelBank, action: str, finding: str, prompt: str | None, by: str,
               note: str = "") -> EditRecord:
        """Append one edit that turns `before` (read under `locked()`) into `bank`; returns its log record."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        entries = self.entries()
        seq = max((e.seq for e in entries), default=0) + 1
        bank_hash = bank.content_hash
        record = EditRecord(seq=seq, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), by=by, action=action,
                            finding=finding, prompt=prompt, previous=before.version,
                            version=version_of(bank_hash, seq), base=self.shipped.content_hash, note=note)
        if bank_hash != self.shipped.content_hash:
            path = self.banks / f"{bank_hash}.json"
            if not path.exists():
                write_bytes_atomic(path, bank.to_json().encode("utf-8"), mode=0o640, durable=True)
        self._append(record)
        current = {"format": FORMAT, "version": record.version, "seq": seq, "base": record.base,
                   "bank": bank.to_dict()}
        write_bytes_atomic(self.current_path, (json.dumps(current) + "\n").encode("utf-8"), mode=0o640,
                           durable=True)
        return record

    def _append(self, record: EditRecord) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(asdict(record), ensure_ascii=False) + "\n").encode("utf-8")
        created = not self.log_path.exists()
        fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A line cut short by a crash: it never became an edit, and the next one must start on its own line.
                data = os.pread(fd, size, 0)
                os.ftruncate(fd, data.rfind(b"\n") + 1)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            sync_folder(self.folder)


class LiveBank:
    """The bank the running appliance scores with. `get()` stats current.json (one system call) and, when it
    changed, loads the new effective bank and swaps it in whole; a bank that cannot be used is logged and the one in
    force keeps scoring."""

    def __init__(self, overlay: Overlay, dim: int) -> None:
        self.overlay = overlay
        self.dim = dim
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        effective = self._load(initial=True)
        self._state: tuple[LabelBank, str] = (effective.bank, effective.version)

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.overlay.current_path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, initial: bool = False) -> Effective:
        self._seen = self._stamp()
        try:
            effective = self.overlay.current()
            if effective.bank.dim != self.dim:
                raise OverlayError(f"the edited bank is {effective.bank.dim}-dimensional, the encoder outputs "
                                   f"{self.dim}")
        except (OverlayError, BundleError, OSError) as exc:
            if not initial:
                raise
            log.error("site label bank not used, scoring with the shipped bank: %s", exc)
            return Effective(self.overlay.shipped, self.overlay.shipped.content_hash, 0)
        if effective.stale_overlay:
            log.warning("the site's prompt edits were made on another shipped label bank and are not applied; "
                        "scoring with the shipped bank %s", effective.version)
        return effective

    def get(self) -> tuple[LabelBank, str]:
        """(bank, version) now in force; cheap when nothing changed."""
        try:
            stamp = self._stamp()
        except OSError:
            return self._state
        if stamp == self._seen:
            return self._state
        with self._lock:
            if self._stamp() != self._seen:
                try:
                    effective = self._load()
                except (OverlayError, BundleError, OSError) as exc:
                    log.error("edited label bank not taken up, %s keeps scoring: %s", self._state[1], exc)
                    return self._state
                if effective.version != self._state[1]:
                    log.info("label bank %s now scoring (%d findings)", effective.version,
                             len(effective.bank.findings))
                self._state = (effective.bank, effective.version)
        return self._state
