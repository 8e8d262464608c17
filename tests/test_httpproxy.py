# -*- test-case-name: tests.test_httpproxy -*-
"""
Tests for L{socksrelay.httpproxy}: plain-HTTP forward proxying through
L{twisted.web}.

A L{ForwardProxyChannel} is driven on a L{RecordingTransport} with callables
the test controls for authorisation and for the outbound connection; the
origin server is a L{Collector} connected in memory.  The same channel
inside the listener is tested in L{tests.test_multiprotocol}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPFactory

from socksrelay.httpproxy import (
    HOP_BY_HOP,
    CountingTransport,
    ForwardProxyChannel,
    ForwardRequest,
    channelFactory,
    hopByHop,
)
from tests.fakes import (
    CLIENT_ADDRESS,
    LISTEN_ADDRESS,
    Collector,
    EndpointRecorder,
    RecordingTransport,
)
from tests.test_dialects import parseHTTPResponse

#: The hop-by-hop headers that RFC 9110 section 7.6.1 names, and the proxy's
#: own credentials, as a client might send them.
CLIENT_HOP_HEADERS = (
    b"Connection: keep-alive, X-Hop-Named\r\n"
    b"X-Hop-Named: 1\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Proxy-Authorization: Basic YWxpY2U6cHc=\r\n"
    b"Proxy-Connection: keep-alive\r\n"
    b"TE: trailers\r\n"
    b"Trailer: X-Checksum\r\n"
    b"Upgrade: h2c\r\n"
)


def parseOriginRequest(
    data: bytes,
) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    """
    Split the request the origin received into its request line, its headers
    (names lower case, values in order) and its body.
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise AssertionError(f"incomplete request {data!r}")
    requestLine, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return requestLine, headers, body


class ChannelHarness:
    """
    A L{ForwardProxyChannel} on a L{RecordingTransport}, set up as the
    server sets it up, whose authorisation and outbound connections the test
    controls.

    @ivar authorizeWith: what C{authorize} returns: a L{Deferred} (or a
        callable of the header value returning one).
    @ivar authorized: the C{Proxy-Authorization} values asked about.
    @ivar recorder: the L{EndpointRecorder} that C{connect} goes through.
    @ivar noted: C{(method, host, port)} of each C{noteRequest}.
    @ivar statuses: each status passed to C{noteStatus}.
    """

    def __init__(self, authorizeWith: Any = None) -> None:
        self.reactor = MemoryReactorClock()
        self.authorizeWith = authorizeWith
        self.authorized: list[str | None] = []
        self.recorder = EndpointRecorder()
        self.noted: list[tuple[str, str, int]] = []
        self.statuses: list[int] = []
        self.channel = ForwardProxyChannel(
            self._authorize, self._connect, self._noteRequest, self.statuses.append
        )
        factory = channelFactory(self.reactor, 60.0)
        self.channel.factory = factory
        self.channel.callLater = self.reactor.callLater  # type: ignore[method-assign]
        self.channel.timeOut = factory.timeOut
        self.transport = RecordingTransport(
            hostAddress=LISTEN_ADDRESS, peerAddress=CLIENT_ADDRESS
        )
        self.channel.makeConnection(self.transport)

    def _authorize(self, value: str | None) -> Deferred[str | None]:
        self.authorized.append(value)
        if self.authorizeWith is None:
            return succeed(None)
        if callable(self.authorizeWith):
            return self.authorizeWith(value)
        return self.authorizeWith

    def _connect(self, host: str, port: int, factory: Any) -> Deferred[Any]:
        return self.recorder(host, port).connect(factory)

    def _noteRequest(self, method: str, host: str, port: int) -> None:
        self.noted.append((method, host, port))

    def send(self, data: bytes) -> None:
        """
        Deliver C{data} from the client.
        """
        self.channel.dataReceived(data)

    def received(self) -> bytes:
        """
        Return, and forget, what the proxy wrote to the client.
        """
        data = self.transport.value()
        self.transport.clear()
        return data

    def forward(self, data: bytes) -> tuple[Collector, Any]:
        """
        Send the request C{data} and connect its outbound connection to an
        origin in memory.

        @return: the origin and the pump between it and the proxy.
        """
        self.send(data)
        origin = Collector()
        pump = self.recorder.last.succeedInMemory(origin)
        pump.flush()
        return origin, pump

    def respond(self, origin: Collector, pump: Any, response: bytes) -> bytes:
        """
        Have C{origin} send C{response} and close; what the client got.
        """
        origin.transport.write(response)  # type: ignore[union-attr]
        pump.flush()
        return self.received()


