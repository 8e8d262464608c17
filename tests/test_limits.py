# -*- test-case-name: tests.test_limits -*-
"""
Tests for the limits on what clients may take: L{socksrelay.limits}
(L{Limits}, L{Admission}, L{Refusal}) on its own with a fake clock, the
admission checks of L{socksrelay.server.SOCKS5ServerProtocol} (refusal
replies in SOCKS5, SOCKS4 and HTTP, counts kept and released), the
C{limited()} answers of L{socksrelay.dialects}, and the C{[limits]} table
of L{socksrelay.config}.

Everything runs on L{RecordingTransport}s and a L{MemoryReactorClock};
there is no network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import limits as limitsModule
from socksrelay.auth import SOCKSRealm
from socksrelay.config import ConfigError, parseConfig
from socksrelay.dialects import HTTPDialect, SOCKS4Dialect, SOCKS5Dialect
from socksrelay.limits import Admission, Limits, Refusal, lockoutRisks
from socksrelay.server import SOCKS5ServerFactory
from tests.fakes import (
    ClientConnection,
    SUCCESS_REPLY,
    EndpointRecorder,
    RecordingTransport,
    authRequest,
    errorReply,
    greeting,
    request,
)
from tests.test_multiprotocol import REJECTED, basic, connectHead, socks4


def temporaryPath(case: SynchronousTestCase, name: str = "socksrelay.toml") -> str:
    """
    Return a path in a new temporary directory that is removed after
    C{case}.
    """
    directory = tempfile.mkdtemp()
    case.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)


#: No limit at all, to switch on one limit at a time.
NO_LIMITS = dict(
    sessions=0, sessionsPerClient=0, sessionsPerUser=0, handshakes=0, handshakesPerClient=0
)

#: What a SOCKS5 client refused before its greeting is answered gets.
NO_ACCEPTABLE_METHODS = b"\x05\xff"
#: A SOCKS5 general failure reply.
GENERAL_FAILURE = 0x01
#: The answer to a CONNECT whose tunnel is open.
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def only(**limits: Any) -> Limits:
    """
    Return L{Limits} with every limit off except those given.
    """
    return Limits(**{**NO_LIMITS, **limits})


def counts(admission: Admission) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """
    Return the counts an L{Admission} keeps: sessions, handshakes, per client
    and per user (without zero entries).
    """
    return (
        admission.sessions,
        admission.handshakes,
        {k: v for k, v in admission.perClient.items() if v},
        {k: v for k, v in admission.perUser.items() if v},
    )


#: The counts of an L{Admission} with nothing in it.
ZERO = (0, 0, {}, {})


class AdmissionTests(SynchronousTestCase):
    """
    L{Admission} counts sessions and handshakes and refuses over a limit.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def admission(self, **limits: Any) -> Admission:
        return Admission(only(**limits), self.clock.seconds)

    def assertRefused(self, admission: Admission, client: str, named: str) -> Refusal:
        """
        C{admit(client)} raises a L{Refusal} whose reason names C{named},
        not for the rate, and counts nothing.
        """
        before = counts(admission)
        refusal = self.assertRaises(Refusal, admission.admit, client)
        self.assertIn(named, refusal.reason)
        self.assertFalse(refusal.rateLimited)
        self.assertEqual(counts(admission), before)
        return refusal

    def test_defaults(self) -> None:
        """
        The default limits are on, except the rate.
        """
        self.assertEqual(
            Limits(),
            Limits(
                sessions=10000,
                sessionsPerClient=1024,
                sessionsPerUser=256,
                handshakes=1024,
                handshakesPerClient=64,
                rate=0.0,
                burst=100,
                backlog=1024,
            ),
        )

    def test_defaultsNoSingleClientTakesAll(self) -> None:
        """
        With the default limits no single client address or user can take
        a whole global limit: each per-client and per-user limit is on, and
        at most a quarter of its global counterpart (sessions per client
        and per user against sessions, handshakes per client against
        handshakes).
        """
        limits = Limits()
        pairs = [
            ("sessionsPerClient", "sessions"),
            ("sessionsPerUser", "sessions"),
            ("handshakesPerClient", "handshakes"),
        ]
        for each, total in pairs:
            own, whole = getattr(limits, each), getattr(limits, total)
            self.assertGreater(own, 0, each)
            self.assertGreater(whole, 0, total)
            self.assertLessEqual(own * 4, whole, f"{each} against {total}")

    def test_lockoutRisks(self) -> None:
        """
        L{lockoutRisks} names each per-client or per-user limit that is off
        or not below its global limit while that is on; the defaults have
        none.
        """
        self.assertEqual(lockoutRisks(Limits()), [])
        risks = lockoutRisks(
            Limits(sessions=100, sessionsPerClient=100, sessionsPerUser=0, handshakesPerClient=5)
        )
        self.assertEqual(len(risks), 2)
        self.assertIn("sessions-per-client (100) is not below sessions (100)", risks[0])
        self.assertIn("client address", risks[0])
        self.assertIn("sessions-per-user (no limit) is not below sessions (100)", risks[1])
        self.assertIn("one user", risks[1])
        self.assertEqual(lockoutRisks(only()), [])

    def test_lockoutRiskWarned(self) -> None:
        """
        Limits with a lockout risk are warned about when they are set, at
        start and when swapped in.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        a = Admission(Limits(), self.clock.seconds)
        self.assertEqual(len(observer), 0)
        a.limits = Limits(handshakes=10, handshakesPerClient=10)
        self.assertEqual(len(observer), 1)
        self.assertEqual(observer[0]["log_level"], LogLevel.warn)
        self.assertIn("handshakes-per-client (10)", formatEvent(observer[0]))

    def test_defaultsOneClientCannotLockOut(self) -> None:
        """
        With the default limits, one client holding as many connections in
        their handshake as it is allowed does not stop another client from
        being admitted.
        """
        a = Admission(Limits(), self.clock.seconds)
        for _ in range(Limits().sessions + 1):
            try:
                a.admit("192.0.2.1")
            except Refusal as e:
                self.assertIn("per client", e.reason)
                break
        else:
            self.fail("one client was never refused")
        a.admit("192.0.2.2")
        self.assertEqual(a.perClient["192.0.2.2"], 1)

    def test_perClientHandshakeLimit(self) -> None:
        """
        At C{handshakesPerClient} connections of one IP in their handshake,
        that IP is refused (naming the limit and the client) while another
        IP is admitted.
        """
        a = self.admission(handshakesPerClient=2)
        a.admit("192.0.2.1")
        a.admit("192.0.2.1")
        refusal = self.assertRefused(a, "192.0.2.1", "handshake limit per client (2)")
        self.assertIn("192.0.2.1", refusal.reason)
        a.admit("192.0.2.2")
        self.assertEqual(a.handshakesPerClient, {"192.0.2.1": 2, "192.0.2.2": 1})

    def test_perClientHandshakeLimitRecovers(self) -> None:
        """
        Once one of its connections finishes its handshake, the client is
        admitted again while that session goes on; a client with no
        connection in its handshake leaves no entry behind.
        """
        a = self.admission(handshakesPerClient=1)
        a.admit("192.0.2.1")
        self.assertRefused(a, "192.0.2.1", "handshake limit per client")
        a.handshakeDone("192.0.2.1")
        self.assertNotIn("192.0.2.1", a.handshakesPerClient)
        a.admit("192.0.2.1")
        self.assertEqual(counts(a), (2, 1, {"192.0.2.1": 2}, {}))
        self.assertEqual(a.handshakesPerClient, {"192.0.2.1": 1})

    def test_refusedHeldPerClient(self) -> None:
        """
        A client may keep as many refused connections waiting for their
        answer as it may have handshakes; more are to be closed at once.
        Once one is gone, another may wait; nothing is left behind.
        """
        a = self.admission(handshakesPerClient=1)
        a.admit("192.0.2.1")
        self.assertRefused(a, "192.0.2.1", "handshake limit per client")
        self.assertTrue(a.holdRefused("192.0.2.1"))
        self.assertFalse(a.holdRefused("192.0.2.1"))
        self.assertTrue(a.holdRefused("192.0.2.2"))
        a.refusedGone("192.0.2.1")
        self.assertTrue(a.holdRefused("192.0.2.1"))
        a.refusedGone("192.0.2.1")
        a.refusedGone("192.0.2.2")
        self.assertEqual((a.refused, a.refusedPerClient), (0, {}))

    def test_refusedHeldInAll(self) -> None:
        """
        All clients together may keep as many refused connections waiting
        as the handshake limit.
        """
        a = self.admission(handshakes=2)
        self.assertTrue(a.holdRefused("192.0.2.1"))
        self.assertTrue(a.holdRefused("192.0.2.2"))
        self.assertFalse(a.holdRefused("192.0.2.3"))

    def test_admitCounts(self) -> None:
        """
        An admitted connection counts as a session, a handshake and a session
        of its client.
        """
        a = self.admission()
        a.admit("192.0.2.1")
        a.admit("192.0.2.1")
        a.admit("192.0.2.2")
        self.assertEqual(counts(a), (3, 3, {"192.0.2.1": 2, "192.0.2.2": 1}, {}))

    def test_sessionLimit(self) -> None:
        """
        At C{sessions} concurrent sessions a new one is refused naming the
        session limit, whichever client asks.
        """
        a = self.admission(sessions=2)
        a.admit("192.0.2.1")
        a.admit("192.0.2.2")
        refusal = self.assertRefused(a, "192.0.2.3", "session limit (2)")
        self.assertEqual(str(refusal), refusal.reason)

    def test_sessionLimitRecovers(self) -> None:
        """
        Once a session is released, a new one is admitted again.
        """
        a = self.admission(sessions=1)
        a.admit("192.0.2.1")
        self.assertRefused(a, "192.0.2.2", "session limit")
        a.handshakeDone("192.0.2.1")
        a.release("192.0.2.1", None)
        a.admit("192.0.2.2")
        self.assertEqual(counts(a), (1, 1, {"192.0.2.2": 1}, {}))

    def test_perClientLimit(self) -> None:
        """
        At C{sessionsPerClient} sessions from one IP, that IP is refused
        (naming the limit and the client) while another IP is admitted.
        """
        a = self.admission(sessionsPerClient=2)
        a.admit("192.0.2.1")
        a.admit("192.0.2.1")
        refusal = self.assertRefused(a, "192.0.2.1", "per client (2)")
        self.assertIn("192.0.2.1", refusal.reason)
        a.admit("192.0.2.2")
        self.assertEqual(a.perClient["192.0.2.2"], 1)

    def test_perClientLimitRecovers(self) -> None:
        """
        Releasing one of a client's sessions lets that client in again.
        """
        a = self.admission(sessionsPerClient=1)
        a.admit("192.0.2.1")
        self.assertRefused(a, "192.0.2.1", "per client")
        a.handshakeDone("192.0.2.1")
        a.release("192.0.2.1", None)
        a.admit("192.0.2.1")

    def test_perUserLimit(self) -> None:
        """
        At C{sessionsPerUser} sessions of one user, that user is refused
        (naming the limit and the user) while another user is admitted.
        """
        a = self.admission(sessionsPerUser=2)
        for _ in range(3):
            a.admit("192.0.2.1")
        a.admitUser("alice")
        a.admitUser("alice")
        refusal = self.assertRaises(Refusal, a.admitUser, "alice")
        self.assertIn("per user (2)", refusal.reason)
        self.assertIn("alice", refusal.reason)
        self.assertFalse(refusal.rateLimited)
        self.assertEqual(a.perUser["alice"], 2)
        a.admitUser("bob")
        self.assertEqual(counts(a)[3], {"alice": 2, "bob": 1})

    def test_perUserLimitRecovers(self) -> None:
        """
        Releasing a user's session lets that user in again, and a released
        user leaves no entry behind.
        """
        a = self.admission(sessionsPerUser=1)
        a.admit("192.0.2.1")
        a.admit("192.0.2.1")
        a.admitUser("alice")
        self.assertRaises(Refusal, a.admitUser, "alice")
        a.release("192.0.2.1", "alice")
        self.assertNotIn("alice", a.perUser)
        a.admitUser("alice")
        self.assertEqual(a.perUser["alice"], 1)

    def test_handshakeLimit(self) -> None:
        """
        At C{handshakes} connections in their handshake a new one is refused
        naming the handshake limit.
        """
        a = self.admission(handshakes=2)
        a.admit("192.0.2.1")
        a.admit("192.0.2.2")
        self.assertRefused(a, "192.0.2.3", "handshake limit (2)")

    def test_handshakeLimitRecovers(self) -> None:
        """
        A finished handshake makes room for a new connection while its
        session goes on.
        """
        a = self.admission(handshakes=1)
        a.admit("192.0.2.1")
        self.assertRefused(a, "192.0.2.2", "handshake limit")
        a.handshakeDone("192.0.2.1")
        a.admit("192.0.2.2")
        self.assertEqual(counts(a), (2, 1, {"192.0.2.1": 1, "192.0.2.2": 1}, {}))

    def test_rateBurst(self) -> None:
        """
        With C{rate} set, a client IP may open C{burst} sessions at once;
        the next is refused as rate limited, naming the rate and the client.
        """
        a = self.admission(rate=2.0, burst=3)
        for _ in range(3):
            a.admit("192.0.2.1")
        refusal = self.assertRaises(Refusal, a.admit, "192.0.2.1")
        self.assertTrue(refusal.rateLimited)
        self.assertIn("rate limit (2/s)", refusal.reason)
        self.assertIn("192.0.2.1", refusal.reason)
        self.assertEqual(a.sessions, 3)

    def test_rateIsPerClient(self) -> None:
        """
        One client IP's spent tokens do not limit another's.
        """
        a = self.admission(rate=1.0, burst=1)
        a.admit("192.0.2.1")
        self.assertRaises(Refusal, a.admit, "192.0.2.1")
        a.admit("192.0.2.2")

    def test_rateRefills(self) -> None:
        """
        Tokens come back at C{rate} per second: after half a token's time
        the client is still refused, after a whole one it is admitted once.
        """
        a = self.admission(rate=2.0, burst=2)
        a.admit("192.0.2.1")
        a.admit("192.0.2.1")
        self.clock.advance(0.25)
        self.assertTrue(self.assertRaises(Refusal, a.admit, "192.0.2.1").rateLimited)
        self.clock.advance(0.25)
        a.admit("192.0.2.1")
        self.assertRaises(Refusal, a.admit, "192.0.2.1")

    def test_rateRefillCappedAtBurst(self) -> None:
        """
        However long a client stays away, it gets back no more than
        C{burst} tokens.
        """
        a = self.admission(rate=10.0, burst=2)
        a.admit("192.0.2.1")
        self.clock.advance(3600)
        a.admit("192.0.2.1")
        a.admit("192.0.2.1")
        self.assertRaises(Refusal, a.admit, "192.0.2.1")

    def test_rateRefusalKeepsNoSession(self) -> None:
        """
        A rate refusal counts no session, and refused attempts do not use up
        tokens that are refilling.
        """
        a = self.admission(rate=1.0, burst=1)
        a.admit("192.0.2.1")
        for _ in range(5):
            self.clock.advance(0.1)
            self.assertRaises(Refusal, a.admit, "192.0.2.1")
        self.assertEqual(counts(a), (1, 1, {"192.0.2.1": 1}, {}))
        self.clock.advance(0.5)
        a.admit("192.0.2.1")

    def test_fractionalRate(self) -> None:
        """
        A rate below one per second refills a token over several seconds.
        """
        a = self.admission(rate=0.5, burst=1)
        a.admit("192.0.2.1")
        self.clock.advance(1.9)
        self.assertRaises(Refusal, a.admit, "192.0.2.1")
        self.clock.advance(0.1)
        a.admit("192.0.2.1")

    def test_zeroDisablesLimits(self) -> None:
        """
        With every limit 0 (and no rate), nothing is ever refused.
        """
        a = self.admission()
        for i in range(500):
            a.admit("192.0.2.1")
            a.admitUser("alice")
        self.assertEqual(counts(a), (500, 500, {"192.0.2.1": 500}, {"alice": 500}))

    def test_zeroDisablesOneLimit(self) -> None:
        """
        A limit set to 0 is off while the others still apply.
        """
        a = Admission(Limits(sessions=0, sessionsPerClient=2), self.clock.seconds)
        a.admit("192.0.2.1")
        a.admit("192.0.2.1")
        self.assertRefused(a, "192.0.2.1", "per client")

    def test_zeroBurstIsNoLimit(self) -> None:
        """
        C{burst = 0} is "no limit" like every other limit (the configuration
        says "0 for no limit"): it does not refuse every session.
        """
        a = self.admission(rate=1.0, burst=0)
        a.admit("192.0.2.1")
        self.assertEqual(a.sessions, 1)

    def test_releaseForgetsClient(self) -> None:
        """
        A client whose sessions have all ended leaves no entry behind.
        """
        a = self.admission()
        a.admit("192.0.2.1")
        a.handshakeDone("192.0.2.1")
        a.release("192.0.2.1", None)
        self.assertEqual(counts(a), ZERO)
        self.assertNotIn("192.0.2.1", a.perClient)

    def test_limitsSwapped(self) -> None:
        """
        New limits assigned to C{limits} apply to the next admission.
        """
        a = self.admission(sessions=1)
        a.admit("192.0.2.1")
        self.assertRefused(a, "192.0.2.2", "session limit")
        a.limits = only(sessions=2)
        a.admit("192.0.2.2")

    def test_rateTableBounded(self) -> None:
        """
        The rate limiter remembers at most C{RATE_TABLE_SIZE} client IPs,
        forgetting the least recently seen first.
        """
        self.patch(limitsModule, "RATE_TABLE_SIZE", 3)
        a = self.admission(rate=0.001, burst=1)
        for i in range(1, 6):
            a.admit(f"192.0.2.{i}")
        self.assertEqual(len(a._buckets), 3)
        self.assertEqual(list(a._buckets), ["192.0.2.3", "192.0.2.4", "192.0.2.5"])
        # The most recent client is still remembered (and limited); the
        # first one was forgotten, so it starts with a full bucket.
        self.assertRaises(Refusal, a.admit, "192.0.2.5")
        a.admit("192.0.2.1")
        self.assertEqual(len(a._buckets), 3)

    def test_rateTableRecencyKept(self) -> None:
        """
        A client seen again moves to the recent end of the rate table and is
        not the next one forgotten.
        """
        self.patch(limitsModule, "RATE_TABLE_SIZE", 2)
        a = self.admission(rate=0.001, burst=1)
        a.admit("192.0.2.1")
        a.admit("192.0.2.2")
        self.assertRaises(Refusal, a.admit, "192.0.2.1")
        a.admit("192.0.2.3")
        self.assertEqual(list(a._buckets), ["192.0.2.1", "192.0.2.3"])
        self.assertRaises(Refusal, a.admit, "192.0.2.1")


class LimitedDialectTests(SynchronousTestCase):
    """
    Each dialect's answer to a client over a limit.
    """

    def test_socks5BeforeGreeting(self) -> None:
        """
        Before the greeting is answered SOCKS5 says "no acceptable methods".
        """
        self.assertEqual(SOCKS5Dialect().limited(False, True), (b"\x05\xff", "0xff"))
        self.assertEqual(SOCKS5Dialect().limited(True, True), (b"\x05\xff", "0xff"))

    def test_socks5AfterGreeting(self) -> None:
        """
        After the greeting SOCKS5 answers a general failure reply.
        """
        self.assertEqual(
            SOCKS5Dialect().limited(False, False), (errorReply(GENERAL_FAILURE), "0x01")
        )

    def test_socks4(self) -> None:
        """
        SOCKS4 answers CD 91.
        """
        self.assertEqual(SOCKS4Dialect().limited(False, True), (REJECTED, "91"))
        self.assertEqual(SOCKS4Dialect(True).limited(True, False), (REJECTED, "91"))

    def test_http(self) -> None:
        """
        HTTP answers 503, or 429 for the rate.
        """
        data, code = HTTPDialect().limited(False, True)
        self.assertTrue(data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), data)
        self.assertEqual(code, "503")
        data, code = HTTPDialect().limited(True, True)
        self.assertTrue(data.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), data)
        self.assertEqual(code, "429")



class Server:
    """
    A L{SOCKS5ServerFactory} on a L{MemoryReactorClock} with recorded
    outbound endpoints, and its clients.
    """

    def __init__(self, **factoryArguments: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.recorder = EndpointRecorder()
        self.factory = SOCKS5ServerFactory(
            reactor=self.reactor, connectEndpoint=self.recorder, **factoryArguments
        )
        self._port = 40000

    @property
    def admission(self) -> Admission:
        return self.factory.admission

    def client(self, host: str = "127.0.0.1") -> ClientConnection:
        self._port += 1
        return ClientConnection(self.factory, host, self._port)

    def connected(self, host: str = "127.0.0.1") -> tuple[ClientConnection, Any, RecordingTransport]:
        """
        A client with a relayed SOCKS5 CONNECT.
        """
        c = self.client(host)
        c.send(greeting(0x00) + request("192.0.2.1", 80))
        outbound, outboundTransport = self.recorder.last.succeed()
        if c.received() != b"\x05\x00" + SUCCESS_REPLY:
            raise AssertionError("the CONNECT did not succeed")
        return c, outbound, outboundTransport


def passwordPortal() -> Portal:
    """
    A portal that accepts alice and bob, each with password C{pw}.
    """
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(b"alice", b"pw")
    checker.addUser(b"bob", b"pw")
    return Portal(SOCKSRealm(), [checker])


class ServerRefusalTests(SynchronousTestCase):
    """
    A connection over a limit is answered in its own protocol as soon as its
    first bytes arrive, then closed, and is never counted.
    """

    def assertRefusedAndClosed(self, c: ClientConnection) -> None:
        """
        C{c} was closed with a "limit:" reason and nothing was connected.
        """
        self.assertTrue(c.transport.disconnecting)
        self.assertTrue(c.session.reason.startswith("limit: "), c.session.reason)

    def test_socks5OverSessionLimit(self) -> None:
        """
        Over the session limit a SOCKS5 client gets C{05 FF} for its greeting
        and is closed; the session reason names the limit.
        """
        s = Server(limits=only(sessions=1))
        s.connected()
        c = s.client()
        self.assertEqual(c.received(), b"")
        self.assertFalse(c.transport.disconnecting)
        c.send(greeting(0x00) + request("192.0.2.1", 80))
        self.assertEqual(c.received(), NO_ACCEPTABLE_METHODS)
        self.assertRefusedAndClosed(c)
        self.assertIn("session limit (1)", c.session.reason)
        self.assertEqual(c.session.replyText, "0xff")
        self.assertEqual(len(s.recorder.requests), 1)

    def test_socks5RefusedOnFirstByte(self) -> None:
        """
        The refusal is written on the very first byte, without waiting for
        the rest of the greeting.
        """
        s = Server(limits=only(sessions=1))
        s.client()
        c = s.client()
        c.send(b"\x05")
        self.assertEqual(c.received(), NO_ACCEPTABLE_METHODS)
        self.assertRefusedAndClosed(c)

    def test_socks4OverSessionLimit(self) -> None:
        """
        Over the session limit a SOCKS4 client gets CD 91.
        """
        s = Server(limits=only(sessions=1))
        s.client()
        c = s.client()
        c.send(socks4("192.0.2.1", 80))
        self.assertEqual(c.received(), REJECTED)
        self.assertRefusedAndClosed(c)
        self.assertEqual(c.session.replyText, "91")
        self.assertEqual(s.recorder.requests, [])

    def test_httpOverSessionLimit(self) -> None:
        """
        Over the session limit an HTTP client gets 503.
        """
        s = Server(limits=only(sessions=1))
        s.client()
        c = s.client()
        c.send(connectHead(b"example.com:443"))
        self.assertTrue(c.received().startswith(b"HTTP/1.1 503 "))
        self.assertRefusedAndClosed(c)
        self.assertEqual(c.session.replyText, "503")
        self.assertEqual(s.recorder.requests, [])

    def test_httpOverRate(self) -> None:
        """
        Over the rate limit an HTTP client gets 429, and the reason names
        the rate.
        """
        s = Server(limits=only(rate=1.0, burst=1))
        s.client()
        c = s.client()
        c.send(connectHead(b"example.com:443"))
        self.assertTrue(c.received().startswith(b"HTTP/1.1 429 "))
        self.assertRefusedAndClosed(c)
        self.assertIn("rate limit", c.session.reason)

    def test_socks5OverRate(self) -> None:
        """
        Over the rate limit a SOCKS5 client also gets C{05 FF}; once a token
        has come back, a new client is served.
        """
        s = Server(limits=only(rate=1.0, burst=1))
        s.connected()
        c = s.client()
        c.send(greeting(0x00))
        self.assertEqual(c.received(), NO_ACCEPTABLE_METHODS)
        self.assertIn("rate limit", c.session.reason)
        s.reactor.advance(1.0)
        s.connected()

    def test_overPerClientLimit(self) -> None:
        """
        Over the per-client limit that client is refused while another IP
        is served.
        """
        s = Server(limits=only(sessionsPerClient=1))
        s.connected("192.0.2.10")
        c = s.client("192.0.2.10")
        c.send(greeting(0x00))
        self.assertEqual(c.received(), NO_ACCEPTABLE_METHODS)
        self.assertIn("per client (1) reached for 192.0.2.10", c.session.reason)
        s.connected("192.0.2.11")

    def test_overHandshakeLimit(self) -> None:
        """
        Over the handshake limit a new client is refused; once the
        handshaking client has sent its request, a new client is served.
        """
        s = Server(limits=only(handshakes=1))
        first = s.client()
        first.send(greeting(0x00))
        c = s.client()
        c.send(greeting(0x00))
        self.assertEqual(c.received(), NO_ACCEPTABLE_METHODS)
        self.assertIn("handshake limit (1)", c.session.reason)
        first.send(request("192.0.2.1", 80))
        s.connected()

    def test_overPerClientHandshakeLimit(self) -> None:
        """
        Over the per-client handshake limit that client is refused with
        C{05 FF} naming the limit, while another IP is served; once the
        first connection has sent its request, the client is served again.
        """
        s = Server(limits=only(handshakesPerClient=1))
        first = s.client("192.0.2.10")
        first.send(greeting(0x00))
        c = s.client("192.0.2.10")
        c.send(greeting(0x00))
        self.assertEqual(c.received(), NO_ACCEPTABLE_METHODS)
        self.assertIn("handshake limit per client (1) reached for 192.0.2.10", c.session.reason)
        s.connected("192.0.2.11")
        first.send(request("192.0.2.1", 80))
        s.connected("192.0.2.10")
        self.assertEqual(s.admission.handshakesPerClient, {})

    def test_refusedConnectionsDoNotPileUp(self) -> None:
        """
        A client's refused connections wait for their first byte (to be
        answered in their protocol) only up to its handshake limit; one
        more is closed at once, unanswered, with a reason; once a waiting
        one is gone, the next may wait again.
        """
        s = Server(limits=only(handshakesPerClient=1))
        s.client("192.0.2.10")
        waiting = s.client("192.0.2.10")
        self.assertFalse(waiting.transport.disconnecting)
        closed = s.client("192.0.2.10")
        self.assertTrue(closed.transport.disconnecting)
        self.assertEqual(closed.received(), b"")
        self.assertIn("closed at once", closed.session.reason)
        self.assertIn("handshake limit per client (1)", closed.session.reason)
        closed.lost()
        waiting.send(greeting(0x00))
        self.assertEqual(waiting.received(), NO_ACCEPTABLE_METHODS)
        waiting.lost()
        self.assertEqual(s.admission.refused, 0)
        again = s.client("192.0.2.10")
        self.assertFalse(again.transport.disconnecting)
        again.lost()
        self.assertEqual((s.admission.refused, s.admission.refusedPerClient), (0, {}))

    def test_refusedNotCounted(self) -> None:
        """
        A refused connection changes no count, neither while it is open nor
        after it closes; the admitted one's counts go back to zero after.
        """
        s = Server(limits=only(sessions=1))
        first, outbound, _ = s.connected()
        admitted = counts(s.admission)
        self.assertEqual(admitted, (1, 0, {"127.0.0.1": 1}, {}))
        c = s.client()
        self.assertEqual(counts(s.admission), admitted)
        c.send(greeting(0x00))
        self.assertEqual(counts(s.admission), admitted)
        c.lost()
        self.assertEqual(counts(s.admission), admitted)
        first.lost()
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(counts(s.admission), ZERO)

    def test_refusedSilentClientNotCounted(self) -> None:
        """
        A refused client that leaves without a byte changes no count.
        """
        s = Server(limits=only(sessions=1))
        s.client()
        admitted = counts(s.admission)
        c = s.client()
        c.lost()
        self.assertEqual(counts(s.admission), admitted)

    def test_refusalLogged(self) -> None:
        """
        A refusal is counted as a "limit" event for the session's observers
        and ends with a logged session naming the limit.
        """
        events: list[tuple[str, dict[str, Any]]] = []
        ended: list[Any] = []

        class Observer:
            def sessionStarted(self, session: Any) -> None:
                pass

            def eventCounted(self, session: Any, event: str, fields: Any) -> None:
                events.append((event, dict(fields)))

            def sessionEnded(self, session: Any) -> None:
                ended.append(session)

        s = Server(limits=only(sessions=1))
        s.factory.observers.append(Observer())
        s.client()
        c = s.client()
        c.send(greeting(0x00))
        c.lost()
        self.assertEqual(
            events, [("limit", {"reason": "session limit (1) reached"})]
        )
        self.assertEqual([e.reason for e in ended], ["limit: session limit (1) reached"])


class ServerCountTests(SynchronousTestCase):
    """
    The server keeps the counts of L{Admission} right through a session's
    life.
    """

    def test_countsBackToZero(self) -> None:
        """
        After a relayed session (with a user) ends, every count is zero.
        """
        s = Server(portal=passwordPortal())
        c = s.client()
        c.send(greeting(0x02) + authRequest(b"alice", b"pw") + request("192.0.2.1", 80))
        outbound, _ = s.recorder.last.succeed()
        self.assertEqual(counts(s.admission), (1, 0, {"127.0.0.1": 1}, {"alice": 1}))
        c.lost()
        outbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(counts(s.admission), ZERO)

    def test_countsReleasedOnClientLostOnly(self) -> None:
        """
        The counts are released when the client connection is lost, even
        while the outbound side is still closing.
        """
        s = Server()
        c, _, _ = s.connected()
        c.lost()
        self.assertEqual(counts(s.admission), ZERO)

    def test_releasedOnce(self) -> None:
        """
        A second C{connectionLost} does not release the counts again.
        """
        s = Server()
        c, _, _ = s.connected()
        s.connected()
        c.lost()
        c.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(counts(s.admission), (1, 0, {"127.0.0.1": 1}, {}))

    def test_handshakeCountDropsAtRequest(self) -> None:
        """
        The handshake count drops when the request arrives, not when the
        connection closes; the session count stays until then.
        """
        s = Server()
        c = s.client()
        self.assertEqual(counts(s.admission), (1, 1, {"127.0.0.1": 1}, {}))
        c.send(greeting(0x00))
        self.assertEqual(s.admission.handshakes, 1)
        c.send(request("192.0.2.1", 80))
        self.assertEqual(counts(s.admission), (1, 0, {"127.0.0.1": 1}, {}))
        c.lost()
        self.assertEqual(counts(s.admission), ZERO)

    def test_handshakeCountDropsAtSOCKS4Request(self) -> None:
        """
        A SOCKS4 request also ends the handshake count.
        """
        s = Server()
        c = s.client()
        c.send(socks4("192.0.2.1", 80))
        self.assertEqual(counts(s.admission), (1, 0, {"127.0.0.1": 1}, {}))

    def test_handshakeCountDropsAtHTTPRequest(self) -> None:
        """
        An HTTP CONNECT head also ends the handshake count.
        """
        s = Server()
        c = s.client()
        c.send(connectHead(b"192.0.2.1:443"))
        self.assertEqual(counts(s.admission), (1, 0, {"127.0.0.1": 1}, {}))

    def test_silentClientReleases(self) -> None:
        """
        A client that leaves before sending anything releases its session
        and handshake counts.
        """
        s = Server()
        c = s.client()
        c.lost()
        self.assertEqual(counts(s.admission), ZERO)

    def test_handshakeTimeoutReleases(self) -> None:
        """
        A client closed by the handshake timeout releases its counts once
        its connection is lost.
        """
        s = Server(handshakeTimeout=5)
        c = s.client()
        s.reactor.advance(5)
        self.assertTrue(c.transport.disconnecting)
        c.lost()
        self.assertEqual(counts(s.admission), ZERO)

    def test_failedHandshakeReleases(self) -> None:
        """
        A client refused in its handshake (no acceptable method) releases
        its counts.
        """
        s = Server()
        c = s.client()
        c.send(greeting(0x02))
        self.assertEqual(c.received(), b"\x05\xff")
        c.lost()
        self.assertEqual(counts(s.admission), ZERO)

    def test_failedLoginReleases(self) -> None:
        """
        A wrong password ends the session and counts no user.
        """
        s = Server(portal=passwordPortal())
        c = s.client()
        c.send(greeting(0x02) + authRequest(b"alice", b"wrong"))
        self.assertTrue(c.transport.disconnecting)
        c.lost()
        self.assertEqual(counts(s.admission), ZERO)


class PerUserServerTests(SynchronousTestCase):
    """
    The per-user limit, checked once the user is known and the request is
    in.
    """

    def server(self) -> Server:
        return Server(portal=passwordPortal(), limits=only(sessionsPerUser=1))

    def socks5(self, s: Server, user: bytes) -> ClientConnection:
        c = s.client()
        c.send(greeting(0x02) + authRequest(user, b"pw") + request("192.0.2.1", 80))
        return c

    def test_socks5SecondSessionRefused(self) -> None:
        """
        With C{sessionsPerUser=1}, alice's second SOCKS5 session gets a
        general failure reply after authenticating, while bob is served.
        """
        s = self.server()
        self.socks5(s, b"alice")
        s.recorder.last.succeed()
        second = self.socks5(s, b"alice")
        self.assertEqual(second.received(), b"\x05\x02\x01\x00" + errorReply(GENERAL_FAILURE))
        self.assertTrue(second.transport.disconnecting)
        self.assertEqual(
            second.session.reason, "limit: session limit per user (1) reached for alice"
        )
        self.assertEqual(len(s.recorder.requests), 1)
        bob = self.socks5(s, b"bob")
        s.recorder.last.succeed()
        self.assertEqual(bob.received(), b"\x05\x02\x01\x00" + SUCCESS_REPLY)
        self.assertEqual(s.admission.perUser, {"alice": 1, "bob": 1})

    def test_refusedUserNotCounted(self) -> None:
        """
        The refused session of alice does not count against her: when it
        closes her count is still one, and zero after her first session.
        """
        s = self.server()
        first = self.socks5(s, b"alice")
        second = self.socks5(s, b"alice")
        second.lost()
        self.assertEqual(s.admission.perUser, {"alice": 1})
        self.assertEqual(s.admission.sessions, 1)
        first.lost()
        self.assertEqual(counts(s.admission), ZERO)

    def test_userLimitRecovers(self) -> None:
        """
        After alice's session ends she may open another.
        """
        s = self.server()
        first = self.socks5(s, b"alice")
        first.lost()
        again = self.socks5(s, b"alice")
        self.assertEqual(again.received(), b"\x05\x02\x01\x00")
        self.assertEqual(s.recorder.requests[-1], ("192.0.2.1", 80))

    def test_httpConnectSecondSessionRefused(self) -> None:
        """
        Alice's second HTTP CONNECT gets 503 while bob's tunnel opens.
        """
        s = self.server()
        self.socks5(s, b"alice")
        c = s.client()
        c.send(connectHead(b"192.0.2.1:443", basic(b"alice:pw")))
        self.assertTrue(c.received().startswith(b"HTTP/1.1 503 "))
        self.assertTrue(c.transport.disconnecting)
        self.assertIn("per user (1) reached for alice", c.session.reason)
        bob = s.client()
        bob.send(connectHead(b"192.0.2.1:443", basic(b"bob:pw")))
        s.recorder.last.succeed()
        self.assertEqual(bob.received(), ESTABLISHED)

    def test_httpForwardingCountsAgainstUser(self) -> None:
        """
        A plain-HTTP forwarding connection of alice is a session of hers
        too: with her one session live, a forwarded request of hers gets 503
        and reaches no origin.
        """
        s = self.server()
        self.socks5(s, b"alice")
        s.recorder.last.succeed()
        c = s.client()
        c.send(
            b"GET http://192.0.2.1/ HTTP/1.1\r\nHost: 192.0.2.1\r\n"
            + basic(b"alice:pw")
            + b"\r\n"
        )
        self.assertTrue(c.received().startswith(b"HTTP/1.1 503 "))
        self.assertEqual(len(s.recorder.requests), 1)
        self.assertEqual(s.admission.perUser, {"alice": 1})


class LimitsConfigTests(SynchronousTestCase):
    """
    The C{[limits]} table of the configuration file.
    """

    def assertConfigError(self, text: str, *fragments: str) -> None:
        e = self.assertRaises(ConfigError, parseConfig, text, "test.toml")
        for fragment in fragments:
            self.assertIn(fragment, str(e))

    def test_allKeys(self) -> None:
        """
        Every limit key is read into its L{Limits} attribute.
        """
        config = parseConfig(
            "[limits]\n"
            "sessions = 100\n"
            "sessions-per-client = 10\n"
            "sessions-per-user = 5\n"
            "handshakes = 20\n"
            "handshakes-per-client = 4\n"
            "rate = 2.5\n"
            "burst = 7\n"
            "backlog = 300\n"
        )
        self.assertEqual(
            Limits(**config.limits),
            Limits(
                sessions=100,
                sessionsPerClient=10,
                sessionsPerUser=5,
                handshakes=20,
                handshakesPerClient=4,
                rate=2.5,
                burst=7,
                backlog=300,
            ),
        )

    def test_lookupKeys(self) -> None:
        """
        C{lookups} and C{lookups-per-client} set the name lookup limits;
        by default one client may have 16 lookups in flight of 256.
        """
        config = parseConfig("[limits]\nlookups = 40\nlookups-per-client = 4\n")
        limits = Limits(**config.limits)
        self.assertEqual((limits.lookups, limits.lookupsPerClient), (40, 4))
        self.assertEqual((Limits().lookups, Limits().lookupsPerClient), (256, 16))

    def test_noTableDefaults(self) -> None:
        """
        Without a C{[limits]} table the defaults apply.
        """
        self.assertEqual(Limits(**parseConfig("").limits), Limits())

    def test_zeroAccepted(self) -> None:
        """
        0 (no limit) is accepted for every limit.
        """
        config = parseConfig("[limits]\nsessions = 0\nhandshakes = 0\nrate = 0\n")
        self.assertEqual(config.limits, {"sessions": 0, "handshakes": 0, "rate": 0})

    def test_unknownKey(self) -> None:
        """
        An unknown key is refused, naming it and its line.
        """
        self.assertConfigError(
            "[limits]\nsessions = 5\nsesions-per-user = 2\n",
            "line 3",
            "unknown limit 'sesions-per-user'",
        )

    def test_negative(self) -> None:
        """
        A negative limit is refused, naming its line.
        """
        self.assertConfigError(
            "[limits]\nsessions-per-client = -1\n", "line 2", "'sessions-per-client'"
        )
        self.assertConfigError("[limits]\nrate = -0.5\n", "line 2", "'rate'")

    def test_fractionalInteger(self) -> None:
        """
        A fraction is refused for the limits that count sessions.
        """
        for key in (
            "sessions",
            "sessions-per-client",
            "sessions-per-user",
            "handshakes",
            "handshakes-per-client",
            "burst",
            "backlog",
        ):
            self.assertConfigError(
                f"[limits]\n{key} = 1.5\n", "line 2", f"{key!r} must be a whole number"
            )

    def test_backlogAtLeastOne(self) -> None:
        """
        The backlog is a queue length, not a limit that 0 switches off: 0
        is refused, naming its line.
        """
        self.assertConfigError(
            "[limits]\nsessions = 0\nbacklog = 0\n", "line 3", "'backlog' must be at least 1"
        )

    def test_backlogAtLeastOne(self) -> None:
        """
        The backlog is a queue length, not a limit that 0 switches off: 0
        is refused, naming its line.
        """
        self.assertConfigError(
            "[limits]\nsessions = 0\nbacklog = 0\n", "line 3", "'backlog' must be at least 1"
        )

    def test_fractionalRate(self) -> None:
        """
        The rate may be a fraction.
        """
        self.assertEqual(parseConfig("[limits]\nrate = 0.25\n").limits, {"rate": 0.25})

    def test_bandwidthBurst(self) -> None:
        """
        C{bandwidth-burst} (seconds of a user's rate) may be a fraction; it
        defaults to a tenth of a second, as C{etc/socksrelay.toml} says, and
        sizes the buckets of the factory's throttles, also after a reload.
        """
        from socksrelay.config import loadConfig
        from tests.test_config import EXAMPLE

        self.assertEqual(
            parseConfig("[limits]\nbandwidth-burst = 0.25\n").limits,
            {"bandwidthBurst": 0.25},
        )
        self.assertEqual(Limits().bandwidthBurst, 0.1)
        self.assertEqual(Limits(**loadConfig(EXAMPLE).limits).bandwidthBurst, 0.1)
        factory = SOCKS5ServerFactory(reactor=MemoryReactorClock())
        self.assertEqual(factory.throttles.acquire("a", None, 10**6).tokens("down"), 100_000)
        factory = SOCKS5ServerFactory(
            reactor=MemoryReactorClock(), limits=Limits(bandwidthBurst=0.5)
        )
        self.assertEqual(factory.throttles.acquire("a", None, 10**6).tokens("down"), 500_000)
        factory.reconfigure(None, None, Limits(bandwidthBurst=0.2), {})
        self.assertEqual(factory.throttles.acquire("b", None, 10**6).tokens("down"), 200_000)
        self.assertConfigError("[limits]\nbandwidth-burst = -1\n", "line 2", "'bandwidth-burst'")

    def test_boolean(self) -> None:
        """
        A boolean is not a limit.
        """
        self.assertConfigError("[limits]\nsessions = true\n", "line 2", "'sessions'")
        self.assertConfigError("[limits]\nrate = false\n", "line 2", "'rate'")

    def test_notANumber(self) -> None:
        """
        A string or infinity is refused.
        """
        self.assertConfigError('[limits]\nburst = "10"\n', "line 2", "'burst'")
        self.assertConfigError("[limits]\nrate = inf\n", "line 2", "'rate'")

    def test_notATable(self) -> None:
        """
        C{limits} must be a table.
        """
        self.assertConfigError("limits = 5\n", "line 1", "[limits] table")

    def test_limitsReachFactory(self) -> None:
        """
        C{twistd socks5 --config} gives the file's limits to the factory.
        """
        from socksrelay import tap

        path = temporaryPath(self)
        with open(path, "w") as f:
            f.write("[limits]\nsessions = 3\nrate = 1.5\n")
        options = tap.Options()
        options.parseOptions(["--config", path])
        factory = tap.makeFactory(options, MemoryReactorClock())
        self.assertEqual(factory.admission.limits, Limits(sessions=3, rate=1.5))
