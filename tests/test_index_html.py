"""``index.html`` (aggregator/publish/index_html.py): the page listing every feed.

The page is parsed with lxml.html and checked as a reader and a browser would use it: the
relative links are resolved against the page's own location and must reach the files
written at ``FeedDef.path`` (dummy files in a temporary output folder), the autodiscovery
links are absolute, untrusted names come out as text only. When Debian's Chromium is on
PATH (``apt-get install chromium``, or ``$CHROMIUM``) the page is also rendered headless:
screenshot size and content, the rendered DOM, dark mode, and that a very long name does
not widen the page. The Chromium runs load only ``file://`` pages and resolve no host
names (``--host-resolver-rules``), so they never reach the network.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import lxml.html
import pytest

from aggregator.publish.index_html import render_index_html
from aggregator.publish.pages import AXES, FORMATS, MEDIA_TYPES, IndexEntry, Site
from aggregator.publish.plan import feed_def

ROOT = Path(__file__).resolve().parents[1]
BASE_URL = "https://news.example.org/feeds/"
SITE = Site(base_url=BASE_URL, title="Aggregator")
T0 = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
HEADINGS = {"all": "Everything", "category": "By category", "source": "By source",
            "channel": "By channel", "custom": "Custom feeds"}
EVIL = '<script>alert(1)</script> "quoted" & \'single\''


def _load_screenshot_script():
    """docs/screenshot.py is a script, not a package module: load it by path."""
    spec = importlib.util.spec_from_file_location("docs_screenshot", ROOT / "docs" / "screenshot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


shot = _load_screenshot_script()


def entry(axis: str, key: str, items: int = 3, updated: datetime | None = T0, *, title: str | None = None,
          site_title: str = SITE.title) -> IndexEntry:
    return IndexEntry(feed=feed_def(axis, key, site_title=site_title, limit=20, ttl=5, title=title),
                      items=items, updated=updated)


def shown_name(e: IndexEntry) -> str:
    """What the brief says a row shows: the axis value, the rule's title, "All articles"."""
    if e.feed.axis == "all":
        return "All articles"
    if e.feed.axis == "custom":
        return e.feed.title
    return e.feed.key


def sample() -> list[IndexEntry]:
    return [
        entry("all", "", 40, T0),
        entry("category", "金融", 12, T0 - timedelta(hours=1)),
        entry("category", "编程", 9, T0 - timedelta(days=1)),
        entry("category", "Tech News", 0, None),
        entry("category", "apple", 2, T0),  # lower case: sorts among the others, not after "Z"
        entry("source", "样例财经", 12, T0),
        entry("source", "Sample Dev Blog", 5, datetime(2026, 11, 25, 18, 0, tzinfo=timezone(timedelta(hours=8)))),
        entry("source", "Zeta Wire", 7, datetime(2026, 1, 2, 3, 4)),  # naive: UTC
        entry("channel", "深度", 4, T0),
        # a [[feeds]] name with characters that mean something in a URL
        entry("custom", "a b#c?d%20&e", 3, T0, title="Odd & ends"),
        entry("custom", "engineering", 6, T0, title="Engineering reading list"),
    ]


def parse(page: bytes) -> lxml.html.HtmlElement:
    assert page.startswith(b"<!DOCTYPE html>")
    return lxml.html.document_fromstring(page.decode("utf-8"))


def sections(doc) -> list[tuple[str, list]]:
    """(heading text without the feed count, rows) of every section, in page order."""
    out = []
    for section in doc.iter("section"):
        h2 = section.find("h2")
        heading = (h2.text or "").strip()
        out.append((heading, section.findall("table/tbody/tr")))
    return out


def row_name(tr) -> str:
    return tr.find("th").text_content()


# --- structure and order -----------------------------------------------------------------


