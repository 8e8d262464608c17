# -*- test-case-name: tests.test_e2e_accesslog -*-
"""
End-to-end tests for C{--access-log}: a real C{twistd socks5} process,
real clients (curl and raw sockets) and loopback targets; every line of the
file must be one JSON object with the expected fields, and the file is
reopened on SIGUSR1.

Run with: python -m pytest tests/test_e2e_accesslog.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import time
from datetime import datetime
from typing import Any, Callable

from tests.e2e import (
    LOOPBACK_V4,
    METHOD_USERPASS,
    REP_CONNECTION_REFUSED,
    REP_NOT_ALLOWED,
    REP_SUCCEEDED,
    SOCKET_TIMEOUT,
    EchoServer,
    HTTPTarget,
    ProxyTestCase,
    SOCKS5Session,
    UDPAssociation,
    UDPEchoServer,
    closedPort,
    encodeRequest,
    readReply,
    recvExactly,
    runCurl,
    socks5Connect,
)

CMD_BIND = 0x02

USERNAME = "alice"
PASSWORD = "Acc3ss-l0g-secret"
WRONG_PASSWORD = "wr0ng-Acc3ss-l0g"

HTTP_BODY = b"access log e2e: the quick brown fox jumps over the lazy dog\n"

#: Seconds any wait for a line in the access log may take.
LINE_DEADLINE = 10.0

#: Fields every line has.
COMMON_FIELDS = {
    "id",
    "start",
    "startEpoch",
    "client",
    "listener",
    "protocol",
    "method",
    "user",
    "command",
    "destination",
    "resolved",
    "bound",
    "rule",
    "reply",
    "replyText",
    "bytesUp",
    "bytesDown",
    "duration",
    "handshakeDuration",
    "connectDuration",
    "closedBy",
    "reason",
}

#: Reasons a relayed TCP session that ended normally may give.
NORMAL_ENDS = ("target EOF", "client EOF", "target closed", "client closed")


def readRecords(path: str) -> list[dict[str, Any]]:
    """
    Every complete line of the file at C{path}, each parsed as JSON (an
    L{AssertionError} names a line that does not parse); none if there is
    no file.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"not JSON in {path}: {line!r} ({e})") from None
        if not isinstance(record, dict):
            raise AssertionError(f"not an object in {path}: {line!r}")
        missing = COMMON_FIELDS - set(record)
        if missing:
            raise AssertionError(f"{sorted(missing)} missing from {line!r}")
        records.append(record)
    return records


