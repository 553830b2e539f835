"""Near-duplicate fingerprints: the same story rewritten slightly by several sources.

Owns: turning (title, plain text) into shingles and a 64-bit SimHash (Charikar 2002,
as used for web pages by Manku, Jain & Das Sarma, WWW 2007), Hamming distance and
similarity, the band keys the store indexes, and the measured default threshold.
Must not: do I/O, read the clock or config, keep state between calls — pure functions,
safe in a worker process. The store looks candidates up by band key and calls
``hamming`` / ``is_near_duplicate``; config decides the per-category distance.

Shingles. The text is NFKC-normalised (full-width ``ＡＢＣ１２`` -> ``abc12``) and
casefolded, then cut into tokens; punctuation, symbols and whitespace never form a token,
so they cannot make two copies differ. A character of a script written without spaces
between words (Han, kana, Hangul syllables, Thai, Lao, Khmer, Myanmar) is one token; any
other run of letters/digits is one token (a word). Shingles are n-grams of tokens (n=3):
character 3-grams in Chinese, word 3-grams in English, and both across a mixed sentence
("苹果发布iphone 13" -> 果发布, 发布 iphone, ...). Word 3-grams rather than character
ones for Latin text: a character 3-gram like "the" or "ing" occurs in every English
article, which pulls unrelated articles' fingerprints together. The title's shingles are
taken separately (no n-gram spans title and text), after a leading bracketed prefix —
``【财联社】``, ``[快讯]``, ``〖独家〗`` — is dropped, since portals add and change those.

Fingerprint. Each distinct shingle, weighted by how often it occurs, votes on 64 bits
with its ``blake2b(digest_size=8)`` digest (stable across runs and machines, unlike
``hash()``). Bit ``i`` of the result is bit ``i`` of ``int.from_bytes(digest, "little")``
majority. Values are unsigned (0 <= fp < 2**64); SQLite's INTEGER is signed 64-bit, so
the store keeps ``to_sqlite(fp)`` and reads back with ``from_sqlite(v)``. ``hamming``,
``similarity``, ``is_near_duplicate`` and ``band_keys`` accept either form (they mask
to 64 bits), so a forgotten conversion cannot change a distance.

Too short to judge. Under ``MIN_TEXT`` text tokens, ``fingerprint`` returns None: a
two-line item shares too much with any other of its kind (and a title-only item is
exactly the recurring-column case), so the exact keys (guid, link, title+text) decide.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from hashlib import blake2b

__all__ = ["shingles", "simhash", "fingerprint", "hamming", "similarity", "band_keys",
           "is_near_duplicate", "to_sqlite", "from_sqlite", "normalize", "tokens",
           "NEAR_DUP_THRESHOLD", "BANDS", "MIN_TEXT", "SHINGLE_SIZE"]

BITS = 64
_MASK = (1 << BITS) - 1
SHINGLE_SIZE = 3

# Measured on the shared corpus (tests/test_similarity.py prints the figures): copies of
# one story (a sentence or two added or removed on a long article, a new title prefix,
# full-width/half-width and punctuation changes, a tracking footer) came within 0-6 bits;
# the closest two different stories, with shared boilerplate, were 13 bits apart.
NEAR_DUP_THRESHOLD = 6
# Pigeonhole: two fingerprints within distance < bands agree exactly on at least one band,
# so BANDS = threshold + 1 makes the band lookup find every pair is_near_duplicate accepts.
BANDS = NEAR_DUP_THRESHOLD + 1
# Text tokens (CJK characters or words) below which no fingerprint is made.
MIN_TEXT = 50

# Scripts written without spaces between words: each character is a token.
_SCRIPTIO_CONTINUA = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff\u31f0-\u31ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs, extension A, compatibility
    "\uac00-\ud7af"  # Hangul syllables
    "\U00020000-\U0003134f"  # CJK extensions B-G
)
# A spaceless-script character, or a run of other letters/digits/combining marks
# (marks kept in the word so Devanagari vowel signs do not split it).
_TOKEN_RE = re.compile(
    f"[{_SCRIPTIO_CONTINUA}]|(?:[^\\W_{_SCRIPTIO_CONTINUA}]|[\u0300-\u036f\u0900-\u0dff])+")
_CHAR_TOKEN_RE = re.compile(f"[{_SCRIPTIO_CONTINUA}]")
# A leading 【…】, […], 〖…〗, 〔…〕 label ("【财联社】", "[快讯]"), possibly several; applied
# after NFKC, which has already mapped full-width ［］ to [].
_TITLE_PREFIX_RE = re.compile(r"^(?:\s*(?:【[^】]*】|\[[^\]]*\]|〖[^〗]*〗|〔[^〕]*〕))+")


def normalize(s: str) -> str:
    """NFKC + casefold: full-width forms, ligatures and case no longer tell copies apart."""
    return unicodedata.normalize("NFKC", s or "").casefold()


def tokens(s: str) -> list[str]:
    """Tokens of ``s`` (normalised here): spaceless-script characters and words."""
    return _TOKEN_RE.findall(normalize(s))


def _strip_title_prefix(normalized_title: str) -> str:
    return _TITLE_PREFIX_RE.sub("", normalized_title)


def _grams(toks: list[str], n: int) -> list[str]:
    if not toks:
        return []
    if len(toks) < n:
        return [_join(toks)]  # a short title still counts, as one shingle
    return [_join(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def _join(toks: list[str]) -> str:
    # Characters join directly ("中美双"), words with a space ("pay the bill"): readable,
    # and unambiguous because a word token never holds a spaceless-script character.
    out = toks[0]
    for prev, tok in zip(toks, toks[1:]):
        out += tok if len(prev) == 1 == len(tok) and _CHAR_TOKEN_RE.match(prev) and _CHAR_TOKEN_RE.match(tok) else " " + tok
    return out


def _shingles_and_size(title: str, text: str, n: int) -> tuple[list[str], int]:
    if n < 1:
        raise ValueError("shingle size must be at least 1")
    title_toks = _TOKEN_RE.findall(_strip_title_prefix(normalize(title)))
    text_toks = _TOKEN_RE.findall(normalize(text))
    return _grams(title_toks, n) + _grams(text_toks, n), len(text_toks)


def shingles(title: str, text: str, n: int = SHINGLE_SIZE) -> list[str]:
    """The title's n-grams (bracketed prefix dropped), then the text's, in order, with
    repeats. ``text`` is plain text (``text.html_to_text`` of the body), not HTML."""
    return _shingles_and_size(title, text, n)[0]


# Bit-sliced vote counting: _SPREAD[k][b] puts bit j of byte value b into lane 8k+j of a
# wide integer (one _LANE-bit counter per fingerprint bit), so adding one integer per
# shingle counts all 64 votes at once — a Python loop over 64 bits per shingle would
# cost ~5 ms for a 3 KB text.
_LANE = 32  # counters never overflow below 2**32 shingles
_SPREAD = tuple(
    tuple(sum(((b >> j) & 1) << ((8 * k + j) * _LANE) for j in range(8)) for b in range(256))
    for k in range(8))
_LANE_MASK = (1 << _LANE) - 1


def _simhash_of(grams: list[str]) -> int:
    s0, s1, s2, s3, s4, s5, s6, s7 = _SPREAD
    acc = 0
    for gram, weight in Counter(grams).items():
        d = blake2b(gram.encode("utf-8"), digest_size=8).digest()
        votes = (s0[d[0]] + s1[d[1]] + s2[d[2]] + s3[d[3]]
                 + s4[d[4]] + s5[d[5]] + s6[d[6]] + s7[d[7]])
        acc += votes if weight == 1 else votes * weight
    total = len(grams)
    fp = 0
    for i in range(BITS):
        if 2 * ((acc >> (i * _LANE)) & _LANE_MASK) > total:  # a strict majority; ties give 0
            fp |= 1 << i
    return fp


def simhash(title: str, text: str, n: int = SHINGLE_SIZE) -> int:
    """64-bit SimHash (unsigned) of ``shingles(title, text, n)``; 0 when there are none.
    Always a number, however short the text: use ``fingerprint`` to get None for texts
    too short to judge."""
    return _simhash_of(shingles(title, text, n))


def fingerprint(title: str, text: str, min_text: int = MIN_TEXT) -> int | None:
    """``simhash(title, text)``, or None when ``text`` has fewer than ``min_text`` tokens
    (CJK characters or words) — too short to tell a copy from another story."""
    grams, size = _shingles_and_size(title, text, SHINGLE_SIZE)
    if size < min_text:
        return None
    return _simhash_of(grams)


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit fingerprints (signed or unsigned form)."""
    return ((a ^ b) & _MASK).bit_count()


