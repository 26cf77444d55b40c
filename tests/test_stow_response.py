"""Reading a STOW-RS answer per instance: the cases a real Orthanc does not produce (202, warnings, out of resources,
5xx, redirects), as PS3.18 10.5.3 words them, built as the JSON a server sends and read by the same code."""

from __future__ import annotations

import json

import pytest
from pydicom.dataset import Dataset

from appliance.export.stow_response import StowAnswer, outcomes, read_body

A, B = "1.2.3.4.1", "1.2.3.4.2"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


def answer_json(stored: dict[str, int | None] | None = None, failed: dict[str, int | None] | None = None) -> bytes:
    """A Store Instances Response in the DICOM JSON model: uid -> Warning / Failure Reason (None: none given)."""
    def items(uids: dict[str, int | None], reason_tag: str) -> list[dict]:
        out = []
        for uid, reason in uids.items():
            item = {"00081150": {"vr": "UI", "Value": [SR_CLASS]}, "00081155": {"vr": "UI", "Value": [uid]},
                    # a Retrieve URL names the study: never copied into a detail
                    "00081190": {"vr": "UR", "Value": [f"https://pacs/studies/9.9.9/series/8.8/instances/{uid}"]}}
            if reason is not None:
                item[reason_tag] = {"vr": "US", "Value": [reason]}
            out.append(item)
        return out

    body: dict = {}
    if stored is not None:
        body["00081199"] = {"vr": "SQ", "Value": items(stored, "00081196")}
    if failed is not None:
        body["00081198"] = {"vr": "SQ", "Value": items(failed, "00081197")}
    return json.dumps(body).encode()


def read(status: int, content: bytes = b"", content_type: str = "application/dicom+json"):
    return outcomes([A, B], StowAnswer(status, read_body(content, content_type)))


def test_200_with_nothing_listed_means_every_instance_stored():
    assert [(o.delivered, o.detail, o.final) for o in read(200)] == [(True, "", False)] * 2


def test_202_partial_stored_with_warning_and_refused_for_now():
    a, b = read(202, answer_json(stored={A: 0xB000}, failed={B: 0xA700}))
    assert a.delivered
    assert a.detail == "stored with warning reason 0xB000 (coercion of data elements, HTTP 202 Accepted)"
    assert not b.delivered and not b.final
    assert b.detail == ("refused by the DICOMweb server (HTTP 202 Accepted): failure reason 0xA700 "
                        "(refused: out of resources)")


def test_a_failure_that_judges_the_document_is_final_even_in_a_200():
    a, b = read(200, answer_json(stored={A: None}, failed={B: 0xA900}))
    assert a.delivered and a.detail == ""
    assert not b.delivered and b.final and "0xA900 (error: data set does not match SOP class)" in b.detail


def test_202_that_does_not_name_an_instance_leaves_it_for_another_try():
    a, b = read(202, answer_json(stored={A: None}))
    assert a.delivered
    assert not b.delivered and not b.final and b.detail.startswith("HTTP 202 Accepted: the server stored only some")


@pytest.mark.parametrize("status, final, words", [
    (400, True, "could not read the request"),
    (409, True, "conflicting"),
    (415, True, "application/dicom"),
    (401, False, "export.dicomweb_token_file, or dicomweb_username and dicomweb_password_file"),
    (403, False, "refused these credentials"),
    (404, False, "<export.dicomweb_url>/studies"),
    (408, False, "timed out"),
    (413, False, "larger than the server takes"),
    (429, False, "busy"),
    (418, False, "refused by the server"),  # a 4xx not named: read generically, and tried again
    (500, False, "the server failed"),
    (503, False, "unavailable or busy"),
    (599, False, "the server failed"),
    (302, False, "set export.dicomweb_url to the address it names"),
])
def test_statuses_without_a_body_fail_every_instance_final_only_where_the_request_itself_was_judged(status, final,
                                                                                                    words):
    results = read(status)
    assert [(o.delivered, o.final) for o in results] == [(False, final)] * 2
    assert results[0].detail.startswith(f"HTTP {status}") and words in results[0].detail, results[0].detail


def test_409_with_a_body_stored_ones_count_and_refused_ones_are_final_whatever_their_reason():
    a, b = read(409, answer_json(stored={A: None}, failed={B: 0x0110}))  # Orthanc's study mismatch
    assert a.delivered
    assert not b.delivered and b.final and b.detail.startswith("refused by the DICOMweb server (HTTP 409 Conflict)")


def test_no_detail_copies_the_servers_urls_or_uids():
    for outcome in read(202, answer_json(stored={A: 0xB007}, failed={B: 0xC122})):
        assert "9.9.9" not in outcome.detail and A not in outcome.detail and B not in outcome.detail


def test_bodies_json_without_a_type_as_orthanc_sends_with_an_error_and_nothing_else():
    assert read_body(answer_json(failed={A: 0xC000}), "")[0x00081198][0].FailureReason == 0xC000
    assert isinstance(read_body(b"[" + answer_json(stored={A: None}) + b"]", "application/dicom+json"), Dataset)
    assert read_body(b"<NativeDicomModel/>", "application/dicom+xml") is None  # the status alone is read then
    assert read_body(b"{not json", "application/dicom+json") is None
    assert read_body(b"", "") is None
    assert read_body(b"<html>busy</html>", "text/html") is None
