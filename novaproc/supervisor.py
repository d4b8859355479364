"""The run loop (ninja's Builder): start as many tasks as allowed, wait for the next report,
record it, repeat until every task has ended.

What may start is the plan's Schedule; slots, named resources, the load throttle and an
optional lock gate decide when; the WorkerPool runs it. Every change is emitted as an Event
for the views and the journal. Nothing here prints.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import InternalError, NovaError
from .gate import Gate
from .interrupts import Interrupts
from .isolation_interface import Finish, InPlace, Isolation, Landing
from .messages import Escalated, Event, Finished, Job, Report, Started, TaskState
from .outcome import RunOutcome, TaskRecord, run_exit_code
from .plan import Plan, Schedule
from .pool import WorkerPool
from .taskfile import Task
from .throttle import Throttle

LOCK_RETRY = 0.05  # seconds between tries of a lock held by another process


class Supervisor:
    """Drives one run of a plan to its end; `run()` returns how it went."""

    def __init__(self, plan: Plan, settings: Settings, *, run_id: str, root: Path,
                 log_path: Callable[[str], Path], emit: Callable[[Event], None],
                 pool: WorkerPool | None = None, throttle: Throttle | None = None,
                 gate: Gate | None = None, isolation: Isolation | None = None,
                 kept: Mapping[str, tuple[str | None, float]] | None = None,
                 earlier_attempts: Mapping[str, int] | None = None,
                 interrupts: Interrupts | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan, self.settings, self.run_id, self.root = plan, settings, run_id, root
        self._log_path, self._emit_event, self._clock = log_path, emit, clock
        self.slots = settings.max_parallel
        self.pool = pool or WorkerPool(self.slots, settings.kill_grace)
        self.throttle = throttle or Throttle(settings.cpu_limit, settings.memory_limit)
        self.gate = gate
        self.isolation = isolation or InPlace(root)
        self.schedule = Schedule.of(plan)
        earlier = earlier_attempts or {}
        self.records = {t.id: TaskRecord(t, earlier_attempts=earlier.get(t.id, 0)) for t in plan.tasks}
        self._used_slots = 0
        self._held: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}  # task -> when its next attempt may start
        self._deadlines: dict[str, float] = {}  # running task -> when its timeout strikes
        self._waiting: set[str] = set()  # ready tasks held back by a resource, load or lock
        self._rerunning: set[str] = set()  # ended tasks run again by the merge protocol
        self._terminated: set[str] = set()  # running tasks a stop ended
        self._stopping = False
        self._kept = dict(kept or {})  # task -> (result commit, duration) kept from earlier
        self._interrupts = interrupts or Interrupts()
        bell = gate.fileno() if gate else None
        self._wake_fds = [self._interrupts.fileno()] + ([bell] if bell is not None else [])

    # ------------------------------------------------------------ the loop

    def run(self) -> RunOutcome:
        started = time.time()
        self._emit("run_started", data={"pid": os.getpid(), "strategy": self.plan.strategy,
                                        "estimated_speedup": round(self.plan.estimated_speedup, 2),
                                        "max_parallel": self.slots, "tasks": len(self.records)})
        for warning in self.plan.warnings:
            self._emit("message", data={"level": "warning", "text": warning})
        self._keep_earlier_results()
        with self._interrupts:
            try:
                while True:
                    self._start_ready()
                    if self.schedule.finished():  # starting may end tasks (a failed setup)
                        break
                    self._check_progress()
                    self._step(self._next_timeout())
                interrupted = self._interrupts.first is not None
                landing = self._land(interrupted)
            finally:
                self.pool.shutdown()
                notes = self.isolation.close()
        outcome = self._outcome(time.time() - started, landing, notes, interrupted or landing.stopped)
        self._emit("run_finished", data={
            "exit_code": int(outcome.exit_code), "state": str(outcome.state),
            "wall": round(outcome.wall, 3),
            "task_time": round(outcome.task_time, 3), "speedup": round(outcome.speedup, 2),
            "estimated_speedup": round(outcome.estimated_speedup, 2)})
        return outcome

    def _keep_earlier_results(self) -> None:
        """A resumed run: what succeeded before, unchanged, counts as done with its result."""
        for tid in self.plan.graph.order:
            if tid in self._kept:
                self.schedule.assume_done(tid)
                rec = self.records[tid]
                rec.state, (rec.commit, duration), rec.exit_code = TaskState.DONE, self._kept[tid], 0
                self._emit("task_state", tid, TaskState.DONE, {
                    "kept": True, "commit": rec.commit, "duration": duration, "exit_code": 0})

    def _step(self, timeout: float | None) -> None:
        """Wait for the next reports (or timer) and act on them."""
        # the lock bell only while a task waits: nobody would drain it otherwise
        wake = self._wake_fds if self._waiting else self._wake_fds[:1]
        for report in self.pool.wait(timeout, wake=wake):
            self._on_report(report)
        self._on_timers()

    def _land(self, interrupted: bool) -> Landing:
        """Bring the results to the target, unless the run was interrupted."""
        results = [(t, self.records[t].commit) for t in self.plan.graph.order if self.records[t].commit]
        if interrupted:
            note = "interrupted: results were not merged; they stay on their branches"
            return Landing(notes=(note,) if results else ())
        landing = self.isolation.land(results, self._rerun)  # type: ignore[arg-type]
        if landing.data:
            self._emit("merge", data={**landing.data, "exit_code": int(landing.exit_code)})
        return landing

    def _rerun(self, task_id: str, base: str) -> str | None:
        """Run `task_id` again, now, on top of `base` (merge conflict protocol); its new result."""
        rec = self.records[task_id]
        self._emit("message", task_id, data={"level": "info", "text": f"{task_id}: its result "
                   "conflicts with the merged result so far; running it again on top of it"})
        self._rerunning.add(task_id)
        while self.gate and (why := self.gate.try_acquire(rec.task)):  # locks hold for reruns too
            self._wait_for(task_id, why)
            self._step(LOCK_RETRY)
        self._waiting.discard(task_id)
        if self._launch(rec, [base]):
            while task_id in self.pool.busy():
                self._step(self._next_timeout())
        return (rec.commit or base) if rec.state == TaskState.DONE else None  # no change: `base`

    def _start_ready(self) -> None:
        """Start as many ready tasks as slots, resources, load and locks allow, best first."""
        if self._stopping:
            return
        now = self._clock()
        due = [t for t, at in self._retry_at.items() if at <= now]
        for tid in itertools.chain(due, self.schedule.iter_ready()):
            if self._used_slots >= self.slots:
                return
            task = self.records[tid].task
            if self._need(task) > self.slots - self._used_slots:
                return  # keep the free slots for the best task rather than starve it
            why = self._why_not(task)
            if why == "throttle":
                self._wait_for(tid, self.throttle.reason())
                return
            if why:
                self._wait_for(tid, why)
                continue
            self._start(task)
            if self._stopping:  # a signal during its worktree_setup
                return

    def _why_not(self, task: Task) -> str | None:
        for name, n in task.resources.items():
            held, capacity = self._held.get(name, 0), self.settings.resources.get(name, 1)
            if held and held + n > capacity:
                return f"resource {name} in use ({held} of {capacity})"
        if not self.throttle.allows_start(self._used_slots):
            return "throttle"
        return self.gate.try_acquire(task) if self.gate else None

    def _check_progress(self) -> None:
        """Name the impossible state instead of waiting forever."""
        if self._used_slots or self._retry_at or self.schedule.finished():
            return
        if self.schedule.has_ready():
            return  # waiting for another process's lock: we poll
        raise InternalError(f"stuck: no task running or ready, states {self.schedule.state}")

    def _next_timeout(self) -> float | None:
        now = self._clock()
        # a retry already due waits for a slot or a lock like any ready task: not a timer
        times = [*self._deadlines.values(), *(at for at in self._retry_at.values() if at > now)]
        timeout = max(0.0, min(times) - now) if times else None
        if self._waiting:  # a lock of another process or the load may free up: try again soon
            timeout = LOCK_RETRY if timeout is None else min(timeout, LOCK_RETRY)
        return timeout

    # ------------------------------------------------------------ starting and ending

    def _need(self, task: Task) -> int:
        return min(task.cpu, self.slots)

    def _start(self, task: Task) -> None:
        rec = self.records[task.id]
        if task.id in self._retry_at:
            del self._retry_at[task.id]
        else:
            self.schedule.start(task.id)
        self._waiting.discard(task.id)
        self._launch(rec, self._parents(task.id))

    def _launch(self, rec: TaskRecord, parents: list[str]) -> bool:
        """Prepare the task's folder and hand an attempt to a worker; False if it could not."""
        task = rec.task
        rec.attempts += 1
        rec.reason, rec.timed_out, rec.commit = None, False, None
        self._used_slots += self._need(task)
        for name, n in task.resources.items():
            self._held[name] = self._held.get(name, 0) + n
        rec.state = TaskState.RUNNING
        try:
            folder = self.isolation.prepare(task, parents)
        except NovaError as e:
            if self._interrupts.first is not None:  # a Ctrl-C ended its worktree_setup
                self._terminated.add(task.id)
                self._on_interrupt()  # stop now: no retry, no further launch
            self._on_report(Finished(task.id, rec.attempts, None, error=str(e), ended_at=time.time()))
            return False
        self.pool.submit(self._job(task, rec.attempts, folder))
        if rec.started_at is None:
            rec.started_at = time.time()
        self._emit("task_state", task.id, TaskState.RUNNING, {"attempt": rec.attempts})
        if task.timeout is not None:
            self._deadlines[task.id] = self._clock() + task.timeout
        return True

    def _parents(self, tid: str) -> list[str]:
        """The results a task starts from: those of what it waits for, looking through tasks
        that produced none (they changed nothing, or failed before an order-only edge)."""
        found: list[str] = []
        seen: set[str] = set()
        stack = sorted(self.plan.graph.preds[tid], key=self.plan.graph.index.__getitem__)
        while stack:
            pred = stack.pop()
            if pred in seen:
                continue
            seen.add(pred)
            commit = self.records[pred].commit
            if commit:
                found.append(commit)
            else:
                stack.extend(self.plan.graph.preds[pred])
        return found

    def _job(self, task: Task, attempt: int, folder: Path) -> Job:
        cwd = folder / task.cwd if task.cwd else folder
        env = {**task.env, "NOVA_RUN_ID": self.run_id}
        common = {"task_id": task.id, "attempt": attempt, "log_path": str(self._log_path(task.id)),
                  "cwd": str(cwd), "env": env, "kill_grace": self.settings.kill_grace}
        if task.call is not None:
            return Job(**common, call=task.call, args=task.args, kwargs=task.kwargs)
        if isinstance(task.cmd, str):
            return Job(**common, shell=task.cmd)
        return Job(**common, argv=task.cmd)

    def _on_report(self, report: Report) -> None:
        rec = self.records[report.task_id]
        if isinstance(report, Escalated):
            self._emit("message", rec.task.id, data={"level": "warning", "text": (
                f"{rec.task.id} did not end within {report.grace:g}s of SIGTERM: sent SIGKILL")})
            return
        if isinstance(report, Started):  # only a task that runs a while reports its pid
            rec.pid = report.pid
            self._emit("task_pid", rec.task.id, data={"attempt": rec.attempts, "pid": report.pid})
            return
        self._release(rec.task)
        self._deadlines.pop(rec.task.id, None)
        rec.exit_code, rec.signal, rec.value = report.exit_code, report.signal, report.value
        rec.error = f"timed out after {rec.task.timeout:g}s" if rec.timed_out else report.error
        if report.started_at:
            rec.run_time += max(0.0, report.ended_at - report.started_at)
        ok = report.ok and not rec.timed_out
        ok = self._keep_result(rec, ok)
        if rec.task.id in self._rerunning:  # the merge protocol waits for it; the plan is done
            self._rerunning.discard(rec.task.id)
            rec.state = TaskState.DONE if ok else TaskState.FAILED
            self._emit("task_state", rec.task.id, rec.state, {"attempt": rec.attempts, "rerun": True})
            return
        if not ok and not self._stopping and rec.attempts <= rec.task.retries:
            self._retry(rec)
            return
        stopped = rec.task.id in self._terminated  # ended by _stop, not by its own failure
        state = TaskState.DONE if ok else TaskState.CANCELLED if stopped else TaskState.FAILED
        self._end(rec, state, report.ended_at or time.time())

    def _keep_result(self, rec: TaskRecord, ok: bool) -> bool:
        """Commit what a successful attempt changed (or keep a failed one's folder)."""
        try:
            finish = self.isolation.finish(rec.task, ok)
        except NovaError as e:
            finish = Finish(problem=f"novaproc could not keep its result: {e}")
        if finish.warning:
            self._emit("message", rec.task.id, data={"level": "warning", "text": finish.warning})
        if finish.problem:
            rec.error = finish.problem
            return False
        rec.commit = finish.commit
        return ok

    def _retry(self, rec: TaskRecord) -> None:
        backoff = min(0.2 * 2 ** (rec.attempts - 1), 5.0)
        self._retry_at[rec.task.id] = self._clock() + backoff
        self._wait_for(rec.task.id, f"attempt {rec.attempts} failed ({rec.failure}); "
                       f"retrying in {backoff:.1f}s")

    def _end(self, rec: TaskRecord, state: TaskState, ended_at: float) -> None:
        rec.state, rec.ended_at = state, ended_at
        skipped = self.schedule.finish(rec.task.id, state == TaskState.DONE, state=state)
        data: dict[str, Any] = {"attempt": rec.attempts, "duration": round(rec.run_time, 3),
                                "exit_code": rec.exit_code}
        if rec.commit:
            data["commit"] = rec.commit
        if rec.signal:
            data["signal"] = rec.signal
        if rec.error:
            data["error"] = rec.error
        if rec.value is not None:
            data["value"] = rec.value
        self._emit("task_state", rec.task.id, state, data)
        for tid in skipped:
            self.records[tid].state = TaskState.SKIPPED
            self._emit("task_state", tid, TaskState.SKIPPED, {"reason": f"{rec.task.id} {state}"})
        if state == TaskState.FAILED and self.settings.fail_fast and not rec.task.allow_failure:
            self._stop(f"fail_fast: {rec.task.id} failed")

    def _release(self, task: Task) -> None:
        self._used_slots -= self._need(task)
        self.throttle.task_ended()
        for name, n in task.resources.items():
            self._held[name] -= n
        if self.gate:
            self.gate.release(task)

    def _wait_for(self, tid: str, reason: str) -> None:
        rec = self.records[tid]
        self._waiting.add(tid)
        if _gist(rec.reason) != _gist(reason):  # a load that drifts from 96% to 97% is no news
            rec.state, rec.reason = TaskState.WAITING, reason
            self._emit("task_state", tid, TaskState.WAITING, {"reason": reason})

    # ------------------------------------------------------------ stopping

    def _on_timers(self) -> None:
        self._on_interrupt()
        now = self._clock()
        for tid, deadline in list(self._deadlines.items()):
            rec = self.records[tid]
            if now >= deadline:
                del self._deadlines[tid]  # struck: the pool's kill timer takes over
                rec.timed_out = True
                self._emit("message", rec.task.id, data={
                    "level": "warning", "text": f"{rec.task.id}: timed out after "
                    f"{rec.task.timeout:g}s; sending SIGTERM, SIGKILL after {self.settings.kill_grace:g}s"})
                self.pool.terminate(rec.task.id)

    def _stop(self, why: str, *, kill: bool = False) -> None:
        """Start no more work and end what runs: SIGTERM, then SIGKILL after the grace period."""
        if not self._stopping:
            self._emit("message", data={"level": "warning", "text": f"stopping: {why}"})
        self._stopping = True
        for tid in list(self._retry_at):
            del self._retry_at[tid]
            rec = self.records[tid]
            self._end(rec, TaskState.CANCELLED, time.time())
        if self.gate:
            for tid in self._waiting:
                self.gate.cancel(self.records[tid].task)
        self._waiting.clear()
        for tid in self.schedule.cancel_rest():
            self.records[tid].state = TaskState.CANCELLED
            self._emit("task_state", tid, TaskState.CANCELLED, {"reason": why})
        for tid in self.pool.busy():
            self._terminated.add(tid)
            self.pool.terminate(tid, kill=kill)

    def _on_interrupt(self) -> None:
        """SIGINT/SIGTERM stop the run gracefully; a second SIGINT kills at once."""
        taken = self._interrupts.take()
        if taken is not None:
            signum, again = taken
            name = signal.Signals(signum).name
            self._stop(f"received {name}" + ("; killing now" if again else ""), kill=again)

    # ------------------------------------------------------------ results

    def _outcome(self, wall: float, landing: Landing, notes: list[str], interrupted: bool) -> RunOutcome:
        # a merge that finished despite a signal gives its own exit code: not `interrupted`
        code = run_exit_code(self.records.values(), landing.exit_code,
                             self._interrupts.first if interrupted else None)
        task_time = sum(r.run_time for r in self.records.values())
        return RunOutcome(self.run_id, code, wall, task_time, self.plan.estimated_speedup,
                          dict(self.records), (*landing.notes, *notes))

    def _emit(self, kind: str, task_id: str | None = None, state: TaskState | None = None,
              data: dict[str, Any] | None = None) -> None:
        self._emit_event(Event(kind, self.run_id, time.time(), task_id, state, data or {}))


def _gist(reason: str | None) -> str | None:
    """A waiting reason without its figures."""
    return None if reason is None else "".join(c for c in reason if not c.isdigit())
