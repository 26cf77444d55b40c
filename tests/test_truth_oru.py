"""ORU^R01 parsing and ACKs: well-formed final and corrected reports (Study Instance UID in ZDS or an OBX),
preliminary, cancelled, malformed and wrong-type messages, and the ACK's fields."""

from __future__ import annotations

import pytest

from appliance.dev.oru import oru_message
from appliance.dev.synth import plan_study
from appliance.truth.oru import ResultStatus, ack_code, build_ack, parse_oru


def seg(name: str, **fields: str) -> str:
    """A segment with the given fields (f3="ACC" is field 3), the others empty."""
    n = max(int(k[1:]) for k in fields) if fields else 0
    return "|".join([name, *(fields.get(f"f{i}", "") for i in range(1, n + 1))])


MSH = "MSH|^~\\&|RIS|H|SCANSIDE||20240102||ORU^R01|{}|P|2.5"


@pytest.fixture(scope="module")
def plan():
    return plan_study(seed=41, vendor="A")


def test_a_final_report_is_read(plan):
    out = parse_oru(oru_message(plan, "MSG0001"))
    assert (out.code, out.reason) == ("AA", "final")
    r = out.report
    assert r is not None and r.status is ResultStatus.FINAL and not r.corrected
    assert r.accession_number == plan.accession_number
    assert r.study_instance_uid == plan.study_uid
    assert r.control_id == "MSG0001" and r.sending_application == "SYNTH_RIS"
    assert r.observed_at is not None and r.observed_at.strftime("%Y%m%d") == plan.study_date
    assert r.text and "\r" not in r.text
    assert plan.accession_number not in repr(r) and plan.study_uid not in repr(r)


def test_a_corrected_report_with_the_uid_in_an_obx(plan):
    out = parse_oru(oru_message(plan, "MSG0002", status="C", study_uid_in="obx", text="Small pericardial effusion."))
    assert (out.code, out.reason) == ("AA", "corrected")
    assert out.report is not None and out.report.corrected
    assert out.report.study_instance_uid == plan.study_uid
    assert out.report.text == "Small pericardial effusion."  # the UID's OBX is not report text


def test_text_lines_repetitions_and_escapes():
    msg = ("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ORU^R01|X9|P|2.3\r"
           + seg("OBR", f1="1", f3="ACC9", f25="F") + "\r"
           "OBX|1|FT|&GDT||LV dilated\\.br\\EF 30 \\T\\ falling~No effusion||||||F\r"
           "OBX|2|NM|LVEF||30|%|||||F\n")
    out = parse_oru(msg)
    assert out.code == "AA" and out.report is not None
    assert out.report.text == "LV dilated\nEF 30 & falling\nNo effusion"
    assert out.report.study_instance_uid is None and out.report.accession_number == "ACC9"


def test_the_accession_number_falls_back_to_obr18_then_orc3():
    base, obx = MSH.format("X1") + "\r", "\rOBX|1|TX|||text||||||F"
    obr18 = parse_oru(base + seg("OBR", f1="1", f18="A18", f25="F") + obx).report
    assert obr18 is not None and obr18.accession_number == "A18"
    orc3 = parse_oru(base + "ORC|RE||A3\r" + seg("OBR", f1="1", f25="F") + obx).report
    assert orc3 is not None and orc3.accession_number == "A3"


def test_a_preliminary_report_is_acknowledged_and_not_used(plan):
    out = parse_oru(oru_message(plan, "MSG0003", status="P"))
    assert (out.code, out.reason, out.report) == ("AA", "preliminary", None)


def test_a_cancellation_reaches_the_sink_without_text(plan):
    out = parse_oru(oru_message(plan, "MSG0004", status="X", text=""))
    assert out.code == "AA" and out.report is not None and out.report.status is ResultStatus.CANCELLED


@pytest.mark.parametrize(("message", "code", "reason"), [
    ("hello", "AR", "unparseable"),
    ("", "AR", "unparseable"),
    ("PID|1||123", "AR", "unparseable"),
    ("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ADT^A01|A1|P|2.5\rPID|1", "AR", "unsupported_message_type"),
    ("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ORM^O01|A2|P|2.5\rOBR|1", "AR", "unsupported_message_type"),
    ("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ORU^R01||P|2.5\rOBR|1", "AR", "no_control_id"),
    ("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ORU^R01|A3|P|2.5\rPID|1", "AE", "no_obr"),
    (MSH.format("A4") + "\r" + seg("OBR", f1="1", f25="F") + "\rOBX|1|TX|||t", "AE",
     "no_accession_or_study_uid"),
    (MSH.format("A5") + "\r" + seg("OBR", f1="1", f3="ACC", f25="F"), "AE", "no_report_text"),
    (MSH.format("A6") + "\r" + seg("OBR", f1="1", f3="ACC", f25="Q") + "\rOBX|1|TX|||t", "AE", "unknown_status"),
])
def test_messages_that_cannot_be_used(message, code, reason):
    out = parse_oru(message)
    assert (out.code, out.reason, out.report) == (code, reason, None)


def test_the_ack_swaps_sender_and_receiver_and_names_the_message(plan):
    out = parse_oru(oru_message(plan, "MSG0005"))
    ack = build_ack(out.header, "AE", "not_stored", application="SCANSIDE", facility="CMR")
    msh, msa = ack.rstrip("\r").split("\r")
    f = msh.split("|")
    assert f[0:6] == ["MSH", "^~\\&", "SCANSIDE", "CMR", "SYNTH_RIS", "SYNTH_HOSP"]
    assert f[8] == "ACK^R01^ACK" and f[9] and f[9] != "MSG0005" and f[11] == "2.5.1"
    assert msa == "MSA|AE|MSG0005|not_stored"
    assert ack_code(ack) == ("AE", "MSG0005")
    with pytest.raises(ValueError):
        build_ack(out.header, "OK")


def test_an_ack_for_an_unreadable_message_still_names_it():
    out = parse_oru("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ORU^R01|Z7|P|2.5\rOBR|1\x00\rOBX|broken^^~&&")
    ack = build_ack(out.header, out.code, out.reason)
    assert ack_code(ack)[1] == "Z7"
