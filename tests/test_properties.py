"""
Property-based tests of the three sans-I/O codecs: L{socksrelay.wire}
(SOCKS5 with RFC 1929, and the UDP request header), L{socksrelay.wire4}
(SOCKS4/4a) and L{socksrelay.httpwire} (HTTP request heads).

For any bytes in any split a codec yields events or a L{ProtocolError},
never another exception, and never holds more than its cap; the same bytes
whole or split give the same events; what the encoders write, the parsers
read back field for field.

The examples are derandomised (a fixed sequence, no example database), so a
run in CI is the same as a run here.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.httpwire import (
    MAX_HEAD,
    HTTPRequestHead,
    HTTPServerConnection,
    parseAuthority,
    parseBasicCredentials,
)
from socksrelay.wire import (
    MAX_HANDSHAKE_BUFFER,
    NEED_DATA,
    AddressType,
    AuthMethod,
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

#: Bounded and reproducible: a fixed example sequence, no database.
BOUNDED = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: The user the SOCKS5 driver accepts.
GOOD_USER = b"alice"


# -- driving a codec ----------------------------------------------------------


def socks5Driver(conn: SOCKS5ServerConnection, event: Any) -> None:
    """
    Answer SOCKS5 events as a server would, deterministically: username and
    password if offered, else no authentication if offered, else none
    acceptable; only L{GOOD_USER} passes.
    """
    if isinstance(event, Greeting):
        if AuthMethod.USERNAME_PASSWORD in event.methods:
            conn.chooseMethod(AuthMethod.USERNAME_PASSWORD)
        elif AuthMethod.NO_AUTHENTICATION in event.methods:
            conn.chooseMethod(AuthMethod.NO_AUTHENTICATION)
        else:
            conn.chooseMethod(AuthMethod.NO_ACCEPTABLE_METHODS)
    elif isinstance(event, UsernamePassword):
        conn.authResult(event.username == GOOD_USER)


def noDriver(conn: Any, event: Any) -> None:
    """
    The single-request codecs need no answer between events.
    """


def run(
    codec: Any,
    chunks: list[bytes],
    driver: Callable[[Any, Any], None],
    cap: int,
    case: SynchronousTestCase,
) -> tuple[list[Any], bytes | None, bytes | None]:
    """
    Feed C{chunks} to C{codec} one by one, pulling events after each and
    answering them with C{driver}; only L{ProtocolError} may escape the
    codec, and the codec never holds more than C{cap} bytes.

    @return: the events, the response of the L{ProtocolError} (or C{None}),
        and the leftover bytes if the codec finished (else C{None}).
    """
    events: list[Any] = []
    for chunk in chunks:
        try:
            codec.receiveData(chunk)
            case.assertLessEqual(codec.buffered, cap)
            while True:
                event = codec.nextEvent()
                if event is NEED_DATA:
                    break
                events.append(event)
                driver(codec, event)
        except ProtocolError as e:
            case.assertIsInstance(e.response, bytes)
            return events, e.response, None
    return events, None, codec.leftover() if codec.done else None


def splitAt(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{data} cut at the given offsets (taken modulo its length, sorted).
    """
    if not data:
        return [data]
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [data]


# -- strategies ---------------------------------------------------------------

cuts = st.lists(st.integers(min_value=0, max_value=4096), max_size=12)
ports = st.integers(min_value=0, max_value=65535)
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
#: Names as a client may send them: ASCII labels, or any UTF-8 without NUL.
names = st.one_of(
    st.from_regex(r"\A[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}\Z"),
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=40,
    ),
).filter(lambda n: 0 < len(n.encode("utf-8")) <= 255)
shortBytes = st.binary(max_size=40)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """
    Apply C{(kind, position, value)} edits: 0 replaces a byte, 1 inserts one,
    2 deletes one, 3 truncates.
    """
    buf = bytearray(data)
    for kind, position, value in edits:
        if not buf:
            buf.append(value)
            continue
        i = position % len(buf)
        if kind == 0:
            buf[i] = value
        elif kind == 1:
            buf.insert(i, value)
        elif kind == 2:
            del buf[i]
        else:
            del buf[i:]
    return bytes(buf)


