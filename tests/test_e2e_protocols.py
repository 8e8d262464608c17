# -*- test-case-name: tests.test_e2e_protocols -*-
"""
End-to-end tests for the protocols served beside SOCKS5 on the same port:
SOCKS4, SOCKS4a and HTTP (CONNECT tunnels and plain-HTTP forwarding), told
apart by the connection's first byte.

The proxy is a real C{twistd socks5} process; clients are curl, ncat,
Python's urllib and raw sockets; destinations are loopback servers in
threads of the test process.

Run with: python -m pytest tests/test_e2e_protocols.py -q
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request
from unittest import mock

from tests.e2e import (
    CD_GRANTED,
    CD_REJECTED,
    LISTENING_RE,
    LOOPBACK_V4,
    REP_SUCCEEDED,
    REPO_ROOT,
    SOCKS4_BIND,
    SOCKS4_CONNECT,
    SOCKS4A_MARKER,
    EchoServer,
    HTTPTarget,
    LoopbackTCPServer,
    ProxyTestCase,
    SOCKS4Reply,
    basicCredentials,
    cleanEnvironment,
    closedPort,
    connectTCP,
    encodeSOCKS4Request,
    readHTTPResponse,
    readSOCKS4Reply,
    recvExactly,
    recvUntilClosed,
    recvUntilEOF,
    runCurl,
    runNcat,
    socks5Connect,
    twistdPath,
)

USERNAME = "alice"
PASSWORD = "s3cret"
WRONG_PASSWORD = "wr0ng-Pa55"
AUTH_ARGS = ("--auth", f"memory:{USERNAME}:{PASSWORD}")
#: What must never appear in a log: the password, and the Basic token
#: that carries it.
SECRETS = (PASSWORD, basicCredentials(USERNAME, PASSWORD).split()[1])

HTTP_BODY = b"socksrelay protocols e2e body: pack my box with five dozen liquor jugs\n"
ORIGIN_BODY = b"recorded by the origin\n"

#: The start of a TLS ClientHello: none of SOCKS5, SOCKS4 or HTTP.
TLS_CLIENT_HELLO = (
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"
    + bytes(range(32))
    + b"\x00\x00\x04\x13\x01\x13\x02\x01\x00"
)

#: Seconds to watch for bytes that must not come.
QUIET = 0.3


class RecordingOrigin(LoopbackTCPServer):
    """
    An HTTP origin that reports the head of every request it gets (the
    request line and the C{(name, value)} header pairs, as received) and
    answers 200 with L{ORIGIN_BODY}, adding hop-by-hop headers of its own
    (C{Connection: close, X-Origin-Secret}, C{X-Origin-Secret},
    C{Keep-Alive}) and an end-to-end one (C{X-Origin-Keep}).
    """

    def handle(self, conn: socket.socket) -> None:
        head = bytearray()
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                return
            head += data
            if len(head) > 64 * 1024:
                raise AssertionError("request head over 64 KiB")
        lines = bytes(head).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        self.results.put((lines[0], headers))
        conn.sendall(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close, X-Origin-Secret\r\n"
            b"X-Origin-Secret: 1\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"X-Origin-Keep: 1\r\n"
            b"\r\n" % len(ORIGIN_BODY)
            + ORIGIN_BODY
        )


def headerNames(headers: list[tuple[str, str]]) -> set[str]:
    return {name.lower() for name, _ in headers}


def headerValue(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


class ProtocolTestCase(ProxyTestCase):
    """
    L{ProxyTestCase} with helpers for SOCKS4 and HTTP clients; passwords and
    Basic tokens must never be logged.
    """

    secrets = SECRETS

    def rawSocket(self, timeout: float = 10.0) -> socket.socket:
        """
        A TCP connection to the proxy, closed at cleanup; TCP_NODELAY so that
        every C{send} goes out as its own segment.
        """
        sock = connectTCP(LOOPBACK_V4, self.proxy.port, timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addCleanup(sock.close)
        return sock

    def sessionLine(
        self, protocol: str, rest: str = "", clientPort: int | None = None,
        since: int = 0, timeout: float = 10.0,
    ) -> str:
        """
        Wait for the end-of-session line of protocol C{protocol} (of the
        client on C{clientPort} when given) whose remainder matches the
        regular expression C{rest}; the line.
        """
        client = rf"127\.0\.0\.1:{clientPort}" if clientPort else r"\S+"
        pattern = rf"session ended: protocol={protocol} client={client} .*{rest}"
        return self.proxy.waitForLine(pattern, timeout, since=since).string

    def assertQuiet(self, sock: socket.socket, what: str) -> None:
        """
        Nothing arrives on C{sock} within L{QUIET} seconds.
        """
        sock.settimeout(QUIET)
        try:
            data = sock.recv(1)
        except TimeoutError:
            return
        finally:
            sock.settimeout(10.0)
        self.fail(f"{what}: got {data!r}")

    def assertClosedSilently(self, sock: socket.socket) -> None:
        """
        The proxy closes C{sock} without sending a byte.
        """
        self.assertEqual(recvUntilClosed(sock, 10.0), b"")

    def assertEcho(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(payload)
        self.assertEqual(recvExactly(sock, len(payload)), payload)

    def assertCurlFetches(self, *args: str, body: bytes = HTTP_BODY) -> None:
        result = runCurl(*args)
        self.assertEqual(
            result.returncode, 0,
            f"curl {args} failed: {result.stderr!r}\nproxy log:\n" + self.proxy.text(),
        )
        self.assertEqual(result.stdout, body)

    def socks4(
        self, host: str, port: int, command: int = SOCKS4_CONNECT,
        userid: bytes = b"",
    ) -> tuple[socket.socket, SOCKS4Reply]:
        """
        Send a SOCKS4 (IPv4 C{host}) or 4a (a name) request; the socket and
        the reply.
        """
        sock = self.rawSocket()
        sock.sendall(encodeSOCKS4Request(host, port, command, userid))
        return sock, readSOCKS4Reply(sock)

    def connectHead(self, host: str, port: int, *headers: str) -> bytes:
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------------------
# Without --auth
# --------------------------------------------------------------------------


class NoAuthTests(ProtocolTestCase):
    """
    A proxy without C{--auth}, serving all three protocols (the default).
    """

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())
        cls.http = cls.startTarget(HTTPTarget(HTTP_BODY))
        cls.origin = cls.startTarget(RecordingOrigin())

    # -- curl ---------------------------------------------------------------

    def test_curlSocks4(self) -> None:
        """
        curl --socks4 (the client resolves; SOCKS4 carries the IPv4 address)
        fetches the page, with and without --proxy-user (sent as USERID), and
        the session line says protocol=socks4.
        """
        for extra in ((), ("--proxy-user", f"{USERNAME}:{PASSWORD}")):
            with self.subTest(extra=extra):
                mark = self.proxy.mark()
                self.assertCurlFetches(
                    "--socks4", f"127.0.0.1:{self.proxy.port}", *extra, self.http.url()
                )
                line = self.sessionLine(
                    "socks4",
                    rf"command=CONNECT destination=127\.0\.0\.1:{self.http.port} .*reply=90 ",
                    since=mark,
                )
                if extra:
                    self.assertIn(f" userid={USERNAME} ", line)

    def test_curlSocks4a(self) -> None:
        """
        curl --socks4a sends the name 'localhost' (DSTIP 0.0.0.x), the proxy
        resolves it and the page is fetched, with and without --proxy-user;
        the session line says protocol=socks4a.
        """
        for extra in ((), ("--proxy-user", f"{USERNAME}:{PASSWORD}")):
            with self.subTest(extra=extra):
                mark = self.proxy.mark()
                self.assertCurlFetches(
                    "--socks4a", f"127.0.0.1:{self.proxy.port}", *extra,
                    self.http.url("localhost"),
                )
                self.assertEqual(self.http.requests[-1][1], f"localhost:{self.http.port}")
                line = self.sessionLine(
                    "socks4a",
                    rf"command=CONNECT destination=localhost:{self.http.port} .*reply=90 ",
                    since=mark,
                )
                if extra:
                    self.assertIn(f" userid={USERNAME} ", line)

    def test_curlHTTPForward(self) -> None:
        """
        curl -x http://proxy (plain forwarding: GET http://...) fetches the
        page, with and without --proxy-user; the session line says
        protocol=http command=HTTP.
        """
        for extra in ((), ("--proxy-user", f"{USERNAME}:{PASSWORD}")):
            with self.subTest(extra=extra):
                mark = self.proxy.mark()
                self.assertCurlFetches(
                    "-x", f"http://127.0.0.1:{self.proxy.port}", *extra,
                    self.http.url(path="/forwarded"),
                )
                self.assertEqual(
                    self.http.requests[-1], ("/forwarded", f"127.0.0.1:{self.http.port}")
                )
                self.sessionLine(
                    "http",
                    rf"command=HTTP destination=127\.0\.0\.1:{self.http.port} .*reply=200 .*requests=1 ",
                    since=mark,
                )

    def test_curlHTTPForwardDropsCredentials(self) -> None:
        """
        curl -x with --proxy-user against a proxy without --auth: the origin
        never sees the Proxy-Authorization header.
        """
        self.assertCurlFetches(
            "-x", f"http://127.0.0.1:{self.proxy.port}",
            "--proxy-user", f"{USERNAME}:{PASSWORD}",
            f"http://127.0.0.1:{self.origin.port}/creds",
            body=ORIGIN_BODY,
        )
        line, headers = self.origin.waitResult(10)
        self.assertRegex(line, r"^GET /creds HTTP/1\.[01]$")
        self.assertNotIn("proxy-authorization", headerNames(headers))

    def test_curlHTTPTunnel(self) -> None:
        """
        curl -p -x http://proxy (a CONNECT tunnel) fetches the page, with and
        without --proxy-user; the session line says protocol=http
        command=CONNECT reply=200.
        """
        for extra in ((), ("--proxy-user", f"{USERNAME}:{PASSWORD}")):
            with self.subTest(extra=extra):
                mark = self.proxy.mark()
                self.assertCurlFetches(
                    "-p", "-x", f"http://127.0.0.1:{self.proxy.port}", *extra,
                    self.http.url(path="/tunnelled"),
                )
                self.assertEqual(self.http.requests[-1][0], "/tunnelled")
                self.sessionLine(
                    "http",
                    rf"command=CONNECT destination=127\.0\.0\.1:{self.http.port} .*reply=200 ",
                    since=mark,
                )

    # -- ncat ---------------------------------------------------------------

    def test_ncatSocks4(self) -> None:
        """
        ncat --proxy-type socks4 sends a line through the proxy to the echo
        server and reads it back; ncat exits 0 once stdin ends and the echo
        server closes.
        """
        mark = self.proxy.mark()
        result = runNcat(
            "--proxy", f"127.0.0.1:{self.proxy.port}", "--proxy-type", "socks4",
            LOOPBACK_V4, str(self.echo.port), input=b"hello over socks4\n",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"hello over socks4\n")
        self.sessionLine(
            "socks4",
            rf"command=CONNECT destination=127\.0\.0\.1:{self.echo.port} .*reply=90 ",
            since=mark,
        )

    def test_ncatHTTP(self) -> None:
        """
        ncat --proxy-type http (CONNECT) sends a line through the proxy to
        the echo server and reads it back.
        """
        mark = self.proxy.mark()
        result = runNcat(
            "--proxy", f"127.0.0.1:{self.proxy.port}", "--proxy-type", "http",
            LOOPBACK_V4, str(self.echo.port), input=b"hello over http connect\n",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"hello over http connect\n")
        self.sessionLine(
            "http",
            rf"command=CONNECT destination=127\.0\.0\.1:{self.echo.port} .*reply=200 ",
            since=mark,
        )

    # -- urllib -------------------------------------------------------------

    def test_urllibProxyHandler(self) -> None:
        """
        urllib with ProxyHandler({'http': 'http://proxy'}) fetches the page
        through the proxy (the proxy logs the forwarded request).
        """
        mark = self.proxy.mark()
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{self.proxy.port}"})
        )
        with (
            mock.patch.dict(os.environ, cleanEnvironment(), clear=True),
            opener.open(self.http.url(path="/urllib"), timeout=10) as response,
        ):
            self.assertEqual(response.status, 200)
            self.assertEqual(response.read(), HTTP_BODY)
        self.assertEqual(self.http.requests[-1][0], "/urllib")
        self.sessionLine(
            "http", rf"command=HTTP destination=127\.0\.0\.1:{self.http.port} ", since=mark
        )

    # -- SOCKS4 with raw sockets --------------------------------------------

    def test_socks4Granted(self) -> None:
        """
        A SOCKS4 CONNECT to the echo server gets VN 0 CD 90, then data is
        relayed both ways and an EOF is passed on.
        """
        mark = self.proxy.mark()
        sock, reply = self.socks4(LOOPBACK_V4, self.echo.port)
        clientPort = sock.getsockname()[1]
        self.assertEqual((reply.vn, reply.cd), (0, CD_GRANTED), reply)
        self.assertEcho(sock, b"socks4 payload " * 100)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilEOF(sock, deadline=10), b"")
        sock.close()
        self.sessionLine(
            "socks4",
            rf"command=CONNECT destination=127\.0\.0\.1:{self.echo.port} .*reply=90 ",
            clientPort=clientPort, since=mark,
        )

    def test_socks4EarlyData(self) -> None:
        """
        Bytes sent in the same write as the SOCKS4 request reach the
        destination after the grant.
        """
        sock = self.rawSocket()
        sock.sendall(encodeSOCKS4Request(LOOPBACK_V4, self.echo.port) + b"early bytes")
        reply = readSOCKS4Reply(sock)
        self.assertEqual((reply.vn, reply.cd), (0, CD_GRANTED), reply)
        self.assertEqual(recvExactly(sock, 11), b"early bytes")

    def test_socks4Refused(self) -> None:
        """
        A SOCKS4 CONNECT to a closed port gets VN 0 CD 91, then the proxy
        closes; the log gives the reason.
        """
        mark = self.proxy.mark()
        port = closedPort()
        sock, reply = self.socks4(LOOPBACK_V4, port)
        clientPort = sock.getsockname()[1]
        self.assertEqual((reply.vn, reply.cd), (0, CD_REJECTED), reply)
        self.assertEqual(recvUntilClosed(sock), b"")
        self.sessionLine(
            "socks4", rf"destination=127\.0\.0\.1:{port} .*reply=91 .*reason=connection refused",
            clientPort=clientPort, since=mark,
        )

    def test_socks4UnknownCommand(self) -> None:
        """
        A SOCKS4 request with a command other than CONNECT (1) and BIND (2)
        gets CD 91 and is closed.
        """
        sock = self.rawSocket()
        sock.sendall(encodeSOCKS4Request(LOOPBACK_V4, self.echo.port, command=3))
        reply = readSOCKS4Reply(sock)
        self.assertEqual((reply.vn, reply.cd), (0, CD_REJECTED), reply)
        self.assertEqual(recvUntilClosed(sock), b"")

    def test_socks4aNameSplitAcrossWrites(self) -> None:
        """
        A SOCKS4a request whose host name (and its NUL) arrives in several
        writes is answered only once the second NUL is in; the name is
        resolved by the proxy, and bytes in the last write are relayed.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        request = encodeSOCKS4Request("localhost", self.echo.port, userid=b"split")
        nameStart = request.index(b"\x00", 8) + 1
        pieces = [request[:6], request[6:nameStart], request[nameStart:nameStart + 3],
                  request[nameStart + 3:-1]]
        for piece in pieces:
            sock.sendall(piece)
            self.assertQuiet(sock, "a reply before the SOCKS4a name was complete")
        sock.sendall(request[-1:] + b"after the name")
        reply = readSOCKS4Reply(sock)
        self.assertEqual((reply.vn, reply.cd), (0, CD_GRANTED), reply)
        self.assertEqual(recvExactly(sock, 14), b"after the name")
        self.assertEcho(sock, b"and more")
        sock.close()
        line = self.sessionLine(
            "socks4a",
            rf"command=CONNECT destination=localhost:{self.echo.port} .*reply=90 ",
            clientPort=clientPort, since=mark,
        )
        self.assertIn(" userid=split ", line)

    def test_socks4LongestUserid(self) -> None:
        """
        A USERID of exactly 255 bytes is accepted.
        """
        sock, reply = self.socks4(LOOPBACK_V4, self.echo.port, userid=b"u" * 255)
        self.assertEqual((reply.vn, reply.cd), (0, CD_GRANTED), reply)
        self.assertEcho(sock, b"long userid")

    def test_socks4OversizedUserid(self) -> None:
        """
        300 bytes of USERID without a NUL get CD 91 and the connection is
        closed; the log names the reason.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(encodeSOCKS4Request(LOOPBACK_V4, self.echo.port)[:8] + b"u" * 300)
        reply = readSOCKS4Reply(sock)
        self.assertEqual((reply.vn, reply.cd), (0, CD_REJECTED), reply)
        self.assertEqual(recvUntilClosed(sock), b"")
        self.sessionLine(
            "socks4", "reason=protocol error: USERID longer than 255 bytes",
            clientPort=clientPort, since=mark,
        )

    def test_socks4aOversizedName(self) -> None:
        """
        A SOCKS4a host name of 300 bytes without a NUL gets CD 91 and the
        connection is closed; the log names the reason.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(
            b"\x04\x01" + self.echo.port.to_bytes(2, "big") + SOCKS4A_MARKER
            + b"user\x00" + b"n" * 300
        )
        reply = readSOCKS4Reply(sock)
        self.assertEqual((reply.vn, reply.cd), (0, CD_REJECTED), reply)
        self.assertEqual(recvUntilClosed(sock), b"")
        self.sessionLine(
            "socks4", "reason=protocol error: host name longer than 255 bytes",
            clientPort=clientPort, since=mark,
        )

    def test_socks4Bind(self) -> None:
        """
        SOCKS4 BIND: the first reply (CD 90) names 127.0.0.1 and a port; the
        expected peer connects there; the second reply (CD 90) names the
        peer's address and port; data flows both ways.
        """
        mark = self.proxy.mark()
        sock, first = self.socks4(LOOPBACK_V4, 0, command=SOCKS4_BIND)
        clientPort = sock.getsockname()[1]
        self.assertEqual((first.vn, first.cd, first.host), (0, CD_GRANTED, LOOPBACK_V4), first)
        self.assertNotEqual(first.port, 0, first)
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(peer.close)
        peer.settimeout(10)
        peer.bind((LOOPBACK_V4, 0))
        peer.connect((first.host, first.port))
        second = readSOCKS4Reply(sock)
        self.assertEqual((second.vn, second.cd), (0, CD_GRANTED), second)
        self.assertEqual((second.host, second.port), peer.getsockname())
        sock.sendall(b"from the client")
        self.assertEqual(recvExactly(peer, 15), b"from the client")
        peer.sendall(b"from the peer")
        self.assertEqual(recvExactly(sock, 13), b"from the peer")
        peer.close()
        self.assertEqual(recvUntilEOF(sock, deadline=10), b"")
        sock.close()
        self.sessionLine(
            "socks4", r"command=BIND .*reply=90 ", clientPort=clientPort, since=mark
        )

    # -- HTTP with raw sockets ----------------------------------------------

    def test_httpConnectSplitByteByByte(self) -> None:
        """
        A CONNECT head written one byte at a time gets no answer until its
        last byte, then 200; bytes sent in the same write as the end of the
        head are forwarded, and the tunnel relays both ways.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        head = self.connectHead(LOOPBACK_V4, self.echo.port, "User-Agent: byte-by-byte")
        for i in range(len(head) - 1):
            sock.sendall(head[i:i + 1])
            time.sleep(0.002)
        self.assertQuiet(sock, "an answer before the head was complete")
        sock.sendall(head[-1:] + b"tunnelled early")
        response = readHTTPResponse(sock, body=False)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(recvExactly(sock, 15), b"tunnelled early")
        self.assertEcho(sock, b"through the tunnel " * 200)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilEOF(sock, deadline=10), b"")
        sock.close()
        self.sessionLine(
            "http",
            rf"command=CONNECT destination=127\.0\.0\.1:{self.echo.port} .*reply=200 ",
            clientPort=clientPort, since=mark,
        )

    def test_httpConnectBareLF(self) -> None:
        """
        A CONNECT head with bare LF line ends is accepted too.
        """
        sock = self.rawSocket()
        sock.sendall(f"CONNECT 127.0.0.1:{self.echo.port} HTTP/1.0\n\n".encode())
        response = readHTTPResponse(sock, body=False)
        self.assertEqual(response.status, 200, response)
        self.assertEcho(sock, b"bare LF")

    def test_httpConnectByName(self) -> None:
        """
        CONNECT localhost:PORT: the proxy resolves the name and tunnels.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(self.connectHead("localhost", self.echo.port))
        response = readHTTPResponse(sock, body=False)
        self.assertEqual(response.status, 200, response)
        self.assertEcho(sock, b"by name")
        sock.close()
        self.sessionLine(
            "http", rf"command=CONNECT destination=localhost:{self.echo.port} .*reply=200 ",
            clientPort=clientPort, since=mark,
        )

    def test_httpOversizedHead(self) -> None:
        """
        A request head over 16 KiB without its end gets 431 and the
        connection is closed; the log names the reason.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(
            f"CONNECT 127.0.0.1:{self.echo.port} HTTP/1.1\r\n".encode()
            + b"X-Filler: " + b"f" * (16 * 1024 + 100)
        )
        response = readHTTPResponse(sock)
        self.assertEqual(response.status, 431, response)
        self.assertEqual(recvUntilClosed(sock), b"")
        self.sessionLine(
            "http", r"reason=protocol error: request head over 16384 bytes",
            clientPort=clientPort, since=mark,
        )

    def test_httpTooManyHeaders(self) -> None:
        """
        A request head with more than 100 header lines (well under 16 KiB)
        gets 431 and the connection is closed.
        """
        sock = self.rawSocket()
        sock.sendall(
            self.connectHead(
                LOOPBACK_V4, self.echo.port, *(f"X-H{i}: {i}" for i in range(101))
            )
        )
        response = readHTTPResponse(sock)
        self.assertEqual(response.status, 431, response)
        self.assertEqual(recvUntilClosed(sock), b"")

    def test_httpMalformedRequestLine(self) -> None:
        """
        A request line that is not METHOD SP TARGET SP HTTP/1.x gets 400 and
        the connection is closed; the log names the reason.
        """
        port = self.echo.port
        for line in (
            f"CONNECT 127.0.0.1:{port}",
            f"CONNECT 127.0.0.1:{port} HTTP/2.0",
            f"CONNECT  127.0.0.1:{port} HTTP/1.1",
            f"CONNECT 127.0.0.1:{port} HTTP/1.1 extra",
        ):
            with self.subTest(line=line):
                mark = self.proxy.mark()
                sock = self.rawSocket()
                clientPort = sock.getsockname()[1]
                sock.sendall(line.encode() + b"\r\nHost: x\r\n\r\n")
                response = readHTTPResponse(sock)
                self.assertEqual(response.status, 400, response)
                self.assertEqual(recvUntilClosed(sock), b"")
                self.sessionLine(
                    "http", "reason=protocol error: malformed request line",
                    clientPort=clientPort, since=mark,
                )

    def test_httpConnectBadTarget(self) -> None:
        """
        CONNECT without a port, or with port 0, gets 400 and is closed.
        """
        for target in ("127.0.0.1", "127.0.0.1:0", ":80"):
            with self.subTest(target=target):
                sock = self.rawSocket()
                sock.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
                response = readHTTPResponse(sock)
                self.assertEqual(response.status, 400, response)
                self.assertEqual(recvUntilClosed(sock), b"")

    def test_httpConnectRefused(self) -> None:
        """
        CONNECT to a closed port gets 502 with a short text body, then the
        connection is closed.
        """
        mark = self.proxy.mark()
        port = closedPort()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(self.connectHead(LOOPBACK_V4, port))
        response = readHTTPResponse(sock)
        self.assertEqual(response.status, 502, response)
        self.assertTrue(response.header("Content-Type").startswith("text/plain"), response)
        self.assertIn(b"refused", response.body)
        self.assertLess(len(response.body), 200, response)
        self.assertEqual(recvUntilClosed(sock), b"")
        self.sessionLine(
            "http", rf"destination=127\.0\.0\.1:{port} .*reply=502 .*reason=connection refused",
            clientPort=clientPort, since=mark,
        )

    def test_httpForwardHopByHopHeaders(self) -> None:
        """
        Plain forwarding drops hop-by-hop headers both ways (Connection and
        the headers it names, Keep-Alive, TE, Proxy-Authorization), keeps
        end-to-end ones, and sends the origin the Host of the request URI,
        not the client's Host header.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(
            (
                f"GET http://127.0.0.1:{self.origin.port}/path?q=1 HTTP/1.1\r\n"
                "Host: localhost:1\r\n"
                "Connection: X-Secret\r\n"
                "X-Secret: 1\r\n"
                "Keep-Alive: timeout=30\r\n"
                "TE: trailers\r\n"
                f"Proxy-Authorization: {basicCredentials(USERNAME, PASSWORD)}\r\n"
                "X-Keep: 1\r\n"
                "\r\n"
            ).encode()
        )
        response = readHTTPResponse(sock)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.body, ORIGIN_BODY)
        line, headers = self.origin.waitResult(10)
        self.assertRegex(line, r"^GET /path\?q=1 HTTP/1\.[01]$")
        names = headerNames(headers)
        for dropped in ("x-secret", "keep-alive", "te", "proxy-authorization"):
            self.assertNotIn(dropped, names, headers)
        self.assertNotIn("x-secret", (headerValue(headers, "Connection") or "").lower())
        self.assertEqual(headerValue(headers, "X-Keep"), "1", headers)
        self.assertEqual(headerValue(headers, "Host"), f"127.0.0.1:{self.origin.port}")
        # The response's own hop-by-hop headers do not reach the client.
        self.assertIsNone(response.header("X-Origin-Secret"), response)
        self.assertIsNone(response.header("Keep-Alive"), response)
        self.assertEqual(response.header("X-Origin-Keep"), "1", response)
        sock.close()
        self.sessionLine(
            "http",
            rf"command=HTTP destination=127\.0\.0\.1:{self.origin.port} .*reply=200 ",
            clientPort=clientPort, since=mark,
        )

    def test_httpForwardKeepAlive(self) -> None:
        """
        Two plain-HTTP requests on one client connection are both forwarded,
        and the one session line counts them.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        for path in ("/first", "/second"):
            sock.sendall(
                f"GET http://127.0.0.1:{self.origin.port}{path} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{self.origin.port}\r\n\r\n".encode()
            )
            response = readHTTPResponse(sock)
            self.assertEqual((response.status, response.body), (200, ORIGIN_BODY), response)
            line, _ = self.origin.waitResult(10)
            self.assertTrue(line.startswith(f"GET {path} "), line)
        sock.close()
        self.sessionLine(
            "http", r"command=HTTP .*reply=200 .*requests=2 ",
            clientPort=clientPort, since=mark,
        )

    def test_httpForwardOnlyAbsoluteHTTP(self) -> None:
        """
        Plain forwarding answers 400 to an https:// URI and to a request
        target that is not an absolute URI, and contacts no origin.
        """
        port = self.origin.port
        for target in (f"https://127.0.0.1:{port}/", "/relative", f"127.0.0.1:{port}"):
            with self.subTest(target=target):
                sock = self.rawSocket()
                sock.sendall(
                    f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                response = readHTTPResponse(sock)
                self.assertEqual(response.status, 400, response)
        self.assertTrue(self.origin.results.empty(), "a request reached the origin")

    # -- detection ----------------------------------------------------------

    def test_unknownProtocol(self) -> None:
        """
        A connection starting with a byte that is none of SOCKS5, SOCKS4 or
        an HTTP method (a TLS ClientHello) is closed without a reply, and
        the log says 'unknown protocol'.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(TLS_CLIENT_HELLO)
        self.assertClosedSilently(sock)
        self.proxy.waitForLine(
            rf"session ended: protocol=\S+ client=127\.0\.0\.1:{clientPort} "
            r".*reason=unknown protocol: first byte 0x16",
            10, since=mark,
        )

    def test_socks5StillServed(self) -> None:
        """
        SOCKS5 is served on the same port: CONNECT succeeds and relays.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        self.assertEcho(sock, b"socks5 beside the others")


# --------------------------------------------------------------------------
# --handshake-timeout
# --------------------------------------------------------------------------


class HandshakeTimeoutTests(ProtocolTestCase):
    """
    A proxy with C{--handshake-timeout 1}: SOCKS4 and HTTP heads are
    time-limited like SOCKS5 handshakes.
    """

    proxyArgs = ("--handshake-timeout", "1")

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def assertClosedAfterTimeout(self, sock: socket.socket) -> bytes:
        started = time.monotonic()
        data = recvUntilClosed(sock, 10.0)
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 0.5, "closed before the handshake timeout")
        self.assertLess(elapsed, 5.0, "not closed soon after the handshake timeout")
        return data

    def test_stalledHTTPHead(self) -> None:
        """
        A CONNECT head that stops before its end is closed about a second
        later; the log says the handshake timed out in the request head.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(self.connectHead(LOOPBACK_V4, self.echo.port)[:-2])
        data = self.assertClosedAfterTimeout(sock)
        self.assertTrue(data == b"" or data.startswith(b"HTTP/1.1 408 "), data)
        self.sessionLine(
            "http", "reason=handshake timeout in request head",
            clientPort=clientPort, since=mark,
        )

    def test_stalledSOCKS4Request(self) -> None:
        """
        A SOCKS4 request whose USERID never ends is closed about a second
        later; the log says the handshake timed out.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(encodeSOCKS4Request(LOOPBACK_V4, self.echo.port, userid=b"slow")[:-1])
        data = self.assertClosedAfterTimeout(sock)
        self.assertIn(data, (b"", b"\x00" + bytes([CD_REJECTED]) + b"\x00" * 6))
        self.sessionLine(
            "socks4", "reason=handshake timeout", clientPort=clientPort, since=mark
        )

    def test_tunnelOutlivesHandshakeTimeout(self) -> None:
        """
        Once CONNECT got its 200, the handshake timeout no longer applies.
        """
        sock = self.rawSocket()
        sock.sendall(self.connectHead(LOOPBACK_V4, self.echo.port))
        self.assertEqual(readHTTPResponse(sock, body=False).status, 200)
        time.sleep(1.5)
        self.assertEcho(sock, b"still open")


# --------------------------------------------------------------------------
# With --auth
# --------------------------------------------------------------------------


class AuthTests(ProtocolTestCase):
    """
    A proxy with C{--auth memory:alice:s3cret}: HTTP clients authenticate
    with Proxy-Authorization: Basic; SOCKS4 (no password) is refused.
    """

    proxyArgs = AUTH_ARGS

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())
        cls.http = cls.startTarget(HTTPTarget(HTTP_BODY))
        cls.origin = cls.startTarget(RecordingOrigin())

    def proxyURL(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    # -- curl ---------------------------------------------------------------

    def test_curlSocks4Refused(self) -> None:
        """
        curl --socks4 and --socks4a (with or without --proxy-user) fail with
        CD 91, and the log says SOCKS4 carries no password.
        """
        for option, url in (
            ("--socks4", self.http.url()), ("--socks4a", self.http.url("localhost"))
        ):
            for extra in ((), ("--proxy-user", f"{USERNAME}:{PASSWORD}")):
                with self.subTest(option=option, extra=extra):
                    mark = self.proxy.mark()
                    result = runCurl(option, f"127.0.0.1:{self.proxy.port}", *extra, url)
                    self.assertNotEqual(result.returncode, 0, result)
                    self.assertRegex(result.stderr.decode(), r"\b91\b")
                    self.sessionLine(
                        option[2:],
                        "reply=91 .*reason=SOCKS4 carries no password and "
                        "authentication is required",
                        since=mark,
                    )

    def test_curlHTTPForward(self) -> None:
        """
        curl -x: the right --proxy-user fetches the page; none, or a wrong
        password, gets 407.
        """
        self.assertCurlFetches(
            "-x", self.proxyURL(), "--proxy-user", f"{USERNAME}:{PASSWORD}", self.http.url()
        )
        for extra in ((), ("--proxy-user", f"{USERNAME}:{WRONG_PASSWORD}")):
            with self.subTest(extra=extra):
                result = runCurl("-x", self.proxyURL(), *extra, "-w", "%{http_code}",
                                 self.http.url())
                self.assertEqual(result.returncode, 0, result)
                self.assertTrue(result.stdout.endswith(b"407"), result)
                self.assertNotIn(HTTP_BODY, result.stdout)

    def test_curlHTTPTunnel(self) -> None:
        """
        curl -p -x: the right --proxy-user fetches the page through a
        CONNECT tunnel; none, or a wrong password, gets 407 to its CONNECT.
        """
        self.assertCurlFetches(
            "-p", "-x", self.proxyURL(), "--proxy-user", f"{USERNAME}:{PASSWORD}",
            self.http.url(),
        )
        for extra in ((), ("--proxy-user", f"{USERNAME}:{WRONG_PASSWORD}")):
            with self.subTest(extra=extra):
                result = runCurl("-p", "-x", self.proxyURL(), *extra,
                                 "-w", "%{http_connect}", self.http.url())
                self.assertNotEqual(result.returncode, 0, result)
                self.assertEqual(result.stdout, b"407", result)

    # -- ncat ---------------------------------------------------------------

    def test_ncatHTTPProxyAuth(self) -> None:
        """
        ncat --proxy-type http --proxy-auth alice:s3cret reaches the echo
        server; a wrong password makes ncat fail with the proxy's 407.
        """
        mark = self.proxy.mark()
        result = runNcat(
            "--proxy", f"127.0.0.1:{self.proxy.port}", "--proxy-type", "http",
            "--proxy-auth", f"{USERNAME}:{PASSWORD}",
            LOOPBACK_V4, str(self.echo.port), input=b"hello with credentials\n",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"hello with credentials\n")
        self.sessionLine(
            "http", rf"user={USERNAME} command=CONNECT .*reply=200 ", since=mark
        )
        result = runNcat(
            "--proxy", f"127.0.0.1:{self.proxy.port}", "--proxy-type", "http",
            "--proxy-auth", f"{USERNAME}:{WRONG_PASSWORD}",
            LOOPBACK_V4, str(self.echo.port), input=b"hello\n",
        )
        self.assertNotEqual(result.returncode, 0, result)
        self.assertEqual(result.stdout, b"")
        self.assertIn(b"407", result.stderr)

    def test_ncatSocks4Refused(self) -> None:
        """
        ncat --proxy-type socks4 is refused by a proxy that requires a
        password.
        """
        result = runNcat(
            "--proxy", f"127.0.0.1:{self.proxy.port}", "--proxy-type", "socks4",
            LOOPBACK_V4, str(self.echo.port), input=b"hello\n",
        )
        self.assertNotEqual(result.returncode, 0, result)
        self.assertEqual(result.stdout, b"")

    # -- urllib -------------------------------------------------------------

    def urllibFetch(self, *handlers: urllib.request.BaseHandler) -> bytes:
        opener = urllib.request.build_opener(*handlers)
        with (
            mock.patch.dict(os.environ, cleanEnvironment(), clear=True),
            opener.open(self.http.url(), timeout=10) as response,
        ):
            self.assertEqual(response.status, 200)
            return response.read()

    def test_urllibCredentialsInProxyURL(self) -> None:
        """
        urllib with the credentials in the proxy URL fetches the page.
        """
        proxy = f"http://{USERNAME}:{PASSWORD}@127.0.0.1:{self.proxy.port}"
        body = self.urllibFetch(urllib.request.ProxyHandler({"http": proxy}))
        self.assertEqual(body, HTTP_BODY)

    def test_urllibProxyBasicAuthHandler(self) -> None:
        """
        urllib's ProxyBasicAuthHandler answers the proxy's 407 (realm from
        Proxy-Authenticate) and fetches the page.
        """
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, f"127.0.0.1:{self.proxy.port}", USERNAME, PASSWORD)
        body = self.urllibFetch(
            urllib.request.ProxyHandler({"http": self.proxyURL()}),
            urllib.request.ProxyBasicAuthHandler(passwords),
        )
        self.assertEqual(body, HTTP_BODY)

    def test_urllibWithoutCredentials(self) -> None:
        """
        urllib without credentials gets 407 with Proxy-Authenticate: Basic.
        """
        with self.assertRaises(urllib.error.HTTPError) as caught:
            self.urllibFetch(urllib.request.ProxyHandler({"http": self.proxyURL()}))
        self.assertEqual(caught.exception.code, 407)
        self.assertRegex(caught.exception.headers["Proxy-Authenticate"], r'^Basic realm="[^"]+"$')
        caught.exception.close()

    # -- raw HTTP -----------------------------------------------------------

    def test_connect407Then200(self) -> None:
        """
        CONNECT without credentials gets 407 with Proxy-Authenticate: Basic
        realm=... and is closed; a second connection with the right
        Proxy-Authorization gets 200 and a working tunnel.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        firstPort = sock.getsockname()[1]
        sock.sendall(self.connectHead(LOOPBACK_V4, self.echo.port))
        response = readHTTPResponse(sock)
        self.assertEqual(response.status, 407, response)
        self.assertRegex(response.header("Proxy-Authenticate") or "", r'^Basic realm="[^"]+"$')
        self.assertEqual(recvUntilClosed(sock), b"")
        self.sessionLine(
            "http", "reply=407 .*reason=proxy authentication failed: credentials required",
            clientPort=firstPort, since=mark,
        )

        sock = self.rawSocket()
        secondPort = sock.getsockname()[1]
        sock.sendall(
            self.connectHead(
                LOOPBACK_V4, self.echo.port,
                f"Proxy-Authorization: {basicCredentials(USERNAME, PASSWORD)}",
            )
            + b"right after the head"
        )
        response = readHTTPResponse(sock, body=False)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(recvExactly(sock, 20), b"right after the head")
        self.assertEcho(sock, b"authenticated tunnel")
        sock.close()
        self.sessionLine(
            "http", rf"user={USERNAME} command=CONNECT .*reply=200 ",
            clientPort=secondPort, since=mark,
        )

    def test_connectBadCredentials(self) -> None:
        """
        CONNECT with a wrong password, a malformed Basic token, another
        scheme or an empty user name gets 407 and is closed.
        """
        for value in (
            basicCredentials(USERNAME, WRONG_PASSWORD),
            "Basic !!!not-base64!!!",
            "Bearer abc.def.ghi",
            basicCredentials("", PASSWORD),
        ):
            with self.subTest(value=value):
                sock = self.rawSocket()
                sock.sendall(
                    self.connectHead(
                        LOOPBACK_V4, self.echo.port, f"Proxy-Authorization: {value}"
                    )
                )
                response = readHTTPResponse(sock)
                self.assertEqual(response.status, 407, response)
                self.assertRegex(
                    response.header("Proxy-Authenticate") or "", r'^Basic realm="[^"]+"$'
                )
                self.assertEqual(recvUntilClosed(sock), b"")

    def test_forward407Then200(self) -> None:
        """
        Plain forwarding without credentials gets 407 with
        Proxy-Authenticate; with them, the origin answers and never sees the
        Proxy-Authorization header.
        """
        request = (
            f"GET http://127.0.0.1:{self.origin.port}/auth HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.origin.port}\r\n"
            "Connection: close\r\n"
        )
        sock = self.rawSocket()
        sock.sendall(request.encode() + b"\r\n")
        response = readHTTPResponse(sock)
        self.assertEqual(response.status, 407, response)
        self.assertRegex(response.header("Proxy-Authenticate") or "", r'^Basic realm="[^"]+"$')
        self.assertTrue(self.origin.results.empty(), "the origin was contacted")

        sock = self.rawSocket()
        sock.sendall(
            request.encode()
            + f"Proxy-Authorization: {basicCredentials(USERNAME, PASSWORD)}\r\n\r\n".encode()
        )
        response = readHTTPResponse(sock)
        self.assertEqual(response.status, 200, response)
        self.assertEqual(response.body, ORIGIN_BODY)
        line, headers = self.origin.waitResult(10)
        self.assertRegex(line, r"^GET /auth HTTP/1\.[01]$")
        self.assertNotIn("proxy-authorization", headerNames(headers))

    # -- raw SOCKS4 ---------------------------------------------------------

    def test_socks4Refused(self) -> None:
        """
        SOCKS4 and SOCKS4a requests get CD 91 and are closed, and the log
        names the reason.
        """
        for host in (LOOPBACK_V4, "localhost"):
            with self.subTest(host=host):
                mark = self.proxy.mark()
                sock, reply = self.socks4(host, self.echo.port, userid=USERNAME.encode())
                clientPort = sock.getsockname()[1]
                self.assertEqual((reply.vn, reply.cd), (0, CD_REJECTED), reply)
                self.assertEqual(recvUntilClosed(sock), b"")
                self.sessionLine(
                    "socks4a?",
                    "reply=91 .*reason=SOCKS4 carries no password and "
                    "authentication is required",
                    clientPort=clientPort, since=mark,
                )

    def test_socks5WithPassword(self) -> None:
        """
        SOCKS5 with RFC 1929 credentials still works on the same port.
        """
        sock, reply = socks5Connect(
            self.proxy.port, LOOPBACK_V4, self.echo.port, USERNAME, PASSWORD
        )
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        self.assertEcho(sock, b"socks5 with a password")


