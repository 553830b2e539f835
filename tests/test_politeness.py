"""Per-host politeness: the slot limiter and the Retry-After penalty box, alone and inside
the Fetcher against real loopback servers (several hosts: all of 127.0.0.0/8 is loopback
on Linux), plus the pure rules (Retry-After values, a source's own headers)."""

from __future__ import annotations

import email.utils
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.errors import HTTPStatusError, TimeoutError_
from aggregator.fetch import Fetcher
from aggregator.models import FetchLimits, RequestOptions
from aggregator.politeness import (
    FETCHER_OWNED_HEADERS,
    MAX_DEFER,
    HostLimiter,
    HostWaitTimeout,
    host_key,
    retry_after_seconds,
    same_origin,
    source_headers,
)
from tests.server import FeedServer

RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


def limits(**kw) -> FetchLimits:
    kw.setdefault("allow_private_networks", True)
    kw.setdefault("deadline", 10.0)
    return FetchLimits(user_agent="aggregator-test/1.0", **kw)


def sleeper(seconds: float):
    def send(h):
        time.sleep(seconds)
        h.send_body(RSS)

    return send


def wait_for(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


# --- the limiter alone -------------------------------------------------------------------


@pytest.mark.parametrize("k,gap", [(0, 0.0), (-1, 0.0), (1, -0.1), (1, float("nan")), (1, float("inf"))])
def test_limiter_refuses_nonsense_settings(k, gap):
    with pytest.raises(ValueError):
        HostLimiter(k, gap)


@pytest.mark.parametrize("k", [1, 3])
def test_limiter_caps_concurrency_per_host(k):
    limiter = HostLimiter(k)
    lock = threading.Lock()
    now = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    def work(i: int) -> None:
        host = "ab"[i % 2]
        with limiter.slot(host, time.monotonic() + 10):
            with lock:
                now[host] += 1
                peak[host] = max(peak[host], now[host])
            time.sleep(0.01)
            with lock:
                now[host] -= 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(64)))
    assert peak == {"a": k, "b": k}


def test_limiter_serves_waiters_in_arrival_order():
    limiter = HostLimiter(1)
    order: list[int] = []
    hold = threading.Event()

    def holder():
        with limiter.slot("h", time.monotonic() + 10):
            hold.wait(5)

    def waiter(i: int):
        with limiter.slot("h", time.monotonic() + 10):
            order.append(i)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    wait_for(lambda: "h" in limiter._hosts and limiter._hosts["h"].active == 1)
    for i in range(6):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        wait_for(lambda: len(limiter._hosts["h"].queue) == i + 1)  # queued before the next starts
    hold.set()
    for t in threads:
        t.join(5)
    assert order == list(range(6))


def test_waiting_past_the_deadline_raises_and_leaves_the_queue_clean():
    limiter = HostLimiter(1)
    hold = threading.Event()
    outcome: dict[str, object] = {}

    def holder():
        with limiter.slot("h", time.monotonic() + 10):
            hold.wait(5)

    def hasty():  # first in line, gives up after 0.2 s
        start = time.monotonic()
        try:
            with limiter.slot("h", start + 0.2):
                outcome["hasty"] = "got a slot"
        except HostWaitTimeout as e:
            outcome["hasty"] = e

    def patient():  # behind the hasty one: must not stay stuck behind its ghost
        with limiter.slot("h", time.monotonic() + 10) as waited:
            outcome["patient"] = waited

    threads = [threading.Thread(target=fn) for fn in (holder, hasty, patient)]
    threads[0].start()
    wait_for(lambda: "h" in limiter._hosts and limiter._hosts["h"].active == 1)
    threads[1].start()
    wait_for(lambda: len(limiter._hosts["h"].queue) == 1)
    threads[2].start()
    wait_for(lambda: len(limiter._hosts["h"].queue) == 2)
    threads[1].join(5)
    hold.set()
    for t in threads:
        t.join(5)
    e = outcome["hasty"]
    assert isinstance(e, HostWaitTimeout) and e.host == "h" and 0.19 <= e.waited < 1.0
    assert isinstance(outcome["patient"], float)
    assert not limiter._hosts["h"].queue and limiter._hosts["h"].active == 0
    with limiter.slot("other", time.monotonic()) as waited:  # a free host: no wait, even at the deadline
        assert waited < 0.01


def assert_spaced(starts: list[float], gap: float, slack: float) -> None:
    """Starts at least ``gap`` apart, as observed: an observation can come late (the thread
    was descheduled after it got its slot), which shortens the next gap by as much, so
    single gaps get ``slack``; the whole span has only the first observation's delay."""
    starts = sorted(starts)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= gap - slack, gaps
    assert starts[-1] - starts[0] >= len(gaps) * gap - slack / 2, gaps


