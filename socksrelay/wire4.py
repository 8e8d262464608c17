# -*- test-case-name: tests.test_wire4 -*-
"""
A sans-I/O codec for the server side of SOCKS4 and SOCKS4a.

Request: C{VN=4 CD DSTPORT(2) DSTIP(4) USERID NUL}, and for SOCKS4a (DSTIP
0.0.0.x with x != 0) a host name and a second NUL after the USERID.  Both
strings are capped at 255 bytes and parsed incrementally: the second NUL may
arrive in a later read.  Reply: C{VN=0 CD DSTPORT DSTIP} with CD 90 to 93.

This module does no I/O and imports nothing from C{twisted.internet}.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from socksrelay.names import InvalidName
from socksrelay.wire import (
    NEED_DATA,
    ProtocolError,
    SingleRequestCodec,
    _NeedData,
    canonicalHost,
    normaliseAddress,
)

SOCKS4_VERSION = 0x04
#: The longest USERID or 4a host name accepted (without its NUL).
MAX_FIELD = 255
#: The fixed part of a request.
HEADER = 8


class Reply4(enum.IntEnum):
    """
    SOCKS4 reply codes (CD).
    """

    GRANTED = 90
    REJECTED = 91
    NO_IDENTD = 92
    IDENTD_MISMATCH = 93


class Command4(enum.IntEnum):
    """
    SOCKS4 commands (CD in a request).
    """

    CONNECT = 0x01
    BIND = 0x02


@dataclass(frozen=True)
class SOCKS4Request:
    """
    A SOCKS4 or SOCKS4a request.

    @ivar command: the L{Command4}.
    @ivar host: an IPv4 address in text form, or (4a) a name in its
        canonical form (L{socksrelay.wire.canonicalHost}).
    @ivar port: the destination port.
    @ivar userid: the USERID field (no password exists in SOCKS4).
    @ivar socks4a: whether the request used the 4a name extension.
    """

    command: Command4
    host: str
    port: int
    userid: bytes
    socks4a: bool


def encodeReply4(reply: Reply4 | int, host: str | None = None, port: int = 0) -> bytes:
    """
    Encode a SOCKS4 reply.  SOCKS4 can only carry IPv4: any other address is
    sent as 0.0.0.0 (the client then uses the proxy's own address).
    """
    packed = b"\x00\x00\x00\x00"
    if host is not None:
        try:
            address = ipaddress.ip_address(normaliseAddress(host))
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv4Address):
            packed = address.packed
    return bytes([0x00, int(reply)]) + struct.pack("!H", port) + packed


class SOCKS4ServerConnection(SingleRequestCodec):
    """
    The server side of a SOCKS4/4a request: bytes in, one L{SOCKS4Request}
    out, and the bytes that followed it kept for L{leftover}.
    """

    def __init__(self, maxEarlyData: int = 256 * 1024) -> None:
        super().__init__(HEADER + 2 * (MAX_FIELD + 1) + maxEarlyData)

    @property
    def state(self) -> str:
        """
        A short text naming the phase, for logs.
        """
        return "done" if self._done else "request"

    def _refuse(self, message: str) -> ProtocolError:
        return ProtocolError(
            message, response=encodeReply4(Reply4.REJECTED), reply=None
        )

    def _field(self, start: int, what: str) -> int | None:
        """
        The index of the NUL ending the field that starts at C{start}, or
        C{None} if it has not arrived yet.
        """
        buf = self._buffer
        end = buf.find(b"\x00", start, start + MAX_FIELD + 1)
        if end >= 0:
            return end
        if len(buf) - start > MAX_FIELD:
            raise self._refuse(f"{what} longer than {MAX_FIELD} bytes")
        return None

    def _parse(self) -> SOCKS4Request | _NeedData:
        buf = self._buffer
        if len(buf) < 1:
            return NEED_DATA
        if buf[0] != SOCKS4_VERSION:
            raise ProtocolError(f"not SOCKS4: first byte is 0x{buf[0]:02x}")
        if len(buf) < HEADER:
            return NEED_DATA
        rawCommand = buf[1]
        try:
            command = Command4(rawCommand)
        except ValueError:
            raise self._refuse(f"unknown SOCKS4 command 0x{rawCommand:02x}") from None
        (port,) = struct.unpack("!H", buf[2:4])
        ip = bytes(buf[4:8])
        userEnd = self._field(HEADER, "USERID")
        if userEnd is None:
            return NEED_DATA
        userid = bytes(buf[HEADER:userEnd])
        socks4a = ip[:3] == b"\x00\x00\x00" and ip[3] != 0
        end = userEnd + 1
        if socks4a:
            nameEnd = self._field(end, "host name")
            if nameEnd is None:
                return NEED_DATA
            rawName = bytes(buf[end:nameEnd])
            end = nameEnd + 1
            if not rawName:
                raise self._refuse("empty SOCKS4a host name")
            try:
                host = canonicalHost(rawName.decode("utf-8"))
            except UnicodeDecodeError:
                raise self._refuse("SOCKS4a host name is not UTF-8") from None
            except InvalidName as e:
                raise self._refuse(f"bad SOCKS4a host name: {e}") from None
        else:
            host = str(ipaddress.IPv4Address(ip))
        del buf[:end]
        self._done = True
        return SOCKS4Request(command, host, port, userid, socks4a)
