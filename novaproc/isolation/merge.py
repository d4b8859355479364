"""The end of a run: merge the tasks' results into the target, resolve conflicts, verify, land.

    results --merge-tree, in order--> merged commit (no checkout, nothing touched)
                  | conflict: `rerun` the task on the merged result so far (once), or keep its branch
    merged  --verify in its own worktree--> pass; or bisect the merge sequence for the first
                  result that breaks it, leave that out, rebuild, verify again
    merged  --land--> the user's checkout of the target moved like `git merge --ff-only`, then
                  the target ref by compare-and-swap; moved meanwhile: merged onto its new tip;
                  a checkout in the way: the result waits on nova/<run>/merged
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from novaproc.errors import ExitCode, InternalError, NovaError
from novaproc.isolation.history import reshape
from novaproc.isolation.landing import Blocked, land
from novaproc.isolation.policy import MergePolicy
from novaproc.isolation.records import Merged
from novaproc.isolation.repo import Repo
from novaproc.isolation.verify import Verifier, VerifyStopped, first_failing
from novaproc.messages import Phase

Rerun = Callable[[str, str], str | None]
"""rerun(task_id, base_commit) -> the task's new result commit (`base_commit` itself when it
changed nothing on top of it), or None if it failed again."""


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    """How the merge ended. `exit_code`: 3 when something could not merge or the result waits
    (that first), else 4 when verify failed, else 0; `notes` say what to do."""

    commit: str  # the merged result (the target's tip when nothing merged)
    merged: tuple[str, ...]  # tasks whose results it holds, in merge order
    conflicts: dict[str, tuple[str, ...]]  # task -> conflicting files; its branch is kept
    left_out: dict[str, str]  # task -> why its result is not merged
    culprit: str | None  # the task verify's bisection blamed
    reruns: tuple[str, ...]
    target_moved: bool  # the target ref now points at `commit`
    waiting_branch: str | None  # set when the result waits for the user
    kept_branches: tuple[str, ...]
    exit_code: ExitCode
    notes: tuple[str, ...]
    stopped: bool = False  # the run stopped while verify ran
    target: str = ""  # the branch the results went to
    verified: bool | None = None  # verify passed on what landed; None: no verify, or no verdict


@dataclass(slots=True)
class _Step:
    task: str
    result: str
    after: str  # the merged commit once this result is in


@dataclass(slots=True)
class _State:
    """What one merge_results call has done so far."""

    repo: Repo
    run_id: str
    policy: MergePolicy
    steps: list[_Step] = field(default_factory=list)
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    reruns: list[str] = field(default_factory=list)
    culprits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verify_broken_before: bool = False
    verify_stopped: bool = False  # the run stopped (Ctrl-C) while verify ran
    verified: bool | None = None  # verify passed on the final result; None: no verdict
    blocked: bool = False  # the target could not take the result

    @property
    def by_file(self) -> bool:
        return self.policy.conflict_check == "file"  # see Repo.merge

    @property
    def target(self) -> str:
        t = self.policy.target
        return t if t.startswith("refs/") else f"refs/heads/{t}"


def merge_results(repo: Repo, run_id: str, results: Sequence[tuple[str, str | None]],
                  policy: MergePolicy, rerun: Rerun | None = None) -> MergeOutcome:
    """Merge `results` ((task, result commit or None), dependency-then-declared order) into
    the policy's target, as it says."""
    state = _State(repo, run_id, policy)
    ref = state.target
    with repo.hold_run(run_id):
        old, base_commit = repo.rev(ref), repo.commit_of(policy.base) or policy.base
        start = old or base_commit
        if old is not None and old != base_commit:
            state.notes.append(f"{_short(ref)} moved during the run; results merged onto its new tip")
        items = [(t, c) for t, c in results if c]
        policy.announce(Phase("merge", f"merging {len(items)} result(s) into {_short(ref)}"))
        tip = _merge_all(state, start, items, rerun if policy.on_conflict == "rerun" else None)
        verifier = Verifier(repo, run_id, policy) if policy.verify and state.steps else None
        try:
            if verifier is not None:
                tip = _verified(state, start, items, verifier)
            steps = [(s.task, s.after) for s in state.steps]
            tip = reshape(repo, policy.history, run_id, start, steps) or tip  # what was verified
            moved, waiting = _finish(state, ref, old, start, tip, verifier)
        finally:
            if verifier is not None:
                verifier.close()
        _delete_merged_branches(state)
    landed = repo.rev(ref) if moved else None  # a target moved meanwhile got `tip` merged in
    return _outcome(state, ref, landed or tip, moved, waiting)


