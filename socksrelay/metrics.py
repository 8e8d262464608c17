# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics, kept by an L{ISessionObserver} in a registry of its own.

Counters move when a session ends (its fields are final then); the gauges
and the byte counters also look at the live sessions when scraped, so that a
long tunnel shows its traffic while it runs.  Every label takes its values
from a bounded set: protocols and commands are mapped onto the few the
proxy knows, results onto a fixed list, rules come from the configuration,
and user names (only with C{perUser}) are capped at C{maxUsers}, beyond
which they share the series C{user="_other"}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from zope.interface import implementer

from socksrelay.interfaces import ISessionObserver

#: Every metric's name starts with this.
PREFIX = "socksrelay"

#: The series per-user metrics use for users beyond the cap.
OTHER_USER = "_other"

#: Seconds; the handshake timeout defaults to 30 and the connect timeout too.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

#: The C{protocol} label: what L{Session.protocol} may hold.
PROTOCOLS = frozenset({"socks5", "socks4", "socks4a", "http"})

#: The C{command} label: what a session may ask for.  C{HTTP} is plain-HTTP
#: forwarding; C{none} a session that ended before its request.
COMMANDS = frozenset({"CONNECT", "BIND", "UDP_ASSOCIATE", "HTTP"})

#: The C{result} label for each SOCKS5 reply code (SOCKS4 and HTTP CONNECT
#: sessions record the same codes).
REPLY_RESULTS = {
    0x00: "ok",
    0x01: "error",
    0x02: "denied",
    0x03: "unreachable",
    0x04: "unreachable",
    0x05: "refused",
    0x06: "timeout",
    0x07: "unsupported",
    0x08: "unsupported",
}

#: Every value the C{result} label takes.
RESULTS = (
    "ok",
    "refused",
    "unreachable",
    "timeout",
    "denied",
    "auth",
    "limit",
    "unsupported",
    "error",
    "incomplete",
)

#: The C{limit} label, by how a refusal's reason begins (the reasons
#: themselves name clients and users, so they are not labels).
LIMIT_KINDS = (
    ("session limit per client", "sessions-per-client"),
    ("session limit per user", "sessions-per-user"),
    ("session limit", "sessions"),
    ("handshake limit", "handshakes"),
    ("new-session rate limit", "rate"),
)

_AUTH_REASONS = (
    "authentication failed",
    "anonymous access refused",
    "proxy authentication failed",
)


def protocolLabel(session: Any) -> str:
    """
    The C{protocol} label of a session: C{socks5}, C{socks4}, C{socks4a},
    C{http}, or C{unknown} when its first byte named none of them.
    """
    protocol = session.protocol
    return protocol if protocol in PROTOCOLS else "unknown"


def commandLabel(session: Any) -> str:
    """
    The C{command} label of a session: one of L{COMMANDS} or C{none}.

    An HTTP client may send any method name; every method but C{CONNECT}
    counts as C{HTTP} (forwarding), so a client cannot add series.
    """
    command = session.command
    if command in COMMANDS:
        return command
    if command is not None and session.protocol == "http":
        return "HTTP"
    return "none"


def limitLabel(reason: str) -> str:
    """
    The kind of limit that a refusal's reason names.
    """
    for start, kind in LIMIT_KINDS:
        if reason.startswith(start):
            return kind
    return "other"


def sessionResult(session: Any, event: str | None = None) -> str:
    """
    How a session ended, as one of L{RESULTS}.

    @param session: a finished L{socksrelay.session.Session}.
    @param event: the result its counted events already decided (C{auth},
        C{denied} or C{limit}), if any.
    """
    if event is not None:
        return event
    if session.reply is not None:
        return REPLY_RESULTS.get(session.reply, "error")
    reason = session.reason or ""
    if reason.startswith(_AUTH_REASONS):
        return "auth"
    text = session.replyText
    if text is None:
        # Nothing was answered: the client left, timed out or spoke no
        # protocol the proxy knows.
        return "incomplete"
    if text in ("407", "0xff") or text.startswith("auth "):
        return "auth"
    if session.command == "HTTP":
        # Forwarding: the last status code the client got.
        if text == "403" and "rule" in session.details:
            return "denied"
        return {"502": "refused", "504": "timeout"}.get(text, "ok")
    return "error"


