# -*- test-case-name: tests.test_bind -*-
"""
Tests for L{socksrelay.bind} and BIND in L{socksrelay.server}: the protocol
driven through L{StringTransport}s and a L{MemoryReactorClock} whose
C{listenTCP} hands out recording ports, without a network.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from zope.interface import implementer

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHostnameResolver, IListeningPort
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.bind import (
    Binding,
    BindOptions,
    BindRefused,
    InboundProtocol,
    listen,
    parseAdvertiseAddress,
)
from socksrelay.limits import Limits
from socksrelay.relay import RelayEnd
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.wire import Reply
from tests.fakes import (
    CLIENT_ADDRESS,
    LISTEN_ADDRESS,
    RecordingTransport,
    errorReply,
    greeting,
    request,
)

NO_AUTH = 0x00
BIND = 0x02

#: The port the fake reactor gives a listen on port 0.
EPHEMERAL = 45000

#: The expected peer of most tests, and the address it connects from.
PEER = IPv4Address("TCP", "127.0.0.7", 20)
#: Another host, which is not expected.
STRANGER = IPv4Address("TCP", "127.0.0.9", 33333)


def reply(code: int, host: str, port: int) -> bytes:
    """
    A SOCKS5 reply carrying C{host} and C{port}, encoded here independently
    of L{socksrelay.wire}.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    atyp = 0x04 if family == socket.AF_INET6 else 0x01
    return (
        bytes([0x05, code, 0x00, atyp])
        + socket.inet_pton(family, host)
        + port.to_bytes(2, "big")
    )


@implementer(IListeningPort)
class RecordingPort:
    """
    A listening port that knows its address and how often it was stopped.
    """

    def __init__(self, address: Any, factory: Any) -> None:
        self.address = address
        self.factory = factory
        self.stopCalls = 0
        self.connected = True

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        self.stopCalls += 1
        self.connected = False

    def getHost(self) -> Any:
        return self.address


class ListeningReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose C{listenTCP} returns L{RecordingPort}s
    with a real-looking address (port 0 becomes L{EPHEMERAL}), and refuses
    the ports in C{busy} with C{EADDRINUSE} (or every port with
    C{listenErrno} when that is set).

    @ivar ports: every L{RecordingPort} handed out.
    @ivar attempts: every port number asked for, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.busy: set[int] = set()
        self.listenErrno: int | None = None
        self.ports: list[RecordingPort] = []
        self.attempts: list[int] = []

    def listenTCP(self, port, factory, backlog=50, interface=""):
        self.attempts.append(port)
        if self.listenErrno is not None:
            raise CannotListenError(
                interface, port, OSError(self.listenErrno, "refused by the test")
            )
        if port in self.busy:
            raise CannotListenError(
                interface, port, OSError(errno.EADDRINUSE, "Address already in use")
            )
        super().listenTCP(port, factory, backlog, interface)
        addressClass = IPv6Address if ":" in interface else IPv4Address
        listening = RecordingPort(
            addressClass("TCP", interface, port or EPHEMERAL), factory
        )
        self.ports.append(listening)
        return listening

    @property
    def listening(self) -> list[RecordingPort]:
        """
        The ports not stopped yet.
        """
        return [p for p in self.ports if p.connected]


