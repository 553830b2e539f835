"""Hexo-style article files: YAML front matter + one HTML block, in the seed's format.

Owns: the text of ``<output_dir>/posts/<post_name>`` for one :class:`StoredArticle`
(``render_post``), writing it atomically (``write_post``), and the rule that names the file
(``post_name``, called once by the store when an article is created).

Must not: query the database, clean HTML (the body arrives cleaned by ``aggregator.clean``),
or read the clock. Same article in, same bytes out.

The reference is ``shared/fixtures/seed-article.md``::

    ---
    title: '外交部：…'
    categories:
    - '金融'
    - '财联社'
    - '深度'
    headimg: 'https://picsum.photos/400/300?random=4854'
    author: '财联社'
    comments: false
    date: 'Wed, 10 Nov 2021 11:50:52 GMT'
    thumbnail: 'https://picsum.photos/400/300?random=4854'
    link: 'https://…'          (only when the item has one)
    ---

    <div>
    …cleaned HTML, made Hexo-safe…
    </div>
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import frontmatter

from aggregator.errors import PublishError
from aggregator.models import StoredArticle
from aggregator.publish.atomic import write_atomic
from aggregator.text import strip_illegal_chars  # the one XML-character filter of every output


def rfc822(moment: datetime) -> str:
    """``Wed, 10 Nov 2021 11:50:52 GMT``: English names whatever the locale (RFC 5322
    §3.3 via ``email.utils``, which never consults ``locale``); naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC), usegmt=True)


# --- front matter ---------------------------------------------------------------------

# The front matter's YAML is written here (a python-frontmatter handler), not by PyYAML:
# its shape is fixed (known keys, string values, one boolean), and PyYAML's pure-Python
# emitter cost ~0.3 ms per post, most of a cold poll's post writing. The text is exactly what ``yaml.dump`` with the SafeDumper,
# ``sort_keys=False``, ``allow_unicode=True``, ``default_flow_style=False`` and an
# unbounded width wrote for the same mapping (tests/test_posts_equivalence.py compares the
# bytes for hostile values and reads them back with PyYAML and python-frontmatter).
#
# Every value is quoted: Hexo reads front matter with js-yaml (YAML 1.2 core schema), where
# plain 1e3, 0o17, -.5, null, yes, 2021-11-10… would come back as numbers, null, booleans
# or dates (HAZARDS.md, "Articles and Hexo"). A quoted scalar is a string in every schema.
#
# Single quotes (as in the seed) when every character is printable and none is a line
# break; YAML 1.2 §7.3.2: the only escape is '' for '. PyYAML's printable set is
# [\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010fffe] without U+FEFF; U+2028/U+2029
# are line breaks. (A single-quoted scalar with a break would be folded over lines.)
_SINGLE_QUOTABLE = re.compile(r"[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010fffe]*")
# Anything else is double-quoted (YAML 1.2 §7.3.1), where a character outside
# [\x20-\x7e\xa0-\ud7ff\ue000-\ufffd], and ", \\, U+0085, U+2028, U+2029, U+FEFF, is
# written as an escape that PyYAML and js-yaml both read back.
_DOUBLE_ESCAPED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]")
# PyYAML's table (the C0 controls in it never get here: strip_illegal_chars drops them).
_SHORT_ESCAPES = {
    "\x00": "\\0", "\x07": "\\a", "\x08": "\\b", "\t": "\\t", "\n": "\\n", "\x0b": "\\v", "\x0c": "\\f",
    "\r": "\\r", "\x1b": "\\e", '"': '\\"', "\\": "\\\\", "\x85": "\\N", "\u2028": "\\L", "\u2029": "\\P",
}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    # PyYAML's choice of form: \xXX up to U+00FF, \uXXXX in the BMP, \UXXXXXXXX beyond.
    if code <= 0xFF:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


def _scalar(text: str) -> str:
    """``text`` (illegal characters stripped) as a quoted YAML scalar."""
    text = strip_illegal_chars(text)
    if _SINGLE_QUOTABLE.fullmatch(text):
        return "'" + text.replace("'", "''") + "'"
    return '"' + _DOUBLE_ESCAPED.sub(_escape, text) + '"'


