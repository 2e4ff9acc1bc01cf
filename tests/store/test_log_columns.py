"""An append's columns as the log holds them: the hand-written encoding of one event is the
same CBOR as cbor2's, and every encoding reads back as it was written."""

from __future__ import annotations

import os

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventador.store.appends import decode_columns, encode_columns, new_event_ids, split_ids

SIZES = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 70_000]
TIMES = [None, 0, 5, -1, -(10**12), 2**32 - 1, 2**32, 1_764_253_000_000_000, 2**64 - 1, 2**64, 2**70]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("micros", TIMES)
def test_one_event_is_written_as_cbor2_would_write_it(size: int, micros: int | None) -> None:
    payload, ids = os.urandom(size), new_event_ids(1)
    written = encode_columns(["bench.Deposited"], ids, [micros], [payload])
    when = None if micros is None else [micros]
    assert written == cbor2.dumps(["bench.Deposited", ids, when, size.to_bytes(4, "little"), payload])
    assert decode_columns(cbor2.loads(written), log_format=3) == (["bench.Deposited"], [ids], [micros], [payload], [1])


@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a.Opened", "a.Deposited", "ü"]), st.none() | st.integers(-(2**63), 2**63),
                  st.binary(max_size=300), st.sampled_from([1, 1, 2, 32_767])),
        min_size=1, max_size=30,
    )
)
def test_columns_of_any_append_read_back(rows: list[tuple[str, int | None, bytes, int]]) -> None:
    types, occurred, payloads, versions = (list(column) for column in zip(*rows, strict=True))
    ids = new_event_ids(len(rows))
    decoded = decode_columns(cbor2.loads(encode_columns(types, ids, occurred, payloads, versions)), log_format=3)
    assert decoded == (types, split_ids(ids), occurred, payloads, versions)


def test_a_record_of_version_1_events_has_the_five_columns_older_stores_wrote() -> None:
    ids = new_event_ids(2)
    written = cbor2.loads(encode_columns(["a", "a"], ids, [None, None], [b"x", b"y"], [1, 1]))
    assert len(written) == 5
    assert len(cbor2.loads(encode_columns(["a", "a"], ids, [None, None], [b"x", b"y"], [1, 3]))) == 6
