"""
End-to-end tests: a real C{twistd socks5} process, real clients (curl,
PySocks, python-socks, httpx and a raw socket client) and loopback targets
in threads of the test process.

Run with: python -m pytest tests/test_e2e.py -q -x
"""

from __future__ import annotations

import hashlib
import socket
import time
import unittest

import httpx
import socks
from httpx_socks import SyncProxyTransport
from python_socks import ProxyError
from python_socks.sync import Proxy

from tests.e2e import ProxyTestCase as BaseProxyTestCase
from tests.e2e import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    LOOPBACK_V4,
    LOOPBACK_V6,
    METHOD_NO_ACCEPTABLE,
    METHOD_NONE,
    METHOD_USERPASS,
    REP_CONNECTION_REFUSED,
    REP_SUCCEEDED,
    SESSION_ENDED_RE,
    EchoServer,
    HTTPTarget,
    ProxyProcess,
    ReplyAfterEOFServer,
    SinkServer,
    SOCKS5Session,
    SourceServer,
    abortSocket,
    closedPort,
    connectTCP,
    drainDigest,
    encodeGreeting,
    encodeRequest,
    encodeUserPass,
    pseudoRandomBytes,
    pseudoRandomChunks,
    readMethodSelection,
    readReply,
    recvExactly,
    recvUntilEOF,
    requireIPv6Loopback,
    runCurl,
    socks5Connect,
)

USERNAME = "alice"
PASSWORD = "s3cret"
WRONG_PASSWORD = "wr0ng-Pa55"

HTTP_BODY = b"socksrelay e2e body: the quick brown fox jumps over the lazy dog\n"

MiB = 1024 * 1024


def expectClosed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """
    Read until the proxy closes the connection, within C{timeout} seconds;
    what it sent before closing.  A reset counts as closed.
    """
    sock.settimeout(timeout)
    try:
        return recvUntilEOF(sock, deadline=timeout)
    except ConnectionResetError:
        return b""


