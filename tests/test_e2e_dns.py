# -*- test-case-name: tests.test_e2e_dns -*-
"""
End-to-end name resolution through an injected resolver.

A real name server (Twisted's own C{twistd dns}, with a zone of its own under
the reserved C{.test} domain) runs on loopback; the proxy runs with
C{--nameserver} pointing at it.  No query can leave the machine: the proxy
asks only that server, and the server is authoritative and not recursive.
"""

from __future__ import annotations

import os
import re
import tempfile
import unittest

from tests.e2e import (
    LOOPBACK_V4,
    EchoServer,
    ProxyProcess,
    TwistdProcess,
    closedPort,
    recvExactly,
    requireIPv6Loopback,
    socks5Connect,
)

ZONE = """
zone = [
    SOA(
        "socksrelay.test",
        mname="ns.socksrelay.test",
        rname="root.socksrelay.test",
        serial=1,
        refresh="1H",
        retry="1H",
        expire="1H",
        minimum="1H",
    ),
    NS("socksrelay.test", "ns.socksrelay.test"),
    A("echo.socksrelay.test", "127.0.0.1"),
    AAAA("echo6.socksrelay.test", "::1"),
    A("both.socksrelay.test", "127.0.0.2"),
    AAAA("both.socksrelay.test", "::1"),
]
"""

#: twistd dns logs the UDP port it got as "DNSDatagramProtocol starting on N".
DNS_READY = re.compile(r"DNSDatagramProtocol starting on (\d+)")


class NameServer(TwistdProcess):
    """
    C{twistd dns} on 127.0.0.1, an ephemeral port, serving L{ZONE}.
    """

    def __init__(self, zoneFile: str) -> None:
        super().__init__(
            ["dns", "--interface", LOOPBACK_V4, "--port", "0", "--pyzone", zoneFile],
            DNS_READY,
        )
        self.port = int(self.ready.group(1))


class InjectedResolverTests(unittest.TestCase):
    """
    Destination names are resolved through the name server given with
    C{--nameserver}.
    """

    @classmethod
    def setUpClass(cls) -> None:
        requireIPv6Loopback()
        cls.tmp = tempfile.TemporaryDirectory()
        zoneFile = os.path.join(cls.tmp.name, "socksrelay.test.zone")
        with open(zoneFile, "w") as f:
            f.write(ZONE)
        cls.dns = NameServer(zoneFile)
        try:
            cls.proxy = ProxyProcess(
                ["--nameserver", f"127.0.0.1:{cls.dns.port}", "--connect-timeout", "5"]
            )
        except BaseException:
            cls.dns.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        cls.dns.stop()
        cls.tmp.cleanup()
        text = "\n".join(cls.proxy.lines)
        if "Traceback" in text:
            raise AssertionError("the proxy logged a traceback:\n" + text)

    def echoThrough(self, name: str, server: EchoServer) -> bytes:
        sock, reply = socks5Connect(self.proxy.port, name, server.port)
        with sock:
            self.assertEqual(reply.rep, 0, reply)
            sock.sendall(b"ping " + name.encode())
            return recvExactly(sock, 5 + len(name))

    def test_nameResolvedByInjectedServer(self) -> None:
        """
        A CONNECT to a name that exists only in the loopback name server's
        zone reaches the address that server gives (127.0.0.1).
        """
        server = EchoServer()
        self.addCleanup(server.stop)
        name = "echo.socksrelay.test"
        self.assertEqual(self.echoThrough(name, server), b"ping " + name.encode())

    def test_aaaaRecordUsed(self) -> None:
        """
        A name with only an AAAA record is reached over IPv6 (::1).
        """
        server = EchoServer(host="::1")
        self.addCleanup(server.stop)
        name = "echo6.socksrelay.test"
        self.assertEqual(self.echoThrough(name, server), b"ping " + name.encode())

    def test_everyAddressTried(self) -> None:
        """
        When the first address of a name refuses (127.0.0.2, where nothing
        listens on the port), the proxy goes on to the next one (::1).
        """
        server = EchoServer(host="::1")
        self.addCleanup(server.stop)
        name = "both.socksrelay.test"
        mark = self.proxy.mark()
        self.assertEqual(self.echoThrough(name, server), b"ping " + name.encode())
        self.proxy.waitForLine(
            r"session ended.*both\.socksrelay\.test.*resolved=\[::1\]:", 10, since=mark
        )

    def test_unknownNameIsHostUnreachable(self) -> None:
        """
        A name the name server does not know (NXDOMAIN) gets reply 0x04
        (host unreachable), and the connection is closed.
        """
        sock, reply = socks5Connect(
            self.proxy.port, "missing.socksrelay.test", closedPort()
        )
        with sock:
            self.assertEqual(reply.rep, 0x04, reply)
            self.assertEqual(sock.recv(1), b"")
        self.proxy.waitForLine(r"session ended.*missing\.socksrelay\.test.*0x04", 10)
