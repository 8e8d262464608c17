# -*- test-case-name: tests.test_resolve -*-
"""
Name resolution for destinations.

By default the reactor's own resolver is used (the system's, run off the
reactor thread).  L{NamesHostnameResolver} resolves through
L{twisted.names} instead, against name servers the operator (or a test) names,
and L{ResolverReactor} hands any L{IHostnameResolver} to L{HostnameEndpoint}.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Sequence

from zope.interface import directlyProvides, implementer, providedBy

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.names import dns

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
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class NamesHostnameResolver:
    """
    An L{IHostnameResolver} that asks a L{twisted.names} resolver (an
    L{twisted.internet.interfaces.IResolver}) for A and AAAA records.
    """

    def __init__(self, resolver: Any) -> None:
        self._resolver = resolver

    @classmethod
    def forServers(
        cls, servers: Sequence[tuple[str, int]], reactor: Any
    ) -> "NamesHostnameResolver":
        """
        Resolve through the given name servers, caching answers for their
        time to live.
        """
        from twisted.names import cache, client, resolve

        return cls(
            resolve.ResolverChain(
                [
                    cache.CacheResolver(reactor=reactor),
                    client.Resolver(servers=list(servers), reactor=reactor),
                ]
            )
        )

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
        lookups = []
        if addressTypes is None or IPv4Address in addressTypes:
            lookups.append(self._resolver.lookupAddress(hostName))
        if addressTypes is None or IPv6Address in addressTypes:
            lookups.append(self._resolver.lookupIPV6Address(hostName))

        def deliver(results: list[tuple[bool, Any]]) -> None:
            for ok, result in results:
                if not ok:
                    continue
                answers = result[0]
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

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if isinstance(address, (IPv4Address, IPv6Address)):
            self._addresses.append(normaliseAddress(address.host))

    def resolutionComplete(self) -> None:
        ordered = sorted(self._addresses, key=lambda a: ":" in a)
        self._done(tuple(dict.fromkeys(ordered)))


def resolveAddresses(
    resolver: IHostnameResolver, name: str, transportSemantics: str = "TCP"
) -> Deferred[tuple[str, ...]]:
    """
    Resolve C{name} without blocking; the Deferred fires with its addresses
    (an empty tuple when it does not resolve, at once when C{name} has no
    canonical form or the resolver raises).  It never fails.
    """
    from socksrelay.names import InvalidName
    from socksrelay.wire import canonicalHost

    d: Deferred[tuple[str, ...]] = Deferred()
    try:
        # A name the resolver's IDNA codec refuses must never reach it: the
        # system resolver raises that UnicodeError in its thread, where it
        # is lost ("Unhandled error in Deferred") and no answer ever comes.
        name = canonicalHost(name)
    except InvalidName:
        d.callback(())
        return d

    def done(addresses: tuple[str, ...]) -> None:
        if not d.called:
            d.callback(addresses)

    try:
        resolver.resolveHostName(AddressCollector(done), name, 0, None, transportSemantics)
    except Exception:
        done(())
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