def test_limiter_spaces_request_starts_by_min_gap():
    limiter = HostLimiter(8, min_gap=0.08)
    starts: list[float] = []

    def work(_):
        with limiter.slot("h", time.monotonic() + 10):
            starts.append(time.monotonic())

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(work, range(6)))
    assert_spaced(starts, 0.08, slack=0.03)


def test_penalty_box():
    limiter = HostLimiter()
    now = time.monotonic()
    assert limiter.blocked_until("h:80") is None
    limiter.defer("h:80", now + 0.2)
    assert limiter.blocked_until("h:80") == pytest.approx(now + 0.2)
    assert limiter.blocked_until("other:80") is None
    limiter.defer("h:80", now + 0.1)  # a shorter request does not shorten the box
    assert limiter.blocked_until("h:80") == pytest.approx(now + 0.2)
    time.sleep(0.25)
    assert limiter.blocked_until("h:80") is None
    limiter.defer("far:80", now + 10**9)
    assert limiter.blocked_until("far:80") <= time.monotonic() + MAX_DEFER


# --- pure rules ------------------------------------------------------------------------------


@given(st.integers(0, 10**12))
def test_retry_after_delay_seconds(n):
    assert retry_after_seconds(str(n), 1e9) == min(n, MAX_DEFER)
    assert retry_after_seconds(f"  {n} ", 1e9) == min(n, MAX_DEFER)


@given(st.integers(-10**6, 10**7), st.floats(1e9, 2e9))
def test_retry_after_http_date(delta, now):
    value = email.utils.formatdate(int(now) + delta, usegmt=True)  # IMF-fixdate, RFC 9110 §5.6.7
    expected = min(max(int(now) + delta - now, 0.0), MAX_DEFER)
    assert retry_after_seconds(value, now) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value", [None, "", "-5", "1.5", "soon", "١٢٠", "Wed, 99 Foo 2037 07:28:00 GMT"]
)
def test_retry_after_unparsable(value):
    assert retry_after_seconds(value, 1e9) is None


@given(
    st.sampled_from(sorted(FETCHER_OWNED_HEADERS)),
    st.randoms(use_true_random=False),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)
def test_owned_headers_are_dropped_in_any_case(name, rnd, value):
    mixed = "".join(c.upper() if rnd.random() < 0.5 else c for c in name)
    ua, kept = source_headers(((mixed, value), ("X-Keep", "1")))
    assert ua is None and kept == (("X-Keep", b"1"),)


@pytest.mark.parametrize(
    "origin,url,ok",
    [
        ("https://a.example/feed", "https://a.example/other?x", True),
        ("https://a.example/feed", "https://A.EXAMPLE:443/x", True),
        ("http://a.example/feed", "https://a.example/feed", True),  # upgrade, default ports
        ("https://a.example/feed", "http://a.example/feed", False),  # downgrade
        ("http://a.example:8080/f", "https://a.example/f", False),
        ("https://a.example/feed", "https://a.example:8443/feed", False),
        ("https://a.example/feed", "https://b.example/feed", False),
        ("https://a.example/feed", "https://sub.a.example/feed", False),
    ],
)
def test_source_headers_only_for_their_origin(origin, url, ok):
    assert same_origin(httpx.URL(origin), httpx.URL(url)) is ok


@pytest.mark.parametrize(
    "url,key",
    [("http://Example.ORG/x", "example.org:80"), ("https://example.org/x", "example.org:443"),
     ("https://example.org:8443/", "example.org:8443"), ("http://[::1]:8080/", "[::1]:8080")],
)  # fmt: skip
def test_host_key(url, key):
    assert host_key(httpx.URL(url)) == key


# --- inside the Fetcher, measured at the server ----------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4])
def test_at_most_k_requests_per_host_under_16_threads(k):
    with FeedServer() as srv, Fetcher(limits(), host_limits=(k, 0.0)) as f:
        for i in range(8):
            srv.add_handler(f"/r{i}", sleeper(0.03))
        urls = [srv.url(f"/r{i % 8}") for i in range(48)]
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(f.fetch, urls))
    assert all(r.body == RSS for r in results) and len(srv.requests) == 48
    assert srv.peak_in_flight == k  # reached, never passed


def test_min_gap_between_request_starts_at_the_server():
    gap = 0.08
    with FeedServer() as srv, Fetcher(limits(), host_limits=(4, gap)) as f:
        srv.add("/feed.xml", RSS)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: f.fetch(srv.url("/feed.xml")), range(8)))
    # arrival is a little after the start (more when a new connection is opened)
    assert len(srv.requests) == 8
    assert_spaced([r.at for r in srv.requests], gap, slack=0.04)


