# -*- test-case-name: tests.test_resolve -*-
"""
Tests for L{socksrelay.resolve}: resolving destination names through a
L{twisted.names} resolver, and handing that resolver to L{HostnameEndpoint}
through L{ResolverReactor}, all against fakes.
"""

from __future__ import annotations

from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.names.error import DNSNameError, DNSServerError
from twisted.trial.unittest import SynchronousTestCase

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.names import dns

from socksrelay.limits import Limits
from socksrelay.resolve import (
    AnswerCache,
    LookupLimiter,
    LookupRefused,
    NamesHostnameResolver,
    ResolverReactor,
    _Resolution,
    resolveAddresses,
    retryTimeouts,
)
from socksrelay.rules import Policy
from tests.test_dialects import parseHTTPResponse
from tests.test_multiprotocol import connectHead, forwardHead
from tests.fakes import (
    CLIENT_ADDRESS,
    OUTBOUND_LOCAL,
    SUCCESS_REPLY,
    FakeResolver,
    ProxyHarness,
    RecordingTransport,
    errorReply,
    greeting,
    request,
)


@implementer(IResolutionReceiver)
class Receiver:
    """
    An L{IResolutionReceiver} that records what it is told.
    """

    def __init__(self) -> None:
        self.began: list[IHostResolution] = []
        self.addresses: list[object] = []
        self.completed = 0

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        self.began.append(resolutionInProgress)

    def addressResolved(self, address: object) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.completed += 1


