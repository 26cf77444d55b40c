"""Decoded attributes -> an `Instance`: identity, geometry and pixel layout checked, each refusal by its reason."""

from __future__ import annotations

from typing import Any

from appliance.handovers import Frame, Instance, PixelRef
from appliance.ingest.reader.errors import IncompleteFile, RejectedFile
from appliance.ingest.reader.fast import _Header


def _to_instance(path: str, size: int, header: _Header, target: str, max_bytes: int) -> Instance:
    v = header.values
    _require_mr(v)
    rows, cols = v.get("Rows"), v.get("Columns")
    if header.pixel_offset is None or header.pixel_length is None:
        raise RejectedFile("no_pixel_data", "the file has no Pixel Data element")
    frames_n = v.get("NumberOfFrames") or 1
    if frames_n != 1:
        # Classic multi-frame MR is rare; its per-frame geometry needs pydicom's general reader.
        from appliance.ingest.reader.general import _read_with_pydicom  # the general path imports this module

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
        accession_number=(v.get("AccessionNumber") or "").strip(),
        station_name=(v.get("StationName") or "").strip(),
        patient_id=_text_in(v, "PatientID"),
        patient_name=_text_in(v, "PatientName"),
    )


def _text_in(v: dict[str, Any], name: str) -> str:
    """A text value in the file's own character set. The fast path reads text as Latin-1 (ISO_IR 100 and ASCII);
    a UTF-8 file's (ISO_IR 192) bytes are read again as UTF-8. pydicom's general path has decoded it already, and
    a decoded name that is not Latin-1 (or not UTF-8 once encoded) is kept as it is."""
    text = (v.get(name) or "").strip()
    if "192" in (v.get("SpecificCharacterSet") or ""):
        try:
            return text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return text
