"""WebSub (W3C Recommendation, 2018) publisher pings: tell the hub which feeds changed.

Owns: one ``POST hub.mode=publish&hub.url=<feed URL>`` per changed feed document
(form-encoded, the de-facto publish request every public hub accepts; the spec leaves
the publisher-to-hub step to the hub). Subscribers then get the new content pushed
instead of polling us.

Must not: raise for a hub that is down — a failed ping only delays delivery until the
subscribers' next poll, so problems are returned as messages for the log.

The hub URL is the operator's own setting, not feed input, so this request does not go
through the fetcher's private-network guard (a hub on the same host is common).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aggregator import USER_AGENT

#: a publish run pings at most this long in total; the rest waits for the next change
BUDGET_SECONDS = 30.0


def ping(hub: str, urls: Sequence[str], *, timeout: float = 10.0, budget: float = BUDGET_SECONDS) -> list[str]:
    """Ping ``hub`` for each of ``urls``; return one message per failure."""
    import httpx

    problems: list[str] = []
    deadline = time.monotonic() + budget
    with httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT}, follow_redirects=False) as client:
        for i, url in enumerate(urls):
            if time.monotonic() > deadline:
                problems.append(f"{hub}: time budget spent, {len(urls) - i} feed(s) not announced")
                break
            try:
                response = client.post(hub, data={"hub.mode": "publish", "hub.url": url})
            except httpx.HTTPError as e:
                problems.append(f"{hub}: ping for {url} failed: {e or type(e).__name__}")
                continue
            if not 200 <= response.status_code < 300:
                problems.append(f"{hub}: ping for {url} answered HTTP {response.status_code}")
    return problems
