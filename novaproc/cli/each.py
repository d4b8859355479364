"""`novaproc each`: fan-out from the command line, GNU parallel made safe for a repository.

The items and the command become a tasks file of one `foreach` template, written in the state
folder (named by its content) and run as `run` runs any file: plan, locks, worktrees, journal,
`--background`, `status`, `resume`. The journal's run points at that file, so a run of `each`
is resumed without the items being given again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from novaproc.errors import ConfigError, ExitCode, UsageError

ITEMS_MARK = ":::"
_HELP = """examples:
  git ls-files '*.py' | novaproc each --writes {} -- ruff format
      one task per tracked Python file, each in its own worktree, merged at the end
  novaproc each -j 8 --shell --writes {stem}.min.js -- 'terser {} > {stem}.min.js' ::: *.js
      a shell string: every value is quoted for the shell, so write {} bare

placeholders: {} or {item}, {name} (file name), {stem} (name without its suffix), {suffix},
{dir} (its folder, . at the top); {{ and }} are literal braces. A CMD with none gets the item
as its last argument. --writes and --reads are relative to the current folder, as the items
are; the command runs in the task's copy of it.
"""


def add_parser(sub: Any) -> None:
    from novaproc.cli.run import add_run_options
    from novaproc.cli.text import EXIT_CODES

    p = sub.add_parser(
        "each", help="run a command once per item (files, lines, ::: arguments)",
        usage="novaproc each [run options] [--glob G] [--from FILE|-] [--writes T] [--reads T] "
              "[--shell] [--id NAME] [--] CMD [ARG ...] [::: ITEM ...]",
        description="Run CMD once per item, each in its own task: items from ::: ITEM..., "
                    "--glob, --from FILE, or standard input when it is not a terminal.",
        epilog=_HELP + "\n" + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glob", action="append", default=[], metavar="G",
                   help="items: the files matching G (tracked files in git); repeatable")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="items: the lines of FILE (- for standard input)")
    p.add_argument("-0", "--null", action="store_true", help="items of --from/stdin end with NUL, "
                   "not a newline (git ls-files -z, find -print0)")
    p.add_argument("--writes", action="append", default=[], metavar="T",
                   help="a path each task writes, e.g. {} (locks, conflict checks); repeatable")
    p.add_argument("--reads", action="append", default=[], metavar="T",
                   help="a path each task reads unchanged; repeatable")
    p.add_argument("--shell", action="store_true", help="CMD is a shell string (values quoted)")
    p.add_argument("--id", default="each", metavar="NAME", help="the tasks' ids are NAME.<item> "
                   "(default: each)")
    add_run_options(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")
    p.set_defaults(handler=cmd_each, items=None)


def split_items(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`argv` before `:::` and the items after it (None without one): the items are taken as
    they are, even those that look like options."""
    if ITEMS_MARK not in argv:
        return argv, None
    at = argv.index(ITEMS_MARK)
    return argv[:at], argv[at + 1:]


def cmd_each(args: argparse.Namespace) -> int:
    from novaproc.cli.run import cmd_run
    from novaproc.inputs.foreach import MAX_TEMPLATE_ID
    from novaproc.inputs.ids import valid_id
    from novaproc.inputs.paths import find_root

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not valid_id(args.id) or len(args.id) > MAX_TEMPLATE_ID:
        raise UsageError(f"each: --id {args.id!r}: an id is 1-{MAX_TEMPLATE_ID} ASCII letters, "
                         "digits, '_', '.', '-', starting with a letter or digit")
    if not cmd:
        raise UsageError("each: no command; give one after the options, e.g. "
                         "novaproc each --writes {} -- ruff format")
    root, in_git = find_root(Path.cwd())
    items = _items(args, root, in_git)
    if not items:
        print("novaproc: no items: nothing to run", file=sys.stderr)
        return ExitCode.OK
    here = Path.cwd().relative_to(root)
    path, new = _write_tasks(args, root, _document(args, cmd, _relative(items, root, here), here))
    run_args = argparse.Namespace(**{**vars(args), "tasks": path, "root": root, "only": None,
                                     "ready_fd": None})
    try:
        return cmd_run(run_args, background_argv=_background_argv(args, path, root))
    except ConfigError as e:
        if e.file != str(path):
            raise
        if new:  # nothing ran: nothing to keep
            path.unlink(missing_ok=True)
        raise UsageError(f"each: {_FLAG.get(e.field or '', e.field or 'CMD')}: {e.problem}") \
            from None


def _relative(items: list[str], root: Path, here: Path) -> list[str]:
    """Items naming files of the repository by absolute path, made relative to the current
    folder: the task then works on its worktree's copy, never on the checkout's."""
    inside = str(root) + os.sep
    return [os.path.relpath(item, root / here) if item.startswith(inside) else item for item in items]


