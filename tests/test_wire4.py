# -*- test-case-name: tests.test_wire4 -*-
"""
Tests for L{socksrelay.wire4}, the sans-I/O server side of SOCKS4 and its
SOCKS4a host-name extension.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.codectools import SingleRequestCodecTestsMixin

from socksrelay.wire import NEED_DATA, ProtocolError
from socksrelay.wire4 import (
    Command4,
    Reply4,
    SOCKS4Request,
    SOCKS4ServerConnection,
    encodeReply4,
)

# CONNECT 192.0.2.1:8080 as "alice"; the port is 0x1F90, big-endian.
CONNECT_IPV4 = b"\x04\x01\x1f\x90\xc0\x00\x02\x01alice\x00"
CONNECT_IPV4_EVENT = SOCKS4Request(Command4.CONNECT, "192.0.2.1", 8080, b"alice", False)
# A SOCKS4a CONNECT to example.com:443 as "bob": DSTIP 0.0.0.1.
CONNECT_4A = b"\x04\x01\x01\xbb\x00\x00\x00\x01bob\x00example.com\x00"
CONNECT_4A_EVENT = SOCKS4Request(Command4.CONNECT, "example.com", 443, b"bob", True)
# Looks like another SOCKS4 request and then an HTTP request, so it would be
# noticed if the codec tried to parse it instead of keeping it.
EARLY = b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00GET / HTTP/1.1\r\n\r\n"
# The whole CD 91 refusal: VN 0, CD 91, and a zero port and address.
REFUSAL = b"\x00\x5b" + b"\x00" * 6
# The longest name DNS allows (253 bytes) and a soft hyphen, which IDNA
# deletes: a 255-byte SOCKS4a name field that is a valid name.
LONGEST_VALID_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
LONGEST_NAME_FIELD = LONGEST_VALID_NAME.encode("ascii") + "\u00ad".encode("utf-8")


def request(command, port, ip, userid, name=None):
    """
    Return the bytes of a SOCKS4 request; with C{name}, a SOCKS4a one (the
    caller chooses C{ip}, so it can also build requests that are not 4a).
    """
    data = bytes([0x04, command]) + port.to_bytes(2, "big") + ip + userid + b"\x00"
    if name is not None:
        data += name + b"\x00"
    return data


def tr(testCase, data, expected):
    """
    Check that request C{data} parses as C{expected} fed whole, byte by byte,
    and followed by bytes that must be kept intact.
    """
    # (a) Whole.
    conn = SOCKS4ServerConnection()
    conn.receiveData(data)
    testCase.assertEqual(conn.nextEvent(), expected)
    testCase.assertIs(conn.nextEvent(), NEED_DATA)
    testCase.assertEqual(conn.leftover(), b"")

    # (b) One byte at a time.
    conn = SOCKS4ServerConnection()
    for i in range(len(data) - 1):
        conn.receiveData(data[i : i + 1])
        testCase.assertIs(conn.nextEvent(), NEED_DATA, f"after {i + 1} bytes")
    conn.receiveData(data[-1:])
    testCase.assertEqual(conn.nextEvent(), expected)
    testCase.assertEqual(conn.leftover(), b"")

    # (c) With trailing bytes.
    conn = SOCKS4ServerConnection()
    conn.receiveData(data + EARLY)
    testCase.assertEqual(conn.nextEvent(), expected)
    testCase.assertIs(conn.nextEvent(), NEED_DATA)
    testCase.assertEqual(conn.leftover(), EARLY)


def assertRefused(testCase, data, response=REFUSAL):
    """
    Assert that C{data}, fed whole, raises ProtocolError carrying C{response}.
    """
    conn = SOCKS4ServerConnection()
    conn.receiveData(data)
    e = testCase.assertRaises(ProtocolError, conn.nextEvent)
    testCase.assertEqual(e.response, response)
    return e


class FramingTests(SynchronousTestCase):
    """Every kind of request parses whole, byte by byte, and with bytes after it."""

    def test_connectIPv4(self):
        """A SOCKS4 CONNECT yields the dotted address, the port and the USERID."""
        tr(self, CONNECT_IPV4, CONNECT_IPV4_EVENT)

    def test_bindIPv4(self):
        """A SOCKS4 BIND yields a BIND request for the address and port sent."""
        data = request(Command4.BIND, 21, b"\xcb\x00\x71\x05", b"carol")
        tr(self, data, SOCKS4Request(Command4.BIND, "203.0.113.5", 21, b"carol", False))

    def test_connect4a(self):
        """A SOCKS4a CONNECT yields the host name and is marked as 4a."""
        tr(self, CONNECT_4A, CONNECT_4A_EVENT)

    def test_bind4a(self):
        """A SOCKS4a BIND yields a BIND request for the host name."""
        data = request(Command4.BIND, 6667, b"\x00\x00\x00\xff", b"dave", b"irc.example")
        tr(self, data, SOCKS4Request(Command4.BIND, "irc.example", 6667, b"dave", True))

    def test_emptyUserid(self):
        """An empty USERID (just its NUL) is accepted as b""."""
        data = request(Command4.CONNECT, 80, b"\x0a\x00\x00\x01", b"")
        tr(self, data, SOCKS4Request(Command4.CONNECT, "10.0.0.1", 80, b"", False))

    def test_emptyUserid4a(self):
        """An empty USERID before a SOCKS4a name is accepted as b""."""
        data = request(Command4.CONNECT, 80, b"\x00\x00\x00\x07", b"", b"example.org")
        tr(self, data, SOCKS4Request(Command4.CONNECT, "example.org", 80, b"", True))

    def test_longestUserid(self):
        """A 255-byte USERID is accepted whole, including non-ASCII bytes."""
        userid = b"u" * 254 + b"\xff"
        data = request(Command4.CONNECT, 1, b"\xc0\x00\x02\x01", userid)
        tr(self, data, SOCKS4Request(Command4.CONNECT, "192.0.2.1", 1, userid, False))

    def test_longestUseridAndName(self):
        """A 255-byte USERID and a 255-byte SOCKS4a name are both accepted."""
        userid, name = b"u" * 255, LONGEST_NAME_FIELD
        self.assertEqual(len(name), 255)
        data = request(Command4.CONNECT, 65535, b"\x00\x00\x00\x01", userid, name)
        expected = SOCKS4Request(Command4.CONNECT, LONGEST_VALID_NAME, 65535, userid, True)
        tr(self, data, expected)

    def test_utf8Name(self):
        """A SOCKS4a name is decoded as UTF-8 and comes out as its A-label form."""
        data = request(Command4.CONNECT, 80, b"\x00\x00\x00\x01", b"", "bücher.de".encode())
        tr(self, data, SOCKS4Request(Command4.CONNECT, "xn--bcher-kva.de", 80, b"", True))


class SOCKS4aDetectionTests(SynchronousTestCase):
    """DSTIP 0.0.0.x with x != 0, and only that, announces a SOCKS4a name."""

    def test_zeroAddressIsPlainSOCKS4(self):
        """DSTIP 0.0.0.0 is plain SOCKS4: no name is read and the host is 0.0.0.0."""
        data = request(Command4.CONNECT, 80, b"\x00\x00\x00\x00", b"user")
        expected = SOCKS4Request(Command4.CONNECT, "0.0.0.0", 80, b"user", False)
        tr(self, data, expected)

    def test_zeroAddressKeepsFollowingBytes(self):
        """After DSTIP 0.0.0.0 the bytes after the USERID are leftover, not a name."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(request(Command4.CONNECT, 80, b"\x00\x00\x00\x00", b"") + b"name\x00")
        self.assertEqual(conn.nextEvent().host, "0.0.0.0")
        self.assertEqual(conn.leftover(), b"name\x00")

    def test_addressOneIs4a(self):
        """DSTIP 0.0.0.1 is SOCKS4a: the request waits for the name and its NUL."""
        data = request(Command4.CONNECT, 80, b"\x00\x00\x00\x01", b"user")
        conn = SOCKS4ServerConnection()
        conn.receiveData(data)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"example.com\x00")
        self.assertEqual(
            conn.nextEvent(),
            SOCKS4Request(Command4.CONNECT, "example.com", 80, b"user", True),
        )

    def test_otherLowAddressesArePlain(self):
        """Addresses with a nonzero byte among the first three are plain IPv4."""
        hosts = []
        for ip in (b"\x00\x00\x01\x00", b"\x00\x01\x00\x01", b"\x01\x00\x00\x01"):
            conn = SOCKS4ServerConnection()
            conn.receiveData(request(Command4.CONNECT, 80, ip, b""))
            event = conn.nextEvent()
            hosts.append((event.host, event.socks4a))
        self.assertEqual(
            hosts, [("0.0.1.0", False), ("0.1.0.1", False), ("1.0.0.1", False)]
        )


