# -*- test-case-name: tests.test_e2e_sessionfacts -*-
"""
End-to-end tests of what the access log says about sessions that end
early: who closed a handshake, which protocol a connection that sent
nothing spoke, and why an outgoing address that cannot be bound failed.

The proxy is a real C{twistd socks5} process with C{--access-log}; clients
are raw sockets; destinations are loopback servers in threads of the test
process.

Run with: python -m pytest tests/test_e2e_sessionfacts.py -q
"""

from __future__ import annotations

import socket

from tests.e2e import (
    CD_REJECTED,
    LOOPBACK_V4,
    connectTCP,
    encodeSOCKS4Request,
    readHTTPResponse,
    readSOCKS4Reply,
    recvUntilClosed,
    socks5Connect,
)
from tests.test_e2e_accesslog import AccessLogTestCase

#: An address from TEST-NET-1 (RFC 5737), assigned to no host: binding it
#: fails at once (EADDRNOTAVAIL) and no packet is ever sent.
UNBINDABLE = "192.0.2.77"


class EarlyEndTests(AccessLogTestCase):
    """
    A listener serving all three protocols (the default).
    """

    def closeAfter(self, data: bytes) -> dict:
        """
        Connect, send C{data}, send EOF, wait for the proxy to close; the
        session's access-log line.
        """
        sock = connectTCP(LOOPBACK_V4, self.proxy.port)
        self.addCleanup(sock.close)
        if data:
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilClosed(sock), b"")
        return self.recordOfClient(sock)

    def test_clientEOFInHandshake(self) -> None:
        """
        A client that sends EOF in the middle of its greeting, its SOCKS4
        request or its HTTP head is logged C{closedBy: "client"}.
        """
        for data in (b"\x05\x01", b"\x04\x01\x00", b"CONNECT x:1 HTTP/1.1\r\n"):
            with self.subTest(data=data):
                record = self.closeAfter(data)
                self.assertEqual(
                    (record["closedBy"], record["reason"]),
                    ("client", "client closed during the handshake"),
                )

    def test_noByteOnSeveralProtocols(self) -> None:
        """
        A connection that sends no byte to a listener serving several
        protocols is logged with C{protocol: null}, not as SOCKS5, and as
        closed by the client.
        """
        record = self.closeAfter(b"")
        self.assertIsNone(record["protocol"])
        self.assertEqual(record["closedBy"], "client")


class SOCKS4OnlyTests(AccessLogTestCase):
    """
    A listener serving SOCKS4 alone.
    """

    accessArgs = ("--protocols", "socks4")

    def test_noByteIsSOCKS4(self) -> None:
        """
        A connection that sends no byte is logged as the listener's only
        protocol, C{socks4}.
        """
        sock = connectTCP(LOOPBACK_V4, self.proxy.port)
        self.addCleanup(sock.close)
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilClosed(sock), b"")
        record = self.recordOfClient(sock)
        self.assertEqual((record["protocol"], record["closedBy"]), ("socks4", "client"))


class HTTPOnlyTests(AccessLogTestCase):
    """
    A listener serving HTTP alone.
    """

    accessArgs = ("--protocols", "http")

    def test_noByteIsHTTP(self) -> None:
        """
        A connection that sends no byte is logged as the listener's only
        protocol, C{http}.
        """
        sock = connectTCP(LOOPBACK_V4, self.proxy.port)
        self.addCleanup(sock.close)
        sock.close()
        record = self.waitForRecord(lambda r: r["reason"] is not None)
        self.assertEqual(record["protocol"], "http")


class UnbindableExternalTests(AccessLogTestCase):
    """
    C{--external} names an address this host does not have.
    """

    accessArgs = ("--external", UNBINDABLE)

    def setUp(self) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((UNBINDABLE, 0))
        except OSError:
            return
        finally:
            probe.close()
        self.skipTest(f"this host can bind {UNBINDABLE} (ip_nonlocal_bind?)")

    def test_socks5GeneralFailure(self) -> None:
        """
        A SOCKS5 CONNECT gets 0x01 (general failure: the proxy's own
        address failed), not 0x08 (address type not supported), and the
        line says the outgoing address could not be bound.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0x01)
        record = self.recordOfClient(sock)
        self.assertEqual((record["reply"], record["closedBy"]), (1, "proxy"))
        self.assertIn("cannot bind the outgoing address", record["reason"])
        self.assertEqual(record["external"], UNBINDABLE)

    def test_socks4AndHTTP(self) -> None:
        """
        SOCKS4 gets 91 (rejected or failed), HTTP CONNECT and forwarding a
        502 whose text names the outgoing address.
        """
        sock = connectTCP(LOOPBACK_V4, self.proxy.port)
        self.addCleanup(sock.close)
        sock.sendall(encodeSOCKS4Request(LOOPBACK_V4, self.echo.port))
        self.assertEqual(readSOCKS4Reply(sock).cd, CD_REJECTED)
        self.assertIn("outgoing address", self.recordOfClient(sock)["reason"])
        for head in (
            f"CONNECT 127.0.0.1:{self.echo.port} HTTP/1.1\r\n\r\n",
            f"GET http://127.0.0.1:{self.http.port}/ HTTP/1.1\r\n"
            "Connection: close\r\n\r\n",
        ):
            with self.subTest(head=head):
                sock = connectTCP(LOOPBACK_V4, self.proxy.port)
                self.addCleanup(sock.close)
                sock.sendall(head.encode())
                response = readHTTPResponse(sock)
                self.assertEqual(response.status, 502, response)
                self.assertIn(b"cannot bind the outgoing address", response.body)
