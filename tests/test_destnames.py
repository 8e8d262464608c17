# -*- test-case-name: tests.test_destnames -*-
"""
Destination names inside the server, in memory: every dialect judges,
resolves and records one canonical form of a name, and refuses at once a
name that has none (issue 13, points 1 and 7).

The resolver is Twisted's own system resolver (L{GAIResolver}) with its
thread pool run in place and C{getaddrinfo} replaced by a table that, like
the real C{socket.getaddrinfo}, first encodes the name with Python's IDNA
codec: C{ｄｅｎｉｅｄ.test} finds C{denied.test}'s address, and a name the
codec refuses raises C{UnicodeError} in the "thread", which GAIResolver
never reports (the lookup never completes).  Nothing touches the network.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet._resolver import GAIResolver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.bind import BindOptions
from socksrelay.config import parseConfig
from socksrelay.resolve import resolveAddresses
from socksrelay.rules import Policy, Query, Rule
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.udp import UDPOptions
from tests.fakes import ProxyHarness, errorReply, greeting
from tests.test_bind import BindHarness
from tests.test_udp import LOCAL, PEER, Control
from tests.udpfakes import UDPMemoryReactor

NOT_ALLOWED = 0x02
HOST_UNREACHABLE = 0x04
NO_AUTH_SELECTED = b"\x05\x00"
SOCKS4_REJECTED = b"\x00\x5b" + b"\x00" * 6

#: The address every test name resolves to.
DENIED_ADDRESS = "192.0.2.66"
ALLOWED_ADDRESS = "192.0.2.77"

#: C{denied.test} as a client may spell it; a resolver looks every one of
#: them up as C{denied.test}.
CONFUSABLES = (
    "\uff44\uff45\uff4e\uff49\uff45\uff44.test",
    "\uff24\uff25\uff2e\uff29\uff25\uff24.test",
    "den\u00adied.test",
    "den\u200bied.test",
    "denied\u3002test",
    "DENIED.test.",
)

#: Names that IDNA refuses: an empty label, a label over 63 bytes, a long
#: IDN label, a name over 253 bytes.
BAD_NAMES = (
    b"a..b.test",
    b"a" * 64 + b".test",
    ("\u00fc" * 60 + ".test").encode("utf-8"),
    b".".join([b"a" * 63] * 4),
)

POLICY = Policy([Rule("deny", "no denied.test", hosts=("denied.test",)), Rule("allow", "rest")])


class _InlinePool:
    """
    A thread pool that runs each call at once, in the caller's thread.
    """

    def callInThreadWithCallback(self, onResult: Any, f: Any, *a: Any, **kw: Any) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class _InlineReactor:
    def callFromThread(self, f: Any, *a: Any, **kw: Any) -> None:
        f(*a, **kw)


class SystemResolver(GAIResolver):
    """
    Twisted's system resolver over a table: C{getaddrinfo} encodes the name
    with Python's IDNA codec first, as C{socket.getaddrinfo} does.

    @ivar asked: every name the resolver was given, as given.
    @ivar looked: every name (as encoded) that was looked up.
    @ivar lost: the names whose lookup raised in the "thread".
    """

    def __init__(self, table: dict[str, str] | None = None) -> None:
        self.table = {"denied.test": DENIED_ADDRESS, "allowed.test": ALLOWED_ADDRESS}
        self.table.update(table or {})
        self.asked: list[str] = []
        self.looked: list[str] = []
        self.lost: list[str] = []
        pool = _InlinePool()
        super().__init__(_InlineReactor(), lambda: pool, self._getaddrinfo)

    def _getaddrinfo(self, host: str, port: int, family: int, socktype: int) -> list[Any]:
        self.asked.append(host)
        try:
            encoded = host.encode("idna").decode("ascii").lower().rstrip(".")
        except UnicodeError:
            self.lost.append(host)
            raise
        self.looked.append(encoded)
        address = self.table.get(encoded)
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


def socks5Request(name: bytes, port: int = 80, command: int = 0x01) -> bytes:
    """A SOCKS5 request for the raw name bytes C{name} (ATYP 3)."""
    return bytes([5, command, 0, 3, len(name)]) + name + struct.pack("!H", port)


def socks4aRequest(name: bytes, port: int = 80) -> bytes:
    """A SOCKS4a CONNECT for the raw name bytes C{name}."""
    return b"\x04\x01" + struct.pack("!H", port) + b"\x00\x00\x00\x01" + b"\x00" + name + b"\x00"


def httpConnect(name: bytes, port: int = 80) -> bytes:
    """An HTTP CONNECT for the raw name bytes C{name}."""
    target = name + b":%d" % (port,)
    return b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"


#: Each dialect: how to ask for a name, and its "not allowed" and "host
#: unreachable" answers.
DIALECTS = {
    "socks5": (
        lambda name: greeting(0x00) + socks5Request(name),
        NO_AUTH_SELECTED + errorReply(NOT_ALLOWED),
        NO_AUTH_SELECTED + errorReply(HOST_UNREACHABLE),
    ),
    "socks4a": (socks4aRequest, SOCKS4_REJECTED, SOCKS4_REJECTED),
    "http": (httpConnect, b"HTTP/1.1 403 ", b"HTTP/1.1 400 "),
}


class ConnectTests(SynchronousTestCase):
    """
    CONNECT in every dialect judges the name in its canonical form, and
    answers a name that has none at once.
    """

    def harness(self, resolver: SystemResolver) -> ProxyHarness:
        return ProxyHarness(policy=POLICY, nameResolver=resolver)

    def test_confusablesDenied(self) -> None:
        """
        Fullwidth letters, U+00AD, U+200B, U+3002, case and a trailing dot
        do not walk around C{deny hosts = ["denied.test"]} in SOCKS5,
        SOCKS4a or HTTP CONNECT: each is denied, nothing is connected, the
        resolver is asked for C{denied.test} and the session records
        C{denied.test:80}.
        """
        for dialect, (ask, denied, _) in DIALECTS.items():
            for name in CONFUSABLES:
                resolver = SystemResolver()
                h = self.harness(resolver)
                h.send(ask(name.encode("utf-8")))
                answer = h.received()
                self.assertTrue(answer.startswith(denied), (dialect, name, answer))
                self.assertEqual(h.recorder.requests, [], (dialect, name))
                self.assertEqual(resolver.asked, ["denied.test"], (dialect, name))
                self.assertEqual(h.protocol.session.destination, "denied.test:80")
                self.assertEqual(h.protocol.session.details["rule"], "no denied.test")

    def test_uLabelResolvedAsALabel(self) -> None:
        """
        An allowed U-label is resolved, connected to and recorded as its
        A-label.
        """
        resolver = SystemResolver({"xn--bcher-kva.test": ALLOWED_ADDRESS})
        h = self.harness(resolver)
        h.send(greeting(0x00) + socks5Request("bücher.test".encode("utf-8")))
        self.assertEqual(h.recorder.requests, [("xn--bcher-kva.test", 80)])
        self.assertEqual(resolver.asked, ["xn--bcher-kva.test"])
        self.assertEqual(h.protocol.session.destination, "xn--bcher-kva.test:80")

    def test_badNamesAnsweredAtOnce(self) -> None:
        """
        A name IDNA refuses gets 0x04 (SOCKS5), CD 91 (SOCKS4a) or 400
        (HTTP) at once, without time passing, without a lookup and without
        a connection; nothing is left waiting.
        """
        for dialect, (ask, _, unreachable) in DIALECTS.items():
            for name in BAD_NAMES:
                resolver = SystemResolver()
                h = self.harness(resolver)
                h.send(ask(name))
                answer = h.received()
                self.assertTrue(answer.startswith(unreachable), (dialect, name, answer))
                self.assertTrue(h.transport.disconnecting, (dialect, name))
                self.assertEqual((resolver.looked, resolver.lost), ([], []))
                self.assertEqual(h.recorder.requests, [])
                self.assertEqual(h.reactor.getDelayedCalls(), [], (dialect, name))

    def test_forwardBadNameAnsweredAtOnce(self) -> None:
        """
        Plain HTTP forwarding: an absolute URI whose host IDNA refuses gets
        400 at once, without a lookup or a connection.
        """
        for name in (b"a..b.test", b"a" * 64 + b".test", b".".join([b"a" * 63] * 4)):
            resolver = SystemResolver()
            h = self.harness(resolver)
            h.send(b"GET http://" + name + b"/ HTTP/1.1\r\nHost: " + name + b"\r\n\r\n")
            answer = h.received()
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), (name, answer))
            self.assertEqual((resolver.looked, resolver.lost), ([], []))
            self.assertEqual(h.recorder.requests, [])

    def test_forwardCanonicalName(self) -> None:
        """
        Plain HTTP forwarding judges the URI's host in its canonical form
        (upper case, a trailing dot) and records that form.
        """
        resolver = SystemResolver()
        h = self.harness(resolver)
        h.send(b"GET http://DENIED.test./ HTTP/1.1\r\nHost: DENIED.test.\r\n\r\n")
        answer = h.received()
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertEqual(resolver.asked, ["denied.test"])
        self.assertEqual(h.protocol.session.destination, "denied.test:80")

    def test_originFormWithBadHostHeader(self) -> None:
        """
        A request that names its host only in a C{Host} header (IDNA refuses
        that host) is not forwarded: 400 at once, without a lookup.
        """
        resolver = SystemResolver()
        h = self.harness(resolver)
        h.send(b"GET / HTTP/1.1\r\nHost: a..b.test\r\n\r\n")
        self.assertTrue(h.received().startswith(b"HTTP/1.1 400 "))
        self.assertEqual((resolver.looked, resolver.lost), ([], []))


class BindTests(SynchronousTestCase):
    """
    BIND's expected peer is a destination name like any other.
    """

    def test_badExpectedHost(self) -> None:
        """
        A BIND whose expected peer is a name IDNA refuses gets 0x04 at once,
        with nothing listening and no lookup.
        """
        for name in BAD_NAMES:
            resolver = SystemResolver()
            h = BindHarness(bindOptions=BindOptions(), nameResolver=resolver)
            h.send(greeting(0x00) + socks5Request(name, 0, command=0x02))
            self.assertEqual(h.received(), NO_AUTH_SELECTED + errorReply(HOST_UNREACHABLE))
            self.assertEqual(h.reactor.ports, [])
            self.assertEqual((resolver.looked, resolver.lost), ([], []))

    def test_expectedHostCanonical(self) -> None:
        """
        A BIND's expected peer written in fullwidth letters is resolved and
        recorded as C{denied.test}.
        """
        resolver = SystemResolver()
        h = BindHarness(bindOptions=BindOptions(), nameResolver=resolver)
        h.send(greeting(0x00) + socks5Request(CONFUSABLES[0].encode("utf-8"), 0, command=0x02))
        self.assertEqual(h.received()[:4], b"\x05\x00\x05\x00")
        self.assertEqual(resolver.asked, ["denied.test"])
        self.assertEqual(
            h.protocol.session.details["expected"], f"denied.test({DENIED_ADDRESS})"
        )


class _UDPHarness:
    """
    A factory with UDP ASSOCIATE, L{POLICY} and a L{SystemResolver}, on a
    L{UDPMemoryReactor}, for L{tests.test_udp.Control}.
    """

    def __init__(self) -> None:
        self.reactor = UDPMemoryReactor()
        self.resolver = SystemResolver()
        self.factory = SOCKS5ServerFactory(
            reactor=self.reactor,
            nameResolver=self.resolver,
            udpOptions=UDPOptions(),
            policy=POLICY,
        )

    def control(self) -> Control:
        return Control(self, LOCAL, PEER)  # type: ignore[arg-type]


def udpDatagram(name: bytes, port: int, payload: bytes) -> bytes:
    """A client datagram to the raw name bytes C{name}."""
    return b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port) + payload


class UDPTests(SynchronousTestCase):
    """
    UDP ASSOCIATE: the request's host and every datagram's destination.
    """

    def sent(self, c: Control) -> list[tuple[bytes, Any]]:
        return [w for port in c.outboundPorts() for w in port.written]

    def test_associateBadHost(self) -> None:
        """
        A UDP ASSOCIATE whose DST.ADDR is a name IDNA refuses gets 0x04 at
        once, and no relay socket is opened.
        """
        for name in BAD_NAMES:
            h = _UDPHarness()
            c = h.control()
            c.protocol.dataReceived(greeting(0x00) + socks5Request(name, 0, command=0x03))
            self.assertEqual(
                c.transport.value(), NO_AUTH_SELECTED + errorReply(HOST_UNREACHABLE)
            )
            self.assertEqual(h.reactor.udpPorts, [])

    def test_confusableDatagramDenied(self) -> None:
        """
        A datagram to C{denied.test} in any confusable spelling is dropped
        as denied; one to an allowed name is sent.
        """
        h = _UDPHarness()
        c = h.control()
        self.assertEqual(c.associate()[1], 0x00)
        for name in CONFUSABLES:
            c.fromClient(udpDatagram(name.encode("utf-8"), 53, b"secret"))
        self.assertEqual(c.drops, {"denied": len(CONFUSABLES)})
        self.assertEqual(h.resolver.asked, ["denied.test"])
        c.fromClient(udpDatagram(b"allowed.test", 53, b"hello"))
        self.assertEqual(self.sent(c), [(b"hello", (ALLOWED_ADDRESS, 53))])

    def test_badNameDatagramDropped(self) -> None:
        """
        A datagram to a name IDNA refuses is dropped and counted (as
        malformed) at once, without a lookup.
        """
        h = _UDPHarness()
        c = h.control()
        self.assertEqual(c.associate()[1], 0x00)
        for name in BAD_NAMES:
            c.fromClient(udpDatagram(name, 53, b"x"))
        self.assertEqual(c.drops, {"malformed": len(BAD_NAMES)})
        self.assertEqual((h.resolver.looked, h.resolver.lost), ([], []))
        self.assertEqual(self.sent(c), [])


class RuleTests(SynchronousTestCase):
    """
    A rule's C{hosts} are canonicalised the same way when the configuration
    is loaded.
    """

    def query(self, host: str) -> Query:
        return Query("127.0.0.1", "socks5", "connect", host, 80, (DENIED_ADDRESS,))

    def test_configHostsCanonical(self) -> None:
        """
        C{deny hosts = ["ＤＥＮＩＥＤ.test", "bücher.test", ".ＣＯＲＰ.test"]}
        denies C{denied.test}, C{xn--bcher-kva.test} and C{db.corp.test}.
        """
        config = parseConfig(
            '[[rule]]\naction = "deny"\n'
            'hosts = ["\uff24\uff25\uff2e\uff29\uff25\uff24.test", "bücher.test", ".\uff23\uff2f\uff32\uff30.test"]\n'
            '[[rule]]\naction = "allow"\n'
        )
        policy = config.policy(authRequired=False)
        self.assertEqual(config.rules[0].hosts, ("denied.test", "xn--bcher-kva.test", ".corp.test"))
        for host in ("denied.test", "xn--bcher-kva.test", "db.corp.test", "corp.test"):
            self.assertFalse(policy.decide(self.query(host)).allowed, host)
        self.assertTrue(policy.decide(self.query("allowed.test")).allowed)

    def test_queryHostCanonical(self) -> None:
        """
        A query built with the name as a client spelled it (not through a
        codec) is still judged in its canonical form.
        """
        for name in CONFUSABLES:
            self.assertFalse(POLICY.decide(self.query(name)).allowed, name)


class ResolveAddressesTests(SynchronousTestCase):
    """
    L{resolveAddresses} never hands a resolver a name it cannot take.
    """

    def test_badNameNotLookedUp(self) -> None:
        """
        A name with no canonical form fires with no addresses at once; the
        resolver (whose thread would lose the UnicodeError) is not asked.
        """
        for name in BAD_NAMES:
            resolver = SystemResolver()
            d = resolveAddresses(resolver, name.decode("utf-8"))
            self.assertEqual(self.successResultOf(d), ())
            self.assertEqual((resolver.looked, resolver.lost), ([], []))

    def test_nameLookedUpCanonical(self) -> None:
        """
        A name is looked up in its canonical form.
        """
        resolver = SystemResolver()
        d = resolveAddresses(resolver, CONFUSABLES[0])
        self.assertEqual(self.successResultOf(d), (DENIED_ADDRESS,))
        self.assertEqual(resolver.asked, ["denied.test"])
