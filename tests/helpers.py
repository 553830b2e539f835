"""Small readers and fakes used by several test files (not part of the product): our output
read back, a numbered test feed, and systemd's end of sd_notify."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path
from urllib.parse import unquote

import feedparser
import frontmatter
from lxml import etree


def feed_files(output_dir: Path, base_url: str) -> list[Path]:
    """Every feed listed in index.opml (its RSS document) and its Atom twin, as files
    under output_dir (the OPML is how people find our feeds, so the tests find them the
    same way; the JSON Feed twin is checked by the JSON tests)."""
    tree = etree.parse(str(output_dir / "index.opml"))
    files = []
    for outline in tree.iter("outline"):
        url = outline.get("xmlUrl")
        if url:
            assert url.startswith(base_url) and url.endswith(".rss.xml"), url
            rss = output_dir / unquote(url[len(base_url):])
            files += [rss, rss.with_name(rss.name.removesuffix(".rss.xml") + ".atom.xml")]
    return files


def parse_output_feed(path: Path):
    return feedparser.parse(io.BytesIO(path.read_bytes()), sanitize_html=False, resolve_relative_uris=False)


def load_post(path: Path):
    return frontmatter.loads(path.read_text(encoding="utf-8"))


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


_RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>{name}</title><link>https://{name}.example/</link><description>d</description>
{items}</channel></rss>"""
_ITEM = """<item><title>{name} story {n}</title><link>https://{name}.example/{n}</link><guid>{name}-{n}</guid>
<pubDate>Tue, 24 Nov 2026 {n:02d}:00:00 GMT</pubDate><description><![CDATA[<p>{name} body {n}</p>]]></description></item>
"""


def numbered_feed(name: str, count: int) -> bytes:
    """An RSS feed ``name`` with items 1..count ("<name> story <n>", guid "<name>-<n>")."""
    return _RSS.format(name=name, items="".join(_ITEM.format(name=name, n=n) for n in range(1, count + 1))).encode()


class Systemd:
    """The notification side of systemd: a datagram socket that collects what arrives."""

    def __init__(self, folder: Path):
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def collect(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                return
            self.messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))

    def wait_for(self, key: str, value: str | None = None, *, after: int = 0, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages[after:]:
                if key in m and (value is None or m[key] == value):
                    return m
            self.collect()
        raise AssertionError(f"no {key}={value} from the daemon within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()
