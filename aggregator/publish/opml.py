"""``index.opml``: an OPML 2.0 subscription list of every published category feed.

Owns: the bytes of that list. Must not: read the clock (no ``dateCreated`` /
``dateModified``: the file changes only when the set of feeds or the site changes).

Decisions:

- two ``<outline type="rss">`` per category, in the order given (``publish`` sorts them):
  the RSS 2.0 file (``version="RSS"``), then its Atom twin (``version="Atom"``; OPML 2.0
  §"type rss" allows any value there and names none for Atom). A reader that imports the
  whole list subscribes to both; people pick one, and ``tests/helpers.feed_files`` finds
  every published feed through this list.
- ``text`` and ``title`` are the feed's own title (``site · category``), with " (Atom)"
  added to the twin so the two can be told apart; ``htmlUrl`` is the site (``base_url``).
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from aggregator.publish.feeds import FeedSpec, feed_title, site_url
from aggregator.publish.posts import strip_illegal_chars

OPML_SPEC = "http://opml.org/spec2.opml"


def render_opml(specs: Sequence[FeedSpec], base_url: str, site_title: str) -> bytes:
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = strip_illegal_chars(site_title)
    etree.SubElement(head, "docs").text = OPML_SPEC
    body = etree.SubElement(root, "body")
    for spec in specs:
        title = feed_title(spec, site_title)
        for text, path, version in ((title, spec.rss_path, "RSS"),
                                    (f"{title} (Atom)", spec.atom_path, "Atom")):
            outline = etree.SubElement(body, "outline")
            # lxml keeps attributes in the order set: fixed order, stable bytes.
            outline.set("type", "rss")
            outline.set("version", version)
            outline.set("text", text)
            outline.set("title", text)
            outline.set("xmlUrl", site_url(base_url, path))
            outline.set("htmlUrl", site_url(base_url))
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