class NamesHostnameResolverTests(SynchronousTestCase):
    """
    L{NamesHostnameResolver} turns A and AAAA answers into addresses.
    """

    def resolve(self, fake: FakeResolver, name: str, port: int = 0, **kw) -> Receiver:
        """
        Resolve C{name} through C{fake} and return what the receiver saw.
        """
        receiver = Receiver()
        NamesHostnameResolver(fake).resolveHostName(receiver, name, port, **kw)
        return receiver

    def test_provides(self) -> None:
        """
        The resolver provides L{IHostnameResolver}.
        """
        self.assertTrue(verifyObject(IHostnameResolver, NamesHostnameResolver(None)))

    def test_ipv4AndIPv6(self) -> None:
        """
        A and AAAA answers are delivered as L{IPv4Address} and
        L{IPv6Address} with the requested port, then completion once.
        """
        fake = FakeResolver(
            a={"example.com": ["127.0.0.1", "192.0.2.7"]},
            aaaa={"example.com": ["::1"]},
        )
        receiver = self.resolve(fake, "example.com", 443)
        self.assertEqual(
            receiver.addresses,
            [
                IPv4Address("TCP", "127.0.0.1", 443),
                IPv4Address("TCP", "192.0.2.7", 443),
                IPv6Address("TCP", "::1", 443),
            ],
        )
        self.assertEqual(receiver.completed, 1)
        self.assertEqual(
            sorted(fake.lookups), [("A", "example.com"), ("AAAA", "example.com")]
        )

    def test_resolutionBegan(self) -> None:
        """
        The receiver is first given an L{IHostResolution} naming the host.
        """
        receiver = self.resolve(FakeResolver(), "example.com")
        [resolution] = receiver.began
        self.assertTrue(verifyObject(IHostResolution, resolution))
        self.assertEqual(resolution.name, "example.com")

    def test_udpSemantics(self) -> None:
        """
        With UDP transport semantics the addresses are UDP addresses.
        """
        fake = FakeResolver(a={"example.com": ["127.0.0.1"]})
        receiver = self.resolve(
            fake, "example.com", 53, transportSemantics="UDP"
        )
        self.assertEqual(receiver.addresses, [IPv4Address("UDP", "127.0.0.1", 53)])

    def test_oneLookupFails(self) -> None:
        """
        When the AAAA lookup fails, the A answers are still delivered and
        completion is reported once.
        """
        fake = FakeResolver(
            a={"example.com": ["127.0.0.1"]},
            aaaa={"example.com": DNSServerError("SERVFAIL")},
        )
        receiver = self.resolve(fake, "example.com", 80)
        self.assertEqual(receiver.addresses, [IPv4Address("TCP", "127.0.0.1", 80)])
        self.assertEqual(receiver.completed, 1)

    def test_otherLookupFails(self) -> None:
        """
        When the A lookup fails, the AAAA answers are still delivered and
        completion is reported once.
        """
        fake = FakeResolver(
            a={"example.com": DNSNameError("NXDOMAIN")},
            aaaa={"example.com": ["2001:db8::1"]},
        )
        receiver = self.resolve(fake, "example.com", 80)
        self.assertEqual(receiver.addresses, [IPv6Address("TCP", "2001:db8::1", 80)])
        self.assertEqual(receiver.completed, 1)

    def test_bothLookupsFail(self) -> None:
        """
        When both lookups fail, no address is delivered and completion is
        reported once.
        """
        fake = FakeResolver(
            a={"nx.example": DNSNameError("NXDOMAIN")},
            aaaa={"nx.example": DNSNameError("NXDOMAIN")},
        )
        receiver = self.resolve(fake, "nx.example")
        self.assertEqual(receiver.addresses, [])
        self.assertEqual(receiver.completed, 1)

    def test_ipv4Only(self) -> None:
        """
        With C{addressTypes=[IPv4Address]} only A records are looked up and
        delivered.
        """
        fake = FakeResolver(
            a={"example.com": ["127.0.0.1"]}, aaaa={"example.com": ["::1"]}
        )
        receiver = self.resolve(fake, "example.com", 80, addressTypes=[IPv4Address])
        self.assertEqual(fake.lookups, [("A", "example.com")])
        self.assertEqual(receiver.addresses, [IPv4Address("TCP", "127.0.0.1", 80)])
        self.assertEqual(receiver.completed, 1)

    def test_ipv6Only(self) -> None:
        """
        With C{addressTypes=[IPv6Address]} only AAAA records are looked up and
        delivered.
        """
        fake = FakeResolver(
            a={"example.com": ["127.0.0.1"]}, aaaa={"example.com": ["::1"]}
        )
        receiver = self.resolve(fake, "example.com", 80, addressTypes=[IPv6Address])
        self.assertEqual(fake.lookups, [("AAAA", "example.com")])
        self.assertEqual(receiver.addresses, [IPv6Address("TCP", "::1", 80)])
        self.assertEqual(receiver.completed, 1)

    def test_noAddressTypes(self) -> None:
        """
        With an empty C{addressTypes} nothing is looked up and completion is
        still reported once.
        """
        fake = FakeResolver(a={"example.com": ["127.0.0.1"]})
        receiver = self.resolve(fake, "example.com", 80, addressTypes=[])
        self.assertEqual(fake.lookups, [])
        self.assertEqual(receiver.addresses, [])
        self.assertEqual(receiver.completed, 1)

    def test_forServers(self) -> None:
        """
        L{NamesHostnameResolver.forServers} builds a resolver without sending
        anything.
        """
        reactor = MemoryReactorClock()
        resolver = NamesHostnameResolver.forServers([("127.0.0.1", 5353)], reactor)
        self.assertIsInstance(resolver, NamesHostnameResolver)
        self.assertTrue(verifyObject(IHostnameResolver, resolver))
        self.assertEqual(reactor.tcpClients, [])


