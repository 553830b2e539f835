"""The publish stage: stored articles -> files under the output folder.

    <output_dir>/posts/<post_name>                  Hexo-style article (posts.py)
    <output_dir>/<stem>.rss.xml .atom.xml .json     one feed, three formats (feeds.py,
                                                    json_feed.py); stems in pages.py
    <output_dir>/archive/<stem>/<n>.*               RFC 5005 archive pages
    <output_dir>/index.opml  index.html             every feed (opml.py, index_html.py)

``plan.py`` decides which feeds and pages exist and which changed; ``site.py`` renders,
validates (validate.py) and writes them; ``websub.py`` tells a hub what changed.

Owns: everything that turns a :class:`~aggregator.models.StoredArticle` into bytes on
disk, and the only code that imports feedgen and python-frontmatter (whose YAML handler
is ours: posts.py writes the fixed front matter itself, byte-identical to PyYAML's).
Every file is written atomically and only when its bytes change (atomic.py).

Must not: query the database (it receives articles), read the clock (dates come from the
articles; an empty feed is dated 1970-01-01), or clean HTML (bodies arrive cleaned).
Call it from one thread: feedgen switches the process-wide locale while formatting dates.
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aggregator.publish.atomic import write_atomic
    from aggregator.publish.feeds import render_atom, render_rss
    from aggregator.publish.opml import render_opml
    from aggregator.publish.pages import EPOCH, FeedDef, IndexEntry, Page, Site
    from aggregator.publish.plan import PageJob, SitePlan, feed_def, plan_site, slug
    from aggregator.publish.posts import post_name, render_post, write_post
    from aggregator.publish.site import SiteResult, publish_site

# Each name's module, imported when the name is first used (PEP 562): a publish worker
# process that renders RSS or Atom imports feeds.py and site.py, not the posts' YAML stack
# (python-frontmatter, PyYAML) nor the modules it does not run.
_MODULE_OF = {
    "EPOCH": "pages", "FeedDef": "pages", "IndexEntry": "pages", "Page": "pages", "Site": "pages",
    "PageJob": "plan", "SitePlan": "plan", "feed_def": "plan", "plan_site": "plan", "slug": "plan",
    "SiteResult": "site", "publish_site": "site", "post_name": "posts", "render_post": "posts",
    "write_post": "posts", "render_atom": "feeds", "render_rss": "feeds", "render_opml": "opml",
    "write_atomic": "atomic",
}
__all__ = [
    "EPOCH", "FeedDef", "IndexEntry", "Page", "PageJob", "Site", "SitePlan", "SiteResult", "feed_def", "plan_site",
    "post_name", "publish_site", "render_atom", "render_opml", "render_post", "render_rss", "slug", "write_atomic",
    "write_post",
]


def __getattr__(name: str):
    try:
        module = _MODULE_OF[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