class ProxyTestCase(BaseProxyTestCase):
    """
    L{tests.e2e.ProxyTestCase} with helpers for the client tests below.
    """

    # -- per-test helpers -------------------------------------------------

    def socks(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        atyp: int | None = None,
        timeout: float = 10.0,
    ) -> socket.socket:
        """
        A CONNECTed raw client socket (closed at cleanup); asserts success.
        """
        sock, reply = socks5Connect(
            self.proxy.port, host, port, username, password, atyp, timeout
        )
        self.addCleanup(sock.close)
        self.assertEqual(
            reply.rep, REP_SUCCEEDED, f"CONNECT {host}:{port} failed: {reply!r}"
        )
        return sock

    def rawSocket(self, timeout: float = 10.0) -> socket.socket:
        sock = connectTCP(LOOPBACK_V4, self.proxy.port, timeout)
        self.addCleanup(sock.close)
        return sock

    def assertEcho(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(payload)
        self.assertEqual(recvExactly(sock, len(payload)), payload)

    def assertCurlFetches(self, *args: str) -> None:
        result = runCurl(*args)
        self.assertEqual(
            result.returncode,
            0,
            f"curl {args} failed: {result.stderr!r}\nproxy log:\n"
            + self.proxy.text(),
        )
        self.assertEqual(result.stdout, HTTP_BODY)

    def assertNoSecretsLogged(self, *secrets: str) -> None:
        for line in self.proxy.snapshot():
            for secret in secrets:
                self.assertNotIn(secret, line, "a password was logged")


class NoAuthTests(ProxyTestCase):
    """
    A proxy without C{--auth}: method 0x00 only.
    """

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())
        cls.http = cls.startTarget(HTTPTarget(HTTP_BODY))

    def test_curlSocks5IPLiteral(self) -> None:
        """
        curl --socks5 (client resolves) fetches a page from an IPv4 target,
        and the proxy logs a 'session ended' line for it.
        """
        mark = self.proxy.mark()
        self.assertCurlFetches(
            "--socks5", f"127.0.0.1:{self.proxy.port}", self.http.url()
        )
        self.proxy.waitForLine(SESSION_ENDED_RE, 10, since=mark)

    def test_curlSocks5Hostname(self) -> None:
        """
        curl --socks5-hostname sends the name 'localhost' to the proxy
        (ATYP 3), which resolves it and fetches the page.
        """
        self.assertCurlFetches(
            "--socks5-hostname",
            f"127.0.0.1:{self.proxy.port}",
            self.http.url("localhost"),
        )
        self.assertEqual(
            self.http.requests[-1][1], f"localhost:{self.http.port}"
        )

    def test_pysocksRemoteDNS(self) -> None:
        """
        PySocks with rdns=True (name sent to the proxy) round-trips bytes
        through the echo server.
        """
        s = socks.socksocket()
        self.addCleanup(s.close)
        s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port, rdns=True)
        s.settimeout(10)
        s.connect(("localhost", self.echo.port))
        self.assertEcho(s, b"pysocks rdns=True " * 50)

    def test_pysocksLocalDNS(self) -> None:
        """
        PySocks with rdns=False (IPv4 address sent to the proxy) round-trips
        bytes through the echo server.
        """
        s = socks.socksocket()
        self.addCleanup(s.close)
        s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port, rdns=False)
        s.settimeout(10)
        s.connect((LOOPBACK_V4, self.echo.port))
        self.assertEcho(s, b"pysocks rdns=False " * 50)

    def test_pythonSocksNoAuth(self) -> None:
        """
        python-socks (sync) without credentials round-trips bytes through
        the echo server, by address and by name.
        """
        proxy = Proxy.from_url(f"socks5://127.0.0.1:{self.proxy.port}")
        for host in (LOOPBACK_V4, "localhost"):
            with self.subTest(host=host):
                s = proxy.connect(host, self.echo.port, timeout=10)
                self.addCleanup(s.close)
                s.settimeout(10)
                self.assertEcho(s, b"python-socks " + host.encode())

    def test_httpxSocksTransport(self) -> None:
        """
        httpx over httpx_socks.SyncProxyTransport gets 200 and the body, by
        address and by name.
        """
        transport = SyncProxyTransport.from_url(
            f"socks5://127.0.0.1:{self.proxy.port}"
        )
        with httpx.Client(
            transport=transport, trust_env=False, timeout=20
        ) as client:
            for name in (LOOPBACK_V4, "localhost"):
                with self.subTest(name=name):
                    response = client.get(self.http.url(name))
                    self.assertEqual(response.status_code, 200)
                    self.assertEqual(response.content, HTTP_BODY)

    def test_rawConnectIPv4AndDomain(self) -> None:
        """
        The raw client CONNECTs with ATYP 1 and ATYP 3 ('localhost'), gets
        REP 0 and a well-formed bound address, and data is relayed.
        """
        for host, atyp in ((LOOPBACK_V4, ATYP_IPV4), ("localhost", ATYP_DOMAIN)):
            with self.subTest(atyp=atyp):
                sock, reply = socks5Connect(
                    self.proxy.port, host, self.echo.port, atyp=atyp
                )
                self.addCleanup(sock.close)
                self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
                self.assertIn(reply.atyp, (ATYP_IPV4, ATYP_IPV6, ATYP_DOMAIN))
                self.assertEcho(sock, b"raw atyp %d" % atyp)
                sock.shutdown(socket.SHUT_WR)
                self.assertEqual(recvUntilEOF(sock), b"")

    def test_pipelinedHandshakeAndData(self) -> None:
        """
        Greeting, CONNECT request and payload in a single write: the client
        gets 05 00, a success reply and then its payload echoed, intact.
        """
        payload = pseudoRandomBytes(100_000, seed=3)
        sock = self.rawSocket()
        sock.sendall(
            encodeGreeting((METHOD_NONE,))
            + encodeRequest(LOOPBACK_V4, self.echo.port)
            + payload
        )
        self.assertEqual(recvExactly(sock, 2), b"\x05\x00")
        reply = readReply(sock)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        self.assertEqual(recvExactly(sock, len(payload)), payload)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilEOF(sock), b"")

    def test_connectRefusedIPv4(self) -> None:
        """
        CONNECT to a closed port on 127.0.0.1 gets REP 0x05 (connection
        refused) and then the proxy closes the connection.
        """
        port = closedPort(LOOPBACK_V4)
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_CONNECTION_REFUSED, reply)
        self.assertEqual(expectClosed(sock), b"")

    def test_connectRefusedByName(self) -> None:
        """
        CONNECT to 'localhost' (ATYP 3) on a closed port gets REP 0x05 too.
        """
        port = closedPort(LOOPBACK_V4)
        sock, reply = socks5Connect(self.proxy.port, "localhost", port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_CONNECTION_REFUSED, reply)
        self.assertEqual(expectClosed(sock), b"")

    def test_usernamePasswordOnlyRejected(self) -> None:
        """
        A client that offers only method 0x02 to a proxy without --auth is
        answered 05 FF and disconnected.
        """
        sock = self.rawSocket()
        sock.sendall(encodeGreeting((METHOD_USERPASS,)))
        self.assertEqual(readMethodSelection(sock), METHOD_NO_ACCEPTABLE)
        self.assertEqual(expectClosed(sock), b"")

    def test_clientsLeavingEarly(self) -> None:
        """
        Clients that vanish mid-handshake or right after the reply (with FIN
        or RST) do not disturb the proxy: it is still running, their
        sessions end, and a later curl fetch works.  (No traceback is checked
        at the end of the class.)
        """
        mark = self.proxy.mark()
        # Connect and leave without a byte.
        connectTCP(LOOPBACK_V4, self.proxy.port).close()
        # Half a greeting.
        s = connectTCP(LOOPBACK_V4, self.proxy.port)
        s.sendall(b"\x05\x02\x00")
        s.close()
        # A greeting, then leave.
        s = connectTCP(LOOPBACK_V4, self.proxy.port)
        s.sendall(encodeGreeting())
        self.assertEqual(readMethodSelection(s), METHOD_NONE)
        s.close()
        # Half a request, then a reset.
        s = connectTCP(LOOPBACK_V4, self.proxy.port)
        s.sendall(encodeGreeting())
        self.assertEqual(readMethodSelection(s), METHOD_NONE)
        s.sendall(encodeRequest(LOOPBACK_V4, self.echo.port)[:5])
        abortSocket(s)
        # A full CONNECT, then leave without sending.
        s, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        s.close()
        # A full CONNECT, data in flight, then a reset.
        s, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        s.sendall(b"x" * 200_000)
        abortSocket(s)
        # Those two relayed sessions end and are logged.
        self.proxy.waitForCount(SESSION_ENDED_RE, 2, 10, since=mark)
        self.assertTrue(self.proxy.running(), self.proxy.text())
        self.assertCurlFetches(
            "--socks5", f"127.0.0.1:{self.proxy.port}", self.http.url()
        )


