"""The OSC server's per-source bookkeeping, without sockets: buckets, reply credit, dated bounds."""
from rt_engine.osc.osc_guard import DatedBook, GuardConfig, SourceTable, TokenBucket, clip_text

CONFIG = GuardConfig(rate_per_s=10.0, burst=5.0, reply_ratio=4.0, reply_allowance_bytes=100.0,
                     reply_refill_bytes_per_s=50.0, reply_credit_cap_bytes=1000.0, max_dated_per_source=3,
                     max_dated_total=4, max_sources=2)


def test_token_bucket_grants_the_burst_then_the_rate():
    bucket = TokenBucket(10.0, 5.0, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(20)) == 5
    assert sum(bucket.take(1.0) for _ in range(20)) == 5  # refilled to the burst, not beyond
    assert bucket.take(1.05) is False and bucket.take(1.1) is True


def test_reply_credit_is_a_multiple_of_what_was_received_plus_a_refilling_allowance():
    source = SourceTable(CONFIG).get(("udp", "127.0.0.1", 1), now=0.0)
    assert source.spend(100, CONFIG, 0.0) and not source.spend(1, CONFIG, 0.0)
    source.received(10, CONFIG, 0.0)
    assert source.spend(40, CONFIG, 0.0) and not source.spend(1, CONFIG, 0.0)
    assert source.spend(50, CONFIG, 1.0) and not source.spend(1, CONFIG, 1.0)  # 1 s of refill
    source.received(10_000, CONFIG, 2.0)
    assert source.credit == CONFIG.reply_credit_cap_bytes


def test_the_source_table_forgets_the_least_recently_seen():
    table = SourceTable(CONFIG)
    a = table.get(("a",), 0.0)
    table.get(("b",), 0.0)
    assert table.get(("a",), 1.0) is a
    table.get(("c",), 2.0)
    assert table.find(("b",)) is None and table.find(("a",)) is a and len(table) == 2


def test_dated_commands_are_bounded_per_source_and_in_total_and_expire():
    table, book = SourceTable(GuardConfig(max_sources=8)), DatedBook(CONFIG)
    one, two = table.get(("one",), 0.0), table.get(("two",), 0.0)
    for frame in (100, 200, 300):
        assert book.admits(one, now_frame=0) is None
        book.add(one, frame)
    assert "from this client" in book.admits(one, now_frame=0)
    book.add(two, 400)
    assert "schedule is full" in book.admits(two, now_frame=0)
    assert book.admits(one, now_frame=250) is None and len(book) == 2  # 100 and 200 have played
    book.clear(table.values())
    assert len(book) == 0 and one.dated == [] and two.dated == []


def test_clip_text_marks_what_it_cut():
    assert clip_text("short", 10) == "short"
    assert clip_text("x" * 50, 10) == "xxxxxxx..." and len(clip_text("y" * 500, 160)) == 160
