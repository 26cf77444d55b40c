"""The evidence alert rules (deploy/prometheus/scanside-alerts.yml, group scanside-evidence) under promtool: the
file is valid and its unit tests (deploy/prometheus/tests/scanside-evidence.test.yml) pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_deploy_files import PROM_RULES, _without_annotations

TESTS = PROM_RULES.parent / "tests" / "scanside-evidence.test.yml"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH (Debian package 'prometheus' "
                                                         "provides it; .ci/run installs it)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)  # type: ignore[list-item]


def test_promtool_checks_the_rules():
    done = promtool("check", "rules", str(PROM_RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_evidence_alerts(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / PROM_RULES.name).write_text(_without_annotations(PROM_RULES.read_text(encoding="utf-8")),
                                            encoding="utf-8")
    shutil.copy(TESTS, tmp_path / "tests" / TESTS.name)
    done = promtool("test", "rules", str(tmp_path / "tests" / TESTS.name))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_can_fail(tmp_path):
    """A rule that never fires must fail them: the tests above are not vacuous."""
    (tmp_path / "tests").mkdir()
    text = PROM_RULES.read_text(encoding="utf-8").replace("(scanside_evidence_drifting) == 1",
                                                          "(scanside_evidence_drifting) == 2")
    (tmp_path / PROM_RULES.name).write_text(_without_annotations(text), encoding="utf-8")
    shutil.copy(TESTS, tmp_path / "tests" / TESTS.name)
    assert promtool("test", "rules", str(tmp_path / "tests" / TESTS.name)).returncode != 0
