# -*- test-case-name: tests.test_e2e_shutdown -*-
"""
End-to-end graceful shutdown: SIGTERM to a running C{twistd socks5} stops
listening at once, lets live sessions finish within C{--drain-timeout}, closes
the rest with a log line, and exits 0; a second SIGTERM closes at once.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
import unittest

from tests.e2e import (
    LOOPBACK_V4,
    EchoServer,
    ProxyProcess,
    SourceServer,
    socks5Connect,
)


class DrainTests(unittest.TestCase):
    """
    What SIGTERM does to live sessions.
    """

    def start(self, drain: float) -> ProxyProcess:
        proxy = ProxyProcess(["--drain-timeout", str(drain)])
        self.addCleanup(proxy.stop)
        return proxy

    def waitExit(self, proxy: ProxyProcess, timeout: float) -> int:
        proxy._proc.wait(timeout)
        return proxy._proc.returncode

    def test_transferCompletesDuringDrain(self) -> None:
        """
        A download still running when SIGTERM arrives completes whole; the
        listening port is closed at once; the proxy then exits 0.
        """
        proxy = self.start(30)
        source = SourceServer(8 * 1024 * 1024, seed=7)
        self.addCleanup(source.stop)
        sock, reply = socks5Connect(proxy.port, LOOPBACK_V4, source.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        first = sock.recv(65536)
        self.assertTrue(first)
        os.kill(proxy.pid, signal.SIGTERM)
        proxy.waitForLine(r"SIGTERM: no longer listening", 10)
        # The port closes as the reactor begins its shutdown, a moment later.
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection((LOOPBACK_V4, proxy.port), timeout=5).close()
            except ConnectionRefusedError:
                break
            self.assertLess(time.monotonic(), deadline, "the port stayed open")
            time.sleep(0.02)
        digest = hashlib.sha256(first)
        total = len(first)
        sock.settimeout(30)
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            digest.update(data)
            total += len(data)
        self.assertEqual((digest.hexdigest(), total), source.expected())
        sock.close()
        self.assertEqual(self.waitExit(proxy, 20), 0)
        self.assertNotIn("Traceback", "\n".join(proxy.lines))

    def test_sessionOutlastingDrainIsClosed(self) -> None:
        """
        A session still open when the drain timeout passes is closed, with a
        session line whose reason is the drain timeout, and the proxy exits 0.
        """
        proxy = self.start(1)
        echo = EchoServer()
        self.addCleanup(echo.stop)
        sock, reply = socks5Connect(proxy.port, LOOPBACK_V4, echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        started = time.monotonic()
        os.kill(proxy.pid, signal.SIGTERM)
        sock.settimeout(15)
        try:
            self.assertEqual(sock.recv(1), b"")
        except ConnectionResetError:
            pass
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        self.assertEqual(self.waitExit(proxy, 15), 0)
        proxy.waitForLine(r"session ended.*reason=shutdown: drain timeout", 5)

    def test_secondSIGTERMClosesAtOnce(self) -> None:
        """
        A second SIGTERM during a long drain closes the live sessions at
        once, logged, and the proxy exits 0 well before the drain timeout.
        """
        proxy = self.start(60)
        echo = EchoServer()
        self.addCleanup(echo.stop)
        sock, reply = socks5Connect(proxy.port, LOOPBACK_V4, echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        os.kill(proxy.pid, signal.SIGTERM)
        proxy.waitForLine(r"SIGTERM: no longer listening", 10)
        os.kill(proxy.pid, signal.SIGTERM)
        self.assertEqual(self.waitExit(proxy, 15), 0)
        proxy.waitForLine(r"session ended.*reason=shutdown: second SIGTERM", 5)

    def test_idleProxyExitsAtOnce(self) -> None:
        """
        With no live session, SIGTERM makes the proxy exit 0 at once.
        """
        proxy = self.start(30)
        # A served session shows the reactor is running (and SIGTERM ours).
        echo = EchoServer()
        self.addCleanup(echo.stop)
        sock, reply = socks5Connect(proxy.port, LOOPBACK_V4, echo.port)
        sock.close()
        self.assertEqual(reply.rep, 0)
        proxy.waitForLine(r"session ended", 10)
        started = time.monotonic()
        os.kill(proxy.pid, signal.SIGTERM)
        self.assertEqual(self.waitExit(proxy, 10), 0)
        self.assertLess(time.monotonic() - started, 10)
