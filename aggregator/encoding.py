"""Character encoding of a fetched feed body: bytes -> text, and which codec that was.

Owns: the precedence BOM > HTTP charset > XML declaration > UTF-8 (RFC 7303 §3, XML 1.0
Appendix F); the labels servers send that Python does not know (WHATWG Encoding Standard
names); the Windows supersets legacy labels really mean (Shift_JIS -> CP932, EUC-KR -> CP949,
GB2312/GBK -> GB18030, Big5 -> CP950, Latin-1 -> windows-1252); UTF-16/32 without a BOM; and,
only for a body that states no usable encoding and is not UTF-8, a bounded guess by
charset-normalizer. Every label it overrules, ignores or guesses is reported as a warning.
Must not: parse markup or judge whether the text is a feed (``parse`` does), look at HTTP
beyond the charset it is handed, do I/O, or raise for any input bytes (the last resort,
Latin-1, decodes everything). Pure functions with picklable results, like ``parse``.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from dataclasses import dataclass

from charset_normalizer import from_bytes

# Labels Python does not know, as servers send them (WHATWG Encoding Standard names).
_ALIASES = {"windows-31j": "cp932", "x-sjis": "shift_jis", "x-mac-cyrillic": "mac-cyrillic",
            "x-gbk": "gbk", "x-euc-jp": "euc_jp", "x-euc-kr": "euc_kr"}
# Decoders tried, in order, for a declared label. Legacy CJK labels are routinely used for
# their Windows supersets (CP932 bytes labelled Shift_JIS, CP949/UHC labelled EUC-KR, GBK
# labelled GB2312), so the superset is the fallback when strict decoding fails. Labels whose
# 0x80-0x9F range is C1 controls mean the Windows code page that puts characters there
# (WHATWG Encoding Standard, "Names and labels": latin1 -> windows-1252, tis-620 ->
# windows-874, iso-8859-9 -> windows-1254); the ISO decoder is kept for the few bytes the
# Windows page leaves undefined.
_CANDIDATES = {
    "iso8859-1": ("cp1252", "iso8859-1"), "ascii": ("ascii", "cp1252"),
    "iso8859-9": ("cp1254", "iso8859-9"), "tis-620": ("cp874", "tis-620"),
    "iso8859-11": ("cp874", "iso8859-11"),
    "shift_jis": ("shift_jis", "cp932"), "euc_kr": ("euc_kr", "cp949"),
    "gb2312": ("gb2312", "gb18030"), "gbk": ("gbk", "gb18030"),
    "big5": ("big5", "cp950", "big5hkscs"),
}
# Codecs that turn plain ASCII into markup or are not charsets at all. A declared UTF-16/32
# is refused too when the declaration itself was readable as ASCII (XML 1.0, Appendix F).
_REFUSED = frozenset({"utf-7", "unicode-escape", "raw-unicode-escape", "punycode", "idna",
                      "undefined", "utf-16", "utf-32", "utf-16-le", "utf-16-be", "utf-32-le",
                      "utf-32-be"})
_SINGLE_BYTE = re.compile(r"ascii|iso8859-\d+|cp(?:125\d|437|8[5-7]\d)|koi8-\w|mac-\w+|tis-620")
BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same 2 bytes
        (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# Zero bytes (1) in the first four when "<" or whitespace is UTF-16/32 without a BOM.
_WIDE = {(0, 1, 1, 1): "utf-32-le", (1, 1, 1, 0): "utf-32-be", (0, 1, 0, 1): "utf-16-le",
         (1, 0, 1, 0): "utf-16-be"}
_XML_DECL_BYTES = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<\?xml\s[^>]*?encoding\s*=\s*[\"']([A-Za-z][\w.:-]{0,40})[\"']",
    re.S,
)
# The guess reads at most this much: charset-normalizer's cost grows with its input and a
# feed's encoding shows in its first items. The cut falls before a "<" or line break, bytes
# no legacy multi-byte encoding uses inside a character, so no character is cut in half.
DETECT_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded body: the text (BOM removed), the Python codec that produced it, and what
    a person reading the source's status should know about that choice."""
    text: str
    encoding: str
    warnings: tuple[str, ...] = ()


