# -*- test-case-name: tests.test_httpwire -*-
"""
Tests for L{socksrelay.httpwire}, the sans-I/O reader of HTTP/1.x proxy
request heads, and its helpers for CONNECT targets, Basic credentials and
short responses.
"""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from tests.codectools import SingleRequestCodecTestsMixin

from socksrelay.httpwire import (
    MAX_HEAD,
    MAX_HEADERS,
    HTTPRequestHead,
    HTTPServerConnection,
    badRequest,
    httpResponse,
    looksLikeHTTP,
    parseAuthority,
    parseBasicCredentials,
)
from socksrelay.wire import NEED_DATA, ProtocolError

CONNECT = (
    b"CONNECT example.com:443 HTTP/1.1\r\n"
    b"Host: example.com:443\r\n"
    b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
    b"\r\n"
)
CONNECT_EVENT = HTTPRequestHead(
    "CONNECT",
    "example.com:443",
    "HTTP/1.1",
    (("Host", "example.com:443"), ("Proxy-Authorization", "Basic dXNlcjpwYXNz")),
    CONNECT,
)
# Bytes a client may send right after its head: a TLS record, then what looks
# like another request head ended both ways, so it would be noticed if the
# codec read into it instead of keeping it.
EARLY = b"\x16\x03\x01\x00\x02hiGET / HTTP/1.1\r\nHost: x\r\n\r\n\n\n"


def head(requestLine, *headerLines, eol=b"\r\n"):
    """Return a request head: the request line, header lines and a blank line."""
    return b"".join(line + eol for line in (requestLine,) + headerLines) + eol


def tr(testCase, data, expected):
    """
    Check that head C{data} parses as C{expected} fed whole, byte by byte,
    and followed by bytes that must be kept intact.
    """
    # (a) Whole.
    conn = HTTPServerConnection()
    conn.receiveData(data)
    testCase.assertEqual(conn.nextEvent(), expected)
    testCase.assertIs(conn.nextEvent(), NEED_DATA)
    testCase.assertEqual(conn.leftover(), b"")

    # (b) One byte at a time.
    conn = HTTPServerConnection()
    for i in range(len(data) - 1):
        conn.receiveData(data[i : i + 1])
        testCase.assertIs(conn.nextEvent(), NEED_DATA, f"after {i + 1} bytes")
    conn.receiveData(data[-1:])
    testCase.assertEqual(conn.nextEvent(), expected)
    testCase.assertEqual(conn.leftover(), b"")

    # (c) With trailing bytes.
    conn = HTTPServerConnection()
    conn.receiveData(data + EARLY)
    testCase.assertEqual(conn.nextEvent(), expected)
    testCase.assertIs(conn.nextEvent(), NEED_DATA)
    testCase.assertEqual(conn.leftover(), EARLY)


def parseError(testCase, data):
    """Feed C{data} whole and return the ProtocolError nextEvent raises."""
    conn = HTTPServerConnection()
    conn.receiveData(data)
    return testCase.assertRaises(ProtocolError, conn.nextEvent)


def assertStatus(testCase, error, status):
    """Assert that C{error} carries an HTTP/1.1 response with C{status}."""
    testCase.assertTrue(
        error.response.startswith(b"HTTP/1.1 %d " % (status,)), error.response[:40]
    )


