"""The ``aggregator`` command: a thin adapter — parse arguments, call one function, print.

Exit status: 0 when the command did its job (a poll whose sources partly failed still
ran); 1 for an operational error (a URL that is not a feed, a database problem); 2 for a
config or usage error (the message names the key and the file).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .config import SETTINGS, config_path, format_interval, load_config
from .errors import AggregatorError, ConfigError

log = logging.getLogger("aggregator")


class _Group(click.Group):
    """Turns our errors into one clean line on stderr and the documented exit status."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except AggregatorError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)




@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), default=None, envvar="AGGREGATOR_CONFIG",
    help="Config file [default: ./config.toml, or $AGGREGATOR_CONFIG].",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="AGGREGATOR_LOG_FORMAT",
              show_default=True, help="Log lines on stderr: text (journald-aware) or one JSON object per line.")
@click.version_option(__version__, prog_name="aggregator")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int, log_format: str) -> None:
    """Poll feeds, write Hexo-style articles, republish them as RSS, Atom and JSON Feed.

    \b
    Example:
      aggregator add-source https://rsshub.app/cls/depth/1000 --name 财联社 --category 金融 --channel 深度
      aggregator poll
      aggregator run
    """
    from .logs import setup

    setup(verbose, log_format)
    ctx.obj = config_path(config_file)


def _config(ctx: click.Context):
    return load_config(ctx.obj)


# -- sources --------------------------------------------------------------------------


@cli.command("add-source")
@click.argument("url")
@click.option("--name", required=True, help="Display name; the article's author and second category.")
@click.option("--category", required=True, help="Topic: first category, and the feed it is published in.")
@click.option("--channel", default=None, help="Optional third category.")
@click.option("--interval", default=None, help='Poll interval, e.g. "30m" [default: default_interval].')
@click.option("--fulltext", type=click.Choice(["never", "always", "auto"]), default=None,
              help="Fetch the article page of new items: always, or auto (short or cut items only) [never].")
@click.option("--content-selector", default=None, help="CSS selector of the article on its page (with --fulltext).")
@click.option("--rsshub", "rsshub_params", multiple=True, metavar="KEY=VALUE",
              help="RSSHub parameter of an rsshub:// route (limit, filter, filterout, mode=fulltext...); repeatable.")
