"""Tests for choosing a feed's character encoding (aggregator.encoding) and for the chosen
text reaching the parsed feed intact (through aggregator.parse.parse_feed).

Expectations never come from our decoder: they are Python's codec for the label the data
names (its XML declaration, the feedparser test file's own "Expect:" line, PROVENANCE.tsv's
note), read with lxml where item titles are compared.
"""

from __future__ import annotations

import codecs
import pickle
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from bs4 import BeautifulSoup
from lxml import etree

from aggregator.encoding import DETECT_LIMIT, Decoded, codec_name, decode_feed_bytes
from aggregator.parse import parse_feed
from tests.conftest import CORPUS

URL = "https://example.org/blog/feed.xml"
XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding=[\"']([^\"']+)[\"'][^>]*\?>")
NO_CORPUS = f"shared corpus not found at {CORPUS}; set AGGREGATOR_CORPUS"

# Script each legacy test file's title/items must contain once decoded, by its label.
HAN, KANA = "\u4e00-\u9fff", "\u3040-\u30ff"
HANGUL, CYRILLIC = "\uac00-\ud7af", "\u0400-\u04ff"
SCRIPTS = {"Big5": f"[{HAN}]", "GB2312": f"[{HAN}]", "EUC-JP": f"[{KANA}{HAN}]",
           "SHIFT_JIS": f"[{KANA}{HAN}]", "CP932": f"[{KANA}{HAN}]", "EUC-KR": f"[{HANGUL}]",
           "CP949": f"[{HANGUL}]", "KOI8-R": f"[{CYRILLIC}]", "windows-1251": f"[{CYRILLIC}]",
           "IBM855": f"[{CYRILLIC}]", "IBM866": f"[{CYRILLIC}]", "iso-8859-5": f"[{CYRILLIC}]",
           "iso-8859-7": "[\u0370-\u03ff]", "windows-1255": "[\u0590-\u05ff]",
           "TIS-620": "[\u0e00-\u0e7f]",
           "iso-8859-2": "[őűŐŰ]", "windows-1250": "[őűŐŰ]", "iso-8859-9": "[ğışĞİŞ]"}
MOJIBAKE = re.compile("[\ufffd\x80-\x9f]|Ã|Ð")

# WHATWG Encoding Standard "Names and labels": these labels mean the Windows code page.
WHATWG_LABELS = {"iso-8859-1": "cp1252", "tis-620": "cp874", "iso-8859-9": "cp1254"}


def corpus_paths(pattern: str) -> list:
    paths = sorted(CORPUS.glob(pattern)) if CORPUS.is_dir() else []
    if not paths:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS), id="no-corpus")]
    return [pytest.param(p, id=p.name, marks=pytest.mark.corpus) for p in paths]


def item_titles(text: str) -> list[str]:
    """Item/entry titles of a decoded document, as lxml reads them, whitespace-collapsed."""
    root = etree.fromstring(text, etree.XMLParser(recover=True, resolve_entities=False,
                                                  no_network=True))
    return [" ".join("".join(t.itertext()).split()) for t in root.iter(etree.Element)
            if etree.QName(t).localname == "title"
            and etree.QName(t.getparent()).localname in ("item", "entry")]


def feed_text(feed) -> str:
    texts = [feed.title, *(e.title for e in feed.entries), *(e.content for e in feed.entries)]
    return " ".join(t for t in texts if t)


# --- declared encodings: precedence, supersets, refused labels --------------------------

RUSSIAN = "Новости дня"


def _feed_in(declared: str | None) -> str:
    decl = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    return (decl + f'<rss version="2.0"><channel><title>{RUSSIAN}</title><item><title>{RUSSIAN}'
            "</title></item></channel></rss>")


@pytest.mark.parametrize(("encoding", "declared", "content_type"), [
    ("cp1251", "windows-1251", None),
    ("koi8-r", "windows-1251", "text/xml; charset=KOI8-R"),  # RFC 7303: HTTP charset wins
    ("cp1251", "windows-1251", "application/xml; charset=utf-8"),  # wrong HTTP charset
    ("utf-8", "iso-8859-1", None),  # valid UTF-8 labelled Latin-1
    ("utf-8", None, "text/xml"),  # RFC 3023's us-ascii default would break this
    ("utf-16", None, None),  # BOM
    ("utf-16-be", None, None),  # no BOM, no declaration
    ("utf-32-le", None, "application/rss+xml; charset=utf-8"),
])
def test_encoding_choice(encoding, declared, content_type):
    text = _feed_in(declared)
    charset = re.search(r"charset=(\S+)", content_type or "")
    decoded = decode_feed_bytes(text.encode(encoding), charset.group(1) if charset else None)
    assert decoded.text == text
    assert not any("guessed" in w for w in decoded.warnings)
    # ...and the text reaches the feed (the old declaration must not confuse feedparser).
    headers = {"Content-Type": content_type} if content_type else {}
    feed = parse_feed(text.encode(encoding), headers, URL)
    assert feed.title == RUSSIAN and feed.entries[0].title == RUSSIAN


