# -*- test-case-name: tests.test_e2e_bind -*-
"""
End-to-end BIND: the real C{twistd socks5} process, driven by raw sockets
and by an unmodified bind()/listen()/accept() program under Dante's
C{socksify}.

Every address is on loopback: the client and the expected peer use
127.0.0.1, and a second "host" that is not expected uses 127.0.0.2.
"""

from __future__ import annotations

import os
import queue
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

from tests.e2e import (
    socksifySetup,
    LOOPBACK_V4,
    REP_GENERAL_FAILURE,
    REP_SUCCEEDED,
    SOCKET_TIMEOUT,
    ProxyTestCase,
    SOCKS5Session,
    SOCKSReply,
    abortSocket,
    encodeRequest,
    readReply,
    recvExactly,
    recvUntilEOF,
)

CMD_BIND = 0x02
REP_TTL_EXPIRED = 0x06

#: Seconds any wait for the proxy to close a port may take.
PORT_CLOSE_DEADLINE = 5.0

def waitRefused(host: str, port: int, deadline: float = PORT_CLOSE_DEADLINE) -> None:
    """
    Connect to C{host}:C{port} until the connection is refused (nothing
    listens there any more); L{AssertionError} if that takes longer than
    C{deadline} seconds.  A connection that gets through (the listening
    socket is not closed yet) must be closed by the proxy without a byte.
    """
    end = time.monotonic() + deadline
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(SOCKET_TIMEOUT)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            # Caught the listening socket as it closed: try again.
            s.close()
            continue
        else:
            try:
                data = s.recv(1)
            except ConnectionResetError:
                data = b""
            if data:
                raise AssertionError(f"{host}:{port} sent {data!r}")
        finally:
            s.close()
        if time.monotonic() > end:
            raise AssertionError(f"{host}:{port} still accepts after {deadline}s")
        time.sleep(0.05)


def peerSocket(sourceHost: str = LOOPBACK_V4) -> socket.socket:
    """
    A TCP socket bound to C{sourceHost} (a loopback address), with a
    timeout, ready to connect.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(SOCKET_TIMEOUT)
    s.bind((sourceHost, 0))
    return s


def freePortRange(size: int) -> tuple[int, int]:
    """
    C{size} consecutive TCP ports on 127.0.0.1, below the usual ephemeral
    range, that nothing is bound to right now; the start is random so that
    test runs going on at the same time do not pick the same ports.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000)
        probes = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(s)
                s.bind((LOOPBACK_V4, port))
            return base, base + size - 1
        except OSError:
            continue
        finally:
            for s in probes:
                s.close()
    raise AssertionError(f"no {size} free consecutive ports on 127.0.0.1")


class BindTestCase(ProxyTestCase):
    """
    Helpers to send BIND requests to the class's proxy.
    """

    def bind(
        self, host: str = "0.0.0.0", port: int = 0
    ) -> tuple[SOCKS5Session, SOCKSReply]:
        """
        Greet, send BIND for the expected peer C{host}:C{port}; the session
        and the first reply.
        """
        session = SOCKS5Session(self.proxy.port)
        self.addCleanup(session.close)
        session.clientPort = session.sock.getsockname()[1]  # type: ignore[attr-defined]
        self.assertEqual(session.greet(), 0)
        session.sock.sendall(encodeRequest(host, port, CMD_BIND))
        return session, readReply(session.sock)

    def assertListening(self, first: SOCKSReply) -> None:
        """
        The first reply is a success naming 127.0.0.1 (the address the
        client connected to, not the wildcard) and a real port.
        """
        self.assertEqual(first.rep, REP_SUCCEEDED, first)
        self.assertEqual(first.host, LOOPBACK_V4, first)
        self.assertNotEqual(first.port, 0, first)
        self.assertNotEqual(first.port, self.proxy.port, first)

    def sessionLine(self, mark: int, session: SOCKS5Session) -> str:
        """
        The end-of-session line, logged after C{mark}, of the BIND that
        C{session} made.
        """
        return self.proxy.waitForLine(
            rf"session ended: .*client=127\.0\.0\.1:{session.clientPort} "
            r".*command=BIND",
            10,
            since=mark,
        ).string


