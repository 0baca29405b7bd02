"""The ledger's data model: TigerBeetle's accounts, transfers, flags and result codes.

Everything here mirrors TigerBeetle 0.17 (the `tigerbeetle` client package pinned by the
project) so the same records run against the embedded backend and a real cluster:

* flag bits and result codes have TigerBeetle's names and numeric values (a test compares
  them with the client's enums);
* `pack_transfer` / `pack_account` write TigerBeetle's exact 128-byte little-endian structs
  (u128 fields as low then high 64-bit halves), the bytes the ledger ring and the embedded
  database carry and that the TigerBeetle backend can hand to the client as they are.

The embedded state machine works with plain ints for flags (an `IntFlag` costs a Python
call per `&` on the hot path); the enums are for callers and for reading results.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

U64_MAX = (1 << 64) - 1
U128_MAX = (1 << 128) - 1
AMOUNT_MAX = U128_MAX  # a post with this amount posts the whole pending amount
_LOW = U64_MAX


class AccountFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    HISTORY = 1 << 3
    IMPORTED = 1 << 4
    CLOSED = 1 << 5


class TransferFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    PENDING = 1 << 1
    POST_PENDING_TRANSFER = 1 << 2
    VOID_PENDING_TRANSFER = 1 << 3
    BALANCING_DEBIT = 1 << 4
    BALANCING_CREDIT = 1 << 5
    CLOSING_DEBIT = 1 << 6
    CLOSING_CREDIT = 1 << 7
    IMPORTED = 1 << 8


class CreateAccountStatus(enum.IntEnum):
    """Result of one `create_accounts` event (TigerBeetle 0.17's CreateAccountStatus)."""

    CREATED = 0xFFFFFFFF
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    IMPORTED_EVENT_EXPECTED = 22
    IMPORTED_EVENT_NOT_EXPECTED = 23
    TIMESTAMP_MUST_BE_ZERO = 3
    IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE = 24
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE = 25
    RESERVED_FIELD = 4
    RESERVED_FLAG = 5
    ID_MUST_NOT_BE_ZERO = 6
    ID_MUST_NOT_BE_INT_MAX = 7
    EXISTS_WITH_DIFFERENT_FLAGS = 15
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 16
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 17
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 18
    EXISTS_WITH_DIFFERENT_LEDGER = 19
    EXISTS_WITH_DIFFERENT_CODE = 20
    EXISTS = 21
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 8
    DEBITS_PENDING_MUST_BE_ZERO = 9
    DEBITS_POSTED_MUST_BE_ZERO = 10
    CREDITS_PENDING_MUST_BE_ZERO = 11
    CREDITS_POSTED_MUST_BE_ZERO = 12
    LEDGER_MUST_NOT_BE_ZERO = 13
    CODE_MUST_NOT_BE_ZERO = 14
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS = 26


class CreateTransferStatus(enum.IntEnum):
    """Result of one `create_transfers` event (TigerBeetle 0.17's CreateTransferStatus)."""

    CREATED = 0xFFFFFFFF
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    IMPORTED_EVENT_EXPECTED = 56
    IMPORTED_EVENT_NOT_EXPECTED = 57
    TIMESTAMP_MUST_BE_ZERO = 3
    IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE = 58
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE = 59
    RESERVED_FLAG = 4
    ID_MUST_NOT_BE_ZERO = 5
    ID_MUST_NOT_BE_INT_MAX = 6
    EXISTS_WITH_DIFFERENT_FLAGS = 36
    EXISTS_WITH_DIFFERENT_PENDING_ID = 40
    EXISTS_WITH_DIFFERENT_TIMEOUT = 44
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = 37
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = 38
    EXISTS_WITH_DIFFERENT_AMOUNT = 39
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 41
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 42
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 43
    EXISTS_WITH_DIFFERENT_LEDGER = 67
    EXISTS_WITH_DIFFERENT_CODE = 45
    EXISTS = 46
    ID_ALREADY_FAILED = 68
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 7
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 8
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 9
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 10
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 11
    ACCOUNTS_MUST_BE_DIFFERENT = 12
    PENDING_ID_MUST_BE_ZERO = 13
    PENDING_ID_MUST_NOT_BE_ZERO = 14
    PENDING_ID_MUST_NOT_BE_INT_MAX = 15
    PENDING_ID_MUST_BE_DIFFERENT = 16
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = 17
    CLOSING_TRANSFER_MUST_BE_PENDING = 64
    LEDGER_MUST_NOT_BE_ZERO = 19
    CODE_MUST_NOT_BE_ZERO = 20
    DEBIT_ACCOUNT_NOT_FOUND = 21
    CREDIT_ACCOUNT_NOT_FOUND = 22
    ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = 23
    TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = 24
    PENDING_TRANSFER_NOT_FOUND = 25
    PENDING_TRANSFER_NOT_PENDING = 26
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = 27
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = 28
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = 29
    PENDING_TRANSFER_HAS_DIFFERENT_CODE = 30
    EXCEEDS_PENDING_TRANSFER_AMOUNT = 31
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = 32
    PENDING_TRANSFER_ALREADY_POSTED = 33
    PENDING_TRANSFER_ALREADY_VOIDED = 34
    PENDING_TRANSFER_EXPIRED = 35
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS = 60
    IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT = 61
    IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT = 62
    IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO = 63
    DEBIT_ACCOUNT_ALREADY_CLOSED = 65
    CREDIT_ACCOUNT_ALREADY_CLOSED = 66
    OVERFLOWS_DEBITS_PENDING = 47
    OVERFLOWS_CREDITS_PENDING = 48
    OVERFLOWS_DEBITS_POSTED = 49
    OVERFLOWS_CREDITS_POSTED = 50
    OVERFLOWS_DEBITS = 51
    OVERFLOWS_CREDITS = 52
    OVERFLOWS_TIMEOUT = 53
    EXCEEDS_CREDITS = 54
    EXCEEDS_DEBITS = 55


# The names the brief and older TigerBeetle clients use for the same enums.
CreateAccountResult = CreateAccountStatus
CreateTransferResult = CreateTransferStatus


@dataclass(slots=True)
class Account:
    """A TigerBeetle account (field names and meaning as in the client's `Account`)."""

    id: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


@dataclass(slots=True)
class Transfer:
    """A TigerBeetle transfer; `timeout` is in seconds, `timestamp` in nanoseconds."""

    id: int = 0
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    pending_id: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timeout: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


# Six u128 fields (each as low u64, high u64), then the scalar tail. 128 bytes.
TRANSFER_STRUCT = struct.Struct("<12QQIIIHHQ")
# Six u128 fields, user_data_64, user_data_32, reserved u32, ledger, code, flags, timestamp.
ACCOUNT_STRUCT = struct.Struct("<12QQIIIHHQ")
RECORD_SIZE = 128
assert TRANSFER_STRUCT.size == ACCOUNT_STRUCT.size == RECORD_SIZE


def pack_transfer(t: Transfer) -> bytes:
    """TigerBeetle's 128-byte `tb_transfer_t` for `t`."""
    return TRANSFER_STRUCT.pack(
        t.id & _LOW, t.id >> 64,
        t.debit_account_id & _LOW, t.debit_account_id >> 64,
        t.credit_account_id & _LOW, t.credit_account_id >> 64,
        t.amount & _LOW, t.amount >> 64,
        t.pending_id & _LOW, t.pending_id >> 64,
        t.user_data_128 & _LOW, t.user_data_128 >> 64,
        t.user_data_64, t.user_data_32, t.timeout, t.ledger, t.code, t.flags, t.timestamp,
    )


def _transfer_from_fields(f: tuple) -> Transfer:
    return Transfer(
        f[0] | f[1] << 64, f[2] | f[3] << 64, f[4] | f[5] << 64, f[6] | f[7] << 64,
        f[8] | f[9] << 64, f[10] | f[11] << 64, f[12], f[13], f[14], f[15], f[16], f[17], f[18],
    )


def unpack_transfer(data, offset: int = 0) -> Transfer:
    """The transfer packed at `data[offset:offset + 128]`."""
    return _transfer_from_fields(TRANSFER_STRUCT.unpack_from(data, offset))


def iter_transfers(data):
    """Every transfer in a buffer of back-to-back 128-byte structs."""
    for fields in TRANSFER_STRUCT.iter_unpack(data):
        yield _transfer_from_fields(fields)


def pack_account(a: Account) -> bytes:
    """TigerBeetle's 128-byte `tb_account_t` for `a` (reserved field zero)."""
    return ACCOUNT_STRUCT.pack(
        a.id & _LOW, a.id >> 64,
        a.debits_pending & _LOW, a.debits_pending >> 64,
        a.debits_posted & _LOW, a.debits_posted >> 64,
        a.credits_pending & _LOW, a.credits_pending >> 64,
        a.credits_posted & _LOW, a.credits_posted >> 64,
        a.user_data_128 & _LOW, a.user_data_128 >> 64,
        a.user_data_64, a.user_data_32, 0, a.ledger, a.code, a.flags, a.timestamp,
    )


def unpack_account(data, offset: int = 0) -> Account:
    """The account packed at `data[offset:offset + 128]` (the reserved field is dropped)."""
    f = ACCOUNT_STRUCT.unpack_from(data, offset)
    return Account(
        f[0] | f[1] << 64, f[2] | f[3] << 64, f[4] | f[5] << 64, f[6] | f[7] << 64,
        f[8] | f[9] << 64, f[10] | f[11] << 64, f[12], f[13], f[15], f[16], f[17], f[18],
    )


def iter_accounts(data):
    """Every account in a buffer of back-to-back 128-byte structs."""
    for offset in range(0, len(data), RECORD_SIZE):
        yield unpack_account(data, offset)
