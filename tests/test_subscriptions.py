"""Sources as OPML: the parser and the import decision on real files (our hand-written
Miniflux and FreshRSS exports, hostile documents), the exporter's round trip, and the two
commands in a subprocess against real config files and a real process holding the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from aggregator.config import add_sources_to_file, load_config
from aggregator.errors import ConfigError
from aggregator.models import Source
from aggregator.subscriptions import (
    NewSource,
    OPMLError,
    build_opml,
    plan_import,
    read_opml,
    read_opml_file,
    url_key,
)
from tests.conftest import ROOT, write_config

FIXTURES = Path(__file__).parent / "fixtures" / "opml"


def opml(body: str, *, version: str = "2.0", head: str = "<title>t</title>") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<opml version="{version}"><head>{head}</head><body>\n'
            f"{body}\n</body></opml>").encode()


def src(name: str, url: str, category: str = "c", channel: str | None = None) -> Source:
    return Source(name=name, url=url, category=category, channel=channel, interval=900)


def rows(items) -> list[tuple]:
    """(name, url, category, channel) of sources or planned sources."""
    return [(s.name, s.url, s.category, s.channel) for s in items]


def plan(data: bytes, existing=(), category=None):
    return plan_import(read_opml(data, "test.opml"), list(existing), category=category)


# --- the two readers' exports ----------------------------------------------------------


def test_miniflux_export_becomes_sources_in_its_categories():
    p = plan_import(read_opml_file(FIXTURES / "miniflux.opml"), [])
    assert rows(p.add) == [
        ("Lumen Weekly", "https://lumen-weekly.example/feed.xml", "All", None),
        ("Gopher's Notes", "https://notes.gopher.example/index.xml", "Programming", None),
        ("Rustacean Digest", "https://digest.rustacean.example/atom.xml?lang=en&full=1", "Programming", None),
        # Miniflux allows one title in two categories; our names are unique
        ("Lumen Weekly (2)", "https://lumen-weekly.example/programming.xml", "Programming", None),
        ("晨报快讯", "https://news.chenbao.example/rss", "新闻", None),
    ]
    assert p.skipped == () and p.found == 5


def test_freshrss_export_becomes_sources_and_its_web_scraping_outline_is_skipped():
    p = plan_import(read_opml_file(FIXTURES / "freshrss.opml"), [])
    assert rows(p.add) == [
        ("Field Notes", "https://fieldnotes.example/feed/", "Uncategorized", None),
        ("Orbital Mechanics", "https://orbital.example/rss.xml", "Science & Tech", None),
        ("Lab Bench", "https://labbench.example/atom", "Science & Tech", None),
        ("Weather Station", "https://weather.example/feed.json", "Science & Tech", None),  # type="JSONFeed"
    ]
    [skip] = p.skipped
    assert skip.name == "City Council Agenda" and skip.line == 14 and "html+xpath" in skip.reason


def test_importing_an_export_next_to_what_it_added_adds_nothing():
    for name in ("miniflux.opml", "freshrss.opml"):
        outlines = read_opml_file(FIXTURES / name)
        first = plan_import(outlines, [])
        again = plan_import(outlines, [src(s.name, s.url, s.category, s.channel) for s in first.add])
        assert again.add == ()
        duplicates = [s for s in again.skipped if s.reason.startswith("already the source")]
        assert [(s.line, s.url) for s in duplicates] == [(s.line, s.url) for s in first.add]
        assert [s for s in again.skipped if s not in duplicates] == list(first.skipped)


# --- folders, names, URLs, duplicates --------------------------------------------------


def test_top_folder_is_the_category_and_the_second_level_the_channel():
    data = opml("""
      <outline text="Tech">
        <outline text="Direct" type="rss" xmlUrl="https://a.example/1"/>
        <outline title="Rust">
          <outline text="Deep" xmlUrl="https://a.example/2"/>
          <outline text="Third level">
            <outline text="Deeper" type="atom" xmlUrl="https://a.example/3"/>
          </outline>
        </outline>
        <outline><outline text="In a nameless folder" xmlUrl="https://a.example/4"/></outline>
      </outline>""")
    assert rows(plan(data).add) == [
        ("Direct", "https://a.example/1", "Tech", None),
        ("Deep", "https://a.example/2", "Tech", "Rust"),  # a folder named by title only
        ("Deeper", "https://a.example/3", "Tech", "Rust"),  # levels past two add nothing
        ("In a nameless folder", "https://a.example/4", "Tech", None),
    ]


def test_feeds_outside_folders_take_the_category_option_or_are_skipped_with_the_hint():
    data = opml("""
      <outline text="Loose" type="rss" xmlUrl="https://loose.example/feed"/>
      <outline text="Kept"><outline text="Inside" type="rss" xmlUrl="https://inside.example/feed"/></outline>""")
    without = plan(data)
    assert rows(without.add) == [("Inside", "https://inside.example/feed", "Kept", None)]
    [skip] = without.skipped
    assert skip.url == "https://loose.example/feed" and "--category" in skip.reason
    with_option = plan(data, category=" Misc ")
    assert rows(with_option.add) == [
        ("Loose", "https://loose.example/feed", "Misc", None),
        ("Inside", "https://inside.example/feed", "Kept", None),  # the option overrides no folder
    ]


def test_outlines_that_are_not_http_feeds_are_skipped_with_their_reason():
    data = opml("""
      <outline text="F">
        <outline text="No URL" type="rss"/>
        <outline text="FTP" type="rss" xmlUrl="ftp://files.example/feed.xml"/>
        <outline text="Script" xmlUrl="javascript:alert(1)"/>
        <outline text="Feed scheme" xmlUrl="feed://a.example/rss"/>
        <outline text="No host" xmlUrl="http:///rss"/>
        <outline text="Spaces" xmlUrl="https://a.example/my feed.xml"/>
        <outline text="Bad IPv6" xmlUrl="http://[::1/feed"/>
        <outline text="A web page" type="link" url="https://a.example/"/>
        <outline text="Just a note"/>
        <outline text="Good" xmlUrl="  https://good.example/feed  "/>
      </outline>""")
    p = plan(data)
    assert rows(p.add) == [("Good", "https://good.example/feed", "F", None)]
    reasons = {s.name: s.reason for s in p.skipped}
    assert reasons == {
        "No URL": "the outline has no xmlUrl",
        "FTP": "not an http(s) URL",
        "Script": "not an http(s) URL",
        "Feed scheme": "not an http(s) URL",
        "No host": "not an http(s) URL",
        "Spaces": "not a valid URL (it contains spaces or control characters)",
        "Bad IPv6": reasons["Bad IPv6"],
    }
    assert reasons["Bad IPv6"].startswith("not a valid URL")
    assert p.found == 8  # the link and the note are not feed outlines at all


def test_duplicates_of_config_sources_and_of_earlier_outlines_are_skipped():
    existing = [src("Old", "https://example.com/feed")]
    data = opml("""
      <outline text="F">
        <outline text="Shouting" xmlUrl="HTTPS://EXAMPLE.com/feed/"/>
        <outline text="Query" xmlUrl="https://example.com/feed?page=2"/>
        <outline text="Plain http" xmlUrl="http://example.com/feed"/>
        <outline text="B" xmlUrl="https://b.example/x"/>
        <outline text="B again" xmlUrl="https://b.example/x#top"/>
      </outline>""")
    p = plan(data, existing)
    assert [s.name for s in p.add] == ["Query", "Plain http", "B"]
    assert [(s.name, s.reason) for s in p.skipped] == [
        ("Shouting", "already the source 'Old'"),
        ("B again", "same feed as line 8 ('B')"),  # the line of the first outline
    ]


@pytest.mark.parametrize(("a", "b", "same"), [
    ("https://Example.COM/feed", "https://example.com/feed/", True),
    ("HTTP://a.example", "http://a.example/", True),
    ("https://a.example/f#x", "https://a.example/f", True),
    ("https://a.example/f?a=1", "https://a.example/f?A=1", False),
    ("https://a.example/Feed", "https://a.example/feed", False),
    ("http://a.example/f", "https://a.example/f", False),
])
def test_url_key(a, b, same):
    assert (url_key(a) == url_key(b)) is same


def test_a_taken_name_gets_the_next_free_number_and_names_fall_back_to_the_host():
    existing = [src("Blog", "https://one.example/feed"), src("Blog (2)", "https://two.example/feed")]
    data = opml("""
      <outline text="F">
        <outline title="Blog" text="ignored: title wins" xmlUrl="https://three.example/feed"/>
        <outline text="Blog" xmlUrl="https://four.example/feed"/>
        <outline xmlUrl="https://Host.Example/untitled.xml"/>
        <outline text="  Two&#10;lines&#9;here  " xmlUrl="https://five.example/feed"/>
      </outline>""")
    assert [s.name for s in plan(data, existing).add] == ["Blog (3)", "Blog (4)", "host.example", "Two lines here"]


def test_opml_1_0_with_lowercase_attribute_names():
    data = opml('<outline title="Old school"><outline title="Ancient" xmlurl="http://ancient.example/rss"/></outline>',
                version="1.0")
    assert rows(plan(data).add) == [("Ancient", "http://ancient.example/rss", "Old school", None)]


@pytest.mark.parametrize("encoding", ["iso-8859-1", "gb18030", "shift_jis", "utf-16"])
def test_the_encoding_declared_in_the_prolog_is_used(encoding):
    folder, name = ("Café", "Crème brûlée") if encoding == "iso-8859-1" else ("新闻", "晨报快讯")
    if encoding == "shift_jis":
        folder, name = "ニュース", "朝刊"
    text = (f'<?xml version="1.0" encoding="{encoding}"?>\n<opml version="2.0"><head/><body>'
            f'<outline text="{folder}"><outline text="{name}" xmlUrl="https://x.example/"/></outline></body></opml>')
    data = text.encode(encoding)  # Python's utf-16 codec writes a BOM, as real UTF-16 files have
    assert rows(plan(data).add) == [(name, "https://x.example/", folder, None)]


# --- hostile and broken input ----------------------------------------------------------


LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE opml [\n <!ENTITY a0 "lol">\n'
          + "".join(f' <!ENTITY a{i} "{f"&a{i - 1};" * 10}">\n' for i in range(1, 10))
          + ']>\n<opml version="2.0"><head/><body><outline text="&a9;" xmlUrl="https://x.example/"/></body></opml>')


@pytest.mark.parametrize("data", [
    LAUGHS.encode(),
    LAUGHS.replace('version="1.0"?>', 'version="1.0" encoding="UTF-16"?>').encode("utf-16"),
    (b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
     b'<opml version="2.0"><head/><body><outline text="&e;" xmlUrl="https://x.example/"/></body></opml>'),
], ids=["billion-laughs", "billion-laughs-utf16", "external-entity"])
def test_entity_declarations_are_refused(data):
    with pytest.raises(OPMLError, match="bomb.opml: not an OPML file: .*entity declaration"):
        read_opml(data, "bomb.opml")


def test_an_external_doctype_is_never_fetched(server):
    dtd = server.url("/opml.dtd")
    data = (f'<?xml version="1.0"?><!DOCTYPE opml SYSTEM "{dtd}"><opml version="2.0"><head/><body>'
            '<outline text="F"><outline text="A" xmlUrl="https://a.example/"/></outline></body></opml>').encode()
    assert [o.url for o in read_opml(data, "x.opml")] == ["https://a.example/"]
    assert server.requests == []


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "the file is empty"),
    (b"  \n", "the file is empty"),
    (b"just some text", "line 1: not well-formed XML"),
    (b'{"feeds": []}', "line 1: not well-formed XML"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not well-formed XML"),
    (b'<opml version="2.0"><head/><body><outline text="x"></body></opml>', "line 1: not well-formed XML"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "the root element is <rss>, not <opml>"),
    (b"<html><body><a href='https://x.example/feed'>feed</a></body></html>", "the root element is <html>"),
    (b'<opml version="2.0"><head><title>t</title></head></opml>', "it has no <body> element"),
])
def test_what_is_not_opml_is_refused_naming_the_file_and_the_problem(data, problem):
    with pytest.raises(OPMLError) as e:
        read_opml(data, "subs.opml")
    assert str(e.value).startswith("subs.opml: not an OPML file: ") and problem in str(e.value)


def test_huge_nesting_is_refused_and_deep_but_sane_nesting_is_read():
    def nested(depth: int) -> bytes:
        folders = "".join(f'<outline text="L{i}">' for i in range(depth))
        return opml(folders + '<outline text="Bottom" xmlUrl="https://deep.example/"/>' + "</outline>" * depth)

    with pytest.raises(OPMLError, match="nested deeper than 256 levels"):
        read_opml(nested(100_000), "deep.opml")
    assert rows(plan(nested(200)).add) == [("Bottom", "https://deep.example/", "L0", "L1")]


def test_an_empty_body_is_an_opml_file_without_feeds():
    p = plan(opml(""))
    assert p.found == 0 and p.add == () and p.skipped == ()


# --- export ----------------------------------------------------------------------------


SOURCES = [
    src("財經 Daily", "https://a.example/rss?x=1&y=2", "金融", "深度"),
    src("Beta", "https://b.example/atom", "Tech"),
    src("Alpha", "https://c.example/feed", "Tech", "Rust"),
    src('Quote "me" <now>', "https://d.example/", "Tech"),
    src("Gamma", "https://e.example/feed", "Tech", "Go"),
    src("Delta", "https://f.example/feed", "金融"),
]


def test_export_is_one_sorted_folder_per_category_with_channels_nested_and_no_clock():
    data = build_opml(SOURCES, title="mine sources")
    assert data == build_opml(SOURCES, title="mine sources")
    root = etree.fromstring(data)
    assert root.get("version") == "2.0" and data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert [e.tag for e in root.find("head")] == ["title", "docs"]  # no dateCreated: same sources, same bytes
    shape = [
        (folder.get("text"), [(o.get("text"), o.get("xmlUrl")) if o.get("xmlUrl") else
                              (o.get("text"), [c.get("text") for c in o]) for o in folder])
        for folder in root.find("body")
    ]
    assert shape == [
        ("Tech", [("Beta", "https://b.example/atom"), ('Quote "me" <now>', "https://d.example/"),
                  ("Go", ["Gamma"]), ("Rust", ["Alpha"])]),
        ("金融", [("Delta", "https://f.example/feed"), ("深度", ["財經 Daily"])]),
    ]
    feed = root.find("body/outline/outline")
    assert list(feed.attrib) == ["type", "text", "title", "xmlUrl"] and feed.get("type") == "rss"


def test_export_then_import_gives_the_same_sources_and_a_second_import_nothing():
    p = plan(build_opml(SOURCES, title="t"))
    assert sorted(rows(p.add)) == sorted(rows(SOURCES)) and p.skipped == ()
    assert plan(build_opml(SOURCES, title="t"), SOURCES).add == ()


# No control characters (a name's line break becomes a space on import) and no surrogates.
_TEXT = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=12)
_TEXT = _TEXT.map(str.strip).filter(bool)


@given(st.lists(st.tuples(_TEXT, _TEXT, st.none() | _TEXT), max_size=12, unique_by=lambda t: t[0]))
def test_round_trip_property(specs):
    sources = [src(name, f"https://h{i}.example/feed/{i}", category, channel)
               for i, (name, category, channel) in enumerate(specs)]
    p = plan(build_opml(sources, title="t"))
    assert sorted(rows(p.add)) == sorted(rows(sources))


# --- config edit -----------------------------------------------------------------------


def test_add_sources_to_file_appends_all_in_one_validated_write(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('# keep me\ndata_dir = "data"  # and me\n', encoding="utf-8")
    add_sources_to_file(config, [NewSource(1, "A", "https://a.example/", "c").as_table(),
                                 NewSource(2, "B", "https://b.example/", "c", "ch").as_table()])
    text = config.read_text(encoding="utf-8")
    assert text.startswith('# keep me\ndata_dir = "data"  # and me\n')
    assert rows(load_config(config).sources) == [("A", "https://a.example/", "c", None),
                                                 ("B", "https://b.example/", "c", "ch")]
    with pytest.raises(ConfigError, match="duplicate source name 'A'"):
        add_sources_to_file(config, [{"name": "Z", "url": "https://z.example/", "category": "c"},
                                     {"name": "A", "url": "https://other.example/", "category": "c"}])
    assert config.read_text(encoding="utf-8") == text  # one bad table refuses the whole batch


# --- the commands ----------------------------------------------------------------------


def run(config: Path, *args: str, check: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("AGGREGATOR_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), *args],
                          capture_output=True, env=env, timeout=120, stdin=subprocess.DEVNULL, check=False)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8"),
                                      proc.stderr.decode("utf-8"))
    out.raw = proc.stdout
    if check is not None:
        assert proc.returncode == check, (proc.returncode, out.stdout, out.stderr)
    return out


COMMENTED = """# Sources of the night shift.
data_dir = "data"   # database here
output_dir = "out"
base_url = "https://feeds.example.org/"

