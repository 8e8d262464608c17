# -*- test-case-name: tests.test_e2e_backpressure -*-
"""
End-to-end flow control: a side that pushes 500 MB at a peer that never
reads must be stopped by the proxy (through TCP back-pressure) instead of
being buffered in the proxy's memory.

The proxy is the real C{twistd socks5} process; its memory is read from
C{/proc/PID/status} (VmRSS).  Without producer/consumer flow control the
proxy would read as fast as the pusher writes and its RSS would grow by
hundreds of megabytes.
"""

from __future__ import annotations

import socket
import threading
import time
import unittest

from tests.e2e import (
    LOOPBACK_V4,
    LoopbackTCPServer,
    ProxyProcess,
    socks5Connect,
)

PUSH_TOTAL = 500 * 1024 * 1024
CHUNK = 256 * 1024
#: The proxy may grow by this much while the push is stalled: Twisted's
#: write buffer (64 KiB before it pauses the producer) and a read or two,
#: with generous room for allocator noise; far below the 500 MB pushed.
RSS_BOUND = 24 * 1024 * 1024
#: A push is considered stalled once no byte went out for this long.
STALL_SECONDS = 2.0
#: And whatever happens, a push stops after this long.
PUSH_DEADLINE = 60.0


def rssOf(pid: int) -> int:
    """
    The resident set size of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Pusher:
    """
    Writes up to L{PUSH_TOTAL} bytes to a socket until the writes stall for
    L{STALL_SECONDS} (or L{PUSH_DEADLINE} passes), counting what the kernel
    accepted.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0
        self.stalled = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        chunk = b"\xa5" * CHUNK
        self.sock.settimeout(STALL_SECONDS)
        deadline = time.monotonic() + PUSH_DEADLINE
        try:
            while self.sent < PUSH_TOTAL and time.monotonic() < deadline:
                try:
                    self.sent += self.sock.send(chunk)
                except socket.timeout:
                    self.stalled.set()
                    return
                except OSError:
                    return
        finally:
            self.done.set()


class HoldingServer(LoopbackTCPServer):
    """
    Accepts connections and does not read from them until C{release} is set;
    then reads until EOF (or an error) and records what it read.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.release = threading.Event()
        self.finished: list[int] = []

    def handle(self, conn: socket.socket) -> None:
        self.results.put(conn.getsockname())
        self.release.wait(PUSH_DEADLINE + 30)
        total = 0
        try:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                total += len(data)
        except OSError:
            pass
        self.finished.append(total)


class PushingServer(LoopbackTCPServer):
    """
    Pushes up to L{PUSH_TOTAL} bytes to each connection; the L{Pusher} is
    published in C{results}.
    """

    def handle(self, conn: socket.socket) -> None:
        pusher = Pusher(conn)
        self.results.put(pusher)
        pusher.run()
        self._stopping.wait(PUSH_DEADLINE + 30)


class BackpressureTests(unittest.TestCase):
    """
    The relay applies back-pressure in both directions.
    """

    def setUp(self) -> None:
        self.proxy = ProxyProcess()
        self.addCleanup(self.proxy.stop)

    def assertBounded(self, pusher: Pusher, before: int) -> None:
        self.assertTrue(
            pusher.stalled.is_set(),
            f"the pusher never stalled: {pusher.sent} bytes went out",
        )
        self.assertLess(pusher.sent, PUSH_TOTAL // 4)
        growth = rssOf(self.proxy.pid) - before
        self.assertLess(
            growth,
            RSS_BOUND,
            f"proxy RSS grew by {growth} bytes while {pusher.sent} bytes "
            f"were pushed at a peer that never reads",
        )

    def test_clientPushingAtNonReadingTarget(self) -> None:
        """
        A client pushing 500 MB at a target that never reads is stalled by
        the proxy, whose memory stays within a small fixed bound.
        """
        target = HoldingServer(timeout=PUSH_DEADLINE + 30)
        self.addCleanup(target.stop)
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, target.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        target.waitResult()
        before = rssOf(self.proxy.pid)
        pusher = Pusher(sock)
        pusher.run()
        self.assertBounded(pusher, before)

    def test_targetPushingAtNonReadingClient(self) -> None:
        """
        A target pushing 500 MB at a client that never reads is stalled by
        the proxy, whose memory stays within a small fixed bound.
        """
        target = PushingServer(timeout=PUSH_DEADLINE + 30)
        self.addCleanup(target.stop)
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, target.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        pusher = target.waitResult()
        assert isinstance(pusher, Pusher)
        before = rssOf(self.proxy.pid)
        self.assertTrue(pusher.done.wait(PUSH_DEADLINE + 10))
        self.assertBounded(pusher, before)

    def test_stalledSessionEndsWhenClientLeaves(self) -> None:
        """
        After a stalled push, a client that resets its connection is torn
        down as soon as the relay moves again (the target reads): the proxy
        logs the session's end and closes the target's connection.

        (While the client's side is paused for back-pressure the proxy is not
        reading it, so the reset is seen when reading resumes.)
        """
        target = HoldingServer(timeout=PUSH_DEADLINE + 30)
        self.addCleanup(target.stop)
        mark = self.proxy.mark()
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, target.port)
        self.assertEqual(reply.rep, 0)
        pusher = Pusher(sock)
        pusher.run()
        self.assertTrue(pusher.stalled.is_set())
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        sock.close()
        target.release.set()
        self.proxy.waitForLine(r"session ended.*reason=client", 40.0, since=mark)
        deadline = time.monotonic() + 30
        while not target.finished and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(target.finished, "the target's connection was not closed")
