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

from socksrelay.resolve import NamesHostnameResolver, ResolverReactor
from tests.fakes import (
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