class IncrementalTests(SynchronousTestCase):
    """Requests split across reads at the awkward places."""

    def test_nameSplitAcrossWrites(self):
        """A SOCKS4a name whose second NUL arrives in a later write is awaited, then read."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(b"\x04\x01\x01\xbb\x00\x00\x00\x01bob\x00exam")
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"ple.com")
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"\x00")
        self.assertEqual(conn.nextEvent(), CONNECT_4A_EVENT)
        self.assertEqual(conn.leftover(), b"")

    def test_useridSplitAcrossWrites(self):
        """A USERID split before its NUL is awaited, then read whole."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(CONNECT_IPV4[:10])
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(CONNECT_IPV4[10:])
        self.assertEqual(conn.nextEvent(), CONNECT_IPV4_EVENT)

    def test_secondNulWithTrailingBytes(self):
        """The last write may hold the second NUL and payload; the payload is kept."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(CONNECT_4A[:-5])
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(CONNECT_4A[-5:] + b"payload")
        self.assertEqual(conn.nextEvent(), CONNECT_4A_EVENT)
        self.assertEqual(conn.leftover(), b"payload")

    def test_portBigEndian(self):
        """The port is read in network byte order: 1F 90 is 8080, not 36895."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(b"\x04\x01\x1f\x90\x0a\x00\x00\x01\x00")
        self.assertEqual(conn.nextEvent().port, 8080)





