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
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from appliance.handovers import Frame, Instance, PixelRef

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_LE = "1.2.840.10008.1.2.1.99"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
FAST_SYNTAXES = frozenset({IMPLICIT_LE, EXPLICIT_LE})

# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQ_END = (0xFFFE, 0xE0DD)
_PIXEL_DATA = (0x7FE0, 0x0010)
_FIRST_READ = 16384
# No MR image has tens of megabytes of header; a file that does is damaged or hostile, and reading it would cost
# the appliance memory and time.
MAX_HEADER_BYTES = 64 << 20
# The largest instance taken, as stored or once inflated or decoded ([ingest] max_instance_mb). A classic MR image
# is well under 1 MB; an enhanced MR cine of 300 frames of 256 x 256 is about 40 MB.
DEFAULT_MAX_INSTANCE_BYTES = 128 << 20
_INFLATE_IN = 64 << 10  # compressed bytes read per step when a deflated file is measured
_INFLATE_OUT = 1 << 20  # most bytes inflated per step: what measuring a bomb costs in memory

# Every way a file can be refused: a closed set, used as the quarantine folder and the metric label.
REJECT_REASONS = frozenset({
    "not_a_file", "not_dicom", "unreadable", "corrupt", "truncated", "too_large", "not_mr", "missing_identity",
    "missing_geometry", "no_pixel_data", "unsupported_pixels", "unsupported_transfer_syntax",
    "sop_class_mismatch",  # received over C-STORE as one SOP class, the dataset says another
})


class IncompleteFile(Exception):
    """The file ends before its data does: it may still be being written. Retry once it settles."""


