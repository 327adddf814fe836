"""The sandbox id range and its pool: the first id is the shared group, ids go round-robin, a released id is
the last to come back, and an exhausted pool refuses (temporarily) instead of sharing."""

from __future__ import annotations

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.engine.ids import IdPool, IdRange, IdsExhausted


def test_range_parse_and_bounds() -> None:
    ids = IdRange.parse("1000-1003")
    assert (ids.first, ids.count, ids.last, ids.shared_gid, str(ids)) == (1000, 4, 1003, 1000, "1000-1003")
    assert 1003 in ids and 999 not in ids and 1004 not in ids
    for bad in ("1000", "a-b", "1000-1000", "0-5", "4294967290-4294967295"):
        with pytest.raises(ConfigError):
            IdRange.parse(bad)


def test_pool_hands_out_each_id_once_round_robin_never_the_shared_group() -> None:
    pool = IdPool(IdRange(100, 4))  # uids 101, 102, 103; 100 is the shared group
    assert [pool.allocate(), pool.allocate()] == [101, 102]
    pool.release(101)
    assert pool.allocate() == 103  # not 101 again at once: released ids go to the back
    assert pool.allocate() == 101
    with pytest.raises(IdsExhausted, match="all 3 sandbox ids of 100-103 are in use") as refused:
        pool.allocate()
    assert refused.value.temporary
    pool.release(102)
    assert pool.allocate() == 102 and pool.in_use == 3
