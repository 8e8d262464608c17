# -*- test-case-name: tests.test_reload -*-
"""
Tests for live reload: L{socksrelay.reload.ReloadService} and
L{socksrelay.reload.buildPortal}, the factory's C{reconfigure} and
C{recheck} in L{socksrelay.server}, the C{recheck} key of
L{socksrelay.config}, and how L{socksrelay.tap.makeService} sets reload up.

The configuration files are real files in the test's temporary directory;
the servers run on L{RecordingTransport}s and memory reactors.  C{reload()}
is called directly, and the SIGHUP handler is called as a function: no
signal is ever sent.
"""

from __future__ import annotations

import io
import signal
from ipaddress import ip_network
from typing import Any

from twisted.cred import strcred
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugins import cred_file
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.config import ConfigError, parseConfig
from socksrelay.limits import Limits
from socksrelay.reload import ReloadService, buildPortal
from socksrelay.rules import Policy, Rule
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.udp import UDPOptions
from socksrelay.wire import AuthMethod
from tests.fakes import SUCCESS_REPLY, authRequest, errorReply, greeting, request
from tests.test_bind import STRANGER, BindHarness
from tests.test_limits import Server, passwordPortal, temporaryPath
from tests.test_udp import LOCAL, Control, udpDatagram
from tests.test_udp import PEER as UDP_PEER
from tests.udpfakes import FakeHostnameResolver, UDPMemoryReactor

NOT_ALLOWED = 0x02

#: Everything allowed: the policy the servers in these tests start with.
ALLOW_ALL = Policy([Rule("allow", "everything")])

#: A file that changes everything reload swaps.
GOOD = """\
[timeouts]
handshake = 5
connect = 6
idle = 10
half-closed = 20
udp-idle = 7
bind = 8

[limits]
sessions = 3
sessions-per-user = 2
rate = 1.5

[[rule]]
name = "no https"
action = "deny"
ports = [443]

[[rule]]
name = "the rest"
action = "allow"
"""

#: The same rules with recheck on or off.
DENY_HTTPS = """\
recheck = {recheck}

[[rule]]
name = "no https"
action = "deny"
ports = [443]

[[rule]]
name = "the rest"
action = "allow"
"""


class FakeReactor:
    """
    A reactor that only records C{callFromThread}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append((f, args, kwargs))


class ReloadTestCase(SynchronousTestCase):
    """
    Helpers: configuration files, a server and its reloader, logged events.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.path = temporaryPath(self)

    def write(self, text: str) -> str:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)
        return self.path

    def reloader(
        self,
        factory: Any,
        authDescriptions: Any = ("memory:alice:pw",),
        overrides: Any = None,
        path: Any = "default",
    ) -> ReloadService:
        return ReloadService(
            factory,
            factory.reactor,
            self.path if path == "default" else path,
            list(authDescriptions),
            overrides or {},
            tap._bytesInMemoryChecker,
        )

    def errors(self) -> list[str]:
        """
        The text of every error event logged so far.
        """
        return [
            formatEvent(e) for e in self.observer if e.get("log_level") is LogLevel.error
        ]

    def logged(self, fragment: str) -> list[str]:
        """
        The text of every event logged so far that contains C{fragment}.
        """
        return [formatEvent(e) for e in self.observer if fragment in formatEvent(e)]

    def snapshot(self, factory: SOCKS5ServerFactory) -> dict[str, Any]:
        """
        Everything reload may change on C{factory}.
        """
        return {
            "portal": factory.portal,
            "methods": factory.methods,
            "policy": factory.policy,
            "limits": factory.admission.limits,
            "limitValues": Limits(**vars(factory.admission.limits)),
            "handshakeTimeout": factory.handshakeTimeout,
            "connectTimeout": factory.connectTimeout,
            "idleTimeout": factory.idleTimeout,
            "halfClosedTimeout": factory.halfClosedTimeout,
            "udpIdle": factory.udpRelay.options.idleTimeout,
            "bindTimeout": factory.bindOptions.timeout,
            "externals": factory.externals,
        }


