# -*- test-case-name: tests.test_policy -*-
"""
The access policy inside the server, in memory: L{SOCKS5ServerFactory}
built with C{policy=Policy([...])} and a fake name resolver on a
L{MemoryReactorClock}, driven through L{tests.fakes.ProxyHarness}, the BIND
harness of L{tests.test_bind} and the UDP control connections of
L{tests.test_udp}.

CONNECT (SOCKS5, SOCKS4/4a, HTTP CONNECT and plain-HTTP forwarding) is
checked before any outbound attempt, names on every address they resolve
to and connected to exactly those; BIND checks the peer that connects; UDP
checks every datagram's destination, with the decision cached.  Nothing
touches the network.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socksrelay.interfaces import ISOCKSUser
from socksrelay.rules import Decision, Policy, Query, Rule
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.udp import UDPOptions
from tests.fakes import (
    ProxyHarness,
    authRequest,
    errorReply,
    greeting,
    request,
)
from tests.test_bind import PEER, STRANGER, BindHarness, reply
from tests.test_server import sessionEvents
from tests.test_udp import CLIENT_UDP, LOCAL, Control, udpDatagram
from tests.test_udp import PEER as UDP_PEER
from tests.udpfakes import FakeHostnameResolver, UDPMemoryReactor

NOT_ALLOWED = 0x02
HOST_UNREACHABLE = 0x04
TTL_EXPIRED = 0x06

#: What the proxy says to a greeting offering "no authentication".
NO_AUTH_SELECTED = b"\x05\x00"


def nets(*cidrs: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


#: Deny the cloud metadata network, allow everything else.
NO_METADATA = Policy(
    [
        Rule("deny", "no metadata", networks=nets("169.254.0.0/16", "fe80::/10")),
        Rule("allow", "the rest"),
    ]
)


@implementer(IHostnameResolver)
class TableResolver:
    """
    An L{IHostnameResolver} answering at once from a table of names to
    addresses (a name not in the table resolves to nothing).

    @ivar names: every name asked for, in order.
    """

    def __init__(self, table: dict[str, tuple[str, ...]]) -> None:
        self.table = table
        self.names: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        self.names.append(hostName)
        resolutionReceiver.resolutionBegan(None)
        for address in self.table.get(hostName, ()):
            family = IPv6Address if ":" in address else IPv4Address
            if addressTypes is None or family in addressTypes:
                resolutionReceiver.addressResolved(family("TCP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return None


class CountingPolicy(Policy):
    """
    A L{Policy} that remembers every query it decided.
    """

    def __init__(self, rules: Any) -> None:
        super().__init__(rules)
        self.queries: list[Query] = []

    def decide(self, query: Query) -> Decision:
        self.queries.append(query)
        return super().decide(query)


def socks4Request(host: str, port: int, userid: bytes = b"") -> bytes:
    """
    A SOCKS4 CONNECT to an IPv4 address, or a SOCKS4a one to a name.
    """
    try:
        packed = ipaddress.IPv4Address(host).packed
        name = b""
    except ValueError:
        packed = b"\x00\x00\x00\x01"
        name = host.encode("ascii") + b"\x00"
    return b"\x04\x01" + struct.pack("!H", port) + packed + userid + b"\x00" + name


class ConnectPolicyTests(SynchronousTestCase):
    """
    SOCKS5 CONNECT is decided before any outbound attempt.
    """

    def harness(self, policy: Any = NO_METADATA, **kw: Any) -> ProxyHarness:
        return ProxyHarness(policy=policy, **kw)

    def assertDenied(self, h: ProxyHarness, rule: str) -> None:
        """
        The client got "not allowed" after the method selection and was
        closed; the session names C{rule}; nothing was connected.
        """
        self.assertEqual(h.received(), NO_AUTH_SELECTED + errorReply(NOT_ALLOWED))
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.details.get("rule"), rule)
        self.assertEqual(h.protocol.session.reason, f"denied by {rule}")
        self.assertEqual(h.protocol.session.reply, NOT_ALLOWED)
        if h.recorder is not None:
            self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.reactor.tcpClients, [])

    def test_deniedIP(self) -> None:
        """
        A CONNECT to a denied IP gets reply 0x02, no outbound attempt is
        made, and the session names the rule.
        """
        h = self.harness()
        h.send(greeting(0x00) + request("169.254.169.254", 80))
        self.assertDenied(h, "no metadata")

    def test_deniedIPWithDefaultEndpoint(self) -> None:
        """
        With the factory's own endpoints too, a denied IP makes no outbound
        connection attempt.
        """
        h = self.harness(recordEndpoints=False)
        h.send(greeting(0x00) + request("fe80::1", 443))
        self.assertDenied(h, "no metadata")

    def test_deniedMappedIP(self) -> None:
        """
        An IPv4-mapped IPv6 destination is judged as its IPv4 address.
        """
        h = self.harness()
        h.send(greeting(0x00) + request("::ffff:169.254.169.254", 80))
        self.assertDenied(h, "no metadata")

    def test_allowedIP(self) -> None:
        """
        An allowed IP is connected to, and the session names the rule that
        allowed it.
        """
        h = self.harness()
        h.send(greeting(0x00) + request("192.0.2.1", 80))
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])
        self.assertEqual(h.received(), NO_AUTH_SELECTED)
        self.assertEqual(h.protocol.session.details["rule"], "the rest")

    def test_noRuleMatched(self) -> None:
        """
        A destination no rule matches is denied as "no rule matched".
        """
        h = self.harness(Policy([Rule("allow", "web", ports=((443, 443),))]))
        h.send(greeting(0x00) + request("192.0.2.1", 80))
        self.assertDenied(h, "no rule matched")

    def test_portRule(self) -> None:
        """
        A rule on ports decides by the requested port.
        """
        policy = Policy([Rule("deny", "no ssh", ports=((22, 22),)), Rule("allow", "rest")])
        h = self.harness(policy)
        h.send(greeting(0x00) + request("192.0.2.1", 22))
        self.assertDenied(h, "no ssh")
        h2 = self.harness(policy)
        h2.send(greeting(0x00) + request("192.0.2.1", 2222))
        self.assertEqual(h2.recorder.requests, [("192.0.2.1", 2222)])

    def test_clientRule(self) -> None:
        """
        A rule on client networks sees the client connection's address
        (127.0.0.1 in the harness).
        """
        policy = Policy([Rule("deny", "not from loopback", clients=nets("127.0.0.0/8"))])
        h = self.harness(policy)
        h.send(greeting(0x00) + request("192.0.2.1", 80))
        self.assertDenied(h, "not from loopback")

    def test_nameWithDeniedAddress(self) -> None:
        """
        A name that resolves to an allowed and a denied address gets 0x02,
        with no outbound attempt.
        """
        resolver = TableResolver({"mixed.test": ("192.0.2.1", "169.254.169.254")})
        h = self.harness(nameResolver=resolver, recordEndpoints=False)
        h.send(greeting(0x00) + request("mixed.test", 80))
        self.assertDenied(h, "no metadata")
        self.assertEqual(resolver.names, ["mixed.test"])

    def test_nameWithAddressOutsideAllowed(self) -> None:
        """
        Under "allow this network, deny the rest", a name with one address
        outside the network is denied by the second rule.
        """
        policy = Policy(
            [Rule("allow", "test net", networks=nets("192.0.2.0/24")), Rule("deny", "rest")]
        )
        resolver = TableResolver({"mixed.test": ("192.0.2.1", "198.51.100.1")})
        h = self.harness(policy, nameResolver=resolver)
        h.send(greeting(0x00) + request("mixed.test", 80))
        self.assertDenied(h, "rest")

    def test_hostRuleOnName(self) -> None:
        """
        A host rule is decided on the name as asked (a domain and its
        subdomains), before connecting; the name is resolved, as it is
        judged, in its canonical form.
        """
        policy = Policy([Rule("deny", "no corp", hosts=(".corp.test",)), Rule("allow", "rest")])
        resolver = TableResolver({"www.corp.test": ("192.0.2.1",)})
        h = self.harness(policy, nameResolver=resolver)
        h.send(greeting(0x00) + request("WWW.Corp.Test.", 80))
        self.assertDenied(h, "no corp")

    def test_allowedNameConnectsToResolvedAddress(self) -> None:
        """
        An allowed name is connected to at the address that was checked: the
        reactor is asked for that IP, and the name is not resolved again.
        """
        resolver = TableResolver({"web.test": ("192.0.2.7",)})
        h = self.harness(nameResolver=resolver, recordEndpoints=False)
        h.send(greeting(0x00) + request("web.test", 8080))
        h.reactor.advance(0)
        self.assertEqual([c[:2] for c in h.reactor.tcpClients], [("192.0.2.7", 8080)])
        self.assertEqual(resolver.names, ["web.test"])
        self.assertEqual(h.protocol.session.resolved, "192.0.2.7")

    def test_allowedNameConnectsOnlyToResolvedAddresses(self) -> None:
        """
        A name with several checked addresses is connected to only at those
        addresses, without a second resolution.
        """
        resolver = TableResolver({"web.test": ("192.0.2.7", "2001:db8::7")})
        h = self.harness(nameResolver=resolver, recordEndpoints=False)
        h.send(greeting(0x00) + request("web.test", 443))
        for _ in range(5):
            h.reactor.advance(1)
        attempts = {c[:2] for c in h.reactor.tcpClients}
        self.assertTrue(attempts, "no connection attempt")
        self.assertLessEqual(attempts, {("192.0.2.7", 443), ("2001:db8::7", 443)})
        self.assertEqual(resolver.names, ["web.test"])

    def test_nameResolvingToNothing(self) -> None:
        """
        A name that resolves to no address gets 0x04, with no outbound
        attempt.
        """
        h = self.harness(nameResolver=TableResolver({}), recordEndpoints=False)
        h.send(greeting(0x00) + request("nowhere.test", 80))
        self.assertEqual(h.received(), NO_AUTH_SELECTED + errorReply(HOST_UNREACHABLE))
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.reactor.tcpClients, [])

    def test_clientLeavesDuringResolution(self) -> None:
        """
        A client that leaves while its destination is being resolved gets no
        reply, and nothing is connected, even when the answer comes later.
        """
        resolver = FakeHostnameResolver()
        h = self.harness(nameResolver=resolver)
        h.send(greeting(0x00) + request("slow.test", 80))
        self.assertEqual(h.received(), NO_AUTH_SELECTED)
        [resolution] = resolver.pending()
        h.clientLost()
        resolution.complete("192.0.2.1")
        h.reactor.advance(60)
        self.assertEqual(h.received(), b"")
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_connectTimeoutDuringResolution(self) -> None:
        """
        The connect timeout covers resolution: when the resolver hangs, the
        client gets 0x06 once the timeout passes, and a late answer connects
        nothing.
        """
        resolver = FakeHostnameResolver()
        h = self.harness(nameResolver=resolver, connectTimeout=5)
        h.send(greeting(0x00) + request("slow.test", 80))
        self.assertEqual(h.received(), NO_AUTH_SELECTED)
        h.reactor.advance(4.9)
        self.assertEqual(h.received(), b"")
        h.reactor.advance(0.2)
        self.assertEqual(h.received(), errorReply(TTL_EXPIRED))
        self.assertTrue(h.transport.disconnecting)
        resolver.pending()[0].complete("192.0.2.1")
        self.assertEqual(h.recorder.requests, [])

    def test_noPolicyChecksNothing(self) -> None:
        """
        With C{policy=None}, a link-local IP is connected to, and a name is
        handed to the endpoint as it is, without being resolved first.
        """
        resolver = TableResolver({"meta.test": ("169.254.169.254",)})
        h = ProxyHarness(policy=None, nameResolver=resolver)
        h.send(greeting(0x00) + request("169.254.169.254", 80))
        self.assertEqual(h.recorder.requests, [("169.254.169.254", 80)])
        h2 = ProxyHarness(policy=None, nameResolver=resolver)
        h2.send(greeting(0x00) + request("meta.test", 80))
        self.assertEqual(h2.recorder.requests, [("meta.test", 80)])
        self.assertEqual(resolver.names, [])


@implementer(IRealm)
class GroupRealm:
    """
    A realm whose avatars have a user name and groups.
    """

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        groups = {"alice": frozenset({"staff"}), "bob": frozenset({"guests"})}

        @implementer(ISOCKSUser)
        class User:
            username = name

        User.groups = groups.get(name, frozenset())  # type: ignore[attr-defined]

        return ISOCKSUser, User(), lambda: None


class UserPolicyTests(SynchronousTestCase):
    """
    Rules on users and groups see the authenticated user.
    """

    def connectAs(self, user: bytes, policy: Policy) -> ProxyHarness:
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw", bob=b"pw")
        h = ProxyHarness(portal=Portal(GroupRealm(), [checker]), policy=policy)
        h.send(greeting(0x02) + authRequest(user, b"pw") + request("192.0.2.1", 80))
        return h

    def test_users(self) -> None:
        """
        A rule naming alice lets alice through and not bob.
        """
        policy = Policy([Rule("allow", "alice", users=frozenset({"alice"})), Rule("deny", "others")])
        self.assertEqual(self.connectAs(b"alice", policy).recorder.requests, [("192.0.2.1", 80)])
        bob = self.connectAs(b"bob", policy)
        self.assertEqual(bob.recorder.requests, [])
        self.assertTrue(bob.received().endswith(errorReply(NOT_ALLOWED)))
        self.assertEqual(bob.protocol.session.details["rule"], "others")

    def test_groups(self) -> None:
        """
        A rule naming the staff group lets a staff member through and not a
        guest.
        """
        policy = Policy([Rule("allow", "staff", groups=frozenset({"staff"})), Rule("deny", "others")])
        self.assertEqual(self.connectAs(b"alice", policy).recorder.requests, [("192.0.2.1", 80)])
        bob = self.connectAs(b"bob", policy)
        self.assertEqual(bob.recorder.requests, [])
        self.assertEqual(bob.protocol.session.details["rule"], "others")


class OtherProtocolsTests(SynchronousTestCase):
    """
    SOCKS4, SOCKS4a and HTTP are decided by the same policy, each answering
    a denial in its own way.
    """

    def test_socks4Denied(self) -> None:
        """
        A denied SOCKS4 CONNECT gets CD 91, with no outbound attempt, and the
        session names the rule.
        """
        h = ProxyHarness(policy=NO_METADATA)
        h.send(socks4Request("169.254.169.254", 80))
        answer = h.received()
        self.assertEqual(answer[:2], b"\x00\x5b")
        self.assertEqual(len(answer), 8)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.details["rule"], "no metadata")

    def test_socks4aIsSocks4(self) -> None:
        """
        A SOCKS4a CONNECT to a name counts as protocol socks4; its name is
        resolved and checked like any other.
        """
        policy = Policy(
            [
                Rule("deny", "no socks4 to corp", protocols=frozenset({"socks4"}), hosts=(".corp.test",)),
                Rule("allow", "rest"),
            ]
        )
        resolver = TableResolver({"db.corp.test": ("192.0.2.9",)})
        h = ProxyHarness(policy=policy, nameResolver=resolver)
        h.send(socks4Request("db.corp.test", 5432))
        self.assertEqual(h.received()[:2], b"\x00\x5b")
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.details["rule"], "no socks4 to corp")

    def test_socks4Allowed(self) -> None:
        """
        An allowed SOCKS4 CONNECT is connected to.
        """
        h = ProxyHarness(policy=NO_METADATA)
        h.send(socks4Request("192.0.2.1", 80))
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])

    def test_httpConnectDenied(self) -> None:
        """
        A denied HTTP CONNECT gets 403, with no outbound attempt, and the
        session names the rule.
        """
        h = ProxyHarness(policy=NO_METADATA)
        h.send(b"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n")
        answer = h.received()
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.details["rule"], "no metadata")

    def test_httpProtocolRule(self) -> None:
        """
        A rule on protocols tells HTTP from SOCKS5: an HTTP-only policy lets
        an HTTP CONNECT through and denies the same SOCKS5 request.
        """
        policy = Policy([Rule("allow", "http only", protocols=frozenset({"http"}))])
        h = ProxyHarness(policy=policy)
        h.send(b"CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\n")
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 443)])
        h5 = ProxyHarness(policy=policy)
        h5.send(greeting(0x00) + request("192.0.2.1", 443))
        self.assertEqual(h5.received(), NO_AUTH_SELECTED + errorReply(NOT_ALLOWED))
        self.assertEqual(h5.recorder.requests, [])

    def test_httpForwardDenied(self) -> None:
        """
        A plain-HTTP request (C{GET http://...}) to a denied destination gets
        403 and no outbound connection, like a CONNECT.
        """
        h = ProxyHarness(policy=NO_METADATA)
        h.send(
            b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n"
            b"Host: 169.254.169.254\r\n\r\n"
        )
        h.reactor.advance(0)
        answer = h.received()
        self.assertEqual(h.recorder.requests, [])
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)


class BindPolicyTests(SynchronousTestCase):
    """
    BIND checks the peer that connects.
    """

    #: Deny BIND peers from 127.0.0.9 (L{STRANGER}); allow the rest.
    POLICY = Policy(
        [
            Rule(
                "deny",
                "no peers from .9",
                commands=frozenset({"bind"}),
                networks=nets("127.0.0.9/32"),
            ),
            Rule("allow", "the rest"),
        ]
    )

    def test_deniedPeerClosedThenAllowedPeerAccepted(self) -> None:
        """
        A peer the policy denies is closed and counted as rejected while the
        listener keeps waiting; an allowed peer then gets through.
        """
        h = BindHarness(policy=self.POLICY)
        first = h.bind()
        self.assertEqual(first[:2], b"\x05\x00")
        protocol, _ = h.peerConnects(STRANGER)
        self.assertIsNone(protocol)
        self.assertEqual(h.protocol.session.details["rejected"], 1)
        self.assertEqual(h.reactor.listening, [h.port])
        self.assertEqual(h.received(), b"")
        self.assertFalse(h.transport.disconnecting)
        protocol, _ = h.peerConnects(PEER)
        self.assertIsNotNone(protocol)
        self.assertEqual(h.received(), reply(0, PEER.host, PEER.port))
        self.assertEqual(h.protocol.session.details["rejected"], 1)
        self.assertEqual(h.protocol.session.details["peer"], f"{PEER.host}:{PEER.port}")

    def test_peerQuery(self) -> None:
        """
        The peer is decided as command C{bind}, with its address as the
        destination and the client's address as the client.
        """
        policy = CountingPolicy(self.POLICY.rules)
        h = BindHarness(policy=policy)
        h.bind()
        h.peerConnects(PEER)
        [q] = policy.queries
        self.assertEqual(
            (q.command, q.host, q.addresses, q.port, q.client, q.protocol),
            ("bind", PEER.host, (PEER.host,), PEER.port, "127.0.0.1", "socks5"),
        )

    def test_noPolicy(self) -> None:
        """
        With C{policy=None} any peer of a BIND for "any" is accepted.
        """
        h = BindHarness(policy=None)
        h.bind()
        protocol, _ = h.peerConnects(STRANGER)
        self.assertIsNotNone(protocol)
        self.assertEqual(h.received(), reply(0, STRANGER.host, STRANGER.port))


class _UDPHarness:
    """
    A factory with UDP ASSOCIATE and a policy, on a L{UDPMemoryReactor},
    for L{tests.test_udp.Control}.
    """

    def __init__(self, policy: Any) -> None:
        self.reactor = UDPMemoryReactor()
        self.resolver = FakeHostnameResolver()
        self.factory = SOCKS5ServerFactory(
            reactor=self.reactor,
            nameResolver=self.resolver,
            udpOptions=UDPOptions(),
            policy=policy,
        )

    def associated(self) -> Control:
        control = Control(self, LOCAL, UDP_PEER)  # type: ignore[arg-type]
        answer = control.associate()
        assert answer[1] == 0x00, answer
        return control


class UDPPolicyTests(SynchronousTestCase):
    """
    Every datagram's destination is checked; the decision is cached per
    association.
    """

    def sent(self, c: Control) -> list[tuple[bytes, Any]]:
        return [w for port in c.outboundPorts() for w in port.written]

    def test_deniedDatagramDropped(self) -> None:
        """
        A datagram to a denied destination is dropped and counted as
        "denied"; one to an allowed destination is sent.
        """
        c = _UDPHarness(NO_METADATA).associated()
        c.fromClient(udpDatagram("169.254.169.254", 53, b"secret?"))
        self.assertEqual(c.drops, {"denied": 1})
        self.assertEqual(self.sent(c), [])
        c.fromClient(udpDatagram("192.0.2.1", 53, b"hello"))
        self.assertEqual(self.sent(c), [(b"hello", ("192.0.2.1", 53))])
        self.assertEqual(c.drops, {"denied": 1})

    def test_deniedCountedInSession(self) -> None:
        """
        When the association ends, the session's drops detail shows the
        denied datagrams.
        """
        c = _UDPHarness(NO_METADATA).associated()
        c.fromClient(udpDatagram("fe80::1", 53, b"x"))
        c.fromClient(udpDatagram("169.254.1.1", 53, b"x"))
        c.lost()
        self.assertEqual(c.protocol.session.details["drops"], "denied:2")

    def test_deniedName(self) -> None:
        """
        A name that resolves into a denied network is dropped as denied, and
        a host rule is decided on the name as asked.
        """
        policy = Policy(
            [
                Rule("deny", "no corp", hosts=(".corp.test",)),
                *NO_METADATA.rules,
            ]
        )
        h = _UDPHarness(policy)
        c = h.associated()
        c.fromClient(udpDatagram("meta.test", 53, b"x"))
        h.resolver.pending()[0].complete("169.254.169.254")
        c.fromClient(udpDatagram("db.corp.test", 53, b"x"))
        h.resolver.pending()[0].complete("192.0.2.9")
        self.assertEqual(c.drops, {"denied": 2})
        self.assertEqual(self.sent(c), [])

    def test_decisionCached(self) -> None:
        """
        Repeated datagrams to the same destination are decided once; a new
        destination is decided again.
        """
        policy = CountingPolicy(NO_METADATA.rules)
        c = _UDPHarness(policy).associated()
        for _ in range(3):
            c.fromClient(udpDatagram("192.0.2.1", 53, b"a"))
            c.fromClient(udpDatagram("169.254.169.254", 53, b"b"))
        self.assertEqual(len(policy.queries), 2)
        self.assertEqual(len(self.sent(c)), 3)
        self.assertEqual(c.drops, {"denied": 3})
        c.fromClient(udpDatagram("192.0.2.1", 54, b"a"))
        self.assertEqual(len(policy.queries), 3)

    def test_datagramQuery(self) -> None:
        """
        A datagram is decided as command C{udp} from the control
        connection's client, with its destination's address and port.
        """
        policy = CountingPolicy(NO_METADATA.rules)
        c = _UDPHarness(policy).associated()
        c.fromClient(udpDatagram("192.0.2.1", 53, b"a"), CLIENT_UDP)
        [q] = policy.queries
        self.assertEqual(
            (q.command, q.client, q.host, q.addresses, q.port),
            ("udp", UDP_PEER.host, "192.0.2.1", ("192.0.2.1",), 53),
        )

    def test_noPolicy(self) -> None:
        """
        With C{policy=None} nothing is checked: even a link-local
        destination is sent to (in memory).
        """
        c = _UDPHarness(None).associated()
        c.fromClient(udpDatagram("169.254.169.254", 53, b"x"))
        self.assertEqual(self.sent(c), [(b"x", ("169.254.169.254", 53))])
        self.assertEqual(c.drops, {})


class CommandDeniedTests(SynchronousTestCase):
    """
    A rule that denies a command (C{deny commands = ["udp"]}, C{["bind"]})
    refuses the request itself with 0x02 and a log line, even after a rule
    that denies destinations (as in etc/socksrelay.toml); a UDP
    association a rule allows still has each datagram checked.
    """

    @staticmethod
    def policy(command: str) -> Policy:
        return Policy(
            [
                NO_METADATA.rules[0],
                Rule("deny", "no " + command, commands=frozenset({command})),
                Rule("allow", "the rest"),
            ]
        )

    def assertEndLogged(self, observer: EventLoggingObserver, rule: str) -> None:
        [event] = sessionEvents(observer)
        text = formatEvent(event)
        self.assertIn(f"denied by {rule}", text)
        self.assertIn("reply=0x02", text)

    def test_udpAssociateDenied(self) -> None:
        """
        UDP ASSOCIATE gets 0x02 at the request: no relay socket is opened,
        the control connection is closed, and the end of the session is
        logged with the rule.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c = Control(_UDPHarness(self.policy("udp")), LOCAL, UDP_PEER)  # type: ignore[arg-type]
        answer = c.associate()
        self.assertEqual(answer, errorReply(NOT_ALLOWED))
        self.assertEqual(c.reactor.udpPorts, [])
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(c.protocol.session.details.get("rule"), "no udp")
        c.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEndLogged(observer, "no udp")

    def test_bindDenied(self) -> None:
        """
        BIND gets 0x02 at the request: nothing listens, the client is
        closed, and the end of the session is logged with the rule.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = BindHarness(policy=self.policy("bind"))
        self.assertEqual(h.bind(), errorReply(NOT_ALLOWED))
        self.assertEqual(h.reactor.ports, [])
        self.assertTrue(h.transport.disconnecting)
        h.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEndLogged(observer, "no bind")

    def test_otherCommandStillChecksDatagrams(self) -> None:
        """
        With BIND denied, UDP ASSOCIATE is allowed and each datagram is
        still decided: one to a denied network is dropped, another sent.
        """
        c = _UDPHarness(self.policy("bind")).associated()
        c.fromClient(udpDatagram("169.254.169.254", 53, b"x"))
        c.fromClient(udpDatagram("192.0.2.1", 53, b"y"))
        self.assertEqual(c.drops, {"denied": 1})
        self.assertEqual(
            [w for port in c.outboundPorts() for w in port.written],
            [(b"y", ("192.0.2.1", 53))],
        )