class AuthTests(ProxyTestCase):
    """
    A proxy with C{--auth memory:alice:s3cret}: RFC 1929 required.
    """

    proxyArgs = ("--auth", f"memory:{USERNAME}:{PASSWORD}")
    secrets = (PASSWORD, WRONG_PASSWORD)

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())
        cls.http = cls.startTarget(HTTPTarget(HTTP_BODY))

    def test_curlWithCredentials(self) -> None:
        """
        curl --socks5 with --proxy-user alice:s3cret fetches the page.
        """
        self.assertCurlFetches(
            "--socks5",
            f"127.0.0.1:{self.proxy.port}",
            "--proxy-user",
            f"{USERNAME}:{PASSWORD}",
            self.http.url(),
        )

    def test_curlWrongPassword(self) -> None:
        """
        curl with a wrong password exits non-zero and fetches nothing; the
        target sees no request.
        """
        before = len(self.http.requests)
        result = runCurl(
            "--socks5",
            f"127.0.0.1:{self.proxy.port}",
            "--proxy-user",
            f"{USERNAME}:{WRONG_PASSWORD}",
            self.http.url(),
        )
        self.assertNotEqual(result.returncode, 0, result)
        self.assertNotIn(HTTP_BODY, result.stdout)
        self.assertEqual(len(self.http.requests), before)

    def test_curlWithoutCredentials(self) -> None:
        """
        curl without --proxy-user (offers no usable method) fails and fetches
        nothing.
        """
        result = runCurl(
            "--socks5", f"127.0.0.1:{self.proxy.port}", self.http.url()
        )
        self.assertNotEqual(result.returncode, 0, result)
        self.assertNotIn(HTTP_BODY, result.stdout)

    def test_pysocksWithCredentials(self) -> None:
        """
        PySocks with username/password (rdns True and False) round-trips
        bytes through the echo server.
        """
        for rdns, host in ((True, "localhost"), (False, LOOPBACK_V4)):
            with self.subTest(rdns=rdns):
                s = socks.socksocket()
                self.addCleanup(s.close)
                s.set_proxy(
                    socks.SOCKS5,
                    LOOPBACK_V4,
                    self.proxy.port,
                    rdns=rdns,
                    username=USERNAME,
                    password=PASSWORD,
                )
                s.settimeout(10)
                s.connect((host, self.echo.port))
                self.assertEcho(s, b"pysocks auth " * 100)

    def test_pythonSocksWithCredentials(self) -> None:
        """
        python-socks from a socks5://alice:s3cret@ URL round-trips bytes
        through the echo server.
        """
        proxy = Proxy.from_url(
            f"socks5://{USERNAME}:{PASSWORD}@127.0.0.1:{self.proxy.port}"
        )
        s = proxy.connect(LOOPBACK_V4, self.echo.port, timeout=10)
        self.addCleanup(s.close)
        s.settimeout(10)
        self.assertEcho(s, b"python-socks with credentials")

    def test_pythonSocksWrongPassword(self) -> None:
        """
        python-socks with a wrong password raises ProxyError.
        """
        proxy = Proxy.from_url(
            f"socks5://{USERNAME}:{WRONG_PASSWORD}@127.0.0.1:{self.proxy.port}"
        )
        with self.assertRaises(ProxyError):
            s = proxy.connect(LOOPBACK_V4, self.echo.port, timeout=10)
            s.close()

    def test_rawWrongPassword(self) -> None:
        """
        A wrong password gets an RFC 1929 failure status (01 then non-zero),
        the connection is then closed, the session is logged as ended, and
        no password appears anywhere in the log.
        """
        mark = self.proxy.mark()
        session = SOCKS5Session(self.proxy.port)
        self.addCleanup(session.close)
        self.assertEqual(session.greet((METHOD_USERPASS,)), METHOD_USERPASS)
        status = session.authenticate(USERNAME, WRONG_PASSWORD)
        self.assertEqual(status[0], 0x01, status)
        self.assertNotEqual(status[1], 0x00, status)
        self.assertEqual(expectClosed(session.sock), b"")
        self.proxy.waitForLine(SESSION_ENDED_RE, 10, since=mark)
        self.assertNoSecretsLogged(PASSWORD, WRONG_PASSWORD)

    def test_rawCorrectPassword(self) -> None:
        """
        The raw client authenticates (status 01 00), CONNECTs and relays; the
        password is not logged.
        """
        mark = self.proxy.mark()
        sock = self.socks(LOOPBACK_V4, self.echo.port, USERNAME, PASSWORD)
        self.assertEcho(sock, b"authenticated raw client")
        sock.close()
        self.proxy.waitForLine(SESSION_ENDED_RE, 10, since=mark)
        self.assertNoSecretsLogged(PASSWORD)

    def test_noAuthOnlyRejected(self) -> None:
        """
        A client that offers only method 0x00 to a proxy requiring a password
        gets 05 FF and is disconnected.
        """
        sock = self.rawSocket()
        sock.sendall(encodeGreeting((METHOD_NONE,)))
        self.assertEqual(readMethodSelection(sock), METHOD_NO_ACCEPTABLE)
        self.assertEqual(expectClosed(sock), b"")

    def test_pipelinedWithAuth(self) -> None:
        """
        Greeting, RFC 1929 request, CONNECT and payload in one write: 05 02,
        01 00, a success reply, then the echoed payload.
        """
        payload = pseudoRandomBytes(50_000, seed=5)
        sock = self.rawSocket()
        sock.sendall(
            encodeGreeting((METHOD_USERPASS,))
            + encodeUserPass(USERNAME, PASSWORD)
            + encodeRequest(LOOPBACK_V4, self.echo.port)
            + payload
        )
        self.assertEqual(recvExactly(sock, 2), b"\x05\x02")
        self.assertEqual(recvExactly(sock, 2), b"\x01\x00")
        reply = readReply(sock)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        self.assertEqual(recvExactly(sock, len(payload)), payload)

    def test_pipelinedWrongPasswordRelaysNothing(self) -> None:
        """
        Greeting, a wrong RFC 1929 request, CONNECT and payload in one write:
        the client gets 05 02 and a failure status, then the connection is
        closed without a CONNECT reply or any echoed data.
        """
        sock = self.rawSocket()
        sock.sendall(
            encodeGreeting((METHOD_USERPASS,))
            + encodeUserPass(USERNAME, WRONG_PASSWORD)
            + encodeRequest(LOOPBACK_V4, self.echo.port)
            + b"must not be relayed"
        )
        self.assertEqual(recvExactly(sock, 2), b"\x05\x02")
        status = recvExactly(sock, 2)
        self.assertEqual(status[0], 0x01, status)
        self.assertNotEqual(status[1], 0x00, status)
        self.assertEqual(expectClosed(sock), b"")