class BindFlowTests(BindTestCase):
    """
    BIND with raw sockets: the two replies, the expected-peer rule, the
    relay, and the listening port's release.
    """

    def test_fullFlow(self) -> None:
        """
        The first reply names 127.0.0.1 and a port; a peer connecting there
        is named (address and port) by the second reply; data flows both
        ways; an EOF from either side passes through while the other
        direction keeps working; afterwards the port is closed.
        """
        mark = self.proxy.mark()
        session, first = self.bind("127.0.0.1", 0)
        self.assertListening(first)
        peer = peerSocket()
        self.addCleanup(peer.close)
        peer.connect((first.host, first.port))
        second = readReply(session.sock)
        self.assertEqual(second.rep, REP_SUCCEEDED, second)
        self.assertEqual((second.host, second.port), peer.getsockname())

        session.sock.sendall(b"from the client")
        self.assertEqual(recvExactly(peer, 15), b"from the client")
        peer.sendall(b"from the peer")
        self.assertEqual(recvExactly(session.sock, 13), b"from the peer")

        peer.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilEOF(session.sock, deadline=10), b"")
        session.sock.sendall(b"after the peer's EOF")
        self.assertEqual(recvExactly(peer, 20), b"after the peer's EOF")
        session.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilEOF(peer, deadline=10), b"")

        line = self.sessionLine(mark, session)
        self.assertIn("reply=0x00", line)
        self.assertIn("expected=127.0.0.1 ", line)
        self.assertIn(f"peer=127.0.0.1:{peer.getsockname()[1]} ", line)
        self.assertIn("up=35 down=13", line)
        waitRefused(first.host, first.port)

    def test_dataSentWhileWaiting(self) -> None:
        """
        Bytes the client sends before the peer connects reach the peer right
        after the second reply.
        """
        session, first = self.bind()
        session.sock.sendall(b"sent early")
        peer = peerSocket()
        self.addCleanup(peer.close)
        peer.connect((first.host, first.port))
        self.assertEqual(readReply(session.sock).rep, REP_SUCCEEDED)
        self.assertEqual(recvExactly(peer, 10), b"sent early")

    def test_wrongPeerThenRightPeer(self) -> None:
        """
        With 127.0.0.1 expected, a connection from 127.0.0.2 is closed at
        once without a second reply and is logged; the proxy keeps waiting,
        and a connection from 127.0.0.1 is then accepted and relayed.
        """
        mark = self.proxy.mark()
        session, first = self.bind("127.0.0.1", 0)
        self.assertListening(first)
        stranger = peerSocket("127.0.0.2")
        self.addCleanup(stranger.close)
        stranger.connect((first.host, first.port))
        try:
            self.assertEqual(stranger.recv(1), b"")
        except ConnectionResetError:
            pass
        self.proxy.waitForLine(r"closed a connection from 127\.0\.0\.2:", 10, since=mark)
        session.sock.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            session.sock.recv(1)
        session.sock.settimeout(SOCKET_TIMEOUT)

        peer = peerSocket()
        self.addCleanup(peer.close)
        peer.connect((first.host, first.port))
        second = readReply(session.sock)
        self.assertEqual((second.rep, second.host, second.port), (0, *peer.getsockname()))
        peer.sendall(b"right peer")
        self.assertEqual(recvExactly(session.sock, 10), b"right peer")
        session.close()
        peer.close()
        self.assertIn("rejected=1", self.sessionLine(mark, session))
        waitRefused(first.host, first.port)

    def test_namedPeer(self) -> None:
        """
        An expected peer given by name (C{localhost}) is resolved by the
        proxy and a connection from its address is accepted.
        """
        session, first = self.bind("localhost", 0)
        self.assertListening(first)
        peer = peerSocket()
        self.addCleanup(peer.close)
        peer.connect((first.host, first.port))
        second = readReply(session.sock)
        self.assertEqual((second.rep, second.host, second.port), (0, *peer.getsockname()))

    def test_onlyOneConnection(self) -> None:
        """
        Once a peer is accepted, the port is closed: a second connection to
        it is refused.
        """
        session, first = self.bind()
        peer = peerSocket()
        self.addCleanup(peer.close)
        peer.connect((first.host, first.port))
        self.assertEqual(readReply(session.sock).rep, REP_SUCCEEDED)
        waitRefused(first.host, first.port)

    def test_clientClosesWhileWaiting(self) -> None:
        """
        The client closing its connection (FIN) while the proxy waits for
        the peer closes the listening port at once; nothing is relayed.
        """
        mark = self.proxy.mark()
        session, first = self.bind("127.0.0.1", 0)
        self.assertListening(first)
        session.close()
        waitRefused(first.host, first.port)
        line = self.sessionLine(mark, session)
        self.assertIn("peer=- ", line)
        self.assertIn("reason=client closed while waiting for the BIND peer", line)

    def test_clientAbortsWhileWaiting(self) -> None:
        """
        The client's connection being reset (RST) while the proxy waits for
        the peer closes the listening port at once.
        """
        mark = self.proxy.mark()
        session, first = self.bind("127.0.0.1", 0)
        self.assertListening(first)
        abortSocket(session.sock)
        waitRefused(first.host, first.port)
        self.assertIn("peer=- ", self.sessionLine(mark, session))

    def test_twoBindsTwoPorts(self) -> None:
        """
        Two BINDs at once get two different ports, and each peer reaches its
        own client.
        """
        a, firstA = self.bind()
        b, firstB = self.bind()
        self.assertNotEqual(firstA.port, firstB.port)
        for session, first, payload in ((b, firstB, b"to b"), (a, firstA, b"to a")):
            peer = peerSocket()
            self.addCleanup(peer.close)
            peer.connect((first.host, first.port))
            self.assertEqual(readReply(session.sock).rep, REP_SUCCEEDED)
            peer.sendall(payload)
            self.assertEqual(recvExactly(session.sock, len(payload)), payload)


