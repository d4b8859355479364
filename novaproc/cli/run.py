"""The commands that run or plan a tasks file: `plan`, `run`, `resume`, and their options.

`each` writes a tasks file and runs it with `cmd_run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novaproc.cli.text import EXIT_CODES
from novaproc.errors import ConfigError, ExitCode, UsageError

if TYPE_CHECKING:
    from novaproc.inputs.settings import Settings
    from novaproc.inputs.taskfile import TaskFile
    from novaproc.planning.plan import Memo, Ordering, Plan


def add_plan(sub: Any) -> None:
    p = sub.add_parser("plan", help="show how a tasks file would run; runs nothing",
                       description="Show the strategy, reason, safety level, estimated speedup, "
                       "layers and conflicts of a tasks file. Runs nothing.")
    p.add_argument("tasks", type=Path, nargs="?", help="the tasks file (TOML)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-j", "--max-parallel", type=_positive, metavar="N", help="slots to plan for")
    p.add_argument("--only", nargs="+", metavar="ID", help="plan these tasks and what they need")
    p.add_argument("--config", type=Path, help="settings file (default: nova.toml at the root)")
    p.set_defaults(handler=cmd_plan)


def add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run a tasks file", description="Run the tasks of a file in "
                       "parallel, as the plan allows; see `plan` for what it would do.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tasks", type=Path, nargs="?", help="the tasks file (TOML)")
    p.add_argument("--only", nargs="+", metavar="ID", help="run these tasks and what they need")
    add_run_options(p)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)  # a file `each` wrote: its repository
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # a background run's child
    p.set_defaults(handler=cmd_run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of `run`, shared by `each`."""
    p.add_argument("-j", "--max-parallel", type=_positive, metavar="N", help="at most N tasks at once")
    p.add_argument("--fail-fast", action="store_true", default=None,
                   help="stop everything at the first failure")
    p.add_argument("--no-merge", action="store_true", help="leave each task's results on its branch")
    p.add_argument("--no-verify", action="store_true", help="land the results without running verify")
    p.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per event")
    output.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--if-busy", choices=("wait", "skip"), default="wait",
                   help="another run of this file is live: wait for it (default) or exit 75")
    p.add_argument("--background", action="store_true",
                   help="detach: print the run id and return at once (see status, logs, wait)")
    p.add_argument("--config", type=Path, help="settings file (default: nova.toml at the root)")


def run_flags(args: argparse.Namespace) -> dict[str, object]:
    """The settings that `run` options set (None: not given)."""
    return {"max_parallel": args.max_parallel, "fail_fast": args.fail_fast,
            "merge": "off" if args.no_merge else None, "verify": () if args.no_verify else None}


def add_resume(sub: Any) -> None:
    p = sub.add_parser("resume", help="continue a failed, cancelled or crashed run",
                       description="Continue a run: tasks that succeeded with an unchanged "
                       "definition keep their results; the rest run.", epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the run id (a unique prefix will do)")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")
    p.add_argument("--state-dir", type=Path, help="where runs are kept (default: .nova at the root)")
    p.set_defaults(handler=cmd_resume, junit=None)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def load_plan(tasks_path: Path, args: argparse.Namespace, flags: dict[str, object], *,
              strict: bool = True, root: Path | None = None, recorded: Sequence[str] | None = None):
    """Tasks file, settings, plan, and the repository's preflight (None for tasks run in place),
    with every input problem as a ConfigError or UsageError. Not `strict` (nothing will run):
    a repository a run would refuse is a warning of the plan. `recorded`: the tasks of the run
    being resumed; the plan keeps those the file still has (not tasks added to it since)."""
    from novaproc.inputs.cache import load_inputs
    from novaproc.planning.graph import CycleFound
    from novaproc.planning.plan import make_plan, select
    from novaproc.state.history import typical_durations

    taskfile, settings = load_inputs(tasks_path, config_file=getattr(args, "config", None), flags=flags,
                                     root=root)
    past = typical_durations(settings.state_path(taskfile.root), taskfile.path, taskfile.hashes)
    tasks = list(taskfile.tasks)
    if recorded is not None:
        args.only = [tid for tid in recorded if tid in taskfile.hashes] or None
    memo: Memo[Ordering] | None = None  # a selection's graph is not the file's
    try:
        if not getattr(args, "only", None):
            memo = _memo(taskfile)
        else:
            ids = taskfile.by_id()
            for tid in args.only:
                if tid not in ids and tid not in taskfile.templates:
                    from novaproc.errors import did_you_mean
                    raise UsageError(f"--only: unknown task {tid!r}{did_you_mean(tid, ids)}")
            tasks = select(tasks, [i for tid in args.only for i in taskfile.templates.get(tid, (tid,))])
        if settings.executor == "dask" and not taskfile.in_git:
            raise UsageError(f'executor = "dask" sends tasks to the cluster as commits: {taskfile.root} '
                             "is not in a git repository")
        isolation = settings.resolved_isolation(taskfile.in_git)
        if isolation == "worktree" and not taskfile.in_git:
            isolation = "none"
            fallback = (f'isolation "worktree" needs a git repository; {taskfile.root} is not in one, '
                        "so tasks run in place",)
        else:
            fallback = ()
        plan = make_plan(tasks, root=str(taskfile.root), slots=settings.max_parallel,
                         isolation=isolation, history=past, resources=settings.resources, memo=memo)
        checked, notes = None, fallback
        if isolation == "worktree":
            checked, notes = _check_repository(taskfile.root, settings, strict)
        if notes:
            plan = dataclasses.replace(plan, warnings=plan.warnings + notes)
    except CycleFound as e:
        raise ConfigError(str(tasks_path), f"dependency cycle: {e}; remove one of these "
                          "dependencies", field="depends_on", task=e.cycle[0]) from None
    return taskfile, settings, plan, checked


