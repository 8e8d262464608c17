# -*- test-case-name: tests.test_udp -*-
"""
UDP ASSOCIATE (RFC 1928 sections 6 and 7).

An association has two kinds of socket:

  - the I{relay socket}, bound to the local IP on which the client's TCP
    control connection arrived (never the wildcard), whose address the
    client is told: the client sends datagrams with a SOCKS5 header to it,
    and gets the answers from it;
  - one I{outbound socket} per address family, created when first needed,
    from which every destination of the association is reached: one source
    port for all destinations, so the client's mapping is stable.

Only datagrams from the client's IP are relayed; the client's port is
learned from its first datagram (or taken from the request when the request
names the client's own IP).  Answers are relayed only from hosts the client
has sent to (address-dependent filtering), unless the operator chose open
(endpoint-independent) filtering.  Nothing queues without a bound: datagrams
waiting for a name are a short queue that drops when full, and everything
that is dropped is counted by reason.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable


from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from socksrelay.udpnames import NameCache
from socksrelay.wire import (
    MAX_UDP_PAYLOAD,
    ProtocolError,
    Reply,
    encodeUDPHeader,
    isIPLiteral,
    normaliseAddress,
    parseUDPHeader,
)

#: The largest datagram read from a socket: a whole UDP payload plus room.
READ_SIZE = 65535
#: Policy decisions remembered per association.
DECISION_CACHE = 1024


@dataclass
class UDPOptions:
    """
    How UDP associations are made.

    @ivar ports: C{(low, high)}: relay sockets take a port from this range;
        C{None} for any free port.
    @ivar advertise: the address told to clients instead of the control
        connection's local address (for NAT).
    @ivar idleTimeout: seconds without a datagram either way after which an
        association (and its control connection) ends.
    @ivar openFiltering: let any host answer through an association, not
        only hosts the client has sent to.
    @ivar maxPerClient: associations one client IP may hold at once.
    @ivar maxTotal: associations the server holds at once.
    @ivar resolveQueue: datagrams an association holds while names resolve.
    @ivar nameCacheSize: names remembered, server-wide.
    @ivar nameCacheTTL: seconds a resolved name is remembered.
    @ivar negativeCacheTTL: seconds a name that did not resolve is remembered.
    @ivar resolveTimeout: seconds a lookup may take; then it counts as failed.
    """

    ports: tuple[int, int] | None = None
    advertise: str | None = None
    idleTimeout: float = 120.0
    openFiltering: bool = False
    maxPerClient: int = 16
    maxTotal: int = 1024
    resolveQueue: int = 32
    nameCacheSize: int = 4096
    nameCacheTTL: float = 60.0
    negativeCacheTTL: float = 10.0
    resolveTimeout: float = 10.0


class UDPRefused(Exception):
    """
    An association could not be made; C{reply} is the code to answer with.
    """

    def __init__(self, reply: Reply, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


class UDPRelay:
    """
    The server-wide side of UDP ASSOCIATE: options, the association counts
    behind the caps, and the name cache.
    """

    def __init__(
        self, options: UDPOptions, reactor: Any, resolver: Any, lookups: Any = None
    ) -> None:
        self.options = options
        self.reactor = reactor
        self.names = NameCache(options, reactor, resolver, lookups)
        self._perClient: Counter[str] = Counter()
        self.active = 0

    def associate(
        self,
        clientHost: str,
        localHost: str | None,
        requestHost: str,
        requestPort: int,
        session: Any,
        onIdle: Callable[[], None],
        allowed: Callable[[str, str, int], Any] | None = None,
        external: dict[int, str] | None = None,
    ) -> "UDPAssociation":
        """
        Make an association for a client, or raise L{UDPRefused}.

        @param clientHost: the IP of the client's control connection.
        @param localHost: the local IP on which that connection arrived.
        @param requestHost: DST.ADDR of the request (the client's hint).
        @param requestPort: DST.PORT of the request.
        @param session: the L{socksrelay.session.Session}, for its counts.
        @param onIdle: called when the association has been idle too long.
        @param allowed: C{(host as asked, address, port) -> Decision} from the
            access policy, for every destination (decisions are cached per
            association), or C{None} to check nothing.
        @param external: the outgoing address of each family (4, 6) for the
            outbound sockets; the wildcard address where none is given.
        """
        options = self.options
        if self.active >= options.maxTotal:
            raise UDPRefused(Reply.GENERAL_FAILURE, "UDP association limit reached")
        if self._perClient[clientHost] >= options.maxPerClient:
            raise UDPRefused(
                Reply.GENERAL_FAILURE,
                f"UDP association limit for {clientHost} reached",
            )
        if localHost is None:
            raise UDPRefused(
                Reply.GENERAL_FAILURE, "no local IP address to relay UDP on"
            )
        association = UDPAssociation(
            self, clientHost, requestHost, requestPort, session, onIdle, allowed, external
        )
        association.listen(localHost)
        self.active += 1
        self._perClient[clientHost] += 1
        return association

    def released(self, clientHost: str) -> None:
        """
        An association of C{clientHost} has ended.
        """
        self.active -= 1
        self._perClient[clientHost] -= 1
        if self._perClient[clientHost] <= 0:
            del self._perClient[clientHost]


class _RelaySocket(DatagramProtocol):
    """
    The client-facing socket of an association.
    """

    noisy = False

    def __init__(self, association: "UDPAssociation") -> None:
        self.association = association

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.association.fromClient(datagram, addr)


def _send(port: Any, datagram: bytes, address: tuple[str, int]) -> None:
    """
    Send one datagram on a UDP port, straight to its socket when it has one
    (the address is an IP address already, so the checks of
    C{IUDPTransport.write} are not needed on this path).
    """
    sock = getattr(port, "socket", None)
    if sock is None:
        port.write(datagram, address)
    else:
        sock.sendto(datagram, address)


class _OutboundSocket(DatagramProtocol):
    """
    The socket from which an association reaches its destinations.
    """

    noisy = False

    def __init__(self, association: "UDPAssociation") -> None:
        self.association = association

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.association.fromRemote(datagram, addr)


class UDPAssociation:
    """
    One client's UDP association.

    @ivar address: C{(host, port)} of the relay socket, as told to the client.
    """

    _log = Logger()

    #: the user's L{socksrelay.throttle.UserThrottle}, or C{None}: datagrams
    #: over its limit are dropped (counted as C{"bandwidth"}).
    throttle: Any = None

    def __init__(
        self,
        relay: UDPRelay,
        clientHost: str,
        requestHost: str,
        requestPort: int,
        session: Any,
        onIdle: Callable[[], None],
        allowed: Callable[[str, str, int], Any] | None = None,
        external: dict[int, str] | None = None,
    ) -> None:
        self._relay = relay
        self._allowed = allowed
        self._external = external or {}
        self._decisions: dict[tuple[str, str, int], bool] = {}
        self._reactor = relay.reactor
        self._options = relay.options
        self.clientHost = clientHost
        self.clientPort: int | None = None
        # RFC 1928: DST.ADDR/DST.PORT name where the client will send from.
        # Most clients send zeros; a port is enforced only when the request
        # names the client's own IP (3proxy's rule), otherwise it is a hint.
        if requestPort and normaliseAddress(requestHost) == clientHost:
            self.clientPort = requestPort
        self._session = session
        self._onIdle = onIdle
        self._relayPort: Any = None
        self._outbound: dict[int, Any] = {}
        self._permitted: set[str] = set()
        self._queued = 0
        #: Withdraw this association's callbacks from lookups in progress.
        self._withdrawals: set[Callable[[], None]] = set()
        self._idleCall: Any = None
        self._lastActive = 0.0
        self._closed = False
        self.address: tuple[str, int] | None = None
        self.datagramsUp = 0
        self.datagramsDown = 0
        self.bytesUp = 0
        self.bytesDown = 0
        self.drops: Counter[str] = Counter()

    # -- set up and tear down ----------------------------------------------

    def listen(self, localHost: str) -> None:
        """
        Bind the relay socket to C{localHost}, with a port from the
        configured range if there is one.

        @raise UDPRefused: if no port could be had.
        """
        options = self._options
        ports: list[int]
        if options.ports is None:
            ports = [0]
        else:
            low, high = options.ports
            start = random.randint(low, high)
            ports = list(range(start, high + 1)) + list(range(low, start))
        protocol = _RelaySocket(self)
        # An IPv4-mapped address is bound as IPv4; a link-local IPv6 address
        # keeps its scope, without which it cannot be bound.
        bindHost = localHost if "%" in localHost else normaliseAddress(localHost)
        for port in ports:
            try:
                self._relayPort = self._reactor.listenUDP(
                    port, protocol, interface=bindHost, maxPacketSize=READ_SIZE
                )
                break
            except CannotListenError:
                continue
        else:
            raise UDPRefused(
                Reply.GENERAL_FAILURE,
                "no free UDP port"
                + ("" if options.ports is None else " in %d-%d" % options.ports),
            )
        bound = self._relayPort.getHost()
        self.address = (options.advertise or normaliseAddress(bound.host), bound.port)
        self._resetIdle()

    def close(self) -> None:
        """
        End the association: close every socket and timer, at once.
        """
        if self._closed:
            return
        self._closed = True
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        for port in [self._relayPort, *self._outbound.values()]:
            if port is not None:
                port.stopListening()
        self._outbound.clear()
        for withdraw in list(self._withdrawals):
            withdraw()
        self._withdrawals.clear()
        self._relay.released(self.clientHost)
        self._record()

    def _record(self) -> None:
        details = self._session.details
        details["datagramsUp"] = self.datagramsUp
        details["datagramsDown"] = self.datagramsDown
        details["udpBytesUp"] = self.bytesUp
        details["udpBytesDown"] = self.bytesDown
        details["drops"] = (
            ",".join(f"{k}:{v}" for k, v in sorted(self.drops.items())) or "-"
        )

    def _resetIdle(self) -> None:
        # Per datagram, only a clock read: the timer, once set, checks when
        # it fires whether the association was quiet for the whole timeout.
        self._lastActive = self._reactor.seconds()
        if self._idleCall is None:
            self._idleCall = self._reactor.callLater(
                self._options.idleTimeout, self._idle
            )

    def _idle(self) -> None:
        self._idleCall = None
        if self._closed:
            return
        quiet = self._reactor.seconds() - self._lastActive
        if quiet < self._options.idleTimeout:
            self._idleCall = self._reactor.callLater(
                self._options.idleTimeout - quiet, self._idle
            )
            return
        self._onIdle()

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1
        if self._session.observers:
            self._session.count("udp-drop", reason=reason)

    # -- client to destination ---------------------------------------------

    def fromClient(self, datagram: bytes, addr: Any) -> None:
        """
        A datagram arrived on the relay socket.
        """
        if self._closed:
            return
        host, port = normaliseAddress(addr[0]), addr[1]
        if host != self.clientHost:
            self._drop("foreign-source")
            return
        if self.clientPort is not None and port != self.clientPort:
            self._drop("foreign-port")
            return
        try:
            header = parseUDPHeader(datagram)
        except ProtocolError:
            self._drop("malformed")
            return
        if header.fragment != 0:
            self._drop("fragmented")
            return
        if not header.port:
            self._drop("zero-port")
            return
        # Only a valid datagram teaches the client's port.
        self.clientPort = port
        payload = datagram[header.length :]
        self._resetIdle()
        destination = normaliseAddress(header.host)
        if not isIPLiteral(destination):
            self._sendToName(header.host, header.port, payload)
            return
        self._sendTo(destination, header.port, payload)

    def _sendToName(self, name: str, port: int, payload: bytes) -> None:
        names = self._relay.names
        addresses = names.lookup(name)
        if addresses is not None:
            if addresses:
                self._sendTo(addresses[0], port, payload, name)
            else:
                self._drop("unresolved")
            return
        if self._queued >= self._options.resolveQueue:
            self._drop("resolve-queue-full")
            return
        self._queued += 1
        withdrawals: list[Callable[[], None]] = []
        finished: list[bool] = []

        def resolved(addresses: tuple[str, ...] | None) -> None:
            finished.append(True)
            self._queued -= 1
            for withdraw in withdrawals:
                self._withdrawals.discard(withdraw)
            if self._closed:
                return
            if addresses is None:
                self._drop("lookup-limit")
            elif addresses:
                self._sendTo(addresses[0], port, payload, name)
            else:
                self._drop("unresolved")

        withdraw = names.resolve(name, resolved, self.clientHost)
        if not finished:
            withdrawals.append(withdraw)
            self._withdrawals.add(withdraw)

    def _outboundFor(self, host: str) -> Any:
        family = 6 if ":" in host else 4
        port = self._outbound.get(family)
        if port is None:
            interface = self._external.get(family) or ("::" if family == 6 else "")
            port = self._reactor.listenUDP(
                0, _OutboundSocket(self), interface=interface, maxPacketSize=READ_SIZE
            )
            self._outbound[family] = port
        return port

    def forgetDecisions(self) -> None:
        """
        Forget the cached policy decisions (the policy changed): every
        destination is checked again on its next datagram.
        """
        self._decisions.clear()

    def _permits(self, asked: str, host: str, port: int) -> bool:
        """
        The policy's (cached) decision on one destination.
        """
        if self._allowed is None:
            return True
        key = (asked, host, port)
        allowed = self._decisions.get(key)
        if allowed is None:
            if len(self._decisions) >= DECISION_CACHE:
                self._decisions.clear()
            allowed = self._decisions[key] = self._allowed(asked, host, port).allowed
        return allowed

    def _sendTo(self, host: str, port: int, payload: bytes, asked: str | None = None) -> None:
        if not self._permits(asked or host, host, port):
            self._drop("denied")
            return
        if self.throttle is not None and not self.throttle.allowDatagram("up", len(payload)):
            self._drop("bandwidth")
            return
        try:
            _send(self._outboundFor(host), payload, (host, port))
        except Exception as e:
            self._drop("send-error")
            self._log.debug("UDP send to {host}:{port} failed: {error}", host=host, port=port, error=e)
            return
        self._permitted.add(host)
        self.datagramsUp += 1
        self.bytesUp += len(payload)

    # -- destination to client ---------------------------------------------

    def fromRemote(self, datagram: bytes, addr: Any) -> None:
        """
        A datagram arrived on an outbound socket.
        """
        if self._closed:
            return
        host, port = normaliseAddress(addr[0]), addr[1]
        if not self._options.openFiltering and host not in self._permitted:
            self._drop("unsolicited")
            return
        if self.clientPort is None:
            self._drop("client-port-unknown")
            return
        header = encodeUDPHeader(host, port)
        if len(header) + len(datagram) > MAX_UDP_PAYLOAD and ":" not in self.clientHost:
            self._drop("too-large")
            return
        if self.throttle is not None and not self.throttle.allowDatagram(
            "down", len(datagram)
        ):
            self._drop("bandwidth")
            return
        self._resetIdle()
        try:
            _send(self._relayPort, header + datagram, (self.clientHost, self.clientPort))
        except Exception:
            self._drop("send-error")
            return
        self.datagramsDown += 1
        self.bytesDown += len(datagram)