class BindTimeoutTests(BindTestCase):
    """
    C{--bind-timeout}: no peer in time means reply 0x06 and a closed port.
    """

    proxyArgs = ("--bind-timeout", "1")

    def test_timeout(self) -> None:
        """
        No peer within one second: the client gets reply 0x06 and EOF, the
        announced port is then refused, and the session is logged as such.
        """
        mark = self.proxy.mark()
        session, first = self.bind("127.0.0.1", 0)
        self.assertListening(first)
        started = time.monotonic()
        second = readReply(session.sock)
        self.assertEqual(second.rep, REP_TTL_EXPIRED, second)
        self.assertGreater(time.monotonic() - started, 0.5)
        try:
            rest = recvUntilEOF(session.sock, deadline=10)
        except ConnectionResetError:
            rest = b""
        self.assertEqual(rest, b"")
        waitRefused(first.host, first.port)
        line = self.sessionLine(mark, session)
        self.assertIn("reply=0x06", line)
        self.assertIn("peer=- ", line)

    def test_wrongPeerDoesNotExtend(self) -> None:
        """
        A refused connection does not reset the wait: the timeout still
        comes, and then the port is closed.
        """
        session, first = self.bind("127.0.0.1", 0)
        stranger = peerSocket("127.0.0.2")
        self.addCleanup(stranger.close)
        stranger.connect((first.host, first.port))
        self.assertEqual(readReply(session.sock).rep, REP_TTL_EXPIRED)
        waitRefused(first.host, first.port)


class BindPortRangeTests(BindTestCase):
    """
    C{--bind-ports}: listening ports come from the range; when all are
    taken, BIND fails with 0x01.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.low, cls.high = freePortRange(2)
        cls.proxyArgs = ("--bind-ports", f"{cls.low}-{cls.high}")
        super().setUpClass()

    def test_rangeHonouredAndExhausted(self) -> None:
        """
        Two BINDs get the two ports of a two-port range; a third gets reply
        0x01 and is closed; once a port is free again, a new BIND gets it.
        """
        a, firstA = self.bind()
        _b, firstB = self.bind()
        self.assertEqual(
            sorted([firstA.port, firstB.port]), [self.low, self.high]
        )
        c, firstC = self.bind()
        self.assertEqual(firstC.rep, REP_GENERAL_FAILURE, firstC)
        self.assertEqual(recvUntilEOF(c.sock, deadline=10), b"")
        a.close()
        waitRefused(LOOPBACK_V4, firstA.port)
        _d, firstD = self.bind()
        self.assertEqual((firstD.rep, firstD.port), (REP_SUCCEEDED, firstA.port))


#: The program run under socksify: bind(), listen(), getsockname() (Dante
#: answers with the address the proxy announced), accept(), then an echo in
#: upper case and a half-close.  Python's socket.accept() calls accept4(),
#: which Dante's library does not wrap, so accept() is called through ctypes
#: (it resolves to Dante's accept() first, as a C program's would).
BIND_PROGRAM = """\
import ctypes, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("0.0.0.0", 0))
s.listen(1)
print("LISTENING %s %d" % s.getsockname(), flush=True)
address = ctypes.create_string_buffer(128)
length = ctypes.c_uint32(128)
fd = libc.accept(s.fileno(), address, ctypes.byref(length))
if fd < 0:
    raise OSError(ctypes.get_errno(), "accept")