def _memo(taskfile: TaskFile) -> Memo[Ordering]:
    """The plan's graph and conflicts kept in the input cache beside the file's tasks, keyed
    also by the planning code."""
    from functools import partial

    from novaproc import planning
    from novaproc.inputs.cache import code_files, remember

    return partial(remember, taskfile, code=code_files(Path(planning.__file__).parent))


def _check_repository(root: Path, settings, strict: bool):  # type: ignore[no-untyped-def]
    """The preflight of the run's repository and the plan's notes about it."""
    from novaproc.isolation.preflight import preflight

    try:
        checked = preflight(root, target=settings.target, merge=settings.merge)
    except UsageError as e:
        if strict:
            raise
        return None, (f"a run would not start: {e}",)
    return checked, checked.dirty_note()


def tasks_file(args: argparse.Namespace) -> Path:
    """The tasks file, also when `--only a b tasks.toml` took it for an id: the last word of
    --only is the file when no file was given otherwise."""
    if args.tasks is None and getattr(args, "only", None) and len(args.only) > 1:
        args.tasks = Path(args.only.pop())
    if args.tasks is None:
        raise UsageError("no tasks file given; e.g. novaproc run tasks.toml (see --help)")
    return args.tasks


def cmd_plan(args: argparse.Namespace) -> int:
    tasks_file(args)
    _, settings, plan, _ = load_plan(args.tasks, args, {"max_parallel": args.max_parallel}, strict=False)
    print_plan(settings, plan, as_json=args.json)
    return ExitCode.OK


def print_plan(settings: Settings, plan: Plan, *, as_json: bool) -> None:
    from novaproc.cli.text import render_plan

    if as_json:
        print(json.dumps({**plan.to_json(), **where_tasks_run(settings, plan)}, indent=2))
    else:
        print(render_plan(plan, executor_line(settings, plan)))


def where_tasks_run(settings: Settings, plan: Plan) -> dict[str, object]:
    """The run's executor and, on a cluster, its scheduler and the tasks kept on this machine."""
    if settings.executor != "dask":
        return {"executor": settings.executor}
    from novaproc.inputs.settings import on_cluster

    return {"executor": settings.executor, "scheduler": settings.scheduler,
            "here": [t.id for t in plan.tasks if not on_cluster(t, settings)]}


def executor_line(settings: Settings, plan: Plan) -> str | None:
    """`plan`'s line on where tasks run, for a run on a cluster."""
    where = where_tasks_run(settings, plan)
    if where["executor"] != "dask":
        return None
    here: list[str] = where["here"]  # type: ignore[assignment]
    named = f": {', '.join(here[:5])}{' ...' if len(here) > 5 else ''}" if here else ""
    return f"Executor: dask at {where['scheduler']}; {len(here)} task(s) stay on this machine{named}"


