# -*- test-case-name: tests.test_limits -*-
"""
Limits on what clients may take: concurrent sessions in total, per client IP
and per user; handshakes in progress; new sessions per second per client IP.

L{Admission} keeps the counts; it does no I/O and reads time from the clock
it is given.  Over a limit the server refuses at once with a failure reply
and a log line; nothing waits.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable

from socksrelay.throttle import DEFAULT_BURST_SECONDS
from twisted.logger import Logger


@dataclass
class Limits:
    """
    The limits; 0 means no limit.

    @ivar sessions: concurrent sessions in total.
    @ivar sessionsPerClient: concurrent sessions per client IP address.
    @ivar sessionsPerUser: concurrent sessions per authenticated user.
    @ivar handshakes: connections that have not finished their handshake.
    @ivar handshakesPerClient: connections from one client IP address that
        have not finished their handshake; well below C{handshakes}, so that
        one address holding idle connections cannot lock everyone else out.
    @ivar rate: new sessions per second per client IP (a token bucket that
        holds up to C{burst} sessions); off by default, since many users
        can share one IP address behind NAT.
    @ivar burst: how many new sessions a client IP may open at once (0: no
        more than one second's worth of C{rate}).
    @ivar bandwidthBurst: how many seconds' worth of a user's bandwidth
        limit (C{up}/C{down}) can pass at once, beyond the rate (at least
        L{socksrelay.throttle.MIN_BURST} bytes); see
        L{socksrelay.throttle}.
    @ivar lookups: destination name lookups in flight in total (each
        counted until its resolver returns, even after its session left).
    @ivar lookupsPerClient: name lookups in flight per client IP address
        (well below C{lookups}, so that no one address can take them all).
    @ivar backlog: the C{listen(2)} backlog of every listening port (the
        kernel caps it at C{net.core.somaxconn}); read when the ports are
        opened, not on reload.

    Each per-client and per-user default is well below its global
    counterpart, so that no single address or user can take a whole global
    limit.
    """

    sessions: int = 10000
    sessionsPerClient: int = 1024
    sessionsPerUser: int = 256
    handshakes: int = 1024
    rate: float = 0.0
    burst: int = 100
    handshakesPerClient: int = 64
    bandwidthBurst: float = DEFAULT_BURST_SECONDS
    lookups: int = 256
    lookupsPerClient: int = 16
    backlog: int = 1024


#: Each per-client or per-user limit, with the global limit it must stay
#: below: (its name, attribute, the global one's name, attribute).
PAIRS = (
    ("sessions-per-client", "sessionsPerClient", "sessions", "sessions"),
    ("sessions-per-user", "sessionsPerUser", "sessions", "sessions"),
    ("handshakes-per-client", "handshakesPerClient", "handshakes", "handshakes"),
    ("lookups-per-client", "lookupsPerClient", "lookups", "lookups"),
)


def lockoutRisks(limits: Limits) -> list[str]:
    """
    Say which per-client or per-user limits let one client address (or
    user) take a whole global limit, locking everyone else out: those that
    are off, or not below their global limit, while it is on.
    """
    risks = []
    for name, attribute, totalName, totalAttribute in PAIRS:
        own, total = getattr(limits, attribute), getattr(limits, totalAttribute)
        if total and (not own or own >= total):
            risks.append(
                f"{name} ({own or 'no limit'}) is not below {totalName} ({total}): "
                f"one {'user' if 'user' in name else 'client address'} can take all of it"
            )
    return risks


class Refusal(Exception):
    """
    A limit was reached.

    @ivar reason: for the log.
    @ivar rateLimited: whether it was the rate (HTTP answers 429, not 503).
    """

    def __init__(self, reason: str, rateLimited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rateLimited = rateLimited


#: How many client IPs the rate limiter remembers.
RATE_TABLE_SIZE = 65536


class Admission:
    """
    The counts behind L{Limits}.  Limits that let one client take a whole
    global limit (L{lockoutRisks}) are warned about when they are set.
    """

    _log = Logger()

    def __init__(self, limits: Limits, seconds: Callable[[], float]) -> None:
        self.limits = limits
        self._seconds = seconds
        self.sessions = 0
        self.handshakes = 0
        self.perClient: Counter[str] = Counter()
        #: Connections of each client IP still in their handshake.
        self.handshakesPerClient: Counter[str] = Counter()
        #: Refused connections kept open until they can be answered, in
        #: all and per client IP.
        self.refused = 0
        self.refusedPerClient: Counter[str] = Counter()
        self.perUser: Counter[str] = Counter()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def limits(self) -> Limits:
        """
        The limits in force; set new ones at any time.
        """
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        for risk in lockoutRisks(limits):
            self._log.warn("limits: {risk}", risk=risk)

    def admit(self, client: str) -> None:
        """
        A new connection from C{client}: count it, or raise L{Refusal}.
        """
        limits = self.limits
        if limits.sessions and self.sessions >= limits.sessions:
            raise Refusal(f"session limit ({limits.sessions}) reached")
        if limits.sessionsPerClient and self.perClient[client] >= limits.sessionsPerClient:
            raise Refusal(
                f"session limit per client ({limits.sessionsPerClient}) reached for {client}"
            )
        if (
            limits.handshakesPerClient
            and self.handshakesPerClient[client] >= limits.handshakesPerClient
        ):
            raise Refusal(
                f"handshake limit per client ({limits.handshakesPerClient}) "
                f"reached for {client}"
            )
        if limits.handshakes and self.handshakes >= limits.handshakes:
            raise Refusal(f"handshake limit ({limits.handshakes}) reached")
        if limits.rate and not self._takeToken(client):
            raise Refusal(
                f"new-session rate limit ({limits.rate:g}/s) reached for {client}",
                rateLimited=True,
            )
        self.sessions += 1
        self.handshakes += 1
        self.perClient[client] += 1
        self.handshakesPerClient[client] += 1

    def holdRefused(self, client: str) -> bool:
        """
        A connection from C{client} was refused: whether it may stay open
        until its first bytes say in which protocol to answer (then count it
        until L{refusedGone}), or must be closed at once.  A client may keep
        as many refused connections waiting as it may have handshakes, and
        all clients together as many as the handshake limit, so that
        refused connections cannot pile up without bound.
        """
        limits = self.limits
        if limits.handshakesPerClient and (
            self.refusedPerClient[client] >= limits.handshakesPerClient
        ):
            return False
        if limits.handshakes and self.refused >= limits.handshakes:
            return False
        self.refused += 1
        self.refusedPerClient[client] += 1
        return True

    def refusedGone(self, client: str) -> None:
        """
        A refused connection that L{holdRefused} kept open is closed.
        """
        self.refused -= 1
        self.refusedPerClient[client] -= 1
        if self.refusedPerClient[client] <= 0:
            del self.refusedPerClient[client]

    def _takeToken(self, client: str) -> bool:
        now = self._seconds()
        limits = self.limits
        # burst 0: no extra burst, one second's worth of the rate.
        capacity = float(limits.burst) or max(1.0, limits.rate)
        tokens, last = self._buckets.pop(client, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * limits.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > RATE_TABLE_SIZE:
            self._buckets.popitem(last=False)
        return allowed

    def handshakeDone(self, client: str) -> None:
        """
        A counted connection of C{client} finished (or abandoned) its
        handshake.
        """
        self.handshakes -= 1
        self.handshakesPerClient[client] -= 1
        if self.handshakesPerClient[client] <= 0:
            del self.handshakesPerClient[client]

    def admitUser(self, user: str, limit: int | None = None) -> None:
        """
        A session of C{user} begins: count it, or raise L{Refusal}.

        @param limit: this user's own cap on concurrent sessions (from the
            avatar's C{maxSessions}; 0 is no limit), overriding
            L{Limits.sessionsPerUser}; C{None} to use that.
        """
        if limit is None:
            limit = self.limits.sessionsPerUser
        if limit and self.perUser[user] >= limit:
            raise Refusal(f"session limit per user ({limit}) reached for {user}")
        self.perUser[user] += 1

    def release(self, client: str, user: str | None) -> None:
        """
        A counted session ended.
        """
        self.sessions -= 1
        self.perClient[client] -= 1
        if self.perClient[client] <= 0:
            del self.perClient[client]
        if user is not None:
            self.perUser[user] -= 1
            if self.perUser[user] <= 0:
                del self.perUser[user]
