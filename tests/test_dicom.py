"""The fast header reader must agree with pydicom, and every kind of bad file must get its own reason."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from dicom_factory import mr_dataset, with_private_sequence, write
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from appliance.dev.synth.hostile import deflate_bomb
from appliance.ingest.reader import IncompleteFile, RejectedFile, read_instance
from appliance.preprocess import load_frame


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_reader_agrees_with_pydicom(tmp_path, syntax):
    ds = mr_dataset(24, 20, syntax=syntax, position=(1.5, -2.25, 3.0), trigger_time=123.5, RescaleSlope=2.0,
                    RescaleIntercept=-5.0, CardiacNumberOfImages=25, ImagesInAcquisition=300, InstanceNumber=7)
    path = write(ds, tmp_path / "a.dcm")
    inst = read_instance(path)
    ref = pydicom.dcmread(path)
    assert inst.sop_instance_uid == ref.SOPInstanceUID
    assert inst.series_uid == ref.SeriesInstanceUID and inst.study_uid == ref.StudyInstanceUID
    assert inst.transfer_syntax_uid == syntax
    assert inst.cardiac_number_of_images == 25 and inst.images_in_acquisition == 300 and inst.instance_number == 7
    (frame,) = inst.frames
    assert frame.position == (1.5, -2.25, 3.0)
    assert frame.trigger_time == pytest.approx(123.5)
    assert frame.pixel_spacing == (1.5, 1.5)
    assert frame.pixels.rescale_slope == 2.0 and frame.pixels.rescale_intercept == -5.0
    expected = ref.pixel_array.astype(np.float32) * 2.0 - 5.0
    np.testing.assert_array_equal(load_frame(frame.pixels), expected)
    assert frame.pixels.decode_with_pydicom == (syntax == ExplicitVRBigEndian)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_private_sequence_of_undefined_length_is_skipped(tmp_path, syntax):
    ds = with_private_sequence(mr_dataset(16, 16, syntax=syntax, position=(4.0, 5.0, 6.0)))
    path = write(ds, tmp_path / "p.dcm")
    raw = path.read_bytes()
    assert b"\xfe\xff\xdd\xe0" in raw  # the sequence really was written with a delimiter
    inst = read_instance(path)
    assert inst.frames[0].position == (4.0, 5.0, 6.0)
    np.testing.assert_array_equal(load_frame(inst.frames[0].pixels), pydicom.dcmread(path).pixel_array)


def test_pixel_path_points_refs_at_the_spool(tmp_path):
    path = write(mr_dataset(), tmp_path / "a.dcm")
    inst = read_instance(path, tmp_path / "spool" / "x.dcm")
    assert inst.frames[0].pixels.path == str(tmp_path / "spool" / "x.dcm")


def test_growing_file_is_incomplete_not_rejected(tmp_path):
    path = write(mr_dataset(64, 64), tmp_path / "a.dcm")
    data = path.read_bytes()
    for cut in (0, 100, 140, 600, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(IncompleteFile):
            read_instance(path)
    path.write_bytes(data)
    assert read_instance(path).frames[0].pixels.rows == 64


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b"hello, this is not an image\n" * 20), "not_dicom"),
    (lambda p: write(mr_dataset(Modality="CT"), p), "not_mr"),
    (lambda p: write(_without(mr_dataset(), "ImagePositionPatient"), p), "missing_geometry"),
    (lambda p: write(_without(mr_dataset(), "PixelSpacing"), p), "missing_geometry"),
    (lambda p: write(_without(mr_dataset(), "SeriesInstanceUID"), p), "missing_identity"),
    (lambda p: write(_without(mr_dataset(), "PixelData"), p), "no_pixel_data"),
    (lambda p: _corrupt_vr(write(mr_dataset(), p)), "corrupt"),
    (lambda p: _short_pixel_element(p), "corrupt"),
])
def test_bad_files_are_rejected_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.dcm"
    make(path)
    with pytest.raises(RejectedFile) as info:
        read_instance(path, settled=True)  # judged once it has stopped changing
    assert info.value.reason == reason


def test_a_file_cut_between_elements_waits_until_it_settles(tmp_path):
    """Writers flush between elements; a file that ends there is still growing, not missing its pixels."""
    path = write(mr_dataset(16, 16), tmp_path / "a.dcm")
    data = path.read_bytes()
    cut = data.index(b"\x20\x00\x32\x00")  # just before ImagePositionPatient, an element boundary
    path.write_bytes(data[:cut])
    with pytest.raises(IncompleteFile):
        read_instance(path)
    with pytest.raises(RejectedFile) as info:
        read_instance(path, settled=True)
    assert info.value.reason == "no_pixel_data"


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    with pytest.raises(RejectedFile) as info:
        read_instance(fifo)
    assert info.value.reason == "not_a_file"


def test_un_sequence_of_undefined_length_is_skipped_as_implicit_vr(tmp_path):
    """PS3.5 6.2.2: after a hop through a node that did not know a private sequence, it arrives as UN with
    undefined length and implicit-VR content."""
    ds = with_private_sequence(mr_dataset(16, 16, position=(7.0, 8.0, 9.0)))
    path = write(ds, tmp_path / "un.dcm")
    data = path.read_bytes()
    start = data.index(b"\x29\x00\x20\x10SQ")
    end = data.index(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", start) + 8
    implicit_item = (b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # item, undefined length
                     b"\x29\x00\x10\x10\x04\x00\x00\x00abcd"  # (0029,1010), implicit VR: 4-byte length
                     b"\xfe\xff\x0d\xe0\x00\x00\x00\x00")  # item delimiter
    un = (b"\x29\x00\x20\x10UN\x00\x00\xff\xff\xff\xff" + implicit_item * 2
          + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    path.write_bytes(data[:start] + un + data[end:])
    assert pydicom.dcmread(path).ImagePositionPatient == [7, 8, 9]
    assert read_instance(path).frames[0].position == (7.0, 8.0, 9.0)


def test_unreadable_values_on_the_pydicom_path_are_corrupt(tmp_path):
    path = write(mr_dataset(16, 16, syntax=ExplicitVRBigEndian, InstanceNumber=98765), tmp_path / "be.dcm")
    path.write_bytes(path.read_bytes().replace(b"98765 ", b"98765a"))  # pydicom would refuse to write it
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "corrupt"


def test_undecodable_transfer_syntax_is_rejected(tmp_path):
    # MPEG-2 video: no pydicom decoder exists for it. (JPEG and JPEG 2000 decode through Pillow, which highdicom
    # brings along.)
    ds = mr_dataset(16, 16)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    path = write(ds, tmp_path / "mpeg2.dcm")
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "unsupported_transfer_syntax"


def test_rle_lossless_is_decoded_by_pydicom(tmp_path):
    ds = mr_dataset(16, 16)
    original = ds.pixel_array.copy()
    ds.compress(RLELossless)
    path = write(ds, tmp_path / "rle.dcm")
    inst = read_instance(path)
    assert inst.frames[0].pixels.decode_with_pydicom
    np.testing.assert_array_equal(load_frame(inst.frames[0].pixels), original)


def _without(ds, name):
    delattr(ds, name)
    return ds


def _corrupt_vr(path):
    data = bytearray(path.read_bytes())
    at = data.index(b"\x08\x00\x60\x00")  # (0008,0060) Modality, explicit VR "CS"
    data[at + 4 : at + 6] = b"\x01\x02"
    path.write_bytes(bytes(data))


def _short_pixel_element(path):
    ds = mr_dataset(32, 32)
    ds.PixelData = ds.PixelData[:100]
    write(ds, path)


# --- hostile and malformed files (issue 9): each ends in a declared reason that quotes nothing from the file -------

def _patch_value(path, old: bytes, new: bytes):
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_is_of_1e999_on_the_fast_path_is_corrupt(tmp_path):
    path = write(mr_dataset(16, 16, InstanceNumber=98765), tmp_path / "a.dcm")
    _patch_value(path, b"98765 ", b"1e999 ")  # was an OverflowError from int(float())
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "corrupt" and "InstanceNumber" in info.value.detail


@pytest.mark.parametrize("old, new, what", [
    (b"98765 ", b"inf   ", "OverflowError from an IS of infinity"),
    (b"98765 ", b"1e999 ", "OverflowError from an IS too large for any integer"),
])
def test_bad_numbers_on_the_pydicom_path_are_corrupt(tmp_path, old, new, what):
    path = write(mr_dataset(16, 16, syntax=ExplicitVRBigEndian, InstanceNumber=98765), tmp_path / "be.dcm")
    _patch_value(path, old, new)
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "corrupt", what


def test_unknown_vr_on_the_pydicom_path_is_corrupt(tmp_path):
    path = write(mr_dataset(16, 16, syntax=ExplicitVRBigEndian, Manufacturer="UnitTestCo"), tmp_path / "be.dcm")
    data = bytearray(path.read_bytes())
    at = data.index(b"\x00\x08\x00\x70LO")  # (0008,0070) Manufacturer, big endian
    data[at + 4 : at + 6] = b"ZZ"  # was a NotImplementedError when pydicom converted it
    path.write_bytes(bytes(data))
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "corrupt"


def test_odd_length_us_on_the_pydicom_path_is_corrupt(tmp_path):
    path = write(mr_dataset(16, 16, syntax=ExplicitVRBigEndian), tmp_path / "be.dcm")
    data = bytearray(path.read_bytes())
    at = data.index(b"\x00\x28\x00\x10US\x00\x02")  # (0028,0010) Rows, 2 bytes
    data[at + 6 : at + 11] = b"\x00\x03\x00\x10\x00"  # 3 bytes: was a BytesLengthException
    del data[at + 11]
    path.write_bytes(bytes(data))
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "corrupt"


def test_rejection_details_never_quote_the_file(tmp_path):
    """A value pydicom cannot convert used to reach the quarantine note word for word (a PatientID once)."""
    secret = "PATIENT7781"
    ds = mr_dataset(16, 16, syntax=ExplicitVRBigEndian, PatientID=secret, SliceThickness="8")
    ds.Manufacturer = secret
    path = write(ds, tmp_path / "be.dcm")
    _patch_value(path, b"8 ", secret[:2].encode())  # SliceThickness becomes "PA": not a number
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "corrupt"
    assert secret not in str(info.value) and "PA" not in info.value.detail.replace("PixelSpacing", "")
    ds = mr_dataset(16, 16, Modality=secret[:16])
    with pytest.raises(RejectedFile) as info:
        read_instance(write(ds, tmp_path / "ct.dcm"))
    assert info.value.reason == "not_mr" and secret[:16] not in info.value.detail


def test_rejection_reasons_are_a_closed_set():
    with pytest.raises(ValueError):
        RejectedFile("something_new", "x")


def test_a_deflate_bomb_is_too_large_and_measured_in_bounded_memory(tmp_path):
    import resource

    path = deflate_bomb(tmp_path / "bomb.dcm", 1024)  # 1 GiB inflated
    assert path.stat().st_size < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RejectedFile) as info:
        read_instance(path, settled=True)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert info.value.reason == "too_large"
    assert grown_mb < 50, f"peak memory grew by {grown_mb:.0f} MB while measuring the bomb"


def test_a_deflated_file_within_the_limit_is_read(tmp_path):
    path = deflate_bomb(tmp_path / "ok.dcm", 2)
    with pytest.raises(RejectedFile) as info:
        read_instance(path, settled=True, max_bytes=1 << 20)
    assert info.value.reason == "too_large"
    inst = read_instance(path, settled=True, max_bytes=4 << 20)  # inflated by pydicom: bounded by the limit
    assert inst.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"


def test_large_files_and_large_decoded_pixels_are_too_large(tmp_path):
    path = write(mr_dataset(64, 64), tmp_path / "a.dcm")
    with pytest.raises(RejectedFile) as info:
        read_instance(path, max_bytes=4096)
    assert info.value.reason == "too_large"
    ds = mr_dataset(16, 16)
    ds.compress(RLELossless)
    ds.Rows = ds.Columns = 60000  # a header that claims pixels far beyond what the file holds
    path = write(ds, tmp_path / "rle.dcm")
    with pytest.raises(RejectedFile) as info:
        read_instance(path)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize("size", [1048673, 1048770, 1 << 20, 3 * (1 << 20) + 5])
def test_valid_deflate_streams_are_measured_whole(size):
    """Sizes where the last input step ends as the output bound is reached: zlib still holds output then, and the
    stream used to be judged truncated."""
    import io
    import zlib

    from appliance.ingest.reader import _check_inflated_size

    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = comp.compress(bytes(size)) + comp.flush()
    _check_inflated_size(io.BytesIO(b"x" * 7 + stream), 7, 8 << 20)  # raises if judged incomplete or too large
    with pytest.raises(IncompleteFile):
        _check_inflated_size(io.BytesIO(stream[:-20]), 0, 8 << 20)


def test_a_bomb_whose_file_meta_is_implicit_vr_is_refused_unread(tmp_path):
    """pydicom reads a file meta element whose VR bytes are not letters as implicit VR; encoded so, the deflated
    transfer syntax used to slip past the measuring and pydicom inflated the whole dataset."""
    import resource
    import struct

    bomb = deflate_bomb(tmp_path / "bomb.dcm", 256)
    data = bytearray(bomb.read_bytes())
    at = data.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID, explicit VR
    length = struct.unpack_from("<H", data, at + 6)[0]
    data[at : at + 8] = b"\x02\x00\x10\x00" + struct.pack("<I", length)  # the same element in implicit VR
    bomb.write_bytes(bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RejectedFile) as info:
        read_instance(bomb, settled=True)
    assert info.value.reason == "corrupt"
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50
