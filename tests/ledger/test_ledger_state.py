"""The in-memory state machine on its own: expiry sweeps, the bounded id memory, and
correctness with many threads hammering the same accounts (GIL off)."""

from __future__ import annotations

import random
import threading
import time

from connector.ledger import AMOUNT_MAX, Account, LedgerState, Transfer
from connector.ledger.model import AccountFlags as AF
from connector.ledger.model import CreateTransferStatus as T
from connector.ledger.model import TransferFlags as TF
from connector.ledger.state import expiry_transfer_id

NS = 1_000_000_000


class FakeClock:
    def __init__(self, now: int = 1_000 * NS):
        self.now = now

    def __call__(self) -> int:
        return self.now


def accounts(state: LedgerState, *specs: tuple[int, int]) -> None:
    state.create_accounts([Account(id=i, ledger=1, code=1, flags=f) for i, f in specs])


def test_expire_pending_voids_only_what_is_due():
    clock = FakeClock()
    state = LedgerState(clock=clock)
    accounts(state, (1, 0), (2, 0))
    state.create_transfers([
        Transfer(id=10, debit_account_id=1, credit_account_id=2, amount=5, timeout=2, ledger=1, code=1, flags=TF.PENDING),
        Transfer(id=11, debit_account_id=1, credit_account_id=2, amount=7, timeout=9, ledger=1, code=1, flags=TF.PENDING),
        Transfer(id=12, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1, flags=TF.PENDING),
    ])
    assert state.expire_pending(clock.now + 1 * NS) == []
    voids = state.expire_pending(clock.now + 2 * NS)
    assert [(v.id, v.pending_id, v.amount, v.flags) for v in voids] == [(expiry_transfer_id(10), 10, 5, TF.VOID_PENDING_TRANSFER)]
    (dr,) = state.lookup_accounts([1])
    assert dr.debits_pending == 8
    clock.now += 3 * NS
    post = Transfer(id=20, pending_id=10, amount=AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER)
    assert state.create_transfers([post]) == [T.PENDING_TRANSFER_EXPIRED]
    assert state.expire_pending(clock.now + 100 * NS)[0].pending_id == 11
    assert state.pending_count() == 0  # 12 has no timeout: it never expires, and is not in the wheel
    (dr,) = state.lookup_accounts([1])
    assert dr.debits_pending == 1


def test_resolved_ids_are_forgotten_after_the_window():
    state = LedgerState(recent_ids=4)
    accounts(state, (1, 0), (2, 0))
    first = Transfer(id=100, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1)
    assert state.create_transfers([first]) == [T.CREATED]
    assert state.create_transfers([first]) == [T.EXISTS]
    for i in range(4):
        state.create_transfers([Transfer(id=200 + i, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1)])
    assert state.lookup_transfers([100]) == []
    # Beyond the window a retry is new again (documented): the packet books never do this.
    assert state.create_transfers([first]) == [T.CREATED]


def test_open_pending_transfers_are_never_forgotten():
    state = LedgerState(recent_ids=2)
    accounts(state, (1, 0), (2, 0))
    state.create_transfers([Transfer(id=5, debit_account_id=1, credit_account_id=2, amount=3, ledger=1, code=1,
                                     flags=TF.PENDING)])
    for i in range(10):
        state.create_transfers([Transfer(id=50 + i, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1)])
    assert state.create_transfers([Transfer(id=6, pending_id=5, amount=AMOUNT_MAX,
                                            flags=TF.POST_PENDING_TRANSFER)]) == [T.CREATED]


def test_threads_hammering_shared_accounts_conserve_and_respect_limits():
    """Four threads move money between five limited accounts with two-phase linked chains
    (reserve two legs, then post or void), while a fifth thread keeps checking that no
    limit is ever exceeded.  At the end debits equal credits and every balance equals
    what the successful transfers say it should be."""
    state = LedgerState(stripes=8)  # few stripes: chains collide on locks all the time
    funded = 10_000
    limited = list(range(1, 6))
    accounts(state, *[(i, AF.DEBITS_MUST_NOT_EXCEED_CREDITS) for i in limited], (99, 0))
    state.create_transfers([Transfer(id=1_000 + i, debit_account_id=99, credit_account_id=i, amount=funded,
                                     ledger=1, code=1) for i in limited])
    stop = threading.Event()
    violations: list = []
    posted: list[list[tuple[int, int, int]]] = [[] for _ in range(4)]

    def watch():
        while not stop.is_set():
            for a in state.lookup_accounts(limited):
                if a.debits_pending + a.debits_posted > a.credits_posted:
                    violations.append(a)

    def work(worker: int):
        rng = random.Random(worker)
        deadline = time.monotonic() + 2.0
        n = 0
        while time.monotonic() < deadline and n < 20_000:
            n += 1
            a, b, c = rng.sample(limited, 3)
            base = (worker + 1) << 40 | n << 4
            amount_1, amount_2 = rng.randint(0, 900), rng.randint(0, 900)
            legs = [Transfer(id=base | 1, debit_account_id=a, credit_account_id=b, amount=amount_1, ledger=1,
                             code=1, flags=TF.PENDING | TF.LINKED, timeout=60),
                    Transfer(id=base | 2, debit_account_id=b, credit_account_id=c, amount=amount_2, ledger=1,
                             code=1, flags=TF.PENDING)]
            if state.create_transfers(legs) != [T.CREATED, T.CREATED]:
                continue
            flag = TF.POST_PENDING_TRANSFER if rng.random() < 0.7 else TF.VOID_PENDING_TRANSFER
            amount = AMOUNT_MAX if flag == TF.POST_PENDING_TRANSFER else 0
            done = state.create_transfers([
                Transfer(id=base | 3, pending_id=base | 1, amount=amount, flags=flag | TF.LINKED),
                Transfer(id=base | 4, pending_id=base | 2, amount=amount, flags=flag)])
            assert done == [T.CREATED, T.CREATED]
            if flag == TF.POST_PENDING_TRANSFER:
                posted[worker] += [(a, b, amount_1), (b, c, amount_2)]

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    watcher.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()
    assert not violations
    expected = {i: [0, funded] for i in limited}  # [debits_posted, credits_posted]
    for moves in posted:
        for dr, cr, amount in moves:
            expected[dr][0] += amount
            expected[cr][1] += amount
    everything = state.lookup_accounts(limited + [99])
    assert sum(a.debits_posted for a in everything) == sum(a.credits_posted for a in everything)
    for a in everything[:-1]:
        assert (a.debits_pending, a.credits_pending) == (0, 0)
        assert [a.debits_posted, a.credits_posted] == expected[a.id]
    assert sum(len(p) for p in posted) > 1000
