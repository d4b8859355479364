"""Merging results on real repositories: all results land, conflicts rerun or fail, verify
names its culprit, a moved target keeps both, a dirty checkout is never overwritten, and a run
equals running its tasks one by one (property)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.repo import git, make_repo

from novaproc.errors import ExitCode
from novaproc.isolation.merge import MergeOutcome, merge_results
from novaproc.isolation.policy import MergePolicy
from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import Workspaces

Edit = Callable[[Path], None]


pytestmark = pytest.mark.usefixtures("isolated_git")


@pytest.fixture
def repo(git_repo: Callable[..., Path]) -> Path:
    return git_repo({"a.txt": "a\n", "b.txt": "b\n", "c.txt": "c\n", "shared.txt": "s\n"})


class Run:
    """A run driven by hand: the supervisor's calls, without its loop."""

    def __init__(self, repo: Path, tmp_path: Path, run_id: str = "r1") -> None:
        self.repo, self.run_id, self.wt_dir = repo, run_id, tmp_path / "wt"
        self.base = git(repo, "rev-parse", "HEAD")
        self.ws = Workspaces(Repo(repo), run_id=run_id, worktree_dir=self.wt_dir, base=self.base)
        self.edits: dict[str, Edit] = {}

    def task(self, task_id: str, edit: Edit, parents: tuple[str, ...] = ()) -> str | None:
        self.edits[task_id] = edit
        path = self.ws.prepare(task_id, list(parents))
        edit(path)
        result = self.ws.commit(task_id, (), task_id).commit
        self.ws.release(task_id, keep=False)
        return result

    def rerun(self, task_id: str, new_base: str) -> str | None:
        # as the supervisor's: a task that changes nothing on `new_base` has `new_base` as its result
        return self.task(task_id, self.edits[task_id], (new_base,)) or new_base

    def merge(self, results: list[tuple[str, str | None]], **kw: object) -> MergeOutcome:
        kw.setdefault("rerun", self.rerun)
        rerun = kw.pop("rerun", None)
        policy = MergePolicy("main", self.base, worktree_dir=self.wt_dir, **kw)  # type: ignore[arg-type]
        outcome = merge_results(Repo(self.repo), self.run_id, results, policy, rerun)  # type: ignore[arg-type]
        self.ws.close()
        return outcome


def write(name: str, text: str) -> Edit:
    return lambda path: (path / name).write_text(text)


def append(name: str, line: str) -> Edit:
    def edit(path: Path) -> None:
        with (path / name).open("a") as f:
            f.write(line + "\n")
    return edit


def leftovers(repo: Path) -> tuple[int, list[str]]:
    worktrees = git(repo, "worktree", "list").count("\n") + 1
    return worktrees, git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/nova/").split()


