# -*- test-case-name: tests.test_e2e_limits -*-
"""
End-to-end limits and loops: a real C{twistd socks5} on loopback, driven
by raw sockets.

 - One client address that holds as many idle connections as the global
   handshake limit does not lock out a client from another address (the
   per-client handshake limit refuses the rest first).
 - The listening socket's backlog is the configured one (read with
   C{ss -ltn}: the Send-Q of a listening socket is its backlog).
 - A CONNECT, or a forwarded HTTP request, to the proxy's own listener is
   refused with 0x02 (HTTP 403) and a log line naming the reason, also on a
   wildcard listener reached at another loopback address.

Everything runs on 127.0.0.0/8; the wildcard listener (0.0.0.0) lives only
while its test runs, and no name is resolved.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import unittest

from tests.e2e import (
    LOOPBACK_V4,
    LOOPBACK_V6,
    METHOD_NO_ACCEPTABLE,
    METHOD_NONE,
    SOCKET_TIMEOUT,
    EchoServer,
    ProxyProcess,
    connectTCP,
    encodeGreeting,
    encodeRequest,
    readMethodSelection,
    readReply,
    recvExactly,
    requireIPv6Loopback,
)

#: Another loopback address, as a second client's source address.
OTHER_LOOPBACK = "127.0.0.2"

#: The global handshake limit of the lockout test: small, so that the test
#: is quick, and above the default per-client handshake limit (64).
HANDSHAKES = 96

SUCCEEDED = 0x00
NOT_ALLOWED = 0x02

#: What the log says about a destination that is the proxy itself.
OWN_LISTENER = r"own listener \(the proxy would relay to itself\)"


def connectFrom(source: str, port: int, host: str = LOOPBACK_V4) -> socket.socket:
    """
    A TCP connection to C{host}:C{port} from the loopback address
    C{source}.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(SOCKET_TIMEOUT)
    try:
        sock.bind((source, 0))
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def configFile(case: unittest.TestCase, text: str) -> str:
    """
    Write C{text} to a configuration file removed after C{case}.
    """
    directory = tempfile.mkdtemp()
    case.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, "socksrelay.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def startProxy(case: unittest.TestCase, *args: str) -> ProxyProcess:
    proxy = ProxyProcess(args)
    case.addCleanup(proxy.stop)
    return proxy


def assertCleanLog(case: unittest.TestCase, proxy: ProxyProcess) -> None:
    proxy.stop()
    case.assertEqual([line for line in proxy.snapshot() if "Traceback" in line], [])


class LockoutTests(unittest.TestCase):
    """
    One client address cannot take every handshake slot.
    """

    def test_oneAddressDoesNotLockOutAnother(self) -> None:
        """
        With a global handshake limit of 96, 127.0.0.1 opens 96 idle
        connections: only the per-client handshake limit's worth (64 by
        default) are admitted, and its next greeting is refused naming that
        limit; a client from 127.0.0.2 still completes a CONNECT.
        """
        echo = EchoServer()
        self.addCleanup(echo.stop)
        path = configFile(self, f"[limits]\nhandshakes = {HANDSHAKES}\n")
        proxy = startProxy(self, "--config", path)
        assert proxy.port is not None
        idle = []
        try:
            for _ in range(HANDSHAKES):
                idle.append(connectFrom(LOOPBACK_V4, proxy.port))
            # Accepted in order: when this one is answered, every idle
            # connection before it has been counted.
            with connectFrom(LOOPBACK_V4, proxy.port) as probe:
                probe.sendall(encodeGreeting())
                self.assertEqual(readMethodSelection(probe), METHOD_NO_ACCEPTABLE)
            with connectFrom(OTHER_LOOPBACK, proxy.port) as other:
                other.sendall(encodeGreeting())
                self.assertEqual(readMethodSelection(other), METHOD_NONE)
                other.sendall(encodeRequest(LOOPBACK_V4, echo.port))
                self.assertEqual(readReply(other).rep, SUCCEEDED)
                other.sendall(b"ping")
                self.assertEqual(recvExactly(other, 4), b"ping")
            proxy.waitForLine(r"handshake limit per client \(64\) reached for 127\.0\.0\.1")
        finally:
            for sock in idle:
                sock.close()
        assertCleanLog(self, proxy)


    def test_refusedConnectionsDoNotPileUp(self) -> None:
        """
        Refused connections of one address are kept waiting for their first
        byte only up to its handshake limit (64 by default): with 64 idle
        connections admitted and 64 refused ones waiting, the next
        connection from 127.0.0.1 is closed at once, while the waiting ones
        are still answered C{05 FF}.
        """
        path = configFile(self, f"[limits]\nhandshakes = {HANDSHAKES}\n")
        proxy = startProxy(self, "--config", path)
        assert proxy.port is not None
        held = []
        try:
            for _ in range(128):
                held.append(connectFrom(LOOPBACK_V4, proxy.port))
            with connectFrom(LOOPBACK_V4, proxy.port) as extra:
                self.assertEqual(extra.recv(16), b"")
            proxy.waitForLine(r"closed at once, too many refused connections")
            last = held[-1]
            last.sendall(encodeGreeting())
            self.assertEqual(readMethodSelection(last), METHOD_NO_ACCEPTABLE)
        finally:
            for sock in held:
                sock.close()
        assertCleanLog(self, proxy)


