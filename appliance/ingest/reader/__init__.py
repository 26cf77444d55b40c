"""Reading one DICOM file into an `Instance`, once, on arrival.

Two readers sit behind `read_instance`:

* a narrow fast path for the uncompressed little-endian files that scanners write for cine MR (implicit and explicit
  VR). It walks the top-level elements once, decodes only the ~30 attributes the pipeline uses, skips everything
  else (including private sequences of undefined length) and stops at Pixel Data, recording its byte offset so the
  pixels can be read later without parsing again. pydicom's general reader costs ~0.2 ms per header here, which
  alone would use the whole ingest budget (3x a `dcmread` + `pixel_array` loop); this path costs ~0.03 ms.
* pydicom for everything else (big endian, deflated, encapsulated/compressed, enhanced multi-frame). Its pixels are
  decoded by pydicom at preprocessing time.

The fast path is cross-checked against pydicom in the tests for every synthetic vendor profile.
"""

from __future__ import annotations

import os
import stat
import zlib

from appliance.handovers import Instance
from appliance.ingest.reader.errors import (
    _INFLATE_IN,
    _INFLATE_OUT,
    DEFAULT_MAX_INSTANCE_BYTES,
    DEFLATED_EXPLICIT_LE,
    ENHANCED_MR_IMAGE_STORAGE,
    EXPLICIT_LE,
    FAST_SYNTAXES,
    IMPLICIT_LE,
    MAX_HEADER_BYTES,
    MR_IMAGE_STORAGE,
    REJECT_REASONS,
    IncompleteFile,
    RejectedFile,
)
from appliance.ingest.reader.fast import _FIRST_READ, _fast_header, _read_file_meta
from appliance.ingest.reader.fields import _to_instance
from appliance.ingest.reader.general import _read_with_pydicom


def read_instance(path: str | os.PathLike[str], pixel_path: str | os.PathLike[str] | None = None,
                  settled: bool = False, max_bytes: int = DEFAULT_MAX_INSTANCE_BYTES) -> Instance:
    """Parse one file. Raises IncompleteFile (retry later) or RejectedFile (quarantine); nothing else for any
    content of the file (OSError only for the file vanishing: FileNotFoundError).

    `pixel_path` is where the file will lie once accepted (the spool); the PixelRefs point there. A file whose
    bytes end before Pixel Data may still be growing, so it is IncompleteFile unless `settled` (it has stopped
    changing), when it is judged as it is. `max_bytes` bounds the instance as stored, as inflated (deflated
    transfer syntax, measured in bounded steps before anything inflates it whole) and as its pixels decode.
    """
    path = os.fspath(path)
    target = path if pixel_path is None else os.fspath(pixel_path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            # A FIFO or device would block open() or never end; only regular files are images.
            raise RejectedFile("not_a_file", "not a regular file")
        size = st.st_size
        if size > max_bytes:
            raise RejectedFile("too_large", f"{size} bytes on disk, more than the limit of {max_bytes}")
        fd = os.open(path, os.O_RDONLY)
        try:
            fh = _Fd(fd)
            head = fh.read(_FIRST_READ)
            if len(head) < 132:
                if settled:
                    raise RejectedFile("not_dicom", f"{len(head)} bytes: shorter than a DICOM preamble")
                # Too short to tell: a file still being written looks exactly like this.
                raise IncompleteFile(f"only {len(head)} bytes so far")
            if head[128:132] != b"DICM":
                raise RejectedFile("not_dicom", "no DICM prefix after the 128-byte preamble")
            meta, pos = _read_file_meta(head, fh)
            syntax = meta.get("TransferSyntaxUID", "")
            if syntax in FAST_SYNTAXES:
                header = _fast_header(head, fh, pos, syntax, settled)
            else:
                header = None
                if syntax == DEFLATED_EXPLICIT_LE:
                    _check_inflated_size(fh, pos, max_bytes)
        finally:
            os.close(fd)
    except (IncompleteFile, RejectedFile):
        raise
    except FileNotFoundError:
        raise
    except OSError as exc:
        # strerror only: str(exc) carries the path, and folder names can be patient names.
        raise RejectedFile("unreadable", exc.strerror or type(exc).__name__) from exc
    if header is None:
        return _read_with_pydicom(path, size, syntax, target, max_bytes)
    return _to_instance(path, size, header, target, max_bytes)


class _Fd:
    """The file as `read(n)` and `seek(pos)` on its descriptor: what the header walk needs of a file, without the
    buffered file object open() builds (a few microseconds a file, with thousands of files a second)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def seek(self, pos: int) -> None:
        os.lseek(self.fd, pos, os.SEEK_SET)


def _check_inflated_size(fh: _Fd, start: int, max_bytes: int) -> None:
    """Inflate the dataset of a deflated file in bounded steps, counting and discarding, so that a few megabytes
    that inflate to gigabytes are refused at the cost of ~1 MB of memory instead of being inflated whole (which
    is what pydicom does when it reads one)."""
    fh.seek(start)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # PS3.5 A.5: raw deflate, no zlib header
    total = 0
    pending, file_ended = b"", False
    try:
        while not inflater.eof:
            if not pending:
                pending = fh.read(_INFLATE_IN)
                file_ended = not pending
            # Once the input is used up, zlib may still hold output it could not return within the step's bound:
            # b"" asks for it, and no output then means the stream really ends here.
            out = inflater.decompress(pending, _INFLATE_OUT)
            pending = inflater.unconsumed_tail
            total += len(out)
            if total > max_bytes:
                raise RejectedFile("too_large", f"the deflated dataset inflates to more than {max_bytes} bytes")
            if file_ended and not out and not pending:
                break
    except zlib.error as exc:
        raise RejectedFile("corrupt", "the deflated dataset is not a valid deflate stream") from exc
    if not inflater.eof:
        raise IncompleteFile(f"the deflate stream ends early (after {total} inflated bytes)")


__all__ = ["DEFAULT_MAX_INSTANCE_BYTES", "DEFLATED_EXPLICIT_LE", "ENHANCED_MR_IMAGE_STORAGE", "EXPLICIT_LE",
           "FAST_SYNTAXES", "IMPLICIT_LE", "MAX_HEADER_BYTES", "MR_IMAGE_STORAGE", "REJECT_REASONS", "IncompleteFile",
           "RejectedFile", "read_instance"]