class IPv6Tests(ProxyTestCase):
    """
    Targets on ::1 (the proxy itself listens on 127.0.0.1).
    """

    @classmethod
    def startTargets(cls) -> None:
        requireIPv6Loopback()
        cls.echo = cls.startTarget(EchoServer(host=LOOPBACK_V6))
        cls.http = cls.startTarget(HTTPTarget(HTTP_BODY, host=LOOPBACK_V6))

    def test_rawConnectATYP4(self) -> None:
        """
        CONNECT with ATYP 4 to an echo server on ::1 succeeds and relays.
        """
        sock = self.socks(LOOPBACK_V6, self.echo.port, atyp=ATYP_IPV6)
        self.assertEcho(sock, pseudoRandomBytes(70_000, seed=6))
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilEOF(sock), b"")

    def test_pythonSocksIPv6(self) -> None:
        """
        python-socks connects to [::1] through the proxy and round-trips.
        """
        proxy = Proxy.from_url(f"socks5://127.0.0.1:{self.proxy.port}")
        s = proxy.connect(LOOPBACK_V6, self.echo.port, timeout=10)
        self.addCleanup(s.close)
        s.settimeout(10)
        self.assertEcho(s, b"python-socks over IPv6")

    def test_curlSocks5HostnameIPv6(self) -> None:
        """
        curl --socks5-hostname fetches http://[::1]:PORT/ through the proxy.
        """
        self.assertCurlFetches(
            "--socks5-hostname",
            f"127.0.0.1:{self.proxy.port}",
            self.http.url(),
        )

    def test_curlSocks5IPv6(self) -> None:
        """
        curl --socks5 (ATYP 4 from the client) fetches http://[::1]:PORT/.
        """
        self.assertCurlFetches(
            "--socks5", f"127.0.0.1:{self.proxy.port}", self.http.url()
        )

    def test_connectRefusedIPv6(self) -> None:
        """
        CONNECT to a closed port on ::1 gets REP 0x05.
        """
        port = closedPort(LOOPBACK_V6)
        sock, reply = socks5Connect(
            self.proxy.port, LOOPBACK_V6, port, atyp=ATYP_IPV6
        )
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_CONNECTION_REFUSED, reply)
        self.assertEqual(expectClosed(sock), b"")


