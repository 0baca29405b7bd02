"""The packet fast path (`create_pending_pair`, `resolve_pair`) answers exactly as the
general state machine does: the same statuses, the same stored transfers, the same
balances, over random sequences of reservations, posts, voids, retries, limits crossed
and timeouts, on two states side by side."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ledger import AMOUNT_MAX, Account, LedgerState, Transfer
from connector.ledger.model import AccountFlags as AF
from connector.ledger.state import LINKED, PENDING, POST, VOID

NS = 1_000_000_000
ACCOUNT_IDS = range(1, 7)


class Clock:
    def __init__(self):
        self.now = 1_000 * NS

    def __call__(self) -> int:
        return self.now


def new_state(clock: Clock, credits: int) -> LedgerState:
    """Six accounts on ledger 1; 1 and 3 may not be debited past `credits`."""
    state = LedgerState(clock=clock, stripes=8, recent_ids=64)
    flags = {1: AF.DEBITS_MUST_NOT_EXCEED_CREDITS, 3: AF.DEBITS_MUST_NOT_EXCEED_CREDITS}
    state.create_accounts([Account(id=i, ledger=1, code=1, flags=flags.get(i, 0)) for i in ACCOUNT_IDS])
    for funded in (1, 3):
        state.create_transfers([Transfer(id=900 + funded, debit_account_id=funded + 1, credit_account_id=funded,
                                         amount=credits, ledger=1, code=1)])
    return state


def fields(t: Transfer) -> tuple:
    return (t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id, t.user_data_128,
            t.user_data_64, t.user_data_32, t.timeout, t.ledger, t.code, int(t.flags), t.timestamp)


def balances(state: LedgerState) -> list[tuple]:
    return [(a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
            for a in state.lookup_accounts(ACCOUNT_IDS)]


reserve = st.tuples(st.just("reserve"), st.integers(1, 12),  # packet number (ids repeat: retries)
                    st.permutations(list(ACCOUNT_IDS)).map(lambda p: p[:4]),
                    st.sampled_from([0, 1, 5, 40, 1000]), st.sampled_from([0, 1, 3]),
                    st.sampled_from([1, 1, 1, 0]))  # code 0 is refused
same_account = st.tuples(st.just("reserve"), st.integers(1, 12), st.just((1, 2, 2, 4)),
                         st.just(5), st.just(1), st.just(1))
resolve = st.tuples(st.sampled_from(["post", "void"]), st.integers(1, 12))
tick = st.tuples(st.just("tick"), st.sampled_from([NS // 2, 2 * NS]))
operations = st.lists(st.one_of(reserve, reserve, same_account, resolve, resolve, tick), max_size=40)


def pending_ids(n: int) -> tuple[int, int]:
    return n << 8 | 1, n << 8 | 2


def run_general(state: LedgerState, op) -> tuple:
    if op[0] == "reserve":
        _, n, (a, b, c, d), amount, timeout, code = op
        first, second = pending_ids(n)
        results, created = state.create_transfers_detailed([
            Transfer(first, a, b, amount, 0, 7, n, 3, timeout, 1, code, PENDING | LINKED),
            Transfer(second, c, d, amount * 2, 0, 7, n, 4, timeout, 1, code, PENDING)])
    else:
        flag = POST if op[0] == "post" else VOID
        amount = AMOUNT_MAX if flag == POST else 0
        first, second = pending_ids(op[1])
        phase = 3 if flag == POST else 4
        results, created = state.create_transfers_detailed([
            Transfer(op[1] << 8 | phase << 4 | 1, 0, 0, amount, first, flags=flag | LINKED),
            Transfer(op[1] << 8 | phase << 4 | 2, 0, 0, amount, second, flags=flag)])
    return list(results), [fields(t) for t in created]


def run_fast(state: LedgerState, op) -> tuple:
    if op[0] == "reserve":
        _, n, (a, b, c, d), amount, timeout, code = op
        first, second = pending_ids(n)
        results, created = state.create_pending_pair(
            Transfer(first, a, b, amount, 0, 7, n, 3, timeout, 1, code, PENDING | LINKED),
            Transfer(second, c, d, amount * 2, 0, 7, n, 4, timeout, 1, code, PENDING))
    else:
        first, second = pending_ids(op[1])
        phase = 3 if op[0] == "post" else 4
        results, created = state.resolve_pair(op[1] << 8 | phase << 4 | 1, first, op[1] << 8 | phase << 4 | 2,
                                              second, op[0] == "post")
    return list(results), [fields(t) for t in created]


@settings(max_examples=300, deadline=None)
@given(operations, st.sampled_from([10, 100, 10_000]))
def test_fast_path_matches_the_general_state_machine(ops, credits):
    general_clock, fast_clock = Clock(), Clock()
    general, fast = new_state(general_clock, credits), new_state(fast_clock, credits)
    for op in ops:
        if op[0] == "tick":
            general_clock.now += op[1]
            fast_clock.now += op[1]
            assert [fields(v) for v in general.expire_pending()] == [fields(v) for v in fast.expire_pending()]
            continue
        assert run_fast(fast, op) == run_general(general, op), op
        assert balances(fast) == balances(general)
    assert fast.pending_count() == general.pending_count()


def test_the_fast_path_is_taken_for_a_plain_packet():
    """A plain reservation and its post leave the stored objects as given (no copies):
    the proof the common case did not fall back."""
    state = new_state(Clock(), 10_000)
    first = Transfer(1 << 8 | 1, 1, 2, 5, 0, 0, 0, 0, 30, 1, 1, PENDING | LINKED)
    second = Transfer(1 << 8 | 2, 3, 4, 5, 0, 0, 0, 0, 30, 1, 1, PENDING)
    results, created = state.create_pending_pair(first, second)
    assert [r.name for r in results] == ["CREATED", "CREATED"]
    assert created[0] is first and created[1] is second and first.timestamp > 0
    results, created = state.resolve_pair(11, first.id, 12, second.id, True)
    assert [r.name for r in results] == ["CREATED", "CREATED"]
    assert [(t.amount, t.flags) for t in created] == [(5, POST | LINKED), (5, POST)]
    assert balances(state)[0] == (1, 0, 5, 0, 10_000)


def test_plain_packets_never_reach_the_general_path(monkeypatch):
    """Reserve, post, reserve, void and an expiry of plain packets, with the general path
    made to fail: every step is answered by the C fast path (and the timeout wheel it
    fills is the one `expire_pending` sweeps)."""
    clock = Clock()
    state = new_state(clock, 10_000)

    def general_path(_transfers):
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(state, "create_transfers_detailed", general_path)
    for n, resolve in ((1, True), (2, False), (3, None)):
        first, second = pending_ids(n)
        results, _ = state.create_pending_pair(
            Transfer(first, 1, 2, 5, 0, 0, 0, 0, 30, 1, 1, PENDING | LINKED),
            Transfer(second, 3, 4, 7, 0, 0, 0, 0, 30, 1, 1, PENDING))
        assert [r.name for r in results] == ["CREATED", "CREATED"]
        if resolve is not None:
            results, created = state.resolve_pair(n << 8 | 9, first, n << 8 | 10, second, resolve)
            assert [r.name for r in results] == ["CREATED", "CREATED"]
            flag = POST if resolve else VOID
            assert [(t.pending_id, t.amount, t.flags) for t in created] == [(first, 5, flag | LINKED),
                                                                            (second, 7, flag)]
    assert state.pending_count() == 2  # packet 3's legs
    assert balances(state)[:4] == [(1, 5, 5, 0, 10_000), (2, 0, 10_000, 5, 5),
                                   (3, 7, 7, 0, 10_000), (4, 0, 10_000, 7, 7)]
    clock.now += 31 * NS
    expired = state.expire_pending()
    assert sorted(v.pending_id for v in expired) == list(pending_ids(3))
    assert state.pending_count() == 0
    assert balances(state)[:4] == [(1, 0, 5, 0, 10_000), (2, 0, 10_000, 0, 5),
                                   (3, 0, 7, 0, 10_000), (4, 0, 10_000, 0, 7)]


def test_the_packet_calls_make_packed_records_and_transfers_only_when_asked():
    """`reserve_packet` and `resolve_packet` hand back TigerBeetle's packed structs (what
    the ledger ring carries) and store no Python transfer; one is made, once, when a
    lookup asks for it, and it holds only ints, so the collector (which stops every
    thread in 3.13t) never scans it, however many the idempotency window keeps."""
    import gc

    from connector.ledger.books import LEG_IN, LEG_OUT, PHASE_PENDING, PHASE_POST, packet_transfer_id
    from connector.ledger.model import iter_transfers

    state = new_state(Clock(), 10_000)
    results, legs = state.reserve_packet(5, 1, (1, 2), (3, 4), 5, 6, 77, 1, 2, 30, 1, 1, 1)
    assert [r.name for r in results] == ["CREATED", "CREATED"] and type(legs) is bytes and len(legs) == 256
    posts = state.resolve_packet(5, 1, True)
    assert type(posts) is bytes and len(posts) == 256
    ids = [packet_transfer_id(5, 1, leg, phase) for phase in (PHASE_PENDING, PHASE_POST) for leg in (LEG_IN, LEG_OUT)]
    looked_up = state.lookup_transfers(ids)
    assert [fields(t) for t in looked_up] == [fields(t) for t in (*iter_transfers(legs), *iter_transfers(posts))]
    assert [(t.user_data_128, t.user_data_64, t.user_data_32, t.amount) for t in looked_up] == [
        (77, 1, 1, 5), (77, 1, 2, 6), (77, 1, 1, 5), (77, 1, 2, 6)]
    stored = [state._table(i)[i] for i in ids]  # noqa: SLF001 - the stored records themselves are checked
    assert b"".join(s.packed for s in stored) == legs + posts
    assert all(s.transfer is s.transfer for s in stored)  # made once, then kept
    assert not any(gc.is_tracked(s.transfer) for s in stored)
    assert gc.is_tracked(Transfer(1))  # the class itself is an ordinary tracked one
