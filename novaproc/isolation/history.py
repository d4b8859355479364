"""The shape of what lands on the target, the `history` setting:

    merge    each result merged with a merge commit, as merged and verified (the default)
    linear   one commit per task on top of the target, in the order merged; no merge commits
    squash   one commit for the whole run, its message listing the tasks

Results are always merged (and verified, and bisected) as merge commits, which keep each
task's own commit an ancestor: that is what tells a dependent task's result from a conflict.
Only then is the sequence written again in the shape asked for, tree for tree, so what lands
is what was verified.
"""

from __future__ import annotations

from collections.abc import Sequence

from novaproc.isolation.repo import Repo


def reshape(repo: Repo, history: str, run_id: str, start: str,
            steps: Sequence[tuple[str, str]]) -> str | None:
    """The commit to land instead of the last of `steps` ((task, merged commit) in order, on top
    of `start`), or None to land the merges as they are."""
    if history == "merge" or not steps:
        return None
    commits = "".join(f"{c}^{{tree}}\n" for c in (start, *(after for _, after in steps)))
    trees = repo.git("cat-file", "--batch-check=%(objectname)", stdin=commits).split()  # not argv:
    # 100,000 results would not fit in one
    trailer = f"Nova-Run: {run_id}"
    if history == "squash":
        tasks = [task for (task, _), before, after in zip(steps, trees, trees[1:], strict=False)
                 if before != after]
        listed = "\n".join(f"- {task}" for task in tasks)
        return repo.commit_tree(trees[-1], [start], f"novaproc run {run_id}: {len(tasks)} task(s)\n\n"
                                f"{listed}\n\n{trailer}")
    tip = start
    for (task, _), before, after in zip(steps, trees, trees[1:], strict=False):
        if after != before:  # a result the merged commit already held adds no commit
            tip = repo.commit_tree(after, [tip], f"{task} (novaproc run {run_id})\n\n{trailer}\n"
                                   f"Nova-Task: {task}")
    return tip