class BulkTransferTests(ProxyTestCase):
    """
    100 MiB each way, checked with SHA-256.
    """

    SIZE = 100 * MiB

    @classmethod
    def startTargets(cls) -> None:
        cls.sink = cls.startTarget(SinkServer(timeout=60))
        cls.source = cls.startTarget(
            SourceServer(cls.SIZE, seed=11, closeAfterSend=True, timeout=60)
        )

    def test_upload100MiB(self) -> None:
        """
        100 MiB sent through the proxy arrive at the sink byte for byte (same
        SHA-256 and count), and the client's EOF reaches the sink.
        """
        start = time.monotonic()
        sock = self.socks(LOOPBACK_V4, self.sink.port, timeout=30)
        h = hashlib.sha256()
        sent = 0
        for chunk in pseudoRandomChunks(self.SIZE, seed=7):
            sock.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)
        digest, count = self.sink.waitResult(90)
        self.assertEqual(count, sent)
        self.assertEqual(digest, h.hexdigest())
        self.assertEqual(recvUntilEOF(sock, deadline=30), b"")
        self.assertLess(time.monotonic() - start, 120)

    def test_download100MiB(self) -> None:
        """
        100 MiB sent by the source arrive at the client byte for byte, and
        the source's close reaches the client as EOF.
        """
        start = time.monotonic()
        sock = self.socks(LOOPBACK_V4, self.source.port, timeout=30)
        digest, count = drainDigest(sock, deadline=110)
        report = self.source.waitResult(30)
        self.assertEqual(count, report["sent"])
        self.assertEqual(count, self.SIZE)
        self.assertEqual(digest, report["digest"])
        self.assertLess(time.monotonic() - start, 120)


