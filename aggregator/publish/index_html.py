"""``index.html``: the human face of the output folder — every published feed, grouped by
axis, with its RSS / Atom / JSON Feed links, item count and last update.

Owns: the bytes of that page. Must not: read the clock, query anything, write files, load
anything from elsewhere (no external fonts, scripts, images or style sheets: the page must
work offline, behind any Content-Security-Policy, and without JavaScript).

Decisions:

- sections in ``AXES`` order with the OPML folder names ("Everything", "By category", …);
  an empty section is left out. Within a section rows are sorted by the name shown
  (case-folded, then as is, then the feed's stem), so the page does not depend on the
  order the entries arrive in: same entries, same bytes. There is no generator
  timestamp; the footer names the newest article update instead, which changes only
  when the feeds do;
- the name shown is the axis value (category, source, channel) — the section heading
  already says what it is, so the site-title prefix of ``FeedDef.title`` would only
  repeat itself on every row — the rule's title for ``[[feeds]]`` rules, and
  "All articles" for the "all" feed;
- links in the page body are *relative* (``FeedDef.path`` percent-encoded), so the
  folder works wherever it is served, even under a ``base_url`` that is not (yet) its
  real address, or opened as ``file://``. The ``<link rel="alternate">`` tags in
  ``<head>`` (feed-reader autodiscovery, one per feed and format) are *absolute*
  (``Site.url``): some readers and browser extensions copy the href as it is, without
  resolving it against the page. The "all" feed comes first, because readers that
  find several feeds pick the first as the default;
- ``index.opml`` is announced as ``<link rel="alternate" type="text/x-opml">``
  (``rel="outline"`` is not a registered link type) and linked visibly as "OPML (all
  feeds)";
- untrusted text (feed titles come from remote feeds and from config): XML-illegal
  characters (NUL, lone surrogates, …) are stripped as in every other output, everything
  is HTML-escaped, and bidirectional controls are closed at the end of each string, so
  a title with U+202E (RIGHT-TO-LEFT OVERRIDE) cannot reverse the text after it — neither
  in the page, where names also sit in ``<bdi>`` (so Arabic or Hebrew names do not
  reorder the row around them), nor in attribute values or ``<title>``, where ``<bdi>``
  cannot go. Long unbroken names wrap (``overflow-wrap: anywhere``) instead of
  widening the table past the screen;
- dates: absolute UTC, ``2026-11-26 09:30 UTC`` in a ``<time datetime="…Z">``; "—" for
  a feed with no articles. No relative "3 hours ago": the page is static and would lie
  as soon as it is written;
- accessibility: ``lang="en"`` (the page chrome is English), one ``<h2>`` per section,
  a real ``<table>`` with column headers and the feed name as row header, link labels
  that say which feed and format they subscribe to, colours with WCAG AA contrast in
  light and dark schemes (``prefers-color-scheme``), and on narrow screens each row is
  shown as a small card instead of a table that scrolls sideways.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from aggregator.publish.opml import AXIS_TITLES, OPML_NAME
from aggregator.publish.pages import (
    AXES,
    FORMATS,
    MEDIA_TYPES,
    FeedDef,
    IndexEntry,
    Site,
)
from aggregator.text import strip_illegal_chars

#: format -> the label of its link, in the order the links are shown
FORMAT_LABELS: dict[str, str] = {"rss": "RSS", "atom": "Atom", "json": "JSON"}
_FORMAT_NAMES = {"rss": "RSS 2.0", "atom": "Atom 1.0", "json": "JSON Feed 1.1"}
ALL_NAME = "All articles"
EMPTY_DATE = "—"

# Embeddings/overrides (LRE, RLE, LRO, RLO … closed by PDF) and isolates (LRI, RLI, FSI …
# closed by PDI), Unicode Bidirectional Algorithm (UAX #9) §2.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_PDF, _PDI = "\u202c", "\u2069"


def _closed_bidi(text: str) -> str:
    """``text`` with every bidi embedding, override or isolate it opens closed at its end,
    so it cannot change the direction of whatever follows it."""
    if not _BIDI.search(text):
        return text
    stack: list[str] = []
    for ch in text:
        if ch in "\u202a\u202b\u202d\u202e":
            stack.append(_PDF)
        elif ch in "\u2066\u2067\u2068":
            stack.append(_PDI)
        elif ch == _PDF and stack and stack[-1] == _PDF:
            stack.pop()
        elif ch == _PDI and _PDI in stack:
            # A PDI closes its isolate and every embedding opened inside it (UAX #9, X6a).
            del stack[len(stack) - 1 - stack[::-1].index(_PDI):]
    return text + "".join(reversed(stack))


def _text(value: str) -> str:
    """One piece of untrusted text as HTML text or attribute value (``"`` and ``'``
    escaped too). Each piece is escaped on its own, so its bidi controls end with it."""
    return html.escape(_closed_bidi(strip_illegal_chars(value)), quote=True)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _time(moment: datetime | None) -> str:
    if moment is None:
        return EMPTY_DATE
    moment = _utc(moment)
    return (f'<time datetime="{moment:%Y-%m-%dT%H:%M:%SZ}">'
            f"{moment:%Y-%m-%d %H:%M} UTC</time>")


def display_name(feed: FeedDef) -> str:
    """The name a row shows: the axis value, the rule's title, or "All articles"."""
    if feed.axis == "all":
        return ALL_NAME
    if feed.axis == "custom" or not feed.key:
        return feed.title
    return feed.key