def _merge_all(state: _State, start: str, items: Sequence[tuple[str, str]], rerun: Rerun | None) -> str:
    """Merge results one by one onto `start`; returns the merged commit."""
    repo, tip, tip_tree = state.repo, start, None
    state.steps.clear()
    for task, commit in items:
        if task in state.left_out:
            continue
        if (blocker := _builds_on_left_out(state, items, commit)) is not None:
            state.left_out[task] = f"its result builds on {blocker}'s, which is left out"
            continue
        message = f"Merge nova task {task} (run {state.run_id})"
        merged = first = repo.merge(tip, commit, message, ours_tree=tip_tree, by_file=state.by_file)
        if first.commit is None and rerun is not None:
            state.reruns.append(task)
            commit = _rerun(state, rerun, task, tip)
            again = f"{task}: {_clash(first, past=True)}; ran again on the merged result, "
            if commit == tip:  # its edit is in the merged result already, as when run one by one
                state.notes.append(again + "where it changed nothing more")
                continue
            merged = repo.merge(tip, commit, message, by_file=state.by_file) if commit else first
            state.notes.append(again + ("and merged" if merged.commit else "and still could not merge"))
        if merged.commit is None:
            state.conflicts[task] = merged.conflicts
            state.left_out[task] = _clash(merged)
            continue
        tip, tip_tree = merged.commit, merged.tree
        state.steps.append(_Step(task, commit, tip))
    return tip


def _clash(merged: Merged, *, past: bool = False) -> str:
    files = ", ".join(merged.conflicts)
    if merged.how == "same files":
        return f"it changed {files}, which results merged before it changed too"
    return f"{'conflicted' if past else 'conflicts'} in {files}"


def _rerun(state: _State, rerun: Rerun, task: str, tip: str) -> str:
    """The task's new result on top of `tip`, or "" when it could not run again."""
    try:
        return rerun(task, tip) or ""
    except NovaError as e:
        state.notes.append(f"{task}: could not run again on the merged result: {e}")
        return ""


def _builds_on_left_out(state: _State, items: Sequence[tuple[str, str]], commit: str) -> str | None:
    for task, result in items:
        if task in state.left_out and result != commit and state.repo.is_ancestor(result, commit):
            return task
    return None


# -- verify and bisection ---------------------------------------------------------------------

def _verified(state: _State, start: str, items: Sequence[tuple[str, str]], verifier: Verifier) -> str:
    """The merged result verified (culprits left out), or as it is when the run stopped meanwhile."""
    try:
        tip = _verify_loop(state, start, items, verifier)
    except VerifyStopped:
        state.verify_stopped, tip = True, state.steps[-1].after
    if verifier.flaky:
        state.notes.append(f"verify is flaky: it both passed and failed on {len(verifier.flaky)} tree(s) "
                           f"(first {verifier.flaky[0][:12]}), so it blamed no task there; see its log")
    return tip


def _verify_loop(state: _State, start: str, items: Sequence[tuple[str, str]], verifier: Verifier) -> str:
    """Verify the merged result; while it fails, bisect for the culprit, leave it out, rebuild."""
    results = {s.task: s.result for s in state.steps}  # reruns replaced some results
    items = [(t, results.get(t, c)) for t, c in items]
    tip = state.steps[-1].after
    for _ in range(len(items) + 1):
        if not state.steps or verifier.passes(tip, "verify on the merged result"):
            state.verified = bool(state.steps) or None
            return tip
        failing = first_failing([start, *(s.after for s in state.steps)], verifier)
        if failing is None:
            state.verify_broken_before, state.verified = True, False
            return tip
        culprit = state.steps[failing - 1].task
        state.culprits.append(culprit)
        state.left_out[culprit] = "verify fails with its result"
        tip = _merge_all(state, start, items, None)
    raise InternalError("verify bisection did not converge")


