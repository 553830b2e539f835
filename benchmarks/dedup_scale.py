"""Dedup lookups at scale: ``Store.apply`` against a generated database of N articles.

    python benchmarks/dedup_scale.py                     # 1,000,000 articles
    python benchmarks/dedup_scale.py --articles 100000   # quick run

1. **Generate.** ``Store(path)`` creates the schema (our migrations), then the rows are
   bulk-inserted with ``executemany`` in one transaction (setup only: journal off, large
   page cache; the file is switched back to WAL before measuring). Articles are spread over
   10 categories and 1,000 sources; body, title, guid and link lengths are drawn from the
   distribution measured on the shared corpus (4,398 drafts of 248 real feeds). Keys come
   from the real ``normalize.dedup_keys``, uids from ``pipeline.article_uid``, post names
   from ``publish.posts.post_name``, near-duplicate bands from ``similarity.band_keys`` of
   random 64-bit fingerprints (kept in ``articles.simhash`` via ``to_sqlite``).
2. **Measure.** ``Store.apply`` with real ``ArticleDraft`` values and a pinned ``now``, for
   five cases: new, exact duplicate (unchanged), same link from another source (merge),
   changed (update), near-duplicate (2 bits flipped, merge). Batches of ``--batch`` drafts
   in one call (one transaction), and ``--singles`` one-draft calls (p50/p99). Every case
   uses its own stored articles; the verdict counts are checked against what was meant.
   The two lookups inside ``apply`` are also timed alone (``Store._matches`` /
   ``Store._near_matches``, read-only), with the number of band candidates they read.
3. **Plans.** ``EXPLAIN QUERY PLAN`` of the lookup SQL copied from store.py (checked to
   still be there): index search or scan.

Writes ``benchmarks/results/dedup_scale.json`` and ``.md``. Imports aggregator; no network.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from aggregator import store as store_mod  # noqa: E402
from aggregator.models import ArticleDraft, Source  # noqa: E402
from aggregator.normalize import dedup_keys, normalize_text  # noqa: E402
from aggregator.pipeline import article_uid  # noqa: E402
from aggregator.publish.posts import post_name  # noqa: E402
from aggregator.similarity import band_keys, to_sqlite  # noqa: E402
from aggregator.store import Store, to_iso  # noqa: E402

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)  # pinned: every run sees the same clock
NEAR = lambda category: (True, 6, timedelta(hours=72))  # noqa: E731 - the brief's policy
CATEGORIES = [f"cat-{i}" for i in range(10)]
N_SOURCES = 1000
HISTORY_DAYS = 730  # stored articles are dated over the last two years

# Quantiles (p, chars) of cleaned drafts from /work/shared/corpus/real (4,398 drafts of
# 248 feeds, measured 2026-11-26 with work.process_feed): body_html, title, guid, link.
BODY_Q = [(0, 9), (.05, 9), (.1, 37), (.2, 139), (.3, 191), (.4, 245), (.5, 300), (.6, 525), (.7, 1029),
          (.8, 1983), (.9, 4132), (.95, 6949), (.99, 17414), (1, 100437)]
TITLE_Q = [(0, 9), (.1, 13), (.3, 25), (.5, 32), (.7, 45), (.9, 69), (.99, 105), (1, 282)]
GUID_Q = [(0, 8), (.2, 10), (.4, 38), (.5, 44), (.7, 58), (.9, 81), (.99, 140), (1, 216)]

# The lookup SQL of store.py, copied; each fragment is checked to still be in store.py.
KEY_SQL = ("SELECT k.key, a.id, a.source, a.content_hash FROM article_keys k LEFT JOIN articles a ON a.id = k.article_id"
           " WHERE k.key IN ({marks})")
BAND_SQL = ("SELECT DISTINCT article_id, simhash FROM near_keys WHERE band IN ({marks})"
            " AND date BETWEEN ? AND ?")
# store.py as it was when this run started (others may edit it while a long run goes on).
STORE_SOURCE = Path(store_mod.__file__).read_text()
OTHER_SQL = {
    "post name free? (_free_post_name)": "SELECT 1 FROM articles WHERE post_name = ?",
    "merge reads date (_merge)": "SELECT date, text_len FROM articles WHERE id = ?",
    "edits in the last day (_edit)": "SELECT count(*) FROM article_versions WHERE article_id = ? AND replaced > ?",
    "sources of the result (_with_sources)": "SELECT article_id, source, link FROM article_sources"
    " WHERE article_id IN ({marks}) ORDER BY article_id, seen, rowid",
}


def sample(rng: random.Random, table: list[tuple[float, int]]) -> int:
    """Inverse CDF of a quantile table, linear between the points."""
    u = rng.random()
    i = max(1, bisect.bisect_left([p for p, _ in table], u))
    (p0, v0), (p1, v1) = table[i - 1], table[i]
    return int(v0 + (v1 - v0) * ((u - p0) / (p1 - p0) if p1 > p0 else 0))


@dataclass(frozen=True)
class Item:
    """The upstream values of one synthetic item (what normalize would have produced)."""

    source: int
    guid: str
    link: str
    title: str
    text: str
    date: datetime
    image: str | None
    fp: int | None


class Synth:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.vocab = ["".join(self.rng.choices(letters, k=self.rng.randint(2, 10))) for _ in range(5000)]
        self.pool = " ".join(self.rng.choices(self.vocab, k=800_000))  # ~5 MB of words to slice texts from
        self.sources = [Source(name=f"source-{k:04d}", url=f"https://www.site{k}.example/feed",
                               category=CATEGORIES[k % len(CATEGORIES)], channel=None, interval=3600)
                        for k in range(N_SOURCES)]

    def words(self, chars: int) -> str:
        out, n = [], 0
        while n < chars:
            w = self.rng.choice(self.vocab)
            out.append(w)
            n += len(w) + 1
        return " ".join(out).capitalize()

    def text(self, chars: int) -> str:
        off = self.rng.randrange(len(self.pool) - chars)
        return self.pool[off:off + chars].strip() or "x"

    def item(self, i: int, *, fp_share: float, source: int | None = None) -> Item:
        rng = self.rng
        k = rng.randrange(N_SOURCES) if source is None else source
        title = self.words(sample(rng, TITLE_Q))
        slug = "-".join(title.lower().split()[:8])
        date = NOW - timedelta(seconds=rng.randrange(HISTORY_DAYS * 86400))
        link = f"https://www.site{k}.example/{date:%Y/%m}/{slug}-{i}.html"
        style, glen = rng.random(), sample(rng, GUID_Q)
        if style < 0.4:
            guid = link
        elif style < 0.7:
            guid = f"tag:site{k}.example,{date:%Y}:post-{i}-" + "x" * max(0, glen - 30)
        else:
            guid = str(10_000_000 + i)
        image = f"https://img.site{k}.example/{i}.jpg" if rng.random() < 0.5 else None
        fp = rng.getrandbits(64) if rng.random() < fp_share else None
        return Item(k, guid, link, title, self.text(max(1, sample(rng, BODY_Q) - 7)), date, image, fp)


def draft_of(s: Synth, it: Item) -> ArticleDraft:
    """An ArticleDraft as normalize builds it: same key function, same hash scheme."""
    src = s.sources[it.source]
    body = f"<p>{it.text}</p>"
    # normalize._sha(title, link, date, image, body): sha256 of the parts joined by NUL
    content_hash = hashlib.sha256("\x00".join(
        [it.title, it.link, it.date.isoformat(), it.image or "", body]).encode()).hexdigest()
    return ArticleDraft(
        source=src.name, category=src.category, channel=None, guid=it.guid, link=it.link, title=it.title,
        author=src.name, date=it.date, image=it.image, body_html=body, summary=it.text[:200],
        dedup_keys=dedup_keys(src, it.guid, it.link, it.title, it.text), content_hash=content_hash,
        text_len=len(normalize_text(it.text)), fingerprint=it.fp,
    )


# -- 1. generation ------------------------------------------------------------------------


def generate(path: Path, n: int, s: Synth, fp_share: float, keep_ids: set[int], chunk: int = 20_000) -> dict:
    t0 = time.perf_counter()
    Store(path).close()  # the schema is created by our own migrations
    conn = sqlite3.connect(str(path), isolation_level=None)
    # Setup only: no rollback journal and a 4 GiB page cache while bulk loading.
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -4000000")
    cols = store_mod._ARTICLE_COLUMNS + ", text_len, simhash"
    ins_article = f"INSERT INTO articles ({cols}) VALUES ({', '.join('?' * 20)})"
    kept: dict[int, Item] = {}
    counts = {"article_keys": 0, "near_keys": 0, "fingerprinted": 0, "body_chars": 0}
    python_s = 0.0
    conn.execute("BEGIN")
    for start in range(1, n + 1, chunk):
        tp = time.perf_counter()
        arts, keys, srcs, bands = [], [], [], []
        for i in range(start, min(n + 1, start + chunk)):
            it = s.item(i, fp_share=1.0 if i in keep_ids else fp_share)
            d = draft_of(s, it)
            if i in keep_ids:
                kept[i] = it
            uid = article_uid(d)
            seen = to_iso(min(NOW, d.date + timedelta(seconds=s.rng.randrange(7200))))
            arts.append((i, uid, d.source, d.category, None, d.guid, d.link, d.title, d.author, to_iso(d.date),
                         d.image, d.body_html, d.summary, d.content_hash, seen, seen, post_name(d.title, d.date, uid),
                         "item", d.text_len, None if d.fingerprint is None else to_sqlite(d.fingerprint)))
            keys += [(k, i) for k in d.dedup_keys]
            srcs.append((i, d.source, d.guid, d.link, "first", 1.0, seen))
            if d.fingerprint is not None:
                bands += [(f"{d.category}\x00{b}", to_iso(d.date), to_sqlite(d.fingerprint), i)
                          for b in band_keys(d.fingerprint)]
            counts["body_chars"] += len(d.body_html)
        python_s += time.perf_counter() - tp
        conn.executemany(ins_article, arts)
        before = conn.total_changes
        conn.executemany("INSERT INTO article_keys (key, article_id) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", keys)
        counts["article_keys"] += conn.total_changes - before
        conn.executemany("INSERT INTO article_sources (article_id, source, guid, link, matched, score, seen)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", srcs)
        conn.executemany("INSERT OR IGNORE INTO near_keys (band, date, simhash, article_id) VALUES (?, ?, ?, ?)", bands)
        counts["near_keys"] += len(bands)
        counts["fingerprinted"] += len(bands) // 7
        done = min(n, start + chunk - 1)
        if done % 100_000 < chunk:
            print(f"  generated {done:,} articles, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")  # as Store keeps it
    conn.close()
    # No ANALYZE: a real database never gets one from us, so the planner sees what it sees here.
    return {"seconds": round(time.perf_counter() - t0, 1), "python_seconds": round(python_s, 1),
            "db_bytes": path.stat().st_size, **counts}, kept


def table_sizes(path: Path) -> dict[str, int] | None:
    try:
        with sqlite3.connect(str(path)) as c:
            return dict(c.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"))
    except sqlite3.Error:  # dbstat not compiled in
        return None


# -- 2. measurement -----------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def us(x: float) -> float:
    return round(x * 1e6, 1)


def other_source(s: Synth, k: int, same_category: bool) -> int:
    while True:
        j = s.rng.randrange(N_SOURCES)
        if j != k and (not same_category or j % len(CATEGORIES) == k % len(CATEGORIES)):
            return j


def case_drafts(case: str, s: Synth, kept: list[Item], base: int) -> list[ArticleDraft]:
    """Drafts for one case; ``kept`` are stored items reserved for it (unused for "new")."""
    out = []
    for j, it in enumerate(kept):
        if case == "new":
            d = draft_of(s, s.item(base + j, fp_share=1.0))
        elif case == "unchanged":
            d = draft_of(s, it)
        elif case == "link_dup":  # another source carries the same link; shorter, later copy
            d = draft_of(s, replace(s.item(base + j, fp_share=1.0, source=other_source(s, it.source, False)),
                                    link=it.link, text=it.text[: len(it.text) // 2] or "x",
                                    date=it.date + timedelta(hours=2)))
        elif case == "changed":  # same guid, edited upstream
            d = draft_of(s, replace(it, title=it.title + " (updated)", text=it.text + " Update: more text."))
        elif case == "near_dup":  # a rewrite elsewhere: 2 bits off, other keys, same category, in window
            a, b = s.rng.sample(range(64), 2)
            d = draft_of(s, replace(s.item(base + j, fp_share=1.0, source=other_source(s, it.source, True)),
                                    text=it.text[: len(it.text) // 2] or "x", fp=it.fp ^ (1 << a) ^ (1 << b),
                                    date=it.date + timedelta(hours=1)))
        else:
            raise ValueError(case)
        out.append(d)
    return out


EXPECT = {"new": "new", "unchanged": "unchanged", "link_dup": "merged", "changed": "updated", "near_dup": "merged"}
CASES = {
    "new": "new item: no key matches, near-dup search runs and finds nothing",
    "unchanged": "exact duplicate: same source + guid, same content",
    "link_dup": "same link from another source: merged",
    "changed": "changed item: same guid, new content: updated",
    "near_dup": "near-duplicate: stored fingerprint with 2 bits flipped, other keys: merged",
}


def apply(st: Store, drafts: list[ArticleDraft]):
    return st.apply(drafts, now=NOW, name_post=post_name, uid_of=article_uid, near=NEAR)


def counts_of(r) -> dict[str, int]:
    return {"new": len(r.new), "updated": len(r.updated), "merged": len(r.merged),
            "unchanged": r.unchanged, "duplicates": r.duplicates}


def measure_case(st: Store, case: str, drafts: list[ArticleDraft], batch: int, batches: int) -> dict:
    per_item, verdicts_ok, totals = [], True, {}
    for b in range(batches):
        chunk = drafts[b * batch:(b + 1) * batch]
        t = time.perf_counter()
        r = apply(st, chunk)
        per_item.append((time.perf_counter() - t) / len(chunk))
        c = counts_of(r)
        verdicts_ok &= c[EXPECT[case]] == len(chunk)
        totals = {k: totals.get(k, 0) + v for k, v in c.items()}
    singles = []
    for d in drafts[batches * batch:]:
        t = time.perf_counter()
        r = apply(st, [d])
        singles.append(time.perf_counter() - t)
        c = counts_of(r)
        verdicts_ok &= c[EXPECT[case]] == 1
        totals = {k: totals.get(k, 0) + v for k, v in c.items()}
    return {"batch_us_per_item": [us(x) for x in per_item], "batch_us_per_item_median": us(statistics.median(per_item)),
            "single_p50_us": us(pct(singles, .5)), "single_p99_us": us(pct(singles, .99)),
            "single_max_us": us(max(singles)), "single_mean_us": us(statistics.mean(singles)),
            "singles": len(singles), "singles_over_2ms": sum(x > 0.002 for x in singles),
            "single_us": [us(x) for x in singles], "verdicts": totals, "verdicts_as_meant": verdicts_ok}


def measure_lookups(st: Store, drafts: list[ArticleDraft]) -> dict:
    """The two reads inside apply, alone (read-only): exact keys, then the band search."""
    key_t, near_t, band_t, cands = [], [], [], []
    conn = st.db.conn
    for d in drafts:
        t = time.perf_counter()
        st._matches(d.dedup_keys)
        key_t.append(time.perf_counter() - t)
        bands = [f"{d.category}\x00{b}" for b in band_keys(d.fingerprint)]
        window = [to_iso(d.date - timedelta(hours=72)), to_iso(d.date + timedelta(hours=72))]
        t = time.perf_counter()
        rows = conn.execute(BAND_SQL.format(marks=", ".join("?" * len(bands))), bands + window).fetchall()
        band_t.append(time.perf_counter() - t)
        cands.append(len(rows))  # band matches already inside the 72 h window
        t = time.perf_counter()
        st._near_matches(d, NEAR, NOW)
        near_t.append(time.perf_counter() - t)
    return {
        "key_lookup_p50_us": us(pct(key_t, .5)), "key_lookup_p99_us": us(pct(key_t, .99)),
        "band_sql_p50_us": us(pct(band_t, .5)), "band_sql_p99_us": us(pct(band_t, .99)),
        "near_search_p50_us": us(pct(near_t, .5)), "near_search_p99_us": us(pct(near_t, .99)),
        "band_candidates_in_72h_window_mean": round(statistics.mean(cands), 2), "band_candidates_p99": pct(cands, .99),
        "drafts": len(drafts),
    }


# -- 3. plans ------------------------------------------------------------------------------


def plans(st: Store) -> list[dict]:
    src = STORE_SOURCE
    templates = {"key lookup (_matches)": (KEY_SQL, 3), "band lookup (_near_matches)": (BAND_SQL, 7)}
    templates |= {k: (v, 2) for k, v in OTHER_SQL.items()}
    out = []
    for name, (template, marks) in templates.items():
        sql = template.format(marks=", ".join("?" * marks))
        static = [part.rstrip("( ") for part in template.split("{marks}") if part.strip(" )")]
        in_store = all(_collapse(part) in _collapse(src) for part in static)
        rows = st.db.conn.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")).fetchall()
        details = [r[3] for r in rows]
        scan = any(d.startswith("SCAN") for d in details)
        out.append({"query": name, "sql": sql, "sql_still_in_store_py": in_store, "plan": details,
                    "indexed": not scan and any(d.startswith("SEARCH") for d in details)})
    return out


def _collapse(text: str) -> str:
    """store.py splits SQL over adjacent string literals: compare with those seams removed."""
    return text.replace('"\n', "").replace('f"', "").replace('"', "").replace(" ", "").replace("\n", "")


# -- report --------------------------------------------------------------------------------


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "aggregator"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(),
            "cpu": model, "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(), "commit": commit, "aggregator_dirty": dirty,
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def markdown(res: dict) -> str:
    m, g = res["machine"], res["generation"]
    lines = [
        f"# Dedup lookups at {res['articles']:,} articles — {m['date']}", "",
        f"{m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, SQLite {m['sqlite']}, commit {m['commit']}"
        f"{' (aggregator/ modified)' if m['aggregator_dirty'] else ''}, load {m['loadavg_1m']}. "
        f"Database generated in {g['seconds']} s ({g['python_seconds']} s of it building rows in Python): "
        f"{g['db_bytes'] / 2**20:,.0f} MiB, {g['article_keys']:,} article keys, {g['near_keys']:,} band keys "
        f"({g['fingerprinted']:,} fingerprinted articles). Warm OS page cache; SQLite's own cache at its default.", "",
        "| case | batch of {0}: µs/item (median of {1}) | single call p50 µs | p99 µs | max µs | verdicts as meant |"
        .format(res["batch"], res["batches"]),
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    for case, r in res["cases"].items():
        lines.append(f"| {CASES[case]} | {r['batch_us_per_item_median']:,} | {r['single_p50_us']:,} | "
                     f"{r['single_p99_us']:,} | {r['single_max_us']:,} | {'yes' if r['verdicts_as_meant'] else '**no**'} |")
    lk = res["lookups"]
    lines += ["", f"The reads inside `apply`, alone, over {lk['drafts']} new drafts:", "",
              "| read | p50 µs | p99 µs |", "| --- | ---: | ---: |",
              f"| exact keys (`_matches`: g/l/t keys, one `IN` query) | {lk['key_lookup_p50_us']} | {lk['key_lookup_p99_us']} |",
              f"| band SQL alone (7 bands x 72 h window, covering index ranges) | {lk['band_sql_p50_us']} | {lk['band_sql_p99_us']} |",
              f"| near search (`_near_matches`: band SQL + Hamming in Python) | {lk['near_search_p50_us']} | {lk['near_search_p99_us']} |",
              "", f"Band candidates read per search (already inside the 72 h window): mean "
              f"{lk['band_candidates_in_72h_window_mean']}, p99 {lk['band_candidates_p99']} "
              f"(stored dates span {HISTORY_DAYS} days).",
              "", "| query (SQL copied from store.py) | still in store.py | plan | indexed |", "| --- | :---: | --- | :---: |"]
    for p in res["plans"]:
        lines.append(f"| {p['query']} | {'yes' if p['sql_still_in_store_py'] else '**no**'} | "
                     f"{'; '.join(p['plan'])} | {'yes' if p['indexed'] else '**SCAN**'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--articles", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000, help="drafts per apply call in the batch figure")
    ap.add_argument("--batches", type=int, default=3, help="batches per case (median reported)")
    ap.add_argument("--singles", type=int, default=500, help="one-draft apply calls per case")
    ap.add_argument("--lookups", type=int, default=500, help="drafts for the lookup-alone timings")
    ap.add_argument("--fingerprint-share", type=float, default=1.0,
                    help="share of stored articles with a fingerprint (1.0: all, the worst case for the bands;"
                         " 0.28 in the corpus, where most items are too short)")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--tmp", default=None, help="folder for the generated database (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated database")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results/ alone")
    a = ap.parse_args()

    started = machine()  # the commit and load as the run starts
    per_case = a.batch * a.batches + a.singles
    if a.articles < 5 * per_case:
        ap.error(f"--articles must be at least {5 * per_case} for these batch sizes")
    s = Synth(a.seed)
    reserved = s.rng.sample(range(1, a.articles + 1), 4 * per_case)
    groups = {c: reserved[i * per_case:(i + 1) * per_case] for i, c in enumerate(["unchanged", "link_dup", "changed", "near_dup"])}
    folder = Path(tempfile.mkdtemp(prefix="dedup-scale-", dir=a.tmp))
    path = folder / "aggregator.db"
    try:
        print(f"generating {a.articles:,} articles in {path} ...", file=sys.stderr, flush=True)
        gen, kept = generate(path, a.articles, s, a.fingerprint_share, set(reserved))
        gen["table_bytes"] = table_sizes(path)
        with Store(path) as st:
            look = measure_lookups(st, case_drafts("new", s, [None] * a.lookups, a.articles + 10_000_000))
            cases = {}
            for i, case in enumerate(CASES):
                items = [None] * per_case if case == "new" else [kept[j] for j in groups[case]]
                drafts = case_drafts(case, s, items, a.articles + (i + 1) * 1_000_000)
                print(f"measuring {case} ...", file=sys.stderr, flush=True)
                cases[case] = measure_case(st, case, drafts, a.batch, a.batches)
            plan = plans(st)
        gen["db_bytes_after"] = path.stat().st_size
    finally:
        if a.keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    res = {"articles": a.articles, "batch": a.batch, "batches": a.batches, "singles": a.singles,
           "fingerprint_share": a.fingerprint_share, "seed": a.seed, "now": to_iso(NOW),
           "near_policy": "(True, 6, 72 h) for every category", "machine": started, "generation": gen,
           "cases": cases, "lookups": look, "plans": plan}
    md = markdown(res)
    print(md)
    if not a.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "dedup_scale.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
        (RESULTS / "dedup_scale.md").write_text(md)
    sys.exit(0 if all(c["verdicts_as_meant"] for c in cases.values()) and all(p["indexed"] for p in plan[:2]) else 1)


if __name__ == "__main__":
    main()
