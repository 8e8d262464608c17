# -*- test-case-name: tests.test_e2e_users -*-
"""
End-to-end tests of C{--auth users:FILE}: a real C{twistd socks5} with a
users file managed by C{socksrelay-users}, real SOCKS5 clients, loopback
only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import bcrypt

from socksrelay.users import UserRecord, writeUsers
from tests.e2e import (
    LOOPBACK_V4,
    METHOD_USERPASS,
    REPO_ROOT,
    EchoServer,
    ProxyProcess,
    SOCKS5Session,
    cleanEnvironment,
    recvExactly,
    socks5Connect,
    twistdPath,
)

FAST_PASSWORD = "quick-fox-42"
SLOW_PASSWORD = "slow-tortoise-77"


def usersCommand(path: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = cleanEnvironment({"PYTHONPATH": REPO_ROOT})
    return subprocess.run(
        [sys.executable, "-m", "socksrelay.userscmd", path, *args],
        input=stdin.encode(), capture_output=True, env=env, timeout=60,
    )


def echoRoundTrip(proxyPort: int, server: EchoServer, username: str,
                  password: str) -> bytes:
    sock, reply = socks5Connect(proxyPort, LOOPBACK_V4, server.port,
                                username=username, password=password)
    with sock:
        if reply.rep != 0:
            raise AssertionError(f"CONNECT failed: {reply}")
        sock.sendall(b"hello")
        return recvExactly(sock, 5)


def authStatus(proxyPort: int, username: str, password: str) -> bytes:
    with SOCKS5Session(proxyPort) as session:
        if session.greet((METHOD_USERPASS,)) != METHOD_USERPASS:
            raise AssertionError("the proxy did not select username/password")
        return session.authenticate(username, password)


class UsersBackendTests(unittest.TestCase):
    """
    A proxy with C{--auth users:FILE} authenticates the file's users, sees
    changes made by C{socksrelay-users} without a restart, and refuses
    expired users with a log line.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.path = os.path.join(cls.tmp, "users.db")
        result = usersCommand(
            cls.path, "add", "alice", "--password-stdin", "--rounds", "4",
            "--groups", "staff", "--max-sessions", "10", stdin=FAST_PASSWORD + "\n",
        )
        if result.returncode != 0:
            raise AssertionError(result.stderr.decode())
        cls.echo = EchoServer()
        cls.proxy = ProxyProcess(["--auth", f"users:{cls.path}"])

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        cls.echo.stop()
        shutil.rmtree(cls.tmp)
        text = cls.proxy.text()
        if "Traceback" in text or FAST_PASSWORD in text or "$2b$" in text:
            raise AssertionError("traceback, password or hash in the log:\n" + text)

    def test_userAuthenticates(self) -> None:
        """
        A user of the file authenticates and relays, and a wrong password or
        unknown name is refused.
        """
        mark = self.proxy.mark()
        self.assertEqual(
            echoRoundTrip(self.proxy.port, self.echo, "alice", FAST_PASSWORD), b"hello"
        )
        self.proxy.waitForLine(r"session ended.*user=alice", 10, since=mark)
        self.assertNotEqual(authStatus(self.proxy.port, "alice", "wrong")[1], 0)
        self.assertNotEqual(authStatus(self.proxy.port, "nobody", FAST_PASSWORD)[1], 0)

    def test_addedThenExpiredUser(self) -> None:
        """
        A user added while the proxy runs can log in at once; after
        C{set --expires} in the past, the same login is refused and the log
        says the account expired.
        """
        added = usersCommand(self.path, "add", "dave", "--password-stdin",
                             "--rounds", "4", stdin=FAST_PASSWORD + "\n")
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertEqual(
            echoRoundTrip(self.proxy.port, self.echo, "dave", FAST_PASSWORD), b"hello"
        )
        # Changes within one mtime tick are still seen: the size changes.
        expired = usersCommand(self.path, "set", "dave", "--expires",
                               "2001-01-01T00:00:00Z")
        self.assertEqual(expired.returncode, 0, expired.stderr)
        mark = self.proxy.mark()
        status = authStatus(self.proxy.port, "dave", FAST_PASSWORD)
        self.assertEqual(status[0], 0x01)
        self.assertNotEqual(status[1], 0x00)
        self.proxy.waitForLine(r"login refused for user dave: the account expired",
                               10, since=mark)

    def test_helpAuthListsUsers(self) -> None:
        """
        C{twistd socks5 --help-auth} lists the users backend.
        """
        result = subprocess.run(
            [twistdPath(), "socks5", "--help-auth"], capture_output=True,
            env=cleanEnvironment({"PYTHONPATH": REPO_ROOT}), timeout=60,
            stdin=subprocess.DEVNULL,
        )
        self.assertRegex(result.stdout.decode(), r"(?m)^\s*users\b")

    def test_missingFileRefusedAtStart(self) -> None:
        """
        C{--auth users:} with a missing file stops twistd at start with an
        error naming the file.
        """
        missing = os.path.join(self.tmp, "missing.db")
        result = subprocess.run(
            [twistdPath(), "-n", "--pidfile=", "socks5", "--port",
             "tcp:0:interface=127.0.0.1", "--auth", f"users:{missing}"],
            capture_output=True, env=cleanEnvironment({"PYTHONPATH": REPO_ROOT}),
            timeout=60, stdin=subprocess.DEVNULL, cwd=self.tmp,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(missing, (result.stdout + result.stderr).decode())


class SlowHashTests(unittest.TestCase):
    """
    A slow bcrypt check runs off the reactor thread: it does not delay other
    sessions' relaying.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp()
        cls.path = os.path.join(cls.tmp, "users.db")
        writeUsers(cls.path, [
            UserRecord("fast", bcrypt.hashpw(FAST_PASSWORD.encode(), bcrypt.gensalt(4))),
            UserRecord("slow", bcrypt.hashpw(SLOW_PASSWORD.encode(), bcrypt.gensalt(14))),
        ])
        cls.echo = EchoServer()
        cls.proxy = ProxyProcess(["--auth", f"users:{cls.path}"])

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        cls.echo.stop()
        shutil.rmtree(cls.tmp)
        text = cls.proxy.text()
        if "Traceback" in text or SLOW_PASSWORD in text:
            raise AssertionError("traceback or password in the log:\n" + text)

    def test_relayAnswersDuringSlowLogin(self) -> None:
        """
        An echo round trip on an open tunnel completes while another client's
        slow (bcrypt cost 14) login is still being checked.
        """
        sock, reply = socks5Connect(self.proxy.port, LOOPBACK_V4, self.echo.port,
                                    username="fast", password=FAST_PASSWORD)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        sent = threading.Event()
        done = threading.Event()
        result: dict[str, object] = {}

        def slowLogin() -> None:
            try:
                with SOCKS5Session(self.proxy.port, timeout=30) as session:
                    session.greet((METHOD_USERPASS,))
                    session.sock.sendall(
                        bytes([1, 4]) + b"slow" + bytes([len(SLOW_PASSWORD)])
                        + SLOW_PASSWORD.encode()
                    )
                    sent.set()
                    result["status"] = session.sock.recv(2)
            except Exception as e:  # reported below
                result["error"] = e
            finally:
                result["finished"] = time.monotonic()
                sent.set()
                done.set()

        thread = threading.Thread(target=slowLogin, daemon=True)
        thread.start()
        self.assertTrue(sent.wait(10))
        # Give the proxy a moment to read the request and start hashing.
        time.sleep(0.1)
        sock.sendall(b"ping")
        self.assertEqual(recvExactly(sock, 4), b"ping")
        echoed = time.monotonic()
        self.assertTrue(done.wait(30), "the slow login never finished")
        thread.join(5)
        self.assertNotIn("error", result)
        self.assertEqual(result["status"], b"\x01\x00")
        self.assertLess(echoed, result["finished"],
                        "the relay waited for the slow login")
