# -*- test-case-name: tests.test_udp -*-
"""
Tests for UDP ASSOCIATE: L{socksrelay.udp} (L{UDPOptions}, L{UDPRelay},
L{NameCache}, L{UDPAssociation}), the UDP branch of
L{socksrelay.server.SOCKS5ServerProtocol}, and the C{--udp-*} options of
L{socksrelay.tap}.

The server protocol runs on a L{StringTransport}; its UDP sockets are the
fake ports of L{tests.udpfakes.UDPMemoryReactor}, and datagrams are handed
straight to their protocols' C{datagramReceived}.  Nothing touches the
network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import struct
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SynchronousTestCase

from socksrelay import tap
from socksrelay.limits import Limits
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.udp import UDPOptions
from tests.fakes import RecordingTransport, errorReply, greeting, request
from tests.udpfakes import (
    FIRST_EPHEMERAL_PORT,
    FakeHostnameResolver,
    FakeUDPPort,
    UDPMemoryReactor,
)

#: The local address of the control connection: where the proxy listens.
LOCAL = IPv4Address("TCP", "127.0.0.5", 1080)
#: Where the client's control connection comes from.
PEER = IPv4Address("TCP", "127.0.0.9", 40000)
#: Where the client sends its datagrams from.
CLIENT_UDP = ("127.0.0.9", 40001)
#: A second client host.
OTHER_PEER = IPv4Address("TCP", "127.0.0.10", 40000)

UDP_ASSOCIATE = 0x03
GENERAL_FAILURE = 0x01


def udpDatagram(host: str, port: int, payload: bytes, frag: int = 0) -> bytes:
    """
    Return a client datagram: C{RSV RSV FRAG ATYP DST.ADDR DST.PORT} and
    C{payload}, with ATYP 1 or 4 for an IP address and 3 for a name, encoded
    here independently of L{socksrelay.wire}.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("ascii")
        body = bytes([0x03, len(name)]) + name
    else:
        body = bytes([0x01 if address.version == 4 else 0x04]) + address.packed
    return bytes([0, 0, frag]) + body + struct.pack("!H", port) + payload


def nameDatagram(name: str, port: int, payload: bytes) -> bytes:
    """
    Return a client datagram whose destination is C{name} sent as ATYP 3, even
    if it looks like an IP address.
    """
    raw = name.encode("ascii")
    return b"\x00\x00\x00\x03" + bytes([len(raw)]) + raw + struct.pack("!H", port) + payload


def parseReply(data: bytes) -> tuple[int, int, str, int]:
    """
    Decode a SOCKS5 reply into C{(REP, ATYP, BND.ADDR, BND.PORT)}, checking
    VER, RSV and that nothing follows.
    """
    if data[0] != 0x05 or data[2] != 0x00:
        raise FailTest(f"not a SOCKS5 reply: {data!r}")
    atyp = data[3]
    if atyp == 0x01:
        host, end = str(ipaddress.IPv4Address(data[4:8])), 8
    elif atyp == 0x04:
        host, end = str(ipaddress.IPv6Address(data[4:20])), 20
    else:
        raise FailTest(f"reply with ATYP {atyp}: {data!r}")
    if len(data) != end + 2:
        raise FailTest(f"reply of {len(data)} bytes: {data!r}")
    (port,) = struct.unpack("!H", data[end:])
    return data[1], atyp, host, port


def digest(data: bytes) -> str:
    """
    Return a SHA-256 digest of C{data}, to compare large payloads without
    printing them.
    """
    return hashlib.sha256(data).hexdigest()


def sessionEvents(observer: EventLoggingObserver) -> list[dict]:
    """
    Return the end-of-session events among those C{observer} saw.
    """
    return [
        e
        for e in observer
        if str(e.get("log_format", "")).startswith("session ended")
    ]


class Control:
    """
    One client's control connection to the proxy, and the association it
    asks for.

    @ivar protocol: the server protocol.
    @ivar transport: its L{RecordingTransport}.
    @ivar relayPort: the L{FakeUDPPort} of the association's relay socket,
        once there is one.
    """

    def __init__(self, harness: UDPHarness, hostAddress: Any, peerAddress: Any) -> None:
        self.harness = harness
        self.reactor = harness.reactor
        self.protocol = harness.factory.buildProtocol(peerAddress)
        self.transport = RecordingTransport(hostAddress=hostAddress, peerAddress=peerAddress)
        self.protocol.makeConnection(self.transport)
        self.relayPort: FakeUDPPort | None = None

    def associate(self, host: str = "0.0.0.0", port: int = 0) -> bytes:
        """
        Greet without authentication, ask for UDP ASSOCIATE with C{host} and
        C{port} as DST.ADDR and DST.PORT, and return the reply (the method
        selection is checked and left out).
        """
        before = len(self.reactor.udpPorts)
        self.protocol.dataReceived(greeting(0x00) + request(host, port, command=UDP_ASSOCIATE))
        data = self.transport.value()
        self.transport.clear()
        if data[:2] != b"\x05\x00":
            raise FailTest(f"method selection was {data[:2]!r}")
        if len(self.reactor.udpPorts) > before:
            self.relayPort = self.reactor.udpPorts[before]
        return data[2:]

    @property
    def association(self) -> Any:
        """
        The L{UDPAssociation} behind the relay socket.
        """
        assert self.relayPort is not None
        return self.relayPort.protocol.association

    @property
    def drops(self) -> dict[str, int]:
        """
        The association's drop counts by reason, without zero counts.
        """
        return {k: v for k, v in self.association.drops.items() if v}

    def outbound(self, family: int = 4) -> FakeUDPPort:
        """
        The association's outbound socket for address family C{family}.
        """
        ports = self.outboundPorts(family)
        if len(ports) != 1:
            raise FailTest(f"{len(ports)} IPv{family} outbound sockets")
        return ports[0]

    def outboundPorts(self, family: int | None = None) -> list[FakeUDPPort]:
        """
        Every outbound socket the association made (of C{family}, if given).
        """
        return [
            p
            for p in self.reactor.udpPorts
            if p is not self.relayPort
            and getattr(p.protocol, "association", None) is self.association
            and (family is None or (":" in p.interface) == (family == 6))
        ]

    def ports(self) -> list[FakeUDPPort]:
        """
        Every socket of the association: the relay socket, then outbound ones.
        """
        assert self.relayPort is not None
        return [self.relayPort, *self.outboundPorts()]

    def fromClient(self, datagram: bytes, addr: tuple[str, int] = CLIENT_UDP) -> None:
        """
        Deliver C{datagram} to the relay socket from C{addr}.
        """
        assert self.relayPort is not None
        self.relayPort.protocol.datagramReceived(datagram, addr)

    def fromRemote(self, datagram: bytes, addr: tuple[str, int], family: int = 4) -> None:
        """
        Deliver C{datagram} to the outbound socket of C{family} from C{addr}.
        """
        self.outbound(family).protocol.datagramReceived(datagram, addr)

    def toClient(self) -> list[tuple[bytes, Any]]:
        """
        Return, and forget, what the relay socket sent.
        """
        assert self.relayPort is not None
        written = list(self.relayPort.written)
        del self.relayPort.written[:]
        return written

    def lost(self) -> None:
        """
        Tell the protocol its control connection is gone.
        """
        self.transport.connected = False
        self.protocol.connectionLost(Failure(ConnectionDone()))


