"""Pure decisions: given what arrived and what is stored, what should happen?

Does not interact with any dependency (no database, no clock, no files): the store looks
up candidates and applies the verdict; tests call these directly with values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    NEW = "new"  # nothing known matches: store it
    UPDATE = "update"  # the same item from the same source, its content changed
    UNCHANGED = "unchanged"  # the same item, same content
    DUPLICATE = "duplicate"  # the same story already stored from elsewhere: never publish twice


@dataclass(frozen=True)
class Match:
    """A stored article that shares at least one dedup key with a draft."""

    article_id: int
    source: str
    content_hash: str
    key_kind: str  # "g" source+guid, "l" canonical link, "t" title+text in category, "n" near-duplicate, "x" expired
    score: float = 1.0  # similarity for "n" matches; exact keys are 1.0


def pick_match(matches: list[Match]) -> Match | None:
    """The strongest match: same source+guid beats same link beats same text; ties go to
    the oldest article, so the first copy of a story stays the one we publish."""
    order = {"g": 0, "l": 1, "t": 2, "n": 3, "x": 4}  # x: only an expired article's tombstone
    return min(matches, key=lambda m: (order[m.key_kind], m.article_id), default=None)


def decide(draft_source: str, draft_hash: str, match: Match | None) -> Verdict:
    if match is None:
        return Verdict.NEW
    if match.source != draft_source or match.key_kind == "n":
        # Another source carried this story first (or the same one re-posted a near copy):
        # one article; the store merges this copy into it (sources, earliest date, fullest body).
        return Verdict.DUPLICATE
    if match.content_hash == draft_hash:
        return Verdict.UNCHANGED
    # Same source: the same guid, or a guid scheme change with the same link/text — an edit.
    return Verdict.UPDATE


def merge_changes(existing_date, existing_text_len: int, draft_date, draft_text_len: int) -> tuple[bool, bool]:
    """A duplicate arrived: (take its date?, take its body?). The merged article keeps the
    earliest publication and the fullest body (by visible text; ties keep the first)."""
    earlier = draft_date is not None and draft_date < existing_date
    fuller = draft_text_len > existing_text_len
    return earlier, fuller


def edit_allowed(edits_last_day: int, cap: int) -> bool:
    """An item whose content changes on every poll (a counter, a rotating ad that survives
    cleaning) must not churn posts and feeds: at most ``cap`` edits per 24 hours."""
    return edits_last_day < cap
