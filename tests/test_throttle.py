# -*- test-case-name: tests.test_throttle -*-
"""
Tests for L{socksrelay.throttle} and the enforcement of an avatar's policy
by the server: per-user bandwidth (shared by all of a user's sessions,
pausing the reading side alongside the relay's backpressure), the per-user
session cap (C{maxSessions}) and the outgoing address (C{external}), for
CONNECT, BIND and UDP alike.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import (
    ANONYMOUS,
    AllowAnonymousAccess,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.portal import IRealm, Portal
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socksrelay.interfaces import ISOCKSUser
from socksrelay.limits import Admission, Limits, Refusal
from socksrelay.relay import ReadGate
from socksrelay.rules import Policy, Rule
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.throttle import (
    MIN_BURST,
    ThrottleRegistry,
    TokenBucket,
    UserThrottle,
    avatarRates,
)
from socksrelay.udp import UDPOptions
from tests.fakes import (
    CLIENT_ADDRESS,
    LISTEN_ADDRESS,
    ProxyHarness,
    RecordingTransport,
    authRequest,
    greeting,
    request,
)
from tests.test_udp import CLIENT_UDP, LOCAL, PEER, Control, udpDatagram
from tests.udpfakes import FakeHostnameResolver, UDPMemoryReactor

UDP_ASSOCIATE = 0x03
ALLOW_ALL = Policy([Rule("allow", "everything")])


class Avatar:
    """
    An avatar with the policy attributes of L{ISOCKSUser}.
    """

    def __init__(
        self,
        username: str | None,
        groups: frozenset[str] = frozenset(),
        maxSessions: int | None = None,
        bandwidthUp: int | None = None,
        bandwidthDown: int | None = None,
        external: str | None = None,
    ) -> None:
        self.username = username
        self.groups = groups
        self.maxSessions = maxSessions
        self.bandwidthUp = bandwidthUp
        self.bandwidthDown = bandwidthDown
        self.external = external


@implementer(IRealm)
class AttributeRealm:
    """
    A realm giving each user the attributes in C{users} (by name; C{None} for
    the anonymous user).
    """

    def __init__(self, users: dict[str | None, dict[str, Any]]) -> None:
        self.users = users

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        if avatarId is ANONYMOUS:
            name = None
        else:
            name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        return ISOCKSUser, Avatar(name, **self.users.get(name, {})), lambda: None


def attributePortal(**users: dict[str, Any]) -> Portal:
    """
    A portal where every user's password is C{pw} and whose avatars carry
    the given attributes.
    """
    checker = InMemoryUsernamePasswordDatabaseDontUse(**{u: b"pw" for u in users})
    return Portal(AttributeRealm(users), [checker])


class FakeEnd:
    """
    A relay end as a throttle sees it: it can be paused and resumed.
    """

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pauseReading(self, reason: str) -> None:
        self.paused = True
        self.pauses += 1

    def resumeReading(self, reason: str) -> None:
        self.paused = False


class Session:
    """
    One more client of a L{ProxyHarness}'s factory: log in as C{user} and
    CONNECT.
    """

    def __init__(self, h: ProxyHarness, user: str, host: str = "192.0.2.1") -> None:
        self.protocol = h.factory.buildProtocol(CLIENT_ADDRESS)
        self.transport = RecordingTransport(
            hostAddress=LISTEN_ADDRESS, peerAddress=CLIENT_ADDRESS
        )
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(
            greeting(0x02) + authRequest(user.encode(), b"pw") + request(host, 80)
        )

    def reply(self) -> bytes:
        """
        The SOCKS5 reply to the request (after method and auth answers).
        """
        data = self.transport.value()
        self.transport.clear()
        return data[4:]

    def lost(self) -> None:
        """
        The client goes away.
        """
        self.transport.connected = False
        self.protocol.connectionLost(Failure(ConnectionDone()))


def throttleTimers(reactor: Any) -> list[Any]:
    """
    The throttle timers among C{reactor}'s delayed calls.
    """
    return [
        c
        for c in reactor.getDelayedCalls()
        if getattr(c.func, "__name__", "") == "_refilled"
    ]


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket} and the burst size.
    """

    def test_refillCapped(self) -> None:
        """
        A bucket refills at its rate and never above its capacity.
        """
        bucket = TokenBucket(1000, 2000, 0.0)
        bucket.tokens = -500
        self.assertEqual(bucket.refill(1.0), 500)
        self.assertEqual(bucket.refill(10.0), 2000)

    def test_delayPaysDebt(self) -> None:
        """
        The delay is the time the rate takes to pay a negative balance.
        """
        bucket = TokenBucket(1000, 2000, 0.0)
        bucket.tokens = -250
        self.assertAlmostEqual(bucket.delay(), 0.25)
        bucket.tokens = 10
        self.assertEqual(bucket.delay(), 0.0)

    def test_burstMinimum(self) -> None:
        """
        A slow rate still gets a burst of at least 64 KiB; a fast one a
        second's worth.
        """
        clock = Clock()
        self.assertEqual(UserThrottle(clock, 1000, None).tokens("up"), MIN_BURST)
        self.assertEqual(UserThrottle(clock, None, 10**6).tokens("down"), 10**6)
        self.assertIsNone(UserThrottle(clock, 1000, None).tokens("down"))

    def test_avatarRates(self) -> None:
        """
        Rates are read from the avatar, C{None} where unset or absent.
        """
        self.assertEqual(avatarRates(Avatar("a", bandwidthUp=5)), (5, None))
        self.assertEqual(avatarRates(object()), (None, None))


