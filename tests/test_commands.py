"""The command ring: order, bounded drops, wrap-around, concurrent producers, due order, a
follower that reads the same records and never holds the producer back."""
import threading

import numpy as np
import pytest

from rt_engine.core.commands import (COMMAND_DTYPE, CommandKind, CommandQueue, EventFollower, channel_slot,
                                pending_order_ref)


def test_records_come_out_in_arrival_order_with_their_fields():
    q = CommandQueue(8)
    assert q.push(CommandKind.NOTE_ON, 100, 3, 7, 60.5, 99.0, 0.0)
    assert q.push(CommandKind.NOTE_OFF_ID, -1, -1, 7)
    out = q.pop_all_ref()
    assert list(out["kind"]) == [CommandKind.NOTE_ON, CommandKind.NOTE_OFF_ID]
    assert out[0]["frame"] == 100 and out[0]["channel"] == 3 and out[0]["a"] == 60.5
    assert out[1]["frame"] == -1 and out[1]["note_id"] == 7
    assert list(out["seq"]) == [0, 1]
    assert len(q) == 0


def test_full_queue_counts_and_drops_without_blocking():
    q = CommandQueue(4)
    results = [q.push(CommandKind.PANIC) for _ in range(6)]
    assert results == [True] * 4 + [False] * 2
    assert q.dropped == 2 and len(q) == 4


def test_ring_wraps_around_its_capacity():
    q = CommandQueue(3)
    seen = []
    for round_index in range(5):
        for k in range(2):
            q.push(CommandKind.NOTE_ON, a=float(2 * round_index + k))
        seen.extend(q.pop_all_ref()["a"].tolist())
    assert seen == [float(v) for v in range(10)]


def test_concurrent_producers_lose_nothing_below_capacity():
    q = CommandQueue(4000)

    def produce(base):
        for k in range(1000):
            q.push(CommandKind.NOTE_ON, a=base + k)

    threads = [threading.Thread(target=produce, args=(1000 * t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = q.pop_all_ref()
    assert sorted(out["a"].tolist()) == [float(v) for v in range(3000)]
    assert sorted(out["seq"].tolist()) == list(range(3000))


def test_bad_channel_is_a_clear_error():
    assert channel_slot(-1) == 0 and channel_slot(15) == 16
    with pytest.raises(ValueError, match="channel"):
        channel_slot(16)


def test_due_order_sorts_by_effective_frame_then_arrival():
    rng = np.random.default_rng(0)
    pending = np.zeros(40, dtype=COMMAND_DTYPE)
    pending["frame"] = rng.choice([-1, 5, 90, 100, 130, 300, 400], size=40)
    pending["seq"] = rng.permutation(40)
    block_start, block_end = 100, 356
    order = pending_order_ref(pending, block_start, block_end)
    oracle = sorted((max(int(f), block_start), int(s), i) for i, (f, s) in
                    enumerate(zip(pending["frame"], pending["seq"])) if max(f, block_start) < block_end)
    assert order.tolist() == [i for _, _, i in oracle]


def test_a_follower_reads_every_record_in_order_beside_the_kernel():
    q = CommandQueue(8)
    follower = EventFollower(q)
    q.push(CommandKind.NOTE_ON, 10, 2, 7, 60.0, 90.0, held_id=7, posted=256)
    q.push(CommandKind.NOTE_OFF_ID, -1, -1, 7, b=np.nan, held_id=-1, posted=512, skip_kernel=True)
    assert len(q.pop_all_ref()) == 2  # the kernel's read does not move the follower
    first = follower.drain()
    assert list(first["kind"]) == [CommandKind.NOTE_ON, CommandKind.NOTE_OFF_ID]
    assert list(first["held_id"]) == [7, -1] and list(first["posted"]) == [256, 512]
    assert list(first["skip_kernel"]) == [0, 1] and np.isnan(first[1]["b"])
    assert len(follower.drain()) == 0 and follower.missed == 0


def test_a_follower_a_whole_ring_behind_skips_what_was_overwritten_and_counts_it():
    q = CommandQueue(4)
    follower = EventFollower(q)
    for k in range(10):  # the kernel keeps up; the follower does not
        assert q.push(CommandKind.NOTE_ON, a=float(k))
        q.pop_all_ref()
    records = follower.drain()
    assert records["a"].tolist() == [7.0, 8.0, 9.0]  # the slot after them may be being rewritten
    assert follower.missed == 7
    q.push(CommandKind.PANIC)
    assert list(follower.drain()["kind"]) == [CommandKind.PANIC] and follower.missed == 7
