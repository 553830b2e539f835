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

from aggregator.publish.atomic import write_atomic
from aggregator.publish.feeds import render_atom, render_rss
from aggregator.publish.opml import render_opml
from aggregator.publish.pages import EPOCH, FeedDef, IndexEntry, Page, Site
from aggregator.publish.plan import PageJob, SitePlan, feed_def, plan_site, slug
from aggregator.publish.posts import post_name, render_post, write_post
from aggregator.publish.site import SiteResult, publish_site

__all__ = [
    "EPOCH",
    "FeedDef",
    "IndexEntry",
    "Page",
    "PageJob",
    "Site",
    "SitePlan",
    "SiteResult",
    "feed_def",
    "plan_site",
    "post_name",
    "publish_site",
    "render_atom",
    "render_opml",
    "render_post",
    "render_rss",
    "slug",
    "write_atomic",
    "write_post",
]
