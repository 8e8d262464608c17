"""
Property-based tests of the three sans-I/O codecs: L{socksrelay.wire}
(SOCKS5 with RFC 1929, and the UDP request header) and L{socksrelay.wire4}
(SOCKS4/4a); L{tests.test_properties_http} has those of
L{socksrelay.httpwire}.

For any bytes in any split a codec yields events or a L{ProtocolError},
never another exception, and never holds more than its cap; the same bytes
whole or split give the same events; what the encoders write, the parsers
read back field for field.

The examples are derandomised (a fixed sequence, no example database), so a
run in CI is the same as a run here.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.wire import (
    canonicalHost,
    MAX_HANDSHAKE_BUFFER,
    AddressType,
    Command,
    Greeting,
    ProtocolError,
    Reply,
    Request,
    SOCKS5ServerConnection,
    UsernamePassword,
    encodeReply,
    encodeUDPHeader,
    normaliseAddress,
    parseUDPHeader,
)
from socksrelay.wire4 import (
    HEADER,
    MAX_FIELD,
    Command4,
    Reply4,
    SOCKS4Request,
    SOCKS4ServerConnection,
    encodeReply4,
)
from tests.propertytools import (
    canonicalNames,
    BOUNDED,
    GOOD_USER,
    SplitInvarianceMixin,
    cuts,
    edits,
    ipv4s,
    ipv6s,
    mutate,
    names,
    noDriver,
    ports,
    run,
    shortBytes,
    socks5Driver,
    splitAt,
)


@st.composite
def socks5Streams(draw: Any) -> bytes:
    """
    A SOCKS5 greeting, RFC 1929 request and request with fields drawn from
    small sets that reach every branch, then mutated, then trailing bytes.
    """
    methods = draw(st.lists(st.sampled_from([0, 1, 2, 0x80, 0xFF]), max_size=5))
    greeting = bytes([5, len(methods), *methods])
    user = draw(st.sampled_from([GOOD_USER, b"", b"bob"]))
    password = draw(shortBytes)
    auth = bytes([draw(st.sampled_from([1, 1, 5])), len(user)]) + user
    auth += bytes([len(password)]) + password
    command = draw(st.sampled_from([1, 2, 3, 0, 9]))
    atyp = draw(st.sampled_from([1, 3, 4, 0, 2]))
    if atyp == 3:
        name = draw(names | st.binary(max_size=20))
        raw = name.encode("utf-8") if isinstance(name, str) else name
        address = bytes([len(raw)]) + raw
    else:
        address = draw(st.binary(min_size=4, max_size=16))
    request = bytes([draw(st.sampled_from([5, 5, 4])), command, 0, atyp])
    request += address + struct.pack("!H", draw(ports))
    stream = greeting + (auth if 2 in methods else b"") + request
    return mutate(stream, draw(edits)) + draw(shortBytes)


@st.composite
def socks4Streams(draw: Any) -> bytes:
    """
    SOCKS4 and 4a requests with drawn fields (USERID and name lengths around
    the 255-byte cap), mutated, then trailing bytes.
    """
    command = draw(st.sampled_from([1, 2, 0, 3]))
    ip = draw(
        st.sampled_from([b"\x00\x00\x00\x01", b"\x00\x00\x00\x00", b"\x7f\x00\x00\x01"])
        | st.binary(min_size=4, max_size=4)
    )
    userid = draw(st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"u")))
    stream = bytes([draw(st.sampled_from([4, 4, 5])), command])
    stream += struct.pack("!H", draw(ports)) + ip + userid + b"\x00"
    if ip[:3] == b"\x00\x00\x00":
        name = draw(names | st.binary(max_size=300))
        raw = name.encode("utf-8") if isinstance(name, str) else name
        stream += raw + draw(st.sampled_from([b"\x00", b""]))
    return mutate(stream, draw(edits)) + draw(shortBytes)


class SOCKS5PropertyTests(SplitInvarianceMixin, SynchronousTestCase):
    """
    L{SOCKS5ServerConnection}, with a server that chooses RFC 1929 when
    offered.
    """

    codecFactory = SOCKS5ServerConnection
    driver = staticmethod(socks5Driver)
    cap = MAX_HANDSHAKE_BUFFER

    @BOUNDED
    @given(st.binary(max_size=600), cuts)
    def test_anyBytesAnySplit(self, data: bytes, cutPoints: list[int]) -> None:
        """
        Arbitrary bytes give the same events, error and leftover whole or
        split, and nothing but L{ProtocolError} escapes.
        """
        self.check(data, cutPoints)

    @BOUNDED
    @given(socks5Streams(), cuts)
    def test_mutatedHandshakesAnySplit(self, data: bytes, cutPoints: list[int]) -> None:
        """
        Mutated greeting + authentication + request streams give the same
        outcome whole, split, and byte by byte.
        """
        self.check(data, cutPoints)
        self.checkBytewise(data)

    @BOUNDED
    @given(st.integers(0, 2 * MAX_HANDSHAKE_BUFFER), st.integers(1, 8))
    def test_capHolds(self, size: int, pieces: int) -> None:
        """
        However many bytes follow a request, and in however many reads, the
        codec never holds more than L{MAX_HANDSHAKE_BUFFER}: it raises
        L{ProtocolError} instead.
        """
        data = b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
        data += b"x" * size
        step = len(data) // pieces + 1
        run(
            SOCKS5ServerConnection(),
            [data[i : i + step] for i in range(0, len(data), step)],
            socks5Driver,
            self.cap,
            self,
        )

    @BOUNDED
    @given(
        st.lists(st.integers(0, 255), min_size=1, max_size=255),
        st.binary(min_size=1, max_size=255),
        st.binary(max_size=255),
        st.sampled_from(list(Command)),
        st.one_of(ipv4s, ipv6s, names),
        ports,
        cuts,
    )
    def test_roundTrip(
        self,
        methods: list[int],
        user: bytes,
        password: bytes,
        command: Command,
        host: str,
        port: int,
        cutPoints: list[int],
    ) -> None:
        """
        A greeting, RFC 1929 request and request encoded from fields parse,
        in any split, to those fields; an address that is an IP literal
        comes back in its normal text form with its own address type.
        """
        from tests.e2e import encodeGreeting, encodeUserPass

        methods = [m for m in methods if m != 2] + [2]
        request = b"\x05" + bytes([command, 0]) + encodeReply(0, host, port)[3:]
        data = encodeGreeting(methods) + encodeUserPass(user, password) + request
        events, error, leftover = run(
            SOCKS5ServerConnection(), splitAt(data, cutPoints), socks5Driver, self.cap, self
        )
        expected: list[Any] = [Greeting(tuple(methods)), UsernamePassword(user, password)]
        if user == GOOD_USER:
            atyp = AddressType(request[3])
            expected.append(Request(command, atyp, canonicalHost(host), port))
        self.assertEqual((events, error), (expected, None))
        self.assertEqual(leftover, b"" if user == GOOD_USER else None)


class UDPHeaderPropertyTests(SynchronousTestCase):
    """
    L{parseUDPHeader}, L{encodeUDPHeader} and the address part of
    L{encodeReply}.
    """

    @BOUNDED
    @given(st.binary(max_size=300))
    def test_anyDatagram(self, datagram: bytes) -> None:
        """
        Any datagram parses to a header that lies inside it, or raises
        L{ProtocolError}.
        """
        try:
            header = parseUDPHeader(datagram)
        except ProtocolError:
            return
        self.assertLessEqual(header.length, len(datagram))
        self.assertEqual(header.fragment, datagram[2])
        self.assertIn(header.port, range(65536))

    @BOUNDED
    @given(st.one_of(ipv4s, ipv6s, canonicalNames), ports, st.binary(max_size=64))
    def test_roundTrip(self, host: str, port: int, payload: bytes) -> None:
        """
        A header from L{encodeUDPHeader} parses back to its address, port and
        length, and the payload follows it untouched.
        """
        header = encodeUDPHeader(host, port)
        parsed = parseUDPHeader(header + payload)
        self.assertEqual(
            (parsed.fragment, parsed.host, parsed.port, parsed.length),
            (0, canonicalHost(host), port, len(header)),
        )
        self.assertEqual((header + payload)[parsed.length :], payload)

    @BOUNDED
    @given(st.sampled_from(list(Reply)), st.one_of(ipv4s, ipv6s, canonicalNames), ports)
    def test_replyRoundTrip(self, reply: Reply, host: str, port: int) -> None:
        """
        A SOCKS5 reply carries its code and an address and port that parse
        back (the address part of a reply is that of a UDP header).
        """
        encoded = encodeReply(reply, host, port)
        self.assertEqual(encoded[:3], bytes([5, reply, 0]))
        parsed = parseUDPHeader(b"\x00\x00\x00" + encoded[3:])
        self.assertEqual(
            (parsed.host, parsed.port, parsed.length),
            (canonicalHost(host), port, len(encoded)),
        )


class SOCKS4PropertyTests(SplitInvarianceMixin, SynchronousTestCase):
    """
    L{SOCKS4ServerConnection}.
    """

    codecFactory = staticmethod(lambda: SOCKS4ServerConnection(maxEarlyData=1024))
    cap = HEADER + 2 * (MAX_FIELD + 1) + 1024

    @BOUNDED
    @given(st.binary(max_size=700), cuts)
    def test_anyBytesAnySplit(self, data: bytes, cutPoints: list[int]) -> None:
        """
        Arbitrary bytes give the same outcome whole or split, and nothing but
        L{ProtocolError} escapes.
        """
        self.check(data, cutPoints)

    @BOUNDED
    @given(socks4Streams(), cuts)
    def test_mutatedRequestsAnySplit(self, data: bytes, cutPoints: list[int]) -> None:
        """
        Mutated SOCKS4/4a requests give the same outcome whole, split, and
        byte by byte.
        """
        self.check(data, cutPoints)
        self.checkBytewise(data)

    @BOUNDED
    @given(st.integers(0, 4096), st.integers(1, 8))
    def test_capHolds(self, size: int, pieces: int) -> None:
        """
        Early data past the cap raises L{ProtocolError}; the codec never
        holds more than its cap.
        """
        data = b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00" + b"x" * size
        step = len(data) // pieces + 1
        run(
            self.codecFactory(),
            [data[i : i + step] for i in range(0, len(data), step)],
            noDriver,
            self.cap,
            self,
        )

    @BOUNDED
    @given(
        st.sampled_from(list(Command4)),
        ports,
        st.binary(max_size=MAX_FIELD).map(lambda b: b.replace(b"\x00", b"u")),
        st.one_of(ipv4s, canonicalNames.filter(lambda n: "\x00" not in n)),
        st.booleans(),
        cuts,
    )
    def test_roundTrip(
        self,
        command: Command4,
        port: int,
        userid: bytes,
        host: str,
        socks4a: bool,
        cutPoints: list[int],
    ) -> None:
        """
        A SOCKS4 request (IPv4) or SOCKS4a request (a name) encoded from
        fields parses, in any split, to those fields.
        """
        try:
            ip = ipaddress.IPv4Address(host).packed
            socks4a = ip[:3] == b"\x00\x00\x00" and ip[3] != 0
            tail = b""
            if socks4a:
                tail = host.encode() + b"\x00"
        except ValueError:
            ip = b"\x00\x00\x00\x07"
            tail = host.encode("utf-8") + b"\x00"
            socks4a = True
        data = bytes([4, command]) + struct.pack("!H", port) + ip + userid + b"\x00"
        data += tail
        events, error, leftover = run(
            self.codecFactory(), splitAt(data, cutPoints), noDriver, self.cap, self
        )
        self.assertEqual(
            (events, error, leftover),
            ([SOCKS4Request(command, canonicalHost(host), port, userid, socks4a)], None, b""),
        )

    @BOUNDED
    @given(st.sampled_from(list(Reply4)), st.one_of(ipv4s, ipv6s, names), ports)
    def test_replyRoundTrip(self, reply: Reply4, host: str, port: int) -> None:
        """
        A SOCKS4 reply is 8 bytes, VN 0, its code and port, and the address
        if it is IPv4 (or IPv4-mapped), else 0.0.0.0.
        """
        encoded = encodeReply4(reply, host, port)
        try:
            address = ipaddress.ip_address(normaliseAddress(host))
        except ValueError:
            address = None
        ip = (
            str(address)
            if isinstance(address, ipaddress.IPv4Address)
            else "0.0.0.0"
        )
        self.assertEqual(
            (len(encoded), encoded[0], encoded[1], struct.unpack("!H", encoded[2:4])[0],
             str(ipaddress.IPv4Address(encoded[4:8]))),
            (8, 0, reply, port, ip),
        )
