# -*- test-case-name: tests.test_e2e_throttle -*-
"""
End-to-end per-user bandwidth and session caps: a real proxy process (a
C{twistd -y} application built around L{SOCKS5ServerFactory}, with a cred
realm, written here, whose avatars carry the policy attributes) and
loopback targets.

Two concurrent downloads of one user share the user's download limit: their
total rate stays within 20% of it.  With the shipped configuration (the
real C{twistd socks5 --auth users:FILE --config etc/socksrelay.toml}), a
download, ten sequential downloads, three overlapping ones, an upload and a
plain-HTTP forwarded download each move at the user's
limit within 20%, and UDP datagrams over it are dropped.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
import time
import unittest

import bcrypt
import socks

from socksrelay.users import UserRecord, writeUsers
from tests.e2e import (
    LOOPBACK_V4,
    REPO_ROOT,
    HTTPTarget,
    ProxyProcess,
    SinkServer,
    SourceServer,
    TwistdProcess,
    UDPEchoServer,
    digestOf,
    drainDigest,
    pseudoRandomBytes,
    runCurl,
    socks5Connect,
)

#: alice's download limit, bytes per second.
LIMIT = 1_000_000
#: Each of two sessions downloads this much (3 MB in all).
PER_SESSION = 1_500_000
#: The burst: a tenth of a second's worth, the 64 KiB minimum being less.
BURST = LIMIT // 10

TAC = """
from zope.interface import implementer

from twisted.application import service
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor

from socksrelay.interfaces import ISOCKSUser
from socksrelay.rules import Policy, Rule
from socksrelay.server import SOCKS5ServerFactory

USERS = {
    "alice": {"bandwidthDown": %(limit)d, "maxSessions": 2},
    # The bandwidth test's user: no session cap, so that it cannot collide
    # with alice's sessions of the cap test, whose release may still be on
    # its way.
    "carol": {"bandwidthDown": %(limit)d},
    "bob": {},
}


class Avatar:
    def __init__(self, name, bandwidthDown=None, maxSessions=None):
        self.username = name
        self.groups = frozenset()
        self.bandwidthUp = None
        self.bandwidthDown = bandwidthDown
        self.maxSessions = maxSessions
        self.external = None


@implementer(IRealm)
class Realm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        return ISOCKSUser, Avatar(name, **USERS[name]), lambda: None


