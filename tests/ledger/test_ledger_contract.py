"""The ledger contract: TigerBeetle's semantics, run against every backend.

Written against the client interface only (create_accounts, create_transfers,
lookup_accounts, lookup_transfers; one status per event), with fresh ids per test, so
the same suite can run against a real TigerBeetle cluster (issue 5).
"""

from __future__ import annotations

import time

from connector.ledger import AMOUNT_MAX, Account, Transfer
from connector.ledger.model import AccountFlags as AF
from connector.ledger.model import CreateAccountStatus as A
from connector.ledger.model import CreateTransferStatus as T
from connector.ledger.model import TransferFlags as TF

LEDGER = 7


def make_accounts(backend, ids, *flags: int) -> list[int]:
    accounts = [Account(id=ids(), ledger=LEDGER, code=1, flags=f) for f in flags]
    assert backend.create_accounts(accounts) == [A.CREATED] * len(accounts)
    return [a.id for a in accounts]


def transfer(ids, debit, credit, amount, **fields) -> Transfer:
    return Transfer(id=fields.pop("id", None) or ids(), debit_account_id=debit, credit_account_id=credit,
                    amount=amount, ledger=fields.pop("ledger", LEDGER), code=fields.pop("code", 1), **fields)


def balances(backend, account_id) -> tuple[int, int, int, int]:
    (a,) = backend.lookup_accounts([account_id])
    return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted


# ---------------------------------------------------------------------- accounts


def test_account_created_then_exists_and_conflicts(backend, ids):
    account = Account(id=ids(), ledger=LEDGER, code=3, user_data_64=9)
    assert backend.create_accounts([account]) == [A.CREATED]
    assert backend.create_accounts([account]) == [A.EXISTS]
    changed = Account(id=account.id, ledger=LEDGER, code=4, user_data_64=9)
    assert backend.create_accounts([changed]) == [A.EXISTS_WITH_DIFFERENT_CODE]
    changed = Account(id=account.id, ledger=LEDGER + 1, code=3, user_data_64=9)
    assert backend.create_accounts([changed]) == [A.EXISTS_WITH_DIFFERENT_LEDGER]
    changed = Account(id=account.id, ledger=LEDGER, code=3, user_data_64=9, flags=AF.HISTORY)
    assert backend.create_accounts([changed]) == [A.EXISTS_WITH_DIFFERENT_FLAGS]
    (stored,) = backend.lookup_accounts([account.id])
    assert (stored.ledger, stored.code, stored.user_data_64) == (LEDGER, 3, 9)
    assert stored.timestamp > 0


def test_account_validation(backend, ids):
    both = AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    assert backend.create_accounts([
        Account(id=0, ledger=LEDGER, code=1),
        Account(id=ids(), ledger=0, code=1),
        Account(id=ids(), ledger=LEDGER, code=0),
        Account(id=ids(), ledger=LEDGER, code=1, flags=both),
        Account(id=ids(), ledger=LEDGER, code=1, debits_posted=5),
    ]) == [A.ID_MUST_NOT_BE_ZERO, A.LEDGER_MUST_NOT_BE_ZERO, A.CODE_MUST_NOT_BE_ZERO,
           A.FLAGS_ARE_MUTUALLY_EXCLUSIVE, A.DEBITS_POSTED_MUST_BE_ZERO]


def test_linked_accounts_fail_together(backend, ids):
    first, second = ids(), ids()
    results = backend.create_accounts([
        Account(id=first, ledger=LEDGER, code=1, flags=AF.LINKED),
        Account(id=second, ledger=0, code=1),
    ])
    assert results == [A.LINKED_EVENT_FAILED, A.LEDGER_MUST_NOT_BE_ZERO]
    assert backend.lookup_accounts([first, second]) == []


# ---------------------------------------------------------------------- single-phase


