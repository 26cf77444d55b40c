"""Mutating fuzzer for the DICOM header reader, shared by the suite's bounded run and longer runs by hand.

Seeds are the synthetic scanner's own files (each vendor profile, implicit and explicit VR) and pydicom's test
files (deflated, big endian, compressed, private and UN sequences, odd files). Each case applies a few mutations
aimed at what a parser trips on: lengths (0, odd, huge), VRs, numeric text ("1e999", "inf"), truncation,
insertion and deletion. The reader must answer every case with an Instance, IncompleteFile, or RejectedFile with
a declared reason whose detail quotes nothing from the file.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from pathlib import Path

import pydicom

# Put into every synthetic seed: no rejection detail may ever contain them.
CANARY_NAME = "CANARY^SECRET"
CANARY_ID = "CANARYID0042"

PYDICOM_SEEDS = ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "image_dfl.dcm", "UN_sequence.dcm",
                 "badVR.dcm", "priv_SQ.dcm", "nested_priv_SQ.dcm", "JPEG-lossy.dcm", "no_meta.dcm",
                 "meta_missing_tsyntax.dcm", "MR_truncated.dcm", "reportsi_with_empty_number_tags.dcm",
                 "ExplVR_BigEndNoMeta.dcm", "emri_small.dcm", "liver_1frame.dcm")

TOKENS = (b"1e999", b"-1e999", b"inf", b"nan", b"NaN", b"-0", b"99999999999999999999", b"\\\\\\", b"1.5\\",
          b"\x00\x00", b"\xff\xff", b"  ", b"AB", b"IS", b"SQ", b"UN", b"OB", b"US", b"DS",
          b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0", b"\xe0\x7f\x10\x00", b"1.2.840.10008.1.2.1.99")
U32S = (0, 1, 2, 3, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFF, 0x10000)


@lru_cache(maxsize=1)
def seeds() -> tuple[bytes, ...]:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    from appliance.dev.synth.plan import plan_study
    from appliance.dev.synth.writer import encode, iter_instances

    out: list[bytes] = []
    for vendor, syntax in (("A", ExplicitVRLittleEndian), ("B", ImplicitVRLittleEndian), ("C", None)):
        plan = plan_study(seed=7, vendor=vendor)
        for inst in list(iter_instances(plan))[:1]:
            ds = inst.dataset
            ds.PatientName, ds.PatientID = CANARY_NAME, CANARY_ID
            if syntax is not None:
                ds.file_meta.TransferSyntaxUID = syntax
            out.append(encode(ds))
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in PYDICOM_SEEDS:
        path = root / name
        if path.is_file():
            out.append(path.read_bytes())
    return tuple(out)


NUMERIC_VRS = (b"IS", b"DS", b"US", b"UL", b"FD", b"FL")
OPS = 9


def _numeric_values(buf: bytearray) -> list[tuple[int, int]]:
    """(value offset, value length) of explicit-VR elements with short numeric VRs."""
    found = []
    for vr in NUMERIC_VRS:
        k = buf.find(vr, 132)
        while k != -1 and k + 4 <= len(buf):
            length = buf[k + 2] | buf[k + 3] << 8
            if 0 < length < 64:
                found.append((k + 4, length))
            k = buf.find(vr, k + 1)
    return found


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Apply (op, position, argument) triples; positions wrap around the current length."""
    buf = bytearray(data)
    for op, pos, arg in ops:
        n = len(buf)
        if n == 0:
            break
        at = pos % n
        kind = op % OPS
        if kind == 8:
            # A numeric element's value replaced in place, its length kept: what a writer's bad number looks like.
            values = _numeric_values(buf)
            if values:
                start, length = values[pos % len(values)]
                token = TOKENS[arg % 12][:length]
                buf[start : start + length] = token.ljust(length, b" ")
            continue
        if kind == 0:
            buf[at] ^= 1 << (arg % 8)
        elif kind == 1:
            buf[at] = arg % 256
        elif kind == 2:
            buf[at : at + 4] = struct.pack("<I", U32S[arg % len(U32S)])
        elif kind == 3:
            token = TOKENS[arg % len(TOKENS)]
            buf[at : at + len(token)] = token
        elif kind == 4:
            buf[at:at] = TOKENS[arg % len(TOKENS)]
        elif kind == 5:
            del buf[at : at + 1 + arg % 64]
        elif kind == 6:
            del buf[max(at, 1):]
        else:
            # Aim at element headers: the next even offset whose two bytes look like a VR.
            for k in range(at, min(n - 1, at + 256)):
                if 65 <= buf[k] <= 90 and 65 <= buf[k + 1] <= 90:
                    buf[k : k + 2] = bytes((65 + arg % 26, 65 + (arg // 26) % 26))
                    break
    return bytes(buf)


def check(path: Path, settled: bool, max_bytes: int | None = None) -> str:
    """Read one case; returns the outcome ('instance', 'incomplete' or the rejection reason) or raises
    AssertionError for an undeclared exception or a detail quoting the file."""
    from appliance.ingest.reader import (
        DEFAULT_MAX_INSTANCE_BYTES,
        REJECT_REASONS,
        IncompleteFile,
        RejectedFile,
        read_instance,
    )

    try:
        read_instance(path, settled=settled, max_bytes=max_bytes or DEFAULT_MAX_INSTANCE_BYTES)
    except IncompleteFile:
        return "incomplete"
    except RejectedFile as exc:
        assert exc.reason in REJECT_REASONS, exc.reason
        for canary in (CANARY_NAME, CANARY_ID, "CANARY"):
            assert canary not in exc.detail, f"the detail quotes the file: {exc.detail!r}"
        return exc.reason
    return "instance"


def main() -> None:
    """A long run by hand: python tests/reader_fuzz.py [cases] (random, seeded by SCANSIDE_FUZZ_SEED)."""
    import random
    import sys
    import tempfile
    from collections import Counter

    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(int(os.environ.get("SCANSIDE_FUZZ_SEED", "1")))
    corpus = seeds()
    outcomes: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.dcm"
        for i in range(cases):
            ops = [(rng.randrange(OPS), rng.randrange(1 << 31), rng.randrange(1 << 16))
                   for _ in range(rng.randint(1, 6))]
            data = mutate(rng.choice(corpus), ops)
            path.write_bytes(data)
            try:
                outcomes[check(path, settled=bool(i % 2))] += 1
            except Exception:
                (Path(tmp).parent / f"scanside-fuzz-failure-{i}.dcm").write_bytes(data)
                raise
    print(dict(outcomes.most_common()))


if __name__ == "__main__":
    main()