def href(feed: FeedDef, fmt: str) -> str:
    """Relative link to the feed's current document in ``fmt``, percent-encoded (UTF-8).

    ``quote`` also encodes ``:``, so a first path segment can never read as a URL scheme.
    """
    return quote(feed.path(fmt), safe="/")


def sections(entries: Sequence[IndexEntry]) -> list[tuple[str, list[IndexEntry]]]:
    """``(axis, entries)`` in ``AXES`` order, empty axes left out, each sorted by name."""
    out = []
    for axis in AXES:
        chosen = [e for e in entries if e.feed.axis == axis]
        if chosen:
            chosen.sort(key=lambda e: (display_name(e.feed).casefold(), display_name(e.feed), e.feed.stem))
            out.append((axis, chosen))
    return out


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _head_links(ordered: Sequence[IndexEntry], site: Site) -> list[str]:
    links = []
    for entry in ordered:
        for fmt in FORMATS:
            links.append(
                f'<link rel="alternate" type="{MEDIA_TYPES[fmt]}" '
                f'title="{_text(entry.feed.title)} ({_FORMAT_NAMES[fmt]})" '
                f'href="{html.escape(site.url(entry.feed.path(fmt)))}">'
            )
    links.append(f'<link rel="alternate" type="text/x-opml" title="{_text(site.title)} (OPML, all feeds)" '
                 f'href="{html.escape(site.url(OPML_NAME))}">')
    return links


def _row(entry: IndexEntry) -> str:
    feed = entry.feed
    name = display_name(feed)
    links = " ".join(
        f'<a class="f {fmt}" href="{html.escape(href(feed, fmt))}" type="{MEDIA_TYPES[fmt]}" '
        f'aria-label="{_text(name)}: {_FORMAT_NAMES[fmt]}">{FORMAT_LABELS[fmt]}</a>'
        for fmt in FORMATS
    )
    return (
        "<tr>"
        f'<th scope="row"><bdi>{_text(name)}</bdi></th>'
        f'<td class="links">{links}</td>'
        f'<td class="n">{entry.items:,}<span class="unit"> {"item" if entry.items == 1 else "items"}</span></td>'
        f'<td class="t">{_time(entry.updated)}</td>'
        "</tr>"
    )


def _section(axis: str, chosen: Sequence[IndexEntry]) -> str:
    rows = "\n".join(_row(e) for e in chosen)
    return (
        f'<section aria-labelledby="h-{axis}">\n'
        f'<h2 id="h-{axis}">{AXIS_TITLES[axis]} <span class="count">{_plural(len(chosen), "feed")}</span></h2>\n'
        f'<table aria-labelledby="h-{axis}">\n'
        '<colgroup><col><col class="c-links"><col class="c-n"><col class="c-t"></colgroup>\n'
        '<thead><tr><th scope="col">Feed</th><th scope="col">Subscribe</th>'
        '<th scope="col" class="n">Items</th><th scope="col" class="t">Last update</th></tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody>\n</table>\n</section>"
    )


def render_index_html(entries: Sequence[IndexEntry], site: Site) -> bytes:
    """The whole page, UTF-8. Pure: the same entries (in any order) give the same bytes."""
    grouped = sections(entries)
    ordered = [e for _, chosen in grouped for e in chosen]
    title = _text(site.title)
    newest = max((_utc(e.updated) for e in ordered if e.updated is not None), default=None)

    if grouped:
        nav = " ".join(f'<a href="#h-{axis}">{AXIS_TITLES[axis]}</a>' for axis, _ in grouped)
        intro = (
            f'<p class="lede">{_plural(len(ordered), "feed")}, each as RSS 2.0, Atom 1.0 and JSON Feed 1.1. '
            "Copy a link into your feed reader, or import them all at once: "
            f'<a class="opml" href="{OPML_NAME}" type="text/x-opml">OPML (all feeds)</a></p>\n'
            f'<nav aria-label="Sections">{nav}</nav>'
        )
        body = "\n".join(_section(axis, chosen) for axis, chosen in grouped)
    else:
        intro = ""
        body = ('<p class="empty">There are no feeds yet: they appear here once sources are configured '
                "and polled.</p>")
    footer = "Generated by aggregator"
    if newest is not None:
        footer += f" · newest article {_time(newest)}"

    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        '<meta name="generator" content="aggregator">',
        f"<title>{title}</title>",
        *_head_links(ordered, site),
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f'<header><h1><bdi>{title}</bdi></h1>\n{intro}</header>',
        body,
        "</main>",
        f"<footer>{footer}</footer>",
        "</body>",
        "</html>",
        "",
    ])
    return page.encode("utf-8")