edits = st.lists(
    st.tuples(
        st.integers(0, 3), st.integers(0, 1024), st.integers(0, 255)
    ),
    max_size=4,
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


headerNames = st.from_regex(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}\Z")
headerValues = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=30,
).map(lambda v: v.strip(" \t"))
targets = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, blacklist_characters="\x7f"),
    min_size=1,
    max_size=40,
)
lineEnds = st.sampled_from(["\r\n", "\n"])


@st.composite
def httpHeads(draw: Any) -> tuple[str, str, str, list[tuple[str, str]], bytes]:
    """
    A well-formed request head with CRLF, LF or mixed line ends: its fields
    and its bytes.
    """
    method = draw(st.sampled_from(["CONNECT", "GET", "POST"]) | headerNames)
    target = draw(targets)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    headers = draw(st.lists(st.tuples(headerNames, headerValues), max_size=6))
    text = f"{method} {target} {version}" + draw(lineEnds)
    for name, value in headers:
        text += f"{name}:{draw(st.sampled_from(['', ' ', chr(9)]))}{value}"
        text += draw(lineEnds)
    text += draw(lineEnds)
    return method, target, version, headers, text.encode("latin-1")


@st.composite
def httpStreams(draw: Any) -> bytes:
    """
    Request heads (well-formed, then mutated), then trailing bytes.
    """
    raw = draw(httpHeads())[4]
    return mutate(raw, draw(edits)) + draw(shortBytes)


# -- the properties -----------------------------------------------------------


class SplitInvarianceMixin:
    """
    The properties every codec shares.  Set C{codecFactory}, C{driver},
    C{cap} and C{streams}.
    """

    codecFactory: Callable[[], Any]
    driver = staticmethod(noDriver)
    cap: int

    def check(self, data: bytes, cutPoints: list[int]) -> None:
        whole = run(self.codecFactory(), [data], self.driver, self.cap, self)
        split = run(
            self.codecFactory(), splitAt(data, cutPoints), self.driver, self.cap, self
        )
        self.assertEqual(whole, split)

    def checkBytewise(self, data: bytes) -> None:
        whole = run(self.codecFactory(), [data], self.driver, self.cap, self)
        bytewise = [data[i : i + 1] for i in range(len(data))]
        self.assertEqual(
            whole, run(self.codecFactory(), bytewise, self.driver, self.cap, self)
        )


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
            expected.append(Request(command, atyp, normaliseAddress(host), port))
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
    @given(st.one_of(ipv4s, ipv6s, names), ports, st.binary(max_size=64))
    def test_roundTrip(self, host: str, port: int, payload: bytes) -> None:
        """
        A header from L{encodeUDPHeader} parses back to its address, port and
        length, and the payload follows it untouched.
        """
        header = encodeUDPHeader(host, port)
        parsed = parseUDPHeader(header + payload)
        self.assertEqual(
            (parsed.fragment, parsed.host, parsed.port, parsed.length),
            (0, normaliseAddress(host), port, len(header)),
        )
        self.assertEqual((header + payload)[parsed.length :], payload)

    @BOUNDED
    @given(st.sampled_from(list(Reply)), st.one_of(ipv4s, ipv6s, names), ports)
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
            (normaliseAddress(host), port, len(encoded)),
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
        st.one_of(ipv4s, names.filter(lambda n: "\x00" not in n)),
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
            ([SOCKS4Request(command, host, port, userid, socks4a)], None, b""),
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