class HalfCloseTests(ProxyTestCase):
    """
    TCP half-close is relayed in both directions.
    """

    @classmethod
    def startTargets(cls) -> None:
        cls.reverser = cls.startTarget(ReplyAfterEOFServer())
        cls.source = cls.startTarget(
            SourceServer(300_000, seed=13, closeAfterSend=False)
        )

    def test_clientHalfClose(self) -> None:
        """
        The client sends a request and shuts down its write side; the target
        sees EOF, answers with the request reversed and closes; the client
        still receives the whole answer, then EOF.
        """
        request = pseudoRandomBytes(500_000, seed=17)
        sock = self.socks(LOOPBACK_V4, self.reverser.port)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = recvUntilEOF(sock, deadline=30)
        self.assertEqual(len(answer), len(request))
        self.assertEqual(answer, request[::-1])
        self.assertEqual(self.reverser.waitResult(10), request)

    def test_targetHalfClose(self) -> None:
        """
        The target sends data and shuts down its write side while still
        reading: the client gets all the data then EOF, can still send, and
        the target receives what the client sent after that EOF.
        """
        sock = self.socks(LOOPBACK_V4, self.source.port)
        data = recvUntilEOF(sock, deadline=30)
        self.assertEqual(data, pseudoRandomBytes(300_000, seed=13))
        late = b"sent after the target's EOF " * 1000
        sock.sendall(late)
        sock.shutdown(socket.SHUT_WR)
        report = self.source.waitResult(20)
        self.assertEqual(report["received"], late)
        self.assertEqual(expectClosed(sock), b"")


class HandshakeTimeoutTests(ProxyTestCase):
    """
    A proxy with C{--handshake-timeout 1} (and C{--connect-timeout 5}).
    """

    proxyArgs = ("--handshake-timeout", "1", "--connect-timeout", "5")

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def test_stalledGreeting(self) -> None:
        """
        A client that sends only b'\\x05' and stalls is disconnected by the
        proxy well before a 10 s socket timeout.
        """
        sock = self.rawSocket(timeout=10)
        sock.sendall(b"\x05")
        start = time.monotonic()
        self.assertEqual(expectClosed(sock, timeout=10), b"")
        self.assertLess(time.monotonic() - start, 10)

    def test_stalledRequest(self) -> None:
        """
        A client that completes method selection but never sends its request
        is disconnected too: the timeout covers the whole handshake.
        """
        sock = self.rawSocket(timeout=10)
        sock.sendall(encodeGreeting())
        self.assertEqual(readMethodSelection(sock), METHOD_NONE)
        start = time.monotonic()
        self.assertEqual(expectClosed(sock, timeout=10), b"")
        self.assertLess(time.monotonic() - start, 10)

    def test_idleRelayNotTimedOut(self) -> None:
        """
        Once CONNECT succeeded the handshake timeout no longer applies: a
        relay idle for longer than it still works.
        """
        sock = self.socks(LOOPBACK_V4, self.echo.port)
        self.assertEcho(sock, b"before idling")
        time.sleep(2.5)
        self.assertEcho(sock, b"after idling past the handshake timeout")

    def test_connectTimeoutOptionAccepted(self) -> None:
        """
        With --connect-timeout set, CONNECT to a live target succeeds and a
        closed port is still refused (REP 0x05).
        """
        sock = self.socks(LOOPBACK_V4, self.echo.port)
        self.assertEcho(sock, b"connect-timeout option")
        s, reply = socks5Connect(
            self.proxy.port, LOOPBACK_V4, closedPort(LOOPBACK_V4)
        )
        self.addCleanup(s.close)
        self.assertEqual(reply.rep, REP_CONNECTION_REFUSED, reply)


class ShutdownTests(unittest.TestCase):
    """
    The process lifecycle itself.
    """

    def test_sigtermStopsCleanly(self) -> None:
        """
        After serving a session, SIGTERM makes twistd stop its reactor in
        order and exit within 10 s (no SIGKILL needed), logging no traceback.
        """
        proxy = ProxyProcess()
        self.addCleanup(proxy.stop)
        echo = EchoServer()
        self.addCleanup(echo.stop)
        sock, reply = socks5Connect(proxy.port, LOOPBACK_V4, echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_SUCCEEDED, reply)
        sock.sendall(b"ping")
        self.assertEqual(recvExactly(sock, 4), b"ping")
        sock.close()
        proxy.waitForLine(r"session ended", 10)
        code = proxy.stop()
        self.assertFalse(proxy.killed, "SIGTERM did not stop the proxy")
        # socksrelay takes SIGTERM itself (socksrelay.shutdown) and exits 0
        # after an orderly stop, which the reactor's own log line proves.
        self.assertEqual(code, 0, proxy.text())
        proxy.waitForLine(r"Main loop terminated", 1)
        self.assertFalse(
            [line for line in proxy.lines if "Traceback" in line],
            proxy.text(),
        )


if __name__ == "__main__":
    unittest.main()
