"""The per-item text work made cheaper in issue 8 gives what it gave before.

``similarity`` (tokens, NFKC, shingle digests, the vote count), ``text`` (``html_to_text``,
``first_image``, the excerpt of a plain text, ``strip_tracking``) and ``normalize`` (the
normalized text of the dedup keys) were rewritten for CPU only; fingerprints are stored in SQLite, so every one
must stay bit-identical. The oracle is the code as it was: the three modules read with git
from ``REFERENCE_COMMIT`` (the commit before the change; a fixed commit rather than HEAD,
which would compare the new code with itself once committed), imported as the package
``aggregator_before`` next to today's other modules. Compared: every draft of every corpus
feed field by field, every text function on every corpus text, generated text and markup
(hypothesis), and the regexes on every code point.
"""

from __future__ import annotations

import dataclasses
import importlib
import random
import shutil
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import similarity, text
from aggregator.errors import AggregatorError
from aggregator.models import Source
from aggregator.normalize import _normalized_plain_text, normalize_entries
from aggregator.parse import parse_feed
from tests.conftest import ROOT, corpus_dir
from tests.test_posts_equivalence import MARKUP, markup, words

REFERENCE_COMMIT = "b15a64b739c2a93c3ffce78e5c22adaa2595f91c"
CHANGED = ("similarity.py", "text.py", "normalize.py")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def before(tmp_path_factory) -> SimpleNamespace:
    sources = {}
    for name in CHANGED:
        try:
            shown = subprocess.run(["git", "show", f"{REFERENCE_COMMIT}:aggregator/{name}"], cwd=ROOT,
                                   capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            pytest.skip(f"the reference code (aggregator/{name} at {REFERENCE_COMMIT[:7]}) is not readable "
                        f"with git here ({e}): nothing to compare with")
        sources[name] = shown.stdout
    root = tmp_path_factory.mktemp("before")
    shutil.copytree(ROOT / "aggregator", root / "aggregator_before", ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in sources.items():
        (root / "aggregator_before" / name).write_bytes(source)
    sys.path.insert(0, str(root))
    try:
        return SimpleNamespace(**{name.removesuffix(".py"): importlib.import_module(f"aggregator_before.{name[:-3]}")
                                  for name in CHANGED})
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def corpus_feeds() -> list[tuple[str, list]]:
    feeds = []
    for path in sorted((corpus_dir() / "real").iterdir()):
        try:
            feed = parse_feed(path.read_bytes(), {}, "https://example.org/feed")
        except AggregatorError:  # not a feed
            continue
        feeds.append((path.name, feed.entries))
    return feeds


def _reference_cut(before, plain: str, limit: int = 200) -> str:
    """The reference's excerpt of ``plain`` with its "<" as text (the reference read a
    decoded "<" as a tag again: "Use <b> for bold" lost "<b>"), except for a text that is
    twice-escaped markup as a whole, which both read as HTML. Character references left in
    the text it decoded once more, as ``text_excerpt`` still does."""
    if text._ESCAPED_MARKUP_RE.match(plain):
        return before.text.excerpt(plain, limit)
    return before.text.excerpt(plain.replace("<", "&lt;"), limit)


def _fields(draft) -> dict:
    return {f.name: getattr(draft, f.name) for f in dataclasses.fields(draft)}


# --- every draft of the corpus ------------------------------------------------------------

@pytest.mark.corpus
def test_drafts_of_every_corpus_feed_are_those_of_the_reference(before, corpus_feeds):
    drafts = fingerprints = 0
    for i, (name, entries) in enumerate(corpus_feeds):
        source = Source(name=f"s{i}", url=f"https://example.org/{name}", category=f"c{i % 3}", channel=None,
                        interval=3600)
        new, new_problems = normalize_entries(entries, source, now=NOW, future_skew=timedelta(hours=1))
        old, old_problems = before.normalize.normalize_entries(entries, source, now=NOW, future_skew=timedelta(hours=1))
        assert new_problems == old_problems, name
        assert [{**_fields(d), "summary": None} for d in new] == [{**_fields(d), "summary": None} for d in old], name
        for d, o in zip(new, old, strict=True):
            # the one change since: a decoded "<" in the text is kept, not read as a tag
            assert d.summary == o.summary or "<" in d.summary, (name, d.summary, o.summary)
        drafts += len(new)
        fingerprints += sum(d.fingerprint is not None for d in new)
    # the corpus's 248 files hold about 4,400 items, 1,200 of them long enough to fingerprint
    assert drafts > 4000 and fingerprints > 1000


# --- every text function on every corpus text ---------------------------------------------

@pytest.mark.corpus
def test_text_functions_on_every_corpus_text_are_those_of_the_reference(before, corpus_feeds):
    compared = 0
    for name, entries in corpus_feeds:
        for entry in entries:
            title = text.clean_title(entry.title)
            for html in (entry.content, entry.summary, entry.title):
                if not html:
                    continue
                plain = text.html_to_text(html)
                assert plain == before.text.html_to_text(html), (name, html[:200])
                assert text.first_image(html) == before.text.first_image(html), (name, html[:200])
                assert text.excerpt(html) == before.text.excerpt(html), (name, html[:200])
                assert text.text_excerpt(plain) == _reference_cut(before, plain), (name, plain[:200])
                assert _normalized_plain_text(plain) == before.normalize.normalize_text(plain), (name, plain[:200])
                assert similarity.normalize(plain) == before.similarity.normalize(plain), (name, plain[:200])
                assert similarity.tokens(plain) == before.similarity.tokens(plain), (name, plain[:200])
                assert similarity.fingerprint(title, plain) == before.similarity.fingerprint(title, plain), name
                assert similarity.simhash(title, plain) == before.similarity.simhash(title, plain), name
                compared += 1
    assert compared > 5000


# --- generated text and markup ------------------------------------------------------------

IMAGES = ["<img src=https://e.org/a.jpg>", '<IMG SRC="https://e.org/b.png" width=10>', "<img src='/relative.png'>",
          "<img src=https://e.org/emoji/1.png>", "<img alt src=https://e.org/c.gif?a=1&amp;b=2>", "<img src=>",
          '<img src="https://e.org/d.jpg" src="https://e.org/e.jpg">', "<img src=https://e.org/f.jpg/>", "<img/>",
          "<img\nsrc = 'https://e.org/g.jpg' height='100'>", "<img src=' https://e.org/h.jpg ' width=''>", "<img",
          '<img data-src="x" src="&#104;ttps://e.org/i.jpg">', "<img src=https://e.org/j.jpg width=20%>", "<İmg>",
          "<img src=https://e.org/k.jpg\xa0width=1>", '<img src="https://e.org/l.jpg"width=1>', "<imgx src=a>"]
image_markup = st.lists(st.one_of(st.sampled_from(IMAGES + MARKUP), st.text(st.characters(), max_size=4)),
                        max_size=20).map("".join)


@settings(max_examples=2000)
@given(html=st.one_of(markup, image_markup))
def test_text_functions_on_generated_markup_are_those_of_the_reference(before, html):
    plain = text.html_to_text(html)
    assert plain == before.text.html_to_text(html)
    assert text.first_image(html) == before.text.first_image(html)
    assert text.text_excerpt(plain) == _reference_cut(before, plain)
    assert text.text_excerpt(plain, 7) == _reference_cut(before, plain, 7)
    assert _normalized_plain_text(plain) == before.normalize.normalize_text(plain)


PARAMETERS = ["utm_source=x", "UTM_Medium=y", "spm=1", "from=timeline", "from=Timeline", "from=other", "fr%6Fm=timeline",
              "from=time%6Cine", "utm%5Fx=1", "from+=timeline", "a+b=c", "%2B=1", "isappinstalled=0", "", "=", "a",
              "a=b=c", "#frag", "?", "&", "%"]
links = st.tuples(st.sampled_from(["https://e.org/p", "HTTP://E.org:80/", "", "/relative", "https://e.org/#x?utm_a=1"]),
                  st.sampled_from(["?", "", "#", "?#"]),
                  st.lists(st.one_of(st.sampled_from(PARAMETERS), st.text(max_size=3)), max_size=8)).map(
    lambda t: t[0] + t[1] + "&".join(t[2]))


@settings(max_examples=1000)
@given(link=links)
def test_tracking_parameters_go_as_in_the_reference(before, link):
    assert text.strip_tracking(link) == before.text.strip_tracking(link)
    assert text.canonical_url(link) == before.text.canonical_url(link)


# Full-width forms (some followed by a combining mark that composes with their ASCII
# form: ＞ + U+0338 is ≯), "…", marks, ligatures, spaceless scripts and ASCII.
TRICKY = ["Ａ", "ｚ", "１", "＞", "＝", "\u0338", "…", "\u0301", "\u3000", "ﬃ", "ß", "İ", "中", "ก", "가", "\u0915\u093f",
          "ｶ", "ﾞ", "_", "＿", "a", "Z", "9", " ", ".", "【", "】", "［", "］"]
tricky = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(st.characters(), max_size=3)), max_size=300).map("".join)


