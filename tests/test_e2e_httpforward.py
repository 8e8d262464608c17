# -*- test-case-name: tests.test_e2e_httpforward -*-
"""
End-to-end tests of plain-HTTP forwarding with heads and bodies at the
edges of what the proxy accepts: bare-LF line ends, a client that leaves in
the middle of a body, and ports no origin can have.

The proxy is a real C{twistd socks5} process; the client is a raw socket;
the origin is a loopback server in a thread of the test process.  Every
wait is bounded by a few seconds, far below the 60 s idle timeout that
used to be the only way these connections ended.

Run with: python -m pytest tests/test_e2e_httpforward.py -q
"""

from __future__ import annotations

import socket

from tests.e2e import readHTTPResponse, recvUntilClosed
from tests.test_e2e_protocols import (
    ORIGIN_BODY,
    ProtocolTestCase,
    RecordingOrigin,
    headerValue,
)

#: Seconds the proxy gets to answer or close: much less than its 60 s
#: HTTP idle timeout, much more than a loopback round trip.
BOUND = 5.0


class ForwardEdgeTests(ProtocolTestCase):
    """
    Plain-HTTP forwarding answers, or closes, promptly.
    """

    @classmethod
    def startTargets(cls) -> None:
        cls.origin = cls.startTarget(RecordingOrigin())

    def test_bareLFHeads(self) -> None:
        """
        Request heads whose lines end in a bare LF, or mix LF and CRLF, are
        forwarded and answered: the first head and a second one on the same
        connection, each within L{BOUND} seconds.
        """
        port = self.origin.port
        mark = self.proxy.mark()
        sock = self.rawSocket(BOUND)
        clientPort = sock.getsockname()[1]
        heads = (
            f"GET http://127.0.0.1:{port}/lf HTTP/1.1\nHost: x\n\n",
            f"GET http://127.0.0.1:{port}/mixed HTTP/1.1\r\nHost: x\n"
            "X-Mixed: 1\r\n\n",
        )
        for head, path in zip(heads, ("/lf", "/mixed")):
            with self.subTest(path=path):
                sock.sendall(head.encode())
                response = readHTTPResponse(sock, deadline=BOUND)
                self.assertEqual((response.status, response.body), (200, ORIGIN_BODY))
                line, headers = self.origin.waitResult(BOUND)
                self.assertRegex(line, rf"^GET {path} HTTP/1\.[01]$")
        self.assertEqual(headerValue(headers, "X-Mixed"), "1", headers)
        sock.close()
        self.sessionLine(
            "http", r"command=HTTP .*reply=200 .*requests=2 ",
            clientPort=clientPort, since=mark,
        )

    def test_eofInBody(self) -> None:
        """
        A client that shuts down its side in the middle of a request body
        (10 of 100 bytes sent) is closed within L{BOUND} seconds with no
        answer, no origin is contacted, and the session ends as the
        client's doing.
        """
        mark = self.proxy.mark()
        sock = self.rawSocket(BOUND)
        clientPort = sock.getsockname()[1]
        sock.sendall(
            f"POST http://127.0.0.1:{self.origin.port}/upload HTTP/1.1\r\n"
            "Host: x\r\nContent-Length: 100\r\n\r\n0123456789".encode()
        )
        sock.shutdown(socket.SHUT_WR)
        self.assertEqual(recvUntilClosed(sock, BOUND), b"")
        self.sessionLine(
            "http", r"reason=client EOF", clientPort=clientPort, since=mark,
            timeout=BOUND,
        )
        self.assertTrue(self.origin.results.empty(), "a request reached the origin")

    def test_badPorts(self) -> None:
        """
        An absolute URI whose port is 0, over 65535, or not a number is
        answered 400 (as CONNECT to such a port is), and no origin (port 80
        least of all) is contacted.
        """
        for port in ("0", "65536", "99999", "http", "-1"):
            with self.subTest(port=port):
                sock = self.rawSocket(BOUND)
                sock.sendall(
                    f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                response = readHTTPResponse(sock, deadline=BOUND)
                self.assertEqual(response.status, 400, response)
                self.assertIn(b"port", response.body)
        self.assertTrue(self.origin.results.empty(), "a request reached the origin")
