"""What a task changed in its pooled worktree, found without walking the whole tree.

A pooled worktree starts each task clean at a known commit. `Snapshot.take` then records the
stat data of every folder of that commit's tree (one lstat each, far cheaper than reading them):
a file created, deleted or renamed in a folder changes that folder's mtime, so after the task
only the folders whose stat data moved can hold untracked or ignored entries, and only those
are listed. Modified tracked files come from `git diff-files`, which checks every entry's stat
data (and content, for racily clean entries) exactly as `git add -A` does.

Whatever this cannot vouch for (the task ran git and rewrote the index or HEAD; too many
folders changed; no snapshot) is left to `git add -A` and `git clean -ffdx` over the whole tree.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from novaproc.errors import EnvironmentFault
from novaproc.isolation.records import Worktree
from novaproc.isolation.repo import Repo

# a folder stat'ed less than this before the snapshot may change again within the same
# timestamp tick (or the same second on coarse filesystems) without its mtime moving: such
# "racy" folders are always listed, as git re-reads racily clean files
RACY_NS = 2_000_000_000
MAX_LISTED = 200  # more changed folders or untracked entries than this: the whole-tree way is cheaper


@dataclass(frozen=True, slots=True)
class Layout:
    """The folders of a commit's tree and every path it tracks (files, links, folders)."""

    dirs: tuple[str, ...]
    names: frozenset[str]
    tree_dirs: frozenset[str]

    @classmethod
    def of(cls, repo: Repo, commit: str) -> Layout:
        # the default format ("<mode> <type> <object>\t<path>"): --format needs git 2.36
        out = repo.git("ls-tree", "-r", "-t", "-z", commit)
        names, dirs = [], [""]
        for entry in out.split("\0"):
            if entry:
                meta, _, path = entry.partition("\t")
                names.append(path)
                if meta.split(" ", 2)[1] == "tree":
                    dirs.append(path)
        return cls(tuple(dirs), frozenset(names), frozenset(dirs))


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode


@dataclass(slots=True)
class Snapshot:
    """The stat data of a clean worktree's folders (and of its index and HEAD) at a task's start."""

    root: str
    layout: Layout
    taken_ns: int
    folders: list[tuple[int, int, int, int] | None]
    index: tuple[int, int, int] | None

    @classmethod
    def take(cls, wt: Worktree, layout: Layout) -> Snapshot:
        root = str(wt.path)
        taken = time.time_ns()  # before the lstat calls: a folder changed after them is newer
        folders = [_stamp(os.path.join(root, d)) for d in layout.dirs]
        return cls(root, layout, taken, folders, _index_stamp(wt))

    def changed_folders(self) -> list[str]:
        """Folders whose entries may have changed since the snapshot (racy ones included)."""
        edge = self.taken_ns - RACY_NS
        changed = []
        for folder, before in zip(self.layout.dirs, self.folders, strict=True):
            if before is None or before[0] >= edge or before[1] >= edge \
                    or _stamp(os.path.join(self.root, folder)) != before:
                changed.append(folder)
        return changed

    def untracked_in(self, folders: Sequence[str]) -> list[str]:
        """Entries of `folders` that the start commit does not track as what they now are (a
        new file or folder, a file now a folder or the reverse); `.git` is never one."""
        found = []
        for folder in folders:
            try:
                entries = list(os.scandir(os.path.join(self.root, folder)))
            except OSError:
                continue  # gone or not a folder: its parent lists what replaced it
            for entry in entries:
                if entry.name == ".git":
                    continue
                rel = f"{folder}/{entry.name}" if folder else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if rel not in self.layout.names or is_dir != (rel in self.layout.tree_dirs):
                    found.append(rel)
        return found


def _index_stamp(wt: Worktree) -> tuple[int, int, int] | None:
    try:
        st = os.stat(wt.admin / "index")
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


