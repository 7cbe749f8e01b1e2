"""The collector policy of the hot processes (eximtrack/gc_policy.py): thresholds raised, start-up objects
frozen, nothing disabled."""

from __future__ import annotations

import gc
import weakref

from eximtrack import gc_policy


def test_tune_for_throughput_freezes_and_raises_the_thresholds():
    before = gc.get_threshold()
    try:
        kept = object()
        gc_policy.tune_for_throughput()
        assert gc.get_threshold() == gc_policy.THRESHOLDS
        assert gc_policy.THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0 and gc.isenabled()
        assert kept is not None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_cycles_are_still_collected_without_being_asked():
    before = gc.get_threshold()
    try:
        gc_policy.tune_for_throughput()

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a

        ref = weakref.ref(a)
        del a, b
        assert ref() is not None  # a cycle waits for a collection …
        keep = [[] for _ in range(gc_policy.THRESHOLDS[0] + 1000)]  # … which enough allocations trigger
        assert ref() is None and keep
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
