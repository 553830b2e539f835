"""``aggregator demo``: the whole pipeline on the bundled sample feeds, with no network.

The sample feeds (``demo/feeds/``, written for the demo) are served by a real HTTP server
on 127.0.0.1 (ephemeral port, with Last-Modified, so a second run gets 304s), a config for
them is written to the demo folder, and one ordinary poll cycle runs against it.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click

HERE = Path(__file__).parent
FEEDS = HERE / "feeds"


class _Quiet(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".xml": "application/xml",
        ".json": "application/feed+json",
    }

    def log_message(self, format, *args):  # noqa: A002 - the demo prints its own summary
        pass


def serve_samples() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(FEEDS)))
    threading.Thread(target=server.serve_forever, name="demo-http", daemon=True).start()
    return server


def run_demo(directory: Path) -> None:
    from rich.console import Console

    from ..cli import _print_cycle
    from ..config import load_config
    from ..pipeline import Pipeline

    directory.mkdir(parents=True, exist_ok=True)
    server = serve_samples()
    try:
        port = server.server_address[1]
        config_file = directory / "config.toml"
        config_file.write_text((HERE / "demo.toml").read_text(encoding="utf-8").replace("{port}", str(port)), encoding="utf-8")
        config = load_config(config_file)
        console = Console()
        console.print(f"Serving {len(list(FEEDS.iterdir()))} sample feeds on http://127.0.0.1:{port}/; config: {config_file}")
        with Pipeline(config) as pipeline:
            cycle = pipeline.poll()
    finally:
        server.shutdown()
        server.server_close()
    _print_cycle(console, cycle, config)
    posts = sorted(config.posts_dir.glob("*.md"))
    feeds = sorted(p for p in config.output_dir.rglob("*")
                   if p.is_file() and p.name.endswith(".rss.xml") and "archive" not in p.relative_to(config.output_dir).parts)
    console.print(f"\n[bold]Published feeds[/] (each also as .atom.xml and .json; all listed in "
                  f"{config.output_dir / 'index.html'} and index.opml):")
    for p in feeds:
        console.print(f"  {p}")
    if posts:
        console.print(f"\n[bold]Articles[/] ({len(posts)} in {config.posts_dir}); the first one:\n")
        click.echo(posts[0].read_text(encoding="utf-8")[:1500])
    console.print(f"\nRun it again: the sources answer 304 and nothing is rewritten. Explore with:\n"
                  f"  aggregator --config {config_file} list-sources\n"
                  f"  aggregator --config {config_file} serve      (then open http://127.0.0.1:{config.serve_port}/)")