def listenBacklog(pid: int, port: int) -> int:
    """
    The backlog of the listening TCP socket on C{port} of process C{pid},
    from C{ss -ltnp} (a listening socket's Send-Q is its backlog).
    """
    output = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    for line in output.splitlines():
        fields = line.split()
        if f"pid={pid}," in line:
            return int(fields[2])
    raise AssertionError(f"no listening socket of pid {pid} on port {port}:\n{output}")


@unittest.skipUnless(shutil.which("ss"), "needs ss (iproute2)")
class BacklogTests(unittest.TestCase):
    """
    The listening socket is made with the configured backlog.
    """

    def test_default(self) -> None:
        """
        By default the backlog is 1024, not Twisted's 50.
        """
        proxy = startProxy(self)
        assert proxy.port is not None
        self.assertEqual(listenBacklog(proxy.pid, proxy.port), 1024)

    def test_configured(self) -> None:
        """
        C{backlog} in the C{[limits]} of C{--config} sets it, and
        C{--backlog} wins over the file.
        """
        path = configFile(self, "[limits]\nbacklog = 300\n")
        proxy = startProxy(self, "--config", path)
        assert proxy.port is not None
        self.assertEqual(listenBacklog(proxy.pid, proxy.port), 300)
        proxy.stop()
        proxy = startProxy(self, "--config", path, "--backlog", "2000")
        assert proxy.port is not None
        self.assertEqual(listenBacklog(proxy.pid, proxy.port), 2000)


