"""Codec shape choices: lists and sub-quantisers that fit the gallery and the dimension."""

from __future__ import annotations

import pytest

from dedup.errors import InvalidParameter
from dedup.index.codec import CodecSpec, choose_nlist, choose_pq_m, fit_nlist, outgrown


@pytest.mark.parametrize(("dim", "pq_m"), [(128, 32), (512, 128), (64, 16), (30, 6), (100, 20)])
def test_pq_m_follows_the_dimension(dim: int, pq_m: int) -> None:
    chosen = choose_pq_m(dim, 0)
    assert chosen == pq_m and dim % chosen == 0 and chosen % 2 == 0
    assert choose_pq_m(dim, 8) == 8  # a configured value wins


def test_nlist_grows_with_the_gallery_and_respects_the_training_sample() -> None:
    assert choose_nlist(1_000_000) == 2048 and choose_nlist(100) == 16
    assert choose_nlist(10_000_000) > choose_nlist(1_000_000)
    assert fit_nlist(0, 10_000_000, 100_000) == 2048  # 100k / 39 per list
    assert fit_nlist(512, 10_000_000, 100_000) == 512


def test_bad_codec_shapes() -> None:
    with pytest.raises(InvalidParameter, match="must divide"):
        CodecSpec(dim=128, nlist=16, pq_m=24, pq_bits=4)
    with pytest.raises(InvalidParameter, match="even pq_m"):
        CodecSpec(dim=30, nlist=16, pq_m=15, pq_bits=4)
    with pytest.raises(InvalidParameter, match="pq_bits"):
        CodecSpec(dim=128, nlist=16, pq_m=32, pq_bits=6)


def test_a_codec_is_outgrown_when_a_fresh_one_would_have_four_times_its_lists() -> None:
    # The bootstrap codec (512 lists) of the 10M system benchmark: a fresh one would have 2,048.
    message = outgrown(512, 10_000_000, 100_000)
    assert message is not None and "512 IVF lists for 10,000,000 templates" in message
    assert "would have 2,048" in message and "dedup gallery compact --retrain" in message
    assert outgrown(512, 1_000_000, 100_000) is not None     # wanted 2,048 = 4 x 512
    assert outgrown(1024, 1_000_000, 100_000) is None        # wanted 2,048 < 4 x 1,024
    assert outgrown(512, 50_000, 100_000) is None            # a young gallery: wanted 512
    assert outgrown(16, 10_000_000, 1_000) is None           # retraining on 1,000 templates gives no more lists
    assert outgrown(16, 0, 100_000) is None