# what a field of the written tasks file was given as
_FLAG = {"cmd": "CMD", "writes": "--writes", "reads": "--reads", "foreach": "the items",
         "description": "CMD", "cwd": "the current folder"}


def _items(args: argparse.Namespace, root: Path, in_git: bool) -> list[str]:
    """The items, in the order given: ::: arguments, then each --glob's files, then --from's
    lines; standard input when none of these is given and it is not a terminal."""
    from novaproc.inputs.fanout import match_files
    from novaproc.inputs.settings import state_path_of

    items = list(args.items or [])
    for pattern in args.glob:
        found = match_files(pattern, os.getcwd(), in_git, str(state_path_of(root, args.config)))
        if not found:
            raise UsageError(f"each: --glob {pattern!r} matches no "
                             f"{'tracked ' if in_git else ''}file here")
        items += found
    source = args.from_file
    if source is None and args.items is None and not args.glob and not sys.stdin.isatty():
        source = "-"
    if source is not None:
        items += _lines(source, args.null)
    for item in items:
        if "\0" in item:
            raise UsageError(f"each: item {item!r} holds a NUL byte; no argument can")
    return list(dict.fromkeys(items))  # an item given twice is one task


def _lines(source: str, null: bool) -> list[str]:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise UsageError(f"each: --from {source}: {e.strerror}") from None
    text = os.fsdecode(data)
    return [line for line in text.split("\0" if null else "\n") if line]  # newlines only: a name
    # may hold any other separator (U+2028, a form feed)


def _document(args: argparse.Namespace, cmd: list[str], items: list[str], here: Path) -> dict[str, Any]:
    """The tasks file: one template over `items`. Paths given relative to `here` (the current
    folder, relative to the root) are written relative to the root, as a tasks file's are."""
    from novaproc.inputs.placeholders import Template

    if not any(Template.parse(arg).names for arg in cmd):
        cmd = [*cmd, "{}"]
    task: dict[str, Any] = {"foreach": items, "cmd": " ".join(cmd) if args.shell else cmd}
    folder = "" if str(here) == "." else str(here).replace("{", "{{").replace("}", "}}")
    for field in ("writes", "reads"):
        if values := getattr(args, field):
            task[field] = [v if v.startswith("/") or not folder else f"{folder}/{v}" for v in values]
    if folder:
        task["cwd"] = folder
        _check_outside(items, [v for f in ("writes", "reads") for v in getattr(args, f)])
    return {"tasks": {args.id: task}}


def _check_outside(items: list[str], templates: list[str]) -> None:
    """From a subfolder, a path template is written below it: a value that is an absolute path
    (a file outside the repository) cannot be. Refused rather than declared at a wrong path."""
    if any(t.lstrip().startswith("{") for t in templates):  # starts with a value
        absolute = next((item for item in items if item.startswith("/")), None)
        if absolute is not None:
            raise UsageError(f"each: item {absolute!r} is outside the repository: from a subfolder "
                             "--writes and --reads are relative to it; run each from the repository's "
                             "root to declare an absolute path")


def _write_tasks(args: argparse.Namespace, root: Path, document: dict[str, Any]) -> tuple[Path, bool]:
    """The tasks file in the state folder, named by its content (`each` run twice with the same
    command and items is one file, so --if-busy sees the other run), and whether it is new."""
    import tomli_w

    from novaproc.fsio import write_atomic
    from novaproc.inputs.settings import state_path_of
    from novaproc.state.journal import state_folder

    text = tomli_w.dumps(document)
    folder = state_folder(state_path_of(root, args.config), "each")
    digest = hashlib.sha256(f"{root}\0{text}".encode()).hexdigest()[:16]
    path = folder / f"{args.id}-{digest}.toml"
    if path.is_file():
        os.utime(path)  # used again: `clean --runs` goes by when a file was last used
        return path, False
    write_atomic(path, text, mode=0o600)
    return path, True


def _background_argv(args: argparse.Namespace, path: Path, root: Path) -> list[str]:
    """`run` of the written file with the options given: a background run cannot read the
    items from this process's standard input."""
    argv = ["run", str(path), "--root", str(root), "--if-busy", args.if_busy]
    if args.max_parallel:
        argv += ["-j", str(args.max_parallel)]
    for flag, on in (("--fail-fast", args.fail_fast), ("--no-merge", args.no_merge),
                     ("--no-verify", args.no_verify), ("--json", args.json), ("--quiet", args.quiet)):
        if on:
            argv.append(flag)
    for flag, value in (("--junit", args.junit), ("--config", args.config)):
        if value is not None:
            argv += [flag, str(value.resolve())]
    return argv
