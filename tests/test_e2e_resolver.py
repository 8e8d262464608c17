# -*- test-case-name: tests.test_e2e_resolver -*-
"""
End-to-end: name lookups through C{--nameserver} end with their sessions,
are capped in flight, and answers are cached for their TTL.

The name servers are loopback UDP sockets run by the test: one that never
answers (and counts what it is asked), one that answers and counts.  No
query can leave the machine.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import unittest
from collections import Counter

from twisted.names import dns

from tests.e2e import (
    LOOPBACK_V4,
    EchoServer,
    abortSocket,
    ProxyProcess,
    encodeGreeting,
    encodeRequest,
    readReply,
    recvExactly,
    socks5Connect,
)


class LoopbackNameServer:
    """
    A UDP name server on 127.0.0.1 (an ephemeral port), served by a thread;
    every query is counted by C{(name, type)}.  It never answers unless
    C{answer} returns a message.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK_V4, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                data, address = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            message = dns.Message()
            try:
                message.fromStr(data)
            except Exception:
                continue
            with self._lock:
                for query in message.queries:
                    self.queries[(query.name.name.decode(), query.type)] += 1
            reply = self.answer(message)
            if reply is not None:
                self.sock.sendto(reply.toStr(), address)

    def answer(self, message: dns.Message) -> dns.Message | None:
        return None

    def total(self) -> int:
        with self._lock:
            return sum(self.queries.values())

    def stop(self) -> None:
        self._stopped = True
        self._thread.join(5)
        self.sock.close()


class AnsweringNameServer(LoopbackNameServer):
    """
    Answers every A query with 127.0.0.1 (TTL 300) and every other query
    with no record and the zone's SOA (minimum 300).
    """

    def answer(self, message: dns.Message) -> dns.Message:
        reply = dns.Message(id=message.id, answer=1, auth=1)
        reply.queries = message.queries
        for query in message.queries:
            if query.type == dns.A:
                reply.answers.append(
                    dns.RRHeader(
                        query.name.name, dns.A, ttl=300,
                        payload=dns.Record_A("127.0.0.1", 300),
                    )
                )
            else:
                reply.authority.append(
                    dns.RRHeader(
                        b"test", dns.SOA, ttl=300,
                        payload=dns.Record_SOA(b"ns.test", b"root.test", minimum=300),
                    )
                )
        return reply