class FramingTests(SynchronousTestCase):
    """Request heads parse whole, byte by byte, and with bytes after them."""

    def test_connect(self):
        """A CONNECT head yields method, target, version, headers and raw bytes."""
        tr(self, CONNECT, CONNECT_EVENT)

    def test_noHeaders(self):
        """A head with a request line and no headers has an empty header tuple."""
        data = b"CONNECT [::1]:8443 HTTP/1.0\r\n\r\n"
        tr(self, data, HTTPRequestHead("CONNECT", "[::1]:8443", "HTTP/1.0", (), data))

    def test_absoluteForm(self):
        """A plain-HTTP forward request keeps its absolute-form target as sent."""
        data = head(b"GET http://example.com/a?b=c HTTP/1.1", b"Host: example.com")
        expected = HTTPRequestHead(
            "GET", "http://example.com/a?b=c", "HTTP/1.1", (("Host", "example.com"),), data
        )
        tr(self, data, expected)

    def test_bareLineFeeds(self):
        """A head whose lines end in bare LF parses like one ending in CRLF."""
        data = head(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443", eol=b"\n")
        expected = HTTPRequestHead(
            "CONNECT", "example.com:443", "HTTP/1.1", (("Host", "example.com:443"),), data
        )
        tr(self, data, expected)

    def test_bareLineFeedHeadBeforeCRLFData(self):
        """A bare-LF head ends at its own blank line even if CRLF CRLF follows later."""
        data = b"CONNECT a.example:1 HTTP/1.1\nHost: a.example:1\n\n"
        conn = HTTPServerConnection()
        conn.receiveData(data + b"GET / HTTP/1.1\r\n\r\n")
        event = conn.nextEvent()
        self.assertEqual(event.target, "a.example:1")
        self.assertEqual(event.headers, (("Host", "a.example:1"),))
        self.assertEqual(event.raw, data)
        self.assertEqual(conn.leftover(), b"GET / HTTP/1.1\r\n\r\n")

    def test_mixedLineEndings(self):
        """CRLF and bare-LF line ends may be mixed, the blank line included."""
        targets = []
        for data in (
            b"CONNECT a.example:1 HTTP/1.1\r\nHost: a.example:1\n\n",
            b"CONNECT a.example:1 HTTP/1.1\nHost: a.example:1\r\n\n",
            b"CONNECT a.example:1 HTTP/1.1\nHost: a.example:1\n\r\n",
        ):
            conn = HTTPServerConnection()
            conn.receiveData(data)
            event = conn.nextEvent()
            self.assertIsNot(event, NEED_DATA, data)
            targets.append((event.target, event.header("host"), event.raw == data))
        self.assertEqual(targets, [("a.example:1", "a.example:1", True)] * 3)

    def test_rawIsHeadBytes(self):
        """raw holds exactly the head's bytes, terminator included, and no more."""
        conn = HTTPServerConnection()
        conn.receiveData(CONNECT + b"payload")
        event = conn.nextEvent()
        self.assertEqual(event.raw, CONNECT)
        self.assertTrue(event.raw.endswith(b"\r\n\r\n"))
        self.assertEqual(conn.leftover(), b"payload")

    def test_headSplitAcrossWrites(self):
        """A head split mid-terminator is awaited, then read, keeping what follows."""
        conn = HTTPServerConnection()
        conn.receiveData(CONNECT[:-3])
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(CONNECT[-3:-1])
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(CONNECT[-1:] + b"\x16\x03\x01")
        self.assertEqual(conn.nextEvent(), CONNECT_EVENT)
        self.assertEqual(conn.leftover(), b"\x16\x03\x01")





class SharedPlumbingTests(SingleRequestCodecTestsMixin, SynchronousTestCase):
    """The buffer plumbing shared with the other single-request codecs."""

    codecFactory = HTTPServerConnection
    message = CONNECT
    requestState = "request head"


class HeaderTests(SynchronousTestCase):
    """The header block and L{HTTPRequestHead.header}."""

    def parse(self, *headerLines):
        """Parse a CONNECT head with C{headerLines} and return the event."""
        conn = HTTPServerConnection()
        conn.receiveData(head(b"CONNECT h.example:1 HTTP/1.1", *headerLines))
        return conn.nextEvent()

    def test_caseInsensitiveLookup(self):
        """header() finds a header whatever the case of the name asked for or sent."""
        event = self.parse(b"pRoXy-AuThOrIzAtIoN: Basic abc")
        self.assertEqual(
            [event.header(n) for n in ("Proxy-Authorization", "proxy-authorization")],
            ["Basic abc", "Basic abc"],
        )
        self.assertEqual(event.headers, (("pRoXy-AuThOrIzAtIoN", "Basic abc"),))

    def test_missingHeader(self):
        """header() returns None for a header that was not sent."""
        self.assertIsNone(self.parse(b"Host: h.example:1").header("Proxy-Authorization"))

    def test_duplicatesKeepOrder(self):
        """Repeated headers all appear, in the order sent; header() gives the first."""
        event = self.parse(b"X-A: 1", b"Via: one", b"x-a: 2", b"X-A: 3")
        self.assertEqual(
            event.headers, (("X-A", "1"), ("Via", "one"), ("x-a", "2"), ("X-A", "3"))
        )
        self.assertEqual(event.header("x-a"), "1")

    def test_valueWhitespaceStripped(self):
        """Spaces and tabs around a value are dropped; inner ones and empty values stay."""
        event = self.parse(b"User-Agent: \t curl/8.5  x \t", b"X-Empty:", b"X-Tight:v")
        self.assertEqual(
            event.headers,
            (("User-Agent", "curl/8.5  x"), ("X-Empty", ""), ("X-Tight", "v")),
        )

    def test_maxHeaders(self):
        """Exactly MAX_HEADERS header lines are accepted."""
        lines = [b"X-%d: %d" % (i, i) for i in range(MAX_HEADERS)]
        self.assertEqual(len(self.parse(*lines).headers), MAX_HEADERS)

    def test_tooManyHeaders(self):
        """One header line more than MAX_HEADERS is refused with 431."""
        lines = [b"X-%d: %d" % (i, i) for i in range(MAX_HEADERS + 1)]
        e = parseError(self, head(b"CONNECT h.example:1 HTTP/1.1", *lines))
        assertStatus(self, e, 431)


class SizeCapTests(SynchronousTestCase):
    """The head is capped at MAX_HEAD bytes, and the whole buffer too."""

    def test_limits(self):
        """The head is capped at 16 KiB and 100 header lines."""
        self.assertEqual((MAX_HEAD, MAX_HEADERS), (16 * 1024, 100))

    def headOfSize(self, size, eol=b"\r\n"):
        """Return a valid head of exactly C{size} bytes, padded in one header."""
        start = b"CONNECT h.example:1 HTTP/1.1" + eol + b"X-Pad: "
        end = eol + eol
        return start + b"p" * (size - len(start) - len(end)) + end

    def test_headOfMaxSize(self):
        """A head of exactly MAX_HEAD bytes, terminator included, is accepted."""
        for eol in (b"\r\n", b"\n"):
            data = self.headOfSize(MAX_HEAD, eol)
            self.assertEqual(len(data), MAX_HEAD)
            conn = HTTPServerConnection()
            conn.receiveData(data + b"after")
            self.assertEqual(conn.nextEvent().raw, data)
            self.assertEqual(conn.leftover(), b"after")

    def test_headOverMaxSize(self):
        """A head one byte over MAX_HEAD is refused with 431, even with its terminator."""
        for eol in (b"\r\n", b"\n"):
            assertStatus(self, parseError(self, self.headOfSize(MAX_HEAD + 1, eol)), 431)

    def test_noTerminator(self):
        """MAX_HEAD bytes with no blank line are refused with 431."""
        e = parseError(self, b"CONNECT h.example:1 HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)
        assertStatus(self, e, 431)
        e = parseError(self, b"G" * MAX_HEAD)
        self.assertTrue(e.response.startswith(b"HTTP/1.1 431"))

    def test_refusedAtMaxHead(self):
        """An unterminated head waits until MAX_HEAD bytes, and is refused right then."""
        conn = HTTPServerConnection()
        conn.receiveData(b"CONNECT h.example:1 HTTP/1.1\r\nX: ")
        conn.receiveData(b"a" * (MAX_HEAD - 1 - conn.buffered))
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"a")
        assertStatus(self, self.assertRaises(ProtocolError, conn.nextEvent), 431)

    def test_bufferCap(self):
        """The buffer holds MAX_HEAD plus maxEarlyData bytes; one more is a 431."""
        conn = HTTPServerConnection(maxEarlyData=10)
        conn.receiveData(CONNECT)
        conn.receiveData(b"x" * (MAX_HEAD + 10 - len(CONNECT)))
        e = self.assertRaises(ProtocolError, conn.receiveData, b"x")
        assertStatus(self, e, 431)

    def test_bufferCapOneCall(self):
        """Data over the cap in a single call is refused before any parsing."""
        conn = HTTPServerConnection(maxEarlyData=0)
        e = self.assertRaises(ProtocolError, conn.receiveData, CONNECT + b"x" * MAX_HEAD)
        assertStatus(self, e, 431)

    def test_closedAfterCap(self):
        """After the cap is hit, events stop and further data is ignored."""
        conn = HTTPServerConnection(maxEarlyData=0)
        self.assertRaises(ProtocolError, conn.receiveData, CONNECT + b"x" * MAX_HEAD)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"x" * (2 * MAX_HEAD))
        self.assertIs(conn.nextEvent(), NEED_DATA)