def test_sections_in_axes_order_rows_sorted_by_name_each_entry_once():
    entries = sample()
    doc = parse(render_index_html(entries, SITE))
    assert doc.get("lang") == "en"
    assert doc.findtext(".//title") == SITE.title
    assert doc.find(".//h1").text_content() == SITE.title
    got = sections(doc)
    axes_present = [a for a in AXES if any(e.feed.axis == a for e in entries)]
    assert [h for h, _ in got] == [HEADINGS[a] for a in axes_present]
    for (heading, rows), axis in zip(got, axes_present, strict=True):
        expected = sorted((shown_name(e) for e in entries if e.feed.axis == axis), key=lambda s: (s.casefold(), s))
        assert [row_name(tr) for tr in rows] == expected, heading
        # table semantics: column headers, the feed name as row header
        assert [th.get("scope") for th in rows[0].getparent().getparent().findall("thead/tr/th")] == ["col"] * 4
        assert all(tr.find("th").get("scope") == "row" for tr in rows)
    all_rows = [row_name(tr) for _, rows in got for tr in rows]
    assert sorted(all_rows) == sorted(shown_name(e) for e in entries)


def test_empty_axes_are_left_out():
    doc = parse(render_index_html([entry("all", ""), entry("channel", "深度")], SITE))
    assert [h for h, _ in sections(doc)] == ["Everything", "By channel"]


def test_counts_and_dates_in_each_row():
    entries = sample()
    doc = parse(render_index_html(entries, SITE))
    by_name = {row_name(tr): tr for _, rows in sections(doc) for tr in rows}
    for e in entries:
        tr = by_name[shown_name(e)]
        count_cell, date_cell = tr.findall("td")[1:]
        assert int(count_cell.text.replace(",", "")) == e.items
        if e.updated is None:
            assert date_cell.text_content() == "—"
            assert date_cell.find("time") is None
            continue
        utc = (e.updated if e.updated.tzinfo else e.updated.replace(tzinfo=UTC)).astimezone(UTC)
        time = date_cell.find("time")
        assert datetime.fromisoformat(time.get("datetime")) == utc
        assert time.get("datetime").endswith("Z")
        assert time.text == utc.strftime("%Y-%m-%d %H:%M") + " UTC"
    # the +08:00 evening is the same day's morning in UTC; the naive value is read as UTC
    assert by_name["Sample Dev Blog"].find(".//time").text == "2026-11-25 10:00 UTC"
    assert by_name["Zeta Wire"].find(".//time").text == "2026-01-02 03:04 UTC"


def test_footer_names_the_newest_update():
    entries = sample()
    footer = parse(render_index_html(entries, SITE)).find(".//footer")
    assert footer.text_content().startswith("Generated by aggregator")
    newest = max(e.updated if e.updated.tzinfo else e.updated.replace(tzinfo=UTC)
                 for e in entries if e.updated is not None)
    assert datetime.fromisoformat(footer.find("time").get("datetime")) == newest


# --- links -------------------------------------------------------------------------------


def test_relative_links_reach_the_files_at_feed_path(tmp_path):
    """Write a dummy file at every ``feed.path(fmt)``, then follow each link of the page
    from the page's own location, as a browser does (resolve, then percent-decode)."""
    entries = sample()
    out = tmp_path / "out"
    for e in entries:
        for fmt in FORMATS:
            target = out / e.feed.path(fmt)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"{e.feed.stem}|{fmt}", encoding="utf-8")
    (out / "index.html").write_bytes(render_index_html(entries, SITE))
    (out / "index.opml").write_text("opml", encoding="utf-8")
    page_url = (out / "index.html").as_uri()
    doc = parse((out / "index.html").read_bytes())

    def follow(href: str) -> Path:
        assert not urlsplit(href).scheme and not href.startswith("/"), href  # relative
        target = urlsplit(urljoin(page_url, href))
        assert not target.query and not target.fragment, href  # "?" and "#" in names are encoded
        return Path(unquote(target.path))

    by_name = {row_name(tr): tr for _, rows in sections(doc) for tr in rows}
    for e in entries:
        links = by_name[shown_name(e)].findall(".//td/a")
        assert [a.text for a in links] == ["RSS", "Atom", "JSON"]
        for a, fmt in zip(links, FORMATS, strict=True):
            assert a.get("type") == MEDIA_TYPES[fmt]
            assert follow(a.get("href")).read_text(encoding="utf-8") == f"{e.feed.stem}|{fmt}"
            assert shown_name(e) in a.get("aria-label")  # a screen reader hears which feed
        for a in links:
            assert all(ord(c) < 128 for c in a.get("href"))  # non-ASCII percent-encoded
    opml = [a for a in doc.iter("a") if a.text_content() == "OPML (all feeds)"]
    assert len(opml) == 1
    assert follow(opml[0].get("href")).read_text(encoding="utf-8") == "opml"
    # section navigation points at the headings
    ids = {h2.get("id") for h2 in doc.iter("h2")}
    assert {a.get("href")[1:] for a in doc.find(".//nav").iter("a")} == ids


