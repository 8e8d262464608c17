# -*- test-case-name: tests.test_e2e_destnames -*-
"""
End-to-end destination names (issue 13, points 1 and 7): a real
C{twistd socks5} with C{deny hosts = ["denied.test"]}.

  - L{ConfusableNameTests}: the proxy resolves through a real name server
    (C{twistd dns}, authoritative for C{test}, on loopback); every spelling
    of C{denied.test} that a resolver would look up as C{denied.test}
    (fullwidth letters, U+00AD, U+200B, U+3002) is denied over SOCKS5,
    SOCKS4a and HTTP CONNECT and dropped over UDP, and logged as
    C{denied.test}.
  - L{BadNameTests}: the proxy uses the system resolver (as by default);
    names that IDNA refuses are answered at once (0x04, CD 91, 400) with
    the connect timeout at 30 s, and the log has no traceback.  These names
    cannot leave the machine either way: Python's IDNA codec refuses them
    before any query is made.

No query leaves the machine.
"""

from __future__ import annotations

import os
import struct
import tempfile

from tests.e2e import (
    LOOPBACK_V4,
    SOCKET_TIMEOUT,
    EchoServer,
    ProxyTestCase,
    SOCKS5Session,
    UDPAssociation,
    UDPEchoServer,
    connectTCP,
    readReply,
    recvExactly,
)
from tests.test_e2e_dns import NameServer

ZONE = """
zone = [
    SOA(
        "test",
        mname="ns.test",
        rname="root.test",
        serial=1,
        refresh="1H",
        retry="1H",
        expire="1H",
        minimum="1H",
    ),
    NS("test", "ns.test"),
    A("denied.test", "127.0.0.1"),
    A("allowed.test", "127.0.0.1"),
    A("_svc.allowed.test", "127.0.0.2"),
    A("_svc.allowed.test", "127.0.0.1"),
]
"""

CONFIG = """\
[timeouts]
connect = 30

[[rule]]
name = "no denied.test"
action = "deny"
hosts = ["denied.test"]

[[rule]]
name = "the rest"
action = "allow"
"""

#: C{denied.test} as a client may spell it.
CONFUSABLES = (
    "\uff44\uff45\uff4e\uff49\uff45\uff44.test",
    "den\u00adied.test",
    "den\u200bied.test",
    "denied\u3002test",
)

#: Names that IDNA (and Python's codec) refuse: an empty label, a label
#: over 63 bytes, a long IDN label.
BAD_NAMES = (
    b"a..b.test",
    b"a" * 64 + b".test",
    ("\u00fc" * 60 + ".test").encode("utf-8"),
)


def socks5Request(name: bytes, port: int, command: int = 0x01) -> bytes:
    return bytes([5, command, 0, 3, len(name)]) + name + struct.pack("!H", port)


def socks4aRequest(name: bytes, port: int) -> bytes:
    return b"\x04\x01" + struct.pack("!H", port) + b"\x00\x00\x00\x01\x00" + name + b"\x00"


def httpConnect(name: bytes, port: int) -> bytes:
    target = name + b":%d" % (port,)
    return b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"


def udpHeader(name: bytes, port: int) -> bytes:
    return b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port)


