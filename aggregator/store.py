"""SQLite storage: the only module that imports sqlite-utils or writes SQL.

Owns: the schema and its migrations (``PRAGMA user_version``), each source's fetch state
(validators, body hash, health), articles and their dedup keys, and turning drafts into
stored articles in one short ``BEGIN IMMEDIATE`` transaction per source (WAL mode: a
deferred read-then-write transaction fails at once with "database is locked" when another
connection committed in between — HAZARDS.md).
Must not: fetch, parse, clean, or format output. It returns ``models`` values, never rows.

Dedup: every article owns a set of keys (``article_keys``); a draft is looked up by its
keys and ``decide.decide`` says new / update / unchanged / duplicate. Keys seen on a
duplicate or an edit are added as aliases, so the next poll finds the article directly.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path


from .decide import Match, Verdict, decide, edit_allowed, merge_changes, pick_match
from .errors import StoreError
from .models import ArticleDraft, ArticleRef, OutputState, SourceStats, Stats, StoredArticle, Validators

SCHEMA_VERSION = 8

_ARTICLE_COLUMNS = (
    "id, uid, source, category, channel, guid, link, title, author, date, image, body_html,"
    " summary, content_hash, first_seen, updated, post_name, date_note"
)


def to_iso(dt: datetime) -> str:
    utc = dt.astimezone(timezone.utc)
    if utc.year < 1000:  # strftime's %Y does not pad; isoformat would
        return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return utc.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def from_iso(text: str) -> datetime:
    """The datetime ``to_iso`` wrote. ``fromisoformat`` (C) rather than ``strptime`` (a
    Python regex engine per call, ~4 µs): a publish reads every article's dates."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"not a UTC timestamp: {text!r}")
    return value


@dataclass(frozen=True)
class SourceState:
    """What the fetcher and the decider need to know about a source's last polls."""

    name: str
    url: str | None = None
    validators: Validators = Validators()
    body_hash: str | None = None
    state: str = "new"  # new | ok | failing
    error_count: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    title: str | None = None
    articles: int = 0
    next_poll: datetime | None = None  # None: due now (never polled) or never again (gone)
    moved_to: str | None = None  # where a 301/308 sent us; fetched instead of the config URL
    ttl_minutes: int | None = None
    update_period: str | None = None
    update_frequency: int | None = None
    served_by: str | None = None  # the RSSHub instance that last answered (an rsshub:// source)

    @property
    def fetch_url(self) -> str | None:
        return self.moved_to or self.url


@dataclass(frozen=True)
class ApplyResult:
    new: tuple[StoredArticle, ...]
    updated: tuple[StoredArticle, ...]
    unchanged: int
    duplicates: int
    merged: tuple[int, ...] = ()  # ids of articles whose list of sources only grew: posts owed
    capped: int = 0  # edits refused by the per-day edit cap
    expired: int = 0  # items of articles removed by retention: not republished


# category -> (near-duplicate search on?, max Hamming distance, time window)
NearPolicy = Callable[[str], tuple[bool, int, timedelta]]


def _signed(fp: int | None) -> int | None:
    """SQLite integers are signed 64-bit."""
    from .similarity import to_sqlite

    return None if fp is None else to_sqlite(fp)


def _unsigned(v: int) -> int:
    from .similarity import from_sqlite

    return from_sqlite(v)


def _bands(fp: int) -> list[str]:
    from .similarity import band_keys

    return band_keys(fp)


