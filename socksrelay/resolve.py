# -*- test-case-name: tests.test_resolve -*-
"""
Name resolution for destinations.

By default the reactor's own resolver is used (the system's, run off the
reactor thread).  L{NamesHostnameResolver} resolves through
L{twisted.names} instead, against name servers the operator (or a test) names,
and L{ResolverReactor} hands any L{IHostnameResolver} to L{HostnameEndpoint}.

Every lookup ends with whoever waits for it: L{resolveAddresses} returns a
cancellable Deferred with a timeout, counted by a L{LookupLimiter} (lookups
in flight in total and per client); L{NamesHostnameResolver} shares a query
among the resolutions that ask it at once, cancels it (closing its socket)
when none waits any more, and keeps answers in an L{AnswerCache} for their
time to live.
"""

from __future__ import annotations

import socket
from collections import Counter, OrderedDict
from typing import Any, Callable, Sequence

from zope.interface import directlyProvides, implementer, providedBy

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from socksrelay.limits import Refusal
from socksrelay.wire import normaliseAddress


class ResolverReactor:
    """
    A reactor that is another reactor in every way but its C{nameResolver}.
    """

    def __init__(self, reactor: Any, nameResolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = nameResolver
        directlyProvides(self, providedBy(reactor), IReactorPluggableNameResolver)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@implementer(IHostResolution)
class _Resolution:
    """
    A resolution in progress; C{cancel} stops it (if the resolver can) and
    is idempotent.
    """

    def __init__(self, name: str, canceller: Callable[[], None] | None = None) -> None:
        self.name = name
        self._canceller = canceller

    def cancel(self) -> None:
        canceller, self._canceller = self._canceller, None
        if canceller is not None:
            canceller()


#: twisted.names' retry schedule (seconds before each query is sent again).
_RETRIES = (1, 3, 11, 45)


def retryTimeouts(total: float) -> tuple[float, ...]:
    """
    twisted.names' retry schedule cut so that a lookup's queries take no
    more than C{total} seconds in all.
    """
    timeouts: list[float] = []
    left = total
    for step in _RETRIES:
        if left <= 0:
            break
        timeouts.append(min(step, left))
        left -= step
    return tuple(timeouts) or (max(total, 0.1),)


class AnswerCache:
    """
    A bounded (least recently used first out) cache of DNS answers, each
    kept for its records' time to live.

    @ivar maxTTL: the longest an answer is kept, whatever its TTL.
    @ivar negativeTTL: the longest a negative answer (NXDOMAIN or no record
        of the type) is kept; it is kept no longer than the minimum of the
        zone's SOA, and not at all without an SOA (RFC 2308).
    @ivar size: how many answers are kept.
    """

    def __init__(
        self,
        seconds: Callable[[], float],
        size: int = 4096,
        maxTTL: float = 3600.0,
        negativeTTL: float = 60.0,
    ) -> None:
        self._seconds = seconds
        self.size = size
        self.maxTTL = maxTTL
        self.negativeTTL = negativeTTL
        self._entries: OrderedDict[tuple[str, int], tuple[float, list[Any]]] = (
            OrderedDict()
        )

    def get(self, key: tuple[str, int]) -> list[Any] | None:
        """
        The cached answer records for C{key}, or C{None}.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answers = entry
        if expires <= self._seconds():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answers

    def store(self, key: tuple[str, int], answers: list[Any], authority: list[Any]) -> None:
        """
        Keep an answer (empty for a negative one) for its TTL.
        """
        if answers:
            ttl = min(min(r.ttl for r in answers), self.maxTTL)
        else:
            soas = [r for r in authority if r.type == dns.SOA]
            if not soas:
                return
            ttl = min(
                self.negativeTTL,
                *(min(r.ttl, r.payload.minimum) for r in soas),
            )
        if ttl <= 0:
            return
        self._entries[key] = (self._seconds() + ttl, list(answers))
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class _SharedLookup:
    """
    One query in flight, shared by every resolution that asks the same
    question; it is cancelled when the last of them is.
    """

    def __init__(self, query: Deferred[Any]) -> None:
        self.query = query
        self.waiters: list[Deferred[Any]] = []

    def waiter(self, onEmpty: Callable[[], None]) -> Deferred[Any]:
        def withdraw(d: Deferred[Any]) -> None:
            if d in self.waiters:
                self.waiters.remove(d)
            if not self.waiters:
                onEmpty()
                self.query.cancel()

        d: Deferred[Any] = Deferred(withdraw)
        self.waiters.append(d)
        return d


@implementer(IHostnameResolver)
class NamesHostnameResolver:
    """
    An L{IHostnameResolver} that asks a L{twisted.names} resolver (an
    L{twisted.internet.interfaces.IResolver}) for A and AAAA records.

    Resolutions asking the same question at once share one query, which is
    cancelled (its socket closed) when every resolution that waits for it
    is cancelled.

    @param timeout: the retry schedule (seconds) given to every lookup, or
        C{None} for the resolver's own.
    @param cache: an L{AnswerCache} to answer from and fill, or C{None}.
    """

    def __init__(
        self,
        resolver: Any,
        timeout: Sequence[float] | None = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self._resolver = resolver
        self._timeout = tuple(timeout) if timeout is not None else None
        self._cache = cache
        self._inFlight: dict[tuple[str, int], _SharedLookup] = {}

    @classmethod
    def forServers(
        cls,
        servers: Sequence[tuple[str, int]],
        reactor: Any,
        timeout: float = 30.0,
    ) -> "NamesHostnameResolver":
        """
        Resolve through the given name servers, caching answers for their
        time to live (see L{AnswerCache}).

        @param timeout: seconds a lookup may take, retries included.
        """
        from twisted.names import client

        return cls(
            client.Resolver(servers=list(servers), reactor=reactor),
            timeout=retryTimeouts(timeout),
            cache=AnswerCache(reactor.seconds),
        )

    def _lookup(self, name: str, recordType: int) -> Deferred[Any]:
        """
        The answer records of one question: from the cache, from a query
        in flight, or from a new query.
        """
        key = (name.lower(), recordType)
        if self._cache is not None:
            answers = self._cache.get(key)
            if answers is not None:
                return succeed(answers)
        shared = self._inFlight.get(key)
        if shared is not None:
            return shared.waiter(lambda: self._forget(key, shared))
        method = (
            self._resolver.lookupAddress
            if recordType == dns.A
            else self._resolver.lookupIPV6Address
        )
        if self._timeout is None:
            query = method(name)
        else:
            query = method(name, timeout=self._timeout)
        fresh = self._inFlight[key] = _SharedLookup(query)
        waiter = fresh.waiter(lambda: self._forget(key, fresh))
        query.addBoth(self._answered, key, fresh)
        return waiter

    def _forget(self, key: tuple[str, int], shared: _SharedLookup) -> None:
        if self._inFlight.get(key) is shared:
            del self._inFlight[key]

    def _answered(self, result: Any, key: tuple[str, int], shared: _SharedLookup) -> None:
        self._forget(key, shared)
        answers: Any = result
        if isinstance(result, Failure):
            if result.check(DNSNameError):
                message = result.value.args[0] if result.value.args else None
                authority = getattr(message, "authority", [])
                if self._cache is not None:
                    self._cache.store(key, [], authority)
                answers = []
        else:
            answers = [r for r in result[0] if r.type in (dns.A, dns.AAAA, dns.CNAME)]
            if self._cache is not None:
                self._cache.store(key, answers, result[1])
        for waiter in list(shared.waiters):
            if waiter.called:
                continue
            if isinstance(answers, Failure):
                waiter.errback(answers)
            else:
                waiter.callback(answers)
        shared.waiters = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[Any]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        lookups: list[Deferred[Any]] = []

        def cancel() -> None:
            for lookup in lookups:
                lookup.cancel()

        resolution = _Resolution(hostName, cancel)
        resolutionReceiver.resolutionBegan(resolution)
        kind = "UDP" if transportSemantics == "UDP" else "TCP"
        if addressTypes is None or IPv4Address in addressTypes:
            lookups.append(self._lookup(hostName, dns.A))
        if addressTypes is None or IPv6Address in addressTypes:
            lookups.append(self._lookup(hostName, dns.AAAA))

        def deliver(results: list[tuple[bool, Any]]) -> None:
            for ok, answers in results:
                if not ok:
                    continue
                for record in answers:
                    if record.type == dns.A:
                        resolutionReceiver.addressResolved(
                            IPv4Address(kind, record.payload.dottedQuad(), portNumber)
                        )
                    elif record.type == dns.AAAA:
                        address = socket.inet_ntop(
                            socket.AF_INET6, record.payload.address
                        )
                        resolutionReceiver.addressResolved(
                            IPv6Address(kind, address, portNumber)
                        )
            resolutionReceiver.resolutionComplete()

        DeferredList(lookups, consumeErrors=True).addCallback(deliver)
        return resolution


@implementer(IResolutionReceiver)
class AddressCollector:
    """
    Collects the IP addresses a name resolves to and calls C{done} with them
    (normalised, without duplicates, IPv4 first: it works on more hosts).
    """

    def __init__(self, done: Callable[[tuple[str, ...]], None]) -> None:
        self._done = done
        self._addresses: list[str] = []
        #: The resolution in progress (to cancel it), once it began.
        self.resolution: Any = None

    def resolutionBegan(self, resolution: Any) -> None:
        self.resolution = resolution

    def addressResolved(self, address: Any) -> None:
        if isinstance(address, (IPv4Address, IPv6Address)):
            self._addresses.append(normaliseAddress(address.host))

    def resolutionComplete(self) -> None:
        ordered = sorted(self._addresses, key=lambda a: ":" in a)
        self._done(tuple(dict.fromkeys(ordered)))


class LookupRefused(Refusal):
    """
    Too many name lookups are in flight (in total, or for one client).
    """


class LookupLimiter:
    """
    Counts name lookups in flight, in total and per client IP, against
    L{socksrelay.limits.Limits.lookups} and C{lookupsPerClient} (0: no
    limit).  A lookup counts until its resolver reports it complete, even
    when the session stopped waiting for it earlier (the system resolver's
    thread cannot be interrupted).

    @param limits: returns the current L{socksrelay.limits.Limits} (read at
        every lookup, so that a reload applies at once).
    """

    def __init__(self, limits: Callable[[], Any]) -> None:
        self._limits = limits
        self.inFlight = 0
        self.perClient: Counter[str] = Counter()

    def acquire(self, client: str | None) -> None:
        """
        Count a lookup for C{client}, or raise L{LookupRefused}.
        """
        limits = self._limits()
        total = getattr(limits, "lookups", 0)
        perClient = getattr(limits, "lookupsPerClient", 0)
        if total and self.inFlight >= total:
            raise LookupRefused(f"name lookup limit ({total}) reached")
        if client is not None and perClient and self.perClient[client] >= perClient:
            raise LookupRefused(
                f"name lookup limit per client ({perClient}) reached for {client}"
            )
        self.inFlight += 1
        if client is not None:
            self.perClient[client] += 1

    def release(self, client: str | None) -> None:
        """
        A counted lookup is complete.
        """
        self.inFlight -= 1
        if client is not None:
            self.perClient[client] -= 1
            if self.perClient[client] <= 0:
                del self.perClient[client]


def resolveAddresses(
    resolver: IHostnameResolver,
    name: str,
    transportSemantics: str = "TCP",
    timeout: float | None = None,
    reactor: Any = None,
    limiter: LookupLimiter | None = None,
    client: str | None = None,
) -> Deferred[tuple[str, ...]]:
    """
    Resolve C{name} without blocking; the Deferred fires with its addresses
    (an empty tuple when it does not resolve, at once when C{name} has no
    canonical form or the resolver raises).

    Cancelling the Deferred cancels the resolution (for a resolver that can
    stop: L{NamesHostnameResolver} closes its queries' sockets at once).

    @param timeout: seconds the lookup may take (with C{reactor}); then it
        is cancelled and the Deferred fails with
        L{twisted.internet.defer.TimeoutError}.
    @param limiter: a L{LookupLimiter} counting the lookup for C{client}
        until the resolver completes it; over its limits the Deferred fails
        at once with L{LookupRefused}.
    """
    from socksrelay.names import InvalidName
    from socksrelay.wire import canonicalHost

    try:
        # A name the resolver's IDNA codec refuses must never reach it: the
        # system resolver raises that UnicodeError in its thread, where it
        # is lost ("Unhandled error in Deferred") and no answer ever comes.
        name = canonicalHost(name)
    except InvalidName:
        return succeed(())
    if limiter is not None:
        try:
            limiter.acquire(client)
        except LookupRefused as e:
            return fail(e)
    released: list[bool] = []

    def release() -> None:
        if limiter is not None and not released:
            released.append(True)
            limiter.release(client)

    def cancel(d: Deferred[tuple[str, ...]]) -> None:
        d.errback(CancelledError())
        try:
            collector.resolution.cancel()
        except Exception:
            # The system resolver cannot stop its thread: stop waiting (the
            # limiter counts the lookup until the thread returns).
            pass

    d: Deferred[tuple[str, ...]] = Deferred(cancel)

    def done(addresses: tuple[str, ...]) -> None:
        release()
        if not d.called:
            d.callback(addresses)

    collector = AddressCollector(done)
    try:
        resolver.resolveHostName(collector, name, 0, None, transportSemantics)
    except Exception:
        done(())
    if timeout is not None and reactor is not None and not d.called:
        d.addTimeout(timeout, reactor)
    return d


@implementer(IHostnameResolver)
class StaticResolver:
    """
    Resolves any name to the addresses it was given: connecting to a name
    that policy has already checked uses exactly the checked addresses.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        self._addresses = tuple(addresses)

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[Any]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        kind = "UDP" if transportSemantics == "UDP" else "TCP"
        for address in self._addresses:
            family = IPv6Address if ":" in address else IPv4Address
            if addressTypes is None or family in addressTypes:
                resolutionReceiver.addressResolved(family(kind, address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution
