"""The clean stage's two ways of reading HTML (issue 8, aggregator.clean ``_parse``).

lxml's own tree is the fast way, but libxml2 stops building it past a depth (silently
dropping the rest of the document) and keeps the elements after a ``</html>`` without the
text between them; ``_EventTree`` builds the same tree from the parser's events, which have
it all. Here the events are the reference: on every body of the corpus and on generated
markup the tree must give the same HTML, and the shapes the tree loses must come out whole.
(The rewrite was also checked, outside this suite, against the BeautifulSoup implementation
it replaced: the same nh3 input, byte for byte, for every body and test input.)
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.clean import (
    DEFAULT_IFRAME_HOSTS,
    _EventTree,
    _parse,
    _parser,
    _rewrite,
    clean_html,
)
from aggregator.cleanrules import iframe_rules
from aggregator.errors import AggregatorError
from aggregator.parse import parse_feed
from aggregator.text import html_to_text
from tests.conftest import corpus_dir
from tests.test_clean import BASE, hostile_markup, unsafe


def _through_events(html: str, base: str | None, rules) -> str:
    parser = _parser(target=_EventTree())
    parser.feed(html.removeprefix("\ufeff"))
    document = parser.close()
    return _rewrite(document.text, document.children, base, rules)


def _through_parse(html: str, base: str | None, rules) -> str:
    return _rewrite(*_parse(html), base, rules)


def _same(html: str, base: str | None, hosts: frozenset[str]) -> tuple[str, str]:
    # Whitespace before the first and after the last element is only in the events; the
    # cleaned result is stripped, so it cannot show.
    rules = iframe_rules(hosts)
    return _through_parse(html, base, rules).strip(), _through_events(html, base, rules).strip()


@pytest.mark.corpus
def test_tree_and_events_agree_on_the_corpus():
    compared = 0
    for path in sorted(corpus_dir().glob("*/*")):
        try:
            feed = parse_feed(path.read_bytes(), {}, "https://example.org/feed")
        except AggregatorError:  # not a feed: nothing to clean
            continue
        for entry in feed.entries:
            base = entry.base_url or entry.link
            for html in (entry.content, entry.summary):
                if html and "<" in html:
                    # the body as it comes, and as the confirming pass reads it again
                    for markup in (html, clean_html(html, base)):
                        tree, events = _same(markup, base, DEFAULT_IFRAME_HOSTS)
                        assert tree == events, (path.name, markup[:200])
                        compared += 1
    assert compared > 6000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_markup, st.sampled_from([BASE, None]),
       st.sampled_from([DEFAULT_IFRAME_HOSTS, frozenset()]))
def test_tree_and_events_agree_on_generated_markup(markup, base, hosts):
    tree, events = _same(markup, base, hosts)
    assert tree == events


# --- what lxml's tree alone would lose -------------------------------------------------

@pytest.mark.parametrize("markup, text", [
    ("a</html> b<p>c</p>", "a b c"),  # the space between the roots shows
    ("a</html>b", "ab"),
    ("<p>a</p></html>\n<p>b</p></html>\n<img src=/x.png>c", "a b c"),
])
def test_text_after_an_end_html_tag_is_kept(markup, text):
    out = clean_html(markup, BASE)
    assert html_to_text(out) == text
    assert clean_html(out, BASE) == out


@pytest.mark.parametrize("markup", [
    "<div>" * 3_000 + "deep" + "</div>" * 3_000 + "<p>after</p>",
    "<div>" * 3_000 + "deep<p>after</p>",  # never closed
    "<svg>" + "<g>" * 3_000 + "</g>" * 3_000 + "</svg>deep<p>after</p>",  # deep, then dropped
])
def test_text_past_the_depth_of_lxmls_tree_is_kept(markup):
    # 3,000 levels: under the flattening cap (MAX_START_TAGS), past libxml2's 2,048.
    out = clean_html(markup, BASE)
    assert html_to_text(out) == "deep after"
    assert unsafe(out) == [] and clean_html(out, BASE) == out


def test_control_characters_from_entities_do_not_break_the_rewrite():
    # lxml refuses to set such text on an element; the rewrite never sets any.
    out = clean_html('<p>a<math alttext="x&#12;y"><mi>z</mi></math>b&#12;</p>', BASE)
    assert html_to_text(out) == "axyb"


def test_noscript_twin_before_its_lazy_image_is_dropped():
    # The image outside comes after the <noscript>: known only once the walk is over.
    markup = ('<noscript><img src="/a.jpg"></noscript>'
              '<img src="data:image/gif;base64,R0lG" data-src="/a.jpg"><p>text</p>')
    out = clean_html(markup, BASE)
    assert out.count("<img") == 1 and html_to_text(out) == "text"
    only = '<noscript><img src="/b.jpg"></noscript><img data-src="/a.jpg">'
    assert clean_html(only, BASE).count("<img") == 2


def test_leading_byte_order_marks_are_not_content():
    assert clean_html("\ufeff<p>x</p>") == clean_html("\ufeff\ufeff<p>x</p>") == "<p>x</p>"
