"""The fast reader's cache of decoded numbers (ingest/reader/fast._DECODED): the same instance with it as without,
no text value (names, IDs, accession numbers, UIDs) kept in it, an unreadable value never kept, and its bound."""

from __future__ import annotations

import pytest
from dicom_factory import mr_dataset, write

from appliance.ingest.reader import RejectedFile, fast, read_instance


def test_a_file_reads_the_same_from_the_cache_and_no_text_is_kept(tmp_path):
    path = write(mr_dataset(16, 16, PatientName="CACHE^NAME", PatientID="CACHEID77", AccessionNumber="ACC991"),
                 tmp_path / "a.dcm")
    fast._DECODED.clear()
    first = read_instance(path)
    assert fast._DECODED  # the numbers were kept
    second = read_instance(path)  # from the cache
    fast._DECODED.clear()
    assert first == second and (first.patient_name, first.accession_number) == ("CACHE^NAME", "ACC991")
    read_instance(path)
    kept = b"".join(raw for raw, _ in fast._DECODED)
    assert {kind for _, kind in fast._DECODED} <= {"us", "strs", "int", "float", "floats"}
    for text in (b"CACHE^NAME", b"CACHEID77", b"ACC991", first.sop_instance_uid.encode()):
        assert text not in kept


def test_an_unreadable_number_is_refused_every_time(tmp_path):
    path = write(mr_dataset(16, 16, InstanceNumber=98765), tmp_path / "a.dcm")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"98765 ", b"1e999 "))
    for _ in range(2):
        with pytest.raises(RejectedFile, match="InstanceNumber"):
            read_instance(path)
    assert not any(raw.startswith(b"1e999") for raw, _ in fast._DECODED)


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(fast, "_DECODED_MAX", 8)
    fast._DECODED.clear()
    for n in range(50):
        assert fast._decode(f"{n}.5".encode(), "float", "TriggerTime") == n + 0.5
        assert len(fast._DECODED) <= 8