@click.option("--no-check", is_flag=True, help="Add without fetching the URL first.")
@click.pass_context
def add_source(ctx, url, name, category, channel, interval, fulltext, content_selector, rsshub_params, no_check):
    """Add a source to config.toml, after checking that URL is a feed.

    One GET: a feed is added as is; an HTML page that advertises a feed
    (<link rel="alternate" type="application/rss+xml" ...>) adds that feed instead;
    an rsshub://ROUTE is tried on the rsshub_instances in turn, like a poll does.
    Comments and layout of config.toml are kept.

    \b
    Examples:
      aggregator add-source https://rsshub.app/cls/depth/1000 --name 财联社 --category 金融 --channel 深度
      aggregator add-source rsshub://cls/depth/1000 --name 财联社 --category 金融 --rsshub limit=20
      aggregator add-source https://example.com/feed.xml --name Example --category tech --fulltext auto
    """
    from .config import add_source_to_file, config_from_dict, parse_interval

    path: Path = ctx.obj
    config = load_config(path) if path.exists() else config_from_dict({}, path)
    if config.source(name.strip()):
        raise ConfigError(f"{path}: a source named {name!r} already exists")
    if any(s.url == url.strip() for s in config.sources):
        raise ConfigError(f"{path}: the URL {url} is already the source {next(s.name for s in config.sources if s.url == url.strip())!r}")
    if interval:
        try:
            parse_interval(interval)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--interval") from None
    params = {}
    for pair in rsshub_params:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--rsshub")
        params[key.strip()] = int(value) if value.strip().isdigit() else value
    entry = {"name": name.strip(), "url": url.strip(), "category": category.strip(), "channel": (channel or "").strip(),
             "interval": interval or "", "fulltext": fulltext or "", "content_selector": content_selector or "",
             "rsshub": params}
    # the source as it will be loaded: settings checked before anything is fetched
    source = config_from_dict({"sources": [{k: v for k, v in entry.items() if v}],
                               "rsshub_instances": list(config.rsshub_instances)}, path).sources[0]
    if not no_check:
        from .pipeline import check_feed

        check = check_feed(config, url.strip(), source=name, rsshub=source.rsshub)
        if check.discovered_from:
            click.echo(f"{url} is a page; it advertises the feed {check.url} — using that.")
            if any(s.url == check.url for s in config.sources):
                raise ConfigError(f"{path}: the feed {check.url} is already a source")
        entry["url"] = check.url
        served = f" (from {check.served_by})" if check.served_by else ""
        click.echo(f"Feed: {check.title or '(untitled)'} — {check.entries} item{'s' if check.entries != 1 else ''}{served}")
    add_source_to_file(path, entry)
    click.echo(f"Added {name!r} ({category}{' / ' + channel if channel else ''}) to {path}.")
    if not no_check:
        from .pipeline import Pipeline

        config = load_config(path)
        with Pipeline(config) as pipeline:
            result = pipeline.ingest(config.source(name.strip()), check.fetched, served_by=check.served_by)
        if result.error:
            click.echo(f"Its items could not be stored yet: {result.error}", err=True)
        else:
            click.echo(f"Stored {result.new} new article{'s' if result.new != 1 else ''} ({result.duplicates} already known); "
                       f"the next poll sends a conditional request.")
    _tell_daemon(load_config(path), then="starts polling it",
                 otherwise=f"start one (aggregator run), or poll now: aggregator poll {_quote(name)}")


def _tell_daemon(config, *, then: str, otherwise: str | None) -> None:
    """After an edit of config.toml: ask a daemon running on this data_dir to reload
    (SIGHUP; found through its lock file) and say what happens next."""
    from .daemon import signal_reload

    pid = signal_reload(config.data_dir)
    if pid:
        click.echo(f"The running daemon (pid {pid}) reloads its config now and {then}.")
    elif otherwise:
        click.echo(f"No daemon runs on {config.data_dir}; {otherwise}")


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


@cli.command("remove-source")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete its articles and post files, then republish.")
@click.pass_context
def remove_source(ctx, name, purge):
    """Remove a source from config.toml (its articles stay unless --purge).

    \b
    Example:
      aggregator remove-source 掘金 --purge
    """
    from .config import remove_source_from_file

    config = _config(ctx)
    if config.source(name) is None:
        raise ConfigError(f"{config.path}: no source named {name!r}")
    remove_source_from_file(config.path, name)
    click.echo(f"Removed {name!r} from {config.path}.")
    if purge:
        from .pipeline import purge_source

        gone = purge_source(load_config(config.path), name)
        click.echo(f"Purged {gone} article{'s' if gone != 1 else ''} and republished.")
    _tell_daemon(config, then="stops polling it", otherwise=None)


