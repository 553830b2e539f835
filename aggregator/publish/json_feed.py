"""JSON Feed 1.1 documents (https://www.jsonfeed.org/version/1.1/) of one feed page.

Owns: the bytes of one page as JSON Feed (``render_json``; ``compose_json`` gives them as
parts, each item serialised once per publish run), the twin of the RSS and Atom
documents ``feeds.py`` writes for the same page (see ``pages.py`` for the layout).

Must not: query the database, read the clock, write files, or clean HTML (bodies arrive
cleaned). Same page in -> byte-identical bytes out.

Decisions (the same facts as the XML twins, in JSON Feed's words):

- top level: ``home_page_url`` is the site's ``index.html``, the page the RSS/Atom
  ``rel="alternate"`` links name (the spec asks for an HTML page, and a bare folder URL is
  not one on every static host); ``feed_url`` is this document's own URL; ``authors`` is
  the site, as the Atom feed-level author; ``hubs`` names the WebSub hub when configured.
  No ``language``: a feed mixes sources in several languages. No ``expired``: absent means
  "may still update", which is true of every page (an archive page's items can be edited);
- pagination: JSON Feed's ``next_url`` goes from newer to older items, so it is the RFC
  5005 ``prev-archive`` link: the current document points at the newest archive page,
  archive page n at page n - 1, and page 1 (the oldest) has none. A reader following
  ``next_url`` backfills the whole history, as it would with the XML ``prev-archive``;
- archive pages also carry ``_archive`` (an extension: JSON Feed lets publishers add
  objects whose names start with ``_``; readers ignore what they do not know) with the
  ``current`` document's URL and the ``next_archive`` / ``prev_archive`` pages. It is
  the ``<fh:archive/>`` marker and the ``current`` link of the XML twins: without it a
  reader handed an archive page has no way to find the document to subscribe to.
  The current document needs none (its ``next_url`` says all there is);
- items: the order and identity of the XML twins (date desc, id desc, re-sorted here so
  the formats agree whatever order the caller used; ``id`` is ``article.feed_id``, the
  RSS guid / Atom id); ``content_html`` is the cleaned body, ``summary`` the plain-text
  excerpt (plain text in JSON Feed too), ``image`` the item's own image
  (``feed_image_url``: never the placeholder), dates are RFC 3339 in UTC with ``Z``
  (seconds: the stored precision), ``authors`` the article's author (else its source, as
  the XML twins do), ``tags`` its categories without repeats;
- attribution: ``_source`` names the source the article came from (``title``) and, when
  configured, its feed's URL (``feed_url``, JSON Feed's own word for a feed's address:
  a bare ``url`` would read as the source's home page), like RSS ``<source url>`` and
  Atom ``<source>``;
- every string is stripped of XML-illegal characters (``strip_illegal_chars``) like the
  XML twins, so the three formats carry the same text and a lone surrogate never reaches
  the UTF-8 encoder;
- bytes: UTF-8 (RFC 8259 §8.1), no BOM, ``ensure_ascii=False`` (readable CJK), compact
  (no indent: json's C encoder is used only then, ~4x faster on a full rebuild), keys in
  the fixed order they are built in, one trailing newline.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aggregator.models import StoredArticle
from aggregator.publish.feeds import GENERATOR, UNTITLED, feed_image_url
from aggregator.publish.pages import Composed, Page, Site
from aggregator.text import strip_illegal_chars

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
HOME_PAGE = "index.html"


def render_json(page: Page, site: Site, cache: dict[int, bytes] | None = None) -> bytes:
    """JSON Feed 1.1 of one page (its items newest first: the plan applies the limit).
    ``cache``: see ``compose_json``."""
    return compose_json(page, site, cache).data


def compose_json(page: Page, site: Site, cache: dict[int, bytes] | None = None) -> Composed:
    """``render_json`` as parts: the document without items, and each item's bytes.
    ``cache``: article id -> item bytes, one dict per publish run shared by its pages (an
    article is in several feeds; valid while the article and the site do not change).
    Joining compact JSON is exactly what ``json.dumps`` of the whole would write."""
    links = {rel: site.url(path) for rel, path in page.links("json").items()}
    doc: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": strip_illegal_chars(page.feed.title),
        "home_page_url": site.url(HOME_PAGE),
        "feed_url": links["self"],
        "description": strip_illegal_chars(page.feed.description),
        "authors": [{"name": strip_illegal_chars(site.title).strip() or GENERATOR}],
    }
    if site.hub:
        doc["hubs"] = [{"type": "WebSub", "url": strip_illegal_chars(site.hub)}]
    if "prev-archive" in links:
        doc["next_url"] = links["prev-archive"]
    if page.is_archive:
        archive = {"current": links["current"]}
        for rel in ("next-archive", "prev-archive"):
            if rel in links:
                archive[rel.replace("-", "_")] = links[rel]
        doc["_archive"] = archive
    doc["items"] = []
    if cache is None:
        cache = {}
    items = [json_entry(article, site, cache) for article in _newest_first(page.items)]
    # items is the last member: the envelope ends with "items":[]} -- cut between the brackets
    return Composed(head=_dumps(doc)[:-2], items=tuple(items), tail=b"]}\n", separator=b",")


def json_entry(article: StoredArticle, site: Site, cache: dict[int, bytes]) -> bytes:
    """The article's item as ``compose_json`` joins it, from ``cache`` or rendered into it."""
    item = cache.get(article.id)
    if item is None:
        item = cache[article.id] = _dumps(_item(article, site))
    return item


def _dumps(value: dict[str, Any]) -> bytes:
    # Compact: json's C encoder is used only without ``indent`` (4x faster on a full
    # rebuild); feeds are read by programs, and `jq .` pretty-prints one for people.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _item(article: StoredArticle, site: Site) -> dict[str, Any]:
    item: dict[str, Any] = {"id": article.feed_id}
    if article.link:
        item["url"] = strip_illegal_chars(article.link)
    item["title"] = strip_illegal_chars(article.title).strip() or UNTITLED
    item["content_html"] = strip_illegal_chars(article.body_html)
    summary = strip_illegal_chars(article.summary).strip()
    if summary:
        item["summary"] = summary
    image = feed_image_url(article.image)
    if image:
        item["image"] = image
    item["date_published"] = rfc3339(article.date)
    item["date_modified"] = rfc3339(article.updated)
    author = strip_illegal_chars(article.author).strip() or strip_illegal_chars(article.source).strip()
    if author:
        item["authors"] = [{"name": author}]
    tags = list(dict.fromkeys(t for t in (strip_illegal_chars(c).strip() for c in article.categories) if t))
    if tags:
        item["tags"] = tags
    source = strip_illegal_chars(article.source).strip()
    if source:
        item["_source"] = {"title": source}
        feed_url = site.source_urls.get(article.source)
        if feed_url:
            item["_source"]["feed_url"] = strip_illegal_chars(feed_url)
    return item


def rfc3339(moment: datetime) -> str:
    """``2021-11-10T11:50:52Z``: UTC, whole seconds, four-digit year (naive means UTC)."""
    return _utc(moment).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # models promise aware UTC; a naive value is taken as UTC
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _newest_first(articles: tuple[StoredArticle, ...]) -> list[StoredArticle]:
    return sorted(articles, key=lambda a: (_utc(a.date), a.id), reverse=True)
