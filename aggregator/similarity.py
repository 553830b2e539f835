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
("苹果发布iPhone 13" -> "苹 果 发", ..., "布 iphone 13"), tokens joined by a space.
Words rather than characters for Latin text because character 3-grams such as "the" or
"ing" are shared by nearly every English text and would pull unrelated ones together. The title's shingles are
taken separately (no n-gram spans title and text), after a leading bracketed prefix —
``【财联社】``, ``[快讯]``, ``〖独家〗`` — is dropped, since portals add and change those.

Fingerprint. Every shingle occurrence votes on 64 bits with its ``blake2b(digest_size=8)``
digest read as ``int.from_bytes(digest, "little")`` (stable across runs and machines,
unlike ``hash()``); bit ``i`` is set when more than half the votes have bit ``i`` set. Values are unsigned (0 <= fp < 2**64); SQLite's INTEGER is signed 64-bit, so
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
from collections.abc import Iterable
from functools import partial
from hashlib import blake2b

__all__ = ["shingles", "simhash", "fingerprint", "hamming", "similarity", "band_keys",
           "is_near_duplicate", "to_sqlite", "from_sqlite", "normalize", "tokens",
           "NEAR_DUP_THRESHOLD", "BANDS", "MIN_TEXT", "SHINGLE_SIZE"]

BITS = 64
_MASK = (1 << BITS) - 1
SHINGLE_SIZE = 3

# Chosen by measurement on the shared corpus (tests/test_similarity.py prints the figures):
# one or two sentences added or removed on 137 Chinese articles of 1,000+ characters gave
# distances 0-9, 97.8% within 6; a new title prefix or width/punctuation/whitespace changes
# give 0; English articles with a footer added, 1-5. The closest two different stories
# among 427 (90,951 pairs) were 10 apart (podcast notes sharing a long boilerplate), the
# same-prefix and same-title pairs 23 or more, unrelated text around 32. 6 keeps a 4-bit
# margin. SimHash is noisy: a copy with a few edits on a short article can exceed it.
NEAR_DUP_THRESHOLD = 6
# Pigeonhole: two fingerprints within distance < bands agree exactly on at least one band,
# so BANDS = threshold + 1 makes the band lookup find every pair is_near_duplicate accepts.
BANDS = NEAR_DUP_THRESHOLD + 1
# Text tokens (CJK characters or words) below which no fingerprint is made. Below ~150,
# templated items differing in one word (software listings "WinRescue NT" / "WinRescue
# 2000", 104 tokens, in chardet__GB2312_softsea.net.xml) came within 3 bits.
MIN_TEXT = 150

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
# (marks kept in the word so Devanagari vowel signs do not split it). Written as
# ``[C]|(?:W|M)+`` it costs re a branch per character of every word; here each alternative
# takes a whole run of W (or M) in one possessive step and alternates runs, which matches
# the same maximal run of W-or-M characters (C, W and M: the three classes below).
_WORD = f"[^\\W_{_SCRIPTIO_CONTINUA}]"
_MARK = "[\u0300-\u036f\u0900-\u0dff]"
_TOKEN_RE = re.compile(
    f"[{_SCRIPTIO_CONTINUA}]|{_WORD}++(?:{_MARK}++{_WORD}*+)*+|{_MARK}++(?:{_WORD}++{_MARK}*+)*+")
# The same tokens in ASCII text (no spaceless script, no mark there): [A-Za-z0-9] runs,
# found about 3x faster than through the Unicode classes.
_ASCII_TOKEN_RE = re.compile(r"[^\W_]+", re.ASCII)
# A leading 【…】, […], 〖…〗, 〔…〕 label ("【财联社】", "[快讯]"), possibly several; applied
# after NFKC, which has already mapped full-width ［］ to [].
_TITLE_PREFIX_RE = re.compile(r"^(?:\s*(?:【[^】]*】|\[[^\]]*\]|〖[^〗]*〗|〔[^〕]*〕))+")


# Characters that make most real text fail unicodedata's NFKC quick check: full-width ASCII
# and the ideographic space (Chinese punctuation ，。：), and "…". Each is replaced by its
# full compatibility decomposition, which leaves NFKC's result unchanged (NFKC decomposes
# every character fully before composing: replacing one by its own decomposition gives the
# same decomposed string); the quick check then passes for most texts and the full NFKC
# pass (~170 us per 1,000 characters) is skipped. A regex substitution rather than
# str.translate: translate looks every character up (~5x slower on Chinese text).
_DECOMPOSED = {chr(c): unicodedata.normalize("NFKD", chr(c)) for c in (*range(0xFF01, 0xFF5F), 0x3000, 0x2026)}
_COMPAT_RE = re.compile("[\uff01-\uff5e\u3000\u2026]")


def _decompose(match: re.Match[str]) -> str:
    return _DECOMPOSED[match[0]]


def normalize(s: str) -> str:
    """NFKC + casefold: full-width forms, ligatures and case no longer tell copies apart."""
    s = s or ""
    if s.isascii():  # NFKC leaves ASCII as it is; casefold() of ASCII is lower()
        return s.lower()
    if not unicodedata.is_normalized("NFKC", s):
        s = _COMPAT_RE.sub(_decompose, s)
        if not unicodedata.is_normalized("NFKC", s):
            s = unicodedata.normalize("NFKC", s)
    return s.casefold()


