"""Camera sets (plain Python: camera_sets.py imports no ROS): grouping by stamp, newest complete set wins,
expiry and partial sets, and every frame accounted for."""
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scrap_perception.ros.camera_sets import EXPIRED, LATE, MISSING, SetSynchronizer

MS = 1_000_000  # ns


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_exact_mode_groups_identical_stamps_only():
    sync = SetSynchronizer(["a", "b"], slop=0.0, max_age=1.0)
    assert sync.add("a", 100 * MS, "a1") == []
    assert sync.add("b", 100 * MS + 1, "b-other") == []  # 1 ns off: another moment
    ready = sync.add("b", 100 * MS, "b1")
    assert [(s.stamp, s.frames, s.partial) for s in ready] == [(100 * MS, {"a": "a1", "b": "b1"}, False)]
    # the open set of the other moment is newer: it waits
    assert sync.waiting == {"a": 0, "b": 1}


def test_slop_groups_jittered_stamps_nearest_first_and_each_frame_once():
    sync = SetSynchronizer(["a", "b", "c"], slop=0.010, max_age=1.0)
    sync.add("a", 1000 * MS, "a0")
    sync.add("b", 1004 * MS, "b0")
    sync.add("b", 1009 * MS, "b0-dup")  # b already in the set: opens another set
    ready = sync.add("c", 995 * MS, "c0")
    assert len(ready) == 1 and ready[0].frames == {"a": "a0", "b": "b0", "c": "c0"}
    assert list(ready[0].frames) == ["a", "b", "c"]
    # a frame within slop of the set handed on belongs to a moment that is gone: late
    assert sync.add("a", 1008 * MS, "late") == [] and sync.counts["a"][LATE] == 1 == sync.counts["a"][EXPIRED]


def test_newest_complete_set_supersedes_older_open_ones():
    clock = Clock()
    sync = SetSynchronizer(["a", "b"], slop=0.0, max_age=5.0, clock=clock)
    sync.add("a", 1 * MS, "a1")  # b's frame of t=1 never comes
    sync.add("a", 2 * MS, "a2")
    ready = sync.add("b", 2 * MS, "b2")
    assert [s.stamp for s in ready] == [2 * MS]
    assert sync.counts["a"][EXPIRED] == 1 and sync.counts["b"][MISSING] == 1 and not sync.open
    assert sync.set_counts["superseded"] == 1


def test_incomplete_sets_expire_after_max_age_or_go_on_partial():
    for partial in (False, True):
        clock = Clock()
        sync = SetSynchronizer(["a", "b", "c"], slop=0.0, max_age=0.5, partial=partial, clock=clock)
        sync.add("a", 7 * MS, "a7")
        sync.add("c", 7 * MS, "c7")
        clock.t = 0.4
        assert sync.expire() == []
        clock.t = 0.6
        ready = sync.expire()
        assert sync.counts["b"][MISSING] == 1
        if partial:
            assert len(ready) == 1 and ready[0].partial and list(ready[0].frames) == ["a", "c"]
            assert ready[0].missing(sync.cameras) == ["b"] and sync.counts["a"][EXPIRED] == 0
        else:
            assert ready == [] and sync.counts["a"][EXPIRED] == 1 and sync.counts["c"][EXPIRED] == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.booleans(), st.sampled_from([0.0, 0.010]))
def test_every_frame_is_handed_on_expired_or_waiting(seed, partial, slop):
    """3 cameras at 30 Hz with +-5 ms jitter (none when exact), random drops and arrival order."""
    rng = random.Random(seed)
    clock = Clock()
    cams = ["a", "b", "c"]
    sync = SetSynchronizer(cams, slop=slop, max_age=0.1, partial=partial, clock=clock)
    added = {c: 0 for c in cams}
    out = {c: 0 for c in cams}
    events = []
    for k in range(40):
        for c in cams:
            if rng.random() < 0.2:
                continue
            jitter = rng.randint(-5, 5) * MS if slop else 0
            events.append((k / 30 + rng.uniform(0, 0.05), c, int(k / 30 * 1e9) + jitter))
    events.sort()
    for t, cam, stamp in events:
        clock.t = t
        added[cam] += 1
        ready = sync.add(cam, stamp, (cam, stamp)) + sync.expire()
        for s in ready:
            assert len({v[1] // (30 * MS) for v in s.frames.values()}) <= 2
            assert max(s.stamps.values()) - min(s.stamps.values()) <= 2 * sync.slop_ns
            assert partial or len(s.frames) == 3
            for c in s.frames:
                out[c] += 1
    for c in cams:
        assert added[c] == out[c] + sync.counts[c][EXPIRED] + sync.waiting[c], c
