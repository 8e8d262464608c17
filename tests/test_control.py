# -*- test-case-name: tests.test_control -*-
"""
Tests for L{socksrelay.control}: the metrics and control site, served by a
real L{twisted.web.server.Site} over an in-memory transport, in front of
real server protocols on a memory reactor; and its C{twistd} options.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactor,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.control import (
    AnnouncingControlEndpoint,
    ControlResource,
    ControlSite,
    LocalSource,
    controlService,
    parseControlEndpoint,
    readTokenFile,
)
from socksrelay.metrics import Metrics
from tests.fakes import FakeServerEndpoint, authRequest, greeting, request
from tests.test_metrics import Proxy, endOutbound

#: Where the control site listens, and where its test requests come from.
SITE_ADDRESS = IPv4Address("TCP", "127.0.0.1", 9180)
REQUESTER = IPv4Address("TCP", "127.0.0.1", 5555)
HOST = "127.0.0.1:9180"


class Response:
    """
    A parsed HTTP/1.1 response.
    """

    def __init__(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("iso-8859-1").split("\r\n")
        self.code = int(lines[0].split(" ")[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding") == "chunked":
            decoded = b""
            while True:
                size, _, rest = body.partition(b"\r\n")
                n = int(size, 16)
                if n == 0:
                    break
                decoded += rest[:n]
                body = rest[n + 2 :]
            body = decoded
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    site: ControlSite,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """
    Send one request to C{site} over an in-memory transport and parse the
    response.
    """
    channel = site.buildProtocol(REQUESTER)
    transport = StringTransport(hostAddress=SITE_ADDRESS, peerAddress=REQUESTER)
    channel.makeConnection(transport)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Content-Length: 0", "", ""]
    channel.dataReceived("\r\n".join(lines).encode("utf-8"))
    raw = transport.value()
    channel.connectionLost(Failure(ConnectionDone()))
    if not raw:
        raise AssertionError(f"no response to {method} {path}")
    return Response(raw)


class Harness:
    """
    A proxy with users alice and bob, and a control site in front of it.
    """

    def __init__(self, token: str | None = None) -> None:
        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
        from twisted.cred.portal import Portal

        from socksrelay.auth import SOCKSRealm

        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser(b"alice", b"pw")
        checker.addUser(b"bob", b"pw")
        self.proxy = Proxy(portal=Portal(SOCKSRealm(), [checker]))
        self.reactor = self.proxy.reactor
        self.root = ControlResource(LocalSource(self.proxy.factory, self.proxy.metrics), token)
        self.site = ControlSite(self.root, reactor=self.reactor)

    def session(self, user: bytes, host: str, port: int) -> tuple[Any, Any, Any]:
        """
        A relayed CONNECT of C{user} to C{host}:C{port}: the client, the
        outbound protocol and the outbound transport.
        """
        c = self.proxy.client()
        c.send(greeting(0x02) + authRequest(user, b"pw") + request(host, port))
        outbound, outboundTransport = self.proxy.recorder.last.succeed()
        c.received()
        return c, outbound, outboundTransport

    def fetch(self, method: str, path: str, **headers: str) -> Response:
        return fetch(
            self.site, method, path, {k.replace("_", "-"): v for k, v in headers.items()}
        )


class SessionsTests(SynchronousTestCase):
    """
    C{GET /sessions} and C{GET /sessions/ID}.
    """

    def setUp(self) -> None:
        self.h = Harness()
        self.a, self.aOut, _ = self.h.session(b"alice", "192.0.2.1", 80)
        self.h.reactor.advance(2)
        self.b, _, _ = self.h.session(b"bob", "198.51.100.7", 443)
        self.a.send(b"12345")
        self.aOut.dataReceived(b"abc")

    def test_list(self) -> None:
        """
        The list holds every live session, oldest first, with its fields
        and live byte counts.
        """
        response = self.h.fetch("GET", "/sessions")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers["content-type"], "application/json; charset=utf-8")
        sessions = response.json()
        self.assertEqual(
            [(s["user"], s["destination"]) for s in sessions],
            [("alice", "192.0.2.1:80"), ("bob", "198.51.100.7:443")],
        )
        first = sessions[0]
        self.assertEqual(first["id"], self.a.session.id)
        self.assertEqual(first["client"], self.a.session.client)
        self.assertEqual(first["protocol"], "socks5")
        self.assertEqual(first["command"], "CONNECT")
        self.assertEqual((first["bytesUp"], first["bytesDown"]), (5, 3))
        self.assertEqual(first["started"], 0)
        self.assertEqual(first["duration"], 2)
        self.assertEqual(sessions[1]["duration"], 0)

    def test_filters(self) -> None:
        """
        C{user} matches exactly, C{client} and C{destination} match parts.
        """

        def users(query: str) -> list[str]:
            return [s["user"] for s in self.h.fetch("GET", "/sessions?" + query).json()]

        self.assertEqual(users("user=alice"), ["alice"])
        self.assertEqual(users("user=ali"), [])
        self.assertEqual(users("destination=198.51"), ["bob"])
        self.assertEqual(users("destination=:80"), ["alice"])
        self.assertEqual(users("client=" + self.b.session.client), ["bob"])
        self.assertEqual(users("client=127.0.0.1"), ["alice", "bob"])
        self.assertEqual(users("user=alice&destination=198.51"), [])

    def test_trailingSlash(self) -> None:
        """
        C{/sessions/} is the list too.
        """
        self.assertEqual(len(self.h.fetch("GET", "/sessions/").json()), 2)

    def test_one(self) -> None:
        """
        C{GET /sessions/ID} is that session; an unknown id is a 404.
        """
        response = self.h.fetch("GET", f"/sessions/{self.b.session.id}")
        self.assertEqual(response.json()["user"], "bob")
        self.assertEqual(self.h.fetch("GET", "/sessions/999999").code, 404)

    def test_endedSessionsGone(self) -> None:
        """
        A session that ended is no longer listed.
        """
        self.a.lost()
        endOutbound(self.aOut)
        self.assertEqual(
            [s["user"] for s in self.h.fetch("GET", "/sessions").json()], ["bob"]
        )

    def test_unknownPath(self) -> None:
        """
        A path the site does not serve is a 404.
        """
        self.assertEqual(self.h.fetch("GET", "/nothing").code, 404)
        self.assertEqual(self.h.fetch("GET", "/sessions/x").code, 404)


class CloseTests(SynchronousTestCase):
    """
    C{POST /sessions/ID/close} and C{POST /sessions/close?user=NAME}.
    """

    def setUp(self) -> None:
        self.h = Harness()
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.a1 = self.h.session(b"alice", "192.0.2.1", 80)
        self.a2 = self.h.session(b"alice", "192.0.2.2", 80)
        self.b = self.h.session(b"bob", "192.0.2.3", 80)

    def closed(self, session: tuple[Any, Any, Any]) -> bool:
        client, _, outboundTransport = session
        return (
            client.transport.loseConnectionCalls > 0
            and outboundTransport.loseConnectionCalls > 0
        )

    def closeLines(self) -> list[str]:
        return [
            formatEvent(e) for e in self.log if "control: closing" in formatEvent(e)
        ]

    def test_closeById(self) -> None:
        """
        Closing by id closes both connections of that session only, records
        why, and logs a line naming the requester.
        """
        sessionId = self.a1[0].session.id
        response = self.h.fetch("POST", f"/sessions/{sessionId}/close")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json(), {"closed": [sessionId]})
        self.assertTrue(self.closed(self.a1))
        self.assertFalse(self.closed(self.a2))
        self.assertFalse(self.closed(self.b))
        self.assertEqual(
            self.a1[0].session.reason, "closed by control request from 127.0.0.1:5555"
        )
        lines = self.closeLines()
        self.assertEqual(len(lines), 1)
        self.assertIn(f"session {sessionId} ", lines[0])
        self.assertIn("asked by 127.0.0.1:5555", lines[0])

    def test_closeUnknown(self) -> None:
        """
        Closing an id that is not live is a 404 and closes nothing.
        """
        self.assertEqual(self.h.fetch("POST", "/sessions/999999/close").code, 404)
        self.assertFalse(any(self.closed(s) for s in (self.a1, self.a2, self.b)))

    def test_closeNeedsPost(self) -> None:
        """
        A GET of a close URL is refused (405) and closes nothing.
        """
        sessionId = self.a1[0].session.id
        response = self.h.fetch("GET", f"/sessions/{sessionId}/close")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers["allow"], "POST")
        self.assertEqual(self.h.fetch("GET", "/sessions/close?user=alice").code, 405)
        self.assertFalse(self.closed(self.a1))

    def test_closeByUser(self) -> None:
        """
        Closing by user closes every session of that user, each with a log
        line, and no other.
        """
        response = self.h.fetch("POST", "/sessions/close?user=alice")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            sorted(response.json()["closed"]),
            sorted([self.a1[0].session.id, self.a2[0].session.id]),
        )
        self.assertTrue(self.closed(self.a1))
        self.assertTrue(self.closed(self.a2))
        self.assertFalse(self.closed(self.b))
        self.assertEqual(len(self.closeLines()), 2)

    def test_closeByUserNeedsUser(self) -> None:
        """
        Closing by user without C{?user=} is a 400.
        """
        self.assertEqual(self.h.fetch("POST", "/sessions/close").code, 400)
        self.assertFalse(any(self.closed(s) for s in (self.a1, self.a2, self.b)))

    def test_crossOriginRefused(self) -> None:
        """
        A close sent by a page of another site (its C{Origin} is not this
        host) is refused with 403; one from the page itself is done.
        """
        sessionId = self.a1[0].session.id
        response = self.h.fetch(
            "POST", f"/sessions/{sessionId}/close", Origin="http://evil.example"
        )
        self.assertEqual(response.code, 403)
        self.assertFalse(self.closed(self.a1))
        response = self.h.fetch(
            "POST", f"/sessions/{sessionId}/close", Origin=f"http://{HOST}"
        )
        self.assertEqual(response.code, 200)
        self.assertTrue(self.closed(self.a1))

    def test_closedSessionEnds(self) -> None:
        """
        Once its connections are gone, a closed session ends with the
        control request as its reason and leaves the list.
        """
        client, outbound, _ = self.a1
        self.h.fetch("POST", f"/sessions/{client.session.id}/close")
        client.lost()
        endOutbound(outbound)
        self.assertEqual(client.session.closedBy, "proxy")
        self.assertNotIn(
            client.session.id, [s["id"] for s in self.h.fetch("GET", "/sessions").json()]
        )


class TokenTests(SynchronousTestCase):
    """
    With a token, every path needs C{Authorization: Bearer TOKEN}.
    """

    PATHS = (
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/sessions"),
        ("GET", "/nothing"),
        ("POST", "/sessions/close?user=alice"),
    )

    def setUp(self) -> None:
        self.h = Harness(token="s3cret-token")
        self.a = self.h.session(b"alice", "192.0.2.1", 80)

    def test_missing(self) -> None:
        """
        Without the header, every path is a 401 with a Bearer challenge.
        """
        for method, path in (
            *self.PATHS,
            ("POST", f"/sessions/{self.a[0].session.id}/close"),
        ):
            response = self.h.fetch(method, path)
            self.assertEqual(response.code, 401, path)
            self.assertEqual(
                response.headers["www-authenticate"], 'Bearer realm="socksrelay"'
            )
        self.assertEqual(self.a[0].transport.loseConnectionCalls, 0)

    def test_wrong(self) -> None:
        """
        A wrong token, a token with another scheme, or an empty one is a 401.
        """
        for value in ("Bearer wrong", "Bearer s3cret-token-and-more", "Basic s3cret-token",
                      "Bearer", "s3cret-token"):
            for method, path in self.PATHS:
                response = self.h.fetch(method, path, Authorization=value)
                self.assertEqual(response.code, 401, (value, path))
        self.assertEqual(self.a[0].transport.loseConnectionCalls, 0)

    def test_right(self) -> None:
        """
        The right token lets requests through.
        """
        good = {"Authorization": "Bearer s3cret-token"}
        self.assertEqual(self.h.fetch("GET", "/metrics", **good).code, 200)
        self.assertEqual(len(self.h.fetch("GET", "/sessions", **good).json()), 1)
        self.assertEqual(self.h.fetch("GET", "/", **good).code, 200)
        response = self.h.fetch("POST", "/sessions/close?user=alice", **good)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.a[0].transport.loseConnectionCalls, 1)


class MetricsPageTests(SynchronousTestCase):
    """
    C{GET /metrics} and the HTML page at C{/}.
    """

    def setUp(self) -> None:
        self.h = Harness()
        self.a = self.h.session(b"alice", "192.0.2.1", 80)

    def test_metrics(self) -> None:
        """
        C{/metrics} is Prometheus text with the live session counted.
        """
        response = self.h.fetch("GET", "/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers["content-type"].startswith("text/plain"))
        self.assertIn(b'socksrelay_sessions_active{protocol="socks5"} 1.0', response.body)
        self.assertIn(b"socksrelay_handshake_seconds_count 1.0", response.body)

    def test_page(self) -> None:
        """
        The page is HTML with a table row for each live session, and
        updates itself from C{/sessions} every two seconds.
        """
        response = self.h.fetch("GET", "/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers["content-type"], "text/html; charset=utf-8")
        page = response.body.decode("utf-8")
        self.assertIn('<table id="sessions">', page)
        self.assertIn(f'<tr data-id="{self.a[0].session.id}">', page)
        self.assertIn("<td>192.0.2.1:80</td>", page)
        self.assertIn("<td>alice</td>", page)
        self.assertIn('fetch("sessions"', page)
        self.assertIn("setInterval(poll, 2000)", page)
        self.assertIn('http-equiv="refresh"', page)

    def test_pageSelfContained(self) -> None:
        """
        The page loads nothing from elsewhere.
        """
        page = self.h.fetch("GET", "/").body.decode("utf-8")
        for needle in ("http://", "https://", "src=", "<link"):
            self.assertNotIn(needle, page)

    def test_pageEscapes(self) -> None:
        """
        Text from clients is escaped in the page.
        """
        self.a[0].session.destination = "<script>alert(1)</script>:80"
        page = self.h.fetch("GET", "/").body.decode("utf-8")
        self.assertNotIn("<script>alert(1)", page)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;:80", page)

    def test_pageEmpty(self) -> None:
        """
        Without sessions the table says so.
        """
        client, outbound, _ = self.a
        client.lost()
        endOutbound(outbound)
        self.assertIn(b"no live sessions", self.h.fetch("GET", "/").body)


class OptionsTests(SynchronousTestCase):
    """
    The C{twistd socks5} options of the metrics and control endpoint.
    """

    def tokenFile(self, content: str) -> str:
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return path

    def test_endpoint(self) -> None:
        """
        A bare port listens on 127.0.0.1 only; an endpoint string is kept;
        nonsense is refused.
        """
        self.assertEqual(parseControlEndpoint("9180"), "tcp:9180:interface=127.0.0.1")
        self.assertEqual(
            parseControlEndpoint("tcp:9180:interface=0.0.0.0"), "tcp:9180:interface=0.0.0.0"
        )
        self.assertRaises(ValueError, parseControlEndpoint, "nonsense:1")

    def test_token(self) -> None:
        """
        The token file is read without surrounding white space, and its
        C{repr} shows the path only.
        """
        path = self.tokenFile("  abc123\n")
        token = readTokenFile(path)
        self.assertEqual(token.token, "abc123")
        self.assertNotIn("abc123", repr(token))
        self.assertIn(path, repr(token))

    def test_badToken(self) -> None:
        """
        An empty, missing or two-word token file is refused.
        """
        self.assertRaises(ValueError, readTokenFile, self.tokenFile("\n"))
        self.assertRaises(ValueError, readTokenFile, self.tokenFile("two words"))
        self.assertRaises(ValueError, readTokenFile, "/nonexistent/token")

    def test_options(self) -> None:
        """
        The options parse into the config that L{tap.makeService} reads.
        """
        options = tap.Options()
        options.parseOptions(
            [
                "--metrics",
                "9180",
                "--metrics-per-user",
                "--metrics-max-users",
                "7",
                "--control-token-file",
                self.tokenFile("abc"),
            ]
        )
        self.assertEqual(options["metrics"], "tcp:9180:interface=127.0.0.1")
        self.assertTrue(options["metrics-per-user"])
        self.assertEqual(options["metrics-max-users"], 7)
        self.assertEqual(options["control-token-file"].token, "abc")

    def test_defaults(self) -> None:
        """
        By default there is no endpoint, no per-user series, and the cap is
        100.
        """
        options = tap.Options()
        options.parseOptions([])
        self.assertIsNone(options["metrics"])
        self.assertFalse(options["metrics-per-user"])
        self.assertEqual(options["metrics-max-users"], 100)
        self.assertIsNone(options["control-token-file"])

    def test_badOptions(self) -> None:
        """
        A bad endpoint, cap or token file is a usage error.
        """
        for argv in (
            ["--metrics", "nonsense:1"],
            ["--metrics-max-users", "0"],
            ["--control-token-file", "/nonexistent/token"],
        ):
            self.assertRaises(usage.UsageError, tap.Options().parseOptions, argv)

    def services(self, argv: list[str]) -> tuple[Any, list[Any]]:
        options = tap.Options()
        options.parseOptions(argv)
        top = tap.makeService(options, reactor=MemoryReactorClock())
        return top, list(top)

    def test_makeService(self) -> None:
        """
        With C{--metrics}, the service has a listening service for the site
        and the factory a L{Metrics} observer with the options given.
        """
        top, _ = self.services(["--metrics", "9180", "--metrics-per-user"])
        control = top.getServiceNamed("control")
        self.assertIsInstance(control, StreamServerEndpointService)
        self.assertIsInstance(control.factory, ControlSite)
        factory = next(
            s.factory
            for s in top
            if isinstance(s, StreamServerEndpointService) and s is not control
        )
        observers = [o for o in factory.observers if isinstance(o, Metrics)]
        self.assertEqual(len(observers), 1)
        self.assertTrue(observers[0].perUser)
        self.assertEqual(observers[0].maxUsers, 100)

    def test_noMetrics(self) -> None:
        """
        Without C{--metrics} there is no control service and no observer.
        """
        _, services = self.services([])
        self.assertNotIn("control", [s.name for s in services])
        for s in services:
            factory = getattr(s, "factory", None)
            for observer in getattr(factory, "observers", []):
                self.assertNotIsInstance(observer, Metrics)


class ServiceTests(SynchronousTestCase):
    """
    L{controlService} and the endpoint that announces it.
    """

    def setUp(self) -> None:
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.log]

    def listen(self, host: str, hasToken: bool) -> None:
        endpoint = AnnouncingControlEndpoint(
            FakeServerEndpoint(IPv4Address("TCP", host, 9180)), hasToken
        )
        endpoint.listen(object())

    def test_announce(self) -> None:
        """
        Listening logs where, in a line tests and operators can find.
        """
        self.listen("127.0.0.1", False)
        self.assertIn("metrics and control on 127.0.0.1 port 9180", self.messages())
        self.assertFalse([m for m in self.messages() if "WARNING" in m])

    def test_warnOpenWithoutToken(self) -> None:
        """
        Listening beyond loopback without a token logs a warning; with a
        token it does not.
        """
        self.listen("0.0.0.0", False)
        self.assertEqual(len([m for m in self.messages() if "WARNING" in m]), 1)
        self.listen("0.0.0.0", True)
        self.assertEqual(len([m for m in self.messages() if "WARNING" in m]), 1)

    def test_observerAdded(self) -> None:
        """
        L{controlService} adds its L{Metrics} to the factory's observers,
        wired to the listening-sockets callable.
        """
        p = Proxy()
        service = controlService(
            p.factory,
            "tcp:0:interface=127.0.0.1",
            MemoryReactor(),
            perUser=True,
            maxUsers=3,
            listeningSockets=lambda: 4,
        )
        metrics = p.factory.observers[-1]
        self.assertIsInstance(metrics, Metrics)
        self.assertEqual((metrics.perUser, metrics.maxUsers), (True, 3))
        self.assertEqual(
            metrics.registry.get_sample_value("socksrelay_listening_sockets"), 4
        )
        self.assertIsInstance(service, StreamServerEndpointService)
