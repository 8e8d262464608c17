"""
Property-based tests of L{socksrelay.httpwire}: for any bytes in any split
L{HTTPServerConnection} yields a head or a L{ProtocolError}, never another
exception, and never holds more than its cap; the same bytes whole or split
give the same outcome; heads, authorities and Basic credentials written from
fields parse back to them.  Derandomised, like L{tests.test_properties}.
"""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.httpwire import (
    MAX_HEAD,
    HTTPRequestHead,
    HTTPServerConnection,
    parseAuthority,
    parseBasicCredentials,
)
from socksrelay.wire import ProtocolError, canonicalHost
from tests.propertytools import (
    canonicalNames,
    BOUNDED,
    SplitInvarianceMixin,
    cuts,
    edits,
    ipv4s,
    ipv6s,
    mutate,
    names,
    noDriver,
    run,
    shortBytes,
    splitAt,
)


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
    @given(st.one_of(ipv4s, canonicalNames), st.integers(1, 65535))
    def test_parseAuthorityRoundTrip(self, host: str, port: int) -> None:
        """
        C{host:port}, sent as UTF-8 and read as Latin-1 like the rest of the
        head, parses back to the canonical form of host, and port.
        """
        target = f"{host}:{port}".encode("utf-8").decode("latin-1")
        self.assertEqual(parseAuthority(target), (canonicalHost(host), port))

    @BOUNDED
    @given(ipv6s, st.integers(1, 65535))
    def test_parseAuthorityIPv6RoundTrip(self, host: str, port: int) -> None:
        """
        C{[v6]:port} parses back to the address in its one normal form
        (IPv4-mapped addresses as IPv4) and port.
        """
        self.assertEqual(parseAuthority(f"[{host}]:{port}"), (canonicalHost(host), port))

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