class ReloadGoodFileTests(ReloadTestCase):
    """
    A good file is swapped in whole.
    """

    def test_goodFile(self) -> None:
        """
        Reload with a good file returns true and swaps the policy, limits,
        every timeout and the portal together.
        """
        s = Server(policy=ALLOW_ALL)
        factory = s.factory
        self.write(GOOD)
        self.assertTrue(self.reloader(factory).reload())
        self.assertEqual(
            [r.name for r in factory.policy.rules], ["no https", "the rest"]
        )
        self.assertEqual(
            factory.admission.limits, Limits(sessions=3, sessionsPerUser=2, rate=1.5)
        )
        self.assertEqual(
            (
                factory.handshakeTimeout,
                factory.connectTimeout,
                factory.idleTimeout,
                factory.halfClosedTimeout,
                factory.udpRelay.options.idleTimeout,
                factory.bindOptions.timeout,
            ),
            (5.0, 6.0, 10.0, 20.0, 7.0, 8.0),
        )
        self.assertIsNotNone(factory.portal)
        self.assertEqual(factory.methods, (AuthMethod.USERNAME_PASSWORD,))
        self.assertEqual(self.errors(), [])
        self.assertEqual(
            self.logged("configuration reloaded"),
            [f"configuration reloaded from {self.path}: 2 rules"],
        )

    def test_newPortalChecksPasswords(self) -> None:
        """
        The reloaded C{memory:} checker (prepared like C{--auth}) accepts
        alice's password and refuses a wrong one.
        """
        s = Server(policy=ALLOW_ALL)
        self.write(GOOD)
        self.reloader(s.factory).reload()
        good = s.client()
        good.send(greeting(0x00, 0x02) + authRequest(b"alice", b"pw"))
        self.assertEqual(good.received(), b"\x05\x02\x01\x00")
        bad = s.client()
        bad.send(greeting(0x02) + authRequest(b"alice", b"nope"))
        self.assertEqual(bad.received(), b"\x05\x02\x01\x01")

    def test_authDropped(self) -> None:
        """
        With no C{--auth} descriptions, reload leaves no portal: clients are
        served without authentication.
        """
        s = Server(policy=ALLOW_ALL)
        self.write(GOOD)
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        self.assertIsNone(s.factory.portal)
        self.assertEqual(s.factory.methods, (AuthMethod.NO_AUTHENTICATION,))

    def test_newSessionsSeeNewPolicy(self) -> None:
        """
        After reload, a new session is decided by the new rules.
        """
        s = Server(policy=ALLOW_ALL)
        self.write(DENY_HTTPS.format(recheck="false"))
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        c = s.client()
        c.send(greeting(0x00) + request("192.0.2.1", 443))
        self.assertEqual(c.received(), b"\x05\x00" + errorReply(NOT_ALLOWED))
        self.assertEqual(c.session.reason, "denied by no https")
        c = s.client()
        c.send(greeting(0x00) + request("192.0.2.1", 80))
        self.assertEqual(s.recorder.requests, [("192.0.2.1", 80)])

    def test_newSessionsSeeNewLimits(self) -> None:
        """
        After reload, new connections are admitted under the new limits.
        """
        s = Server(policy=ALLOW_ALL)
        s.client()
        self.write("[limits]\nsessions = 1\n")
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        c = s.client()
        c.send(greeting(0x00))
        self.assertEqual(c.received(), b"\x05\xff")

    def test_defaultsWithoutRules(self) -> None:
        """
        A file without rules gives the default policy for a server that
        requires a password.
        """
        s = Server(policy=ALLOW_ALL)
        self.write("recheck = false\n")
        self.assertTrue(self.reloader(s.factory).reload())
        self.assertEqual(s.factory.policy.rules, Policy.defaults(True).rules)
        self.assertEqual(self.logged("configuration reloaded"), [
            f"configuration reloaded from {self.path}: default rules"
        ])

    def test_withoutConfigFile(self) -> None:
        """
        Without C{--config}, reload still rebuilds the portal and applies the
        default policy and limits.
        """
        s = Server(policy=ALLOW_ALL, limits=Limits(sessions=1))
        self.assertTrue(self.reloader(s.factory, path=None).reload())
        self.assertEqual(s.factory.policy.rules, Policy.defaults(True).rules)
        self.assertEqual(s.factory.admission.limits, Limits())
        self.assertEqual(s.factory.methods, (AuthMethod.USERNAME_PASSWORD,))

    def test_liveSessionGoesOn(self) -> None:
        """
        A live relay keeps relaying after a reload whose rules deny it when
        C{recheck} is off.
        """
        s = Server(policy=ALLOW_ALL)
        c = s.client()
        c.send(greeting(0x00) + request("192.0.2.1", 443))
        outbound, outboundTransport = s.recorder.last.succeed()
        self.write(DENY_HTTPS.format(recheck="false"))
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        c.send(b"still here")
        self.assertEqual(outboundTransport.value(), b"still here")
        self.assertFalse(c.transport.disconnecting)

    def test_overridesWin(self) -> None:
        """
        Timeouts given on the command line win over the file on reload.
        """
        s = Server(policy=ALLOW_ALL)
        self.write(GOOD)
        reloader = self.reloader(
            s.factory, overrides={"idle-timeout": 0.0, "connect-timeout": 99.0}
        )
        self.assertTrue(reloader.reload())
        self.assertEqual(
            (s.factory.idleTimeout, s.factory.connectTimeout, s.factory.halfClosedTimeout),
            (0.0, 99.0, 20.0),
        )

    def test_multipleAuthDescriptions(self) -> None:
        """
        Every C{--auth} description becomes a checker of the new portal.
        """
        s = Server(policy=ALLOW_ALL)
        self.write(GOOD)
        self.assertTrue(
            self.reloader(s.factory, authDescriptions=("memory:alice:pw", "anonymous")).reload()
        )
        self.assertEqual(
            s.factory.methods,
            (AuthMethod.USERNAME_PASSWORD, AuthMethod.NO_AUTHENTICATION),
        )


