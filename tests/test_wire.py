# -*- test-case-name: tests.test_wire -*-
"""
Tests for L{socksrelay.wire}, the sans-I/O server side of SOCKS5 (RFC 1928)
and its username/password sub-negotiation (RFC 1929).
"""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from socksrelay.wire import (
    MAX_HANDSHAKE_BUFFER, MAX_UDP_PAYLOAD, NEED_DATA, AddressType,
    AuthMethod, Command, Greeting, ProtocolError, Reply, Request,
    SOCKS5ServerConnection, UsernamePassword, encodeAddress, encodeReply,
    encodeUDPHeader, normaliseAddress, parseUDPHeader, selectMethod,
)

GREETING_NOAUTH = b"\x05\x01\x00"
GREETING_USERPASS = b"\x05\x01\x02"
AUTH = b"\x01\x04user\x06secret"
# CONNECT 192.0.2.1:8080; the port is 0x1F90, big-endian.
REQUEST_IPV4 = b"\x05\x01\x00\x01\xc0\x00\x02\x01\x1f\x90"
REQUEST_IPV4_EVENT = Request(Command.CONNECT, AddressType.IPV4, "192.0.2.1", 8080)
# Looks like the start of another SOCKS5 message, so it would be noticed if
# the codec tried to parse it instead of keeping it.
EARLY = b"\x05\x01\x00GET / HTTP/1.1\r\n\r\n"
ZERO_ADDRESS = b"\x01\x00\x00\x00\x00\x00\x00"
# Four 63-byte labels and three dots: the longest name ATYP 3 can carry.
LONGEST_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 63])
# The longest name DNS allows (253 bytes); with its trailing dot, 254.
LONGEST_VALID_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
# Whole error replies: VER REP RSV, then ATYP 1 with a zero address and port.
REP_01 = b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"
REP_04 = b"\x05\x04\x00\x01\x00\x00\x00\x00\x00\x00"
REP_07 = b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"
REP_08 = b"\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00"
CAP = MAX_HANDSHAKE_BUFFER


def connectionAt(phase):
    """Return a connection expecting the C{"greeting"}, C{"auth"} or C{"request"}."""
    conn = SOCKS5ServerConnection()
    if phase == "auth":
        conn.receiveData(GREETING_USERPASS)
        conn.nextEvent()
        conn.chooseMethod(AuthMethod.USERNAME_PASSWORD)
    elif phase == "request":
        conn.receiveData(GREETING_NOAUTH)
        conn.nextEvent()
        conn.chooseMethod(AuthMethod.NO_AUTHENTICATION)
    return conn


def requestBytes(atypAndAddress, command=Command.CONNECT):
    """Return the bytes of a request: VER CMD RSV followed by C{atypAndAddress}."""
    return bytes([0x05, command, 0x00]) + atypAndAddress


def tr(testCase, phase, data, expected):
    """
    Check that C{data}, the message for C{phase}, parses as C{expected} fed
    whole, byte by byte, and followed by bytes that must be kept intact.
    """
    # (a) Whole.
    conn = connectionAt(phase)
    conn.receiveData(data)
    testCase.assertEqual(conn.nextEvent(), expected)
    if phase == "request":
        testCase.assertEqual(conn.leftover(), b"")
    else:
        testCase.assertIs(conn.nextEvent(), NEED_DATA)

    # (b) One byte at a time.
    conn = connectionAt(phase)
    for i in range(len(data) - 1):
        conn.receiveData(data[i : i + 1])
        testCase.assertIs(conn.nextEvent(), NEED_DATA, f"after {i + 1} bytes")
    conn.receiveData(data[-1:])
    testCase.assertEqual(conn.nextEvent(), expected)

    # (c) With trailing bytes: the next message, then early payload.
    conn = connectionAt(phase)
    trailing = EARLY if phase == "request" else REQUEST_IPV4 + EARLY
    conn.receiveData(data + trailing)
    testCase.assertEqual(conn.nextEvent(), expected)
    if phase == "greeting":
        testCase.assertEqual(conn.chooseMethod(AuthMethod.NO_AUTHENTICATION), b"\x05\x00")
    elif phase == "auth":
        testCase.assertEqual(conn.authResult(True), b"\x01\x00")
    if phase != "request":
        testCase.assertEqual(conn.nextEvent(), REQUEST_IPV4_EVENT)
    testCase.assertEqual(conn.leftover(), EARLY)