class SharedPlumbingTests(SingleRequestCodecTestsMixin, SynchronousTestCase):
    """The buffer plumbing shared with the other single-request codecs."""

    codecFactory = SOCKS4ServerConnection
    message = CONNECT_4A
    requestState = "request"


class FieldLengthTests(SynchronousTestCase):
    """USERID and SOCKS4a names are capped at 255 bytes."""

    def test_useridTooLong(self):
        """A 256-byte USERID is refused with CD 91."""
        assertRefused(self, request(Command4.CONNECT, 80, b"\x7f\x00\x00\x01", b"u" * 256))

    def test_nameTooLong(self):
        """A 256-byte SOCKS4a name is refused with CD 91."""
        data = request(Command4.CONNECT, 80, b"\x00\x00\x00\x01", b"", b"n" * 256)
        assertRefused(self, data)

    def test_useridRefusedAtByte256(self):
        """A USERID is refused as soon as its 256th byte arrives without a NUL."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 255)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"u")
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertEqual(e.response, REFUSAL)

    def test_nameRefusedAtByte256(self):
        """A SOCKS4a name is refused as soon as its 256th byte arrives without a NUL."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(b"\x04\x01\x00\x50\x00\x00\x00\x01user\x00" + b"n" * 255)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"n")
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertEqual(e.response, REFUSAL)

    def test_useridTooLongByteByByte(self):
        """Fed one byte at a time, an endless USERID is refused at its 256th byte."""
        conn = SOCKS4ServerConnection()
        header = b"\x04\x01\x00\x50\x7f\x00\x00\x01"
        for i, byte in enumerate(header + b"u" * 255):
            conn.receiveData(bytes([byte]))
            self.assertIs(conn.nextEvent(), NEED_DATA, f"after {i + 1} bytes")
        conn.receiveData(b"u")
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertEqual(e.response, REFUSAL)