@dataclass(frozen=True, slots=True)
class Found:
    """What a task changed: paths to stage (None: the whole tree, by `git add -A`) and what a
    clean-up must remove afterwards (None: the whole tree, by `git clean -ffdx`)."""

    stage: tuple[str, ...] | None
    leftovers: tuple[str, ...] | None
    changed_folders: tuple[str, ...] = ()


WHOLE_TREE = Found(None, None)


def find(repo: Repo, wt: Worktree, snap: Snapshot | None, exclude: Sequence[str] = ()) -> Found:
    """What changed in `wt` since `snap`: modified and deleted tracked files (git diff-files,
    run while the folders are stat'ed) and the untracked entries of the folders that changed;
    `exclude`d paths (included files, what the setup made) are left over, never staged.
    A task that moved HEAD without touching the index (reset --soft) is no exception: the
    index it left is staged onto, as `git add -A` would."""
    if snap is None or _index_stamp(wt) != snap.index:
        return WHOLE_TREE  # the task ran git (add, commit, reset...): let add -A sort it out
    modified: list[str] = []
    failed: list[BaseException] = []

    def diff_files() -> None:
        try:
            out = repo.in_worktree(wt, "diff-files", "-z", "--name-only", "--ignore-submodules=dirty")
            modified.extend(p for p in out.split("\0") if p)
        except BaseException as e:  # re-raised in the caller's thread
            failed.append(e)

    worker = threading.Thread(target=diff_files, name="novaproc-diff-files")
    worker.start()
    try:
        folders = snap.changed_folders()
        untracked = snap.untracked_in(folders) if len(folders) <= MAX_LISTED else None
    finally:
        worker.join()
    if failed:
        raise failed[0]
    if untracked is None or len(untracked) > MAX_LISTED:
        return WHOLE_TREE
    wanted = [p for p in untracked if not _under(p, exclude)]
    staged = [p for p in modified if not _under(p, exclude)]
    if wanted:
        staged += [p for p in untracked_files(repo, wt, wanted) if not _under(p, exclude)]
    return Found(tuple(dict.fromkeys(staged)), tuple(untracked), tuple(folders))


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def untracked_files(repo: Repo, wt: Worktree, entries: Sequence[str]) -> list[str]:
    """The untracked files under `entries` that .gitignore leaves to commit (git walks only
    them); a nested repository as its folder, as `git add` records it."""
    specs = [f":(top,literal){e}" for e in entries]
    out = repo.in_worktree(wt, "ls-files", "-z", "-o", "--exclude-standard", "--", *specs)
    return [p.rstrip("/") for p in out.split("\0") if p]


def stage(repo: Repo, wt: Worktree, found: Found, exclude: Sequence[str]) -> Found:
    """Bring the index of `wt` to what the task left: `found`'s paths, or everything; what was
    done. What update-index refuses (a tracked folder replaced by a symlink: its old files lie
    "beyond a symbolic link") goes the whole-tree way, as `add -A` stages it."""
    if found.stage:
        try:
            repo.in_worktree(wt, "update-index", "-z", "--add", "--remove", "--replace", "--stdin",
                             stdin="\0".join(found.stage) + "\0")
            return found
        except EnvironmentFault:
            found = WHOLE_TREE
    if found.stage is None:
        repo.stage_all(wt, exclude)
    return found


def clean(repo: Repo, wt: Worktree, found: Found | None) -> None:
    """Remove what `wt` holds beyond its index: untracked and ignored files, and folders left
    empty, as `git clean -ffdx` does; only where `found` says they can be."""
    if found is None or found.leftovers is None:
        repo.in_worktree(wt, "clean", "-q", "-ffdx")
        return
    if found.leftovers:
        repo.in_worktree(wt, "clean", "-q", "-ffdx", "--", *(f":(top,literal){p}" for p in found.leftovers))
    root = wt.path
    for folder in sorted(found.changed_folders, key=lambda f: f.count("/"), reverse=True):
        if folder:  # a folder whose files the task deleted, as clean -d removes it
            with contextlib.suppress(OSError):  # not empty (or gone): it stays, as with clean
                (root / folder).rmdir()