def test_single_phase_transfer_moves_balances(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    t = transfer(ids, dr, cr, 250, user_data_64=42)
    assert backend.create_transfers([t]) == [T.CREATED]
    assert balances(backend, dr) == (0, 250, 0, 0)
    assert balances(backend, cr) == (0, 0, 0, 250)
    (stored,) = backend.lookup_transfers([t.id])
    assert (stored.amount, stored.user_data_64, stored.debit_account_id) == (250, 42, dr)
    assert stored.timestamp > 0


def test_transfer_validation(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    other_ledger = Account(id=ids(), ledger=LEDGER + 1, code=1)
    assert backend.create_accounts([other_ledger]) == [A.CREATED]
    assert backend.create_transfers([
        transfer(ids, dr, dr, 1),
        transfer(ids, dr, ids(), 1),
        transfer(ids, ids(), cr, 1),
        transfer(ids, dr, other_ledger.id, 1),
        transfer(ids, dr, cr, 1, ledger=LEDGER + 1),
        transfer(ids, dr, cr, 1, code=0),
        transfer(ids, dr, cr, 1, timeout=5),
        transfer(ids, dr, cr, 1, flags=TF.PENDING | TF.POST_PENDING_TRANSFER),
        transfer(ids, 0, cr, 1),
    ]) == [T.ACCOUNTS_MUST_BE_DIFFERENT, T.CREDIT_ACCOUNT_NOT_FOUND, T.DEBIT_ACCOUNT_NOT_FOUND,
           T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER, T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS,
           T.CODE_MUST_NOT_BE_ZERO, T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
           T.FLAGS_ARE_MUTUALLY_EXCLUSIVE, T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO]
    assert balances(backend, dr) == (0, 0, 0, 0)


def test_zero_amount_transfer_is_allowed(backend, ids):
    dr, cr = make_accounts(backend, ids, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, 0)
    assert backend.create_transfers([transfer(ids, dr, cr, 0)]) == [T.CREATED]
    assert balances(backend, dr) == (0, 0, 0, 0)


# ---------------------------------------------------------------------- idempotency


def test_identical_retry_exists_and_changes_nothing(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    t = transfer(ids, dr, cr, 10, user_data_128=5)
    assert backend.create_transfers([t]) == [T.CREATED]
    assert backend.create_transfers([t]) == [T.EXISTS]
    assert balances(backend, dr) == (0, 10, 0, 0)


def test_conflicting_retry_names_the_first_different_field(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    t = transfer(ids, dr, cr, 10, user_data_128=5)
    assert backend.create_transfers([t]) == [T.CREATED]

    def variant(**change):
        fields = dict(id=t.id, debit=dr, credit=cr, amount=10, user_data_128=5)
        fields.update(change)
        return transfer(ids, fields.pop("debit"), fields.pop("credit"), fields.pop("amount"), **fields)

    assert backend.create_transfers([variant(amount=11)]) == [T.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert backend.create_transfers([variant(debit=cr, credit=dr)]) == [T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID]
    assert backend.create_transfers([variant(user_data_128=6)]) == [T.EXISTS_WITH_DIFFERENT_USER_DATA_128]
    assert backend.create_transfers([variant(code=2)]) == [T.EXISTS_WITH_DIFFERENT_CODE]
    assert backend.create_transfers([variant(flags=TF.PENDING)]) == [T.EXISTS_WITH_DIFFERENT_FLAGS]
    assert balances(backend, dr) == (0, 10, 0, 0)


def test_transiently_failed_id_cannot_be_reused(backend, ids):
    dr, cr = make_accounts(backend, ids, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, 0)
    t = transfer(ids, dr, cr, 5)
    assert backend.create_transfers([t]) == [T.EXCEEDS_CREDITS]
    assert backend.create_transfers([transfer(ids, cr, dr, 5)]) == [T.CREATED]
    assert backend.create_transfers([t]) == [T.ID_ALREADY_FAILED]


# ---------------------------------------------------------------------- linked chains


def test_linked_chain_fails_as_a_whole(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    results = backend.create_transfers([
        transfer(ids, cr, dr, 100, flags=TF.LINKED),  # fine on its own
        transfer(ids, dr, cr, 30, flags=TF.LINKED),  # fine after the first
        transfer(ids, dr, cr, 500),  # cr would be credited past its debits: the chain fails
        transfer(ids, cr, dr, 1),  # a separate event: unaffected
    ])
    assert results == [T.LINKED_EVENT_FAILED, T.LINKED_EVENT_FAILED, T.EXCEEDS_DEBITS, T.CREATED]
    assert balances(backend, dr) == (0, 0, 0, 1)
    assert balances(backend, cr) == (0, 1, 0, 0)


def test_linked_chain_succeeds_as_a_whole(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    results = backend.create_transfers([
        transfer(ids, cr, dr, 100, flags=TF.LINKED),
        transfer(ids, dr, cr, 100),  # allowed only because the first came first
    ])
    assert results == [T.CREATED, T.CREATED]
    assert balances(backend, cr) == (0, 100, 0, 100)


def test_open_chain_at_end_of_batch(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    results = backend.create_transfers([
        transfer(ids, dr, cr, 1),
        transfer(ids, dr, cr, 2, flags=TF.LINKED),
        transfer(ids, dr, cr, 3, flags=TF.LINKED),
    ])
    assert results == [T.CREATED, T.LINKED_EVENT_FAILED, T.LINKED_EVENT_CHAIN_OPEN]
    assert balances(backend, dr) == (0, 1, 0, 0)


# ---------------------------------------------------------------------- two-phase


def pending(backend, ids, dr, cr, amount, **fields) -> Transfer:
    p = transfer(ids, dr, cr, amount, flags=TF.PENDING, **fields)
    assert backend.create_transfers([p]) == [T.CREATED]
    return p


def test_post_full_amount(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    p = pending(backend, ids, dr, cr, 70, timeout=60)
    assert balances(backend, dr) == (70, 0, 0, 0)
    assert balances(backend, cr) == (0, 0, 70, 0)
    post = Transfer(id=ids(), pending_id=p.id, amount=AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER)
    assert backend.create_transfers([post]) == [T.CREATED]
    assert balances(backend, dr) == (0, 70, 0, 0)
    assert balances(backend, cr) == (0, 0, 0, 70)
    (stored,) = backend.lookup_transfers([post.id])
    assert (stored.amount, stored.debit_account_id, stored.credit_account_id) == (70, dr, cr)
    assert backend.create_transfers([post]) == [T.EXISTS]
    again = Transfer(id=ids(), pending_id=p.id, amount=AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER)
    assert backend.create_transfers([again]) == [T.PENDING_TRANSFER_ALREADY_POSTED]
    void = Transfer(id=ids(), pending_id=p.id, flags=TF.VOID_PENDING_TRANSFER)
    assert backend.create_transfers([void]) == [T.PENDING_TRANSFER_ALREADY_POSTED]


def test_post_smaller_amount_returns_the_rest(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    p = pending(backend, ids, dr, cr, 70)
    too_much = Transfer(id=ids(), pending_id=p.id, amount=71, flags=TF.POST_PENDING_TRANSFER)
    assert backend.create_transfers([too_much]) == [T.EXCEEDS_PENDING_TRANSFER_AMOUNT]
    post = Transfer(id=ids(), pending_id=p.id, amount=30, flags=TF.POST_PENDING_TRANSFER)
    assert backend.create_transfers([post]) == [T.CREATED]
    assert balances(backend, dr) == (0, 30, 0, 0)
    assert balances(backend, cr) == (0, 0, 0, 30)


def test_void_returns_everything(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    p = pending(backend, ids, dr, cr, 70)
    wrong = Transfer(id=ids(), pending_id=p.id, amount=5, flags=TF.VOID_PENDING_TRANSFER)
    assert backend.create_transfers([wrong]) == [T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT]
    void = Transfer(id=ids(), pending_id=p.id, flags=TF.VOID_PENDING_TRANSFER)
    assert backend.create_transfers([void]) == [T.CREATED]
    assert balances(backend, dr) == (0, 0, 0, 0)
    assert balances(backend, cr) == (0, 0, 0, 0)
    post = Transfer(id=ids(), pending_id=p.id, amount=AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER)
    assert backend.create_transfers([post]) == [T.PENDING_TRANSFER_ALREADY_VOIDED]


def test_resolution_checks_against_the_pending_transfer(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    p = pending(backend, ids, dr, cr, 70)
    assert backend.create_transfers([
        Transfer(id=ids(), pending_id=ids(), flags=TF.POST_PENDING_TRANSFER),
        Transfer(id=ids(), pending_id=p.id, debit_account_id=cr, flags=TF.POST_PENDING_TRANSFER),
        Transfer(id=ids(), pending_id=p.id, code=9, flags=TF.VOID_PENDING_TRANSFER),
        Transfer(id=ids(), pending_id=0, flags=TF.VOID_PENDING_TRANSFER),
        Transfer(id=ids(), pending_id=p.id, timeout=1, flags=TF.VOID_PENDING_TRANSFER),
    ]) == [T.PENDING_TRANSFER_NOT_FOUND, T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,
           T.PENDING_TRANSFER_HAS_DIFFERENT_CODE, T.PENDING_ID_MUST_NOT_BE_ZERO,
           T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER]
    single = transfer(ids, dr, cr, 1)
    assert backend.create_transfers([single]) == [T.CREATED]
    assert backend.create_transfers([Transfer(id=ids(), pending_id=single.id, flags=TF.VOID_PENDING_TRANSFER)]) \
        == [T.PENDING_TRANSFER_NOT_PENDING]


def test_pending_and_post_in_one_chain(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    p = transfer(ids, dr, cr, 40, flags=TF.PENDING | TF.LINKED)
    post = Transfer(id=ids(), pending_id=p.id, amount=AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER)
    assert backend.create_transfers([p, post]) == [T.CREATED, T.CREATED]
    assert balances(backend, dr) == (0, 40, 0, 0)


def test_failed_chain_rolls_back_a_post(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    p = pending(backend, ids, dr, cr, 40)
    post = Transfer(id=ids(), pending_id=p.id, amount=AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER | TF.LINKED)
    assert backend.create_transfers([post, transfer(ids, dr, ids(), 1)]) == \
        [T.LINKED_EVENT_FAILED, T.CREDIT_ACCOUNT_NOT_FOUND]
    assert balances(backend, dr) == (40, 0, 0, 0)
    void = Transfer(id=ids(), pending_id=p.id, flags=TF.VOID_PENDING_TRANSFER)
    assert backend.create_transfers([void]) == [T.CREATED]


# ---------------------------------------------------------------------- limits


def test_debit_limit_counts_pending_debits(backend, ids):
    limited, other = make_accounts(backend, ids, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, 0)
    assert backend.create_transfers([transfer(ids, other, limited, 100)]) == [T.CREATED]
    pending(backend, ids, limited, other, 60)
    assert backend.create_transfers([transfer(ids, limited, other, 41, flags=TF.PENDING)]) == [T.EXCEEDS_CREDITS]
    assert backend.create_transfers([transfer(ids, limited, other, 41)]) == [T.EXCEEDS_CREDITS]
    assert backend.create_transfers([transfer(ids, limited, other, 40)]) == [T.CREATED]
    assert balances(backend, limited) == (60, 40, 0, 100)


def test_pending_credits_do_not_count_as_funds(backend, ids):
    limited, other = make_accounts(backend, ids, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, 0)
    pending(backend, ids, other, limited, 100)
    assert backend.create_transfers([transfer(ids, limited, other, 1)]) == [T.EXCEEDS_CREDITS]


def test_credit_limit(backend, ids):
    limited, other = make_accounts(backend, ids, AF.CREDITS_MUST_NOT_EXCEED_DEBITS, 0)
    assert backend.create_transfers([transfer(ids, limited, other, 10)]) == [T.CREATED]
    assert backend.create_transfers([transfer(ids, other, limited, 11)]) == [T.EXCEEDS_DEBITS]
    assert backend.create_transfers([transfer(ids, other, limited, 10)]) == [T.CREATED]


# ---------------------------------------------------------------------- expiry


def test_expired_pending_cannot_be_posted_and_is_released(backend, ids):
    dr, cr = make_accounts(backend, ids, 0, 0)
    p = pending(backend, ids, dr, cr, 70, timeout=1)
    deadline = time.monotonic() + 5
    post = Transfer(id=ids(), pending_id=p.id, amount=AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER)
    time.sleep(1.05)
    while True:
        result = backend.create_transfers([post])
        if result == [T.PENDING_TRANSFER_EXPIRED] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert result == [T.PENDING_TRANSFER_EXPIRED]
    expire = getattr(backend, "expire_pending", None)  # a real cluster expires on its own
    while balances(backend, dr) != (0, 0, 0, 0) and time.monotonic() < deadline:
        if expire is not None:
            expire()
        time.sleep(0.05)
    assert balances(backend, dr) == (0, 0, 0, 0)
    assert balances(backend, cr) == (0, 0, 0, 0)