class RefusalTests(SynchronousTestCase):
    """Malformed and unsupported requests, and what is answered to them."""

    def test_unknownCommand(self):
        """Commands other than CONNECT and BIND are refused with CD 91."""
        for command in (0x00, 0x03, 0x80, 0xFF):
            assertRefused(self, request(command, 80, b"\x7f\x00\x00\x01", b"user"))

    def test_unknownCommandRefusedBeforeUserid(self):
        """An unknown command is refused once the 8-byte header is in, without the USERID."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(b"\x04\x09\x00\x50\x7f\x00\x00")
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"\x01")
        e = self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertEqual(e.response, REFUSAL)

    def test_notSocks4(self):
        """A first byte other than 0x04 is an error with nothing to answer."""
        for first in (b"\x05", b"\x00", b"\x03", b"G"):
            conn = SOCKS4ServerConnection()
            conn.receiveData(first)
            e = self.assertRaises(ProtocolError, conn.nextEvent)
            self.assertEqual(e.response, b"")

    def test_notSocks4WholeRequest(self):
        """A whole SOCKS4-shaped request with version 5 gets an empty response."""
        assertRefused(self, b"\x05" + CONNECT_IPV4[1:], b"")

    def test_emptyName(self):
        """An empty SOCKS4a name (two NULs in a row) is refused with CD 91."""
        assertRefused(self, request(Command4.CONNECT, 80, b"\x00\x00\x00\x01", b"u", b""))

    def test_nonUTF8Name(self):
        """A SOCKS4a name that is not UTF-8 is refused with CD 91."""
        data = request(Command4.CONNECT, 80, b"\x00\x00\x00\x01", b"u", b"ab\xff\xfe")
        assertRefused(self, data)

    def test_errorClosesConnection(self):
        """After a ProtocolError nothing more is parsed, even a valid request."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(b"\x04\x09\x00\x50\x7f\x00\x00\x01\x00")
        self.assertRaises(ProtocolError, conn.nextEvent)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(CONNECT_IPV4)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        self.assertRaises(RuntimeError, conn.leftover)


class EncodeReplyTests(SynchronousTestCase):
    """L{encodeReply4}: VN 0, CD, DSTPORT and DSTIP."""

    def test_codes(self):
        """The reply codes are the CD values 90 to 93 and the commands 1 and 2."""
        self.assertEqual([int(r) for r in Reply4], [90, 91, 92, 93])
        self.assertEqual((int(Command4.CONNECT), int(Command4.BIND)), (1, 2))

    def test_grantedIPv4(self):
        """A grant carries the IPv4 address and the port in network byte order."""
        self.assertEqual(
            encodeReply4(Reply4.GRANTED, "192.0.2.1", 8080),
            b"\x00\x5a\x1f\x90\xc0\x00\x02\x01",
        )

    def test_ipv6IsZeros(self):
        """An IPv6 address cannot be carried, so DSTIP is all zeros (the port is kept)."""
        self.assertEqual(
            encodeReply4(Reply4.GRANTED, "2001:db8::1", 443),
            b"\x00\x5a\x01\xbb\x00\x00\x00\x00",
        )

    def test_scopedIPv6IsZeros(self):
        """A scoped link-local IPv6 address also gives an all-zero DSTIP."""
        self.assertEqual(
            encodeReply4(Reply4.GRANTED, "fe80::1%eth0", 22),
            b"\x00\x5a\x00\x16\x00\x00\x00\x00",
        )

    def test_ipv4MappedIPv6(self):
        """An IPv4-mapped IPv6 address is sent as its four IPv4 bytes."""
        self.assertEqual(
            encodeReply4(Reply4.GRANTED, "::ffff:198.51.100.7", 1080),
            b"\x00\x5a\x04\x38\xc6\x33\x64\x07",
        )

    def test_nameIsZeros(self):
        """A host name is not an address, so DSTIP is all zeros."""
        self.assertEqual(
            encodeReply4(Reply4.GRANTED, "example.com", 80),
            b"\x00\x5a\x00\x50\x00\x00\x00\x00",
        )

    def test_refusals(self):
        """Refusals default to a zero port and address and accept plain ints."""
        self.assertEqual(encodeReply4(Reply4.REJECTED), REFUSAL)
        self.assertEqual(encodeReply4(92), b"\x00\x5c" + b"\x00" * 6)
        self.assertEqual(encodeReply4(Reply4.IDENTD_MISMATCH), b"\x00\x5d" + b"\x00" * 6)