class AccessLogTestCase(ProxyTestCase):
    """
    A proxy with C{--access-log} on a file in a temporary directory, plus
    C{accessArgs}; helpers to wait for a session's line.
    """

    accessArgs: tuple[str, ...] = ()

    @classmethod
    def setUpClass(cls) -> None:
        cls.directory = tempfile.mkdtemp(prefix="socksrelay-accesslog-")
        cls.addClassCleanup(shutil.rmtree, cls.directory, True)
        cls.path = os.path.join(cls.directory, "access.log")
        cls.prepare()
        cls.proxyArgs = (*cls.accessArgs, "--access-log", cls.path)
        super().setUpClass()

    @classmethod
    def prepare(cls) -> None:
        """
        Write what C{accessArgs} names, before the proxy starts.
        """

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())
        cls.http = cls.startTarget(HTTPTarget(HTTP_BODY))

    def waitForRecord(
        self,
        match: Callable[[dict[str, Any]], bool],
        path: str | None = None,
        timeout: float = LINE_DEADLINE,
    ) -> dict[str, Any]:
        """
        Wait until a line of the access log (or of C{path}) satisfies
        C{match}; that line, parsed.
        """
        path = path or self.path
        end = time.monotonic() + timeout
        while True:
            found = [record for record in readRecords(path) if match(record)]
            if found:
                self.assertEqual(len(found), 1, found)
                return found[0]
            if time.monotonic() > end:
                self.fail(
                    f"no matching line in {path} within {timeout}s; lines:\n"
                    + "\n".join(map(str, readRecords(path)))
                    + "\nproxy log:\n"
                    + self.proxy.text()
                )
            time.sleep(0.05)

    def recordOfClient(
        self, sock: socket.socket, path: str | None = None
    ) -> dict[str, Any]:
        """
        The line of the session whose client connection is C{sock}.
        """
        client = f"127.0.0.1:{sock.getsockname()[1]}"
        return self.waitForRecord(lambda r: r["client"] == client, path)

    def recordOf(self, protocol: str, command: str, port: int) -> dict[str, Any]:
        """
        The line of the session of C{protocol} and C{command} to
        127.0.0.1:C{port}.
        """
        destination = f"127.0.0.1:{port}"
        return self.waitForRecord(
            lambda r: (r["protocol"], r["command"], r["destination"])
            == (protocol, command, destination)
        )

    def assertCurlFetches(self, *args: str) -> None:
        result = runCurl(*args)
        self.assertEqual(
            result.returncode, 0, f"curl {args}: {result.stderr!r}\n" + self.proxy.text()
        )
        self.assertEqual(result.stdout, HTTP_BODY)

    def assertRelayed(self, record: dict[str, Any]) -> None:
        """
        A successful relayed session: the common facts of the proxy's side,
        positive byte counts, a duration and a normal end.
        """
        self.assertTrue(record["client"].startswith("127.0.0.1:"), record)
        self.assertEqual(record["listener"], f"127.0.0.1:{self.proxy.port}")
        self.assertTrue(record["bound"].startswith("127.0.0.1:"), record)
        self.assertGreater(record["bytesUp"], 0)
        self.assertGreaterEqual(record["bytesDown"], len(HTTP_BODY))
        self.assertIsInstance(record["duration"], float)
        self.assertGreaterEqual(record["duration"], 0)
        self.assertIn(record["reason"], NORMAL_ENDS)
        self.assertIn(record["closedBy"], ("client", "target", "proxy"))
        self.assertLess(abs(record["startEpoch"] - time.time()), 60)
        start = datetime.fromisoformat(record["start"].replace("Z", "+00:00"))
        self.assertAlmostEqual(start.timestamp(), record["startEpoch"], delta=0.001)


