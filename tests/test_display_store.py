"""What the display reads from the appliance, without a browser: patient identity read from the images and stored
(schema 6, an older file upgraded in place), the thumbnails made from the model tensor, and GetSeriesPreview over a
real gRPC server giving exam identity only to a named client over TLS."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import struct
import threading
import zlib

import grpc
import numpy as np
import pytest
from dicom_factory import mr_dataset, write
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from test_store import info, result
from tls_factory import needs_openssl, self_signed

from appliance.api import pb
from appliance.handovers import SeriesState
from appliance.ingest.reader import read_instance
from appliance.pipeline.thumbnails import png_gray8, thumbnails
from appliance.serve.access import AccessPolicy, Client, hash_token, new_token
from appliance.serve.client import ApplianceClient
from appliance.serve.server import ApplianceServicer, GrpcServer, GrpcTls
from appliance.store import Store
from appliance.store.schema import SCHEMA_VERSION

NAME, PID, ACCESSION = "CANARY^Tessa^M", "PID-CANARY-77", "ACC-CANARY-42"


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for what png_gray8 writes: every chunk's CRC checked, filter 0 rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 0) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, w + 1)
    assert not rows[:, 0].any()
    return rows[:, 1:]


def exam(n: int):
    return dataclasses.replace(info(n), accession_number=ACCESSION, station_name="MR1", patient_id=PID,
                               patient_name=NAME)


def test_thumbnails_are_the_model_tensor_as_8_bit_png():
    tensor = np.random.default_rng(3).random((16, 3, 96, 80), dtype=np.float32)
    tensor[0, 1, 0, 0], tensor[0, 1, 0, 1] = -0.5, 1.5  # out of [0, 1]: clipped
    thumbs = thumbnails(tensor)
    assert [(t.position, t.label, t.width, t.height) for t in thumbs] == [
        (0, "base", 80, 96), (1, "mid", 80, 96), (2, "apex", 80, 96)]
    for t in thumbs:
        assert len(t.png) < 12_000  # small: one slice, one phase
        np.testing.assert_array_equal(decode_png(t.png),
                                      np.rint(np.clip(tensor[0, t.position], 0, 1) * 255).astype(np.uint8))
    with pytest.raises(ValueError):
        png_gray8(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize(("charset", "stored", "syntax"), [
    ("ISO_IR 100", "Müller^Jürgen", ExplicitVRLittleEndian),
    ("ISO_IR 192", "Ødegård^Åse", ExplicitVRLittleEndian),
    ("ISO_IR 192", "Ødegård^Åse", ImplicitVRLittleEndian),
])
def test_patient_identity_is_read_in_the_files_character_set(tmp_path, charset, stored, syntax):
    ds = mr_dataset(SpecificCharacterSet=charset, PatientName=stored, PatientID="  P-1 ", syntax=syntax)
    inst = read_instance(write(ds, tmp_path / "a.dcm"))
    assert (inst.patient_name, inst.patient_id) == (stored, "P-1")
    assert stored not in repr(inst) and "P-1" not in repr(inst)


def test_a_schema_5_file_opens_and_gains_identity_and_thumbnails(tmp_path):
    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.results.save(result(info(1)))
    store.close()
    db = sqlite3.connect(path)  # back to what schema 5 had: the series table without the patient columns
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name='series'").fetchone()[0]
    v5 = sql[:sql.index("patient_id TEXT")].rstrip().replace("DEFAULT '',      -- (0008,1010)", "DEFAULT ''") + ")"
    columns = ", ".join(r[1] for r in db.execute("PRAGMA table_info(series)")
                        if not r[1].startswith("patient") and r[1] != "instance_digests")  # both came later
    db.executescript(f"PRAGMA foreign_keys=OFF; PRAGMA legacy_alter_table=ON; ALTER TABLE series RENAME TO s6;"
                     f" {v5}; INSERT INTO series SELECT {columns} FROM s6; DROP TABLE s6; DROP TABLE thumbnails;"
                     " UPDATE meta SET value='5' WHERE key='schema_version';")
    assert "patient_id" not in db.execute("SELECT sql FROM sqlite_master WHERE name='series'").fetchone()[0]
    db.close()
    store = Store(path)
    try:
        old = store.results.for_series("1.2.1.1")
        assert old is not None and (old.info.patient_id, old.info.patient_name) == ("", "")
        assert store.thumbnails.for_series("1.2.1.1") == []
        store.results.save(result(exam(2)))
        new = store.results.for_series("1.2.2.1")
        assert new is not None and (new.info.patient_id, new.info.patient_name) == (PID, NAME)
        version = store.db.reader().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert version == str(SCHEMA_VERSION) == "8"
    finally:
        store.close()


def test_a_failed_series_loses_its_thumbnails(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = exam(3)
    store.series.seen(i)
    store.thumbnails.save(i.series_uid, thumbnails(np.zeros((2, 3, 8, 8), np.float32)))
    assert len(store.thumbnails.for_series(i.series_uid)) == 3
    store.series.set_state(i, SeriesState.FAILED, "inference: boom", stage="inference")
    assert store.thumbnails.for_series(i.series_uid) == []
    store.close()


@pytest.fixture
def preview_servers(tmp_path):
    """One store with a result carrying identity and thumbnails, served in plaintext and over TLS, with a display
    client and an ops client."""
    store = Store(tmp_path / "db.sqlite")
    i = exam(4)
    store.results.save(result(i))
    store.thumbnails.save(i.series_uid, thumbnails(np.full((2, 3, 8, 8), 0.5, np.float32)))
    display, ops = new_token(), new_token()
    policy = AccessPolicy(clients=(Client("console-mr1", frozenset({"display"}), hash_token(display)),
                                   Client("grafana", frozenset({"ops"}), hash_token(ops))))
    key, cert = self_signed(tmp_path / "tls", "appliance")
    servers = []
    for tls in (None, GrpcTls(cert, key)):
        servicer = ApplianceServicer(store, lambda: pb.ModelInfo(bundle_name="t"), lambda uid: None,
                                     threading.Event())
        server = GrpcServer(servicer, "127.0.0.1", 0, access=policy, tls=tls)
        server.start()
        servers.append(server)
    yield store, servers, cert, {"display": display, "ops": ops}, i.series_uid
    for server in servers:
        server.stop(0.5)
    store.close()


@needs_openssl
def test_exam_identity_only_to_a_named_client_over_tls(preview_servers, caplog):
    caplog.set_level(logging.DEBUG)
    _, (plain, tls), cert, tokens, uid = preview_servers

    def preview(server, token=None):
        ca = cert if server is tls else None
        with ApplianceClient(server.address, tls_ca=ca, token=token, timeout_s=5) as client:
            return client.preview(uid)

    shown = preview(tls, tokens["display"])
    assert shown.identity_withheld == ""
    assert (shown.identity.patient_name, shown.identity.patient_id, shown.identity.accession_number) == (
        NAME, PID, ACCESSION)
    assert shown.station_name == "MR1" and [t.label for t in shown.thumbnails] == ["base", "mid", "apex"]
    assert decode_png(shown.thumbnails[1].png).tolist() == [[128] * 8] * 8
    for withheld, why in [(preview(plain), "named clients"), (preview(tls), "named clients"),
                          (preview(plain, tokens["display"]), "TLS")]:
        assert not withheld.HasField("identity") and why in withheld.identity_withheld
        assert withheld.station_name == "MR1" and len(withheld.thumbnails) == 3  # the images are a result's
    with pytest.raises(grpc.RpcError) as err:
        preview(tls, tokens["ops"])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with ApplianceClient(tls.address, tls_ca=cert, token=tokens["display"], timeout_s=5) as client, \
            pytest.raises(grpc.RpcError) as err:
        client.preview("1.2.999.1")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert all(s not in caplog.text for s in (NAME, "CANARY", PID, ACCESSION))


def test_shadow_mode_keeps_previews_from_displays(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.results.save(result(exam(5)))
    servicer = ApplianceServicer(store, lambda: pb.ModelInfo(bundle_name="t"), lambda uid: None, threading.Event())
    server = GrpcServer(servicer, "127.0.0.1", 0, access=AccessPolicy(shadow=True))
    server.start()
    try:
        with ApplianceClient(server.address, timeout_s=5) as client, pytest.raises(grpc.RpcError) as err:
            client.preview("1.2.5.1")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "shadow" in (err.value.details() or "")
    finally:
        server.stop(0.5)
        store.close()


def follow(store: Store, board, shadow: bool = False):
    """A real gRPC server on the store, and the display's feed following it."""
    from appliance.display.feed import Feed

    servicer = ApplianceServicer(store, lambda: pb.ModelInfo(bundle_name="t", mode="shadow" if shadow else "assist"),
                                 lambda uid: None, threading.Event())
    server = GrpcServer(servicer, "127.0.0.1", 0, access=AccessPolicy(shadow=shadow))
    server.start()
    feed = Feed(lambda: ApplianceClient(server.address, timeout_s=5), board, retry_initial_s=0.05, retry_max_s=0.2)
    feed.start()
    return server, feed


def test_the_feed_says_why_a_shadow_appliance_refuses_it_and_starts_afresh_on_a_new_log(tmp_path):
    from conftest import wait_for

    from appliance.display.board import Board

    store = Store(tmp_path / "db.sqlite")
    store.results.save(result(exam(6)))
    board = Board()
    server, feed = follow(store, board, shadow=True)
    try:
        wait_for(lambda: board.connection["state"] == "refused", timeout=10, what="the refusal")
        assert "shadow mode" in board.connection["detail"] and board.applied == 0
    finally:
        feed.stop()
        server.stop(0.5)
    board.last_event_id = 40  # as if it had followed another appliance's log: that one is beyond this log's end
    server, feed = follow(store, board)
    try:
        wait_for(lambda: board.last_event_id == 1 and board.connection["state"] == "live", timeout=10,
                 what="the board to start again from this log")
        (study,) = board.snapshot()["studies"]
        assert study["series"][0]["key"] == "s000000000006" and board.repeats == 0
    finally:
        feed.stop()
        server.stop(0.5)
        store.close()
