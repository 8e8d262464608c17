# -*- test-case-name: tests.test_multiprotocol -*-
"""
Tests for the listener's protocols other than SOCKS5 in
L{socksrelay.server}: telling SOCKS5, SOCKS4/4a and HTTP apart by the first
byte, SOCKS4 CONNECT and BIND, HTTP CONNECT tunnels with Basic proxy
authentication, plain-HTTP forwarding inside the listener, and the
C{--protocols} option of L{socksrelay.tap}.

Everything runs on L{RecordingTransport}s, a L{MemoryReactorClock} and
recorded outbound endpoints; there is no network.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from twisted.cred.checkers import (
    AllowAnonymousAccess,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.auth import SOCKSRealm, SOCKSUser
from socksrelay.bind import BindOptions
from socksrelay.rules import Policy, Rule
from socksrelay.server import SOCKS5ServerFactory
from tests.fakes import (
    LISTEN_ADDRESS,
    BrokenChecker,
    CheckerBroken,
    Collector,
    PendingChecker,
    ProxyHarness,
    RecordingTransport,
    UpperEcho,
    greeting,
    request,
)
from tests.test_dialects import parseHTTPResponse

#: The SOCKS4 grant that carries L{tests.fakes.OUTBOUND_LOCAL} (10.0.0.5
#: port 51000): VN 0, CD 90, DSTPORT, then DSTIP.
GRANTED_OUTBOUND = b"\x00\x5a\xc7\x38\x0a\x00\x00\x05"
#: The whole SOCKS4 refusal: VN 0, CD 91, a zero port and address.
REJECTED = b"\x00\x5b" + b"\x00" * 6
#: The answer to a CONNECT whose tunnel is open.
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

#: The port BIND listens on in these tests (a one-port range).
BIND_PORT = 40000
#: The host expected to connect to a BIND port.
BIND_PEER = IPv4Address("TCP", "192.0.2.7", 2020)


def socks4(host: str, port: int, userid: bytes = b"", command: int = 0x01) -> bytes:
    """
    Return a SOCKS4 request for an IPv4 C{host}, or a SOCKS4a one (DSTIP
    0.0.0.1, the name after the USERID) for any other C{host}; encoded here
    independently of L{socksrelay.wire4}.
    """
    head = bytes([0x04, command]) + struct.pack("!H", port)
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return head + bytes(int(p) for p in parts) + userid + b"\x00"
    return (
        head + b"\x00\x00\x00\x01" + userid + b"\x00" + host.encode("ascii") + b"\x00"
    )


def socks4Reply(code: int, host: str, port: int) -> bytes:
    """
    Return a SOCKS4 reply: VN 0, CD C{code}, DSTPORT, DSTIP.
    """
    return (
        bytes([0x00, code])
        + struct.pack("!H", port)
        + bytes(int(p) for p in host.split("."))
    )


def basic(credentials: bytes) -> bytes:
    """
    Return a C{Proxy-Authorization} header line carrying C{credentials}
    (C{user:password}) with the Basic scheme.
    """
    return b"Proxy-Authorization: Basic " + base64.b64encode(credentials) + b"\r\n"


def connectHead(target: bytes, headers: bytes = b"") -> bytes:
    """
    Return the head of an HTTP CONNECT request for C{target}.
    """
    return (
        b"CONNECT "
        + target
        + b" HTTP/1.1\r\nHost: "
        + target
        + b"\r\n"
        + headers
        + b"\r\n"
    )


def passwordPortal() -> Portal:
    """
    Return a portal that accepts alice with password C{pw} only.
    """
    return Portal(SOCKSRealm(), [InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")])


def anonymousPortal() -> Portal:
    """
    Return a portal that lets anonymous clients in.
    """
    return Portal(SOCKSRealm(), [AllowAnonymousAccess()])


def sessionEvents(observer: EventLoggingObserver) -> list[dict]:
    """
    Return the end-of-session events among those C{observer} saw.
    """
    return [
        e for e in observer if str(e.get("log_format", "")).startswith("session ended")
    ]


def statusOf(data: bytes) -> bytes:
    """
    Return the status line of the HTTP response C{data}.
    """
    return data.split(b"\r\n", 1)[0]


class DetectionTests(SynchronousTestCase):
    """
    The first byte of a connection picks its protocol.
    """

    def test_socks5(self) -> None:
        """
        A first byte 0x05 is SOCKS5: the greeting is answered with a method
        selection.
        """
        h = ProxyHarness()
        h.send(greeting(0x00))
        self.assertEqual(h.received(), b"\x05\x00")
        self.assertEqual(h.protocol.session.protocol, "socks5")

    def test_socks4(self) -> None:
        """
        A first byte 0x04 is SOCKS4: the request is carried out.
        """
        h = ProxyHarness()
        h.send(socks4("192.0.2.1", 80))
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])
        self.assertEqual(h.protocol.session.protocol, "socks4")

    def test_socks4a(self) -> None:
        """
        A SOCKS4a request is recorded as protocol C{socks4a}.
        """
        h = ProxyHarness()
        h.send(socks4("example.com", 443))
        self.assertEqual(h.protocol.session.protocol, "socks4a")

    def test_httpConnect(self) -> None:
        """
        A first byte C{C} is HTTP: CONNECT opens a tunnel.
        """
        h = ProxyHarness()
        h.send(connectHead(b"example.com:443"))
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        self.assertEqual(h.protocol.session.protocol, "http")
        self.assertEqual(h.protocol.session.command, "CONNECT")

    def test_httpGet(self) -> None:
        """
        A first byte C{G} is HTTP: GET is forwarded.
        """
        h = ProxyHarness()
        h.send(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        self.assertEqual(h.recorder.requests, [("example.com", 80)])
        self.assertEqual(h.protocol.session.protocol, "http")
        self.assertEqual(h.protocol.session.command, "HTTP")

    def test_httpPost(self) -> None:
        """
        A first byte C{P} is HTTP: POST is forwarded.
        """
        h = ProxyHarness()
        h.send(b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(h.recorder.requests, [("example.com", 80)])
        self.assertEqual(h.protocol.session.protocol, "http")

    def test_firstByteAlone(self) -> None:
        """
        The protocol is told from the first byte even when it arrives alone.
        """
        h = ProxyHarness()
        h.sendBytewise(socks4("example.com", 443, b"bob"))
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        h = ProxyHarness()
        h.sendBytewise(connectHead(b"example.com:443"))
        self.assertEqual(h.recorder.requests, [("example.com", 443)])

    def assertUnknown(self, data: bytes, first: int) -> None:
        """
        A connection starting with C{data} is closed without a reply and
        without a protocol, for an unknown first byte C{first}.
        """
        h = ProxyHarness()
        h.send(data)
        self.assertEqual(h.received(), b"")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])
        self.assertIsNone(h.protocol.session.protocol)
        self.assertEqual(
            h.protocol.session.reason, f"unknown protocol: first byte 0x{first:02x}"
        )

    def test_tls(self) -> None:
        """
        A TLS ClientHello (0x16) is closed without a reply.
        """
        self.assertUnknown(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0x16)

    def test_zero(self) -> None:
        """
        A first byte 0x00 is closed without a reply.
        """
        self.assertUnknown(b"\x00\x01\x02", 0x00)

    def test_lowerCaseMethod(self) -> None:
        """
        HTTP methods are upper case: C{get ...} is closed without a reply.
        """
        self.assertUnknown(b"get http://example.com/ HTTP/1.1\r\n\r\n", 0x67)

    def test_nothingAfterUnknown(self) -> None:
        """
        Bytes after an unknown first byte are ignored.
        """
        h = ProxyHarness()
        h.send(b"\x16")
        h.send(greeting(0x00))
        self.assertEqual(h.received(), b"")

    def assertDisabled(self, protocols: list[str], data: bytes, name: str) -> None:
        """
        With only C{protocols} served, a connection starting with C{data} is
        closed without a reply, the reason naming protocol C{name}.
        """
        h = ProxyHarness(protocols=protocols)
        h.send(data)
        self.assertEqual(h.received(), b"")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.reason, f"protocol {name} is not enabled")

    def test_socks4Disabled(self) -> None:
        """
        With only SOCKS5 served, a SOCKS4 client is closed without a reply.
        """
        self.assertDisabled(["socks5"], socks4("192.0.2.1", 80), "socks4")

    def test_httpDisabled(self) -> None:
        """
        With only SOCKS5 served, an HTTP client is closed without a reply.
        """
        self.assertDisabled(["socks5"], connectHead(b"example.com:443"), "http")
        self.assertDisabled(
            ["socks5", "socks4"], b"GET http://example.com/ HTTP/1.1\r\n\r\n", "http"
        )

    def test_socks5Disabled(self) -> None:
        """
        With only HTTP served, a SOCKS5 client is closed without a reply.
        """
        self.assertDisabled(["http"], greeting(0x00), "socks5")

    def test_enabledProtocolServed(self) -> None:
        """
        With only SOCKS5 served, SOCKS5 still works.
        """
        h = ProxyHarness(protocols=["socks5"])
        h.send(greeting(0x00) + request("192.0.2.1", 80))
        self.assertEqual(h.received(), b"\x05\x00")
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])

    def test_sessionLogNamesProtocol(self) -> None:
        """
        The end-of-session event names the protocol.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for data, name in [
            (socks4("192.0.2.1", 80), "socks4"),
            (socks4("example.com", 80), "socks4a"),
            (connectHead(b"example.com:443"), "http"),
        ]:
            h = ProxyHarness()
            h.send(data)
            h.recorder.last.fail(error.ConnectionRefusedError())
            h.clientLost()
            event = sessionEvents(observer)[-1]
            self.assertEqual(event["protocol"], name)
            self.assertIn(f"protocol={name} ", formatEvent(event))