def test_one_absolute_alternate_link_per_feed_and_format_all_first():
    entries = sample()
    random.Random(1).shuffle(entries)
    doc = parse(render_index_html(entries, SITE))
    alternates = [link for link in doc.find("head").iter("link") if link.get("rel") == "alternate"]
    feeds = [link for link in alternates if link.get("type") != "text/x-opml"]
    assert len(feeds) == len(entries) * len(FORMATS)
    found = set()
    for link in feeds:
        href = link.get("href")
        assert href.startswith(BASE_URL)
        rel_path = unquote(href[len(BASE_URL):])
        match = [(e, fmt) for e in entries for fmt in FORMATS if e.feed.path(fmt) == rel_path]
        assert len(match) == 1, href
        e, fmt = match[0]
        assert link.get("type") == MEDIA_TYPES[fmt]
        assert link.get("title").startswith(e.feed.title)
        found.add((e.feed.stem, fmt))
    assert len(found) == len(entries) * len(FORMATS)  # each exactly once
    # the "all" feed first: a reader offered several takes the first as the default
    assert [unquote(link.get("href")[len(BASE_URL):]) for link in feeds[:3]] == [
        f"all{ext}" for ext in FORMATS.values()]
    opml = [link for link in alternates if link.get("type") == "text/x-opml"]
    assert len(opml) == 1 and opml[0].get("href") == BASE_URL + "index.opml" and opml[0].get("title")


def test_page_is_self_contained():
    page = render_index_html(sample(), SITE)
    doc = parse(page)
    assert doc.find(".//script") is None
    assert not [el for el in doc.iter() if el.get("src")]
    assert not [link for link in doc.iter("link") if link.get("rel") != "alternate"]  # no stylesheets, icons
    css = "".join(style.text for style in doc.iter("style"))
    assert "prefers-color-scheme" in css and "@import" not in css and "url(" not in css
    assert doc.find(".//meta[@charset]").get("charset") == "utf-8"
    assert doc.find(".//meta[@name='viewport']") is not None


# --- untrusted text ----------------------------------------------------------------------


def test_markup_and_quotes_in_names_are_text_only():
    site = Site(base_url=BASE_URL, title=EVIL)
    entries = [entry("all", "", site_title=site.title),
               entry("category", EVIL, site_title=site.title),
               entry("custom", "x", title=EVIL, site_title=site.title)]
    page = render_index_html(entries, site)
    assert b"<script" not in page
    doc = parse(page)
    assert doc.find(".//script") is None
    assert doc.findtext(".//title") == EVIL
    assert doc.find(".//h1").text_content() == EVIL
    names = [row_name(tr) for _, rows in sections(doc) for tr in rows]
    assert names.count(EVIL) == 2  # the category and the custom feed
    titles = [link.get("title") for link in doc.iter("link")]
    assert any(t.startswith(f"{EVIL} · {EVIL} (") for t in titles)  # attribute survives whole
    assert all(a.get("aria-label").startswith(EVIL) for tr in sections(doc)[1][1] for a in tr.iter("a"))


def test_bidi_overrides_end_with_the_name():
    """U+202E in a name must not reverse what follows it (the format, the next cell)."""
    name = "\u202eevil"
    doc = parse(render_index_html([entry("category", name)], SITE))
    th = sections(doc)[0][1][0].find("th")
    assert th.find("bdi") is not None  # isolated from the rest of the row
    assert th.text_content() == name + "\u202c"  # and closed (POP DIRECTIONAL FORMATTING)
    link_title = next(link.get("title") for link in doc.iter("link") if link.get("type") == MEDIA_TYPES["rss"])
    assert link_title == f"{SITE.title} · {name}\u202c (RSS 2.0)"