# -- landing ----------------------------------------------------------------------------------

def _finish(state: _State, ref: str, old: str | None, start: str, tip: str,
            verifier: Verifier | None) -> tuple[bool, str | None]:
    """Land `tip` on the target, or park it on the waiting branch when that is not possible."""
    if tip == start:
        return False, None
    if state.verify_stopped:
        return False, _stopped_in_verify(state, ref, tip)
    if state.verify_broken_before:
        state.notes.append(f"verify fails on {_short(ref)} even without this run's results, so nothing "
                           "was verified and the target was not moved")
        return False, _wait(state, tip)
    if old is None:
        state.blocked = True
        return False, _wait(state, tip, Blocked(f"{_short(ref)} no longer exists",
                                                "take it with: git branch {name} {branch}"))
    try:
        blocked = land(state.repo, ref, old, tip, state.run_id, announce=state.policy.announce,
                       verify=verifier.passes if verifier else None, notes=state.notes)
    except VerifyStopped:  # verifying the result merged onto a target that moved
        state.verify_stopped = True
        return False, _stopped_in_verify(state, ref, tip)
    state.blocked = blocked is not None
    return (True, None) if blocked is None else (False, _wait(state, tip, blocked))


def _stopped_in_verify(state: _State, ref: str, tip: str) -> str:
    branch = _park(state, tip)
    state.notes.append(f"the run stopped while verify ran, so nothing was verified and {_short(ref)} "
                       f"was not moved; the merged result waits on branch {branch}")
    return branch


def _park(state: _State, tip: str) -> str:
    """Keep the merged result `tip` on the run's waiting branch; its name."""
    branch = f"nova/{state.run_id}/merged"
    state.repo.set_ref(f"refs/heads/{branch}", tip, reason="novaproc: merged result waits")
    return branch


def _wait(state: _State, tip: str, blocked: Blocked | None = None) -> str:
    branch = _park(state, tip)
    if blocked:
        state.notes.append(f"{blocked.why}; the merged result waits on branch {branch}; "
                           + blocked.todo.format(branch=branch, name=_short(state.target)))
    else:
        state.notes.append(f"the unverified merged result waits on branch {branch}; fix verify on the "
                           f"target first, or take it with: git merge {branch}")
    return branch


def _delete_merged_branches(state: _State) -> None:
    refs = [f"refs/heads/nova/{state.run_id}/{s.task}" for s in state.steps]
    state.repo.delete_refs(refs)


def _outcome(state: _State, ref: str, tip: str, moved: bool, waiting: str | None) -> MergeOutcome:
    run = state.run_id
    for task, files in state.conflicts.items():
        state.notes.append(f"{task}: conflicts with the merged result in {', '.join(files)}; its result "
                           f"is kept on branch nova/{run}/{task} (merge it by hand, or declare those files "
                           "in `writes` so the tasks run one after another)")
    for task, why in state.left_out.items():  # left out for what it builds on
        if task not in state.conflicts and task not in state.culprits:
            state.notes.append(f"{task}: left out, as {why}; its result is kept on branch "
                               f"nova/{run}/{task}")
    for culprit in state.culprits:
        state.notes.append(f"verify fails with {culprit}'s result: it was left out (branch nova/{run}/"
                           f"{culprit}); {_short(ref)} holds the rest, verified")
    kept = tuple(f"nova/{run}/{t}" for t in state.left_out
                 if state.repo.rev(f"refs/heads/nova/{run}/{t}") is not None)
    if state.blocked or state.conflicts:
        code = ExitCode.MERGE
    elif state.culprits or state.verify_broken_before or state.verify_stopped:
        code = ExitCode.VERIFY
    else:
        code = ExitCode.OK
    return MergeOutcome(tip, tuple(s.task for s in state.steps), dict(state.conflicts), dict(state.left_out),
                        state.culprits[0] if state.culprits else None, tuple(state.reruns), moved, waiting,
                        kept, code, tuple(state.notes), state.verify_stopped, _short(ref),
                        None if state.verify_stopped else state.verified)


def _short(ref: str) -> str:
    return ref.removeprefix("refs/heads/")