class ReloadThroughTapTests(ReloadTestCase):
    """
    C{twistd socks5} sets up a L{ReloadService} with what its command line
    said.
    """

    def service(self, *args: str) -> tuple[ReloadService, SOCKS5ServerFactory]:
        options = tap.Options()
        options.parseOptions(list(args))
        top = tap.makeService(options, reactor=MemoryReactorClock())
        [reloader] = [c for c in top if isinstance(c, ReloadService)]
        return reloader, reloader.factory

    def test_reloaderConfigured(self) -> None:
        """
        The reloader gets the config path, the C{--auth} descriptions, the
        timeouts the command line set, and the checker preparation.
        """
        self.write("[timeouts]\nidle = 100\n")
        reloader, factory = self.service(
            "--config", self.path, "--auth", "memory:alice:pw", "--idle-timeout", "7"
        )
        self.assertEqual(reloader.configPath, self.path)
        self.assertEqual(reloader.authDescriptions, ["memory:alice:pw"])
        self.assertEqual(reloader.overrides, {"idle-timeout": 7.0})
        self.assertIs(reloader.prepareChecker, tap._bytesInMemoryChecker)
        self.assertEqual(factory.idleTimeout, 7.0)

    def test_commandLineWinsOnReload(self) -> None:
        """
        After the file changes, reload takes its timeouts except those the
        command line set.
        """
        self.write("[timeouts]\nidle = 100\nhalf-closed = 40\n")
        reloader, factory = self.service(
            "--config", self.path, "--idle-timeout", "7"
        )
        self.write("[timeouts]\nidle = 200\nhalf-closed = 50\n")
        self.assertTrue(reloader.reload())
        self.assertEqual((factory.idleTimeout, factory.halfClosedTimeout), (7.0, 50.0))

    def test_commandLineDefaultValueWins(self) -> None:
        """
        A timeout given on the command line wins even when it equals the
        option's default.
        """
        self.write("[timeouts]\nhalf-closed = 40\n")
        reloader, factory = self.service(
            "--config", self.path, "--half-closed-timeout", "60"
        )
        self.assertEqual(factory.halfClosedTimeout, 60.0)
        self.assertTrue(reloader.reload())
        self.assertEqual(factory.halfClosedTimeout, 60.0)

    def test_removedTimeoutBackToDefault(self) -> None:
        """
        A timeout removed from the file goes back to its default on reload,
        as a restart with the new file would give.
        """
        self.write("[timeouts]\nidle = 100\nconnect = 5\n")
        reloader, factory = self.service("--config", self.path)
        self.assertEqual((factory.idleTimeout, factory.connectTimeout), (100.0, 5.0))
        self.write("[timeouts]\n")
        self.assertTrue(reloader.reload())
        self.assertEqual((factory.idleTimeout, factory.connectTimeout), (0.0, 30.0))

    def test_reloadedAuthPrepared(self) -> None:
        """
        The C{--auth memory:} checker rebuilt on reload accepts the password
        sent on the wire.
        """
        self.write("")
        reloader, factory = self.service("--config", self.path, "--auth", "memory:alice:pw")
        first = factory.portal
        self.assertTrue(reloader.reload())
        self.assertIsNot(factory.portal, first)
        [checker] = set(factory.portal.checkers.values())
        self.assertEqual(checker.users, {b"alice": b"pw"})