# Light colours first, dark ones under prefers-color-scheme. Every text/background pair
# is at least 4.5:1 (WCAG AA); the format badges use the colour only as a border and tint.
_CSS = """
:root{--bg:#f6f7f9;--card:#fff;--fg:#1c2128;--muted:#57606a;--line:#d8dee4;--head:#f0f2f5;
--link:#0a58ca;--rss:#b54708;--atom:#1a7f37;--json:#6e40c9}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--card:#171b21;--fg:#e6edf3;--muted:#9ba6b2;
--line:#2b323b;--head:#1d232a;--link:#6cb6ff;--rss:#f0883e;--atom:#56d364;--json:#bc8cff}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC","PingFang SC",
"Microsoft YaHei",sans-serif}
main{max-width:64rem;margin:0 auto;padding:2.5rem 1.25rem 1rem}
a{color:var(--link)}
h1{font-size:1.9rem;line-height:1.2;margin:0 0 .5rem;overflow-wrap:anywhere}
.lede{color:var(--muted);margin:0 0 1rem;max-width:48rem}
.opml{font-weight:600;white-space:nowrap}
nav{display:flex;flex-wrap:wrap;gap:.25rem 1.25rem;padding:.75rem 0;border-bottom:1px solid var(--line)}
nav a{text-decoration:none;font-weight:500}
nav a:hover,nav a:focus{text-decoration:underline}
section{margin:1.75rem 0}
h2{font-size:1.2rem;margin:0 0 .6rem;display:flex;align-items:baseline;gap:.6rem}
.count{font-size:.85rem;font-weight:400;color:var(--muted)}
table{width:100%;border-collapse:separate;border-spacing:0;table-layout:fixed;background:var(--card);
border:1px solid var(--line);border-radius:8px;overflow:hidden}
col.c-links{width:12.5rem}col.c-n{width:5.5rem}col.c-t{width:12.5rem}
th,td{padding:.5rem .9rem;text-align:left;vertical-align:middle;border-top:1px solid var(--line)}
thead th{border-top:0;background:var(--head);font-size:.8rem;font-weight:600;text-transform:uppercase;
letter-spacing:.04em;color:var(--muted)}
tbody th{font-weight:600;overflow-wrap:anywhere;word-break:break-word}
bdi{unicode-bidi:isolate}
tbody tr:hover{background:var(--head)}
.n{text-align:right;font-variant-numeric:tabular-nums}
.t{white-space:nowrap;font-variant-numeric:tabular-nums;color:var(--muted)}
td.t{font-size:.9rem}
.unit{display:none}
.links{white-space:nowrap}
a.f{display:inline-block;min-width:3.1rem;padding:.1rem .5rem;margin:.1rem .15rem .1rem 0;text-align:center;
font-size:.8rem;font-weight:600;text-decoration:none;border:1px solid;border-radius:999px}
a.f:hover,a.f:focus{text-decoration:underline}
a.rss{color:var(--rss)}a.atom{color:var(--atom)}a.json{color:var(--json)}
.empty{padding:2rem;text-align:center;background:var(--card);border:1px dashed var(--line);border-radius:8px}
footer{max-width:64rem;margin:0 auto;padding:1rem 1.25rem 2.5rem;color:var(--muted);font-size:.85rem}
@media (max-width:40rem){
main{padding-top:1.5rem}
table,tbody,tr,th,td{display:block}
table{border-radius:8px}
thead{display:none}
tbody tr{display:grid;grid-template-columns:1fr auto;gap:.3rem .75rem;padding:.7rem .9rem;
border-top:1px solid var(--line)}
tbody tr:first-child{border-top:0}
tbody th,tbody td{padding:0;border:0}
tbody th{grid-column:1/-1}
.n{text-align:left;color:var(--muted);font-size:.9rem;grid-column:1}
.t{text-align:right;grid-column:2}
.links{grid-column:1/-1}
.unit{display:inline}
}
""".strip()