def cmd_run(args: argparse.Namespace, background_argv: list[str] | None = None) -> int:
    """`run`; `each` calls it with the file it wrote and the arguments of a background run."""
    tasks_file(args)
    taskfile, settings, plan, checked = load_plan(args.tasks, args, run_flags(args), strict=not args.dry_run,
                                                  root=args.root)
    if not (args.dry_run or args.background):
        _fork_workers(settings, plan)
    if args.dry_run:
        print_plan(settings, plan, as_json=args.json)
        return ExitCode.OK
    if args.junit and not args.junit.resolve().parent.is_dir():
        raise UsageError(f"--junit {args.junit}: folder {args.junit.resolve().parent} does not exist")
    from novaproc.run.wiring import start_background, start_run

    if args.background:
        if background_argv is None:
            background_argv = [a for a in sys.argv[1:] if a != "--background"]
        print(start_background(taskfile, background_argv))
        return ExitCode.OK
    run = start_run(taskfile, settings, plan, checked, argv=sys.argv[1:])
    try:
        holder = run.try_hold_tasks_file(args.if_busy)
    except BaseException:
        run.close()  # idempotent
        raise
    if args.ready_fd is not None:
        run.detach(args.ready_fd)  # before waiting for a busy file: the launcher returns at once
    return _execute(run, args, busy=holder)


def cmd_resume(args: argparse.Namespace) -> int:
    from novaproc.cli.runs import state_dir
    from novaproc.messages import RunState
    from novaproc.run.wiring import finish_interrupted_landing, resume_run
    from novaproc.state.reader import load_run

    record = load_run(state_dir(args), args.run)
    finished = finish_interrupted_landing(record) if record.status is RunState.CRASHED else None
    if finished:
        print(f"novaproc: {finished}", file=sys.stderr)
    taskfile, settings, plan, checked = load_plan(  # the file read once, its templates expanded once
        Path(record.tasks_file), argparse.Namespace(config=None), {}, root=Path(record.meta.root),
        recorded=[t.id for t in record.tasks])
    _fork_workers(settings, plan)
    run = resume_run(record, taskfile, settings, plan, checked, finished)
    try:
        holder = run.try_hold_tasks_file("wait")
    except BaseException:
        run.close()
        raise
    return _execute(run, args, busy=holder)


def _fork_workers(settings: Settings, plan: Plan) -> None:
    """The run's workers, forked now: before its journal, locks and threads exist, nothing of
    them can reach a worker (a cluster's run forks none: its local pool is seldom used)."""
    if settings.executor == "local":
        from novaproc.execution.pool import prefork

        prefork(min(settings.max_parallel, len(plan.tasks)))


def _execute(run, args: argparse.Namespace, busy: str | None = None) -> int:  # type: ignore[no-untyped-def]
    from novaproc.cli.views import write_junit

    view = _view(args, run.plan, run.log_path)
    run.emit_to(view.handle)
    try:
        if busy and (stopped := run.wait_for_tasks_file(busy)) is not None:
            view.stop()
            return stopped
        outcome = run.execute()
    except BaseException:
        view.stop()  # a live view must give the terminal back, whatever happened
        raise
    finally:
        run.close()
    if args.junit:
        try:
            write_junit(outcome, args.junit, run.log_path, verify=bool(run.settings.verify))
        except OSError as e:
            print(f"novaproc: error: cannot write the JUnit report {args.junit}: {e.strerror}",
                  file=sys.stderr)
    try:
        view.close(outcome)
    except BrokenPipeError:  # `run ... | head`: the exit code still tells how the run went
        silence_stdout()
    return outcome.exit_code


def silence_stdout() -> None:
    """The reader of stdout went away: drop further output instead of failing at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _view(args: argparse.Namespace, plan, log_path):  # type: ignore[no-untyped-def]
    from novaproc.cli import views

    total = len(plan.tasks)
    if args.json:
        return views.JsonView(sys.stdout, sys.stderr, total)
    if getattr(args, "quiet", False):
        return views.QuietView(sys.stdout, sys.stderr, total, log_path)
    if sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb":
        from novaproc.cli.live import LiveView

        return LiveView(sys.stdout, sys.stderr, total, log_path, {t.id: t.label for t in plan.tasks},
                        dict(plan.durations), plan.slots,
                        {t.id: tuple(sorted(plan.graph.preds[t.id])) for t in plan.tasks})
    return views.PlainView(sys.stdout, sys.stderr, total, log_path)