class RejectedFile(Exception):
    """The file can never become a usable instance. `reason` is one of REJECT_REASONS; `detail` says what is wrong
    in the reader's own words (attribute names, sizes), never quoting a value from the file: it lands in the
    quarantine note, and text values can be names or IDs."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"undeclared rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# tag -> (attribute name, kind). Kinds: "str", "strs" (multi-valued text), "float", "floats", "int", "us".
_WANTED: dict[tuple[int, int], tuple[str, str]] = {
    (0x0008, 0x0008): ("ImageType", "strs"),
    (0x0008, 0x0016): ("SOPClassUID", "str"),
    (0x0008, 0x0018): ("SOPInstanceUID", "str"),
    (0x0008, 0x0060): ("Modality", "str"),
    (0x0008, 0x0070): ("Manufacturer", "str"),
    (0x0008, 0x103E): ("SeriesDescription", "str"),
    (0x0018, 0x0050): ("SliceThickness", "float"),
    (0x0018, 0x1030): ("ProtocolName", "str"),
    (0x0018, 0x1060): ("TriggerTime", "float"),
    (0x0018, 0x1090): ("CardiacNumberOfImages", "int"),
    (0x0020, 0x000D): ("StudyInstanceUID", "str"),
    (0x0020, 0x000E): ("SeriesInstanceUID", "str"),
    (0x0020, 0x0011): ("SeriesNumber", "int"),
    (0x0020, 0x0013): ("InstanceNumber", "int"),
    (0x0020, 0x0032): ("ImagePositionPatient", "floats"),
    (0x0020, 0x0037): ("ImageOrientationPatient", "floats"),
    (0x0020, 0x0105): ("NumberOfTemporalPositions", "int"),
    (0x0020, 0x1002): ("ImagesInAcquisition", "int"),
    (0x0028, 0x0002): ("SamplesPerPixel", "us"),
    (0x0028, 0x0004): ("PhotometricInterpretation", "str"),
    (0x0028, 0x0008): ("NumberOfFrames", "int"),
    (0x0028, 0x0010): ("Rows", "us"),
    (0x0028, 0x0011): ("Columns", "us"),
    (0x0028, 0x0030): ("PixelSpacing", "floats"),
    (0x0028, 0x0100): ("BitsAllocated", "us"),
    (0x0028, 0x0101): ("BitsStored", "us"),
    (0x0028, 0x0103): ("PixelRepresentation", "us"),
    (0x0028, 0x1052): ("RescaleIntercept", "float"),
    (0x0028, 0x1053): ("RescaleSlope", "float"),
}


@dataclass(frozen=True, slots=True)
class _Header:
    values: dict[str, Any]
    transfer_syntax: str
    pixel_offset: int | None
    pixel_length: int | None


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
        with open(path, "rb") as fh:
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


def _check_inflated_size(fh: BinaryIO, start: int, max_bytes: int) -> None:
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


def _read_more(buf: bytes, fh: Any, need: int) -> bytes:
    """Extend the header buffer so that it holds at least `need` bytes, or raise IncompleteFile at end of file."""
    if need > MAX_HEADER_BYTES:
        raise RejectedFile("corrupt", f"more than {MAX_HEADER_BYTES >> 20} MB of header before Pixel Data")
    while len(buf) < need:
        chunk = fh.read(max(need - len(buf), len(buf)))
        if not chunk:
            raise IncompleteFile(f"file ends at byte {len(buf)} inside the header")
        buf += chunk
    return buf


def _read_file_meta(buf: bytes, fh: Any) -> tuple[dict[str, str], int]:
    pos = 132
    meta: dict[str, str] = {}
    while True:
        buf = _read_more(buf, fh, pos + 8)
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            return meta, pos
        vr = buf[pos + 4 : pos + 6]
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            # PS3.10 7.1: the file meta is always explicit VR. pydicom would read this element as implicit VR and
            # might then find a transfer syntax (a deflated one) that this parser did not: both must agree, so
            # that what pydicom inflates has been measured here first.
            raise RejectedFile("corrupt", "the file meta information is not in explicit VR")
        if vr in _LONG_VRS:
            buf = _read_more(buf, fh, pos + 12)
            length = struct.unpack_from("<I", buf, pos + 8)[0]
            start = pos + 12
        else:
            length = struct.unpack_from("<H", buf, pos + 6)[0]
            start = pos + 8
        if length == _UNDEFINED:
            raise RejectedFile("corrupt", "undefined length inside the file meta information")
        buf = _read_more(buf, fh, start + length)
        if elem == 0x0010:
            if "TransferSyntaxUID" in meta:
                raise RejectedFile("corrupt", "two transfer syntaxes in the file meta information")
            meta["TransferSyntaxUID"] = _text(buf[start : start + length])
        pos = start + length


def _fast_header(buf: bytes, fh: Any, pos: int, syntax: str, settled: bool) -> _Header:
    explicit = syntax == EXPLICIT_LE
    values: dict[str, Any] = {}
    while True:
        if len(buf) < pos + 8:
            try:
                buf = _read_more(buf, fh, pos + 8)
            except IncompleteFile:
                if len(buf) == pos and settled:  # a dataset that really ends here: it has no pixel data
                    return _Header(values, syntax, None, None)
                raise  # ends between elements: a writer may simply not have written the rest yet
        buf, tag, length, start = _element_header(buf, fh, pos, explicit)
        if tag == _PIXEL_DATA:
            if length == _UNDEFINED:
                raise RejectedFile("corrupt", "encapsulated pixel data in an uncompressed transfer syntax")
            return _Header(values, syntax, start, length)
        if length == _UNDEFINED:
            # PS3.5 6.2.2: the content of a UN element of undefined length is encoded in implicit VR.
            un = explicit and buf[pos + 4 : pos + 6] == b"UN"
            buf, pos = _skip_undefined(buf, fh, start, explicit and not un)
            continue
        wanted = _WANTED.get(tag)
        if wanted is not None:
            buf = _read_more(buf, fh, start + length)
            values[wanted[0]] = _decode(buf[start : start + length], wanted[1], wanted[0])
        pos = start + length
        if tag[0] > 0x7FE0:
            return _Header(values, syntax, None, None)


def _element_header(buf: bytes, fh: Any, pos: int,
                    explicit: bool) -> tuple[bytes, tuple[int, int], int, int]:
    """(buffer, tag, value length, value start) of the element at `pos`; the buffer holds at least pos + 8 bytes."""
    group, elem = struct.unpack_from("<HH", buf, pos)
    if group == 0xFFFE or not explicit:
        return buf, (group, elem), struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
    vr = buf[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        buf = _read_more(buf, fh, pos + 12)
        return buf, (group, elem), struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise RejectedFile("corrupt", f"invalid VR at byte {pos} for tag ({group:04X},{elem:04X})")
    return buf, (group, elem), struct.unpack_from("<H", buf, pos + 6)[0], pos + 8


def _skip_undefined(buf: bytes, fh: Any, pos: int, explicit: bool) -> tuple[bytes, int]:
    """Skip a sequence (or item) of undefined length; returns the position after its delimiter."""
    depth = 1
    while depth:
        buf = _read_more(buf, fh, pos + 8)
        buf, tag, length, start = _element_header(buf, fh, pos, explicit)
        if tag in (_ITEM_END, _SEQ_END):
            depth -= 1
            pos = start
        elif length == _UNDEFINED:
            depth += 1
            pos = start
        elif tag == _ITEM:
            pos = start + length  # an item of defined length: its content is skipped whole
        else:
            pos = start + length
    return buf, pos


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip("\x00 ").strip()


def _decode(raw: bytes, kind: str, name: str) -> Any:
    try:
        if kind == "us":
            return struct.unpack_from("<H", raw)[0] if len(raw) >= 2 else None
        text = _text(raw)
        if kind == "str":
            return text
        parts = [p.strip() for p in text.split("\\")]
        if kind == "strs":
            return tuple(parts)
        if not text:
            return None
        if kind == "int":
            return _int(parts[0])
        if kind == "float":
            return _finite(float(parts[0]))
        return tuple(_finite(float(p)) for p in parts)
    except (ValueError, OverflowError, struct.error) as exc:
        raise RejectedFile("corrupt", f"{name} cannot be read as a {_KIND_WORDS[kind]}") from exc


_KIND_WORDS = {"us": "16-bit integer", "str": "text", "strs": "text", "int": "integer", "float": "number",
               "floats": "list of numbers"}


def _finite(x: float) -> float:
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return x


def _int(text: str) -> int:
    """IS values (PS3.5: within a signed 32-bit range), also written "12.0" by some writers; "1e999" or "nan" is
    not a count."""
    try:
        value = int(text)
    except ValueError:
        value = int(_finite(float(text)))
    return _int_range(value)


def _to_instance(path: str, size: int, header: _Header, target: str, max_bytes: int) -> Instance:
    v = header.values
    _require_mr(v)
    rows, cols = v.get("Rows"), v.get("Columns")
    if header.pixel_offset is None or header.pixel_length is None:
        raise RejectedFile("no_pixel_data", "the file has no Pixel Data element")
    frames_n = v.get("NumberOfFrames") or 1
    if frames_n != 1:
        # Classic multi-frame MR is rare; its per-frame geometry needs pydicom's general reader.
        return _read_with_pydicom(path, size, header.transfer_syntax, target, max_bytes)
    geometry = _classic_geometry(v)
    bits = v.get("BitsAllocated")
    if bits not in (8, 16) or (v.get("SamplesPerPixel") or 1) != 1:
        raise RejectedFile("unsupported_pixels", f"BitsAllocated={bits}, SamplesPerPixel={v.get('SamplesPerPixel')}")
    if not rows or not cols:
        raise RejectedFile("missing_geometry", "Rows or Columns is missing or zero")
    expected = rows * cols * bits // 8
    if header.pixel_length < expected:
        raise RejectedFile("corrupt", f"Pixel Data holds {header.pixel_length} bytes, rows x columns need {expected}")
    if size < header.pixel_offset + expected:
        raise IncompleteFile(f"pixel data ends at {header.pixel_offset + expected}, file has {size} bytes")
    signed = v.get("PixelRepresentation") == 1
    dtype = ("<i" if signed else "<u") + str(bits // 8)
    ref = PixelRef(
        path=target,
        offset=header.pixel_offset,
        rows=rows,
        columns=cols,
        dtype=dtype,
        rescale_slope=_or(v.get("RescaleSlope"), 1.0),
        rescale_intercept=_or(v.get("RescaleIntercept"), 0.0),
    )
    frame = Frame(pixels=ref, trigger_time=v.get("TriggerTime"), **geometry)
    return _instance(v, header.transfer_syntax, (frame,), size)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _require_mr(v: dict[str, Any]) -> None:
    for key in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        if not v.get(key):
            raise RejectedFile("missing_identity", f"{key} is missing")
    modality = v.get("Modality")
    if modality != "MR":
        raise RejectedFile("not_mr", "Modality is not MR" if modality else "Modality is missing")


def _classic_geometry(v: dict[str, Any]) -> dict[str, Any]:
    ipp, iop, spacing = v.get("ImagePositionPatient"), v.get("ImageOrientationPatient"), v.get("PixelSpacing")
    missing = [name for name, value, n in (("ImagePositionPatient", ipp, 3), ("ImageOrientationPatient", iop, 6),
                                           ("PixelSpacing", spacing, 2), ("Rows", v.get("Rows"), None),
                                           ("Columns", v.get("Columns"), None))
               if not value or (n is not None and len(value) != n)]
    if missing or ipp is None or iop is None or spacing is None:
        raise RejectedFile("missing_geometry", "missing or malformed " + ", ".join(missing))
    if min(spacing) <= 0:
        raise RejectedFile("missing_geometry", "PixelSpacing is not positive")
    return {"position": tuple(ipp), "orientation": tuple(iop), "pixel_spacing": tuple(spacing)}


def _instance(v: dict[str, Any], syntax: str, frames: tuple[Frame, ...], size: int) -> Instance:
    return Instance(
        sop_instance_uid=v["SOPInstanceUID"],
        sop_class_uid=v.get("SOPClassUID") or "",
        series_uid=v["SeriesInstanceUID"],
        study_uid=v["StudyInstanceUID"],
        modality=v.get("Modality") or "",
        transfer_syntax_uid=syntax,
        frames=frames,
        instance_number=v.get("InstanceNumber"),
        manufacturer=v.get("Manufacturer") or "",
        series_description=v.get("SeriesDescription") or "",
        protocol_name=v.get("ProtocolName") or "",
        image_type=tuple(v.get("ImageType") or ()),
        slice_thickness=v.get("SliceThickness"),
        cardiac_number_of_images=v.get("CardiacNumberOfImages"),
        images_in_acquisition=v.get("ImagesInAcquisition"),
        number_of_temporal_positions=v.get("NumberOfTemporalPositions"),
        series_number=v.get("SeriesNumber"),
        size_bytes=size,
    )


# --- the general path ---------------------------------------------------------------------------------------------

def _read_with_pydicom(path: str, size: int, syntax: str, target: str, max_bytes: int) -> Instance:
    import pydicom
    from pydicom.errors import InvalidDicomError

    # Library messages are not passed on: pydicom words a bad element by quoting its bytes, which may be a name.
    try:
        ds = pydicom.dcmread(path, defer_size="64 KB")
    except InvalidDicomError as exc:
        raise RejectedFile("not_dicom", "pydicom does not recognise the file as DICOM") from exc
    except EOFError as exc:
        raise IncompleteFile("the dataset ends early") from exc
    except Exception as exc:  # pydicom raises many kinds for a damaged file; all mean the same here
        raise RejectedFile("corrupt", f"pydicom cannot parse the dataset ({type(exc).__name__})") from exc
    try:
        return _from_dataset(ds, path, size, syntax, target, max_bytes)
    except (RejectedFile, IncompleteFile):
        raise
    except Exception as exc:
        # element can raise almost anything then (NotImplementedError for an unknown VR, BytesLengthException for
        # an odd-length US, OverflowError for an IS of "inf"); each means the file cannot be used as it is.
        raise RejectedFile("corrupt", f"an element cannot be read ({type(exc).__name__})") from exc


def _from_dataset(ds: Any, path: str, size: int, syntax: str, target: str, max_bytes: int) -> Instance:
    values = {}
    for name, _ in _WANTED.values():
        try:
            values[name] = _ds_value(ds, name)
        except (ValueError, TypeError, OverflowError) as exc:
            raise RejectedFile("corrupt", f"{name} cannot be read") from exc
    _require_mr(values)
    if "PixelData" not in ds:
        raise RejectedFile("no_pixel_data", "the file has no Pixel Data element")
    if not _decodable(syntax):
        raise RejectedFile("unsupported_transfer_syntax", f"no pixel decoder available for {_syntax_name(syntax)}")
    n_frames = values.get("NumberOfFrames") or 1
    if n_frames < 1:
        raise RejectedFile("corrupt", "NumberOfFrames is not positive")
    rows, cols = values.get("Rows"), values.get("Columns")
    if not rows or not cols:
        raise RejectedFile("missing_geometry", "Rows/Columns missing")
    bits = values.get("BitsAllocated") or 16
    samples = values.get("SamplesPerPixel") or 1
    decoded = rows * cols * n_frames * max(samples, 1) * max(bits // 8, 1)
    if decoded > max_bytes:
        # Compressed pixels can decode to far more than the file holds: judged by what they would decode to.
        raise RejectedFile("too_large", f"the pixels decode to {decoded} bytes, more than the limit of {max_bytes}")
    dtype = ("<i" if values.get("PixelRepresentation") == 1 else "<u") + str(max(bits // 8, 1))
    slope, intercept = _or(values.get("RescaleSlope"), 1.0), _or(values.get("RescaleIntercept"), 0.0)
    if n_frames == 1:
        geometry = _classic_geometry(values)
        ref = PixelRef(target, -1, rows, cols, dtype, 0, 1, True, slope, intercept)
        frames: tuple[Frame, ...] = (Frame(pixels=ref, trigger_time=values.get("TriggerTime"), **geometry),)
    else:
        frames = _enhanced_frames(ds, target, rows, cols, dtype, n_frames, slope, intercept)
    return _instance(values, syntax, frames, size)


def _syntax_name(syntax: str) -> str:
    """The transfer syntax's registered name; never the UID text itself, which comes from the file."""
    from pydicom.uid import UID

    uid = UID(syntax)
    return uid.name if uid.is_transfer_syntax else "an unknown transfer syntax"


