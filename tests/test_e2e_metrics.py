# -*- test-case-name: tests.test_e2e_metrics -*-
"""
End-to-end metrics and live sessions: the real C{twistd socks5} with
C{--metrics}, scraped and driven over loopback HTTP while real clients (curl
and a raw SOCKS5 client) use the proxy; and the live-sessions page in a real
headless Chromium (Debian's C{chromium}).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import (
    ATYP_IPV4,
    LOOPBACK_V4,
    SESSION_ENDED_RE,
    EchoServer,
    HTTPTarget,
    ProxyTestCase,
    SOCKS5Session,
    cleanEnvironment,
    closedPort,
    recvExactly,
    runCurl,
    socks5Connect,
)

#: The line the proxy logs once the metrics and control endpoint listens.
METRICS_RE = re.compile(r"metrics and control on (\S+) port (\d+)")

#: Seconds any HTTP request to the control endpoint may take.
HTTP_TIMEOUT = 10.0


def request(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP request to the control endpoint on 127.0.0.1 (no proxy): the
    status, the headers (lower-case names) and the body.
    """
    connection = http.client.HTTPConnection(LOOPBACK_V4, port, timeout=HTTP_TIMEOUT)
    try:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        connection.request(method, path, headers=sent)
        response = connection.getresponse()
        body = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            body,
        )
    finally:
        connection.close()


def getJSON(port: int, path: str, token: str | None = None) -> Any:
    status, _, body = request(port, "GET", path, token)
    if status != 200:
        raise AssertionError(f"GET {path}: {status} {body!r}")
    return json.loads(body)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, token: str | None = None) -> Samples:
    """
    C{GET /metrics}, parsed by prometheus_client's own parser into
    C{{(sample name, labels): value}}.
    """
    status, headers, body = request(port, "GET", "/metrics", token)
    if status != 200:
        raise AssertionError(f"GET /metrics: {status} {body!r}")
    if not headers.get("content-type", "").startswith("text/plain"):
        raise AssertionError(f"unexpected content type {headers.get('content-type')}")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def waitFor(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """
    Poll C{predicate} every 50 ms until it returns something true; that.
    """
    end = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.05)


def chromiumPath() -> str:
    """
    Debian's C{chromium}; L{AssertionError} if missing (.ci/run installs it).
    """
    found = shutil.which("chromium")
    if found is None:
        raise AssertionError(
            "chromium (Debian package chromium) is not installed; the page "
            "test needs a real headless browser"
        )
    return found