class ReloadRefusedTests(ReloadTestCase):
    """
    Anything wrong, and the running configuration stays as it was.
    """

    def assertRefused(
        self, factory: SOCKS5ServerFactory, reloader: ReloadService, *fragments: str
    ) -> None:
        """
        C{reloader.reload()} returns false, logs one error naming every
        fragment, and changes nothing on C{factory}.
        """
        before = self.snapshot(factory)
        self.assertFalse(reloader.reload())
        after = self.snapshot(factory)
        for name in before:
            if name == "limitValues":
                self.assertEqual(after[name], before[name], name)
            else:
                self.assertIs(after[name], before[name], name)
        [error] = self.errors()
        self.assertIn("reload refused, the running configuration stays", error)
        for fragment in fragments:
            self.assertIn(fragment, error)
        self.assertEqual(self.logged("configuration reloaded"), [])

    def server(self) -> Server:
        return Server(policy=ALLOW_ALL, limits=Limits(sessions=5), idleTimeout=3)

    def test_syntaxError(self) -> None:
        """
        A TOML syntax error is refused, naming its line.
        """
        s = self.server()
        self.write('recheck = true\n\n[[rule]\naction = "deny"\n')
        self.assertRefused(s.factory, self.reloader(s.factory), self.path, "line 3")

    def test_badRule(self) -> None:
        """
        A bad rule is refused, naming its line and the problem.
        """
        s = self.server()
        self.write('[timeouts]\nidle = 50\n\n[[rule]]\naction = "maybe"\n')
        self.assertRefused(
            s.factory, self.reloader(s.factory), "line 4", '"allow" or "deny"'
        )

    def test_badLimit(self) -> None:
        """
        A bad limit is refused, naming its line.
        """
        s = self.server()
        self.write("[limits]\nsessions = 10\nburst = 2.5\n")
        self.assertRefused(s.factory, self.reloader(s.factory), "line 3", "'burst'")

    def test_badRecheck(self) -> None:
        """
        A C{recheck} that is not a boolean is refused.
        """
        s = self.server()
        self.write('recheck = "yes"\n')
        self.assertRefused(s.factory, self.reloader(s.factory), "line 1", "recheck")

    def test_missingFile(self) -> None:
        """
        A configuration file that cannot be read is refused.
        """
        s = self.server()
        self.assertRefused(s.factory, self.reloader(s.factory), "cannot read")

    def test_unknownAuthType(self) -> None:
        """
        An C{--auth} description naming no checker plugin is refused.
        """
        s = self.server()
        self.write(GOOD)
        self.assertRefused(
            s.factory,
            self.reloader(s.factory, authDescriptions=("memory:alice:pw", "nosuchplugin:x")),
            "nosuchplugin",
        )

    def test_badAuthArgument(self) -> None:
        """
        A C{memory:} description without a password is refused.
        """
        s = self.server()
        self.write(GOOD)
        self.assertRefused(
            s.factory, self.reloader(s.factory, authDescriptions=("memory:alice",))
        )

    def test_missingPasswordFile(self) -> None:
        """
        A C{file:} credential file that no longer exists is refused (and no
        portal that turns every password away is swapped in).
        """
        self.patch(cred_file.FileCheckerFactory, "errorOutput", io.StringIO())
        missing = temporaryPath(self)
        s = self.server()
        self.write(GOOD)
        self.assertRefused(
            s.factory,
            self.reloader(s.factory, authDescriptions=(f"file:{missing}",)),
            missing,
        )

    def test_goodAfterBad(self) -> None:
        """
        A refused reload does not stop the next good one.
        """
        s = self.server()
        reloader = self.reloader(s.factory)
        self.write("[[rule]\n")
        self.assertFalse(reloader.reload())
        self.write(GOOD)
        self.assertTrue(reloader.reload())
        self.assertEqual(s.factory.idleTimeout, 10.0)


