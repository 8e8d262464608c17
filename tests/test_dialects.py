# -*- test-case-name: tests.test_dialects -*-
"""
Tests for L{socksrelay.dialects}: how an outcome decided in SOCKS5's terms is
framed for a SOCKS5, SOCKS4 or HTTP client, and the code text each answer
gives the session log.

Expected bytes are written out here, independently of the encoders.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socksrelay.dialects import (
    HTTP_REALM,
    HTTPDialect,
    SOCKS4Dialect,
    SOCKS5Dialect,
    proxyAuthenticationRequired,
)
from socksrelay.wire import Reply


def parseHTTPResponse(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """
    Split one HTTP response into its status line, its headers (names lower
    case, in order) and its body, checking that C{Content-Length} matches the
    body.
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise AssertionError(f"no end of head in {data!r}")
    statusLine, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise AssertionError(f"malformed header line {line!r}")
        headers.append((name.strip().lower(), value.strip()))
    lengths = [int(v) for n, v in headers if n == b"content-length"]
    if lengths != [len(body)]:
        raise AssertionError(f"Content-Length {lengths} for body {body!r}")
    return statusLine, headers, body


class SOCKS5DialectTests(SynchronousTestCase):
    """
    L{SOCKS5Dialect} answers with RFC 1928 replies and shows them as C{0xNN}.
    """

    def test_name(self) -> None:
        """
        The dialect is called C{socks5}.
        """
        self.assertEqual(SOCKS5Dialect().name, "socks5")

    def test_successIPv4(self) -> None:
        """
        Success carries BND.ADDR (ATYP 1) and BND.PORT, shown as C{0x00}.
        """
        data, text = SOCKS5Dialect().success("10.0.0.5", 51000)
        self.assertEqual(data, b"\x05\x00\x00\x01\x0a\x00\x00\x05\xc7\x38")
        self.assertEqual(text, "0x00")

    def test_successIPv6(self) -> None:
        """
        An IPv6 BND.ADDR is sent with ATYP 4.
        """
        data, _ = SOCKS5Dialect().success("::1", 22)
        self.assertEqual(data, b"\x05\x00\x00\x04" + b"\x00" * 15 + b"\x01\x00\x16")

    def test_failure(self) -> None:
        """
        Each failure is its reply code with an all-zero IPv4 address and
        port, shown as C{0xNN}.
        """
        for reply in Reply:
            if reply is Reply.SUCCEEDED:
                continue
            data, text = SOCKS5Dialect().failure(reply, "some reason")
            self.assertEqual(data, bytes([5, int(reply), 0, 1, 0, 0, 0, 0, 0, 0]))
            self.assertEqual(text, f"0x{int(reply):02x}")


class SOCKS4DialectTests(SynchronousTestCase):
    """
    L{SOCKS4Dialect} answers with C{VN=0 CD DSTPORT DSTIP}: CD 90 for
    success, 91 for every failure.
    """

    def test_names(self) -> None:
        """
        The dialect is called C{socks4}, or C{socks4a} for a 4a request.
        """
        self.assertEqual(SOCKS4Dialect().name, "socks4")
        self.assertEqual(SOCKS4Dialect(socks4a=False).name, "socks4")
        self.assertEqual(SOCKS4Dialect(socks4a=True).name, "socks4a")

    def test_success(self) -> None:
        """
        Success is CD 90 with the port, then the IPv4 address, shown as
        C{90}.
        """
        data, text = SOCKS4Dialect().success("10.0.0.5", 51000)
        self.assertEqual(data, b"\x00\x5a\xc7\x38\x0a\x00\x00\x05")
        self.assertEqual(text, "90")

    def test_successIPv4Mapped(self) -> None:
        """
        An IPv4-mapped IPv6 address is sent as the plain IPv4 address.
        """
        data, _ = SOCKS4Dialect().success("::ffff:10.0.0.5", 80)
        self.assertEqual(data, b"\x00\x5a\x00\x50\x0a\x00\x00\x05")

    def test_successIPv6(self) -> None:
        """
        SOCKS4 cannot carry an IPv6 address: it is sent as 0.0.0.0, the port
        is kept.
        """
        data, _ = SOCKS4Dialect().success("2001:db8::1", 443)
        self.assertEqual(data, b"\x00\x5a\x01\xbb\x00\x00\x00\x00")

    def test_successWithoutAddress(self) -> None:
        """
        Success without an address carries 0.0.0.0.
        """
        data, _ = SOCKS4Dialect(socks4a=True).success(None, 1080)
        self.assertEqual(data, b"\x00\x5a\x04\x38\x00\x00\x00\x00")

    def test_failure(self) -> None:
        """
        Every failure, whatever its SOCKS5 reply code, is CD 91 with a zero
        port and address, shown as C{91}.
        """
        for reply in Reply:
            if reply is Reply.SUCCEEDED:
                continue
            data, text = SOCKS4Dialect().failure(reply, "some reason")
            self.assertEqual(data, b"\x00\x5b\x00\x00\x00\x00\x00\x00")
            self.assertEqual(text, "91")


