"""The batch writer's C record reader (`_fastpath.gather_records`, through
`EmbeddedLedger._take_records`) reads a `Ring.read_many` blob of ledger ring slots exactly
as the reference does (the `Reassembler` and `_parse_record`, slot by slot): the same
transfers in the same order, the same held replies, accounts and syncs, the same errors."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ledger import Account
from connector.ledger.embedded import _KIND_RUN, EmbeddedLedger, _parse_record
from connector.ledger.model import pack_account
from connector.ledger.records import KIND_HELD_REPLY, KIND_PLAIN, KIND_SYNC, MORE, RECORD, SLOT, Reassembler
from ringbuf import READ_MANY_LENGTH


@st.composite
def slots(draw):
    """Slots as emitters write them: mostly whole plain and held-reply records, some with
    accounts, syncs, records split over several slots (interleaved with other emitters'),
    and now and then one too short for the transfers it claims."""
    out = []
    for _ in range(draw(st.integers(0, 10))):
        emitter = draw(st.integers(0, 2))
        kind = draw(st.sampled_from([KIND_PLAIN, KIND_PLAIN, KIND_HELD_REPLY, KIND_HELD_REPLY, KIND_SYNC, 7]))
        accounts = [Account(draw(st.integers(1, 9)), ledger=1, code=1) for _ in range(draw(st.sampled_from([0] * 5 + [1, 2])))]
        n = draw(st.integers(0, 3))
        transfers = b"".join(bytes([draw(st.integers(0, 255))]) * 128 for _ in range(n))
        payload = draw(st.binary(max_size=30)) if kind == KIND_HELD_REPLY else b""
        record = RECORD.pack(len(accounts), n, kind, draw(st.integers(0, 2**64 - 1)))
        record += b"".join(pack_account(a) for a in accounts) + transfers + payload
        if draw(st.integers(0, 15)) == 0:
            record = record[: draw(st.integers(0, len(record)))]  # torn
        pieces = draw(st.integers(1, 3)) if len(record) > 3 else 1
        cut = [len(record) * i // pieces for i in range(pieces + 1)]
        for i in range(pieces):
            flags = MORE if i < pieces - 1 else 0
            out.append(SLOT.pack(emitter + 3 * (pieces > 1), flags) + record[cut[i] : cut[i + 1]])
    return out


def _events(items) -> list:
    """What a carry says, flattened so that runs and single records read the same: between
    records with accounts or of other kinds, the transfers in order and the held replies
    in order (a batch releases its replies only once all its transfers are durable)."""
    events: list = []
    transfers, replies = bytearray(), []

    def barrier(event):
        nonlocal transfers, replies
        events.extend([("transfers", bytes(transfers)), ("replies", replies), event])
        transfers, replies = bytearray(), []

    for accounts, n, blob, kind, target, payload in items:
        if accounts:
            barrier(("accounts", [pack_account(a) for a in accounts]))
        transfers += blob
        if kind == _KIND_RUN:
            replies.extend(payload)
        elif kind == KIND_HELD_REPLY:
            replies.append((target, payload))
        elif kind != KIND_PLAIN:
            barrier(("kind", kind, target))
    barrier(("end",))
    return events


def _by_c(blob, limit):
    carry: deque = deque()
    try:
        taken = EmbeddedLedger._take_records(blob, Reassembler(), carry, limit)
    except Exception as exc:  # noqa: BLE001
        return type(exc), _events(carry)
    return taken, _events(carry)


def _by_reference(slots_, limit):
    reassembler, carry, taken = Reassembler(), deque(), 0
    try:
        for slot in slots_:
            record = reassembler.feed(memoryview(slot))
            if record is not None:
                parsed = _parse_record(record)
                carry.append(parsed)
                taken += parsed[1]
    except Exception as exc:  # noqa: BLE001
        return type(exc), _events(carry)
    return taken, _events(carry)


@settings(max_examples=500, deadline=None)
@given(slots_=slots(), limit=st.sampled_from([1, 2, 5, 8189]))
def test_gathering_in_c_reads_what_the_reference_reads(slots_, limit):
    blob = b"".join(READ_MANY_LENGTH.pack(len(s)) + s for s in slots_)
    assert _by_c(blob, limit) == _by_reference(slots_, limit)


def test_a_run_keeps_to_the_limit_and_stops_at_the_first_other_record():
    def whole(kind, n, target=0, payload=b"", accounts=()):
        record = RECORD.pack(len(accounts), n, kind, target) + b"".join(pack_account(a) for a in accounts)
        return SLOT.pack(1, 0) + record + bytes([n]) * (128 * n) + payload

    from connector.ledger._fastpath import gather_records
    slots_ = [whole(KIND_PLAIN, 2), whole(KIND_HELD_REPLY, 2, 7, b"fulfil"), whole(KIND_PLAIN, 1),
              whole(KIND_SYNC, 0, 9), whole(KIND_PLAIN, 1)]
    blob = b"".join(READ_MANY_LENGTH.pack(len(s)) + s for s in slots_)
    offset, records, count, transfers, replies = gather_records(blob, 0, 4)
    assert (records, count, replies) == (2, 4, [(7, b"fulfil")])  # the third would pass the limit
    assert transfers == bytes([2]) * 512
    offset, records, count, transfers, replies = gather_records(blob, offset, 4)
    assert (records, count, transfers, replies) == (1, 1, bytes([1]) * 128, [])
    assert gather_records(blob, offset, 4)[1] == 0  # a sync: the general path's
    assert gather_records(blob, offset, 4)[0] == offset
    assert gather_records(blob, 0, 1)[1:3] == (1, 2)  # a record over the limit still goes, alone
