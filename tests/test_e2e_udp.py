# -*- test-case-name: tests.test_e2e_udp -*-
"""
End-to-end UDP ASSOCIATE: the real C{twistd socks5} process, driven by
PySocks' UDP sockets, by Dante's C{socksify}, and by raw sockets.

Every address is on loopback: clients and targets use 127.0.0.1, ::1, and
(for a second and third "host") 127.0.0.2 and 127.0.0.3.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import socks

from tests.e2e import (
    socksifySetup,
    ATYP_IPV4,
    LOOPBACK_V4,
    ProxyTestCase,
    UDPAssociation,
    UDPEchoServer,
    encodeUDPHeader,
    parseUDPDatagram,
    requireIPv6Loopback,
)

SHORT = 0.5


def parseDrops(line: str) -> str:
    match = re.search(r"drops=(\S+)", line)
    return match.group(1) if match else ""


class UDPBase(ProxyTestCase):
    """
    One proxy per class (with C{proxyArgs}) and a UDP echo server per test.
    """

    def setUp(self) -> None:
        self.echo = UDPEchoServer()
        self.addCleanup(self.echo.stop)

    def associate(self, **kw: object) -> UDPAssociation:
        association = UDPAssociation(self.proxy.port, **kw)  # type: ignore[arg-type]
        self.addCleanup(association.close)
        self.assertEqual(association.reply.rep, 0, association.reply)
        return association

    def strangerSends(self, payload: bytes) -> socket.socket:
        """
        From 127.0.0.3, a host the client never sent to, send C{payload} to
        the address the echo server last heard from: the association's
        outbound socket.
        """
        outboundAddress = self.echo.received[-1][1]
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.3", 0))
        stranger.sendto(payload, outboundAddress)
        return stranger

    def sessionLine(self, mark: int) -> str:
        return self.proxy.waitForLine(
            r"session ended.*command=UDP_ASSOCIATE", 10, since=mark
        ).string


class RealClientTests(UDPBase):
    """
    Real SOCKS5 client libraries and programs use the UDP relay.
    """

    def pysocks(self) -> socks.socksocket:
        s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
        s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port)
        s.settimeout(10)
        self.addCleanup(s.close)
        return s

    def test_pysocksIPv4Target(self) -> None:
        """
        A PySocks UDP socket sends to an IPv4 echo server through the proxy
        and gets the echo back, naming the server as its source.
        """
        s = self.pysocks()
        s.sendto(b"ping over udp", (LOOPBACK_V4, self.echo.port))
        data, source = s.recvfrom(70000)
        self.assertEqual(data, b"ping over udp")
        self.assertEqual(source, (LOOPBACK_V4, self.echo.port))

    def test_pysocksNameTarget(self) -> None:
        """
        A PySocks UDP socket sends to C{localhost} (resolved by the proxy)
        and gets the echo back from the resolved IP address.
        """
        s = self.pysocks()
        for i in range(3):
            payload = b"named %d" % i
            s.sendto(payload, ("localhost", self.echo.port))
            data, source = s.recvfrom(70000)
            self.assertEqual(data, payload)
            self.assertEqual(source, (LOOPBACK_V4, self.echo.port))

    def test_socksifyProgram(self) -> None:
        """
        Dante's socksify runs an unmodified sendto/recvfrom program through
        the proxy: the datagram reaches the echo server from the proxy's
        outbound socket (not from the program's own socket), and the echo
        comes back to the program.
        """
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        socksify, env = socksifySetup(tmp.name, self.proxy.port, "udpassociate connect")
        program = os.path.join(tmp.name, "udpclient.py")
        with open(program, "w") as f:
            f.write(textwrap.dedent("""\
                import socket, sys
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(10)
                s.sendto(b"hello from socksify", ("127.0.0.1", int(sys.argv[1])))
                data, source = s.recvfrom(70000)
                print("ANSWER", data.decode(), source[0], source[1], s.getsockname()[1])
                """))
        mark = self.proxy.mark()
        result = subprocess.run(
            [socksify, sys.executable, program, str(self.echo.port)],
            capture_output=True,
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        out = result.stdout.decode()
        self.assertEqual(result.returncode, 0, out + result.stderr.decode())
        match = re.search(r"ANSWER hello from socksify 127.0.0.1 (\d+) (\d+)", out)
        self.assertIsNotNone(match, out)
        self.assertEqual(int(match.group(1)), self.echo.port)
        programPort = int(match.group(2))
        (data, source), = self.echo.received
        self.assertEqual(data, b"hello from socksify")
        self.assertNotEqual(source[1], programPort, "the datagram did not go through the proxy")
        line = self.sessionLine(mark)
        self.assertIn("datagramsUp=1 datagramsDown=1", line)


class RawRelayTests(UDPBase):
    """
    The relay's behaviour seen with raw sockets.
    """

    def test_echoWithHeader(self) -> None:
        """
        The announced relay address is the control connection's loopback
        address (never 0.0.0.0); a datagram with a proper header comes back
        with a header naming the echo server by IP (ATYP 1) and port.
        """
        a = self.associate()
        self.assertEqual(a.reply.host, LOOPBACK_V4)
        self.assertNotEqual(a.reply.port, 0)
        a.send(LOOPBACK_V4, self.echo.port, b"with header")
        atyp, host, port, payload = a.receive()
        self.assertEqual((atyp, host, port, payload), (ATYP_IPV4, LOOPBACK_V4, self.echo.port, b"with header"))

    def test_ipv6Destination(self) -> None:
        """
        An association made over IPv4 reaches an IPv6 destination (::1) as
        well, and the answer names it with ATYP 4.
        """
        requireIPv6Loopback()
        echo6 = UDPEchoServer(host="::1")
        self.addCleanup(echo6.stop)
        a = self.associate()
        a.send("::1", echo6.port, b"to six")
        atyp, host, port, payload = a.receive()
        self.assertEqual((atyp, host, port, payload), (4, "::1", echo6.port, b"to six"))
        a.send(LOOPBACK_V4, self.echo.port, b"and four")
        self.assertEqual(a.receive()[3], b"and four")

    def test_largeDatagramWhole(self) -> None:
        """
        A 60 000-byte datagram reaches the target whole and comes back whole.
        """
        a = self.associate()
        payload = bytes(range(256)) * 234 + b"x" * 96
        self.assertEqual(len(payload), 60000)
        a.send(LOOPBACK_V4, self.echo.port, payload)
        self.assertEqual(a.receive()[3], payload)
        self.assertEqual(self.echo.received[-1][0], payload)

    def test_fragmentDropped(self) -> None:
        """
        A datagram with FRAG != 0 is dropped and counted; the association
        goes on working.
        """
        mark = self.proxy.mark()
        a = self.associate()
        a.send(LOOPBACK_V4, self.echo.port, b"fragment", frag=1)
        with self.assertRaises(socket.timeout):
            a.receive(timeout=SHORT)
        self.assertEqual(self.echo.received, [])
        a.send(LOOPBACK_V4, self.echo.port, b"whole")
        self.assertEqual(a.receive()[3], b"whole")
        a.close()
        self.assertIn("fragmented:1", parseDrops(self.sessionLine(mark)))

    def test_foreignSourceDropped(self) -> None:
        """
        A datagram sent to the relay from another IP (127.0.0.2) than the
        client's is dropped and never relayed, and counted.
        """
        mark = self.proxy.mark()
        a = self.associate()
        a.send(LOOPBACK_V4, self.echo.port, b"mine")
        self.assertEqual(a.receive()[3], b"mine")
        intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(intruder.close)
        intruder.bind(("127.0.0.2", 0))
        intruder.sendto(encodeUDPHeader(LOOPBACK_V4, self.echo.port) + b"intruder", a.relay)
        time.sleep(SHORT)
        self.assertEqual([d for d, _ in self.echo.received], [b"mine"])
        a.close()
        self.assertIn("foreign-source:1", parseDrops(self.sessionLine(mark)))

    def test_portClosedWithControlConnection(self) -> None:
        """
        When the TCP control connection closes, the relay port is freed at
        once: the port can be bound again right after.
        """
        a = self.associate()
        relayPort = a.reply.port
        a.control.close()
        deadline = time.monotonic() + 5
        while True:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind((LOOPBACK_V4, relayPort))
                probe.close()
                break
            except OSError:
                probe.close()
                if time.monotonic() > deadline:
                    self.fail(f"relay port {relayPort} still bound 5 s after the control connection closed")
                time.sleep(0.05)

    def test_unsolicitedDropped(self) -> None:
        """
        Under the default (address-dependent) filtering, a datagram sent to
        the association's outbound socket by a host the client never sent to
        (127.0.0.3) is dropped; the target's answer still arrives.
        """
        mark = self.proxy.mark()
        a = self.associate()
        a.send(LOOPBACK_V4, self.echo.port, b"hello")
        self.assertEqual(a.receive()[3], b"hello")
        self.strangerSends(b"unsolicited")
        with self.assertRaises(socket.timeout):
            a.receive(timeout=SHORT)
        a.close()
        self.assertIn("unsolicited:1", parseDrops(self.sessionLine(mark)))

    def test_requestNamingClientPortEnforced(self) -> None:
        """
        A request that names the client's own IP and UDP port makes the relay
        accept datagrams only from that port.
        """
        a = self.associate()
        a.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((LOOPBACK_V4, 0))
        port = udp.getsockname()[1]
        udp.close()
        b = self.associate(requestHost=LOOPBACK_V4, requestPort=port)
        b.send(LOOPBACK_V4, self.echo.port, b"from the wrong port")
        with self.assertRaises(socket.timeout):
            b.receive(timeout=SHORT)
        right = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(right.close)
        right.bind((LOOPBACK_V4, port))
        right.settimeout(10)
        right.sendto(encodeUDPHeader(LOOPBACK_V4, self.echo.port) + b"right", b.relay)
        self.assertEqual(parseUDPDatagram(right.recvfrom(70000)[0])[3], b"right")


class OpenFilteringTests(UDPBase):
    """
    C{--udp-open-filtering}: any host may answer through an association.
    """

    proxyArgs = ("--udp-open-filtering",)

    def test_unsolicitedRelayed(self) -> None:
        """
        With open filtering, a datagram from a host the client never sent to
        (127.0.0.3) reaches the client, with a header naming that host.
        """
        a = self.associate()
        a.send(LOOPBACK_V4, self.echo.port, b"hello")
        self.assertEqual(a.receive()[3], b"hello")
        stranger = self.strangerSends(b"peer to peer")
        atyp, host, port, payload = a.receive()
        self.assertEqual((host, port, payload), ("127.0.0.3", stranger.getsockname()[1], b"peer to peer"))


class LimitsTests(UDPBase):
    """
    The idle timeout and the per-client cap.
    """

    proxyArgs = ("--udp-idle-timeout", "1", "--udp-max-per-client", "2")

    def test_idleTimeoutEndsAssociation(self) -> None:
        """
        After --udp-idle-timeout seconds without a datagram, the proxy ends
        the association and closes the control connection.
        """
        mark = self.proxy.mark()
        a = self.associate()
        a.send(LOOPBACK_V4, self.echo.port, b"once")
        self.assertEqual(a.receive()[3], b"once")
        a.control.sock.settimeout(10)
        self.assertEqual(a.control.sock.recv(1), b"")
        self.assertIn("reason=UDP idle timeout", self.sessionLine(mark))

    def test_perClientCap(self) -> None:
        """
        Over the per-client cap, an UDP ASSOCIATE request gets a failure
        reply; when an association ends, a new one is accepted again.
        """
        first = self.associate()
        self.associate()
        third = UDPAssociation(self.proxy.port)
        self.addCleanup(third.close)
        self.assertEqual(third.reply.rep, 0x01)
        first.close()
        deadline = time.monotonic() + 5
        while True:
            again = UDPAssociation(self.proxy.port)
            self.addCleanup(again.close)
            if again.reply.rep == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(again.reply.rep, 0)