class HTTPDialectTests(SynchronousTestCase):
    """
    L{HTTPDialect} answers CONNECT with HTTP status lines.
    """

    def test_name(self) -> None:
        """
        The dialect is called C{http}.
        """
        self.assertEqual(HTTPDialect().name, "http")

    def test_success(self) -> None:
        """
        Success is exactly C{200 Connection established} and an empty header
        block (anything more would be taken for tunnel data), shown as
        C{200}.
        """
        data, text = HTTPDialect().success("10.0.0.5", 51000)
        self.assertEqual(data, b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(text, "200")

    def assertFailure(self, reply: Reply, status: bytes) -> bytes:
        """
        C{reply} is answered with C{status}, a body naming the reason, and
        C{Connection: close}; its code text is the status code.

        @return: the body.
        """
        data, text = HTTPDialect().failure(reply, "the reason")
        statusLine, headers, body = parseHTTPResponse(data)
        self.assertEqual(statusLine, b"HTTP/1.1 " + status)
        self.assertEqual(text, status[:3].decode("ascii"))
        self.assertIn((b"connection", b"close"), headers)
        self.assertIn((b"content-type", b"text/plain; charset=utf-8"), headers)
        self.assertIn(b"the reason", body)
        return body

    def test_notAllowed(self) -> None:
        """
        A destination refused by the rules (C{NOT_ALLOWED}) is 403.
        """
        body = self.assertFailure(Reply.NOT_ALLOWED, b"403 Forbidden")
        self.assertEqual(body, b"Forbidden: the reason\n")

    def test_timedOut(self) -> None:
        """
        A connection that timed out (C{TTL_EXPIRED}) is 504.
        """
        self.assertFailure(Reply.TTL_EXPIRED, b"504 Gateway Timeout")

    def test_commandNotSupported(self) -> None:
        """
        C{COMMAND_NOT_SUPPORTED} is 405 Method Not Allowed.
        """
        self.assertFailure(Reply.COMMAND_NOT_SUPPORTED, b"405 Method Not Allowed")

    def test_otherFailures(self) -> None:
        """
        Every other failure (refused, unreachable, general...) is 502.
        """
        others = set(Reply) - {
            Reply.SUCCEEDED,
            Reply.NOT_ALLOWED,
            Reply.TTL_EXPIRED,
            Reply.COMMAND_NOT_SUPPORTED,
        }
        self.assertEqual(len(others), 5)
        for reply in sorted(others):
            body = self.assertFailure(reply, b"502 Bad Gateway")
            self.assertEqual(body, b"Bad Gateway: the reason\n")


class ProxyAuthenticationRequiredTests(SynchronousTestCase):
    """
    L{proxyAuthenticationRequired} asks an HTTP client for Basic
    credentials.
    """

    def test_response(self) -> None:
        """
        The answer is a 407 with C{Proxy-Authenticate: Basic} naming the
        realm, a body naming the reason, and C{Connection: close}.
        """
        statusLine, headers, body = parseHTTPResponse(
            proxyAuthenticationRequired("credentials required")
        )
        self.assertEqual(statusLine, b"HTTP/1.1 407 Proxy Authentication Required")
        self.assertIn((b"proxy-authenticate", b'Basic realm="socksrelay"'), headers)
        self.assertIn((b"connection", b"close"), headers)
        self.assertEqual(body, b"Proxy Authentication Required: credentials required\n")

    def test_realmConstant(self) -> None:
        """
        The realm in the header is L{HTTP_REALM}.
        """
        _, headers, _ = parseHTTPResponse(proxyAuthenticationRequired("x"))
        [value] = [v for n, v in headers if n == b"proxy-authenticate"]
        self.assertEqual(value, b'Basic realm="' + HTTP_REALM.encode("ascii") + b'"')


class LimitedTests(SynchronousTestCase):
    """
    Each dialect's answer to a client refused by a limit.
    """

    def test_socks5BeforeGreeting(self) -> None:
        """
        Before the greeting is answered, SOCKS5 refuses with no acceptable
        method, C{05 FF}.
        """
        self.assertEqual(SOCKS5Dialect().limited(False, True), (b"\x05\xff", "0xff"))
        self.assertEqual(SOCKS5Dialect().limited(True, True), (b"\x05\xff", "0xff"))

    def test_socks5AfterGreeting(self) -> None:
        """
        After the greeting, SOCKS5 refuses with reply 0x01.
        """
        data, text = SOCKS5Dialect().limited(False, False)
        self.assertEqual(data, b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00")
        self.assertEqual(text, "0x01")

    def test_socks4(self) -> None:
        """
        SOCKS4 refuses with CD 91 in every case.
        """
        for rateLimited in (False, True):
            for beforeGreeting in (False, True):
                self.assertEqual(
                    SOCKS4Dialect().limited(rateLimited, beforeGreeting),
                    (b"\x00\x5b\x00\x00\x00\x00\x00\x00", "91"),
                )

    def test_httpRate(self) -> None:
        """
        HTTP answers a rate limit with 429.
        """
        data, text = HTTPDialect().limited(True, True)
        statusLine, headers, body = parseHTTPResponse(data)
        self.assertEqual(statusLine, b"HTTP/1.1 429 Too Many Requests")
        self.assertIn((b"connection", b"close"), headers)
        self.assertEqual(body, b"Too Many Requests\n")
        self.assertEqual(text, "429")

    def test_httpOtherLimits(self) -> None:
        """
        HTTP answers any other limit with 503.
        """
        data, text = HTTPDialect().limited(False, True)
        statusLine, _, body = parseHTTPResponse(data)
        self.assertEqual(statusLine, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(body, b"Service Unavailable\n")
        self.assertEqual(text, "503")