@cli.command("list-sources")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (keys: name, url, category, channel, interval, state, last_success, last_error, articles, last_error_kind, errors, next_poll, moved_to; rsshub:// sources also served_by and rsshub_instances).")
@click.pass_context
def list_sources(ctx, as_json):
    """Show every source with its health and article count.

    \b
    Example:
      aggregator list-sources --json | jq '.[] | select(.state == "failing")'
    """
    from .rsshub import is_route
    from .store import Store, to_iso

    config = _config(ctx)
    with Store(config.db_path) as store:
        states = store.source_states()
        refused = [(o.path, o.error, o.error_at) for o in store.outputs().values() if o.error]
        health = {r[0]: r for r in store.instance_health()}
    instances = [
        {"url": i, "last_success": to_iso(h[1]) if h and h[1] else None, "last_failure": to_iso(h[2]) if h and h[2] else None,
         "failures": h[3] if h else 0, "last_error": h[4] if h else None, "next_try": to_iso(h[5]) if h and h[5] else None}
        for i, h in ((i, health.get(i)) for i in config.rsshub_instances)
    ]
    rows = []
    for s in config.sources:
        st = states.get(s.name)
        rows.append(
            {
                "name": s.name,
                "url": s.url,
                "category": s.category,
                "channel": s.channel,
                "interval": format_interval(s.interval),
                "state": st.state if st and st.url else "new",
                "last_success": to_iso(st.last_success) if st and st.last_success else None,
                "last_error": st.last_error if st else None,
                "articles": st.articles if st else 0,
                "last_error_kind": st.last_error_kind if st else None,
                "errors": st.error_count if st else 0,
                "next_poll": to_iso(st.next_poll) if st and st.next_poll else None,
                "moved_to": st.moved_to if st else None,
                **({"served_by": st.served_by if st else None, "rsshub_instances": instances}
                   if is_route(s.url) else {}),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} source{'s' if len(rows) != 1 else ''} in {config.path}")
    for col in ("name", "category / channel", "url", "interval", "state", "last success", "next poll", "last error", "articles"):
        table.add_column(col, overflow="fold", justify="right" if col == "articles" else "left")
    from rich.markup import escape

    colours = {"ok": "green", "failing": "red", "new": "yellow", "gone": "magenta"}
    for r in rows:
        url = escape(r["url"]) + (f"\n→ moved to {escape(r['moved_to'])}" if r["moved_to"] else "")
        state = f"[{colours.get(r['state'], 'white')}]{r['state']}[/]" + (f" ×{r['errors']}" if r["errors"] else "")
        error = f"{r['last_error_kind']}: {escape(r['last_error'])}" if r["last_error"] else ""
        table.add_row(
            escape(r["name"]), escape(r["category"] + (f" / {r['channel']}" if r["channel"] else "")), url, r["interval"],
            state, r["last_success"] or "-", r["next_poll"] or ("never" if r["state"] == "gone" else "now"), error,
            str(r["articles"]),
        )
    console = Console()
    console.print(table)
    if any("served_by" in r for r in rows):
        hub = Table(title="RSSHub instances (rsshub:// sources), tried in this order while healthy")
        for col in ("instance", "last success", "consecutive failures", "last error", "next try"):
            hub.add_column(col, overflow="fold")
        for i in instances:
            sick = f"[red]{i['failures']}[/]" if i["failures"] else "[green]0[/]"
            hub.add_row(escape(i["url"]), i["last_success"] or "-", sick, escape(i["last_error"] or ""),
                        (i["next_try"] or "-") if i["failures"] else "-")
        console.print(hub)
    if refused:
        console.print(f"[red]{len(refused)} feed page{'s' if len(refused) != 1 else ''} not published[/]"
                      " (the last good version is still served):")
        for path, error, when in refused:
            console.print(f"  {escape(path)} ({to_iso(when) if when else '?'}): {escape(error)}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts and monitoring).")
@click.pass_context
def status(ctx, as_json):
    """Is the daemon running, when did it last poll, how are the sources and feeds.

    Shows: the daemon (pid) or that none runs on this data_dir; the last poll cycle's
    end and duration; sources by health state; articles in all and in the last 24 h;
    published feed pages (and any refused by validation); the next source due.
    Exit 0 whatever the state (use --json and check "daemon" in scripts).

    \b
    Example:
      aggregator status --json | jq .daemon.running
    """
    from .daemon import running_pid
    from .pipeline import utcnow
    from .store import Store, to_iso

    config = _config(ctx)
    now = utcnow()
    pid = running_pid(config.data_dir)
    if config.db_path.is_file():
        with Store(config.db_path) as store:
            stats = store.stats(now)
    else:
        stats = None
    configured = {s.name for s in config.sources}
    known = {s.name: s for s in stats.sources} if stats else {}
    by_state: dict[str, int] = {}
    for name in configured:
        state = known[name].state if name in known else "new"
        by_state[state] = by_state.get(state, 0) + 1
    due = sorted(((known[n].next_poll, n) for n in configured if n in known and known[n].next_poll), key=lambda x: x[0])
    never = sorted(n for n in configured if n not in known or (known[n].state == "new"))
    next_due = ({"source": never[0], "at": None} if never else
                {"source": due[0][1], "at": to_iso(due[0][0])} if due else None)
    data = {
        "daemon": {"running": pid is not None, "pid": pid},
        "last_cycle": {"at": to_iso(stats.last_cycle_at) if stats and stats.last_cycle_at else None,
                       "seconds": stats.last_cycle_seconds if stats else None},
        "sources": {"total": len(configured), **dict(sorted(by_state.items()))},
        "articles": {"total": stats.articles_total if stats else 0, "last_24h": stats.articles_last_24h if stats else 0},
        "feeds": {"pages": stats.published_pages if stats else 0,
                  "last_publish": to_iso(stats.last_publish_at) if stats and stats.last_publish_at else None,
                  "publish_seconds": stats.last_publish_seconds if stats else None,
                  "refused": [{"page": p, "error": e} for p, e in (stats.publish_errors if stats else ())]},
        "next_due": next_due,
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    daemon = f"running (pid {pid})" if pid else f"not running on {config.data_dir}"
    cycle = data["last_cycle"]
    states = ", ".join(f"{n} {k}" for k, n in data["sources"].items() if k != "total")
    lines = [
        f"daemon:      {daemon}",
        f"last cycle:  {cycle['at'] or 'never'}" + (f" ({cycle['seconds']:.2f} s)" if cycle["seconds"] is not None else ""),
        f"sources:     {len(configured)}" + (f" ({states})" if states else ""),
        f"articles:    {data['articles']['total']} ({data['articles']['last_24h']} in the last 24 h)",
        f"feeds:       {data['feeds']['pages']} pages published, last {data['feeds']['last_publish'] or 'never'}"
        + (f"; {len(data['feeds']['refused'])} refused (see list-sources)" if data["feeds"]["refused"] else ""),
        "next due:    " + (f"{next_due['source']} at {next_due['at'] or 'once the daemon starts'}" if next_due else "-"),
    ]
    click.echo("\n".join(lines))


# -- work -----------------------------------------------------------------------------


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--due", is_flag=True, help="Only sources whose next poll time has come (for cron).")
@click.option("--include-gone", is_flag=True, help="Also poll sources marked gone (HTTP 410); a success revives them.")
@click.option("--update-moved", is_flag=True, help="Write the new URL of permanently moved (301/308) sources into config.toml.")
@click.pass_context
def poll(ctx, names, due, include_gone, update_moved):
    """Poll all sources (or the NAMES given) once, then publish.

    Exits 0 when the cycle ran, even if some sources failed (see the table and
    list-sources); 2 for a config error or an unknown source name.

    \b
    Example:
      aggregator poll
      aggregator poll 财联社 掘金
      aggregator poll --due --update-moved
    """
    from .pipeline import Pipeline

    config = _config(ctx)
    console = None
    if sys.stdout.isatty():  # rich only for people: a cron or harness run never imports it
        from rich.console import Console

        console = Console(stderr=False)
    with Pipeline(config) as pipeline:
        sources = pipeline.select(names)
        kwargs = {"due_only": due, "include_gone": include_gone}
        if console is not None:
            from rich.progress import Progress

            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("Polling", total=len(sources))
                cycle = pipeline.poll(names, on_result=lambda r: progress.advance(task), **kwargs)
        else:
            cycle = pipeline.poll(names, **kwargs)
    _print_cycle(console, cycle, config)
    if update_moved:
        from .pipeline import update_moved_sources

        for name, new_url in update_moved_sources(config):
            click.echo(f"{name}: config.toml now points at {new_url}")


def _print_cycle(console, cycle, config) -> None:
    """A table on a terminal; one tab-separated line per source otherwise (cron mail,
    scripts, logs — and rendering a rich table of thousands of rows costs more than a
    whole warm cycle)."""
    from .pipeline import utcnow
    from .schedule import describe

    now = utcnow()
    rows = []
    for r in cycle.results:
        if r.skipped:
            kind, status = "yellow", f"skipped: {r.skipped}"
        elif r.error:
            kind, status = "red", f"{'gone' if r.gone else 'error'}: {r.error}"
        else:
            kind, status = "", "not modified" if r.not_modified else "ok"
        if r.moved_to:
            status += f" (moved permanently to {r.moved_to})"
        if r.skipped_entries:
            status += f" ({len(r.skipped_entries)} entries skipped)"
        if r.next_poll and not r.skipped:
            status += f"; next {describe(r.next_poll, now)}"
        rows.append((r.source, str(r.new), str(r.updated), str(r.unchanged), str(r.duplicates), status, kind))
    failed = sum(1 for r in cycle.results if r.error)
    new = sum(r.new for r in cycle.results)
    upd = sum(r.updated for r in cycle.results)
    summary = (f"{len(cycle.results)} sources, {failed} failed; {new} new, {upd} updated articles; "
               f"{len(cycle.posts_written)} posts written to {config.posts_dir}; {len(cycle.published)} feed files "
               f"written to {config.output_dir}.")
    if console is None or not console.is_terminal:
        lines = ["source\tnew\tupdated\tunchanged\tduplicates\tstatus"]
        lines += ["\t".join(row[:6]) for row in rows]
        click.echo("\n".join([*lines, summary]))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Poll results")
    for col in ("source", "new", "updated", "unchanged", "duplicates", "status"):
        table.add_column(col, justify="left" if col in ("source", "status") else "right", overflow="fold")
    for *cells, status, kind in rows:
        table.add_row(*cells, f"[{kind}]{escape(status)}[/]" if kind else escape(status))
    console.print(table)
    console.print(summary)


@cli.command()
@click.option("--all-posts", is_flag=True, help="Re-render every post file too (after an upgrade changed the format).")
@click.option("--rebuild", is_flag=True, help="Render every feed page, not only those whose articles changed.")
@click.pass_context
def publish(ctx, all_posts, rebuild):
    """Publish the feeds (and any missing post file) from the database.

    Only pages whose articles or settings changed are rendered; every document is
    validated before it replaces the old one, and files whose bytes would not change
    are left alone.

    \b
    Example:
      aggregator publish
      aggregator publish --rebuild --all-posts
    """
    _publish(ctx, posts="all" if all_posts else "missing", force=rebuild)


def _publish(ctx, *, posts: str, force: bool) -> None:
    """``publish`` and ``rebuild``: run it, say what was written, exit 1 on a refusal."""
    from .pipeline import Pipeline

    config = _config(ctx)
    with Pipeline(config) as pipeline:
        written = pipeline.publish(posts=posts, force=force)
        result = pipeline.last_publish
    click.echo(f"{len(written)} file{'s' if len(written) != 1 else ''} written under {config.output_dir}"
               f" ({result.rendered} feed pages rendered, {result.kept} unchanged).")
    for _page, message in result.failed:
        click.echo(f"not published: {message}", err=True)
    if result.failed:
        ctx.exit(1)


@cli.command()
@click.pass_context
def rebuild(ctx):
    """Re-render every post and every feed page from the database.

    The database is the source of truth: files are written after it and can always be
    rebuilt — after restoring a backup, deleting the output folder, or an upgrade that
    changed the format. Files whose bytes would not change are left alone.

    \b
    Example:
      aggregator rebuild
    """
    _publish(ctx, posts="all", force=True)


@cli.command()
@click.option("--serve", "with_server", is_flag=True, help="Also serve the output folder over HTTP (see 'serve').")
@click.option("--host", default=None, help="With --serve: address to listen on [default: serve_host].")
@click.option("--port", type=int, default=None, help="With --serve: port [default: serve_port].")
@click.pass_context
def run(ctx, with_server, host, port):
    """Run the daemon: poll every source on its interval, publish after changes.

    The first poll of each source starts at once. SIGTERM or SIGINT lets polls in
    flight finish, then exits 0. Meant for systemd (deploy/aggregator.service).

    \b
    Example:
      aggregator --config /etc/aggregator/config.toml run --serve
    """
    from .scheduler import run_daemon

    config = _config(ctx)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    serve = (host or config.serve_host, config.serve_port if port is None else port) if with_server else None
    run_daemon(config, serve=serve)


@cli.command()
@click.option("--host", default=None, help="Address to listen on [default: serve_host, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: serve_port, 8080].")
@click.pass_context
def serve(ctx, host, port):
    """Serve the published feeds over HTTP, with caching headers and compression.

    Serves output_dir only: feeds with their media types, strong ETags and 304s,
    gzip/brotli, plus /healthz (503 when polling has stalled) and /metrics
    (Prometheus). Stop with Ctrl-C or SIGTERM.

    \b
    Example:
      aggregator serve --host 0.0.0.0 --port 8080
    """
    from .serve import serve as serve_forever

    config = _config(ctx)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    serve_forever(config, host=host, port=port)


# -- sources as OPML ------------------------------------------------------------------


@cli.command("import-opml")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--category", default=None, help="Category for the feeds outside any folder (folders name the others).")
@click.option("--dry-run", is_flag=True, help="Show what would be added and skipped; write nothing.")
@click.pass_context
def import_opml(ctx, file, category, dry_run):
    """Add the feeds of an OPML file (a Miniflux, FreshRSS or other reader export) as sources.

    Every outline with an xmlUrl, at any depth, becomes a source: its top-level
    folder is the category, a second folder level the channel, its title the
    name (a name already taken by another URL gets " (2)"). Feeds outside any
    folder take --category, and are skipped without it. Duplicates (the URL of
    an existing source or of an earlier outline), non-http(s) URLs and outlines
    that are not RSS/Atom/JSON feeds are skipped; each skip is listed with its
    reason. Nothing is fetched: the new sources are appended to config.toml in
    one write (comments kept), and a running daemon is told to reload and polls
    them on its schedule. Exit 0 even with skips; 1 when FILE is not OPML.

    \b
    Example:
      aggregator import-opml miniflux-export.opml --dry-run
      aggregator import-opml feeds.opml --category 未分类
    """
    from .config import add_sources_to_file, config_from_dict
    from .subscriptions import plan_import, read_opml_file

    path: Path = ctx.obj
    if category is not None and not category.strip():
        raise click.BadParameter("must not be empty", param_hint="--category")
    config = load_config(path) if path.exists() else config_from_dict({}, path)
    plan = plan_import(read_opml_file(file), config.sources, category=category)
    if plan.add and not dry_run:
        add_sources_to_file(path, [s.as_table() for s in plan.add])
    click.echo(f"{file}: {plan.found} feed outline{'s' if plan.found != 1 else ''}.")
    if plan.add:
        head = "Would add" if dry_run else "Added"
        click.echo(f"{head} {len(plan.add)} source{'s' if len(plan.add) != 1 else ''} to {path}:")
        for s in plan.add:
            click.echo(f"  + {s.name}  [{s.category}{' / ' + s.channel if s.channel else ''}]  {s.url}")
    else:
        click.echo("No new source.")
    if plan.skipped:
        click.echo(f"Skipped {len(plan.skipped)}:")
        for s in plan.skipped:
            click.echo(f"  line {s.line}: {s.url or '-'}{f' ({s.name})' if s.name else ''}: {s.reason}")
    if dry_run:
        click.echo("Dry run: nothing written.")
        return
    if not plan.add:
        return
    click.echo("Nothing was fetched: the daemon polls each new source on its schedule.")
    _tell_daemon(config, then="starts polling them",
                 otherwise="start one to poll them (aggregator run), or poll once now: aggregator poll")


@cli.command("export-opml")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (atomically) instead of stdout.")
@click.pass_context
def export_opml(ctx, output):
    """Print every source as OPML 2.0: one folder per category, channels as nested folders.

    Feed readers (Miniflux, FreshRSS, ...) import it with its categories, and
    import-opml reads it back to the same names, URLs, categories and channels.
    Intervals, headers and other per-source settings are not exported (headers
    may hold secrets). Same sources, same bytes: there is no date in it.

    \b
    Example:
      aggregator export-opml -o sources.opml
    """
    from .subscriptions import build_opml

    config = _config(ctx)
    data = build_opml(config.sources, title=f"{config.site_title} sources")
    if output is None:
        click.get_binary_stream("stdout").write(data)
        return
    from .publish.atomic import write_atomic

    write_atomic(output, data)
    categories = len({s.category for s in config.sources})
    click.echo(f"Wrote {len(config.sources)} source{'s' if len(config.sources) != 1 else ''} in {categories} "
               f"categor{'ies' if categories != 1 else 'y'} to {output}.")


@cli.command()
@click.argument("needle", metavar="ARTICLE_OR_URL")
@click.pass_context
def explain(ctx, needle):
    """Why an article looks the way it does: its identity, date, full text, sources and edits.

    ARTICLE_OR_URL is an article's uid (or its first 8+ characters), its post file
    name, its link, or the link or guid of any copy merged into it. Prints which key
    matched each copy (g: source+guid, l: link, t: title+text, n: near-duplicate, with
    its similarity), the sources merged, the hashes of earlier versions, and for a
    source with fulltext whether the article page's text was used, and why (or why not).

    \b
    Example:
      aggregator explain https://www.cls.cn/detail/889356
    """
    from .store import Store, to_iso

    config = _config(ctx)
    with Store(config.db_path) as store:
        found = store.find_articles(needle)
        if not found:
            raise AggregatorError(f"no article matches {needle!r} (try a uid, a post name, a link or a guid)")
        kinds = {"first": "first copy", "g": "same source + guid", "l": "same link", "t": "same title + text",
                 "n": "near-duplicate"}
        for a in found:
            click.echo(f"{a.title}\n  uid {a.uid}   post {config.posts_dir / a.post_name}")
            click.echo(f"  category {a.category}   date {to_iso(a.date)} ({a.date_note})   first seen {to_iso(a.first_seen)}")
            note = store.fulltext_note(a.id)
            if note:
                click.echo(f"  full text: {note}")
            click.echo("  copies:")
            for s in store.article_sources(a.id):
                how = kinds.get(s["matched"], s["matched"])
                if s["matched"] == "n":
                    how += f", similarity {s['score']:.3f}"
                click.echo(f"    {s['seen']}  {s['source']}: {s['link'] or s['guid']}  [{how}]")
            for content_hash, replaced in store.article_versions(a.id):
                click.echo(f"  replaced version {content_hash[:16]}… at {replaced}")


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="demo-output", show_default=True,
              help="Where the demo's config, database and output go.")
@click.pass_context
def demo(ctx, directory):
    """Run the whole pipeline on the bundled sample feeds, offline.

    Serves the sample feeds from 127.0.0.1, writes a config for them in DIR, polls
    them, publishes, and prints where the articles and feeds landed.

    \b
    Example:
      aggregator demo --dir /tmp/aggregator-demo
    """
    from .demo import run_demo

    run_demo(Path(directory))


def main() -> None:
    cli(prog_name="aggregator")


__all__ = ["cli", "main", "SETTINGS"]
