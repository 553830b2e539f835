"""Which article extractor for issue 9's full text: trafilatura or readability-lxml, measured.

    /tmp/venv/bin/python benchmarks/fulltext_choice.py               # test pages + corpus transplants
    /tmp/venv/bin/python benchmarks/fulltext_choice.py --per-script 20
    /tmp/venv/bin/python benchmarks/fulltext_choice.py --no-corpus   # the hand-written pages only

Two sets of pages, each page with a known body and known chrome:

1. ``tests/pages/*.html``, the hand-written article pages, with the ground truth in
   ``tests/pages/pages.json``: ``body`` selects the paragraphs (headings, list items, code
   blocks) that must be kept, ``junk`` the navigation, share buttons, related and popular
   lists, comments, ads and footer, none of whose text may be.
2. Transplants: real article bodies (feed items with at least 1,500 characters of text,
   from the feed corpus, CJK and other scripts in equal numbers, at most 3 per feed) put
   into the chrome of each hand-written page in place of its body (``container``). Their
   body blocks are the item's innermost p, li, h2-h6, pre and blockquote elements with at
   least 10 characters; the junk is the page's chrome, as above.

3. The gate's matching rule (``aggregator.fulltext.matches``) on feed items that carry their
   full text: own summary or title against the item's text and against the other items of
   the same feed.

For each page and contender: recall (share of body blocks whose text is in the extracted
text), junk kept (share of chrome strings, at least 4 characters each, that are in it),
precision (body characters kept / body + junk characters kept) and the time per page. Text
is compared without whitespace, after the project's cleaner (``clean_html``), as the
pipeline would store it. Contenders: trafilatura (called as ``aggregator.fulltext`` calls
it, and with ``favor_precision``), readability-lxml (``Document.summary``), both again on the
page after ``aggregator.fulltext.strip_boilerplate``, and ``aggregator.fulltext.extract``
itself (boilerplate stripped, then trafilatura; the WeChat site rule).

Owns: the page sets, the measures and the Markdown table it prints. Must not: reach the
network or write files.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import feedparser
from bs4 import BeautifulSoup

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aggregator.clean import clean_html
from aggregator.fulltext import decode_page, extract, matches, strip_boilerplate
from aggregator.text import html_to_text

PAGES = REPO / "tests" / "pages"
MIN_JUNK_CHARS = 4  # shorter chrome strings ("首页", "News") also occur in real bodies
MIN_BLOCK_CHARS = 10
BLOCKS = ["p", "li", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote"]
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def squeeze(text: str) -> str:
    return "".join(text.split())


def trafilatura_call(**options) -> Callable[[str, str], str]:
    import trafilatura

    def run(html: str, url: str) -> str:
        return trafilatura.extract(html, url=url, output_format="html", include_images=True,
                                   include_links=True, include_formatting=True, include_tables=True,
                                   include_comments=False, **options) or ""
    return run


def readability_call(html: str, url: str) -> str:
    from readability import Document
    return Document(html, url=url).summary(html_partial=True)


def ours(html: str, url: str) -> str:
    found = extract(html, url)
    return found.html if found else ""


def pruned(run: Callable[[str, str], str]) -> Callable[[str, str], str]:
    return lambda html, url: run(strip_boilerplate(html), url)


CONTENDERS: dict[str, Callable[[str, str], str]] = {
    "trafilatura": trafilatura_call(),
    "trafilatura precision": trafilatura_call(favor_precision=True),
    "readability-lxml": readability_call,
    "pruned + trafilatura": pruned(trafilatura_call()),
    "pruned + readability-lxml": pruned(readability_call),
    "aggregator.fulltext": ours,
}


class Page:
    """An article page with its truth: body blocks and chrome strings (whitespace-free)."""

    def __init__(self, name: str, html: str, url: str, body: list[str], junk: list[str]):
        text = "".join(body)
        self.name, self.html, self.url, self.body = name, html, url, body
        self.junk = sorted({j for j in junk if j not in text})  # chrome words the body uses


def chrome_strings(soup: BeautifulSoup, selector: str) -> list[str]:
    found = []
    for element in soup.select(selector):
        for string in element.find_all(string=True):
            if string.parent.name not in ("script", "style") and len(s := squeeze(string)) >= MIN_JUNK_CHARS:
                found.append(s)
    return found


def test_pages() -> tuple[list[Page], dict]:
    truth = {k: v for k, v in json.loads((PAGES / "pages.json").read_text("utf-8")).items()
             if not k.startswith("_")}
    pages = []
    for name, spec in truth.items():
        html = decode_page((PAGES / name).read_bytes(), spec["content_type"])
        soup = BeautifulSoup(html, "lxml")
        body = [s for e in soup.select(spec["body"]) if (s := squeeze(html_to_text(str(e))))]
        pages.append(Page(name, html, spec["url"], body, chrome_strings(soup, spec["junk"])))
    return pages, truth


def parsed_feeds(folder: Path):
    """(path, feedparser result) for every feed in ``folder`` the parser can read."""
    for path in sorted(folder.iterdir()):
        try:
            yield path, feedparser.parse(io.BytesIO(path.read_bytes()))
        except Exception as e:  # noqa: BLE001 - a feed the parser chokes on is just not used
            print(f"skipped {path.name}: {e!r}", file=sys.stderr)


def corpus_items(folder: Path, per_script: int) -> list[tuple[str, str]]:
    """(label, item HTML): long items, round-robin over the feeds, CJK and others apart."""
    by_feed: dict[str, list[str]] = {}
    for path, parsed in parsed_feeds(folder):
        for entry in parsed.entries:
            content = (entry.get("content") or [{}])[0].get("value") or entry.get("summary") or ""
            if len(html_to_text(content)) >= 1500 and len(item_blocks(content)) >= 4:
                by_feed.setdefault(path.name, []).append(content)
    chosen: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for round_ in range(3):
        for feed, items in by_feed.items():
            if round_ < len(items):
                cjk = len(CJK.findall(html_to_text(items[round_]))) > 300
                if len(chosen[cjk]) < per_script:
                    chosen[cjk].append((f"{feed}#{round_}", items[round_]))
    return chosen[True] + chosen[False]


def item_blocks(html: str) -> list[str]:
    soup = BeautifulSoup(html, "lxml")
    found = soup.find_all(BLOCKS)
    inner = [e for e in found if not e.find(BLOCKS)]
    return [s for e in inner if len(s := squeeze(html_to_text(str(e)))) >= MIN_BLOCK_CHARS]


def transplants(templates: list[Page], truth: dict, items: list[tuple[str, str]]) -> list[Page]:
    pages = []
    for template in templates:
        spec = truth[template.name]
        for label, item in items:
            soup = BeautifulSoup(template.html, "lxml")
            container = soup.select_one(spec["container"])
            container.clear()
            container.append(BeautifulSoup(item, "lxml").body or "")
            for tag in container.find_all(["html", "body"]):
                tag.unwrap()
            pages.append(Page(f"{template.name} <- {label}", str(soup), template.url, item_blocks(item),
                              chrome_strings(soup, spec["junk"])))
    return pages


def measure(page: Page, run: Callable[[str, str], str]) -> dict:
    run(page.html, page.url)  # warm (lazy imports, caches)
    start = time.perf_counter()
    out = run(page.html, page.url)
    elapsed = time.perf_counter() - start
    text = squeeze(html_to_text(clean_html(out, base_url=page.url)))
    kept = [b for b in page.body if b in text]
    junk = [j for j in page.junk if j in text]
    body_chars, junk_chars = sum(map(len, kept)), sum(map(len, junk))
    return {"recall": len(kept) / len(page.body) if page.body else 1.0,
            "junk": len(junk) / len(page.junk) if page.junk else 0.0,
            "precision": body_chars / (body_chars + junk_chars) if body_chars + junk_chars else 0.0,
            "perfect": len(kept) == len(page.body) and not junk,
            "ms": elapsed * 1000, "missed": len(page.body) - len(kept), "junk_kept": junk}


def table(title: str, pages: list[Page], detail: bool) -> None:
    print(f"\n### {title} ({len(pages)} pages)\n")
    results = {name: [measure(p, run) for p in pages] for name, run in CONTENDERS.items()}
    if detail:
        print("| page | " + " | ".join(CONTENDERS) + " |")
        print("|---|" + "---|" * len(CONTENDERS))
        for i, page in enumerate(pages):
            cells = [f"{r[i]['recall']:.0%} / {r[i]['junk']:.0%} junk" for r in results.values()]
            print(f"| {page.name} | " + " | ".join(cells) + " |")
        print("\n(recall of body blocks / share of chrome strings kept)\n")
    if not detail:
        templates = sorted({p.name.split(" <- ")[0] for p in pages})
        print("| page template | " + " | ".join(CONTENDERS) + " |")
        print("|---|" + "---|" * len(CONTENDERS))
        for template in templates:
            cells = []
            for rows in results.values():
                mine = [r for p, r in zip(pages, rows) if p.name.startswith(template + " <- ")]
                cells.append(f"{statistics.mean(r['recall'] for r in mine):.0%} / "
                             f"{statistics.mean(r['junk'] for r in mine):.0%} junk")
            print(f"| {template} | " + " | ".join(cells) + " |")
        print("\n(mean recall of body blocks / mean share of chrome strings kept)\n")
    print("| extractor | recall (mean) | pages with every block | junk kept (mean) | precision (mean) "
          "| pages perfect | ms/page (median) |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        print(f"| {name} | {statistics.mean(r['recall'] for r in rows):.1%} "
              f"| {sum(r['missed'] == 0 for r in rows)}/{len(rows)} "
              f"| {statistics.mean(r['junk'] for r in rows):.1%} "
              f"| {statistics.mean(r['precision'] for r in rows):.1%} "
              f"| {sum(r['perfect'] for r in rows)}/{len(rows)} "
              f"| {statistics.median(r['ms'] for r in rows):.1f} |")


def matching(folder: Path) -> None:
    """The gate's "does the opening match?" rule on feed items that carry their full text:
    how often an item's own summary (or title) matches its own text, and how often it
    matches the text of another item of the same feed (a wrong block or page of the same
    site: the hardest case)."""
    feeds = []
    for path, parsed in parsed_feeds(folder):
        items = []
        for entry in parsed.entries:
            content = html_to_text((entry.get("content") or [{}])[0].get("value") or "")
            summary = html_to_text(entry.get("summary") or "")
            if len(content) >= 500:
                items.append((html_to_text(entry.get("title") or ""), summary if len(summary) < len(content) else "",
                              content))
        if len(items) >= 2:
            feeds.append(items)
    print(f"\n### Matching rule ({sum(map(len, feeds))} items with full text, {len(feeds)} feeds)\n")
    print("| compared with | items | own article matches | another article of the feed matches |")
    print("|---|---|---|---|")
    references = {"summary alone": lambda title, summary: {"title": "", "summary": summary},
                  "summary, title to confirm": lambda title, summary: {"title": title, "summary": summary},
                  "title alone": lambda title, summary: {"title": title, "summary": ""}}
    for kind, make in references.items():
        own, other = [], []
        for items in feeds:
            for i, (title, summary, content) in enumerate(items):
                reference = make(title, summary)
                if not (summary if kind.startswith("summary") else title):
                    continue
                own.append(matches(content, **reference))
                other += [matches(c, **reference) for j, (_, _, c) in enumerate(items) if j != i]
        print(f"| {kind} | {len(own)} | {sum(own) / len(own):.1%} | {sum(other) / len(other):.1%} "
              f"({sum(other)} of {len(other)}) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus" / "real")
    parser.add_argument("--per-script", type=int, default=30, help="corpus items per script group")
    parser.add_argument("--no-corpus", action="store_true")
    args = parser.parse_args()
    pages, truth = test_pages()
    table("Hand-written test pages", pages, detail=True)
    if not args.no_corpus and args.corpus.is_dir():
        items = corpus_items(args.corpus, args.per_script)
        cjk = sum(len(CJK.findall(html_to_text(h))) > 300 for _, h in items)
        print(f"\nCorpus items: {len(items)} ({cjk} CJK), each put into {len(pages)} page templates.")
        table("Real article bodies in the test pages' chrome", transplants(pages, truth, items), detail=False)
        matching(args.corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