def test_xml_illegal_characters_are_dropped_not_fatal():
    name = "bad\x00name\x1b\ud800"
    page = render_index_html([entry("source", name)], SITE)
    page.decode("utf-8")
    assert row_name(sections(parse(page))[0][1][0]) == "badname"


# --- determinism -------------------------------------------------------------------------


def test_same_entries_in_any_order_give_the_same_bytes():
    entries = sample()
    first = render_index_html(entries, SITE)
    assert render_index_html(entries, SITE) == first
    for seed in range(5):
        shuffled = entries[:]
        random.Random(seed).shuffle(shuffled)
        assert render_index_html(shuffled, SITE) == first
    assert render_index_html(tuple(entries), SITE) == first


def test_bytes_do_not_depend_on_the_local_time_zone(tmp_path):
    """Rendered in fresh interpreters under different TZ settings: same bytes."""
    code = ("import sys, tests.test_index_html as t; "
            "sys.stdout.buffer.write(t.render_index_html(t.sample(), t.SITE))")
    outputs = set()
    for tz in ("UTC", "Asia/Shanghai", "America/St_Johns"):
        env = {**os.environ, "TZ": tz}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                              check=True, timeout=60)
        outputs.add(done.stdout)
    assert outputs == {render_index_html(sample(), SITE)}


def test_empty_index_says_there_are_no_feeds_yet():
    page = render_index_html([], SITE)
    doc = parse(page)
    assert doc.findtext(".//title") == SITE.title
    assert "There are no feeds yet" in doc.find(".//main").text_content()
    assert doc.find(".//table") is None and doc.find(".//section") is None
    assert not [link for link in doc.iter("link") if link.get("type") in MEDIA_TYPES.values()]
    assert doc.find(".//footer").text_content() == "Generated by aggregator"
    assert render_index_html([], SITE) == page


# --- the docs screenshot script ----------------------------------------------------------


def test_screenshot_sample_uses_the_demo_data():
    import tomllib

    config = tomllib.loads((ROOT / "aggregator" / "demo" / "demo.toml").read_text(encoding="utf-8"))
    entries, site = shot.sample_entries()
    assert site.title == config["site_title"]
    keys = {(e.feed.axis, e.feed.key) for e in entries}
    sources = config["sources"]
    assert {("source", s["name"]) for s in sources} <= keys
    assert {("category", s["category"]) for s in sources} <= keys
    assert {("channel", s["channel"]) for s in sources if "channel" in s} <= keys
    assert {e.feed.axis for e in entries} == set(AXES)
    everything = next(e for e in entries if e.feed.axis == "all")
    assert everything.items == sum(e.items for e in entries if e.feed.axis == "source") > 0