class Store:
    def __init__(self, path: str | Path, *, readonly: bool = False):
        """``readonly``: for readers that must never write (the HTTP server's /healthz and
        /metrics): the file is opened ``mode=ro``, never created or migrated; a database
        of another schema version is refused (StoreError) rather than upgraded."""
        self.path = Path(path)
        self._db = None
        if readonly:
            self._open_readonly()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves (short write
            # transactions); check_same_thread=False because the daemon hands one store
            # to whichever worker thread runs a job, never to two at once.
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            self.conn = conn
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = wal")  # persistent: set once per file
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL, much faster
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open database: {e}") from e

    def _open_readonly(self) -> None:
        from urllib.parse import quote

        try:
            conn = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True, timeout=30,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            self.conn = conn
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open database read-only: {e}") from e
        if version != SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"{self.path}: database schema {version}, this aggregator reads {SCHEMA_VERSION}"
                             " (run any aggregator command once to upgrade it)")

    @property
    def db(self):
        """sqlite-utils over our connection, for the schema (tables, columns, indexes) and
        for tests. Made on first use: queries go to ``self.conn`` directly, so a poll
        whose database is up to date never imports sqlite-utils (and dateutil): a tenth
        of a warm cycle's start-up."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    # -- schema -----------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema {version} is newer than this aggregator ({SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version < 1:
                self.db["sources"].create(
                    {
                        "name": str, "url": str, "etag": str, "last_modified": str, "body_hash": str,
                        "state": str, "error_count": int, "last_error": str, "last_error_kind": str,
                        "last_attempt": str, "last_success": str, "title": str,
                    },
                    pk="name",
                    not_null={"state", "error_count"},
                    defaults={"state": "new", "error_count": 0},
                )
                self.db["articles"].create(
                    {
                        "id": int, "uid": str, "source": str, "category": str, "channel": str,
                        "guid": str, "link": str, "title": str, "author": str, "date": str,
                        "image": str, "body_html": str, "summary": str, "content_hash": str,
                        "first_seen": str, "updated": str, "post_name": str,
                    },
                    pk="id",
                    not_null={"uid", "source", "category", "guid", "title", "date", "body_html", "content_hash", "first_seen", "updated", "post_name"},
                )
                self.db["articles"].create_index(["uid"], unique=True)
                self.db["articles"].create_index(["post_name"], unique=True)
                self.db["articles"].create_index(["category", "date"])
                self.db["articles"].create_index(["source"])
                self.db["article_keys"].create(
                    {"key": str, "article_id": int}, pk="key", foreign_keys=[("article_id", "articles", "id")]
                )
                self.db["article_keys"].create_index(["article_id"])
            if version < 2:
                # issue 3: poll scheduling kept here, so a restart during a backoff does not
                # hit the origin early; 301/308 targets; the feed's own refresh hints.
                for column, kind in (("next_poll", str), ("moved_to", str), ("ttl_minutes", int),
                                     ("update_period", str), ("update_frequency", int)):
                    self.db["sources"].add_column(column, kind)
            if version < 3:
                # issue 4: why an article has its date (item, or first seen because ...)
                self.db["articles"].add_column("date_note", str, not_null_default="item")
            if version < 4:
                # issue 5: every source an article came from, its previous versions, and
                # what the near-duplicate search needs.
                self.db["articles"].add_column("text_len", int, not_null_default=0)
                self.db["articles"].add_column("simhash", int)
                self.db["article_sources"].create(
                    {"article_id": int, "source": str, "guid": str, "link": str, "matched": str,
                     "score": float, "seen": str},
                    pk=("article_id", "source", "guid"),
                    foreign_keys=[("article_id", "articles", "id")],
                )
                self.db["article_versions"].create(
                    {"article_id": int, "content_hash": str, "replaced": str},
                    foreign_keys=[("article_id", "articles", "id")],
                )
                self.db["article_versions"].create_index(["article_id", "replaced"])
                conn.execute(
                    "INSERT INTO article_sources (article_id, source, guid, link, matched, score, seen)"
                    " SELECT id, source, guid, link, 'first', 1.0, first_seen FROM articles"
                )
            if version < 5:
                # near_keys carries the date and fingerprint, WITHOUT ROWID: the band lookup
                # is one covering index range per band, filtered by the window in SQL
                # (at 1,000,000 articles the join-then-filter form read ~1,260 rows a lookup).
                conn.execute("DROP TABLE IF EXISTS near_keys")
                conn.execute(
                    "CREATE TABLE near_keys (band TEXT NOT NULL, date TEXT NOT NULL, simhash INTEGER NOT NULL,"
                    " article_id INTEGER NOT NULL, PRIMARY KEY (band, date, article_id)) WITHOUT ROWID"
                )
                conn.execute("CREATE INDEX near_keys_article ON near_keys (article_id)")
                for article_id, category, date, simhash in conn.execute(
                    "SELECT id, category, date, simhash FROM articles WHERE simhash IS NOT NULL"
                ).fetchall():
                    self._index_near(article_id, category, date, simhash)
            if version < 6:
                # issue 6: counters for /metrics, cycle and publish times for /healthz and
                # status, and what was last published per output page (incremental
                # publishing, validation errors).
                self.db["sources"].add_column("polls_total", int, not_null_default=0)
                self.db["sources"].add_column("errors_total", int, not_null_default=0)
                self.db["meta"].create({"key": str, "value": str}, pk="key")
                self.db["outputs"].create(
                    {"path": str, "signature": str, "items": int, "updated": str, "published": str,
                     "error": str, "error_at": str},
                    pk="path",
                )
            if version < 7:
                # post files owed by committed changes: written in the same transaction as
                # the articles, deleted once the file is on disk, so a kill between the
                # commit and the write is repaired by the next publish (not only "missing"
                # files: an edited article's old file exists but is stale).
                conn.execute("CREATE TABLE pending_posts (article_id INTEGER PRIMARY KEY)")
            if version < 8:
                # issue 9: why an article's body is (not) its page's full text; extracted
                # pages by URL (an article page is fetched once, not on every poll); the
                # RSSHub instance that last answered a route (its validators are its own);
                # each RSSHub instance's health.
                self.db["articles"].add_column("fulltext", str)
                self.db["sources"].add_column("served_by", str)
                self.db["pages"].create(
                    {"url": str, "fetched": str, "status": int, "final_url": str, "error": str, "html": str,
                     "text": str, "method": str, "page_title": str, "page_text": str, "markers": str},
                    pk="url",
                )
                self.db["pages"].create_index(["fetched"])
                self.db["rsshub_instances"].create(
                    {"url": str, "last_success": str, "last_failure": str, "failures": int, "last_error": str,
                     "next_try": str},
                    pk="url", not_null={"failures"}, defaults={"failures": 0},
                )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self):
        return _Immediate(self.conn, self.path)

    # -- sources ----------------------------------------------------------------------

    def source_state(self, name: str) -> SourceState:
        row = self.conn.execute(
            "SELECT name, url, etag, last_modified, body_hash, state, error_count, last_error,"
            " last_error_kind, last_attempt, last_success, title, next_poll, moved_to, ttl_minutes,"
            " update_period, update_frequency,"
            " (SELECT count(*) FROM articles a WHERE a.source = s.name), served_by"
            " FROM sources s WHERE name = ?",
            [name],
        ).fetchone()
        if row is None:
            count = self.conn.execute("SELECT count(*) FROM articles WHERE source = ?", [name]).fetchone()[0]
            return SourceState(name=name, articles=count)
        return _source_state(row)

    def source_states(self) -> dict[str, SourceState]:
        rows = self.conn.execute(
            "SELECT name, url, etag, last_modified, body_hash, state, error_count, last_error,"
            " last_error_kind, last_attempt, last_success, title, next_poll, moved_to, ttl_minutes,"
            " update_period, update_frequency,"
            " (SELECT count(*) FROM articles a WHERE a.source = s.name), served_by FROM sources s"
        ).fetchall()
        states = {r[0]: _source_state(r) for r in rows}
        for name, count in self.conn.execute("SELECT source, count(*) FROM articles GROUP BY source"):
            if name not in states:
                states[name] = SourceState(name=name, articles=count)
        return states

    _SUCCESS_SQL = (
        "INSERT INTO sources (name, url, etag, last_modified, body_hash, state, error_count,"
        " last_error, last_error_kind, last_attempt, last_success, title, next_poll, moved_to,"
        " ttl_minutes, update_period, update_frequency, polls_total, served_by)"
        " VALUES (?, ?, ?, ?, ?, 'ok', 0, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)"
        " ON CONFLICT(name) DO UPDATE SET url = excluded.url, etag = excluded.etag,"
        " last_modified = excluded.last_modified,"
        " body_hash = coalesce(excluded.body_hash, sources.body_hash), state = 'ok', error_count = 0,"
        " last_error = NULL, last_error_kind = NULL, last_attempt = excluded.last_attempt,"
        " polls_total = sources.polls_total + 1,"
        " last_success = excluded.last_success, title = coalesce(excluded.title, sources.title),"
        " next_poll = excluded.next_poll, moved_to = coalesce(excluded.moved_to, sources.moved_to),"
        " served_by = coalesce(excluded.served_by, sources.served_by),"
        " ttl_minutes = CASE WHEN ? THEN excluded.ttl_minutes ELSE sources.ttl_minutes END,"
        " update_period = CASE WHEN ? THEN excluded.update_period ELSE sources.update_period END,"
        " update_frequency = CASE WHEN ? THEN excluded.update_frequency ELSE sources.update_frequency END"
    )

    @staticmethod
    def _success_params(
        name: str, url: str, *, now: datetime, validators: Validators,
        body_hash: str | None, title: str | None = None, next_poll: datetime | None = None,
        moved_to: str | None = None, hints: tuple[int | None, str | None, int | None] | None = None,
        served_by: str | None = None,
    ) -> list:
        ttl, period, freq = hints or (None, None, None)
        return [name, url, validators.etag, validators.last_modified, body_hash, to_iso(now), to_iso(now), title,
                to_iso(next_poll) if next_poll else None, moved_to, ttl, period, freq, served_by,
                hints is not None, hints is not None, hints is not None]

    def record_success(self, name: str, url: str, **kw) -> None:
        """A fetch that worked (200 or 304): validators kept, health reset. Keywords:
        ``now``, ``validators``, ``body_hash``, ``title``, ``next_poll``, ``moved_to``,
        ``hints`` — the feed's (ttl, sy:updatePeriod, sy:updateFrequency), given when a
        body was parsed; ``served_by`` — the RSSHub instance that answered."""
        self.record_successes([(name, url, kw)])

    def record_successes(self, records: Sequence[tuple[str, str, dict]]) -> None:
        """Several ``record_success`` in one transaction: a warm cycle of 304s costs one
        commit, not one per source. Each record is (name, url, keywords)."""
        if not records:
            return
        with self._write():
            for name, url, kw in records:
                self.conn.execute(self._SUCCESS_SQL, self._success_params(name, url, **kw))

    def record_failure(
        self, name: str, url: str, *, now: datetime, kind: str, message: str,
        next_poll: datetime | None = None, gone: bool = False,
    ) -> None:
        """A failed poll: counted and kept with its message; nothing stored is touched.
        ``gone`` (HTTP 410) stops polling for good; the articles stay published."""
        state = "gone" if gone else "failing"
        with self._write():
            self.conn.execute(
                "INSERT INTO sources (name, url, state, error_count, last_error, last_error_kind, last_attempt, next_poll,"
                " polls_total, errors_total)"
                " VALUES (?, ?, ?, 1, ?, ?, ?, ?, 1, 1)"
                " ON CONFLICT(name) DO UPDATE SET url = excluded.url, state = excluded.state,"
                " error_count = sources.error_count + 1, last_error = excluded.last_error,"
                " polls_total = sources.polls_total + 1, errors_total = sources.errors_total + 1,"
                " last_error_kind = excluded.last_error_kind, last_attempt = excluded.last_attempt,"
                " next_poll = excluded.next_poll",
                [name, url, state, message, kind, to_iso(now), to_iso(next_poll) if next_poll else None],
            )

    def reset_source(self, name: str, url: str) -> None:
        """The configured URL changed (or the operator asks): forget gone/moved/backoff."""
        with self._write():
            self.conn.execute(
                "UPDATE sources SET url = ?, state = CASE WHEN state = 'gone' THEN 'new' ELSE state END,"
                " moved_to = NULL, next_poll = NULL, etag = NULL, last_modified = NULL, body_hash = NULL"
                " WHERE name = ?",
                [url, name],
            )

    def expire(self, category: str, *, keep: int | None = None, older_than: datetime | None = None) -> list[StoredArticle]:
        """Retention: delete a category's articles beyond the newest ``keep`` or dated before
        ``older_than``, rows and all — but keep their dedup keys as tombstones (article_id
        NULL), so a story that comes back is not republished as new. Returns the deleted
        articles (their post files are the caller's to remove)."""
        if keep is not None:
            where = ("WHERE category = ? AND id NOT IN (SELECT id FROM articles WHERE category = ?"
                     " ORDER BY date DESC, id DESC LIMIT ?)")
            params: list = [category, category, keep]
        elif older_than is not None:
            where, params = "WHERE category = ? AND date < ?", [category, to_iso(older_than)]
        else:
            return []
        gone = self._select(where + " ORDER BY id", params)
        if not gone:
            return []
        with self._write():
            for i in range(0, len(gone), 500):
                ids = [a.id for a in gone[i : i + 500]]
                marks = ", ".join("?" * len(ids))
                self.conn.execute(f"UPDATE article_keys SET article_id = NULL WHERE article_id IN ({marks})", ids)
                for table in ("article_sources", "article_versions", "near_keys"):
                    self.conn.execute(f"DELETE FROM {table} WHERE article_id IN ({marks})", ids)
                self.conn.execute(f"DELETE FROM articles WHERE id IN ({marks})", ids)
        return gone

    def adopt_moved_url(self, name: str, url: str) -> None:
        """config.toml now says what the 301/308 said: keep validators and health."""
        with self._write():
            self.conn.execute("UPDATE sources SET url = ?, moved_to = NULL WHERE name = ?", [url, name])

    def forget_source(self, name: str) -> list[StoredArticle]:
        """Delete a source's state and articles; returns the deleted articles (their post
        files are the caller's to remove)."""
        articles = self._select("WHERE source = ? ORDER BY id", [name])
        owned = "(SELECT id FROM articles WHERE source = ?)"
        with self._write():
            for table in ("article_keys", "article_sources", "article_versions", "near_keys"):
                self.conn.execute(f"DELETE FROM {table} WHERE article_id IN {owned}", [name])
            # copies it contributed to other sources' articles: only the record of it goes
            self.conn.execute("DELETE FROM article_sources WHERE source = ?", [name])
            self.conn.execute("DELETE FROM articles WHERE source = ?", [name])
            self.conn.execute("DELETE FROM sources WHERE name = ?", [name])
        return articles

    # -- articles ---------------------------------------------------------------------

    def apply(
        self,
        drafts: Sequence[ArticleDraft],
        *,
        now: datetime,
        name_post: Callable[[str, datetime, str], str],
        uid_of: Callable[[ArticleDraft], str],
        near: NearPolicy | None = None,
        max_edits_per_day: int = 5,
    ) -> ApplyResult:
        """Store a feed's drafts in one transaction; decide each against what is known.

        ``name_post(title, date, uid)`` names a new article's post file (fixed at creation,
        so an edited title never orphans the old file); ``uid_of`` gives a new article's
        permanent id; ``near`` says, per category, whether and how near-duplicates are
        searched (None: exact keys only).
        """
        new: list[int] = []
        updated: list[int] = []
        merged: list[int] = []
        unchanged = duplicates = capped = expired = 0
        with self._write():
            for draft in drafts:
                matches = self._matches(draft.dedup_keys)
                if not matches and near is not None:
                    matches = self._near_matches(draft, near, now)
                match = pick_match(matches)
                if match is not None and match.key_kind == "x":
                    expired += 1
                    continue
                verdict = decide(draft.source, draft.content_hash, match)
                if verdict is Verdict.NEW:
                    article_id = self._insert(draft, now, name_post, uid_of)
                    new.append(article_id)
                else:
                    article_id = match.article_id
                    if verdict is Verdict.UPDATE:
                        if self._edit(article_id, draft, now, max_edits_per_day):
                            updated.append(article_id)
                        else:
                            capped += 1
                    elif verdict is Verdict.UNCHANGED:
                        unchanged += 1
                    else:
                        duplicates += 1
                        change = self._merge(article_id, draft, match, now)
                        if change == "content":
                            updated.append(article_id)
                        elif change == "sources":
                            merged.append(article_id)
                # Remember every identity this item arrived under (first owner keeps a key).
                self.conn.executemany(
                    "INSERT INTO article_keys (key, article_id) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                    [(k, article_id) for k in draft.dedup_keys],
                )
            owed = set(new + updated + merged)
            if owed:
                self.conn.executemany("INSERT OR IGNORE INTO pending_posts (article_id) VALUES (?)",
                                         [(i,) for i in sorted(owed)])
                self.conn.execute("INSERT INTO meta (key, value) VALUES ('publish_pending', '1')"
                                " ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        by_id = {a.id: a for a in self.articles_by_id(new + updated)}
        # An article appears once, under its strongest change: new > updated > merged.
        updated = [i for i in dict.fromkeys(updated) if i not in new]
        merged = [i for i in dict.fromkeys(merged) if i not in new and i not in updated]
        return ApplyResult(
            new=tuple(by_id[i] for i in new), updated=tuple(by_id[i] for i in updated),
            merged=tuple(merged),
            unchanged=unchanged + capped + expired, duplicates=duplicates, capped=capped, expired=expired,
        )

    def _insert(self, draft: ArticleDraft, now: datetime, name_post, uid_of) -> int:
        uid = uid_of(draft)
        date = draft.date or now
        now_s = to_iso(now)
        cur = self.conn.execute(
            f"INSERT INTO articles ({_ARTICLE_COLUMNS.replace('id, ', '', 1)}, text_len, simhash, fulltext)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                uid, draft.source, draft.category, draft.channel, draft.guid, draft.link,
                draft.title, draft.author, to_iso(date), draft.image, draft.body_html,
                draft.summary, draft.content_hash, now_s, now_s,
                self._free_post_name(name_post(draft.title, date, uid)), draft.date_note,
                draft.text_len, _signed(draft.fingerprint), draft.fulltext,
            ],
        )
        article_id = cur.lastrowid
        self._add_source(article_id, draft, "first", 1.0, now)
        if draft.fingerprint is not None:
            self._index_near(article_id, draft.category, to_iso(date), _signed(draft.fingerprint))
        return article_id

    def _index_near(self, article_id: int, category: str, date: str, simhash: int) -> None:
        self.conn.execute("DELETE FROM near_keys WHERE article_id = ?", [article_id])
        self.conn.executemany(
            "INSERT OR IGNORE INTO near_keys (band, date, simhash, article_id) VALUES (?, ?, ?, ?)",
            [(f"{category}\x00{band}", date, simhash, article_id) for band in _bands(_unsigned(simhash))],
        )

    def _add_source(self, article_id: int, draft: ArticleDraft, matched: str, score: float, now: datetime) -> bool:
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO article_sources (article_id, source, guid, link, matched, score, seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [article_id, draft.source, draft.guid, draft.link, matched, score, to_iso(now)],
        )
        return cur.rowcount > 0

    def _edit(self, article_id: int, draft: ArticleDraft, now: datetime, cap: int) -> bool:
        """The same item changed upstream: keep the previous version's hash, update in
        place — unless it already changed ``cap`` times in the last day."""
        recent = self.conn.execute(
            "SELECT count(*) FROM article_versions WHERE article_id = ? AND replaced > ?",
            [article_id, to_iso(now - timedelta(days=1))],
        ).fetchone()[0]
        if not edit_allowed(recent, cap):
            return False
        self.conn.execute(
            "INSERT INTO article_versions (article_id, content_hash, replaced)"
            " SELECT id, content_hash, ? FROM articles WHERE id = ?", [to_iso(now), article_id],
        )
        # An undated item keeps its first-seen date: only a real date moves it.
        self.conn.execute(
            "UPDATE articles SET guid = ?, link = ?, title = ?, date = coalesce(?, date),"
            " date_note = CASE WHEN ? IS NULL THEN date_note ELSE ? END,"
            " image = ?, body_html = ?, summary = ?, content_hash = ?, updated = ?, text_len = ?,"
            " simhash = coalesce(?, simhash), fulltext = ? WHERE id = ?",
            [
                draft.guid, draft.link, draft.title,
                to_iso(draft.date) if draft.date else None,
                to_iso(draft.date) if draft.date else None, draft.date_note, draft.image,
                draft.body_html, draft.summary, draft.content_hash, to_iso(now), draft.text_len,
                _signed(draft.fingerprint), draft.fulltext, article_id,
            ],
        )
        if draft.fingerprint is not None:
            category, date = self.conn.execute("SELECT category, date FROM articles WHERE id = ?", [article_id]).fetchone()
            self._index_near(article_id, category, date, _signed(draft.fingerprint))
        return True

    def _merge(self, article_id: int, draft: ArticleDraft, match: Match, now: datetime) -> str | None:
        """Another copy of a stored story: record its source; keep the earliest date and
        the fullest body. Returns "content" (body/date changed), "sources" (only the list
        of sources grew) or None."""
        added = self._add_source(article_id, draft, match.key_kind, match.score, now)
        date_s, text_len = self.conn.execute("SELECT date, text_len FROM articles WHERE id = ?", [article_id]).fetchone()
        earlier, fuller = merge_changes(from_iso(date_s), text_len, draft.date, draft.text_len)
        if earlier:
            self.conn.execute("UPDATE articles SET date = ?, date_note = ? WHERE id = ?",
                            [to_iso(draft.date), f"earliest of merged copies ({draft.source})", article_id])
        if fuller:
            self.conn.execute(
                "INSERT INTO article_versions (article_id, content_hash, replaced)"
                " SELECT id, content_hash, ? FROM articles WHERE id = ?", [to_iso(now), article_id],
            )
            self.conn.execute(
                "UPDATE articles SET body_html = ?, summary = ?, image = coalesce(image, ?), text_len = ?,"
                " content_hash = ?, updated = ? WHERE id = ?",
                [draft.body_html, draft.summary, draft.image, draft.text_len, draft.content_hash, to_iso(now), article_id],
            )
        if earlier or fuller:
            return "content"
        return "sources" if added else None

    def _near_matches(self, draft: ArticleDraft, near: NearPolicy, now: datetime) -> list[Match]:
        """Candidates sharing a SimHash band in the same category and dated within the
        window (one covering-index range per band, never a scan), scored by Hamming
        distance; the closest wins."""
        enabled, threshold, window = near(draft.category)
        if not enabled or draft.fingerprint is None:
            return []
        from .similarity import hamming

        anchor = draft.date or now
        bands = [f"{draft.category}\x00{b}" for b in _bands(draft.fingerprint)]
        rows = self.conn.execute(
            f"SELECT DISTINCT article_id, simhash FROM near_keys WHERE band IN ({', '.join('?' * len(bands))})"
            " AND date BETWEEN ? AND ?",
            [*bands, to_iso(anchor - window), to_iso(anchor + window)],
        ).fetchall()
        scored = sorted(
            (d, article_id) for article_id, simhash in rows
            if (d := hamming(_unsigned(simhash), draft.fingerprint)) <= threshold
        )
        if not scored:
            return []
        distance, article_id = scored[0]
        source, content_hash = self.conn.execute(
            "SELECT source, content_hash FROM articles WHERE id = ?", [article_id]
        ).fetchone()
        return [Match(article_id, source, content_hash, "n", score=round(1 - distance / 64, 4))]

    def _matches(self, keys: Iterable[str]) -> list[Match]:
        keys = list(keys)
        if not keys:
            return []
        rows = self.conn.execute(
            "SELECT k.key, a.id, a.source, a.content_hash FROM article_keys k LEFT JOIN articles a ON a.id = k.article_id"
            f" WHERE k.key IN ({', '.join('?' * len(keys))})",
            keys,
        ).fetchall()
        live = [Match(article_id=r[1], source=r[2], content_hash=r[3], key_kind=r[0][0]) for r in rows if r[1] is not None]
        if not live and rows:
            # Only keys of expired articles (retention): the story was published once and
            # must not come back as new. A tombstone match: nothing to store.
            return [Match(article_id=0, source="", content_hash="", key_kind="x")]
        return live

    def _free_post_name(self, name: str) -> str:
        """Post names embed the uid so they cannot clash; this is the belt to those braces."""
        candidate, n = name, 1
        while self.conn.execute("SELECT 1 FROM articles WHERE post_name = ?", [candidate]).fetchone():
            n += 1
            stem, dot, ext = name.rpartition(".")
            candidate = f"{stem}-{n}.{ext}" if dot else f"{name}-{n}"
        return candidate

    def _select(self, where: str, params: Sequence = (), *, sources: bool = True) -> list[StoredArticle]:
        rows = self.conn.execute(f"SELECT {_ARTICLE_COLUMNS} FROM articles {where}", list(params)).fetchall()
        articles = [_article(r) for r in rows]
        return self._with_sources(articles) if sources else articles

    def _with_sources(self, articles: list[StoredArticle]) -> list[StoredArticle]:
        """Attach every source an article was merged from (first source first)."""
        if not articles:
            return articles
        found: dict[int, list[tuple[str, str | None]]] = {}
        ids = [a.id for a in articles]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for article_id, source, link in self.conn.execute(
                "SELECT article_id, source, link FROM article_sources"
                f" WHERE article_id IN ({', '.join('?' * len(chunk))}) ORDER BY article_id, seen, rowid",
                chunk,
            ):
                names = found.setdefault(article_id, [])
                if source not in (n for n, _ in names):
                    names.append((source, link))
        return [dataclasses.replace(a, sources=tuple(found.get(a.id, ()))) for a in articles]

    def article_sources(self, article_id: int) -> list[dict]:
        """The merge log of one article, for ``aggregator explain``."""
        rows = self.conn.execute(
            "SELECT source, guid, link, matched, score, seen FROM article_sources WHERE article_id = ?"
            " ORDER BY seen, rowid", [article_id],
        ).fetchall()
        return [dict(zip(("source", "guid", "link", "matched", "score", "seen"), r)) for r in rows]

    def article_versions(self, article_id: int) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.conn.execute(
            "SELECT content_hash, replaced FROM article_versions WHERE article_id = ? ORDER BY replaced, rowid",
            [article_id])]

    def find_articles(self, needle: str) -> list[StoredArticle]:
        """By uid (or a prefix of 8+), post file name, link, or upstream guid."""
        needle = needle.strip()
        return self._select(
            "WHERE uid = ? OR (length(?) >= 8 AND uid LIKE ? || '%') OR post_name = ? OR post_name = ? || '.md'"
            " OR link = ? OR guid = ? OR id IN (SELECT article_id FROM article_sources WHERE link = ? OR guid = ?)"
            " ORDER BY id",
            [needle, needle, needle, needle, needle, needle, needle, needle, needle],
        )

    def articles_by_id(self, ids: Sequence[int], *, sources: bool = True) -> list[StoredArticle]:
        """The articles with these ids. ``sources=False`` leaves ``StoredArticle.sources``
        empty: the feeds never show the merge list (only posts do), and at 10,000 sources
        an article carries ~40 of them, a tenth of a publish's memory."""
        out: list[StoredArticle] = []
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            out += self._select(f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk, sources=sources)
        return out

    def all_articles(self) -> list[StoredArticle]:
        return self._select("ORDER BY id")

    def article_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM articles").fetchone()[0]

    def categories(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT category FROM articles ORDER BY category")]

    def newest_by_category(self, limit: int) -> dict[str, list[StoredArticle]]:
        """The newest ``limit`` articles of every category (date desc, id desc)."""
        rows = self.conn.execute(
            f"SELECT {_ARTICLE_COLUMNS} FROM (SELECT *, row_number() OVER"
            " (PARTITION BY category ORDER BY date DESC, id DESC) AS rn FROM articles)"
            " WHERE rn <= ? ORDER BY category, date DESC, id DESC",
            [limit],
        ).fetchall()
        groups: dict[str, list[StoredArticle]] = {}
        for a in self._with_sources([_article(r) for r in rows]):
            groups.setdefault(a.category, []).append(a)
        return groups

    def article_refs(self) -> list[ArticleRef]:
        """Every article without its body, for planning the published feeds (by id)."""
        merged: dict[int, list[str]] = {}
        # one str per source name, not one per row: at 10,000 sources an article carries
        # ~30 merged names, and their copies were 9 of the refs' 15 MB
        names_of: dict[str, str] = {}
        for article_id, source in self.conn.execute(
            "SELECT article_id, source FROM article_sources ORDER BY article_id, seen, rowid"
        ):
            merged.setdefault(article_id, []).append(names_of.setdefault(source, source))
        refs = []
        for r in self.conn.execute(
            "SELECT id, source, category, channel, title, author, date, updated, content_hash FROM articles ORDER BY id"
        ):
            names = merged.get(r[0], [])
            sources = (names_of.setdefault(r[1], r[1]), *(n for n in dict.fromkeys(names) if n != r[1]))
            refs.append(ArticleRef(
                id=r[0], source=r[1], sources=sources, category=r[2], channel=r[3], title=r[4], author=r[5] or "",
                date=from_iso(r[6]), updated=from_iso(r[7]), content_hash=r[8],
            ))
        return refs

    # -- full text and RSSHub (issue 9) ------------------------------------------------

    def own_versions(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """For source+guid keys (``g:`` dedup keys): the article each belongs to, as
        (article's source, content_hash). The pipeline fetches article pages only for items
        it has not stored (absent here) or that changed upstream."""
        out: dict[str, tuple[str, str]] = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            out.update((k, (src, h)) for k, src, h in self.conn.execute(
                "SELECT k.key, a.source, a.content_hash FROM article_keys k JOIN articles a ON a.id = k.article_id"
                f" WHERE k.key IN ({', '.join('?' * len(chunk))})", chunk))
        return out

    def fulltext_note(self, article_id: int) -> str | None:
        row = self.conn.execute("SELECT fulltext FROM articles WHERE id = ?", [article_id]).fetchone()
        return row[0] if row else None

    PAGE_FIELDS = ("url", "fetched", "status", "final_url", "error", "html", "text", "method", "page_title",
                   "page_text", "markers")

    def cached_pages(self, urls: Sequence[str], *, since: datetime) -> dict[str, dict]:
        """Extracted article pages fetched at or after ``since``, by URL."""
        out: dict[str, dict] = {}
        urls = list(dict.fromkeys(urls))
        for i in range(0, len(urls), 500):
            chunk = urls[i : i + 500]
            rows = self.conn.execute(f"SELECT {', '.join(self.PAGE_FIELDS)} FROM pages WHERE fetched >= ? AND url IN"
                                   f" ({', '.join('?' * len(chunk))})", [to_iso(since), *chunk]).fetchall()
            out.update((r[0], dict(zip(self.PAGE_FIELDS, r))) for r in rows)
        return out

    def save_pages(self, pages: Sequence[dict], *, older_than: datetime) -> None:
        """Remember extracted pages (keys: PAGE_FIELDS) and forget those fetched before
        ``older_than`` (the cache only saves refetching a page seen recently)."""
        with self._write():
            self.conn.executemany(
                f"INSERT OR REPLACE INTO pages ({', '.join(self.PAGE_FIELDS)})"
                f" VALUES ({', '.join('?' * len(self.PAGE_FIELDS))})",
                [[p.get(f) for f in self.PAGE_FIELDS] for p in pages],
            )
            self.conn.execute("DELETE FROM pages WHERE fetched < ?", [to_iso(older_than)])

    def instance_health(self) -> list[tuple]:
        """Every RSSHub instance's record: (url, last_success, last_failure, failures,
        last_error, next_try), times as datetimes."""
        rows = self.conn.execute("SELECT url, last_success, last_failure, failures, last_error, next_try"
                               " FROM rsshub_instances ORDER BY url").fetchall()
        return [(u, from_iso(s) if s else None, from_iso(f) if f else None, n, e, from_iso(t) if t else None)
                for u, s, f, n, e, t in rows]

    def record_instance_health(self, records: Sequence[tuple]) -> None:
        """Write instance records, each (url, last_success, last_failure, failures,
        last_error, next_try)."""
        if not records:
            return
        with self._write():
            self.conn.executemany(
                "INSERT OR REPLACE INTO rsshub_instances (url, last_success, last_failure, failures, last_error,"
                " next_try) VALUES (?, ?, ?, ?, ?, ?)",
                [(u, to_iso(s) if s else None, to_iso(f) if f else None, n, e, to_iso(t) if t else None)
                 for u, s, f, n, e, t in records],
            )

    def pending_posts(self) -> list[int]:
        """Articles whose post file is owed (committed, file not yet confirmed written)."""
        return [r[0] for r in self.conn.execute("SELECT article_id FROM pending_posts ORDER BY article_id")]

    def posts_written(self, ids: Sequence[int]) -> None:
        """The post files of ``ids`` are on disk: no longer owed."""
        if ids:
            with self._write():
                self.conn.executemany("DELETE FROM pending_posts WHERE article_id = ?", [(i,) for i in ids])

    def post_names(self) -> dict[int, str]:
        """id -> post file name of every article (what ``publish`` checks the folder against)."""
        return dict(self.conn.execute("SELECT id, post_name FROM articles ORDER BY id").fetchall())

    def article_bodies(self, ids: Sequence[int]) -> dict[int, str]:
        """id -> cleaned body HTML (the text filters of [[feeds]] search it)."""
        out: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            out.update(self.conn.execute(f"SELECT id, body_html FROM articles WHERE id IN ({marks})", chunk).fetchall())
        return out

    # -- daemon state, published outputs, statistics ------------------------------------

    def set_meta(self, **values: str | int | float | None) -> None:
        """Remember small facts (last cycle time, publish duration) across processes."""
        with self._write():
            for key, value in values.items():
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [key, None if value is None else str(value)],
                )

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.conn.execute("SELECT key, value FROM meta") if v is not None}

    def outputs(self) -> dict[str, OutputState]:
        """Every output page published (or refused) so far, by path stem."""
        return {
            r[0]: OutputState(
                path=r[0], signature=r[1], items=r[2] or 0, updated=from_iso(r[3]) if r[3] else None,
                published=from_iso(r[4]) if r[4] else None, error=r[5],
                error_at=from_iso(r[6]) if r[6] else None,
            )
            for r in self.conn.execute(
                "SELECT path, signature, items, updated, published, error, error_at FROM outputs ORDER BY path"
            )
        }

    def record_outputs(self, done: Sequence[OutputState], failed: Sequence[tuple[str, str]], gone: Sequence[str],
                       now: datetime) -> None:
        """One transaction per publish: pages written (signature saved, error cleared),
        pages refused by validation (error kept, the old signature too, so the page is
        tried again), pages that no longer exist."""
        with self._write():
            for o in done:
                self.conn.execute(
                    "INSERT INTO outputs (path, signature, items, updated, published, error, error_at)"
                    " VALUES (?, ?, ?, ?, ?, NULL, NULL) ON CONFLICT(path) DO UPDATE SET"
                    " signature = excluded.signature, items = excluded.items, updated = excluded.updated,"
                    " published = excluded.published, error = NULL, error_at = NULL",
                    [o.path, o.signature, o.items, to_iso(o.updated) if o.updated else None, to_iso(now)],
                )
            for path, message in failed:
                self.conn.execute(
                    "INSERT INTO outputs (path, error, error_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(path) DO UPDATE SET error = excluded.error, error_at = excluded.error_at,"
                    " signature = NULL",
                    [path, message, to_iso(now)],
                )
            for path in gone:
                self.conn.execute("DELETE FROM outputs WHERE path = ?", [path])

    def stats(self, now: datetime) -> Stats:
        """Everything ``/metrics``, ``/healthz`` and ``status`` report, read in one go."""
        sources = tuple(
            SourceStats(
                name=r[0], state=r[1], polls_total=r[2] or 0, errors_total=r[3] or 0,
                last_success=from_iso(r[4]) if r[4] else None, last_attempt=from_iso(r[5]) if r[5] else None,
                next_poll=from_iso(r[6]) if r[6] else None, last_error=r[7], articles=r[8],
            )
            for r in self.conn.execute(
                "SELECT name, state, polls_total, errors_total, last_success, last_attempt, next_poll, last_error,"
                " (SELECT count(*) FROM articles a WHERE a.source = s.name) FROM sources s ORDER BY name"
            )
        )
        by_category = tuple(
            (r[0], r[1]) for r in self.conn.execute("SELECT category, count(*) FROM articles GROUP BY category ORDER BY category")
        )
        recent = self.conn.execute(
            "SELECT count(*) FROM articles WHERE first_seen >= ?", [to_iso(now - timedelta(hours=24))]
        ).fetchone()[0]
        errors = tuple(
            (r[0], r[1]) for r in self.conn.execute("SELECT path, error FROM outputs WHERE error IS NOT NULL ORDER BY path")
        )
        pages = self.conn.execute("SELECT count(*) FROM outputs WHERE signature IS NOT NULL").fetchone()[0]
        meta = self.meta()

        def when(key: str) -> datetime | None:
            return from_iso(meta[key]) if key in meta else None

        def seconds(key: str) -> float | None:
            return float(meta[key]) if key in meta else None

        return Stats(
            sources=sources, articles_total=sum(n for _, n in by_category), articles_by_category=by_category,
            articles_last_24h=recent, last_cycle_at=when("last_cycle_at"), last_cycle_seconds=seconds("last_cycle_seconds"),
            last_publish_at=when("last_publish_at"), last_publish_seconds=seconds("last_publish_seconds"),
            published_pages=pages, publish_errors=errors,
        )