def test_three_tasks_merge_into_one_result(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [(t, run.task(t, write(f"{t}.txt", f"{t} done\n"))) for t in ("a", "b", "c")]
    outcome = run.merge(results)
    assert outcome.exit_code == ExitCode.OK and outcome.target_moved
    assert outcome.merged == ("a", "b", "c") and outcome.notes == ()
    assert git(repo, "rev-parse", "main") == outcome.commit
    assert all((repo / f"{t}.txt").read_text() == f"{t} done\n" for t in "abc")
    assert git(repo, "status", "--porcelain") == ""
    assert leftovers(repo) == (1, [])


def test_a_dependent_builds_on_its_dependency(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    first = run.task("gen", write("gen.txt", "generated\n"))
    assert first is not None

    def use(path: Path) -> None:
        (path / "use.txt").write_text((path / "gen.txt").read_text().upper())

    second = run.task("use", use, (first,))
    outcome = run.merge([("gen", first), ("use", second)])
    assert outcome.exit_code == ExitCode.OK
    assert (repo / "use.txt").read_text() == "GENERATED\n"


def test_declared_conflicting_writes_run_in_order_and_the_later_sees_the_earlier(repo: Path,
                                                                                 tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    first = run.task("first", append("shared.txt", "first"))
    assert first is not None
    second = run.task("second", append("shared.txt", "second"), (first,))
    outcome = run.merge([("first", first), ("second", second)])
    assert outcome.exit_code == ExitCode.OK and outcome.reruns == ()
    assert (repo / "shared.txt").read_text() == "s\nfirst\nsecond\n"


def test_a_rerun_that_fails_keeps_the_branch(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [(t, run.task(t, append("shared.txt", f"from {t}"))) for t in ("x", "y")]
    outcome = run.merge(results, rerun=lambda task, base: None)
    assert outcome.exit_code == ExitCode.MERGE and outcome.reruns == ("y",)
    assert outcome.conflicts == {"y": ("shared.txt",)} and outcome.kept_branches == ("nova/r1/y",)
    assert (repo / "shared.txt").read_text() == "s\nfrom x\n"


def test_undeclared_conflict_is_rerun_on_the_merged_result(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [(t, run.task(t, append("shared.txt", f"from {t}"))) for t in ("x", "y")]
    outcome = run.merge(results, on_conflict="rerun")
    assert outcome.exit_code == ExitCode.OK and outcome.reruns == ("y",)
    assert (repo / "shared.txt").read_text() == "s\nfrom x\nfrom y\n"
    assert any("y: conflicted in shared.txt" in note for note in outcome.notes)
    assert leftovers(repo) == (1, [])


def test_a_rerun_that_changes_nothing_leaves_the_merged_result_as_it_is(repo: Path, tmp_path: Path) -> None:
    def level(to: str) -> Edit:  # sed 's/^s$/<to>/': a no-op once another edit changed the line
        return lambda path: (path / "shared.txt").write_text(
            (path / "shared.txt").read_text().replace("s\n", f"{to}\n"))

    run = Run(repo, tmp_path)
    results = [("x", run.task("x", level("two"))), ("y", run.task("y", level("three")))]
    outcome = run.merge(results)
    assert outcome.exit_code == ExitCode.OK and outcome.reruns == ("y",) and outcome.merged == ("x",)
    assert (repo / "shared.txt").read_text() == "two\n"
    assert any("y: conflicted in shared.txt" in n and "changed nothing more" in n for n in outcome.notes)
    assert leftovers(repo) == (1, [])


def test_conflict_with_fail_keeps_the_branch_and_names_the_file(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [(t, run.task(t, append("shared.txt", f"from {t}"))) for t in ("x", "y")]
    results.append(("z", run.task("z", write("z.txt", "z\n"))))
    outcome = run.merge(results, on_conflict="fail")
    assert outcome.exit_code == ExitCode.MERGE
    assert outcome.conflicts == {"y": ("shared.txt",)} and outcome.merged == ("x", "z")
    assert outcome.kept_branches == ("nova/r1/y",)
    assert any("shared.txt" in n and "nova/r1/y" in n for n in outcome.notes)
    assert (repo / "shared.txt").read_text() == "s\nfrom x\n" and (repo / "z.txt").exists()
    assert leftovers(repo) == (1, ["nova/r1/y"])


def test_verify_names_the_culprit_and_lands_the_rest(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [(t, run.task(t, write(f"{t}.txt", "ok\n"))) for t in ("a", "b")]
    results.insert(1, ("bad", run.task("bad", write("BROKEN", "x\n"))))
    log = tmp_path / "verify.log"
    outcome = run.merge(results, verify="test ! -e BROKEN", verify_log=log)
    assert outcome.exit_code == ExitCode.VERIFY and outcome.culprit == "bad"
    assert outcome.merged == ("a", "b") and outcome.target_moved
    assert (repo / "a.txt").exists() and (repo / "b.txt").exists() and not (repo / "BROKEN").exists()
    assert outcome.kept_branches == ("nova/r1/bad",)
    assert any("verify fails with bad's result" in n for n in outcome.notes)
    assert "== verify" in log.read_text()
    assert leftovers(repo) == (1, ["nova/r1/bad"])


def test_verify_failing_without_the_results_moves_nothing(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    before = git(repo, "rev-parse", "main")
    results = [(t, run.task(t, write(f"{t}.txt", "ok\n"))) for t in ("a", "b")]
    outcome = run.merge(results, verify="false")
    assert outcome.exit_code == ExitCode.VERIFY and outcome.culprit is None and not outcome.target_moved
    assert git(repo, "rev-parse", "main") == before and outcome.waiting_branch == "nova/r1/merged"
    assert any("even without this run's results" in n for n in outcome.notes)


def test_verify_passing_lands_everything(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [(t, run.task(t, write(f"{t}.txt", "ok\n"))) for t in ("a", "b")]
    outcome = run.merge(results, verify=("test", "-e", "a.txt"))
    assert outcome.exit_code == ExitCode.OK and outcome.culprit is None and (repo / "b.txt").exists()


def test_target_moved_during_the_run_keeps_both(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [(t, run.task(t, write(f"{t}.txt", "ok\n"))) for t in ("a", "b")]
    (repo / "meanwhile.txt").write_text("by someone else\n")
    git(repo, "add", "meanwhile.txt")
    git(repo, "commit", "-qm", "meanwhile")
    other = git(repo, "rev-parse", "HEAD")
    outcome = run.merge(results)
    assert outcome.exit_code == ExitCode.OK and outcome.target_moved
    git(repo, "merge-base", "--is-ancestor", other, "main")
    assert {"a.txt", "b.txt", "meanwhile.txt"} <= set(git(repo, "ls-files").split())
    assert git(repo, "status", "--porcelain") == ""


def test_a_target_moved_during_verify_in_a_file_the_run_changed_keeps_both(tmp_path: Path) -> None:
    """The user commits to main while verify runs, in a file a task changed too (another line):
    the result is merged onto the new tip; the checkout, at that tip, is no "uncommitted change"."""
    repo = make_repo(tmp_path / "repo", {"lines.txt": "".join(f"{i}\n" for i in range(1, 9))})
    run = Run(repo, tmp_path)
    results = [("a", run.task("a", lambda p: (p / "lines.txt").write_text(
        (p / "lines.txt").read_text().replace("1\n", "one\n", 1))))]
    meanwhile = (f"cd {repo} && sed -i 's/^8$/eight/' lines.txt && git commit -qam meanwhile "
                 f"&& touch {tmp_path / 'committed'}")
    outcome = run.merge(results, verify=["sh", "-c", f"test -e {tmp_path / 'committed'} || ({meanwhile})"])
    assert outcome.exit_code == ExitCode.OK and outcome.target_moved, outcome.notes
    text = (repo / "lines.txt").read_text()
    assert text.startswith("one\n") and text.endswith("eight\n")
    assert git(repo, "status", "--porcelain") == ""
    assert any("merged onto its new tip and verified again" in n for n in outcome.notes)


def test_a_dirty_checkout_is_never_overwritten(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [("a", run.task("a", write("a.txt", "from the task\n")))]
    (repo / "a.txt").write_text("uncommitted user edit\n")
    before = git(repo, "rev-parse", "main")
    outcome = run.merge(results)
    assert outcome.exit_code == ExitCode.MERGE and not outcome.target_moved
    assert outcome.waiting_branch == "nova/r1/merged"
    assert (repo / "a.txt").read_text() == "uncommitted user edit\n"
    assert git(repo, "rev-parse", "main") == before
    assert git(repo, "show", "nova/r1/merged:a.txt") == "from the task"
    assert any("a.txt" in n and "git merge nova/r1/merged" in n for n in outcome.notes)


def test_uncommitted_changes_the_update_does_not_touch_stay(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [("a", run.task("a", write("a.txt", "from the task\n")))]
    (repo / "b.txt").write_text("user edit\n")
    (repo / "c.txt").write_text("staged edit\n")
    git(repo, "add", "c.txt")
    (repo / "notes.txt").write_text("untracked\n")
    outcome = run.merge(results)
    assert outcome.exit_code == ExitCode.OK and outcome.target_moved
    assert (repo / "a.txt").read_text() == "from the task\n"
    assert (repo / "b.txt").read_text() == "user edit\n" and (repo / "notes.txt").exists()
    assert git(repo, "status", "--porcelain") == "M b.txt\nM  c.txt\n?? notes.txt"


def test_a_target_not_checked_out_moves_without_touching_the_checkout(repo: Path, tmp_path: Path) -> None:
    run = Run(repo, tmp_path)
    results = [("a", run.task("a", write("a.txt", "from the task\n")))]
    git(repo, "checkout", "-qb", "elsewhere")
    outcome = run.merge(results)
    assert outcome.target_moved and (repo / "a.txt").read_text() == "a\n"
    assert git(repo, "show", "main:a.txt") == "from the task"


FILES = ("a.txt", "b.txt", "d/e.txt", "f.txt")
OPS = st.tuples(st.sampled_from(FILES), st.sampled_from(("append", "overwrite", "delete")))


def apply(folder: Path, tag: str, ops: list[tuple[str, str]]) -> None:
    for name, op in ops:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if op == "delete":
            path.unlink(missing_ok=True)
        elif op == "append":
            with path.open("a") as f:
                f.write(f"{tag}\n")
        else:
            path.write_text(f"{tag} only\n")


def tree_of(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(folder).parts}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(OPS, min_size=1, max_size=3), min_size=1, max_size=5))
def test_a_run_equals_its_tasks_one_by_one(tasks: list[list[tuple[str, str]]]) -> None:
    start = {"a.txt": "a\n", "b.txt": "b\n", "d/e.txt": "e\n"}
    with tempfile.TemporaryDirectory() as tmp:
        one_by_one = Path(tmp) / "serial"
        make_repo(one_by_one, start)
        for i, ops in enumerate(tasks):
            apply(one_by_one, f"t{i}", ops)
        run = Run(make_repo(Path(tmp) / "repo", start), Path(tmp))
        results: list[tuple[str, str | None]] = []
        for i, ops in enumerate(tasks):
            touched = {name for name, _ in ops}
            parents = tuple(c for j, (_, c) in enumerate(results) if c and touched & {n for n, _ in tasks[j]})
            edit = lambda path, i=i, ops=ops: apply(path, f"t{i}", ops)  # noqa: E731
            results.append((f"t{i}", run.task(f"t{i}", edit, parents)))
        outcome = run.merge(results, on_conflict="fail")
        assert outcome.exit_code == ExitCode.OK, outcome.notes
        assert tree_of(run.repo) == tree_of(one_by_one)
        assert leftovers(run.repo) == (1, [])