@implementer(IHostnameResolver)
class PendingHostnameResolver:
    """
    A hostname resolver whose answers the test gives.

    @ivar names: the names asked for, in order.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self._receivers: list[Any] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        self.names.append(hostName)
        self._receivers.append(resolutionReceiver)
        resolutionReceiver.resolutionBegan(None)
        return None

    def answer(self, *addresses: str) -> None:
        """
        Complete the oldest resolution with C{addresses}.
        """
        receiver = self._receivers.pop(0)
        for address in addresses:
            addressClass = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(addressClass("TCP", address, 0))
        receiver.resolutionComplete()


class BindHarness:
    """
    A L{SOCKS5ServerProtocol} on a L{ListeningReactor}, its client connected
    to a L{RecordingTransport} that arrived on C{listenAddress}.
    """

    def __init__(
        self,
        listenAddress: Any = LISTEN_ADDRESS,
        bindOptions: Any = None,
        **factoryArguments: Any,
    ) -> None:
        self.reactor = ListeningReactor()
        self.factory = SOCKS5ServerFactory(
            reactor=self.reactor, bindOptions=bindOptions, **factoryArguments
        )
        self.protocol = self.factory.buildProtocol(CLIENT_ADDRESS)
        self.transport = RecordingTransport(
            hostAddress=listenAddress, peerAddress=CLIENT_ADDRESS
        )
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def bind(self, host: str = "0.0.0.0", port: int = 0, early: bytes = b"") -> bytes:
        """
        Greet and send a BIND request; what the proxy answered after the
        method selection.
        """
        self.send(greeting(NO_AUTH) + request(host, port, command=BIND) + early)
        answer = self.received()
        assert answer.startswith(b"\x05\x00"), answer
        return answer[2:]

    @property
    def port(self) -> RecordingPort:
        """
        The (only) listening port handed out.
        """
        [port] = self.reactor.ports
        return port

    def peerConnects(self, peer: Any = PEER) -> tuple[Any, RecordingTransport | None]:
        """
        A host connects to the listening port: the protocol the factory
        built (connected to a new transport) or C{None} if it refused.
        """
        listening = self.port
        protocol = listening.factory.buildProtocol(peer)
        if protocol is None:
            return None, None
        transport = RecordingTransport(hostAddress=listening.address, peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def clientLost(self, reason: BaseException | None = None) -> None:
        self.transport.connected = False
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))


def sessionEvents(observer: EventLoggingObserver) -> list[dict]:
    return [
        e for e in observer if str(e.get("log_format", "")).startswith("session ended")
    ]


class FirstReplyTests(SynchronousTestCase):
    """
    BIND listens on the control connection's local IP and tells the client
    where, in the first reply.
    """

    def test_listensOnLocalAddress(self) -> None:
        """
        The proxy listens on the local IP the client connected to (not the
        wildcard), on any port, and the first reply carries that IP and the
        port of the listening port; the client connection stays open.
        """
        h = BindHarness()
        answer = h.bind()
        [(port, _factory, _backlog, interface)] = h.reactor.tcpServers
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertEqual(answer, reply(0, "127.0.0.1", h.port.getHost().port))
        self.assertEqual(h.port.getHost().port, EPHEMERAL)
        self.assertFalse(h.transport.disconnecting)

    def test_ipv6LocalAddress(self) -> None:
        """
        A control connection that arrived on ::1 gets a port on ::1 and an
        IPv6 first reply (ATYP 4).
        """
        h = BindHarness(listenAddress=IPv6Address("TCP", "::1", 1080))
        answer = h.bind("::", 0)
        self.assertEqual(h.reactor.tcpServers[0][3], "::1")
        self.assertEqual(answer, reply(0, "::1", EPHEMERAL))

    def test_ipv4MappedLocalAddress(self) -> None:
        """
        A control connection that arrived on an IPv4-mapped address (a
        dual-stack listener) listens on, and announces, the plain IPv4
        address.
        """
        h = BindHarness(listenAddress=IPv6Address("TCP", "::ffff:127.0.0.1", 1080))
        answer = h.bind()
        self.assertEqual(h.reactor.tcpServers[0][3], "127.0.0.1")
        self.assertEqual(answer, reply(0, "127.0.0.1", EPHEMERAL))

    def test_linkLocalScopeKeptForListening(self) -> None:
        """
        A control connection on a link-local IPv6 address listens with the
        address's scope (needed to bind it) and announces it without.
        """
        h = BindHarness(listenAddress=IPv6Address("TCP", "fe80::1%lo", 1080))
        answer = h.bind("::", 0)
        self.assertEqual(h.reactor.tcpServers[0][3], "fe80::1%lo")
        self.assertEqual(answer, reply(0, "fe80::1", EPHEMERAL))

    def test_advertisedAddress(self) -> None:
        """
        With an advertised address, the first reply names it, while the
        proxy still listens on the local address.
        """
        h = BindHarness(bindOptions=BindOptions(advertise="192.0.2.9"))
        answer = h.bind()
        self.assertEqual(h.reactor.tcpServers[0][3], "127.0.0.1")
        self.assertEqual(answer, reply(0, "192.0.2.9", EPHEMERAL))

    def test_portFromRange(self) -> None:
        """
        With a port range, the listening port is taken from it.
        """
        h = BindHarness(bindOptions=BindOptions(ports=(40000, 40009)))
        answer = h.bind()
        [port] = h.reactor.attempts
        self.assertTrue(40000 <= port <= 40009, port)
        self.assertEqual(answer, reply(0, "127.0.0.1", port))

    def test_busyPortsSkipped(self) -> None:
        """
        Ports of the range that are in use are skipped until a free one is
        found.
        """
        h = BindHarness(bindOptions=BindOptions(ports=(40000, 40009)))
        h.reactor.busy = set(range(40000, 40010)) - {40004}
        answer = h.bind()
        self.assertEqual(answer, reply(0, "127.0.0.1", 40004))
        self.assertEqual(h.reactor.attempts[-1], 40004)
        self.assertEqual(len(h.reactor.ports), 1)

    def test_portRangeExhausted(self) -> None:
        """
        When every port of the range is in use, each is tried once, the
        client gets reply 0x01 and is closed, and nothing listens.
        """
        h = BindHarness(bindOptions=BindOptions(ports=(40000, 40009)))
        h.reactor.busy = set(range(40000, 40010))
        answer = h.bind()
        self.assertEqual(answer, errorReply(0x01))
        self.assertEqual(sorted(h.reactor.attempts), list(range(40000, 40010)))
        self.assertEqual(h.reactor.ports, [])
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_listenErrorNotRetried(self) -> None:
        """
        A listen error other than "in use" (here: address not available)
        is not retried on the next port: reply 0x01 at once.
        """
        h = BindHarness(bindOptions=BindOptions(ports=(40000, 40999)))
        h.reactor.listenErrno = errno.EADDRNOTAVAIL
        answer = h.bind()
        self.assertEqual(answer, errorReply(0x01))
        self.assertEqual(len(h.reactor.attempts), 1)
        self.assertTrue(h.transport.disconnecting)

    def test_noLocalIPAddress(self) -> None:
        """
        A control connection on a UNIX socket has no IP to listen on: reply
        0x01, nothing listens.
        """
        h = BindHarness(listenAddress=UNIXAddress("/run/socks.sock"))
        answer = h.bind()
        self.assertEqual(answer, errorReply(0x01))
        self.assertEqual(h.reactor.attempts, [])
        self.assertTrue(h.transport.disconnecting)

    def test_refusedWhenDisabled(self) -> None:
        """
        A factory made with C{bindOptions=False} answers BIND with 0x07 and
        listens on nothing.
        """
        h = BindHarness(bindOptions=False)
        answer = h.bind()
        self.assertEqual(answer, errorReply(0x07))
        self.assertEqual(h.reactor.attempts, [])
        self.assertIsNone(h.factory.bindOptions)

    def test_enabledByDefault(self) -> None:
        """
        A factory made without C{bindOptions} serves BIND with the default
        options (120 s, any port, no advertised address).
        """
        factory = SOCKS5ServerFactory(reactor=MemoryReactorClock())
        self.assertEqual(factory.bindOptions, BindOptions())
        self.assertEqual(factory.bindOptions.timeout, 120.0)


class ExpectedPeerTests(SynchronousTestCase):
    """
    DST.ADDR names the expected peer; only it is accepted, exactly once.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_anyPeerWithZeros(self) -> None:
        """
        With DST.ADDR 0.0.0.0, the first host to connect is accepted, and
        the second reply carries its address and port.
        """
        h = BindHarness()
        h.bind("0.0.0.0", 0)
        inbound, _ = h.peerConnects(STRANGER)
        self.assertIsInstance(inbound, InboundProtocol)
        self.assertEqual(h.received(), reply(0, "127.0.0.9", 33333))

    def test_anyPeerWithIPv6Zeros(self) -> None:
        """
        DST.ADDR C{::} also means any peer.
        """
        h = BindHarness()
        h.bind("::", 0)
        inbound, _ = h.peerConnects(STRANGER)
        self.assertIsNotNone(inbound)

    def test_expectedPeerAccepted(self) -> None:
        """
        The expected peer is accepted: the second reply names it, and the
        listening port is stopped at once.
        """
        h = BindHarness()
        h.bind("127.0.0.7", 21)
        inbound, _ = h.peerConnects(PEER)
        self.assertIsInstance(inbound, RelayEnd)
        self.assertEqual(h.received(), reply(0, "127.0.0.7", 20))
        self.assertEqual(h.port.stopCalls, 1)
        self.assertFalse(h.port.connected)
        self.assertFalse(h.transport.disconnecting)

    def test_wrongPeerClosed(self) -> None:
        """
        Another host is refused (the factory builds no protocol, so the
        connection is closed at once), one line is logged, the port keeps
        listening and the client hears nothing.
        """
        h = BindHarness()
        h.bind("127.0.0.7", 0)
        inbound, _ = h.peerConnects(STRANGER)
        self.assertIsNone(inbound)
        self.assertEqual(h.port.stopCalls, 0)
        self.assertEqual(h.received(), b"")
        [event] = [e for e in self.observer if "not the expected peer" in e["log_format"]]
        self.assertIn("127.0.0.9:33333", formatEvent(event))
        self.assertIn("127.0.0.7", formatEvent(event))

    def test_wrongPeersThenExpectedPeer(self) -> None:
        """
        After refusing other hosts, the expected peer is still accepted and
        the port is then stopped.
        """
        h = BindHarness()
        h.bind("127.0.0.7", 0)
        for port in (1, 2, 3):
            self.assertIsNone(h.peerConnects(IPv4Address("TCP", "127.0.0.9", port))[0])
        inbound, _ = h.peerConnects(PEER)
        self.assertIsNotNone(inbound)
        self.assertEqual(h.received(), reply(0, "127.0.0.7", 20))
        self.assertEqual(h.reactor.listening, [])

    def test_onlyOneConnection(self) -> None:
        """
        Once the expected peer is accepted, a second connection from it (for
        instance one the kernel accepted in the same batch) is refused.
        """
        h = BindHarness()
        h.bind("127.0.0.7", 0)
        h.peerConnects(PEER)
        h.received()
        second, _ = h.peerConnects(IPv4Address("TCP", "127.0.0.7", 21))
        self.assertIsNone(second)
        self.assertEqual(h.received(), b"")

    def test_ipv4MappedPeerMatches(self) -> None:
        """
        A peer seen as an IPv4-mapped IPv6 address matches the expected IPv4
        address, and the second reply names it as plain IPv4.
        """
        h = BindHarness()
        h.bind("127.0.0.7", 0)
        inbound, _ = h.peerConnects(IPv6Address("TCP", "::ffff:127.0.0.7", 2020))
        self.assertIsNotNone(inbound)
        self.assertEqual(h.received(), reply(0, "127.0.0.7", 2020))

    def test_ipv6Peer(self) -> None:
        """
        An expected IPv6 peer is matched in any spelling, and the second
        reply carries it with ATYP 4.
        """
        h = BindHarness(listenAddress=IPv6Address("TCP", "::1", 1080))
        h.bind("0:0::1", 0)
        inbound, _ = h.peerConnects(IPv6Address("TCP", "::1", 4242))
        self.assertIsNotNone(inbound)
        self.assertEqual(h.received(), reply(0, "::1", 4242))

    def test_nameResolved(self) -> None:
        """
        A named expected peer is resolved (through the factory's resolver)
        before anything listens; then any of its addresses is accepted and
        other hosts are not.
        """
        resolver = PendingHostnameResolver()
        h = BindHarness(nameResolver=resolver)
        h.send(greeting(NO_AUTH) + request("peer.example", 0, command=BIND))
        self.assertEqual(h.received(), b"\x05\x00")
        self.assertEqual(resolver.names, ["peer.example"])
        self.assertEqual(h.reactor.attempts, [])
        resolver.answer("127.0.0.5", "127.0.0.7")
        self.assertEqual(h.received(), reply(0, "127.0.0.1", EPHEMERAL))
        self.assertIsNone(h.peerConnects(STRANGER)[0])
        self.assertIsNotNone(h.peerConnects(PEER)[0])
        self.assertEqual(h.received(), reply(0, "127.0.0.7", 20))

    def test_nameResolvedThroughReactor(self) -> None:
        """
        Without a resolver of its own, the factory's reactor resolves the
        name (a L{MemoryReactorClock} resolves every name to 127.0.0.1).
        """
        h = BindHarness()
        h.bind("localhost", 0)
        self.assertIsNotNone(h.peerConnects(IPv4Address("TCP", "127.0.0.1", 9))[0])

    def test_nameNotResolved(self) -> None:
        """
        A name that resolves to nothing gets reply 0x04 and a close, and
        nothing listens.
        """
        resolver = PendingHostnameResolver()
        h = BindHarness(nameResolver=resolver)
        h.send(greeting(NO_AUTH) + request("nowhere.example", 0, command=BIND))
        h.received()
        resolver.answer()
        self.assertEqual(h.received(), errorReply(0x04))
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.reactor.attempts, [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_clientLeavesWhileResolving(self) -> None:
        """
        A client that leaves while the name resolves cancels the BIND: the
        late answer opens no port and writes nothing.
        """
        resolver = PendingHostnameResolver()
        h = BindHarness(nameResolver=resolver)
        h.send(greeting(NO_AUTH) + request("peer.example", 0, command=BIND))
        h.received()
        h.clientLost()
        resolver.answer("127.0.0.7")
        self.assertEqual(h.reactor.attempts, [])
        self.assertEqual(h.received(), b"")
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_clientLeavesCancelsLookup(self) -> None:
        """
        A client that leaves while the expected peer's name resolves
        cancels the lookup, which is no longer counted.
        """
        from tests.udpfakes import FakeHostnameResolver

        resolver = FakeHostnameResolver()
        h = BindHarness(nameResolver=resolver)
        h.send(greeting(NO_AUTH) + request("peer.example", 0, command=BIND))
        self.assertEqual(h.factory.lookups.inFlight, 1)
        h.clientLost()
        self.assertTrue(resolver.resolutions[0].cancelled)

    def test_lookupBoundedByConnectTimeout(self) -> None:
        """
        The expected peer's lookup takes no longer than the connect timeout
        (well under the BIND timeout): then it is cancelled and the client
        gets 0x06.
        """
        from tests.udpfakes import FakeHostnameResolver

        resolver = FakeHostnameResolver()
        h = BindHarness(
            bindOptions=BindOptions(timeout=120), nameResolver=resolver, connectTimeout=5
        )
        h.send(greeting(NO_AUTH) + request("peer.example", 0, command=BIND))
        h.received()
        h.reactor.advance(5)
        self.assertTrue(resolver.resolutions[0].cancelled)
        self.assertEqual(h.received(), errorReply(0x06))
        resolver.resolutions[0].complete("127.0.0.7")
        self.assertEqual(h.factory.lookups.inFlight, 0)
        self.assertEqual(h.reactor.attempts, [])

    def test_overLookupLimit(self) -> None:
        """
        A BIND whose expected peer's lookup would take the client over its
        lookup limit gets 0x01 at once, nothing looked up.
        """
        resolver = PendingHostnameResolver()
        h = BindHarness(nameResolver=resolver, limits=Limits(lookupsPerClient=1))
        h.factory.lookups.acquire(CLIENT_ADDRESS.host)
        h.send(greeting(NO_AUTH) + request("peer.example", 0, command=BIND))
        self.assertEqual(h.received(), b"\x05\x00" + errorReply(0x01))
        self.assertEqual(resolver.names, [])


class BindRelayTests(SynchronousTestCase):
    """
    After the second reply, the client and the peer are relayed like
    CONNECT's client and destination.
    """

    def accepted(self, early: bytes = b"") -> tuple[BindHarness, Any, RecordingTransport]:
        h = BindHarness()
        h.bind("127.0.0.7", 0, early=early)
        inbound, inboundTransport = h.peerConnects(PEER)
        h.received()
        return h, inbound, inboundTransport

    def test_dataBothWays(self) -> None:
        """
        Bytes from the client reach the peer and bytes from the peer reach
        the client.
        """
        h, inbound, inboundTransport = self.accepted()
        h.send(b"from client")
        self.assertEqual(inboundTransport.value(), b"from client")
        inbound.dataReceived(b"from peer")
        self.assertEqual(h.received(), b"from peer")

    def test_producersRegisteredBothWays(self) -> None:
        """
        Each transport is the streaming producer of the other (backpressure).
        """
        h, _, inboundTransport = self.accepted()
        self.assertIs(inboundTransport.producer, h.transport)
        self.assertIs(h.transport.producer, inboundTransport)

    def test_earlyDataForwarded(self) -> None:
        """
        Bytes the client sent while waiting for the peer (pipelined with the
        request or later) reach the peer once it is accepted.
        """
        h = BindHarness()
        h.bind("0.0.0.0", 0, early=b"early ")
        h.send(b"and later")
        _, inboundTransport = h.peerConnects(PEER)
        self.assertEqual(inboundTransport.value(), b"early and later")

    def test_eofWhileWaitingEnds(self) -> None:
        """
        An EOF from the client while waiting for the peer (which cannot be
        told from a client that has gone) ends the BIND: the port is stopped
        at once, the timer cancelled and the client closed without a second
        reply; the session was ended by the client.
        """
        h = BindHarness()
        h.bind("0.0.0.0", 0, early=b"request")
        h.protocol.readConnectionLost()
        self.assertEqual(h.port.stopCalls, 1)
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.received(), b"")
        self.assertIsNone(h.peerConnects(PEER)[0])
        self.assertEqual(
            h.protocol.session.reason, "client closed while waiting for the BIND peer"
        )
        self.assertEqual(h.protocol.session.closedBy, "client")

    def test_eofWhileResolvingEnds(self) -> None:
        """
        An EOF from the client while the expected peer's name resolves ends
        the BIND; the late answer opens no port.
        """
        resolver = PendingHostnameResolver()
        h = BindHarness(nameResolver=resolver)
        h.send(greeting(NO_AUTH) + request("peer.example", 0, command=BIND))
        h.protocol.readConnectionLost()
        self.assertTrue(h.transport.disconnecting)
        resolver.answer("127.0.0.7")
        self.assertEqual(h.reactor.attempts, [])

    def test_eofAfterSecondReplyPassedOn(self) -> None:
        """
        Once the peer is accepted, an EOF from the client is a half-close:
        it becomes a write shutdown towards the peer, and the peer's bytes
        still reach the client.
        """
        h, inbound, inboundTransport = self.accepted()
        h.protocol.readConnectionLost()
        self.assertEqual(inboundTransport.loseWriteConnectionCalls, 1)
        self.assertFalse(h.transport.disconnecting)
        inbound.dataReceived(b"answer")
        self.assertEqual(h.received(), b"answer")

    def test_peerEOF(self) -> None:
        """
        EOF from the peer shuts down writing to the client, and the client
        can still send.
        """
        h, inbound, inboundTransport = self.accepted()
        inbound.readConnectionLost()
        self.assertEqual(h.transport.loseWriteConnectionCalls, 1)
        h.send(b"more")
        self.assertEqual(inboundTransport.value(), b"more")

    def test_peerLostClosesClient(self) -> None:
        """
        When the peer's connection is lost, the client's is closed.
        """
        h, inbound, _ = self.accepted()
        inbound.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(h.transport.loseConnectionCalls, 1)

    def test_clientLostClosesPeer(self) -> None:
        """
        When the client's connection is lost, the peer's is closed.
        """
        h, _, inboundTransport = self.accepted()
        h.clientLost()
        self.assertEqual(inboundTransport.loseConnectionCalls, 1)


