# -*- test-case-name: tests.test_wire -*-
"""
A sans-I/O codec for the server side of SOCKS5 (RFC 1928) and its
username/password sub-negotiation (RFC 1929).

Bytes go in with L{SOCKS5ServerConnection.receiveData}; events come out of
L{SOCKS5ServerConnection.nextEvent}, or L{NEED_DATA} when the buffer does not
yet hold a whole message.  Every message has a hard size cap, malformed input
raises L{ProtocolError} carrying the bytes (if any) the server should answer
with before it closes, and bytes that follow the request are kept, never lost
(L{SOCKS5ServerConnection.leftover}).

This module does no I/O and imports nothing from C{twisted.internet}.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from socksrelay.names import canonicalName


class AuthMethod(enum.IntEnum):
    """
    Authentication methods of RFC 1928 section 3.
    """

    NO_AUTHENTICATION = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE_METHODS = 0xFF


class Command(enum.IntEnum):
    """
    Request commands of RFC 1928 section 4.
    """

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class AddressType(enum.IntEnum):
    """
    Address types of RFC 1928 section 5.
    """

    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


class Reply(enum.IntEnum):
    """
    Reply codes of RFC 1928 section 6.
    """

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


SOCKS5_VERSION = 0x05
AUTH_VERSION = 0x01
AUTH_SUCCESS = 0x00
AUTH_FAILURE = 0x01

#: The largest greeting: VER, NMETHODS, 255 methods.
MAX_GREETING = 2 + 255
#: The largest RFC 1929 request: VER, ULEN, 255, PLEN, 255.
MAX_AUTH_REQUEST = 1 + 1 + 255 + 1 + 255
#: The largest request: VER, CMD, RSV, ATYP, LEN, 255 name bytes, PORT.
MAX_REQUEST = 4 + 1 + 255 + 2
#: How many bytes that arrive after the request (before the relay starts)
#: are kept.  The server stops reading while it waits, so at most one read
#: (64 KiB in Twisted) arrives; anything beyond this cap is an error.
MAX_EARLY_DATA = 256 * 1024


#: The most the handshake buffer may ever hold: every message at its largest,
#: plus the early data.
MAX_HANDSHAKE_BUFFER = MAX_GREETING + MAX_AUTH_REQUEST + MAX_REQUEST + MAX_EARLY_DATA


class _NeedData:
    """
    The type of L{NEED_DATA}.
    """

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by L{SOCKS5ServerConnection.nextEvent} when more bytes are needed.
NEED_DATA = _NeedData()


class ProtocolError(Exception):
    """
    The peer sent something this codec will not accept.

    @ivar response: bytes to send before closing (possibly empty).
    @ivar reply: the RFC 1928 reply code in C{response}, if it is a reply.
    """

    def __init__(
        self, message: str, response: bytes = b"", reply: Reply | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.response = response
        self.reply = reply


@dataclass(frozen=True)
class Greeting:
    """
    The client's version identifier / method selection message.

    @ivar methods: the methods offered, in the client's order.
    """

    methods: tuple[int, ...]


@dataclass(frozen=True)
class UsernamePassword:
    """
    An RFC 1929 username/password request.  The password is left out of
    C{repr} so that it cannot reach a log by accident.
    """

    username: bytes
    password: bytes = field(repr=False)


@dataclass(frozen=True)
class Request:
    """
    A SOCKS5 request.

    @ivar command: the L{Command}.
    @ivar addressType: the L{AddressType} of the destination as sent.
    @ivar host: the destination: an IP address in text form, or a name in
        its canonical form (L{canonicalHost}).
    @ivar port: the destination port.
    """

    command: Command
    addressType: AddressType
    host: str
    port: int


Event = Union[Greeting, UsernamePassword, Request]


def _decodeName(raw: bytes) -> str:
    """
    Decode a domain name from ATYP 3.  ASCII (including punycode) is the norm;
    UTF-8 is accepted for clients that send international names unencoded.

    @raise ValueError: if the name is empty, not UTF-8, or holds a NUL.
    """
    if not raw:
        raise ValueError("empty domain name")
    if b"\x00" in raw:
        raise ValueError("NUL byte in domain name")
    return raw.decode("utf-8")


@functools.lru_cache(maxsize=4096)
def normaliseAddress(host: str) -> str:
    """
    Return C{host} with an IPv4-mapped IPv6 address turned into plain IPv4
    and any IPv6 scope removed; other strings are returned unchanged.

    Cached: the same few client and destination addresses are normalised
    many times per session.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def canonicalHost(host: str) -> str:
    """
    The one form in which a destination is judged, resolved, logged and
    recorded: an IP address normalised (L{normaliseAddress}), a name in its
    canonical form (L{socksrelay.names.canonicalName}).

    @raise socksrelay.names.InvalidName: if C{host} is a name with no
        canonical form.
    """
    if isIPLiteral(host):
        return normaliseAddress(host)
    return canonicalName(host)


