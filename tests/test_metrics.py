# -*- test-case-name: tests.test_metrics -*-
"""
Tests for L{socksrelay.metrics}: the values after known sessions (driven
through the real server protocol on a memory reactor), the labels, and the
cap on per-user series.
"""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.auth import SOCKSRealm
from socksrelay.interfaces import ISessionObserver
from socksrelay.metrics import (
    OTHER_USER,
    Metrics,
    commandLabel,
    limitLabel,
    protocolLabel,
    sessionResult,
)
from socksrelay.rules import Policy, Rule
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.session import Session
from tests.fakes import (
    ClientConnection,
    SUCCESS_REPLY,
    EndpointRecorder,
    authRequest,
    greeting,
    request,
)



class Proxy:
    """
    A L{SOCKS5ServerFactory} on a L{MemoryReactorClock} with recorded
    outbound endpoints and a L{Metrics} observer.
    """

    def __init__(self, perUser: bool = False, maxUsers: int = 100, **kw: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.recorder = EndpointRecorder()
        self.factory = SOCKS5ServerFactory(
            reactor=self.reactor, connectEndpoint=self.recorder, **kw
        )
        self.metrics = Metrics(perUser=perUser, maxUsers=maxUsers)
        self.factory.observers.append(self.metrics)
        self._port = 40000

    def client(self) -> ClientConnection:
        self._port += 1
        return ClientConnection(self.factory, "127.0.0.1", self._port)

    def connected(self, host: str = "192.0.2.1", port: int = 80) -> tuple[ClientConnection, Any, Any]:
        """
        A client whose SOCKS5 CONNECT succeeded.
        """
        c = self.client()
        c.send(greeting(0x00) + request(host, port))
        outbound, outboundTransport = self.recorder.last.succeed()
        if c.received() != b"\x05\x00" + SUCCESS_REPLY:
            raise AssertionError("the CONNECT did not succeed")
        return c, outbound, outboundTransport

    def value(self, name: str, **labels: str) -> float:
        """
        A sample's value after a refresh, 0 when it does not exist.
        """
        self.metrics.refresh()
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def passwordPortal() -> Portal:
    """
    A portal that accepts alice with password C{pw}.
    """
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(b"alice", b"pw")
    return Portal(SOCKSRealm(), [checker])


def endOutbound(outbound: Any) -> None:
    outbound.transport.connected = False
    outbound.connectionLost(Failure(ConnectionDone()))


def makeSession(metrics: Metrics, **fields: Any) -> Session:
    """
    A started L{Session} observed by C{metrics}, with C{fields} set.
    """
    session = Session(MemoryReactorClock(), "127.0.0.1:40000", "127.0.0.1:1080", [metrics])
    for name, value in fields.items():
        setattr(session, name, value)
    session.start()
    return session


class SessionMetricsTests(SynchronousTestCase):
    """
    The counters, gauges and histograms after sessions run through the real
    server protocol.
    """

    def test_observer(self) -> None:
        """
        L{Metrics} provides L{ISessionObserver}.
        """
        self.assertTrue(ISessionObserver.providedBy(Metrics()))

    def test_ownRegistry(self) -> None:
        """
        Each L{Metrics} fills a registry of its own, never the global one,
        so two of them do not clash.
        """
        first, second = Metrics(), Metrics()
        self.assertIsNot(first.registry, prometheus_client.REGISTRY)
        self.assertIsNot(first.registry, second.registry)
        self.assertIsNone(
            prometheus_client.REGISTRY.get_sample_value(
                "socksrelay_listening_sockets"
            )
        )

    def test_connectSession(self) -> None:
        """
        A relayed CONNECT counts one ok session, its bytes each way, and its
        handshake and connect latencies.
        """
        p = Proxy()
        c = p.client()
        p.reactor.advance(0.25)
        c.send(greeting(0x00) + request("192.0.2.1", 80))
        p.reactor.advance(0.5)
        outbound, _ = p.recorder.last.succeed()
        c.send(b"hello")
        outbound.dataReceived(b"world!!")
        self.assertEqual(p.value("socksrelay_sessions_active", protocol="socks5"), 1)
        c.lost()
        endOutbound(outbound)
        labels = {"protocol": "socks5", "command": "CONNECT", "result": "ok"}
        self.assertEqual(p.value("socksrelay_sessions_total", **labels), 1)
        self.assertEqual(p.value("socksrelay_sessions_active", protocol="socks5"), 0)
        self.assertEqual(p.value("socksrelay_bytes_total", direction="up"), 5)
        self.assertEqual(p.value("socksrelay_bytes_total", direction="down"), 7)
        self.assertEqual(p.value("socksrelay_handshake_seconds_count"), 1)
        self.assertAlmostEqual(p.value("socksrelay_handshake_seconds_sum"), 0.25)
        self.assertEqual(p.value("socksrelay_connect_seconds_count"), 1)
        self.assertAlmostEqual(p.value("socksrelay_connect_seconds_sum"), 0.5)
        self.assertEqual(p.value("socksrelay_connect_seconds_bucket", le="0.5"), 1)
        self.assertEqual(p.value("socksrelay_connect_seconds_bucket", le="0.25"), 0)

    def test_refusedConnect(self) -> None:
        """
        A CONNECT the destination refuses counts as C{refused}, with no
        connect latency.
        """
        p = Proxy()
        c = p.client()
        c.send(greeting(0x00) + request("192.0.2.1", 81))
        p.recorder.last.fail(ConnectionRefusedError())
        c.lost()
        self.assertEqual(
            p.value(
                "socksrelay_sessions_total",
                protocol="socks5",
                command="CONNECT",
                result="refused",
            ),
            1,
        )
        self.assertEqual(p.value("socksrelay_connect_seconds_count"), 0)
        self.assertEqual(p.value("socksrelay_handshake_seconds_count"), 1)

    def test_liveBytes(self) -> None:
        """
        Bytes relayed by a session still open are counted at scrape time,
        and the counter never goes down when the session ends.
        """
        p = Proxy()
        c, outbound, _ = p.connected()
        c.send(b"x" * 100)
        self.assertEqual(p.value("socksrelay_bytes_total", direction="up"), 100)
        c.send(b"x" * 50)
        self.assertEqual(p.value("socksrelay_bytes_total", direction="up"), 150)
        c.lost()
        endOutbound(outbound)
        self.assertEqual(p.value("socksrelay_bytes_total", direction="up"), 150)
        _, outbound2, _ = p.connected()
        outbound2.dataReceived(b"y" * 10)
        self.assertEqual(p.value("socksrelay_bytes_total", direction="down"), 10)

    def test_latencyWhileLive(self) -> None:
        """
        A live session's latencies are observed at the first scrape after
        its connect, once: its end does not observe them again.
        """
        p = Proxy()
        c, outbound, _ = p.connected()
        self.assertEqual(p.value("socksrelay_handshake_seconds_count"), 1)
        self.assertEqual(p.value("socksrelay_connect_seconds_count"), 1)
        c.lost()
        endOutbound(outbound)
        self.assertEqual(p.value("socksrelay_handshake_seconds_count"), 1)
        self.assertEqual(p.value("socksrelay_connect_seconds_count"), 1)

    def test_incompleteHandshake(self) -> None:
        """
        A client that leaves in the middle of its greeting is counted as
        C{incomplete} and adds no handshake latency.
        """
        p = Proxy()
        c = p.client()
        c.send(b"\x05")
        p.reactor.advance(3)
        c.lost()
        self.assertEqual(
            p.value(
                "socksrelay_sessions_total",
                protocol="socks5",
                command="none",
                result="incomplete",
            ),
            1,
        )
        self.assertEqual(p.value("socksrelay_handshake_seconds_count"), 0)

    def test_unknownProtocol(self) -> None:
        """
        A first byte that names no protocol is counted under
        C{protocol="unknown"}.
        """
        p = Proxy()
        c = p.client()
        c.send(b"\x16\x03\x01")
        c.lost()
        self.assertEqual(
            p.value(
                "socksrelay_sessions_total",
                protocol="unknown",
                command="none",
                result="incomplete",
            ),
            1,
        )

    def test_policyDenial(self) -> None:
        """
        A request the policy denies counts a denial labelled with the rule,
        and a session whose result is C{denied}.
        """
        policy = Policy(
            [Rule("deny", "no smtp", ports=((25, 25),)), Rule("allow", "all")]
        )
        p = Proxy(policy=policy)
        c = p.client()
        c.send(greeting(0x00) + request("192.0.2.1", 25))
        c.lost()
        self.assertEqual(p.value("socksrelay_policy_denials_total", rule="no smtp"), 1)
        self.assertEqual(
            p.value(
                "socksrelay_sessions_total",
                protocol="socks5",
                command="CONNECT",
                result="denied",
            ),
            1,
        )

    def test_authFailure(self) -> None:
        """
        A wrong password counts an auth failure and a session whose result
        is C{auth}.
        """
        p = Proxy(portal=passwordPortal())
        c = p.client()
        c.send(greeting(0x02) + authRequest(b"alice", b"wrong"))
        c.lost()
        self.assertEqual(p.value("socksrelay_auth_failures_total", protocol="socks5"), 1)
        self.assertEqual(
            p.value(
                "socksrelay_sessions_total",
                protocol="socks5",
                command="none",
                result="auth",
            ),
            1,
        )

    def test_limitRefusal(self) -> None:
        """
        A refusal over a limit is counted by the kind of limit, never by
        the client address its reason names.
        """
        metrics = Metrics()
        session = makeSession(metrics)
        metrics.eventCounted(
            session,
            "limit",
            {"reason": "session limit per client (2) reached for 192.0.2.9"},
        )
        session.log()
        self.assertEqual(
            metrics.registry.get_sample_value(
                "socksrelay_limit_refusals_total", {"limit": "sessions-per-client"}
            ),
            1,
        )
        self.assertNotIn(b"192.0.2.9", generate_latest(metrics.registry))

    def test_udpCounts(self) -> None:
        """
        A UDP association's datagram and byte counts are added from its
        details when it ends, and drops are counted by reason as they come.
        """
        metrics = Metrics()
        session = makeSession(metrics, command="UDP_ASSOCIATE", reply=0)
        session.count("udp-drop", reason="denied")
        session.count("udp-drop", reason="denied")
        session.count("udp-drop", reason="malformed")
        session.details.update(
            datagramsUp=3, datagramsDown=2, udpBytesUp=30, udpBytesDown=200
        )
        session.log()

        def value(name: str, **labels: str) -> float | None:
            return metrics.registry.get_sample_value(name, labels)

        self.assertEqual(value("socksrelay_udp_datagrams_total", direction="up"), 3)
        self.assertEqual(value("socksrelay_udp_datagrams_total", direction="down"), 2)
        self.assertEqual(value("socksrelay_udp_bytes_total", direction="up"), 30)
        self.assertEqual(value("socksrelay_udp_bytes_total", direction="down"), 200)
        self.assertEqual(value("socksrelay_udp_dropped_total", reason="denied"), 2)
        self.assertEqual(value("socksrelay_udp_dropped_total", reason="malformed"), 1)
        self.assertEqual(
            value(
                "socksrelay_sessions_total",
                protocol="socks5",
                command="UDP_ASSOCIATE",
                result="ok",
            ),
            1,
        )

    def test_listeningSockets(self) -> None:
        """
        The listening-sockets gauge reads the callable it was given at
        every scrape.
        """
        count = [2]
        metrics = Metrics(listeningSockets=lambda: count[0])
        registry = metrics.registry
        self.assertEqual(registry.get_sample_value("socksrelay_listening_sockets"), 2)
        count[0] = 0
        self.assertEqual(registry.get_sample_value("socksrelay_listening_sockets"), 0)

    def test_exposition(self) -> None:
        """
        The Prometheus text names every metric the proxy documents.
        """
        text = generate_latest(Metrics(perUser=True).registry).decode("utf-8")
        for name in (
            "socksrelay_sessions_active",
            "socksrelay_sessions_total",
            "socksrelay_bytes_total",
            "socksrelay_handshake_seconds",
            "socksrelay_connect_seconds",
            "socksrelay_auth_failures_total",
            "socksrelay_policy_denials_total",
            "socksrelay_limit_refusals_total",
            "socksrelay_udp_datagrams_total",
            "socksrelay_udp_bytes_total",
            "socksrelay_udp_dropped_total",
            "socksrelay_listening_sockets",
            "socksrelay_user_sessions_total",
            "socksrelay_user_bytes_total",
            "socksrelay_users_tracked",
        ):
            self.assertIn(f"# TYPE {name} ", text)


class PerUserTests(SynchronousTestCase):
    """
    Per-user series: only when asked for, and capped.
    """

    def userSession(self, p: Proxy, name: bytes) -> None:
        c = p.client()
        c.send(greeting(0x02) + authRequest(name, b"pw") + request("192.0.2.1", 80))
        outbound, _ = p.recorder.last.succeed()
        c.send(b"abc")
        c.lost()
        endOutbound(outbound)

    def portal(self, *names: bytes) -> Portal:
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        for name in names:
            checker.addUser(name, b"pw")
        return Portal(SOCKSRealm(), [checker])

    def test_offByDefault(self) -> None:
        """
        Without C{perUser} there is no series with a user label.
        """
        p = Proxy(portal=self.portal(b"alice"))
        self.userSession(p, b"alice")
        text = generate_latest(p.metrics.registry)
        self.assertNotIn(b"user=", text)
        self.assertNotIn(b"alice", text)

    def test_counted(self) -> None:
        """
        With C{perUser}, sessions and bytes are counted under the user's
        name.
        """
        p = Proxy(perUser=True, portal=self.portal(b"alice"))
        self.userSession(p, b"alice")
        self.userSession(p, b"alice")
        self.assertEqual(p.value("socksrelay_user_sessions_total", user="alice"), 2)
        self.assertEqual(
            p.value("socksrelay_user_bytes_total", user="alice", direction="up"), 6
        )

    def test_cap(self) -> None:
        """
        Beyond C{maxUsers} distinct users, sessions are counted under
        C{_other}; the users seen first keep their own series.
        """
        names = [b"u%d" % i for i in range(5)]
        p = Proxy(perUser=True, maxUsers=2, portal=self.portal(*names))
        for name in names:
            self.userSession(p, name)
        self.userSession(p, b"u0")
        self.assertEqual(p.value("socksrelay_user_sessions_total", user="u0"), 2)
        self.assertEqual(p.value("socksrelay_user_sessions_total", user="u1"), 1)
        self.assertEqual(p.value("socksrelay_user_sessions_total", user=OTHER_USER), 3)
        self.assertEqual(p.value("socksrelay_user_sessions_total", user="u2"), 0)
        self.assertEqual(p.value("socksrelay_users_tracked"), 2)

    def test_floodBounded(self) -> None:
        """
        A thousand distinct user names make at most C{maxUsers} + 1 user
        series.
        """
        metrics = Metrics(perUser=True, maxUsers=10)
        for i in range(1000):
            session = makeSession(metrics, user=f"name{i}", reply=0, command="CONNECT")
            session.log()
        users = {
            sample.labels["user"]
            for family in metrics.registry.collect()
            for sample in family.samples
            if "user" in sample.labels
        }
        self.assertEqual(len(users), 11)
        self.assertIn(OTHER_USER, users)

    def test_failedLoginNotCounted(self) -> None:
        """
        A name whose login failed takes no per-user series.
        """
        p = Proxy(perUser=True, portal=self.portal(b"alice"))
        c = p.client()
        c.send(greeting(0x02) + authRequest(b"mallory", b"guess"))
        c.lost()
        self.assertNotIn(b"mallory", generate_latest(p.metrics.registry))


class LabelTests(SynchronousTestCase):
    """
    Every label value comes from a bounded set.
    """

    def session(self, **fields: Any) -> Session:
        session = Session(MemoryReactorClock(), "127.0.0.1:1", "127.0.0.1:2")
        for name, value in fields.items():
            setattr(session, name, value)
        return session

    def test_commandFromAnyHTTPMethod(self) -> None:
        """
        Any HTTP method but CONNECT is counted as C{HTTP}, so a client cannot
        invent label values.
        """
        self.assertEqual(
            commandLabel(self.session(protocol="http", command="XYZZY")), "HTTP"
        )
        self.assertEqual(
            commandLabel(self.session(protocol="http", command="CONNECT")), "CONNECT"
        )
        self.assertEqual(commandLabel(self.session(command=None)), "none")

    def test_protocol(self) -> None:
        """
        Known protocols are their own label; anything else is C{unknown}.
        """
        self.assertEqual(protocolLabel(self.session(protocol="socks4a")), "socks4a")
        self.assertEqual(protocolLabel(self.session(protocol=None)), "unknown")

    def test_results(self) -> None:
        """
        Reply codes, HTTP statuses and end reasons map onto the results.
        """
        cases = [
            ({"reply": 0}, "ok"),
            ({"reply": 1}, "error"),
            ({"reply": 2}, "denied"),
            ({"reply": 4}, "unreachable"),
            ({"reply": 5}, "refused"),
            ({"reply": 6}, "timeout"),
            ({"reply": 7}, "unsupported"),
            ({"replyText": "407"}, "auth"),
            ({"replyText": "0xff"}, "auth"),
            ({"reason": "authentication failed: empty user name"}, "auth"),
            ({"command": "HTTP", "replyText": "200"}, "ok"),
            ({"command": "HTTP", "replyText": "502"}, "refused"),
            ({}, "incomplete"),
        ]
        for fields, expected in cases:
            self.assertEqual(sessionResult(self.session(**fields)), expected, fields)
        self.assertEqual(sessionResult(self.session(reply=1), "limit"), "limit")

    def test_limitKinds(self) -> None:
        """
        Each limit reason maps to its kind.
        """
        self.assertEqual(limitLabel("session limit (5) reached"), "sessions")
        self.assertEqual(
            limitLabel("session limit per user (2) reached for bob"),
            "sessions-per-user",
        )
        self.assertEqual(limitLabel("handshake limit (9) reached"), "handshakes")
        self.assertEqual(
            limitLabel("new-session rate limit (5/s) reached for 10.0.0.1"), "rate"
        )
        self.assertEqual(limitLabel("something else"), "other")


class RegistryTests(SynchronousTestCase):
    """
    The registry argument.
    """

    def test_givenRegistry(self) -> None:
        """
        A registry passed in is the one filled.
        """
        registry = CollectorRegistry()
        metrics = Metrics(registry=registry)
        self.assertIs(metrics.registry, registry)
        self.assertIsNotNone(registry.get_sample_value("socksrelay_listening_sockets"))
