# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{socksrelay.tap} (the C{twistd socks5} options and service) and
for the plugin that makes C{twistd} find it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from io import StringIO

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker, MultiService
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.reload import ReloadService
from socksrelay.interfaces import ISOCKSUser
from socksrelay.resolve import NamesHostnameResolver
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.wire import AuthMethod
from tests.fakes import FakeListeningPort, FakeServerEndpoint

DEFAULT = "tcp:1080:interface=127.0.0.1"


def parse(*argv: str) -> tap.Options:
    """
    Return L{tap.Options} that have parsed C{argv}.
    """
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    Parsing the command line of C{twistd socks5}.
    """

    def test_defaults(self) -> None:
        """
        With no arguments the proxy listens on 127.0.0.1 port 1080, both
        timeouts are 30 seconds and there is no checker.
        """
        options = parse()
        self.assertEqual(options["ports"], [DEFAULT])
        self.assertEqual(options["handshake-timeout"], 30.0)
        self.assertEqual(options["connect-timeout"], 30.0)
        self.assertEqual(options["nameservers"], [])
        self.assertEqual(options.get("credCheckers", []), [])

    def test_barePort(self) -> None:
        """
        A bare port number listens on 127.0.0.1 only.
        """
        self.assertEqual(parse("--port", "1081")["ports"], ["tcp:1081:interface=127.0.0.1"])
        self.assertEqual(parse("-p", "1082")["ports"], ["tcp:1082:interface=127.0.0.1"])

    def test_portTwice(self) -> None:
        """
        C{--port} given twice keeps both, in order, and no default is added.
        """
        options = parse("--port", "1081", "--port", "tcp6:1082:interface=\\:\\:1")
        self.assertEqual(
            options["ports"],
            ["tcp:1081:interface=127.0.0.1", "tcp6:1082:interface=\\:\\:1"],
        )

    def test_endpointDescription(self) -> None:
        """
        An endpoint description is kept as it is.
        """
        for description in (
            "tcp:1080:interface=0.0.0.0",
            "unix:/run/socks.sock",
            "haproxy:tcp:1080",
        ):
            self.assertEqual(parse("--port", description)["ports"], [description])

    def test_badPort(self) -> None:
        """
        A description no endpoint parser understands is a usage error.
        """
        for bad in ("nonsense:foo", "tcp:notaport", ""):
            self.assertRaises(usage.UsageError, parse, "--port", bad)

    def test_timeouts(self) -> None:
        """
        Positive timeouts are accepted as floats.
        """
        options = parse("--handshake-timeout", "2.5", "--connect-timeout", "7")
        self.assertEqual(options["handshake-timeout"], 2.5)
        self.assertEqual(options["connect-timeout"], 7.0)

    def test_badTimeouts(self) -> None:
        """
        A timeout that is zero, negative or not a number is a usage error.
        """
        for option in ("--handshake-timeout", "--connect-timeout"):
            for bad in ("0", "-1", "x", "nan"):
                self.assertRaises(usage.UsageError, parse, option, bad)

    def test_nameserver(self) -> None:
        """
        C{--nameserver} may be given more than once; each is parsed.
        """
        options = parse("--nameserver", "127.0.0.1", "--nameserver", "[::1]:5353")
        self.assertEqual(options["nameservers"], [("127.0.0.1", 53), ("::1", 5353)])

    def test_badNameserver(self) -> None:
        """
        A name server that is not an IP address is a usage error.
        """
        self.assertRaises(usage.UsageError, parse, "--nameserver", "dns.example")

    def test_authMemory(self) -> None:
        """
        C{--auth memory:alice:pw} adds one checker, with the name and
        password stored as bytes so that credentials from the wire match.
        """
        options = parse("--auth", "memory:alice:pw")
        [checker] = options["credCheckers"]
        self.assertIsInstance(checker, InMemoryUsernamePasswordDatabaseDontUse)
        self.assertEqual(checker.users, {b"alice": b"pw"})

    def test_authMemoryLogin(self) -> None:
        """
        The portal built from C{--auth memory:alice:pw} logs in
        C{UsernamePassword(b"alice", b"pw")} and refuses a wrong password.
        """
        factory = tap.makeFactory(
            parse("--auth", "memory:alice:pw"), MemoryReactorClock()
        )
        _, avatar, _ = self.successResultOf(
            factory.portal.login(UsernamePassword(b"alice", b"pw"), None, ISOCKSUser)
        )
        self.assertEqual(avatar.username, "alice")
        self.failureResultOf(
            factory.portal.login(UsernamePassword(b"alice", b"px"), None, ISOCKSUser),
            UnauthorizedLogin,
        )
        self.assertEqual(factory.methods, (AuthMethod.USERNAME_PASSWORD,))

    def test_authMemoryNonASCII(self) -> None:
        """
        A non-ASCII name and password given to C{memory:} match their UTF-8
        bytes on the wire.
        """
        factory = tap.makeFactory(
            parse("--auth", "memory:jos\u00e9:p\u00e4ss"), MemoryReactorClock()
        )
        _, avatar, _ = self.successResultOf(
            factory.portal.login(
                UsernamePassword(
                    "jos\u00e9".encode("utf-8"), "p\u00e4ss".encode("utf-8")
                ),
                None,
                ISOCKSUser,
            )
        )
        self.assertEqual(avatar.username, "jos\u00e9")

    def test_authFile(self) -> None:
        """
        C{--auth file:PATH} reads a FilePasswordDB file, whose users can log
        in through the factory's portal.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "users")
        with open(path, "w") as f:
            f.write("alice:pw\nbob:hunter2\n")
        options = parse("--auth", "file:" + path)
        self.assertEqual(len(options["credCheckers"]), 1)
        factory = tap.makeFactory(options, MemoryReactorClock())
        _, avatar, _ = self.successResultOf(
            factory.portal.login(UsernamePassword(b"bob", b"hunter2"), None, ISOCKSUser)
        )
        self.assertEqual(avatar.username, "bob")
        self.failureResultOf(
            factory.portal.login(UsernamePassword(b"bob", b"pw"), None, ISOCKSUser),
            UnauthorizedLogin,
        )

    def test_authAnonymous(self) -> None:
        """
        C{--auth anonymous} enables method 0x00 through a portal.
        """
        factory = tap.makeFactory(parse("--auth", "anonymous"), MemoryReactorClock())
        self.assertIsNotNone(factory.portal)
        self.assertEqual(factory.methods, (AuthMethod.NO_AUTHENTICATION,))

    def test_noAuth(self) -> None:
        """
        Without C{--auth} the factory has no portal and accepts method 0x00.
        """
        factory = tap.makeFactory(parse(), MemoryReactorClock())
        self.assertIsNone(factory.portal)
        self.assertEqual(factory.methods, (AuthMethod.NO_AUTHENTICATION,))

    def test_helpAuth(self) -> None:
        """
        C{--help-auth} lists the C{memory}, C{file} and C{anonymous} checker
        types, then exits.
        """
        options = tap.Options()
        options.authOutput = StringIO()
        self.assertRaises(SystemExit, options.parseOptions, ["--help-auth"])
        listed = {
            line.split()[0]
            for line in options.authOutput.getvalue().splitlines()
            if line.startswith("  ")
        }
        self.assertIn("memory", listed)
        self.assertIn("file", listed)
        self.assertIn("anonymous", listed)

    def test_factorySettings(self) -> None:
        """
        The factory gets the timeouts and the reactor from the options and
        the caller.
        """
        reactor = MemoryReactorClock()
        factory = tap.makeFactory(
            parse("--handshake-timeout", "4", "--connect-timeout", "9"), reactor
        )
        self.assertIsInstance(factory, SOCKS5ServerFactory)
        self.assertIs(factory.reactor, reactor)
        self.assertEqual(factory.handshakeTimeout, 4.0)
        self.assertEqual(factory.connectTimeout, 9.0)
        self.assertIsNone(factory.nameResolver)

    def test_factoryNameResolver(self) -> None:
        """
        With C{--nameserver} the factory resolves names through
        L{twisted.names}.
        """
        factory = tap.makeFactory(
            parse("--nameserver", "127.0.0.1:5353"), MemoryReactorClock()
        )
        self.assertIsInstance(factory.nameResolver, NamesHostnameResolver)


