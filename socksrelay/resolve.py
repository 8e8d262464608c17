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
from typing import Any, Sequence

from zope.interface import directlyProvides, implementer, providedBy

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import DeferredList
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.names import dns


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