class BuildPortalTests(SynchronousTestCase):
    """
    L{buildPortal} makes the checkers that C{--auth} descriptions name.
    """

    def test_none(self) -> None:
        """
        No descriptions, no portal.
        """
        self.assertIsNone(buildPortal([], lambda checker: None))

    def test_prepared(self) -> None:
        """
        Every checker is handed to the preparing function, in order, and is
        in the portal.
        """
        prepared: list[Any] = []
        portal = buildPortal(["memory:alice:pw", "anonymous"], prepared.append)
        self.assertEqual(len(prepared), 2)
        self.assertIsInstance(prepared[1], AllowAnonymousAccess)
        self.assertEqual(set(portal.checkers.values()), set(prepared))

    def test_raises(self) -> None:
        """
        A bad description raises what the plugin raises.
        """
        self.assertRaises(
            strcred.InvalidAuthType, buildPortal, ["nosuchplugin:x"], lambda c: None
        )


class RecheckTests(ReloadTestCase):
    """
    C{recheck = true} closes the live sessions the new rules deny.
    """

    def twoSessions(self, s: Server) -> tuple[Any, Any]:
        """
        Two relayed sessions: one to port 80, one to port 443, each as
        C{(client, outboundTransport)}.
        """
        sessions = []
        for port in (80, 443):
            c = s.client()
            c.send(greeting(0x00) + request("192.0.2.1", port))
            _, outboundTransport = s.recorder.last.succeed()
            self.assertEqual(c.received(), b"\x05\x00" + SUCCESS_REPLY)
            sessions.append((c, outboundTransport))
        return sessions[0], sessions[1]

    def test_recheckClosesDenied(self) -> None:
        """
        With C{recheck = true}, the live session that the new rules deny is
        closed on both sides with a log line naming the rule, and the allowed
        one is left alone.
        """
        s = Server(policy=ALLOW_ALL)
        (web, webOut), (tls, tlsOut) = self.twoSessions(s)
        self.write(DENY_HTTPS.format(recheck="true"))
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        self.assertTrue(tls.transport.disconnecting)
        self.assertEqual(tlsOut.loseConnectionCalls, 1)
        self.assertEqual(tls.session.reason, "recheck: denied by no https")
        self.assertEqual(tls.session.details["rule"], "no https")
        self.assertFalse(web.transport.disconnecting)
        self.assertEqual(webOut.loseConnectionCalls, 0)
        self.assertIsNone(web.session.reason)
        self.assertEqual(
            self.logged("recheck: closing"),
            [
                f"recheck: closing the session of {tls.session.client} to "
                "192.0.2.1:443, now denied by no https"
            ],
        )
        self.assertEqual(self.logged("recheck closed"), ["recheck closed 1 live sessions"])

    def test_noRecheck(self) -> None:
        """
        With C{recheck = false}, no live session is closed.
        """
        s = Server(policy=ALLOW_ALL)
        (web, webOut), (tls, tlsOut) = self.twoSessions(s)
        self.write(DENY_HTTPS.format(recheck="false"))
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        for c, out in ((web, webOut), (tls, tlsOut)):
            self.assertFalse(c.transport.disconnecting)
            self.assertEqual(out.loseConnectionCalls, 0)
        self.assertEqual(self.logged("recheck"), [])

    def test_recheckDefaultOff(self) -> None:
        """
        A file that does not mention C{recheck} closes no live session.
        """
        s = Server(policy=ALLOW_ALL)
        _, (tls, _) = self.twoSessions(s)
        self.write(DENY_HTTPS.replace("recheck = {recheck}\n", ""))
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        self.assertFalse(tls.transport.disconnecting)

    def test_refusedReloadClosesNothing(self) -> None:
        """
        A refused file with C{recheck = true} closes nothing.
        """
        s = Server(policy=ALLOW_ALL)
        _, (tls, _) = self.twoSessions(s)
        self.write("recheck = true\n[[rule]]\naction = \"deny\"\nports = [0]\n")
        self.assertFalse(self.reloader(s.factory, authDescriptions=()).reload())
        self.assertFalse(tls.transport.disconnecting)

    def test_recheckByUser(self) -> None:
        """
        A session is rechecked with its user: alice's is closed by a rule
        against her while bob's stays.
        """
        s = Server(policy=ALLOW_ALL, portal=passwordPortal())
        sessions = {}
        for user in (b"alice", b"bob"):
            c = s.client()
            c.send(greeting(0x02) + authRequest(user, b"pw") + request("192.0.2.1", 80))
            s.recorder.last.succeed()
            self.assertEqual(c.received(), b"\x05\x02\x01\x00" + SUCCESS_REPLY)
            sessions[user] = c
        self.write(
            'recheck = true\n[[rule]]\nname = "not alice"\naction = "deny"\n'
            'users = ["alice"]\n[[rule]]\nname = "rest"\naction = "allow"\n'
        )
        self.assertTrue(self.reloader(s.factory).reload())
        self.assertTrue(sessions[b"alice"].transport.disconnecting)
        self.assertEqual(sessions[b"alice"].session.reason, "recheck: denied by not alice")
        self.assertFalse(sessions[b"bob"].transport.disconnecting)

    def test_handshakeNotClosed(self) -> None:
        """
        A session still in its handshake is not closed by recheck; its
        request is then decided by the new rules.
        """
        s = Server(policy=ALLOW_ALL)
        c = s.client()
        c.send(greeting(0x00))
        self.write(DENY_HTTPS.format(recheck="true"))
        self.assertTrue(self.reloader(s.factory, authDescriptions=()).reload())
        self.assertFalse(c.transport.disconnecting)
        c.send(request("192.0.2.1", 443))
        self.assertEqual(c.received(), b"\x05\x00" + errorReply(NOT_ALLOWED))

    def test_factoryRecheckCounts(self) -> None:
        """
        The factory's C{recheck} decides every live session and returns how
        many it closed.
        """
        s = Server(policy=ALLOW_ALL)
        (web1, _), _ = self.twoSessions(s)
        (web2, _), _ = self.twoSessions(s)
        s.factory.policy = Policy(
            [Rule("deny", "no https", ports=((443, 443),)), Rule("allow", "rest")]
        )
        self.assertEqual(s.factory.recheck(), 2)
        self.assertFalse(web1.transport.disconnecting or web2.transport.disconnecting)

    def test_closingSessionNotClosedAgain(self) -> None:
        """
        A session that a first recheck is already closing (its client still
        flushing) is neither counted nor logged again by a second one.
        """
        s = Server(policy=ALLOW_ALL)
        _, (tls, _) = self.twoSessions(s)
        self.write(DENY_HTTPS.format(recheck="true"))
        reloader = self.reloader(s.factory, authDescriptions=())
        self.assertTrue(reloader.reload())
        self.assertTrue(tls.transport.disconnecting)
        self.assertTrue(reloader.reload())
        self.assertEqual(
            self.logged("recheck closed"),
            ["recheck closed 1 live sessions", "recheck closed 0 live sessions"],
        )
        self.assertEqual(len(self.logged("recheck: closing")), 1)

    def test_lostSessionNotLive(self) -> None:
        """
        A session whose client has gone is no longer among the live ones.
        """
        s = Server(policy=ALLOW_ALL)
        (web, _), (tls, _) = self.twoSessions(s)
        self.assertEqual(s.factory.live, {web.protocol, tls.protocol})
        tls.lost()
        self.assertEqual(s.factory.live, {web.protocol})

    def test_recheckBind(self) -> None:
        """
        A BIND relay whose peer the new rules deny is closed by recheck.
        """
        h = BindHarness(policy=ALLOW_ALL)
        h.bind()
        _, peerTransport = h.peerConnects(STRANGER)
        self.assertFalse(h.transport.disconnecting)
        h.factory.policy = Policy(
            [
                Rule("deny", "no strangers", networks=(ip_network(STRANGER.host),)),
                Rule("allow", "rest"),
            ]
        )
        self.assertEqual(h.factory.recheck(), 1)
        self.assertTrue(h.transport.disconnecting)
        self.assertTrue(peerTransport.disconnecting)
        self.assertEqual(h.protocol.session.reason, "recheck: denied by no strangers")

    def test_recheckUDPForgetsDecisions(self) -> None:
        """
        For a UDP association, recheck forgets the cached decisions: a
        destination allowed before is decided again by the new rules, and
        the association itself stays.
        """
        reactor = UDPMemoryReactor()
        factory = SOCKS5ServerFactory(
            reactor=reactor,
            nameResolver=FakeHostnameResolver(),
            udpOptions=UDPOptions(),
            policy=ALLOW_ALL,
        )

        class Harness:
            pass

        harness = Harness()
        harness.reactor, harness.factory = reactor, factory  # type: ignore[attr-defined]
        c = Control(harness, LOCAL, UDP_PEER)  # type: ignore[arg-type]
        self.assertEqual(c.associate()[1], 0x00)

        def sent() -> list[Any]:
            return [w for port in c.outboundPorts() for w in port.written]

        c.fromClient(udpDatagram("192.0.2.1", 53, b"one"))
        self.assertEqual(sent(), [(b"one", ("192.0.2.1", 53))])
        self.write(
            'recheck = true\n[[rule]]\nname = "no dns"\naction = "deny"\nports = [53]\n'
            '[[rule]]\nname = "rest"\naction = "allow"\n'
        )
        self.assertTrue(self.reloader(factory, authDescriptions=()).reload())
        self.assertFalse(c.transport.disconnecting)
        c.fromClient(udpDatagram("192.0.2.1", 53, b"two"))
        self.assertEqual(sent(), [(b"one", ("192.0.2.1", 53))])
        self.assertEqual(c.drops, {"denied": 1})


