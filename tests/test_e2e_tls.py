# -*- test-case-name: tests.test_e2e_tls -*-
"""
End-to-end tests of a TLS listener (C{--port ssl:...}): the real
C{twistd socks5} with a certificate made for the test, a real TLS client
(Python's C{ssl}, ragged EOFs not suppressed) and a loopback destination.

Run with: python -m pytest tests/test_e2e_tls.py -q
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import (
    LISTENING_RE,
    LOOPBACK_V4,
    REP_SUCCEEDED,
    SESSION_ENDED_RE,
    SOCKET_TIMEOUT,
    ProxyTestCase,
    EchoServer,
    LoopbackTCPServer,
    SourceServer,
    abortSocket,
    digestOf,
    encodeGreeting,
    encodeRequest,
    readMethodSelection,
    readReply,
)


def writeSelfSignedPEM(path: str) -> None:
    """
    Write a private key and a self-signed certificate for C{localhost},
    valid for a day, to C{path} (the form C{ssl:...:privateKey=} reads).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        f.write(certificate.public_bytes(serialization.Encoding.PEM))


class TLSTestCase(ProxyTestCase):
    """
    A proxy with a TLS listener (and C{tlsArgs}) beside its TCP one, and a
    TLS client for it.
    """

    tlsArgs: tuple[str, ...] = ()

    @classmethod
    def setUpClass(cls) -> None:
        cls.directory = tempfile.mkdtemp(prefix="socksrelay-tls-")
        cls.addClassCleanup(shutil.rmtree, cls.directory, True)
        pem = os.path.join(cls.directory, "server.pem")
        writeSelfSignedPEM(pem)
        cls.proxyArgs = (
            *cls.tlsArgs,
            "--port",
            f"ssl:0:privateKey={pem}:interface={LOOPBACK_V4}",
        )
        super().setUpClass()
        started = cls.proxy.waitForLine(r"\(TLS\) starting on (\d+)")
        cls.tlsPort = int(started.group(1))
        cls.proxy.waitForCount(LISTENING_RE, 2)

    def tlsConnect(self) -> ssl.SSLSocket:
        """
        A TLS connection to the proxy's TLS listener, from a client that
        reports an EOF without close_notify as an error.
        """
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection((LOOPBACK_V4, self.tlsPort), SOCKET_TIMEOUT)
        self.addCleanup(raw.close)
        sock = context.wrap_socket(raw, suppress_ragged_eofs=False)
        self.addCleanup(sock.close)
        return sock

    def socks5Tunnel(self, sock: ssl.SSLSocket, address: tuple[str, int]) -> None:
        sock.sendall(encodeGreeting())
        self.assertEqual(readMethodSelection(sock), 0x00)
        sock.sendall(encodeRequest(*address))
        self.assertEqual(readReply(sock).rep, REP_SUCCEEDED)

    def recvUntilCloseNotify(self, sock: ssl.SSLSocket) -> bytes:
        """
        Read until the TLS stream ends; an EOF without close_notify raises
        L{ssl.SSLEOFError}.
        """
        data = bytearray()
        for _ in range(10_000):
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(data)
            data += chunk
        self.fail("the TLS stream did not end")


class TLSListenerTests(TLSTestCase):
    """
    A SOCKS5 tunnel through a TLS listener ends with a TLS close_notify,
    and the proxy logs no traceback (L{ProxyTestCase} checks the log).
    """

    def test_destinationCloseSendsCloseNotify(self) -> None:
        """
        When the destination closes, the client reads everything it sent
        and then a TLS close_notify (not a bare TCP FIN: no SSLEOFError),
        the session ends once the client closes too, and nothing in the
        proxy's log is a traceback or an C{Unhandled Error}.
        """
        source = self.startTarget(SourceServer(100_000, seed=8))
        mark = self.proxy.mark()
        sock = self.tlsConnect()
        self.socks5Tunnel(sock, source.address)
        data = self.recvUntilCloseNotify(sock)
        self.assertEqual(digestOf([data]), source.expected())
        sock.close()
        self.proxy.waitForLine(SESSION_ENDED_RE, since=mark)
        self.assertEqual(self.proxy.linesMatching("Unhandled|Traceback", since=mark), [])

    def test_clientSendsAfterCloseNotify(self) -> None:
        """
        The destination's EOF does not cut the client's direction short: the
        client still sends after the close_notify, its bytes reach the
        destination, and its own close_notify then ends the session.
        """
        source = self.startTarget(SourceServer(10, seed=9, closeAfterSend=False))
        mark = self.proxy.mark()
        sock = self.tlsConnect()
        self.socks5Tunnel(sock, source.address)
        self.recvUntilCloseNotify(sock)
        sock.sendall(b"after the close_notify")
        sock.unwrap()
        result = source.waitResult()
        self.assertEqual(result["received"], b"after the close_notify")
        self.proxy.waitForLine(SESSION_ENDED_RE, since=mark)
        self.assertEqual(self.proxy.linesMatching("Unhandled|Traceback", since=mark), [])

    def test_destinationResetSendsCloseNotify(self) -> None:
        """
        When the destination resets its connection, the client still gets
        a TLS close_notify (the destination's end must not close the raw
        socket under the client's TLS layer as it stops its producer).
        """
        resetter = self.startTarget(ResetAfterSend())
        mark = self.proxy.mark()
        sock = self.tlsConnect()
        self.socks5Tunnel(sock, resetter.address)
        self.assertEqual(self.recvUntilCloseNotify(sock), b"bye")
        sock.close()
        self.proxy.waitForLine(SESSION_ENDED_RE, since=mark)
        self.assertEqual(self.proxy.linesMatching("Unhandled|Traceback", since=mark), [])


class ResetAfterSend(LoopbackTCPServer):
    """
    Sends C{bye}, waits for the bytes to be read, then resets the connection.
    """

    def handle(self, conn: socket.socket) -> None:
        conn.sendall(b"bye")
        time.sleep(0.2)
        abortSocket(conn)
        self.results.put(True)


class TLSIdleTimeoutTests(TLSTestCase):
    """
    A relay through a TLS listener closed by the proxy's idle timeout.
    """

    tlsArgs = ("--idle-timeout", "1")

    def test_idleTimeoutSendsCloseNotify(self) -> None:
        """
        When the idle timeout closes a tunnel, the TLS client gets a
        close_notify (no SSLEOFError), not a TCP connection cut under the
        TLS layer, and the session ends with the timeout as its reason.
        """
        echo = self.startTarget(EchoServer())
        mark = self.proxy.mark()
        sock = self.tlsConnect()
        self.socks5Tunnel(sock, echo.address)
        sock.sendall(b"ping")
        self.assertEqual(sock.recv(4), b"ping")
        self.assertEqual(self.recvUntilCloseNotify(sock), b"")
        sock.close()
        self.proxy.waitForLine(r"session ended: .*reason=idle timeout", since=mark)
        self.assertEqual(self.proxy.linesMatching("Unhandled|Traceback", since=mark), [])