class PortReleaseTests(SynchronousTestCase):
    """
    The listening port is released on every way out, and no timer is left.
    """

    def test_success(self) -> None:
        """
        Accepting the peer stops the port once, and the timeout no longer
        fires.
        """
        h = BindHarness(bindOptions=BindOptions(timeout=5))
        h.bind()
        h.peerConnects(PEER)
        self.assertEqual(h.port.stopCalls, 1)
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        h.clientLost()
        self.assertEqual(h.port.stopCalls, 1)

    def test_timeout(self) -> None:
        """
        No peer within the timeout: reply 0x06, the port is stopped and the
        client is closed; not a moment earlier.
        """
        h = BindHarness(bindOptions=BindOptions(timeout=5))
        h.bind("127.0.0.7", 0)
        h.reactor.advance(4.9)
        self.assertEqual(h.received(), b"")
        self.assertTrue(h.port.connected)
        h.reactor.advance(0.1)
        self.assertEqual(h.received(), errorReply(0x06))
        self.assertEqual(h.port.stopCalls, 1)
        self.assertTrue(h.transport.disconnecting)
        self.assertIsNone(h.peerConnects(PEER)[0])

    def test_timeoutAfterWrongPeers(self) -> None:
        """
        Refused hosts do not extend the wait: the timeout still fires and
        releases the port.
        """
        h = BindHarness(bindOptions=BindOptions(timeout=5))
        h.bind("127.0.0.7", 0)
        h.reactor.advance(4)
        h.peerConnects(STRANGER)
        h.reactor.advance(1)
        self.assertEqual(h.received(), errorReply(0x06))
        self.assertEqual(h.reactor.listening, [])

    def test_timeoutCoversResolution(self) -> None:
        """
        A name that does not resolve within the timeout gets reply 0x06 and
        no port is ever opened.
        """
        resolver = PendingHostnameResolver()
        h = BindHarness(bindOptions=BindOptions(timeout=5), nameResolver=resolver)
        h.send(greeting(NO_AUTH) + request("slow.example", 0, command=BIND))
        h.received()
        h.reactor.advance(5)
        self.assertEqual(h.received(), errorReply(0x06))
        resolver.answer("127.0.0.7")
        self.assertEqual(h.reactor.attempts, [])

    def test_clientGone(self) -> None:
        """
        The client closing its connection while waiting stops the port at
        once and cancels the timeout.
        """
        h = BindHarness()
        h.bind()
        h.clientLost()
        self.assertEqual(h.port.stopCalls, 1)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_clientConnectionLost(self) -> None:
        """
        The client's connection failing (not a clean close) while waiting
        stops the port too.
        """
        h = BindHarness()
        h.bind()
        h.clientLost(ConnectionLost())
        self.assertEqual(h.reactor.listening, [])

    def test_protocolError(self) -> None:
        """
        An error on the control connection while waiting (far too many early
        bytes) ends it; once it is lost, the port is stopped, and a peer
        accepted in between is closed instead of relayed.
        """
        h = BindHarness()
        h.bind()
        h.send(b"x" * 400_000)
        self.assertTrue(h.transport.disconnecting)
        _, inboundTransport = h.peerConnects(PEER)
        self.assertTrue(inboundTransport.disconnecting)
        self.assertEqual(h.received(), b"")
        h.clientLost()
        self.assertEqual(h.reactor.listening, [])

    def test_failureReleasesNothingTwice(self) -> None:
        """
        After a failed BIND (port range exhausted) the client leaving is
        harmless.
        """
        h = BindHarness(bindOptions=BindOptions(ports=(40000, 40000)))
        h.reactor.busy = {40000}
        h.bind()
        h.clientLost()
        self.assertEqual(h.reactor.ports, [])


