"""The command line: arguments, which view prints, and exit codes.

Every NovaError becomes one line on stderr and its exit code; nothing else prints.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from novaproc.cli.text import EXIT_CODES
from novaproc.cli.version import VERSION
from novaproc.errors import ExitCode, NovaError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, like every other usage error of ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("novaproc").strip()  # "novaproc: error: " comes first
        raise UsageError(f"{command + ': ' if command else ''}{message} (see --help)")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, when `argv` starts with a command, of that one alone:
    building the other parsers (and importing their modules) would add ~10 ms to each start."""
    parser = _Parser(prog="novaproc", description="Run many jobs at once on one machine without "
                     "letting them trample each other.", epilog=EXIT_CODES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"novaproc {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    argv = sys.argv[1:] if argv is None else argv
    adders = [_ADDERS[argv[0]]] if argv and argv[0] in _ADDERS else dict.fromkeys(_ADDERS.values())
    for add in adders:
        add(sub)
    return parser


def _add_run_commands(sub: Any) -> None:
    from novaproc.cli.runs import add_parsers

    add_parsers(sub)


def _add_lock_commands(sub: Any) -> None:
    from novaproc.cli.locks import add_parsers

    add_parsers(sub)


def _add_plan(sub: Any) -> None:
    from novaproc.cli.run import add_plan

    add_plan(sub)


def _add_run(sub: Any) -> None:
    from novaproc.cli.run import add_run

    add_run(sub)


def _add_resume(sub: Any) -> None:
    from novaproc.cli.run import add_resume

    add_resume(sub)


def _add_each(sub: Any) -> None:
    from novaproc.cli.each import add_parser

    add_parser(sub)


def _add_init(sub: Any) -> None:
    p = sub.add_parser("init", help="write a starter nova.toml and tasks.toml",
                       description="Write a starter nova.toml and tasks.toml in a folder.")
    p.add_argument("folder", nargs="?", type=Path, default=Path("."), help="default: here")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(handler=cmd_init)


def _add_clean(sub: Any) -> None:
    p = sub.add_parser("clean", help="remove finished runs' worktrees and merged branches",
                       description="Remove the worktrees of runs that are no longer live (kept "
                       "ones too), prune stale worktree records and leftover index.lock files, "
                       "and delete nova/* branches already merged (--all: every nova/* branch "
                       "of a finished run).")
    p.add_argument("--all", action="store_true", help="also delete unmerged nova/* branches")
    p.add_argument("--runs", action="store_true", help="also remove the journals of runs that "
                   "ended more than keep_runs ago (default 30d)")
    p.add_argument("--config", type=Path, help="settings file (default: nova.toml at the root)")
    p.set_defaults(handler=cmd_clean)


# command -> what adds its parser, in the order of `novaproc --help`
_ADDERS = {"plan": _add_plan, "run": _add_run, "each": _add_each, "resume": _add_resume,
           **dict.fromkeys(("status", "ps", "logs", "wait", "cancel"), _add_run_commands),
           **dict.fromkeys(("lock", "locks"), _add_lock_commands), "clean": _add_clean, "init": _add_init}


def cmd_clean(args: argparse.Namespace) -> int:
    from novaproc.inputs.paths import find_root
    from novaproc.inputs.settings import load_settings
    from novaproc.isolation.clean import clean

    root, in_git = find_root(Path.cwd())
    settings = load_settings(root, config_file=args.config, quick=True)
    if args.runs:
        from novaproc.state.retention import prune_runs

        for run_id in prune_runs(settings.state_path(root), settings.keep_runs):
            print(f"removed run {run_id}")
    if not in_git:
        if args.runs:
            return ExitCode.OK
        raise UsageError(f"{root} is not inside a git repository: there is nothing to clean")
    report = clean(root, worktree_dir=Path(settings.worktree_dir), all_branches=args.all)
    for path in report.worktrees:
        print(f"removed worktree {path}")
    for branch in report.branches:
        print(f"deleted branch {branch}")
    for lock in report.locks:
        print(f"removed stale lock {lock}")
    if report.live_runs:
        print(f"left alone: live run(s) {', '.join(report.live_runs)}")
    if not (report.worktrees or report.branches or report.locks):
        print("nothing to clean")
    return ExitCode.OK


def cmd_init(args: argparse.Namespace) -> int:
    from novaproc.cli.init import write_starter

    for written in write_starter(args.folder, force=args.force):
        print(f"wrote {written}")
    return ExitCode.OK


def entry() -> NoReturn:
    """The `novaproc` command: main(), then a quick exit. The interpreter's own teardown of
    every module costs ~30 ms here, after all is done: every file is closed and every child
    reaped by now, so only the flush of stdio and the atexit hooks (multiprocessing's clean-up)
    are kept. With a thread still running, the normal exit waits for it instead."""
    code = main()
    # a thread is started through `threading`: a command that never imported it (status, plan)
    # has none, and need not load it (~1 ms) to find that out
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)
    with contextlib.suppress(OSError, ValueError):  # a reader that went away, a closed stream
        sys.stdout.flush()
        sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        items = None
        if argv[:1] == ["each"]:  # what follows ::: is items, even "-x", never options
            from novaproc.cli.each import split_items

            argv, items = split_items(argv)
        args = build_parser(argv).parse_args(argv)
        if items is not None:
            args.items = items
        return int(args.handler(args))
    except NovaError as e:
        print(f"novaproc: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.SIGINT)
    except BrokenPipeError:  # the reader went away (`novaproc status | head`): not our error
        from novaproc.cli.run import silence_stdout

        silence_stdout()
        return int(ExitCode.OK)
    except Exception:
        import traceback

        traceback.print_exc()
        print("novaproc: internal error [this is a bug, please report it with the lines above]",
              file=sys.stderr)
        return int(ExitCode.FAILED)