def front_matter(article: StoredArticle) -> dict[str, object]:
    """The front-matter mapping, keys in the seed's order, then ``link``, then ``sources``
    (only for an article merged from several sources)."""
    meta: dict[str, object] = {
        "title": article.title,
        "categories": list(article.categories),
        "headimg": article.thumbnail,
        "author": article.source,  # the seed's author is the source (财联社)
        "comments": False,
        "date": rfc822(article.date),
        "thumbnail": article.thumbnail,
    }
    if article.link:
        meta["link"] = article.link
    if len(article.sources) > 1:
        # One story from several sources (issue 5): every one, first first, after the
        # seed's keys. A single-source article keeps exactly the seed's shape.
        meta["sources"] = [{"name": name, **({"link": link} if link else {})} for name, link in article.sources]
    return meta


def _yaml(meta: dict[str, object]) -> str:
    """The block-style YAML of a front-matter mapping: strings (always quoted), booleans,
    lists of strings and lists of string mappings -- the only shapes ``front_matter`` makes."""
    lines = []
    for key, value in meta.items():
        if isinstance(value, bool):
            lines.append(f"{key}: {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f"{key}: {_scalar(value)}")
        else:
            lines.append(f"{key}:")
            for item in value:  # type: ignore[union-attr]
                if isinstance(item, dict):
                    lines += [("- " if i == 0 else "  ") + f"{k}: {_scalar(v)}" for i, (k, v) in enumerate(item.items())]
                else:
                    lines.append("- " + _scalar(item))
    return "\n".join(lines)


class _FrontMatterHandler(frontmatter.YAMLHandler):
    """python-frontmatter's YAML handler with our emitter (above) in place of PyYAML's:
    python-frontmatter still owns the file's shape (delimiters, blank line, body)."""

    def export(self, metadata: dict[str, object], **kwargs: object) -> str:
        return _yaml(metadata)


_HANDLER = _FrontMatterHandler()


# --- body -----------------------------------------------------------------------------

# Elements whose text keeps its newlines: there blank lines are content, not layout.
# (Raw-text elements such as <xmp>, <script>, <style> never survive aggregator.clean.)
_WHITESPACE_TAG = re.compile(r"<(/?)(pre|textarea|listing)(?=[\s/>])[^>]*>", re.IGNORECASE)
_ASCII_BLANK_RUN = re.compile(r"\n(?:[ \t]*\n)+")
# A newline that starts a line marked.js or CommonMark could call blank: up to the next
# newline (or the end) nothing but Python's \s and U+FEFF (JS's \s).
_BLANK_LINE_START = re.compile(r"\n(?=(?:[^\S\n]|\ufeff)*(?:\n|\Z))")
# Hexo's backtick_code_block filter rewrites ``` / ~~~ fences before any renderer runs.
_FENCE = re.compile(r"([`~])(?=\1\1)")


def _collapse_blank_lines(html: str) -> str:
    """Drop whitespace-only lines outside <pre>/<textarea>: there a newline is just
    collapsible whitespace, so nothing visible changes."""
    if not _ASCII_BLANK_RUN.search(html):  # most bodies: no tag scan needed
        return html
    out: list[str] = []
    depth = 0
    pos = 0
    for tag in _WHITESPACE_TAG.finditer(html):
        chunk = html[pos : tag.start()]
        out.append(_ASCII_BLANK_RUN.sub("\n", chunk) if depth == 0 else chunk)
        out.append(tag.group(0))
        depth = max(0, depth + (-1 if tag.group(1) else 1))
        pos = tag.end()
    chunk = html[pos:]
    out.append(_ASCII_BLANK_RUN.sub("\n", chunk) if depth == 0 else chunk)
    return "".join(out)


def _join_blank_lines(html: str) -> str:
    """Turn every newline that starts a blank-looking line into ``&#10;``.

    A character reference is the same character to the HTML parser (in <pre>, in text,
    in attribute values), so the page is unchanged, but no line is blank any more. This
    pass is the guarantee; ``_collapse_blank_lines`` only keeps the common case tidy.
    """
    return _BLANK_LINE_START.sub("&#10;", html)


def hexo_body(html: str) -> str:
    """Wrap cleaned HTML as the seed does and make it inert to Hexo's pre-processors.

    - ``{`` / ``}`` become ``&#123;`` / ``&#125;`` everywhere: Nunjucks would evaluate
      ``{{ 7*7 }}`` and a stray ``{% if %}`` breaks the whole site build. HTML decodes
      the references in text and in attribute values alike.
    - no blank line: hexo-renderer-marked ends an HTML block at one, and what follows is
      Markdown (``[x](javascript:…)`` would become a live link).
    - no run of three backticks or tildes: Hexo turns fences into code blocks first.
    """
    text = strip_illegal_chars(html).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("{", "&#123;").replace("}", "&#125;")
    if "```" in text or "~~~" in text:
        text = _FENCE.sub(lambda m: f"&#{ord(m.group(1))};", text)
    text = "<div>\n" + text.strip("\n") + "\n</div>"
    return _join_blank_lines(_collapse_blank_lines(text))


def render_post(article: StoredArticle) -> str:
    """The whole article file: front matter, a blank line, the body, a final newline."""
    post = frontmatter.Post(hexo_body(article.body_html), handler=_HANDLER, **front_matter(article))
    # dumps() strips the result; a text file ends with a newline.
    return frontmatter.dumps(post) + "\n"


# --- file names -----------------------------------------------------------------------

SLUG_MAX = 60
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_HEX_UID = re.compile(r"[0-9a-f]{10,}")
#: what ``post_name`` produces and ``write_post`` accepts: a bare, ASCII, non-hidden name
POST_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*\.md")


def _ascii_slug(title: str) -> str:
    # NFKD splits "é" into "e" + accent, so Latin titles keep their letters; CJK and
    # emoji have no ASCII decomposition and vanish (the uid part keeps the name unique).
    ascii_ = unicodedata.normalize("NFKD", strip_illegal_chars(title))
    ascii_ = ascii_.encode("ascii", "ignore").decode("ascii").lower()
    return _NOT_SLUG.sub("-", ascii_).strip("-")[:SLUG_MAX].rstrip("-")


def _uid_tag(uid: str) -> str:
    lowered = uid.lower()
    if _HEX_UID.fullmatch(lowered):
        return lowered[:10]
    # Not the store's 32-hex uid: hash it so the tag is still hex and still identity-bound.
    return hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def post_name(title: str, date: datetime, uid: str) -> str:
    """``YYYY-MM-DD-<ascii slug, ≤60>-<uid[:10]>.md`` (slug part omitted when empty).

    ASCII only, at most 85 bytes, never hidden, never a path: ``..``, ``.``, empty, CJK or
    emoji-only titles give ``YYYY-MM-DD-<uid[:10]>.md``. Two titles that slugify alike
    differ by the uid part. The date is the article's date in UTC.
    """
    if date.tzinfo is not None:
        date = date.astimezone(UTC)
    day = f"{date.year:04d}-{date.month:02d}-{date.day:02d}"
    parts = [day, _ascii_slug(title), _uid_tag(uid)]
    return "-".join(p for p in parts if p) + ".md"


def write_post(article: StoredArticle, posts_dir: Path) -> bool:
    """Write ``posts_dir / article.post_name`` atomically; False when unchanged.

    No fsync (``durable=False``): the database is the truth and post files are derived
    from it (docs/dev.md, issue 7). A killed process loses nothing — written bytes are in
    the kernel's page cache and the rename is atomic, so a reader sees the old file or the
    new one (tests/test_crash.py kills at random moments). Only a power cut or a kernel
    crash can lose the newest version (ext4's default auto_da_alloc flushes a file
    renamed over an existing one first; a new file may come back empty or missing);
    ``aggregator publish`` rewrites missing posts and ``--posts all`` every one. Two
    fsyncs per post would cost more than everything else here for a first import of
    thousands of articles.
    """
    name = article.post_name
    if not POST_NAME_RE.fullmatch(name) or len(name) > 255:
        # post_name() never makes such a name; refuse rather than write outside posts_dir.
        raise PublishError(f"unsafe post file name {name!r} for article {article.id}")
    return write_atomic(os.path.join(posts_dir, name), render_post(article).encode("utf-8"), durable=False)
