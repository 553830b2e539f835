"""The clean stage's rules, as data, and the predicates that read them (used by ``clean.py``).

Owns: the HTML allowlist (tags, attributes, URL schemes), what is dropped with its
content, renamed or unwrapped, lazy-image attributes, tracker image hosts, share-widget
class names, wrappers dropped when empty, and the iframe allowlist with its policy.
Must not: do I/O, read the clock or config, keep state between calls (pure predicates).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["DEFAULT_IFRAME_HOSTS", "iframe_rules", "is_allowed_iframe_src", "is_pixel",
           "is_share_widget", "is_tracker_image"]

MAX_START_TAGS = 10_000  # HAZARDS: this cap bounded the worst nesting shape to ~0.15 s
MAX_INPUT_CHARS = 2_000_000  # bs4 is linear but slow: ~0.5 s for 2 MB of attributes

# --- the allowlist ---------------------------------------------------------------------

ALLOWED_TAGS = frozenset(
    "p br h1 h2 h3 h4 h5 h6 ul ol li dl dt dd blockquote q pre code kbd samp var table thead "
    "tbody tfoot tr th td caption colgroup col figure figcaption a img picture source video "
    "audio strong em b i u s strike del ins sub sup small mark abbr cite time hr span div "
    "section article header footer aside details summary ruby rt rp".split())

# No class/id/style/on*; no cite anywhere (nh3 keeps cite="javascript:...").
ALLOWED_ATTRIBUTES = {tag: frozenset(attrs.split()) for tag, attrs in {
    "a": "href title", "img": "src alt title width height srcset sizes",
    "source": "src srcset type media sizes", "video": "src poster width height", "audio": "src",
    "td": "colspan rowspan", "th": "colspan rowspan", "col": "span", "colgroup": "span",
    "ol": "start", "time": "datetime", "abbr": "title", "del": "datetime", "ins": "datetime",
}.items()}
IMAGE_POLICY = {"img": {"loading": "lazy", "referrerpolicy": "no-referrer"}}
URL_ATTRIBUTES = {"href": ("http", "https", "mailto"), "src": ("http", "https"),
                  "poster": ("http", "https")}

# Removed with everything inside: never rendered as text (script, style, template; raw-text
# iframe/noembed/noframes; title is display:none), form widgets holding data rather than
# prose, void elements pointing elsewhere, and SVG (a script surface; its text is graphics).
# An allowed iframe (below) is kept, empty.
DROP_WITH_CONTENT = frozenset(
    "script style template iframe frame frameset noembed noframes title textarea select "
    "datalist option input meta link base embed param svg".split())

# Outside the allowlist, but their box matters for reading: keep the structure.
RENAME = {"center": "div", "main": "div", "nav": "div", "address": "div", "hgroup": "div",
          "fieldset": "div", "form": "div", "legend": "div", "dir": "ul", "menu": "ul",
          "listing": "pre", "xmp": "pre", "plaintext": "pre", "tt": "code", "big": "span"}

# Lazy-loading scripts keep the real image in one of these and a placeholder in ``src``.
LAZY_SRC_ATTRIBUTES = ("data-src", "data-original", "data-actualsrc", "data-lazy-src",
                       "data-url", "data-original-src")
PLACEHOLDER_RE = re.compile(
    r"(?:^|/)(?:blank|spacer|pixel|transparent|placeholder|loading|lazy|grey|gray|clear|"
    r"1x1|empty)[\w.-]*\.(?:gif|png|svg|jpe?g|webp)(?:[?#]|$)", re.I)

# --- tracker images --------------------------------------------------------------------

# Images served by these hosts count views or serve ads; they are dropped whatever their
# size (1x1 pixels of any host go too: is_pixel). Links to them are kept: a link is
# visible, a reader chooses to follow it. host suffix -> path prefixes ("/" = any path).
TRACKER_IMAGES: dict[str, tuple[str, ...]] = {
    # FeedBurner: /~r/<feed>/~4/<item> is the per-item view counter, /~ff/ and /~f/ the
    # FeedFlare button images, /~a/ its ads (corpus: feedburner.atom, TechCrunch, Reuters).
    "feeds.feedburner.com": ("/~r/", "/~ff/", "/~f/", "/~a/"),
    "feedproxy.google.com": ("/~r/", "/~ff/", "/~f/", "/~a/"),  # FeedBurner's other host
    # Google's ad server: ad., pubads.g., and feedads.g. (FeedBurner ads, corpus TechCrunch).
    "doubleclick.net": ("/",),
    # WordPress.com / Jetpack stats beacons.
    "pixel.wp.com": ("/",), "stats.wordpress.com": ("/",),
    # Web analytics and audience measurement beacons: Google Analytics, Quantcast, comScore.
    "google-analytics.com": ("/",), "quantserve.com": ("/",),
    "scorecardresearch.com": ("/",),
    # Feed ad networks: Feedsportal (its da.* ad and counter images), Pheedo (ads.pheedo
    # ads, images.pheedo share buttons: corpus wapowellness).
    "feedsportal.com": ("/",), "pheedo.com": ("/",),
    # FeedPress's per-item counter image (corpus KatieFloyd: feedpress.me/<id>/<id>.gif).
    "feedpress.me": ("/",),
    # Hit counters and ad-tech pixels seen in feeds: CarrierZone, HubSpot (__ptq.gif,
    # corpus HubSpot), Medium (/_/stat), Oracle BlueKai and The Trade Desk (corpus
    # wapowellness), Golem's own counter (corpus golem: cpx.php).
    "count.carrierzone.com": ("/",), "track.hubspot.com": ("/",), "medium.com": ("/_/stat",),
    "tags.bluekai.com": ("/",), "adsrvr.org": ("/",), "cpx.golem.de": ("/",),
    # Social networks' conversion pixels: X/Twitter ads, Meta (Facebook) pixel.
    "t.co": ("/i/adsct",), "analytics.twitter.com": ("/",), "facebook.com": ("/tr",),
    # Chinese web analytics: Baidu Tongji (hm.baidu.com/hm.gif), CNZZ/Umeng (c., w., s4...).
    "hm.baidu.com": ("/",), "tongji.baidu.com": ("/",), "cnzz.com": ("/",),
}


_DIMENSION_RE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(?:px)?\s*", re.I)
_STYLE_DIMENSION_RE = re.compile(
    r"(?<![-\w])(width|height)\s*:\s*(\d+(?:\.\d*)?)\s*(?:px)?\s*(?:;|$)", re.I)


def is_pixel(attrs: dict) -> bool:
    """1x1 (or 0x0) images are tracking beacons (FeedBurner, WordPress stats, ...)."""
    dimensions = {}
    for name in ("width", "height"):
        if match := _DIMENSION_RE.fullmatch(attrs.get(name) or ""):
            dimensions[name] = float(match.group(1))
    for name, number in _STYLE_DIMENSION_RE.findall(attrs.get("style") or ""):
        dimensions[name.lower()] = float(number)
    return len(dimensions) == 2 and max(dimensions.values()) <= 1


def _host_suffixes(host: str) -> Iterable[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``: every key a host can match by suffix."""
    labels = host.split(".")
    return (".".join(labels[i:]) for i in range(len(labels)))