class HopByHopTests(SynchronousTestCase):
    """
    L{hopByHop} names the headers a proxy must not forward.
    """

    def test_fixedSet(self) -> None:
        """
        Without a C{Connection} header, the fixed set is returned: RFC 9110's
        hop-by-hop headers and the proxy's own credentials.
        """
        expected = {
            b"connection",
            b"keep-alive",
            b"proxy-authenticate",
            b"proxy-authorization",
            b"proxy-connection",
            b"te",
            b"trailer",
            b"transfer-encoding",
            b"upgrade",
        }
        self.assertEqual(HOP_BY_HOP, expected)
        self.assertEqual(hopByHop([]), expected)

    def test_namedHeadersAdded(self) -> None:
        """
        The names listed in C{Connection} values are added, lower-cased and
        stripped, from every C{Connection} header, empty items ignored.
        """
        skip = hopByHop([b"close, X-Foo", b" x-BAR ,,", b""])
        self.assertEqual(skip - HOP_BY_HOP, {b"close", b"x-foo", b"x-bar"})
        self.assertTrue(HOP_BY_HOP <= skip)
        self.assertNotIn(b"", skip)


class CountingTransportTests(SynchronousTestCase):
    """
    L{CountingTransport} counts what is written through it and otherwise
    stands for the transport it wraps.
    """

    def test_writeCounted(self) -> None:
        """
        C{write} and C{writeSequence} reach the transport and are counted.
        """
        inner = StringTransport()
        counting = CountingTransport(inner)
        counting.write(b"abc")
        counting.writeSequence([b"de", b"", b"fgh"])
        self.assertEqual(inner.value(), b"abcdefgh")
        self.assertEqual(counting.written, 8)

    def test_delegates(self) -> None:
        """
        Everything else is the wrapped transport's.
        """
        inner = StringTransport(hostAddress=LISTEN_ADDRESS, peerAddress=CLIENT_ADDRESS)
        counting = CountingTransport(inner)
        self.assertEqual(counting.getPeer(), CLIENT_ADDRESS)
        self.assertEqual(counting.getHost(), LISTEN_ADDRESS)
        counting.loseConnection()
        self.assertTrue(inner.disconnecting)


class ChannelFactoryTests(SynchronousTestCase):
    """
    L{channelFactory} makes the L{HTTPFactory} of forward-proxy channels.
    """

    def test_settings(self) -> None:
        """
        The factory uses the given reactor and idle timeout.
        """
        reactor = MemoryReactorClock()
        factory = channelFactory(reactor, 12.5)
        self.assertIsInstance(factory, HTTPFactory)
        self.assertIs(factory.reactor, reactor)
        self.assertEqual(factory.timeOut, 12.5)

    def test_noAccessLog(self) -> None:
        """
        The factory writes no access log: its C{log} ignores requests.
        """
        factory = channelFactory(MemoryReactorClock(), 60.0)
        self.assertIsNone(factory.log(object()))
        self.assertIsNone(factory.logPath)