@dataclass(frozen=True)
class ArticleReader:
    """``Store.articles_by_id(ids, sources=False)`` of the database at ``path``, through a
    read-only connection of its own per call. It pickles as a path: a publish worker
    process reads the articles it renders itself instead of receiving them pickled from
    the poll process (which is the one writer; WAL lets readers in beside it)."""

    path: Path

    def __call__(self, ids: Sequence[int]) -> list[StoredArticle]:
        with Store(self.path, readonly=True) as store:
            return store.articles_by_id(ids, sources=False)


class _Immediate:
    """``with store._write():`` = BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn, self.path = conn, path

    def __enter__(self):
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot start a write: {e}") from e

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as e:
                self.conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: commit failed: {e}") from e
        else:
            self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: {exc}") from exc
        return False


def _source_state(r) -> SourceState:
    return SourceState(
        name=r[0], url=r[1], validators=Validators(etag=r[2], last_modified=r[3]), body_hash=r[4],
        state=r[5], error_count=r[6], last_error=r[7], last_error_kind=r[8],
        last_attempt=from_iso(r[9]) if r[9] else None, last_success=from_iso(r[10]) if r[10] else None,
        title=r[11], next_poll=from_iso(r[12]) if r[12] else None, moved_to=r[13], ttl_minutes=r[14],
        update_period=r[15], update_frequency=r[16], articles=r[17], served_by=r[18],
    )


def _article(r) -> StoredArticle:
    return StoredArticle(
        id=r[0], uid=r[1], source=r[2], category=r[3], channel=r[4], guid=r[5], link=r[6],
        title=r[7], author=r[8], date=from_iso(r[9]), image=r[10], body_html=r[11], summary=r[12],
        content_hash=r[13], first_seen=from_iso(r[14]), updated=from_iso(r[15]), post_name=r[16],
        date_note=r[17],
    )
