"""The fast path: the top-level elements of an uncompressed little-endian file walked once, the ~30 attributes
the pipeline uses decoded, everything else skipped, stopping at Pixel Data."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from appliance.ingest.reader.errors import EXPLICIT_LE, MAX_HEADER_BYTES, IncompleteFile, RejectedFile

# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQ_END = (0xFFFE, 0xE0DD)
_PIXEL_DATA = (0x7FE0, 0x0010)
_PIXEL_DATA_KEY = 0x7FE0 << 16 | 0x0010
_FIRST_READ = 16384
# What an explicit-VR element header reads as (group, element, VR, 2-byte length), and an implicit one (group,
# element, 4-byte length); any two capital letters pass as a VR, as in _element_header.
_EXPLICIT_HEAD = struct.Struct("<HH2sH").unpack_from
_IMPLICIT_HEAD = struct.Struct("<HHI").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U16 = struct.Struct("<H").unpack_from
_VALID_VRS = frozenset(bytes((a, b)) for a in range(65, 91) for b in range(65, 91))


# tag -> (attribute name, kind). Kinds: "str", "strs" (multi-valued text), "float", "floats", "int", "us".
_WANTED: dict[tuple[int, int], tuple[str, str]] = {
    (0x0008, 0x0008): ("ImageType", "strs"),
    (0x0008, 0x0016): ("SOPClassUID", "str"),
    (0x0008, 0x0018): ("SOPInstanceUID", "str"),
    (0x0008, 0x0050): ("AccessionNumber", "str"),
    (0x0008, 0x0060): ("Modality", "str"),
    (0x0008, 0x0070): ("Manufacturer", "str"),
    (0x0008, 0x1010): ("StationName", "str"),
    (0x0008, 0x0005): ("SpecificCharacterSet", "str"),
    (0x0010, 0x0010): ("PatientName", "str"),
    (0x0010, 0x0020): ("PatientID", "str"),
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


# The same, keyed by the tag as one int (group << 16 | element), as the walk computes it.
_WANTED_BY_KEY: dict[int, tuple[str, str]] = {group << 16 | elem: v for (group, elem), v in _WANTED.items()}


@dataclass(frozen=True, slots=True)
class _Header:
    values: dict[str, Any]
    transfer_syntax: str
    pixel_offset: int | None
    pixel_length: int | None



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
        if len(buf) < pos + 8:  # _read_more only where it reads (or refuses): it is called for every file
            buf = _read_more(buf, fh, pos + 8)
        group, elem, vr, length = _EXPLICIT_HEAD(buf, pos)
        if group != 0x0002:
            return meta, pos
        if vr not in _VALID_VRS:
            # PS3.10 7.1: the file meta is always explicit VR. pydicom would read this element as implicit VR and
            # might then find a transfer syntax (a deflated one) that this parser did not: both must agree, so
            # that what pydicom inflates has been measured here first.
            raise RejectedFile("corrupt", "the file meta information is not in explicit VR")
        if vr in _LONG_VRS:
            if len(buf) < pos + 12:
                buf = _read_more(buf, fh, pos + 12)
            length = _U32(buf, pos + 8)[0]
            start = pos + 12
        else:
            start = pos + 8
        if length == _UNDEFINED:
            raise RejectedFile("corrupt", "undefined length inside the file meta information")
        end = start + length
        if len(buf) < end or end > MAX_HEADER_BYTES:
            buf = _read_more(buf, fh, end)
        if elem == 0x0010:
            if "TransferSyntaxUID" in meta:
                raise RejectedFile("corrupt", "two transfer syntaxes in the file meta information")
            meta["TransferSyntaxUID"] = _text(buf[start:end])
        pos = end


def _fast_header(buf: bytes, fh: Any, pos: int, syntax: str, settled: bool) -> _Header:
    # The loop every file of a burst runs ~70 times: one struct call per element, tags as one int, the checks
    # _element_header makes written inline (the same answers: the fuzz tests and the pydicom cross-check hold it).
    explicit = syntax == EXPLICIT_LE
    values: dict[str, Any] = {}
    wanted_of = _WANTED_BY_KEY.get
    long_vrs, valid_vrs = _LONG_VRS, _VALID_VRS
    explicit_head, implicit_head, u32 = _EXPLICIT_HEAD, _IMPLICIT_HEAD, _U32
    vr = b""
    while True:
        if len(buf) < pos + 8:
            more = _next_element_or_end(buf, fh, pos, settled)
            if more is None:
                return _Header(values, syntax, None, None)
            buf = more
        if explicit:
            group, elem, vr, length = explicit_head(buf, pos)
            if group == 0xFFFE:
                length = u32(buf, pos + 4)[0]
                start = pos + 8
            elif vr in long_vrs:
                if len(buf) < pos + 12:
                    buf = _read_more(buf, fh, pos + 12)
                length = u32(buf, pos + 8)[0]
                start = pos + 12
            elif vr in valid_vrs:
                start = pos + 8
            else:
                raise RejectedFile("corrupt", f"invalid VR at byte {pos} for tag ({group:04X},{elem:04X})")
        else:
            group, elem, length = implicit_head(buf, pos)
            start = pos + 8
        key = group << 16 | elem
        if length == _UNDEFINED:
            if key == _PIXEL_DATA_KEY:
                raise RejectedFile("corrupt", "encapsulated pixel data in an uncompressed transfer syntax")
            # PS3.5 6.2.2: the content of a UN element of undefined length is encoded in implicit VR.
            un = explicit and vr == b"UN"
            buf, pos = _skip_undefined(buf, fh, start, explicit and not un)
            continue
        if key == _PIXEL_DATA_KEY:
            return _Header(values, syntax, start, length)
        wanted = wanted_of(key)
        pos = start + length
        if wanted is not None:
            if len(buf) < pos or pos > MAX_HEADER_BYTES:
                buf = _read_more(buf, fh, pos)
            values[wanted[0]] = _decode(buf[start:pos], wanted[1], wanted[0])
        if group > 0x7FE0:
            return _Header(values, syntax, None, None)


def _next_element_or_end(buf: bytes, fh: Any, pos: int, settled: bool) -> bytes | None:
    """The buffer holding the next element's header, or None where a settled dataset really ends at `pos` (it has
    no pixel data); IncompleteFile where it ends inside an element (a writer may not have written the rest yet)."""
    try:
        return _read_more(buf, fh, pos + 8)
    except IncompleteFile:
        if len(buf) == pos and settled:
            return None
        raise


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
    if vr not in _VALID_VRS:
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


# Decoded numbers and multi-valued text by their bytes: a series repeats most of them from file to file (its
# orientation and spacing, a slice's position over its phases, a phase's trigger time over the slices, the image
# type), and splitting and converting them was a third of a header's walk. Text values are not kept here: names,
# IDs and accession numbers must not outlive the series that carried them. Bounded, emptied when full.
_DECODED: dict[tuple[bytes, str], Any] = {}
_DECODED_MAX = 4096


def _decode(raw: bytes, kind: str, name: str) -> Any:
    if kind == "str":  # most of the wanted values: _text, written inline (it cannot fail)
        return raw.decode("latin-1").rstrip("\x00 ").strip()
    key = (raw, kind)
    value = _DECODED.get(key, _MISSING)
    if value is _MISSING:
        value = _decode_value(raw, kind, name)  # raises for an unreadable value: nothing is kept
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[key] = value
    return value


_MISSING = object()


def _decode_value(raw: bytes, kind: str, name: str) -> Any:
    try:
        if kind == "us":
            return _U16(raw)[0] if len(raw) >= 2 else None
        text = _text(raw)
        parts = [p.strip() for p in text.split("\\")]
        if kind == "strs":
            return tuple(parts)
        if not text:
            return None
        if kind == "int":
            return _int(parts[0])
        if kind == "float":
            return _finite(float(parts[0]))
        numbers = tuple(map(float, parts))
        if not all(map(math.isfinite, numbers)):
            raise ValueError("not a finite number")
        return numbers
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


def _int_range(value: int) -> int:
    if not -(2**31) <= value < 2**31:
        raise ValueError("outside the range of an IS value")
    return value