def test_hosts_do_not_wait_for_each_other_and_the_wait_counts_against_the_deadline():
    release = threading.Event()

    def stuck(h):
        release.wait(10)
        h.send_body(RSS)

    with FeedServer("127.0.0.1") as a, FeedServer("127.0.0.2") as b, Fetcher(limits(), host_limits=(1, 0.0)) as f:
        a.add_handler("/stuck", stuck)
        a.add("/feed.xml", RSS)
        b.add("/feed.xml", RSS)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(f.fetch, a.url("/stuck"))
            wait_for(lambda: a.in_flight == 1)
            try:
                assert f.fetch(b.url("/feed.xml")).body == RSS  # 127.0.0.2 has its own slot
                start = time.monotonic()
                with pytest.raises(TimeoutError_) as info:
                    f.fetch(a.url("/feed.xml"), source="s", options=RequestOptions(timeout=0.3))
                waited = time.monotonic() - start
                assert a.in_flight == 1  # the first request was still holding the slot
            finally:
                release.set()
            assert first.result().body == RSS
        assert f.fetch(a.url("/feed.xml")).body == RSS  # the slot came back
    text = str(info.value)
    assert text.startswith("s: waited 0.3 s for a free slot on host 127.0.0.1:") and "at most 1 requests" in text
    assert "total deadline of 0.3 s exceeded" in text and 0.25 <= waited < 1.5
    assert a.hits["/feed.xml"] == 1  # only the last fetch: the timed-out one never reached it


def test_429_with_retry_after_puts_the_host_in_the_box():
    with FeedServer("127.0.0.1") as a, FeedServer("127.0.0.2") as b:
        a.add("/busy", b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "120"})
        a.add("/other.xml", RSS)
        b.add("/feed.xml", RSS)
        b.redirect("/to-a", a.url("/other.xml"))
        shared = HostLimiter()
        with Fetcher(limits(), host_limits=shared) as f, Fetcher(limits(), host_limits=shared) as g:
            with pytest.raises(HTTPStatusError) as first:
                f.fetch(a.url("/busy"), source="route1")
            assert (first.value.status, first.value.retry_after) == (429, "120")
            assert "HTTP 429 Too Many Requests from" in str(first.value)
            for fetcher, url in ((f, a.url("/other.xml")), (g, a.url("/other.xml")), (f, b.url("/to-a"))):
                with pytest.raises(HTTPStatusError) as boxed:
                    fetcher.fetch(url, source="route2")
                e = boxed.value
                assert e.status == 429 and e.source == "route2" and 115 <= int(e.retry_after) <= 120
                assert f"host 127.0.0.1:{a.port} asked us to wait" in str(e) and "not contacted" in str(e)
            assert f.fetch(b.url("/feed.xml")).body == RSS  # another host is unaffected
        with Fetcher(limits()) as fresh:  # the box belongs to a limiter, not to the process
            assert fresh.fetch(a.url("/other.xml")).body == RSS
    assert a.hits == {"/busy": 1, "/other.xml": 1} and b.hits["/to-a"] == 1


@pytest.mark.parametrize(
    "status,retry_after,boxed",
    [(503, "60", True), (503, "date+90", True), (429, None, False), (429, "0", False), (429, "soon", False),
     (500, "60", False)],
)
def test_which_answers_fill_the_box(status, retry_after, boxed):
    if retry_after == "date+90":
        retry_after = email.utils.formatdate(time.time() + 90, usegmt=True)
    with FeedServer() as srv, Fetcher(limits()) as f:
        srv.add("/x", b"", status=status, headers={"Retry-After": retry_after} if retry_after else {})
        srv.add("/y.xml", RSS)
        with pytest.raises(HTTPStatusError):
            f.fetch(srv.url("/x"))
        if boxed:
            with pytest.raises(HTTPStatusError, match="not contacted"):
                f.fetch(srv.url("/y.xml"))
        else:
            assert f.fetch(srv.url("/y.xml")).body == RSS
    assert srv.hits["/y.xml"] == (0 if boxed else 1)


def test_scale_200_fetches_16_threads_8_hosts(record_property):
    """Not a timing assertion: everything succeeds and no host sees more than K at once.
    The wall time is recorded (and printed with -s) for the record."""
    k, per_request = 2, 0.1
    servers = [FeedServer(f"127.0.0.{i}") for i in range(1, 9)]
    try:
        for srv in servers:
            srv.start()
            for j in range(25):
                srv.add_handler(f"/route/{j}", sleeper(per_request))
        urls = [srv.url(f"/route/{j}") for j in range(25) for srv in servers]
        with Fetcher(limits(), host_limits=(k, 0.0)) as f, ThreadPoolExecutor(16) as pool:
            start = time.monotonic()
            results = list(pool.map(f.fetch, urls))
            wall = time.monotonic() - start
    finally:
        for srv in servers:
            srv.stop()
    assert len(results) == 200 and all(r.body == RSS for r in results)
    assert all(sum(srv.hits.values()) == 25 and srv.peak_in_flight <= k for srv in servers)
    record_property("wall_seconds", round(wall, 3))
    print(f"\n200 fetches, 16 threads, 8 hosts, K={k}, {per_request * 1000:.0f} ms/request: {wall:.2f} s wall "
          f"(floor {200 * per_request / (8 * k):.2f} s)")  # fmt: skip