class FramingTests(SynchronousTestCase):
    """Every kind of message parses whole, byte by byte, and with bytes after it."""

    def test_greeting(self):
        """A one-method greeting yields a Greeting, however it is split."""
        tr(self, "greeting", b"\x05\x01\x00", Greeting((0,)))

    def test_greetingAllMethods(self):
        """A greeting offering 255 methods yields all of them in order."""
        methods = tuple(range(255))
        tr(self, "greeting", b"\x05\xff" + bytes(methods), Greeting(methods))

    def test_usernamePassword(self):
        """An RFC 1929 request yields the username and password."""
        tr(self, "auth", AUTH, UsernamePassword(b"user", b"secret"))

    def test_emptyUsernameAndPassword(self):
        """Zero-length username and password are parsed, not rejected."""
        tr(self, "auth", b"\x01\x00\x00", UsernamePassword(b"", b""))

    def test_longestUsernameAndPassword(self):
        """A 255-byte username and a 255-byte password are parsed."""
        user, password = b"u" * 255, b"p" * 254 + b"\xff"
        data = b"\x01\xff" + user + b"\xff" + password
        tr(self, "auth", data, UsernamePassword(user, password))

    def test_requestIPv4(self):
        """An IPv4 CONNECT yields the dotted address and big-endian port."""
        tr(self, "request", REQUEST_IPV4, REQUEST_IPV4_EVENT)

    def test_requestIPv6(self):
        """An IPv6 request yields the address in compressed text form."""
        data = requestBytes(b"\x04" + b"\x00" * 15 + b"\x01" + b"\x04\x38")
        tr(self, "request", data, Request(Command.CONNECT, AddressType.IPV6, "::1", 1080))

    def test_requestIPv4MappedIPv6(self):
        """An IPv4-mapped IPv6 address comes out as plain IPv4 text."""
        packed = ipaddress.IPv6Address("::ffff:127.0.0.1").packed
        data = requestBytes(b"\x04" + packed + b"\x00\x50", Command.BIND)
        expected = Request(Command.BIND, AddressType.IPV6, "127.0.0.1", 80)
        tr(self, "request", data, expected)

    def test_requestDomain(self):
        """A domain-name request yields the name as text."""
        data = requestBytes(b"\x03\x0bexample.com\x01\xbb", Command.UDP_ASSOCIATE)
        expected = Request(Command.UDP_ASSOCIATE, AddressType.DOMAIN, "example.com", 443)
        tr(self, "request", data, expected)

    def test_requestLongestDomain(self):
        """
        The longest name DNS allows, 253 bytes and a trailing dot, is parsed
        (without the dot).
        """
        name = (LONGEST_VALID_NAME + ".").encode("ascii")
        data = requestBytes(b"\x03\xfe" + name + b"\xff\xff")
        expected = Request(Command.CONNECT, AddressType.DOMAIN, LONGEST_VALID_NAME, 65535)
        tr(self, "request", data, expected)

    def test_requestOverlongDomain(self):
        """
        A 255-byte name (longer than DNS allows) is read whole and refused
        at once with 0x04 (host unreachable).
        """
        data = requestBytes(b"\x03\xff" + LONGEST_NAME.encode("ascii") + b"\xff\xff")
        conn = connectionAt("request")
        conn.receiveData(data)
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertEqual((e.reply, e.response), (Reply.HOST_UNREACHABLE, REP_04))
        self.assertIn("longer than 253 bytes", e.message)