class HTTPPropertyTests(SplitInvarianceMixin, SynchronousTestCase):
    """
    L{HTTPServerConnection}, L{parseAuthority} and L{parseBasicCredentials}.
    """

    codecFactory = staticmethod(lambda: HTTPServerConnection(maxEarlyData=1024))
    cap = MAX_HEAD + 1024

    @BOUNDED
    @given(st.binary(max_size=600), cuts)
    def test_anyBytesAnySplit(self, data: bytes, cutPoints: list[int]) -> None:
        """
        Arbitrary bytes give the same outcome whole or split, and nothing but
        L{ProtocolError} escapes.
        """
        self.check(data, cutPoints)

    @BOUNDED
    @given(httpStreams(), cuts)
    def test_mutatedHeadsAnySplit(self, data: bytes, cutPoints: list[int]) -> None:
        """
        Mutated request heads give the same outcome whole, split, and byte by
        byte.
        """
        self.check(data, cutPoints)
        self.checkBytewise(data)

    @BOUNDED
    @given(st.integers(0, 2 * MAX_HEAD), st.booleans(), st.integers(1, 8))
    def test_capHolds(self, size: int, complete: bool, pieces: int) -> None:
        """
        An endless head, or a head followed by too much, raises
        L{ProtocolError}; the codec never holds more than its cap.
        """
        data = b"CONNECT a:1 HTTP/1.1\r\nX: " + b"x" * size
        if complete:
            data = b"CONNECT a:1 HTTP/1.1\r\n\r\n" + b"x" * size
        step = len(data) // pieces + 1
        run(
            self.codecFactory(),
            [data[i : i + step] for i in range(0, len(data), step)],
            noDriver,
            self.cap,
            self,
        )

    @BOUNDED
    @given(httpHeads(), st.binary(max_size=40), cuts)
    def test_roundTrip(self, head: Any, early: bytes, cutPoints: list[int]) -> None:
        """
        A head written from fields (CRLF, LF or mixed) parses, in any split,
        to those fields, with the bytes after it left over.
        """
        method, target, version, headers, raw = head
        events, error, leftover = run(
            self.codecFactory(), splitAt(raw + early, cutPoints), noDriver, self.cap, self
        )
        self.assertEqual(
            (events, error, leftover),
            ([HTTPRequestHead(method, target, version, tuple(headers), raw)], None, early),
        )

    @BOUNDED
    @given(
        st.text(max_size=60)
        | st.from_regex(r"\A[^:]{0,5}:[0-9]{0,8}\Z")
        | st.integers(4000, 5000).map(lambda n: "a:" + "0" * n + "8")
        | st.integers(4000, 5000).map(lambda n: "a:1" + "0" * n)
    )
    def test_parseAuthorityAnyText(self, target: str) -> None:
        """
        Any CONNECT target parses to a non-empty host and a port in 1-65535,
        or raises L{ProtocolError} (with a 400 answer), never another
        exception.
        """
        try:
            host, port = parseAuthority(target)
        except ProtocolError as e:
            self.assertTrue(e.response.startswith(b"HTTP/1.1 400 "))
            return
        self.assertTrue(host)
        self.assertIn(port, range(1, 65536))

    def test_parseAuthorityLongPort(self) -> None:
        """
        A port of more digits than Python converts to an int (4300, even
        leading zeros) is a 400, not a L{ValueError} from C{int}.
        """
        for port in ["1" + "0" * 4301, "9" * 5000]:
            with self.subTest(port=port[:8]):
                with self.assertRaises(ProtocolError):
                    parseAuthority("example.com:" + port)
        self.assertEqual(parseAuthority("a:" + "0" * 4400 + "443"), ("a", 443))

    @BOUNDED
    @given(st.one_of(ipv4s, names.filter(lambda n: ":" not in n and "]" not in n)), st.integers(1, 65535))
    def test_parseAuthorityRoundTrip(self, host: str, port: int) -> None:
        """
        C{host:port} (and C{[v6]:port}) parse back to host and port.
        """
        self.assertEqual(parseAuthority(f"{host}:{port}"), (host, port))

    @BOUNDED
    @given(ipv6s, st.integers(1, 65535))
    def test_parseAuthorityIPv6RoundTrip(self, host: str, port: int) -> None:
        """
        C{[v6]:port} parses back to the address and port.
        """
        self.assertEqual(parseAuthority(f"[{host}]:{port}"), (host, port))

    @BOUNDED
    @given(st.none() | st.text(max_size=80))
    def test_parseBasicCredentialsAnyText(self, value: str | None) -> None:
        """
        Any header value gives credentials or C{None}, never an exception.
        """
        result = parseBasicCredentials(value)
        if result is not None:
            self.assertIsInstance(result, tuple)

    @BOUNDED
    @given(
        st.binary(max_size=60).map(lambda b: b.replace(b":", b"")),
        st.binary(max_size=60),
        st.sampled_from(["Basic", "basic", "BASIC"]),
        st.sampled_from(["", " ", "\t"]),
    )
    def test_parseBasicCredentialsRoundTrip(
        self, user: bytes, password: bytes, scheme: str, pad: str
    ) -> None:
        """
        C{Basic base64(user:password)} parses back to user and password.
        """
        value = f"{pad}{scheme} {base64.b64encode(user + b':' + password).decode()}{pad}"
        self.assertEqual(parseBasicCredentials(value), (user, password))