class _NameTestCase(ProxyTestCase):
    """
    A proxy with L{CONFIG}; its log must also show no unhandled error.
    """

    extraArgs: tuple[str, ...] = ()

    @classmethod
    def setUpClass(cls) -> None:
        directory = tempfile.TemporaryDirectory()
        cls.addClassCleanup(directory.cleanup)
        cls.directory = directory.name
        path = os.path.join(directory.name, "policy.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(CONFIG)
        cls.startNameServer()
        cls.proxyArgs = ("--config", path, *cls.extraArgs)
        super().setUpClass()

    @classmethod
    def startNameServer(cls) -> None:
        pass

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        unhandled = [line for line in cls.proxy.snapshot() if "Unhandled" in line]
        if unhandled:
            raise AssertionError("the proxy logged:\n" + "\n".join(unhandled))

    def socks5(self, request: bytes) -> int:
        """Greet, send C{request}, and return the reply code."""
        with SOCKS5Session(self.proxy.port) as session:
            self.assertEqual(session.greet(), 0x00)
            session.sock.sendall(request)
            return readReply(session.sock).rep

    def raw(self, request: bytes, size: int) -> bytes:
        """Send C{request} on a new connection and read C{size} bytes of answer."""
        with connectTCP(LOOPBACK_V4, self.proxy.port, SOCKET_TIMEOUT) as sock:
            sock.sendall(request)
            return recvExactly(sock, size)


class ConfusableNameTests(_NameTestCase):
    """
    Through a real name server: no spelling of C{denied.test} walks around
    C{deny hosts = ["denied.test"]}.
    """

    @classmethod
    def startNameServer(cls) -> None:
        zoneFile = os.path.join(cls.directory, "test.zone")
        with open(zoneFile, "w") as f:
            f.write(ZONE)
        cls.dns = NameServer(zoneFile)
        cls.addClassCleanup(cls.dns.stop)
        cls.extraArgs = ("--nameserver", f"127.0.0.1:{cls.dns.port}")

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def test_allowedNameReached(self) -> None:
        """
        The name server works: C{allowed.test} is reached (reply 0x00).
        """
        self.assertEqual(self.socks5(socks5Request(b"allowed.test", self.echo.port)), 0x00)

    def test_socks5Denied(self) -> None:
        """
        Each spelling of C{denied.test} gets 0x02 over SOCKS5, and the log
        names the destination C{denied.test} and the rule.
        """
        mark = self.proxy.mark()
        for name in CONFUSABLES:
            rep = self.socks5(socks5Request(name.encode("utf-8"), self.echo.port))
            self.assertEqual(rep, 0x02, name)
        self.proxy.waitForCount(
            rf"session ended: protocol=socks5 .*destination=denied\.test:{self.echo.port} "
            r".*reply=0x02 .*rule=no denied\.test",
            len(CONFUSABLES),
            10,
            since=mark,
        )

    def test_socks4aDenied(self) -> None:
        """
        Each spelling of C{denied.test} gets CD 91 over SOCKS4a, denied by
        the rule (not for want of an address).
        """
        mark = self.proxy.mark()
        for name in CONFUSABLES:
            answer = self.raw(socks4aRequest(name.encode("utf-8"), self.echo.port), 8)
            self.assertEqual(answer[:2], b"\x00\x5b", name)
        self.proxy.waitForCount(
            rf"session ended: protocol=socks4a .*destination=denied\.test:{self.echo.port} "
            r".*rule=no denied\.test",
            len(CONFUSABLES),
            10,
            since=mark,
        )

    def test_httpConnectDenied(self) -> None:
        """
        Each spelling of C{denied.test} (sent as UTF-8) gets 403 over HTTP
        CONNECT.
        """
        for name in CONFUSABLES:
            answer = self.raw(httpConnect(name.encode("utf-8"), self.echo.port), 12)
            self.assertEqual(answer, b"HTTP/1.1 403", name)

    def test_udpDropped(self) -> None:
        """
        Datagrams to each spelling of C{denied.test} are dropped as denied;
        one to C{allowed.test} is relayed.
        """
        server = UDPEchoServer()
        self.addCleanup(server.stop)
        mark = self.proxy.mark()
        with UDPAssociation(self.proxy.port) as association:
            self.assertEqual(association.reply.rep, 0x00, association.reply)
            for name in CONFUSABLES:
                association.udp.sendto(
                    udpHeader(name.encode("utf-8"), server.port) + b"secret",
                    association.relay,
                )
            association.udp.sendto(
                udpHeader(b"allowed.test", server.port) + b"hello", association.relay
            )
            _, _, _, payload = association.receive()
            self.assertEqual(payload, b"hello")
        line = self.proxy.waitForLine(
            r"session ended: .*command=UDP_ASSOCIATE", 10, since=mark
        ).string
        self.assertIn(f"drops=denied:{len(CONFUSABLES)}", line)
        self.assertEqual([data for data, _ in server.received], [b"hello"])

    def test_underscoreNameWithTwoAddresses(self) -> None:
        """
        A real name with an underscore label (which IDNA 2008 would refuse)
        works, also when it has more than one address: 127.0.0.2 refuses,
        127.0.0.1 answers.
        """
        with SOCKS5Session(self.proxy.port) as session:
            self.assertEqual(session.greet(), 0x00)
            session.sock.sendall(socks5Request(b"_SVC.allowed.test.", self.echo.port))
            self.assertEqual(readReply(session.sock).rep, 0x00)
            session.sock.sendall(b"ping")
            self.assertEqual(recvExactly(session.sock, 4), b"ping")
        self.proxy.waitForLine(
            rf"session ended: .*destination=_svc\.allowed\.test:{self.echo.port} ", 10
        )

    def test_overlongNameAnsweredAtOnce(self) -> None:
        """
        A name over 253 bytes gets 0x04 at once (the connect timeout is
        30 s, the client waits at most 10 s).
        """
        name = b".".join([b"a" * 63] * 4)
        self.assertEqual(self.socks5(socks5Request(name, self.echo.port)), 0x04)


class BadNameTests(_NameTestCase):
    """
    With the system resolver: names IDNA refuses are answered at once in
    every path, and nothing is left to fail later in a resolver thread.
    """

    extraArgs = ("--connect-timeout", "30", "--bind-timeout", "30")

    def test_socks5(self) -> None:
        """
        SOCKS5 CONNECT, BIND and UDP ASSOCIATE to a bad name get 0x04 (the
        timeouts are 30 s, the client waits at most 10 s), each with one
        log line saying why.
        """
        mark = self.proxy.mark()
        for command in (0x01, 0x02, 0x03):
            for name in BAD_NAMES:
                self.assertEqual(self.socks5(socks5Request(name, 80, command)), 0x04)
        self.proxy.waitForCount(
            r"session ended: .*reply=0x04 .*reason=protocol error: bad domain name: "
            r"host name .* cannot be normalised",
            3 * len(BAD_NAMES),
            10,
            since=mark,
        )

    def test_socks4a(self) -> None:
        """
        SOCKS4a CONNECT to a bad name gets CD 91 at once.
        """
        for name in BAD_NAMES:
            self.assertEqual(self.raw(socks4aRequest(name, 80), 8)[:2], b"\x00\x5b")

    def test_httpConnect(self) -> None:
        """
        HTTP CONNECT to a bad name gets 400 at once.
        """
        for name in BAD_NAMES:
            self.assertEqual(self.raw(httpConnect(name, 80), 12), b"HTTP/1.1 400")

    def test_httpForward(self) -> None:
        """
        Plain HTTP forwarding to an absolute URI with a bad (ASCII) host
        gets 400 at once.
        """
        for name in BAD_NAMES[:2]:
            request = b"GET http://" + name + b"/ HTTP/1.1\r\nHost: " + name + b"\r\n\r\n"
            self.assertEqual(self.raw(request, 12), b"HTTP/1.1 400")

    def test_udpDatagram(self) -> None:
        """
        A datagram to a bad name is dropped and counted; a datagram to an
        address after it is still relayed.
        """
        server = UDPEchoServer()
        self.addCleanup(server.stop)
        mark = self.proxy.mark()
        with UDPAssociation(self.proxy.port) as association:
            self.assertEqual(association.reply.rep, 0x00, association.reply)
            for name in BAD_NAMES:
                association.udp.sendto(udpHeader(name, server.port) + b"x", association.relay)
            association.send(LOOPBACK_V4, server.port, b"hello")
            _, _, _, payload = association.receive()
            self.assertEqual(payload, b"hello")
        line = self.proxy.waitForLine(
            r"session ended: .*command=UDP_ASSOCIATE", 10, since=mark
        ).string
        self.assertIn(f"drops=malformed:{len(BAD_NAMES)}", line)
