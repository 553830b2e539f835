"""Full text (issue 9): an article page -> its article, and whether the item should use it.

Owns: decoding a fetched page (``decode_page``); taking the article out of it (``extract``:
a source's CSS ``content_selector``, else trafilatura) as clean HTML with absolute URLs;
which items need their page at all (``should_fetch``); and the quality gate that decides
whether the extracted text replaces the item's own content, with the reason either way
(``gate`` -> ``Verdict``).
Must not: fetch (the pipeline fetches article pages through ``fetch.py``'s guarded fetcher,
only for new items, and caches them by URL), read config, the clock or the database, or keep
state between calls: pure functions, safe in a worker process or thread.

Decisions (figures in docs/fulltext.md, measured by benchmarks/fulltext_choice.py):

- Encoding: BOM, then the HTTP charset, then ``<meta charset>`` / ``<meta http-equiv>``
  in the first ``META_SCAN_BYTES``, then sniffing (valid UTF-8, else charset-normalizer),
  as issue 9 orders it and as browsers do (WHATWG HTML "determining the character
  encoding"; the BOM comes first there too: it cannot be an accident). A declared label is
  read as its superset (GB2312/GBK -> GB18030, Big5 -> CP950: ``encoding.py``'s table) and
  must decode without error, else the next source of truth is asked: a header saying UTF-8
  on GBK bytes is not the truth, while a stale ``<meta charset=gbk>`` on a page the server
  labels UTF-8 is outvoted by the header. Valid multi-byte UTF-8 labelled with a single-byte
  charset is UTF-8 (the rule ``encoding.py`` applies to feeds). Never raises.
- Extractor: trafilatura, chosen over readability-lxml by measurement. readability-lxml
  drops every element styled ``visibility: hidden``, which is how WeChat articles ship their
  whole body (``#js_content``, shown by script), and elsewhere kept no more of the body and
  more chrome (share bars, "Advertisement"). trafilatura is called with images, links,
  formatting and tables kept, comments not, and ``url``; never its own downloader. Three
  repairs, each measured: ``strip_boilerplate`` first removes the page's chrome (``JUNK_TAGS``
  and containers named by ``JUNK_WORDS``, English and pinyin; never the densest paragraph
  container or its ancestors) and turns layout tables into divs, as trafilatura otherwise
  took a whole table-layout page, navigation and comments included; its XML output is
  turned into HTML here, as its HTML output writes inline code as ``<pre>``; and hosts in
  ``SITE_RULES`` use their selector (WeChat, whose headings trafilatura dropped). The
  article, like a selector's, goes through ``clean.clean_html`` (allowlist, lazy images,
  tracking parameters, relative URLs resolved against the page URL), and a leading
  ``<h1>`` (the headline, which the item has as its title) is dropped.
- A ``content_selector`` takes every element it matches, in document order (nested
  matches once), after ``remove_selectors`` matches are removed from the whole page, as
  Miniflux's scraper rules do. A selector that matches nothing gives an empty extraction
  (the site changed its layout; the gate keeps the item's content, "nothing extracted")
  rather than falling back to the library and bringing in what the selector was set to avoid.
- ``should_fetch`` "auto": the item's own visible text (a leading repeat of the title not
  counted) is under ``SHORT_ITEM_CHARS`` characters (a CJK character counts one, like any
  other), or it ends like a cut text (``TRUNCATED_RE``), after WordPress's "The post X
  appeared first on Y." footer, and also before a final link (``… <a>Post title</a>``) or
  when that link's text starts with "Read more" / "阅读全文".
- ``gate``, in this order: HTTP status >= 400; interstitials (Cloudflare challenge,
  captcha, login wall, not-found page); nothing extracted; too short (< ``MIN_CHARS``);
  shorter than the item's own text; opening does not match the summary or title. Page-wide
  signals (the page's title, its whole text, markup such as ``g-recaptcha``) only count
  when the extraction is short, because ordinary article pages carry them too (a
  comment form's "请登录后发表评论" and "验证码", Cloudflare's script on every page); a
  login-wall phrase in the tail of the extracted text always counts, as walls follow
  their teaser.
- "Long enough" is at least ``MIN_CHARS`` and at least as long as the item's own text
  (not 2x: in "always" mode the item may already hold the full text, and a page version
  about as long is then still an improvement in images and markup; never a loss of text).
- "Matches": for a summary, its first ``SUMMARY_PROBE`` normalized characters occur in
  the first ``OPENING_CHARS`` of the extraction (summaries are mostly the article's
  opening, cut), or at least ``SUMMARY_OVERLAP`` of its tokens occur in the first
  ``OVERLAP_CHARS`` (editor-written summaries), or, failing both, ``TITLE_CONFIRMS`` of the
  title's (a teaser that shares no words with the article). Without a summary, the title:
  at least ``TITLE_OVERLAP`` of its tokens (titles are paraphrased more often than quoted;
  sources without summaries, such as WeChat's, are the ones full text is for).
  Tokens are CJK character bigrams and Latin words of 4+ letters or numbers: character
  bigrams of English text match any other English text, and short words are mostly
  function words. Normalized text is NFKC, case-folded, letters and digits only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from html import escape
from urllib.parse import urlsplit

import soupsieve
from bs4 import BeautifulSoup, NavigableString, Tag
from lxml import etree

from .clean import clean_html
from .encoding import _CANDIDATES, _SINGLE_BYTE, BOMS, _guess, _is_utf8, codec_name
from .models import FULLTEXT_MODES as MODES
from .models import ArticleDraft
from .text import html_to_text

__all__ = ["MODES", "Extracted", "Verdict", "check_selector", "decode_page", "extract", "gate",
           "matches", "read_page", "should_fetch", "strip_boilerplate", "with_page"]


# --- decoding --------------------------------------------------------------------------

# WHATWG's prescan reads 1,024 bytes; pages that put scripts or comments before their
# <meta charset> exist (old CMS templates), and a longer scan costs nothing.
META_SCAN_BYTES = 4096
_HTTP_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?\s*([^\s\"';,]+)", re.IGNORECASE)
_META_CHARSET_RE = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9][\w.:+-]{0,40})", re.IGNORECASE)
_COMMENT_RE = re.compile(rb"<!--.*?(?:-->|\Z)", re.DOTALL)


def decode_page(body: bytes, content_type: str | None) -> str:
    """Bytes of an HTML page -> text: BOM, HTTP charset, ``<meta>`` charset, then sniffing
    (see the module docstring). Never raises."""
    for mark, encoding in BOMS:
        if body.startswith(mark):
            return body[len(mark):].decode(encoding, "replace")
    header = _HTTP_CHARSET_RE.search(content_type or "")
    labels = [header.group(1) if header else None, _meta_charset(body)]
    declared = []
    for label in labels:
        codec = codec_name(label)
        if codec is None:
            continue
        if _SINGLE_BYTE.fullmatch(codec) and not body.isascii() and _is_utf8(body):
            codec = "utf-8"  # valid multi-byte UTF-8 is not meant as Latin-1 (encoding.py)
        declared.append(codec)
        for candidate in _CANDIDATES.get(codec, (codec,)):
            try:
                return body.decode(candidate)
            except UnicodeDecodeError:
                continue
    if _is_utf8(body):
        return body.decode("utf-8")
    guess = _guess(body)
    for candidate in _CANDIDATES.get(guess, (guess,)) if guess else ():
        try:
            return body.decode(candidate)
        except UnicodeDecodeError:
            continue
    # Nothing decodes cleanly: a stray bad byte in a page that said what it is is likelier
    # than a wrong label, so the first label wins, with replacement characters.
    fallback = declared[0] if declared else guess or "utf-8"
    return body.decode(_CANDIDATES.get(fallback, (fallback,))[-1], "replace")


def _meta_charset(body: bytes) -> str | None:
    """The charset a ``<meta>`` in the page's start declares (comments skipped). WHATWG
    reads a declared UTF-16/32 as UTF-8: the bytes that spelled it out are ASCII."""
    match = _META_CHARSET_RE.search(_COMMENT_RE.sub(b"", body[:META_SCAN_BYTES]))
    if not match:
        return None
    label = match.group(1).decode("ascii").lower()
    return "utf-8" if label.startswith(("utf-16", "utf-32", "ucs-2")) else label


# --- extraction ------------------------------------------------------------------------

# The page's text kept for the gate's interstitial checks: walls and challenges are short,
# and a long page's chrome does not need to travel with the article.
PAGE_TEXT_CHARS = 20_000
# Markup (not text) that only challenge and captcha pages carry; the gate maps them.
MARKUP_MARKERS = ("cf-browser-verification", "/cdn-cgi/challenge-platform/", "_cf_chl_opt",
                  "g-recaptcha", "h-captcha", "cf-turnstile", "geetest")
_TITLE_RE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_LEADING_H1_RE = re.compile(r"\A\s*<h1\b[^>]*>.*?</h1>\s*", re.DOTALL)
# Built-in selectors for hosts whose article element is known and that trafilatura reads
# badly: WeChat articles (mp.weixin.qq.com, most Chinese sources via RSSHub) keep the
# body in #js_content, and trafilatura dropped its headings and kept the QR-code box.
SITE_RULES = {"mp.weixin.qq.com": "#js_content"}


@dataclass(frozen=True, slots=True)
class Extracted:
    """An article taken out of its page, and what the gate needs to know about the page.

    ``html`` is clean (``clean_html``) with absolute URLs, ``""`` when nothing was found;
    ``text`` its visible text; ``method`` "selector", "site rule" or "trafilatura";
    ``page_title`` the page's ``<title>``; ``page_text`` the page's visible text (first
    ``PAGE_TEXT_CHARS``); ``markers`` the ``MARKUP_MARKERS`` found in its markup."""
    html: str
    text: str
    method: str
    page_title: str = ""
    page_text: str = ""
    markers: tuple[str, ...] = ()

    @property
    def text_length(self) -> int:
        """Visible characters of the article (a CJK character counts one)."""
        return len(self.text)


def check_selector(selector: str) -> str | None:
    """Why ``selector`` is not a usable CSS selector (soupsieve's message), or None. For
    config validation: ``extract`` raises ValueError on a bad one."""
    try:
        soupsieve.compile(selector)
    except soupsieve.SelectorSyntaxError as e:
        return str(e).splitlines()[0]
    return None


def extract(html: str, url: str, *, content_selector: str | None = None,
            remove_selectors: tuple[str, ...] = ()) -> Extracted | None:
    """The article in ``html`` (a decoded page fetched from ``url``), or None for an empty
    page. ``remove_selectors`` matches are removed first; then the elements
    ``content_selector`` (else the ``SITE_RULES`` selector for the URL's host) matches, or
    else trafilatura's choice from the page without its boilerplate (``strip_boilerplate``).
    Raises ValueError for an invalid selector."""
    if not html.strip():
        return None
    for selector in (content_selector or "", *remove_selectors):
        if selector and (problem := check_selector(selector)):
            raise ValueError(f"invalid CSS selector {selector!r}: {problem}")
    soup = BeautifulSoup(html, "lxml")
    page_text = _page_text(soup)
    for selector in remove_selectors:
        for element in soup.select(selector):
            element.decompose()
    rule = None if content_selector else SITE_RULES.get((urlsplit(url).hostname or "").lower())
    if content_selector or rule:
        method, raw = ("selector" if content_selector else "site rule"), _select(soup, content_selector or rule)
    else:
        _prune(soup)
        method, raw = "trafilatura", _trafilatura(str(soup), url)
    article = clean_html(raw, base_url=url) if raw else ""
    if method == "trafilatura":
        # The page's headline: the item has it as its title already.
        article = _LEADING_H1_RE.sub("", article, count=1)
    title = _TITLE_RE.search(html[:65536])
    lowered = html.lower()
    return Extracted(
        html=article,
        text=html_to_text(article),
        method=method,
        page_title=html_to_text(title.group(1)) if title else "",
        page_text=page_text,
        markers=tuple(m for m in MARKUP_MARKERS if m in lowered),
    )


def _page_text(soup: BeautifulSoup) -> str:
    """The page's visible text (bs4 leaves out scripts, styles and comments), whitespace
    collapsed, up to ``PAGE_TEXT_CHARS``: read only as far as needed."""
    parts, size = [], 0
    for string in soup.strings:
        if piece := " ".join(string.split()):
            parts.append(piece)
            size += len(piece) + 1
            if size >= PAGE_TEXT_CHARS:
                break
    return " ".join(parts)[:PAGE_TEXT_CHARS]


def _select(soup: BeautifulSoup, selector: str) -> str:
    taken: list[Tag] = []
    ids: set[int] = set()  # bs4 compares tags by content, recursively: identity here
    for element in soup.select(selector):  # document order
        if not any(id(parent) in ids for parent in element.parents):
            taken.append(element)
            ids.add(id(element))
    return "".join(str(element) for element in taken)


def _trafilatura(html: str, url: str) -> str:
    import trafilatura  # on first use: it loads dateparser and friends (~0.1 s)

    xml = trafilatura.extract(
        html, url=url, output_format="xml", include_images=True, include_links=True,
        include_formatting=True, include_tables=True, include_comments=False,
    )
    return _xml_to_html(xml) if xml else ""


# trafilatura's XML -> HTML, instead of its own HTML output, which writes every <code> as
# <pre>: inline code split its paragraph in three and code blocks came out as <pre><pre>.
_HI = {"#b": "strong", "#i": "em", "#u": "u", "#t": "code", "#sub": "sub", "#sup": "sup"}
_RENAMED = {"p": "p", "item": "li", "quote": "blockquote", "lb": "br", "row": "tr", "table": "table",
            "del": "del"}
_IMAGE_ATTRIBUTES = ("src", "alt", "title")
# Our own serialization, but of text from the page: no entities, no size limit surprises.
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def _xml_to_html(xml: str) -> str:
    main = etree.fromstring(xml.encode("utf-8"), _XML_PARSER).find("main")
    if main is None:
        return ""
    for element in main.iterdescendants():  # document order: a parent is renamed first
        old, attrs = element.tag, dict(element.attrib)
        element.attrib.clear()
        rend = attrs.get("rend", "")
        if old == "head":
            element.tag = rend if re.fullmatch(r"h[1-6]", rend) else "h3"
        elif old == "list":
            element.tag = "ol" if rend == "ol" else "ul"
        elif old == "hi":
            element.tag = _HI.get(rend, "em")
        elif old == "code":  # a block of its own, or several lines: <pre>; else inline
            block = element.getparent() is main or "\n" in "".join(element.itertext())
            element.tag = "pre" if block else "code"
        elif old == "cell":
            element.tag = "th" if attrs.get("role") == "head" else "td"
        elif old == "ref":
            element.tag = "a"
            if attrs.get("target"):
                element.set("href", attrs["target"])
        elif old == "graphic":
            element.tag = "img"
            for name in _IMAGE_ATTRIBUTES:
                if attrs.get(name):
                    element.set(name, attrs[name])
        else:
            element.tag = _RENAMED.get(old, "span")
    lead = escape(main.text or "", quote=False)
    return lead + "".join(etree.tostring(child, method="html", encoding="unicode") for child in main)


# --- boilerplate -----------------------------------------------------------------------

# Removed before the library sees the page (the measured gain is in docs/fulltext.md): the
# page's chrome by tag, and containers whose class or id has a part (split at "-", "_",
# spaces) naming chrome, English or the pinyin Chinese templates use (pinglun 评论,
# fenxiang 分享, xgyd 相关阅读, tuijian 推荐, rdph 热点排行, guanggao 广告, erweima 二维码).
JUNK_TAGS = frozenset({"nav", "aside", "footer", "form", "button", "select", "textarea"})
JUNK_CONTAINERS = frozenset({"div", "section", "ul", "ol", "dl", "table", "header", *JUNK_TAGS})
JUNK_WORDS = frozenset([
    "comment", "comments", "cmt", "discuss", "pinglun", "share", "sharing", "fenxiang", "bdshare",
    "related", "xgyd", "xgxw", "recommend", "tuijian", "hot", "rdph", "paihang", "ranking",
    "sidebar", "rail", "footer", "copyright", "breadcrumb", "breadcrumbs", "crumbs", "navbar",
    "topnav", "menu", "toolbar", "ad", "ads", "advert", "advertisement", "guanggao", "qr",
    "qrcode", "erweima", "prevnext", "newsletter", "subscribe", "login", "popup", "modal",
    "cookie", "masthead", "header", "meta", "tag", "tags",
])
_PARTS_RE = re.compile(r"[-_\s]+")
# Children that make their parent look like an article body: the densest is protected.
_PARAGRAPHS = frozenset({"p", "pre", "blockquote", "ul", "ol", "table", "h2", "h3", "h4", "h5", "h6"})
# A table cell holding these lays out a page; trafilatura then takes the whole table.
_LAYOUT = ["div", "table", "h1", "h2", "h3", "ul", "ol", "form"]


def strip_boilerplate(html: str) -> str:
    """The page without its chrome, as ``extract`` gives it to trafilatura."""
    soup = BeautifulSoup(html, "lxml")
    _prune(soup)
    return str(soup)


def _prune(soup: BeautifulSoup) -> None:
    """Remove chrome (``JUNK_TAGS``, ``JUNK_WORDS`` containers) except the densest
    paragraph container and its ancestors (themes put ``tag-…`` classes on a post's
    wrapper, ASP.NET wraps whole pages in a ``<form>``), then turn layout tables into divs."""
    anchor = _densest(soup)
    protected = {id(anchor), *map(id, anchor.parents)} if anchor else set()
    stack: list[Tag] = [soup]
    while stack:  # top-down, skipping what was removed; not recursive (deep pages)
        for child in list(stack.pop().children):
            if isinstance(child, Tag):
                if id(child) not in protected and _is_junk(child):
                    child.decompose()
                else:
                    stack.append(child)
    for table in soup.find_all("table"):
        parts = [e for e in table.find_all(["tbody", "thead", "tfoot", "tr", "td", "th", "caption"])
                 if e.find_parent("table") is table]
        if any(e.name in ("td", "th") and (e.find(_LAYOUT) or len(e.find_all("p")) >= 3) for e in parts):
            for element in (table, *parts):
                element.name, element.attrs = "div", {}


def _is_junk(element: Tag) -> bool:
    if element.name in JUNK_TAGS:
        return True
    if element.name not in JUNK_CONTAINERS:
        return False
    classes = element.get("class") or []
    words = " ".join([*([classes] if isinstance(classes, str) else classes), str(element.get("id") or "")])
    return any(part in JUNK_WORDS for part in _PARTS_RE.split(words.lower()))


def _densest(soup: BeautifulSoup) -> Tag | None:
    """The element whose own paragraphs (and loose text, for <br>-separated pages) hold
    the most text."""
    best, most = None, 0
    for element in soup.find_all(True):
        size = 0
        for child in element.children:
            if type(child) is NavigableString:  # not comments, scripts, styles
                size += len(child.strip())
            elif isinstance(child, Tag) and child.name in _PARAGRAPHS:
                size += len(child.get_text(strip=True))
        if size > most:
            best, most = element, size
    return best


# --- should_fetch ----------------------------------------------------------------------

SHORT_ITEM_CHARS = 200
# A text cut by its feed: an ellipsis ("…", "...", "[…]", "[...]"), or a "read the rest"
# link text, then nothing but punctuation, arrows and spaces ("Read more »", "阅读全文>>").
TRUNCATED_RE = re.compile(
    r"(?:…|\.\.\.|\[(?:…|\.\.\.)\]|阅读全文|查看全文|\bread\s+more|\bcontinue\s+reading)[\W_]*\Z",
    re.IGNORECASE)
_MORE_LINK_RE = re.compile(r"\A[\W_]*(?:阅读全文|查看全文|read\s+more\b|continue\s+reading\b)", re.IGNORECASE)
# WordPress (Yoast and others) appends this after the excerpt.
_APPEARED_FIRST_RE = re.compile(r"\s*The post .{1,400}? appeared first on .{1,200}?\Z", re.DOTALL)
_LAST_LINK_RE = re.compile(r"<a\b[^>]*>((?:(?!<a\b).)*?)</a\s*>(?:(?!<a\b).)*\Z", re.IGNORECASE | re.DOTALL)


def should_fetch(content_html: str, title: str, mode: str) -> bool:
    """Whether an item needs its article page: ``mode`` "never", "always", or "auto"
    (the item's own text is short or cut; see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"fulltext mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        return mode == "always"
    text = html_to_text(content_html)
    heading = html_to_text(title)
    if heading and text.startswith(heading):
        text = text[len(heading):].lstrip()
    return len(text) < SHORT_ITEM_CHARS or _is_truncated(content_html)


def _is_truncated(content_html: str) -> bool:
    """Whether the item's text ends like a text its feed cut (``TRUNCATED_RE``)."""
    text = _APPEARED_FIRST_RE.sub("", html_to_text(content_html))
    if TRUNCATED_RE.search(text):
        return True
    last = _LAST_LINK_RE.search(_APPEARED_FIRST_RE.sub("", content_html or ""))
    link = html_to_text(last.group(1)) if last else ""
    if not link or not text.endswith(link):
        return False
    return bool(_MORE_LINK_RE.match(link) or TRUNCATED_RE.search(text[:-len(link)].rstrip()))


# --- gate ------------------------------------------------------------------------------

MIN_CHARS = 300
LITTLE_TEXT = 1000  # a not-found phrase near the top of less than this is a not-found page
WALL_TAIL = 300  # login walls follow their teaser
SUMMARY_PROBE = 50
OPENING_CHARS = 1000
OVERLAP_CHARS = 3000
SUMMARY_OVERLAP = 0.5
TITLE_OVERLAP = 0.3
TITLE_CONFIRMS = 0.6  # a title this close rescues a summary that is an editor's teaser
MIN_PROBE = 10  # normalized characters below which a summary says too little to compare

# Phrases, lower-case; the first found is named in the reason.
CLOUDFLARE = ("just a moment...", "checking your browser", "checking if the site connection is secure",
              "attention required! | cloudflare", "enable javascript and cookies to continue")
# WeChat answers scrapers with "环境异常 … 完成验证后即可继续访问".
CAPTCHA = ("验证码", "captcha", "verify you are human", "人机验证", "安全验证", "are you a robot",
           "完成验证后即可继续访问")
LOGIN_WALL = ("请登录", "登录后查看", "登录后阅读", "登录后继续阅读", "登录后可查看", "sign in to continue",
              "sign in to read", "log in to continue", "log in to read", "subscribe to read",
              "subscribe to continue reading")
# Said by not-found pages; the bare forms only count in a short page's title and opening.
NOT_FOUND = re.compile(r"页面不存在|页面未找到|找不到页面|已被发布者删除|内容已被删除|page not found|"
                       r"page does not exist", re.IGNORECASE)
NOT_FOUND_BARE = re.compile(r"(?<!\d)404(?!\d)|not found", re.IGNORECASE)
_MARKER_KIND = {"cf-browser-verification": "Cloudflare challenge",
                "/cdn-cgi/challenge-platform/": "Cloudflare challenge",
                "_cf_chl_opt": "Cloudflare challenge", "g-recaptcha": "captcha",
                "h-captcha": "captcha", "cf-turnstile": "captcha", "geetest": "captcha"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to use the extracted text, and why, e.g. "kept: 2,341 chars",
    "too short (120 chars)", "login wall (请登录)", "HTTP 404"."""
    use: bool
    reason: str


def gate(extracted: Extracted | None, *, title: str, summary: str, page_status: int) -> Verdict:
    """Keep ``extracted`` instead of the item's own content? ``summary`` is that own
    content (or its summary), HTML or text; ``page_status`` the page's final HTTP status.
    The checks and their order are in the module docstring."""
    if page_status >= 400:
        return Verdict(False, f"HTTP {page_status}")
    if extracted is None:
        return Verdict(False, "nothing extracted")
    length = extracted.text_length
    if reason := _interstitial(extracted):
        return Verdict(False, reason)
    if length == 0:
        return Verdict(False, "nothing extracted")
    if length < MIN_CHARS:
        return Verdict(False, f"too short ({length:,} chars)")
    own = _APPEARED_FIRST_RE.sub("", html_to_text(summary))
    if length < len(own):
        return Verdict(False, f"shorter than the item's own text ({length:,} < {len(own):,} chars)")
    if not matches(extracted.text, title=title, summary=own):
        return Verdict(False, "does not match the summary" if _probe(own) else "does not match the title")
    return Verdict(True, f"kept: {length:,} chars")


def _interstitial(extracted: Extracted) -> str | None:
    text = extracted.text.lower()
    short = len(text) < MIN_CHARS
    page = f"{extracted.page_title}\n{extracted.page_text}\n{text}".lower() if short else ""
    kinds = {_MARKER_KIND[m] for m in extracted.markers} if short else set()
    if "Cloudflare challenge" in kinds or _first(CLOUDFLARE, page):
        return "Cloudflare challenge"
    if "captcha" in kinds or _first(CAPTCHA, page):
        return "captcha"
    if wall := _first(LOGIN_WALL, text[-WALL_TAIL:] + "\n" + page):
        return f"login wall ({wall})"
    top = f"{extracted.page_title}\n{text[:200]}"
    found = (NOT_FOUND.search(top) if len(text) < LITTLE_TEXT else None) or (
        short and (NOT_FOUND.search(page) or NOT_FOUND_BARE.search(top)))
    return f"not found page ({found.group(0)})" if found else None


def _first(phrases: tuple[str, ...], text: str) -> str | None:
    return next((phrase for phrase in phrases if phrase in text), None) if text else None


# --- matching --------------------------------------------------------------------------

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_RUN_RE = re.compile(f"[{_CJK}]+|[^\\W_{_CJK}]+")
_CJK_RE = re.compile(f"[{_CJK}]")


def _runs(text: str) -> list[str]:
    """Runs of CJK characters and of other letters/digits, NFKC case-folded."""
    return _RUN_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def _probe(summary: str) -> str:
    """The summary's opening as compared: normalized, cut marker removed; "" when it
    says too little to compare."""
    probe = "".join(_runs(TRUNCATED_RE.sub("", summary.strip())))[:SUMMARY_PROBE]
    return probe if len(probe) >= MIN_PROBE else ""


def _tokens(text: str) -> set[str]:
    found: set[str] = set()
    for run in _runs(text):
        if _CJK_RE.match(run):
            found.update(run[i:i + 2] for i in range(max(1, len(run) - 1)))
        elif len(run) >= 4 or run.isdigit():
            found.add(run)
    return found


def _overlap(reference: str, text: str) -> float:
    wanted = _tokens(reference)
    return len(wanted & _tokens(text)) / len(wanted) if wanted else 0.0


def matches(text: str, *, title: str, summary: str) -> bool:
    """Whether an extracted ``text`` is the article that ``summary`` and ``title``
    announce; True when neither says enough to compare (module docstring)."""
    summary, title = html_to_text(summary), html_to_text(title)
    opening = text[:OVERLAP_CHARS]
    if probe := _probe(summary):
        squeezed = "".join(_runs(text[:OPENING_CHARS * 2]))[:OPENING_CHARS]
        if probe in squeezed or _overlap(summary, opening) >= SUMMARY_OVERLAP:
            return True
        return bool(_tokens(title)) and _overlap(title, opening) >= TITLE_CONFIRMS
    if _tokens(title):
        return _overlap(title, opening) >= TITLE_OVERLAP
    return True


# --- one page, end to end (what the pipeline runs in a worker process) -----------------


def read_page(body: bytes, content_type: str | None, url: str, *, content_selector: str | None = None,
              remove_selectors: tuple[str, ...] = ()) -> Extracted | None:
    """A fetched article page's bytes -> its article (``decode_page`` then ``extract``).
    Picklable in and out: the pipeline runs it in a worker process with a time limit, as
    trafilatura on a hostile page is CPU-bound."""
    return extract(decode_page(body, content_type), url, content_selector=content_selector,
                   remove_selectors=remove_selectors)


def with_page(draft: ArticleDraft, extracted: Extracted | None, verdict: Verdict) -> ArticleDraft:
    """``draft`` with the page's article as its body when ``verdict`` says so, and the
    reason recorded either way (``ArticleDraft.fulltext``). The dedup keys and
    ``content_hash`` stay those of the item's own content: they identify the item as its
    feed carries it, so the next poll finds it unchanged instead of "edited back" to its
    summary. The summary stays the item's own when it has one."""
    if not verdict.use or extracted is None:
        return replace(draft, fulltext=verdict.reason)
    from .normalize import normalize_text, xml_safe
    from .similarity import fingerprint
    from .text import first_image, text_excerpt

    body = xml_safe(extracted.html)
    text = extracted.text
    return replace(
        draft, body_html=body, image=draft.image or first_image(body), summary=draft.summary or text_excerpt(text),
        text_len=len(normalize_text(text)), fingerprint=fingerprint(draft.title, text),
        fulltext=f"{verdict.reason} ({extracted.method})",
    )
