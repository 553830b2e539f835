"""Take the picture of ``index.html`` shown in the docs: ``docs/index-screenshot.png``.

Usage (from the repository root, with the project installed in ``.venv``)::

    .venv/bin/python docs/screenshot.py                   # writes docs/index-screenshot.png
    .venv/bin/python docs/screenshot.py --out /tmp/x.png --width 390 --height 844 --dark

The page is rendered by ``render_index_html`` from a sample index built out of the demo's
own data (``aggregator/demo/demo.toml`` and the sample feeds beside it): its real
categories, sources and channels, item counts and newest dates read from the sample
feeds with the project's parser, plus one ``[[feeds]]`` rule, so every kind of section
shows. Headless Chromium then takes the screenshot; nothing is fetched from the network.

Needs Debian's ``chromium`` (``apt-get install chromium``, or set ``$CHROMIUM`` to a
Chromium binary); the Chinese sample names need a CJK font (``apt-get install
fonts-noto-cjk``), without which they show as boxes. The picture is meant to stay small
(< 200 KB) since it is committed.

``find_chromium`` and ``screenshot`` are also used by ``tests/test_index_html.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from aggregator.demo import FEEDS, HERE
from aggregator.parse import parse_feed
from aggregator.publish.index_html import render_index_html
from aggregator.publish.pages import IndexEntry, Site
from aggregator.publish.plan import feed_def

OUT = Path(__file__).resolve().parent / "index-screenshot.png"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
TIMEOUT = 60  # seconds for one Chromium run: a cold start on a loaded 2-core machine takes a few
LIMIT = 50
#: the [[feeds]] rule the sample adds: (name, title, categories it selects)
SAMPLE_RULE = ("engineering", "Engineering reading list", ("编程",))


def find_chromium() -> str | None:
    """``$CHROMIUM`` if set, else the first of ``chromium`` / ``chromium-browser`` on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def chromium(binary: str, page: Path, *args: str, profile: Path, timeout: float = TIMEOUT) -> str:
    """Run headless Chromium once on ``page`` with ``args`` (``--screenshot=…``,
    ``--dump-dom``) and return its standard output.

    ``--no-sandbox``: the sandbox needs user namespaces, which containers and CI (running
    as root) often lack. A private ``--user-data-dir`` keeps runs from sharing (or
    locking) a profile. The page is a local file that loads nothing, and Chromium's own
    background traffic (component updates, metrics, safe browsing) is switched off and
    every host name made unresolvable, so a run never reaches the network.
    Raises ``subprocess.CalledProcessError`` / ``TimeoutExpired``.
    """
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-domain-reliability", "--no-pings", "--disable-breakpad",
               "--host-resolver-rules=MAP * ~NOTFOUND",
               f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def screenshot(binary: str, page: Path, png: Path, *, width: int = 1280, height: int = 900,
               dark: bool = False, profile: Path) -> None:
    """A ``width`` x ``height`` PNG of ``page`` (the viewport, not the full page)."""
    args = [f"--screenshot={png.resolve()}", f"--window-size={width},{height}"]
    if dark:
        args.append("--force-dark-mode")  # prefers-color-scheme: dark
    chromium(binary, page, *args, profile=profile)


def _newest(times: Sequence[datetime | None]) -> datetime | None:
    return max((t for t in times if t is not None), default=None)


def sample_entries() -> tuple[list[IndexEntry], Site]:
    """The index the demo's data would give: one feed per category, source and channel
    of ``demo.toml``, "all", and the ``SAMPLE_RULE`` custom feed."""
    config = tomllib.loads((HERE / "demo.toml").read_text(encoding="utf-8"))
    site = Site(base_url=config["base_url"], title=config["site_title"])
    # per source: (category, channel, dates of its items); an undated item still counts
    per_source: dict[str, tuple[str, str | None, list[datetime | None]]] = {}
    for source in config["sources"]:
        path = FEEDS / Path(urlsplit(source["url"]).path).name
        parsed = parse_feed(path.read_bytes(), {}, source["url"], source=source["name"])
        dates = [e.updated or e.published for e in parsed.entries]
        per_source[source["name"]] = (source["category"], source.get("channel"), dates)

    def entry(axis: str, key: str, picked: list[str], title: str | None = None) -> IndexEntry:
        dates = [d for name in picked for d in per_source[name][2]]
        feed = feed_def(axis, key, site_title=site.title, limit=LIMIT, ttl=5, title=title)
        return IndexEntry(feed=feed, items=len(dates), updated=_newest(dates))

    entries = [entry("all", "", list(per_source))]
    for name in per_source:
        entries.append(entry("source", name, [name]))
    for category in sorted({c for c, _, _ in per_source.values()}):
        entries.append(entry("category", category, [n for n, (c, _, _) in per_source.items() if c == category]))
    for channel in sorted({ch for _, ch, _ in per_source.values() if ch}):
        entries.append(entry("channel", channel, [n for n, (_, ch, _) in per_source.items() if ch == channel]))
    rule_name, rule_title, rule_categories = SAMPLE_RULE
    entries.append(entry("custom", rule_name, [n for n, (c, _, _) in per_source.items() if c in rule_categories],
                         title=rule_title))
    return entries, site


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot a sample index.html with headless Chromium.")
    parser.add_argument("--out", type=Path, default=OUT, help="PNG to write (default docs/index-screenshot.png)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1240)  # the whole sample page
    parser.add_argument("--dark", action="store_true", help="prefers-color-scheme: dark")
    parser.add_argument("--html", type=Path, help="also keep the rendered page here")
    options = parser.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print("chromium not installed (apt-get install chromium), or set $CHROMIUM", file=sys.stderr)
        return 1
    entries, site = sample_entries()
    page = render_index_html(entries, site)
    with tempfile.TemporaryDirectory(prefix="aggregator-screenshot-") as tmp:
        html_path = Path(tmp) / "index.html"
        html_path.write_bytes(page)
        if options.html:
            options.html.write_bytes(page)
        screenshot(binary, html_path, options.out, width=options.width, height=options.height,
                   dark=options.dark, profile=Path(tmp) / "profile")
    print(f"{options.out}: {options.out.stat().st_size:,} bytes, {len(entries)} feeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
