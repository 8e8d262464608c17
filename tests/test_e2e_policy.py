# -*- test-case-name: tests.test_e2e_policy -*-
"""
End-to-end access policy: a real C{twistd socks5} started with
C{--config FILE} (rules written for the test's own loopback servers), with
the example C{etc/socksrelay.toml}, with the built-in defaults, and with a
file it must refuse.

Everything runs on 127.0.0.1; the only name used is C{localhost}.  The one
datagram addressed to 169.254.169.254 is denied by the proxy before it
would be sent (that is what the test checks), and goes to the discard port.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import tempfile
import unittest

import socks

from tests.e2e import (
    CMD_UDP_ASSOCIATE,
    METHOD_NONE,
    REP_NOT_ALLOWED,
    LOOPBACK_V4,
    REPO_ROOT,
    EchoServer,
    HTTPTarget,
    ProxyProcess,
    ProxyTestCase,
    SOCKS5Session,
    UDPAssociation,
    UDPEchoServer,
    cleanEnvironment,
    connectTCP,
    encodeRequest,
    readReply,
    recvExactly,
    runCurl,
    socks5Connect,
    twistdPath,
)

CONFIG = """\
[timeouts]
connect = 10

[[rule]]
name = "no localhost by name"
action = "deny"
hosts = ["localhost"]

[[rule]]
name = "loopback to the open ports"
action = "allow"
clients = ["127.0.0.0/8"]
ports = [{open}]

[[rule]]
name = "closed by policy"
action = "deny"
"""

#: The SOCKS5 BIND command.
CMD_BIND = 0x02

#: How long a refused connection attempt is awaited on a target's listener.
NO_CONNECTION_WAIT = 1.0


def sessionLine(proxy: ProxyProcess, pattern: str, since: int) -> str:
    """
    The first end-of-session line from C{since} on that matches
    C{pattern}.
    """
    return proxy.waitForLine(r"session ended.*" + pattern, 10, since=since).string


class Listener:
    """
    A listening socket on 127.0.0.1 that nothing accepts from, to see
    whether anyone tried to connect.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK_V4, 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]

    def connected(self, wait: float = NO_CONNECTION_WAIT) -> bool:
        """
        Whether a connection arrives within C{wait} seconds.
        """
        self.sock.settimeout(wait)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True

    def stop(self) -> None:
        self.sock.close()


class ConfiguredPolicyTests(ProxyTestCase):
    """
    A proxy whose C{--config} allows loopback clients to two ports (an echo
    server and a web server), denies C{localhost} by name and everything
    else.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.echo = EchoServer()
        cls.addClassCleanup(cls.echo.stop)
        cls.web = HTTPTarget(b"open web\n")
        cls.addClassCleanup(cls.web.stop)
        cls.closedWeb = HTTPTarget(b"closed web\n")
        cls.addClassCleanup(cls.closedWeb.stop)
        cls.closed = Listener()
        cls.addClassCleanup(cls.closed.stop)
        directory = tempfile.TemporaryDirectory()
        cls.addClassCleanup(directory.cleanup)
        path = os.path.join(directory.name, "policy.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(CONFIG.format(open=f"{cls.echo.port}, {cls.web.port}"))
        cls.proxyArgs = ("--config", path)
        super().setUpClass()

    def test_allowedConnect(self) -> None:
        """
        A CONNECT to an allowed port succeeds and relays.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        with sock:
            self.assertEqual(reply.rep, 0x00, reply)
            sock.sendall(b"allowed")
            self.assertEqual(recvExactly(sock, 7), b"allowed")

    def test_deniedConnect(self) -> None:
        """
        A CONNECT to a port the rules deny gets 0x02 and is closed, the
        target sees no connection, and the session line names the rule.
        """
        mark = self.proxy.mark()
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.closed.port)
        with sock:
            self.assertEqual(reply.rep, 0x02, reply)
            self.assertEqual(sock.recv(1), b"")
        line = sessionLine(self.proxy, rf"destination=127\.0\.0\.1:{self.closed.port}\b", mark)
        self.assertIn("rule=closed by policy", line)
        self.assertIn("reply=0x02", line)
        self.assertFalse(self.closed.connected())

    def test_socks4Denied(self) -> None:
        """
        A SOCKS4 CONNECT to a denied port gets CD 91, and the session line
        names the rule.
        """
        mark = self.proxy.mark()
        with connectTCP(LOOPBACK_V4, self.proxy.port) as sock:
            sock.sendall(
                b"\x04\x01" + struct.pack("!H", self.closed.port)
                + socket.inet_aton(LOOPBACK_V4) + b"\x00"
            )
            answer = recvExactly(sock, 8)
            self.assertEqual(answer[:2], b"\x00\x5b", answer)
        line = sessionLine(self.proxy, rf"protocol=socks4 .*:{self.closed.port}\b", mark)
        self.assertIn("rule=closed by policy", line)
        self.assertFalse(self.closed.connected())

    def test_localhostDeniedByName(self) -> None:
        """
        A rule on the host name C{localhost} denies it when the client asks
        by name (curl C{--socks5-hostname}), while the same server by IP is
        reached.
        """
        mark = self.proxy.mark()
        served = len(self.web.requests)
        proxy = f"127.0.0.1:{self.proxy.port}"
        byName = runCurl("--socks5-hostname", proxy, self.web.url("localhost"))
        self.assertNotEqual(byName.returncode, 0, byName)
        self.assertEqual(len(self.web.requests), served)
        line = sessionLine(self.proxy, rf"destination=localhost:{self.web.port}\b", mark)
        self.assertIn("rule=no localhost by name", line)
        byIP = runCurl("--socks5-hostname", proxy, self.web.url())
        self.assertEqual(byIP.returncode, 0, byIP)
        self.assertEqual(byIP.stdout, b"open web\n")

    def test_httpConnectDenied(self) -> None:
        """
        An HTTP CONNECT tunnel to a denied port is answered 403.
        """
        mark = self.proxy.mark()
        served = len(self.closedWeb.requests)
        result = runCurl(
            "--proxytunnel", "-x", f"http://127.0.0.1:{self.proxy.port}",
            self.closedWeb.url(),
        )
        self.assertNotEqual(result.returncode, 0, result)
        self.assertIn(b"403", result.stderr)
        self.assertEqual(len(self.closedWeb.requests), served)
        line = sessionLine(self.proxy, rf"protocol=http .*:{self.closedWeb.port}\b", mark)
        self.assertIn("rule=closed by policy", line)

    def test_httpForwardDenied(self) -> None:
        """
        A plain-HTTP request through the proxy to a denied port is answered
        403 and never reaches the server.
        """
        served = len(self.closedWeb.requests)
        result = runCurl(
            "-x", f"http://127.0.0.1:{self.proxy.port}", "-o", os.devnull,
            "-w", "%{http_code}", self.closedWeb.url(),
        )
        self.assertEqual(result.stdout, b"403", result)
        self.assertEqual(len(self.closedWeb.requests), served)

    def test_httpForwardAllowed(self) -> None:
        """
        A plain-HTTP request to an allowed port is forwarded.
        """
        result = runCurl("-x", f"http://127.0.0.1:{self.proxy.port}", self.web.url())
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stdout, b"open web\n")