class SizeCapTests(SynchronousTestCase):
    """The buffer holds at most the largest request plus maxEarlyData bytes."""

    # The largest request: 8-byte header, 255-byte USERID and name, two NULs.
    LARGEST = request(
        Command4.CONNECT, 80, b"\x00\x00\x00\x01", b"u" * 255, LONGEST_NAME_FIELD
    )

    def test_capAccepted(self):
        """The largest request followed by exactly maxEarlyData bytes is kept."""
        conn = SOCKS4ServerConnection(maxEarlyData=100)
        conn.receiveData(self.LARGEST + b"x" * 100)
        self.assertEqual(conn.nextEvent().host, LONGEST_VALID_NAME)
        self.assertEqual(conn.leftover(), b"x" * 100)

    def test_capExceededOneCall(self):
        """One byte over the cap in a single call raises ProtocolError."""
        conn = SOCKS4ServerConnection(maxEarlyData=100)
        self.assertRaises(ProtocolError, conn.receiveData, self.LARGEST + b"x" * 101)

    def test_capExceededAcrossCalls(self):
        """The cap counts bytes from several calls together."""
        conn = SOCKS4ServerConnection(maxEarlyData=100)
        conn.receiveData(CONNECT_IPV4)
        conn.receiveData(b"x" * (len(self.LARGEST) + 100 - len(CONNECT_IPV4)))
        self.assertRaises(ProtocolError, conn.receiveData, b"x")

    def test_defaultCap(self):
        """By default 256 KiB of early data may follow the largest request, and no more."""
        conn = SOCKS4ServerConnection()
        conn.receiveData(self.LARGEST + b"x" * (256 * 1024))
        self.assertRaises(ProtocolError, conn.receiveData, b"x")

    def test_closedAfterCap(self):
        """After the cap is hit, events stop and further data is ignored."""
        conn = SOCKS4ServerConnection(maxEarlyData=0)
        self.assertRaises(ProtocolError, conn.receiveData, CONNECT_IPV4 + b"x" * 1000)
        self.assertIs(conn.nextEvent(), NEED_DATA)
        conn.receiveData(b"x" * 10000)
        self.assertIs(conn.nextEvent(), NEED_DATA)


class CanonicalNameTests(SynchronousTestCase):
    """
    A SOCKS4a name comes out in its one canonical form; one that has none is
    refused with CD 91 at once.
    """

    def parse(self, name):
        conn = SOCKS4ServerConnection()
        conn.receiveData(request(Command4.CONNECT, 80, b"\x00\x00\x00\x01", b"", name))
        return conn.nextEvent()

    def test_confusables(self):
        """
        Fullwidth letters, U+00AD, U+200B, U+3002, case and a trailing dot
        all give C{denied.test}.
        """
        for name in (
            "\uff44\uff45\uff4e\uff49\uff45\uff44.test",
            "den\u00adied.test",
            "den\u200bied.test",
            "denied\u3002test",
            "DENIED.test.",
        ):
            self.assertEqual(self.parse(name.encode("utf-8")).host, "denied.test", name)

    def test_badNames(self):
        """
        An empty label, a label over 63 bytes, a long IDN label and a name
        over 253 bytes are refused with CD 91.
        """
        for name in (
            b"a..b.test",
            b"a" * 64 + b".test",
            ("\u00fc" * 60 + ".test").encode("utf-8"),
            b".".join([b"a" * 63] * 4),
        ):
            e = self.assertRaises(ProtocolError, self.parse, name)
            self.assertEqual(e.response, REFUSAL, name)