class ResolverReactorTests(SynchronousTestCase):
    """
    L{ResolverReactor} is its reactor, with another name resolver.
    """

    def test_nameResolver(self) -> None:
        """
        The given name resolver is exposed, not the reactor's own.
        """
        reactor = MemoryReactorClock()
        resolver = NamesHostnameResolver(FakeResolver())
        wrapped = ResolverReactor(reactor, resolver)
        self.assertIs(wrapped.nameResolver, resolver)
        self.assertIsNot(reactor.nameResolver, resolver)

    def test_interfaces(self) -> None:
        """
        The wrapper provides the reactor's interfaces and
        L{IReactorPluggableNameResolver}, even when the reactor does not.
        """
        clock = Clock()
        self.assertFalse(IReactorPluggableNameResolver.providedBy(clock))
        wrapped = ResolverReactor(clock, NamesHostnameResolver(FakeResolver()))
        self.assertTrue(IReactorTime.providedBy(wrapped))
        self.assertTrue(IReactorPluggableNameResolver.providedBy(wrapped))
        self.assertFalse(IReactorTCP.providedBy(wrapped))
        self.assertTrue(
            IReactorTCP.providedBy(
                ResolverReactor(MemoryReactorClock(), NamesHostnameResolver(None))
            )
        )

    def test_forwards(self) -> None:
        """
        Everything else is the reactor's: time, delayed calls, connections.
        """
        reactor = MemoryReactorClock()
        wrapped = ResolverReactor(reactor, NamesHostnameResolver(FakeResolver()))
        called = []
        wrapped.callLater(2, called.append, "done")
        reactor.advance(2)
        self.assertEqual(called, ["done"])
        self.assertEqual(wrapped.seconds(), 2)
        wrapped.connectTCP("192.0.2.1", 80, ClientFactory())
        self.assertEqual(reactor.tcpClients[-1][:2], ("192.0.2.1", 80))


class FactoryResolutionTests(SynchronousTestCase):
    """
    A factory given a name resolver resolves destination names through it.
    """

    def harness(self, fake: FakeResolver) -> ProxyHarness:
        """
        Return a server using its default endpoints and C{fake} for names.
        """
        return ProxyHarness(
            recordEndpoints=False, nameResolver=NamesHostnameResolver(fake)
        )

    def test_nameResolvedThroughResolver(self) -> None:
        """
        A CONNECT to a name connects to the address the resolver returned,
        and the client gets the success reply once that connection is made.
        """
        fake = FakeResolver(a={"example.com": ["203.0.113.7"]})
        h = self.harness(fake)
        h.send(greeting(0x00) + request("example.com", 443))
        self.assertIn(("A", "example.com"), fake.lookups)
        host, port, clientFactory, _, _ = h.reactor.tcpClients[-1]
        self.assertEqual((host, port), ("203.0.113.7", 443))
        self.assertEqual(h.received(), b"\x05\x00")
        protocol = clientFactory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(
            RecordingTransport(
                hostAddress=OUTBOUND_LOCAL,
                peerAddress=IPv4Address("TCP", host, port),
            )
        )
        self.assertEqual(h.received(), SUCCESS_REPLY)
        self.assertEqual(h.protocol.session.resolved, "203.0.113.7:443")

    def test_ipv6AnswerUsed(self) -> None:
        """
        A name with only an AAAA record is connected to over IPv6.
        """
        fake = FakeResolver(aaaa={"v6.example": ["2001:db8::7"]})
        h = self.harness(fake)
        h.send(greeting(0x00) + request("v6.example", 80))
        self.assertEqual(h.reactor.tcpClients[-1][:2], ("2001:db8::7", 80))

    def test_addressNotResolved(self) -> None:
        """
        A CONNECT to an IP address goes straight to it without asking the
        resolver.
        """
        fake = FakeResolver(a={"192.0.2.1": ["203.0.113.7"]})
        h = self.harness(fake)
        h.send(greeting(0x00) + request("192.0.2.1", 80))
        self.assertEqual(fake.lookups, [])
        self.assertEqual(h.reactor.tcpClients[-1][:2], ("192.0.2.1", 80))

    def test_unknownName(self) -> None:
        """
        A name the resolver has no address for gets reply 0x04.
        """
        fake = FakeResolver(
            a={"nx.example": DNSNameError("NXDOMAIN")},
            aaaa={"nx.example": DNSNameError("NXDOMAIN")},
        )
        h = self.harness(fake)
        h.send(greeting(0x00) + request("nx.example", 80))
        self.assertEqual(h.reactor.tcpClients, [])
        self.assertEqual(h.received(), b"\x05\x00" + errorReply(0x04))
        self.assertTrue(h.transport.disconnecting)


