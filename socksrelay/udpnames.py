# -*- test-case-name: tests.test_udp -*-
"""
The names a UDP association sends to: resolved without blocking, counted
against the lookup limits, cancelled when no association waits for them any
more, and kept for a bounded time in a bounded cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

from socksrelay.resolve import LookupRefused, resolveAddresses

if TYPE_CHECKING:
    from socksrelay.udp import UDPOptions


class NameCache:
    """
    A bounded cache of resolved names, each kept for a time to live, with
    resolutions in progress shared by every datagram that waits for them.
    """

    def __init__(
        self, options: UDPOptions, reactor: Any, resolver: Any, lookups: Any = None
    ) -> None:
        self._options = options
        self._reactor = reactor
        self._resolver = resolver
        self._lookups = lookups
        self._resolving: dict[str, Any] = {}
        self._entries: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._pending: dict[str, list[Callable[[tuple[str, ...] | None], None]]] = {}

    def lookup(self, name: str) -> tuple[str, ...] | None:
        """
        The cached addresses of C{name} (possibly empty: the name did not
        resolve), or C{None} when it is not cached.
        """
        key = name.lower()
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, addresses = entry
        if expires <= self._reactor.seconds():
            del self._entries[key]
            return None
        return addresses

    def resolve(
        self,
        name: str,
        callback: Callable[[tuple[str, ...] | None], None],
        client: str | None = None,
    ) -> Callable[[], None]:
        """
        Resolve C{name} without blocking and call C{callback} with its
        addresses (empty if it did not resolve within
        L{UDPOptions.resolveTimeout}), or with C{None} when the lookup
        limits refuse it (see L{socksrelay.resolve.LookupLimiter}; counted
        for C{client}).

        @return: a callable that withdraws C{callback}; the lookup is
            cancelled when no callback waits for it any more.
        """
        key = name.lower()
        waiting = self._pending.get(key)
        if waiting is None:
            waiting = self._pending[key] = []
            waiting.append(callback)
            d = resolveAddresses(
                self._resolver,
                name,
                "UDP",
                self._options.resolveTimeout,
                self._reactor,
                self._lookups,
                client,
            )
            if key in self._pending:
                self._resolving[key] = d
            d.addCallbacks(
                lambda addresses: self._resolved(key, addresses),
                lambda reason: self._failed(key, reason),
            )
        else:
            waiting.append(callback)

        def withdraw() -> None:
            callbacks = self._pending.get(key)
            if callbacks is not None and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._pending[key]
                    lookup = self._resolving.pop(key, None)
                    if lookup is not None:
                        lookup.cancel()

        return withdraw

    def _failed(self, key: str, reason: Any) -> None:
        if reason.check(LookupRefused):
            self._resolving.pop(key, None)
            for callback in self._pending.pop(key, []):
                callback(None)
            return
        # A timeout (or any other failure) counts as not resolved.
        self._resolved(key, ())

    def _resolved(self, key: str, addresses: tuple[str, ...]) -> None:
        self._resolving.pop(key, None)
        if key not in self._pending:
            return
        ttl = self._options.nameCacheTTL if addresses else self._options.negativeCacheTTL
        self._entries[key] = (self._reactor.seconds() + ttl, addresses)
        self._entries.move_to_end(key)
        while len(self._entries) > self._options.nameCacheSize:
            self._entries.popitem(last=False)
        for callback in self._pending.pop(key, []):
            callback(addresses)