c = socket.socket(fileno=fd)
c.settimeout(20)
print("ACCEPTED %s %d" % c.getpeername()[:2], flush=True)
data = b""
while not data.endswith(b"\\n"):
    chunk = c.recv(100)
    if not chunk:
        break
    data += chunk
c.sendall(data.upper())
c.shutdown(socket.SHUT_WR)
rest = c.recv(100)
print("DONE %r %r" % (data, rest), flush=True)
"""


class SocksifyBindTests(BindTestCase):
    """
    A real client: Dante's C{socksify} runs an unmodified program that
    calls bind(), listen() and accept(), and its peer reaches it through
    the proxy.
    """

    proxyArgs = ("--bind-timeout", "30")

    def test_socksifyBindListenAccept(self) -> None:
        """
        Under socksify, the program's bind() becomes a BIND request to the
        proxy and getsockname() returns the announced address; a peer that
        connects there is accepted by the program, which echoes its line in
        upper case and half-closes; the proxy logs the BIND with that peer.
        """
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        socksify, env = socksifySetup(tmp.name, self.proxy.port, "bind connect")
        program = os.path.join(tmp.name, "bindaccept.py")
        with open(program, "w") as f:
            f.write(BIND_PROGRAM)
        mark = self.proxy.mark()
        errorPath = os.path.join(tmp.name, "stderr")
        with open(errorPath, "wb") as errors:
            proc = subprocess.Popen(
                [socksify, sys.executable, program],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
            )
        self.addCleanup(self._reap, proc)

        def stderr() -> str:
            with open(errorPath, "rb") as f:
                return f.read().decode(errors="replace")

        lines: queue.Queue[str] = queue.Queue()
        def readLines() -> None:
            for raw in proc.stdout:  # type: ignore[union-attr]
                lines.put(raw.decode())

        reader = threading.Thread(target=readLines, daemon=True)
        reader.start()

        def nextLine() -> str:
            try:
                return lines.get(timeout=30)
            except queue.Empty:
                raise AssertionError(
                    f"the socksified program printed nothing in 30s: {stderr()}"
                ) from None

        listening = nextLine()
        match = re.match(r"LISTENING (\S+) (\d+)", listening)
        self.assertIsNotNone(match, listening + stderr())
        host, port = match.group(1), int(match.group(2))
        self.assertEqual(host, LOOPBACK_V4)

        peer = peerSocket()
        self.addCleanup(peer.close)
        peer.connect((host, port))
        peerPort = peer.getsockname()[1]
        self.assertEqual(nextLine().split(), ["ACCEPTED", LOOPBACK_V4, str(peerPort)])
        peer.sendall(b"hello through dante\n")
        self.assertEqual(recvUntilEOF(peer, deadline=20), b"HELLO THROUGH DANTE\n")
        peer.shutdown(socket.SHUT_WR)
        self.assertEqual(nextLine().strip(), "DONE b'hello through dante\\n' b''")
        self.assertEqual(proc.wait(30), 0, stderr())
        line = self.proxy.waitForLine(
            rf"session ended.*command=BIND.*peer=127\.0\.0\.1:{peerPort} ", 10, since=mark
        ).string
        self.assertIn(f"peer=127.0.0.1:{peerPort} ", line)
        self.assertIn("expected=any ", line)
        waitRefused(host, port)

    def _reap(self, proc: subprocess.Popen) -> None:
        """
        Kill the program this test started if it is still running.
        """
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