class SelfConnectTests(unittest.TestCase):
    """
    The proxy does not relay to itself.
    """

    def assertLoopRefused(
        self, proxy: ProxyProcess, source: str, host: str, port: int
    ) -> None:
        """
        A SOCKS5 CONNECT from C{source} to C{host}:C{port} gets 0x02, the
        session's log line names the reason, and no other session was
        opened meanwhile (a nested one would be).
        """
        assert proxy.port is not None
        since = proxy.mark()
        with connectFrom(source, proxy.port) as sock:
            sock.sendall(encodeGreeting())
            self.assertEqual(readMethodSelection(sock), METHOD_NONE)
            sock.sendall(encodeRequest(host, port))
            self.assertEqual(readReply(sock).rep, NOT_ALLOWED)
            clientPort = sock.getsockname()[1]
        line = proxy.waitForLine(r"session ended.* reply=0x02", since=since).string
        self.assertIn(f"client={source}:{clientPort} ", line)
        shown = f"[{host}]" if ":" in host else host
        self.assertRegex(line, f"destination={re.escape(shown)}:{port} ")
        self.assertRegex(line, r"reason=denied by " + OWN_LISTENER)
        self.assertEqual(len(proxy.linesMatching(r"session ended", since=since)), 1)

    def test_ownAddress(self) -> None:
        """
        A CONNECT to the address and port the proxy listens on gets 0x02
        (the built-in policy would allow a loopback client to reach
        loopback).
        """
        proxy = startProxy(self)
        assert proxy.port is not None
        self.assertLoopRefused(proxy, LOOPBACK_V4, LOOPBACK_V4, proxy.port)
        assertCleanLog(self, proxy)

    def test_socks4AndHTTPConnect(self) -> None:
        """
        A SOCKS4 CONNECT to the proxy itself is rejected (91) and an HTTP
        CONNECT gets 403, each with a session line naming the reason.
        """
        proxy = startProxy(self)
        assert proxy.port is not None
        since = proxy.mark()
        with connectTCP(LOOPBACK_V4, proxy.port) as sock:
            sock.sendall(
                struct.pack("!BBH", 4, 1, proxy.port) + socket.inet_aton(LOOPBACK_V4) + b"\0"
            )
            self.assertEqual(recvExactly(sock, 8)[:2], b"\x00\x5b")
        target = f"{LOOPBACK_V4}:{proxy.port}"
        with connectTCP(LOOPBACK_V4, proxy.port) as sock:
            sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            self.assertEqual(sock.recv(12), b"HTTP/1.1 403")
        lines = proxy.waitForCount(r"session ended", 2, since=since)
        protocols = sorted(re.search(r"protocol=(\S+)", line).group(1) for line in lines)
        self.assertEqual(protocols, ["http", "socks4"])
        for line in lines:
            self.assertRegex(line, r"reason=denied by " + OWN_LISTENER)
        self.assertEqual(len(proxy.linesMatching(r"session ended", since=since)), 2)
        assertCleanLog(self, proxy)

    def test_wildcardListener(self) -> None:
        """
        With a listener on 0.0.0.0, a CONNECT to its port at 127.0.0.1 or at
        another loopback address (where it answers too) gets 0x02, whichever
        listener the client came in on; another port on the same address is
        still reached.
        """
        echo = EchoServer()
        self.addCleanup(echo.stop)
        proxy = startProxy(self, "--port", "tcp:0:interface=0.0.0.0")
        wildcard = int(proxy.waitForLine(r"listening on 0\.0\.0\.0 port (\d+)").group(1))
        for destination in (LOOPBACK_V4, OTHER_LOOPBACK, "127.1.2.3"):
            self.assertLoopRefused(proxy, LOOPBACK_V4, destination, wildcard)
            self.assertLoopRefused(proxy, OTHER_LOOPBACK, destination, wildcard)
        with connectFrom(LOOPBACK_V4, wildcard) as sock:
            sock.sendall(encodeGreeting() + encodeRequest(LOOPBACK_V4, echo.port))
            self.assertEqual(readMethodSelection(sock), METHOD_NONE)
            self.assertEqual(readReply(sock).rep, SUCCEEDED)
        assertCleanLog(self, proxy)

    def test_ipv6WildcardListener(self) -> None:
        """
        With a listener on :: (which also answers IPv4 on Linux), a CONNECT
        to its port at ::1, at 127.0.0.1 or at another loopback address
        gets 0x02.
        """
        requireIPv6Loopback()
        proxy = startProxy(self, "--port", "tcp6:0:interface=\\:\\:")
        wildcard = int(proxy.waitForLine(r"listening on :: port (\d+)").group(1))
        for destination in (LOOPBACK_V6, LOOPBACK_V4, OTHER_LOOPBACK):
            self.assertLoopRefused(proxy, LOOPBACK_V4, destination, wildcard)
        assertCleanLog(self, proxy)

    def test_httpForwardedToItself(self) -> None:
        """
        A plain-HTTP request forwarded to the proxy itself gets 403, and the
        log names the reason.
        """
        proxy = startProxy(self)
        assert proxy.port is not None
        since = proxy.mark()
        target = f"{LOOPBACK_V4}:{proxy.port}"
        with connectTCP(LOOPBACK_V4, proxy.port) as sock:
            sock.sendall(
                f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n"
                "Connection: close\r\n\r\n".encode("ascii")
            )
            self.assertEqual(sock.recv(12), b"HTTP/1.1 403")
        line = proxy.waitForLine(r"session ended", since=since).string
        self.assertRegex(line, r"rule=" + OWN_LISTENER)
        self.assertEqual(len(proxy.linesMatching(r"session ended", since=since)), 1)
        assertCleanLog(self, proxy)
