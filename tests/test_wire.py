"""The direct HTTP/1.1 path (``aggregator.wire``) against a scripted loopback server
that writes raw bytes: kept connections the server dropped, answers with bytes left
over, header fields as real servers send them, cut bodies and HTTP/1.0. Everything
goes through ``Fetcher.fetch``, the way the pipeline uses it."""

from __future__ import annotations

import socket
import threading

import pytest

from aggregator.errors import NetworkError
from aggregator.fetch import Fetcher
from aggregator.models import Fetched, FetchLimits, NotModified, Validators

UA = "aggregator-test/1.0"
RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


def answer(body: bytes = RSS, *, status: str = "200 OK", head: bytes = b"", length: bool = True,
           version: bytes = b"HTTP/1.1") -> bytes:
    lines = version + b" " + status.encode() + b"\r\nContent-Type: application/rss+xml\r\n" + head
    if length:
        lines += b"Content-Length: %d\r\n" % len(body)
    return lines + b"\r\n" + body


CLOSE = object()  # the server closes the connection instead of answering


class Last(bytes):
    """An answer after which the server closes the connection."""


class Scripted:
    """Connection i gets the answers in ``script[i]`` in order, one per request read
    (an answer may be CLOSE, or Last(...) to close after it). Records each request's
    bytes as (connection, request)."""

    def __init__(self, script: list[list[object]]):
        self.script = script
        self.requests: list[tuple[int, bytes]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "/feed") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()

    def _serve(self) -> None:
        for index, answers in enumerate(self.script):
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(index, conn, answers), daemon=True).start()

    def _connection(self, index: int, conn: socket.socket, answers: list[object]) -> None:
        with conn:
            buffered = b""
            for reply in answers:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                request, _, buffered = buffered.partition(b"\r\n\r\n")
                self.requests.append((index, request))
                if reply is CLOSE:
                    return
                conn.sendall(reply)  # type: ignore[arg-type]
                if isinstance(reply, Last):
                    return
            conn.settimeout(5)
            try:
                while conn.recv(65536):  # hold the connection open until the client goes
                    pass
            except OSError:
                pass


@pytest.fixture
def fetcher():
    with Fetcher(FetchLimits(user_agent=UA, allow_private_networks=True, deadline=5.0)) as f:
        yield f


def test_a_kept_connection_the_server_dropped_is_retried_once_on_a_new_one(fetcher):
    """The server answers once, keeps the connection, then closes it on the next
    request without a word (an idle timeout racing our request): that request goes
    again on a new connection, because nothing of it was answered."""
    with Scripted([[answer(), CLOSE], [answer(b"<rss>second</rss>")]]) as srv:
        assert fetcher.fetch(srv.url()).body == RSS
        assert fetcher.fetch(srv.url()).body == b"<rss>second</rss>"
    assert [index for index, _ in srv.requests] == [0, 0, 1]


def test_a_new_connection_closed_without_an_answer_is_an_error_not_a_retry(fetcher):
    with Scripted([[CLOSE], [answer()]]) as srv:
        with pytest.raises(NetworkError, match="disconnected without sending a response") as info:
            fetcher.fetch(srv.url(), source="s")
        assert "127.0.0.1" in str(info.value)
    assert len(srv.requests) == 1


def test_bytes_after_an_answer_are_never_read_as_the_next_answer(fetcher):
    """A server that sends more than its Content-Length (here: a whole second answer):
    the connection is dropped rather than asked again, since the next answer would
    start with those bytes."""
    smuggled = answer(b"<rss>not yours</rss>")
    with Scripted([[answer() + smuggled], [answer(b"<rss>second</rss>")]]) as srv:
        assert fetcher.fetch(srv.url()).body == RSS
        assert fetcher.fetch(srv.url()).body == b"<rss>second</rss>"
    assert [index for index, _ in srv.requests] == [0, 1]


