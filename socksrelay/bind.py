# -*- test-case-name: tests.test_bind -*-
"""
BIND (RFC 1928 sections 4 and 6): a connection from a remote host to the
client, through the proxy, as FTP's active mode needs.

One BIND request goes like this:

  1. The request's DST.ADDR names the I{expected peer}.  All zeros
     (C{0.0.0.0} or C{::}) accepts the first host that connects; an IP
     address accepts only that IP; a name is resolved (without blocking)
     and any of its addresses is accepted.
  2. The proxy listens on the local IP on which the client's control
     connection arrived (never the wildcard), with a port from the
     configured range if there is one, and sends the first reply: that
     address (or the advertised one) and the port.
  3. A connection from any other host is closed at once and logged, and the
     proxy keeps waiting.  The first connection from the expected peer is
     accepted, the listening port is closed right away, and the second reply
     names the peer's address and port.  Then the two connections are
     spliced by L{socksrelay.relay}, exactly like CONNECT's.
  4. No peer within L{BindOptions.timeout} seconds: reply 0x06 (TTL
     expired).  The client leaving, or sending EOF, before the second reply
     ends the BIND.  The listening port is closed on every way out:
     success, timeout, the client leaving, or an error.

L{Binding} does the work; the server protocol
(L{socksrelay.server.SOCKS5ServerProtocol}) writes the replies and starts
the relay from its callbacks.
"""

from __future__ import annotations

import errno
import ipaddress
import random
from dataclasses import dataclass
from typing import Any, Callable


from twisted.internet.defer import CancelledError
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from socksrelay.relay import OutboundProtocol, describeAddress
from socksrelay.resolve import LookupRefused, resolveAddresses
from socksrelay.wire import Reply, normaliseAddress


@dataclass
class BindOptions:
    """
    How BIND requests are served.

    @ivar ports: C{(low, high)}: listening ports are taken from this range
        (tried from a random start until one is free); C{None} for any free
        port the system picks.
    @ivar advertise: the IP address put in the first reply instead of the
        local address the control connection arrived on (for NAT); the
        proxy still listens on that local address.
    @ivar timeout: seconds to wait for the expected peer (including the time
        it takes to resolve its name) before reply 0x06 (TTL expired).
    """

    ports: tuple[int, int] | None = None
    advertise: str | None = None
    timeout: float = 120.0


