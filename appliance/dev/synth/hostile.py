"""Hostile input for tests and the benchmark: a decompression bomb, and a careless or hostile network neighbour of
the DICOM receiver (silent connections, as from a monitoring probe that connects and waits, and connections that
sent junk bytes, as from a port scanner), held open and re-opened as soon as the receiver closes them."""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import UID

DEFLATED_EXPLICIT_LE = UID("1.2.840.10008.1.2.1.99")


def deflate_bomb(path: Path, inflated_mb: int, seed: int = 0) -> Path:
    """A synthetic MR image in Deflated Explicit VR Little Endian whose Pixel Data inflates to `inflated_mb` MiB
    of zeros: about 1 MB on disk per GiB inflated. Written in pieces: making it costs a few MB of memory."""
    from pydicom.uid import ExplicitVRLittleEndian

    from appliance.dev.synth.writer import iter_instances, plan_study

    ds = next(iter_instances(plan_study(seed=seed, vendor="A", n_slices=1, n_phases=1, matrix=(16, 16)))).dataset

    def encoded(syntax: UID) -> tuple[bytes, bytes]:
        ds.file_meta.TransferSyntaxUID = syntax
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        meta_end = 132 + 12 + struct.unpack_from("<I", data, 140)[0]  # after (0002,0000) and the group it counts
        return data[:meta_end], data[meta_end:]

    meta, _ = encoded(DEFLATED_EXPLICIT_LE)
    _, dataset = encoded(ExplicitVRLittleEndian)
    head = dataset[: dataset.index(b"\xe0\x7f\x10\x00")]  # everything before Pixel Data
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as fh:
        fh.write(meta)
        fh.write(comp.compress(head + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", inflated_mb << 20)))
        block = bytes(1 << 20)
        for _ in range(inflated_mb):
            fh.write(comp.compress(block))
        fh.write(comp.flush())
    return path


class HostileNeighbour:
    def __init__(self, host: str, port: int, idle: int, junk: int,
                 sample: Callable[[], int] | None = None) -> None:
        self.host, self.port, self.idle, self.junk = host, port, idle, junk
        self.sample = sample  # called every round (e.g. a thread count); the largest answer is kept in `peak`
        self.peak = 0
        self.reopened = 0
        self._socks: list[tuple[socket.socket, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-neighbour", daemon=True)

    def _open(self, junk: bool) -> tuple[socket.socket, bool]:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        if junk:
            sock.sendall(os.urandom(512))
        sock.setblocking(False)
        return sock, junk

    def start(self) -> HostileNeighbour:
        self._socks = [self._open(False) for _ in range(self.idle)] + [self._open(True) for _ in range(self.junk)]
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sample is not None:
                self.peak = max(self.peak, self.sample())
            for i, (sock, junk) in enumerate(self._socks):
                try:
                    if sock.recv(4096) != b"":
                        continue  # an answer (an A-ASSOCIATE-RJ or A-ABORT): the close follows
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                sock.close()
                try:
                    self._socks[i] = self._open(junk)
                    self.reopened += 1
                except OSError:
                    pass
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock, _ in self._socks:
            sock.close()

    def __enter__(self) -> HostileNeighbour:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
