"""The real ``aggregator`` command in a subprocess, against a loopback feed server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, fixture_file, write_config

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Tiny Feed</title><link>https://t.example/</link>
<description>d</description><item><title>One</title><link>https://t.example/1</link><guid>1</guid>
<description>&lt;p&gt;first&lt;/p&gt;</description></item><item><title>Two</title><link>https://t.example/2</link>
<guid>2</guid><description>&lt;p&gt;second&lt;/p&gt;</description></item></channel></rss>"""


def run(config, *args, check=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("AGGREGATOR_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), *args],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "config.toml", [])


def test_help_on_every_command_has_an_example(config):
    from aggregator.cli import cli

    for name in cli.commands:
        out = run(config, name, "--help", check=0).stdout
        assert "Example" in out, name


def test_add_source_good_feed_then_duplicates(config, server):
    server.add("/tiny.xml", RSS)
    original = config.read_text(encoding="utf-8")
    p = run(config, "add-source", server.url("/tiny.xml"), "--name", "Tiny", "--category", "编程", "--channel", "资讯", check=0)
    assert "Tiny Feed" in p.stdout and "2 items" in p.stdout
    assert server.hits["/tiny.xml"] == 1  # one GET
    text = config.read_text(encoding="utf-8")
    assert text.startswith(original) and 'name = "Tiny"' in text and 'channel = "资讯"' in text
    p = run(config, "add-source", server.url("/other.xml"), "--name", "Tiny", "--category", "x", check=2)
    assert "already exists" in p.stderr
    p = run(config, "add-source", server.url("/tiny.xml"), "--name", "Tiny2", "--category", "x", check=2)
    assert "already the source 'Tiny'" in p.stderr
    assert server.hits["/tiny.xml"] == 1  # duplicates are refused before any fetch


def test_add_source_stores_what_it_fetched_so_the_first_poll_is_conditional(config, server, tmp_path):
    server.add("/tiny.xml", RSS)
    p = run(config, "add-source", server.url("/tiny.xml"), "--name", "Tiny", "--category", "c", check=0)
    assert "Stored 2 new articles" in p.stdout
    assert len(list((tmp_path / "out" / "posts").glob("*.md"))) == 2
    p = run(config, "poll", check=0)
    assert "not modified" in p.stdout
    assert server.hits["/tiny.xml"] == 2  # the check's GET, then one conditional GET answered 304
    assert "if-none-match" in server.requests[-1].headers


def test_add_source_discovers_feed_from_html_page(config, server):
    server.add("/tiny.xml", RSS)
    page = b'<html><head><link rel="alternate" type="application/rss+xml" title="RSS" href="/tiny.xml"></head><body>blog</body></html>'
    server.add("/blog/", page, content_type="text/html; charset=utf-8")
    p = run(config, "add-source", server.url("/blog/"), "--name", "Blog", "--category", "c", check=0)
    assert "advertises the feed" in p.stdout and server.url("/tiny.xml") in p.stdout
    assert f'url = "{server.url("/tiny.xml")}"' in config.read_text(encoding="utf-8")


def test_add_source_refuses_a_non_feed(config, server):
    server.add("/page", b"<html><body>no feed here</body></html>", content_type="text/html")
    server.add("/text", b"hello world", content_type="text/plain")
    before = config.read_text(encoding="utf-8")
    p = run(config, "add-source", server.url("/page"), "--name", "P", "--category", "c", check=1)
    assert "advertises no feed" in p.stderr
    p = run(config, "add-source", server.url("/text"), "--name", "T", "--category", "c", check=1)
    assert "error:" in p.stderr and "T" in p.stderr
    assert config.read_text(encoding="utf-8") == before
    run(config, "add-source", server.url("/text"), "--name", "T", "--category", "c", "--no-check", check=0)


def test_poll_list_publish_remove(config, server, tmp_path):
    server.add("/tiny.xml", RSS)
    server.add("/cls.xml", fixture_file("cls-depth.rss.xml").read_bytes())
    run(config, "add-source", server.url("/tiny.xml"), "--name", "Tiny", "--category", "编程", check=0)
    run(config, "add-source", server.url("/cls.xml"), "--name", "财联社", "--category", "金融", "--channel", "深度", "--interval", "10m", check=0)
    run(config, "add-source", server.url("/broken.xml"), "--name", "Broken", "--category", "编程", "--no-check", check=0)
    p = run(config, "poll", check=0)  # a failing source does not make poll fail
    assert "Tiny" in p.stdout and "Broken" in p.stdout and "404" in p.stdout
    posts = tmp_path / "out" / "posts"
    assert len(list(posts.glob("*.md"))) == 3
    rows = json.loads(run(config, "list-sources", "--json", check=0).stdout)
    assert [r["name"] for r in rows] == ["Tiny", "财联社", "Broken"]
    for r in rows:
        # the documented keys scripts rely on (more may follow)
        assert {"name", "url", "category", "channel", "interval", "state", "last_success", "last_error", "articles"} <= set(r)
    by = {r["name"]: r for r in rows}
    assert by["Tiny"]["state"] == "ok" and by["Tiny"]["articles"] == 2 and by["Tiny"]["last_success"]
    assert by["财联社"]["interval"] == "10m" and by["财联社"]["channel"] == "深度"
    assert by["Broken"]["state"] == "failing" and "404" in by["Broken"]["last_error"]
    table = run(config, "list-sources", check=0).stdout
    assert "财联社" in table and "failing" in table
    p = run(config, "poll", "Tiny", check=0)
    assert "not modified" in p.stdout
    run(config, "poll", "Nobody", check=2)
    run(config, "publish", check=0)
    # a deleted post comes back with publish; an edited one only with --all-posts
    victim, edited = sorted(posts.glob("*.md"))[:2]
    victim.unlink()
    original = edited.read_text(encoding="utf-8")
    edited.write_text("local edit", encoding="utf-8")
    run(config, "publish", check=0)
    assert victim.exists() and edited.read_text(encoding="utf-8") == "local edit"
    run(config, "publish", "--all-posts", check=0)
    assert edited.read_text(encoding="utf-8") == original
    run(config, "remove-source", "Tiny", check=0)
    assert "Tiny" not in [r["name"] for r in json.loads(run(config, "list-sources", "--json", check=0).stdout)]
    assert len(list(posts.glob("*.md"))) == 3  # articles stay without --purge
    run(config, "remove-source", "财联社", "--purge", check=0)
    assert len(list(posts.glob("*.md"))) == 2
    run(config, "remove-source", "Nobody", check=2)


@pytest.mark.parametrize("text, key", [
    ("bogus = 1\n", "bogus"),
    ('concurrency = "many"\n', "concurrency"),
    ('[[sources]]\nname = "a"\nurl = "https://a/"\ncategory = "c"\ninterval = "often"\n', "interval"),
])
def test_config_errors_exit_2_naming_the_key(tmp_path, text, key):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text, encoding="utf-8")
    for cmd in (["poll"], ["list-sources"], ["publish"]):
        p = run(cfg, *cmd, check=2)
        assert key in p.stderr and str(cfg) in p.stderr
        assert "Traceback" not in p.stderr


def test_missing_config_exits_2(tmp_path):
    p = run(tmp_path / "absent.toml", "poll", check=2)
    assert "config file not found" in p.stderr


def test_run_daemon_polls_at_start_and_stops_on_sigterm(config, server, tmp_path):
    import signal
    import time

    server.add("/tiny.xml", RSS)
    run(config, "add-source", server.url("/tiny.xml"), "--name", "Tiny", "--category", "c", "--no-check", check=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(config), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    posts = tmp_path / "out" / "posts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(posts.glob("*.md"))) < 2:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(list(posts.glob("*.md"))) == 2
    assert "poll Tiny: 2 new" in err
    assert (tmp_path / "out" / "index.opml").exists()


def test_poll_due_include_gone_and_update_moved(config, server):
    server.add("/tiny.xml", RSS)
    server.add("/gone.xml", b"gone", status=410, content_type="text/plain")
    server.add("/new.xml", RSS.replace(b"Tiny Feed", b"Moved Feed").replace(b"<guid>", b"<guid>m"))
    server.redirect("/old.xml", server.url("/new.xml"), status=301)
    for name, path in (("Tiny", "/tiny.xml"), ("Gone", "/gone.xml"), ("Moved", "/old.xml")):
        run(config, "add-source", server.url(path), "--name", name, "--category", "c", "--no-check", check=0)
    p = run(config, "poll", check=0)
    assert "gone" in p.stdout and "moved permanently" in p.stdout
    hits = dict(server.hits)
    p = run(config, "poll", "--due", check=0)  # nothing is due yet: nothing is fetched
    assert server.hits == hits and "not due yet" in p.stdout
    run(config, "poll", check=0)
    assert server.hits["/gone.xml"] == hits["/gone.xml"]  # gone: not asked again
    run(config, "poll", "Gone", "--include-gone", check=0)
    assert server.hits["/gone.xml"] == hits["/gone.xml"] + 1
    rows = {r["name"]: r for r in json.loads(run(config, "list-sources", "--json", check=0).stdout)}
    assert rows["Gone"]["state"] == "gone" and rows["Moved"]["moved_to"] == server.url("/new.xml")
    p = run(config, "poll", "Moved", "--update-moved", check=0)
    assert f'url = "{server.url("/new.xml")}"' in config.read_text(encoding="utf-8")


def test_a_warm_poll_imports_no_parser_or_html_stack(tmp_path, server):
    """Start-up is most of a cycle where every source answers 304 (issue 8): a warm poll
    process must not import feedparser, lxml, bs4, trafilatura, sqlite-utils (only the schema
    needs it), the worker pool or our parse stage, even
    with full-text and RSSHub sources configured."""
    server.add("/t.xml", RSS)
    path = write_config(tmp_path / "config.toml", [
        {"name": "T", "url": server.url("/t.xml"), "category": "news", "fulltext": "auto"},
        {"name": "R", "url": "rsshub://tiny/feed", "category": "news"}], rsshub_instances=[server.url("/").rstrip("/")])
    server.add("/tiny/feed", RSS.replace(b"Tiny Feed", b"Tiny Route"))
    run(path, "poll", check=0)  # cold: parses, stores, publishes
    probe = (
        "import sys\n"
        "from aggregator.cli import cli as main\n"
        "try:\n"
        f"    main(['--config', {str(path)!r}, 'poll'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = ('feedparser', 'lxml', 'bs4', 'trafilatura', 'sqlite_utils',"
        " 'aggregator.parse', 'aggregator.fulltext', 'aggregator.work')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AGGREGATOR_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "2 sources, 0 failed; 0 new" in out.stdout, out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_add_source_writes_fulltext_settings_and_refuses_a_bad_selector(config):
    out = run(config, "add-source", "https://example.org/feed.xml", "--name", "Ex", "--category", "tech",
              "--fulltext", "auto", "--content-selector", "article .body", "--no-check", check=0)
    assert "Added 'Ex'" in out.stdout
    from aggregator.config import load_config

    (source,) = load_config(config).sources
    assert source.fulltext.mode == "auto" and source.fulltext.content_selector == "article .body"
    bad = run(config, "add-source", "https://example.org/other.xml", "--name", "Bad", "--category", "tech",
              "--fulltext", "always", "--content-selector", "div[[[", "--no-check", check=2)
    assert "invalid CSS selector" in bad.stderr and "Bad" not in config.read_text(encoding="utf-8")
    nofull = run(config, "add-source", "https://example.org/third.xml", "--name", "Third", "--category", "tech",
                 "--content-selector", "#main", "--no-check", check=2)
    assert 'need fulltext = "always" or "auto"' in nofull.stderr
