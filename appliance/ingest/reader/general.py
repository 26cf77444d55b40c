"""The general path: pydicom for everything the fast path does not take (big endian, deflated, compressed,
enhanced multi-frame); its pixels are decoded by pydicom at preprocessing time."""

from __future__ import annotations

from typing import Any

from appliance.handovers import Frame, Instance, PixelRef
from appliance.ingest.reader.errors import IncompleteFile, RejectedFile
from appliance.ingest.reader.fast import _WANTED, _finite, _int, _int_range
from appliance.ingest.reader.fields import _classic_geometry, _instance, _or, _require_mr
from appliance.ingest.transfer_syntaxes import decodable, decoding_plugin


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
    if not decodable(syntax):
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
        ref = PixelRef(target, -1, rows, cols, dtype, 0, 1, True, slope, intercept, decoding_plugin(syntax))
        frames: tuple[Frame, ...] = (Frame(pixels=ref, trigger_time=values.get("TriggerTime"), **geometry),)
    else:
        frames = _enhanced_frames(ds, target, rows, cols, dtype, n_frames, slope, intercept, decoding_plugin(syntax))
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


def _enhanced_frames(ds: Any, path: str, rows: int, cols: int, dtype: str, n: int, slope: float,
                     intercept: float, decoder: str) -> tuple[Frame, ...]:
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
        if trigger is None:
            # Legacy Converted Enhanced MR has no cardiac synchronisation group: a converter keeps each classic
            # image's TriggerTime among the Unassigned Per-Frame (or Shared) Converted Attributes.
            trigger = _unassigned(item, "UnassignedPerFrameConvertedAttributesSequence", "TriggerTime")
            if trigger is None and shared is not None:
                trigger = _unassigned(shared, "UnassignedSharedConvertedAttributesSequence", "TriggerTime")
        ref = PixelRef(path, -1, rows, cols, dtype, index, n, True, slope, intercept, decoder)
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


def _unassigned(item: Any, seq: str, attr: str) -> Any:
    if seq in item and item[seq].value:
        return item[seq][0].get(attr)
    return None