class UDPHarness:
    """
    A L{SOCKS5ServerFactory} with UDP ASSOCIATE on a L{UDPMemoryReactor} and
    a L{FakeHostnameResolver}.
    """

    def __init__(self, **options: Any) -> None:
        self.reactor = UDPMemoryReactor()
        self.resolver = FakeHostnameResolver()
        self.options = UDPOptions(**options)
        self.factory = SOCKS5ServerFactory(
            reactor=self.reactor,
            nameResolver=self.resolver,
            udpOptions=self.options,
        )

    def control(self, hostAddress: Any = LOCAL, peerAddress: Any = PEER) -> Control:
        """
        Make a new control connection.
        """
        return Control(self, hostAddress, peerAddress)

    def associated(
        self,
        host: str = "0.0.0.0",
        port: int = 0,
        hostAddress: Any = LOCAL,
        peerAddress: Any = PEER,
    ) -> Control:
        """
        Make a control connection with a successful association.
        """
        c = self.control(hostAddress, peerAddress)
        reply = c.associate(host, port)
        if reply[1] != 0x00:
            raise FailTest(f"association refused: {reply!r}")
        return c


class AssociateReplyTests(SynchronousTestCase):
    """
    The reply to UDP ASSOCIATE and where the relay socket is bound.
    """

    def test_replyNamesControlConnectionLocalAddress(self) -> None:
        """
        The reply is success with BND.ADDR the control connection's local IP
        and BND.PORT the relay socket's port.
        """
        h = UDPHarness()
        c = h.control()
        reply = c.associate()
        self.assertEqual(parseReply(reply), (0x00, 0x01, "127.0.0.5", FIRST_EPHEMERAL_PORT))
        self.assertEqual(c.relayPort.port, FIRST_EPHEMERAL_PORT)
        self.assertFalse(c.transport.disconnecting)

    def test_relayBoundToLocalAddress(self) -> None:
        """
        The relay socket is bound to the control connection's local IP, never
        the wildcard, and to any free port when no range is set.
        """
        h = UDPHarness()
        h.associated()
        [(port, interface, _)] = h.reactor.listenUDPCalls
        self.assertEqual((port, interface), (0, "127.0.0.5"))

    def test_advertise(self) -> None:
        """
        With C{advertise}, the reply names that address (and the relay
        socket's port) while the socket stays bound to the local IP.
        """
        h = UDPHarness(advertise="198.51.100.7")
        c = h.control()
        reply = c.associate()
        self.assertEqual(parseReply(reply), (0x00, 0x01, "198.51.100.7", c.relayPort.port))
        self.assertEqual(c.relayPort.interface, "127.0.0.5")

    def test_ipv4MappedLocalAddress(self) -> None:
        """
        A control connection whose local address is IPv4-mapped IPv6 gets an
        ATYP 1 reply with the plain IPv4 address, and the relay socket is
        bound to that IPv4 address.
        """
        h = UDPHarness()
        c = h.control(
            hostAddress=IPv6Address("TCP", "::ffff:127.0.0.5", 1080),
            peerAddress=IPv6Address("TCP", "::ffff:127.0.0.9", 40000),
        )
        reply = c.associate()
        self.assertEqual(parseReply(reply), (0x00, 0x01, "127.0.0.5", c.relayPort.port))
        self.assertEqual(c.relayPort.interface, "127.0.0.5")

    def test_ipv6LocalAddress(self) -> None:
        """
        A control connection over IPv6 gets an ATYP 4 reply naming its local
        IPv6 address, and the relay socket is bound to it.
        """
        h = UDPHarness()
        c = h.control(
            hostAddress=IPv6Address("TCP", "::1", 1080),
            peerAddress=IPv6Address("TCP", "::1", 40000),
        )
        reply = c.associate()
        self.assertEqual(parseReply(reply), (0x00, 0x04, "::1", c.relayPort.port))
        self.assertEqual(c.relayPort.interface, "::1")

    def test_sessionRecordsAssociation(self) -> None:
        """
        The session records the command, the success reply and the advertised
        relay address.
        """
        h = UDPHarness()
        c = h.associated()
        session = c.protocol.session
        self.assertEqual(session.command, "UDP_ASSOCIATE")
        self.assertEqual(session.reply, 0)
        self.assertEqual(session.bound, f"127.0.0.5:{c.relayPort.port}")

    def test_controlDataIgnored(self) -> None:
        """
        Bytes sent on the control connection after the reply get no answer and
        do not end the association.
        """
        h = UDPHarness()
        c = h.associated()
        c.protocol.dataReceived(greeting(0x00) + request("192.0.2.1", 80))
        self.assertEqual(c.transport.value(), b"")
        self.assertFalse(c.transport.disconnecting)
        self.assertFalse(c.relayPort.stopped)

    def test_noLocalIPAddress(self) -> None:
        """
        A control connection without a local IP address (a UNIX socket) gets
        a general failure reply and no socket is opened.
        """
        h = UDPHarness()
        c = h.control(hostAddress=UNIXAddress("/run/socks.sock"), peerAddress=UNIXAddress(None))
        self.assertEqual(c.associate(), errorReply(GENERAL_FAILURE))
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(h.reactor.udpPorts, [])

    def test_enabledByDefault(self) -> None:
        """
        A factory made without UDP options relays UDP with the defaults.
        """
        reactor = UDPMemoryReactor()
        factory = SOCKS5ServerFactory(reactor=reactor)
        protocol = factory.buildProtocol(PEER)
        transport = RecordingTransport(hostAddress=LOCAL, peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(greeting(0x00) + request("0.0.0.0", 0, command=UDP_ASSOCIATE))
        self.assertEqual(transport.value()[:4], b"\x05\x00\x05\x00")
        self.assertEqual(len(reactor.udpPorts), 1)
        self.assertEqual(factory.udpRelay.options.idleTimeout, 120.0)

    def test_notEnabled(self) -> None:
        """
        A factory made with C{udpOptions=False} answers UDP ASSOCIATE with
        0x07 and opens no socket.
        """
        reactor = UDPMemoryReactor()
        factory = SOCKS5ServerFactory(reactor=reactor, udpOptions=False)
        protocol = factory.buildProtocol(PEER)
        transport = RecordingTransport(hostAddress=LOCAL, peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(greeting(0x00) + request("0.0.0.0", 0, command=UDP_ASSOCIATE))
        self.assertEqual(transport.value(), b"\x05\x00" + errorReply(0x07))
        self.assertEqual(reactor.udpPorts, [])


class PortRangeTests(SynchronousTestCase):
    """
    C{ports}: relay sockets take their port from a range.
    """

    def test_portFromRange(self) -> None:
        """
        With a range, the relay socket is bound to a port inside it and the
        reply names that port.
        """
        h = UDPHarness(ports=(2000, 2010))
        c = h.control()
        reply = c.associate()
        self.assertIn(c.relayPort.port, range(2000, 2011))
        self.assertEqual(parseReply(reply), (0x00, 0x01, "127.0.0.5", c.relayPort.port))

    def test_busyPortsSkipped(self) -> None:
        """
        Busy ports in the range are skipped and the free one is taken,
        whatever port the search starts at.
        """
        for start in (2000, 2001, 2002):
            self.patch(random, "randint", lambda low, high, start=start: start)
            h = UDPHarness(ports=(2000, 2002))
            h.reactor.busyPorts.update({2000, 2001})
            c = h.control()
            reply = c.associate()
            self.assertEqual(parseReply(reply)[:2], (0x00, 0x01))
            self.assertEqual(c.relayPort.port, 2002)
            for port, _, _ in h.reactor.listenUDPCalls:
                self.assertIn(port, (2000, 2001, 2002))

    def test_searchWrapsAround(self) -> None:
        """
        The search goes up from its starting port to the top of the range,
        then on from the bottom.
        """
        self.patch(random, "randint", lambda low, high: 2003)
        h = UDPHarness(ports=(2000, 2004))
        h.reactor.busyPorts.update({2003, 2004})
        c = h.control()
        c.associate()
        self.assertEqual(c.relayPort.port, 2000)
        self.assertEqual([p for p, _, _ in h.reactor.listenUDPCalls], [2003, 2004, 2000])

    def test_eachAssociationItsOwnPort(self) -> None:
        """
        Associations take distinct ports from the range until it is used up.
        """
        h = UDPHarness(ports=(2000, 2004))
        controls = [h.associated() for _ in range(5)]
        self.assertEqual(sorted(c.relayPort.port for c in controls), [2000, 2001, 2002, 2003, 2004])

    def test_rangeExhausted(self) -> None:
        """
        When every port of the range is busy, the request gets a general
        failure reply, the control connection is closed, every port was tried
        once, and no socket is left open.
        """
        h = UDPHarness(ports=(2000, 2003))
        h.reactor.busyPorts.update(range(2000, 2004))
        c = h.control()
        reply = c.associate()
        self.assertEqual(reply, errorReply(GENERAL_FAILURE))
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(sorted(p for p, _, _ in h.reactor.listenUDPCalls), [2000, 2001, 2002, 2003])
        self.assertEqual(h.reactor.openUDPPorts(), [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_rangeUsedUpByAssociations(self) -> None:
        """
        Once associations hold every port of the range, the next request gets
        a general failure reply.
        """
        h = UDPHarness(ports=(2000, 2001))
        h.associated()
        h.associated()
        c = h.control()
        self.assertEqual(c.associate(), errorReply(GENERAL_FAILURE))
        self.assertTrue(c.transport.disconnecting)


class CapTests(SynchronousTestCase):
    """
    Associations are capped per client IP and in total.
    """

    def test_perClient(self) -> None:
        """
        Over C{maxPerClient} for one client IP the request gets a general
        failure reply and a close, while another client IP is still served.
        """
        h = UDPHarness(maxPerClient=2)
        h.associated()
        h.associated()
        c = h.control()
        self.assertEqual(c.associate(), errorReply(GENERAL_FAILURE))
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(len(h.reactor.openUDPPorts()), 2)
        other = h.control(peerAddress=OTHER_PEER)
        self.assertEqual(parseReply(other.associate())[0], 0x00)

    def test_perClientCountsMappedAddressAsIPv4(self) -> None:
        """
        A client counts against the same cap whether its control connection
        arrives as IPv4 or as IPv4-mapped IPv6.
        """
        h = UDPHarness(maxPerClient=1)
        h.associated()
        c = h.control(
            hostAddress=IPv6Address("TCP", "::ffff:127.0.0.5", 1080),
            peerAddress=IPv6Address("TCP", "::ffff:127.0.0.9", 40000),
        )
        self.assertEqual(c.associate(), errorReply(GENERAL_FAILURE))

    def test_total(self) -> None:
        """
        Over C{maxTotal} the request gets a general failure reply, whatever
        the client.
        """
        h = UDPHarness(maxTotal=2)
        h.associated()
        h.associated(peerAddress=OTHER_PEER)
        c = h.control(peerAddress=IPv4Address("TCP", "127.0.0.11", 40000))
        self.assertEqual(c.associate(), errorReply(GENERAL_FAILURE))
        self.assertTrue(c.transport.disconnecting)

    def test_perClientReleased(self) -> None:
        """
        When an association ends, its client may make a new one again.
        """
        h = UDPHarness(maxPerClient=1)
        first = h.associated()
        self.assertEqual(h.control().associate(), errorReply(GENERAL_FAILURE))
        first.lost()
        self.assertEqual(parseReply(h.control().associate())[0], 0x00)

    def test_totalReleased(self) -> None:
        """
        When an association ends, the total count goes down and another
        client is served again.
        """
        h = UDPHarness(maxTotal=1)
        first = h.associated()
        other = h.control(peerAddress=OTHER_PEER)
        self.assertEqual(other.associate(), errorReply(GENERAL_FAILURE))
        first.lost()
        again = h.control(peerAddress=OTHER_PEER)
        self.assertEqual(parseReply(again.associate())[0], 0x00)

    def test_refusedAssociationTakesNoCount(self) -> None:
        """
        An association refused for want of a port does not count against the
        client's cap.
        """
        h = UDPHarness(maxPerClient=1, ports=(2000, 2000))
        h.reactor.busyPorts.add(2000)
        self.assertEqual(h.control().associate(), errorReply(GENERAL_FAILURE))
        h.reactor.busyPorts.clear()
        self.assertEqual(parseReply(h.control().associate())[0], 0x00)

    def test_releasedOnce(self) -> None:
        """
        A control connection reported lost twice releases its association's
        count only once.
        """
        h = UDPHarness(maxTotal=2)
        first = h.associated()
        h.associated(peerAddress=OTHER_PEER)
        first.lost()
        first.lost()
        h.associated(peerAddress=IPv4Address("TCP", "127.0.0.11", 40000))
        c = h.control(peerAddress=IPv4Address("TCP", "127.0.0.12", 40000))
        self.assertEqual(c.associate(), errorReply(GENERAL_FAILURE))


class ClientToDestinationTests(SynchronousTestCase):
    """
    Datagrams from the client: who may send, and what is sent on.
    """

    def test_headerStripped(self) -> None:
        """
        A datagram from the client with a valid header is sent from the
        outbound socket to its destination, without the header.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"))
        self.assertEqual(c.outbound(4).written, [(b"query", ("192.0.2.1", 53))])
        self.assertEqual(c.relayPort.written, [])
        self.assertEqual(c.drops, {})

    def test_outboundSocketSeparate(self) -> None:
        """
        The outbound socket is not the relay socket and is bound to any free
        port on the IPv4 wildcard.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"))
        outbound = c.outbound(4)
        self.assertIsNot(outbound, c.relayPort)
        self.assertIn(outbound.interface, ("", "0.0.0.0"))
        self.assertEqual(h.reactor.listenUDPCalls[1][0], 0)

    def test_ipv6Destination(self) -> None:
        """
        An ATYP 4 destination is sent from an IPv6 outbound socket.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("2001:db8::1", 53, b"query"))
        self.assertEqual(c.outbound(6).written, [(b"query", ("2001:db8::1", 53))])
        self.assertEqual(c.outboundPorts(4), [])

    def test_clientPortLearned(self) -> None:
        """
        After a request with C{0.0.0.0:0}, the first datagram's port is
        learned and datagrams from the same IP but another port are dropped
        as C{foreign-port}.
        """
        h = UDPHarness()
        c = h.associated("0.0.0.0", 0)
        c.fromClient(udpDatagram("192.0.2.1", 53, b"one"), ("127.0.0.9", 40001))
        c.fromClient(udpDatagram("192.0.2.1", 53, b"two"), ("127.0.0.9", 40002))
        c.fromClient(udpDatagram("192.0.2.1", 53, b"three"), ("127.0.0.9", 40001))
        self.assertEqual(
            [d for d, _ in c.outbound(4).written], [b"one", b"three"]
        )
        self.assertEqual(c.drops, {"foreign-port": 1})

    def test_foreignSource(self) -> None:
        """
        A datagram from an IP other than the client's is dropped as
        C{foreign-source}, nothing is sent, and it does not fix the client's
        port.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"spoof"), ("127.0.0.10", 40001))
        self.assertEqual(c.outboundPorts(), [])
        self.assertEqual(c.drops, {"foreign-source": 1})
        c.fromClient(udpDatagram("192.0.2.1", 53, b"real"), ("127.0.0.9", 40009))
        self.assertEqual(c.outbound(4).written, [(b"real", ("192.0.2.1", 53))])

    def test_requestNamesClientPort(self) -> None:
        """
        A request naming the client's own IP and a port enforces that port
        from the first datagram on.
        """
        h = UDPHarness()
        c = h.associated("127.0.0.9", 40005)
        c.fromClient(udpDatagram("192.0.2.1", 53, b"wrong"), ("127.0.0.9", 40001))
        self.assertEqual(c.outboundPorts(), [])
        self.assertEqual(c.drops, {"foreign-port": 1})
        c.fromClient(udpDatagram("192.0.2.1", 53, b"right"), ("127.0.0.9", 40005))
        self.assertEqual(c.outbound(4).written, [(b"right", ("192.0.2.1", 53))])

    def test_requestNamingOtherHostIsHint(self) -> None:
        """
        A request naming another IP and a port does not fix the client's port:
        it is learned from the first datagram.
        """
        h = UDPHarness()
        c = h.associated("192.0.2.99", 7000)
        c.fromClient(udpDatagram("192.0.2.1", 53, b"one"), ("127.0.0.9", 40001))
        self.assertEqual(c.outbound(4).written, [(b"one", ("192.0.2.1", 53))])
        self.assertEqual(c.association.clientPort, 40001)

    def test_mappedControlConnection(self) -> None:
        """
        A client whose control connection is IPv4-mapped IPv6 is recognised
        when its datagrams come from the plain IPv4 address.
        """
        h = UDPHarness()
        c = h.associated(
            hostAddress=IPv6Address("TCP", "::ffff:127.0.0.5", 1080),
            peerAddress=IPv6Address("TCP", "::ffff:127.0.0.9", 40000),
        )
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"), ("127.0.0.9", 40001))
        self.assertEqual(c.outbound(4).written, [(b"query", ("192.0.2.1", 53))])

    def test_fragmentDropped(self) -> None:
        """
        A datagram with FRAG other than 0 is dropped as C{fragmented} and
        nothing is sent.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"part", frag=1))
        c.fromClient(udpDatagram("192.0.2.1", 53, b"last", frag=0x81))
        self.assertEqual(c.outboundPorts(), [])
        self.assertEqual(c.drops, {"fragmented": 2})

    def test_malformedDropped(self) -> None:
        """
        Datagrams with a short header, an unknown ATYP or a bad name are
        dropped as C{malformed} and nothing is sent.
        """
        h = UDPHarness()
        c = h.associated()
        for datagram in (
            b"",
            b"\x00\x00",
            b"\x00\x00\x00\x01\xc0\x00\x02",
            b"\x00\x00\x00\x09\xc0\x00\x02\x01\x00\x35data",
            b"\x00\x00\x00\x03\x00\x00\x35data",
            b"\x00\x00\x00\x03\x02\xff\xfe\x00\x35data",
        ):
            c.fromClient(datagram)
        self.assertEqual(c.outboundPorts(), [])
        self.assertEqual(c.drops, {"malformed": 6})

    def test_zeroPortDropped(self) -> None:
        """
        A datagram to port 0 is dropped and nothing is sent.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 0, b"query"))
        self.assertEqual(c.outboundPorts(), [])
        self.assertEqual(c.drops, {"zero-port": 1})

    def test_oneOutboundSocketPerFamily(self) -> None:
        """
        One IPv4 outbound socket serves every IPv4 destination, and one IPv6
        socket every IPv6 destination.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        first = c.outbound(4)
        c.fromClient(udpDatagram("198.51.100.2", 123, b"b"))
        c.fromClient(udpDatagram("2001:db8::1", 53, b"c"))
        c.fromClient(udpDatagram("2001:db8::2", 443, b"d"))
        self.assertIs(c.outbound(4), first)
        self.assertEqual(first.written, [(b"a", ("192.0.2.1", 53)), (b"b", ("198.51.100.2", 123))])
        self.assertEqual(
            c.outbound(6).written, [(b"c", ("2001:db8::1", 53)), (b"d", ("2001:db8::2", 443))]
        )
        self.assertEqual(len(h.reactor.listenUDPCalls), 3)

    def test_sendErrorCounted(self) -> None:
        """
        A datagram the outbound socket fails to send is counted as
        C{send-error}, not as sent.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        c.outbound(4).writeError = OSError(101, "Network is unreachable")
        c.fromClient(udpDatagram("192.0.2.1", 53, b"b"))
        self.assertEqual(c.drops, {"send-error": 1})
        self.assertEqual(c.association.datagramsUp, 1)

    def test_ipv6LiteralNameNormalised(self) -> None:
        """
        A destination sent as a name that is an IPv6 literal in another
        spelling is sent to the address, and its answer is let through.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(nameDatagram("2001:DB8:0:0::1", 53, b"query"))
        self.assertEqual(c.outbound(6).written, [(b"query", ("2001:db8::1", 53))])
        c.fromRemote(b"answer", ("2001:db8::1", 53), family=6)
        self.assertEqual(len(c.toClient()), 1)
        self.assertEqual(c.drops, {})

    def test_ipv4MappedLiteralNameNormalised(self) -> None:
        """
        A destination sent as a name that is an IPv4-mapped IPv6 literal is
        sent to the IPv4 address from the IPv4 socket, and its answer is let
        through.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(nameDatagram("::ffff:192.0.2.1", 53, b"query"))
        self.assertEqual(c.outbound(4).written, [(b"query", ("192.0.2.1", 53))])
        c.fromRemote(b"answer", ("192.0.2.1", 53))
        self.assertEqual(len(c.toClient()), 1)
        self.assertEqual(c.drops, {})

    def test_ipv4LiteralName(self) -> None:
        """
        A destination sent as a name that is an IPv4 literal is sent without
        a resolution.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(nameDatagram("192.0.2.1", 53, b"query"))
        self.assertEqual(c.outbound(4).written, [(b"query", ("192.0.2.1", 53))])
        self.assertEqual(h.resolver.resolutions, [])


class DestinationToClientTests(SynchronousTestCase):
    """
    Datagrams from destinations: who may answer, and what the client gets.
    """

    def test_answerToClient(self) -> None:
        """
        An answer from a destination reaches the client's learned address
        with a header naming the source IP and port as ATYP 1.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"))
        c.fromRemote(b"answer", ("192.0.2.1", 53))
        header = b"\x00\x00\x00\x01\xc0\x00\x02\x01\x00\x35"
        self.assertEqual(c.toClient(), [(header + b"answer", CLIENT_UDP)])

    def test_answerFromOtherPortOfSameHost(self) -> None:
        """
        A host the client has sent to may answer from another port, and the
        header names the port the answer came from.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"))
        c.fromRemote(b"answer", ("192.0.2.1", 5353))
        header = b"\x00\x00\x00\x01\xc0\x00\x02\x01\x14\xe9"
        self.assertEqual(c.toClient(), [(header + b"answer", CLIENT_UDP)])

    def test_answerFromIPv6(self) -> None:
        """
        An answer from an IPv6 destination comes with an ATYP 4 header.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("2001:db8::1", 443, b"query"))
        c.fromRemote(b"answer", ("2001:db8::1", 443), family=6)
        header = b"\x00\x00\x00\x04\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\x01\xbb"
        self.assertEqual(c.toClient(), [(header + b"answer", CLIENT_UDP)])

    def test_answerToEnforcedPort(self) -> None:
        """
        When the request named the client's port, answers go to that port.
        """
        h = UDPHarness()
        c = h.associated("127.0.0.9", 40005)
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"), ("127.0.0.9", 40005))
        c.fromRemote(b"answer", ("192.0.2.1", 53))
        [(_, addr)] = c.toClient()
        self.assertEqual(addr, ("127.0.0.9", 40005))

    def test_answerForNameCarriesAddress(self) -> None:
        """
        The answer from a destination the client named by a name comes with
        a header naming the resolved IP as ATYP 1, never the name.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("dns.example", 53, b"query"))
        h.resolver.resolutions[0].complete("192.0.2.7")
        c.fromRemote(b"answer", ("192.0.2.7", 53))
        header = b"\x00\x00\x00\x01\xc0\x00\x02\x07\x00\x35"
        self.assertEqual(c.toClient(), [(header + b"answer", CLIENT_UDP)])

    def test_unsolicitedDropped(self) -> None:
        """
        By default, a datagram from a host the client never sent to is
        dropped as C{unsolicited}.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"))
        c.fromRemote(b"intruder", ("203.0.113.5", 53))
        self.assertEqual(c.toClient(), [])
        self.assertEqual(c.drops, {"unsolicited": 1})
        self.assertEqual(c.association.datagramsDown, 0)

    def test_openFiltering(self) -> None:
        """
        With C{openFiltering}, a host the client never sent to may answer
        through the same socket.
        """
        h = UDPHarness(openFiltering=True)
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"query"))
        c.fromRemote(b"peer", ("203.0.113.5", 6000))
        header = b"\x00\x00\x00\x01\xcb\x00\x71\x05\x17\x70"
        self.assertEqual(c.toClient(), [(header + b"peer", CLIENT_UDP)])
        self.assertEqual(c.drops, {})

    def test_largestPayloadsWhole(self) -> None:
        """
        A 60000-byte payload is relayed whole both ways, and every socket
        reads datagrams of the largest UDP size.
        """
        h = UDPHarness()
        c = h.associated()
        up = bytes(range(256)) * 234 + b"u" * 96
        down = b"d" * 59999 + b"!"
        self.assertEqual((len(up), len(down)), (60000, 60000))
        c.fromClient(udpDatagram("192.0.2.1", 9000, up))
        c.fromRemote(down, ("192.0.2.1", 9000))
        [(sent, addr)] = c.outbound(4).written
        self.assertEqual((len(sent), digest(sent), addr), (60000, digest(up), ("192.0.2.1", 9000)))
        [(datagram, addr)] = c.toClient()
        self.assertEqual(datagram[:10], b"\x00\x00\x00\x01\xc0\x00\x02\x01\x23\x28")
        self.assertEqual((len(datagram), digest(datagram[10:]), addr), (60010, digest(down), CLIENT_UDP))
        for _, _, maxPacketSize in h.reactor.listenUDPCalls:
            self.assertGreaterEqual(maxPacketSize, 65535)

    def test_answerTooLargeForIPv4Dropped(self) -> None:
        """
        An answer that with its header would not fit in an IPv4 datagram is
        dropped as C{too-large} instead of failing to send.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 9000, b"q"))
        c.fromRemote(b"x" * 65507, ("192.0.2.1", 9000))
        self.assertEqual(c.toClient(), [])
        self.assertEqual(c.drops, {"too-large": 1})


class NameResolutionTests(SynchronousTestCase):
    """
    Destinations given as names: resolved without blocking, cached, and
    queued with a bound.
    """

    def test_resolvedThenSent(self) -> None:
        """
        A datagram to a name waits for the resolver, then goes to the address
        it gave.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("dns.example", 53, b"query"))
        [resolution] = h.resolver.resolutions
        self.assertEqual((resolution.name, resolution.transportSemantics), ("dns.example", "UDP"))
        self.assertEqual(c.outboundPorts(), [])
        resolution.complete("192.0.2.7")
        self.assertEqual(c.outbound(4).written, [(b"query", ("192.0.2.7", 53))])

    def test_queueBounded(self) -> None:
        """
        While a name resolves, up to C{resolveQueue} datagrams wait, further
        ones are dropped as C{resolve-queue-full}, and the waiting ones are
        all sent, in order, when it completes.
        """
        h = UDPHarness(resolveQueue=3)
        c = h.associated()
        for i in range(5):
            c.fromClient(udpDatagram("dns.example", 53, b"q%d" % i))
        self.assertEqual(len(h.resolver.resolutions), 1)
        self.assertEqual(c.drops, {"resolve-queue-full": 2})
        h.resolver.resolutions[0].complete("192.0.2.7")
        self.assertEqual(
            c.outbound(4).written,
            [(b"q0", ("192.0.2.7", 53)), (b"q1", ("192.0.2.7", 53)), (b"q2", ("192.0.2.7", 53))],
        )

    def test_queueFreedAfterResolution(self) -> None:
        """
        Once a resolution completes, its datagrams no longer take room in
        the queue.
        """
        h = UDPHarness(resolveQueue=1)
        c = h.associated()
        c.fromClient(udpDatagram("one.example", 53, b"a"))
        h.resolver.resolutions[0].complete("192.0.2.7")
        c.fromClient(udpDatagram("two.example", 53, b"b"))
        self.assertEqual(len(h.resolver.resolutions), 2)
        self.assertEqual(c.drops, {})

    def test_cached(self) -> None:
        """
        A second datagram to a resolved name is sent at once from the cache,
        without a new resolution, whatever the name's case.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("DNS.Example", 53, b"one"))
        h.resolver.resolutions[0].complete("192.0.2.7")
        c.fromClient(udpDatagram("dns.example", 53, b"two"))
        c.fromClient(udpDatagram("dns.EXAMPLE", 5353, b"three"))
        self.assertEqual(len(h.resolver.resolutions), 1)
        self.assertEqual(
            c.outbound(4).written,
            [(b"one", ("192.0.2.7", 53)), (b"two", ("192.0.2.7", 53)), (b"three", ("192.0.2.7", 5353))],
        )

    def test_cacheSharedByAssociations(self) -> None:
        """
        The name cache is server-wide: another association is served from it.
        """
        h = UDPHarness()
        first = h.associated()
        first.fromClient(udpDatagram("dns.example", 53, b"one"))
        h.resolver.resolutions[0].complete("192.0.2.7")
        second = h.associated(peerAddress=OTHER_PEER)
        second.fromClient(udpDatagram("dns.example", 53, b"two"), ("127.0.0.10", 40001))
        self.assertEqual(len(h.resolver.resolutions), 1)
        self.assertEqual(second.outbound(4).written, [(b"two", ("192.0.2.7", 53))])

    def test_cacheExpires(self) -> None:
        """
        A name is resolved again once C{nameCacheTTL} seconds have passed on
        the clock, and not before.
        """
        h = UDPHarness(nameCacheTTL=30.0)
        c = h.associated()
        c.fromClient(udpDatagram("dns.example", 53, b"one"))
        h.resolver.resolutions[0].complete("192.0.2.7")
        h.reactor.advance(29.9)
        c.fromClient(udpDatagram("dns.example", 53, b"two"))
        self.assertEqual(len(h.resolver.resolutions), 1)
        h.reactor.advance(0.1)
        c.fromClient(udpDatagram("dns.example", 53, b"three"))
        self.assertEqual(len(h.resolver.resolutions), 2)
        h.resolver.resolutions[1].complete("192.0.2.8")
        self.assertEqual(
            c.outbound(4).written,
            [(b"one", ("192.0.2.7", 53)), (b"two", ("192.0.2.7", 53)), (b"three", ("192.0.2.8", 53))],
        )

    def test_unresolved(self) -> None:
        """
        A datagram to a name that does not resolve is dropped as
        C{unresolved}; the failure is cached, so the next one is dropped
        without a new resolution until C{negativeCacheTTL} has passed.
        """
        h = UDPHarness(negativeCacheTTL=10.0)
        c = h.associated()
        c.fromClient(udpDatagram("nowhere.example", 53, b"one"))
        h.resolver.resolutions[0].complete()
        self.assertEqual(c.drops, {"unresolved": 1})
        c.fromClient(udpDatagram("nowhere.example", 53, b"two"))
        self.assertEqual(c.drops, {"unresolved": 2})
        self.assertEqual(len(h.resolver.resolutions), 1)
        h.reactor.advance(10.0)
        c.fromClient(udpDatagram("nowhere.example", 53, b"three"))
        self.assertEqual(len(h.resolver.resolutions), 2)
        self.assertEqual(c.outboundPorts(), [])

    def test_prefersIPv4(self) -> None:
        """
        A name with IPv4 and IPv6 addresses is reached over IPv4.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("dual.example", 53, b"query"))
        h.resolver.resolutions[0].complete("2001:db8::7", "192.0.2.7")
        self.assertEqual(c.outbound(4).written, [(b"query", ("192.0.2.7", 53))])
        self.assertEqual(c.outboundPorts(6), [])

    def test_ipv6OnlyName(self) -> None:
        """
        A name with only an IPv6 address is reached from the IPv6 socket.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("v6.example", 53, b"query"))
        h.resolver.resolutions[0].complete("2001:db8::7")
        self.assertEqual(c.outbound(6).written, [(b"query", ("2001:db8::7", 53))])

    def test_closedWhileResolving(self) -> None:
        """
        When the association ends while a name resolves, the datagrams that
        waited for it are not sent.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("dns.example", 53, b"query"))
        c.lost()
        h.resolver.resolutions[0].complete("192.0.2.7")
        self.assertEqual(c.outboundPorts(), [])
        self.assertEqual(h.reactor.openUDPPorts(), [])

    def test_closeCancelsLookup(self) -> None:
        """
        When the only association waiting for a name ends, its lookup is
        cancelled (its sockets closed) and no longer counted.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("dns.example", 53, b"query"))
        self.assertEqual(h.factory.lookups.inFlight, 1)
        c.lost()
        self.assertTrue(h.resolver.resolutions[0].cancelled)

    def test_sharedLookupLastWaiter(self) -> None:
        """
        A lookup shared by two associations is cancelled only when the
        second of them ends.
        """
        h = UDPHarness()
        first = h.associated()
        second = h.associated(peerAddress=IPv4Address("TCP", "192.0.2.99", 40001))
        first.fromClient(udpDatagram("dns.example", 53, b"one"))
        second.fromClient(
            udpDatagram("dns.example", 53, b"two"), addr=("192.0.2.99", 40002)
        )
        [resolution] = h.resolver.resolutions
        first.lost()
        self.assertFalse(resolution.cancelled)
        second.lost()
        self.assertTrue(resolution.cancelled)

    def test_lookupTimeoutCancels(self) -> None:
        """
        A lookup that takes longer than C{resolveTimeout} is cancelled; the
        datagram is dropped as unresolved.
        """
        h = UDPHarness(resolveTimeout=5)
        c = h.associated()
        c.fromClient(udpDatagram("slow.example", 53, b"query"))
        h.reactor.advance(5)
        self.assertTrue(h.resolver.resolutions[0].cancelled)
        self.assertEqual(c.drops, {"unresolved": 1})

    def test_overLookupLimitDropped(self) -> None:
        """
        A datagram whose name would take a client over its lookup limit is
        dropped (C{lookup-limit}), and nothing is looked up.
        """
        h = UDPHarness()
        h.factory.admission.limits = Limits(lookupsPerClient=1)
        c = h.associated()
        c.fromClient(udpDatagram("one.example", 53, b"query"))
        c.fromClient(udpDatagram("two.example", 53, b"query"))
        self.assertEqual(len(h.resolver.resolutions), 1)
        self.assertEqual(c.drops, {"lookup-limit": 1})


class LifetimeTests(SynchronousTestCase):
    """
    An association lives as long as its control connection, and no longer
    than its idle timeout.
    """

    def test_controlCloseStopsEverySocket(self) -> None:
        """
        When the control connection closes, the relay socket and every
        outbound socket are stopped at once and the idle timer is cancelled.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        c.fromClient(udpDatagram("2001:db8::1", 53, b"b"))
        ports = c.ports()
        self.assertEqual(len(ports), 3)
        self.assertEqual(len(h.reactor.getDelayedCalls()), 1)
        c.lost()
        self.assertEqual([p.stopped for p in ports], [True, True, True])
        self.assertEqual(h.reactor.openUDPPorts(), [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_otherAssociationsUntouched(self) -> None:
        """
        Closing one control connection leaves other associations' sockets
        open.
        """
        h = UDPHarness()
        first = h.associated()
        second = h.associated(peerAddress=OTHER_PEER)
        first.lost()
        self.assertTrue(first.relayPort.stopped)
        self.assertFalse(second.relayPort.stopped)
        self.assertEqual(len(h.reactor.getDelayedCalls()), 1)

    def test_nothingRelayedAfterClose(self) -> None:
        """
        Datagrams that arrive after the control connection closed are neither
        relayed nor counted.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        outbound = c.outbound(4)
        c.lost()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"late"))
        outbound.protocol.datagramReceived(b"late answer", ("192.0.2.1", 53))
        self.assertEqual(outbound.written, [(b"a", ("192.0.2.1", 53))])
        self.assertEqual(c.relayPort.written, [])
        self.assertEqual(c.association.datagramsUp, 1)

    def test_eofEndsAssociation(self) -> None:
        """
        EOF on the control connection closes it, and its sockets are stopped
        when it is gone; the session was ended by the client.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        c.protocol.readConnectionLost()
        self.assertTrue(c.transport.disconnecting)
        c.lost()
        self.assertEqual(h.reactor.openUDPPorts(), [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        self.assertEqual(c.protocol.session.reason, "client closed the UDP control connection")
        self.assertEqual(c.protocol.session.closedBy, "client")

    def test_idleTimeout(self) -> None:
        """
        After C{idleTimeout} seconds without a datagram, the control
        connection is closed, and its sockets are stopped when it is gone.
        """
        h = UDPHarness(idleTimeout=30.0)
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        h.reactor.advance(29.9)
        self.assertFalse(c.transport.disconnecting)
        h.reactor.advance(0.1)
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(c.protocol.session.reason, "UDP idle timeout")
        c.lost()
        self.assertEqual(h.reactor.openUDPPorts(), [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_idleTimeoutDefault(self) -> None:
        """
        By default an association with no traffic ends after 120 seconds.
        """
        h = UDPHarness()
        c = h.associated()
        h.reactor.advance(119.9)
        self.assertFalse(c.transport.disconnecting)
        h.reactor.advance(0.1)
        self.assertTrue(c.transport.disconnecting)

    def test_clientTrafficResetsIdle(self) -> None:
        """
        A relayed datagram from the client restarts the idle timer.
        """
        h = UDPHarness(idleTimeout=30.0)
        c = h.associated()
        h.reactor.advance(20)
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        h.reactor.advance(29.9)
        self.assertFalse(c.transport.disconnecting)
        h.reactor.advance(0.1)
        self.assertTrue(c.transport.disconnecting)

    def test_answerTrafficResetsIdle(self) -> None:
        """
        A relayed answer from a destination restarts the idle timer.
        """
        h = UDPHarness(idleTimeout=30.0)
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        h.reactor.advance(20)
        c.fromRemote(b"answer", ("192.0.2.1", 53))
        h.reactor.advance(29.9)
        self.assertFalse(c.transport.disconnecting)
        h.reactor.advance(0.1)
        self.assertTrue(c.transport.disconnecting)

    def test_droppedTrafficDoesNotResetIdle(self) -> None:
        """
        Dropped datagrams (from a foreign source, or unsolicited answers) do
        not keep an association alive.
        """
        h = UDPHarness(idleTimeout=30.0)
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
        h.reactor.advance(20)
        c.fromClient(udpDatagram("192.0.2.1", 53, b"x"), ("127.0.0.10", 40001))
        c.fromRemote(b"intruder", ("203.0.113.5", 53))
        h.reactor.advance(10)
        self.assertTrue(c.transport.disconnecting)

    def test_noTimerAfterRefusal(self) -> None:
        """
        A refused association leaves no timer behind.
        """
        h = UDPHarness(maxPerClient=1)
        first = h.associated()
        self.assertEqual(h.control().associate(), errorReply(GENERAL_FAILURE))
        first.lost()
        self.assertEqual(h.reactor.getDelayedCalls(), [])


class SessionLogTests(SynchronousTestCase):
    """
    The end-of-session event of an association counts datagrams, bytes and
    drops.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_counts(self) -> None:
        """
        The event carries datagrams and payload bytes each way and the drops
        by reason.
        """
        h = UDPHarness()
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"12345"))
        c.fromClient(udpDatagram("2001:db8::1", 53, b"1234567"))
        c.fromClient(udpDatagram("192.0.2.1", 53, b"x"), ("127.0.0.10", 40001))
        c.fromClient(udpDatagram("192.0.2.1", 53, b"x", frag=1))
        c.fromClient(udpDatagram("192.0.2.1", 53, b"x", frag=2))
        c.fromRemote(b"abcdefghijk", ("192.0.2.1", 53))
        c.fromRemote(b"intruder", ("203.0.113.5", 53))
        self.assertEqual(sessionEvents(self.observer), [])
        c.lost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["command"], "UDP_ASSOCIATE")
        self.assertEqual(event["reply"], 0)
        self.assertEqual(event["datagramsUp"], 2)
        self.assertEqual(event["datagramsDown"], 1)
        self.assertEqual(event["udpBytesUp"], 12)
        self.assertEqual(event["udpBytesDown"], 11)
        self.assertEqual(event["drops"], "foreign-source:1,fragmented:2,unsolicited:1")
        text = formatEvent(event)
        self.assertIn("datagramsUp=2", text)
        self.assertIn("drops=foreign-source:1,fragmented:2,unsolicited:1", text)

    def test_noTraffic(self) -> None:
        """
        An association that relayed nothing logs zero counts and no drops.
        """
        h = UDPHarness()
        c = h.associated()
        c.lost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(
            [event[k] for k in ("datagramsUp", "datagramsDown", "udpBytesUp", "udpBytesDown", "drops")],
            [0, 0, 0, 0, "-"],
        )

    def test_loggedOnceAfterIdle(self) -> None:
        """
        An association ended by its idle timeout is logged once, when its
        control connection is gone, with the idle timeout as the reason.
        """
        h = UDPHarness(idleTimeout=5.0)
        c = h.associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"abc"))
        h.reactor.advance(5)
        c.lost()
        [event] = sessionEvents(self.observer)
        self.assertEqual(event["reason"], "UDP idle timeout")
        self.assertEqual(event["udpBytesUp"], 3)


class UDPOptionsTests(SynchronousTestCase):
    """
    L{UDPOptions} defaults.
    """

    def test_defaults(self) -> None:
        """
        By default any free port is used, the local address is advertised,
        filtering is address-dependent, the idle timeout is 120 seconds and
        the caps are 16 per client and 1024 in total.
        """
        options = UDPOptions()
        self.assertEqual(
            (
                options.ports,
                options.advertise,
                options.idleTimeout,
                options.openFiltering,
                options.maxPerClient,
                options.maxTotal,
            ),
            (None, None, 120.0, False, 16, 1024),
        )


def parse(*argv: str) -> tap.Options:
    """
    Return L{tap.Options} that have parsed C{argv}.
    """
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class TapTests(SynchronousTestCase):
    """
    The C{--udp-*} options of C{twistd socks5} and the factory they build.
    """

    def test_portRange(self) -> None:
        """
        C{--udp-ports 2000-2010} is the range C{(2000, 2010)}.
        """
        self.assertEqual(parse("--udp-ports", "2000-2010")["udp-ports"], (2000, 2010))

    def test_singlePortRange(self) -> None:
        """
        A single port is a range of one.
        """
        self.assertEqual(parse("--udp-ports", "5000")["udp-ports"], (5000, 5000))

    def test_badPortRanges(self) -> None:
        """
        A reversed range, a range touching 0 or above 65535, and text that is
        not a range are usage errors.
        """
        for value in ("5-1", "0-10", "x", "1-65536", "10-", "-", ""):
            self.assertRaises(usage.UsageError, parse, "--udp-ports", value)

    def test_parsePortRange(self) -> None:
        """
        L{tap.parsePortRange} accepts the whole port space and surrounding
        blanks.
        """
        self.assertEqual(tap.parsePortRange(" 1-65535 "), (1, 65535))
        self.assertRaises(ValueError, tap.parsePortRange, "5-1")

    def test_advertise(self) -> None:
        """
        C{--udp-advertise} takes an IPv4 or IPv6 address, an IPv4-mapped one
        as plain IPv4.
        """
        self.assertEqual(parse("--udp-advertise", "198.51.100.7")["udp-advertise"], "198.51.100.7")
        self.assertEqual(parse("--udp-advertise", "2001:DB8::7")["udp-advertise"], "2001:db8::7")
        self.assertEqual(tap.parseIPAddress("::ffff:198.51.100.7"), "198.51.100.7")

    def test_badAdvertise(self) -> None:
        """
        C{--udp-advertise} with something that is not an IP address is a
        usage error.
        """
        for value in ("garbage", "example.com", "300.1.1.1", ""):
            self.assertRaises(usage.UsageError, parse, "--udp-advertise", value)

    def test_defaults(self) -> None:
        """
        Without C{--udp-*} options the idle timeout is 120 seconds, the caps
        16 per client and 1024 in total, with any port, the local address and
        address-dependent filtering.
        """
        options = tap.makeFactory(parse(), MemoryReactorClock()).udpRelay.options
        self.assertEqual(
            (
                options.ports,
                options.advertise,
                options.idleTimeout,
                options.openFiltering,
                options.maxPerClient,
                options.maxTotal,
            ),
            (None, None, 120.0, False, 16, 1024),
        )

    def test_openFiltering(self) -> None:
        """
        C{--udp-open-filtering} turns on open filtering in the factory's
        relay.
        """
        factory = tap.makeFactory(parse("--udp-open-filtering"), MemoryReactorClock())
        self.assertTrue(factory.udpRelay.options.openFiltering)

    def test_optionsReachFactory(self) -> None:
        """
        Every C{--udp-*} option reaches the factory's relay options.
        """
        config = parse(
            "--udp-ports", "2000-2010",
            "--udp-advertise", "198.51.100.7",
            "--udp-idle-timeout", "30",
            "--udp-max-per-client", "2",
            "--udp-max-total", "5",
        )
        options = tap.makeFactory(config, MemoryReactorClock()).udpRelay.options
        self.assertEqual(
            (
                options.ports,
                options.advertise,
                options.idleTimeout,
                options.maxPerClient,
                options.maxTotal,
            ),
            ((2000, 2010), "198.51.100.7", 30.0, 2, 5),
        )

    def test_badNumbers(self) -> None:
        """
        A non-positive idle timeout or cap is a usage error.
        """
        for argv in (
            ("--udp-idle-timeout", "0"),
            ("--udp-idle-timeout", "x"),
            ("--udp-max-per-client", "0"),
            ("--udp-max-total", "-1"),
        ):
            self.assertRaises(usage.UsageError, parse, *argv)