# --------------------------------------------------------------------------
# --protocols
# --------------------------------------------------------------------------


class SOCKS5OnlyTests(ProtocolTestCase):
    """
    A proxy with C{--protocols socks5}: SOCKS4 and HTTP clients are closed
    without a reply.
    """

    proxyArgs = ("--protocols", "socks5")

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def test_socks4Closed(self) -> None:
        """
        A SOCKS4 request is closed without a reply; the log says socks4 is
        not enabled.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(encodeSOCKS4Request(LOOPBACK_V4, self.echo.port))
        self.assertClosedSilently(sock)
        self.sessionLine(
            "socks4", "reason=protocol socks4 is not enabled",
            clientPort=clientPort, since=mark,
        )

    def test_httpClosed(self) -> None:
        """
        An HTTP CONNECT or GET is closed without a reply; the log says http
        is not enabled.
        """
        for head in (
            f"CONNECT 127.0.0.1:{self.echo.port} HTTP/1.1\r\n\r\n",
            f"GET http://127.0.0.1:{self.echo.port}/ HTTP/1.1\r\n\r\n",
        ):
            with self.subTest(head=head):
                mark = self.proxy.mark()
                sock = self.rawSocket()
                clientPort = sock.getsockname()[1]
                sock.sendall(head.encode())
                self.assertClosedSilently(sock)
                self.sessionLine(
                    "http", "reason=protocol http is not enabled",
                    clientPort=clientPort, since=mark,
                )

    def test_realClientsRefused(self) -> None:
        """
        curl --socks4 and curl -x http:// fail against a SOCKS5-only proxy.
        """
        url = f"http://127.0.0.1:{self.echo.port}/"
        for args in (("--socks4", f"127.0.0.1:{self.proxy.port}"),
                     ("-x", f"http://127.0.0.1:{self.proxy.port}")):
            with self.subTest(args=args):
                result = runCurl(*args, url)
                self.assertNotEqual(result.returncode, 0, result)

    def test_socks5Served(self) -> None:
        """
        SOCKS5 still works.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        self.assertEcho(sock, b"socks5 only")


