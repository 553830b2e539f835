"""config.toml -> frozen ``Config``; and the two edits the CLI makes to that file.

Owns: reading (tomllib), validating every key against the declared ``SETTINGS`` table
(unknown keys, wrong types, duplicates and bad intervals are ``ConfigError`` naming the key
and the file), and editing ``[[sources]]`` with tomlkit so the operator's comments and
layout survive ``add-source`` / ``remove-source``.
Must not: fetch, touch the database, or be read as a global by other stages — callers get
a ``Config`` value and pass what each stage needs.

Relative ``data_dir`` / ``output_dir`` are resolved against the folder holding the config
file, so the daemon behaves the same whatever its working directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import USER_AGENT
from .errors import ConfigError
from .cleanrules import DEFAULT_IFRAME_HOSTS, iframe_rules
from .similarity import BANDS, NEAR_DUP_THRESHOLD
from .models import FULLTEXT_MODES, FeedRule, FetchLimits, FullTextRule, RequestOptions, Source
from .rsshub import check_query, check_route, is_route
from .politeness import FETCHER_OWNED_HEADERS

DEFAULT_CONFIG = "config.toml"
ENV_CONFIG = "AGGREGATOR_CONFIG"


@dataclass(frozen=True)
class Setting:
    """One top-level key of config.toml. The table is the documentation's source of truth:
    tests check that the shipped config.toml and the README mention every one."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", str, "data", "Folder for the SQLite database and state (relative to this file)."),
    Setting("output_dir", str, "feeds", "Folder for published feeds; articles go to <output_dir>/posts/."),
    Setting("base_url", str, "http://localhost:8080/", "Public URL where output_dir is served (self links)."),
    Setting("site_title", str, "aggregator", "Title prefix of every published feed."),
    Setting("default_interval", str, "15m", "Poll interval of sources without their own (30s, 15m, 1h, 1d, 1h30m)."),
    Setting("concurrency", int, 8, "How many sources are fetched at the same time."),
    Setting("items_per_feed", int, 50, "How many of the newest articles each published feed carries."),
    Setting("timeout", (int, float), 60, "Total seconds one fetch may take, redirects included."),
    Setting("max_body_mib", (int, float), 15, "Largest feed body accepted, in MiB after decompression."),
    Setting("allow_private_networks", bool, False, "Allow sources on loopback/private addresses (SSRF guard off)."),
    Setting("host_concurrency", int, 2, "At most this many requests at once to one host (an RSSHub serves many routes)."),
    Setting("host_delay", (int, float), 0, "Seconds between two request starts to the same host."),
    Setting("max_cache_delay", str, "24h", "Cap on how far Cache-Control, Expires, <ttl> and sy:updatePeriod push a poll."),
    Setting("max_backoff", str, "1d", "Cap on the exponential backoff of a failing source."),
    Setting("max_retry_after", str, "2d", "Cap on honouring a 429/503 Retry-After."),
    Setting("future_skew", str, "1h", "An item dated further in the future than this gets its first-seen time."),
    Setting("near_duplicates", bool, True, "Merge the same story rewritten slightly by several sources (SimHash on the text)."),
    Setting("near_duplicate_window", str, "72h", "Only copies published this close together are compared."),
    Setting("near_duplicate_distance", int, NEAR_DUP_THRESHOLD, "Largest SimHash Hamming distance (of 64 bits) still counted as the same story."),
    Setting("max_edits_per_day", int, 5, "An item changed upstream more often than this in 24 h stops updating its article."),
    Setting("retention", (str, int), "forever", 'Articles kept per category: "forever", an age ("90d"), or a count (500 newest).'),
    Setting("categories", dict, {}, "Per-category overrides: [categories.NAME] near_duplicates / near_duplicate_window / near_duplicate_distance / retention."),
    Setting("serve_host", str, "127.0.0.1", "Address `aggregator serve` / `run --serve` listens on."),
    Setting("serve_port", int, 8080, "Port `aggregator serve` / `run --serve` listens on."),
    Setting("websub_hub", str, "", 'WebSub hub URL announced in every feed (rel="hub") and pinged after each publish that changed a feed; "" for none.'),
    Setting("rsshub_instances", list, ["https://rsshub.app"], "RSSHub instances an rsshub://ROUTE source is fetched from, tried in order; a failing one is skipped (with backoff) until it recovers."),
    Setting("iframe_hosts", list, list(sorted(DEFAULT_IFRAME_HOSTS)), "Video players whose iframes are kept (host or host/path-prefix, https only); [] drops every iframe."),
)
SOURCE_KEYS: dict[str, tuple[type, bool, str]] = {
    # key: (type, required, help)
    "name": (str, True, "Display name; also the article's author and second category."),
    "url": (str, True, "Feed URL (RSS, Atom or JSON Feed), a page that advertises one, or rsshub://ROUTE (see rsshub_instances)."),
    "category": (str, True, "Topic: the article's first category and the feed it is published in."),
    "channel": (str, False, "Optional third category (e.g. a section of the source)."),
    "interval": (str, False, "Poll interval for this source; default_interval when absent."),
    "user_agent": (str, False, "User-Agent for this source instead of the project's."),
    "headers": (dict, False, 'Extra request headers; a value "env:NAME" is read from $NAME (keep secrets out of the file).'),
    "timeout": ((int, float), False, "Total seconds one fetch of this source may take (overrides timeout)."),
    "proxy": (str, False, "Proxy URL for this source (http://, https://, socks5://)."),
    "timezone": (str, False, "IANA time zone (e.g. Asia/Shanghai) for dates the feed writes without an offset."),
    "fulltext": (str, False, 'Fetch the article page of new items: "never" (default), "always", or "auto" (short or cut items only).'),
    "content_selector": (str, False, "CSS selector of the article on its page (default: automatic extraction)."),
    "remove_selectors": (list, False, "CSS selectors of page parts removed before extraction (share bars, related posts)."),
    "rsshub": (dict, False, 'RSSHub parameters of an rsshub:// source, e.g. {limit = 20, filterout = "广告", mode = "fulltext"}.'),
}