class BindSessionLogTests(SynchronousTestCase):
    """
    The end-of-session event of a BIND names the command, the expected peer
    and the actual one.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_relayed(self) -> None:
        """
        A relayed BIND is logged once with command BIND, the expected peer,
        the peer that connected, the listening address and the byte counts.
        """
        h = BindHarness()
        h.bind("127.0.0.7", 21)
        h.peerConnects(STRANGER)
        inbound, _ = h.peerConnects(PEER)
        h.send(b"12345")
        inbound.dataReceived(b"abc")
        h.clientLost()
        inbound.connectionLost(Failure(ConnectionDone()))
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["command"], "BIND")
        self.assertEqual(event["destination"], "127.0.0.7:21")
        self.assertEqual(event["expected"], "127.0.0.7")
        self.assertEqual(event["peer"], "127.0.0.7:20")
        self.assertEqual(event["rejected"], 1)
        self.assertEqual(event["bound"], f"127.0.0.1:{EPHEMERAL}")
        self.assertEqual(event["reply"], 0)
        self.assertEqual((event["bytesUp"], event["bytesDown"]), (5, 3))
        text = formatEvent(event)
        self.assertIn("command=BIND", text)
        self.assertIn("expected=127.0.0.7 peer=127.0.0.7:20", text)

    def test_timedOut(self) -> None:
        """
        A BIND that timed out is logged with reply 0x06, the expected peer
        C{any} and no peer.
        """
        h = BindHarness(bindOptions=BindOptions(timeout=1))
        h.bind()
        h.reactor.advance(1)
        h.clientLost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["reply"], 6)
        self.assertEqual(event["expected"], "any")
        self.assertEqual(event["peer"], "-")
        self.assertIn("no connection from the BIND peer", event["reason"])

    def test_namedPeer(self) -> None:
        """
        A named expected peer is logged with the addresses it resolved to.
        """
        resolver = PendingHostnameResolver()
        h = BindHarness(nameResolver=resolver)
        h.send(greeting(NO_AUTH) + request("peer.example", 0, command=BIND))
        resolver.answer("127.0.0.7", "::1")
        h.clientLost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["expected"], "peer.example(127.0.0.7,::1)")


class ListenTests(SynchronousTestCase):
    """
    L{listen} on its own.
    """

    def test_wholeRangeTriedOnce(self) -> None:
        """
        From whatever random start, every port of the range is tried exactly
        once before giving up.
        """
        for _ in range(20):
            reactor = ListeningReactor()
            reactor.busy = set(range(5000, 5007))
            with self.assertRaises(BindRefused):
                listen(reactor, None, "127.0.0.1", (5000, 5006))
            self.assertEqual(sorted(reactor.attempts), list(range(5000, 5007)))

    def test_singlePortRange(self) -> None:
        """
        A range of one port listens on that port.
        """
        reactor = ListeningReactor()
        port = listen(reactor, None, "127.0.0.1", (6000, 6000))
        self.assertEqual(port.getHost().port, 6000)


class BindingTests(SynchronousTestCase):
    """
    L{Binding} driven directly.
    """

    def test_closeIdempotent(self) -> None:
        """
        L{Binding.close} may be called again; the port is stopped once.
        """

        class FakeSession:
            def __init__(self) -> None:
                self.details: dict[str, Any] = {}
                self.bound = None

        calls: list[Any] = []
        reactor = ListeningReactor()
        binding = Binding(
            BindOptions(),
            reactor,
            None,
            30.0,
            "127.0.0.1",
            "0.0.0.0",
            FakeSession(),
            onListening=lambda host, port: calls.append(("listening", host, port)),
            onConnected=calls.append,
            onFailed=lambda r, why: calls.append(("failed", r)),
        )
        binding.start()
        binding.close()
        binding.close()
        [port] = reactor.ports
        self.assertEqual(port.stopCalls, 1)
        self.assertEqual(calls, [("listening", "127.0.0.1", EPHEMERAL)])
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertNotIn(("failed", Reply.TTL_EXPIRED), calls)


class BindOptionsTapTests(SynchronousTestCase):
    """
    The C{--bind-*} options of C{twistd socks5}.
    """

    def factoryFor(self, *argv: str) -> SOCKS5ServerFactory:
        options = tap.Options()
        options.parseOptions(list(argv))
        return tap.makeFactory(options, MemoryReactorClock())

    def test_defaults(self) -> None:
        """
        Without options, BIND is enabled: any port, no advertised address,
        120 seconds.
        """
        self.assertEqual(
            self.factoryFor().bindOptions,
            BindOptions(ports=None, advertise=None, timeout=120.0),
        )

    def test_allOptions(self) -> None:
        """
        C{--bind-ports}, C{--bind-advertise} and C{--bind-timeout} reach the
        factory's L{BindOptions}.
        """
        factory = self.factoryFor(
            "--bind-ports", "40000-40100",
            "--bind-advertise", "198.51.100.7",
            "--bind-timeout", "2.5",
        )
        self.assertEqual(
            factory.bindOptions,
            BindOptions(ports=(40000, 40100), advertise="198.51.100.7", timeout=2.5),
        )

    def test_invalid(self) -> None:
        """
        Port ranges outside 1-65535 or upside down, addresses that are not
        IP addresses (or are the wildcard) and timeouts that are not positive
        are usage errors.
        """
        for argv in (
            ["--bind-ports", "0-10"],
            ["--bind-ports", "10-5"],
            ["--bind-ports", "1-65536"],
            ["--bind-ports", "a-b"],
            ["--bind-advertise", "proxy.example"],
            ["--bind-advertise", "0.0.0.0"],
            ["--bind-advertise", "::"],
            ["--bind-timeout", "0"],
            ["--bind-timeout", "-3"],
            ["--bind-timeout", "soon"],
        ):
            with self.assertRaises(usage.UsageError, msg=argv):
                tap.Options().parseOptions(argv)

    def test_advertiseNormalised(self) -> None:
        """
        An IPv4-mapped advertised address is kept as plain IPv4.
        """
        self.assertEqual(parseAdvertiseAddress("::ffff:192.0.2.1"), "192.0.2.1")