def test_header_fields_as_servers_send_them(fetcher):
    head = (b"ETag: \"v1\"\r\n"
            b"Link: <https://hub.example/>; rel=hub\r\n"
            b"X-Folded: first\r\n  second\r\n"
            b"Link: <https://example.org/feed>; rel=self\r\n"
            b"X-Utf8: caf\xc3\xa9\r\n"
            b"Last-Modified:   Tue, 01 Sep 2026 10:00:00 GMT   \r\n")
    with Scripted([[answer(head=head), answer(b"", status="304 Not Modified", length=False)]]) as srv:
        got = fetcher.fetch(srv.url())
        assert isinstance(got, Fetched)
        headers = [(name.lower(), value) for name, value in got.headers]
        assert [v for n, v in headers if n == "link"] == ["<https://hub.example/>; rel=hub",
                                                          "<https://example.org/feed>; rel=self"]
        assert ("x-folded", "first second") in headers
        assert ("x-utf8", "café") in headers  # decoded as httpx decodes a head: ascii, else utf-8, else latin-1
        assert got.validators == Validators(etag='"v1"', last_modified="Tue, 01 Sep 2026 10:00:00 GMT")
        again = fetcher.fetch(srv.url(), got.validators)
        assert isinstance(again, NotModified)
    sent = srv.requests[1][1].decode("latin-1").lower()
    assert 'if-none-match: "v1"' in sent and "if-modified-since: tue, 01 sep 2026 10:00:00 gmt" in sent
    assert [index for index, _ in srv.requests] == [0, 0]  # the 304 came over the kept connection


@pytest.mark.parametrize("head, why", [
    (b"X-Long: " + b"a" * 70000 + b"\r\n", "header line"),
    (b"".join(b"X-%d: v\r\n" % i for i in range(101)), "more than 100 headers"),
])
def test_oversized_heads_are_refused(fetcher, head, why):
    with Scripted([[answer(head=head)]]) as srv:
        with pytest.raises(NetworkError, match=why):
            fetcher.fetch(srv.url(), source="s")


def test_a_cut_body_is_an_error_not_a_short_feed(fetcher):
    cut = answer(RSS)[: -len(RSS) // 2]  # the server closes after half the body
    with Scripted([[Last(cut)]]) as srv:
        with pytest.raises(NetworkError, match="complete message body"):
            fetcher.fetch(srv.url(), source="s")


def test_http10_answer_is_read_to_the_close_and_not_kept(fetcher):
    """No length, HTTP/1.0, no keep-alive: the body ends with the connection, and the
    next request opens a new one."""
    only_close = Last(b"HTTP/1.0 200 OK\r\nContent-Type: application/rss+xml\r\n\r\n" + RSS)
    with Scripted([[only_close], [answer(b"<rss>second</rss>")]]) as srv:
        assert fetcher.fetch(srv.url()).body == RSS
        assert fetcher.fetch(srv.url()).body == b"<rss>second</rss>"
    assert [index for index, _ in srv.requests] == [0, 1]


def test_chunked_body_arrives_whole_and_the_connection_is_kept(fetcher):
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(RSS[i:i + 7]), RSS[i:i + 7]) for i in range(0, len(RSS), 7)) + b"0\r\n\r\n"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    with Scripted([[chunked, answer(b"<rss>second</rss>")]]) as srv:
        assert fetcher.fetch(srv.url()).body == RSS
        assert fetcher.fetch(srv.url()).body == b"<rss>second</rss>"
    assert [index for index, _ in srv.requests] == [0, 0]


def test_idle_connections_past_their_expiry_are_not_reused():
    limits = FetchLimits(user_agent=UA, allow_private_networks=True, deadline=5.0)
    with Fetcher(limits) as f:
        f._wire._idle_expiry = 0.0  # every idle connection is already too old
        with Scripted([[answer()], [answer(b"<rss>second</rss>")]]) as srv:
            assert f.fetch(srv.url()).body == RSS
            assert f.fetch(srv.url()).body == b"<rss>second</rss>"
        assert [index for index, _ in srv.requests] == [0, 1]


def test_interim_answers_are_skipped(fetcher):
    """103 Early Hints and 100 Continue come before the answer; their fields are not the
    answer's."""
    interim = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
               b"HTTP/1.1 100 Continue\r\n\r\n")
    with Scripted([[interim + answer(head=b'ETag: "e"\r\n')]]) as srv:
        got = fetcher.fetch(srv.url())
    assert got.status == 200 and got.body == RSS and got.validators.etag == '"e"'
    assert all(name.lower() != "link" for name, _ in got.headers)