FEED_KEYS: dict[str, tuple[type, str]] = {
    # key: (type, help) -- a [[feeds]] table (see models.FeedRule); only "name" is required
    "name": (str, "Name of the feed; its files are custom/<name>.rss.xml, .atom.xml, .json."),
    "title": (str, "Title shown by feed readers (default: site_title · name)."),
    "categories": (list, "Take the articles of these categories."),
    "sources": (list, "Take the articles of these sources."),
    "channels": (list, "Take the articles of these channels (all three empty: every article)."),
    "include": (str, "Regular expression that title or text must match (RSSHub filter)."),
    "include_title": (str, "Regular expression the title must match."),
    "include_text": (str, "Regular expression the plain text must match."),
    "include_author": (str, "Regular expression the author must match."),
    "exclude": (str, "Leave out articles whose title or text matches (RSSHub filterout)."),
    "exclude_title": (str, "Leave out articles whose title matches."),
    "exclude_text": (str, "Leave out articles whose plain text matches."),
    "exclude_author": (str, "Leave out articles whose author matches."),
    "case_sensitive": (bool, "Match the patterns case-sensitively (default false)."),
    "limit": (int, "Items in the feed's current document (default items_per_feed)."),
}
_FEED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_INTERVAL_RE = re.compile(r"(\d+)\s*([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_INTERVAL = 10


def parse_interval(text: str) -> int:
    """``"15m"`` -> 900. Accepts s/m/h/d units, combined (``"1h30m"``); plain digits are
    seconds. Raises ValueError with a hint otherwise."""
    s = text.strip().lower().replace(" ", "")
    if s.isdigit():
        total = int(s)
    else:
        pos, total = 0, 0
        for m in _INTERVAL_RE.finditer(s):
            if m.start() != pos:
                break
            total += int(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise ValueError(f'cannot read "{text}" as an interval (use e.g. "30s", "15m", "1h", "1d", "1h30m")')
    if total < MIN_INTERVAL:
        raise ValueError(f'interval "{text}" is shorter than {MIN_INTERVAL} seconds')
    return total


def format_interval(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    output_dir: Path
    base_url: str
    site_title: str
    default_interval: int
    concurrency: int
    items_per_feed: int
    timeout: float
    max_body_bytes: int
    allow_private_networks: bool
    host_concurrency: int
    host_delay: float
    max_cache_delay: int
    max_backoff: int
    max_retry_after: int
    future_skew: timedelta
    iframe_hosts: frozenset[str]
    max_edits_per_day: int
    near_policy: tuple[tuple[str, bool, int, int], ...]  # ("" = default, then categories): on?, distance, window s
    retention: tuple[tuple[str, str, int], ...]  # ("" = default, then categories): "forever" | "age" (s) | "count"
    sources: tuple[Source, ...]
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080
    websub_hub: str | None = None
    feeds: tuple[FeedRule, ...] = ()
    rsshub_instances: tuple[str, ...] = ("https://rsshub.app",)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "aggregator.db"

    @property
    def posts_dir(self) -> Path:
        return self.output_dir / "posts"

    def fetch_limits(self) -> FetchLimits:
        return FetchLimits(
            user_agent=USER_AGENT,
            connect_timeout=min(10.0, self.timeout),
            read_timeout=min(30.0, self.timeout),
            deadline=float(self.timeout),
            max_body_bytes=self.max_body_bytes,
            allow_private_networks=self.allow_private_networks,
        )

    def poll_policy(self):
        from .schedule import PollPolicy

        return PollPolicy(max_cache_floor=self.max_cache_delay, max_retry_after=self.max_retry_after, max_backoff=self.max_backoff)

    def near_duplicate_rule(self, category: str) -> tuple[bool, int, timedelta]:
        """Whether and how near-duplicates are searched in ``category``."""
        rules = {name: (on, distance, timedelta(seconds=window)) for name, on, distance, window in self.near_policy}
        return rules.get(category, rules[""])

    def retention_rule(self, category: str) -> tuple[str, int]:
        """("forever", 0), ("age", seconds) or ("count", n) for ``category``."""
        rules = {name: (kind, n) for name, kind, n in self.retention}
        return rules.get(category, rules[""])

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """--config, else $AGGREGATOR_CONFIG, else ./config.toml."""
    return Path(explicit or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table",
             list: "a list"}
    if isinstance(t, tuple):
        return "a number" if set(t) == {int, float} else " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


def _check_type(value: Any, t: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; TOML keeps them apart, and so do we.
    if isinstance(value, bool) and t is not bool:
        return False
    return isinstance(value, t)


def load_config(path: str | os.PathLike | None = None) -> Config:
    p = config_path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found (pass --config or set ${ENV_CONFIG})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from e
    return config_from_dict(data, p)


def config_from_dict(data: dict[str, Any], path: Path) -> Config:
    known = {s.name: s for s in SETTINGS}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("sources", "feeds"):
            continue
        setting = known.get(key)
        if setting is None:
            raise ConfigError(f"{path}: unknown key '{key}' (known keys: {', '.join(known)}, sources, feeds)")
        if not _check_type(value, setting.type):
            raise ConfigError(f"{path}: '{key}' must be {_type_name(setting.type)}, not {value!r}")
        values[key] = value
    get = lambda k: values.get(k, known[k].default)  # noqa: E731

    try:
        default_interval = parse_interval(get("default_interval"))
    except ValueError as e:
        raise ConfigError(f"{path}: 'default_interval': {e}") from None
    durations = {}
    for key in ("max_cache_delay", "max_backoff", "max_retry_after"):
        try:
            durations[key] = parse_interval(get(key))
        except ValueError as e:
            raise ConfigError(f"{path}: '{key}': {e}") from None
    instances = get("rsshub_instances")
    for instance in instances:
        if not isinstance(instance, str) or not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", instance):
            raise ConfigError(f"{path}: 'rsshub_instances': {instance!r} is not an http(s) URL (no query or fragment)")
    hosts = get("iframe_hosts")
    if not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{path}: 'iframe_hosts' must be a list of strings")
    try:
        iframe_rules(hosts)
    except ValueError as e:
        raise ConfigError(f"{path}: 'iframe_hosts': {e}") from None
    near_policy = _near_policy(get, path)
    retention = _retention(get, path)
    try:
        future_skew = parse_interval(get("future_skew"))
    except ValueError as e:
        raise ConfigError(f"{path}: 'future_skew': {e}") from None
    for key in ("concurrency", "items_per_feed", "host_concurrency"):
        if get(key) < 1:
            raise ConfigError(f"{path}: '{key}' must be at least 1, not {get(key)}")
    for key in ("timeout", "max_body_mib"):
        if get(key) <= 0:
            raise ConfigError(f"{path}: '{key}' must be positive, not {get(key)}")
    if get("host_delay") < 0:
        raise ConfigError(f"{path}: 'host_delay' must not be negative, not {get('host_delay')}")
    base_url = get("base_url")
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise ConfigError(f"{path}: 'base_url' must be an http(s) URL, not {base_url!r}")
    if not base_url.endswith("/"):
        base_url += "/"

    raw_sources = data.get("sources", [])
    if not isinstance(raw_sources, list) or not all(isinstance(s, dict) for s in raw_sources):
        raise ConfigError(f"{path}: 'sources' must be an array of tables ([[sources]])")
    sources: list[Source] = []
    names: set[str] = set()
    urls: set[str] = set()
    for i, s in enumerate(raw_sources):
        where = _check_table(s, f"sources[{i}]", {k: v[0] for k, v in SOURCE_KEYS.items()}, path)
        for key, (_, required, _) in SOURCE_KEYS.items():
            if required and not str(s.get(key, "")).strip():
                raise ConfigError(f"{path}: {where}: missing required key '{key}'")
        name, url = s["name"].strip(), s["url"].strip()
        if is_route(url):
            if problem := check_route(url):
                raise ConfigError(f"{path}: {where}.url: {problem}")
            if not get("rsshub_instances"):
                raise ConfigError(f"{path}: {where}.url is an rsshub:// route, but rsshub_instances is empty")
        elif not re.match(r"^https?://", url, re.I):
            raise ConfigError(f"{path}: {where}.url must be an http(s) URL or rsshub://ROUTE, not {url!r}")
        if "rsshub" in s:
            if not is_route(url):
                raise ConfigError(f"{path}: {where}.rsshub: only for an rsshub:// source")
            if problem := check_query(s["rsshub"]):
                raise ConfigError(f"{path}: {where}.rsshub: {problem}")
        if name in names:
            raise ConfigError(f"{path}: {where}.name: duplicate source name {name!r}")
        if url in urls:
            raise ConfigError(f"{path}: {where}.url: duplicate source URL {url!r}")
        names.add(name)
        urls.add(url)
        interval = default_interval
        if "interval" in s:
            try:
                interval = parse_interval(s["interval"])
            except ValueError as e:
                raise ConfigError(f"{path}: {where}.interval: {e}") from None
        sources.append(
            Source(
                name=name,
                url=url,
                category=s["category"].strip(),
                channel=(s.get("channel") or "").strip() or None,
                interval=interval,
                timezone=_timezone(s.get("timezone"), path, where),
                options=_request_options(s, path, where),
                fulltext=_fulltext_rule(s, path, where),
                rsshub=tuple(sorted((s.get("rsshub") or {}).items())),
            )
        )

    if not 0 < get("serve_port") < 65536:
        raise ConfigError(f"{path}: 'serve_port' must be between 1 and 65535, not {get('serve_port')}")
    hub = get("websub_hub").strip() or None
    if hub and not re.match(r"^https?://[^/\s]+", hub):
        raise ConfigError(f"{path}: 'websub_hub' must be an http(s) URL, not {hub!r}")
    feeds = _feed_rules(data.get("feeds", []), path)

    base = path.parent
    return Config(
        path=path,
        data_dir=(base / get("data_dir")).resolve() if not Path(get("data_dir")).is_absolute() else Path(get("data_dir")),
        output_dir=(base / get("output_dir")).resolve() if not Path(get("output_dir")).is_absolute() else Path(get("output_dir")),
        base_url=base_url,
        site_title=get("site_title"),
        default_interval=default_interval,
        concurrency=get("concurrency"),
        items_per_feed=get("items_per_feed"),
        timeout=float(get("timeout")),
        max_body_bytes=int(get("max_body_mib") * 1024 * 1024),
        allow_private_networks=get("allow_private_networks"),
        host_concurrency=get("host_concurrency"),
        host_delay=float(get("host_delay")),
        sources=tuple(sources),
        future_skew=timedelta(seconds=future_skew),
        iframe_hosts=frozenset(h.strip() for h in hosts),
        max_edits_per_day=get("max_edits_per_day"),
        near_policy=near_policy,
        retention=retention,
        serve_host=get("serve_host"),
        serve_port=get("serve_port"),
        websub_hub=hub,
        feeds=feeds,
        rsshub_instances=tuple(i.strip().rstrip("/") for i in instances),
        **durations,
    )


_NEAR_KEYS = {"near_duplicates": bool, "near_duplicate_window": str, "near_duplicate_distance": int}
_CATEGORY_KEYS = {**_NEAR_KEYS, "retention": (str, int)}


def _near_policy(get, path: Path) -> tuple[tuple[str, bool, int, int], ...]:
    def rule(name: str, values, where: str) -> tuple[str, bool, int, int]:
        for key, value in values.items():
            if key not in _CATEGORY_KEYS:
                raise ConfigError(f"{path}: {where}: unknown key '{key}' (known keys: {', '.join(_CATEGORY_KEYS)})")
            if not _check_type(value, _CATEGORY_KEYS[key]):
                raise ConfigError(f"{path}: {where}.{key} must be {_type_name(_CATEGORY_KEYS[key])}, not {value!r}")
        merged = {k: values.get(k, get(k)) for k in _NEAR_KEYS}
        if not 0 <= merged["near_duplicate_distance"] < BANDS:
            # the band index finds every pair closer than BANDS bits, and no farther
            raise ConfigError(f"{path}: {where}.near_duplicate_distance must be between 0 and {BANDS - 1}")
        try:
            window = parse_interval(merged["near_duplicate_window"])
        except ValueError as e:
            raise ConfigError(f"{path}: {where}.near_duplicate_window: {e}") from None
        return (name, merged["near_duplicates"], merged["near_duplicate_distance"], window)

    rules = [rule("", {}, "near_duplicate settings")]
    for name, values in get("categories").items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: categories.{name} must be a table")
        rules.append(rule(name, values, f"categories.{name}"))
    return tuple(rules)


def _retention(get, path: Path) -> tuple[tuple[str, str, int], ...]:
    def rule(name: str, value, where: str) -> tuple[str, str, int]:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ConfigError(f"{path}: {where} must keep at least 1 article, not {value}")
            return (name, "count", value)
        if str(value).strip().lower() == "forever":
            return (name, "forever", 0)
        try:
            return (name, "age", parse_interval(str(value)))
        except ValueError as e:
            raise ConfigError(f"{path}: {where}: {e} (or \"forever\", or a number of articles)") from None

    rules = [rule("", get("retention"), "'retention'")]
    for name, values in get("categories").items():
        if isinstance(values, dict) and "retention" in values:
            rules.append(rule(name, values["retention"], f"categories.{name}.retention"))
    return tuple(rules)


def _timezone(name: str | None, path: Path, where: str) -> str | None:
    if name is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{path}: {where}.timezone: unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from None
    return name.strip()


def _fulltext_rule(s: dict[str, Any], path: Path, where: str) -> FullTextRule | None:
    mode = s.get("fulltext", "never")
    if mode not in FULLTEXT_MODES:
        raise ConfigError(f"{path}: {where}.fulltext must be one of {', '.join(map(repr, FULLTEXT_MODES))}, not {mode!r}")
    selector = (s.get("content_selector") or "").strip() or None
    removes = s.get("remove_selectors") or []
    if not all(isinstance(r, str) and r.strip() for r in removes):
        raise ConfigError(f"{path}: {where}.remove_selectors must be a list of CSS selectors (strings)")
    for key, value in [("content_selector", selector), *(("remove_selectors", r) for r in removes)]:
        if not value:
            continue
        from .fulltext import check_selector  # only with selectors: it imports the HTML stack

        if problem := check_selector(value):
            raise ConfigError(f"{path}: {where}.{key}: invalid CSS selector {value!r}: {problem}")
    if mode == "never":
        if selector or removes:
            raise ConfigError(f"{path}: {where}: content_selector/remove_selectors need fulltext = \"always\" or \"auto\"")
        return None
    return FullTextRule(mode=mode, content_selector=selector, remove_selectors=tuple(r.strip() for r in removes))


def _request_options(s: dict[str, Any], path: Path, where: str) -> RequestOptions:
    headers = []
    for key, value in (s.get("headers") or {}).items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {where}.headers.{key} must be a string, not {value!r}")
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", key):
            raise ConfigError(f"{path}: {where}.headers: {key!r} is not a valid header name")
        if key.lower() in FETCHER_OWNED_HEADERS:
            raise ConfigError(f"{path}: {where}.headers.{key}: set by the fetcher itself, cannot be configured")
        if value.startswith("env:"):
            var = value[4:]
            if var not in os.environ:
                # the value is a secret: name the variable, never print a value
                raise ConfigError(f"{path}: {where}.headers.{key}: environment variable ${var} is not set")
            value = os.environ[var]
        if "\r" in value or "\n" in value:
            raise ConfigError(f"{path}: {where}.headers.{key}: a header value cannot contain a line break")
        headers.append((key, value))
    timeout = s.get("timeout")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"{path}: {where}.timeout must be positive, not {timeout}")
    proxy = s.get("proxy")
    if proxy is not None and not re.match(r"^(https?|socks5h?)://[^/\s]+", proxy):
        raise ConfigError(f"{path}: {where}.proxy must be an http://, https:// or socks5:// URL")
    user_agent = s.get("user_agent")
    return RequestOptions(
        user_agent=user_agent.strip() if user_agent else None,
        headers=tuple(headers),
        timeout=float(timeout) if timeout is not None else None,
        proxy=proxy,
    )


# --- edits (tomlkit keeps comments and layout) -----------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def add_source_to_file(path: Path, source: dict[str, str]) -> None:
    """Append one ``[[sources]]`` table after the file's last line, leaving every existing
    byte (comments, layout, order) as it was. The result is validated before it replaces
    the file, so a bad edit never lands."""
    add_sources_to_file(path, [source])


def add_sources_to_file(path: Path, sources: list[dict]) -> None:
    """``add_source_to_file`` for a batch (``import-opml``): every table appended in one
    validated, atomic write, so a daemon reloading meanwhile sees all of them or none,
    and one bad table refuses the whole batch. An empty list writes nothing."""
    import tomlkit

    if not sources:
        return
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    aot = tomlkit.aot()
    for source in sources:
        table = tomlkit.table()
        for key in SOURCE_KEYS:
            if source.get(key):
                value = source[key]
                if isinstance(value, dict):  # rsshub = {limit = 20}: one line, not a [sources.rsshub] table
                    inline = tomlkit.inline_table()
                    inline.update(value)
                    value = inline
                table.add(key, value)
        aot.append(table)
    doc = tomlkit.document()
    doc.add("sources", aot)
    sep = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
    new_text = text + sep + tomlkit.dumps(doc)
    try:
        config_from_dict(tomllib.loads(new_text), path)  # refuse to write a config we could not load
    except tomllib.TOMLDecodeError as e:
        what = "a source" if len(sources) == 1 else f"{len(sources)} sources"
        raise ConfigError(f"{path}: cannot append {what}: {e}") from e
    _atomic_write_text(path, new_text)


def remove_source_from_file(path: Path, name: str) -> None:
    import tomlkit

    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    sources = doc.get("sources")
    if sources is None:
        raise ConfigError(f"{path}: no source named {name!r}")
    for i, table in enumerate(sources):
        if table.get("name", "").strip() == name:
            del sources[i]
            break
    else:
        raise ConfigError(f"{path}: no source named {name!r}")
    if len(sources) == 0:
        del doc["sources"]
    _atomic_write_text(path, tomlkit.dumps(doc))


def set_source_url_in_file(path: Path, name: str, url: str) -> None:
    """Point one source at a new URL (a permanent redirect), keeping comments and layout."""
    import tomlkit

    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    for table in doc.get("sources", []):
        if table.get("name", "").strip() == name:
            table["url"] = url
            break
    else:
        raise ConfigError(f"{path}: no source named {name!r}")
    new_text = tomlkit.dumps(doc)
    config_from_dict(tomllib.loads(new_text), path)
    _atomic_write_text(path, new_text)


def _check_table(table: dict, where: str, keys: dict[str, type | tuple[type, ...]], path: Path) -> str:
    """Unknown keys and wrong types of one [[sources]] / [[feeds]] table are errors naming
    the table; returns how messages name it (``sources[2] (财联社)``)."""
    if isinstance(table.get("name"), str):
        where += f" ({table['name']})"
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(f"{path}: {where}: unknown key '{key}' (known keys: {', '.join(keys)})")
        if not _check_type(value, keys[key]):
            raise ConfigError(f"{path}: {where}.{key} must be {_type_name(keys[key])}, not {value!r}")
    return where


def _feed_rules(raw, path: Path) -> tuple[FeedRule, ...]:
    if not isinstance(raw, list) or not all(isinstance(f, dict) for f in raw):
        raise ConfigError(f"{path}: 'feeds' must be an array of tables ([[feeds]])")
    rules: list[FeedRule] = []
    for i, f in enumerate(raw):
        where = _check_table(f, f"feeds[{i}]", {k: v[0] for k, v in FEED_KEYS.items()}, path)
        name = f.get("name", "")
        if not _FEED_NAME.fullmatch(name):
            raise ConfigError(f"{path}: {where}.name must be 1-64 letters, digits, '-' or '_' (it names files), not {name!r}")
        if any(r.name == name for r in rules):
            raise ConfigError(f"{path}: {where}.name: duplicate feed name {name!r}")
        lists = {}
        for key in ("categories", "sources", "channels"):
            values = f.get(key, [])
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise ConfigError(f"{path}: {where}.{key} must be a list of names")
            lists[key] = tuple(v.strip() for v in values)
        patterns: dict[str, list[tuple[str, str]]] = {"include": [], "exclude": []}
        flags = 0 if f.get("case_sensitive", False) else re.IGNORECASE
        for key in FEED_KEYS:
            kind, _, field = key.partition("_")
            if kind not in patterns or key not in f:
                continue
            try:
                re.compile(f[key], flags)
            except re.error as e:
                raise ConfigError(f"{path}: {where}.{key}: invalid regular expression: {e}") from None
            patterns[kind].append((field or "any", f[key]))
        limit = f.get("limit")
        if limit is not None and limit < 1:
            raise ConfigError(f"{path}: {where}.limit must be at least 1, not {limit}")
        rules.append(FeedRule(
            name=name, title=(f.get("title") or "").strip() or None, include=tuple(patterns["include"]),
            exclude=tuple(patterns["exclude"]), case_sensitive=f.get("case_sensitive", False), limit=limit, **lists,
        ))
    return tuple(rules)