class PipeliningTests(SynchronousTestCase):
    """A client may send the whole handshake, and its first payload, at once."""

    def test_wholeHandshakeInOneCall(self):
        """Greeting, auth, request and payload in one call come out in order."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(b"\x05\x02\x00\x02" + AUTH + REQUEST_IPV4 + EARLY)
        self.assertEqual(conn.nextEvent(), Greeting((0, 2)))
        self.assertEqual(conn.chooseMethod(AuthMethod.USERNAME_PASSWORD), b"\x05\x02")
        self.assertEqual(conn.nextEvent(), UsernamePassword(b"user", b"secret"))
        self.assertEqual(conn.authResult(True), b"\x01\x00")
        self.assertEqual(conn.nextEvent(), REQUEST_IPV4_EVENT)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        self.assertEqual(conn.leftover(), EARLY)

    def test_leftoverForgets(self):
        """leftover() returns bytes once, then only bytes received since."""
        conn = connectionAt("request")
        conn.receiveData(REQUEST_IPV4 + b"one")
        conn.nextEvent()
        self.assertEqual(conn.leftover(), b"one")
        conn.receiveData(b"two")
        self.assertEqual(conn.leftover(), b"two")


class GreetingTests(SynchronousTestCase):
    """The version identifier / method selection message (RFC 1928 section 3)."""

    def test_notSocks5(self):
        """A first byte other than 0x05 is an error with nothing to answer."""
        for first in (b"\x04", b"\x00", b"G"):
            conn = SOCKS5ServerConnection()
            conn.receiveData(first)
            e = self.assertRaises(ProtocolError, conn.nextEvent)
            self.assertEqual(e.response, b"")

    def test_noMethods(self):
        """NMETHODS of zero is an error answered with 05 FF."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(b"\x05\x00")
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertEqual(e.response, b"\x05\xff")

    def test_methodsInClientOrder(self):
        """The methods tuple keeps the client's order, unknown ones included."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(b"\x05\x03\x02\x80\x00")
        self.assertEqual(conn.nextEvent().methods, (0x02, 0x80, 0x00))


class MethodSelectionTests(SynchronousTestCase):
    """L{selectMethod} and L{SOCKS5ServerConnection.chooseMethod}."""

    def test_serverPreferenceWins(self):
        """Of the methods both sides know, the server's favourite is chosen."""
        self.assertEqual(selectMethod([0x00, 0x02], [0x02, 0x00]), AuthMethod.USERNAME_PASSWORD)
        self.assertEqual(selectMethod([0x02, 0x00], [0x00, 0x02]), AuthMethod.NO_AUTHENTICATION)

    def test_neverUnofferedMethod(self):
        """A method the client did not offer is skipped, even if preferred."""
        self.assertEqual(selectMethod([0x00], [0x02, 0x00]), AuthMethod.NO_AUTHENTICATION)

    def test_noAcceptableMethod(self):
        """With no method in common the answer is 0xFF."""
        self.assertEqual(selectMethod([0x01, 0x80], [0x02, 0x00]), 0xFF)
        self.assertEqual(selectMethod([], [0x02, 0x00]), 0xFF)
        self.assertEqual(selectMethod([0x00], []), 0xFF)

    def test_chooseMethodBytes(self):
        """chooseMethod returns VER METHOD for each method it implements."""
        for method, expected in [(0, b"\x05\x00"), (2, b"\x05\x02"), (0xFF, b"\x05\xff")]:
            conn = SOCKS5ServerConnection()
            conn.receiveData(GREETING_NOAUTH)
            conn.nextEvent()
            self.assertEqual(conn.chooseMethod(method), expected)

    def test_noAcceptableMethodCloses(self):
        """After choosing 0xFF nothing more is parsed and no method can follow."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(GREETING_NOAUTH + REQUEST_IPV4)
        conn.nextEvent()
        conn.chooseMethod(AuthMethod.NO_ACCEPTABLE_METHODS)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        self.assertRaises(RuntimeError, conn.chooseMethod, AuthMethod.NO_AUTHENTICATION)


class UsernamePasswordTests(SynchronousTestCase):
    """The RFC 1929 sub-negotiation."""

    def test_wrongVersion(self):
        """A version byte of 0x05 is an error answered with 01 01."""
        conn = connectionAt("auth")
        conn.receiveData(b"\x05\x04user\x06secret")
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertEqual(e.response, b"\x01\x01")

    def test_authResultSuccess(self):
        """A successful check answers 01 00 and moves on to the request."""
        conn = connectionAt("auth")
        conn.receiveData(AUTH + REQUEST_IPV4)
        conn.nextEvent()
        self.assertEqual(conn.authResult(True), b"\x01\x00")
        self.assertEqual(conn.nextEvent(), REQUEST_IPV4_EVENT)

    def test_authResultFailure(self):
        """A failed check answers 01 01 and no request is parsed after it."""
        conn = connectionAt("auth")
        conn.receiveData(AUTH + REQUEST_IPV4)
        conn.nextEvent()
        self.assertEqual(conn.authResult(False), b"\x01\x01")
        self.assertIs(conn.nextEvent(), NEED_DATA)

    def test_passwordNotInRepr(self):
        """The password never appears in the repr of the parsed event."""
        conn = connectionAt("auth")
        conn.receiveData(b"\x01\x05alice\x0ehunter2-s3cret")
        event = conn.nextEvent()
        self.assertEqual(event.password, b"hunter2-s3cret")
        self.assertIn("alice", repr(event))
        self.assertNotIn("hunter2", repr(event))
        self.assertNotIn("s3cret", repr(event))


class RequestTests(SynchronousTestCase):
    """The request (RFC 1928 sections 4 and 5) and its errors (section 6)."""

    def assertRequestError(self, data, reply, response):
        """Assert that request C{data} raises ProtocolError with C{reply}, C{response}."""
        conn = connectionAt("request")
        conn.receiveData(data)
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertIs(e.reply, reply)
        self.assertEqual(e.response, response)

    def test_wrongVersion(self):
        """A request version other than 5 is answered with REP 0x01."""
        self.assertRequestError(b"\x04", Reply.GENERAL_FAILURE, REP_01)
        data = b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
        self.assertRequestError(data, Reply.GENERAL_FAILURE, REP_01)

    def test_unknownCommand(self):
        """Commands other than 1, 2 and 3 are answered with REP 0x07."""
        for command in (0x00, 0x04, 0xFF):
            data = bytes([0x05, command, 0x00, 0x01]) + b"\x7f\x00\x00\x01\x00\x50"
            self.assertRequestError(data, Reply.COMMAND_NOT_SUPPORTED, REP_07)

    def test_unknownAddressType(self):
        """Address types other than 1, 3 and 4 are answered with REP 0x08."""
        for atyp in (0x00, 0x02, 0x05):
            data = requestBytes(bytes([atyp]) + b"\x7f\x00\x00\x01\x00\x50")
            self.assertRequestError(data, Reply.ADDRESS_TYPE_NOT_SUPPORTED, REP_08)

    def test_emptyDomain(self):
        """A zero-length domain name is answered with REP 0x04."""
        data = requestBytes(b"\x03\x00\x00\x50")
        self.assertRequestError(data, Reply.HOST_UNREACHABLE, REP_04)

    def test_nulInDomain(self):
        """A domain name holding a NUL byte is answered with REP 0x04."""
        data = requestBytes(b"\x03\x0devil\x00.example\x00\x50")
        self.assertRequestError(data, Reply.HOST_UNREACHABLE, REP_04)

    def test_invalidUtf8Domain(self):
        """A domain name that is not UTF-8 is answered with REP 0x04."""
        data = requestBytes(b"\x03\x04ab\xff\xfe\x00\x50")
        self.assertRequestError(data, Reply.HOST_UNREACHABLE, REP_04)

    def test_utf8Domain(self):
        """
        An unencoded international name is decoded as UTF-8 and comes out
        as its A-label form.
        """
        name = "bücher.de".encode("utf-8")
        conn = connectionAt("request")
        conn.receiveData(requestBytes(b"\x03" + bytes([len(name)]) + name + b"\x00\x50"))
        self.assertEqual(conn.nextEvent().host, "xn--bcher-kva.de")

    def test_portBigEndian(self):
        """The port is read in network byte order: 1F 90 is 8080, not 36895."""
        conn = connectionAt("request")
        conn.receiveData(requestBytes(b"\x01\x0a\x00\x00\x01\x1f\x90"))
        self.assertEqual(conn.nextEvent().port, 8080)

    def test_errorClosesConnection(self):
        """After a ProtocolError nothing more is parsed, even a valid request."""
        conn = connectionAt("request")
        conn.receiveData(b"\x05\x09\x00\x01")
        self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(REQUEST_IPV4)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        self.assertRaises(RuntimeError, conn.leftover)


class EncodeTests(SynchronousTestCase):
    """L{encodeAddress} and L{encodeReply}."""

    def test_ipv4(self):
        """An IPv4 address is ATYP 1, four bytes and a big-endian port."""
        self.assertEqual(encodeAddress("192.0.2.1", 8080), b"\x01\xc0\x00\x02\x01\x1f\x90")

    def test_ipv6(self):
        """An IPv6 address is ATYP 4 and sixteen bytes."""
        expected = b"\x04\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\x01\xbb"
        self.assertEqual(encodeAddress("2001:db8::1", 443), expected)

    def test_ipv4Mapped(self):
        """An IPv4-mapped IPv6 address is sent as ATYP 1 with four bytes."""
        self.assertEqual(encodeAddress("::ffff:127.0.0.1", 80), b"\x01\x7f\x00\x00\x01\x00\x50")

    def test_scopeDropped(self):
        """The scope of a link-local address is dropped."""
        expected = b"\x04\xfe\x80" + b"\x00" * 13 + b"\x01\x00\x16"
        self.assertEqual(encodeAddress("fe80::1%eth0", 22), expected)

    def test_normaliseAddress(self):
        """normaliseAddress unmaps IPv4, drops scopes and leaves names alone."""
        self.assertEqual(normaliseAddress("::ffff:10.1.2.3"), "10.1.2.3")
        self.assertEqual(normaliseAddress("fe80::1%eth0"), "fe80::1")
        self.assertEqual(normaliseAddress("2001:DB8:0::1"), "2001:db8::1")
        self.assertEqual(normaliseAddress("Example.COM"), "Example.COM")

    def test_none(self):
        """No address encodes as ATYP 1 with all-zero address and port."""
        self.assertEqual(encodeAddress(None, 0), ZERO_ADDRESS)
        self.assertEqual(encodeReply(Reply.NOT_ALLOWED), b"\x05\x02\x00" + ZERO_ADDRESS)

    def test_name(self):
        """A name is ATYP 3 with a length prefix."""
        self.assertEqual(encodeAddress("example.com", 443), b"\x03\x0bexample.com\x01\xbb")

    def test_longestName(self):
        """A 255-byte name is encoded with length byte 0xFF."""
        encoded = encodeAddress(LONGEST_NAME, 1)
        self.assertEqual(encoded[:2], b"\x03\xff")
        self.assertEqual(len(encoded), 2 + 255 + 2)

    def test_nameTooLong(self):
        """A name over 255 bytes (or of none) raises ValueError."""
        tooLong = LONGEST_NAME[:-1] + ".b"
        self.assertEqual(len(tooLong), 256)
        e = self.assertRaises(ValueError, encodeAddress, tooLong, 1)
        self.assertIn("256 bytes", str(e))
        self.assertRaises(ValueError, encodeAddress, "", 1)

    def test_reply(self):
        """encodeReply is VER REP RSV followed by the encoded address."""
        expected = b"\x05\x05\x00\x01\x0a\x00\x00\x01\x04\x38"
        self.assertEqual(encodeReply(Reply.CONNECTION_REFUSED, "10.0.0.1", 1080), expected)


class SizeCapTests(SynchronousTestCase):
    """The handshake buffer has a hard cap."""

    def test_capAccepted(self):
        """Exactly MAX_HANDSHAKE_BUFFER bytes are kept."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(b"\x05\x01\x00" + b"x" * (CAP - 3))
        self.assertEqual(conn.nextEvent(), Greeting((0,)))

    def test_capExceededOneCall(self):
        """One byte over the cap in a single call raises ProtocolError."""
        conn = SOCKS5ServerConnection()
        self.assertRaises(ProtocolError, conn.receiveData, b"x" * (CAP + 1))

    def test_capExceededAcrossCalls(self):
        """The cap counts bytes from several calls together."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(b"x" * CAP)
        self.assertRaises(ProtocolError, conn.receiveData, b"x")

    def test_closedAfterCap(self):
        """After the cap is hit, events stop and further data is ignored."""
        conn = SOCKS5ServerConnection()
        self.assertRaises(ProtocolError, conn.receiveData, GREETING_NOAUTH + b"x" * CAP)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"x" * (CAP + 1))
        self.assertIs(conn.nextEvent(), NEED_DATA)


class OrderTests(SynchronousTestCase):
    """The server calling methods out of order is a RuntimeError."""

    def test_chooseMethodBeforeGreeting(self):
        """chooseMethod before a Greeting was produced raises RuntimeError."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(b"\x05\x01")
        self.assertRaises(RuntimeError, conn.chooseMethod, AuthMethod.NO_AUTHENTICATION)

    def test_chooseMethodTwice(self):
        """chooseMethod a second time raises RuntimeError."""
        conn = connectionAt("auth")
        self.assertRaises(RuntimeError, conn.chooseMethod, AuthMethod.USERNAME_PASSWORD)

    def test_chooseUnimplementedMethod(self):
        """Choosing a method the codec cannot carry out raises RuntimeError."""
        conn = SOCKS5ServerConnection()
        conn.receiveData(b"\x05\x01\x01")
        conn.nextEvent()
        self.assertRaises(RuntimeError, conn.chooseMethod, AuthMethod.GSSAPI)

    def test_authResultOutOfOrder(self):
        """authResult before a UsernamePassword event raises RuntimeError."""
        self.assertRaises(RuntimeError, SOCKS5ServerConnection().authResult, True)
        self.assertRaises(RuntimeError, connectionAt("auth").authResult, True)
        self.assertRaises(RuntimeError, connectionAt("request").authResult, True)

    def test_leftoverBeforeRequest(self):
        """leftover before the Request event raises RuntimeError."""
        conn = connectionAt("request")
        conn.receiveData(REQUEST_IPV4[:-1])
        conn.nextEvent()
        self.assertRaises(RuntimeError, conn.leftover)
        self.assertRaises(RuntimeError, SOCKS5ServerConnection().leftover)