def decode_feed_bytes(body: bytes, http_charset: str | None) -> Decoded:
    """Bytes -> text. Order (RFC 7303 §3): BOM, then the HTTP charset, then the XML
    declaration, then UTF-8; each label falls back to its superset (_CANDIDATES). A body
    that states no usable encoding and is not UTF-8 is guessed (charset-normalizer); the
    last resorts windows-1252 and Latin-1 always succeed. Warns when a label was
    overruled or ignored, and names a guessed encoding."""
    bom = next(((mark, enc) for mark, enc in BOMS if body.startswith(mark)), None)
    if bom:
        body = body[len(bom[0]):]
    wide = _sniff_wide(body) if bom is None else (None if bom[1] == "utf-8" else bom[1])
    if wide:
        try:
            return Decoded(body.decode(wide), wide)
        except UnicodeDecodeError:
            return Decoded(body.decode(wide, "replace"), wide,
                           (f"invalid {wide} sequences replaced",))
    declared = _XML_DECL_BYTES.match(body[:4096])
    labels = ["utf-8" if bom else None, http_charset,
              declared.group(1).decode("ascii") if declared else None]
    if not any(codec_name(label) for label in labels) and not _is_utf8(body):
        ignored = [f"ignored unknown or unsafe encoding {label!r}" for label in labels if label]
        guessed = _decode_guessed(body, ignored)
        if guessed is not None:
            return guessed
    stated = next((label for label in labels if label), "utf-8")
    expected = _CANDIDATES.get(codec_name(stated) or "", (codec_name(stated),))[0]
    warnings: list[str] = []
    for label in [*labels, "utf-8", "cp1252", "iso8859-1"]:
        codec = codec_name(label)
        if codec is None:
            if label:
                warnings.append(f"ignored unknown or unsafe encoding {label!r}")
            continue
        if _SINGLE_BYTE.fullmatch(codec) and not body.isascii() and _is_utf8(body):
            # Valid multi-byte UTF-8 is almost never meant as a single-byte charset
            # (M. Dürst, "The Properties and Promises of UTF-8", 1997): the label is wrong.
            codec = "utf-8"
        for candidate in _CANDIDATES.get(codec, (codec,)):
            try:
                text = body.decode(candidate)
            except UnicodeDecodeError:
                continue
            if candidate != expected:
                warnings.append(f"encoding stated as {stated!r}, decoded as {candidate}")
            return Decoded(text, candidate, tuple(warnings))
    raise AssertionError("iso8859-1 decodes any bytes")  # pragma: no cover


def codec_name(label: str | None) -> str | None:
    """A declared label -> Python codec name, or None if unknown or refused."""
    if not label:
        return None
    label = label.strip().lower()
    try:
        name = codecs.lookup(_ALIASES.get(label, label)).name
        b"<".decode(name)  # LookupError for codecs that are not charsets (base64, rot13)
    except UnicodeDecodeError:
        pass
    except (LookupError, ValueError):
        return None
    return None if name in _REFUSED else name


def sniff_text(body: bytes, limit: int = 4096) -> str:
    """A decoded prefix, good enough to see markup: BOM/UTF-16/32 aware, else Latin-1."""
    head = body[:limit]
    for mark, encoding in BOMS:
        if head.startswith(mark):
            return head[len(mark):].decode(encoding, "ignore")
    wide = _sniff_wide(head)
    return head.decode(wide or "iso8859-1", "ignore")


def _decode_guessed(body: bytes, warnings: list[str]) -> Decoded | None:
    """The body decoded as charset-normalizer guesses it, or None without a usable guess.
    XML without a declaration must be UTF-8 (XML 1.0 §4.3.3), so a guess is a repair."""
    guess = _guess(body)
    if guess is None:
        return None
    candidates = _CANDIDATES.get(guess, (guess,))
    note = f"no encoding declared and the body is not UTF-8; guessed {guess}"
    for candidate in candidates:
        try:
            text = body.decode(candidate)
        except UnicodeDecodeError:
            continue
        if candidate != guess:
            note += f", decoded as {candidate}"
        return Decoded(text, candidate, (*warnings, note))
    # Bytes past the detection window that are invalid in the guessed encoding: keep the
    # guess for the rest rather than read the whole body as windows-1252 mojibake.
    return Decoded(body.decode(candidates[0], "replace"), candidates[0],
                   (*warnings, f"{note}; invalid {candidates[0]} sequences replaced"))


def _guess(body: bytes) -> str | None:
    head = body[:DETECT_LIMIT]
    if len(body) > DETECT_LIMIT:
        cut = max(head.rfind(b"<"), head.rfind(b"\n"))
        head = head[:cut] if cut > 0 else head
    best = from_bytes(head).best()
    if best is None:
        return None
    # charset-normalizer tells scripts apart well but Latin code pages badly: they differ in a
    # few letters, and it took Portuguese for cp1257 and French for cp1250 in our corpus.
    # When it guesses Latin text and windows-1252 (the WHATWG default for undeclared legacy
    # text, and the most common) reads as many bytes as letters, windows-1252 is the better
    # bet. Where it reads fewer (Polish "ł" is "³" there), the guess stands.
    letters, latin = _letters(str(best))
    if latin:
        try:
            western = head.decode("cp1252")
        except UnicodeDecodeError:
            western = None
        if western is not None and _letters(western)[0] >= letters:
            return "cp1252"
    return codec_name(best.encoding)


def _letters(text: str) -> tuple[int, bool]:
    """How many non-ASCII letters the text has, and whether all are Latin (Latin-1
    Supplement, Latin Extended-A/B, IPA Extensions, Latin Extended Additional)."""
    found = [(ch, n) for ch, n in Counter(text).items() if ch > "\x7f" and ch.isalpha()]
    latin = all(ch <= "\u02af" or "\u1e00" <= ch <= "\u1eff" for ch, _ in found)
    return sum(n for _, n in found), latin


def _sniff_wide(body: bytes) -> str | None:
    """UTF-16/32 without a BOM, told by the zero bytes around ASCII markup (XML App. F)."""
    return _WIDE.get(tuple(int(byte == 0) for byte in body[:4]))


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
