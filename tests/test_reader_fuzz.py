"""Fuzzing the header reader: every mutated file ends as an instance, 'incomplete', or a declared rejection.

A few thousand cases here (seconds); `SCANSIDE_FUZZ_EXAMPLES=100000 pytest tests/test_reader_fuzz.py` or
`python tests/reader_fuzz.py 100000` for a long run (docs/hardening.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reader_fuzz import OPS, check, mutate, seeds

EXAMPLES = int(os.environ.get("SCANSIDE_FUZZ_EXAMPLES", "2000"))
_CASE_DIR = Path(tempfile.mkdtemp(prefix="scanside-fuzz-"))

op = st.tuples(st.integers(0, OPS - 1), st.integers(0, 2**31 - 1), st.integers(0, 2**16 - 1))


def test_the_corpus_is_whole():
    corpus = seeds()
    assert len(corpus) >= 15  # three synthetic vendors and pydicom's files
    outcomes = set()
    for i, data in enumerate(corpus):
        path = _CASE_DIR / f"seed-{i}.dcm"
        path.write_bytes(data)
        outcomes.add(check(path, settled=True))
    assert "instance" in outcomes  # the seeds are mostly readable: mutations start from real files


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 10_000), ops=st.lists(op, min_size=1, max_size=6), settled=st.booleans(),
       small_limit=st.booleans())
def test_mutated_files_end_in_a_declared_outcome(seed, ops, settled, small_limit):
    corpus = seeds()
    path = _CASE_DIR / "case.dcm"
    path.write_bytes(mutate(corpus[seed % len(corpus)], ops))
    check(path, settled=settled, max_bytes=4096 if small_limit else None)