class PendingResolver:
    """
    An L{twisted.internet.interfaces.IResolver} stand-in whose lookups wait
    until the test answers them, and record being cancelled.

    @ivar pending: C{(kind, name, timeout, Deferred)} for every lookup.
    @ivar cancelled: C{(kind, name)} of every lookup cancelled.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, object, Deferred[object]]] = []
        self.cancelled: list[tuple[str, str]] = []

    def _lookup(self, kind: str, name: str, timeout: object) -> Deferred[object]:
        d: Deferred[object] = Deferred(lambda _: self.cancelled.append((kind, name)))
        self.pending.append((kind, name, timeout, d))
        return d

    def lookupAddress(self, name: str, timeout: object = None) -> Deferred[object]:
        return self._lookup("A", name, timeout)

    def lookupIPV6Address(self, name: str, timeout: object = None) -> Deferred[object]:
        return self._lookup("AAAA", name, timeout)

    def answer(self, index: int, records: list[dns.RRHeader], authority=()) -> None:
        """
        Answer the C{index}th lookup with C{records}.
        """
        self.pending[index][3].callback((records, list(authority), []))


def aRecord(name: str, address: str, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, type=dns.A, ttl=ttl, payload=dns.Record_A(address, ttl))


def soaRecord(name: str, ttl: int, minimum: int) -> dns.RRHeader:
    return dns.RRHeader(
        name, type=dns.SOA, ttl=ttl, payload=dns.Record_SOA(minimum=minimum, ttl=ttl)
    )


@implementer(IHostnameResolver)
class UninterruptibleResolver:
    """
    An L{IHostnameResolver} like the system's: its resolutions cannot be
    cancelled (C{cancel} raises L{NotImplementedError}) and complete when
    the test says (as the resolver thread returns).
    """

    def __init__(self) -> None:
        self.receivers: list[IResolutionReceiver] = []

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        resolution = _Resolution(hostName)

        def cannot() -> None:
            raise NotImplementedError()

        resolution.cancel = cannot  # type: ignore[method-assign]
        receiver.resolutionBegan(resolution)
        self.receivers.append(receiver)
        return resolution


class LookupCancellationTests(SynchronousTestCase):
    """
    Lookups end with whoever waits for them: cancelling a resolution or the
    Deferred of L{resolveAddresses} cancels the twisted.names queries (which
    closes their sockets), a timeout bounds them, and shared queries end
    only when no one waits any more.
    """

    def test_resolutionCancelCancelsQueries(self) -> None:
        """
        L{IHostResolution.cancel} cancels the A and AAAA lookups and the
        receiver is told the resolution is complete (with no address).
        """
        fake = PendingResolver()
        receiver = Receiver()
        resolution = NamesHostnameResolver(fake).resolveHostName(receiver, "a.test")
        resolution.cancel()
        self.assertEqual(sorted(fake.cancelled), [("A", "a.test"), ("AAAA", "a.test")])
        self.assertEqual((receiver.addresses, receiver.completed), ([], 1))

    def test_resolveAddressesCancel(self) -> None:
        """
        Cancelling the Deferred of L{resolveAddresses} cancels the lookups.
        """
        fake = PendingResolver()
        d = resolveAddresses(NamesHostnameResolver(fake), "a.test")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(fake.cancelled), 2)

    def test_resolveAddressesTimeout(self) -> None:
        """
        With a timeout, a lookup that does not answer in time is cancelled
        and the Deferred fails with L{TimeoutError}.
        """
        fake = PendingResolver()
        clock = Clock()
        d = resolveAddresses(NamesHostnameResolver(fake), "a.test", "TCP", 5, clock)
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, TimeoutError)
        self.assertEqual(len(fake.cancelled), 2)

    def test_sharedQuery(self) -> None:
        """
        Two resolutions of one name at once share one query per type; it is
        cancelled only when both are, and an answer reaches both.
        """
        fake = PendingResolver()
        resolver = NamesHostnameResolver(fake)
        first = resolveAddresses(resolver, "a.test")
        second = resolveAddresses(resolver, "A.test")
        self.assertEqual(len(fake.pending), 2)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(fake.cancelled, [])
        fake.answer(0, [aRecord("a.test", "192.0.2.1", 60)])
        fake.answer(1, [])
        self.assertEqual(self.successResultOf(second), ("192.0.2.1",))
        third = resolveAddresses(resolver, "a.test")
        third.cancel()
        self.failureResultOf(third, CancelledError)
        self.assertEqual(len(fake.cancelled), 2)

    def test_forServersTimeout(self) -> None:
        """
        L{NamesHostnameResolver.forServers} gives every query a retry
        schedule that ends within the timeout (not twisted.names' minute).
        """
        reactor = MemoryReactorClock()
        resolver = NamesHostnameResolver.forServers(
            [("127.0.0.1", 5353)], reactor, timeout=10
        )
        self.assertLessEqual(sum(resolver._timeout), 10)
        self.assertEqual(retryTimeouts(30), (1, 3, 11, 15))
        self.assertEqual(retryTimeouts(2), (1, 1))

    def test_udpPortClosedOnCancel(self) -> None:
        """
        A real twisted.names client's query sockets are closed as soon as
        the resolution is cancelled, not after its retries.
        """
        reactor = UDPMemoryReactor()
        resolver = NamesHostnameResolver.forServers([("127.0.0.1", 5353)], reactor)
        d = resolveAddresses(resolver, "a.test")
        self.assertEqual(len(reactor.udpPorts), 2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual([p for p in reactor.udpPorts if p.listening], [])


class FakeUDPPort:
    """
    A listening UDP port that only records whether it still listens.
    """

    def __init__(self, protocol: object) -> None:
        self.listening = True
        self.protocol = protocol

    def write(self, data: bytes, address: object = None) -> None:
        pass

    def stopListening(self) -> None:
        self.listening = False


class UDPMemoryReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that also listens on (fake) UDP ports.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: list[FakeUDPPort] = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        udpPort = FakeUDPPort(protocol)
        self.udpPorts.append(udpPort)
        protocol.makeConnection(udpPort)
        return udpPort


class LookupLimitTests(SynchronousTestCase):
    """
    L{LookupLimiter} caps lookups in flight in total and per client; a
    lookup counts until its resolver completes it.
    """

    def limiter(self, total: int, perClient: int) -> LookupLimiter:
        return LookupLimiter(lambda: Limits(lookups=total, lookupsPerClient=perClient))

    def test_perClient(self) -> None:
        """
        Over the per-client cap a lookup fails at once with L{LookupRefused}
        naming the limit; other clients still get theirs; a completed lookup
        frees its place.
        """
        fake = PendingResolver()
        resolver = NamesHostnameResolver(fake)
        limiter = self.limiter(10, 2)
        first = resolveAddresses(resolver, "a.test", limiter=limiter, client="192.0.2.1")
        resolveAddresses(resolver, "b.test", limiter=limiter, client="192.0.2.1")
        refused = resolveAddresses(
            resolver, "c.test", limiter=limiter, client="192.0.2.1"
        )
        failure = self.failureResultOf(refused, LookupRefused)
        self.assertIn("per client (2)", failure.value.reason)
        self.assertEqual(len(fake.pending), 4)
        other = resolveAddresses(resolver, "c.test", limiter=limiter, client="192.0.2.2")
        self.assertNoResult(other)
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertNoResult(
            resolveAddresses(resolver, "d.test", limiter=limiter, client="192.0.2.1")
        )

    def test_total(self) -> None:
        """
        Over the total cap a lookup fails with L{LookupRefused}.
        """
        resolver = NamesHostnameResolver(PendingResolver())
        limiter = self.limiter(2, 0)
        resolveAddresses(resolver, "a.test", limiter=limiter, client="192.0.2.1")
        resolveAddresses(resolver, "b.test", limiter=limiter, client="192.0.2.2")
        d = resolveAddresses(resolver, "c.test", limiter=limiter, client="192.0.2.3")
        failure = self.failureResultOf(d, LookupRefused)
        self.assertIn("lookup limit (2)", failure.value.reason)

    def test_uninterruptibleCountsUntilDone(self) -> None:
        """
        A resolution that cannot be cancelled (the system resolver's
        thread): the caller stops waiting at once, but the lookup counts
        until the resolver completes it.
        """
        resolver = UninterruptibleResolver()
        limiter = self.limiter(10, 1)
        d = resolveAddresses(resolver, "a.test", limiter=limiter, client="192.0.2.1")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        again = resolveAddresses(resolver, "a.test", limiter=limiter, client="192.0.2.1")
        self.failureResultOf(again, LookupRefused)
        resolver.receivers[0].resolutionComplete()
        self.assertEqual(limiter.inFlight, 0)
        self.assertNoResult(
            resolveAddresses(resolver, "a.test", limiter=limiter, client="192.0.2.1")
        )


class AnswerCacheTests(SynchronousTestCase):
    """
    L{NamesHostnameResolver} with an L{AnswerCache} asks once per name and
    type for as long as the answer's TTL.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = PendingResolver()
        self.resolver = NamesHostnameResolver(
            self.fake, cache=AnswerCache(self.clock.seconds)
        )

    def test_cachedForTTL(self) -> None:
        """
        An answer is used again until its (smallest) TTL expires; then the
        name is asked again.
        """
        d = resolveAddresses(self.resolver, "a.test")
        self.fake.answer(
            0, [aRecord("a.test", "192.0.2.1", 30), aRecord("a.test", "192.0.2.2", 60)]
        )
        self.fake.answer(1, [], [soaRecord("test", 3600, 120)])
        self.assertEqual(self.successResultOf(d), ("192.0.2.1", "192.0.2.2"))
        self.clock.advance(29)
        again = resolveAddresses(self.resolver, "A.test")
        self.assertEqual(self.successResultOf(again), ("192.0.2.1", "192.0.2.2"))
        self.assertEqual(len(self.fake.pending), 2)
        self.clock.advance(1)
        resolveAddresses(self.resolver, "a.test")
        self.assertEqual(
            [(kind, name) for kind, name, _, _ in self.fake.pending[2:]],
            [("A", "a.test")],
        )

    def test_negativeCachedBriefly(self) -> None:
        """
        A negative answer is kept for the SOA minimum, at most
        L{AnswerCache.negativeTTL}; without an SOA it is not kept.
        """
        cache = AnswerCache(self.clock.seconds, negativeTTL=60)
        cache.store(("a.test", dns.A), [], [soaRecord("test", 3600, 600)])
        cache.store(("b.test", dns.A), [], [soaRecord("test", 3600, 5)])
        cache.store(("c.test", dns.A), [], [])
        self.assertEqual(cache.get(("a.test", dns.A)), [])
        self.assertIsNone(cache.get(("c.test", dns.A)))
        self.clock.advance(5)
        self.assertIsNone(cache.get(("b.test", dns.A)))
        self.assertEqual(cache.get(("a.test", dns.A)), [])
        self.clock.advance(55)
        self.assertIsNone(cache.get(("a.test", dns.A)))

    def test_bounded(self) -> None:
        """
        The cache keeps at most C{size} answers, dropping the least
        recently used; a TTL over C{maxTTL} is cut to it.
        """
        cache = AnswerCache(self.clock.seconds, size=2, maxTTL=100)
        for name in ("a.test", "b.test"):
            cache.store((name, dns.A), [aRecord(name, "192.0.2.1", 86400)], [])
        cache.get(("a.test", dns.A))
        cache.store(("c.test", dns.A), [aRecord("c.test", "192.0.2.1", 86400)], [])
        self.assertIsNone(cache.get(("b.test", dns.A)))
        self.assertIsNotNone(cache.get(("a.test", dns.A)))
        self.clock.advance(100)
        self.assertIsNone(cache.get(("a.test", dns.A)))


class SessionLookupTests(SynchronousTestCase):
    """
    A session's lookup ends with the session, on every path that resolves.
    """

    def test_clientLeavesDuringLookupNoPolicy(self) -> None:
        """
        Without a policy (the factory's own endpoints), a client that leaves
        while its destination name resolves cancels the lookup.
        """
        fake = PendingResolver()
        h = ProxyHarness(recordEndpoints=False, nameResolver=NamesHostnameResolver(fake))
        h.send(greeting(0x00) + request("a.test", 80))
        self.assertEqual(len(fake.pending), 2)
        h.clientLost()
        self.assertEqual(len(fake.cancelled), 2)
        self.assertEqual(h.factory.lookups.inFlight, 0)

    def test_clientLeavesDuringLookupWithPolicy(self) -> None:
        """
        With a policy, a client that leaves while its name resolves cancels
        the lookup.
        """
        fake = PendingResolver()
        h = ProxyHarness(
            recordEndpoints=False,
            nameResolver=NamesHostnameResolver(fake),
            policy=Policy([]),
        )
        h.send(greeting(0x00) + request("a.test", 80))
        h.clientLost()
        self.assertEqual(len(fake.cancelled), 2)

    def test_overLookupLimit(self) -> None:
        """
        A request over the per-client lookup limit gets 0x01 at once, and
        the session's reason names the limit.
        """
        fake = PendingResolver()
        h = ProxyHarness(
            recordEndpoints=False,
            nameResolver=NamesHostnameResolver(fake),
            limits=Limits(lookupsPerClient=1),
        )
        h.factory.lookups.acquire(CLIENT_ADDRESS.host)
        h.send(greeting(0x00) + request("a.test", 80))
        self.assertEqual(h.received(), b"\x05\x00" + errorReply(0x01))
        self.assertIn("name lookup limit per client (1)", h.protocol.session.reason)
        self.assertEqual(fake.pending, [])

    def test_httpForwardClientLeavesCancelsLookup(self) -> None:
        """
        A plain-HTTP forwarded request whose origin name resolves when the
        client leaves: the lookup is cancelled.
        """
        fake = PendingResolver()
        h = ProxyHarness(recordEndpoints=False, nameResolver=NamesHostnameResolver(fake))
        h.send(forwardHead(b"http://a.test/x"))
        self.assertEqual(len(fake.pending), 2)
        h.clientLost()
        self.assertEqual(len(fake.cancelled), 2)
        self.assertEqual(h.factory.lookups.inFlight, 0)

    def test_httpOverLookupLimit(self) -> None:
        """
        Over the lookup limit, a forwarded request and an HTTP CONNECT are
        answered 503 at once.
        """
        for head in (forwardHead(b"http://a.test/x"), connectHead(b"a.test:443")):
            fake = PendingResolver()
            h = ProxyHarness(
                recordEndpoints=False,
                nameResolver=NamesHostnameResolver(fake),
                limits=Limits(lookupsPerClient=1),
            )
            h.factory.lookups.acquire(CLIENT_ADDRESS.host)
            h.send(head)
            statusLine, _, _ = parseHTTPResponse(h.received())
            self.assertEqual(statusLine, b"HTTP/1.1 503 Service Unavailable")
            self.assertEqual(fake.pending, [])

    def test_reloadedLimitsApply(self) -> None:
        """
        The lookup limits are read at every lookup: new limits from a
        reload apply at once.
        """
        h = ProxyHarness(
            recordEndpoints=False, nameResolver=NamesHostnameResolver(PendingResolver())
        )
        h.factory.reconfigure(None, None, Limits(lookupsPerClient=1), {})
        h.factory.lookups.acquire(CLIENT_ADDRESS.host)
        self.assertRaises(LookupRefused, h.factory.lookups.acquire, CLIENT_ADDRESS.host)
