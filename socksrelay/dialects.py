# -*- test-case-name: tests.test_dialects -*-
"""
How each protocol served on the listener frames its answers.

The server decides outcomes in SOCKS5's terms (L{Reply} codes); a dialect
turns an outcome into the bytes its client expects: a SOCKS5 reply, a SOCKS4
reply (CD 90 or 91), or an HTTP status line.  Each answer also comes with
the code that the end-of-session log shows.
"""

from __future__ import annotations

from socksrelay.httpwire import httpResponse
from socksrelay.wire import Reply, encodeReply
from socksrelay.wire4 import Reply4, encodeReply4

#: The realm named in C{Proxy-Authenticate}.
HTTP_REALM = "socksrelay"


class SOCKS5Dialect:
    """
    RFC 1928 replies.
    """

    name = "socks5"

    def success(self, host: str | None, port: int) -> tuple[bytes, str]:
        return encodeReply(Reply.SUCCEEDED, host, port), "0x00"

    def failure(self, reply: Reply, reason: str) -> tuple[bytes, str]:
        return encodeReply(reply), f"0x{int(reply):02x}"

    def limited(self, rateLimited: bool, beforeGreeting: bool) -> tuple[bytes, str]:
        """
        Over a limit: before the greeting is answered, no acceptable method
        (C{05 FF}); after it, general failure (0x01).
        """
        if beforeGreeting:
            return b"\x05\xff", "0xff"
        return self.failure(Reply.GENERAL_FAILURE, "limit")


class SOCKS4Dialect:
    """
    SOCKS4 replies: VN 0, CD 90 (granted) or 91 (rejected or failed).
    """

    def __init__(self, socks4a: bool = False) -> None:
        self.name = "socks4a" if socks4a else "socks4"

    def success(self, host: str | None, port: int) -> tuple[bytes, str]:
        return encodeReply4(Reply4.GRANTED, host, port), "90"

    def failure(self, reply: Reply, reason: str) -> tuple[bytes, str]:
        return encodeReply4(Reply4.REJECTED), "91"

    def limited(self, rateLimited: bool, beforeGreeting: bool) -> tuple[bytes, str]:
        return self.failure(Reply.GENERAL_FAILURE, "limit")


#: SOCKS5 outcomes as HTTP statuses, for CONNECT tunnels.
_HTTP_STATUS = {
    Reply.NOT_ALLOWED: (403, "Forbidden"),
    Reply.TTL_EXPIRED: (504, "Gateway Timeout"),
    Reply.COMMAND_NOT_SUPPORTED: (405, "Method Not Allowed"),
}


class HTTPDialect:
    """
    HTTP CONNECT answers: 200 for a tunnel, 403, 502 or 504 with a short
    text for a failure.
    """

    name = "http"

    def success(self, host: str | None, port: int) -> tuple[bytes, str]:
        return b"HTTP/1.1 200 Connection established\r\n\r\n", "200"

    def failure(self, reply: Reply, reason: str) -> tuple[bytes, str]:
        status, text = _HTTP_STATUS.get(reply, (502, "Bad Gateway"))
        return httpResponse(status, text, body=f"{text}: {reason}\n"), str(status)

    def limited(self, rateLimited: bool, beforeGreeting: bool) -> tuple[bytes, str]:
        """
        Over a limit: 429 for the rate, 503 for the others.
        """
        if rateLimited:
            status, text = 429, "Too Many Requests"
        else:
            status, text = 503, "Service Unavailable"
        return httpResponse(status, text, body=f"{text}\n"), str(status)


def proxyAuthenticationRequired(reason: str) -> bytes:
    """
    The 407 answer that asks an HTTP client for Basic credentials.
    """
    return httpResponse(
        407,
        "Proxy Authentication Required",
        headers=(("Proxy-Authenticate", f'Basic realm="{HTTP_REALM}"'),),
        body=f"Proxy Authentication Required: {reason}\n",
    )