def runChromium(profile: str, *args: str, timeout: float = 90.0) -> bytes:
    """
    Run headless Chromium with C{args} in its own process group (all of
    which is killed if it outlasts C{timeout}); its standard output.
    """
    argv = [
        chromiumPath(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cleanEnvironment({"HOME": profile}),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        raise AssertionError(f"chromium did not finish within {timeout}s: {argv}")
    if proc.returncode != 0:
        raise AssertionError(
            f"chromium exited with {proc.returncode}: {argv}\n"
            + err.decode("utf-8", "replace")[-4000:]
        )
    return out


def pngFacts(data: bytes) -> tuple[int, int, int]:
    """
    A PNG's width, height and the number of distinct byte values in its
    decompressed image data (1 or 2 for a blank image).
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("not a PNG")
    width = height = 0
    idat = b""
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


class _MetricsProxyTestCase(ProxyTestCase):
    """
    A proxy with C{--metrics} on an ephemeral loopback port.

    @ivar metricsPort: the port it logged.
    """

    metricsPort: int
    extraArgs: tuple[str, ...] = ()

    @classmethod
    def setUpClass(cls) -> None:
        cls.proxyArgs = ("--metrics", "tcp:0:interface=127.0.0.1", *cls.extraArgs)
        super().setUpClass()
        match = cls.proxy.waitForLine(METRICS_RE, 20)
        if match.group(1) != LOOPBACK_V4:
            raise AssertionError(f"metrics endpoint on {match.group(1)}")
        cls.metricsPort = int(match.group(2))

    def waitSessionsEnded(self, count: int, since: int) -> None:
        self.proxy.waitForCount(SESSION_ENDED_RE, count, 15, since=since)


class MetricsTrafficTests(_MetricsProxyTestCase):
    """
    Scrape, run known sessions, scrape again, compare.
    """

    BODY = b"metrics body " * 1000

    @classmethod
    def startTargets(cls) -> None:
        cls.target = cls.startTarget(HTTPTarget(cls.BODY))

    def test_knownSessions(self) -> None:
        """
        Two curl downloads through the proxy and one CONNECT to a refused
        port move the session, byte and latency metrics by exactly that.
        """
        before = scrape(self.metricsPort)
        mark = self.proxy.mark()
        proxy = f"127.0.0.1:{self.proxy.port}"
        for _ in range(2):
            result = runCurl("--socks5", proxy, self.target.url())
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, self.BODY)
        refused = runCurl("--socks5", proxy, f"http://127.0.0.1:{closedPort()}/")
        self.assertNotEqual(refused.returncode, 0)
        self.waitSessionsEnded(3, mark)
        after = scrape(self.metricsPort)
        socks = {"protocol": "socks5", "command": "CONNECT"}
        self.assertEqual(delta(before, after, "socksrelay_sessions_total", result="ok", **socks), 2)
        self.assertEqual(
            delta(before, after, "socksrelay_sessions_total", result="refused", **socks), 1
        )
        down = delta(before, after, "socksrelay_bytes_total", direction="down")
        self.assertGreaterEqual(down, 2 * len(self.BODY))
        self.assertLess(down, 2 * len(self.BODY) + 2048)
        up = delta(before, after, "socksrelay_bytes_total", direction="up")
        self.assertGreater(up, 0)
        self.assertLess(up, 2048)
        self.assertEqual(delta(before, after, "socksrelay_handshake_seconds_count"), 3)
        self.assertEqual(delta(before, after, "socksrelay_connect_seconds_count"), 2)
        self.assertEqual(value(after, "socksrelay_sessions_active", protocol="socks5"), 0)
        self.assertEqual(value(after, "socksrelay_listening_sockets"), 1)

    def test_policyDenial(self) -> None:
        """
        A CONNECT to a link-local address is denied by the default rule and
        counted under that rule.
        """
        before = scrape(self.metricsPort)
        mark = self.proxy.mark()
        # (Denied before any connection is tried: nothing leaves loopback.)
        with SOCKS5Session(self.proxy.port) as session:
            session.greet()
            denied = session.connect("169.254.169.254", 80, ATYP_IPV4)
        self.assertEqual(denied.rep, 0x02)
        self.waitSessionsEnded(1, mark)
        after = scrape(self.metricsPort)
        self.assertEqual(
            delta(
                before,
                after,
                "socksrelay_policy_denials_total",
                rule="default: link-local destinations",
            ),
            1,
        )
        self.assertEqual(
            delta(
                before,
                after,
                "socksrelay_sessions_total",
                protocol="socks5",
                command="CONNECT",
                result="denied",
            ),
            1,
        )


class LiveSessionTests(_MetricsProxyTestCase):
    """
    A session that is open shows in C{/sessions} and on the page, and the
    API closes it.
    """

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def openSession(self) -> tuple[socket.socket, str]:
        """
        A relayed CONNECT to the echo server that has carried 4 bytes each
        way; the socket and its destination as the proxy shows it.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        sock.sendall(b"ping")
        self.assertEqual(recvExactly(sock, 4), b"ping")
        return sock, f"127.0.0.1:{self.echo.port}"

    def test_listAndClose(self) -> None:
        """
        An open session is listed with its fields and live byte counts;
        closing it through the API gives its client an EOF, logs who asked,
        and takes it off the list.
        """
        sock, destination = self.openSession()
        sessions = getJSON(self.metricsPort, f"/sessions?destination={destination}")
        self.assertEqual(len(sessions), 1)
        session = sessions[0]
        self.assertEqual(session["command"], "CONNECT")
        self.assertEqual(session["protocol"], "socks5")
        self.assertEqual((session["bytesUp"], session["bytesDown"]), (4, 4))
        self.assertTrue(session["client"].startswith("127.0.0.1:"))
        self.assertGreaterEqual(session["duration"], 0)
        for field in ("id", "user", "started"):
            self.assertIn(field, session)
        self.assertEqual(getJSON(self.metricsPort, "/sessions?destination=no-such"), [])
        self.assertEqual(
            scrape(self.metricsPort)[
                ("socksrelay_sessions_active", frozenset({("protocol", "socks5")}))
            ],
            1,
        )
        mark = self.proxy.mark()
        status, _, body = request(self.metricsPort, "POST", f"/sessions/{session['id']}/close")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"closed": [session["id"]]})
        sock.settimeout(10)
        self.assertEqual(sock.recv(1), b"")
        line = self.proxy.waitForLine(
            rf"control: closing session {session['id']} .*asked by 127\.0\.0\.1:\d+",
            10,
            since=mark,
        )
        self.assertIn(destination, line.string)
        ended = self.proxy.waitForLine(SESSION_ENDED_RE, 10, since=mark)
        self.assertIn("reason=closed by control request from 127.0.0.1:", ended.string)
        waitFor(
            lambda: getJSON(self.metricsPort, f"/sessions?destination={destination}") == [],
            what="empty session list",
        )

    def test_pageInChromium(self) -> None:
        """
        Headless Chromium renders the page with the open session's row: a
        non-blank screenshot, and a DOM whose table names its destination.
        """
        sock, destination = self.openSession()
        url = f"http://127.0.0.1:{self.metricsPort}/"
        workdir = tempfile.mkdtemp(prefix="socksrelay-chromium-")
        self.addCleanup(shutil.rmtree, workdir, True)
        shot = os.path.join(workdir, "page.png")
        runChromium(
            os.path.join(workdir, "profile-shot"),
            f"--screenshot={shot}",
            "--window-size=1200,800",
            "--virtual-time-budget=3000",
            url,
        )
        self.assertTrue(os.path.exists(shot))
        with open(shot, "rb") as f:
            png = f.read()
        self.assertGreater(len(png), 5000)
        width, height, distinct = pngFacts(png)
        self.assertEqual((width, height), (1200, 800))
        self.assertGreater(distinct, 8)
        dom = runChromium(
            os.path.join(workdir, "profile-dom"),
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ).decode("utf-8", "replace")
        self.assertIn('<table id="sessions">', dom)
        self.assertIn(f"<td>{destination}</td>", dom)
        # The script ran: it wrote the throughput summary.
        self.assertRegex(dom, r"1 live session; throughput up")
        sock.sendall(b"pong")
        self.assertEqual(recvExactly(sock, 4), b"pong")