class SignalTests(SynchronousTestCase):
    """
    The service takes SIGHUP while it runs and gives it back when stopped;
    the handler only schedules a reload on the reactor thread.
    """

    def setUp(self) -> None:
        original = signal.getsignal(signal.SIGHUP)
        if original is not None:
            self.addCleanup(signal.signal, signal.SIGHUP, original)

        def previous(signum: int, frame: Any) -> None:
            raise AssertionError("the previous handler was called")

        self.previous = previous
        signal.signal(signal.SIGHUP, previous)
        self.reactor = FakeReactor()
        self.factory = SOCKS5ServerFactory(reactor=MemoryReactorClock(), policy=ALLOW_ALL)
        self.service = ReloadService(self.factory, self.reactor, None, [], {})

    def test_startInstalls(self) -> None:
        """
        C{startService} installs the handler; C{stopService} puts the
        previous one back.
        """
        self.service.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.service._signalled)
        self.service.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous)

    def test_privilegedStartInstalls(self) -> None:
        """
        C{privilegedStartService} installs the handler already (before
        twistd drops privileges and starts); C{startService} keeps it and
        C{stopService} restores the handler from before, not its own.
        """
        self.service.privilegedStartService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.service._signalled)
        self.service.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.service._signalled)
        self.service.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous)

    def test_restartInstallsAgain(self) -> None:
        """
        A service stopped and started again takes SIGHUP again.
        """
        self.service.startService()
        self.service.stopService()
        self.service.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.service._signalled)
        self.service.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous)

    def test_notInstalledBeforeStart(self) -> None:
        """
        Merely made, the service leaves SIGHUP alone.
        """
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous)

    def test_handlerSchedulesReload(self) -> None:
        """
        The installed handler does not reload in the signal handler: it asks
        the reactor to call C{reload} from its thread, and that call reloads.
        """
        self.factory.idleTimeout = 5
        self.service.startService()
        handler = signal.getsignal(signal.SIGHUP)
        handler(signal.SIGHUP, None)
        self.assertEqual(self.factory.idleTimeout, 5)
        [(f, args, kwargs)] = self.reactor.calls
        self.assertEqual((f, args, kwargs), (self.service.reload, (), {}))
        self.assertTrue(f(*args, **kwargs))
        self.assertEqual(self.factory.idleTimeout, 5)
        self.assertEqual(self.factory.policy.rules, Policy.defaults(False).rules)


class RecheckConfigTests(SynchronousTestCase):
    """
    The C{recheck} key of the configuration file.
    """

    def test_true(self) -> None:
        """
        C{recheck = true} is read.
        """
        self.assertTrue(parseConfig("recheck = true\n").recheck)

    def test_defaultFalse(self) -> None:
        """
        Without C{recheck}, it is off.
        """
        self.assertFalse(parseConfig("").recheck)
        self.assertFalse(parseConfig("recheck = false\n").recheck)

    def test_notBoolean(self) -> None:
        """
        A C{recheck} that is not a boolean is refused, naming its line.
        """
        for value in ('"true"', "1", "0", "[]"):
            e = self.assertRaises(
                ConfigError, parseConfig, f"\nrecheck = {value}\n", "test.toml"
            )
            self.assertIn("line 2", str(e))
            self.assertIn("recheck must be true or false", str(e))
