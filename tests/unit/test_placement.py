"""Property tests of placement and the reconcile diff: Kite's limits and zero disruption."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from ticker_worker.core import wire
from ticker_worker.core.placement import AccountLoad, Layout
from ticker_worker.core.reconcile import Desired, Placed, Plan, plan

PER_CONN, MAX_CONNS = 5, 3
ACCOUNTS = ["a", "b", "c", "d"]


class World:
    """What the connections hold, driven only by the messages a plan sends."""

    def __init__(self) -> None:
        self.conns: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
        self.actual: dict[int, Placed] = {}
        self.rows: dict[int, Desired] = {}
        self.healthy = {a: True for a in ACCOUNTS}

    def layout(self) -> Layout:
        loads: dict[str, AccountLoad] = {a: AccountLoad(a, self.healthy[a]) for a in ACCOUNTS}
        for p in self.actual.values():
            loads[p.account].loads[p.connection] = loads[p.account].loads.get(p.connection, 0) + 1
        return Layout(loads.values(), PER_CONN, MAX_CONNS)

    def apply(self, p: Plan) -> None:
        # The messages in the order they go on the wire, the caps checked after each one.
        for m in wire.messages(p, batch_size=2):
            conn = self.conns[m.slot]
            for t in m.tokens:
                if m.action == "subscribe":
                    assert t not in conn, "subscribed twice on one connection"
                    conn[t] = "quote"
                elif m.action == "mode":
                    assert t in conn, "mode sent to a connection without the token"
                    conn[t] = m.mode or ""
                else:
                    assert t in conn, "unsubscribe sent where the token is not"
                    del conn[t]
            self.check_caps()
        # Make-before-break: the old connection lets go once the new one confirmed.
        for t, old in p.release_after_ack.items():
            assert t in self.conns[old], "released where the token is not"
            del self.conns[old][t]
            self.check_caps()
        for d, slot in p.activated:
            self.rows[d.token] = Desired(d.token, d.mode, True, "active", slot[0], slot[1],
                                         d.generation, False)
        for d in p.removed:
            self.rows[d.token] = Desired(d.token, d.mode, False, "removed", None, None,
                                         d.generation, False)
        for d, _ in p.queued:
            self.rows[d.token] = Desired(d.token, d.mode, True, "queued", None, None,
                                         d.generation, False)

    def check_caps(self) -> None:
        per_account: dict[str, int] = defaultdict(int)
        for slot, tokens in self.conns.items():
            assert len(tokens) <= PER_CONN, f"{slot} carries {len(tokens)} tokens"
            if tokens:
                per_account[slot[0]] += 1
        assert all(n <= MAX_CONNS for n in per_account.values())

    def check(self) -> None:
        self.check_caps()
        where: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for slot, tokens in self.conns.items():
            for t in tokens:
                where[t].append(slot)
        for t, row in self.rows.items():
            slots = where.get(t, [])
            if row.wanted and row.status == "active":
                assert len(slots) == 1, f"{t} on {slots}"
                assert self.healthy[slots[0][0]]
                assert self.conns[slots[0]][t] == row.mode
            elif not row.wanted:
                assert slots == []
        assert all(len(s) == 1 for s in where.values())


ops = st.lists(st.one_of(
    st.tuples(st.just("sub"), st.integers(1, 80), st.sampled_from(["ltp", "quote", "full"])),
    st.tuples(st.just("unsub"), st.integers(1, 80), st.just("")),
    st.tuples(st.just("health"), st.sampled_from(ACCOUNTS), st.booleans()),
), max_size=120)


def step(world: World, op: tuple[str, object, object]) -> Plan:
    kind, a, b = op
    if kind == "health":
        world.healthy[str(a)] = bool(b)
        desired = [r for r in world.rows.values() if r.wanted]
        return plan(desired, world.actual, world.layout(), full=True)
    token = int(str(a))
    old = world.rows.get(token)
    gen = old.generation + 1 if old else 1
    status = old.status if old else "pending"
    acct, conn = (old.account, old.connection) if old else (None, None)
    row = Desired(token, str(b) if kind == "sub" else (old.mode if old else "quote"),
                  kind == "sub", status, acct, conn, gen, True)
    world.rows[token] = row
    return plan([row], world.actual, world.layout())


@settings(max_examples=300, deadline=None)
@given(ops)
def test_limits_and_single_placement_hold_under_any_sequence(sequence: list) -> None:
    world = World()
    for op in sequence:
        world.apply(step(world, op))
        world.check()
    world.apply(plan([r for r in world.rows.values() if r.wanted], world.actual,
                     world.layout(), full=True))
    world.check()


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(81, 90), st.sampled_from(["ltp", "quote", "full"]))
def test_an_add_touches_only_its_own_connection(sequence: list, token: int, mode: str) -> None:
    world = World()
    for op in sequence:
        world.apply(step(world, op))
    p = step(world, ("sub", token, mode))
    placed = world.actual.get(token)
    if placed is None:
        assert p.touched() == set() and len(p.queued) == 1
    else:
        assert p.touched() == {placed.slot}
        assert p.subscribe[placed.slot] == {mode: [token]}


def test_least_loaded_account_then_connection_with_name_tie_break() -> None:
    layout = Layout([AccountLoad("b", True, {0: 4}), AccountLoad("a", True, {0: 4}),
                     AccountLoad("c", True, {0: 2, 1: 5})], PER_CONN, MAX_CONNS)
    assert layout.choose() == ("a", 0)
    layout = Layout([AccountLoad("a", True, {0: 5, 1: 5}), AccountLoad("b", True, {0: 5, 1: 5})],
                    PER_CONN, MAX_CONNS)
    assert layout.choose() == ("a", 2)  # the open ones are full: open a new connection
    layout = Layout([AccountLoad("a", True, {0: 5, 1: 5, 2: 5}), AccountLoad("b", False)],
                    PER_CONN, MAX_CONNS)
    assert layout.choose() is None
    assert "no capacity" in layout.reason_full()


def test_four_accounts_stay_balanced() -> None:
    world = World()
    for token in range(1, 41):
        world.apply(step(world, ("sub", token, "quote")))
    per_account = defaultdict(int)
    for p in world.actual.values():
        per_account[p.account] += 1
    assert sorted(per_account.values()) == [10, 10, 10, 10]


def test_unhealthy_account_moves_its_instruments_make_before_break() -> None:
    world = World()
    for token in range(1, 9):
        world.apply(step(world, ("sub", token, "full")))
    on_a = sorted(t for t, p in world.actual.items() if p.account == "a")
    p = step(world, ("health", "a", False))
    moved = sorted(t for by_mode in p.subscribe.values() for ts in by_mode.values() for t in ts)
    assert moved == on_a
    # The break waits for the new connection's first tick: no unsubscribe in the same plan.
    assert not p.unsubscribe
    assert sorted(p.release_after_ack) == on_a
    assert all(slot[0] == "a" for slot in p.release_after_ack.values())
    world.apply(p)
    world.check()
    assert all(pl.account != "a" for pl in world.actual.values())


def test_full_house_queues_then_places_when_room_frees() -> None:
    world = World()
    capacity = PER_CONN * MAX_CONNS * len(ACCOUNTS)
    for token in range(1, capacity + 2):
        world.apply(step(world, ("sub", token, "ltp")))
    assert world.rows[capacity + 1].status == "queued"
    world.apply(step(world, ("unsub", 1, "")))
    world.apply(plan([r for r in world.rows.values() if r.wanted], world.actual,
                     world.layout(), full=True))
    assert world.rows[capacity + 1].status == "active"
    world.check()