class ForwardedRequestTests(SynchronousTestCase):
    """
    What reaches the origin for a proxied request.
    """

    def test_absoluteURI(self) -> None:
        """
        C{GET http://example.com/x} connects to example.com port 80 and asks
        the origin for C{/x} with C{Host: example.com}.
        """
        h = ChannelHarness()
        origin, _ = h.forward(
            b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        self.assertEqual(h.recorder.requests, [("example.com", 80)])
        self.assertEqual(h.noted, [("GET", "example.com", 80)])
        line, headers, body = parseOriginRequest(origin.received)
        self.assertEqual(line.split(b" ")[:2], [b"GET", b"/x"])
        self.assertEqual(headers[b"host"], [b"example.com"])
        self.assertEqual(body, b"")

    def test_portQueryAndUserinfo(self) -> None:
        """
        The URI's port is used, its query is kept, user information is not
        sent on in C{Host}, and the client's own C{Host} is replaced.
        """
        h = ChannelHarness()
        origin, _ = h.forward(
            b"GET http://u:p@example.com:8080/a/b?q=1&r=2 HTTP/1.1\r\n"
            b"Host: elsewhere.example\r\n\r\n"
        )
        self.assertEqual(h.recorder.requests, [("example.com", 8080)])
        line, headers, _ = parseOriginRequest(origin.received)
        self.assertEqual(line.split(b" ")[1], b"/a/b?q=1&r=2")
        self.assertEqual(headers[b"host"], [b"example.com:8080"])

    def test_emptyPath(self) -> None:
        """
        A URI without a path asks the origin for C{/}.
        """
        h = ChannelHarness()
        origin, _ = h.forward(b"GET http://example.com HTTP/1.1\r\n\r\n")
        line, _, _ = parseOriginRequest(origin.received)
        self.assertEqual(line.split(b" ")[1], b"/")

    def test_hopByHopHeadersDropped(self) -> None:
        """
        The client's hop-by-hop headers, and those its C{Connection} header
        names, are not forwarded; end-to-end headers are.  The only
        C{Connection} the origin sees is the proxy's own C{close}.
        """
        h = ChannelHarness()
        origin, _ = h.forward(
            b"GET http://example.com/x HTTP/1.1\r\n"
            + CLIENT_HOP_HEADERS
            + b"Accept: text/html\r\nX-End-To-End: yes\r\n\r\n"
        )
        _, headers, _ = parseOriginRequest(origin.received)
        for name in (
            b"x-hop-named",
            b"keep-alive",
            b"proxy-authorization",
            b"proxy-connection",
            b"te",
            b"trailer",
            b"upgrade",
            b"transfer-encoding",
        ):
            self.assertNotIn(name, headers)
        self.assertEqual(headers[b"connection"], [b"close"])
        self.assertEqual(headers[b"accept"], [b"text/html"])
        self.assertEqual(headers[b"x-end-to-end"], [b"yes"])

    def test_cookiesJoined(self) -> None:
        """
        Several C{Cookie} headers are sent as one, joined with C{"; "};
        other repeated headers are joined with C{", "}.
        """
        h = ChannelHarness()
        origin, _ = h.forward(
            b"GET http://example.com/ HTTP/1.1\r\n"
            b"Cookie: a=1\r\nCookie: b=2\r\nAccept: text/html\r\nAccept: */*\r\n\r\n"
        )
        _, headers, _ = parseOriginRequest(origin.received)
        self.assertEqual(headers[b"cookie"], [b"a=1; b=2"])
        self.assertEqual(headers[b"accept"], [b"text/html, */*"])

    def test_bodyContentLength(self) -> None:
        """
        A body is sent with a C{Content-Length} of its size, and the
        client's own C{Content-Length} is not sent twice.
        """
        h = ChannelHarness()
        origin, _ = h.forward(
            b"POST http://example.com/up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        )
        _, headers, body = parseOriginRequest(origin.received)
        self.assertEqual(headers[b"content-length"], [b"5"])
        self.assertEqual(body, b"hello")

    def test_chunkedBody(self) -> None:
        """
        A chunked request body reaches the origin de-chunked, with a correct
        C{Content-Length} and no C{Transfer-Encoding}.
        """
        h = ChannelHarness()
        origin, _ = h.forward(
            b"POST http://example.com/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        _, headers, body = parseOriginRequest(origin.received)
        self.assertEqual(headers[b"content-length"], [b"8"])
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertEqual(body, b"helloabc")

    def test_emptyPost(self) -> None:
        """
        A POST without a body is sent with C{Content-Length: 0}; a GET
        without a body gets no C{Content-Length}.
        """
        h = ChannelHarness()
        origin, _ = h.forward(b"POST http://example.com/ HTTP/1.1\r\n\r\n")
        _, headers, _ = parseOriginRequest(origin.received)
        self.assertEqual(headers[b"content-length"], [b"0"])
        h = ChannelHarness()
        origin, _ = h.forward(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        _, headers, _ = parseOriginRequest(origin.received)
        self.assertNotIn(b"content-length", headers)

    def test_bareLineFeeds(self) -> None:
        """
        Heads whose lines end in a bare LF, or mix LF and CRLF, as
        L{socksrelay.httpwire} accepts them, are forwarded: the first
        request on a connection and the next one, with their headers.
        """
        h = ChannelHarness()
        origin, pump = h.forward(
            b"GET http://example.com/1 HTTP/1.1\nHost: x\nX-One: 1\n\n"
        )
        line, headers, _ = parseOriginRequest(origin.received)
        self.assertEqual(line.split(b" ")[1], b"/1")
        self.assertEqual(headers[b"x-one"], [b"1"])
        h.respond(origin, pump, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        origin, _ = h.forward(
            b"POST http://example.org/2 HTTP/1.1\r\nX-Two: 2\n"
            b"Content-Length: 3\r\n\nabc"
        )
        line, headers, body = parseOriginRequest(origin.received)
        self.assertEqual(line.split(b" ")[:2], [b"POST", b"/2"])
        self.assertEqual((headers[b"x-two"], body), ([b"2"], b"abc"))
        self.assertEqual(h.recorder.requests, [("example.com", 80), ("example.org", 80)])

    def test_badPort(self) -> None:
        """
        An absolute URI whose port is 0, over 65535 or not a number is
        answered 400 naming the port, and nothing is connected (port 0 is
        not taken for the default port 80).
        """
        for port in (b"0", b"65536", b"123456", b"x", b"-1", b"+80", b"8a"):
            with self.subTest(port=port):
                h = ChannelHarness()
                h.send(b"GET http://example.com:" + port + b"/ HTTP/1.1\r\n\r\n")
                status, _, body = parseHTTPResponse(h.received())
                self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
                self.assertIn(b"bad port", body)
                self.assertEqual(h.recorder.requests, [])

    def test_defaultPort(self) -> None:
        """
        An absent or empty port in the URI is port 80.
        """
        for target in (b"http://example.com/", b"http://example.com:/"):
            with self.subTest(target=target):
                h = ChannelHarness()
                h.send(b"GET " + target + b" HTTP/1.1\r\n\r\n")
                self.assertEqual(h.recorder.requests, [("example.com", 80)])

    def assertBadRequest(self, target: bytes) -> None:
        """
        A request for C{target} is answered 400 with a text body, nothing is
        connected, and the connection stays open.
        """
        h = ChannelHarness()
        h.send(b"GET " + target + b" HTTP/1.1\r\nHost: example.com\r\n\r\n")
        status, headers, body = parseHTTPResponse(h.received())
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
        self.assertIn((b"content-type", b"text/plain; charset=utf-8"), headers)
        self.assertEqual(body, b"Bad Request: only absolute http:// URIs are proxied\n")
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.noted, [])
        self.assertEqual(h.statuses, [400])
        self.assertFalse(h.transport.disconnecting)

    def test_httpsRefused(self) -> None:
        """
        An C{https://} URI is not proxied (400): HTTPS goes through CONNECT.
        """
        self.assertBadRequest(b"https://example.com/")

    def test_relativeRefused(self) -> None:
        """
        A relative URI (an origin-form request) is not proxied (400).
        """
        self.assertBadRequest(b"/x")

    def test_otherSchemeRefused(self) -> None:
        """
        An C{ftp://} URI is not proxied (400).
        """
        self.assertBadRequest(b"ftp://example.com/file")

    def test_noHostRefused(self) -> None:
        """
        An C{http://} URI without a host is not proxied (400).
        """
        self.assertBadRequest(b"http:///x")


class ResponseTests(SynchronousTestCase):
    """
    What reaches the client from the origin.
    """

    def test_responseRelayed(self) -> None:
        """
        The origin's status, end-to-end headers and body reach the client,
        and the status is noted.
        """
        h = ChannelHarness()
        origin, pump = h.forward(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        answer = h.respond(
            origin,
            pump,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nX-End: 1\r\n\r\nnope",
        )
        status, headers, body = parseHTTPResponse(answer)
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
        self.assertIn((b"x-end", b"1"), headers)
        self.assertEqual(body, b"nope")
        self.assertEqual(h.statuses, [404])

    def test_hopByHopHeadersDropped(self) -> None:
        """
        The origin's C{Connection}, C{Keep-Alive} and the headers its
        C{Connection} names are not passed to the client.
        """
        h = ChannelHarness()
        origin, pump = h.forward(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        answer = h.respond(
            origin,
            pump,
            b"HTTP/1.1 200 OK\r\n"
            b"Connection: X-Named-After, close\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"X-Named-After: 1\r\n"
            b'Proxy-Authenticate: Basic realm="origin"\r\n'
            b"Content-Length: 2\r\n"
            b"X-End: 1\r\n\r\nok",
        )
        _, headers, body = parseHTTPResponse(answer)
        names = [name for name, _ in headers]
        for name in (
            b"connection",
            b"keep-alive",
            b"x-named-after",
            b"proxy-authenticate",
        ):
            self.assertNotIn(name, names)
        self.assertIn((b"x-end", b"1"), headers)
        self.assertEqual(body, b"ok")

    def test_namedHeaderBeforeConnection(self) -> None:
        """
        A header that the origin's C{Connection} names is dropped even when
        it comes before the C{Connection} header.
        """
        h = ChannelHarness()
        origin, pump = h.forward(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        answer = h.respond(
            origin,
            pump,
            b"HTTP/1.1 200 OK\r\n"
            b"X-Named-Before: 1\r\n"
            b"Connection: X-Named-Before\r\n"
            b"Content-Length: 2\r\n\r\nok",
        )
        _, headers, body = parseHTTPResponse(answer)
        self.assertNotIn(b"x-named-before", [name for name, _ in headers])
        self.assertEqual(body, b"ok")

    def test_originClosesWithoutResponse(self) -> None:
        """
        An origin that closes without sending a response gives the client a
        502, not an empty success.
        """
        h = ChannelHarness()
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        outbound, _ = h.recorder.last.succeed()
        outbound.connectionLost(Failure(ConnectionLost()))
        status = h.received().split(b"\r\n", 1)[0]
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(h.statuses, [502])

    def test_malformedResponseHead(self) -> None:
        """
        An origin whose status line is not C{HTTP/x.y NNN} (here, one that
        echoes the request back, or sends one word), or whose header block
        has a line without a colon or a Content-Length that is not a number,
        gives the client a 502 and loses the origin connection; nothing
        raises (twisted.web's parser would raise on each).
        """
        for response in [
            b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"HELLO\r\n\r\n",
            b"\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\nX: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        ]:
            with self.subTest(response=response):
                h = ChannelHarness()
                origin, pump = h.forward(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
                answer = h.respond(origin, pump, response)
                self.assertEqual(
                    answer.split(b"\r\n", 1)[0], b"HTTP/1.1 502 Bad Gateway"
                )
                self.assertIn(b"the origin sent a malformed", answer)
                self.assertTrue(origin.transport.disconnecting)  # type: ignore[union-attr]
                self.assertEqual(h.statuses, [502])

    def test_keepAlive(self) -> None:
        """
        The client connection stays open after a response, and a second
        request on it is forwarded too.
        """
        h = ChannelHarness()
        origin, pump = h.forward(b"GET http://example.com/1 HTTP/1.1\r\n\r\n")
        h.respond(origin, pump, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        self.assertFalse(h.transport.disconnecting)
        origin, pump = h.forward(b"GET http://example.org/2 HTTP/1.1\r\n\r\n")
        answer = h.respond(
            origin, pump, b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n2"
        )
        self.assertEqual(parseHTTPResponse(answer)[2], b"2")
        self.assertEqual(
            h.recorder.requests, [("example.com", 80), ("example.org", 80)]
        )
        self.assertEqual(h.statuses, [200, 201])
        self.assertEqual(h.authorized, [None, None])


class ClientEOFTests(SynchronousTestCase):
    """
    L{ForwardProxyChannel.clientEOF}: the client has sent its last byte.
    """

    def test_noRequest(self) -> None:
        """
        With no request begun, the connection closes at once.
        """
        h = ChannelHarness()
        h.channel.clientEOF()
        self.assertTrue(h.transport.disconnecting)

    def test_inBody(self) -> None:
        """
        In the middle of a request body the request can never be answered:
        the connection closes at once and no origin is contacted.
        """
        h = ChannelHarness()
        h.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        h.channel.clientEOF()
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])

    def test_inHead(self) -> None:
        """
        In the middle of a request head (here the second request on the
        connection) the connection closes at once.
        """
        h = ChannelHarness()
        origin, pump = h.forward(b"GET http://example.com/1 HTTP/1.1\r\n\r\n")
        h.respond(origin, pump, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        h.send(b"GET http://example.com/2 HTTP/1.1\r\nHost: ex")
        h.channel.clientEOF()
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [("example.com", 80)])

    def test_wholeRequestAnsweredFirst(self) -> None:
        """
        After a whole request, the connection stays open until its response
        is finished, then closes.
        """
        h = ChannelHarness()
        origin, pump = h.forward(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        h.channel.clientEOF()
        self.assertFalse(h.transport.disconnecting)
        answer = h.respond(
            origin, pump, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual(parseHTTPResponse(answer)[2], b"ok")
        self.assertTrue(h.transport.disconnecting)


class AuthorizationTests(SynchronousTestCase):
    """
    Each request is authorised by the channel's C{authorize} callable.
    """

    def test_noHeader(self) -> None:
        """
        Without a C{Proxy-Authorization} header, C{authorize} gets C{None}.
        """
        h = ChannelHarness()
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        self.assertEqual(h.authorized, [None])

    def test_refused(self) -> None:
        """
        A refusal is answered 407 with C{Proxy-Authenticate: Basic} and the
        reason; nothing is connected and the connection stays open.
        """
        h = ChannelHarness(authorizeWith=lambda value: succeed("credentials required"))
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        status, headers, body = parseHTTPResponse(h.received())
        self.assertEqual(status, b"HTTP/1.1 407 Proxy Authentication Required")
        self.assertIn((b"proxy-authenticate", b'Basic realm="socksrelay"'), headers)
        self.assertEqual(body, b"Proxy Authentication Required: credentials required\n")
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.statuses, [407])
        self.assertFalse(h.transport.disconnecting)

    def test_allowed(self) -> None:
        """
        When C{authorize} fires with C{None}, the request is forwarded with
        the header value it was given, and without the header.
        """
        h = ChannelHarness()
        origin, _ = h.forward(
            b"GET http://example.com/ HTTP/1.1\r\n"
            b"Proxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n"
        )
        self.assertEqual(h.authorized, ["Basic YWxpY2U6cHc="])
        _, headers, _ = parseOriginRequest(origin.received)
        self.assertNotIn(b"proxy-authorization", headers)

    def test_pending(self) -> None:
        """
        While the answer is pending, nothing is connected or answered; then
        the request goes on.
        """
        pending: Deferred[str | None] = Deferred()
        h = ChannelHarness(authorizeWith=pending)
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.received(), b"")
        pending.callback(None)
        self.assertEqual(h.recorder.requests, [("example.com", 80)])

    def test_clientGoneWhilePending(self) -> None:
        """
        A client that leaves while its authorisation is pending gets no
        outbound connection when the answer comes.
        """
        pending: Deferred[str | None] = Deferred()
        h = ChannelHarness(authorizeWith=pending)
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        h.channel.connectionLost(Failure(ConnectionDone()))
        pending.callback(None)
        self.assertEqual(h.recorder.requests, [])


class ConnectFailureTests(SynchronousTestCase):
    """
    A request whose outbound connection fails is answered by the proxy.
    """

    def failWith(self, exception: BaseException) -> tuple[bytes, list, bytes]:
        """
        Send a request, fail its connection with C{exception}; the parsed
        answer.
        """
        self.harness = h = ChannelHarness()
        h.send(b"GET http://example.com:8080/ HTTP/1.1\r\n\r\n")
        h.recorder.last.fail(exception)
        return parseHTTPResponse(h.received())

    def test_refused(self) -> None:
        """
        A refused connection is answered 502 with a text body naming the
        destination and the reason; the connection stays open.
        """
        status, headers, body = self.failWith(error.ConnectionRefusedError())
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertIn((b"content-type", b"text/plain; charset=utf-8"), headers)
        self.assertTrue(
            body.startswith(b"Bad Gateway: cannot reach example.com:8080: ")
        )
        self.assertIn(b"refused", body)
        self.assertEqual(self.harness.statuses, [502])
        self.assertFalse(self.harness.transport.disconnecting)

    def test_outgoingAddressNotBindable(self) -> None:
        """
        An outgoing address that cannot be bound is answered 502 with a
        text that names the outgoing address, not the destination, as the
        cause.
        """
        status, _, body = self.failWith(
            error.ConnectBindError(99, "Cannot assign requested address")
        )
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertTrue(body.startswith(b"Bad Gateway: cannot bind the outgoing address: "))
        self.assertEqual(self.harness.statuses, [502])

    def test_dnsFailure(self) -> None:
        """
        A name that does not resolve is answered 502.
        """
        status, _, body = self.failWith(error.DNSLookupError("example.com"))
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertIn(b"example.com:8080", body)

    def test_connectTimeout(self) -> None:
        """
        A connection that timed out (L{error.TimeoutError}) is answered 504.
        """
        status, _, body = self.failWith(error.TimeoutError())
        self.assertEqual(status, b"HTTP/1.1 504 Gateway Timeout")
        self.assertEqual(
            body, b"Gateway Timeout: example.com:8080 did not answer in time\n"
        )
        self.assertEqual(self.harness.statuses, [504])

    def test_deferredTimeout(self) -> None:
        """
        The error that C{Deferred.addTimeout} fails with (the one the
        server's connect timeout produces) is answered 504 as well.
        """
        status, _, _ = self.failWith(defer.TimeoutError(30, "Deferred"))
        self.assertEqual(status, b"HTTP/1.1 504 Gateway Timeout")

    def test_cancelled(self) -> None:
        """
        A cancelled connection attempt is answered 504.
        """
        status, _, _ = self.failWith(error.ConnectingCancelledError(None))
        self.assertEqual(status, b"HTTP/1.1 504 Gateway Timeout")

    def test_failureAfterClientLeft(self) -> None:
        """
        A connection failure after the client left writes nothing.
        """
        h = ChannelHarness()
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        endpoint = h.recorder.last
        h.channel.connectionLost(Failure(ConnectionDone()))
        h.received()
        if not endpoint.deferred.called:
            endpoint.fail(error.ConnectionRefusedError())
        self.assertEqual(h.received(), b"")
        self.assertEqual(h.statuses, [])


class RequestFactoryTests(SynchronousTestCase):
    """
    L{ForwardProxyChannel} uses L{ForwardRequest}.
    """

    def test_requestFactory(self) -> None:
        """
        The channel's requests are L{ForwardRequest}s.
        """
        h = ChannelHarness()
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        [request] = h.channel.requests
        self.assertIsInstance(request, ForwardRequest)