class FactoryProtocolsTests(SynchronousTestCase):
    """
    L{SOCKS5ServerFactory}'s C{protocols} argument.
    """

    def test_default(self) -> None:
        """
        By default all three protocols are served.
        """
        factory = SOCKS5ServerFactory(reactor=MemoryReactorClock())
        self.assertEqual(factory.protocols, frozenset({"socks5", "socks4", "http"}))

    def test_subset(self) -> None:
        """
        A subset is kept as given.
        """
        factory = SOCKS5ServerFactory(
            reactor=MemoryReactorClock(), protocols=("http", "socks4")
        )
        self.assertEqual(factory.protocols, frozenset({"http", "socks4"}))

    def test_unknownName(self) -> None:
        """
        An unknown protocol name is a L{ValueError} naming it (C{socks4a} is
        not a name of its own: C{socks4} covers it).
        """
        for name in ("gopher", "socks4a", "SOCKS5"):
            e = self.assertRaises(
                ValueError,
                SOCKS5ServerFactory,
                reactor=MemoryReactorClock(),
                protocols=["socks5", name],
            )
            self.assertIn(name, str(e))


class SOCKS4ConnectTests(SynchronousTestCase):
    """
    SOCKS4 and SOCKS4a CONNECT.
    """

    def test_grantedAfterConnect(self) -> None:
        """
        CD 90 is sent only once the outbound connection exists, carrying the
        port and IPv4 address of its local end; the connection stays open.
        """
        h = ProxyHarness()
        h.send(socks4("192.0.2.1", 80, b"bob"))
        self.assertEqual(h.received(), b"")
        h.recorder.last.succeed()
        self.assertEqual(h.received(), GRANTED_OUTBOUND)
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.replyText, "90")
        self.assertEqual(h.protocol.session.command, "CONNECT")
        self.assertEqual(h.protocol.session.destination, "192.0.2.1:80")

    def test_relay(self) -> None:
        """
        Bytes sent with the request reach the destination once connected,
        and the relay then carries data both ways.
        """
        h = ProxyHarness()
        h.send(socks4("192.0.2.1", 80) + b"early")
        destination = UpperEcho()
        pump = h.recorder.last.succeedInMemory(destination)
        pump.flush()
        self.assertEqual(destination.received, b"early")
        self.assertEqual(h.received(), GRANTED_OUTBOUND + b"EARLY")
        h.send(b"more")
        pump.flush()
        self.assertEqual(h.received(), b"MORE")

    def test_socks4aName(self) -> None:
        """
        A SOCKS4a name is passed to the endpoint as the name, unresolved.
        """
        h = ProxyHarness()
        h.send(socks4("example.com", 443))
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        self.assertEqual(h.protocol.session.destination, "example.com:443")

    def test_socks4aNameSplit(self) -> None:
        """
        A SOCKS4a request whose name arrives in a later read is carried out
        once the name's NUL arrives.
        """
        h = ProxyHarness()
        data = socks4("example.com", 443, b"bob")
        h.send(data[:-6])
        self.assertEqual(h.recorder.requests, [])
        h.send(data[-6:])
        self.assertEqual(h.recorder.requests, [("example.com", 443)])

    def test_userid(self) -> None:
        """
        The USERID is recorded in the session's details.
        """
        h = ProxyHarness()
        h.send(socks4("192.0.2.1", 80, b"bob"))
        self.assertEqual(h.protocol.session.details["userid"], "bob")

    def test_noUserid(self) -> None:
        """
        An empty USERID is not recorded.
        """
        h = ProxyHarness()
        h.send(socks4("192.0.2.1", 80))
        self.assertNotIn("userid", h.protocol.session.details)

    def assertRejected(
        self, exception: BaseException, host: str = "192.0.2.1"
    ) -> ProxyHarness:
        """
        A CONNECT whose outbound connection fails with C{exception} gets CD
        91 and a close.
        """
        h = ProxyHarness()
        h.send(socks4(host, 80))
        h.recorder.last.fail(exception)
        self.assertEqual(h.received(), REJECTED)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.replyText, "91")
        return h

    def test_refused(self) -> None:
        """
        A refused connection gets CD 91 and a close.
        """
        h = self.assertRejected(error.ConnectionRefusedError())
        self.assertEqual(h.protocol.session.reason, "connection refused")

    def test_dnsFailure(self) -> None:
        """
        A SOCKS4a name that does not resolve gets CD 91 and a close.
        """
        h = self.assertRejected(error.DNSLookupError("example.com"), "example.com")
        self.assertIn("name not resolved", h.protocol.session.reason)

    def test_timeout(self) -> None:
        """
        A connection still pending after the connect timeout is cancelled
        and gets CD 91.
        """
        h = ProxyHarness(connectTimeout=10)
        h.send(socks4("192.0.2.1", 80))
        h.reactor.advance(10.1)
        self.assertTrue(h.recorder.last.cancelled)
        self.assertEqual(h.received(), REJECTED)
        self.assertTrue(h.transport.disconnecting)

    def test_unknownCommand(self) -> None:
        """
        A SOCKS4 command other than CONNECT and BIND gets CD 91 and a close.
        """
        h = ProxyHarness()
        h.send(socks4("192.0.2.1", 80, command=0x03))
        self.assertEqual(h.received(), REJECTED)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])

    def test_passwordRequired(self) -> None:
        """
        SOCKS4 carries no password: a server that requires one refuses it
        with CD 91, the reason naming the password, and connects nowhere.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(socks4("192.0.2.1", 80, b"alice"))
        self.assertEqual(h.received(), REJECTED)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])
        self.assertIn("password", h.protocol.session.reason)
        self.assertEqual(h.protocol.session.details["userid"], "alice")

    def test_anonymousAllowed(self) -> None:
        """
        A server whose portal lets anonymous clients in serves SOCKS4: the
        anonymous avatar is kept and the request carried out.
        """
        h = ProxyHarness(portal=anonymousPortal())
        h.send(socks4("192.0.2.1", 80))
        self.assertIsInstance(h.protocol.avatar, SOCKSUser)
        self.assertIsNone(h.protocol.avatar.username)
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])
        h.recorder.last.succeed()
        self.assertEqual(h.received(), GRANTED_OUTBOUND)

    def test_anonymousAndPassword(self) -> None:
        """
        A portal with both an anonymous and a password checker serves SOCKS4
        anonymously.
        """
        portal = Portal(
            SOCKSRealm(),
            [AllowAnonymousAccess(), InMemoryUsernamePasswordDatabaseDontUse(a=b"b")],
        )
        h = ProxyHarness(portal=portal)
        h.send(socks4("192.0.2.1", 80))
        self.assertEqual(h.recorder.requests, [("192.0.2.1", 80)])

    def test_policyDenies(self) -> None:
        """
        A destination the policy refuses gets CD 91; a SOCKS4a client is
        judged as protocol C{socks4}.
        """
        policy = Policy(
            [
                Rule("deny", "no socks4", protocols=frozenset({"socks4"})),
                Rule("allow", "rest"),
            ]
        )
        h = ProxyHarness(policy=policy)
        h.send(socks4("example.com", 80))
        self.assertEqual(h.received(), REJECTED)
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.details["rule"], "no socks4")


class SOCKS4BindTests(SynchronousTestCase):
    """
    SOCKS4 BIND: the SOCKS5 flow with SOCKS4 replies.
    """

    def bindHarness(self, **kwargs: Any) -> ProxyHarness:
        """
        Return a harness whose BIND listens on L{BIND_PORT}.
        """
        kwargs.setdefault("bindOptions", BindOptions(ports=(BIND_PORT, BIND_PORT)))
        return ProxyHarness(**kwargs)

    def peerConnects(self, h: ProxyHarness, peer: Any = BIND_PEER) -> tuple[Any, Any]:
        """
        Connect C{peer} through the factory that BIND's listen registered.

        @return: the protocol built (or C{None}) and its transport.
        """
        port, factory, _backlog, interface = h.reactor.tcpServers[-1]
        protocol = factory.buildProtocol(peer)
        if protocol is None:
            return None, None
        transport = RecordingTransport(
            hostAddress=IPv4Address("TCP", interface, port), peerAddress=peer
        )
        protocol.makeConnection(transport)
        return protocol, transport

    def test_firstReply(self) -> None:
        """
        BIND listens on the local address the client came in on, and the
        first reply (CD 90) carries that address and the port.
        """
        h = self.bindHarness()
        h.send(socks4("192.0.2.7", 0, command=0x02))
        [(port, _factory, _backlog, interface)] = h.reactor.tcpServers
        self.assertEqual((port, interface), (BIND_PORT, "127.0.0.1"))
        self.assertEqual(h.received(), socks4Reply(90, "127.0.0.1", BIND_PORT))
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.command, "BIND")

    def test_secondReplyAndRelay(self) -> None:
        """
        When the expected peer connects, the second reply (CD 90) carries its
        address and port, and the relay starts.
        """
        h = self.bindHarness()
        h.send(socks4("192.0.2.7", 0, command=0x02))
        h.received()
        inbound, inboundTransport = self.peerConnects(h)
        self.assertIsNotNone(inbound)
        self.assertEqual(h.received(), socks4Reply(90, "192.0.2.7", 2020))
        h.send(b"to peer")
        self.assertEqual(inboundTransport.value(), b"to peer")
        inbound.dataReceived(b"to client")
        self.assertEqual(h.received(), b"to client")

    def test_strangerRefused(self) -> None:
        """
        A host other than DSTIP is refused and the client hears nothing.
        """
        h = self.bindHarness()
        h.send(socks4("192.0.2.7", 0, command=0x02))
        h.received()
        inbound, _ = self.peerConnects(h, IPv4Address("TCP", "192.0.2.99", 1))
        self.assertIsNone(inbound)
        self.assertEqual(h.received(), b"")

    def test_disabled(self) -> None:
        """
        With BIND disabled, a SOCKS4 BIND gets CD 91 and nothing listens.
        """
        h = ProxyHarness(bindOptions=False)
        h.send(socks4("192.0.2.7", 0, command=0x02))
        self.assertEqual(h.received(), REJECTED)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.reactor.tcpServers, [])

    def test_passwordRequired(self) -> None:
        """
        A server that requires a password refuses SOCKS4 BIND with CD 91.
        """
        h = self.bindHarness(portal=passwordPortal())
        h.send(socks4("192.0.2.7", 0, command=0x02))
        self.assertEqual(h.received(), REJECTED)
        self.assertEqual(h.reactor.tcpServers, [])


class HTTPConnectTests(SynchronousTestCase):
    """
    HTTP CONNECT tunnels without authentication.
    """

    def test_establishedAfterConnect(self) -> None:
        """
        C{200 Connection established} is sent only once the outbound
        connection exists; the connection stays open.
        """
        h = ProxyHarness()
        h.send(connectHead(b"example.com:443"))
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        self.assertEqual(h.received(), b"")
        h.recorder.last.succeed()
        self.assertEqual(h.received(), ESTABLISHED)
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.replyText, "200")
        self.assertEqual(h.protocol.session.destination, "example.com:443")

    def test_headSplit(self) -> None:
        """
        A request head split across writes is answered once it is whole.
        """
        h = ProxyHarness()
        h.sendBytewise(connectHead(b"example.com:443", b"User-Agent: test\r\n"))
        self.assertEqual(h.recorder.requests, [("example.com", 443)])

    def test_earlyBytesForwarded(self) -> None:
        """
        Bytes after the head, in its write and in later ones, reach the
        destination once connected, and the tunnel then carries data both
        ways.
        """
        h = ProxyHarness()
        h.send(connectHead(b"example.com:443") + b"\x16\x03\x01")
        h.send(b"hello")
        destination = UpperEcho()
        pump = h.recorder.last.succeedInMemory(destination)
        pump.flush()
        self.assertEqual(destination.received, b"\x16\x03\x01hello")
        self.assertEqual(h.received(), ESTABLISHED + b"\x16\x03\x01HELLO")
        h.send(b"abc")
        pump.flush()
        self.assertEqual(h.received(), b"ABC")

    def test_ipv6Target(self) -> None:
        """
        A bracketed IPv6 target is connected to without its brackets.
        """
        h = ProxyHarness()
        h.send(connectHead(b"[2001:db8::1]:443"))
        self.assertEqual(h.recorder.requests, [("2001:db8::1", 443)])
        self.assertEqual(h.protocol.session.destination, "[2001:db8::1]:443")

    def test_credentialsIgnoredWithoutPortal(self) -> None:
        """
        Without a portal, no credentials are needed and any sent are
        ignored.
        """
        h = ProxyHarness()
        h.send(connectHead(b"example.com:443", basic(b"who:ever")))
        h.recorder.last.succeed()
        self.assertEqual(h.received(), ESTABLISHED)
        self.assertIsNone(h.protocol.session.user)

    def assertFailure(self, exception: BaseException, status: bytes) -> bytes:
        """
        A CONNECT whose connection fails with C{exception} is answered with
        C{status} and closed.

        @return: the body of the answer.
        """
        h = ProxyHarness()
        h.send(connectHead(b"example.com:443"))
        h.recorder.last.fail(exception)
        statusLine, headers, body = parseHTTPResponse(h.received())
        self.assertEqual(statusLine, b"HTTP/1.1 " + status)
        self.assertIn((b"content-type", b"text/plain; charset=utf-8"), headers)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.replyText, status[:3].decode("ascii"))
        return body

    def test_refused(self) -> None:
        """
        A refused connection is answered 502 with a text naming the reason.
        """
        body = self.assertFailure(error.ConnectionRefusedError(), b"502 Bad Gateway")
        self.assertEqual(body, b"Bad Gateway: connection refused\n")

    def test_dnsFailure(self) -> None:
        """
        A name that does not resolve is answered 502 with a text saying so.
        """
        body = self.assertFailure(
            error.DNSLookupError("example.com"), b"502 Bad Gateway"
        )
        self.assertIn(b"name not resolved", body)

    def test_timeout(self) -> None:
        """
        A connection still pending after C{connectTimeout} is cancelled and
        answered 504.
        """
        h = ProxyHarness(connectTimeout=10)
        h.send(connectHead(b"example.com:443"))
        h.reactor.advance(9.9)
        self.assertEqual(h.received(), b"")
        h.reactor.advance(0.2)
        self.assertTrue(h.recorder.last.cancelled)
        statusLine, _, body = parseHTTPResponse(h.received())
        self.assertEqual(statusLine, b"HTTP/1.1 504 Gateway Timeout")
        self.assertEqual(body, b"Gateway Timeout: connection timed out\n")
        self.assertTrue(h.transport.disconnecting)

    def test_policyDenies(self) -> None:
        """
        A destination the policy refuses is answered 403 and not connected.
        """
        h = ProxyHarness(
            policy=Policy([Rule("deny", "nothing", hosts=("example.com",))])
        )
        h.send(connectHead(b"example.com:443"))
        statusLine, _, body = parseHTTPResponse(h.received())
        self.assertEqual(statusLine, b"HTTP/1.1 403 Forbidden")
        self.assertIn(b"nothing", body)
        self.assertEqual(h.recorder.requests, [])

    def test_malformedTarget(self) -> None:
        """
        A CONNECT target that is not C{host:port} is answered 400 and closed,
        and nothing is connected.
        """
        for target in (
            b"example.com",
            b"example.com:0",
            b"example.com:99999",
            b"example.com:http",
            b"[::1]",
            b":443",
            b"::1:443",
        ):
            h = ProxyHarness()
            h.send(connectHead(target))
            statusLine, _, _ = parseHTTPResponse(h.received())
            self.assertEqual(statusLine, b"HTTP/1.1 400 Bad Request", target)
            self.assertTrue(h.transport.disconnecting)
            self.assertEqual(h.recorder.requests, [])

    def test_malformedRequestLine(self) -> None:
        """
        A request line that is not C{METHOD target HTTP/1.x} is answered 400.
        """
        h = ProxyHarness()
        h.send(b"CONNECT example.com:443\r\n\r\n")
        self.assertEqual(statusOf(h.received()), b"HTTP/1.1 400 Bad Request")
        self.assertTrue(h.transport.disconnecting)


class HTTPConnectAuthenticationTests(SynchronousTestCase):
    """
    HTTP CONNECT with a portal: credentials from C{Proxy-Authorization:
    Basic}.
    """

    def assertChallenged(self, h: ProxyHarness, reason: bytes) -> None:
        """
        The client got a 407 with C{Proxy-Authenticate: Basic} and the
        C{reason}, was closed, and nothing was connected.
        """
        statusLine, headers, body = parseHTTPResponse(h.received())
        self.assertEqual(statusLine, b"HTTP/1.1 407 Proxy Authentication Required")
        self.assertIn((b"proxy-authenticate", b'Basic realm="socksrelay"'), headers)
        self.assertEqual(body, b"Proxy Authentication Required: " + reason + b"\n")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.replyText, "407")
        self.assertEqual(
            h.protocol.session.reason,
            "proxy authentication failed: " + reason.decode("ascii"),
        )

    def test_noCredentials(self) -> None:
        """
        Without a C{Proxy-Authorization} header the client is challenged.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(connectHead(b"example.com:443"))
        self.assertChallenged(h, b"credentials required")

    def test_wrongPassword(self) -> None:
        """
        A wrong password is challenged again.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(connectHead(b"example.com:443", basic(b"alice:nope")))
        self.assertChallenged(h, b"authentication failed")
        self.assertIsNone(h.protocol.avatar)

    def test_rightPassword(self) -> None:
        """
        The right credentials open the tunnel, and the session records the
        user.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(connectHead(b"example.com:443", basic(b"alice:pw")))
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        h.recorder.last.succeed()
        self.assertEqual(h.received(), ESTABLISHED)
        self.assertEqual(h.protocol.session.user, "alice")
        self.assertEqual(h.protocol.avatar.username, "alice")

    def test_otherScheme(self) -> None:
        """
        A scheme other than Basic is challenged.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(connectHead(b"example.com:443", b"Proxy-Authorization: Bearer abc\r\n"))
        self.assertChallenged(h, b"unsupported or malformed credentials")

    def test_malformedBasic(self) -> None:
        """
        Basic credentials that are not base64, or lack the colon, are
        challenged.
        """
        for header in (
            b"Proxy-Authorization: Basic !!!not-base64\r\n",
            b"Proxy-Authorization: Basic " + base64.b64encode(b"alice") + b"\r\n",
        ):
            h = ProxyHarness(portal=passwordPortal())
            h.send(connectHead(b"example.com:443", header))
            self.assertChallenged(h, b"unsupported or malformed credentials")

    def test_emptyUserName(self) -> None:
        """
        An empty user name is challenged without asking the checker.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(connectHead(b"example.com:443", basic(b":pw")))
        self.assertChallenged(h, b"empty user name")
        self.assertEqual(checker.credentials, [])

    def test_brokenChecker(self) -> None:
        """
        A checker that fails with something other than a refusal is logged
        as a failure, and the client is challenged.
        """
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [BrokenChecker()]))
        h.send(connectHead(b"example.com:443", basic(b"alice:pw")))
        self.assertChallenged(h, b"authentication failed")
        self.assertEqual(len(self.flushLoggedErrors(CheckerBroken)), 1)

    def test_pendingChecker(self) -> None:
        """
        While the checker has not answered, nothing is answered or
        connected; then the tunnel is opened.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(connectHead(b"example.com:443", basic(b"alice:pw")) + b"early")
        self.assertEqual(h.received(), b"")
        self.assertEqual(h.recorder.requests, [])
        self.assertFalse(h.transport.disconnecting)
        [credentials] = checker.credentials
        self.assertEqual(
            (credentials.username, credentials.password), (b"alice", b"pw")
        )
        checker.pending[0].callback(b"alice")
        self.assertEqual(h.recorder.requests, [("example.com", 443)])
        _, outboundTransport = h.recorder.last.succeed()
        self.assertEqual(h.received(), ESTABLISHED)
        self.assertEqual(outboundTransport.value(), b"early")

    def test_pendingCheckerRefuses(self) -> None:
        """
        A pending checker that refuses gets the client a 407 when it
        answers.
        """
        checker = PendingChecker()
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [checker]))
        h.send(connectHead(b"example.com:443", basic(b"alice:pw")))
        self.assertEqual(h.received(), b"")
        checker.pending[0].errback(UnauthorizedLogin())
        self.assertEqual(
            statusOf(h.received()), b"HTTP/1.1 407 Proxy Authentication Required"
        )

    def test_anonymousAllowed(self) -> None:
        """
        With an anonymous checker, no credentials are needed.
        """
        h = ProxyHarness(portal=anonymousPortal())
        h.send(connectHead(b"example.com:443"))
        h.recorder.last.succeed()
        self.assertEqual(h.received(), ESTABLISHED)
        self.assertIsNone(h.protocol.avatar.username)


def forwardHead(url: bytes, headers: bytes = b"") -> bytes:
    """
    Return a plain-HTTP proxy GET for C{url}.
    """
    return b"GET " + url + b" HTTP/1.1\r\nHost: example.com\r\n" + headers + b"\r\n"


class HTTPForwardTests(SynchronousTestCase):
    """
    Plain-HTTP forwarding inside the listener.
    """

    def forward(self, h: ProxyHarness, data: bytes) -> tuple[Collector, Any]:
        """
        Send C{data} and connect its outbound connection to an origin in
        memory.

        @return: the origin and the pump.
        """
        h.send(data)
        origin = Collector()
        pump = h.recorder.last.succeedInMemory(origin)
        pump.flush()
        return origin, pump

    def respond(
        self, origin: Collector, pump: Any, body: bytes, status: bytes = b"200 OK"
    ) -> None:
        """
        Have C{origin} answer with C{status} and C{body}, then close (the
        proxy asked it to with C{Connection: close}).
        """
        origin.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        origin.transport.loseConnection()  # type: ignore[union-attr]
        pump.flush()

    def test_requestReachesOrigin(self) -> None:
        """
        C{GET http://example.com/x} reaches example.com port 80 as C{GET /x}
        with C{Host: example.com}, without hop-by-hop headers, with the
        end-to-end ones; the origin's answer reaches the client.
        """
        h = ProxyHarness()
        origin, pump = self.forward(
            h,
            forwardHead(
                b"http://example.com/x",
                b"Connection: X-Hop\r\nX-Hop: 1\r\nProxy-Connection: keep-alive\r\n"
                b"Accept: */*\r\n",
            ),
        )
        self.assertEqual(h.recorder.requests, [("example.com", 80)])
        head = origin.received.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
        self.assertTrue(head[0].startswith(b"get /x http/1."))
        self.assertIn(b"host: example.com", head)
        self.assertIn(b"accept: */*", head)
        self.assertIn(b"connection: close", head)
        for name in (b"x-hop", b"proxy-connection"):
            self.assertEqual(
                [line for line in head if line.startswith(name + b":")], []
            )
        self.respond(origin, pump, b"hi")
        statusLine, _, body = parseHTTPResponse(h.received())
        self.assertEqual((statusLine, body), (b"HTTP/1.1 200 OK", b"hi"))
        self.assertFalse(h.transport.disconnecting)

    def test_session(self) -> None:
        """
        The session counts the requests, keeps the last status as its reply
        and the last destination, and counts the bytes both ways.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        h = ProxyHarness()
        first = forwardHead(b"http://example.com/1")
        origin, pump = self.forward(h, first)
        self.respond(origin, pump, b"one")
        toClient = h.received()
        second = forwardHead(b"http://example.org:8080/2")
        origin, pump = self.forward(h, second)
        self.respond(origin, pump, b"", b"404 Not Found")
        toClient += h.received()
        session = h.protocol.session
        self.assertEqual(session.details["requests"], 2)
        self.assertEqual(session.replyText, "404")
        self.assertEqual(session.destination, "example.org:8080")
        self.assertEqual(session.command, "HTTP")
        self.assertEqual(session.downCounter(), len(toClient))
        h.clientLost()
        [event] = sessionEvents(observer)
        self.assertEqual(event["protocol"], "http")
        self.assertEqual(event["bytesUp"], len(first) + len(second))
        self.assertEqual(event["bytesDown"], len(toClient))
        self.assertEqual(event["replyText"], "404")
        self.assertEqual(event["requests"], 2)

    def test_bytesAfterHeadKept(self) -> None:
        """
        A request body that came in the same write as the head reaches the
        origin.
        """
        h = ProxyHarness()
        origin, _ = self.forward(
            h, b"POST http://example.com/ HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
        )
        self.assertTrue(origin.received.endswith(b"\r\n\r\nbody"))
        self.assertIn(b"content-length: 4", origin.received.lower())

    def test_httpsRefused(self) -> None:
        """
        An C{https://} URI is answered 400 and not connected.
        """
        h = ProxyHarness()
        h.send(b"GET https://example.com/ HTTP/1.1\r\n\r\n")
        self.assertEqual(statusOf(h.received()), b"HTTP/1.1 400 Bad Request")
        self.assertEqual(h.recorder.requests, [])
        self.assertEqual(h.protocol.session.replyText, "400")

    def test_relativeRefused(self) -> None:
        """
        A relative URI is answered 400 and not connected.
        """
        h = ProxyHarness()
        h.send(b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(statusOf(h.received()), b"HTTP/1.1 400 Bad Request")
        self.assertEqual(h.recorder.requests, [])

    def test_authenticationPerRequest(self) -> None:
        """
        With a password portal, each request is checked: without
        credentials it gets 407 (and the connection stays open), with them
        it is forwarded and the session records the user.
        """
        h = ProxyHarness(portal=passwordPortal())
        h.send(forwardHead(b"http://example.com/"))
        statusLine, headers, _ = parseHTTPResponse(h.received())
        self.assertEqual(statusLine, b"HTTP/1.1 407 Proxy Authentication Required")
        self.assertIn((b"proxy-authenticate", b'Basic realm="socksrelay"'), headers)
        self.assertEqual(h.recorder.requests, [])
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.replyText, "407")
        origin, pump = self.forward(
            h, forwardHead(b"http://example.com/", basic(b"alice:pw"))
        )
        self.assertNotIn(b"proxy-authorization", origin.received.lower())
        self.respond(origin, pump, b"ok")
        self.assertEqual(statusOf(h.received()), b"HTTP/1.1 200 OK")
        self.assertEqual(h.protocol.session.user, "alice")
        h.send(forwardHead(b"http://example.com/", basic(b"alice:nope")))
        self.assertEqual(
            statusOf(h.received()), b"HTTP/1.1 407 Proxy Authentication Required"
        )
        self.assertEqual(len(h.recorder.requests), 1)

    def test_brokenChecker(self) -> None:
        """
        A checker that breaks is logged as a failure and the request gets
        407.
        """
        h = ProxyHarness(portal=Portal(SOCKSRealm(), [BrokenChecker()]))
        h.send(forwardHead(b"http://example.com/", basic(b"alice:pw")))
        self.assertEqual(
            statusOf(h.received()), b"HTTP/1.1 407 Proxy Authentication Required"
        )
        self.assertEqual(len(self.flushLoggedErrors(CheckerBroken)), 1)
        self.assertEqual(h.recorder.requests, [])

    def test_refused(self) -> None:
        """
        A refused outbound connection is answered 502.
        """
        h = ProxyHarness()
        h.send(forwardHead(b"http://example.com/"))
        h.recorder.last.fail(error.ConnectionRefusedError())
        statusLine, _, body = parseHTTPResponse(h.received())
        self.assertEqual(statusLine, b"HTTP/1.1 502 Bad Gateway")
        self.assertIn(b"example.com:80", body)
        self.assertEqual(h.protocol.session.replyText, "502")

    def test_timeout(self) -> None:
        """
        An outbound connection still pending after C{connectTimeout} is
        cancelled and the request answered 504.
        """
        h = ProxyHarness(connectTimeout=10)
        h.send(forwardHead(b"http://example.com/"))
        h.reactor.advance(9.9)
        self.assertEqual(h.received(), b"")
        h.reactor.advance(0.2)
        self.assertTrue(h.recorder.last.cancelled)
        self.assertEqual(statusOf(h.received()), b"HTTP/1.1 504 Gateway Timeout")
        self.assertEqual(h.protocol.session.replyText, "504")

    def test_policyApplies(self) -> None:
        """
        The access policy judges forwarded requests as it judges tunnels: a
        refused destination (here a link-local one, which the default rules
        refuse) is answered 403 and not connected.
        """
        h = ProxyHarness(policy=Policy.defaults(authRequired=False))
        h.send(forwardHead(b"http://169.254.169.254/latest/meta-data/"))
        self.assertEqual(statusOf(h.received()), b"HTTP/1.1 403 Forbidden")
        self.assertEqual(h.recorder.requests, [])

    def test_eofWhenIdle(self) -> None:
        """
        A client EOF with no request pending closes the connection at once.
        """
        h = ProxyHarness()
        origin, pump = self.forward(h, forwardHead(b"http://example.com/"))
        self.respond(origin, pump, b"ok")
        h.received()
        h.protocol.readConnectionLost()
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.protocol.session.reason, "client EOF")

    def test_eofWithRequestPending(self) -> None:
        """
        A client EOF while a request is pending closes the connection only
        after its response is written.
        """
        h = ProxyHarness()
        h.send(forwardHead(b"http://example.com/"))
        h.protocol.readConnectionLost()
        self.assertFalse(h.transport.disconnecting)
        origin = Collector()
        pump = h.recorder.last.succeedInMemory(origin)
        pump.flush()
        self.assertFalse(h.transport.disconnecting)
        self.respond(origin, pump, b"ok")
        self.assertEqual(parseHTTPResponse(h.received())[2], b"ok")
        self.assertTrue(h.transport.disconnecting)

    def test_connectCancelledWhenClientLeaves(self) -> None:
        """
        A client that leaves while a request's outbound connection is being
        made cancels the attempt, and no timer is left behind.
        """
        h = ProxyHarness(connectTimeout=10)
        h.send(forwardHead(b"http://example.com/"))
        endpoint = h.recorder.last
        h.clientLost()
        self.assertTrue(endpoint.cancelled)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_originClosedWhenClientLeaves(self) -> None:
        """
        The origin connection of a request in progress is closed when the
        client leaves.
        """
        h = ProxyHarness()
        h.send(forwardHead(b"http://example.com/"))
        _, outboundTransport = h.recorder.last.succeed()
        h.clientLost()
        self.assertTrue(outboundTransport.disconnecting)

    def test_lateResponseDropped(self) -> None:
        """
        A response that the origin finishes after the client left is
        dropped quietly: nothing is written and no exception escapes.
        """
        h = ProxyHarness()
        h.send(forwardHead(b"http://example.com/"))
        outbound, _ = h.recorder.last.succeed()
        h.clientLost()
        h.received()
        try:
            outbound.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except RuntimeError as e:
            self.fail(f"finishing the response raised {e!r}")
        self.assertEqual(h.received(), b"")

    def test_idleTimeout(self) -> None:
        """
        A forwarding connection idle for C{httpIdleTimeout} seconds (on the
        factory's reactor) is closed.
        """
        h = ProxyHarness(httpIdleTimeout=10)
        h.send(b"GET https://example.com/ HTTP/1.1\r\n\r\n")
        h.received()
        h.reactor.advance(9)
        self.assertFalse(h.transport.disconnecting)
        h.reactor.advance(1.5)
        self.assertTrue(h.transport.disconnecting)