@pytest.mark.parametrize("head, why", [
    (b"Transfer-Encoding: gzip, chunked\r\n", "only Transfer-Encoding: chunked"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "only Transfer-Encoding: chunked"),
    (b"Content-Length: 3\r\n", "conflicting Content-Length"),
    (b"Content-Length: 1, 2\r\n", "conflicting Content-Length"),
])
def test_framing_two_parties_could_read_differently_is_refused(fetcher, head, why):
    """The rules of h11, the parser under httpx: a body whose end depends on which
    header one believes is refused, not guessed."""
    with Scripted([[answer(head=head)]]) as srv:
        with pytest.raises(NetworkError, match=why):
            fetcher.fetch(srv.url(), source="s")


@pytest.mark.parametrize("value, why", [(b"+5", "bad Content-Length"), (b"1_0", "bad Content-Length"),
                                        (b"9" * 21, "bad Content-Length")])
def test_a_length_that_is_not_digits_is_refused(fetcher, value, why):
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n" + RSS
    with Scripted([[raw]]) as srv:
        with pytest.raises(NetworkError, match=why):
            fetcher.fetch(srv.url(), source="s")


def test_a_repeated_identical_length_is_one_length(fetcher):
    n = len(RSS)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d, %d\r\nContent-Length: %d\r\n\r\n" % (n, n, n) + RSS
    with Scripted([[raw, answer(b"<rss>second</rss>")]]) as srv:
        assert fetcher.fetch(srv.url()).body == RSS
        assert fetcher.fetch(srv.url()).body == b"<rss>second</rss>"
    assert [index for index, _ in srv.requests] == [0, 0]


def test_a_header_section_over_64_kib_is_refused(fetcher):
    head = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))  # 70 fields, none long
    with Scripted([[answer(head=head)]]) as srv:
        with pytest.raises(NetworkError, match="header section over 65536 bytes"):
            fetcher.fetch(srv.url(), source="s")


def test_switching_protocols_is_refused(fetcher):
    with Scripted([[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"]]) as srv:
        with pytest.raises(NetworkError, match="101"):
            fetcher.fetch(srv.url(), source="s")


def test_a_connection_in_use_when_the_fetcher_closes_is_closed_after_its_answer():
    """Closing the fetcher closes its idle connections, and one that was carrying an
    answer then is closed when that answer ends instead of going back to the pool."""
    import httpx

    limits = FetchLimits(user_agent=UA, allow_private_networks=True, deadline=5.0)
    f = Fetcher(limits)
    with Scripted([[answer(), answer()], [answer()]]) as srv:
        assert f.fetch(srv.url()).body == RSS  # leaves one idle connection
        idle = f._wire._pool()
        response = f._wire.get(httpx.URL(srv.url()), [], connect_timeout=5, read_timeout=5)  # takes it
        conn = response._conn
        f.close()
        assert b"".join(response.iter_raw()) == RSS
        response.close()
        assert conn.sock is None  # closed, not given back
        assert idle.take(("http", "127.0.0.1", srv.port)) is None


def test_a_refused_address_moves_on_to_the_next_one():
    """A name with two addresses, the first refusing connections: the fetch connects to
    the second (and both were vetted before either was tried)."""
    answers = {"multi.example": ["127.0.0.2", "127.0.0.1"]}  # nothing listens on .2
    vetted: list[str] = []

    def policy(ip):
        vetted.append(str(ip))
        return None

    limits = FetchLimits(user_agent=UA, allow_private_networks=False, deadline=5.0)
    with Scripted([[answer()]]) as srv, Fetcher(limits, resolver=lambda host, port: answers[host],
                                                 address_policy=policy) as f:
        assert f.fetch(f"http://multi.example:{srv.port}/feed").body == RSS
    assert vetted == ["127.0.0.2", "127.0.0.1"]
    assert srv.requests[0][1].lower().count(b"host: multi.example:") == 1
