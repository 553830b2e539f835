"""The store and the decider on a real SQLite file: dedup, edits, stable dates, WAL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from aggregator.decide import Match, Verdict, decide, pick_match
from aggregator.models import ArticleDraft, Source, Validators
from aggregator.normalize import dedup_keys
from aggregator.pipeline import article_uid
from aggregator.store import SCHEMA_VERSION, Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
A = Source(name="A", url="https://a.example/feed", category="news", channel=None, interval=900)
B = Source(name="B", url="https://b.example/feed", category="news", channel="wire", interval=900)


def draft(src: Source, guid: str, *, title="Title", body="<p>Body text of the story.</p>", link=None, date=T0, h=None):
    text = body.replace("<p>", "").replace("</p>", "")
    return ArticleDraft(
        source=src.name, category=src.category, channel=src.channel, guid=guid, link=link, title=title,
        author=src.name, date=date, image=None, body_html=body, summary=text[:50],
        dedup_keys=dedup_keys(src, guid, link, title, text), content_hash=h or f"{title}|{body}|{link}|{date}",
        text_len=len(text),
    )


def name_post(title, date, uid):
    return f"{date:%Y-%m-%d}-{uid[:10]}.md"


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "db" / "a.db") as s:
        yield s


def apply(store, drafts, now=T0, **kwargs):
    return store.apply(drafts, now=now, name_post=name_post, uid_of=article_uid, **kwargs)


def test_decider_table():
    m = lambda kind, src="A", h="h1": Match(article_id=1, source=src, content_hash=h, key_kind=kind)  # noqa: E731
    assert decide("A", "h1", None) is Verdict.NEW
    assert decide("A", "h1", m("g")) is Verdict.UNCHANGED
    assert decide("A", "h2", m("g")) is Verdict.UPDATE
    assert decide("A", "h2", m("l", src="B")) is Verdict.DUPLICATE
    assert decide("A", "h1", m("t", src="B")) is Verdict.DUPLICATE
    strong = pick_match([Match(5, "B", "x", "t"), Match(9, "A", "y", "g"), Match(2, "B", "z", "l")])
    assert strong.key_kind == "g"
    assert pick_match([Match(7, "B", "x", "l"), Match(3, "C", "x", "l")]).article_id == 3


def test_wal_and_schema(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8


def test_migration_from_schema_1_keeps_data(tmp_path):
    path = tmp_path / "old.db"
    with Store(path) as s:
        apply(s, [draft(A, "1")])
        s.record_success("A", A.url, now=T0, validators=Validators(etag='"e"'), body_hash="h")
        # make it look like a database written by schema 1
        for column in ("next_poll", "moved_to", "ttl_minutes", "update_period", "update_frequency"):
            s.db.execute(f"ALTER TABLE sources DROP COLUMN {column}")
        for column in ("date_note", "text_len", "simhash"):
            s.db.execute(f"ALTER TABLE articles DROP COLUMN {column}")
        for column in ("polls_total", "errors_total", "served_by"):
            s.db.execute(f"ALTER TABLE sources DROP COLUMN {column}")
        s.db.execute("ALTER TABLE articles DROP COLUMN fulltext")
        for table in ("article_sources", "article_versions", "near_keys", "meta", "outputs", "pending_posts", "pages",
                      "rsshub_instances"):
            s.db.execute(f"DROP TABLE {table}")
        s.db.execute("CREATE TABLE near_keys (band TEXT, article_id INTEGER)")  # the schema-4 shape
        s.db.execute("PRAGMA user_version = 1")
    with Store(path) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        st = s.source_state("A")
        assert st.validators.etag == '"e"' and st.next_poll is None and st.articles == 1
        assert s.all_articles()[0].date_note == "item"
        assert s.all_articles()[0].sources == (("A", None),)  # the first copy is backfilled
        assert [(x.polls_total, x.errors_total) for x in s.stats(T0).sources] == [(0, 0)]
        assert s.outputs() == {} and s.meta() == {}
        assert s.instance_health() == [] and s.cached_pages(["https://x.example/"], since=T0) == {}
        assert s.fulltext_note(s.all_articles()[0].id) is None


def test_counters_meta_outputs_and_stats(store):
    from aggregator.models import OutputState

    apply(store, [draft(A, "1"), draft(A, "2", title="Other", body="<p>Different text.</p>")])
    store.record_success("A", A.url, now=T0, validators=Validators(), body_hash="h")
    store.record_failure("A", A.url, now=T0 + timedelta(minutes=5), kind="timeout", message="slow")
    store.record_success("A", A.url, now=T0 + timedelta(minutes=10), validators=Validators(), body_hash=None)
    store.record_failure("B", "https://b.example/feed", now=T0, kind="http-5xx", message="HTTP 503")
    store.set_meta(last_cycle_at="2021-11-10T12:00:00Z", last_cycle_seconds=1.25)
    store.set_meta(last_cycle_seconds=0.5)
    store.record_outputs(
        [OutputState(path="all", signature="s1", items=2, updated=T0),
         OutputState(path="category/x", signature="s2", items=0)],
        [("category/y", "category/y.rss.xml: bad date")], [], T0)
    stats = store.stats(T0 + timedelta(hours=1))
    by_name = {x.name: x for x in stats.sources}
    assert (by_name["A"].polls_total, by_name["A"].errors_total, by_name["A"].state) == (3, 1, "ok")
    assert (by_name["B"].polls_total, by_name["B"].errors_total, by_name["B"].state) == (1, 1, "failing")
    assert by_name["A"].articles == 2 and by_name["A"].last_success == T0 + timedelta(minutes=10)
    assert stats.articles_total == 2 and stats.articles_by_category == ((A.category, 2),)
    assert stats.last_cycle_at == datetime(2021, 11, 10, 12, tzinfo=timezone.utc)
    assert stats.last_cycle_seconds == 0.5 and stats.last_publish_at is None
    assert stats.published_pages == 2 and stats.publish_errors == (("category/y", "category/y.rss.xml: bad date"),)
    outputs = store.outputs()
    assert outputs["all"].signature == "s1" and outputs["all"].updated == T0 and outputs["all"].published == T0
    assert outputs["category/y"].signature is None and outputs["category/y"].error.endswith("bad date")
    # a later success clears the refusal; a page that is gone is forgotten
    store.record_outputs([OutputState(path="category/y", signature="s3", items=1)], [], ["category/x"], T0)
    outputs = store.outputs()
    assert outputs["category/y"].error is None and outputs["category/y"].signature == "s3"
    assert "category/x" not in outputs


def test_new_then_unchanged_then_update(store):
    r = apply(store, [draft(A, "1"), draft(A, "2", title="Other", body="<p>Different text.</p>")])
    assert len(r.new) == 2 and not r.updated
    r = apply(store, [draft(A, "1"), draft(A, "2", title="Other", body="<p>Different text.</p>")])
    assert not r.new and not r.updated and r.unchanged == 2
    edited = draft(A, "1", body="<p>Body text of the story, corrected.</p>")
    r = apply(store, [edited], now=T0 + timedelta(hours=1))
    assert not r.new and len(r.updated) == 1
    art = r.updated[0]
    assert art.body_html == edited.body_html
    assert art.updated == T0 + timedelta(hours=1) and art.first_seen == T0
    assert store.article_count() == 2


def test_identity_is_stable_across_edits(store):
    first = apply(store, [draft(A, "1")]).new[0]
    again = apply(store, [draft(A, "1", title="Retitled", body="<p>Rewritten.</p>")], now=T0 + timedelta(days=1)).updated[0]
    assert (again.id, again.uid, again.post_name, again.feed_id) == (first.id, first.uid, first.post_name, first.feed_id)
    assert again.title == "Retitled"


def test_same_link_from_another_source_is_a_duplicate(store):
    apply(store, [draft(A, "a1", link="https://site.example/story?id=7")])
    r = apply(store, [draft(B, "b1", title="Other title", body="<p>Other body</p>", link="https://site.example/story?id=7&utm_source=rss#top")])
    assert not r.new and r.duplicates == 1
    assert store.article_count() == 1


def test_same_title_and_text_in_category_is_a_duplicate(store):
    apply(store, [draft(A, "a1", title="Big News", body="<p>The same wire copy.</p>")])
    r = apply(store, [draft(B, "b9", title="big  news", body="<p>The same\nwire copy.</p>")])
    assert r.duplicates == 1 and store.article_count() == 1
    other_cat = Source(name="C", url="https://c/", category="sport", channel=None, interval=900)
    r = apply(store, [draft(other_cat, "c1", title="Big News", body="<p>The same wire copy.</p>")])
    assert len(r.new) == 1  # text identity is per category


def test_same_title_without_text_is_not_merged(store):
    r = apply(store, [draft(A, "1", title="Daily notes", body=""), draft(A, "2", title="Daily notes", body="")])
    assert len(r.new) == 2


def test_undated_article_keeps_first_seen_date(store):
    r = apply(store, [draft(A, "x", date=None)], now=T0)
    assert r.new[0].date == T0
    later = T0 + timedelta(days=3)
    apply(store, [draft(A, "x", date=None)], now=later)
    r = apply(store, [draft(A, "x", date=None, body="<p>edited</p>")], now=later)
    assert r.updated[0].date == T0


def test_source_health_is_recorded(store):
    store.record_failure("A", A.url, now=T0, kind="http", message="HTTP 500 from https://a.example/feed")
    store.record_failure("A", A.url, now=T0, kind="timeout", message="timed out")
    st = store.source_state("A")
    assert (st.state, st.error_count, st.last_error_kind, st.last_error) == ("failing", 2, "timeout", "timed out")
    store.record_success("A", A.url, now=T0, validators=Validators(etag='"v1"'), body_hash="abc", title="Feed A")
    st = store.source_state("A")
    assert (st.state, st.error_count, st.last_error, st.validators.etag, st.body_hash, st.title) == ("ok", 0, None, '"v1"', "abc", "Feed A")
    store.record_success("A", A.url, now=T0, validators=Validators(etag='"v1"'), body_hash=None)
    assert store.source_state("A").body_hash == "abc"  # a 304 keeps the last body's hash


def test_newest_by_category_order_and_limit(store):
    apply(store, [draft(A, str(i), title=f"t{i}", body=f"<p>body {i}</p>", date=T0 + timedelta(hours=i)) for i in range(5)])
    groups = store.newest_by_category(3)
    assert [a.title for a in groups["news"]] == ["t4", "t3", "t2"]


def test_forget_source(store):
    apply(store, [draft(A, "1"), draft(B, "2", title="b", body="<p>bb</p>")])
    gone = store.forget_source("A")
    assert [a.source for a in gone] == ["A"]
    assert store.article_count() == 1
    assert apply(store, [draft(A, "1")]).new  # its keys went with it


def test_two_connections_write_without_locking_errors(tmp_path):
    path = tmp_path / "shared.db"
    Store(path).close()
    errors = []

    def writer(src, n):
        try:
            with Store(path) as s:
                for i in range(n):
                    s.apply([draft(src, f"{src.name}{i}", title=f"{src.name}{i}", body=f"<p>{src.name} {i}</p>")], now=T0, name_post=name_post, uid_of=article_uid)
                    s.record_success(src.name, src.url, now=T0, validators=Validators(), body_hash=str(i))
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(src, 40)) for src in (A, B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store(path) as s:
        assert s.article_count() == 80


# -- issue 5: merges, versions, the edit cap ---------------------------------------------


def test_duplicate_from_another_source_is_merged_keeping_earliest_date_and_fullest_body(store):
    first = apply(store, [draft(A, "a1", title="Story", body="<p>Short wire copy.</p>", link="https://x.example/s", date=T0)]).new[0]
    fuller = draft(B, "b1", title="Story", body="<p>Short wire copy, with a longer second paragraph added.</p>",
                   link="https://x.example/s?utm_source=b", date=T0 - timedelta(hours=2))
    r = apply(store, [fuller], now=T0 + timedelta(hours=1))
    assert r.duplicates == 1 and [a.id for a in r.updated] == [first.id]
    art = r.updated[0]
    assert art.date == T0 - timedelta(hours=2) and "earliest" in art.date_note
    assert art.body_html == fuller.body_html
    assert [name for name, _ in art.sources] == ["A", "B"]
    assert store.article_count() == 1
    assert [v[0] for v in store.article_versions(first.id)] == [first.content_hash]


def test_a_shorter_later_copy_only_adds_its_source(store):
    first = apply(store, [draft(A, "a1", body="<p>The full and long story text.</p>", link="https://x.example/s")]).new[0]
    r = apply(store, [draft(B, "b1", body="<p>Short.</p>", link="https://x.example/s", date=T0 + timedelta(hours=1))])
    assert not r.updated and list(r.merged) == [first.id]
    (after,) = store.articles_by_id(r.merged)
    assert after.body_html == first.body_html and after.date == first.date
    assert [name for name, _ in after.sources] == ["A", "B"]
    (bare,) = store.articles_by_id(r.merged, sources=False)  # what publishing loads
    assert bare.sources == () and bare.body_html == after.body_html
    again = apply(store, [draft(B, "b1", body="<p>Short.</p>", link="https://x.example/s", date=T0 + timedelta(hours=1))])
    assert not again.merged and again.duplicates == 1  # the same copy twice: nothing to do
    log = store.article_sources(first.id)
    assert [(e["source"], e["matched"]) for e in log] == [("A", "first"), ("B", "l")]


def test_edit_cap_stops_churn_and_keeps_versions(store):
    apply(store, [draft(A, "x", body="<p>v0</p>")])
    outcomes = []
    for i in range(1, 8):
        r = apply(store, [draft(A, "x", body=f"<p>v{i}</p>")], now=T0 + timedelta(hours=i), max_edits_per_day=3)
        outcomes.append((len(r.updated), r.capped))
    assert outcomes[:3] == [(1, 0)] * 3 and outcomes[3:] == [(0, 1)] * 4
    art = store.all_articles()[0]
    assert art.body_html == "<p>v3</p>" and len(store.article_versions(art.id)) == 3
    # a day later, edits flow again
    r = apply(store, [draft(A, "x", body="<p>v9</p>")], now=T0 + timedelta(days=2), max_edits_per_day=3)
    assert len(r.updated) == 1


def test_find_articles(store):
    art = apply(store, [draft(A, "guid-1", link="https://x.example/s")]).new[0]
    apply(store, [draft(B, "b-guid", link="https://x.example/s")])
    for needle in (art.uid, art.uid[:10], art.post_name, "https://x.example/s", "guid-1", "b-guid"):
        assert [a.id for a in store.find_articles(needle)] == [art.id], needle
    assert store.find_articles("nothing-like-it") == []


def test_readonly_store_never_creates_migrates_or_writes(tmp_path):
    from aggregator.errors import StoreError

    missing = tmp_path / "none" / "aggregator.db"
    with pytest.raises(StoreError, match="read-only"):
        Store(missing, readonly=True)
    assert not missing.parent.exists()

    path = tmp_path / "a.db"
    with Store(path) as s:
        apply(s, [draft(A, "1")])
    with Store(path, readonly=True) as ro:
        assert ro.stats(T0).articles_total == 1
        with pytest.raises(StoreError):
            ro.set_meta(last_cycle_at="2021-11-10T12:00:00Z")
    with Store(path) as s:
        assert s.meta() == {"publish_pending": "1"}  # the apply owes a post; nothing else was written
        s.db.execute("PRAGMA user_version = 5")  # as an older aggregator left it
    before = path.read_bytes()
    with pytest.raises(StoreError, match="schema 5"):
        Store(path, readonly=True)
    assert path.read_bytes() == before


def test_to_iso_is_utc_seconds_with_z_for_every_year():
    """to_iso writes what strftime("%Y-%m-%dT%H:%M:%SZ") of the UTC time writes (the
    stored format), years before 1000 included."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from aggregator.store import from_iso, to_iso

    zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-12))])

    @settings(max_examples=500, deadline=None)
    @given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones))
    def check(dt):
        text = to_iso(dt)
        assert text == dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if dt.astimezone(timezone.utc).year >= 1000:
            assert from_iso(text) == dt.replace(microsecond=0)

    check()
