# -*- test-case-name: tests.test_e2e_external -*-
"""
End-to-end outgoing addresses: with C{--external}, outbound connections and
UDP sockets leave from the given address (here 127.0.0.2 and 127.0.0.3, on
loopback), sessions taking them in turn.
"""

from __future__ import annotations

import socket

from tests.e2e import (
    LOOPBACK_V4,
    LoopbackTCPServer,
    ProxyTestCase,
    UDPAssociation,
    UDPEchoServer,
    recvExactly,
    socks5Connect,
)


class PeerReporter(LoopbackTCPServer):
    """
    Sends each client the IP address it connected from, then closes.
    """

    def handle(self, conn: socket.socket) -> None:
        conn.sendall(conn.getpeername()[0].encode().ljust(16))


class ExternalAddressTests(ProxyTestCase):
    """
    C{--external} sets where outbound traffic comes from.
    """

    proxyArgs = ("--external", "127.0.0.2", "--external", "127.0.0.3")

    def test_tcpFromExternalAddressesInTurn(self) -> None:
        """
        Successive CONNECT sessions reach the target from 127.0.0.2 and
        127.0.0.3 in turn, never from 127.0.0.1.
        """
        target = PeerReporter()
        self.addCleanup(target.stop)
        seen = []
        for _ in range(4):
            sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, target.port)
            with sock:
                self.assertEqual(reply.rep, 0)
                self.assertIn(reply.host, ("127.0.0.2", "127.0.0.3"))
                seen.append(recvExactly(sock, 16).decode().strip())
        self.assertEqual(sorted(seen), ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"])
        self.assertNotEqual(seen[0], seen[1])

    def test_udpFromExternalAddress(self) -> None:
        """
        A UDP association's datagrams reach the target from an external
        address, and the answer still comes back to the client.
        """
        echo = UDPEchoServer()
        self.addCleanup(echo.stop)
        with UDPAssociation(self.proxy.port) as association:
            self.assertEqual(association.reply.rep, 0)
            association.send(LOOPBACK_V4, echo.port, b"from outside")
            self.assertEqual(association.receive()[3], b"from outside")
        (_, source), = echo.received
        self.assertIn(source[0], ("127.0.0.2", "127.0.0.3"))

    def test_noExternalOfTheFamily(self) -> None:
        """
        With only IPv4 outgoing addresses, a CONNECT to an IPv6 destination
        gets reply 0x03 (network unreachable).
        """
        sock, reply = socks5Connect(self.proxy.port, "::1", 9)
        sock.close()
        self.assertEqual(reply.rep, 0x03)