portal = Portal(
    Realm(),
    [InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw", bob=b"pw", carol=b"pw")],
)
factory = SOCKS5ServerFactory(
    portal=portal, reactor=reactor, policy=Policy([Rule("allow", "all")])
)
factory.throttles.burstSeconds = %(burst)r


def listen():
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print("throttle-e2e listening on port %%d" %% port.getHost().port, flush=True)


reactor.callWhenRunning(listen)
application = service.Application("throttle-e2e")
"""


class ThrottleProxy(TwistdProcess):
    """
    The proxy application of this module in a C{twistd -n -y} process.
    """

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, "throttle.tac")
        with open(path, "w") as f:
            f.write(TAC % {"limit": LIMIT, "burst": BURST / LIMIT})
        super().__init__(["-y", path], r"throttle-e2e listening on port (\d+)")
        self.port = int(self.ready.group(1))


class BandwidthTests(unittest.TestCase):
    """
    A user's bandwidth limit, measured over real sockets.
    """

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.directory = tempfile.mkdtemp(prefix="throttle-e2e-")
        cls.addClassCleanup(shutil.rmtree, cls.directory, True)
        cls.proxy = ThrottleProxy(cls.directory)
        cls.addClassCleanup(cls.proxy.stop)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        tracebacks = [line for line in cls.proxy.snapshot() if "Traceback" in line]
        if tracebacks:
            raise AssertionError("the proxy log has tracebacks:\n" + cls.proxy.text())
        super().tearDownClass()

    def download(self, user: str, target: SourceServer, results: list) -> None:
        """
        Download everything C{target} sends through the proxy as C{user}.
        """
        try:
            sock, reply = socks5Connect(
                self.proxy.port, LOOPBACK_V4, target.port, user, "pw", timeout=30.0
            )
            with sock:
                results.append((reply.rep, drainDigest(sock, deadline=30.0)))
        except (OSError, AssertionError) as e:  # reported to the test thread
            results.append(("error", repr(e)))

    def test_twoSessionsShareLimit(self) -> None:
        """
        Two concurrent 1.5 MB downloads of one user (carol) with a 1 MB/s limit
        together move (after the burst) at 1 MB/s, within 20%.
        """
        target = SourceServer(PER_SESSION, seed=7)
        self.addCleanup(target.stop)
        results: list = []
        threads = [
            threading.Thread(target=self.download, args=("carol", target, results))
            for _ in range(2)
        ]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(40.0)
        elapsed = time.monotonic() - start
        self.assertFalse(any(t.is_alive() for t in threads))
        expected = target.expected()
        self.assertEqual(results, [(0, expected), (0, expected)], self.proxy.text())
        rate = (2 * PER_SESSION - BURST) / elapsed
        self.assertGreater(rate, LIMIT * 0.8, f"{rate:.0f} B/s in {elapsed:.2f}s")
        self.assertLess(rate, LIMIT * 1.2, f"{rate:.0f} B/s in {elapsed:.2f}s")

    def test_otherUserNotLimited(self) -> None:
        """
        A user without a limit downloads the same 1.5 MB well faster than
        the limit allows.
        """
        target = SourceServer(PER_SESSION, seed=8)
        self.addCleanup(target.stop)
        results: list = []
        start = time.monotonic()
        self.download("bob", target, results)
        elapsed = time.monotonic() - start
        self.assertEqual(results, [(0, target.expected())])
        self.assertLess(elapsed, PER_SESSION / LIMIT * 0.8)

    def test_sessionCapFromAvatar(self) -> None:
        """
        With C{maxSessions} 2, alice's third concurrent session is refused
        with 0x01 while bob is still served.
        """
        target = SourceServer(PER_SESSION, seed=9, closeAfterSend=False)
        self.addCleanup(target.stop)
        held = []
        try:
            for _ in range(2):
                sock, reply = socks5Connect(
                    self.proxy.port, LOOPBACK_V4, target.port, "alice", "pw"
                )
                held.append(sock)
                self.assertEqual(reply.rep, 0)
            sock, reply = socks5Connect(
                self.proxy.port, LOOPBACK_V4, target.port, "alice", "pw"
            )
            sock.close()
            self.assertEqual(reply.rep, 1)
            sock, reply = socks5Connect(
                self.proxy.port, LOOPBACK_V4, target.port, "bob", "pw"
            )
            held.append(sock)
            self.assertEqual(reply.rep, 0)
        finally:
            for sock in held:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()


#: The limit of the shipped-defaults tests, bytes per second each way.
SHIPPED_LIMIT = 1_000_000
#: What one download or upload of those tests moves: 2.5 s at the limit.
TRANSFER = 2_500_000
#: The sequential sessions: ten of 300 KB, 3 s at the limit in all.
SEQUENTIAL = (10, 300_000)


class ShippedDefaultsTests(unittest.TestCase):
    """
    A user's bandwidth limit with the shipped configuration: the real
    C{twistd socks5 --auth users:FILE --config etc/socksrelay.toml}, users
    with C{up}/C{down} of 1 MB/s, and real clients (curl, PySocks).  Each
    test has a user of its own, since a user's balance outlives their
    sessions.  The rates asserted are behaviour bounds (the limit holds
    within 20% over a few seconds), not performance figures.
    """

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.directory = tempfile.mkdtemp(prefix="throttle-shipped-")
        cls.addClassCleanup(shutil.rmtree, cls.directory, True)
        usersPath = os.path.join(cls.directory, "users.db")
        digest = bcrypt.hashpw(b"pw", bcrypt.gensalt(4))
        writeUsers(
            usersPath,
            [
                UserRecord(
                    name, digest, bandwidthUp=SHIPPED_LIMIT, bandwidthDown=SHIPPED_LIMIT
                )
                for name in ("dave", "erin", "frank", "gina", "hank", "ivan")
            ],
        )
        cls.proxy = ProxyProcess(
            [
                "--auth", f"users:{usersPath}",
                "--config", os.path.join(REPO_ROOT, "etc", "socksrelay.toml"),
            ]
        )
        cls.addClassCleanup(cls.proxy.stop)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        tracebacks = [line for line in cls.proxy.snapshot() if "Traceback" in line]
        if tracebacks:
            raise AssertionError("the proxy log has tracebacks:\n" + cls.proxy.text())
        super().tearDownClass()

    def assertWithinLimit(self, moved: int, elapsed: float) -> None:
        """
        C{moved} bytes in C{elapsed} seconds is the limit, within 20%.
        """
        rate = moved / elapsed
        message = f"{rate:.0f} B/s ({moved} bytes in {elapsed:.2f}s)"
        self.assertGreater(rate, SHIPPED_LIMIT * 0.8, message)
        self.assertLess(rate, SHIPPED_LIMIT * 1.2, message)

    def curlDownload(self, user: str, target: HTTPTarget) -> bytes:
        """
        Download C{target}'s body with curl through the proxy as C{user}.
        """
        result = runCurl(
            "--socks5", f"127.0.0.1:{self.proxy.port}",
            "--proxy-user", f"{user}:pw", target.url(),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_downloadHoldsLimit(self) -> None:
        """
        A 2.5 MB download with curl moves at the user's 1 MB/s, within
        20%: the burst is a tenth of a second, not a full second.
        """
        body = pseudoRandomBytes(TRANSFER, 21)
        target = HTTPTarget(body)
        self.addCleanup(target.stop)
        start = time.monotonic()
        received = self.curlDownload("dave", target)
        elapsed = time.monotonic() - start
        self.assertEqual(received, body)
        self.assertWithinLimit(len(body), elapsed)

    def test_httpForwardingHoldsLimit(self) -> None:
        """
        A 2.5 MB download forwarded as plain HTTP (C{curl -x http://...},
        no tunnel) moves at the user's 1 MB/s too, within 20%.
        """
        body = pseudoRandomBytes(TRANSFER, 25)
        target = HTTPTarget(body)
        self.addCleanup(target.stop)
        start = time.monotonic()
        result = runCurl("-x", f"http://ivan:pw@127.0.0.1:{self.proxy.port}", target.url())
        elapsed = time.monotonic() - start
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, body)
        self.assertWithinLimit(len(body), elapsed)

    def test_sequentialDownloadsHoldLimit(self) -> None:
        """
        Ten 300 KB downloads of one user with PySocks, one after the other
        (a new connection each), move at the user's 1 MB/s over all of
        them, within 20%: a new session does not start with a fresh bucket.
        """
        count, size = SEQUENTIAL
        target = SourceServer(size, seed=22)
        self.addCleanup(target.stop)
        start = time.monotonic()
        for _ in range(count):
            with socks.socksocket() as s:
                s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port, True, "erin", "pw")
                s.settimeout(30)
                s.connect((LOOPBACK_V4, target.port))
                self.assertEqual(drainDigest(s, deadline=30.0), target.expected())
        elapsed = time.monotonic() - start
        self.assertWithinLimit(count * size, elapsed)

    def pysocksDownload(self, user: str, target: SourceServer, results: list) -> None:
        """
        Download everything C{target} sends with PySocks as C{user}; append
        the digest, or the error, to C{results}.
        """
        try:
            with socks.socksocket() as s:
                s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port, True, user, "pw")
                s.settimeout(30)
                s.connect((LOOPBACK_V4, target.port))
                results.append(drainDigest(s, deadline=30.0))
        except (OSError, AssertionError) as e:  # reported to the test thread
            results.append(("error", repr(e)))

    def test_overlappingDownloadsHoldLimit(self) -> None:
        """
        Three 1 MB downloads of one user started 0.4 s apart, each while
        the others run, move at the user's 1 MB/s in all, within 20%.
        """
        target = SourceServer(1_000_000, seed=24)
        self.addCleanup(target.stop)
        results: list = []
        threads = [
            threading.Thread(target=self.pysocksDownload, args=("gina", target, results))
            for _ in range(3)
        ]
        start = time.monotonic()
        for t in threads:
            t.start()
            time.sleep(0.4)
        for t in threads:
            t.join(40.0)
        elapsed = time.monotonic() - start
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(results, [target.expected()] * 3)
        self.assertWithinLimit(3_000_000, elapsed)

    def test_uploadHoldsLimit(self) -> None:
        """
        A 2.5 MB upload with PySocks moves at the user's 1 MB/s up, within
        20%, as timed by the receiving server.
        """
        payload = pseudoRandomBytes(TRANSFER, 23)
        sink = SinkServer()
        self.addCleanup(sink.stop)
        start = time.monotonic()
        with socks.socksocket() as s:
            s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port, True, "frank", "pw")
            s.settimeout(30)
            s.connect((LOOPBACK_V4, sink.port))
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            result = sink.waitResult(30.0)
            elapsed = time.monotonic() - start
        self.assertEqual(result, digestOf([payload]))
        self.assertWithinLimit(len(payload), elapsed)

    def test_datagramsOverLimitDropped(self) -> None:
        """
        Sixty 10 KB datagrams sent a millisecond apart: no more reach the
        target than the burst, the rate over the sending time and one
        datagram allow (within 20%), and the session line counts the rest
        as dropped for bandwidth.
        """
        echo = UDPEchoServer()
        self.addCleanup(echo.stop)
        mark = self.proxy.mark()
        payload = b"d" * 10_000
        s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
        s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port, True, "hank", "pw")
        s.settimeout(10)
        with s:
            s.sendto(payload, (LOOPBACK_V4, echo.port))  # associates
            start = time.monotonic()
            for _ in range(59):
                s.sendto(payload, (LOOPBACK_V4, echo.port))
                time.sleep(0.001)  # no more than the socket buffers hold
            sending = time.monotonic() - start
            time.sleep(0.5)  # the datagrams let through arrive
        arrived = sum(len(data) for data, _ in echo.received)
        allowed = 100_000 + sending * SHIPPED_LIMIT + len(payload)
        self.assertGreater(arrived, 0)
        self.assertLess(arrived, allowed * 1.2, f"{arrived} bytes in {sending:.3f}s")
        line = self.proxy.waitForLine(
            r"session ended.*user=hank command=UDP_ASSOCIATE", 10, since=mark
        ).string
        drops = re.search(r"drops=(\S+)", line)
        self.assertIsNotNone(drops, line)
        self.assertRegex(drops.group(1), r"bandwidth:[1-9]", line)