@settings(max_examples=1000)
@given(title=st.one_of(words, tricky), plain=st.one_of(words, tricky), n=st.integers(1, 4))
def test_similarity_on_generated_text_is_that_of_the_reference(before, title, plain, n):
    assert similarity.normalize(plain) == before.similarity.normalize(plain)
    assert similarity.tokens(plain) == before.similarity.tokens(plain)
    assert similarity.shingles(title, plain, n) == before.similarity.shingles(title, plain, n)
    assert similarity.simhash(title, plain, n) == before.similarity.simhash(title, plain, n)
    for min_text in (0, 3, 150):
        assert similarity.fingerprint(title, plain, min_text) == before.similarity.fingerprint(title, plain, min_text)


def test_vote_count_past_the_reference_16_bit_lanes(before):
    # 70,000 shingles: more votes than a 16-bit field holds (the reference switched lanes)
    rng = random.Random(8)
    grams = [f"g{rng.randrange(10**9)}" for _ in range(70_000)]
    plain = " ".join(grams)
    assert similarity.simhash("", plain, 1) == before.similarity.simhash("", plain, 1)


# --- the regexes on every code point ------------------------------------------------------

EVERY_CHARACTER = "".join(map(chr, range(0x110000)))


def test_tokens_of_every_code_point_are_those_of_the_reference(before):
    shuffled = list(EVERY_CHARACTER)
    random.Random(8).shuffle(shuffled)
    for chars in (EVERY_CHARACTER, "".join(shuffled)):
        assert similarity._TOKEN_RE.findall(chars) == before.similarity._TOKEN_RE.findall(chars)
    ascii_shuffled = list(EVERY_CHARACTER[:128])
    random.Random(8).shuffle(ascii_shuffled)
    ascii_chars = EVERY_CHARACTER[:128] + "".join(ascii_shuffled)
    assert similarity._ASCII_TOKEN_RE.findall(ascii_chars) == before.similarity._TOKEN_RE.findall(ascii_chars)