def test_superset_fallback_for_mislabelled_cjk():
    text = '<?xml version="1.0" encoding="Shift_JIS"?><rss><title>①ｱ</title></rss>'
    body = text.encode("cp932")  # ① is an NEC circled digit: in CP932, not in Shift_JIS
    with pytest.raises(UnicodeDecodeError):
        body.decode("shift_jis")
    decoded = decode_feed_bytes(body, None)
    assert (decoded.text, decoded.encoding) == (text, "cp932")
    assert any("cp932" in w and "Shift_JIS" in w for w in decoded.warnings)


@pytest.mark.parametrize("label", ["utf-7", "bogus-charset", "base64", "rot13", "utf-16"])
def test_unsafe_or_unknown_labels_are_ignored(label):
    text = f'<?xml version="1.0" encoding="{label}"?><rss version="2.0"><channel><item>' \
           "<title>+ADw-b+AD4-</title></item></channel></rss>"
    decoded = decode_feed_bytes(text.encode(), label)
    assert decoded.text == text  # not decoded as UTF-7 markup
    assert decoded.encoding == "utf-8"
    assert any(label in w for w in decoded.warnings)
    feed = parse_feed(text.encode(), {"content-type": f"text/xml; charset={label}"}, URL)
    assert feed.entries[0].title == "+ADw-b+AD4-"


@pytest.mark.parametrize(("label", "codec"), [
    ("Windows-31J", "cp932"), ("x-sjis", "shift_jis"), ("x-mac-cyrillic", "mac-cyrillic"),
    (" UTF-8 ", "utf-8"), ("latin1", "iso8859-1"), ("utf-7", None), ("UTF-16LE", None),
    ("hex", None), ("zlib", None), ("nonsense", None), ("", None), (None, None),
])
def test_codec_name(label, codec):
    assert codec_name(label) == codec


# --- the corpus: declared legacy encodings ----------------------------------------------


def legacy_files():
    chosen = []
    for param in corpus_paths("*/chardet__*"):
        path = param.values[0]
        if path is None:
            return [pytest.param(None, None, marks=param.marks, id="no-corpus")]
        label = next((k for k in SCRIPTS if path.name.startswith(f"chardet__{k}")), None)
        if label and (path.parent.name == "real" or label in ("CP932", "CP949")):
            chosen.append(pytest.param(path, SCRIPTS[label], id=path.name))
    return chosen


@pytest.mark.parametrize(("path", "script"), legacy_files())
def test_legacy_encodings_decode_to_the_right_script(path, script):
    body = path.read_bytes()
    feed = parse_feed(body, {}, URL)
    joined = feed_text(feed)
    assert re.search(script, joined), joined[:200]
    assert not MOJIBAKE.search(joined), "mojibake or C1 controls"
    # The item titles are exactly what Python's codec for the declared label (or, for the
    # mislabelled CP932/CP949 files, the superset) plus lxml make of the file.
    declared = XML_DECL.match(body).group(1).decode().lower()
    codec = {"CP932": "cp932", "CP949": "cp949"}.get(path.name.split("_")[2], declared)
    codec = WHATWG_LABELS.get(codec, codec)
    titles = item_titles(body[XML_DECL.match(body).end():].decode(codec))
    assert [" ".join((e.title or "").split()) for e in feed.entries] == titles


def test_mislabelled_cp932_file_warns_about_the_override():
    path = CORPUS / "illformed" / "chardet__CP932_y-moto.com.xml"
    if not path.is_file():
        pytest.skip(NO_CORPUS)
    feed = parse_feed(path.read_bytes(), {}, URL)
    assert any("cp932" in w for w in feed.warnings)


# --- undeclared legacy encodings: the guess ----------------------------------------------


