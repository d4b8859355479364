"""The one adapter to git: plumbing commands run through GitPython, and the per-repository locks.

Owns every call into git (`Repo`); the start-of-run check is preflight.py's, what a new
worktree gets besides its checkout furnish.py's.
Only `repo.git.*`-style commands are used: GitPython's object and index APIs are slower.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from novaproc.errors import EnvironmentFault
from novaproc.isolation.records import Merged, Worktree, WorktreeEntry

# git must not run the user's hooks for novaproc's own bookkeeping (post-checkout and the like)
_BASE_ARGS = ("-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false",
              "-c", "core.quotePath=false")
# checkouts of novaproc's worktrees leave LFS files as pointers (a missing object would fail the
# checkout, and fetching one is not ours to do); `fill_lfs` then puts in what is stored locally
_NO_SMUDGE = {"GIT_LFS_SKIP_SMUDGE": "1"}
_TRANSIENT = ("index.lock", "config.lock", "packed-refs.lock", "Unable to create")
_FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "novaproc", "GIT_AUTHOR_EMAIL": "novaproc@localhost",
                      "GIT_COMMITTER_NAME": "novaproc", "GIT_COMMITTER_EMAIL": "novaproc@localhost"}
IN_PROGRESS = {
    "MERGE_HEAD": ("a merge", "finish it (git commit) or abort it (git merge --abort)"),
    "rebase-merge": ("a rebase", "finish it (git rebase --continue) or abort it (git rebase --abort)"),
    "rebase-apply": ("a rebase or am", "finish or abort it (git rebase --abort / git am --abort)"),
    "CHERRY_PICK_HEAD": ("a cherry-pick", "finish or abort it (git cherry-pick --abort)"),
    "REVERT_HEAD": ("a revert", "finish or abort it (git revert --abort)"),
    "BISECT_LOG": ("a bisect", "end it (git bisect reset)"),
}
_STALE_RECORD = ("already registered", "already checked out", "missing but")
LOCK_NAME = "nova-worktrees.lock"
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
RUNS_DIR = "nova-runs"


class Repo:
    """One repository, driven through git plumbing; every failure becomes an EnvironmentFault."""

    def __init__(self, root: Path | str) -> None:
        import git  # GitPython is slow to import; only runs that use git pay for it

        self._errors = (git.GitCommandNotFound,)
        self._git = git.Git()
        self.root = Path(root)
        top, git_dir, common = self.git("rev-parse", "--path-format=absolute", "--show-toplevel",
                                        "--git-dir", "--git-common-dir", cwd=Path(root)).splitlines()
        self.root, self.git_dir, self.common_dir = Path(top), Path(git_dir), Path(common)
        self._identity: dict[str, str] | None = None

    @classmethod
    def init(cls, path: Path) -> Repo:
        """A new, empty repository at `path`."""
        import git

        git.Git().execute(["git", "init", "-q", str(path)])
        return cls(path)

    # -- running git --------------------------------------------------------------------------

    def run(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            retries: int = 4, stdin: str | None = None) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `git args`; retried while another git holds a lock."""
        command = ["git", "-C", str(cwd or self.root), *_BASE_ARGS, *args]
        for attempt in range(retries + 1):
            code, out, err = self._execute(command, env, stdin)
            if code == 0 or attempt == retries or not any(t in err for t in _TRANSIENT):
                return code, out, err
            time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _execute(self, command: list[str], env: dict[str, str] | None,
                 stdin: str | None) -> tuple[int, str, str]:
        try:
            if stdin is None:
                return self._git.execute(command, with_extended_output=True, with_exceptions=False, env=env)
            with tempfile.TemporaryFile() as feed:
                feed.write(stdin.encode())
                feed.seek(0)
                return self._git.execute(command, with_extended_output=True, with_exceptions=False, env=env,
                                         istream=feed)
        except self._errors:
            raise EnvironmentFault("git is not installed or not on PATH; install git >= 2.38") from None

    def git(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            stdin: str | None = None) -> str:
        """stdout of `git args`, raising EnvironmentFault (with what to do) when it fails."""
        code, out, err = self.run(*args, cwd=cwd, env=env, stdin=stdin)
        if code != 0:
            raise fault(args, code, err, cwd or self.root)
        return out

    def in_worktree(self, wt: Worktree, *args: str, env: dict[str, str] | None = None,
                    stdin: str | None = None) -> str:
        """`git args` bound to `wt` by explicit paths, so a task that broke its .git file
        can never redirect a destructive command to another repository."""
        return self.git("--git-dir", str(wt.admin), "--work-tree", str(wt.path), *args,
                        cwd=wt.path, env={**_NO_SMUDGE, **(env or {})}, stdin=stdin)

    def fill_lfs(self, path: Path) -> None:
        """LFS files in the worktree at `path` as the user's checkout has them: the content of
        those whose objects are stored locally, pointers for the rest. Nothing is downloaded."""
        attributes = path / ".gitattributes"
        if not (attributes.is_file() and "filter=lfs" in attributes.read_text(errors="replace")):
            return
        self.run("lfs", "checkout", cwd=path, retries=0)  # no git-lfs: pointers stay, as for the user

    def tracked(self, path: str) -> bool:
        """Whether git tracks `path` (a file, or anything under a folder) in the checkout."""
        code, out, _ = self.run("ls-files", "-z", "--", path, retries=0)
        return code == 0 and bool(out)

    def ignored(self, wt: Worktree, paths: Sequence[str]) -> set[str]:
        """Which of `paths` (relative to the worktree) the ignore rules cover."""
        if not paths:
            return set()
        code, out, err = self.run("--git-dir", str(wt.admin), "--work-tree", str(wt.path),
                                  "check-ignore", "--", *paths, cwd=wt.path, retries=0)
        if code > 1:
            raise fault(("check-ignore",), code, err, wt.path)
        return set(out.splitlines())

    def untracked(self, wt: Worktree) -> tuple[str, ...]:
        """Untracked, not ignored paths in `wt`, a new folder as one entry."""
        out = self.in_worktree(wt, "status", "--porcelain", "-z", "--untracked-files=normal")
        return tuple(e[3:].rstrip("/") for e in out.split("\0") if e.startswith("?? "))

    def identity(self) -> dict[str, str]:
        """Environment giving commits an author: the user's, or novaproc's when none is set."""
        if self._identity is None:
            known = all(self.run("var", name, retries=0)[0] == 0
                        for name in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"))
            self._identity = {} if known else dict(_FALLBACK_IDENTITY)
        return self._identity

    def adopt_identity(self, env: dict[str, str]) -> None:
        """Commit as `env` says (the supervisor's user, on a cluster's worker) or, empty, as ever."""
        self._identity = dict(env) or None

    # -- objects and refs ---------------------------------------------------------------------

    def current_branch(self) -> str | None:
        """The branch checked out, or None when HEAD is detached."""
        code, out, _ = self.run("symbolic-ref", "-q", "--short", "HEAD", retries=0)
        return out.strip() if code == 0 else None

    def commit_of(self, rev: str) -> str | None:
        """`rev` itself when it is a full commit id (no git call: novaproc's own records), else rev()."""
        return rev if _SHA.fullmatch(rev) else self.rev(rev)

    def rev(self, rev: str) -> str | None:
        """The commit `rev` names, or None."""
        code, out, _ = self.run("rev-parse", "-q", "--verify", f"{rev}^{{commit}}", retries=0)
        return out.strip() if code == 0 else None

    def missing(self, commits: Sequence[str]) -> set[str]:
        """The `commits` this repository does not hold (one git call for all of them)."""
        if not commits:
            return set()
        listed = "\n".join(commits) + "\n"
        out = self.git("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=listed)
        found = {line.split()[0] for line in out.splitlines() if line.endswith(" commit")}
        return set(commits) - found

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        code, _, err = self.run("merge-base", "--is-ancestor", ancestor, commit, retries=0)
        if code > 1:
            raise fault(("merge-base",), code, err, self.root)
        return code == 0

    def commit_worktree(self, wt: Worktree, message: str, exclude: Sequence[str] = ()) -> str:
        """Everything changed in `wt` (new, modified, deleted; .gitignore respected; `exclude`d
        paths left out) committed on top of its HEAD; HEAD itself when nothing changed."""
        self.stage_all(wt, exclude)
        return self.commit_index(wt, message)

    def stage_all(self, wt: Worktree, exclude: Sequence[str] = ()) -> None:
        """Everything changed in `wt` staged, as `git add -A` does; `exclude`d paths left out."""
        self.in_worktree(wt, "add", "-A", "--", ".", *(f":(exclude,literal,top){p}" for p in exclude))

    def commit_index(self, wt: Worktree, message: str) -> str:
        """The index of `wt` committed on top of its HEAD; HEAD itself when they hold the same tree."""
        tree = self.in_worktree(wt, "write-tree").strip()
        head, head_tree = self.in_worktree(wt, "rev-parse", "HEAD", "HEAD^{tree}").split()
        return head if tree == head_tree else self.commit_tree(tree, [head], message)

    def commit_tree(self, tree: str, parents: Sequence[str], message: str) -> str:
        args = ["commit-tree", tree, "-m", message]
        for parent in parents:
            args += ["-p", parent]
        return self.git(*args, env=self.identity()).strip()

    def merge(self, ours: str, theirs: str, message: str, *, ours_tree: str | None = None,
              by_file: bool = False) -> Merged:
        """`theirs` merged into `ours` without a checkout (merge-tree --write-tree).

        Give `ours_tree` when `ours` is a merge commit made after `theirs` existed, so it cannot
        be an ancestor of `theirs`: one ancestry check is saved (merging many results is faster).
        `by_file` (conflict_check = "file"): files both sides changed since their merge base
        conflict even when git merges their lines cleanly (two identical appends become one).
        """
        if ours_tree is None:
            base = self.run("merge-base", ours, theirs, retries=0)[1].strip()
            if ours == theirs or base == theirs:
                return Merged(ours, how="contained")
            if base == ours:
                return Merged(theirs, how="fast-forward")
        code, out, err = self.run("merge-tree", "--write-tree", "-z", "--name-only", "--no-messages",
                                  ours, theirs, retries=0)
        if code not in (0, 1):
            raise fault(("merge-tree",), code, err, self.root)
        if not out.strip("\0"):  # an object it needs is gone: no tree, no file list
            raise fault(("merge-tree",), code, err, self.root)
        tree, *files = [f for f in out.split("\0") if f]
        if code == 1:
            return Merged(None, tuple(dict.fromkeys(files)), how="conflict")
        if tree == ours_tree and self.is_ancestor(theirs, ours):
            return Merged(ours, how="contained")
        if by_file and (both := self.changed_on_both_sides(ours, theirs)):
            return Merged(None, both, how="same files")
        return Merged(self.commit_tree(tree, [ours, theirs], message), tree=tree)

    def changed_on_both_sides(self, ours: str, theirs: str) -> tuple[str, ...]:
        """Files that `ours` and `theirs` each changed since their merge base. Where histories
        criss-cross (a task built on a merge of two results, landing after both), there are
        several bases: a file counts only if both sides changed it since every one of them."""
        both: set[str] | None = None
        for base in self.git("merge-base", "--all", ours, theirs).split():
            here = set(self.changed(base, ours)) & set(self.changed(base, theirs))
            both = here if both is None else both & here
        return tuple(sorted(both or ()))

    def set_ref(self, ref: str, new: str, old: str | None = None, reason: str = "novaproc") -> bool:
        """Point `ref` at `new`; with `old`, only if it still points there (compare-and-swap)."""
        args = ["update-ref", "-m", reason, ref, new, *([old] if old else [])]
        code, _, err = self.run(*args, retries=0)
        if code != 0 and old is not None and ("but expected" in err or "unable to resolve" in err):
            return False
        if code != 0:
            raise fault(("update-ref",), code, err, self.root)
        return True

    def delete_refs(self, refs: Sequence[str]) -> None:
        """Delete `refs` (missing ones are fine) in one transaction."""
        if refs:
            self.git("update-ref", "--stdin", stdin="".join(f"delete {ref}\n" for ref in refs))

    def refs(self, prefix: str) -> dict[str, str]:
        """{refname: commit} for refs under `prefix` (e.g. "refs/heads/nova/")."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def deleted(self, old: str, new: str) -> set[str]:
        """Files of `old` that `new` no longer has."""
        out = self.git("diff-tree", "-r", "-z", "--name-only", "--no-renames", "--diff-filter=D", old, new)
        return {f for f in out.split("\0") if f}

    def changed(self, old: str, new: str) -> tuple[str, ...]:
        """Files that differ between two commits (renames as delete + add)."""
        out = self.git("diff-tree", "-r", "-z", "--name-only", "--no-renames", old, new)
        return tuple(f for f in out.split("\0") if f)

    def dirty_paths(self, where: Path) -> tuple[str, ...]:
        """Uncommitted changes (staged, unstaged, untracked) in the checkout at `where`."""
        out = self.git("status", "--porcelain", "-z", "--untracked-files=all", cwd=where)
        entries = out.split("\0")
        paths: list[str] = []
        skip = False
        for entry in entries:
            if skip or not entry:
                skip = False
                continue
            paths.append(entry[3:])
            skip = entry[0] in "RC"  # a rename is followed by its source
        return tuple(paths)

    # -- worktrees ----------------------------------------------------------------------------

    def worktrees(self) -> list[WorktreeEntry]:
        out = self.git("worktree", "list", "--porcelain", "-z")
        found: list[WorktreeEntry] = []
        for block in out.split("\0\0"):
            fields = {k: v for k, _, v in (f.partition(" ") for f in block.split("\0") if f)}
            if "worktree" in fields:
                branch = fields.get("branch")
                found.append(WorktreeEntry(Path(fields["worktree"]), fields.get("HEAD"),
                                           branch.removeprefix("refs/heads/") if branch else None,
                                           "prunable" in fields))
        return found

    def add_worktree(self, path: Path, commit: str, branch: str | None = None, *,
                     checkout: bool = True) -> Worktree:
        """A new worktree at `path` checked out at `commit` (unless not `checkout`: its index and
        files are then the caller's to fill), on `branch` (reset if it exists)."""
        args = ["worktree", "add", "-q", *(["--no-track", "-B", branch] if branch else ["--detach"]),
                *([] if checkout else ["--no-checkout"])]
        code, _, err = self.run(*args, str(path), commit, env=_NO_SMUDGE)
        if code != 0 and any(stale in err for stale in _STALE_RECORD):
            self.git("worktree", "prune")  # a record left by a crash, its folder gone
            code, _, err = self.run(*args[:3], "-f", *args[3:], str(path), commit, env=_NO_SMUDGE)
        if code != 0:
            raise fault(("worktree", "add"), code, err, self.root,
                        f"if {path} is left from an earlier run, remove it or run `novaproc clean`")
        return Worktree(path, admin_dir(path))

    def move_worktree(self, wt: Worktree, dest: Path) -> Worktree:
        self.git("worktree", "move", str(wt.path), str(dest))
        return Worktree(dest, wt.admin)

    def remove_worktree(self, path: Path) -> None:
        """Remove a worktree and its record, whatever state it is in."""
        code, _, _ = self.run("worktree", "remove", "--force", "--force", str(path))
        if code != 0:
            shutil.rmtree(path, ignore_errors=True)
            self.run("worktree", "prune")

    @contextmanager
    def worktree_lock(self) -> Iterator[None]:
        """Serialise worktree creation, moves and removals on this repository (all processes)."""
        with flock(self.common_dir / LOCK_NAME, fcntl.LOCK_EX):
            yield

    @contextmanager
    def hold_run(self, run_id: str) -> Iterator[None]:
        """Mark run `run_id` live while inside; `live_runs` sees it until the holder exits or dies."""
        folder = self.common_dir / RUNS_DIR
        folder.mkdir(exist_ok=True)
        with flock(folder / f"{run_id}.lock", fcntl.LOCK_SH):
            yield
        self.live_runs()  # removes the marker unless another holder still has it

    def live_runs(self) -> set[str]:
        """Runs whose holder is alive; the markers of the others are removed."""
        live: set[str] = set()
        for lock in sorted((self.common_dir / RUNS_DIR).glob("*.lock")):
            with lock.open("a") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    live.add(lock.stem)
                    continue
                lock.unlink(missing_ok=True)  # a finished run's marker
        return live


def admin_dir(checkout: Path) -> Path:
    """The git dir of a checkout: its .git folder, or where its .git file points (a linked
    worktree's administrative folder), read without running git."""
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    try:
        text = dot_git.read_text().strip()
    except OSError as e:
        raise EnvironmentFault(f"{checkout} is not a git checkout: {e.strerror}") from None
    if not text.startswith("gitdir: "):
        raise EnvironmentFault(f"{dot_git} does not name a git dir; `novaproc clean` removes leftovers")
    return (checkout / text.removeprefix("gitdir: ")).resolve()


@contextmanager
def flock(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[IO[str]]:
    try:
        f = path.open("a")
    except OSError as e:
        raise EnvironmentFault(f"cannot open lock file {path}: {e.strerror}; check its permissions") from None
    with f:
        fcntl.flock(f, mode)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fault(args: Sequence[str], code: int, err: str, where: Path, hint: str = "") -> EnvironmentFault:
    if args[:1] == ("--git-dir",):
        args = args[4:]
    tail = " ".join(err.strip().splitlines()[-3:]) or "no message"
    hint = hint or "check the repository with `git status`; after a crash, `novaproc clean` removes leftovers"
    return EnvironmentFault(f"git {' '.join(args[:2])} failed in {where} (exit {code}): {tail}; {hint}")
