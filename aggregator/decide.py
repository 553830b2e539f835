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
    key_kind: str  # "g" (source+guid), "l" (canonical link), "t" (title+text in category)


def pick_match(matches: list[Match]) -> Match | None:
    """The strongest match: same source+guid beats same link beats same text; ties go to
    the oldest article, so the first copy of a story stays the one we publish."""
    order = {"g": 0, "l": 1, "t": 2}
    return min(matches, key=lambda m: (order[m.key_kind], m.article_id), default=None)


def decide(draft_source: str, draft_hash: str, match: Match | None) -> Verdict:
    if match is None:
        return Verdict.NEW
    if match.source != draft_source:
        # Another source carried this story first. Its version stays; ours is an alias.
        return Verdict.DUPLICATE
    if match.content_hash == draft_hash:
        return Verdict.UNCHANGED
    # Same source: the same guid, or a guid scheme change with the same link/text — an edit.
    return Verdict.UPDATE
