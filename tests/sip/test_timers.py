from sip.timers import TimerHeap


def test_heap_orders_fifo_and_cancels_lazily():
    h = TimerHeap()
    fired = []
    cb = lambda kind, now: fired.append((kind, now))
    a = h.schedule(2.0, cb, "a")
    h.schedule(1.0, cb, "b")
    h.schedule(1.0, cb, "c")
    assert len(h) == 3 and h.next_deadline() == 1.0
    h.cancel(a)
    h.cancel(a)
    assert len(h) == 2
    assert h.run_due(1.5) == 2 and fired == [("b", 1.5), ("c", 1.5)]
    assert h.next_deadline() is None and len(h) == 0


def test_callbacks_scheduling_due_timers_do_not_loop():
    h = TimerHeap()
    def cb(kind, now):
        h.schedule(now, cb, kind)
    h.schedule(0.0, cb, "x")
    assert h.run_due(0.0) == 1 and h.next_deadline() == 0.0