class SOCKS5DisabledTests(ProtocolTestCase):
    """
    A proxy with C{--protocols socks4,http}: a SOCKS5 client is refused the
    same way, and the other two are served.
    """

    proxyArgs = ("--protocols", "socks4,http")

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def test_socks5Closed(self) -> None:
        """
        A SOCKS5 greeting is closed without a reply; the log says socks5 is
        not enabled.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket()
        clientPort = sock.getsockname()[1]
        sock.sendall(b"\x05\x01\x00")
        self.assertClosedSilently(sock)
        self.sessionLine(
            "socks5", "reason=protocol socks5 is not enabled",
            clientPort=clientPort, since=mark,
        )

    def test_othersServed(self) -> None:
        """
        SOCKS4 and HTTP CONNECT are served.
        """
        sock, reply = self.socks4(LOOPBACK_V4, self.echo.port)
        self.assertEqual((reply.vn, reply.cd), (0, CD_GRANTED), reply)
        self.assertEcho(sock, b"socks4 without socks5")
        sock = self.rawSocket()
        sock.sendall(self.connectHead(LOOPBACK_V4, self.echo.port))
        self.assertEqual(readHTTPResponse(sock, body=False).status, 200)
        self.assertEcho(sock, b"http without socks5")


class ProtocolsOptionTests(unittest.TestCase):
    """
    C{--protocols} rejects what it does not know.
    """

    def test_unknownProtocol(self) -> None:
        """
        An unknown name, or an empty list, is a usage error: twistd exits
        with a non-zero status, says what it expected, and never listens.
        """
        for value in ("socks5,socks6", ","):
            with self.subTest(value=value):
                result = subprocess.run(
                    [twistdPath(), "-n", "--pidfile=", "--logfile=-", "socks5",
                     "--port", "tcp:0:interface=127.0.0.1", "--protocols", value],
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    env=cleanEnvironment({"PYTHONPATH": REPO_ROOT}),
                    timeout=30,
                    check=False,
                )
                self.assertNotEqual(result.returncode, 0, result)
                output = (result.stdout + result.stderr).decode("utf-8", "replace")
                self.assertIn(f"expected some of socks5, socks4, http, got {value!r}", output)
                self.assertNotRegex(output, LISTENING_RE)