def openDescriptors(pid: int) -> int:
    """
    How many descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def waitFor(condition, seconds: float) -> bool:
    """
    Poll C{condition} every 50 ms for at most C{seconds}.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def askAndStay(proxyPort: int, source: str, name: str) -> socket.socket:
    """
    From loopback address C{source}: greet, read the method selection, and
    ask to CONNECT to C{name}; the socket stays open.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.bind((source, 0))
        sock.connect((LOOPBACK_V4, proxyPort))
        sock.sendall(encodeGreeting())
        assert recvExactly(sock, 2) == b"\x05\x00"
        sock.sendall(encodeRequest(name, 80))
    except BaseException:
        sock.close()
        raise
    return sock


class SilentNameServerTests(unittest.TestCase):
    """
    Against a name server that never answers, lookups end with the
    sessions that asked, and are capped per client.
    """

    def setUp(self) -> None:
        self.dns = LoopbackNameServer()
        self.addCleanup(self.dns.stop)
        self.proxy = ProxyProcess(
            ["--nameserver", f"{LOOPBACK_V4}:{self.dns.port}", "--connect-timeout", "30"]
        )
        self.addCleanup(self.proxy.stop)
        self.sockets: list[socket.socket] = []
        self.addCleanup(self.closeAll)

    def closeAll(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    def baseline(self) -> int:
        """
        The proxy's descriptors once it is idle (the same count half a
        second apart: the reactor opens a few lazily after starting).
        """
        last = openDescriptors(self.proxy.pid)
        for _ in range(20):
            time.sleep(0.5)
            now = openDescriptors(self.proxy.pid)
            if now == last:
                break
            last = now
        return last

    def test_lookupsEndWithTheirSessions(self) -> None:
        """
        250 clients (10 from each of 25 loopback addresses, under the lookup
        limits) ask for names the server never answers, then leave (reset):
        the proxy's query sockets are closed at once (its descriptors are
        back to their baseline within a few seconds, not after twisted.names'
        minute of retries, nor the 30 s connect timeout), and nothing is
        logged as a traceback.
        """
        baseline = self.baseline()
        for i in range(250):
            source = f"127.0.1.{10 + i % 25}"
            self.sockets.append(
                askAndStay(self.proxy.port, source, f"n{i}.silent.test")
            )
        self.assertTrue(
            waitFor(lambda: self.dns.total() >= 500, 15),
            f"only {self.dns.total()} queries reached the name server",
        )
        self.assertGreaterEqual(openDescriptors(self.proxy.pid), baseline + 500)
        for sock in self.sockets:
            abortSocket(sock)
        self.sockets = []
        self.assertTrue(
            waitFor(lambda: openDescriptors(self.proxy.pid) <= baseline, 10),
            f"{openDescriptors(self.proxy.pid)} descriptors open, {baseline} before",
        )
        self.assertNotIn("Traceback", self.proxy.text())

    def test_lookupsBoundedByConnectTimeout(self) -> None:
        """
        Clients that ask and then only half-close (FIN; their sessions wait
        for the connect, as for any CONNECT) get 0x06 at the connect timeout
        (3 s here) and the lookups end with them: the descriptors are back
        to their baseline well before twisted.names' minute of retries.
        """
        self.proxy.stop()
        self.proxy = ProxyProcess(
            ["--nameserver", f"{LOOPBACK_V4}:{self.dns.port}", "--connect-timeout", "3"]
        )
        self.addCleanup(self.proxy.stop)
        baseline = self.baseline()
        for i in range(10):
            self.sockets.append(
                askAndStay(self.proxy.port, "127.0.1.60", f"f{i}.silent.test")
            )
        self.assertTrue(waitFor(lambda: self.dns.total() >= 20, 15))
        for sock in self.sockets:
            sock.shutdown(socket.SHUT_WR)
        for sock in self.sockets:
            self.assertEqual(readReply(sock).rep, 0x06)
        self.closeAll()
        self.assertTrue(
            waitFor(lambda: openDescriptors(self.proxy.pid) <= baseline, 15),
            f"{openDescriptors(self.proxy.pid)} descriptors open, {baseline} before",
        )

    def test_lookupsCappedPerClient(self) -> None:
        """
        One client address may have 16 lookups in flight; its next request
        gets 0x01 at once and the log names the limit.
        """
        source = "127.0.1.50"
        for i in range(16):
            self.sockets.append(askAndStay(self.proxy.port, source, f"c{i}.silent.test"))
        self.assertTrue(waitFor(lambda: self.dns.total() >= 32, 15))
        sock = askAndStay(self.proxy.port, source, "over.silent.test")
        self.sockets.append(sock)
        self.assertEqual(readReply(sock).rep, 0x01)
        self.assertEqual(sock.recv(1), b"")
        self.proxy.waitForLine(
            r"name lookup limit per client \(16\) reached for 127\.0\.1\.50", 10
        )
        other = askAndStay(self.proxy.port, "127.0.1.51", "other.silent.test")
        self.sockets.append(other)
        self.assertTrue(
            waitFor(lambda: self.dns.queries[("other.silent.test", dns.A)] >= 1, 10)
        )


class AnswerCacheTests(unittest.TestCase):
    """
    Answers from C{--nameserver} are cached for their TTL.
    """

    def test_oneQueryForTwoSessions(self) -> None:
        """
        Two sessions, one after the other, to the same name: the name
        server is asked once per record type.
        """
        nameServer = AnsweringNameServer()
        self.addCleanup(nameServer.stop)
        proxy = ProxyProcess(["--nameserver", f"{LOOPBACK_V4}:{nameServer.port}"])
        self.addCleanup(proxy.stop)
        server = EchoServer()
        self.addCleanup(server.stop)
        for _ in range(2):
            sock, reply = socks5Connect(proxy.port, "echo.cache.test", server.port)
            with sock:
                self.assertEqual(reply.rep, 0, reply)
                sock.sendall(b"ping")
                self.assertEqual(recvExactly(sock, 4), b"ping")
        self.assertEqual(nameServer.queries[("echo.cache.test", dns.A)], 1)
        self.assertEqual(nameServer.queries[("echo.cache.test", dns.AAAA)], 1)