[[sources]]  # the first one, by hand
name = "Lumen Weekly"
url = "https://lumen-weekly.example/feed.xml"
category = "All"
"""


def test_import_keeps_comments_appends_sources_and_says_who_polls_them(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(COMMENTED, encoding="utf-8")
    p = run(config, "import-opml", str(FIXTURES / "miniflux.opml"), check=0)
    text = config.read_text(encoding="utf-8")
    assert text.startswith(COMMENTED)
    names = [s.name for s in load_config(config).sources]
    assert names == ["Lumen Weekly", "Gopher's Notes", "Rustacean Digest", "Lumen Weekly (2)", "晨报快讯"]
    assert "Added 4 sources" in p.stdout
    assert "line 9: https://lumen-weekly.example/feed.xml (Lumen Weekly): already the source 'Lumen Weekly'" in p.stdout
    assert "Nothing was fetched" in p.stdout and "start one to poll them (aggregator run)" in p.stdout
    again = run(config, "import-opml", str(FIXTURES / "miniflux.opml"), check=0)
    assert config.read_text(encoding="utf-8") == text
    assert "No new source." in again.stdout and again.stdout.count("already the source") == 5


def test_dry_run_writes_nothing(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(COMMENTED, encoding="utf-8")
    before = config.stat().st_mtime_ns
    p = run(config, "import-opml", str(FIXTURES / "freshrss.opml"), "--dry-run", check=0)
    assert config.read_text(encoding="utf-8") == COMMENTED and config.stat().st_mtime_ns == before
    assert "Would add 4 sources" in p.stdout and "Dry run: nothing written." in p.stdout
    assert "html+xpath" in p.stdout and not (tmp_path / "data").exists()


def test_export_then_import_into_a_fresh_config_round_trips(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write_config(tmp_path / "one" / "config.toml", [
        {"name": s.name, "url": s.url, "category": s.category, **({"channel": s.channel} if s.channel else {})}
        for s in SOURCES])
    stdout = run(first, "export-opml", check=0).raw
    assert b"dateCreated" not in stdout
    out_file = tmp_path / "exports" / "sources.opml"
    assert "Wrote 6 sources in 2 categories" in run(first, "export-opml", "-o", str(out_file), check=0).stdout
    assert out_file.read_bytes() == stdout == run(first, "export-opml", check=0).raw

    second = write_config(tmp_path / "two" / "config.toml", [])
    run(second, "import-opml", str(out_file), check=0)
    assert sorted(rows(load_config(second).sources)) == sorted(rows(load_config(first).sources))
    again = run(second, "import-opml", str(out_file), check=0)
    assert "No new source." in again.stdout and again.stdout.count("already the source") == 6


def test_import_into_a_config_that_does_not_exist_yet(tmp_path):
    config = tmp_path / "new.toml"
    run(config, "import-opml", str(FIXTURES / "freshrss.opml"), check=0)
    assert len(load_config(config).sources) == 4


def test_feeds_outside_folders_are_listed_and_imported_with_category(tmp_path):
    config = write_config(tmp_path / "config.toml", [])
    flat = tmp_path / "flat.opml"
    flat.write_bytes(opml('<outline text="One" xmlUrl="https://one.example/"/>'
                          '<outline text="Two" xmlUrl="https://two.example/"/>'))
    p = run(config, "import-opml", str(flat), check=0)
    assert p.stdout.count("not in any folder; import it with --category C") == 2
    assert load_config(config).sources == ()
    run(config, "import-opml", str(flat), "--category", "Misc", check=0)
    assert rows(load_config(config).sources) == [("One", "https://one.example/", "Misc", None),
                                                 ("Two", "https://two.example/", "Misc", None)]


def test_usage_and_file_errors_have_their_exit_status(tmp_path):
    config = write_config(tmp_path / "config.toml", [])
    before = config.read_bytes()
    bad = tmp_path / "export.opml"
    bad.write_bytes(b"<?xml version='1.0'?><rss version='2.0'><channel/></rss>")
    p = run(config, "import-opml", str(bad), check=1)
    assert f"{bad}: not an OPML file: the root element is <rss>, not <opml>" in p.stderr
    assert "does not exist" in run(config, "import-opml", str(tmp_path / "missing.opml"), check=2).stderr
    p = run(config, "import-opml", str(FIXTURES / "freshrss.opml"), "--category", " ", check=2)
    assert "--category" in p.stderr
    assert config.read_bytes() == before


HOLDER = r"""
import os, signal, sys
from pathlib import Path
from aggregator.daemon import DaemonLock

data_dir, marker = Path(sys.argv[1]), Path(sys.argv[2])
signal.signal(signal.SIGHUP, lambda signum, frame: marker.write_text("reload\n"))
with DaemonLock(data_dir):
    print("locked", os.getpid(), flush=True)
    while True:
        signal.pause()
"""


def test_a_running_daemon_is_told_to_reload(tmp_path):
    config = write_config(tmp_path / "config.toml", [])
    marker = tmp_path / "sighup-received"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(load_config(config).data_dir), str(marker)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = holder.stdout.readline()
        assert line.startswith("locked "), line
        pid = int(line.split()[1])
        p = run(config, "import-opml", str(FIXTURES / "miniflux.opml"), check=0)
        assert f"The running daemon (pid {pid}) reloads its config" in p.stdout
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.read_text() == "reload\n"
        marker.unlink()
        for args in (["--dry-run"], []):  # a dry run, then an import with nothing new: no reload
            p = run(config, "import-opml", str(FIXTURES / "miniflux.opml"), *args, check=0)
            assert "reloads its config" not in p.stdout
        assert holder.poll() is None
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=30)