def encodeAddress(host: str | None, port: int) -> bytes:
    """
    Encode ATYP, ADDR and PORT for a reply or a UDP header.  IP addresses use
    ATYP 1 or 4 (IPv4-mapped IPv6 becomes ATYP 1); anything else is a name
    (ATYP 3).  C{None} encodes as C{0.0.0.0:0}-style zeros.
    """
    if host is None:
        return bytes([AddressType.IPV4]) + b"\x00\x00\x00\x00" + b"\x00\x00"
    return _encodeHost(host) + struct.pack("!H", port)


@functools.lru_cache(maxsize=4096)
def _encodeHost(host: str) -> bytes:
    """
    ATYP and ADDR for C{host}; cached, since a UDP association encodes the
    same few sources for every datagram.
    """
    host = normaliseAddress(host)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Sent as given (UTF-8, which is ASCII for the usual punycode
        # names), the same way the parser reads names.
        name = host.encode("utf-8")
        if not 0 < len(name) <= 255:
            raise ValueError(f"name of {len(name)} bytes cannot be encoded")
        return bytes([AddressType.DOMAIN, len(name)]) + name
    atyp = AddressType.IPV4 if address.version == 4 else AddressType.IPV6
    return bytes([atyp]) + address.packed


@functools.lru_cache(maxsize=4096)
def _packedToText(packed: bytes) -> str:
    """
    The text form of a packed IPv4 or IPv6 address (IPv4-mapped IPv6 as
    plain IPv4); cached for the UDP header parser.
    """
    return normaliseAddress(str(ipaddress.ip_address(packed)))


@functools.lru_cache(maxsize=4096)
def isIPLiteral(host: str) -> bool:
    """
    Whether C{host} is an IPv4 or IPv6 address (with an optional scope)
    rather than a name.
    """
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def encodeReply(reply: Reply | int, host: str | None = None, port: int = 0) -> bytes:
    """
    Encode a SOCKS5 reply: C{VER REP RSV ATYP BND.ADDR BND.PORT}.
    """
    return bytes([SOCKS5_VERSION, int(reply), 0x00]) + encodeAddress(host, port)


def encodeMethodSelection(method: AuthMethod | int) -> bytes:
    """
    Encode the server's method selection message: C{VER METHOD}.
    """
    return bytes([SOCKS5_VERSION, int(method)])


def encodeAuthStatus(success: bool) -> bytes:
    """
    Encode the RFC 1929 status message: C{01 00} or C{01 01}.
    """
    return bytes([AUTH_VERSION, AUTH_SUCCESS if success else AUTH_FAILURE])


def selectMethod(offered: Iterable[int], preference: Iterable[int]) -> AuthMethod:
    """
    Choose, by the server's order of preference, the first method that the
    client offered; L{AuthMethod.NO_ACCEPTABLE_METHODS} if there is none.
    """
    offeredSet = set(offered)
    for method in preference:
        if method in offeredSet:
            return AuthMethod(method)
    return AuthMethod.NO_ACCEPTABLE_METHODS


class _State(enum.Enum):
    GREETING = "greeting"
    METHOD_PENDING = "waiting for the server to choose a method"
    AUTH = "authentication"
    AUTH_PENDING = "waiting for the authentication result"
    REQUEST = "request"
    DONE = "done"
    CLOSED = "closed"


class BufferedCodec:
    """
    The plumbing every codec here shares: received bytes go into a buffer
    with a hard cap, L{nextEvent} parses the next message out of it, and the
    bytes that follow the last message are kept for L{leftover}.

    Subclasses provide C{_parse}, C{done}, C{closed}, C{_markClosed} and may
    override C{_overflow}.
    """

    def __init__(self, maxBuffer: int) -> None:
        self._buffer = bytearray()
        self._maxBuffer = maxBuffer

    @property
    def buffered(self) -> int:
        """
        How many received bytes are held, not yet parsed or handed out.
        """
        return len(self._buffer)

    @property
    def done(self) -> bool:
        """
        Whether the last message has been parsed.
        """
        raise NotImplementedError()

    @property
    def closed(self) -> bool:
        """
        Whether the codec refused its input (and now ignores any more).
        """
        raise NotImplementedError()

    def _markClosed(self) -> None:
        raise NotImplementedError()

    def _overflow(self) -> ProtocolError:
        return ProtocolError("too much data before the request was answered")

    def _parse(self) -> Any:
        raise NotImplementedError()

    def receiveData(self, data: bytes) -> None:
        """
        Add bytes received from the client.

        @raise ProtocolError: if more bytes arrived than the codec allows.
        """
        if self.closed:
            return
        self._buffer += data
        if len(self._buffer) > self._maxBuffer:
            self._markClosed()
            raise self._overflow()

    def nextEvent(self) -> Any:
        """
        Parse the next message, if the buffer holds a whole one.

        @return: an event, or L{NEED_DATA}.
        @raise ProtocolError: on malformed input; the codec is then closed.
        """
        if self.done or self.closed:
            return NEED_DATA
        try:
            return self._parse()
        except ProtocolError:
            self._markClosed()
            raise

    def leftover(self) -> bytes:
        """
        Return, and forget, the bytes received after the last message.

        @raise RuntimeError: if the last message has not been parsed yet.
        """
        if not self.done:
            raise RuntimeError("no request parsed yet")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class SingleRequestCodec(BufferedCodec):
    """
    A L{BufferedCodec} that reads exactly one message.
    """

    _done = False
    _closed = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def closed(self) -> bool:
        return self._closed

    def _markClosed(self) -> None:
        self._closed = True


class SOCKS5ServerConnection(BufferedCodec):
    """
    The server side of a SOCKS5 handshake, from the first byte to the request.

    The server drives it like this::

        conn.receiveData(data)
        event = conn.nextEvent()        # Greeting
        out = conn.chooseMethod(method) # bytes to send
        event = conn.nextEvent()        # UsernamePassword (if method 0x02)
        out = conn.authResult(ok)
        event = conn.nextEvent()        # Request
        early = conn.leftover()         # bytes that followed the request

    Events are produced only in that order; calling a method out of order
    raises L{RuntimeError}, a mistake of the server, not of the peer.
    """

    def __init__(self) -> None:
        super().__init__(MAX_HANDSHAKE_BUFFER)
        self._state = _State.GREETING

    @property
    def state(self) -> str:
        """
        A short text naming the phase of the handshake, for logs.
        """
        return self._state.value

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    def _markClosed(self) -> None:
        self._state = _State.CLOSED

    def _parse(self) -> Event | _NeedData:
        if self._state is _State.GREETING:
            return self._parseGreeting()
        if self._state is _State.AUTH:
            return self._parseAuth()
        if self._state is _State.REQUEST:
            return self._parseRequest()
        return NEED_DATA

    def chooseMethod(self, method: AuthMethod | int) -> bytes:
        """
        Record the server's choice after a L{Greeting} and return the bytes of
        the method selection message.
        """
        self._expect(_State.METHOD_PENDING)
        if method == AuthMethod.NO_AUTHENTICATION:
            self._state = _State.REQUEST
        elif method == AuthMethod.USERNAME_PASSWORD:
            self._state = _State.AUTH
        elif method == AuthMethod.NO_ACCEPTABLE_METHODS:
            self._state = _State.CLOSED
        else:
            raise RuntimeError(f"method {method!r} is not implemented")
        return encodeMethodSelection(method)

    def authResult(self, success: bool) -> bytes:
        """
        Record the outcome of a L{UsernamePassword} check and return the bytes
        of the RFC 1929 status message.
        """
        self._expect(_State.AUTH_PENDING)
        self._state = _State.REQUEST if success else _State.CLOSED
        return encodeAuthStatus(success)

    def _expect(self, state: _State) -> None:
        if self._state is not state:
            raise RuntimeError(
                f"not allowed in state {self._state.value!r} "
                f"(expected {state.value!r})"
            )

    def _parseGreeting(self) -> Greeting | _NeedData:
        buf = self._buffer
        if len(buf) < 1:
            return NEED_DATA
        if buf[0] != SOCKS5_VERSION:
            raise ProtocolError(f"not SOCKS5: first byte is 0x{buf[0]:02x}")
        if len(buf) < 2:
            return NEED_DATA
        count = buf[1]
        if count == 0:
            raise ProtocolError(
                "greeting offers no methods",
                response=encodeMethodSelection(AuthMethod.NO_ACCEPTABLE_METHODS),
            )
        if len(buf) < 2 + count:
            return NEED_DATA
        methods = tuple(buf[2 : 2 + count])
        del buf[: 2 + count]
        self._state = _State.METHOD_PENDING
        return Greeting(methods)

    def _parseAuth(self) -> UsernamePassword | _NeedData:
        buf = self._buffer
        if len(buf) < 1:
            return NEED_DATA
        if buf[0] != AUTH_VERSION:
            raise ProtocolError(
                f"username/password sub-negotiation version is 0x{buf[0]:02x},"
                " not 0x01",
                response=encodeAuthStatus(False),
            )
        if len(buf) < 2:
            return NEED_DATA
        ulen = buf[1]
        if len(buf) < 2 + ulen + 1:
            return NEED_DATA
        plen = buf[2 + ulen]
        end = 2 + ulen + 1 + plen
        if len(buf) < end:
            return NEED_DATA
        username = bytes(buf[2 : 2 + ulen])
        password = bytes(buf[3 + ulen : end])
        del buf[:end]
        self._state = _State.AUTH_PENDING
        return UsernamePassword(username, password)

    def _parseRequest(self) -> Request | _NeedData:
        buf = self._buffer
        if len(buf) < 1:
            return NEED_DATA
        if buf[0] != SOCKS5_VERSION:
            raise ProtocolError(
                f"request version is 0x{buf[0]:02x}, not 0x05",
                response=encodeReply(Reply.GENERAL_FAILURE),
                reply=Reply.GENERAL_FAILURE,
            )
        if len(buf) < 4:
            return NEED_DATA
        rawCommand, _reserved, rawType = buf[1], buf[2], buf[3]
        try:
            command = Command(rawCommand)
        except ValueError:
            raise ProtocolError(
                f"unknown command 0x{rawCommand:02x}",
                response=encodeReply(Reply.COMMAND_NOT_SUPPORTED),
                reply=Reply.COMMAND_NOT_SUPPORTED,
            ) from None
        try:
            addressType = AddressType(rawType)
        except ValueError:
            raise ProtocolError(
                f"unknown address type 0x{rawType:02x}",
                response=encodeReply(Reply.ADDRESS_TYPE_NOT_SUPPORTED),
                reply=Reply.ADDRESS_TYPE_NOT_SUPPORTED,
            ) from None
        if addressType is AddressType.IPV4:
            end = 4 + 4 + 2
            if len(buf) < end:
                return NEED_DATA
            host = str(ipaddress.IPv4Address(bytes(buf[4:8])))
        elif addressType is AddressType.IPV6:
            end = 4 + 16 + 2
            if len(buf) < end:
                return NEED_DATA
            host = normaliseAddress(str(ipaddress.IPv6Address(bytes(buf[4:20]))))
        else:
            if len(buf) < 5:
                return NEED_DATA
            end = 5 + buf[4] + 2
            if len(buf) < end:
                return NEED_DATA
            try:
                host = canonicalHost(_decodeName(bytes(buf[5 : end - 2])))
            except (ValueError, UnicodeDecodeError) as e:
                # InvalidName is a ValueError too: refused at once.
                raise ProtocolError(
                    f"bad domain name: {e}",
                    response=encodeReply(Reply.HOST_UNREACHABLE),
                    reply=Reply.HOST_UNREACHABLE,
                ) from None
        (port,) = struct.unpack("!H", buf[end - 2 : end])
        del buf[:end]
        self._state = _State.DONE
        return Request(command, addressType, host, port)


# -- UDP (RFC 1928 section 7) ------------------------------------------------


@dataclass(frozen=True)
class UDPHeader:
    """
    The header of a datagram relayed through a UDP association:
    C{RSV(2) FRAG ATYP DST.ADDR DST.PORT}.

    @ivar fragment: the FRAG field (0 for a whole datagram).
    @ivar addressType: the L{AddressType} as sent.
    @ivar host: an IP address in text form, or a name in its canonical
        form (L{canonicalHost}).
    @ivar port: the port.
    @ivar length: how many bytes the header takes; the payload follows.
    """

    fragment: int
    addressType: AddressType
    host: str
    port: int
    length: int


#: The largest UDP payload over IPv4 (65535 - 20 - 8).
MAX_UDP_PAYLOAD = 65507


def parseUDPHeader(datagram: bytes) -> UDPHeader:
    """
    Parse the SOCKS5 UDP request header at the start of C{datagram}.

    @raise ProtocolError: if the header is short, or its address type or name
        is invalid.
    """
    if len(datagram) < 4:
        raise ProtocolError("datagram shorter than a SOCKS5 UDP header")
    fragment, rawType = datagram[2], datagram[3]
    try:
        addressType = AddressType(rawType)
    except ValueError:
        raise ProtocolError(f"unknown address type 0x{rawType:02x}") from None
    if addressType is AddressType.IPV4:
        end = 4 + 4
        if len(datagram) < end + 2:
            raise ProtocolError("truncated IPv4 address")
        host = _packedToText(datagram[4:end])
    elif addressType is AddressType.IPV6:
        end = 4 + 16
        if len(datagram) < end + 2:
            raise ProtocolError("truncated IPv6 address")
        host = _packedToText(datagram[4:end])
    else:
        if len(datagram) < 5:
            raise ProtocolError("truncated name")
        end = 5 + datagram[4]
        if len(datagram) < end + 2:
            raise ProtocolError("truncated name")
        try:
            host = canonicalHost(_decodeName(datagram[5:end]))
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"bad domain name: {e}") from None
    (port,) = struct.unpack("!H", datagram[end : end + 2])
    return UDPHeader(fragment, addressType, host, port, end + 2)


def encodeUDPHeader(host: str, port: int) -> bytes:
    """
    Encode the header the relay puts before a datagram it returns to the
    client: RSV 0, FRAG 0, and the source as an IP address.
    """
    return b"\x00\x00\x00" + encodeAddress(host, port)