@pytest.mark.parametrize("path", corpus_paths("illformed/feedparser__chardet_*"))
def test_undeclared_legacy_files_are_guessed_right(path):
    body = path.read_bytes()
    assert XML_DECL.match(body) is None  # the premise: nothing states the encoding
    # feedparser's own test file names its encoding: "Expect: bozo and encoding == 'KOI8-R'".
    label = re.search(rb"encoding == '([^']+)'", body).group(1).decode()
    decoded = decode_feed_bytes(body, None)
    assert decoded.text == body.decode(label)
    assert any("guessed" in w and decoded.encoding in w for w in decoded.warnings)
    feed = parse_feed(body, {}, URL)
    joined = feed_text(feed)
    assert re.search(SCRIPTS[label], joined), joined[:200]
    assert not MOJIBAKE.search(joined), "mojibake or C1 controls"
    assert [" ".join(e.title.split()) for e in feed.entries if e.title] == \
        item_titles(body.decode(label))  # two of the files have items without titles
    assert any("guessed" in w for w in feed.warnings)


# PROVENANCE.tsv: "ISO-8859-1 bytes with NO XML declaration". Latin code pages differ in a
# few letters, where a guesser is least reliable; these must still read as windows-1252.
UNDECLARED_LATIN = ["illformed/miniflux__no_encoding_ISO-8859-1.xml",
                    "illformed/rssparser__uolNoticias.rss"]


@pytest.mark.parametrize("name", UNDECLARED_LATIN)
def test_undeclared_latin1_files_read_as_windows_1252(name):
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(NO_CORPUS)
    body = path.read_bytes()
    decoded = decode_feed_bytes(body, None)
    assert decoded.text == body.decode(WHATWG_LABELS["iso-8859-1"])
    feed = parse_feed(body, {}, URL)
    assert [" ".join((e.title or "").split()) for e in feed.entries] == \
        item_titles(body.decode("cp1252"))
    assert re.search("[àáâãçéêíóôõú]", feed_text(feed))


SAMPLES = {
    "ru": "Правительство объявило о новых мерах поддержки малого бизнеса. Эксперты считают, "
          "что это поможет экономике восстановиться после кризиса.",
    "ja": "東京都は新しい防災計画を発表しました。地震や台風に備えて、住民の避難経路を見直すとのことです。",
    "ko": "정부는 오늘 새로운 경제 정책을 발표했습니다. 전문가들은 이번 조치가 중소기업에 도움이 될 것이라고 "
          "말했습니다.",
    "zh": "国务院今天发布了新的经济政策。专家认为，这些措施将有助于中小企业的发展。",
    "zh-hant": "政府今天宣布了新的經濟政策。專家認為，這些措施將有助於中小企業的發展。",
    "el": "Η κυβέρνηση ανακοίνωσε σήμερα νέα μέτρα στήριξης για τις μικρές επιχειρήσεις και "
          "τους εργαζόμενους.",
    "he": "הממשלה הודיעה היום על צעדים חדשים לתמיכה בעסקים קטנים ובעובדים שנפגעו מהמשבר.",
    "fr": "Café déjà vu. Élève à l'école, où il étudie la façon d'être père. Noël approche!",
    "pt": "Últimas Notícias: ação, coração, informação. São Paulo e Brasília têm eleições.",
    "de": "Größere Übungen für Schüler: Straße, Mädchen, Äpfel und Öl. Grüße aus München.",
    "es": "El niño comió piñata en España. ¿Dónde está la señora? ¡Qué días más largos!",
    "pl": "Zażółć gęślą jaźń. Łódź i Kraków są pięknymi miastami. Źródło wiedzy o świecie.",
    "cs": "Příliš žluťoučký kůň úpěl ďábelské ódy. Čeština má háčky a čárky všude.",
}


def _undeclared_feed(text: str, items: int = 3) -> str:
    body = "".join(f"<item><title>{text[:20]}</title><description>{text}</description></item>"
                   for _ in range(items))
    return f'<rss version="2.0"><channel><title>{text[:10]}</title>{body}</channel></rss>'


@pytest.mark.parametrize(("language", "encoding"), [
    ("ru", "koi8-r"), ("ru", "cp1251"), ("ru", "iso8859-5"), ("ja", "shift_jis"),
    ("ja", "euc-jp"), ("ko", "euc-kr"), ("zh", "gb2312"), ("zh-hant", "big5"),
    ("el", "cp1253"), ("he", "cp1255"),
    # Latin code pages: Western text must not turn Baltic or Central European, and Central
    # European text must keep the letters windows-1252 lacks.
    ("fr", "iso8859-1"), ("fr", "cp1252"), ("pt", "iso8859-1"), ("de", "cp1252"),
    ("es", "iso8859-1"), ("pl", "cp1250"), ("cs", "cp1250"),
])
def test_undeclared_legacy_text_is_guessed(language, encoding):
    text = _undeclared_feed(SAMPLES[language])
    decoded = decode_feed_bytes(text.encode(encoding), None)
    assert decoded.text == text
    (warning,) = decoded.warnings
    assert "no encoding declared" in warning and decoded.encoding in warning