class _SessionState:
    """
    What the metrics remember of one live session.
    """

    __slots__ = ("connectSeen", "handshakeSeen", "outcome")

    def __init__(self) -> None:
        self.handshakeSeen = False
        self.connectSeen = False
        self.outcome: str | None = None


class _LiveCollector(Collector):
    """
    The metrics that are read from the live sessions at scrape time.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self._metrics
        active = GaugeMetricFamily(
            f"{PREFIX}_sessions_active",
            "Sessions open now (from accept until both connections are closed).",
            labels=["protocol"],
        )
        counts: dict[str, int] = {}
        up, down = m.bytesUp, m.bytesDown
        for session in m.live:
            label = protocolLabel(session)
            counts[label] = counts.get(label, 0) + 1
            up += session.bytesUp
            down += session.bytesDown
        for label in sorted(PROTOCOLS | counts.keys()):
            active.add_metric([label], counts.get(label, 0))
        yield active
        relayed = CounterMetricFamily(
            f"{PREFIX}_bytes",
            "Bytes relayed over TCP (tunnels, BIND and HTTP forwarding), by "
            "direction: up is from clients, down is to clients.",
            labels=["direction"],
        )
        relayed.add_metric(["up"], up)
        relayed.add_metric(["down"], down)
        yield relayed


@implementer(ISessionObserver)
class Metrics:
    """
    Counts sessions for Prometheus.

    @param perUser: keep per-user series (sessions and bytes by user).
    @param maxUsers: how many distinct users get series of their own; the
        others are counted under C{user="_other"}.
    @param listeningSockets: a callable returning how many sockets the proxy
        listens on now, or C{None}.
    @param registry: the L{CollectorRegistry} to fill; a new one (never
        the global registry) by default.

    @ivar registry: the registry, for L{prometheus_client.generate_latest}.
    @ivar live: the sessions started and not yet ended.
    """

    def __init__(
        self,
        perUser: bool = False,
        maxUsers: int = 100,
        listeningSockets: Callable[[], int] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.perUser = perUser
        self.maxUsers = maxUsers
        self.live: dict[Any, _SessionState] = {}
        #: Bytes of the sessions that have ended.
        self.bytesUp = 0
        self.bytesDown = 0
        self._users: set[str] = set()
        r = self.registry
        r.register(_LiveCollector(self))
        self.sessions = Counter(
            f"{PREFIX}_sessions",
            "Sessions ended, by protocol, command and result (ok, refused, "
            "unreachable, timeout, denied, auth, limit, unsupported, error, "
            "incomplete).",
            ["protocol", "command", "result"],
            registry=r,
        )
        self.handshakeLatency = Histogram(
            f"{PREFIX}_handshake_seconds",
            "Seconds from accepting a client to having its request (greeting, "
            "authentication and request read).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.connectLatency = Histogram(
            f"{PREFIX}_connect_seconds",
            "Seconds the successful outbound connections took (from the first "
            "attempt to connected), for CONNECT and HTTP.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.authFailures = Counter(
            f"{PREFIX}_auth_failures",
            "Failed logins (wrong user name or password), by protocol.",
            ["protocol"],
            registry=r,
        )
        self.denials = Counter(
            f"{PREFIX}_policy_denials",
            "Requests the access policy denied, by the rule that decided.",
            ["rule"],
            registry=r,
        )
        self.limitRefusals = Counter(
            f"{PREFIX}_limit_refusals",
            "Sessions refused over a limit, by limit (sessions, "
            "sessions-per-client, sessions-per-user, handshakes, rate).",
            ["limit"],
            registry=r,
        )
        self.udpDatagrams = Counter(
            f"{PREFIX}_udp_datagrams",
            "UDP datagrams relayed, by direction (counted when the "
            "association ends).",
            ["direction"],
            registry=r,
        )
        self.udpBytes = Counter(
            f"{PREFIX}_udp_bytes",
            "UDP payload bytes relayed, by direction (counted when the "
            "association ends).",
            ["direction"],
            registry=r,
        )
        self.udpDropped = Counter(
            f"{PREFIX}_udp_dropped",
            "UDP datagrams dropped, by reason.",
            ["reason"],
            registry=r,
        )
        self.listening = Gauge(
            f"{PREFIX}_listening_sockets",
            "Sockets the proxy listens on for clients.",
            registry=r,
        )
        if listeningSockets is not None:
            self.listening.set_function(lambda: float(listeningSockets()))
        self.userSessions: Counter | None = None
        self.userBytes: Counter | None = None
        self.trackedUsers: Gauge | None = None
        if perUser:
            self.userSessions = Counter(
                f"{PREFIX}_user_sessions",
                "Sessions ended, by authenticated user (at most "
                f"--metrics-max-users users; the rest as {OTHER_USER}).",
                ["user"],
                registry=r,
            )
            self.userBytes = Counter(
                f"{PREFIX}_user_bytes",
                "Bytes relayed over TCP, by authenticated user and direction "
                "(counted when the session ends).",
                ["user", "direction"],
                registry=r,
            )
            self.trackedUsers = Gauge(
                f"{PREFIX}_users_tracked",
                "Distinct users with series of their own.",
                registry=r,
            )
            self.trackedUsers.set_function(lambda: float(len(self._users)))
        for direction in ("up", "down"):
            self.udpDatagrams.labels(direction)
            self.udpBytes.labels(direction)

    def userLabel(self, user: str) -> str:
        """
        The C{user} label for C{user}: its own name while fewer than
        C{maxUsers} users have series, C{_other} after that.
        """
        if user in self._users:
            return user
        if len(self._users) < self.maxUsers:
            self._users.add(user)
            return user
        return OTHER_USER

    # -- ISessionObserver ---------------------------------------------------

    def sessionStarted(self, session: Any) -> None:
        self.live[session] = _SessionState()

    def eventCounted(self, session: Any, event: str, fields: dict[str, Any]) -> None:
        state = self.live.get(session)
        if event == "auth-failure":
            self.authFailures.labels(protocolLabel(session)).inc()
            outcome = "auth"
        elif event == "denied":
            self.denials.labels(str(fields.get("rule", "-"))).inc()
            outcome = "denied"
        elif event == "limit":
            self.limitRefusals.labels(limitLabel(str(fields.get("reason", "")))).inc()
            outcome = "limit"
        elif event == "udp-drop":
            self.udpDropped.labels(str(fields.get("reason", "-"))).inc()
            return
        else:
            return
        if state is not None and state.outcome is None:
            state.outcome = outcome

    def sessionEnded(self, session: Any) -> None:
        state = self.live.pop(session, None) or _SessionState()
        self._observeLatencies(session, state, ended=True)
        self.sessions.labels(
            protocolLabel(session),
            commandLabel(session),
            sessionResult(session, state.outcome),
        ).inc()
        up, down = session.bytesUp, session.bytesDown
        self.bytesUp += up
        self.bytesDown += down
        details = session.details
        if "datagramsUp" in details:
            self.udpDatagrams.labels("up").inc(details["datagramsUp"])
            self.udpDatagrams.labels("down").inc(details.get("datagramsDown", 0))
            self.udpBytes.labels("up").inc(details.get("udpBytesUp", 0))
            self.udpBytes.labels("down").inc(details.get("udpBytesDown", 0))
        if (
            self.userSessions is not None
            and self.userBytes is not None
            and session.user is not None
            and state.outcome != "auth"
        ):
            # Only names the proxy accepted: a failed login's name is the
            # client's word.
            user = self.userLabel(session.user)
            self.userSessions.labels(user).inc()
            self.userBytes.labels(user, "up").inc(up)
            self.userBytes.labels(user, "down").inc(down)

    # -- scraping -------------------------------------------------------------

    def refresh(self) -> None:
        """
        Observe the latencies of live sessions whose handshake or connect
        finished since the last scrape (called before each scrape).
        """
        for session, state in self.live.items():
            self._observeLatencies(session, state, ended=False)

    def _observeLatencies(self, session: Any, state: _SessionState, ended: bool) -> None:
        # When a session ends, a handshake time is recorded even if the
        # handshake never finished; a request read means it did.
        if (
            not state.handshakeSeen
            and session.handshakeDone is not None
            and (not ended or session.command is not None)
        ):
            state.handshakeSeen = True
            self.handshakeLatency.observe(
                max(0.0, session.handshakeDone - session.started)
            )
        if (
            not state.connectSeen
            and session.connected is not None
            and session.connectStarted is not None
            and session.command != "BIND"
        ):
            # (BIND's "connect" is the wait for its peer, not a latency.)
            state.connectSeen = True
            self.connectLatency.observe(
                max(0.0, session.connected - session.connectStarted)
            )
