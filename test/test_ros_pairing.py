"""Exact-stamp pairing (plain Python: pairing.py imports no ROS)."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrap_perception.ros import pairing
from scrap_perception.ros.pairing import StampPairer


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_both_arrival_orders_pair():
    p = StampPairer(buffer_size=4, max_age=1.0, clock=FakeClock())
    assert p.add_image((1, 0), "img1") is None
    assert p.add_detections((1, 0), "det1") == ("img1", "det1")
    assert p.add_detections((2, 5), "det2") is None
    assert p.add_image((2, 5), "img2") == ("img2", "det2")
    assert p.counts[pairing.PAIRED] == 2
    assert p.waiting == (0, 0)


def test_stamps_must_match_exactly():
    p = StampPairer(buffer_size=4, max_age=1.0, clock=FakeClock())
    p.add_image((1, 1), "img")
    assert p.add_detections((1, 2), "det") is None  # one nanosecond apart: no pair
    assert p.waiting == (1, 1)


def test_age_expiry_counts_each_side():
    clock = FakeClock()
    p = StampPairer(buffer_size=10, max_age=0.5, clock=clock)
    p.add_image((1, 0), "a")
    p.add_detections((2, 0), "b")
    clock.t = 0.4
    p.add_image((3, 0), "c")
    assert p.expire() == []
    clock.t = 0.6
    assert p.expire() == [(pairing.IMAGE_EXPIRED, (1, 0)), (pairing.DETECTIONS_EXPIRED, (2, 0))]
    assert p.counts[pairing.IMAGE_EXPIRED] == 1 and p.counts[pairing.DETECTIONS_EXPIRED] == 1
    # A late partner of an expired entry does not pair.
    assert p.add_detections((1, 0), "late") is None
    clock.t = 0.85  # c arrived at 0.4: still young enough
    assert p.add_detections((3, 0), "d") == ("c", "d")


def test_buffer_is_bounded_and_oldest_leaves():
    p = StampPairer(buffer_size=3, max_age=100.0, clock=FakeClock())
    for s in range(10):
        p.add_image((s, 0), s)
    assert p.waiting == (3, 0)
    assert p.counts[pairing.IMAGE_OVERFLOW] == 7
    assert p.add_detections((9, 0), "d") == (9, "d")
    assert p.add_detections((0, 0), "d") is None  # pushed out long ago


def test_duplicate_stamp_replaces_and_counts():
    p = StampPairer(buffer_size=3, max_age=100.0, clock=FakeClock())
    p.add_image((1, 0), "first")
    p.add_image((1, 0), "second")
    assert p.counts[pairing.DUPLICATE_IMAGE] == 1
    assert p.add_detections((1, 0), "d") == ("second", "d")


def test_bad_settings_refused():
    with pytest.raises(ValueError, match="buffer_size"):
        StampPairer(0, 1.0)
    with pytest.raises(ValueError, match="max_age"):
        StampPairer(1, 0.0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**31), buffer_size=st.integers(1, 8),
       lost=st.sets(st.integers(0, 29)))
def test_any_interleaving_pairs_every_complete_stamp_once(n, seed, buffer_size, lost):
    """Images and detections of n stamps arrive shuffled within a window smaller than the buffer;
    some detections are lost. Every stamp with both parts pairs exactly once with its own partner,
    and every leftover is accounted for as waiting or expired/overflowed."""
    rng = random.Random(seed)
    events = []
    for s in range(n):
        events.append((s + rng.uniform(-0.4, 0.4) * buffer_size, "img", s))
        if s not in lost:
            events.append((s + rng.uniform(-0.4, 0.4) * buffer_size, "det", s))
    events.sort()
    clock = FakeClock()
    p = StampPairer(buffer_size=buffer_size, max_age=1e9, clock=clock)
    pairs = []
    for _, kind, s in events:
        got = p.add_image((s, 0), ("img", s)) if kind == "img" else p.add_detections((s, 0), ("det", s))
        if got is not None:
            pairs.append(got)
    assert all(a[1] == b[1] for a, b in pairs)
    paired = [a[1] for a, _ in pairs]
    assert len(paired) == len(set(paired))
    complete = {s for s in range(n) if s not in lost}
    assert set(paired) <= complete
    # Lost detections leave images behind: they are waiting or were pushed out.
    imgs_left, dets_left = p.waiting
    assert imgs_left + p.counts[pairing.IMAGE_OVERFLOW] + len(paired) == n
    assert dets_left + p.counts[pairing.DETECTIONS_OVERFLOW] + len(paired) == len(complete)
    if buffer_size > 2 * len(lost) + 1:
        # Partners arrive within 0.8 * buffer_size of each other, so none was pushed out too early.
        assert set(paired) == complete