def similarity(a: int, b: int) -> float:
    """1 - hamming/64: 1.0 for equal fingerprints, about 0.5 for unrelated texts."""
    return 1.0 - hamming(a, b) / BITS


def is_near_duplicate(a: int, b: int, threshold: int = NEAR_DUP_THRESHOLD) -> bool:
    """The same story: at most ``threshold`` bits differ."""
    return hamming(a, b) <= threshold


def band_keys(fp: int, bands: int = BANDS) -> list[str]:
    """``bands`` keys ``"i:hex"``, one per contiguous slice of the 64 bits (slices as even
    as possible: 7 bands are 10,9,9,9,9,9,9 bits wide).

    Guarantee (pigeonhole): if ``hamming(a, b) < bands``, the differing bits cannot touch
    every band, so ``band_keys(a, bands)`` and ``band_keys(b, bands)`` share a key. To find
    every pair within distance ``d`` pass ``bands = d + 1``; the default covers
    ``NEAR_DUP_THRESHOLD``. More bands: shorter keys, more candidates to score.
    """
    if not 1 <= bands <= BITS:
        raise ValueError(f"bands must be between 1 and {BITS}, not {bands}")
    fp &= _MASK
    base, extra = divmod(BITS, bands)
    keys, shift = [], 0
    for i in range(bands):
        width = base + (1 if i < extra else 0)
        value = (fp >> shift) & ((1 << width) - 1)
        keys.append(f"{i}:{value:0{(width + 3) // 4}x}")
        shift += width
    return keys


def to_sqlite(fp: int) -> int:
    """The signed 64-bit integer with the same bits (SQLite INTEGER is signed)."""
    fp &= _MASK
    return fp - (1 << BITS) if fp >> (BITS - 1) else fp


def from_sqlite(v: int) -> int:
    """Back to the unsigned fingerprint ``simhash`` returns."""
    return v & _MASK