class SessionLineTests(AccessLogTestCase):
    """
    A proxy without authentication, with a policy that denies one port: a
    line for each protocol and command.
    """

    @classmethod
    def prepare(cls) -> None:
        cls.deniedPort = closedPort()
        config = os.path.join(cls.directory, "socksrelay.toml")
        with open(config, "w") as f:
            f.write(
                "[[rule]]\n"
                'name = "no denied port"\n'
                'action = "deny"\n'
                f"ports = [{cls.deniedPort}]\n\n"
                "[[rule]]\n"
                'name = "the rest"\n'
                'action = "allow"\n'
            )
        cls.accessArgs = ("--config", config)

    def test_socks5Connect(self) -> None:
        """
        curl through SOCKS5 gives a CONNECT line with the method, reply 0,
        the resolved and bound addresses and the bytes each way.
        """
        self.assertCurlFetches(
            "--socks5", f"127.0.0.1:{self.proxy.port}", self.http.url(path="/s5")
        )
        record = self.recordOf("socks5", "CONNECT", self.http.port)
        self.assertRelayed(record)
        self.assertEqual(record["method"], "NO_AUTHENTICATION")
        self.assertIsNone(record["user"])
        self.assertEqual((record["reply"], record["replyText"]), (REP_SUCCEEDED, "0x00"))
        self.assertEqual(record["resolved"], f"127.0.0.1:{self.http.port}")
        self.assertIsInstance(record["id"], int)

    def test_refusedPort(self) -> None:
        """
        A CONNECT to a port nothing listens on is a line with reply 5 and
        reason C{connection refused}, and no bytes.
        """
        port = closedPort()
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_CONNECTION_REFUSED)
        record = self.recordOfClient(sock)
        self.assertEqual(record["destination"], f"127.0.0.1:{port}")
        self.assertEqual((record["reply"], record["replyText"]), (5, "0x05"))
        self.assertEqual(record["reason"], "connection refused")
        self.assertEqual(record["closedBy"], "proxy")
        self.assertEqual((record["bytesUp"], record["bytesDown"]), (0, 0))

    def test_policyDenied(self) -> None:
        """
        A CONNECT the policy denies is a line with reply 2, the denying rule
        and that rule in the reason.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.deniedPort)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_NOT_ALLOWED)
        record = self.recordOfClient(sock)
        self.assertEqual(record["reply"], REP_NOT_ALLOWED)
        self.assertEqual(record["rule"], "no denied port")
        self.assertIn("no denied port", record["reason"])

    def test_socks4(self) -> None:
        """
        curl through SOCKS4 gives a line with protocol socks4 and reply text
        90.
        """
        self.assertCurlFetches(
            "--socks4", f"127.0.0.1:{self.proxy.port}", self.http.url(path="/s4")
        )
        record = self.recordOf("socks4", "CONNECT", self.http.port)
        self.assertRelayed(record)
        self.assertEqual(record["replyText"], "90")
        self.assertIsNone(record["method"])

    def test_httpConnect(self) -> None:
        """
        curl through an HTTP CONNECT tunnel gives a line with protocol http,
        command CONNECT and reply text 200.
        """
        self.assertCurlFetches(
            "-p", "-x", f"http://127.0.0.1:{self.proxy.port}", self.http.url(path="/t")
        )
        record = self.recordOf("http", "CONNECT", self.http.port)
        self.assertRelayed(record)
        self.assertEqual(record["replyText"], "200")

    def test_httpForward(self) -> None:
        """
        curl with plain HTTP forwarding gives a line with command HTTP and
        one request.
        """
        self.assertCurlFetches(
            "-x", f"http://127.0.0.1:{self.proxy.port}", self.http.url(path="/f")
        )
        record = self.recordOf("http", "HTTP", self.http.port)
        self.assertEqual(record["requests"], 1)
        self.assertEqual(record["replyText"], "200")
        self.assertGreaterEqual(record["bytesDown"], len(HTTP_BODY))

    def test_udpAssociation(self) -> None:
        """
        A UDP association's line counts datagrams and payload bytes each way
        and its drops by reason.
        """
        echo = UDPEchoServer()
        self.addCleanup(echo.stop)
        association = UDPAssociation(self.proxy.port)
        self.addCleanup(association.close)
        self.assertEqual(association.reply.rep, REP_SUCCEEDED)
        # Dropped (fragments are not supported); the echoes of the later
        # datagrams show that it was handled.
        association.send(LOOPBACK_V4, echo.port, b"fragment", frag=1)
        payloads = [b"one", b"datagram two"]
        for payload in payloads:
            association.send(LOOPBACK_V4, echo.port, payload)
            self.assertEqual(association.receive()[3], payload)
        client = association.control.sock.getsockname()[1]
        association.close()
        record = self.waitForRecord(
            lambda r: r["client"] == f"127.0.0.1:{client}"
        )
        self.assertEqual(record["command"], "UDP_ASSOCIATE")
        self.assertEqual((record["datagramsUp"], record["datagramsDown"]), (2, 2))
        size = sum(map(len, payloads))
        self.assertEqual((record["udpBytesUp"], record["udpBytesDown"]), (size, size))
        self.assertEqual(record["drops"], {"fragmented": 1})
        self.assertEqual(record["bound"], "{}:{}".format(*association.relay))

    def test_bind(self) -> None:
        """
        A BIND's line has the listening address as C{bound}, the expected
        peer, and the peer that connected.
        """
        session = SOCKS5Session(self.proxy.port)
        self.addCleanup(session.close)
        self.assertEqual(session.greet(), 0)
        session.sock.sendall(encodeRequest(LOOPBACK_V4, 0, CMD_BIND))
        first = readReply(session.sock)
        self.assertEqual(first.rep, REP_SUCCEEDED)
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(peer.close)
        peer.settimeout(SOCKET_TIMEOUT)
        peer.bind((LOOPBACK_V4, 0))
        peer.connect((first.host, first.port))
        second = readReply(session.sock)
        self.assertEqual(second.rep, REP_SUCCEEDED)
        peer.sendall(b"hello")
        self.assertEqual(recvExactly(session.sock, 5), b"hello")
        client = session.sock.getsockname()[1]
        peerAddress = f"127.0.0.1:{peer.getsockname()[1]}"
        peer.close()
        session.close()
        record = self.waitForRecord(lambda r: r["client"] == f"127.0.0.1:{client}")
        self.assertEqual(record["command"], "BIND")
        self.assertEqual(record["bound"], f"127.0.0.1:{first.port}")
        self.assertEqual(record["expected"], "127.0.0.1")
        self.assertEqual(record["peer"], peerAddress)
        self.assertEqual(record["bytesDown"], 5)


class AuthLineTests(AccessLogTestCase):
    """
    A proxy with username/password authentication: the user is logged, the
    password never.
    """

    accessArgs = ("--auth", f"memory:{USERNAME}:{PASSWORD}")
    secrets = (PASSWORD, WRONG_PASSWORD)

    def assertNoPassword(self) -> None:
        with open(self.path) as f:
            text = f.read()
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn(WRONG_PASSWORD, text)

    def test_wrongPassword(self) -> None:
        """
        A wrong password is a line with the user name tried and the reason,
        and no password anywhere in the file.
        """
        session = SOCKS5Session(self.proxy.port)
        self.addCleanup(session.close)
        self.assertEqual(session.greet((METHOD_USERPASS,)), METHOD_USERPASS)
        self.assertNotEqual(session.authenticate(USERNAME, WRONG_PASSWORD)[1], 0)
        record = self.recordOfClient(session.sock)
        self.assertEqual(record["method"], "USERNAME_PASSWORD")
        self.assertEqual(record["user"], USERNAME)
        self.assertIsNone(record["command"])
        self.assertEqual(record["reason"], "authentication failed")
        self.assertNoPassword()

    def test_rightPassword(self) -> None:
        """
        An authenticated session's line names the user, and the password is
        not in the file.
        """
        sock, reply = socks5Connect(
            self.proxy.port, LOOPBACK_V4, self.echo.port, USERNAME, PASSWORD
        )
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_SUCCEEDED)
        sock.sendall(b"ping")
        self.assertEqual(recvExactly(sock, 4), b"ping")
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(sock.recv(1), b"")
        record = self.recordOfClient(sock)
        self.assertEqual(record["user"], USERNAME)
        self.assertEqual((record["bytesUp"], record["bytesDown"]), (4, 4))
        self.assertNoPassword()


class ReopenTests(AccessLogTestCase):
    """
    SIGUSR1, sent to the proxy's own pid, reopens the file after a rename.
    """

    def echoSession(self, payload: bytes) -> socket.socket:
        """
        A CONNECT to the echo server that sends C{payload}, reads it back
        and closes.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, REP_SUCCEEDED)
        sock.sendall(payload)
        self.assertEqual(recvExactly(sock, len(payload)), payload)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(sock.recv(1), b"")
        return sock

    def test_reopenOnSIGUSR1(self) -> None:
        """
        After the file is renamed and the proxy gets SIGUSR1, new sessions
        are written to a new file by the original name and the renamed file
        keeps the old ones.
        """
        before = self.echoSession(b"before")
        self.recordOfClient(before)
        rotated = self.path + ".1"
        os.rename(self.path, rotated)

        mark = self.proxy.mark()
        os.kill(self.proxy.pid, signal.SIGUSR1)
        self.proxy.waitForLine(r"access log reopened", LINE_DEADLINE, since=mark)
        self.assertTrue(self.proxy.running())

        after = self.echoSession(b"after the rotation")
        record = self.recordOfClient(after)
        self.assertEqual(record["bytesUp"], len(b"after the rotation"))
        self.assertEqual(
            [r["client"] for r in readRecords(self.path)], [record["client"]]
        )
        [old] = readRecords(rotated)
        self.assertEqual(old["client"], f"127.0.0.1:{before.getsockname()[1]}")
