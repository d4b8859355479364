"""The JUnit report a CI dashboard reads: a run that exits 3 or 4 is not green. One test case
a task, then one for the landing of the results and one for verify; an allowed failure is a
skipped case with its output."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from support.repo import make_repo
from support.sandbox import Sandbox
from support.tasks import tasks_toml


def _report(box: Sandbox, repo: Path, tmp_path: Path) -> tuple[int, ET.Element]:
    report = tmp_path / "report.xml"
    ran = box.cli("run", "-q", "--junit", report, repo / "tasks.toml", cwd=repo)
    return ran.code, ET.parse(report).getroot()


def _case(suite: ET.Element, name: str) -> ET.Element:
    return next(c for c in suite.iter("testcase") if c.get("name") == name)


def test_a_conflict_fails_the_landing_case_with_its_files(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"one": {"cmd": "echo one >> shared.txt"}, "two": {"cmd": "echo two >> shared.txt"}},
                       on_conflict="fail")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "shared.txt": "base\n"})

    code, suite = _report(box, repo, tmp_path)

    assert code == 3
    assert suite.get("failures") == "1" and suite.get("tests") == "3"
    failure = _case(suite, "landing").find("failure")
    assert failure is not None and "shared.txt" in failure.get("message", "")
    assert _case(suite, "one").find("failure") is None


def test_a_verify_failure_fails_the_verify_case_and_names_the_culprit(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"good": {"cmd": "echo good > good.txt", "writes": ["good.txt"]},
                        "breaker": {"cmd": "echo oops > broken.txt", "writes": ["broken.txt"]}},
                       verify="test ! -e broken.txt")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    code, suite = _report(box, repo, tmp_path)

    assert code == 4
    assert suite.get("failures") == "1"
    failure = _case(suite, "verify").find("failure")
    assert failure is not None and "breaker" in failure.get("message", "")
    assert _case(suite, "landing").find("failure") is None


def test_a_clean_run_has_passing_landing_and_verify_cases(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"good": {"cmd": "echo good > good.txt", "writes": ["good.txt"]}}, verify="true")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    code, suite = _report(box, repo, tmp_path)

    assert code == 0
    assert [c.get("name") for c in suite.iter("testcase")] == ["good", "landing", "verify"]
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"


def test_an_allowed_failure_is_a_skipped_case_with_its_output(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"flaky": {"cmd": "echo it broke; exit 2", "allow_failure": True}}, isolation="none")
    work = tmp_path / "work"
    work.mkdir()
    (work / "tasks.toml").write_text(tasks)

    code, suite = _report(box, work, tmp_path)

    assert code == 0
    skipped = _case(suite, "flaky").find("skipped")
    assert skipped is not None and "allowed" in skipped.get("message", "")
    assert "it broke" in (skipped.text or "")
    assert suite.get("failures") == "0" and suite.get("skipped") == "1"
