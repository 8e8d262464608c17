# -*- test-case-name: tests.test_e2e_reload -*-
"""
End-to-end live reload: a running C{twistd socks5} re-reads its
configuration file and credential backends on SIGHUP.
"""

from __future__ import annotations

import os
import signal
import tempfile
import unittest

from tests.e2e import (
    LOOPBACK_V4,
    METHOD_USERPASS,
    EchoServer,
    ProxyProcess,
    SOCKS5Session,
    recvExactly,
    socks5Connect,
)

ALLOW_PORT = """
[[rule]]
name = "echo allowed"
action = "allow"
ports = [{port}]

[[rule]]
name = "nothing else"
action = "deny"
"""

DENY_PORT = """
recheck = {recheck}

[[rule]]
name = "echo now denied"
action = "deny"
ports = [{port}]

[[rule]]
name = "everything else"
action = "allow"
"""


class ReloadTests(unittest.TestCase):
    """
    SIGHUP swaps the policy and the credentials of a running proxy.
    """

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.config = os.path.join(self.tmp.name, "socksrelay.toml")
        self.users = os.path.join(self.tmp.name, "users")
        self.write(self.config, ALLOW_PORT.format(port=self.echo.port))
        self.write(self.users, "alice:first\n")
        self.proxy = ProxyProcess(
            ["--config", self.config, "--auth", f"file:{self.users}"]
        )
        self.addCleanup(self.proxy.stop)

    def tearDown(self) -> None:
        text = "\n".join(self.proxy.lines)
        self.assertNotIn("Traceback", text)
        self.assertNotIn("first", text.replace("first byte", ""))

    def write(self, path: str, text: str) -> None:
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)

    def reload(self, expect: str) -> None:
        mark = self.proxy.mark()
        os.kill(self.proxy.pid, signal.SIGHUP)
        self.proxy.waitForLine(expect, 10, since=mark)

    def connect(self, password: str = "first") -> tuple[object, int]:
        sock, reply = socks5Connect(
            self.proxy.port, LOOPBACK_V4, self.echo.port, "alice", password
        )
        return sock, reply.rep

    def test_goodFileSwapsPolicy(self) -> None:
        """
        After a SIGHUP with a new file, new sessions get the new rules (the
        echo port is now denied, 0x02, naming the rule), while a session
        opened before goes on working.
        """
        before, rep = self.connect()
        self.addCleanup(before.close)  # type: ignore[attr-defined]
        self.assertEqual(rep, 0)
        mark = self.proxy.mark()
        self.write(self.config, DENY_PORT.format(port=self.echo.port, recheck="false"))
        self.reload(r"configuration reloaded")
        after, rep = self.connect()
        after.close()  # type: ignore[attr-defined]
        self.assertEqual(rep, 0x02)
        self.proxy.waitForLine(r"session ended.*rule=echo now denied", 10, since=mark)
        before.sendall(b"still here")  # type: ignore[attr-defined]
        self.assertEqual(recvExactly(before, 10), b"still here")  # type: ignore[arg-type]

    def test_badFileRefused(self) -> None:
        """
        A SIGHUP with a broken file is refused with a log line naming the
        line, and the running policy stays.
        """
        self.write(self.config, "[[rule]]\naction = 'perhaps'\n")
        self.reload(r"reload refused.*line 1")
        sock, rep = self.connect()
        sock.close()  # type: ignore[attr-defined]
        self.assertEqual(rep, 0)

    def test_recheckClosesDeniedSessions(self) -> None:
        """
        With recheck = true, a live session that the new rules deny is
        closed, with a log line naming the rule.
        """
        live, rep = self.connect()
        self.addCleanup(live.close)  # type: ignore[attr-defined]
        self.assertEqual(rep, 0)
        self.write(self.config, DENY_PORT.format(port=self.echo.port, recheck="true"))
        self.reload(r"recheck closed 1 live sessions")
        live.settimeout(10)  # type: ignore[attr-defined]
        self.assertEqual(live.recv(1), b"")  # type: ignore[attr-defined]
        self.proxy.waitForLine(r"recheck: closing the session.*echo now denied", 10)

    def test_credentialsReloaded(self) -> None:
        """
        A changed password file takes effect after SIGHUP: the old password
        is refused and the new one accepted.
        """
        self.write(self.users, "alice:second\n")
        self.reload(r"configuration reloaded")
        with SOCKS5Session(self.proxy.port) as session:
            self.assertEqual(session.greet((METHOD_USERPASS,)), METHOD_USERPASS)
            self.assertNotEqual(session.authenticate("alice", "first")[1], 0)
        sock, rep = self.connect("second")
        sock.close()  # type: ignore[attr-defined]
        self.assertEqual(rep, 0)
