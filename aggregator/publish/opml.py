"""``index.opml``: an OPML 2.0 subscription list of every published feed.

Owns: the bytes of that list. Must not: read the clock (no ``dateCreated`` /
``dateModified``: the file changes only when the set of feeds or the site changes).

Decisions:

- one folder outline per axis ("Everything", "By category", "By source", "By channel",
  "Custom feeds"; empty ones left out), so Miniflux / FreshRSS / reader imports keep the
  grouping as their own categories;
- one ``<outline type="rss">`` per feed: its RSS 2.0 document. Listing the Atom and JSON
  twins too would subscribe an importer to every story three times; readers that prefer
  Atom find it from ``index.html`` (``<link rel="alternate">``) or by the file name;
- ``text`` and ``title`` are the feed's own title; ``htmlUrl`` is the index page.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from aggregator.publish.pages import AXES, IndexEntry, Site
from aggregator.text import strip_illegal_chars

OPML_SPEC = "http://opml.org/spec2.opml"
OPML_NAME = "index.opml"
AXIS_TITLES = {
    "all": "Everything",
    "category": "By category",
    "source": "By source",
    "channel": "By channel",
    "custom": "Custom feeds",
}


def render_opml(entries: Sequence[IndexEntry], site: Site) -> bytes:
    """Entries are listed in the order given within their axis (the plan sorts them)."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = strip_illegal_chars(site.title)
    etree.SubElement(head, "docs").text = OPML_SPEC
    body = etree.SubElement(root, "body")
    for axis in AXES:
        chosen = [e for e in entries if e.feed.axis == axis]
        if not chosen:
            continue
        folder = etree.SubElement(body, "outline")
        folder.set("text", AXIS_TITLES[axis])
        folder.set("title", AXIS_TITLES[axis])
        for entry in chosen:
            outline = etree.SubElement(folder, "outline")
            # lxml keeps attributes in the order set: fixed order, stable bytes.
            outline.set("type", "rss")
            outline.set("version", "RSS")
            outline.set("text", entry.feed.title)
            outline.set("title", entry.feed.title)
            outline.set("xmlUrl", site.url(entry.feed.path("rss")))
            outline.set("htmlUrl", site.url("index.html"))
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
