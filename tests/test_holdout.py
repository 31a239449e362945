"""Held-out videos (mosic.data.holdout): fixed by the video id, left out of training, scored by
the YouTube-VOS 'heldout' split."""

import pytest

from mosic import MosicError
from mosic.data.holdout import heldout_rank, is_heldout, split_heldout, ytvos_holdout


def test_split_is_fixed_by_the_id_disjoint_and_about_the_fraction():
    ids = [f"{i:04x}abcd{i * 7919 % 10007}" for i in range(4000)]
    fraction = ytvos_holdout()
    keep, out = split_heldout(ids, fraction)
    assert set(keep).isdisjoint(out) and sorted(keep + out) == sorted(ids)
    assert abs(len(out) / len(ids) - fraction) < 0.015
    # independent of the other videos and of their order
    assert split_heldout(ids[::-1], fraction)[1] == out[::-1]
    assert split_heldout(ids[:100], fraction)[1] == [v for v in out if v in set(ids[:100])]
    assert all(is_heldout(v, fraction) for v in out) and not any(is_heldout(v, fraction) for v in keep)
    assert split_heldout(ids, 0.0) == (ids, [])
    assert 0 <= heldout_rank("x") < 1 and heldout_rank("x") == heldout_rank("x")
    with pytest.raises(MosicError, match="holdout"):
        split_heldout(ids, 1.0)
