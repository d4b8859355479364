"""The pure lock table: hierarchy, modes, resources, first come first served, no partial holds.

The stateful test drives the table through random requests, grants, releases, cancels and
owner deaths, and checks each decision against an oracle written from the contract.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from novaproc.inputs import paths
from novaproc.locking.table import (
    Blocked,
    Blocker,
    Entry,
    LockRequest,
    LockTable,
    Owner,
    ancestors,
    conflicts,
    paths_overlap,
)

TREE = ["/", "/r", "/r/a", "/r/a/x", "/r/a/y", "/r/ab", "/r/b", "/r/b/z"]
CAPACITY = {"docker": 2}


def entry(ticket: int, exclusive=(), shared=(), owner: str = "o", held: bool = False, **res: int) -> Entry:
    request = LockRequest(f"k{ticket}", f"t{ticket}", tuple(exclusive), tuple(shared), res, CAPACITY)
    return Entry(ticket, owner, Owner(pid=100 + ticket, run_id="r1"), request, held)


# ------------------------------------------------------------------------------ oracle

def oracle_paths_conflict(a: LockRequest, b: LockRequest) -> bool:
    """Overlap (a folder covers what lies under it) and at least one exclusive."""
    for p, mp in a.path_modes():
        for q, mq in b.path_modes():
            both_shared = mp == "shared" and mq == "shared"
            if not both_shared and paths.overlaps(paths.key(p, "/"), paths.key(q, "/")):
                return True
    return False


def oracle_may_hold(entries: list[Entry], target: Entry) -> bool:
    """Every holder and every earlier entry counts as ahead of `target`."""
    earlier = [e for e in entries if e.ticket < target.ticket or (e.held and e is not target)]
    if any(oracle_paths_conflict(target.request, e.request) for e in earlier):
        return False
    for name, n in target.request.resources.items():
        used = sum(e.request.resources.get(name, 0) for e in earlier)
        if used > 0 and used + n > target.request.capacity(name):
            return False
    return True


# --------------------------------------------------------------------------- examples

def test_ancestors_and_overlap() -> None:
    assert ancestors("/r/a/x") == ("/", "/r", "/r/a")
    assert ancestors("/") == ()
    assert paths_overlap("/r/a", "/r/a/x") and paths_overlap("/", "/r") and paths_overlap("/r/a", "/r/a")
    assert not paths_overlap("/r/a", "/r/ab") and not paths_overlap("/r/a/x", "/r/a/y")


@pytest.mark.parametrize(("first", "second", "may_hold"), [
    ({"shared": ["/r/a"]}, {"shared": ["/r/a/x"]}, True),  # readers of a folder and a file in it
    ({"shared": ["/r/a"]}, {"exclusive": ["/r/a/x"]}, False),  # reader of data/ vs writer of data/x
    ({"exclusive": ["/r/a/x"]}, {"shared": ["/r/a"]}, False),  # ... and the other way round
    ({"exclusive": ["/r/a/x"]}, {"exclusive": ["/r/a/y"]}, True),  # siblings
    ({"exclusive": ["/r/a"]}, {"exclusive": ["/r/ab"]}, True),  # a name prefix is not a folder
    ({"exclusive": ["/"]}, {"shared": ["/r/b/z"]}, False),  # the root covers everything
    ({"shared": ["/r/a/x"]}, {"shared": ["/r/a/x"]}, True),
    ({"exclusive": ["/r/a/x"]}, {"exclusive": ["/r/a/x"]}, False),
])
def test_hierarchy_and_modes(first: dict, second: dict, may_hold: bool) -> None:
    table = LockTable([entry(1, held=True, **_modes(first)), entry(2, **_modes(second))])
    assert table.may_hold(2) is may_hold
    assert bool(conflicts(table.get(2).request, table.get(1).request)) is not may_hold


def _modes(spec: dict) -> dict:
    return {"exclusive": spec.get("exclusive", ()), "shared": spec.get("shared", ())}


def test_a_writer_is_not_starved_by_later_readers() -> None:
    table = LockTable([entry(1, shared=["/r"], held=True), entry(2, exclusive=["/r"]),
                       entry(3, shared=["/r"])])
    assert [e.ticket for e in table.grantable()] == []  # reader 3 would fit beside 1, but 2 came first
    table.remove(1)
    assert [e.ticket for e in table.grantable()] == [2]


def test_a_late_arrival_waits_for_holders_and_stands_before_later_waiters() -> None:
    # 2 arrived first but reached the table after 5 was granted and 7 had queued
    table = LockTable([entry(5, exclusive=["/r"], held=True), entry(7, exclusive=["/r"]),
                       entry(2, exclusive=["/r"])])
    assert not table.may_hold(2) and [b.what for b in table.blockers(2)] == ["/r"]
    table.remove(5)
    assert [e.ticket for e in table.grantable()] == [2]
    assert not table.may_hold(7)  # rung before 2 joined, 7 finds it ahead when it looks again


def test_a_later_request_that_conflicts_with_nobody_goes_ahead() -> None:
    table = LockTable([entry(1, exclusive=["/r/a"], held=True), entry(2, exclusive=["/r/a/x"]),
                       entry(3, exclusive=["/r/b"])])
    assert [e.ticket for e in table.grantable()] == [3]


def test_a_lock_set_is_taken_whole_or_not_at_all() -> None:
    table = LockTable([entry(1, exclusive=["/r/a"], held=True), entry(2, exclusive=["/r/a", "/r/b"]),
                       entry(3, exclusive=["/r/b"])])
    # 2 holds nothing while it waits for /r/a, yet /r/b stays reserved for it: 3 waits behind it
    assert table.grantable() == []
    assert [b.what for b in table.blockers(3)] == ["/r/b"]


def test_resources_are_counted_first_come_first_served() -> None:
    table = LockTable([entry(1, held=True, docker=1), entry(2, docker=2), entry(3, docker=1)])
    assert table.grantable() == []  # 3 would fit (2 of 2) but 2 asked first
    table.remove(1)
    assert [e.ticket for e in table.grantable()] == [2]


def test_a_request_above_capacity_runs_alone_and_serial_kinds_have_capacity_one() -> None:
    table = LockTable([entry(1, docker=5)])
    assert [e.ticket for e in table.grantable()] == [1]
    git = LockRequest("g", capacities={"git": 3}, resources={"git": 1})
    assert git.capacity("git") == 1
    table = LockTable([Entry(1, "a", Owner(pid=1), git, True), Entry(2, "b", Owner(pid=2), git)])
    assert not table.may_hold(2)


def test_blockers_name_holders_first_then_those_queued_earlier() -> None:
    table = LockTable([entry(1, exclusive=["/r/a/x"], held=True), entry(2, shared=["/r/a"]),
                       entry(3, exclusive=["/r/a"])])
    blockers = table.blockers(3)
    assert [(b.what, b.held, b.task) for b in blockers] == [("/r/a/x", True, "t1"), ("/r/a", False, "t2")]
    assert blockers[0].describe("/r") == "a/x held by run r1 task t1 (pid 101)"
    assert blockers[1].describe() == "/r/a queued earlier by run r1 task t2 (pid 102)"
    blocked = Blocked(table.get(3).request, tuple(blockers))
    assert blocked.describe("/r") == "a/x held by run r1 task t1 (pid 101) and 1 more"
    lone = Blocker("/x", "exclusive", Owner(pid=7, label="novaproc lock make"), "make", True)
    assert lone.describe() == "/x held by novaproc lock make (pid 7)"


def test_requests_are_normalised_and_checked() -> None:
    request = LockRequest("k", exclusive=("/b", "/a"), shared=("/a", "/c"))
    assert request.exclusive == ("/a", "/b") and request.shared == ("/c",)  # exclusive wins
    for bad in ("relative/path", "/a/../b", "/a/"):
        with pytest.raises(ValueError):
            LockRequest("k", exclusive=(bad,))
    with pytest.raises(ValueError):
        LockRequest("k", resources={"docker": 0})
    with pytest.raises(ValueError):
        LockRequest("k", resources={"no spaces": 1})


def test_rows_list_every_path_and_resource() -> None:
    table = LockTable([entry(2, exclusive=["/r/a"], docker=1), entry(1, shared=["/r"], held=True)])
    rows = [(r.what, r.mode, r.state, r.task) for r in table.rows()]
    assert rows == [("/r", "shared", "held", "t1"), ("/r/a", "exclusive", "waiting", "t2"),
                    ("@docker", "1 of 2", "waiting", "t2")]


# ----------------------------------------------------------------------- properties

path_sets = st.lists(st.sampled_from(TREE), max_size=3)
requests = st.builds(lambda x, s, d: (x, s, d), path_sets, path_sets, st.integers(0, 3))


@given(st.lists(requests, min_size=1, max_size=6))
def test_grantable_matches_the_oracle(specs: list[tuple[list[str], list[str], int]]) -> None:
    entries = [entry(i + 1, x, s, **({"docker": d} if d else {})) for i, (x, s, d) in enumerate(specs)]
    table = LockTable(entries)
    assert [e.ticket for e in table.grantable()] == [e.ticket for e in entries if oracle_may_hold(entries, e)]
    for e in entries:
        assert table.may_hold(e.ticket) == oracle_may_hold(entries, e)
        assert (table.blockers(e.ticket) == []) == oracle_may_hold(entries, e)


@given(path_sets, path_sets, path_sets, path_sets)
def test_intention_locks_agree_with_pairwise_overlap(x1, s1, x2, s2) -> None:
    a, b = LockRequest("a", exclusive=tuple(x1), shared=tuple(s1)), LockRequest("b", exclusive=tuple(x2),
                                                                                shared=tuple(s2))
    table = LockTable([Entry(1, "o", Owner(pid=1), a), Entry(2, "o", Owner(pid=1), b)])
    assert table.may_hold(2) is not oracle_paths_conflict(a, b)


class LockTableMachine(RuleBasedStateMachine):
    """Processes (owners) request, claim what the table grants, release, cancel and die."""

    def __init__(self) -> None:
        super().__init__()
        self.table = LockTable()
        self.tickets = itertools.count(10, 10)
        self.ever_held: set[int] = set()
        self.woken: set[int] = set()

    def _entries(self, held: bool | None = None) -> list[Entry]:
        return [e for e in self.table.entries() if held is None or e.held is held]

    @rule(owner=st.sampled_from("ABCD"), exclusive=path_sets, shared=path_sets, docker=st.integers(0, 3),
          git=st.booleans(), late=st.integers(0, 25))
    def request(self, owner: str, exclusive: list[str], shared: list[str], docker: int, git: bool,
                late: int) -> None:
        """A request; `late`: it arrived that long before the last one but joins the table now
        (its process waited for the table's mutex meanwhile)."""
        resources = {"docker": docker} if docker else {}
        if git:
            resources["git"] = 1
        ticket = self.table.free_ticket(max(1, next(self.tickets) - late))
        req = LockRequest(f"k{ticket}", f"t{ticket}", tuple(exclusive), tuple(shared), resources, CAPACITY)
        self.table.add(Entry(ticket, owner, Owner(pid=ord(owner)), req))

    @precondition(lambda self: self.table.grantable())
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        """An owner looks again and takes what it may hold (owners look at their own pace)."""
        chosen = data.draw(st.sampled_from(self.table.grantable()))
        assert oracle_may_hold(self._entries(), chosen)
        self.table.remove(chosen.ticket)
        self.table.add(Entry(chosen.ticket, chosen.owner, chosen.holder, chosen.request, held=True))
        self.ever_held.add(chosen.ticket)

    @precondition(lambda self: any(e.held for e in self.table.entries()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.table.remove(data.draw(st.sampled_from(self._entries(held=True))).ticket)

    @precondition(lambda self: any(not e.held for e in self.table.entries()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self.table.remove(data.draw(st.sampled_from(self._entries(held=False))).ticket)

    @rule(owner=st.sampled_from("ABCD"))
    def die(self, owner: str) -> None:
        self.table.remove_owner(owner)

    @invariant()
    def no_two_conflicting_holders(self) -> None:
        held = self._entries(held=True)
        for a, b in itertools.combinations(held, 2):
            assert not oracle_paths_conflict(a.request, b.request), (a, b)
        for name in ("docker", "git"):
            users = [e for e in held if name in e.request.resources]
            if len(users) > 1:
                assert sum(e.request.resources[name] for e in users) <= users[0].request.capacity(name)

    @invariant()
    def grants_follow_the_oracle(self) -> None:
        entries = self._entries()
        expected = [e.ticket for e in entries if not e.held and oracle_may_hold(entries, e)]
        assert [e.ticket for e in self.table.grantable()] == expected

    @rule()
    def wake(self) -> None:
        """A release rings the waiters that may hold now; each claims later, at its own pace."""
        self.woken |= {e.ticket for e in self.table.grantable()}

    @precondition(lambda self: self.woken)
    @rule(data=st.data())
    def claim_when_rung(self, data: st.DataObject) -> None:
        """A rung waiter looks again before it holds (LockManager._claim): a request that arrived
        before it may have joined the table since it was rung."""
        ticket = data.draw(st.sampled_from(sorted(self.woken)))
        self.woken.discard(ticket)
        entry = self.table.get(ticket)
        if entry is None or entry.held or not self.table.may_hold(ticket):
            return
        self.table.remove(ticket)
        self.table.add(Entry(ticket, entry.owner, entry.holder, entry.request, held=True))

    @invariant()
    def progress(self) -> None:
        """Something can always move: a holder to release, or a waiter to grant."""
        if len(self.table) and not self._entries(held=True):
            assert self.table.grantable()

    def teardown(self) -> None:
        """Every waiter is granted once the holders ahead of it leave."""
        waiting = {e.ticket for e in self._entries(held=False)}
        for _ in range(len(self.table) + 1):
            for e in self._entries(held=True):
                self.table.remove(e.ticket)
            for e in self.table.grantable():
                waiting.discard(e.ticket)
                self.table.remove(e.ticket)
                self.table.add(Entry(e.ticket, e.owner, e.holder, e.request, held=True))
        assert not waiting and not self._entries(held=False)


LockTableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow])
test_lock_table_state_machine = LockTableMachine.TestCase