class ParseNameServerTests(SynchronousTestCase):
    """
    L{tap.parseNameServer} reads C{HOST}, C{HOST:PORT}, C{[V6]:PORT} and
    bare IPv6 addresses.
    """

    def test_ipv4(self) -> None:
        """
        A bare IPv4 address gets port 53.
        """
        self.assertEqual(tap.parseNameServer("127.0.0.1"), ("127.0.0.1", 53))

    def test_ipv4Port(self) -> None:
        """
        An IPv4 address with a port keeps the port.
        """
        self.assertEqual(tap.parseNameServer("127.0.0.1:5353"), ("127.0.0.1", 5353))

    def test_ipv6BracketsPort(self) -> None:
        """
        A bracketed IPv6 address with a port keeps the port.
        """
        self.assertEqual(tap.parseNameServer("[::1]:5353"), ("::1", 5353))

    def test_ipv6Brackets(self) -> None:
        """
        A bracketed IPv6 address without a port gets port 53.
        """
        self.assertEqual(tap.parseNameServer("[::1]"), ("::1", 53))

    def test_ipv6Bare(self) -> None:
        """
        A bare IPv6 address gets port 53.
        """
        self.assertEqual(tap.parseNameServer("::1"), ("::1", 53))
        self.assertEqual(tap.parseNameServer("2001:db8::53"), ("2001:db8::53", 53))

    def test_bad(self) -> None:
        """
        Names, bad ports and malformed addresses raise L{ValueError}.
        """
        for bad in (
            "",
            "dns.example",
            "dns.example:53",
            "127.0.0.1:",
            "127.0.0.1:x",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:53:53",
            "[::1]:0",
            "[::1]:x",
            "256.0.0.1",
        ):
            self.assertRaises(ValueError, tap.parseNameServer, bad)

    def test_badBrackets(self) -> None:
        """
        Brackets that are not closed, or not followed by C{:PORT}, raise
        L{ValueError}.
        """
        for bad in ("[::1", "[::1]5353", "[::1]::53", "[::1]:53]"):
            self.assertRaises(ValueError, tap.parseNameServer, bad)