class MalformedTests(SynchronousTestCase):
    """Malformed request and header lines are refused with 400."""

    def assertBadRequest(self, data):
        """Assert that head C{data} raises ProtocolError with a 400 response."""
        assertStatus(self, parseError(self, data), 400)

    def test_missingVersion(self):
        """A request line without a version is refused with 400."""
        self.assertBadRequest(b"CONNECT example.com:443\r\n\r\n")

    def test_unsupportedVersion(self):
        """Versions other than HTTP/1.0 and HTTP/1.1 are refused with 400."""
        for version in (b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"http/1.1", b"HTTP/1.1x"):
            self.assertBadRequest(b"CONNECT example.com:443 " + version + b"\r\n\r\n")

    def test_badMethodToken(self):
        """A method that is not an HTTP token is refused with 400."""
        for method in (b"CON(NECT", b"GE\"T", b"G\x80T", b""):
            self.assertBadRequest(method + b" example.com:443 HTTP/1.1\r\n\r\n")

    def test_extraSpaces(self):
        """Doubled, leading or trailing spaces in the request line are refused with 400."""
        for line in (
            b"CONNECT  example.com:443 HTTP/1.1",
            b"CONNECT example.com:443  HTTP/1.1",
            b" CONNECT example.com:443 HTTP/1.1",
            b"CONNECT example.com:443 HTTP/1.1 ",
            b"CONNECT example.com :443 HTTP/1.1",
        ):
            self.assertBadRequest(line + b"\r\n\r\n")

    def test_emptyTarget(self):
        """A request line with an empty target is refused with 400."""
        self.assertBadRequest(b"CONNECT  HTTP/1.1\r\n\r\n")

    def test_emptyHead(self):
        """A blank line where the request line should be is refused with 400."""
        self.assertBadRequest(b"\r\n\r\n")

    def test_headerWithoutColon(self):
        """A header line without a colon is refused with 400."""
        self.assertBadRequest(head(b"CONNECT h.example:1 HTTP/1.1", b"Host h.example"))

    def test_spaceBeforeColon(self):
        """Whitespace between a header name and its colon is refused with 400."""
        for line in (b"Host : h.example", b"Host\t: h.example"):
            self.assertBadRequest(head(b"CONNECT h.example:1 HTTP/1.1", line))

    def test_badHeaderName(self):
        """Empty names, names with separators, and folded lines are refused with 400."""
        for line in (b": value", b"X(Y): v", b" folded", b"\tfolded"):
            self.assertBadRequest(head(b"CONNECT h.example:1 HTTP/1.1", b"Host: h", line))

    def test_bareCR(self):
        """
        A bare CR (one not followed by LF) in the request line or a header
        is refused with 400: it is neither a line end nor part of a field
        (RFC 9112 section 2.2), and an origin might split on it.
        """
        for data in (
            b"GET http://h.example/\r HTTP/1.1\r\n\r\n",
            head(b"GET http://h.example/ HTTP/1.1", b"X: a\rInjected: 1"),
            b"GET http://h.example/ HTTP/1.1\nX: a\r\r\n\n",
        ):
            self.assertBadRequest(data)

    def test_errorClosesConnection(self):
        """After a ProtocolError nothing more is parsed, even a valid head."""
        conn = HTTPServerConnection()
        conn.receiveData(b"CONNECT x HTTP/9\r\n\r\n")
        self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(CONNECT)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        self.assertRaises(RuntimeError, conn.leftover)


