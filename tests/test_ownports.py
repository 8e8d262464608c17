# -*- test-case-name: tests.test_ownports -*-
"""
Tests for L{socksrelay.ownports}: the proxy's own listening addresses
(L{OwnListeners}, L{isLocalAddress}) and the server's refusal to relay to
them, in SOCKS5, SOCKS4, HTTP CONNECT and plain-HTTP forwarding, with and
without a policy.  Everything runs in memory (L{isLocalAddress} binds a UDP
socket on loopback addresses and test networks only, and sends nothing).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import ownports
from socksrelay.ownports import OWN_LISTENER_RULE, OwnListeners, isLocalAddress
from socksrelay.rules import Decision, Policy, Rule
from tests.fakes import ProxyHarness, errorReply, greeting, request
from tests.test_multiprotocol import REJECTED, connectHead, socks4
from tests.test_policy import TableResolver

NOT_ALLOWED = 0x02

#: A policy that allows everything (so that only the loop check refuses).
ALLOW_ALL = Policy([Rule("allow", "everything")])


class FakeLocal:
    """
    An C{isLocal} for L{OwnListeners}: the addresses in C{local} are this
    host's; records every address asked about.
    """

    def __init__(self, *local: str) -> None:
        self.local = set(local)
        self.asked: list[str] = []

    def __call__(self, address: str) -> bool:
        self.asked.append(address)
        return address in self.local


def tcp(host: str, port: int) -> IPv4Address | IPv6Address:
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


class IsLocalAddressTests(SynchronousTestCase):
    """
    L{isLocalAddress} tells this host's addresses from others.
    """

    def test_loopbackAndWildcard(self) -> None:
        """
        Every loopback address and the wildcards are local.
        """
        for address in ("127.0.0.1", "127.0.0.2", "127.255.255.254", "0.0.0.0", "::"):
            self.assertTrue(isLocalAddress(address), address)

    def test_ipv6Loopback(self) -> None:
        """
        ::1 is local.
        """
        self.assertTrue(isLocalAddress("::1"))

    def test_otherHosts(self) -> None:
        """
        Addresses of the documentation networks, which no interface here
        has, are not local.
        """
        for address in ("192.0.2.1", "198.51.100.7", "2001:db8::1"):
            self.assertFalse(isLocalAddress(address), address)

    def test_interfaceAddress(self) -> None:
        """
        An address of one of this host's interfaces (the one a UDP socket
        would send from towards a test network, if there is a route) is
        local.
        """
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
        finally:
            probe.close()
        self.assertTrue(isLocalAddress(address), address)


class OwnListenersTests(SynchronousTestCase):
    """
    L{OwnListeners} knows which destinations are the proxy's own listeners.
    """

    def test_nothingKnown(self) -> None:
        """
        Before it learns a port, nothing is its own, and nothing is asked.
        """
        local = FakeLocal("127.0.0.1")
        own = OwnListeners(local)
        self.assertFalse(own.isOwn("127.0.0.1", 1080))
        self.assertIsNone(own.decide(1080, ["127.0.0.1"]))
        self.assertEqual(local.asked, [])

    def test_specificAddress(self) -> None:
        """
        A listener bound to one address is reached at that address (also
        written as IPv4-mapped IPv6) and at the wildcard, on its port only;
        not at another loopback address, where it does not answer.
        """
        own = OwnListeners(FakeLocal("127.0.0.1", "127.0.0.2"))
        own.add(tcp("127.0.0.1", 1080))
        self.assertTrue(own.isOwn("127.0.0.1", 1080))
        self.assertTrue(own.isOwn("::ffff:127.0.0.1", 1080))
        self.assertTrue(own.isOwn("0.0.0.0", 1080))
        self.assertTrue(own.isOwn("::", 1080))
        self.assertFalse(own.isOwn("127.0.0.2", 1080))
        self.assertFalse(own.isOwn("127.0.0.1", 1081))
        self.assertFalse(own.isOwn("192.0.2.1", 1080))

    def test_ipv4Wildcard(self) -> None:
        """
        A listener on 0.0.0.0 is reached at every IPv4 address of this
        host, not at other hosts' addresses nor over IPv6.
        """
        local = FakeLocal("127.0.0.1", "127.0.0.9", "10.1.2.3", "::1")
        own = OwnListeners(local)
        own.add(tcp("0.0.0.0", 1080))
        for address in ("127.0.0.1", "127.0.0.9", "10.1.2.3", "0.0.0.0"):
            self.assertTrue(own.isOwn(address, 1080), address)
        for address in ("10.1.2.4", "192.0.2.1", "::1"):
            self.assertFalse(own.isOwn(address, 1080), address)

    def test_ipv6Wildcard(self) -> None:
        """
        A listener on :: is reached at every address of this host, IPv6 and
        IPv4.
        """
        own = OwnListeners(FakeLocal("::1", "2001:db8::5", "127.0.0.3"))
        own.add(tcp("::", 1080))
        for address in ("::1", "2001:db8::5", "127.0.0.3", "::ffff:127.0.0.3"):
            self.assertTrue(own.isOwn(address, 1080), address)
        self.assertFalse(own.isOwn("2001:db8::6", 1080))

    def test_notAnIPAddress(self) -> None:
        """
        UNIX addresses and port 0 are not learned; a destination that is
        not an IP address is not its own.
        """
        own = OwnListeners(FakeLocal("127.0.0.1"))
        own.add(UNIXAddress("/run/socks.sock"))
        own.add(tcp("127.0.0.1", 0))
        self.assertEqual(own._hosts, {})
        own.add(tcp("127.0.0.1", 1080))
        self.assertFalse(own.isOwn("localhost", 1080))

    def test_addTransport(self) -> None:
        """
        From an accepted connection it learns the local address and, when
        the transport names its listening port, that port's (wildcard)
        address.
        """
        own = OwnListeners(FakeLocal("127.0.0.1", "127.0.0.5"))
        transport = StringTransport(hostAddress=tcp("127.0.0.1", 1080))
        own.addTransport(transport)
        self.assertTrue(own.isOwn("127.0.0.1", 1080))
        self.assertFalse(own.isOwn("127.0.0.5", 1080))

        class ListeningPort:
            def getHost(self) -> Any:
                return tcp("0.0.0.0", 1080)

        transport.server = ListeningPort()  # type: ignore[attr-defined]
        own.addTransport(transport)
        self.assertTrue(own.isOwn("127.0.0.5", 1080))

    def test_decide(self) -> None:
        """
        C{decide} denies, naming the reason, when any of the addresses is
        its own; otherwise it has no opinion.
        """
        own = OwnListeners(FakeLocal())
        own.add(tcp("127.0.0.1", 1080))
        self.assertEqual(
            own.decide(1080, ["192.0.2.1", "127.0.0.1"]), Decision(False, OWN_LISTENER_RULE)
        )
        self.assertIsNone(own.decide(1080, ["192.0.2.1"]))
        self.assertIsNone(own.decide(80, ["127.0.0.1"]))
        self.assertIn("relay to itself", OWN_LISTENER_RULE)

    def test_localAnswersCached(self) -> None:
        """
        Whether an address is local is asked once per address, and the
        cache holds at most C{cacheSize} answers (the oldest go first).
        """
        local = FakeLocal("10.0.0.1")
        own = OwnListeners(local, cacheSize=2)
        own.add(tcp("0.0.0.0", 1080))
        for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3"):
            own.isOwn(address, 1080)
        self.assertEqual(local.asked, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        own.isOwn("10.0.0.2", 1080)
        self.assertEqual(local.asked[-1], "10.0.0.2")
        self.assertEqual(len(own._local), 2)

    def test_bounded(self) -> None:
        """
        It remembers at most C{MAX_ADDRESSES} addresses per port and
        C{MAX_PORTS} ports.
        """
        self.patch(ownports, "MAX_ADDRESSES", 2)
        self.patch(ownports, "MAX_PORTS", 1)
        own = OwnListeners(FakeLocal())
        for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            own.add(tcp(host, 1080))
        own.add(tcp("127.0.0.1", 1081))
        self.assertEqual(list(own._hosts), [1080])
        self.assertEqual(len(own._hosts[1080]), 2)


class ServerLoopTests(SynchronousTestCase):
    """
    The server refuses a destination that is one of its own listeners (the
    harness's client connection arrived on 127.0.0.1 port 1080) with "not
    allowed" and a reason naming it, before any outbound attempt, in every
    protocol, whatever the policy says.
    """

    def harness(self, **kw: Any) -> ProxyHarness:
        kw.setdefault("policy", ALLOW_ALL)
        return ProxyHarness(**kw)

    def assertLoopRefused(self, h: ProxyHarness, reply: bytes) -> None:
        self.assertEqual(h.received(), reply)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.details.get("rule"), OWN_LISTENER_RULE)
        self.assertEqual(h.protocol.session.reason, f"denied by {OWN_LISTENER_RULE}")
        if h.recorder is not None:
            self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.reactor.tcpClients, [])

    def test_socks5(self) -> None:
        """
        A SOCKS5 CONNECT to the proxy's own address gets 0x02, even though
        the policy allows everything.
        """
        h = self.harness()
        h.send(greeting(0x00) + request("127.0.0.1", 1080))
        self.assertLoopRefused(h, b"\x05\x00" + errorReply(NOT_ALLOWED))

    def test_socks5OtherPortAllowed(self) -> None:
        """
        Another port on the same address is connected to as usual.
        """
        h = self.harness()
        h.send(greeting(0x00) + request("127.0.0.1", 1081))
        self.assertEqual(h.recorder.requests, [("127.0.0.1", 1081)])

    def test_socks5NameResolvingToItself(self) -> None:
        """
        A name that resolves to the proxy's own address is refused too.
        """
        resolver = TableResolver({"loop.test": ("127.0.0.1",)})
        h = self.harness(nameResolver=resolver)
        h.send(greeting(0x00) + request("loop.test", 1080))
        self.assertLoopRefused(h, b"\x05\x00" + errorReply(NOT_ALLOWED))

    def test_socks5WithoutPolicy(self) -> None:
        """
        With no policy (an embedded factory), an address given as such is
        still checked for a loop.
        """
        h = self.harness(policy=None)
        h.send(greeting(0x00) + request("::ffff:127.0.0.1", 1080))
        self.assertLoopRefused(h, b"\x05\x00" + errorReply(NOT_ALLOWED))

    def test_withoutPolicyOthersUnchecked(self) -> None:
        """
        With no policy, other destinations are connected to as asked,
        names unresolved, and no rule is recorded.
        """
        h = self.harness(policy=None)
        h.send(greeting(0x00) + request("example.test", 1080))
        self.assertEqual(h.recorder.requests, [("example.test", 1080)])
        self.assertNotIn("rule", h.protocol.session.details)

    def test_socks4(self) -> None:
        """
        A SOCKS4 CONNECT to the proxy's own address is rejected (91).
        """
        h = self.harness()
        h.send(socks4("127.0.0.1", 1080))
        self.assertLoopRefused(h, REJECTED)

    def test_httpConnect(self) -> None:
        """
        An HTTP CONNECT to the proxy's own address gets 403.
        """
        h = self.harness()
        h.send(connectHead(b"127.0.0.1:1080"))
        self.assertTrue(h.received().startswith(b"HTTP/1.1 403 "))
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.details.get("rule"), OWN_LISTENER_RULE)

    def test_httpForwarding(self) -> None:
        """
        A plain-HTTP request forwarded to the proxy itself gets 403 and
        reaches nothing, with and without a policy.
        """
        for policy in (ALLOW_ALL, None):
            h = self.harness(policy=policy)
            h.send(b"GET http://127.0.0.1:1080/ HTTP/1.1\r\nHost: 127.0.0.1:1080\r\n\r\n")
            self.assertTrue(h.received().startswith(b"HTTP/1.1 403 "), policy)
            self.assertEqual(h.recorder.requests, [])
            self.assertEqual(h.protocol.session.details.get("rule"), OWN_LISTENER_RULE)