class BindRefused(Exception):
    """
    A BIND could not be carried out; C{reply} is the code to answer with.
    """

    def __init__(self, reply: Reply, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


def formatHostPort(host: str, port: int) -> str:
    """
    C{1.2.3.4:80} or C{[::1]:80}.
    """
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def parseAdvertiseAddress(value: str) -> str:
    """
    Check an address to advertise in BIND's first reply: an IPv4 or IPv6
    address, not the wildcard; return it normalised.

    @raise ValueError: otherwise.
    """
    address = ipaddress.ip_address(normaliseAddress(value.strip()))
    if address.is_unspecified:
        raise ValueError("the wildcard address cannot be advertised")
    return str(address)


def listeningHost(host: str | None) -> str:
    """
    The IP address to listen on for a control connection whose local
    address is C{host}: IPv4-mapped IPv6 becomes plain IPv4, a scope is
    dropped.

    @raise BindRefused: (reply 0x01) if there is no usable IP address: no
        address at all (a UNIX socket), or the wildcard.
    """
    if not host:
        raise BindRefused(
            Reply.GENERAL_FAILURE, "no local IP address to listen on for BIND"
        )
    normalised = normaliseAddress(host)
    try:
        address = ipaddress.ip_address(normalised)
    except ValueError:
        raise BindRefused(
            Reply.GENERAL_FAILURE, f"local address {host!r} is not an IP address"
        ) from None
    if address.is_unspecified:
        raise BindRefused(
            Reply.GENERAL_FAILURE, "the local address is the wildcard address"
        )
    return normalised


def listen(
    reactor: Any, factory: Any, host: str, ports: tuple[int, int] | None
) -> Any:
    """
    Listen for TCP connections on C{host}, on a port from C{ports} (tried
    from a random start, wrapping around, until one is free) or on any port
    when C{ports} is C{None}.

    @return: the L{IListeningPort}.
    @raise BindRefused: (reply 0x01) if no port could be had.
    """
    candidates: list[int]
    if ports is None:
        candidates = [0]
    else:
        low, high = ports
        start = random.randint(low, high)
        candidates = [*range(start, high + 1), *range(low, start)]
    for port in candidates:
        try:
            return reactor.listenTCP(port, factory, interface=host)
        except CannotListenError as e:
            osError = getattr(e.socketError, "errno", None)
            if ports is not None and osError == errno.EADDRINUSE:
                continue
            raise BindRefused(
                Reply.GENERAL_FAILURE,
                f"cannot listen on {formatHostPort(host, port)}: {e.socketError}",
            ) from None
    low, high = ports or (0, 0)
    raise BindRefused(Reply.GENERAL_FAILURE, f"no free TCP port for BIND in {low}-{high}")


class InboundProtocol(OutboundProtocol):
    """
    The connection BIND accepted from the remote peer: one side of the
    relay, like an outbound connection.
    """

    binding: "Binding | None" = None

    def connectionMade(self) -> None:
        binding, self.binding = self.binding, None
        if binding is not None:
            binding._connected(self)


class _BindFactory(Factory):
    """
    The factory of a BIND listening port: it asks its L{Binding} whether to
    accept each connection (C{None} closes the connection at once).
    """

    noisy = False

    def __init__(self, binding: "Binding") -> None:
        self._binding = binding

    def buildProtocol(self, addr: Any) -> InboundProtocol | None:
        return self._binding._incoming(addr)


class Binding:
    """
    One BIND: resolve the expected peer if it is a name, listen, accept
    exactly one connection from the expected peer.

    The outcome is reported through three callables:

      - C{onListening(host, port)}: listening; send the first reply with
        this address.
      - C{onConnected(inbound)}: the peer connected; C{inbound} is an
        L{InboundProtocol}, connected.  Send the second reply and splice.
      - C{onFailed(reply, reason)}: it failed (or timed out) before a peer
        connected; send C{reply} and close.  Nothing is listening any more.

    L{close} releases everything at once; it is safe to call at any time and
    more than once.

    @ivar port: the listening port, while there is one.
    @ivar address: C{(host, port)} told to the client in the first reply.
    @ivar rejected: how many connections from other hosts were closed.
    """

    _log = Logger()

    port: Any = None
    address: tuple[str, int] | None = None

    def __init__(
        self,
        options: BindOptions,
        reactor: Any,
        resolver: Any,
        closeTimeout: float,
        localHost: str | None,
        expectedHost: str,
        session: Any,
        onListening: Callable[[str, int], None],
        onConnected: Callable[[InboundProtocol], None],
        onFailed: Callable[[Reply, str], None],
        peerAllowed: Callable[[str, int], Any] | None = None,
        lookups: Any = None,
        client: str | None = None,
        lookupTimeout: float | None = None,
    ) -> None:
        """
        @param options: the L{BindOptions}.
        @param reactor: the reactor to listen and time with.
        @param resolver: the L{IHostnameResolver} for a named expected peer.
        @param closeTimeout: passed to the accepted L{InboundProtocol}.
        @param localHost: the local IP on which the control connection
            arrived (or C{None} if it has none).
        @param expectedHost: DST.ADDR of the request.
        @param session: the L{socksrelay.session.Session}; C{bound} and the
            C{expected} and C{peer} details are filled in.
        @param peerAllowed: C{(ip, port) -> Decision} from the access policy
            for each connecting peer, or C{None} to check nothing more.
        @param lookups: the L{socksrelay.resolve.LookupLimiter} that counts
            the expected peer's lookup for C{client} (the client's IP).
        @param lookupTimeout: seconds that lookup may take (C{None}: until
            the BIND's own timeout).
        """
        self._lookupTimeout = lookupTimeout
        self._lookups = lookups
        self._client = client
        self._resolving: Any = None
        self._options = options
        self._reactor = reactor
        self._resolver = resolver
        self._closeTimeout = closeTimeout
        self._localHost = localHost
        self._expectedHost = expectedHost
        self._session = session
        self._onListening = onListening
        self._onConnected = onConnected
        self._onFailed = onFailed
        self._peerAllowed = peerAllowed
        self._allowed: set[str] | None = None
        self._timer: Any = None
        self._closed = False
        self._accepted = False
        self.rejected = 0
        self.expected = _describeExpected(expectedHost)
        session.details["expected"] = self.expected
        session.details["peer"] = "-"

    def start(self) -> None:
        """
        Start the timer, then resolve the expected peer if needed, then
        listen.
        """
        self._timer = self._reactor.callLater(self._options.timeout, self._timedOut)
        host = self._expectedHost
        try:
            address = ipaddress.ip_address(normaliseAddress(host))
        except ValueError:
            self._resolve(host)
            return
        if not address.is_unspecified:
            self._allowed = {str(address)}
        self._listen()

    def _resolve(self, name: str) -> None:
        d = resolveAddresses(
            self._resolver,
            name,
            "TCP",
            self._lookupTimeout,
            self._reactor,
            self._lookups,
            self._client,
        )
        self._resolving = d
        d.addCallbacks(lambda found: self._resolved(set(found)), self._notResolved)

    def _notResolved(self, reason: Any) -> None:
        self._resolving = None
        if reason.check(LookupRefused):
            self._fail(Reply.GENERAL_FAILURE, reason.value.reason)
        elif reason.check(DeferredTimeoutError):
            self._fail(
                Reply.TTL_EXPIRED,
                f"expected peer {self._expectedHost!r} not resolved in time",
            )
        elif not reason.check(CancelledError):
            self._fail(
                Reply.HOST_UNREACHABLE,
                f"expected peer {self._expectedHost!r} not resolved: "
                f"{reason.getErrorMessage()}",
            )

    def _resolved(self, addresses: set[str]) -> None:
        self._resolving = None
        if self._closed:
            return
        if not addresses:
            self._fail(
                Reply.HOST_UNREACHABLE,
                f"expected peer {self._expectedHost!r} not resolved",
            )
            return
        self._allowed = set(addresses)
        self.expected = _describeExpected(
            self._expectedHost, sorted(addresses, key=lambda a: (":" in a, a))
        )
        self._session.details["expected"] = self.expected
        self._listen()

    def _listen(self) -> None:
        try:
            host = listeningHost(self._localHost)
            # A link-local IPv6 address keeps its scope, without which it
            # cannot be bound; the replies and the log go without it.
            local = self._localHost or ""
            bindHost = local if "%" in local else host
            self.port = listen(
                self._reactor, _BindFactory(self), bindHost, self._options.ports
            )
        except BindRefused as e:
            self._fail(e.reply, e.reason)
            return
        port = self.port.getHost().port
        self._session.bound = formatHostPort(host, port)
        self.address = (self._options.advertise or host, port)
        self._onListening(*self.address)

    def _incoming(self, addr: Any) -> InboundProtocol | None:
        """
        A host connected to the listening port: the protocol for the
        expected peer (once), C{None} (close at once) for anyone else.
        """
        if self._closed or self._accepted:
            return None
        host = normaliseAddress(getattr(addr, "host", "") or "")
        if self._allowed is not None and host not in self._allowed:
            return self._reject(addr, "not the expected peer {expected}", expected=self.expected)
        if self._peerAllowed is not None:
            decision = self._peerAllowed(host, getattr(addr, "port", 0))
            if not decision.allowed:
                return self._reject(addr, "denied by {rule}", rule=decision.rule)
        self._accepted = True
        self._session.details["peer"] = describeAddress(addr)
        self.close()
        inbound = InboundProtocol()
        inbound.reactor = self._reactor
        inbound.closeTimeout = self._closeTimeout
        inbound.binding = self
        return inbound

    def _reject(self, addr: Any, why: str, **fields: Any) -> None:
        """
        Close a connecting host at once (by building no protocol for it),
        count it and log why (C{why} is a log format over C{fields}); the
        port keeps listening.
        """
        self.rejected += 1
        self._session.details["rejected"] = self.rejected
        self._log.info(
            "BIND on {bound}: closed a connection from {peer}, " + why,
            bound=self._session.bound,
            peer=describeAddress(addr),
            **fields,
        )
        return None

    def _connected(self, inbound: InboundProtocol) -> None:
        self._onConnected(inbound)

    def _timedOut(self) -> None:
        self._timer = None
        self._fail(
            Reply.TTL_EXPIRED,
            f"no connection from the BIND peer within {self._options.timeout:g}s",
        )

    def _fail(self, reply: Reply, reason: str) -> None:
        if self._closed:
            return
        self.close()
        self._onFailed(reply, reason)

    def close(self) -> None:
        """
        Stop listening and stop the timer, at once.  Idempotent.
        """
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        resolving, self._resolving = self._resolving, None
        if resolving is not None:
            resolving.cancel()
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()


def _describeExpected(host: str, addresses: list[str] | None = None) -> str:
    """
    The expected peer for the log: C{any}, an address, or a name with the
    addresses it resolved to.
    """
    try:
        address = ipaddress.ip_address(normaliseAddress(host))
    except ValueError:
        if addresses:
            return f"{host}({','.join(addresses)})"
        return host
    if address.is_unspecified:
        return "any"
    return str(address)
