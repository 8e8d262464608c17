# -*- test-case-name: tests.test_splicing -*-
"""
Zero-copy relaying (L{socksrelay.splicing}): the real L{SOCKS5ServerFactory}
listens on loopback in this process, on the real reactor (trial's
L{TestCase} spins it while a test's L{Deferred} is pending), and clients and
targets are blocking sockets in threads of the test process, so every test
can look at the server's protocols, splicer and file descriptors while the
bytes move.

A relay starts on the ordinary transport-to-transport path and moves to
the splicer once it has carried L{splicing.AFTER} bytes one way; every test
that wants a spliced relay therefore moves well over that much first.

Rules kept here: loopback only; every socket has a timeout and every wait
a deadline; no assertion about speed.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import error, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from socksrelay import splicing
from socksrelay.bind import BindOptions
from socksrelay.control import closeSession
from socksrelay.interfaces import ISessionObserver
from socksrelay.relay import RelayEnd
from socksrelay.server import SOCKS5ServerFactory
from tests.e2e import (
    LOOPBACK_V4,
    LoopbackTCPServer,
    ReplyAfterEOFServer,
    abortSocket,
    digestOf,
    drainDigest,
    encodeGreeting,
    encodeRequest,
    pseudoRandomChunks,
    readMethodSelection,
    readReply,
    recvExactly,
    recvUntilEOF,
    socks5Connect,
)
from tests.test_throttle import attributePortal

MiB = 1024 * 1024
CMD_BIND = 0x02
#: Bytes per send in the tests' streams.
CHUNK = 256 * 1024
#: Comfortably past the point where a relay moves to the splicer, with
#: room for a few retries when a transport still held bytes.
BULK = 2 * MiB
#: Deadline of any one wait in a test.
DEADLINE = 30.0


def _sysctlMax(name: str) -> int:
    """
    The maximum (third) value of C{net.ipv4.NAME}, e.g. C{tcp_rmem}.
    """
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return int(f.read().split()[2])


def openFds() -> dict[int, str]:
    """
    This process's open file descriptors and what they point to.
    """
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            # The directory's own descriptor, closed by now.
            pass
    return fds


def rss() -> int:
    """
    This process's resident set size, in bytes.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def spliceDescriptors() -> list[Any]:
    """
    The splicer's descriptors still registered with the reactor.
    """
    return [
        d
        for d in list(reactor.getReaders()) + list(reactor.getWriters())
        if isinstance(d, splicing._Socket)
    ]


def abortTimers() -> list[Any]:
    """
    The pending L{RelayEnd._abort} calls (a close that may take at most
    the close timeout).
    """
    return [
        call
        for call in reactor.getDelayedCalls()
        if getattr(call.func, "__func__", None) is RelayEnd._abort
    ]


def sendStream(sock: socket.socket, total: int, seed: int) -> tuple[str, int]:
    """
    Send L{pseudoRandomChunks}C{(total, seed)}; its digest and length.
    """
    h = hashlib.sha256()
    sent = 0
    for chunk in pseudoRandomChunks(total, seed, CHUNK):
        sock.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
    return h.hexdigest(), sent


def expected(total: int, seed: int) -> tuple[str, int]:
    return digestOf(pseudoRandomChunks(total, seed, CHUNK))


def streamBytes(total: int, seed: int) -> bytes:
    return b"".join(pseudoRandomChunks(total, seed, CHUNK))


def socks5Via(proxyPort: int, targetPort: int, rcvbuf: int | None = None) -> socket.socket:
    """
    A SOCKS5 CONNECT to C{targetPort} on loopback through the proxy; with
    C{rcvbuf}, the client socket's receive buffer is fixed to that size
    first (so that autotuning cannot make room for more later).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(DEADLINE)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect((LOOPBACK_V4, proxyPort))
        sock.sendall(encodeGreeting())
        assert readMethodSelection(sock) == 0
        sock.sendall(encodeRequest(LOOPBACK_V4, targetPort))
        reply = readReply(sock)
        assert reply.rep == 0, reply
    except BaseException:
        sock.close()
        raise
    return sock


def closedOrReset(sock: socket.socket, deadline: float = DEADLINE) -> tuple[bytes, str]:
    """
    Read until the peer closes or resets the connection: what was read and
    C{"eof"} or C{"reset"}.
    """
    end = time.monotonic() + deadline
    buf = bytearray()
    while True:
        if time.monotonic() > end:
            raise AssertionError(f"still open after {deadline}s ({len(buf)} bytes read)")
        try:
            data = sock.recv(1024 * 1024)
        except ConnectionResetError:
            return bytes(buf), "reset"
        if not data:
            return bytes(buf), "eof"
        buf += data


def pushUntilStalled(sock: socket.socket, stall: float, limit: int) -> int:
    """
    Send zeros until a send makes no progress for C{stall} seconds (or
    C{limit} bytes went); how many bytes the kernel accepted.
    """
    block = memoryview(bytes(CHUNK))
    sock.settimeout(stall)
    sent = 0
    try:
        while sent < limit:
            try:
                sent += sock.send(block[: min(CHUNK, limit - sent)])
            except TimeoutError:
                break
    finally:
        sock.settimeout(DEADLINE)
    return sent


class Background:
    """
    C{fn()} in a daemon thread; L{wait} returns its result or raises what
    it raised.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result = fn()
        except BaseException as e:
            self._error = e

    def wait(self, timeout: float = DEADLINE) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"background job still running after {timeout}s")
        if self._error is not None:
            raise self._error
        return self._result


def inThreads(jobs: Iterable[Callable[[], Any]], threads: int) -> Deferred[list[Any]]:
    """
    Run C{jobs} on C{threads} daemon threads (not the reactor's pool: a
    job may block for as long as it likes without starving the reactor's
    own work); a L{Deferred} firing, on the reactor thread, with their
    results in order, or failing with the first job's exception.
    """
    work = list(enumerate(jobs))
    results: list[Any] = [None] * len(work)
    errors: list[BaseException] = []
    lock = threading.Lock()
    d: Deferred[list[Any]] = Deferred()
    remaining = [min(threads, len(work))]

    def worker() -> None:
        while True:
            with lock:
                if not work or errors:
                    break
                index, job = work.pop(0)
            try:
                results[index] = job()
            except BaseException as e:
                with lock:
                    errors.append(e)
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            if errors:
                reactor.callFromThread(d.errback, errors[0])
            else:
                reactor.callFromThread(d.callback, results)

    if not work:
        d.callback(results)
    for _ in range(remaining[0]):
        threading.Thread(target=worker, daemon=True).start()
    return d


def inThread(fn: Callable[[], Any]) -> Deferred[Any]:
    return inThreads([fn], 1).addCallback(lambda results: results[0])


