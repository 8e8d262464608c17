# -*- test-case-name: tests.test_httpwire -*-
"""
A sans-I/O codec for the head of an HTTP/1.x proxy request: the request
line and header block, capped in size and count, parsed incrementally.

The server uses it for C{CONNECT host:port} tunnels; a plain-HTTP forward
request (C{GET http://host/path}) is recognised here and then handed, with
its bytes, to L{twisted.web}.

This module does no I/O and imports nothing from C{twisted.internet}.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from socksrelay.names import InvalidName
from socksrelay.wire import (
    NEED_DATA,
    ProtocolError,
    SingleRequestCodec,
    _NeedData,
    canonicalHost,
    isIPLiteral,
)

#: The largest request head (request line and headers) accepted.
MAX_HEAD = 16 * 1024
#: The most header lines accepted.
MAX_HEADERS = 100

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def httpResponse(
    status: int,
    reason: str,
    headers: tuple[tuple[str, str], ...] = (),
    body: str = "",
    close: bool = True,
) -> bytes:
    """
    Encode a short HTTP/1.1 response with a text body.
    """
    payload = body.encode("utf-8")
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if payload or close:
        lines.append("Content-Type: text/plain; charset=utf-8")
        lines.append(f"Content-Length: {len(payload)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def badRequest(message: str, status: int = 400, reason: str = "Bad Request") -> ProtocolError:
    """
    A L{ProtocolError} whose response is an HTTP error.
    """
    return ProtocolError(
        message, response=httpResponse(status, reason, body=message + "\n")
    )


@dataclass(frozen=True)
class HTTPRequestHead:
    """
    The head of an HTTP request.

    @ivar method: e.g. C{"CONNECT"} or C{"GET"}.
    @ivar target: the request target as sent.
    @ivar version: C{"HTTP/1.1"} or C{"HTTP/1.0"}.
    @ivar headers: C{(name, value)} pairs in order, names as sent.
    @ivar raw: the bytes of the head, terminator included.
    """

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    raw: bytes

    def header(self, name: str) -> str | None:
        """
        The value of the first header called C{name} (case-insensitive).
        """
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


def parseAuthority(target: str) -> tuple[str, int]:
    """
    Parse a CONNECT target: C{host:port} or C{[v6]:port}.  The host comes
    back in its canonical form (L{socksrelay.wire.canonicalHost}); a target
    read as Latin-1 (as the head is) that holds other than ASCII is taken as
    the UTF-8 it was sent as.

    @raise ProtocolError: with a 400 response, if it is not one, or if its
        host is a name that has no canonical form.
    """
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or not rest.startswith(":") or not isIPLiteral(host):
            raise badRequest(f"bad CONNECT target {target!r}")
        portText = rest[1:]
    else:
        host, colon, portText = target.rpartition(":")
        if not colon or ":" in host:
            raise badRequest(f"bad CONNECT target {target!r}")
    # Leading zeros are allowed, but no more digits than a port has: int()
    # refuses strings of over 4300 digits with a ValueError.
    digits = portText.lstrip("0")
    if (
        not host
        or not (portText.isascii() and portText.isdigit())
        or len(digits) > 5
        or not 0 < int(digits or "0") < 65536
    ):
        raise badRequest(f"bad CONNECT target {target!r}")
    return canonicalTargetHost(host), int(digits)


def canonicalTargetHost(host: str) -> str:
    """
    The canonical form of the host of a request target (CONNECT or an
    absolute URI).  A host that is not ASCII is decoded as UTF-8 from the
    Latin-1 text the head was read as.

    @raise ProtocolError: with a 400 response, if it is not UTF-8 or has no
        canonical form.
    """
    if not host.isascii():
        try:
            host = host.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise badRequest(f"host {ascii(host)} is not UTF-8") from None
    try:
        return canonicalHost(host)
    except InvalidName as e:
        raise badRequest(str(e)) from None


def parseBasicCredentials(value: str | None) -> tuple[bytes, bytes] | None:
    """
    Parse C{Basic base64(user:password)} from a C{Proxy-Authorization}
    header; C{None} if absent or not Basic or malformed.
    """
    if not value:
        return None
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


def looksLikeHTTP(firstByte: int) -> bool:
    """
    Whether a connection's first byte can start an HTTP method.
    """
    return 0x41 <= firstByte <= 0x5A


class HTTPServerConnection(SingleRequestCodec):
    """
    Reads one request head; the bytes after it are kept for L{leftover}.
    """

    def __init__(self, maxEarlyData: int = 256 * 1024) -> None:
        super().__init__(MAX_HEAD + maxEarlyData)

    @property
    def state(self) -> str:
        """
        A short text naming the phase, for logs.
        """
        return "done" if self._done else "request head"

    def _overflow(self) -> ProtocolError:
        return badRequest("request too large", 431, "Request Header Fields Too Large")

    def _parse(self) -> HTTPRequestHead | _NeedData:
        buf = self._buffer
        # The head ends at its first empty line; lines may end in CRLF or in
        # a bare LF (RFC 9112 section 2.2), even mixed.
        match = _HEAD_END.search(buf, 0, MAX_HEAD)
        end = -1 if match is None else match.start()
        size = 0 if match is None else match.end()
        if end < 0:
            if len(buf) >= MAX_HEAD:
                raise badRequest(
                    f"request head over {MAX_HEAD} bytes",
                    431,
                    "Request Header Fields Too Large",
                )
            return NEED_DATA
        raw = bytes(buf[:size])
        lines = raw[:end].replace(b"\r\n", b"\n").split(b"\n")
        if any(b"\r" in line for line in lines):
            # A bare CR is no line ending here, and no part of a field
            # either (RFC 9112 section 2.2).
            raise badRequest("bare CR in the request head")
        parts = lines[0].split(b" ")
        if (
            len(parts) != 3
            or not _TOKEN.match(parts[0])
            or not parts[1]
            or not _VERSION.match(parts[2])
        ):
            raise badRequest("malformed request line")
        if len(lines) - 1 > MAX_HEADERS:
            raise badRequest(
                f"more than {MAX_HEADERS} header lines",
                431,
                "Request Header Fields Too Large",
            )
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.match(name):
                raise badRequest("malformed header line")
            headers.append(
                (name.decode("ascii"), value.strip(b" \t").decode("latin-1"))
            )
        del buf[:size]
        self._done = True
        return HTTPRequestHead(
            parts[0].decode("ascii"),
            parts[1].decode("latin-1"),
            parts[2].decode("ascii"),
            tuple(headers),
            raw,
        )
