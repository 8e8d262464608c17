"""
Helpers for the property-based codec tests (L{tests.test_properties},
L{tests.test_properties_http}): one bounded, derandomised hypothesis
setting, a driver that feeds a codec chunk by chunk and collects its events,
byte-level mutations, and shared strategies.
"""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import HealthCheck, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.names import InvalidName
from socksrelay.wire import (
    canonicalHost,
    NEED_DATA,
    AuthMethod,
    Greeting,
    ProtocolError,
    SOCKS5ServerConnection,
    UsernamePassword,
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


def _hasCanonicalForm(name: str) -> bool:
    try:
        canonicalHost(name)
    except InvalidName:
        return False
    return True


#: Names that have a canonical form (L{socksrelay.wire.canonicalHost}): a
#: codec hands on that form, and refuses the rest (see the C{AnyBytes} and
#: mutation properties, and tests/test_names.py).
canonicalNames = names.filter(_hasCanonicalForm)


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


class SplitInvarianceMixin:
    """
    The properties every codec shares, for a C{SynchronousTestCase}.  Set
    C{codecFactory}, C{driver} and C{cap}.
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