def is_tracker_image(url: str) -> bool:
    """True when an absolute http(s) image URL is on a ``TRACKER_IMAGES`` host and path."""
    lowered = url.lower()
    if not any(host in lowered for host in TRACKER_IMAGES):  # no host can match: no parse
        return False
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return False
    path = parts.path or "/"
    for suffix in _host_suffixes(host):
        for prefix in TRACKER_IMAGES.get(suffix, ()):
            # "/tr" is the path /tr or below it, not /translations
            if path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/"):
                return True
    return False


# --- share widgets ---------------------------------------------------------------------

# Share and social button blocks, found by a class or id token equal to one of these or
# starting with one followed by "-" or "_" (a2a_kit_size_32, bshare-custom). Dropped with
# their content, before the attributes go. Their text ("Share this:", "Tweet", "Loading...")
# is site chrome, not the item's content: the fidelity test excludes it the same way.
SHARE_WIDGETS = frozenset({
    "feedflare",  # FeedBurner FeedFlare (corpus: TechCrunch, Reuters, many-links)
    "sharedaddy", "sd-sharing",  # WordPress Jetpack sharing and likes ("Share this:")
    "addtoany", "a2a_kit",  # AddToAny
    "jiathis",  # JiaThis (加网), Chinese share bar
    "bshare",  # bShare, Chinese share bar
    "social-share",  # themes' generic share bars
    "twitter-share-button", "fb-share-button",  # the networks' own markup (corpus HubSpot)
})
_TOKEN_SPLIT_RE = re.compile(r"[-_]")