def _ds_value(ds: Any, name: str) -> Any:
    value = ds.get(name)
    if value is None or value == "":
        return None
    if name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        return tuple(_finite(float(x)) for x in value)
    if name == "ImageType":
        return tuple(str(x) for x in value)
    if name in ("TriggerTime", "SliceThickness", "RescaleSlope", "RescaleIntercept"):
        return _finite(float(value))
    if name in ("CardiacNumberOfImages", "SeriesNumber", "InstanceNumber", "NumberOfTemporalPositions",
                "ImagesInAcquisition", "NumberOfFrames", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated",
                "BitsStored", "PixelRepresentation"):
        return _int(str(value)) if isinstance(value, str) else _int_range(int(value))
    return str(value)


def _int_range(value: int) -> int:
    if not -(2**31) <= value < 2**31:
        raise ValueError("outside the range of an IS value")
    return value


def _decodable(syntax: str) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return get_decoder(syntax).is_available
    except (NotImplementedError, ValueError, KeyError):
        return False


def _enhanced_frames(ds: Any, path: str, rows: int, cols: int, dtype: str, n: int, slope: float,
                     intercept: float) -> tuple[Frame, ...]:
    """Per-frame geometry from an enhanced multi-frame file's functional groups (shared, then per-frame)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != n:
        raise RejectedFile("missing_geometry", f"{len(per_frame)} per-frame groups for {n} frames")

    def group_value(item: Any, seq: str, attr: str) -> Any:
        for source in (item, shared):
            if source is not None and seq in source and source[seq].value:
                value = source[seq][0].get(attr)
                if value is not None:
                    return value
        return None

    frames = []
    for index, item in enumerate(per_frame):
        ipp = group_value(item, "PlanePositionSequence", "ImagePositionPatient")
        iop = group_value(item, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = group_value(item, "PixelMeasuresSequence", "PixelSpacing")
        if ipp is None or iop is None or spacing is None:
            raise RejectedFile("missing_geometry", f"frame {index + 1} lacks position, orientation or spacing")
        trigger = group_value(item, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")
        ref = PixelRef(path, -1, rows, cols, dtype, index, n, True, slope, intercept)
        try:
            geometry = _classic_geometry({"ImagePositionPatient": tuple(_finite(float(x)) for x in ipp),
                                          "ImageOrientationPatient": tuple(_finite(float(x)) for x in iop),
                                          "PixelSpacing": tuple(_finite(float(x)) for x in spacing),
                                          "Rows": rows, "Columns": cols})
            frames.append(Frame(pixels=ref, trigger_time=None if trigger is None else _finite(float(trigger)),
                                **geometry))
        except (ValueError, TypeError, OverflowError) as exc:
            raise RejectedFile("corrupt", f"frame {index + 1}: unreadable geometry") from exc
        except RejectedFile as exc:
            raise RejectedFile(exc.reason, f"frame {index + 1}: {exc.detail}") from exc
    return tuple(frames)
