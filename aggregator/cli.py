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


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # one line per poll is ours to write; the libraries' per-request lines only with -vv
    for noisy in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), default=None, envvar="AGGREGATOR_CONFIG",
    help="Config file [default: ./config.toml, or $AGGREGATOR_CONFIG].",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(__version__, prog_name="aggregator")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int) -> None:
    """Poll feeds, write Hexo-style articles, republish them as RSS, Atom and JSON Feed.

    \b
    Example:
      aggregator add-source https://rsshub.app/cls/depth/1000 --name 财联社 --category 金融 --channel 深度
      aggregator poll
      aggregator run
    """
    _setup_logging(verbose)
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
@click.option("--no-check", is_flag=True, help="Add without fetching the URL first.")
@click.pass_context
def add_source(ctx, url, name, category, channel, interval, no_check):
    """Add a source to config.toml, after checking that URL is a feed.

    One GET: a feed is added as is; an HTML page that advertises a feed
    (<link rel="alternate" type="application/rss+xml" ...>) adds that feed instead.
    Comments and layout of config.toml are kept.

    \b
    Example:
      aggregator add-source https://rsshub.app/cls/depth/1000 --name 财联社 --category 金融 --channel 深度
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
    if not no_check:
        from .pipeline import check_feed

        check = check_feed(config, url.strip(), source=name)
        if check.discovered_from:
            click.echo(f"{url} is a page; it advertises the feed {check.url} — using that.")
            if any(s.url == check.url for s in config.sources):
                raise ConfigError(f"{path}: the feed {check.url} is already a source")
        url = check.url
        click.echo(f"Feed: {check.title or '(untitled)'} — {check.entries} item{'s' if check.entries != 1 else ''}")
    add_source_to_file(
        path, {"name": name.strip(), "url": url.strip(), "category": category.strip(), "channel": (channel or "").strip(), "interval": interval or ""}
    )
    click.echo(f"Added {name!r} ({category}{' / ' + channel if channel else ''}) to {path}.")
    if not no_check:
        from .pipeline import Pipeline

        config = load_config(path)
        with Pipeline(config) as pipeline:
            result = pipeline.ingest(config.source(name.strip()), check.fetched)
        if result.error:
            click.echo(f"Its items could not be stored yet: {result.error}", err=True)
        else:
            click.echo(f"Stored {result.new} new article{'s' if result.new != 1 else ''} ({result.duplicates} already known); "
                       f"the next poll sends a conditional request.")
    click.echo("A running daemon picks it up on restart (systemctl restart aggregator); or now: aggregator poll " + _quote(name))


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


@cli.command("list-sources")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (keys: name, url, category, channel, interval, state, last_success, last_error, articles, last_error_kind, errors, next_poll, moved_to).")
@click.pass_context
def list_sources(ctx, as_json):
    """Show every source with its health and article count.

    \b
    Example:
      aggregator list-sources --json | jq '.[] | select(.state == "failing")'
    """
    from .store import Store, to_iso

    config = _config(ctx)
    with Store(config.db_path) as store:
        states = store.source_states()
        refused = [(o.path, o.error, o.error_at) for o in store.outputs().values() if o.error]
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
    if refused:
        console.print(f"[red]{len(refused)} feed page{'s' if len(refused) != 1 else ''} not published[/]"
                      " (the last good version is still served):")
        for path, error, when in refused:
            console.print(f"  {escape(path)} ({to_iso(when) if when else '?'}): {escape(error)}")


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
    from rich.console import Console

    from .pipeline import Pipeline

    config = _config(ctx)
    console = Console(stderr=False)
    with Pipeline(config) as pipeline:
        sources = pipeline.select(names)
        kwargs = {"due_only": due, "include_gone": include_gone}
        if console.is_terminal:
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
            console.print(f"{name}: config.toml now points at {new_url}")


def _print_cycle(console, cycle, config) -> None:
    from rich.table import Table

    table = Table(title="Poll results")
    for col in ("source", "new", "updated", "unchanged", "duplicates", "status"):
        table.add_column(col, justify="left" if col in ("source", "status") else "right", overflow="fold")
    from rich.markup import escape

    from .pipeline import utcnow
    from .schedule import describe

    now = utcnow()
    for r in cycle.results:
        if r.skipped:
            status = f"[yellow]skipped: {escape(r.skipped)}[/]"
        elif r.error:
            status = f"[red]{'gone' if r.gone else 'error'}: {escape(r.error)}[/]"
        else:
            status = "not modified" if r.not_modified else "ok"
        if r.moved_to:
            status += f" (moved permanently to {escape(r.moved_to)})"
        if r.skipped_entries:
            status += f" ({len(r.skipped_entries)} entries skipped)"
        if r.next_poll and not r.skipped:
            status += f"; next {describe(r.next_poll, now)}"
        table.add_row(r.source, str(r.new), str(r.updated), str(r.unchanged), str(r.duplicates), status)
    console.print(table)
    failed = sum(1 for r in cycle.results if r.error)
    new = sum(r.new for r in cycle.results)
    upd = sum(r.updated for r in cycle.results)
    console.print(
        f"{len(cycle.results)} sources, {failed} failed; {new} new, {upd} updated articles; "
        f"{len(cycle.posts_written)} posts written to {config.posts_dir}; {len(cycle.published)} feed files written to {config.output_dir}."
    )


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
    from .pipeline import Pipeline

    config = _config(ctx)
    with Pipeline(config) as pipeline:
        written = pipeline.publish(posts="all" if all_posts else "missing", force=rebuild)
        result = pipeline.last_publish
    click.echo(f"{len(written)} file{'s' if len(written) != 1 else ''} written under {config.output_dir}"
               f" ({result.rendered} pages rendered, {result.kept} unchanged).")
    for page, message in result.failed:
        click.echo(f"not published: {message}", err=True)
    if result.failed:
        ctx.exit(1)


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


@cli.command()
@click.argument("needle", metavar="ARTICLE_OR_URL")
@click.pass_context
def explain(ctx, needle):
    """Why an article looks the way it does: its identity, date, sources and edits.

    ARTICLE_OR_URL is an article's uid (or its first 8+ characters), its post file
    name, its link, or the link or guid of any copy merged into it. Prints which key
    matched each copy (g: source+guid, l: link, t: title+text, n: near-duplicate, with
    its similarity), the sources merged, and the hashes of earlier versions.

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