class UserThrottleTests(SynchronousTestCase):
    """
    L{UserThrottle}: spending, pausing and resuming on a clock.
    """

    def test_withinBudgetNoPause(self) -> None:
        """
        Spending no more than the bucket holds pauses nothing and sets no
        timer.
        """
        clock = Clock()
        throttle = UserThrottle(clock, None, 100_000)
        end = FakeEnd()
        throttle.spent(end, "down", 100_000)
        self.assertFalse(end.paused)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_debtPausesUntilPaid(self) -> None:
        """
        A chunk that takes the bucket below zero pauses the end until the
        debt is paid at the rate, then resumes it.
        """
        clock = Clock()
        throttle = UserThrottle(clock, None, 100_000)
        end = FakeEnd()
        throttle.spent(end, "down", 150_000)
        self.assertTrue(end.paused)
        self.assertEqual(throttle.pending(), 1)
        clock.advance(0.49)
        self.assertTrue(end.paused)
        clock.advance(0.02)
        self.assertFalse(end.paused)
        self.assertEqual(throttle.pending(), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_directionsIndependent(self) -> None:
        """
        Spending up does not pause a reader down, and an unlimited direction
        never pauses.
        """
        clock = Clock()
        throttle = UserThrottle(clock, 70_000, None)
        up, down = FakeEnd(), FakeEnd()
        throttle.spent(up, "up", 200_000)
        throttle.spent(down, "down", 10**9)
        self.assertTrue(up.paused)
        self.assertFalse(down.paused)

    def test_sharedBudget(self) -> None:
        """
        Two ends of one user spend from one bucket: once one has used it
        up, the other's next chunk pauses it too, and both resume together.
        """
        clock = Clock()
        throttle = UserThrottle(clock, None, 100_000)
        a, b = FakeEnd(), FakeEnd()
        throttle.spent(a, "down", 100_000)
        self.assertFalse(a.paused)
        throttle.spent(b, "down", 1000)
        self.assertTrue(b.paused)
        throttle.spent(a, "down", 1000)
        self.assertTrue(a.paused)
        self.assertEqual(throttle.pending(), 1)
        clock.advance(0.02)
        self.assertFalse(a.paused)
        self.assertFalse(b.paused)

    def test_longRunRate(self) -> None:
        """
        An end that reads a chunk whenever it may moves, over ten simulated
        seconds, the burst plus ten seconds at the rate (within one chunk).
        """
        clock = Clock()
        rate, chunk = 200_000, 16384
        throttle = UserThrottle(clock, None, rate)
        end = FakeEnd()
        total = 0
        while clock.seconds() < 10.0:
            if end.paused:
                clock.advance(0.001)
            else:
                throttle.spent(end, "down", chunk)
                total += chunk
        expected = rate + rate * 10.0
        self.assertLess(abs(total - expected), 2 * chunk)

    def test_detachCancelsTimer(self) -> None:
        """
        A paused end that goes away leaves no timer behind when nobody else
        waits.
        """
        clock = Clock()
        throttle = UserThrottle(clock, 70_000, None)
        a, b = FakeEnd(), FakeEnd()
        throttle.spent(a, "up", 100_000)
        throttle.spent(b, "up", 1)
        throttle.detach(a)
        self.assertEqual(throttle.pending(), 1)
        throttle.detach(b)
        self.assertEqual(throttle.pending(), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopCancelsAndIgnoresLaterSpending(self) -> None:
        """
        A stopped throttle cancels its timers and no longer pauses anyone.
        """
        clock = Clock()
        throttle = UserThrottle(clock, 70_000, None)
        end = FakeEnd()
        throttle.spent(end, "up", 100_000)
        throttle.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        other = FakeEnd()
        throttle.spent(other, "up", 10**6)
        self.assertFalse(other.paused)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_datagramsDroppedOverLimit(self) -> None:
        """
        A datagram passes while the bucket holds its size, and is refused
        (not queued) when it does not.
        """
        clock = Clock()
        throttle = UserThrottle(clock, MIN_BURST, None)
        self.assertTrue(throttle.allowDatagram("up", MIN_BURST - 100))
        self.assertFalse(throttle.allowDatagram("up", 200))
        self.assertTrue(throttle.allowDatagram("down", 10**6))
        clock.advance(1.0)
        self.assertTrue(throttle.allowDatagram("up", 200))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_liftingLimitWakes(self) -> None:
        """
        Changing a rate to unlimited resumes the ends waiting on it.
        """
        clock = Clock()
        throttle = UserThrottle(clock, 70_000, None)
        end = FakeEnd()
        throttle.spent(end, "up", 100_000)
        throttle.setRates(None, None)
        self.assertFalse(end.paused)
        self.assertEqual(clock.getDelayedCalls(), [])


class ThrottleRegistryTests(SynchronousTestCase):
    """
    L{ThrottleRegistry}: one throttle per user while a session lasts.
    """

    def test_sharedByUser(self) -> None:
        """
        Sessions of one user get the same throttle; another user another.
        """
        registry = ThrottleRegistry(Clock())
        a = registry.acquire("alice", 1000, None)
        self.assertIs(registry.acquire("alice", 1000, None), a)
        self.assertIsNot(registry.acquire("bob", 1000, None), a)
        self.assertEqual(len(registry), 2)

    def test_removedWithLastSession(self) -> None:
        """
        The throttle stays while a session of the user lasts and is removed,
        with its timers, when the last one ends.
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        throttle = registry.acquire("alice", 70_000, None)
        registry.acquire("alice", 70_000, None)
        throttle.spent(FakeEnd(), "up", 100_000)
        registry.release("alice", throttle)
        self.assertIs(registry.get("alice"), throttle)
        registry.release("alice", throttle)
        self.assertIsNone(registry.get("alice"))
        self.assertEqual(len(registry), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_anonymousNotShared(self) -> None:
        """
        Anonymous sessions get throttles of their own, not kept.
        """
        registry = ThrottleRegistry(Clock())
        a = registry.acquire(None, 1000, None)
        self.assertIsNot(registry.acquire(None, 1000, None), a)
        self.assertEqual(len(registry), 0)

    def test_burstSeconds(self) -> None:
        """
        The registry's burst setting sizes new buckets.
        """
        registry = ThrottleRegistry(Clock(), burstSeconds=0.5)
        self.assertEqual(registry.acquire("a", 10**6, None).tokens("up"), 500_000)


class ReadGateTests(SynchronousTestCase):
    """
    L{ReadGate}: backpressure and the throttle pause a transport
    independently.
    """

    def test_backpressureDoesNotResumeThrottled(self) -> None:
        """
        The peer's buffer draining does not resume a transport paused by
        the throttle, and the throttle does not resume one paused by
        backpressure.
        """
        transport = RecordingTransport()
        gate = ReadGate(transport)
        gate.pause("throttle")
        gate.pauseProducing()
        gate.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        gate.pauseProducing()
        gate.resume("throttle")
        self.assertEqual(transport.producerState, "paused")
        gate.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_stopProducing(self) -> None:
        """
        Stopping the gate stops the transport.
        """
        transport = RecordingTransport()
        ReadGate(transport).stopProducing()
        self.assertEqual(transport.producerState, "stopped")


def throttledHarness(**attributes: Any) -> ProxyHarness:
    """
    A harness whose users C{alice} and C{bob} have C{attributes}.
    """
    return ProxyHarness(portal=attributePortal(alice=attributes, bob=attributes))


def connectAs(h: ProxyHarness, user: str = "alice") -> tuple[Session, Any, Any]:
    """
    A session of C{user} on C{h}'s factory with its CONNECT succeeded.
    """
    session = Session(h, user)
    outbound, outboundTransport = h.recorder.last.succeed()
    session.transport.clear()
    return session, outbound, outboundTransport


class ServerThrottleTests(SynchronousTestCase):
    """
    The server attaches the user's throttle to both ends of the relay.
    """

    def test_downloadPausesTarget(self) -> None:
        """
        Over the download limit, reading from the target pauses; the
        client's buffer draining does not resume it; time does.
        """
        h = throttledHarness(bandwidthDown=100_000)
        session, outbound, outboundTransport = connectAs(h)
        outbound.dataReceived(b"x" * 150_000)
        self.assertEqual(len(session.transport.value()), 150_000)
        self.assertEqual(outboundTransport.producerState, "paused")
        # The client's write buffer drains: backpressure resumes its producer.
        session.transport.producer.pauseProducing()
        session.transport.producer.resumeProducing()
        self.assertEqual(outboundTransport.producerState, "paused")
        h.reactor.advance(0.51)
        self.assertEqual(outboundTransport.producerState, "producing")
        self.assertEqual(session.transport.producerState, "producing")

    def test_throttleDoesNotResumeBackpressure(self) -> None:
        """
        When the throttle's timer fires while the client's buffer is still
        full, reading from the target stays paused until it drains.
        """
        h = throttledHarness(bandwidthDown=100_000)
        session, outbound, outboundTransport = connectAs(h)
        outbound.dataReceived(b"x" * 150_000)
        session.transport.producer.pauseProducing()
        h.reactor.advance(1.0)
        self.assertEqual(outboundTransport.producerState, "paused")
        session.transport.producer.resumeProducing()
        self.assertEqual(outboundTransport.producerState, "producing")

    def test_uploadPausesClient(self) -> None:
        """
        Over the upload limit, reading from the client pauses until the
        tokens are back.
        """
        h = throttledHarness(bandwidthUp=MIN_BURST)
        session, _, outboundTransport = connectAs(h)
        session.protocol.dataReceived(b"u" * (MIN_BURST + 1000))
        self.assertEqual(len(outboundTransport.value()), MIN_BURST + 1000)
        self.assertEqual(session.transport.producerState, "paused")
        h.reactor.advance(1000 / MIN_BURST + 0.01)
        self.assertEqual(session.transport.producerState, "producing")

    def test_earlyDataOverLimitStaysPaused(self) -> None:
        """
        Data pipelined before the connect succeeded counts too: when it is
        over the limit, reading stays paused after the relay starts.
        """
        h = throttledHarness(bandwidthUp=MIN_BURST)
        session = Session(h, "alice")
        session.protocol.dataReceived(b"e" * (MIN_BURST * 2))
        h.recorder.last.succeed()
        self.assertEqual(session.transport.producerState, "paused")
        h.reactor.advance(1.01)
        self.assertEqual(session.transport.producerState, "producing")

    def test_twoSessionsShareBudget(self) -> None:
        """
        Two sessions of one user spend from one budget: after one used it,
        the other pauses on its first chunk; another user is not affected.
        """
        h = throttledHarness(bandwidthDown=100_000)
        _, outboundA, transportA = connectAs(h, "alice")
        _, outboundB, transportB = connectAs(h, "alice")
        _, outboundC, transportC = connectAs(h, "bob")
        outboundA.dataReceived(b"a" * 100_000)
        self.assertEqual(transportA.producerState, "producing")
        outboundB.dataReceived(b"b" * 1000)
        self.assertEqual(transportB.producerState, "paused")
        outboundC.dataReceived(b"c" * 1000)
        self.assertEqual(transportC.producerState, "producing")
        self.assertEqual(len(h.factory.throttles), 2)

    def test_removedWhenLastSessionEnds(self) -> None:
        """
        The user's throttle is removed, and no throttle timer is left, when
        the last of the user's sessions ends.
        """
        h = throttledHarness(bandwidthDown=100_000, bandwidthUp=100_000)
        a, outboundA, _ = connectAs(h)
        b, outboundB, _ = connectAs(h)
        outboundA.dataReceived(b"a" * 150_000)
        outboundB.dataReceived(b"b" * 1000)
        self.assertEqual(len(throttleTimers(h.reactor)), 1)
        a.lost()
        outboundA.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(h.factory.throttles.get("alice"))
        b.lost()
        outboundB.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(h.factory.throttles.get("alice"))
        self.assertEqual(throttleTimers(h.reactor), [])

    def test_noLimitsNoThrottle(self) -> None:
        """
        An avatar without bandwidth limits gets no throttle, and the
        transports are each other's producers as before.
        """
        h = throttledHarness()
        session, _, outboundTransport = connectAs(h)
        self.assertIsNone(session.protocol.throttle)
        self.assertIs(outboundTransport.producer, session.transport)
        self.assertEqual(len(h.factory.throttles), 0)

    def test_avatarWithoutAttributes(self) -> None:
        """
        A plain L{SOCKSUser} avatar (no policy attributes) is relayed
        without a throttle.
        """
        h = ProxyHarness()
        _, outboundTransport = h.connected()
        self.assertIs(outboundTransport.producer, h.transport)
        self.assertEqual(len(h.factory.throttles), 0)


class SessionCapTests(SynchronousTestCase):
    """
    The avatar's C{maxSessions} caps its concurrent sessions.
    """

    def test_admissionLimitOverride(self) -> None:
        """
        L{Admission.admitUser} takes a per-user limit over the server's.
        """
        admission = Admission(Limits(sessionsPerUser=1), lambda: 0.0)
        admission.admitUser("a", 2)
        admission.admitUser("a", 2)
        self.assertRaises(Refusal, admission.admitUser, "a", 2)
        admission.admitUser("b")
        self.assertRaises(Refusal, admission.admitUser, "b")
        admission.admitUser("c", 0)
        admission.admitUser("c", 0)

    def test_secondSessionRefused(self) -> None:
        """
        With C{maxSessions} 1, a user's second SOCKS5 session is refused
        with 0x01 while another user is served.
        """
        h = ProxyHarness(portal=attributePortal(alice={"maxSessions": 1}, bob={}))
        first = Session(h, "alice")
        h.recorder.last.succeed()
        self.assertEqual(first.reply()[1], 0x00)
        requests = len(h.recorder.requests)
        second = Session(h, "alice")
        self.assertEqual(second.reply()[:2], b"\x05\x01")
        self.assertEqual(len(h.recorder.requests), requests)
        other = Session(h, "bob")
        h.recorder.last.succeed()
        self.assertEqual(other.reply()[1], 0x00)
        first.lost()
        third = Session(h, "alice")
        h.recorder.last.succeed()
        self.assertEqual(third.reply()[1], 0x00)

    def test_capAboveServerLimit(self) -> None:
        """
        An avatar's cap above the server's per-user limit lets it have more
        sessions.
        """
        h = ProxyHarness(
            portal=attributePortal(alice={"maxSessions": 3}),
            limits=Limits(sessionsPerUser=1),
        )
        for _ in range(3):
            session = Session(h, "alice")
            h.recorder.last.succeed()
            self.assertEqual(session.reply()[1], 0x00)
        self.assertEqual(Session(h, "alice").reply()[1], 0x01)


class ExternalAddressTests(SynchronousTestCase):
    """
    The avatar's C{external} is the session's outgoing address.
    """

    def test_connectBindsToAvatarExternal(self) -> None:
        """
        The outbound connection is bound to the avatar's address, over the
        server's C{--external} choice.
        """
        h = ProxyHarness(
            portal=attributePortal(alice={"external": "198.51.100.7"}),
            recordEndpoints=False,
            policy=ALLOW_ALL,
            externals=("203.0.113.1",),
        )
        Session(h, "alice", host="192.0.2.1")
        self.assertEqual(len(h.reactor.tcpClients), 1)
        host, port, _, _, bindAddress = h.reactor.tcpClients[0]
        self.assertEqual((host, port), ("192.0.2.1", 80))
        self.assertEqual(bindAddress, ("198.51.100.7", 0))

    def test_withoutAvatarExternalServerChoice(self) -> None:
        """
        Without an avatar address, the server's C{--external} is used.
        """
        h = ProxyHarness(
            portal=attributePortal(alice={}),
            recordEndpoints=False,
            policy=ALLOW_ALL,
            externals=("203.0.113.1",),
        )
        Session(h, "alice")
        self.assertEqual(h.reactor.tcpClients[0][4], ("203.0.113.1", 0))


class UDPHarness:
    """
    A factory with UDP ASSOCIATE and an anonymous portal whose avatar has
    C{attributes}.
    """

    def __init__(self, **attributes: Any) -> None:
        self.reactor = UDPMemoryReactor()
        portal = Portal(AttributeRealm({None: attributes}), [AllowAnonymousAccess()])
        self.factory = SOCKS5ServerFactory(
            portal=portal,
            reactor=self.reactor,
            nameResolver=FakeHostnameResolver(),
            udpOptions=UDPOptions(),
        )

    def associated(self) -> Control:
        """
        A control connection with a successful association.
        """
        c = Control(self, LOCAL, PEER)  # type: ignore[arg-type]
        reply = c.associate()
        assert reply[1] == 0x00, reply
        return c


class UDPEnforcementTests(SynchronousTestCase):
    """
    UDP associations take the avatar's outgoing address and bandwidth.
    """

    def test_outboundSocketOnAvatarExternal(self) -> None:
        """
        The association's outbound socket is bound to the avatar's address.
        """
        h = UDPHarness(external="198.51.100.9")
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.5", 53, b"query"), CLIENT_UDP)
        self.assertEqual(c.outbound(4).interface, "198.51.100.9")
        self.assertEqual(c.outbound(4).written, [(b"query", ("192.0.2.5", 53))])

    def test_uploadOverLimitDropped(self) -> None:
        """
        Datagrams to destinations beyond the upload budget are dropped and
        counted as C{bandwidth}; with time, they pass again.
        """
        h = UDPHarness(bandwidthUp=MIN_BURST)
        c = h.associated()
        payload = b"p" * 40000
        for _ in range(3):
            c.fromClient(udpDatagram("192.0.2.5", 53, payload), CLIENT_UDP)
        self.assertEqual(len(c.outbound(4).written), 1)
        self.assertEqual(c.drops, {"bandwidth": 2})
        h.reactor.advance(1.0)
        c.fromClient(udpDatagram("192.0.2.5", 53, payload), CLIENT_UDP)
        self.assertEqual(len(c.outbound(4).written), 2)

    def test_downloadOverLimitDropped(self) -> None:
        """
        Datagrams to the client beyond the download budget are dropped and
        counted as C{bandwidth}.
        """
        h = UDPHarness(bandwidthDown=MIN_BURST)
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.5", 53, b"q"), CLIENT_UDP)
        for _ in range(3):
            c.fromRemote(b"r" * 40000, ("192.0.2.5", 53))
        self.assertEqual(len(c.toClient()), 1)
        self.assertEqual(c.drops, {"bandwidth": 2})
        c.lost()
        self.assertEqual(throttleTimers(h.reactor), [])


class BindEnforcementTests(SynchronousTestCase):
    """
    BIND's relay is throttled like CONNECT's.
    """

    def test_bindRelayThrottled(self) -> None:
        """
        Over the download limit, reading from the peer that connected to the
        BIND port pauses until the tokens are back.
        """
        from tests.test_bind import PEER as BIND_PEER
        from tests.test_bind import BindHarness

        portal = Portal(
            AttributeRealm({None: {"bandwidthDown": 100_000}}), [AllowAnonymousAccess()]
        )
        h = BindHarness(portal=portal)
        h.bind("127.0.0.7", 0)
        inbound, inboundTransport = h.peerConnects(BIND_PEER)
        h.received()
        inbound.dataReceived(b"x" * 150_000)
        self.assertEqual(len(h.received()), 150_000)
        self.assertEqual(inboundTransport.producerState, "paused")
        h.reactor.advance(0.51)
        self.assertEqual(inboundTransport.producerState, "producing")
        h.clientLost()
        inbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(throttleTimers(h.reactor), [])