class RoundTripTests(SynchronousTestCase):
    """What L{encodeAddress} writes, the request parser reads back."""

    def test_roundTrip(self):
        """Parsing a request built with encodeAddress gives back host and port."""
        table = [
            ("0.0.0.0", 0), ("192.0.2.1", 80), ("255.255.255.255", 65535),
            ("::1", 1080), ("2001:db8::8:800:200c:417a", 443), ("fe80::1", 256),
            ("example.com", 8080), ("xn--bcher-kva.de", 1),
            (LONGEST_VALID_NAME, 255),
        ]
        results = []
        for host, port in table:
            conn = connectionAt("request")
            conn.receiveData(requestBytes(encodeAddress(host, port)))
            event = conn.nextEvent()
            results.append((event.host, event.port))
        self.assertEqual(results, table)

    def test_roundTripUnicodeName(self):
        """
        A name sent as UTF-8 (as L{encodeAddress} writes a U-label) is read
        back as its canonical A-label form.
        """
        conn = connectionAt("request")
        conn.receiveData(requestBytes(encodeAddress("bücher.de", 65534)))
        event = conn.nextEvent()
        self.assertEqual((event.host, event.port), ("xn--bcher-kva.de", 65534))


class UDPHeaderTests(SynchronousTestCase):
    """
    L{socksrelay.wire.parseUDPHeader} and L{socksrelay.wire.encodeUDPHeader}:
    the C{RSV FRAG ATYP DST.ADDR DST.PORT} header of RFC 1928 section 7.
    """

    # Headers written out byte by byte, independently of the codec.
    IPV4 = b"\x00\x00\x00\x01\xc0\x00\x02\x01\x00\x35"
    IPV6 = b"\x00\x00\x00\x04\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\x01\xbb"
    IPV4_MAPPED = b"\x00\x00\x00\x04" + b"\x00" * 10 + b"\xff\xff\xc0\x00\x02\x01\x00\x35"
    NAME = b"\x00\x00\x00\x03\x0bexample.com\x1f\x90"
    PAYLOAD = b"\x00\x00\x00\x01payload that looks like another header"

    def parse(self, datagram):
        """Parse C{datagram} and return the header and the payload after it."""
        header = parseUDPHeader(datagram)
        return header, datagram[header.length :]

    def test_ipv4(self):
        """An IPv4 header gives ATYP 1, the address and port, and a length of 10."""
        header, payload = self.parse(self.IPV4 + self.PAYLOAD)
        self.assertEqual(
            (header.fragment, header.addressType, header.host, header.port, header.length),
            (0, AddressType.IPV4, "192.0.2.1", 53, 10),
        )
        self.assertEqual(payload, self.PAYLOAD)

    def test_ipv6(self):
        """An IPv6 header gives ATYP 4, the address and port, and a length of 22."""
        header, payload = self.parse(self.IPV6 + self.PAYLOAD)
        self.assertEqual(
            (header.fragment, header.addressType, header.host, header.port, header.length),
            (0, AddressType.IPV6, "2001:db8::1", 443, 22),
        )
        self.assertEqual(payload, self.PAYLOAD)

    def test_ipv4MappedIPv6(self):
        """An IPv4-mapped IPv6 destination is reported as the plain IPv4 address."""
        header, payload = self.parse(self.IPV4_MAPPED + self.PAYLOAD)
        self.assertEqual((header.host, header.port, header.length), ("192.0.2.1", 53, 22))
        self.assertEqual(payload, self.PAYLOAD)

    def test_name(self):
        """A name header gives ATYP 3, the name and port, and a length of 5 + name + 2."""
        header, payload = self.parse(self.NAME + self.PAYLOAD)
        self.assertEqual(
            (header.fragment, header.addressType, header.host, header.port, header.length),
            (0, AddressType.DOMAIN, "example.com", 8080, 18),
        )
        self.assertEqual(payload, self.PAYLOAD)

    def test_longestName(self):
        """
        The longest name DNS allows (253 bytes and a dot) is read whole and
        the payload starts right after its port.
        """
        name = (LONGEST_VALID_NAME + ".").encode("ascii")
        header, payload = self.parse(b"\x00\x00\x00\x03\xfe" + name + b"\x00\x01xyz")
        self.assertEqual(
            (header.host, header.port, header.length), (LONGEST_VALID_NAME, 1, 261)
        )
        self.assertEqual(payload, b"xyz")

    def test_headerOnly(self):
        """A header with no payload after it parses, with an empty payload."""
        for datagram in (self.IPV4, self.IPV6, self.NAME):
            header, payload = self.parse(datagram)
            self.assertEqual(header.length, len(datagram))
            self.assertEqual(payload, b"")

    def test_fragment(self):
        """The FRAG byte is reported as it was sent."""
        for frag in (1, 0x7F, 0x80, 0xFF):
            header, _ = self.parse(b"\x00\x00" + bytes([frag]) + self.IPV4[3:])
            self.assertEqual(header.fragment, frag)

    def test_truncated(self):
        """Every datagram shorter than a whole header raises ProtocolError."""
        for whole in (self.IPV4, self.IPV6, self.NAME):
            for size in range(len(whole)):
                self.assertRaises(ProtocolError, parseUDPHeader, whole[:size])

    def test_unknownAddressType(self):
        """An ATYP other than 1, 3 or 4 raises ProtocolError."""
        for atyp in (0, 2, 5, 0xFF):
            datagram = b"\x00\x00\x00" + bytes([atyp]) + self.IPV4[4:] + b"x" * 20
            self.assertRaises(ProtocolError, parseUDPHeader, datagram)

    def test_emptyName(self):
        """A name of length zero raises ProtocolError."""
        self.assertRaises(ProtocolError, parseUDPHeader, b"\x00\x00\x00\x03\x00\x00\x35data")

    def test_invalidUTF8Name(self):
        """A name that is not UTF-8 raises ProtocolError."""
        datagram = b"\x00\x00\x00\x03\x04ab\xff\xfe\x00\x35data"
        self.assertRaises(ProtocolError, parseUDPHeader, datagram)

    def test_nulInName(self):
        """A name holding a NUL byte raises ProtocolError."""
        datagram = b"\x00\x00\x00\x03\x04ab\x00c\x00\x35data"
        self.assertRaises(ProtocolError, parseUDPHeader, datagram)

    def test_encodeIPv4(self):
        """An IPv4 source encodes as RSV 0, FRAG 0, ATYP 1, four bytes and the port."""
        self.assertEqual(encodeUDPHeader("192.0.2.1", 53), self.IPV4)

    def test_encodeIPv4Mapped(self):
        """An IPv4-mapped IPv6 source encodes as ATYP 1 with the IPv4 address."""
        self.assertEqual(encodeUDPHeader("::ffff:192.0.2.1", 53), self.IPV4)

    def test_encodeIPv6(self):
        """An IPv6 source encodes as RSV 0, FRAG 0, ATYP 4, sixteen bytes and the port."""
        self.assertEqual(encodeUDPHeader("2001:db8::1", 443), self.IPV6)

    def test_roundTrip(self):
        """What encodeUDPHeader writes, parseUDPHeader reads back, with the right length."""
        table = [("0.0.0.0", 0), ("203.0.113.9", 65535), ("::1", 1), ("fe80::1", 5353)]
        for host, port in table:
            encoded = encodeUDPHeader(host, port)
            header, payload = self.parse(encoded + b"payload")
            self.assertEqual(
                (header.fragment, header.host, header.port, header.length),
                (0, host, port, len(encoded)),
            )
            self.assertEqual(payload, b"payload")

    def test_maxPayload(self):
        """MAX_UDP_PAYLOAD is the largest UDP payload over IPv4: 65535 - 20 - 8."""
        self.assertEqual(MAX_UDP_PAYLOAD, 65507)