class ParseAuthorityTests(SynchronousTestCase):
    """L{parseAuthority}: the C{host:port} or C{[v6]:port} of a CONNECT."""

    def test_hostAndPort(self):
        """A name or IPv4 address and a port are split at the colon."""
        self.assertEqual(parseAuthority("example.com:443"), ("example.com", 443))
        self.assertEqual(parseAuthority("192.0.2.1:1"), ("192.0.2.1", 1))
        self.assertEqual(parseAuthority("h:65535"), ("h", 65535))

    def test_bracketedIPv6(self):
        """A bracketed IPv6 address comes out without its brackets."""
        self.assertEqual(parseAuthority("[::1]:443"), ("::1", 443))
        self.assertEqual(parseAuthority("[2001:db8::1]:8080"), ("2001:db8::1", 8080))

    def test_invalid(self):
        """Targets without a usable host and port raise ProtocolError with a 400."""
        for target in (
            "example.com", "example.com:", "example.com:0", "example.com:65536",
            "example.com:http", "example.com:-1", "example.com: 80", "example.com:+80",
            "::1:443", "2001:db8::1", ":443", "[]:443", "[::1]", "[::1]443", "[::1:443",
            "",
        ):
            e = self.assertRaises(ProtocolError, parseAuthority, target)
            assertStatus(self, e, 400)

    def test_nonASCIIDigits(self):
        """Ports written with non-ASCII digits raise ProtocolError with a 400."""
        # U+00B2 can arrive from the wire: the target is decoded as Latin-1.
        for target in ("example.com:\u00b2", "example.com:8\u00b9", "example.com:\uff18\uff10"):
            e = self.assertRaises(ProtocolError, parseAuthority, target)
            assertStatus(self, e, 400)

    def test_nonASCIIDigitsFromTheWire(self):
        """A CONNECT whose port byte is Latin-1 superscript two is refused with 400."""
        conn = HTTPServerConnection()
        conn.receiveData(b"CONNECT example.com:\xb2 HTTP/1.1\r\n\r\n")
        event = conn.nextEvent()
        e = self.assertRaises(ProtocolError, parseAuthority, event.target)
        assertStatus(self, e, 400)


