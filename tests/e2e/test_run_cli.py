"""`python -m novaproc run` end to end: the real CLI in a subprocess, tasks files in tmp_path
(outside any git repository, so isolation is "none"), a private NOVA_STATE_DIR. Order and
overlap come from timestamps the tasks record themselves; processes left behind are found by
a unique marker in their command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import run_cli, spawn_cli
from support.processes import assert_gone, marker
from support.runs import nova
from support.stamps import max_overlap, read_stamps, stamp_cmd, stamped
from support.tasks import RUN_TABLE, call_task, task, write_tasks

# RUN_TABLE (support.tasks): no CPU/memory throttle, so a busy CI machine does not serialise tasks
# whose overlap is asserted


# ---------------------------------------------------------------- helpers


def starts_before(spans, first: str, then: str) -> bool:
    return spans[first][-1][1] <= spans[then][0][0]


# ---------------------------------------------------------------- parallelism


def test_tasks_overlap_when_slots_allow_but_never_beyond_max_parallel(tmp_path):
    stamps = tmp_path / "stamps"
    result = nova(tmp_path, RUN_TABLE + stamped(stamps, [f"t{i}" for i in range(6)], 0.5), "-j", "3")
    assert result.code == 0, result
    spans = read_stamps(stamps)
    assert len(spans) == 6
    assert 2 <= max_overlap(spans) <= 3


def test_max_parallel_1_from_the_environment_runs_one_at_a_time(tmp_path):
    stamps = tmp_path / "stamps"
    result = nova(tmp_path, RUN_TABLE + stamped(stamps, ["a", "b", "c", "d"], 0.2),
                  env={"NOVA_MAX_PARALLEL": "1"})
    assert result.code == 0, result
    spans = read_stamps(stamps)
    assert len(spans) == 4
    assert max_overlap(spans) == 1


def test_the_flag_overrides_the_environment(tmp_path):
    stamps = tmp_path / "stamps"
    result = nova(tmp_path, RUN_TABLE + stamped(stamps, ["a", "b", "c"], 0.2), "-j", "1",
                  env={"NOVA_MAX_PARALLEL": "3"})
    assert result.code == 0, result
    assert max_overlap(read_stamps(stamps)) == 1
    assert result.lines()[0]["max_parallel"] == 1


# ---------------------------------------------------------------- DAG, failures, retries


def test_a_dag_runs_in_dependency_order_with_independent_branches_together(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + stamped(stamps, ["a"], 0.1)
            + stamped(stamps, ["b", "c"], 0.5, depends_on=["a"])
            + stamped(stamps, ["d"], 0.1, depends_on=["b", "c"]))
    result = nova(tmp_path, text)
    assert result.code == 0, result
    spans = read_stamps(stamps)
    assert starts_before(spans, "a", "b") and starts_before(spans, "a", "c")
    assert starts_before(spans, "b", "d") and starts_before(spans, "c", "d")
    assert max_overlap({k: spans[k] for k in ("b", "c")}) == 2
    assert result.lines()[0]["strategy"] == "dag"


def test_dependents_of_a_failure_are_skipped_and_independent_work_goes_on(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + task("broken", "exit 3")
            + stamped(stamps, ["child"], 0.05, depends_on=["broken"])
            + stamped(stamps, ["grandchild"], 0.05, depends_on=["child"])
            + stamped(stamps, ["other"], 0.3)
            + stamped(stamps, ["after_other"], 0.05, depends_on=["other"]))
    result = nova(tmp_path, text)
    assert result.code == 1, result
    assert result.states() == {"broken": "failed", "child": "skipped", "grandchild": "skipped",
                               "other": "done", "after_other": "done"}
    assert sorted(read_stamps(stamps)) == ["after_other", "other"]
    assert result.tasks()["broken"]["exit_code"] == 3


def test_fail_fast_terminates_running_tasks_and_cancels_queued_ones(tmp_path):
    mark, stamps = marker(), tmp_path / "stamps"
    started = tmp_path / "long-started"
    text = (RUN_TABLE + task("breaks", f"while [ ! -e {started} ]; do sleep 0.05; done; exit 1")
            + task("long", f"touch {started}; sleep {mark}")
            + stamped(stamps, ["queued1", "queued2"], 0.05))
    result = nova(tmp_path, text, "--fail-fast", "-j", "2")
    assert result.code == 1, result
    assert result.states() == {"breaks": "failed", "long": "cancelled", "queued1": "cancelled",
                               "queued2": "cancelled"}
    assert not stamps.exists()
    assert_gone(mark)


def test_without_fail_fast_everything_independent_still_runs(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + task("breaks", "sleep 0.1; exit 1")
            + stamped(stamps, ["long"], 0.5) + stamped(stamps, ["queued1", "queued2"], 0.05))
    result = nova(tmp_path, text, "-j", "2")
    assert result.code == 1, result
    assert result.states() == {"breaks": "failed", "long": "done", "queued1": "done", "queued2": "done"}
    assert sorted(read_stamps(stamps)) == ["long", "queued1", "queued2"]


def test_fail_fast_from_the_run_table(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + "fail_fast = true\n" + task("breaks", "exit 1")
            + stamped(stamps, ["later"], 0.05, depends_on=[]))
    result = nova(tmp_path, text, "-j", "1")
    assert result.code == 1, result
    assert result.states() == {"breaks": "failed", "later": "cancelled"}
    assert not stamps.exists()


COUNTER = "n=$(cat {f} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {f}; echo attempt $n; [ $n -ge {ok} ]"


def test_a_retry_passes_on_the_second_attempt(tmp_path):
    counter = tmp_path / "count"
    result = nova(tmp_path, RUN_TABLE + task("flaky", COUNTER.format(f=counter, ok=2), retries=1))
    assert result.code == 0, result
    assert result.tasks()["flaky"]["attempts"] == 2
    assert result.tasks()["flaky"]["state"] == "done"
    assert counter.read_text().strip() == "2"
    log = result.log("flaky")
    assert "attempt 1" in log and "attempt 2" in log  # both attempts' output kept


def test_retries_run_out(tmp_path):
    counter = tmp_path / "count"
    result = nova(tmp_path, RUN_TABLE + task("hopeless", COUNTER.format(f=counter, ok=99), retries=2))
    assert result.code == 1, result
    rec = result.tasks()["hopeless"]
    assert rec["state"] == "failed" and rec["attempts"] == 3 and rec["exit_code"] == 1
    assert counter.read_text().strip() == "3"


def test_allow_failure_keeps_the_exit_code_zero(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + task("optional", "exit 4", allow_failure=True)
            + stamped(stamps, ["needs_optional"], 0.05, depends_on=["optional"])
            + stamped(stamps, ["main"], 0.05))
    result = nova(tmp_path, text)
    assert result.code == 0, result
    assert result.states() == {"optional": "failed", "needs_optional": "skipped", "main": "done"}
    assert sorted(read_stamps(stamps)) == ["main"]


def test_only_runs_the_named_tasks_and_their_dependencies(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + stamped(stamps, ["base"], 0.05)
            + stamped(stamps, ["mid"], 0.05, depends_on=["base"])
            + stamped(stamps, ["top"], 0.05, depends_on=["mid"])
            + stamped(stamps, ["unrelated"], 0.05)
            + stamped(stamps, ["wanted"], 0.05))
    result = nova(tmp_path, text, "--only", "mid", "wanted")
    assert result.code == 0, result
    assert sorted(result.tasks()) == ["base", "mid", "wanted"]
    spans = read_stamps(stamps)
    assert sorted(spans) == ["base", "mid", "wanted"]
    assert starts_before(spans, "base", "mid")


def test_only_before_the_tasks_file_leaves_the_file_alone(tmp_path):
    path = write_tasks(tmp_path, RUN_TABLE + task("a", "true") + task("b", "true"))
    for args in (["--only", "b", path], ["--only", "a", "b", path], [path, "--only", "b"]):
        proc = run_cli("run", "--json", *args, cwd=tmp_path, env={"NOVA_STATE_DIR": str(tmp_path / "s")})
        assert proc.returncode == 0, (args, proc.stderr)
    assert run_cli("run", "--only", "b", cwd=tmp_path).returncode == 2  # no file at all: said so


def test_only_with_an_unknown_id_is_bad_usage(tmp_path):
    stamps = tmp_path / "stamps"
    result = nova(tmp_path, RUN_TABLE + stamped(stamps, ["build"], 0.05), "--only", "biuld")
    assert result.code == 2, result
    assert "biuld" in result.err and "build" in result.err
    assert not stamps.exists() and result.runs() == []


@pytest.mark.parametrize("as_json", [False, True])
def test_dry_run_runs_nothing(tmp_path, as_json):
    stamps = tmp_path / "stamps"
    text = RUN_TABLE + stamped(stamps, ["a"], 0.05) + stamped(stamps, ["b"], 0.05, depends_on=["a"])
    result = nova(tmp_path, text, "--dry-run", json_output=as_json)
    assert result.code == 0, result
    if as_json:
        plan = json.loads(result.out)
        assert plan["layers"] == [["a"], ["b"]]
    else:
        assert "strategy" in result.out.lower()
    time.sleep(0.2)
    assert not stamps.exists()
    assert result.runs() == []


# ---------------------------------------------------------------- how a task runs


def test_an_argv_list_runs_without_a_shell(tmp_path):
    out = tmp_path / "argv.json"
    argv = [sys.executable, "-c", "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))",
            str(out), "two words", "$HOME", "*", "a;b", "`id`"]
    result = nova(tmp_path, RUN_TABLE + task("literal", argv))
    assert result.code == 0, result
    assert json.loads(out.read_text()) == [str(out), "two words", "$HOME", "*", "a;b", "`id`"]


def test_cwd_and_env_reach_the_task(tmp_path):
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    cmd = 'pwd > where; printf "%s|%s|%s" "$GREETING" "$NOVA_TASK_ID" "$NOVA_RUN_ID" > env.txt'
    result = nova(tmp_path, RUN_TABLE + task("placed", cmd, cwd="sub/dir",
                                             env={"GREETING": "hello there"}))
    assert result.code == 0, result
    folder = tmp_path / "sub" / "dir"
    assert Path((folder / "where").read_text().strip()).resolve() == folder.resolve()
    assert (folder / "env.txt").read_text() == f"hello there|placed|{result.summary()['run_id']}"


def test_output_goes_to_the_tasks_log_in_order(tmp_path):
    result = nova(tmp_path, RUN_TABLE + task("talky", "echo out1; echo err1 >&2; echo out2; exit 0"))
    assert result.code == 0, result
    (run,) = result.runs()
    assert run.name == result.summary()["run_id"]
    assert result.log("talky") == "out1\nerr1\nout2\n"


CALLS = '''
import os


def answer(x, y=0):
    print("computing", flush=True)
    return {"sum": x + y, "cwd": os.getcwd()}


def explode():
    raise RuntimeError("kaboom 31337")
'''


def test_a_call_task_records_its_return_value(tmp_path):
    (tmp_path / "tools.py").write_text(CALLS)
    result = nova(tmp_path, RUN_TABLE + call_task("compute", "tools:answer", args=[40], kwargs={"y": 2}))
    assert result.code == 0, result
    value = result.tasks()["compute"]["value"]
    assert value["sum"] == 42
    assert Path(value["cwd"]).resolve() == tmp_path.resolve()
    done = [e for e in result.lines() if e.get("task") == "compute" and e.get("state") == "done"]
    assert done and done[0]["value"]["sum"] == 42
    assert "computing" in result.log("compute")


def test_a_call_task_in_its_cwd_imports_from_there(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "localmod.py").write_text("import os\n\ndef here():\n    return os.getcwd()\n")
    result = nova(tmp_path, RUN_TABLE + call_task("local", "localmod:here", cwd="pkg"))
    assert result.code == 0, result
    assert Path(result.tasks()["local"]["value"]).resolve() == (tmp_path / "pkg").resolve()


def test_an_exception_fails_a_call_task_with_the_traceback_in_its_log(tmp_path):
    (tmp_path / "tools.py").write_text(CALLS)
    result = nova(tmp_path, RUN_TABLE + call_task("raises", "tools:explode"))
    assert result.code == 1, result
    assert result.tasks()["raises"]["state"] == "failed"
    assert "RuntimeError: kaboom 31337" in result.tasks()["raises"]["error"]
    log = result.log("raises")
    assert "Traceback (most recent call last)" in log and "kaboom 31337" in log
    assert "Traceback" not in result.err  # the user's traceback is not novaproc's


@pytest.mark.parametrize("cmd", [["no-such-program-71c2"], "no-such-program-71c2 --flag"])
def test_a_program_that_does_not_exist_fails_the_task(tmp_path, cmd):
    result = nova(tmp_path, RUN_TABLE + task("ghost", cmd) + task("fine", "true"))
    assert result.code == 1, result
    assert result.states() == {"ghost": "failed", "fine": "done"}
    assert "no-such-program-71c2" in result.log("ghost")
    if isinstance(cmd, list):
        assert "not found" in result.tasks()["ghost"]["error"]


def test_tasks_never_read_the_clis_stdin(tmp_path):
    (tmp_path / "reader.py").write_text("import sys\n\ndef slurp():\n    return sys.stdin.read()\n")
    path = write_tasks(tmp_path, RUN_TABLE + task("cat", "cat") + call_task("py", "reader:slurp"))
    out_path = tmp_path / "out.jsonl"
    with out_path.open("w") as out:
        proc = spawn_cli("run", path, "--json", cwd=tmp_path, env={"NOVA_STATE_DIR": str(tmp_path / "state")},
                         stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, text=False)
    try:  # stdin stays open and empty: a task reading it would wait forever
        code = proc.wait(60)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
    output = out_path.read_text()
    assert code == 0, output
    tasks = json.loads(output.splitlines()[-1])["tasks"]
    assert tasks["cat"]["state"] == tasks["py"]["state"] == "done"
    assert tasks["py"]["value"] == ""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # whatever the test runner was started with


def test_tasks_start_with_default_signal_handling(tmp_path):
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    path = write_tasks(tmp_path, RUN_TABLE + task("probe", [sys.executable, "-c", probe]))
    proc = run_cli("run", path, "-q", cwd=tmp_path, env={"NOVA_STATE_DIR": str(tmp_path / "state")},
                   timeout=60, preexec_fn=_default_sigint)
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "state" / "runs").iterdir()
    assert (run / "logs" / "probe.log").read_text().strip() == "True"


def test_a_task_with_a_lot_of_output_finishes_and_keeps_it_all(tmp_path):
    cmd = [sys.executable, "-c", "import sys\nfor i in range(200000): print(f'line {i:07d}')"]
    result = nova(tmp_path, RUN_TABLE + task("loud", cmd))
    assert result.code == 0, result
    log = result.log("loud").splitlines()
    assert len(log) == 200000 and log[-1] == "line 0199999"


def test_many_short_tasks_each_run_exactly_once(tmp_path):
    runs = tmp_path / "runs.txt"
    text = RUN_TABLE + "".join(task(f"t{i:03d}", f"echo {i} >> {runs}") for i in range(150))
    result = nova(tmp_path, text, "-j", "4")
    assert result.code == 0, result
    assert sorted(map(int, runs.read_text().split())) == list(range(150))
    assert set(result.states().values()) == {"done"}
    ends = [e for e in result.lines() if e["event"] == "task_state" and e["state"] == "done"]
    assert len(ends) == 150


# ---------------------------------------------------------------- resources, cpu, conflicts


@pytest.mark.parametrize("where", ["run_table", "nova_toml"])
def test_tasks_sharing_a_resource_of_capacity_one_never_overlap(tmp_path, where):
    stamps = tmp_path / "stamps"
    table = RUN_TABLE
    if where == "run_table":
        table += "resources = {db = 1}\n"
    else:
        (tmp_path / "nova.toml").write_text("[resources]\ndb = 1\n")
    text = (table + stamped(stamps, ["db1", "db2", "db3"], 0.3, resources=["db"])
            + stamped(stamps, ["free"], 0.6))
    result = nova(tmp_path, text, "-j", "4")
    assert result.code == 0, result
    spans = read_stamps(stamps)
    assert max_overlap({k: spans[k] for k in ("db1", "db2", "db3")}) == 1
    assert max_overlap(spans) >= 2  # the task without the resource ran beside them


def test_a_task_with_cpu_2_at_j_2_runs_alone(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + stamped(stamps, ["small1"], 0.4) + stamped(stamps, ["heavy"], 0.3, cpu=2)
            + stamped(stamps, ["small2"], 0.4) + stamped(stamps, ["small3"], 0.4))
    result = nova(tmp_path, text, "-j", "2")
    assert result.code == 0, result
    spans = read_stamps(stamps)
    heavy_start, heavy_end = spans["heavy"][0]
    for tid in ("small1", "small2", "small3"):
        start, end = spans[tid][0]
        assert end <= heavy_start or start >= heavy_end, f"{tid} ran beside the cpu=2 task"
    smalls = {k: spans[k] for k in ("small1", "small2", "small3")}
    assert max_overlap(smalls) == 2


def test_tasks_writing_the_same_path_run_one_after_the_other_in_declared_order(tmp_path):
    stamps = tmp_path / "stamps"
    text = (RUN_TABLE + task("first", stamp_cmd(stamps, 0.3, "exit 1"), writes=["shared/"])
            + stamped(stamps, ["second"], 0.3, writes=["shared/data.txt"])
            + stamped(stamps, ["elsewhere"], 0.3, writes=["other/"]))
    result = nova(tmp_path, text, "-j", "3")
    assert result.code == 1, result
    # an ordering edge, not a dependency: the failure of the first does not skip the second
    assert result.states() == {"first": "failed", "second": "done", "elsewhere": "done"}
    spans = read_stamps(stamps)
    assert starts_before(spans, "first", "second")
    assert max_overlap({k: spans[k] for k in ("first", "elsewhere")}) == 2


# ---------------------------------------------------------------- timeouts


def test_a_timeout_kills_the_whole_tree_including_setsid_grandchildren(tmp_path):
    mark = marker()
    cmd = f"sleep {mark} & setsid sleep {mark} & sh -c 'sleep {mark}' & sleep {mark}; wait"
    result = nova(tmp_path, RUN_TABLE + task("hangs", cmd, timeout=0.5) + task("quick", "true"))
    assert result.code == 1, result
    assert result.states() == {"hangs": "failed", "quick": "done"}
    assert "timed out" in result.tasks()["hangs"]["error"]
    assert_gone(mark)


def test_a_task_that_traps_sigterm_is_killed_after_the_grace_period(tmp_path):
    mark = marker()
    got_term = tmp_path / "got-term"
    # `wait` (unlike a foreground child) lets the trap run at once; the sleep ignores SIGTERM
    cmd = f"trap 'echo TERM >> {got_term}' TERM; (trap '' TERM; exec sleep {mark}) & wait; wait"
    result = nova(tmp_path, RUN_TABLE + task("stubborn", cmd, timeout=0.3))
    assert result.code == 1, result
    rec = result.tasks()["stubborn"]
    assert rec["state"] == "failed" and "timed out" in rec["error"]
    assert got_term.read_text().startswith("TERM")  # asked politely first
    assert rec["duration"] >= 0.3 + 0.9  # then killed once kill_grace (1 s) ran out
    assert_gone(mark)


def test_timeout_with_retries_retries_a_timed_out_attempt(tmp_path):
    counter = tmp_path / "count"
    cmd = f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; " \
          "[ $n -ge 2 ] || sleep 30"
    result = nova(tmp_path, RUN_TABLE + task("slow_once", cmd, timeout=0.5, retries=1))
    assert result.code == 0, result
    assert result.tasks()["slow_once"]["attempts"] == 2


SLOW_CALL = '''
import subprocess
import time


def linger(mark):
    subprocess.Popen(["sleep", mark])
    subprocess.Popen(["setsid", "sleep", mark])
    time.sleep(60)
'''


def test_a_timeout_kills_a_call_task_and_what_it_started(tmp_path):
    mark = marker()
    (tmp_path / "slow.py").write_text(SLOW_CALL)
    result = nova(tmp_path, RUN_TABLE + call_task("lingers", "slow:linger", args=[mark], timeout=0.5))
    assert result.code == 1, result
    rec = result.tasks()["lingers"]
    assert rec["state"] == "failed" and "timed out" in rec["error"]
    assert_gone(mark)


# ---------------------------------------------------------------- exit code 2: nothing runs


def test_a_timeout_longer_than_a_poll_can_wait_is_no_crash(tmp_path):
    # poll() takes at most 2**31-1 ms, about 24.8 days; 600 hours is more
    result = nova(tmp_path, RUN_TABLE + task("a", "sleep 0.2", timeout="600h") + task("b", "true"))
    assert result.code == 0, result
    assert result.states() == {"a": "done", "b": "done"}


BAD_FILES = {
    "syntax": "[tasks.a\ncmd = 'touch {ran}'\n",
    "unknown_field": "[tasks.a]\ncmd = 'touch {ran}'\ntimout = 5\n",
    "unknown_dependency": "[tasks.a]\ncmd = 'touch {ran}'\ndepends_on = ['b']\n",
    "cycle": "[tasks.a]\ncmd = 'touch {ran}'\ndepends_on = ['b']\n[tasks.b]\ncmd = 'true'\n"
             "depends_on = ['a']\n",
    "both_cmd_and_call": "[tasks.a]\ncmd = 'touch {ran}'\ncall = 'm:f'\n",
    "bad_setting": "[run]\nmax_paralel = 2\n[tasks.a]\ncmd = 'touch {ran}'\n",
    "no_tasks": "[run]\nmax_parallel = 2\n",
    "array_of_tasks": "[[tasks]]\ncmd = 'touch {ran}'\n",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_an_invalid_tasks_file_exits_2_and_runs_nothing(tmp_path, case):
    ran = tmp_path / "ran"
    result = nova(tmp_path, BAD_FILES[case].format(ran=ran))
    assert result.code == 2, result
    assert "tasks.toml" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert result.out == ""
    assert not ran.exists()
    assert result.runs() == []


def test_an_array_of_tasks_is_named_as_the_mistake(tmp_path):
    result = nova(tmp_path, BAD_FILES["array_of_tasks"].format(ran=tmp_path / "ran"))
    assert result.code == 2 and "[[tasks]]" in result.err and "[tasks.<id>]" in result.err, result


@pytest.mark.parametrize("args", [["-j", "0"], ["--bogus"], ["--json", "--quiet"]])
def test_bad_arguments_exit_2_and_run_nothing(tmp_path, args):
    ran = tmp_path / "ran"
    result = nova(tmp_path, task("a", f"touch {ran}"), *args, json_output=False)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert not ran.exists() and result.runs() == []


def test_a_missing_tasks_file_exits_2(tmp_path):
    proc = run_cli("run", tmp_path / "nope.toml", cwd=tmp_path,
                   env={"NOVA_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 2, proc.stderr
    assert "nope.toml" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "state" / "runs").exists() or not any((tmp_path / "state" / "runs").iterdir())


@pytest.mark.parametrize("where", ["{file}", "{file}/below"])
def test_a_state_dir_where_a_file_is_exits_2_and_runs_nothing(tmp_path, where):
    (tmp_path / "a-file").write_text("")
    ran = tmp_path / "ran"
    state = where.format(file=tmp_path / "a-file")
    result = nova(tmp_path, task("a", f"touch {ran}"), env={"NOVA_STATE_DIR": state})
    assert result.code == 2, result
    assert f"the state dir {state}" in result.err and "Traceback" not in result.err
    assert any(why in result.err for why in ("is not a folder", "Not a directory", "File exists"))
    assert not ran.exists()
    background = run_cli("run", tmp_path / "tasks.toml", "--background", cwd=tmp_path,
                         env={"NOVA_STATE_DIR": state})
    assert background.returncode == 2 and background.stdout == "", background
    assert background.stderr.count("novaproc: error:") == 1, background.stderr  # said once


def test_bad_max_parallel_in_the_environment_exits_2(tmp_path):
    ran = tmp_path / "ran"
    result = nova(tmp_path, task("a", f"touch {ran}"), env={"NOVA_MAX_PARALLEL": "lots"})
    assert result.code == 2, result
    assert "NOVA_MAX_PARALLEL" in result.err
    assert not ran.exists() and result.runs() == []