def _tokens_of(normalized: str) -> list[str]:
    return (_ASCII_TOKEN_RE if normalized.isascii() else _TOKEN_RE).findall(normalized)


def tokens(s: str) -> list[str]:
    """Tokens of ``s`` (normalised here): spaceless-script characters and words."""
    return _tokens_of(normalize(s))


def _grams(toks: list[str], n: int) -> list[str]:
    # Tokens joined by a space ("中 美 双", "pay the bill"): unambiguous, as no token
    # holds a space.
    if len(toks) < n:
        return [" ".join(toks)] if toks else []  # a short title still counts, as one shingle
    return list(map(" ".join, zip(*[toks[i:] for i in range(n)])))


def _title_tokens(title: str) -> list[str]:
    return _tokens_of(_TITLE_PREFIX_RE.sub("", normalize(title)))


def shingles(title: str, text: str, n: int = SHINGLE_SIZE) -> list[str]:
    """The title's n-grams (bracketed prefix dropped), then the text's, in order, with
    repeats; tokens joined by a space. ``text`` is plain text (``text.html_to_text`` of
    the body), not HTML."""
    if n < 1:
        raise ValueError("shingle size must be at least 1")
    return _grams(_title_tokens(title), n) + _grams(_tokens_of(normalize(text)), n)


_DIGEST_8 = partial(blake2b, digest_size=8)
_digest = blake2b.digest


def _gram_digests(toks: list[str], n: int) -> Iterable[bytes]:
    """The digest of each of ``_grams(toks, n)``, made from UTF-8 tokens: the tokens are
    encoded once (joined by a space and split again: no token holds one) and each n-gram
    joined as bytes, so no shingle string is built, encoded or counted. Every occurrence
    is hashed, repeats included: hashing the ~10% of shingles that repeat in a text costs
    less than counting them all first."""
    if len(toks) < n:
        return [_digest(_DIGEST_8(" ".join(toks).encode("utf-8")))] if toks else []
    encoded = " ".join(toks).encode("utf-8").split(b" ")
    return map(_digest, map(_DIGEST_8, map(b" ".join, zip(*[encoded[i:] for i in range(n)]))))


def _simhash_of(digests: bytes) -> int:
    """Bit i is set when more than half of the 64-bit digests (little-endian, concatenated)
    have bit i set.

    Votes are counted with wide-integer arithmetic instead of a Python loop over 64 bits
    per shingle: the digests are one little-endian integer of ``count`` 64-bit words, and
    every bit of it is a one-bit counter (of one bit position in one word). Folding the
    upper half of the words onto the lower half adds the counters pairwise, as bit-sliced
    binary numbers: ``planes[k]`` holds bit k of every counter, and a ripple-carry adder
    (xor for the sum, majority for the carry) adds two such numbers plane by plane, on
    integers half as long each time. One word of counters remains; the majority test is a
    bit-sliced comparison with ``count // 2 + 1`` (ties give 0). A quarter of the time of
    the 16-bit per-position fields it replaced (25 ms instead of 104 ms for the 1,235
    fingerprints of the 250-source benchmark)."""
    count = len(digests) // 8
    if not count:
        return 0
    planes, words = [int.from_bytes(digests, "little")], count
    while words > 1:
        half = (words + 1) // 2
        shift = BITS * half
        low = (1 << shift) - 1
        summed, carry = [], 0
        for plane in planes:
            a, b = plane & low, plane >> shift
            either = a ^ b
            summed.append(either ^ carry)
            carry = (a & b) | (carry & either)
        summed.append(carry)
        planes, words = summed, half
    # counter >= need, per bit position: from the top plane down, `equal` keeps the positions
    # whose counter agrees with `need` so far, `greater` those already above it.
    need, greater, equal = count // 2 + 1, 0, _MASK
    for k in range(len(planes) - 1, -1, -1):
        if need >> k & 1:
            equal &= planes[k]
        else:
            greater |= equal & planes[k]
            equal &= ~planes[k]
    return (greater | equal) & _MASK


def simhash(title: str, text: str, n: int = SHINGLE_SIZE) -> int:
    """64-bit SimHash (unsigned) of ``shingles(title, text, n)``; 0 when there are none.
    Always a number, however short the text: use ``fingerprint`` to get None for texts
    too short to judge."""
    if n < 1:
        raise ValueError("shingle size must be at least 1")
    return _simhash_of(b"".join([*_gram_digests(_title_tokens(title), n),
                                 *_gram_digests(_tokens_of(normalize(text)), n)]))


def fingerprint(title: str, text: str, min_text: int = MIN_TEXT) -> int | None:
    """``simhash(title, text)``, or None when ``text`` has fewer than ``min_text`` tokens
    (CJK characters or words) — too short to tell a copy from another story."""
    text = normalize(text)
    # Every token is at least one character: a shorter text is known to be too short
    # without cutting it into tokens (most items of a feed are).
    if len(text) < min_text:
        return None
    text_toks = _tokens_of(text)
    if len(text_toks) < min_text:
        return None
    return _simhash_of(b"".join([*_gram_digests(_title_tokens(title), SHINGLE_SIZE),
                                 *_gram_digests(text_toks, SHINGLE_SIZE)]))


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
