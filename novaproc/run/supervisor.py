"""The run loop (ninja's Builder): start as many tasks as allowed, wait for the next report,
record it, repeat until every task has ended.

What may start is the plan's Schedule; Admission (slots, resources, load, locks) decides
when; Attempts run it (its folder prepared, its job run by an Executor, its result kept) and
tell the supervisor how it went, as its Verdicts; Timers hold retries and timeouts. Every change
is emitted as an Event for the views and the journal. Nothing here prints.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

from novaproc.errors import InternalError
from novaproc.execution.throttle import Throttle
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import Task
from novaproc.isolation.interface import BaseConflict, Landing
from novaproc.messages import (
    ALLOWED_FAILURE,
    Escalated,
    LandingStarted,
    Level,
    Message,
    Payload,
    Phase,
    Report,
    RunFinished,
    RunStarted,
    Started,
    TaskChanged,
    TaskPid,
    TaskState,
)
from novaproc.planning.plan import Plan
from novaproc.run.admission import Admission, WaitKind
from novaproc.run.attempts import Attempts
from novaproc.run.bases import BaseRebuilds, parents_of
from novaproc.run.outbox import Outbox
from novaproc.run.outcome import RunOutcome, TaskRecord, outcome_of
from novaproc.run.parts import Earlier, RunParts
from novaproc.run.timers import Timers

LOCK_RETRY = 0.05  # seconds between tries of a lock held by another process


class Supervisor:
    """Drives one run of a plan to its end; `run()` returns how it went. Its public methods
    beside `run` are its Verdicts on attempts (attempts.py)."""

    def __init__(self, plan: Plan, settings: Settings, parts: RunParts,
                 earlier: Earlier | None = None) -> None:
        self.plan, self.settings, self.parts, self.run_id = plan, settings, parts, parts.run_id
        self.pool, self.isolation, self._clock = parts.executor, parts.isolation, parts.clock
        self.slots = settings.max_parallel
        throttle = parts.throttle or Throttle(settings.cpu_limit, settings.memory_limit)
        self.admission = Admission(self.slots, settings.resources, throttle, parts.gate, parts.clock)
        self.timers = Timers(parts.clock, settings.retry_delay)
        self.schedule = plan.schedule()
        self._order = {tid: i for i, tid in enumerate(plan.graph.order)}  # dependency order
        earlier = earlier or Earlier()
        self.records = {t.id: TaskRecord(t, earlier_attempts=earlier.attempts.get(t.id, 0))
                        for t in plan.tasks}
        self._waiting: set[str] = set()  # ready tasks held back by a resource, load or lock
        self._rerunning: set[str] = set()  # ended tasks run again by the merge protocol
        self._rebuilds = BaseRebuilds()  # tasks waiting for a parent to run again (bases.py)
        self._times: dict[str, float] = {}  # seconds of the tasks, the landing, verify (outcome)
        self._terminated: set[str] = set()  # running tasks a stop ended
        self._stopping = False
        self._kept = dict(earlier.kept)
        self._interrupts = parts.interrupts
        self._outbox = Outbox(self.run_id, parts.emit)
        self._attempts = Attempts(parts, settings, self.timers, self._emit, self)
        bell = self.admission.bell()
        self._bell = [bell] if bell is not None else []

    # ------------------------------------------------------------ the loop

    def run(self) -> RunOutcome:
        started = time.time()
        self._emit(RunStarted(os.getpid(), self.plan.strategy, round(self.plan.estimated_speedup, 2),
                              self.slots, len(self.records)))
        for warning in self.plan.warnings:
            self._emit(Message(Level.WARNING, warning))
        self._keep_earlier_results()
        clock, began = self.parts.clock, self.parts.clock()  # the phases' times, on the run's clock
        with self._interrupts:
            try:
                self._loop()
                self.parts.stopping.clear()  # a landing after fail_fast verifies
                interrupted = self._interrupts.first is not None
                self._times["tasks"] = clock() - began
                landing = self._land(interrupted)
                self._times["landing"] = clock() - began - self._times["tasks"]
            finally:
                self._attempts.close()
                self.pool.shutdown()
                notes = [*self.isolation.close(), *self.admission.notes()]
        outcome = self._outcome(time.time() - started, landing, notes, interrupted or landing.stopped)
        self._emit(RunFinished(int(outcome.exit_code), str(outcome.state), round(outcome.wall, 3),
                               round(outcome.task_time, 3), round(outcome.speedup, 2),
                               round(outcome.estimated_speedup, 2)))
        return outcome

    def _loop(self) -> None:
        """Run the tasks until every one has ended. A step's news (a task ended) is written
        after the start pass that follows it: the freed slot is handed out first, so a worker
        is not idle while the journal is written."""
        self._outbox.hold()
        try:
            while True:
                self._start_ready()
                self._outbox.release()
                # starting may end tasks (a failed setup); a task run again may outlast them all
                if self.schedule.finished() and self._attempts.idle():
                    break
                self._check_progress()
                self._step(self._next_timeout())
        finally:
            self._outbox.release(hold=False)

    def _keep_earlier_results(self) -> None:
        """A resumed run: what succeeded before, unchanged, counts as done with its result."""
        for tid in self.plan.graph.order:
            if tid in self._kept:
                self.schedule.assume_done(tid)
                rec = self.records[tid]
                rec.state, (rec.commit, duration), rec.exit_code = TaskState.DONE, self._kept[tid], 0
                self._emit(TaskChanged(TaskState.DONE, duration=duration, exit_code=0, commit=rec.commit,
                                       kept=True), tid)

    def _step(self, timeout: float | None) -> None:
        """Wait for the next reports (or timer) and act on them."""
        wake = [self._interrupts.fileno()]
        if (done := self._attempts.fileno()) is not None:  # worktree work beside the loop
            wake.append(done)
        if self._waiting:  # the lock bell only while a task waits: nobody would drain it otherwise
            wake += self._bell
        for report in self.pool.wait(timeout, wake=wake):
            self._on_report(report)
        self._attempts.settle()
        self._on_timers()

    def _land(self, interrupted: bool) -> Landing:
        """Bring the results to the target, unless the run was interrupted."""
        results = [(t, self.records[t].commit) for t in self.plan.graph.order if self.records[t].commit]
        if interrupted:
            note = "interrupted: results were not merged; they stay on their branches"
            return Landing(notes=(note,) if results else ())
        landing = self.isolation.land(results, self._rerun, self._phase)
        if landing.merge is not None:
            self._emit(landing.merge)
        return landing

    def _phase(self, payload: Phase | LandingStarted) -> None:
        """A step of the landing, said as it happens; verify's time is kept apart."""
        if isinstance(payload, Phase) and payload.name == "verify" and payload.seconds:
            self._times["verify"] = self._times.get("verify", 0.0) + payload.seconds
        self._emit(payload)

    def _rerun(self, task_id: str, base: str) -> str | None:
        """Run `task_id` again, now, on top of `base` (merge conflict protocol); its new result."""
        rec = self.records[task_id]
        self._emit(Message(Level.INFO, f"{task_id}: its result conflicts with the merged result so "
                           "far; running it again on top of it"), task_id)
        self._rerunning.add(task_id)
        while wait := self.admission.try_lock(rec.task):  # locks hold for reruns too
            self._wait_for(task_id, wait.reason)
            self._step(LOCK_RETRY)
        self._waiting.discard(task_id)
        self._launch(rec, [("", base)])  # a base commit, no parent task
        while self._attempts.busy(task_id):
            self._step(self._next_timeout())
        return (rec.commit or base) if rec.state == TaskState.DONE else None  # no change: `base`

    def _start_ready(self) -> None:
        """Start as many ready tasks as slots, resources, load and locks allow, best first. A
        task that ends as it starts (its worktree, setup or base failed) may make others ready,
        by a dependency or an ordering edge: look again until a pass ends none that way."""
        while not self._stopping:
            left = self.schedule.remaining
            self._start_pass()
            if self.schedule.remaining == left:
                return

    def _start_pass(self) -> None:
        if not self._start_rebuilds():
            return
        for tid in itertools.chain(self.timers.due_retries(), self.schedule.iter_ready()):
            task = self.records[tid].task
            if self.admission.full() or not self.admission.room_for(task):
                return  # keep the free slots for the best task rather than starve it
            wait = self.admission.try_admit(task)
            if wait is not None:
                self._wait_for(tid, wait.reason)
                if wait.kind is WaitKind.THROTTLE:  # the load holds back every task alike
                    return
                continue
            self._start(task)
            if self._stopping:  # it failed as it started, and fail_fast stops the run
                return

    def _check_progress(self) -> None:
        """Name the impossible state instead of waiting forever: nothing runs, nothing waits
        for a lock or the load (which we poll), no retry is due, and tasks are left."""
        if self.admission.used or self.timers.retrying() or self.schedule.finished() or self._waiting:
            return
        raise InternalError(f"stuck: no task running, waiting or due to retry, states {self.schedule.state}")

    def _next_timeout(self) -> float | None:
        timeout = self.timers.next_wake()
        if self._waiting:  # a lock of another process or the load may free up: try again soon
            timeout = LOCK_RETRY if timeout is None else min(timeout, LOCK_RETRY)
        return timeout

    # ------------------------------------------------------------ starting and ending

    def _start(self, task: Task) -> None:
        rec = self.records[task.id]
        if not self.timers.take_retry(task.id):
            self.schedule.start(task.id)
        self._waiting.discard(task.id)
        self._launch(rec, self._parents(task.id))

    def _launch(self, rec: TaskRecord, parents: list[tuple[str, str]]) -> None:
        self.admission.take(rec.task)
        self._attempts.begin(rec, parents, rerun=rec.task.id in self._rerunning)

    def _parents(self, tid: str) -> list[tuple[str, str]]:
        return parents_of(self.plan.graph, tid, lambda t: self.records[t].commit, self._order)

    def base_conflict(self, rec: TaskRecord, parent: str, conflict: BaseConflict) -> None:
        """`rec`'s parents conflict: it gives back its slot and locks and waits while `parent`
        runs again on the results before it (bases.py), then starts from that."""
        if self._stopping:  # nothing runs again now: it ends with the run
            self.abandoned(rec)
            return
        self.admission.release(rec.task)
        self._rebuilds.ask(rec.task.id, parent, conflict.merged)
        self._wait_for(rec.task.id, f"its base waits for {parent} to run again on the results it "
                       f"conflicts with (in {', '.join(conflict.files)})")

    def _start_rebuilds(self) -> bool:
        """Start the parents due to run again, as slots and locks allow; False when one must wait."""
        for tid in list(self._rebuilds.pending):
            rec = self.records[tid]
            if not self.admission.room_for(rec.task) or self.admission.full():
                return False
            if (wait := self.admission.try_admit(rec.task)) is not None:
                self._wait_for(tid, wait.reason)
                return False
            self._waiting.discard(tid)
            self._rerunning.add(tid)
            self._launch(rec, [("", self._rebuilds.start(tid))])
        return True

    def _rebuilt(self, rec: TaskRecord, ok: bool) -> None:
        """A parent ran again for the tasks waiting on it: they start from its new result (the
        commit it ran on, when it changed nothing more), or fail with it."""
        base, waiters = self._rebuilds.done(rec.task.id)
        if ok:
            rec.commit = rec.commit or base
        for tid in waiters:
            self._waiting.discard(tid)
            if ok:
                self.timers.retry_now(tid)
            else:
                waiter = self.records[tid]
                waiter.error = (f"its base could not be built: {rec.task.id} failed when run again on "
                                "the results it conflicted with")
                self._end(waiter, TaskState.FAILED, time.time())

    def _on_report(self, report: Report) -> None:
        rec = self.records[report.task_id]
        if isinstance(report, Escalated):
            self._emit(Message(Level.WARNING, f"{rec.task.id} did not end within {report.grace:g}s of "
                               "SIGTERM: sent SIGKILL"), rec.task.id)
            return
        if isinstance(report, Started):  # only a task that runs a while reports its pid
            rec.pid = report.pid
            self._emit(TaskPid(rec.attempts, report.pid), rec.task.id)
            return
        self._attempts.heard(rec, report)  # its slot and locks are held until what it left is kept

    # ------------------------------------------------------------ verdicts on attempts

    def go_ahead(self, rec: TaskRecord) -> bool:
        return self._interrupts.first is None and (not self._stopping or rec.task.id in self._rerunning)

    def abandoned(self, rec: TaskRecord) -> None:
        rec.error = rec.error or "the run stopped before it started"  # an earlier attempt's says more
        if rec.task.id in self._rerunning:  # as a run again that failed: it ended before, and stays so
            self.ended(rec, False, time.time())
            return
        self.admission.release(rec.task)
        self._end(rec, TaskState.CANCELLED, time.time())

    def ended(self, rec: TaskRecord, ok: bool, ended_at: float) -> None:
        """Retry it, end it, or tell whoever waits for it to run again."""
        self.admission.release(rec.task)
        if rec.task.id in self._rerunning:  # the merge protocol or a task's base waits for it
            self._rerunning.discard(rec.task.id)
            rec.state = TaskState.DONE if ok else TaskState.FAILED
            if rec.task.id in self._rebuilds.running:
                self._rebuilt(rec, ok)
            self._emit(TaskChanged(rec.state, attempt=rec.attempts, commit=rec.commit, rerun=True),
                       rec.task.id)
            return
        if not ok and not self._stopping and rec.attempts <= rec.task.retries:
            self._retry(rec)
            return
        stopped = rec.task.id in self._terminated  # ended by _stop, not by its own failure
        state = TaskState.DONE if ok else TaskState.CANCELLED if stopped else TaskState.FAILED
        self._end(rec, state, ended_at or time.time())

    def _retry(self, rec: TaskRecord) -> None:
        backoff = self.timers.retry_later(rec.task.id, rec.attempts)
        self._wait_for(rec.task.id, f"attempt {rec.attempts} failed ({rec.failure}); "
                       f"retrying in {backoff:.1f}s")

    def _end(self, rec: TaskRecord, state: TaskState, ended_at: float) -> None:
        rec.state, rec.ended_at = state, ended_at
        skipped = self.schedule.finish(rec.task.id, state == TaskState.DONE, state=state)
        allowed = state == TaskState.FAILED and rec.task.allow_failure
        self._emit(TaskChanged(state, attempt=rec.attempts, duration=round(rec.run_time, 3),
                               exit_code=rec.exit_code, commit=rec.commit or None, signal=rec.signal or None,
                               error=rec.error or None, value=rec.value,
                               reason=ALLOWED_FAILURE if allowed else None), rec.task.id)
        for tid in skipped:
            self.records[tid].state = TaskState.SKIPPED
            self._emit(TaskChanged(TaskState.SKIPPED, reason=f"{rec.task.id} {state}"), tid)
        if state == TaskState.FAILED and self.settings.fail_fast and not rec.task.allow_failure:
            self._stop(f"fail_fast: {rec.task.id} failed")

    def _wait_for(self, tid: str, reason: str) -> None:
        self._waiting.add(tid)
        if self.records[tid].wait(reason):
            self._emit(TaskChanged(TaskState.WAITING, reason=reason), tid)

    # ------------------------------------------------------------ stopping

    def _on_timers(self) -> None:
        self._on_interrupt()
        for tid in self.timers.expired():  # the executor's kill timer takes over
            rec = self.records[tid]
            rec.timed_out = True
            self._emit(Message(Level.WARNING, f"{rec.task.id}: timed out after {rec.task.timeout:g}s; "
                               f"sending SIGTERM, SIGKILL after {self.settings.kill_grace:g}s"), tid)
            self.pool.terminate(rec.task.id)

    def _stop(self, why: str, *, kill: bool = False) -> None:
        """Start no more work and end what runs: SIGTERM, then SIGKILL after the grace period."""
        if not self._stopping:
            self._emit(Message(Level.WARNING, f"stopping: {why}"))
        self._stopping = True
        self.parts.stopping.set()  # worktree_setups under way end
        for tid in [*self.timers.drop_retries(), *self._rebuilds.drop()]:
            self._end(self.records[tid], TaskState.CANCELLED, time.time())
        for tid in self._waiting:
            self.admission.give_up(self.records[tid].task)
        self._waiting.clear()
        for tid in self.schedule.cancel_rest():
            self.records[tid].state = TaskState.CANCELLED
            self._emit(TaskChanged(TaskState.CANCELLED, reason=why), tid)
        for tid in self.pool.busy():
            self._terminated.add(tid)
            self.pool.terminate(tid, kill=kill)

    def _on_interrupt(self) -> None:
        """SIGINT, SIGTERM and SIGHUP stop the run gracefully; a second SIGINT kills at once."""
        taken = self._interrupts.take()
        if taken is not None:
            signum, again = taken
            name = signal.Signals(signum).name
            self._stop(f"received {name}" + ("; killing now" if again else ""), kill=again)

    # ------------------------------------------------------------ results

    def _outcome(self, wall: float, landing: Landing, notes: list[str], interrupted: bool) -> RunOutcome:
        # a merge that finished despite a signal gives its own exit code: not `interrupted`
        return outcome_of(self.run_id, self.records, landing, notes, self._interrupts.first if interrupted
                          else None, wall=wall, times=self._times, estimated=self.plan.estimated_speedup)

    def _emit(self, payload: Payload, task_id: str | None = None) -> None:
        self._outbox.emit(payload, task_id)
