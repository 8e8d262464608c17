# -*- test-case-name: tests.test_e2e_auth -*-
"""
End-to-end credential backends: C{--auth} takes any twisted.cred checker
plugin, Twisted's own (C{file:}, C{memory:}, C{anonymous}) or a third-party
C{ICheckerFactory} installed beside socksrelay, without a change to our
code.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
import unittest

from tests.e2e import (
    LOOPBACK_V4,
    METHOD_NONE,
    METHOD_USERPASS,
    EchoServer,
    ProxyProcess,
    SOCKS5Session,
    cleanEnvironment,
    recvExactly,
    REPO_ROOT,
    socks5Connect,
    twistdPath,
)

#: A third-party checker plugin: "--auth token:NAME=SECRET,..." accepts those
#: pairs.  It lives in a temporary twisted/plugins directory on PYTHONPATH,
#: the way any installed ICheckerFactory would.
PLUGIN = '''
from zope.interface import implementer
from twisted import plugin
from twisted.cred import checkers, credentials, error
from twisted.cred.strcred import ICheckerFactory
from twisted.internet import defer


@implementer(checkers.ICredentialsChecker)
class TokenChecker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, pairs):
        self.pairs = pairs

    def requestAvatarId(self, c):
        if self.pairs.get(c.username) == c.password:
            return defer.succeed(c.username)
        return defer.fail(error.UnauthorizedLogin())


@implementer(ICheckerFactory, plugin.IPlugin)
class TokenCheckerFactory:
    authType = "token"
    authHelp = "Checks NAME=SECRET pairs given on the command line (test plugin)."
    argStringFormat = "NAME=SECRET[,NAME=SECRET...]"
    credentialInterfaces = TokenChecker.credentialInterfaces

    def generateChecker(self, argstring):
        pairs = {}
        for item in argstring.split(","):
            name, _, secret = item.partition("=")
            pairs[name.encode()] = secret.encode()
        return TokenChecker(pairs)


theTokenCheckerFactory = TokenCheckerFactory()
'''


def echoRoundTrip(proxyPort: int, server: EchoServer, **auth: str) -> bytes:
    sock, reply = socks5Connect(proxyPort, LOOPBACK_V4, server.port, **auth)
    with sock:
        if reply.rep != 0:
            raise AssertionError(f"CONNECT failed: {reply}")
        sock.sendall(b"hello")
        return recvExactly(sock, 5)


class ThirdPartyCheckerPluginTests(unittest.TestCase):
    """
    A checker plugin that socksrelay has never heard of is listed by
    C{--help-auth} and used by C{--auth}.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        pluginDir = os.path.join(cls.tmp.name, "twisted", "plugins")
        os.makedirs(pluginDir)
        with open(os.path.join(pluginDir, "socksrelay_test_token.py"), "w") as f:
            f.write(PLUGIN)
        cls.echo = EchoServer()
        cls.proxy = ProxyProcess(
            ["--auth", "token:carol=open-sesame"], pythonPath=[cls.tmp.name]
        )

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        cls.echo.stop()
        cls.tmp.cleanup()
        text = "\n".join(cls.proxy.lines)
        if "Traceback" in text or "open-sesame" in text:
            raise AssertionError("traceback or password in the log:\n" + text)

    def test_helpAuthListsPlugin(self) -> None:
        """
        C{twistd socks5 --help-auth} lists the installed plugin (and Twisted's
        own file, memory and unix backends).
        """
        env = cleanEnvironment(
            {"PYTHONPATH": os.pathsep.join([REPO_ROOT, self.tmp.name])}
        )
        result = subprocess.run(
            [twistdPath(), "socks5", "--help-auth"],
            capture_output=True,
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        out = result.stdout.decode()
        for name in ("token", "file", "memory", "unix"):
            self.assertRegex(out, rf"(?m)^\s*{name}\b", out)

    def test_pluginChecksCredentials(self) -> None:
        """
        The plugin's checker accepts its own credentials and refuses others.
        """
        self.assertEqual(
            echoRoundTrip(
                self.proxy.port, self.echo, username="carol", password="open-sesame"
            ),
            b"hello",
        )
        with SOCKS5Session(self.proxy.port) as session:
            self.assertEqual(session.greet((METHOD_USERPASS,)), METHOD_USERPASS)
            status = session.authenticate("carol", "wrong")
            self.assertEqual(status[0], 0x01)
            self.assertNotEqual(status[1], 0x00)


class FileAndAnonymousTests(unittest.TestCase):
    """
    C{--auth file:PATH} reads a FilePasswordDB file; adding C{--auth
    anonymous} lets clients that offer no authentication in, while clients
    that offer 0x02 must still authenticate.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        cls.users = os.path.join(cls.tmp.name, "users")
        with open(cls.users, "w") as f:
            f.write(textwrap.dedent("""\
                alice:wonderland
                bob:builder
                """))
        cls.echo = EchoServer()
        cls.fileProxy = ProxyProcess(["--auth", f"file:{cls.users}"])
        cls.bothProxy = ProxyProcess(
            ["--auth", f"file:{cls.users}", "--auth", "anonymous"]
        )

    @classmethod
    def tearDownClass(cls) -> None:
        cls.fileProxy.stop()
        cls.bothProxy.stop()
        cls.echo.stop()
        cls.tmp.cleanup()
        for proxy in (cls.fileProxy, cls.bothProxy):
            text = "\n".join(proxy.lines)
            if "Traceback" in text or "wonderland" in text or "builder" in text:
                raise AssertionError("traceback or password in the log:\n" + text)

    def test_fileUsersAuthenticate(self) -> None:
        """
        Both users of the file authenticate with their passwords, and the
        end-of-session line names the user.
        """
        mark = self.fileProxy.mark()
        for user, password in (("alice", "wonderland"), ("bob", "builder")):
            self.assertEqual(
                echoRoundTrip(
                    self.fileProxy.port, self.echo, username=user, password=password
                ),
                b"hello",
            )
        self.fileProxy.waitForLine(r"session ended.*user=bob", 10, since=mark)

    def test_fileWrongPasswordRefused(self) -> None:
        """
        A wrong password, or a name not in the file, gets a non-zero RFC 1929
        status.
        """
        for user, password in (("alice", "builder"), ("mallory", "wonderland")):
            with SOCKS5Session(self.fileProxy.port) as session:
                self.assertEqual(session.greet((METHOD_USERPASS,)), METHOD_USERPASS)
                status = session.authenticate(user, password)
                self.assertEqual(status[0], 0x01)
                self.assertNotEqual(status[1], 0x00)

    def test_fileOnlyRefusesNoAuthentication(self) -> None:
        """
        With only a password backend, a client offering only method 0x00 gets
        05 FF.
        """
        with SOCKS5Session(self.fileProxy.port) as session:
            self.assertEqual(session.greet((METHOD_NONE,)), 0xFF)

    def test_anonymousBesidePasswords(self) -> None:
        """
        With C{--auth anonymous} too, a client offering only 0x00 is served;
        a client offering 0x00 and 0x02 is asked for 0x02 (server preference).
        """
        self.assertEqual(echoRoundTrip(self.bothProxy.port, self.echo), b"hello")
        with SOCKS5Session(self.bothProxy.port) as session:
            self.assertEqual(
                session.greet((METHOD_NONE, METHOD_USERPASS)), METHOD_USERPASS
            )