@inlineCallbacks
def waitUntil(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE):  # type: ignore[no-untyped-def]
    """
    Poll C{predicate} on the reactor thread until it holds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        yield deferLater(reactor, 0.01, lambda: None)


@inlineCallbacks
def steady(value: Callable[[], Any], what: str, window: float = 0.3, timeout: float = DEADLINE):  # type: ignore[no-untyped-def]
    """
    Poll C{value} until it is the same C{window} seconds apart; that value.
    """
    deadline = time.monotonic() + timeout
    last = value()
    while True:
        yield deferLater(reactor, window, lambda: None)
        now = value()
        if now == last:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        last = now


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


# -- targets -----------------------------------------------------------------


class DuplexTarget(LoopbackTCPServer):
    """
    Sends C{down} bytes (seed C{seed}) and shuts down its write side while
    reading everything until EOF; reports the digest and count it received.
    """

    def __init__(self, down: int, seed: int) -> None:
        self.down = down
        self.seed = seed
        super().__init__(LOOPBACK_V4, timeout=DEADLINE)

    def handle(self, conn: socket.socket) -> None:
        def send() -> None:
            sendStream(conn, self.down, self.seed)
            conn.shutdown(socket.SHUT_WR)

        sender = Background(send)
        received = drainDigest(conn, deadline=DEADLINE)
        sender.wait()
        self.results.put(received)


class AckTarget(LoopbackTCPServer):
    """
    Reads C{ackAfter} bytes, the first of which says what to do next, then
    answers one byte C{k} and:

      - C{t}: resets the connection (SO_LINGER 0);
      - C{e}: echoes every byte until EOF;
      - anything else: reads until EOF (or a reset), then closes.

    Reports C{(mode, bytes read)}.
    """

    def __init__(self, ackAfter: int = BULK) -> None:
        self.ackAfter = ackAfter
        super().__init__(LOOPBACK_V4, timeout=DEADLINE)

    def handle(self, conn: socket.socket) -> None:
        mode = recvExactly(conn, 1)
        got = 1
        while got < self.ackAfter:
            data = conn.recv(min(1024 * 1024, self.ackAfter - got))
            if not data:
                raise EOFError(f"EOF after {got} bytes")
            got += len(data)
        conn.sendall(b"k")
        if mode == b"t":
            abortSocket(conn)
            self.results.put((mode, got))
            return
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                got += len(data)
                if mode == b"e":
                    conn.sendall(data)
        except ConnectionResetError:
            pass
        self.results.put((mode, got))


class BurstTarget(LoopbackTCPServer):
    """
    Reads C{ackAfter} bytes, answers C{k}, then sends C{burst} bytes (seed
    C{seed}) and then, by C{ending}: C{"close"} closes at once (its sends
    block for as long as they must); C{"hold"} sends while it can (setting
    C{blocked} once a send made no progress for half a second), keeps the
    connection until told (L{release}), then closes; C{"reset"} does the
    same but resets the connection (SO_LINGER 0) when told; C{"eof-reset"}
    sends it all, shuts down its write side, and resets when told.  Reads
    nothing after the first C{ackAfter} bytes.
    """

    def __init__(self, burst: int, seed: int, ending: str, ackAfter: int = BULK) -> None:
        self.burst = burst
        self.seed = seed
        self.ending = ending
        self.ackAfter = ackAfter
        self.blocked = threading.Event()
        self.go = threading.Event()
        super().__init__(LOOPBACK_V4, timeout=DEADLINE)

    def release(self) -> None:
        self.go.set()

    def handle(self, conn: socket.socket) -> None:
        got = 0
        while got < self.ackAfter:
            data = conn.recv(min(1024 * 1024, self.ackAfter - got))
            if not data:
                raise EOFError(f"EOF after {got} bytes")
            got += len(data)
        conn.sendall(b"k")
        if self.ending == "close":
            self.results.put(sendStream(conn, self.burst, self.seed))
            return
        if self.ending == "eof-reset":
            sent = sendStream(conn, self.burst, self.seed)
            conn.shutdown(socket.SHUT_WR)
            self.go.wait(DEADLINE)
            abortSocket(conn)
            self.results.put(sent)
            return
        conn.settimeout(0.5)
        sent = 0
        try:
            for chunk in pseudoRandomChunks(self.burst, self.seed, CHUNK):
                view = memoryview(chunk)
                while view and not self.go.is_set():
                    try:
                        n = conn.send(view)
                    except TimeoutError:
                        self.blocked.set()
                        continue
                    view = view[n:]
                    sent += n
                if self.go.is_set():
                    break
        except OSError:
            pass
        self.blocked.set()
        self.go.wait(DEADLINE)
        if self.ending == "reset":
            abortSocket(conn)
        self.results.put(sent)


# -- the proxy ---------------------------------------------------------------


@implementer(ISessionObserver)
class SessionRecorder:
    """
    Keeps every session the factory starts and ends.
    """

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[Any] = []

    def sessionStarted(self, session: Any) -> None:
        self.started.append(session)

    def eventCounted(self, session: Any, event: str, fields: dict[str, Any]) -> None:
        pass

    def sessionEnded(self, session: Any) -> None:
        self.ended.append(session)


class SplicingTestCase(TestCase):
    """
    Starts proxies and targets, and ends every session and thread they
    started, whatever the test did.
    """

    timeout = 120

    def setUp(self) -> None:
        if not splicing.AVAILABLE:
            raise SkipTest("splice(2) is not available here")
        self.recorder = SessionRecorder()
        self.factories: list[SOCKS5ServerFactory] = []
        self.ports: list[Any] = []
        self.targets: list[LoopbackTCPServer] = []
        self.sessionEvents: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._logged)
        self.addCleanup(globalLogPublisher.removeObserver, self._logged)
        self.addCleanup(self._stopEverything)

    def _logged(self, event: dict[str, Any]) -> None:
        if "sessionId" in event and "bytesUp" in event:
            self.sessionEvents.append(event)

    def startProxy(self, **kwargs: Any) -> int:
        """
        Listen on loopback with a L{SOCKS5ServerFactory} made with
        C{kwargs} (UDP and BIND off unless given); the port.  The factory
        is C{self.factory}.
        """
        options: dict[str, Any] = {
            "reactor": reactor,
            "udpOptions": False,
            "bindOptions": False,
            "handshakeTimeout": DEADLINE,
            "connectTimeout": DEADLINE,
            "closeTimeout": DEADLINE,
        }
        options.update(kwargs)
        factory = SOCKS5ServerFactory(**options)
        factory.observers.append(self.recorder)
        port = reactor.listenTCP(0, factory, interface=LOOPBACK_V4)
        self.factories.append(factory)
        self.ports.append(port)
        self.factory = factory
        return port.getHost().port

    def startTarget(self, target: LoopbackTCPServer) -> LoopbackTCPServer:
        self.targets.append(target)
        return target

    @inlineCallbacks
    def _stopEverything(self):  # type: ignore[no-untyped-def]
        for factory in self.factories:
            for protocol in list(factory.live):
                for end in (protocol, protocol.peer):
                    transport = getattr(end, "transport", None)
                    if transport is not None and not end._lost:
                        transport.abortConnection()
        try:
            yield waitUntil(
                lambda: not any(f.live for f in self.factories)
                and len(self.recorder.ended) == len(self.recorder.started),
                "every session to end",
            )
        finally:
            for port in self.ports:
                yield port.stopListening()
            for target in self.targets:
                # Blocking, but brief: it shuts the sockets its threads use.
                target.stop()
        self.assertEqual(spliceDescriptors(), [])

    def ended(self, count: int) -> Deferred[None]:
        """
        Fires once C{count} sessions have ended.
        """
        return waitUntil(lambda: len(self.recorder.ended) >= count, f"{count} sessions to end")

    def onlySession(self) -> Any:
        self.assertEqual(len(self.recorder.started), 1)
        return self.recorder.started[0]

    def countPythonRelay(self) -> list[int]:
        """
        Count the bytes the ordinary relay moves through Python
        (L{RelayEnd.relayData}) from now on; the list's one item is the
        count.
        """
        counted = [0]
        original = RelayEnd.relayData

        def relayData(end: RelayEnd, data: bytes) -> None:
            counted[0] += len(data)
            original(end, data)

        self.patch(RelayEnd, "relayData", relayData)
        return counted

    def sessionOfClientPort(self, factory: SOCKS5ServerFactory, clientPort: int) -> Any:
        for protocol in factory.live:
            if protocol.session.client == f"{LOOPBACK_V4}:{clientPort}":
                return protocol
        raise AssertionError(f"no live session from port {clientPort}")

    def closeByControl(self, factory: SOCKS5ServerFactory, clientPort: int) -> None:
        closeSession(self.sessionOfClientPort(factory, clientPort), "test")

    @inlineCallbacks
    def baselineFds(self):  # type: ignore[no-untyped-def]
        """
        This process's descriptors, taken while the reactor runs (trial
        starts and stops it around a test's waits, and a running reactor
        holds a descriptor or two more, such as its signal wakeup pipe).
        """
        yield sleep(0)
        return openFds()

    @inlineCallbacks
    def assertNoFdLeak(self, before: dict[int, str], slack: int = 0):  # type: ignore[no-untyped-def]
        """
        Wait until the process has no more descriptors than C{before}
        (plus C{slack}); fail naming the extra ones.
        """
        try:
            yield waitUntil(
                lambda: len(openFds()) <= len(before) + slack, "descriptors to close", 10
            )
        except AssertionError:
            now = openFds()
            extra = {fd: what for fd, what in now.items() if before.get(fd) != what}
            self.fail(f"{len(now) - len(before)} descriptors more than before: {extra}")
        self.assertEqual(spliceDescriptors(), [])

    @inlineCallbacks
    def splicedWithBytesForClient(self, port: int, target: Any):  # type: ignore[no-untyped-def]
        """
        Connect through the proxy to a L{BurstTarget}, ask for its burst
        (a byte, acknowledged with C{k}), read 4 MiB of it (enough for the
        relay to move to the splicer) and then nothing more, until the pipe
        to the client holds bytes.  Fires with the client's socket and the
        session; the socket is closed at cleanup.
        """
        sock, reply = yield inThread(
            lambda: socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
        )
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0, reply)

        def ask() -> None:
            sock.sendall(b"x")
            assert recvExactly(sock, 1) == b"k"
            recvExactly(sock, 4 * MiB)

        yield inThread(ask)
        session = self.onlySession()
        client = session.clientEnd
        self.assertIsNotNone(client.splicer)
        yield waitUntil(
            lambda: client.splicer.pendingTo(client), "the pipe to the client to hold bytes"
        )
        return sock, session

    def recordSideReasons(self, session: Any) -> dict[str, Any]:
        """
        From now on, record why each of C{session}'s connections was lost
        (C{"client"} and C{"target"}, to a L{Failure}).
        """
        reasons: dict[str, Any] = {}
        for name, end in (("client", session.clientEnd), ("target", session.outbound)):
            original = end.onClose

            def onClose(e: Any, reason: Any, name: str = name, original: Any = original) -> None:
                reasons[name] = reason
                original(e, reason)

            end.onClose = onClose
        return reasons


def duplex(sock: socket.socket, up: int, seed: int) -> tuple[str, int]:
    """
    Send C{up} bytes (seed C{seed}) and shut down the write side while
    reading until EOF; the digest and count received.
    """

    def send() -> None:
        sendStream(sock, up, seed)
        sock.shutdown(socket.SHUT_WR)

    sender = Background(send)
    received = drainDigest(sock, deadline=DEADLINE * 2)
    sender.wait()
    return received


def duplexClient(proxyPort: int, targetPort: int, up: int, seed: int) -> tuple[str, int]:
    """
    CONNECT, then L{duplex}.
    """
    sock, reply = socks5Connect(proxyPort, LOOPBACK_V4, targetPort, timeout=DEADLINE)
    try:
        assert reply.rep == 0, reply
        return duplex(sock, up, seed)
    finally:
        sock.close()


# -- the tests ---------------------------------------------------------------


class BulkTransferTests(SplicingTestCase):
    """
    Bulk transfers are spliced, and arrive intact either way.
    """

    @inlineCallbacks
    def test_splicedBothWays(self):  # type: ignore[no-untyped-def]
        """
        A plain CONNECT relay carrying 32 MiB each way at once moves to the
        splicer (the client protocol and the outbound one share one
        L{splicing.Splicer}); all but a small start of it never passes
        through Python's relay; both streams arrive intact (SHA-256), and
        the session's byte counts and its log line's up= and down= are
        exact.
        """
        size = 32 * MiB
        port = self.startProxy()
        target = self.startTarget(DuplexTarget(size, seed=2))
        python = self.countPythonRelay()

        down = yield inThread(lambda: duplexClient(port, target.port, size, 1))
        up = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(up, expected(size, 1))
        self.assertEqual(down, expected(size, 2))

        yield self.ended(1)
        session = self.onlySession()
        client = session.clientEnd
        self.assertIsInstance(client.splicer, splicing.Splicer)
        self.assertIs(session.outbound.splicer, client.splicer)
        self.assertLess(python[0], 8 * MiB)
        self.assertEqual((session.bytesUp, session.bytesDown), (size, size))
        [event] = self.sessionEvents
        self.assertEqual((event["bytesUp"], event["bytesDown"]), (size, size))
        self.assertIn(f" up={size} down={size} ", event["summary"])
        self.assertEqual(spliceDescriptors(), [])

    @inlineCallbacks
    def test_zeroCopyOff(self):  # type: ignore[no-untyped-def]
        """
        With C{zeroCopy=False} the same 32 MiB each way go through the
        ordinary relay (no splicer; every byte through Python), intact and
        counted exactly.
        """
        size = 32 * MiB
        port = self.startProxy(zeroCopy=False)
        target = self.startTarget(DuplexTarget(size, seed=4))
        python = self.countPythonRelay()

        down = yield inThread(lambda: duplexClient(port, target.port, size, 3))
        up = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(up, expected(size, 3))
        self.assertEqual(down, expected(size, 4))

        yield self.ended(1)
        session = self.onlySession()
        self.assertIsNone(session.clientEnd.splicer)
        self.assertIsNone(session.outbound.splicer)
        self.assertEqual(python[0], 2 * size)
        self.assertEqual((session.bytesUp, session.bytesDown), (size, size))

    @inlineCallbacks
    def test_throttledNotSpliced(self):  # type: ignore[no-untyped-def]
        """
        A session of a user with a bandwidth limit stays on the ordinary
        relay (the throttle must see every byte), and its bytes arrive
        intact; an unlimited user of the same proxy is spliced.
        """
        size = 2 * MiB
        portal = attributePortal(
            limited={"bandwidthUp": 200 * MiB, "bandwidthDown": 200 * MiB},
            free={},
        )
        port = self.startProxy(portal=portal)
        target = self.startTarget(DuplexTarget(size, seed=6))

        def client(user: str) -> tuple[str, int]:
            sock, reply = socks5Connect(
                port, LOOPBACK_V4, target.port, user, "pw", timeout=DEADLINE
            )
            try:
                assert reply.rep == 0, reply
                sender = Background(lambda: (sendStream(sock, size, 5), sock.shutdown(socket.SHUT_WR)))
                received = drainDigest(sock, deadline=DEADLINE)
                sender.wait()
                return received
            finally:
                sock.close()

        for user in ("limited", "free"):
            down = yield inThread(lambda user=user: client(user))
            up = yield inThread(lambda: target.waitResult(DEADLINE))
            self.assertEqual((user, up), (user, expected(size, 5)))
            self.assertEqual((user, down), (user, expected(size, 6)))
        yield self.ended(2)
        limited, free = self.recorder.started
        self.assertEqual((limited.user, free.user), ("limited", "free"))
        self.assertIsNone(limited.clientEnd.splicer)
        self.assertIsNotNone(free.clientEnd.splicer)
        self.assertEqual((limited.bytesUp, limited.bytesDown), (size, size))

    @inlineCallbacks
    def test_shortSessionNotSpliced(self):  # type: ignore[no-untyped-def]
        """
        A session that carries less than L{splicing.AFTER} bytes each way
        (a chat, not a bulk transfer) never gets a splicer, and its bytes
        arrive.
        """
        size = splicing.AFTER // 4
        port = self.startProxy()
        target = self.startTarget(DuplexTarget(size, seed=8))
        down = yield inThread(lambda: duplexClient(port, target.port, size, 7))
        up = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual((up, down), (expected(size, 7), expected(size, 8)))
        yield self.ended(1)
        self.assertIsNone(self.onlySession().clientEnd.splicer)

    @inlineCallbacks
    def test_serverWritesBeforeReading(self):  # type: ignore[no-untyped-def]
        """
        A target that sends its whole 16 MiB answer before it reads any of
        the client's 16 MiB (while the client sends and reads at once)
        still gets every byte, and so does the client: moving to the
        splicer half-way never leaves one direction stalled.
        """
        size = 16 * MiB

        class WriteFirst(LoopbackTCPServer):
            def handle(self, conn: socket.socket) -> None:
                sendStream(conn, size, 10)
                conn.shutdown(socket.SHUT_WR)
                self.results.put(drainDigest(conn, deadline=DEADLINE))

        port = self.startProxy()
        target = self.startTarget(WriteFirst(LOOPBACK_V4, timeout=DEADLINE))
        for attempt in range(3):
            down = yield inThread(lambda: duplexClient(port, target.port, size, 9))
            up = yield inThread(lambda: target.waitResult(DEADLINE))
            self.assertEqual((attempt, up), (attempt, expected(size, 9)))
            self.assertEqual((attempt, down), (attempt, expected(size, 10)))
        yield self.ended(3)


    @inlineCallbacks
    def test_failedMoveLeavesNoDirectionPaused(self):  # type: ignore[no-untyped-def]
        """
        Both directions of an ordinary relay are held back: the target
        reads nothing of the client's upload, and the client reads nothing
        of the target's 32 MiB download, so the proxy has paused the target.
        The client then empties its socket and, in the same reactor turn
        (before the reactor has seen the client's socket writable, as when
        its socket gains room while the reactor handles its readable
        event), the relay tries to move to the splicer, which cannot happen
        while bytes are queued on either side.
        The download must still finish, as on the ordinary relay: a failed
        move leaves no direction paused with nothing left to resume it.
        """
        size = 32 * MiB
        port = self.startProxy()
        go = threading.Event()

        class WriteFirst(LoopbackTCPServer):
            def handle(self, conn: socket.socket) -> None:
                go.wait(DEADLINE)
                sendStream(conn, size, 25)
                conn.shutdown(socket.SHUT_WR)
                self.results.put(drainDigest(conn, deadline=DEADLINE))

        target = self.startTarget(WriteFirst(LOOPBACK_V4, timeout=DEADLINE))
        # Small, fixed kernel buffers between the proxy and the target, so
        # that the upload held back is held in the proxy's transport.
        target._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock = yield inThread(lambda: socks5Via(port, target.port, rcvbuf=1 * MiB))
        self.addCleanup(sock.close)
        session = self.onlySession()
        client, outbound = session.clientEnd, session.outbound
        outbound.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        # And a send buffer towards the client with room, once emptied,
        # for all that its transport can hold.
        client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)

        # The upload writes through its own socket object (the same
        # connection), so that the short read timeouts set below for the
        # client's reads do not apply to its blocked sends.
        upSock = socket.socket(fileno=os.dup(sock.fileno()))
        upSock.settimeout(DEADLINE)
        self.addCleanup(upSock.close)
        uploader = Background(
            lambda: (sendStream(upSock, 4 * MiB, 26), upSock.shutdown(socket.SHUT_WR))
        )
        yield waitUntil(
            lambda: outbound.transport.producerPaused, "the client's upload to be held back"
        )
        go.set()
        yield waitUntil(
            lambda: client.transport.producerPaused, "the target's download to be held back"
        )
        self.assertIsNone(client.splicer)
        self.assertTrue(splicing.buffered(outbound.transport))

        def drainNow() -> bytes:
            got = bytearray()
            sock.settimeout(0.3)
            try:
                while True:
                    data = sock.recv(1024 * 1024)
                    if not data:
                        break
                    got += data
            except TimeoutError:
                pass
            return bytes(got)

        # With the reactor blocked, the client reads all its socket holds;
        # the proxy sends what it can of the bytes it buffered for the
        # client (as the reactor does when the socket is writable), which
        # leaves a little behind...
        first = Background(drainNow).wait()
        client.transport.doWrite()
        self.assertTrue(splicing.buffered(client.transport))
        # ... the client reads that too, and then the relay tries to move,
        # as if the client's readable event came before its writable one.
        first += Background(drainNow).wait()
        client._trySplicing()
        # Bytes are still queued on a side: the move is not made (it is
        # tried again with the next chunk).
        self.assertIsNone(client.splicer)

        def readRest() -> bytes:
            sock.settimeout(10.0)
            rest = bytearray()
            try:
                while True:
                    data = sock.recv(1024 * 1024)
                    if not data:
                        return bytes(rest)
                    rest += data
            except TimeoutError:
                raise AssertionError(
                    f"download stalled after {len(first) + len(rest)} of {size} bytes"
                ) from None

        rest = yield inThread(readRest)
        self.assertEqual(digestOf([first, rest]), expected(size, 25))
        # Waited for in a thread: the upload needs the reactor (the proxy
        # runs in it) to go on.
        yield inThread(uploader.wait)
        received = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(received, expected(4 * MiB, 26))
        yield self.ended(1)

    @inlineCallbacks
    def test_bindRelaySpliced(self):  # type: ignore[no-untyped-def]
        """
        A BIND relay (the peer connects to the proxy's listening port) is
        spliced like a CONNECT's, and 16 MiB each way arrive intact.
        """
        size = 16 * MiB
        port = self.startProxy(bindOptions=BindOptions(timeout=DEADLINE))

        def client() -> tuple[tuple[str, int], tuple[str, int]]:
            sock = socket.create_connection((LOOPBACK_V4, port), timeout=DEADLINE)
            try:
                sock.sendall(encodeGreeting())
                assert readMethodSelection(sock) == 0
                sock.sendall(encodeRequest(LOOPBACK_V4, 0, CMD_BIND))
                first = readReply(sock)
                assert first.rep == 0, first

                def peer() -> tuple[str, int]:
                    conn = socket.create_connection((LOOPBACK_V4, first.port), timeout=DEADLINE)
                    try:
                        return duplex(conn, size, 24)
                    finally:
                        conn.close()

                peerSide = Background(peer)
                second = readReply(sock)
                assert second.rep == 0, second
                atClient = duplex(sock, size, 23)
                return atClient, peerSide.wait(DEADLINE * 2)
            finally:
                sock.close()

        atClient, atPeer = yield inThread(client)
        self.assertEqual(atClient, expected(size, 24))
        self.assertEqual(atPeer, expected(size, 23))
        yield self.ended(1)
        session = self.onlySession()
        self.assertEqual(session.command, "BIND")
        self.assertIsNotNone(session.clientEnd.splicer)
        self.assertEqual((session.bytesUp, session.bytesDown), (size, size))


class HalfCloseTests(SplicingTestCase):
    """
    An EOF travels through a spliced relay as a half-close.
    """

    @inlineCallbacks
    def test_clientHalfClosesFirst(self):  # type: ignore[no-untyped-def]
        """
        The client sends 4 MiB and shuts down its write side; the target
        sees EOF after exactly those bytes, answers (the bytes reversed)
        and closes; the client receives the whole answer, then EOF.
        """
        size = 4 * MiB
        port = self.startProxy()
        target = self.startTarget(ReplyAfterEOFServer(timeout=DEADLINE))
        data = streamBytes(size, 11)

        def client() -> bytes:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                return recvUntilEOF(sock, limit=2 * size, deadline=DEADLINE)
            finally:
                sock.close()

        answer = yield inThread(client)
        received = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(len(received), size)
        self.assertTrue(received == data)
        self.assertEqual(len(answer), size)
        self.assertTrue(answer == data[::-1])
        yield self.ended(1)
        session = self.onlySession()
        self.assertIsNotNone(session.clientEnd.splicer)
        self.assertEqual((session.bytesUp, session.bytesDown), (size, size))
        self.assertEqual((session.reason, session.closedBy), ("client EOF", "client"))

    @inlineCallbacks
    def test_targetHalfClosesFirst(self):  # type: ignore[no-untyped-def]
        """
        The target sends 4 MiB and shuts down its write side; the client
        reads all of it, then EOF, while its own direction stays open: it
        then sends 1 MiB and shuts down, the target receives exactly that
        and EOF, and the proxy closes the client.
        """
        size, answerSize = 4 * MiB, 1 * MiB

        class BannerThenRead(LoopbackTCPServer):
            def handle(self, conn: socket.socket) -> None:
                sendStream(conn, size, 12)
                conn.shutdown(socket.SHUT_WR)
                self.results.put(drainDigest(conn, deadline=DEADLINE))

        port = self.startProxy()
        target = self.startTarget(BannerThenRead(LOOPBACK_V4, timeout=DEADLINE))

        def client() -> tuple[tuple[str, int], bytes]:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                banner = drainDigest(sock, deadline=DEADLINE)
                sendStream(sock, answerSize, 13)
                sock.shutdown(socket.SHUT_WR)
                return banner, recvUntilEOF(sock, deadline=DEADLINE)
            finally:
                sock.close()

        banner, rest = yield inThread(client)
        self.assertEqual(banner, expected(size, 12))
        self.assertEqual(rest, b"")
        received = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(received, expected(answerSize, 13))
        yield self.ended(1)
        session = self.onlySession()
        self.assertIsNotNone(session.clientEnd.splicer)
        self.assertEqual((session.bytesUp, session.bytesDown), (answerSize, size))
        self.assertEqual((session.reason, session.closedBy), ("target EOF", "target"))


class EarlyDataTests(SplicingTestCase):
    """
    Bytes a client pipelines behind its CONNECT request come first.
    """

    def _pipelined(self, port: int, targetPort: int, early: bytes, later: bytes) -> bytes:
        sock = socket.create_connection((LOOPBACK_V4, port), timeout=DEADLINE)
        try:
            # Greeting, request and early data in one send: one segment.
            sock.sendall(encodeGreeting() + encodeRequest(LOOPBACK_V4, targetPort) + early)
            assert readMethodSelection(sock) == 0
            reply = readReply(sock)
            assert reply.rep == 0, reply
            sock.sendall(later)
            sock.shutdown(socket.SHUT_WR)
            return recvUntilEOF(sock, deadline=DEADLINE)
        finally:
            sock.close()

    @inlineCallbacks
    def test_earlyDataFirst(self):  # type: ignore[no-untyped-def]
        """
        A few bytes sent in the same segment as the CONNECT request reach
        the target first and in order, followed by the 4 MiB the client
        sends after the reply (which the relay splices); the session counts
        them all.
        """
        port = self.startProxy()
        target = self.startTarget(ReplyAfterEOFServer(lambda data: b"", timeout=DEADLINE))
        early = b"EARLY:" + bytes(range(256)) * 4
        later = streamBytes(4 * MiB, 14)
        answer = yield inThread(lambda: self._pipelined(port, target.port, early, later))
        self.assertEqual(answer, b"")
        received = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(len(received), len(early) + len(later))
        self.assertTrue(received == early + later)
        yield self.ended(1)
        session = self.onlySession()
        self.assertIsNotNone(session.clientEnd.splicer)
        self.assertEqual(session.bytesUp, len(early) + len(later))

    @inlineCallbacks
    def test_largeEarlyData(self):  # type: ignore[no-untyped-def]
        """
        Early data larger than the move-to-splicer threshold (1 MiB sent
        with the request, before the reply is read) still reaches the
        target first, in order, before the bytes sent after the reply.
        """
        port = self.startProxy()
        target = self.startTarget(ReplyAfterEOFServer(lambda data: b"", timeout=DEADLINE))
        early = streamBytes(1 * MiB, 15)
        later = streamBytes(3 * MiB, 16)
        answer = yield inThread(lambda: self._pipelined(port, target.port, early, later))
        self.assertEqual(answer, b"")
        received = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(len(received), len(early) + len(later))
        self.assertTrue(received == early + later)
        yield self.ended(1)
        self.assertEqual(self.onlySession().bytesUp, len(early) + len(later))


class ResetTests(SplicingTestCase):
    """
    A side that resets ends a spliced session promptly and cleanly.
    """

    @inlineCallbacks
    def test_targetResetsMidStream(self):  # type: ignore[no-untyped-def]
        """
        The target resets (SO_LINGER 0) after 2 MiB while the client keeps
        sending: the client's connection is closed (EOF or reset) within
        the deadline, the session ends saying the target's connection was
        lost, and no descriptor is left behind.
        """
        port = self.startProxy()
        target = self.startTarget(AckTarget())
        before = yield self.baselineFds()

        def pushUntilBroken(sock: socket.socket) -> None:
            end = time.monotonic() + DEADLINE
            while time.monotonic() < end:
                try:
                    sock.send(bytes(65536))
                except (OSError, TimeoutError):
                    return

        def client() -> str:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                sock.sendall(b"t" + bytes(BULK - 1))
                assert recvExactly(sock, 1) == b"k"
                # Keep sending until the proxy closes the connection.
                pusher = Background(lambda: pushUntilBroken(sock))
                _, how = closedOrReset(sock)
                pusher.wait()
                return how
            finally:
                sock.close()

        how = yield inThread(client)
        self.assertIn(how, ("eof", "reset"))
        yield self.ended(1)
        session = self.onlySession()
        self.assertIsNotNone(session.clientEnd.splicer)
        self.assertEqual(session.closedBy, "target")
        self.assertTrue(
            session.reason.startswith("target connection lost"), session.reason
        )
        yield self.assertNoFdLeak(before)

    @inlineCallbacks
    def test_targetResetsWhileProxyOnlyWrites(self):  # type: ignore[no-untyped-def]
        """
        The target sends 4 MiB (the relay is spliced by then) and shuts
        down its write side, so the splicer never reads from it again; it
        reads nothing of what the client then pushes, so the splicer only
        waits to write to it; then the target resets.  The proxy takes
        that as the target's connection lost (no error logged, nothing
        aborted): the client's connection is closed (not aborted), and no
        descriptor is left.
        """
        size = 4 * MiB
        port = self.startProxy()
        target = self.startTarget(BurstTarget(size, 17, "eof-reset", ackAfter=1))
        before = yield self.baselineFds()
        sockets: list[socket.socket] = []

        def setUpStall() -> tuple[tuple[str, int], int]:
            sock = socks5Via(port, target.port)
            sockets.append(sock)
            sock.sendall(b"x")
            assert recvExactly(sock, 1) == b"k"
            received = drainDigest(sock, deadline=DEADLINE)
            return received, pushUntilStalled(sock, 1.0, 256 * MiB)

        received, pushed = yield inThread(setUpStall)
        self.assertEqual(received, expected(size, 17))
        self.assertLess(pushed, 256 * MiB)
        session = self.onlySession()
        client, outbound = session.clientEnd, session.outbound
        splicer = client.splicer
        self.assertIsNotNone(splicer)
        side = splicer.a if splicer.a.end is outbound else splicer.b
        yield waitUntil(
            lambda: outbound._readClosed and splicer.pendingTo(outbound) and side.writing,
            "the splicer to wait only to write to the target",
        )
        self.assertFalse(side.reading)
        reasons = self.recordSideReasons(session)
        target.release()
        sock = sockets[0]
        # The client's pushed bytes that the proxy never read make the
        # proxy's close a reset (TCP's rule).
        rest, how = yield inThread(lambda: closedOrReset(sock))
        sock.close()
        self.assertEqual(rest, b"")
        yield self.ended(1)
        self.assertEqual(
            {end: type(reason.value) for end, reason in reasons.items()},
            {"target": error.ConnectionLost, "client": error.ConnectionDone},
        )
        # The target's EOF came first.
        self.assertEqual((session.reason, session.closedBy), ("target EOF", "target"))
        self.assertEqual(abortTimers(), [])
        yield self.assertNoFdLeak(before)

    @inlineCallbacks
    def test_targetResetDrainsPipeToClient(self):  # type: ignore[no-untyped-def]
        """
        The target resets while the pipe to a client that reads nothing
        holds bytes; the proxy finds out when the client's next byte
        cannot be sent on.  The session ends saying the target's connection
        was lost, and the client still receives every byte the proxy had
        read from the target (a prefix of its stream), then EOF.
        """
        size = 64 * MiB
        port = self.startProxy()
        target = self.startTarget(BurstTarget(size, 22, "reset", ackAfter=1))
        before = yield self.baselineFds()
        sock, session = yield self.splicedWithBytesForClient(port, target)
        reasons = self.recordSideReasons(session)
        target.release()
        yield inThread(lambda: target.waitResult(DEADLINE))
        sock.sendall(b"?")
        received, how = yield inThread(lambda: closedOrReset(sock))
        sock.close()
        yield self.ended(1)
        self.assertEqual(
            {side: type(reason.value) for side, reason in reasons.items()},
            {"target": error.ConnectionLost, "client": error.ConnectionDone},
        )
        self.assertEqual(session.closedBy, "target")
        self.assertTrue(
            session.reason.startswith("target connection lost"), session.reason
        )
        self.assertEqual(how, "eof")
        self.assertEqual(1 + 4 * MiB + len(received), session.bytesDown)
        stream = streamBytes(size, 22)
        self.assertTrue(received == stream[4 * MiB : 4 * MiB + len(received)])
        yield self.assertNoFdLeak(before)

    @inlineCallbacks
    def _clientResetsHalfClosedDownload(self, zeroCopy: bool):  # type: ignore[no-untyped-def]
        port = self.startProxy(zeroCopy=zeroCopy)
        target = self.startTarget(BurstTarget(64 * MiB, 18, "hold", ackAfter=1))
        before = yield self.baselineFds()
        sockets: list[socket.socket] = []

        def download() -> None:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            sockets.append(sock)
            assert reply.rep == 0, reply
            sock.sendall(b"x")
            assert recvExactly(sock, 1) == b"k"
            # Read 4 MiB of the download (the relay is spliced by then)...
            recvExactly(sock, 4 * MiB)
            # ... then finish sending and stop reading.
            sock.shutdown(socket.SHUT_WR)

        yield inThread(download)
        session = self.onlySession()
        client = session.clientEnd
        if zeroCopy:
            self.assertIsNotNone(client.splicer)
        else:
            self.assertIsNone(client.splicer)

        def stalled() -> bool:
            if zeroCopy:
                waiting = client.splicer.pendingTo(client)
            else:
                waiting = splicing.buffered(client.transport)
            return bool(client._readClosed and waiting)

        yield waitUntil(
            stalled,
            "the client's EOF to pass and the download to stall",
        )
        reasons = self.recordSideReasons(session)
        abortSocket(sockets[0])
        yield self.ended(1)
        target.release()
        self.assertEqual(
            {side: type(reason.value) for side, reason in reasons.items()},
            {"client": error.ConnectionLost, "target": error.ConnectionDone},
        )
        # The EOF came first.
        self.assertEqual((session.reason, session.closedBy), ("client EOF", "client"))
        self.assertEqual(abortTimers(), [])
        yield self.assertNoFdLeak(before)

    def test_clientResetsHalfClosedDownload(self) -> Deferred[None]:
        """
        A client that has shut down its write side (the EOF has passed
        through the splicer) and stopped reading a spliced 64 MiB download
        resets its connection, while the splicer only waits to write to
        it.  The proxy takes that as the client's connection lost (no error
        logged), closes the target gently rather than aborting it, leaves
        no abort timer running for connections already gone, and no
        descriptor behind.
        """
        return self._clientResetsHalfClosedDownload(zeroCopy=True)

    def test_clientResetsHalfClosedDownloadOrdinaryRelay(self) -> Deferred[None]:
        """
        The same on the ordinary relay (C{zeroCopy=False}): the target,
        whose write side was already shut down, is closed at once, and no
        abort timer is left running for it.
        """
        return self._clientResetsHalfClosedDownload(zeroCopy=False)


class CloseTimerTests(SplicingTestCase):
    """
    A connection closed at once leaves no abort timer behind.
    """

    @inlineCallbacks
    def _controlCloseHalfClosed(self, zeroCopy: bool):  # type: ignore[no-untyped-def]
        port = self.startProxy(zeroCopy=zeroCopy)
        # Reads 2 MiB, answers, then neither reads nor sends nor closes.
        target = self.startTarget(BurstTarget(0, 0, "hold"))
        sockets: list[socket.socket] = []

        def halfClose() -> None:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            sockets.append(sock)
            assert reply.rep == 0, reply
            sock.sendall(bytes(BULK))
            assert recvExactly(sock, 1) == b"k"
            sock.shutdown(socket.SHUT_WR)

        yield inThread(halfClose)
        session = self.onlySession()
        client, outbound = session.clientEnd, session.outbound
        self.assertEqual(client.splicer is not None, zeroCopy)
        # The client's EOF has reached the target (whose write side is
        # shut down); the target says nothing and keeps its side open.
        yield waitUntil(lambda: outbound._writeClosed, "the EOF to reach the target")
        closeSession(client, "test")
        sock = sockets[0]
        self.assertEqual((yield inThread(lambda: closedOrReset(sock))), (b"", "eof"))
        sock.close()
        yield self.ended(1)
        target.release()
        self.assertEqual(session.reason, "client EOF")
        self.assertEqual(abortTimers(), [])

    def test_controlCloseHalfClosedSpliced(self) -> Deferred[None]:
        """
        A spliced session whose client has shut down its write side (so the
        target's write side is shut down too) is closed through the
        control API: both connections close, and no abort timer is left
        running for connections already closed.
        """
        return self._controlCloseHalfClosed(zeroCopy=True)

    def test_controlCloseHalfClosedOrdinary(self) -> Deferred[None]:
        """
        The same on the ordinary relay (C{zeroCopy=False}).
        """
        return self._controlCloseHalfClosed(zeroCopy=False)


class BackpressureTests(SplicingTestCase):
    """
    A spliced relay holds at most a pipe's worth per direction.
    """

    @inlineCallbacks
    def test_stalledTargetStopsTheProxy(self):  # type: ignore[no-untyped-def]
        """
        The client pushes 200 MiB at a target that reads the first 2 MiB
        (the relay is spliced by then) and then nothing: the client's
        sends stall with the bytes counted as relayed bounded by the
        kernel's buffers on the target's side plus one pipe, nothing
        buffered in either transport, and no growth of the process's
        memory; once the target reads again, all 200 MiB arrive intact.
        """
        total = 200 * MiB
        first = 2 * MiB
        rcvbuf = 256 * 1024
        resume = threading.Event()

        class Stalling(LoopbackTCPServer):
            def handle(self, conn: socket.socket) -> None:
                h = hashlib.sha256()
                got = 0
                buf = bytearray(1024 * 1024)
                while got < first:
                    n = conn.recv_into(buf, min(len(buf), first - got))
                    if not n:
                        raise EOFError(got)
                    h.update(buf[:n])
                    got += n
                self.results.put(got)
                resume.wait(DEADLINE * 2)
                while True:
                    n = conn.recv_into(buf)
                    if not n:
                        break
                    h.update(buf[:n])
                    got += n
                self.results.put((h.hexdigest(), got))

        port = self.startProxy()
        target = self.startTarget(Stalling(LOOPBACK_V4, timeout=DEADLINE * 2))
        # Accepted sockets inherit the listener's receive buffer: a fixed
        # size that autotuning cannot grow.
        target._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        block = streamBytes(1 * MiB, 19)

        def blockAt(i: int) -> bytes:
            return struct.pack("!Q", i) + block[8:]

        stalled = threading.Event()
        progress = {"sent": 0}

        def push() -> tuple[str, int]:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                h = hashlib.sha256()
                sent = 0
                # A send that makes no progress for a second: stalled.
                sock.settimeout(1.0)
                i = 0
                view = memoryview(blockAt(0))
                while sent < total:
                    try:
                        n = sock.send(view)
                    except TimeoutError:
                        stalled.set()
                        sock.settimeout(DEADLINE)
                        continue
                    h.update(view[:n])
                    sent += n
                    progress["sent"] = sent
                    view = view[n:]
                    if not view and sent < total:
                        i += 1
                        view = memoryview(blockAt(i))
                sock.shutdown(socket.SHUT_WR)
                assert recvUntilEOF(sock, deadline=DEADLINE) == b""
                return h.hexdigest(), sent
            finally:
                sock.close()

        rssBefore = rss()
        pusher = inThread(push)
        got = yield inThread(lambda: target.waitResult(DEADLINE))
        self.assertEqual(got, first)
        yield waitUntil(stalled.is_set, "the client's sends to stall", DEADLINE * 2)
        session = self.onlySession()
        client, outbound = session.clientEnd, session.outbound
        self.assertIsNotNone(client.splicer)
        # Stalled means stalled: the proxy reads nothing more.
        relayed = yield steady(lambda: client.bytesIn, "the relayed count to stop moving")
        # Past what the target read: the proxy's send buffer (at most
        # tcp_wmem's maximum), the target's receive buffer (SO_RCVBUF is
        # doubled by the kernel) and one pipe, with a MiB to spare.
        wmem, rmem = _sysctlMax("tcp_wmem"), _sysctlMax("tcp_rmem")
        bound = wmem + 2 * rcvbuf + splicing.CHUNK + MiB
        self.assertLessEqual(relayed - first, bound)
        # What the client got rid of: that, plus its own send buffer and
        # the proxy's receive buffer.
        accepted = progress["sent"]
        self.assertLessEqual(accepted - first, bound + wmem + rmem)
        self.assertLess(accepted, total // 2)
        self.assertEqual(splicing.buffered(client.transport), 0)
        self.assertEqual(splicing.buffered(outbound.transport), 0)
        self.assertLess(rss() - rssBefore, 32 * MiB)

        resume.set()
        sent = yield pusher
        received = yield inThread(lambda: target.waitResult(DEADLINE * 2))
        self.assertEqual(sent[1], total)
        self.assertEqual(received, sent)
        yield self.ended(1)
        self.assertEqual(session.bytesUp, total)


class DescriptorLeakTests(SplicingTestCase):
    """
    Spliced sessions give back every descriptor however they end.
    """

    @inlineCallbacks
    def test_noLeakAfterManySessions(self):  # type: ignore[no-untyped-def]
        """
        200 spliced sessions (each carries 2 MiB before it ends), 40 each
        ended by: an orderly close, a client reset, a target reset, the
        idle timeout, and a control-API close.  Afterwards the process has
        the descriptors it had before (no socket duplicate, no pipe left),
        no splicer descriptor is registered with the reactor, and every
        session ended the way it was ended.
        """
        port = self.startProxy()
        factory = self.factory
        idlePort = self.startProxy(idleTimeout=0.5)
        target = self.startTarget(AckTarget())
        yield sleep(0)
        before = yield self.baselineFds()
        pipesBefore = sum(1 for what in before.values() if what.startswith("pipe:"))

        def session(mode: bytes) -> None:
            proxyPort = idlePort if mode == b"i" else port
            sock, reply = socks5Connect(proxyPort, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                sock.sendall(mode + bytes(BULK - 1))
                assert recvExactly(sock, 1) == b"k"
                if mode == b"c":
                    abortSocket(sock)
                    return
                if mode == b"n":
                    sock.shutdown(socket.SHUT_WR)
                elif mode == b"x":
                    blockingCallFromThread(
                        reactor, self.closeByControl, factory, sock.getsockname()[1]
                    )
                data, how = closedOrReset(sock)
                assert data == b"", data
                assert how == "eof" or mode == b"t", (mode, how)
            finally:
                sock.close()

        perMode = 40
        # The idle ones mostly wait: all at once.
        yield inThreads([lambda: session(b"i")] * perMode, perMode)
        others = [lambda m=m: session(m) for _ in range(perMode) for m in (b"n", b"c", b"t", b"x")]
        yield inThreads(others, 8)
        yield self.ended(5 * perMode)

        sessions = self.recorder.ended
        spliced = [s for s in sessions if s.clientEnd.splicer is not None]
        self.assertGreaterEqual(len(spliced), 0.9 * len(sessions))
        reasons = sorted({s.reason.split(":")[0] for s in sessions})
        self.assertEqual(
            reasons,
            sorted({
                "client EOF",
                "client connection lost",
                "target connection lost",
                "idle timeout",
                "closed by control request from test",
            }),
        )
        self.assertEqual(len([s for s in sessions if s.reason == "idle timeout"]), perMode)

        yield self.assertNoFdLeak(before)
        pipesAfter = sum(1 for what in openFds().values() if what.startswith("pipe:"))
        self.assertEqual(pipesAfter, pipesBefore)


class IdleTimeoutTests(SplicingTestCase):
    """
    The idle timeout counts the splicer's activity.
    """

    @inlineCallbacks
    def test_quietSplicedRelayTimesOut(self):  # type: ignore[no-untyped-def]
        """
        A spliced relay that goes quiet is closed by the idle timeout (1 s):
        the client sees EOF no sooner than about a timeout after the last
        byte moved, and the session's reason is the idle timeout.
        """
        port = self.startProxy(idleTimeout=1.0)
        target = self.startTarget(AckTarget())

        def client() -> float:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                sock.sendall(b"q" + bytes(BULK - 1))
                assert recvExactly(sock, 1) == b"k"
                quiet = time.monotonic()
                data, how = closedOrReset(sock)
                assert (data, how) == (b"", "eof"), (data, how)
                return time.monotonic() - quiet
            finally:
                sock.close()

        elapsed = yield inThread(client)
        self.assertGreaterEqual(elapsed, 0.8)
        yield self.ended(1)
        session = self.onlySession()
        self.assertIsNotNone(session.clientEnd.splicer)
        self.assertEqual((session.reason, session.closedBy), ("idle timeout", "proxy"))

    @inlineCallbacks
    def test_movingBytesKeepSplicedRelayAlive(self):  # type: ignore[no-untyped-def]
        """
        A spliced relay through which a byte goes and comes back every
        0.05 s, for three times the idle timeout (0.6 s), stays open; it
        ends when the client closes, not by the timeout.
        """
        port = self.startProxy(idleTimeout=0.6)
        target = self.startTarget(AckTarget())
        spliced: list[bool] = []

        def client() -> None:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                sock.sendall(b"e" + bytes(BULK - 1))
                assert recvExactly(sock, 1) == b"k"
                spliced.append(
                    blockingCallFromThread(
                        reactor, lambda: self.onlySession().clientEnd.splicer is not None
                    )
                )
                end = time.monotonic() + 1.8
                while time.monotonic() < end:
                    sock.sendall(b"p")
                    assert recvExactly(sock, 1) == b"p"
                    time.sleep(0.05)
                sock.shutdown(socket.SHUT_WR)
                assert closedOrReset(sock) == (b"", "eof")
            finally:
                sock.close()

        yield inThread(client)
        self.assertEqual(spliced, [True])
        yield self.ended(1)
        session = self.onlySession()
        self.assertEqual((session.reason, session.closedBy), ("client EOF", "client"))


class DrainTests(SplicingTestCase):
    """
    Bytes in a pipe when a side goes still reach the other side.
    """

    @inlineCallbacks
    def test_burstThenClose(self):  # type: ignore[no-untyped-def]
        """
        The target sends an 8 MiB burst and closes at once, while the
        client reads nothing for half a second: the client still receives
        every byte, then EOF.
        """
        size = 8 * MiB
        port = self.startProxy()
        target = self.startTarget(BurstTarget(size, 20, "close", ackAfter=1))

        def client() -> tuple[str, int]:
            sock, reply = socks5Connect(port, LOOPBACK_V4, target.port, timeout=DEADLINE)
            try:
                assert reply.rep == 0, reply
                sock.sendall(b"x")
                assert recvExactly(sock, 1) == b"k"
                time.sleep(0.5)
                return drainDigest(sock, deadline=DEADLINE)
            finally:
                sock.close()

        received = yield inThread(client)
        self.assertEqual(received, expected(size, 20))
        self.assertEqual(target.waitResult(1), expected(size, 20))
        yield self.ended(1)
        session = self.onlySession()
        self.assertIsNotNone(session.clientEnd.splicer)
        self.assertEqual(session.bytesDown, size + 1)
        self.assertEqual((session.reason, session.closedBy), ("target EOF", "target"))

    @inlineCallbacks
    def test_controlCloseDrainsPipe(self):  # type: ignore[no-untyped-def]
        """
        A session closed through the control API while the pipe to a
        client that reads nothing holds bytes: the client then receives
        exactly the bytes the proxy read from the target (a prefix of the
        target's stream), then EOF.
        """
        size = 64 * MiB
        port = self.startProxy()
        target = self.startTarget(BurstTarget(size, 21, "hold", ackAfter=1))
        sock, session = yield self.splicedWithBytesForClient(port, target)
        client = session.clientEnd
        closeSession(client, "test")
        target.release()
        received, how = yield inThread(lambda: closedOrReset(sock))
        sock.close()
        yield self.ended(1)
        self.assertEqual(how, "eof")
        # The 'k' and the 4 MiB read before, then the rest.
        self.assertEqual(1 + 4 * MiB + len(received), session.bytesDown)
        stream = streamBytes(size, 21)
        self.assertTrue(received == stream[4 * MiB : 4 * MiB + len(received)])
        self.assertEqual(session.reason, "closed by control request from test")