def test_an_unusable_http_charset_still_leads_to_the_guess():
    text = _undeclared_feed(SAMPLES["ru"])
    decoded = decode_feed_bytes(text.encode("koi8-r"), "x-bogus")
    assert decoded.text == text
    assert "ignored unknown or unsafe encoding 'x-bogus'" in decoded.warnings
    assert any("guessed koi8-r" in w for w in decoded.warnings)


def test_a_stated_encoding_is_never_second_guessed():
    # RFC 7303 §3: the HTTP charset is authoritative, even when the bytes look otherwise.
    body = _undeclared_feed(SAMPLES["ru"]).encode("cp1251")
    decoded = decode_feed_bytes(body, "koi8-r")
    assert (decoded.text, decoded.encoding) == (body.decode("koi8-r"), "koi8-r")
    assert decoded.warnings == ()


def test_the_guess_reads_a_bounded_prefix():
    """A large Shift_JIS body whose detection window ends inside a character and which has
    bytes invalid in Shift_JIS and CP932 after the window: the guess from the window holds,
    and only the invalid bytes are replaced (a guess from the whole body could not be
    Shift_JIS at all)."""
    item = f"<item><title>{SAMPLES['ja']}</title></item>\n".encode("shift_jis")
    head = b'<rss version="2.0"><channel><title>t</title>\n'
    for pad in range(len(item)):  # shift the items until the window splits a character
        start = head + b" " * pad + item * (DETECT_LIMIT // len(item) + 1)
        try:
            start[:DETECT_LIMIT].decode("shift_jis")
        except UnicodeDecodeError:
            break
    bad = b"\x85\x40"  # a lead byte neither Shift_JIS nor CP932 assigns
    for codec in ("shift_jis", "cp932"):
        with pytest.raises(UnicodeDecodeError):
            bad.decode(codec)
    body = start + item + b"<item><title>" + bad + b"</title></item></channel></rss>"
    assert len(body) > DETECT_LIMIT
    decoded = decode_feed_bytes(body, None)
    assert decoded.text.startswith(start.decode("shift_jis"))
    assert decoded.text.count("\ufffd") == 1
    assert decoded.text.endswith("\ufffd@</title></item></channel></rss>")
    assert any("guessed" in w and "replaced" in w for w in decoded.warnings)


def test_valid_utf8_without_declaration_is_not_guessed():
    text = _undeclared_feed(SAMPLES["ru"])
    decoded = decode_feed_bytes(text.encode(), None)
    assert (decoded.text, decoded.encoding, decoded.warnings) == (text, "utf-8", ())


# --- properties ------------------------------------------------------------------------

LABELS = [None, "utf-8", "iso-8859-1", "shift_jis", "euc-kr", "gb2312", "big5", "utf-7",
          "utf-16", "koi8-r", "nonsense"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(LABELS))
def test_any_bytes_and_label_decode(body, label):
    decoded = decode_feed_bytes(body, label)
    assert isinstance(decoded, Decoded) and isinstance(decoded.text, str)
    assert codecs.lookup(decoded.encoding)  # a real codec name
    assert pickle.loads(pickle.dumps(decoded)) == decoded


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",),
                             blacklist_characters="\x00\ufeff<"), max_size=200))
def test_utf8_text_round_trips_unchanged(text):
    # No "<" (no XML declaration), no NUL (UTF-16/32 sniffing), no BOM: nothing but UTF-8.
    assert decode_feed_bytes(text.encode(), None) == Decoded(text, "utf-8")


@pytest.mark.parametrize("path", corpus_paths("real/wucoding__*"))
def test_chinese_feeds_titles_come_out_as_the_right_characters(path):
    """Issue 3's second test set: Chinese sites' feeds (UTF-8, CDATA-heavy)."""
    body = path.read_bytes()
    feed = parse_feed(body, {}, URL)
    joined = feed_text(feed)
    assert re.search(SCRIPTS["GB2312"], joined), joined[:200]
    assert not MOJIBAKE.search(" ".join(e.title or "" for e in feed.entries))
    decl = XML_DECL.match(body)
    text = body[decl.end():] if decl else body
    titles = item_titles(text.decode("utf-8-sig"))
    # feedparser decodes entities and strips markup in titles; compare the visible text
    assert [" ".join(BeautifulSoup(e.title or "", "html.parser").get_text().split()) for e in feed.entries] == \
        [" ".join(BeautifulSoup(t, "html.parser").get_text().split()) for t in titles]
