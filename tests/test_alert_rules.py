"""Every alert rule in deploy/prometheus/scanside-alerts.yml under promtool's unit tests
(deploy/prometheus/tests/*.test.yml): they pass, and each alert has a test that sees it fire, shown by muting that
one alert (its expression replaced by one that never fires) and watching the tests fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_deploy_files import PROM_RULES, _without_annotations

TESTS = sorted((PROM_RULES.parent / "tests").glob("*.test.yml"))
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH (Debian package 'prometheus' "
                                                         "provides it; .ci/run installs it)")
NEVER = "vector(0) > 1"


def alerts(text: str) -> list[str]:
    return re.findall(r"(?m)^\s*- alert:\s*(\S+)\s*$", text)


def muted(text: str, alert: str) -> str:
    """The rules with `alert`'s expression (inline or a block scalar) replaced by one that never fires."""
    out, in_rule, done = [], False, False
    lines = iter(text.splitlines())
    for line in lines:
        m = re.match(r"^\s*- alert:\s*(\S+)\s*$", line)
        if m:
            in_rule = m.group(1) == alert
        e = re.match(r"^(\s*)expr:", line)
        if in_rule and e and not done:
            indent = len(e.group(1))
            out.append(f"{e.group(1)}expr: {NEVER}")
            done = True
            for following in lines:  # skip the block scalar's lines, keep the first line after it
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    out.append(following)
                    break
            continue
        out.append(line)
    assert done, f"no expr found for {alert}"
    return "\n".join(out) + "\n"


def run_tests(tmp_path: Path, rules_text: str, tests: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """promtool test rules on `tests` (file name -> text) against `rules_text` (annotations removed), laid out as in
    deploy/prometheus/."""
    (tmp_path / "tests").mkdir(parents=True, exist_ok=True)
    (tmp_path / PROM_RULES.name).write_text(_without_annotations(rules_text), encoding="utf-8")
    for name, text in tests.items():
        (tmp_path / "tests" / name).write_text(text, encoding="utf-8")
    return subprocess.run([PROMTOOL, "test", "rules", *(str(tmp_path / "tests" / name) for name in tests)],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=120)


def unit_tests_of(alert: str) -> dict[str, str]:
    """The test groups (`  - interval:` blocks under `tests:`) that name `alert`, with each file's header: muting one
    alert can only fail those, and the others (days of series at a 1 m evaluation) cost seconds each."""
    found = {}
    for path in TESTS:
        header, *groups = re.split(r"(?m)^(?=  - interval:)", path.read_text(encoding="utf-8"))
        mine = [g for g in groups if re.search(rf"(?m)^\s*alertname:\s*{alert}\s*$", g)]
        if mine:
            found[path.name] = header + "".join(mine)
    return found


def test_every_test_file_passes(tmp_path):
    assert len(TESTS) >= 2
    done = run_tests(tmp_path, PROM_RULES.read_text(encoding="utf-8"),
                     {t.name: t.read_text(encoding="utf-8") for t in TESTS})
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_test_that_sees_it_fire(tmp_path):
    text = PROM_RULES.read_text(encoding="utf-8")
    names = alerts(text)
    assert len(names) >= 13 and len(names) == len(set(names))
    untested = [name for name in names if not unit_tests_of(name)]
    assert not untested, f"alerts without a unit test: {untested}"
    still_passing = []
    for name in names:  # muting one alert can only fail the files that test it
        changed = muted(text, name)
        assert changed.count(NEVER) == 1 and alerts(changed) == names
        if run_tests(tmp_path / name, changed, unit_tests_of(name)).returncode == 0:
            still_passing.append(name)
    assert not still_passing, f"the unit tests pass even with these alerts muted: {still_passing}"
