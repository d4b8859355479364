"""What `novaproc run` shows: plain lines off a terminal, JSON events, the quiet view, the
summary and its speedup, the JUnit report, NO_COLOR, and the live view under a pseudo-terminal.
The formatting helpers of novaproc.progress are checked directly as well."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import termios
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.cli import spawn_cli
from support.runs import nova
from support.tasks import RUN_TABLE, task, write_tasks

from novaproc.cli.text import format_duration
from novaproc.cli.views import last_line, output_end, summary_json, summary_table, write_junit
from novaproc.inputs.taskfile import Task
from novaproc.messages import TaskState
from novaproc.run.outcome import RunOutcome, TaskRecord

ANSI = re.compile(r"\x1b[\[\]()#;?]*[0-9;]*[A-Za-z]?")
SGR = re.compile(r"\x1b\[([0-9;]*)m")
SPEEDUP_LINE = re.compile(r"^wall \S+, task time \S+, speedup (\d+\.\d\d)x \(estimated \d+\.\dx\)$")


def mixed(tmp_path: Path) -> str:
    """A run with something of everything: done, failed, skipped, a retry and a warning."""
    counter = tmp_path / "count"
    flaky = f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 2 ]"
    return (RUN_TABLE + task("good", "echo fine; sleep 0.2") + task("bad", "echo oops >&2; exit 3")
            + task("after_bad", "true", depends_on=["bad"]) + task("flaky", flaky, retries=1)
            + task("slow", "sleep 30", timeout=0.3))


def journal_events(result) -> list[dict]:
    (run,) = result.runs()
    lines = (run / "events.jsonl").read_text().splitlines()[1:]  # after the header
    return [json.loads(line) for line in lines]


def color_codes(text: str) -> list[str]:
    """SGR parameters that set a foreground or background colour."""
    found = []
    for params in SGR.findall(text):
        for p in params.split(";"):
            if p.isdigit() and (30 <= int(p) <= 48 or 90 <= int(p) <= 107):
                found.append(p)
    return found


# ---------------------------------------------------------------- plain


def test_plain_output_has_one_line_per_event_and_no_escapes(tmp_path):
    result = nova(tmp_path, mixed(tmp_path), json_output=False)
    assert result.code == 1, result
    assert not ANSI.search(result.out) and not ANSI.search(result.err)
    assert "\r" not in result.out
    lines = result.out.splitlines()
    assert lines[0].startswith(f"novaproc: run {result.runs()[0].name}: 5 task(s)")
    state_lines = [ln for ln in lines if re.match(r"^\[\d+/\d+\] ", ln)]
    events = [e for e in journal_events(result) if e["event"] == "task_state"]
    shown = [[word.rstrip(":") for word in ln.split()[1:3]] for ln in state_lines]
    assert shown == [[e["state"], e["task"]] for e in events]
    assert state_lines[-1].startswith("[5/5] ")
    assert any(re.match(r"^\[\d/5\] failed +bad in \S+: exit code 3$", ln) for ln in state_lines)
    assert any(re.match(r"^\[\d/5\] skipped +after_bad: bad failed$", ln) for ln in state_lines)
    assert any(re.match(r"^\[\d/5\] running +flaky \(attempt 2\)$", ln) for ln in state_lines)
    assert "timed out" in result.err  # warnings go to stderr, one line each
    assert all(ln.startswith("novaproc: ") for ln in result.err.splitlines())


def test_plain_summary_table_and_speedup_line(tmp_path):
    result = nova(tmp_path, RUN_TABLE + task("a", "sleep 0.3") + task("b", "exit 2"), json_output=False)
    lines = result.out.splitlines()
    header = lines.index(next(ln for ln in lines if ln.startswith("Task ")))
    assert lines[header].split() == ["Task", "Status", "Attempts", "Duration"]
    rows = lines[header + 1:-1]
    assert rows[0].split()[:3] == ["b", "failed", "1"]  # failures first
    assert rows[0].endswith("exit code 2")
    assert rows[1].split()[:3] == ["a", "done", "1"]
    assert SPEEDUP_LINE.match(lines[-1]), lines[-1]


def test_no_color_is_honoured_off_a_terminal(tmp_path):
    result = nova(tmp_path, mixed(tmp_path), json_output=False, env={"NO_COLOR": "1"})
    assert result.code == 1
    assert not ANSI.search(result.out + result.err)


# ---------------------------------------------------------------- JSON


def test_json_lines_all_parse_carry_the_run_id_and_end_in_a_summary(tmp_path):
    result = nova(tmp_path, mixed(tmp_path))
    assert result.code == 1, result
    events = result.lines()  # every line parses
    run_id = result.runs()[0].name
    assert all(e["run_id"] == run_id for e in events)
    assert events[0]["event"] == "run_started"
    assert events[-2]["event"] == "run_finished" and events[-1]["event"] == "summary"
    assert any(e["event"] == "message" and "timed out" in e["text"] for e in events)
    assert not ANSI.search(result.out)
    assert result.err == ""  # warnings are events here, not stderr lines
    summary = events[-1]
    assert summary["exit_code"] == 1
    assert {tid: t["state"] for tid, t in summary["tasks"].items()} == {
        "good": "done", "bad": "failed", "after_bad": "skipped", "flaky": "done", "slow": "failed"}
    assert summary["tasks"]["flaky"]["attempts"] == 2
    assert "timed out" in summary["tasks"]["slow"]["error"]


def test_summary_speedup_is_task_time_over_the_tasks_wall(tmp_path):
    text = RUN_TABLE + "".join(task(f"t{i}", "sleep 0.4") for i in range(3))
    result = nova(tmp_path, text, "-j", "3")
    assert result.code == 0, result
    s = result.summary()
    durations = [t["duration"] for t in s["tasks"].values()]
    assert s["task_time"] == pytest.approx(sum(durations), abs=0.005)
    assert 0.4 <= s["times"]["tasks"] <= s["wall"]  # landing and verify are apart
    assert s["speedup"] == pytest.approx(s["task_time"] / s["times"]["tasks"], abs=0.011)
    assert all(d >= 0.4 for d in durations)
    finished = result.lines()[-2]
    assert (finished["wall"], finished["task_time"], finished["speedup"]) == (
        s["wall"], s["task_time"], s["speedup"])


def test_plain_speedup_matches_the_recorded_times(tmp_path):
    text = RUN_TABLE + "".join(task(f"t{i}", "sleep 0.3") for i in range(2))
    result = nova(tmp_path, text, json_output=False)
    assert result.code == 0, result
    shown = float(SPEEDUP_LINE.match(result.out.splitlines()[-1]).group(1))
    finished = next(e for e in journal_events(result) if e["event"] == "run_finished")
    assert shown == finished["speedup"] >= finished["task_time"] / finished["wall"] - 0.011


# ---------------------------------------------------------------- quiet, JUnit


def test_quiet_prints_only_the_summary_and_errors(tmp_path):
    result = nova(tmp_path, mixed(tmp_path), "-q", json_output=False)
    assert result.code == 1, result
    lines = result.out.splitlines()
    assert lines[0].split() == ["Task", "Status", "Attempts", "Duration"]
    run_id = result.runs()[0].name
    # header, one row per task, the end of the failed task's output, the speedup line
    assert lines[6:-1] == ["bad failed; the end of its output:", "    | oops",
                           f"    (all its output: novaproc logs {run_id} bad)"]
    assert SPEEDUP_LINE.match(lines[-1])
    assert not any(re.match(r"^\[\d+/\d+\]", ln) or ln.startswith("novaproc: run") for ln in lines)
    assert "timed out" in result.err


def test_quiet_success_prints_only_the_summary(tmp_path):
    result = nova(tmp_path, RUN_TABLE + task("a", "echo hidden"), "--quiet", json_output=False)
    assert result.code == 0, result
    assert result.err == ""
    assert len(result.out.splitlines()) == 3 and "hidden" not in result.out


def test_junit_report_parses_and_has_a_failure_for_a_failed_task(tmp_path):
    report = tmp_path / "out" / "junit.xml"
    report.parent.mkdir()
    result = nova(tmp_path, mixed(tmp_path), "--junit", str(report))
    assert result.code == 1, result
    suite = ET.parse(report).getroot()
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert sorted(cases) == ["after_bad", "bad", "flaky", "good", "slow"]
    failure = cases["bad"].find("failure")
    assert failure is not None and "exit code 3" in failure.get("message")
    assert "oops" in failure.text  # the tail of its log
    assert cases["slow"].find("failure") is not None
    assert cases["after_bad"].find("skipped") is not None
    assert cases["good"].find("failure") is None and cases["good"].find("skipped") is None
    assert float(cases["good"].get("time")) >= 0.2


def test_junit_report_stays_valid_xml_when_the_output_has_colours_and_control_bytes(tmp_path):
    report = tmp_path / "junit.xml"
    noisy = r"printf '\033[31mFAILED\033[0m \001\013\014\037 end\n'; exit 1"
    result = nova(tmp_path, RUN_TABLE + task("colour", noisy), "--junit", str(report))
    assert result.code == 1, result
    failure = ET.parse(report).getroot().find("testcase/failure")  # parses: no invalid characters
    assert failure is not None and "FAILED  end" in failure.text
    assert "\x1b" not in failure.text and "[31m" not in failure.text


def test_last_line_shows_output_as_text_not_as_terminal_commands(tmp_path):
    log = tmp_path / "t.log"
    log.write_bytes(b"first\n\x1b[2J\x1b[H\x1b[32mPASSED\x1b[0m 3 tests\r\n\n")
    assert last_line(log) == "PASSED 3 tests"
    log.write_bytes("é".encode() * 300 + b"\n")  # 600 bytes: the last 512 start mid-character
    assert last_line(log) == "é" * 120


def test_a_junit_path_that_cannot_be_written_is_bad_usage(tmp_path):
    ran = tmp_path / "ran"
    result = nova(tmp_path, RUN_TABLE + task("a", f"touch {ran}"), "--junit",
                  str(tmp_path / "no-such-folder" / "junit.xml"), json_output=False)
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert result.code == 2, result
    assert not ran.exists()


def test_a_reader_that_goes_away_does_not_hide_a_failure(tmp_path):
    path = write_tasks(tmp_path, RUN_TABLE + task("late_failure", "sleep 0.5; exit 1"))
    report = tmp_path / "junit.xml"
    proc = spawn_cli("run", path, "--junit", report, cwd=tmp_path,
                     env={"NOVA_STATE_DIR": str(tmp_path / "state")}, stderr=subprocess.DEVNULL, text=False)
    assert proc.stdout.readline().startswith(b"novaproc: run ")
    proc.stdout.close()  # like `novaproc run tasks.toml | head -1`
    assert proc.wait(60) == 1
    assert report.exists()


# ---------------------------------------------------------------- live view on a terminal


def run_in_pty(tmp_path: Path, text: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, stdout and stderr; return (exit, output)."""
    path = write_tasks(tmp_path, text)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    # the caller's shell must not decide the colour test: its NO_COLOR is dropped
    proc = spawn_cli("run", path, cwd=tmp_path, drop_env=["NO_COLOR"],
                     env={"NOVA_STATE_DIR": str(tmp_path / "state"), "TERM": "xterm-256color", **(env or {})},
                     stdin=slave, stdout=slave, stderr=slave, text=False, start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode("utf-8", "replace")


LIVE_TASKS = (RUN_TABLE + "resources = {db = 1}\n"
              + task("talker", "echo line-from-talker; sleep 1", resources=["db"])
              + task("second", "sleep 0.1", resources=["db"]))


def test_live_view_on_a_terminal_finishes_with_the_summary(tmp_path):
    code, out = run_in_pty(tmp_path, LIVE_TASKS)
    assert code == 0, out
    assert "line-from-talker" in out  # a running task's last line of output is shown
    assert "/2]" in out  # the [i/N] counter
    assert "resource db in use" in out  # why a task waits
    plain = ANSI.sub("", out)
    assert re.search(r"speedup \d+\.\d\dx", plain)
    tail = [ln.strip() for ln in plain.replace("\r", "\n").splitlines() if ln.strip()]
    assert SPEEDUP_LINE.match(tail[-1]), tail[-3:]


def test_live_view_colours_a_failure_unless_no_color(tmp_path):
    text = RUN_TABLE + task("bad", "sleep 0.3; exit 2") + task("good", "sleep 0.6")
    code, out = run_in_pty(tmp_path, text)
    assert code == 1, out
    assert color_codes(out), "expected a coloured failure line on a terminal"
    code, out = run_in_pty(tmp_path, text, env={"NO_COLOR": "1"})
    assert code == 1, out
    assert color_codes(out) == []
    assert "speedup" in out


def test_live_view_shows_bracketed_output_and_errors_as_text_not_markup(tmp_path):
    module = 'def fail():\n    raise ValueError("bad [/x] value, see [tasks.f]")\n'
    (tmp_path / "brackets.py").write_text(module)
    text = (RUN_TABLE + task("talk", "echo 'step [/y] half'; sleep 1")
            + '[tasks.f]\ncall = "brackets:fail"\n')
    code, out = run_in_pty(tmp_path, text)
    assert code == 1 and "internal error" not in out, out  # "[/y]" once failed rich's render
    plain = ANSI.sub("", out)
    assert "step [/y] half" in plain  # the running task's last line, as printed
    assert "bad [/x] value, see [tasks.f]" in plain  # the failure, nothing taken for a style


# ---------------------------------------------------------------- formatting helpers


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0.0s"), (0.42, "0.4s"), (9.94, "9.9s"), (12.4, "12s"), (59.4, "59s"), (154, "2m34s"),
    (3599, "59m59s"), (3720, "1h02m"), (36000, "10h00m"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def outcome_of(states: dict[str, str], *, wall: float = 2.0) -> RunOutcome:
    records = {}
    for tid, state in states.items():
        rec = TaskRecord(Task(id=tid, cmd="true"), state=TaskState(state), attempts=1, run_time=1.0)
        if state == "failed":
            rec.exit_code, rec.error = 1, None
        records[tid] = rec
    return RunOutcome("abc123", 1, wall, float(len(states)), 1.5, records)


def test_summary_cuts_long_runs_and_counts_the_rest():
    states = {f"t{i:03d}": "done" for i in range(60)} | {"broken": "failed"}
    text = summary_table(outcome_of(states, wall=10.0))
    lines = text.splitlines()
    assert lines[1].startswith("broken") and "exit code 1" in lines[1]
    assert lines[-2] == "... and 21 more (21 done)"
    assert lines[-1] == "wall 10s, task time 1m01s, speedup 6.10x (estimated 1.5x)"


def test_summary_json_and_junit_from_an_outcome(tmp_path):
    outcome = outcome_of({"ok": "done", "no": "failed", "skip": "skipped"})
    data = summary_json(outcome)
    assert data["event"] == "summary" and data["run_id"] == "abc123"
    assert data["speedup"] == pytest.approx(data["task_time"] / data["wall"])
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "no.log").write_text("x" * 5000 + "the end\n")
    report = tmp_path / "junit.xml"
    write_junit(outcome, report, lambda tid: logs / f"{tid}.log")
    suite = ET.parse(report).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    failure = next(c for c in suite.iter("testcase") if c.get("name") == "no").find("failure")
    assert failure.text.endswith("the end\n") and len(failure.text) <= 4000


def test_the_end_of_a_failed_task_output_is_its_last_lines_as_text(tmp_path):
    log = tmp_path / "bad.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(15)) + b"10%\r55%\r100%\n\x1b[31mred\x1b[0m\n\n")
    end = output_end(lambda tid: tmp_path / f"{tid}.log", "r1", "bad")
    assert end == [*(f"| line {i}" for i in range(7, 15)), "| 100%", "| red",
                   "(all its output: novaproc logs r1 bad)"]
    assert output_end(lambda tid: tmp_path / f"{tid}.log", "r1", "quiet") == []  # no log: nothing


FAILING_TALKER = (RUN_TABLE + task("bad", "for i in $(seq 12); do echo out-$i; done; exit 3")
                  + task("ok", "true"))


def test_plain_view_and_summary_show_the_end_of_a_failure_and_where_the_rest_is(tmp_path):
    result = nova(tmp_path, FAILING_TALKER, json_output=False)
    assert result.code == 1, result
    lines, run_id = result.out.splitlines(), result.runs()[0].name
    failed = next(i for i, ln in enumerate(lines) if re.match(r"^\[\d/2\] failed +bad", ln))
    assert lines[failed + 1:failed + 12] == [*(f"    | out-{i}" for i in range(3, 13)),
                                             f"    (all its output: novaproc logs {run_id} bad)"]
    summary = lines.index("bad failed; the end of its output:")
    assert lines[summary + 10] == "    | out-12" and "out-2\n" not in result.out


def test_live_view_shows_the_end_of_a_failure(tmp_path):
    code, out = run_in_pty(tmp_path, FAILING_TALKER)
    assert code == 1, out
    plain = ANSI.sub("", out)
    assert "| out-12" in plain and "| out-3" in plain and "novaproc logs" in plain


def test_an_allowed_failure_says_so_in_its_line_and_the_summary(tmp_path):
    result = nova(tmp_path, RUN_TABLE + task("optional", "exit 2", allow_failure=True), json_output=False)
    assert result.code == 0, result
    assert re.search(r"^\[1/1\] failed +optional in \S+: exit code 2 \(allowed to fail\)$", result.out, re.M)
    row = next(line for line in result.out.splitlines() if line.startswith("optional "))
    assert row.split()[1:3] == ["failed", "(allowed)"]