class AnnouncingEndpointTests(SynchronousTestCase):
    """
    L{tap.AnnouncingEndpoint} says where it listens and warns about open
    proxies.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def listen(self, address, openProxy: bool) -> list[str]:
        """
        Listen through an announcing endpoint on C{address} and return the
        text of the events logged.
        """
        inner = FakeServerEndpoint(address)
        endpoint = tap.AnnouncingEndpoint(inner, openProxy)
        factory = object()
        port = self.successResultOf(endpoint.listen(factory))
        self.assertIsInstance(port, FakeListeningPort)
        self.assertEqual(inner.factories, [factory])
        return [formatEvent(e) for e in self.observer]

    def openProxyWarnings(self, address, openProxy: bool) -> list[str]:
        """
        Return the open-proxy warnings logged when listening on C{address}.
        """
        return [text for text in self.listen(address, openProxy) if "OPEN PROXY" in text]

    def test_announces(self) -> None:
        """
        Listening logs the address and port.
        """
        texts = self.listen(IPv4Address("TCP", "127.0.0.1", 1080), False)
        self.assertIn("listening on 127.0.0.1 port 1080 (SOCKS5)", texts)

    def test_openProxyOnPublicAddress(self) -> None:
        """
        An open proxy listening on all IPv4 interfaces logs one warning
        containing "OPEN PROXY".
        """
        self.assertEqual(
            len(self.openProxyWarnings(IPv4Address("TCP", "0.0.0.0", 1080), True)), 1
        )
        [event] = [e for e in self.observer if "OPEN PROXY" in formatEvent(e)]
        self.assertEqual(event["log_level"], LogLevel.warn)

    def test_openProxyOnPublicIPv6Address(self) -> None:
        """
        An open proxy listening on all IPv6 interfaces is warned about.
        """
        self.assertEqual(
            len(self.openProxyWarnings(IPv6Address("TCP", "::", 1080), True)), 1
        )

    def test_openProxyOnLoopback(self) -> None:
        """
        An open proxy on 127.0.0.1 or ::1 is not warned about.
        """
        self.assertEqual(
            self.openProxyWarnings(IPv4Address("TCP", "127.0.0.1", 1080), True), []
        )
        self.assertEqual(
            self.openProxyWarnings(IPv6Address("TCP", "::1", 1080), True), []
        )

    def test_openProxyOnUNIXSocket(self) -> None:
        """
        An open proxy on a UNIX socket is not warned about.
        """
        self.assertEqual(
            self.openProxyWarnings(UNIXAddress("/run/socks.sock"), True), []
        )

    def test_closedProxyNeverWarned(self) -> None:
        """
        A proxy that requires authentication is not warned about, even on
        all interfaces.
        """
        self.assertEqual(
            self.openProxyWarnings(IPv4Address("TCP", "0.0.0.0", 1080), False), []
        )


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService} builds one listening service per C{--port}.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, *argv: str) -> tuple[MultiService, MemoryReactorClock]:
        """
        Build the service for C{argv} on a memory reactor and start it.
        """
        reactor = MemoryReactorClock()
        top = tap.makeService(parse(*argv), reactor=reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        return top, reactor

    def openProxyWarnings(self) -> list[str]:
        """
        Return the open-proxy warnings logged so far.
        """
        return [
            formatEvent(e) for e in self.observer if "OPEN PROXY" in formatEvent(e)
        ]

    def test_oneServicePerPort(self) -> None:
        """
        Each C{--port} becomes a L{StreamServerEndpointService} in a
        L{MultiService}, all sharing one factory.
        """
        reactor = MemoryReactorClock()
        top = tap.makeService(
            parse("--port", "1081", "--port", "tcp:1082:interface=0.0.0.0"),
            reactor=reactor,
        )
        self.assertIsInstance(top, MultiService)
        children = [c for c in top if isinstance(c, StreamServerEndpointService)]
        self.assertEqual(len(children), 2)
        reloaders = [c for c in top if isinstance(c, ReloadService)]
        self.assertEqual(len(reloaders), 1)
        self.assertIs(reloaders[0].factory, children[0].factory)
        self.assertIs(children[0].factory, children[1].factory)
        self.assertIsInstance(children[0].factory, SOCKS5ServerFactory)
        self.assertIs(children[0].factory.reactor, reactor)

    def test_defaultListensOnLoopback(self) -> None:
        """
        Started with no options, the service listens on 127.0.0.1 port 1080.
        """
        top, reactor = self.start()
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (1080, "127.0.0.1"))
        self.assertIsInstance(factory, SOCKS5ServerFactory)

    def test_listensOnEachPort(self) -> None:
        """
        Started, the service listens on every port and interface given.
        """
        top, reactor = self.start(
            "--port", "1081", "--port", "tcp:1082:interface=0.0.0.0"
        )
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(1081, "127.0.0.1"), (1082, "0.0.0.0")],
        )

    def test_openProxyWarning(self) -> None:
        """
        Listening on all interfaces without C{--auth} logs the open-proxy
        warning.
        """
        self.start("--port", "tcp:1080:interface=0.0.0.0")
        self.assertEqual(len(self.openProxyWarnings()), 1)

    def test_noWarningWithAuth(self) -> None:
        """
        Listening on all interfaces with a password checker logs no
        open-proxy warning.
        """
        self.start(
            "--port", "tcp:1080:interface=0.0.0.0", "--auth", "memory:alice:pw"
        )
        self.assertEqual(self.openProxyWarnings(), [])

    def test_warningWithAnonymousAuth(self) -> None:
        """
        C{--auth anonymous} still makes an open proxy, which is warned about
        on all interfaces.
        """
        self.start("--port", "tcp:1080:interface=0.0.0.0", "--auth", "anonymous")
        self.assertEqual(len(self.openProxyWarnings()), 1)


class BacklogTests(SynchronousTestCase):
    """
    The listen backlog (C{--backlog}, C{[limits] backlog}) reaches every
    listener of C{--port}: Twisted's own default of 50 drops bursts of
    connections.
    """

    def start(self, *argv: str) -> MemoryReactorClock:
        """
        Build the service for C{argv} on a memory reactor and start it.
        """
        reactor = MemoryReactorClock()
        top = tap.makeService(parse(*argv), reactor=reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        return reactor

    def configFile(self, text: str) -> str:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "socksrelay.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_default(self) -> None:
        """
        By default every TCP, TCP6, HAProxy and UNIX listener is opened with
        a backlog of 1024.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "s.sock")
        reactor = self.start(
            "--port",
            "1081",
            "--port",
            "tcp6:1082:interface=\\:\\:1",
            "--port",
            "haproxy:tcp:1083:interface=127.0.0.1",
            "--port",
            f"unix:{path}",
        )
        self.assertEqual(
            [(port, backlog) for port, _, backlog, _ in reactor.tcpServers],
            [(1081, 1024), (1082, 1024), (1083, 1024)],
        )
        self.assertEqual([entry[2] for entry in reactor.unixServers], [1024])

    def test_option(self) -> None:
        """
        C{--backlog N} sets the backlog of every listener.
        """
        reactor = self.start("--backlog", "300", "--port", "1081", "--port", "1082")
        self.assertEqual([entry[2] for entry in reactor.tcpServers], [300, 300])

    def test_configFile(self) -> None:
        """
        C{backlog} in the C{[limits]} table of C{--config} sets it; the
        command line wins over the file.
        """
        path = self.configFile("[limits]\nbacklog = 200\n")
        reactor = self.start("--config", path, "--port", "1081")
        self.assertEqual([entry[2] for entry in reactor.tcpServers], [200])
        reactor = self.start("--backlog", "1024", "--config", path, "--port", "1081")
        self.assertEqual([entry[2] for entry in reactor.tcpServers], [1024])

    def test_endpointWins(self) -> None:
        """
        A C{--port} that sets C{backlog=} itself keeps it.
        """
        reactor = self.start("--port", "tcp:1081:interface=127.0.0.1:backlog=7")
        self.assertEqual([entry[2] for entry in reactor.tcpServers], [7])

    def test_badBacklog(self) -> None:
        """
        A backlog below 1 is refused.
        """
        self.assertRaises(usage.UsageError, parse, "--backlog", "0")

    def test_ownListeners(self) -> None:
        """
        The factory knows every port the service listens on as its own,
        wildcard addresses included, and the C{--metrics} port too, so
        that it never relays to them.
        """
        reactor = MemoryReactorClock()
        top = tap.makeService(
            parse(
                "--port", "tcp:1081:interface=0.0.0.0",
                "--port", "1082",
                "--metrics", "tcp:9180:interface=127.0.0.1",
            ),
            reactor=reactor,
        )
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        (factory,) = {
            c.factory  # type: ignore[attr-defined]
            for c in top
            if isinstance(getattr(c, "factory", None), SOCKS5ServerFactory)
        }
        own = factory.ownListeners
        # (The memory reactor's ports all say they listen on 0.0.0.0.)
        for port in (1081, 1082, 9180):
            self.assertTrue(own.isOwn("127.0.0.9", port), port)
        self.assertFalse(own.isOwn("127.0.0.1", 1083))

    def test_withBacklog(self) -> None:
        """
        L{listening.withBacklog} adds C{backlog=} to the endpoint types that
        take it (also inside C{haproxy:}), and leaves alone a description
        that sets it and the types that do not take it.
        """
        from socksrelay.listening import withBacklog

        cases = {
            "tcp:1080:interface=127.0.0.1": "tcp:1080:interface=127.0.0.1:backlog=9",
            "tcp6:1080:interface=\\:\\:": "tcp6:1080:interface=\\:\\::backlog=9",
            "ssl:443:privateKey=k.pem": "ssl:443:privateKey=k.pem:backlog=9",
            "unix:/run/s.sock:mode=660": "unix:/run/s.sock:mode=660:backlog=9",
            "haproxy:tcp:1080": "haproxy:tcp:1080:backlog=9",
            "haproxy:tcp:1080:backlog=3": "haproxy:tcp:1080:backlog=3",
            "tcp:1080:backlog=3:interface=127.0.0.1": "tcp:1080:backlog=3:interface=127.0.0.1",
            "systemd:domain=INET:index=0": "systemd:domain=INET:index=0",
        }
        for description, expected in cases.items():
            self.assertEqual(withBacklog(description, 9), expected, description)


class PluginTests(SynchronousTestCase):
    """
    The C{socks5} plugin is found by C{twistd}.
    """

    def test_plugin(self) -> None:
        """
        Among the L{IServiceMaker} plugins there is exactly one with tapname
        C{socks5}, and its options are L{tap.Options}.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "socks5"]
        self.assertEqual(len(makers), 1)
        self.assertIs(makers[0].options, tap.Options)
        self.assertIs(makers[0].makeService, tap.makeService)