# --- Chromium ------------------------------------------------------------------------------


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, scanlines) of a non-interlaced PNG, scanlines still filtered.

    Filtered rows are enough to tell a blank image: a single-colour image has at most
    one distinct scanline per filter type (five) for the first row and for the others,
    so ten; a rendered page has hundreds. The first pixel of the first row is the same
    filtered or not (its left and upper neighbours are zero for every filter type).
    """
    assert data.startswith(PNG_SIGNATURE)
    pos, idat, header = len(PNG_SIGNATURE), b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = header
    assert interlace == 0 and depth == 8
    raw = zlib.decompress(idat)
    stride = 1 + width * CHANNELS[colour]
    assert len(raw) == stride * height
    return width, height, [raw[i * stride:(i + 1) * stride] for i in range(height)]


def first_pixel(rows: list[bytes]) -> tuple[int, ...]:
    return tuple(rows[0][1:4])


def blank_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = (b"\x00" + bytes(rgb) * width) * height
    return (PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_png_reader_tells_a_blank_image():
    """The screenshot check below can fail: a single-colour PNG has ≤ 10 distinct rows."""
    width, height, rows = read_png(blank_png(64, 48, (1, 2, 3)))
    assert (width, height) == (64, 48)
    assert len(set(rows)) <= 10
    assert first_pixel(rows) == (1, 2, 3)


@pytest.fixture
def chromium_bin():
    binary = shot.find_chromium()
    if binary is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    return binary


@pytest.fixture
def demo_page(tmp_path) -> tuple[Path, list[IndexEntry]]:
    entries = sample() + [entry("source", "Ω" + "x" * 300)]
    page = tmp_path / "index.html"
    page.write_bytes(render_index_html(entries, SITE))
    return page, entries


def test_chromium_screenshot_is_a_rendered_page(chromium_bin, demo_page, tmp_path):
    page, _ = demo_page
    png = tmp_path / "out.png"
    shot.screenshot(chromium_bin, page, png, width=1280, height=900, profile=tmp_path / "profile")
    width, height, rows = read_png(png.read_bytes())
    assert (width, height) == (1280, 900)
    assert len(set(rows)) > 10, "blank screenshot"
    light = first_pixel(rows)
    dark_png = tmp_path / "dark.png"
    shot.screenshot(chromium_bin, page, dark_png, width=1280, height=900, dark=True, profile=tmp_path / "profile")
    dark = first_pixel(read_png(dark_png.read_bytes())[2])
    assert min(light) > 200 and max(dark) < 60, (light, dark)  # prefers-color-scheme is honoured


def test_chromium_dom_shows_every_feed(chromium_bin, demo_page, tmp_path):
    page, entries = demo_page
    dom = shot.chromium(chromium_bin, page, "--dump-dom", profile=tmp_path / "profile")
    doc = lxml.html.document_fromstring(dom)
    names = [row_name(tr) for _, rows in sections(doc) for tr in rows]
    assert sorted(names) == sorted(shown_name(e) for e in entries)
    assert doc.find(".//script") is None


PROBE = b"""<script>
var cut = 0;
document.querySelectorAll("tbody th").forEach(function (cell) { if (cell.scrollWidth > cell.clientWidth) cut++; });
document.body.dataset.probe = innerWidth + " " + document.documentElement.scrollWidth + " " + cut;
</script></body>"""


def _layout(binary: str, page_bytes: bytes, folder: Path, width: int) -> tuple[int, int, int]:
    """(viewport width, document width, name cells whose text overflows the cell) as
    Chromium lays the page out in a window ``width`` wide.

    A probe script is added to a *copy* of the page (the page itself has none) and writes
    its measurement into the DOM, which ``--dump-dom`` returns.
    """
    copy = folder / f"probe-{width}.html"
    copy.write_bytes(page_bytes.replace(b"</body>", PROBE))
    dom = shot.chromium(binary, copy, "--dump-dom", f"--window-size={width},900", profile=folder / "profile")
    viewport, document, cut = lxml.html.document_fromstring(dom).find("body").get("data-probe").split()
    return int(viewport), int(document), int(cut)


@pytest.mark.parametrize("width", [1280, 480])
def test_a_very_long_name_wraps_instead_of_widening_the_page(chromium_bin, demo_page, tmp_path, width):
    page, _ = demo_page
    viewport, document, cut = _layout(chromium_bin, page.read_bytes(), tmp_path, width)
    assert document <= viewport
    assert cut == 0  # nor is it cut off inside its cell
    if width < 1280:
        assert viewport <= 640  # the narrow (card) layout is the one measured


def test_the_layout_probe_can_fail(chromium_bin, demo_page, tmp_path):
    """Without the wrapping rule the 300-character name overflows its cell."""
    page, _ = demo_page
    unwrapped = page.read_bytes().replace(b"overflow-wrap:anywhere", b"white-space:nowrap")
    assert unwrapped != page.read_bytes()
    _, _, cut = _layout(chromium_bin, unwrapped, tmp_path, 1280)
    assert cut == 1


def test_docs_screenshot_script_writes_a_png(chromium_bin, tmp_path):
    out = tmp_path / "shot.png"
    assert shot.main(["--out", str(out), "--width", "800", "--height", "600"]) == 0
    width, height, rows = read_png(out.read_bytes())
    assert (width, height) == (800, 600) and len(set(rows)) > 10