class PerUserTests(_MetricsProxyTestCase):
    """
    Closing a user's sessions, and per-user series capped at one user.
    """

    extraArgs = (
        "--auth",
        "memory:alice:apw:bob:bpw",
        "--metrics-per-user",
        "--metrics-max-users",
        "1",
    )
    secrets = ("apw", "bpw")

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def userSession(self, user: str, password: str) -> socket.socket:
        sock, reply = socks5Connect(
            self.proxy.port, LOOPBACK_V4, self.echo.port, user, password
        )
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        sock.sendall(b"hi")
        self.assertEqual(recvExactly(sock, 2), b"hi")
        return sock

    def test_closeUserAndCap(self) -> None:
        """
        Closing alice's sessions ends both of hers and not bob's; then alice
        has her own series and bob, beyond the cap, is counted as _other.
        """
        before = scrape(self.metricsPort)
        mark = self.proxy.mark()
        alice = [self.userSession("alice", "apw") for _ in range(2)]
        bob = self.userSession("bob", "bpw")
        self.assertEqual(
            len(getJSON(self.metricsPort, "/sessions?user=alice")), 2
        )
        status, _, body = request(self.metricsPort, "POST", "/sessions/close?user=alice")
        self.assertEqual(status, 200, body)
        self.assertEqual(len(json.loads(body)["closed"]), 2)
        for sock in alice:
            sock.settimeout(10)
            self.assertEqual(sock.recv(1), b"")
        bob.sendall(b"still")
        self.assertEqual(recvExactly(bob, 5), b"still")
        self.assertEqual(len(self.proxy.linesMatching(r"control: closing session", mark)), 2)
        bob.close()
        self.waitSessionsEnded(3, mark)
        after = scrape(self.metricsPort)
        self.assertEqual(delta(before, after, "socksrelay_user_sessions_total", user="alice"), 2)
        self.assertEqual(delta(before, after, "socksrelay_user_sessions_total", user="_other"), 1)
        self.assertEqual(value(after, "socksrelay_user_sessions_total", user="bob"), 0)
        self.assertEqual(
            delta(before, after, "socksrelay_user_bytes_total", user="alice", direction="up"),
            4,
        )

    def test_authFailure(self) -> None:
        """
        A wrong password is counted as an auth failure.
        """
        before = scrape(self.metricsPort)
        mark = self.proxy.mark()
        with self.assertRaises(AssertionError):
            socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port, "alice", "nope")
        self.waitSessionsEnded(1, mark)
        after = scrape(self.metricsPort)
        self.assertEqual(
            delta(before, after, "socksrelay_auth_failures_total", protocol="socks5"), 1
        )


class TokenTests(_MetricsProxyTestCase):
    """
    C{--control-token-file}: every request needs the token.
    """

    TOKEN = "e2e-token-5e1f0a"
    secrets = (TOKEN,)

    @classmethod
    def setUpClass(cls) -> None:
        cls.tokenDir = tempfile.mkdtemp(prefix="socksrelay-token-")
        path = os.path.join(cls.tokenDir, "token")
        with open(path, "w") as f:
            f.write(cls.TOKEN + "\n")
        cls.extraArgs = ("--control-token-file", path)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.tokenDir, True)

    def test_refusedWithoutToken(self) -> None:
        """
        Without the token, or with a wrong one, every path is a 401.
        """
        for token in (None, "wrong", self.TOKEN + "x"):
            for method, path in (
                ("GET", "/metrics"),
                ("GET", "/sessions"),
                ("GET", "/"),
                ("POST", "/sessions/close?user=alice"),
            ):
                status, headers, _ = request(self.metricsPort, method, path, token)
                self.assertEqual(status, 401, (token, path))
                self.assertIn("Bearer", headers.get("www-authenticate", ""))

    def test_acceptedWithToken(self) -> None:
        """
        With the token, the metrics and the session list are served.
        """
        self.assertIn(
            ("socksrelay_listening_sockets", frozenset()),
            scrape(self.metricsPort, self.TOKEN),
        )
        self.assertEqual(getJSON(self.metricsPort, "/sessions", self.TOKEN), [])