def is_share_widget(attrs: dict) -> bool:
    """True when a ``class`` or ``id`` token names a ``SHARE_WIDGETS`` block."""
    for name in ("class", "id"):
        for token in str(attrs.get(name) or "").lower().split():
            if token in SHARE_WIDGETS:
                return True
            # every prefix of the token that ends before a "-" or "_"
            for match in _TOKEN_SPLIT_RE.finditer(token):
                if token[:match.start()] in SHARE_WIDGETS:
                    return True
    return False


# --- empty wrappers --------------------------------------------------------------------

# Wrappers that show nothing once empty (no text, no image, media, iframe, line break or
# other element left in them): clean._unwrap_blank removes them, keeping any whitespace.
BLOCK_WRAPPERS = frozenset(
    "p div section article header footer aside figure figcaption blockquote h1 h2 h3 h4 h5 "
    "h6 pre".split())  # <pre><code></code></pre>: code blocks some CMSs empty (cloudblog)
EMPTY_WRAPPERS = BLOCK_WRAPPERS | frozenset(
    "span a b i u s strike em strong small mark sub sup q cite abbr code kbd samp var del "
    "ins".split())

# --- iframes ---------------------------------------------------------------------------

# Video and audio players kept as iframes: "host" or "host/path-prefix". A src must be
# https, on one of these hosts exactly (no userinfo, no port), under the prefix.
DEFAULT_IFRAME_HOSTS = frozenset({
    "www.youtube.com/embed/", "www.youtube-nocookie.com/embed/", "player.vimeo.com/video/",
    "player.bilibili.com/player.html", "v.qq.com/txp/iframe/", "open.spotify.com/embed/",
})
IFRAME_ATTRIBUTES = frozenset({"src", "width", "height", "allowfullscreen"})
IFRAME_POLICY = {
    "loading": "lazy",
    # The player runs its own script and needs its own origin; no top navigation, forms,
    # modals or downloads. Cross-origin, so allow-same-origin does not reach our page.
    "sandbox": "allow-scripts allow-same-origin allow-popups",
    # Not no-referrer: YouTube's embedded player requires a Referer and shows "Error 153"
    # without one ("Required Minimum Functionality", embedded player client identity);
    # this policy sends the page's origin only, never its path.
    "referrerpolicy": "strict-origin-when-cross-origin",
}
_HOST_RE = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")
# Only what every URL parser reads alike: no userinfo, port, backslash or whitespace.
_IFRAME_URL_RE = re.compile(
    r"https://([a-z0-9-]+(?:\.[a-z0-9-]+)+)(/[^?#\s\\]*)(?:[?#][^\s\\]*)?", re.I)
_DOT_SEGMENT_RE = re.compile(r"/(?:\.|%2e)", re.I)  # /embed/../watch leaves the prefix


def iframe_rules(entries: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``iframe_hosts`` entries as sorted (host, path prefix) pairs; ValueError on an entry
    that is not a host name with an optional path (the config loader can call this)."""
    rules = set()
    for entry in entries:
        host, _, path = str(entry).strip().partition("/")
        host = host.lower()
        if not _HOST_RE.fullmatch(host) or re.search(r"[\s\\?#]", path):
            raise ValueError(f"iframe host {entry!r} is not a host name with an optional "
                             "path prefix, like www.youtube.com/embed/")
        rules.add((host, "/" + path))
    return tuple(sorted(rules))


def is_allowed_iframe_src(url: str, rules: tuple[tuple[str, str], ...]) -> bool:
    """True when ``url`` (already resolved and stripped) is https on an allowed host, under
    its path prefix."""
    match = _IFRAME_URL_RE.fullmatch(url)
    if not match or _DOT_SEGMENT_RE.search(match.group(2)):
        return False
    host, path = match.group(1).lower(), match.group(2)
    return any(host == allowed and path.startswith(prefix) for allowed, prefix in rules)
