"""The publish stage: stored articles -> files under the output folder.

    <output_dir>/posts/<post_name>            Hexo-style article (posts.py)
    <output_dir>/category/<slug>.rss.xml      RSS 2.0, newest ``limit`` items (feeds.py)
    <output_dir>/category/<slug>.atom.xml     Atom 1.0, same items (feeds.py)
    <output_dir>/index.opml                   every category feed (opml.py)

Owns: everything that turns a :class:`~aggregator.models.StoredArticle` into bytes on
disk, and the only code that imports feedgen, python-frontmatter and PyYAML for output.
Every file is written atomically and only when its bytes change (atomic.py).

Must not: query the database (it receives articles), read the clock (dates come from the
articles; an empty feed is dated 1970-01-01), or clean HTML (bodies arrive cleaned).
Call it from one thread: feedgen switches the process-wide locale while formatting dates.
"""

from aggregator.publish.atomic import write_atomic
from aggregator.publish.feeds import (
    EPOCH,
    FeedSpec,
    PublishResult,
    feed_spec,
    publish,
    render_atom,
    render_rss,
)
from aggregator.publish.opml import render_opml
from aggregator.publish.posts import post_name, render_post, write_post

__all__ = [
    "EPOCH",
    "FeedSpec",
    "PublishResult",
    "feed_spec",
    "post_name",
    "publish",
    "render_atom",
    "render_opml",
    "render_post",
    "render_rss",
    "write_atomic",
    "write_post",
]
