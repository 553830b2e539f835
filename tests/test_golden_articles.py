"""Golden cases as files: input item -> expected post and expected feed entries.

Each folder under tests/golden/articles/ holds ``feed.xml`` (one item, written for the
case), ``source.toml`` (the source's settings) and the expected outputs: ``post.md``,
``entry.rss.xml`` (the item of its category's RSS feed) and ``entry.atom.xml``. The whole
real pipeline runs (loopback server, SQLite, files) under a pinned clock. After a
deliberate change, regenerate with ``UPDATE_GOLDEN=1`` and read the diff before committing.
(The seed article itself is checked against ../shared/fixtures in test_pipeline.py.)
"""

from __future__ import annotations

import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from aggregator.config import load_config
from aggregator.pipeline import Pipeline
from tests.conftest import write_config
from tests.helpers import feed_files
from tests.test_posts_equivalence import pyyaml_post

GOLDEN = Path(__file__).parent / "golden" / "articles"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "feed.xml").is_file())
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BASE = "https://feeds.example.org/"


def _entry(path: Path, tag: str) -> bytes:
    root = etree.parse(str(path)).getroot()
    found = [e for e in root.iter() if isinstance(e.tag, str) and etree.QName(e).localname == tag]
    assert len(found) == 1, f"{path}: expected one <{tag}>"
    return etree.tostring(found[0], encoding="utf-8", pretty_print=True)


def _check(path: Path, data: bytes) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(data)
    assert path.is_file(), f"{path} missing: run with UPDATE_GOLDEN=1 and review it"
    assert data == path.read_bytes(), f"{path.name} differs from the golden file"


@pytest.mark.parametrize("case", CASES)
def test_golden_article(case, tmp_path, server):
    folder = GOLDEN / case
    source = tomllib.loads((folder / "source.toml").read_text(encoding="utf-8"))
    server.add(f"/{case}.xml", (folder / "feed.xml").read_bytes())
    cfg = load_config(write_config(tmp_path / "config.toml", [{**source, "url": server.url(f"/{case}.xml")}], base_url=BASE))
    with Pipeline(cfg, clock=lambda: NOW) as p:
        cycle = p.poll()
    assert cycle.results[0].error is None, cycle.results[0].error
    posts = list(cfg.posts_dir.glob("*.md"))
    assert len(posts) == 1
    _check(folder / "post.md", posts[0].read_bytes())
    files = feed_files(cfg.output_dir, BASE)
    rss = next(f for f in files if f.name.endswith(".rss.xml"))
    atom = next(f for f in files if f.name.endswith(".atom.xml"))
    # the source's feed URL (RSS/Atom <source>) carries the loopback server's random port
    upstream = server.url("/").encode()
    _check(folder / "entry.rss.xml", _entry(rss, "item").replace(upstream, b"http://upstream.test/"))
    _check(folder / "entry.atom.xml", _entry(atom, "entry").replace(upstream, b"http://upstream.test/"))


@pytest.mark.parametrize("case", CASES)
def test_golden_post_is_what_pyyaml_writes(case):
    # render_post writes its front matter without PyYAML (issue 8); every golden post,
    # whenever it is regenerated, must still be exactly PyYAML's text for its values.
    text = (GOLDEN / case / "post.md").read_text(encoding="utf-8")
    assert pyyaml_post(text) == text