class BasicCredentialsTests(SynchronousTestCase):
    """L{parseBasicCredentials} on C{Proxy-Authorization} values."""

    def basic(self, raw):
        """Return a Basic header value carrying C{raw} base64-encoded."""
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def test_valid(self):
        """A Basic value gives the user and password as bytes."""
        self.assertEqual(parseBasicCredentials("Basic dXNlcjpwYXNz"), (b"user", b"pass"))

    def test_passwordWithColons(self):
        """The user ends at the first colon; the password keeps the others."""
        self.assertEqual(
            parseBasicCredentials(self.basic(b"alice:p:a:ss:")), (b"alice", b"p:a:ss:")
        )

    def test_emptyParts(self):
        """An empty user or password is parsed, not rejected."""
        self.assertEqual(parseBasicCredentials(self.basic(b":")), (b"", b""))
        self.assertEqual(parseBasicCredentials(self.basic(b"u:")), (b"u", b""))

    def test_schemeCaseAndSpaces(self):
        """The scheme is case-insensitive and extra spaces around the parts are ignored."""
        self.assertEqual(parseBasicCredentials("basic dXNlcjpwYXNz"), (b"user", b"pass"))
        self.assertEqual(parseBasicCredentials("BASIC  dXNlcjpwYXNz "), (b"user", b"pass"))

    def test_nonUTF8Bytes(self):
        """Credentials are returned as the bytes sent, whatever their encoding."""
        value = self.basic("jürgen:paß".encode("latin-1"))
        self.assertEqual(parseBasicCredentials(value), (b"j\xfcrgen", b"pa\xdf"))

    def test_otherScheme(self):
        """A scheme other than Basic gives None."""
        for value in ("Bearer dXNlcjpwYXNz", "Digest username=\"u\"", "dXNlcjpwYXNz"):
            self.assertIsNone(parseBasicCredentials(value))

    def test_badBase64(self):
        """A value that is not valid base64 gives None."""
        for value in ("Basic !!!!", "Basic dXNlcjpwYXNz!", "Basic dXNlcjpwYX", "Basic d X"):
            self.assertIsNone(parseBasicCredentials(value))

    def test_missingColon(self):
        """Decoded credentials without a colon give None."""
        self.assertIsNone(parseBasicCredentials(self.basic(b"userpass")))
        self.assertIsNone(parseBasicCredentials("Basic"))

    def test_absent(self):
        """None or an empty value gives None."""
        self.assertIsNone(parseBasicCredentials(None))
        self.assertIsNone(parseBasicCredentials(""))
        self.assertIsNone(parseBasicCredentials("   "))


