# -*- test-case-name: tests.test_e2e_timeouts -*-
"""
End-to-end connect timeout and cancellation.

A destination that never completes the TCP handshake is made on loopback
with a listening socket whose accept queue is full (backlog 0, never
accepting, already holding connections): the kernel drops further SYNs, so a
connect to it hangs until someone gives up.
"""

from __future__ import annotations

import re
import socket
import struct
import time
import unittest

from tests.e2e import (
    LOOPBACK_V4,
    ProxyProcess,
    ProxyTestCase,
    ReplyAfterEOFServer,
    encodeGreeting,
    readMethodSelection,
    readReply,
    recvUntilEOF,
    SOCKS5Session,
    encodeRequest,
    CMD_CONNECT,
    socks5Connect,
)


class BlackHole:
    """
    A loopback port where connects hang (full accept queue).
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind((LOOPBACK_V4, 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect((LOOPBACK_V4, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)
        time.sleep(0.2)

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


class ConnectTimeoutTests(ProxyTestCase):
    """
    C{--connect-timeout} bounds the outbound connect, and a client that
    leaves cancels it.
    """

    proxyArgs = ("--connect-timeout", "1")

    def setUp(self) -> None:
        self.hole = BlackHole()
        self.addCleanup(self.hole.close)

    def test_connectTimeoutIsTTLExpired(self) -> None:
        """
        A destination that does not answer within --connect-timeout gets
        reply 0x06 (TTL expired), then the connection is closed.
        """
        mark = self.proxy.mark()
        started = time.monotonic()
        sock, reply = socks5Connect(
            self.proxy.port, LOOPBACK_V4, self.hole.port, timeout=15
        )
        with sock:
            self.assertEqual(reply.rep, 0x06, reply)
            self.assertEqual(sock.recv(1), b"")
        self.assertLess(time.monotonic() - started, 14)
        self.proxy.waitForLine(
            r"session ended.*reply=0x06.*reason=connection timed out", 10, since=mark
        )

    def test_clientLeavingCancelsConnect(self) -> None:
        """
        A client that leaves (connection reset) while the outbound connect is
        pending ends the session at once, with the connect cancelled, well
        before the connect timeout would have fired.
        """
        mark = self.proxy.mark()
        with SOCKS5Session(self.proxy.port) as session:
            self.assertEqual(session.greet(), 0)
            session.sock.sendall(
                encodeRequest(LOOPBACK_V4, self.hole.port, CMD_CONNECT)
            )
            time.sleep(0.2)
            session.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        line = self.proxy.waitForLine(r"session ended", 10, since=mark)
        self.assertRegex(line.string, r"reason=client connection lost")
        self.assertRegex(line.string, r"reply=-")
        duration = float(re.search(r"duration=([0-9.]+)s", line.string).group(1))
        self.assertLess(duration, 0.9)


class PipelinedHalfCloseTests(unittest.TestCase):
    """
    A client that sends its whole handshake and its data in one write and
    then shuts down its write side (what C{nc -N} does) gets its answer: the
    EOF is passed on once the relay starts, not taken as the client leaving.
    """

    def test_pipelinedRequestThenEOF(self) -> None:
        """
        Greeting, request and payload in one write followed by shutdown(WR):
        the target receives the payload and EOF, and the client receives the
        reply and the target's whole answer.
        """
        proxy = ProxyProcess()
        self.addCleanup(proxy.stop)
        target = ReplyAfterEOFServer()
        self.addCleanup(target.stop)
        payload = b"pipelined then half-closed " * 1000
        sock = socket.create_connection((LOOPBACK_V4, proxy.port), timeout=10)
        with sock:
            sock.sendall(
                encodeGreeting()
                + encodeRequest(LOOPBACK_V4, target.port, CMD_CONNECT)
                + payload
            )
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(readMethodSelection(sock), 0)
            self.assertEqual(readReply(sock).rep, 0)
            self.assertEqual(recvUntilEOF(sock), payload[::-1])
        self.assertEqual(target.waitResult(), payload)
