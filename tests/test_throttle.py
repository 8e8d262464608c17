# -*- test-case-name: tests.test_throttle -*-
"""
Tests for L{socksrelay.throttle} and the enforcement of an avatar's policy
by the server: per-user bandwidth (shared by all of a user's sessions,
pausing the reading side alongside the relay's backpressure), the per-user
session cap (C{maxSessions}) and the outgoing address (C{external}), for
CONNECT, BIND and UDP alike.
"""

from __future__ import annotations

import base64
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
        A slow rate still gets a burst of at least L{MIN_BURST} (4 KiB); a
        fast one, by default, a tenth of a second's worth.
        """
        clock = Clock()
        self.assertEqual(MIN_BURST, 4096)
        self.assertEqual(UserThrottle(clock, 1000, None).tokens("up"), MIN_BURST)
        self.assertEqual(UserThrottle(clock, None, 10**6).tokens("down"), 100_000)
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
        throttle = UserThrottle(clock, None, 100_000, burstSeconds=1.0)
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
        throttle = UserThrottle(clock, None, 100_000, burstSeconds=1.0)
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
        throttle = UserThrottle(clock, None, 100_000, burstSeconds=1.0)
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
        seconds, the burst (a tenth of a second by default) plus ten seconds
        at the rate (within one chunk).
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
        expected = rate * 0.1 + rate * 10.0
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


class BurstAndReadSizeTests(SynchronousTestCase):
    """
    What bounds a user's overshoot: the burst, the size of a throttled
    read, and what a changed rate or a large datagram leaves behind.
    """

    def test_readSizeAtMostBurst(self) -> None:
        """
        A throttled end reads no more than its bucket holds (and at least
        L{MIN_BURST}, at most the relay's own size); an unlimited direction
        reads at the relay's size.
        """
        clock = Clock()
        throttle = UserThrottle(clock, 1000, 10**6)
        self.assertEqual(throttle.readSize("down", 262144), 100_000)
        self.assertEqual(throttle.readSize("up", 262144), MIN_BURST)
        self.assertEqual(UserThrottle(clock, 10**8, None).readSize("up", 262144), 262144)
        self.assertEqual(UserThrottle(clock, 10**8, None).readSize("down", 262144), 262144)

    def test_largeDatagramPassesOnlyWhenFull(self) -> None:
        """
        A datagram larger than the whole bucket passes when the bucket is
        full and leaves a debt: nothing passes until it is paid and the
        bucket is full again.
        """
        clock = Clock()
        throttle = UserThrottle(clock, 100_000, None)
        self.assertTrue(throttle.allowDatagram("up", 60_000))
        self.assertAlmostEqual(throttle.tokens("up"), -50_000)
        self.assertFalse(throttle.allowDatagram("up", 100))
        clock.advance(0.55)
        self.assertTrue(throttle.allowDatagram("up", 100))
        self.assertFalse(throttle.allowDatagram("up", 60_000))
        clock.advance(0.101)
        self.assertTrue(throttle.allowDatagram("up", 60_000))

    def test_changedRateKeepsDebt(self) -> None:
        """
        Changing a user's rate keeps their balance: a debt stays to be paid
        (at the new rate), no fresh burst is granted.
        """
        clock = Clock()
        throttle = UserThrottle(clock, None, 100_000)
        end = FakeEnd()
        throttle.spent(end, "down", 60_000)
        throttle.setRates(None, 200_000)
        self.assertAlmostEqual(throttle.tokens("down"), -50_000)
        self.assertTrue(end.paused)
        clock.advance(0.24)
        self.assertTrue(end.paused)
        clock.advance(0.02)
        self.assertFalse(end.paused)
        self.assertEqual(clock.getDelayedCalls(), [])


def transfer(
    registry: ThrottleRegistry, clock: Clock, user: str, total: int, chunk: int = 16384
) -> None:
    """
    One session of C{user} downloads C{total} bytes, a chunk whenever its
    end may read (the clock advancing a millisecond while it is paused),
    then ends.
    """
    throttle = registry.acquire(user, None, 1_000_000)
    end = FakeEnd()
    moved = 0
    for _ in range(100_000):
        if moved >= total:
            break
        if end.paused:
            clock.advance(0.001)
        else:
            throttle.spent(end, "down", chunk)
            moved += chunk
    throttle.detach(end)
    registry.release(user, throttle)


class UserBalanceTests(SynchronousTestCase):
    """
    A user's balance holds over any pattern of sessions: one after another,
    overlapping, reconnecting; and the registry forgets a user once their
    bucket is full again.
    """

    RATE = 1_000_000

    def test_sequentialSessionsHoldRate(self) -> None:
        """
        Six 1 MB sessions of one user, one after the other, take as long as
        one 6 MB transfer at 1 MB/s: the burst is granted once, not per
        session.
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        for _ in range(6):
            transfer(registry, clock, "alice", 1_000_000)
        burst, chunk = 100_000, 16384
        self.assertGreaterEqual(clock.seconds(), (6_000_000 - burst - chunk) / self.RATE)
        self.assertLessEqual(clock.seconds(), 6_000_000 / self.RATE + 0.1)

    def test_reconnectContinuesDebt(self) -> None:
        """
        A session that reconnects right after the last one ended starts
        with that one's balance (here a debt), not a full bucket: its first
        chunk pauses it until the debt is paid.
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        first = registry.acquire("alice", None, 100_000)
        first.spent(FakeEnd(), "down", 60_000)
        registry.release("alice", first)
        second = registry.acquire("alice", None, 100_000)
        self.assertIs(second, first)
        self.assertAlmostEqual(second.tokens("down"), -50_000)
        end = FakeEnd()
        second.spent(end, "down", 1000)
        self.assertTrue(end.paused)
        clock.advance(0.5)
        self.assertTrue(end.paused)
        clock.advance(0.02)
        self.assertFalse(end.paused)

    def test_reconnectAfterPauseNotRefilled(self) -> None:
        """
        A user who used the burst and comes back after less than a refill
        gets only what was earned meanwhile.
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        first = registry.acquire("alice", None, 100_000)
        first.spent(FakeEnd(), "down", 10_000)
        registry.release("alice", first)
        clock.advance(0.03)
        second = registry.acquire("alice", None, 100_000)
        self.assertAlmostEqual(second.tokens("down"), 3000)

    def test_overlappingSessionsHoldRate(self) -> None:
        """
        Three sessions of one user that start 0.3 s apart and overlap move
        their 1.5 MB in all at the rate (give or take the burst and a chunk
        each).
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        starts, size, chunk = [0.0, 0.3, 0.6], 500_000, 16384
        state: list[Any] = [None, None, None]
        moved = [0, 0, 0]
        for _ in range(100_000):
            for i, start in enumerate(starts):
                if state[i] is None and clock.seconds() >= start:
                    state[i] = (registry.acquire("alice", None, self.RATE), FakeEnd())
                if state[i] is None or state[i] is False:
                    continue
                throttle, end = state[i]
                if moved[i] >= size:
                    throttle.detach(end)
                    registry.release("alice", throttle)
                    state[i] = False
                elif not end.paused:
                    throttle.spent(end, "down", chunk)
                    moved[i] += chunk
            if all(x is False for x in state):
                break
            clock.advance(0.001)
        self.assertEqual(state, [False, False, False])
        self.assertGreaterEqual(clock.seconds(), (1_500_000 - 100_000 - 3 * chunk) / self.RATE)
        self.assertLessEqual(clock.seconds(), 1_500_000 / self.RATE + 0.1)

    def test_forgottenOnceFull(self) -> None:
        """
        A user without sessions is remembered until their bucket would be
        full again, then forgotten at the next start or end of a session.
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        throttle = registry.acquire("alice", None, 100_000)
        throttle.spent(FakeEnd(), "down", 60_000)
        registry.release("alice", throttle)
        # 50 KB of debt and 10 KB of burst: full in 0.6 s.
        clock.advance(0.59)
        registry.release("bob", registry.acquire("bob", None, 100_000))
        self.assertIs(registry.get("alice"), throttle)
        clock.advance(0.02)
        registry.release("bob", registry.acquire("bob", None, 100_000))
        self.assertIsNone(registry.get("alice"))
        self.assertEqual(len(registry), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_tableBounded(self) -> None:
        """
        A thousand users who each leave with a debt are all forgotten once
        their buckets have refilled: the table does not grow with the
        users that came and went.
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        for i in range(1000):
            throttle = registry.acquire(f"user{i}", 1_000_000, 1_000_000)
            throttle.spent(FakeEnd(), "up", 300_000)
            throttle.spent(FakeEnd(), "down", 300_000)
            registry.release(f"user{i}", throttle)
        self.assertEqual(len(registry), 1000)
        clock.advance(1.0)
        registry.release("last", registry.acquire("last", None, 1000))
        self.assertEqual(len(registry), 0)
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

    def test_timersStopWithLastSession(self) -> None:
        """
        The throttle stays while a session of the user lasts; when the last
        one ends its timers are cancelled, and it is kept (with no live
        session) until its bucket has refilled.
        """
        clock = Clock()
        registry = ThrottleRegistry(clock)
        throttle = registry.acquire("alice", 70_000, None)
        registry.acquire("alice", 70_000, None)
        throttle.spent(FakeEnd(), "up", 100_000)
        registry.release("alice", throttle)
        self.assertIs(registry.get("alice"), throttle)
        self.assertEqual(registry.live("alice"), 1)
        registry.release("alice", throttle)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIs(registry.get("alice"), throttle)
        self.assertEqual(registry.live("alice"), 0)

    def test_fullBucketForgottenAtOnce(self) -> None:
        """
        A user whose bucket is full when their last session ends is not
        kept: a new throttle would be the same.
        """
        registry = ThrottleRegistry(Clock())
        throttle = registry.acquire("alice", 70_000, None)
        registry.release("alice", throttle)
        self.assertIsNone(registry.get("alice"))
        self.assertEqual(len(registry), 0)

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
        # The burst (10 KB) and 0.5 s worth.
        outbound.dataReceived(b"x" * 60_000)
        self.assertEqual(len(session.transport.value()), 60_000)
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
        outbound.dataReceived(b"x" * 60_000)
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
        # The whole burst: 0.1 s worth.
        outboundA.dataReceived(b"a" * 10_000)
        self.assertEqual(transportA.producerState, "producing")
        outboundB.dataReceived(b"b" * 1000)
        self.assertEqual(transportB.producerState, "paused")
        outboundC.dataReceived(b"c" * 1000)
        self.assertEqual(transportC.producerState, "producing")
        self.assertEqual(len(h.factory.throttles), 2)

    def test_timersGoWhenLastSessionEnds(self) -> None:
        """
        No throttle timer is left when the last of the user's sessions
        ends; the user's throttle is kept, with no live session, until its
        buckets have refilled, and then forgotten.
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
        self.assertEqual(throttleTimers(h.reactor), [])
        self.assertEqual(h.factory.throttles.live("alice"), 0)
        self.assertIsNotNone(h.factory.throttles.get("alice"))
        h.reactor.advance(2.0)
        connectAs(h, "bob")
        self.assertIsNone(h.factory.throttles.get("alice"))

    def test_reconnectStartsWithBalance(self) -> None:
        """
        A user whose session ended in debt and who reconnects at once does
        not get a fresh bucket: the new session's first chunk pauses the
        target.
        """
        h = throttledHarness(bandwidthDown=100_000)
        a, outboundA, _ = connectAs(h)
        outboundA.dataReceived(b"a" * 60_000)
        a.lost()
        outboundA.connectionLost(Failure(ConnectionDone()))
        _, outboundB, transportB = connectAs(h)
        outboundB.dataReceived(b"b" * 1000)
        self.assertEqual(transportB.producerState, "paused")
        h.reactor.advance(0.52)
        self.assertEqual(transportB.producerState, "producing")

    def test_throttledReadsAtMostBurst(self) -> None:
        """
        A throttled end reads at most its user's burst at a time (0.1 s of
        100 KB/s: 10 KB), not the relay's 256 KiB, so that one read cannot
        overshoot the limit; an unlimited direction keeps the relay's size.
        """
        from socksrelay.relay import RELAY_BUFFER

        h = throttledHarness(bandwidthUp=100_000)
        session = Session(h, "alice")
        session.transport.bufferSize = 65536  # type: ignore[attr-defined]
        h.recorder.last.succeed()
        self.assertEqual(session.transport.bufferSize, 10_000)  # type: ignore[attr-defined]
        h2 = throttledHarness(bandwidthDown=100_000)
        unlimitedUp = Session(h2, "alice")
        unlimitedUp.transport.bufferSize = 65536  # type: ignore[attr-defined]
        h2.recorder.last.succeed()
        size = unlimitedUp.transport.bufferSize  # type: ignore[attr-defined]
        self.assertEqual(size, RELAY_BUFFER)

    def test_httpForwardingThrottled(self) -> None:
        """
        Plain-HTTP forwarding (C{GET http://...}) spends from the user's
        budget too: over the download limit, reading from the origin
        pauses until the tokens are back; over the upload limit, reading
        from the client pauses.
        """
        h = throttledHarness(bandwidthDown=100_000, bandwidthUp=100_000)
        credentials = base64.b64encode(b"alice:pw")
        h.send(
            b"GET http://192.0.2.1/ HTTP/1.1\r\nHost: 192.0.2.1\r\n"
            b"Proxy-Authorization: Basic " + credentials + b"\r\n\r\n"
        )
        h.reactor.advance(0)
        origin, originTransport = h.recorder.last.succeed()
        throttle = h.factory.throttles.get("alice")
        self.assertIsNotNone(throttle)
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 120000\r\n\r\n")
        origin.dataReceived(b"x" * 60_000)
        self.assertEqual(originTransport.producerState, "paused")
        h.reactor.advance(0.52)
        self.assertEqual(originTransport.producerState, "producing")
        h.send(
            b"POST http://192.0.2.1/ HTTP/1.1\r\nHost: 192.0.2.1\r\n"
            b"Proxy-Authorization: Basic " + credentials + b"\r\n"
            b"Content-Length: 60000\r\n\r\n" + b"u" * 60_000
        )
        self.assertEqual(h.transport.producerState, "paused")
        h.reactor.advance(0.7)
        self.assertEqual(h.transport.producerState, "producing")

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
        h = UDPHarness(bandwidthUp=100_000)
        c = h.associated()
        # The burst is 10 KB: one passes, two do not.
        payload = b"p" * 6000
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
        h = UDPHarness(bandwidthDown=100_000)
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.5", 53, b"q"), CLIENT_UDP)
        for _ in range(3):
            c.fromRemote(b"r" * 6000, ("192.0.2.5", 53))
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
        inbound.dataReceived(b"x" * 60_000)
        self.assertEqual(len(h.received()), 60_000)
        self.assertEqual(inboundTransport.producerState, "paused")
        h.reactor.advance(0.51)
        self.assertEqual(inboundTransport.producerState, "producing")
        h.clientLost()
        inbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(throttleTimers(h.reactor), [])