class ResponseTests(SynchronousTestCase):
    """L{httpResponse} and L{badRequest}."""

    def split(self, response):
        """Return the status line, the header lines and the body of C{response}."""
        headBytes, sep, body = response.partition(b"\r\n\r\n")
        self.assertEqual(sep, b"\r\n\r\n")
        lines = headBytes.split(b"\r\n")
        return lines[0], lines[1:], body

    def test_lengthMatchesBody(self):
        """Content-Length counts the UTF-8 bytes of the body, which follows the head."""
        status, headers, body = self.split(httpResponse(502, "Bad Gateway", body="nö way\n"))
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(body, "nö way\n".encode())
        self.assertIn(b"Content-Length: %d" % (len(body),), headers)
        self.assertEqual(len(body), 8)

    def test_connectionClose(self):
        """By default the response says Connection: close, with Content-Length 0 if no body."""
        _, headers, body = self.split(httpResponse(403, "Forbidden"))
        self.assertIn(b"Connection: close", headers)
        self.assertIn(b"Content-Length: 0", headers)
        self.assertEqual(body, b"")

    def test_crlfOnly(self):
        """Every line of the head ends in CRLF, and no bare LF appears in it."""
        response = httpResponse(
            407, "Proxy Authentication Required",
            headers=(("Proxy-Authenticate", 'Basic realm="socksrelay"'),),
            body="who are you?",
        )
        headBytes = response[: response.index(b"\r\n\r\n") + 4]
        self.assertEqual(headBytes.count(b"\n"), headBytes.count(b"\r\n"))
        self.assertEqual(headBytes.count(b"\r"), headBytes.count(b"\r\n"))
        self.assertTrue(response.endswith(b"\r\n\r\nwho are you?"))

    def test_extraHeadersInOrder(self):
        """Extra headers follow the status line in the order given."""
        _, headers, _ = self.split(
            httpResponse(407, "Proxy Authentication Required",
                         headers=(("Proxy-Authenticate", "Basic realm=\"r\""), ("X-A", "b")))
        )
        self.assertEqual(headers[:2], [b'Proxy-Authenticate: Basic realm="r"', b"X-A: b"])

    def test_keepOpenWithoutBody(self):
        """With close=False and no body, neither Connection nor Content-Length is sent."""
        self.assertEqual(
            httpResponse(200, "Connection established", close=False),
            b"HTTP/1.1 200 Connection established\r\n\r\n",
        )

    def test_badRequest(self):
        """badRequest gives a ProtocolError whose response carries the status and message."""
        e = badRequest("no such thing")
        self.assertIsInstance(e, ProtocolError)
        self.assertEqual(e.message, "no such thing")
        status, headers, body = self.split(e.response)
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
        self.assertEqual(body, b"no such thing\n")
        self.assertIn(b"Connection: close", headers)
        e = badRequest("big", 431, "Request Header Fields Too Large")
        self.assertTrue(e.response.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"))


class LooksLikeHTTPTests(SynchronousTestCase):
    """L{looksLikeHTTP} tells an HTTP method's first byte from SOCKS versions."""

    def test_methods(self):
        """The first bytes of GET, CONNECT and other methods look like HTTP."""
        for method in (b"GET", b"CONNECT", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"DELETE"):
            self.assertTrue(looksLikeHTTP(method[0]), method)
        self.assertTrue(looksLikeHTTP(b"A"[0]))
        self.assertTrue(looksLikeHTTP(b"Z"[0]))

    def test_socksVersions(self):
        """The SOCKS5 and SOCKS4 version bytes do not look like HTTP."""
        self.assertFalse(looksLikeHTTP(0x05))
        self.assertFalse(looksLikeHTTP(0x04))

    def test_others(self):
        """Lowercase letters, digits, TLS and the bytes next to A-Z do not look like HTTP."""
        for byte in (b"g"[0], b"c"[0], b"a"[0], b"z"[0], 0x40, 0x5B, 0x30, 0x16, 0x00, 0xFF):
            self.assertFalse(looksLikeHTTP(byte), hex(byte))


class CanonicalAuthorityTests(SynchronousTestCase):
    """
    L{parseAuthority} gives the host in its one canonical form, and refuses
    a host that has none with 400 at once.
    """

    def targetFromTheWire(self, target: bytes) -> str:
        conn = HTTPServerConnection()
        conn.receiveData(b"CONNECT " + target + b" HTTP/1.1\r\n\r\n")
        return conn.nextEvent().target

    def test_confusablesFromTheWire(self):
        """
        UTF-8 fullwidth letters, U+00AD, U+200B and U+3002 in a CONNECT
        target (read as Latin-1, like the whole head) all give the same
        name, lower case and without a trailing dot.
        """
        for name in (
            "\uff44\uff45\uff4e\uff49\uff45\uff44.test",
            "den\u00adied.test",
            "den\u200bied.test",
            "denied\u3002test",
            "DENIED.test.",
        ):
            target = self.targetFromTheWire(name.encode("utf-8") + b":443")
            self.assertEqual(parseAuthority(target), ("denied.test", 443), name)

    def test_uLabel(self):
        """A UTF-8 U-label comes out as its A-label."""
        target = self.targetFromTheWire("bücher.test:80".encode("utf-8"))
        self.assertEqual(parseAuthority(target), ("xn--bcher-kva.test", 80))

    def test_badNames(self):
        """
        An empty label, a label over 63 bytes, a name over 253 bytes, a
        character no host name has, or bytes that are not UTF-8 (a Latin-1
        soft hyphen) get 400.
        """
        for target in (
            b"a..b.test:443",
            b"a" * 64 + b".test:443",
            b".".join([b"a" * 63] * 4) + b":443",
            b"%64enied.test:443",
            b"den\xadied.test:443",
        ):
            e = self.assertRaises(
                ProtocolError, parseAuthority, self.targetFromTheWire(target)
            )
            assertStatus(self, e, 400)

    def test_bracketedName(self):
        """Brackets hold an IP address, never a name."""
        e = self.assertRaises(ProtocolError, parseAuthority, "[denied.test]:443")
        assertStatus(self, e, 400)