class ProtocolsOptionTests(SynchronousTestCase):
    """
    C{--protocols} of C{twistd socks5}.
    """

    def parse(self, *argv: str) -> tap.Options:
        """
        Return L{tap.Options} that have parsed C{argv}.
        """
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_default(self) -> None:
        """
        By default all three protocols are served, as a tuple.
        """
        self.assertEqual(self.parse()["protocols"], ("socks5", "socks4", "http"))

    def test_list(self) -> None:
        """
        A comma-separated list, with spaces, is kept in its order.
        """
        self.assertEqual(
            self.parse("--protocols", "http, socks5")["protocols"], ("http", "socks5")
        )

    def test_caseAndDuplicates(self) -> None:
        """
        Names are case-insensitive and duplicates are removed.
        """
        self.assertEqual(
            self.parse("--protocols", "socks4,SOCKS4, socks4,http")["protocols"],
            ("socks4", "http"),
        )

    def test_unknown(self) -> None:
        """
        An unknown name is a usage error.
        """
        for value in ("socks5,gopher", "socks4a", "https"):
            self.assertRaises(usage.UsageError, self.parse, "--protocols", value)

    def test_empty(self) -> None:
        """
        An empty list is a usage error.
        """
        for value in ("", " , ,"):
            self.assertRaises(usage.UsageError, self.parse, "--protocols", value)

    def test_parseProtocols(self) -> None:
        """
        L{tap.parseProtocols} returns a tuple of names or raises
        L{ValueError}.
        """
        self.assertEqual(tap.parseProtocols("HTTP"), ("http",))
        self.assertRaises(ValueError, tap.parseProtocols, "")
        self.assertRaises(ValueError, tap.parseProtocols, "socks6")

    def test_makeFactory(self) -> None:
        """
        L{tap.makeFactory} passes the protocols to the factory, which then
        refuses the others.
        """
        factory = tap.makeFactory(
            self.parse("--protocols", "http"), MemoryReactorClock()
        )
        self.assertEqual(factory.protocols, frozenset({"http"}))
        protocol = factory.buildProtocol(LISTEN_ADDRESS)
        transport = RecordingTransport(
            hostAddress=LISTEN_ADDRESS, peerAddress=LISTEN_ADDRESS
        )
        protocol.makeConnection(transport)
        protocol.dataReceived(greeting(0x00))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))

    def test_makeFactoryDefault(self) -> None:
        """
        Without C{--protocols}, the factory serves all three.
        """
        factory = tap.makeFactory(self.parse(), MemoryReactorClock())
        self.assertEqual(factory.protocols, frozenset({"socks5", "socks4", "http"}))