class ExampleConfigTests(ProxyTestCase):
    """
    The proxy starts with C{etc/socksrelay.toml} as it is.
    """

    proxyArgs = ("--config", os.path.join(REPO_ROOT, "etc", "socksrelay.toml"))

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def test_localClientReachesLocalService(self) -> None:
        """
        A loopback client reaches a service on this host ("local services
        for local clients").
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        with sock:
            self.assertEqual(reply.rep, 0x00, reply)
            sock.sendall(b"example")
            self.assertEqual(recvExactly(sock, 7), b"example")


class CommandRuleTests(ProxyTestCase):
    """
    C{etc/socksrelay.toml} with C{deny commands = ["udp", "bind"]} added
    after its first rule (which denies link-local destinations): UDP
    ASSOCIATE and BIND are refused at the request with 0x02 and a log line,
    while CONNECT still works.
    """

    @classmethod
    def setUpClass(cls) -> None:
        with open(os.path.join(REPO_ROOT, "etc", "socksrelay.toml"), encoding="utf-8") as f:
            example = f.read()
        marker = "# This host's own services"
        assert marker in example
        config = example.replace(
            marker,
            '[[rule]]\nname = "no udp or bind"\naction = "deny"\n'
            'commands = ["udp", "bind"]\n\n' + marker,
        )
        directory = tempfile.TemporaryDirectory()
        cls.addClassCleanup(directory.cleanup)
        path = os.path.join(directory.name, "commands.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(config)
        cls.proxyArgs = ("--config", path)
        super().setUpClass()

    @classmethod
    def startTargets(cls) -> None:
        cls.echo = cls.startTarget(EchoServer())

    def assertRefusedAtRequest(self, command: int, name: str) -> None:
        """
        The request C{command} is answered 0x02, the connection then ends,
        and the session line names the rule.
        """
        mark = self.proxy.mark()
        with SOCKS5Session(self.proxy.port) as session:
            self.assertEqual(session.greet(), METHOD_NONE)
            session.sock.sendall(encodeRequest("0.0.0.0", 0, command))
            reply = readReply(session.sock)
            self.assertEqual(reply.rep, REP_NOT_ALLOWED, reply)
            self.assertEqual(session.sock.recv(1), b"")
        line = sessionLine(self.proxy, rf"command={name}", mark)
        self.assertIn("denied by no udp or bind", line)
        self.assertIn("reply=0x02", line)

    def test_udpAssociateRefused(self) -> None:
        """
        UDP ASSOCIATE gets 0x02 at once, and PySocks reports the refusal
        when it asks for an association.
        """
        self.assertRefusedAtRequest(CMD_UDP_ASSOCIATE, "UDP_ASSOCIATE")
        s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
        s.set_proxy(socks.SOCKS5, LOOPBACK_V4, self.proxy.port)
        s.settimeout(10)
        with s, self.assertRaises(socks.SOCKS5Error) as caught:
            s.sendto(b"x", (LOOPBACK_V4, self.echo.port))
        self.assertIn("0x02", str(caught.exception))

    def test_bindRefused(self) -> None:
        """
        BIND gets 0x02 at once.
        """
        self.assertRefusedAtRequest(CMD_BIND, "BIND")

    def test_connectStillAllowed(self) -> None:
        """
        The rule names only UDP and BIND: a loopback CONNECT is served.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port)
        with sock:
            self.assertEqual(reply.rep, 0x00, reply)
            sock.sendall(b"connect")
            self.assertEqual(recvExactly(sock, 7), b"connect")


class DefaultPolicyTests(ProxyTestCase):
    """
    Without C{--config} or C{--auth}: the built-in defaults.
    """

    def setUp(self) -> None:
        self.echo = UDPEchoServer()
        self.addCleanup(self.echo.stop)

    def test_linkLocalDatagramDenied(self) -> None:
        """
        A UDP datagram to 169.254.169.254 is dropped as denied (the session
        line counts it), while a datagram to a loopback server goes through.
        """
        mark = self.proxy.mark()
        with UDPAssociation(self.proxy.port) as association:
            self.assertEqual(association.reply.rep, 0x00, association.reply)
            association.send("169.254.169.254", 9, b"metadata?")
            association.send(LOOPBACK_V4, self.echo.port, b"hello")
            _, host, port, payload = association.receive()
            self.assertEqual((host, port, payload), (LOOPBACK_V4, self.echo.port, b"hello"))
        line = sessionLine(self.proxy, r"command=UDP_ASSOCIATE", mark)
        drops = re.search(r"drops=(\S+)", line)
        self.assertIsNotNone(drops, line)
        self.assertIn("denied:1", drops.group(1).split(","), line)
        self.assertEqual([data for data, _ in self.echo.received], [b"hello"])


class BadConfigTests(unittest.TestCase):
    """
    A file with an error stops C{twistd} before it listens.
    """

    def test_badFileRefused(self) -> None:
        """
        C{twistd socks5 --config BAD} exits non-zero, and its output names
        the file, the line and the problem.
        """
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "bad.toml")
            with open(path, "w", encoding="utf-8") as f:
                f.write('[[rule]]\naction = "allow"\n\n[[rule]]\naction = "deny"\nports = [70000]\n')
            result = subprocess.run(
                [
                    twistdPath(), "-n", "--pidfile=", "--logfile=-", "socks5",
                    "--port", "tcp:0:interface=127.0.0.1", "--config", path,
                ],
                cwd=REPO_ROOT,
                env=cleanEnvironment({"PYTHONPATH": REPO_ROOT}),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=False,
            )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        self.assertNotEqual(result.returncode, 0, output)
        self.assertIn(path, output)
        self.assertRegex(output, r"\bline [46]\b")
        self.assertIn("70000", output)
        self.assertNotRegex(output, r"listening on \S+ port \d+")