def test_normalize_of_every_code_point_is_that_of_the_reference(before):
    # one character at a time, and each after a full-width form that NFKC may compose with
    for c in EVERY_CHARACTER:
        assert similarity.normalize(c) == before.similarity.normalize(c), hex(ord(c))
    for head in ("＞", "…"):
        chunk = head.join(EVERY_CHARACTER[i:i + 64] for i in range(0, 0x110000, 64))
        assert similarity.normalize(chunk) == before.similarity.normalize(chunk)


def test_img_search_matches_every_lower_cased_spelling():
    # "<img" in html.lower() holds exactly when the regex finds one: only these characters
    # lower-case to a string holding "<", "i", "m" or "g".
    lowering = {c for c in EVERY_CHARACTER if set(c.lower()) & set("<img")}
    assert lowering == set("<iImMgG") | {"\u0130"}
    assert "\u0130".lower() == "i\u0307"  # no "m" can follow its "i"
    for html in ("<IMG", "<iMg", "<\u0130mg", "<\u0131mg", "< img", "<im g", "a<Img>"):
        assert bool(text._IMG_OPEN_RE.search(html)) == ("<img" in html.lower()), html


@settings(max_examples=500)
@given(st.text(st.sampled_from("<iImMgG\u0130\u0131 x>")))
def test_img_search_is_the_lower_cased_test(html):
    assert bool(text._IMG_OPEN_RE.search(html)) == ("<img" in html.lower())


def test_text_excerpt_keeps_decoded_markup_as_words():
    # html_to_text decodes &lt; once, to "<": the article's own words, which the reference
    # read as markup a second time ("<b>" and the address lost)
    for html, plain in (("<p>Use &lt;b&gt; for bold</p>", "Use <b> for bold"), ("&lt;div&gt;", "<div>"),
                        ('to: "lu" &lt;lu@example.org&gt;', 'to: "lu" <lu@example.org>')):
        assert text.html_to_text(html) == plain
        assert text.text_excerpt(plain) == plain
    long = "Wrap the figure in a &lt;figure&gt; element. " * 10
    cut = text.text_excerpt(text.html_to_text(long))
    assert cut.startswith("Wrap the figure in a <figure> element.") and cut.endswith("…") and len(cut) <= 200


def test_text_excerpt_reads_a_twice_escaped_document_as_html():
    # reddit's feed escapes its HTML twice ("&amp;lt;p&amp;gt;" in the XML): the item's HTML
    # is escaped markup, and its text the markup itself
    html = "&lt;!-- SC_OFF --&gt;&lt;div class=&quot;md&quot;&gt;&lt;p&gt;Hey Reddit!&lt;/p&gt;&lt;/div&gt;"
    assert text.text_excerpt(text.html_to_text(html)) == "Hey Reddit!"
    assert text.text_excerpt('<div class="md"><p>Hey</p></div>') == "Hey"
    # prose that merely begins with a tag-like word, or never closes one, stays text
    for plain in ("<L29Ah> echo yay <Minoru> ok", "<b> is bold", "See <b>test<b>", "Wrap it: <figure> ... </figure>"):
        assert text.text_excerpt(plain) == plain


def test_text_excerpt_decodes_a_twice_escaped_reference_once_more():
    # "&amp;ldquo;" in a feed's HTML is "&ldquo;" in its text: the character was meant
    for html, plain in (("&amp;ldquo;Tell, Don&amp;rsquo;t Ask&amp;rdquo;", "\u201cTell, Don\u2019t Ask\u201d"),
                        ("7769&amp;nbsp;リズム", "7769 リズム"), ("AT&amp;amp;T", "AT&T"), ("x&amp;lt;y", "x<y"),
                        ("&amp;lt;b&amp;gt; &amp;amp; &lt;i&gt;", "<b> & <i>"), ("AT&T", "AT&T")):
        assert text.text_excerpt(text.html_to_text(html)) == plain, html


def test_nfkc_of_the_replaced_characters_is_their_decomposition():
    # the replacement is sound only if each replaced character's NFKC is that of its NFKD
    for c, decomposed in similarity._DECOMPOSED.items():
        assert decomposed == unicodedata.normalize("NFKD", c)
        assert unicodedata.normalize("NFKC", decomposed) == unicodedata.normalize("NFKC", c)