class CanonicalNameTests(SynchronousTestCase):
    """
    An ATYP 3 name, in a request or a UDP header, comes out in its one
    canonical form; one that has none is refused with 0x04 at once (a UDP
    header with a ProtocolError, so that the datagram is dropped).
    """

    CONFUSABLES = (
        "\uff44\uff45\uff4e\uff49\uff45\uff44.test",
        "den\u00adied.test",
        "den\u200bied.test",
        "denied\u3002test",
        "DENIED.test.",
    )
    BAD = (
        b"a..b.test",
        b"a" * 64 + b".test",
        ("\u00fc" * 60 + ".test").encode("utf-8"),
        b".".join([b"a" * 63] * 4),
        b"den ied.test",
    )

    def request(self, name: bytes, command=Command.CONNECT):
        conn = connectionAt("request")
        conn.receiveData(requestBytes(b"\x03" + bytes([len(name)]) + name + b"\x00\x50", command))
        return conn.nextEvent()

    def test_requestConfusables(self):
        """
        Fullwidth letters, U+00AD, U+200B, U+3002, case and a trailing dot
        all give C{denied.test}, for every command.
        """
        for command in Command:
            for name in self.CONFUSABLES:
                event = self.request(name.encode("utf-8"), command)
                self.assertEqual(event.host, "denied.test", (command, name))

    def test_requestBadNames(self):
        """
        CONNECT, BIND and UDP ASSOCIATE with an empty label, a label over 63
        bytes, a long IDN, a name over 253 bytes or a space get 0x04 at
        once.
        """
        for command in Command:
            for name in self.BAD:
                e = self.assertRaises(ProtocolError, self.request, name, command)
                self.assertEqual((e.reply, e.response), (Reply.HOST_UNREACHABLE, REP_04))

    def test_udpHeaderConfusables(self):
        """A UDP header's name comes out as C{denied.test} too."""
        for name in self.CONFUSABLES:
            raw = name.encode("utf-8")
            header = parseUDPHeader(b"\x00\x00\x00\x03" + bytes([len(raw)]) + raw + b"\x00\x35")
            self.assertEqual(header.host, "denied.test", name)

    def test_udpHeaderBadNames(self):
        """A UDP header with a name that has no canonical form raises ProtocolError."""
        for name in self.BAD:
            datagram = b"\x00\x00\x00\x03" + bytes([len(name)]) + name + b"\x00\x35x"
            self.assertRaises(ProtocolError, parseUDPHeader, datagram)
