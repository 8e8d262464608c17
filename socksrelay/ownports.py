# -*- test-case-name: tests.test_ownports -*-
"""
The proxy's own listening addresses, so that it never relays to itself: a
CONNECT (or a forwarded HTTP request) to one of them would open a new
session on the proxy, which could be asked to do the same again, and one
small write could nest hundreds of sessions.

L{OwnListeners} learns where the proxy listens from the listening ports the
service opens (with their wildcard addresses, such as C{0.0.0.0} or
C{::}) and from the local address of every accepted connection (which also
works for code that embeds the factory), and says whether a destination is
one of them: its port is one the proxy listens on and its address is one
that listener answers on.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from typing import Any, Callable, Iterable

from socksrelay.rules import Decision
from socksrelay.wire import normaliseAddress

#: The rule name of a destination refused because it is the proxy itself.
OWN_LISTENER_RULE = "own listener (the proxy would relay to itself)"

#: The decision about a destination that is not the proxy itself, when
#: there is no policy (code that embeds the factory): allowed, unrecorded.
NO_POLICY = Decision(True, "-")

#: How many addresses L{OwnListeners} remembers per port, and how many
#: ports; what is learned beyond that is not remembered.
MAX_ADDRESSES = 256
MAX_PORTS = 256

#: How many answers of L{isLocalAddress} are cached.
LOCAL_CACHE_SIZE = 1024

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def isLocalAddress(address: str) -> bool:
    """
    Whether C{address} (an IP address, normalised) is an address of this
    host: loopback, the wildcard, or an address a socket can bind to (one of
    its interfaces), found without enumerating the interfaces.
    """
    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def _ip(host: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(normaliseAddress(host))
    except ValueError:
        return None


class OwnListeners:
    """
    The TCP ports this proxy listens on, each with the addresses it is
    known to listen (or to have accepted connections) on.

    @ivar isLocal: says whether an IP address is one of this host's; its
        answers are cached (a bounded number).
    """

    def __init__(
        self,
        isLocal: Callable[[str], bool] = isLocalAddress,
        cacheSize: int = LOCAL_CACHE_SIZE,
    ) -> None:
        self.isLocal = isLocal
        self._cacheSize = cacheSize
        self._local: OrderedDict[str, bool] = OrderedDict()
        self._hosts: dict[int, set[_IPAddress]] = {}
        # What addTransport has seen already, so that an accepted connection
        # costs a set lookup once its address is known.
        self._seen: set[tuple[Any, Any]] = set()
        self._seenPorts: set[Any] = set()

    def add(self, address: Any) -> None:
        """
        Note an address the proxy listens on: the C{getHost()} of a
        listening port (possibly a wildcard) or of an accepted connection;
        anything but an IP address with a port (such as a UNIX address) is
        ignored.
        """
        port = getattr(address, "port", None)
        host = getattr(address, "host", None)
        if not isinstance(port, int) or not port or not isinstance(host, str):
            return
        ip = _ip(host)
        if ip is None:
            return
        hosts = self._hosts.get(port)
        if hosts is None:
            if len(self._hosts) >= MAX_PORTS:
                return
            hosts = self._hosts[port] = set()
        if ip not in hosts and len(hosts) < MAX_ADDRESSES:
            hosts.add(ip)

    def addTransport(self, transport: Any) -> None:
        """
        Note where an accepted connection arrived: its local address and,
        when the transport names its listening port (as Twisted's TCP
        transports do), that port's address, which may be a wildcard.
        """
        address = transport.getHost()
        key = (getattr(address, "host", None), getattr(address, "port", None))
        if key not in self._seen:
            if len(self._seen) < MAX_PORTS * MAX_ADDRESSES:
                self._seen.add(key)
            self.add(address)
        listeningPort = getattr(transport, "server", None)
        getHost = getattr(listeningPort, "getHost", None)
        if getHost is not None and listeningPort not in self._seenPorts:
            if len(self._seenPorts) < MAX_PORTS:
                self._seenPorts.add(listeningPort)
            self.add(getHost())

    def isOwn(self, address: str, port: int) -> bool:
        """
        Whether connecting to C{address} port C{port} would reach one of the
        proxy's own listeners: C{port} is one it listens on, and C{address}
        is an address that listener answers on (the one it is bound to, or
        any address of this host for a wildcard listener) or the wildcard
        (which reaches this host).
        """
        hosts = self._hosts.get(port)
        if not hosts:
            return False
        ip = _ip(address)
        if ip is None:
            return False
        if ip in hosts or ip.is_unspecified:
            return True
        for host in hosts:
            # 0.0.0.0 answers on every IPv4 address of this host; :: on
            # every address (IPv4 too, unless the socket is IPv6-only).
            if host.is_unspecified and (host.version == 6 or ip.version == 4):
                return self._isLocal(str(ip))
        return False

    def decide(self, port: int, addresses: Iterable[str]) -> Decision | None:
        """
        A denial when any of C{addresses} port C{port} is one of the
        proxy's own listeners, else C{None}.
        """
        if port not in self._hosts:
            return None
        for address in addresses:
            if self.isOwn(address, port):
                return Decision(False, OWN_LISTENER_RULE)
        return None

    def _isLocal(self, address: str) -> bool:
        local = self._local.pop(address, None)
        if local is None:
            local = self.isLocal(address)
        self._local[address] = local
        while len(self._local) > self._cacheSize:
            self._local.popitem(last=False)
        return local
