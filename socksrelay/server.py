# -*- test-case-name: tests.test_server -*-
"""
The SOCKS5 server protocol and its factory.

The protocol is thin: bytes go to the L{socksrelay.wire} codec, events come
back, and this module turns them into cred logins, outbound connections,
replies and, once connected, a L{socksrelay.relay} splice.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from twisted.cred.credentials import Anonymous
from twisted.cred.credentials import UsernamePassword as CredUsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet import error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from socksrelay.auth import methodPreference
from socksrelay.dialects import (
    HTTPDialect,
    SOCKS4Dialect,
    SOCKS5Dialect,
    proxyAuthenticationRequired,
)
from socksrelay.httpwire import (
    HTTPRequestHead,
    HTTPServerConnection,
    looksLikeHTTP,
    parseAuthority,
    parseBasicCredentials,
)
from socksrelay.wire4 import Command4, SOCKS4Request, SOCKS4ServerConnection
from socksrelay.interfaces import ISOCKSUser
from socksrelay.relay import Activity, OutboundFactory, OutboundProtocol, RelayEnd, Watchdog
from socksrelay.relay import describeAddress, splice
from socksrelay.throttle import ThrottleRegistry
from socksrelay.limits import Admission, Limits, Refusal
from socksrelay.ownports import NO_POLICY, OwnListeners
from socksrelay.resolve import LookupLimiter, LookupRefused, resolveAddresses
from socksrelay.rules import Decision, Policy, Query
from socksrelay.session import Session
from socksrelay.wire import (
    NEED_DATA,
    AuthMethod,
    Command,
    Greeting,
    ProtocolError,
    Reply,
    Request,
    SOCKS5ServerConnection,
    UsernamePassword,
    normaliseAddress,
    selectMethod,
)

ConnectEndpointFactory = Callable[[str, int], IStreamClientEndpoint]

#: While a login or an outbound connect is pending, the client is read until
#: this many bytes are buffered; then reading pauses until the relay starts.
EARLY_DATA_PAUSE = 64 * 1024


def replyForFailure(reason: Failure) -> tuple[Reply, str]:
    """
    Map the failure of an outbound connection to an RFC 1928 reply code and
    a short text for the log.
    """
    value = reason.value
    if isinstance(value, error.ConnectBindError):
        # The proxy's own outgoing address (external), not the destination.
        return Reply.GENERAL_FAILURE, f"cannot bind the outgoing address: {value}"
    if isinstance(value, LookupRefused):
        return Reply.GENERAL_FAILURE, value.reason
    if isinstance(value, error.ConnectionRefusedError):
        return Reply.CONNECTION_REFUSED, "connection refused"
    if isinstance(value, (error.DNSLookupError, error.UnknownHostError)):
        return Reply.HOST_UNREACHABLE, f"name not resolved: {value}"
    if isinstance(value, (error.TimeoutError, error.TCPTimedOutError)):
        return Reply.TTL_EXPIRED, "connection timed out"
    osError = getattr(value, "osError", None)
    if isinstance(value, error.NoRouteError) or osError in (
        errno.ENETUNREACH,
        errno.ENETDOWN,
    ):
        return Reply.NETWORK_UNREACHABLE, "network unreachable"
    if osError in (errno.EHOSTUNREACH, errno.EHOSTDOWN):
        return Reply.HOST_UNREACHABLE, "host unreachable"
    if osError == errno.ECONNREFUSED:
        return Reply.CONNECTION_REFUSED, "connection refused"
    if osError == errno.ETIMEDOUT:
        return Reply.TTL_EXPIRED, "connection timed out"
    if osError in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
        return Reply.ADDRESS_TYPE_NOT_SUPPORTED, f"address not usable: {value}"
    return Reply.GENERAL_FAILURE, f"connect failed: {value}"


class SOCKS5ServerProtocol(RelayEnd, TimeoutMixin):
    """
    One client connection: the SOCKS5 handshake, then the client's side of
    the relay.
    """

    factory: "SOCKS5ServerFactory"
    _log = Logger()

    _codec: Any = None
    _dialect: Any = None
    _forward: Any = None
    session: Session
    avatar: Any = None
    _logout: Callable[[], None] | None = None
    _waiting = False
    _ending = False
    _connecting: Deferred[Any] | None = None
    _connectTimer: Any = None
    _connectTimedOut = False
    _readPaused = False
    _clientEOF = False
    _association: Any = None
    _bindCleanup: Callable[[], None] | None = None
    _admitted = False
    _refusedHeld = False
    _inHandshake = False
    _refusal: Any = None
    _countedUser: str | None = None
    _halfClosedWatch = False
    _allowedQuery: tuple[str, str, int, tuple[str, ...]] | None = None
    _externalChoice: dict[int, str] | None = None
    _clientIP = ""
    _throttle: Any = None
    _throttleUser: str | None = None

    def callLater(self, period: float, func: Callable[[], None]) -> Any:
        """
        Route L{TimeoutMixin}'s timer through the factory's reactor.
        """
        return self.factory.reactor.callLater(period, func)

    def connectionMade(self) -> None:
        factory = self.factory
        self.reactor = factory.reactor
        self.closeTimeout = factory.closeTimeout
        self.onClose = self._sideClosed
        self.onEOF = self._sideEOF
        self._watchdogs: list[Watchdog] = []
        self._forwardConnects: set[Deferred[Any]] = set()
        self.session = Session(
            reactor=factory.reactor,
            client=describeAddress(self.transport.getPeer()),  # type: ignore[union-attr]
            listener=describeAddress(self.transport.getHost()),  # type: ignore[union-attr]
            observers=factory.observers,
        )
        # Until the first byte tells: the listener's only protocol, or none.
        self.session.protocol = _onlyProtocol(factory.protocols)
        self.session.clientEnd = self
        factory.live.add(self)
        factory.ownListeners.addTransport(self.transport)
        self.session.start()
        self.setTimeout(factory.handshakeTimeout)
        peer = getattr(self.transport.getPeer(), "host", None)  # type: ignore[union-attr]
        # A client on a UNIX socket is on this host.
        self._clientIP = normaliseAddress(peer) if peer else "127.0.0.1"
        try:
            factory.admission.admit(self._clientIP)
        except Refusal as e:
            # Answered (in the client's protocol) when its first byte comes,
            # unless this client has too many refused connections waiting.
            self._refusal = e
            self._refusedHeld = factory.admission.holdRefused(self._clientIP)
            if not self._refusedHeld:
                self.session.count("limit", reason=e.reason)
                self._end(
                    f"limit: {e.reason}; closed at once, too many refused connections"
                )
        else:
            self._admitted = self._inHandshake = True

    # -- handshake ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.relayData(data)
            return
        if self._forward is not None:
            self.bytesIn += len(data)
            self._forward.dataReceived(data)
            if self._throttle is not None:
                self._throttle.spent(self, "up", len(data))
            return
        if self._ending or self._association is not None:
            # A UDP association's control connection carries nothing more.
            return
        if self._codec is None:
            if not self._detect(data[0]):
                return
            if self._refusal is not None:
                self._refuseOverLimit(self._refusal, beforeGreeting=True)
                return
        try:
            self._codec.receiveData(data)
            self._processEvents()
        except ProtocolError as e:
            self._refuse(e)
            return
        if self._waiting and self._codec.buffered >= EARLY_DATA_PAUSE:
            # Waiting for a login or a connect: keep reading (so that a client
            # that leaves is noticed) until this much has piled up.
            self._readPaused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _resumeReading(self) -> None:
        if self._readPaused and not (self._clientEOF or self._lost):
            self._readPaused = False
            if self.readGate is not None and self.readGate.reasons:
                # Paused by the throttle (or backpressure) meanwhile: the
                # gate resumes reading when that no longer holds.
                return
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        """
        EOF from the client.  Once relaying, it is passed on.  While a login
        or connect is pending, it is remembered: a client may pipeline its
        request and data and then shut down its write side, and that EOF is
        passed on once the relay starts.  Otherwise the handshake is over.
        """
        if self.peer is not None:
            RelayEnd.readConnectionLost(self)
            return
        if self._association is not None:
            self._association.close()
            self._end("client closed the UDP control connection", "client")
            return
        if self._forward is not None:
            # The client sends no more requests: close once the response to
            # a whole request is finished, at once if it cut one short.
            self.session.noteClose("client EOF", "client")
            self._forward.clientEOF()
            return
        if self._bindCleanup is not None and not self._ending:
            # Waiting for BIND's peer: an EOF cannot be told from a client
            # that has gone, so the BIND ends and its port closes at once.
            cleanup, self._bindCleanup = self._bindCleanup, None
            cleanup()
            self._end("client closed while waiting for the BIND peer", "client")
            return
        self._clientEOF = True
        if not self._waiting and not self._ending:
            self._end("client closed during the handshake", "client")

    def _processEvents(self) -> None:
        while not (self._waiting or self._ending):
            event = self._codec.nextEvent()
            if event is NEED_DATA:
                if self._clientEOF:
                    self._end("client closed during the handshake", "client")
                return
            if isinstance(event, Greeting):
                self._greeting(event)
            elif isinstance(event, UsernamePassword):
                self._authenticate(event)
            elif isinstance(event, Request):
                self._request(event)
            elif isinstance(event, SOCKS4Request):
                self._socks4Request(event)
            elif isinstance(event, HTTPRequestHead):
                self._httpRequest(event)

    def _refuseOverLimit(self, refusal: Refusal, beforeGreeting: bool = False) -> None:
        self.session.count("limit", reason=refusal.reason)
        data, self.session.replyText = self._dialect.limited(
            refusal.rateLimited, beforeGreeting
        )
        self.transport.write(data)  # type: ignore[union-attr]
        self._end(f"limit: {refusal.reason}")

    def _handshakeOver(self, finished: bool = True) -> None:
        if finished and self.session.handshakeDone is None:
            self.session.handshakeDone = self.factory.reactor.seconds()
        if self._inHandshake:
            self._inHandshake = False
            self.factory.admission.handshakeDone(self._clientIP)

    def _admitUser(self) -> bool:
        """
        Count the session against its user's limit, or refuse it.
        """
        user = getattr(self.avatar, "username", None)
        if user is None or self._countedUser is not None or not self._admitted:
            return True
        try:
            self.factory.admission.admitUser(user, self._userSessionCap())
        except Refusal as e:
            self._refuseOverLimit(e)
            return False
        self._countedUser = user
        return True

    def _userSessionCap(self) -> int | None:
        """
        The avatar's own cap on its concurrent sessions (C{maxSessions}), or
        C{None} for the server's per-user limit.
        """
        cap = getattr(self.avatar, "maxSessions", None)
        return cap if isinstance(cap, int) and not isinstance(cap, bool) else None

    def _acquireThrottle(self) -> Any:
        """
        The user's shared bandwidth throttle, when the avatar has limits
        (C{bandwidthUp}/C{bandwidthDown}); acquired once per session and
        released when the session ends.
        """
        if self._throttle is None:
            from socksrelay.throttle import avatarRates

            up, down = avatarRates(self.avatar)
            if up or down:
                user = getattr(self.avatar, "username", None)
                self._throttle = self.factory.throttles.acquire(user, up, down)
                self._throttleUser = user
        return self._throttle

    def _detect(self, first: int) -> bool:
        """
        Tell the protocol by the connection's first byte: 0x05 SOCKS5, 0x04
        SOCKS4/4a, an upper-case letter an HTTP method.
        """
        if first == 0x05:
            name, codec, dialect = "socks5", SOCKS5ServerConnection(), SOCKS5Dialect()
        elif first == 0x04:
            name, codec, dialect = "socks4", SOCKS4ServerConnection(), SOCKS4Dialect()
        elif looksLikeHTTP(first):
            name, codec, dialect = "http", HTTPServerConnection(), HTTPDialect()
        else:
            self.session.protocol = None
            self._end(f"unknown protocol: first byte 0x{first:02x}")
            return False
        self.session.protocol = name
        if name not in self.factory.protocols:
            self._end(f"protocol {name} is not enabled")
            return False
        self._codec, self._dialect = codec, dialect
        return True

    def _refuse(self, e: ProtocolError) -> None:
        if e.response:
            self.transport.write(e.response)  # type: ignore[union-attr]
            self.session.replyText = _replyTextOf(e.response)
        if e.reply is not None:
            self.session.reply = int(e.reply)
        self._end(f"protocol error: {e.message}")

    def _end(self, reason: str, by: str = "proxy") -> None:
        """
        Close the client connection (after flushing what was written) and
        record why, and who began it (C{"client"} for its EOF).
        """
        self._ending = True
        self.setTimeout(None)
        self.session.noteClose(reason, by)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def timeoutConnection(self) -> None:
        state = "the first byte" if self._codec is None else self._codec.state
        self._end(f"handshake timeout in {state}")

    def _greeting(self, greeting: Greeting) -> None:
        method = selectMethod(greeting.methods, self.factory.methods)
        self.session.method = method.name
        self.transport.write(self._codec.chooseMethod(method))  # type: ignore[union-attr]
        if method == AuthMethod.NO_ACCEPTABLE_METHODS:
            offered = ",".join(f"0x{m:02x}" for m in greeting.methods)
            self._end(f"no acceptable authentication method (offered {offered})")
        elif method == AuthMethod.NO_AUTHENTICATION and self.factory.portal:
            self._wait(
                self.factory.portal.login(Anonymous(), None, ISOCKSUser),
                self._cbLogin,
                self._ebAnonymousLogin,
            )

    def _wait(
        self,
        d: Deferred[Any],
        callback: Callable[[Any], None],
        errback: Callable[[Failure], None],
    ) -> None:
        """
        Stop reading from the client until C{d} fires, then go on parsing.
        """
        self._waiting = True
        inCall = True

        def done(result: Any) -> None:
            self._waiting = False
            if self._ending or self._lost:
                return
            if isinstance(result, Failure):
                errback(result)
            else:
                callback(result)
            if self._ending or self._lost or self._waiting:
                return
            self._resumeReading()
            if inCall:
                # Fired at once: the caller's loop goes on parsing.
                return
            try:
                self._processEvents()
            except ProtocolError as e:
                self._refuse(e)

        d.addBoth(done)
        inCall = False

    def _authenticate(self, event: UsernamePassword) -> None:
        name = event.username.decode("utf-8", "backslashreplace")
        self.session.user = name
        if not event.username:
            self.transport.write(self._codec.authResult(False))  # type: ignore[union-attr]
            self._end("authentication failed: empty user name")
            return
        portal = self.factory.portal
        if portal is None:
            # Method 0x02 was chosen, then a reload removed every checker.
            self.transport.write(self._codec.authResult(False))  # type: ignore[union-attr]
            self._end("authentication failed: no credential checker")
            return
        credentials = CredUsernamePassword(event.username, event.password)
        self._wait(
            portal.login(credentials, None, ISOCKSUser),
            self._cbAuthenticated,
            self._ebAuthenticated,
        )

    def _cbLogin(self, result: tuple[Any, Any, Callable[[], None]]) -> None:
        _interface, self.avatar, self._logout = result
        username = getattr(self.avatar, "username", None)
        if username is not None:
            self.session.user = username

    def _cbAuthenticated(self, result: tuple[Any, Any, Callable[[], None]]) -> None:
        self._cbLogin(result)
        self.transport.write(self._codec.authResult(True))  # type: ignore[union-attr]

    def _ebAuthenticated(self, reason: Failure) -> None:
        self.session.count("auth-failure")
        self.transport.write(self._codec.authResult(False))  # type: ignore[union-attr]
        if not reason.check(UnauthorizedLogin, UnhandledCredentials):
            self._log.failure(
                "credential checker failed for user {user}",
                failure=reason,
                user=self.session.user,
            )
        self._end("authentication failed")

    def _ebAnonymousLogin(self, reason: Failure) -> None:
        if not reason.check(UnauthorizedLogin, UnhandledCredentials):
            self._log.failure("anonymous login failed", failure=reason)
        self._end("anonymous access refused")

    # -- the request -------------------------------------------------------

    def _request(self, request: Request) -> None:
        self.setTimeout(None)
        self._handshakeOver()
        if not self._admitUser():
            return
        self.session.command = request.command.name
        self.session.destination = _formatDestination(request.host, request.port)
        command = request.command
        if command is Command.CONNECT:
            self._connect(request.host, request.port)
        elif command is Command.UDP_ASSOCIATE and self.factory.udpOptions is not None:
            self._udpAssociate(request)
        elif command is Command.BIND and self.factory.bindOptions is not None:
            self._bind(request.host)
        else:
            self._replyAndEnd(
                Reply.COMMAND_NOT_SUPPORTED,
                f"command {command.name} not supported",
            )

    # -- UDP ASSOCIATE (socksrelay.udp) ------------------------------------

    def _commandAllowed(self, command: str, host: str, port: int) -> bool:
        """
        Check a BIND or UDP ASSOCIATE request before it opens anything;
        deny (and answer) when the policy certainly refuses it.
        """
        policy = self.factory.policy
        if policy is None:
            return True
        decision = policy.decideCommand(self._query(command, host, port, ()))
        if not decision.allowed:
            self._deny(decision)
        return decision.allowed

    def _udpAssociate(self, request: Request) -> None:
        from socksrelay.udp import UDPRefused

        if not self._commandAllowed("udp", request.host, request.port):
            return

        relay = self.factory.udpRelay
        localHost = getattr(self.transport.getHost(), "host", None)  # type: ignore[union-attr]
        try:
            association = relay.associate(
                self._clientIP,
                localHost,
                request.host,
                request.port,
                self.session,
                self._udpIdle,
                self._udpAllowed if self.factory.policy else None,
                self._external(),
            )
        except UDPRefused as e:
            self._replyAndEnd(e.reply, e.reason)
            return
        self._association = association
        association.throttle = self._acquireThrottle()
        # associate() has bound the relay socket, which sets its address.
        host, port = association.address  # type: ignore[misc]
        self.session.bound = _formatDestination(host, port)
        self._replySuccess(host, port)

    def _udpAllowed(self, host: str, address: str, port: int) -> Decision:
        """
        The policy's word on one UDP destination (C{host} as asked, the
        C{address} it stands for).
        """
        return self._decide("udp", host, port, (address,))

    def _udpIdle(self) -> None:
        self._association.close()
        self._end("UDP idle timeout")

    # -- BIND (socksrelay.bind) --------------------------------------------

    def _bind(self, expectedHost: str) -> None:
        """
        Listen for the peer named by the request (L{socksrelay.bind}).  The
        client keeps being read while it waits, as for a connect: early
        bytes are kept for the relay, but an EOF ends the BIND (see
        L{readConnectionLost}).
        """
        from socksrelay.bind import Binding

        if not self._commandAllowed("bind", expectedHost, 0):
            return
        factory = self.factory
        self._waiting = True
        local = self.transport.getHost()  # type: ignore[union-attr]
        binding = Binding(
            factory.bindOptions,
            factory.reactor,
            factory.nameResolver or getattr(factory.reactor, "nameResolver", None),
            factory.closeTimeout,
            getattr(local, "host", None),
            expectedHost,
            self.session,
            onListening=self._bindListening,
            onConnected=self._bindConnected,
            onFailed=self._bindFailed,
            peerAllowed=self._bindPeerAllowed if factory.policy else None,
            lookups=factory.lookups,
            client=self._clientIP,
            lookupTimeout=factory.connectTimeout,
        )
        self._bindCleanup = binding.close
        binding.start()

    def _bindPeerAllowed(self, host: str, port: int) -> Decision:
        """
        The policy's word on a host that connects to a BIND port.
        """
        self._allowedQuery = ("bind", host, port, (host,))
        return self._decide("bind", host, port, (host,))

    def recheck(self) -> bool:
        """
        Decide this session again under the current policy; close it (with a
        log line) if it is now denied.

        @return: whether it was closed.
        """
        if self._association is not None:
            self._association.forgetDecisions()
            return False
        if self._allowedQuery is None or self.factory.policy is None or self._ending:
            return False
        decision = self._decide(*self._allowedQuery)
        if decision.allowed:
            return False
        self.session.details["rule"] = decision.rule
        self._log.info(
            "recheck: closing the session of {client} to {destination}, "
            "now denied by {rule}",
            client=self.session.client,
            destination=self.session.destination,
            rule=decision.rule,
        )
        self._ending = True
        self.session.reason = f"recheck: denied by {decision.rule}"
        self.session.closedBy = "proxy"
        self._stopWatchdogs()
        self.closeGently()
        if self.peer is not None:
            self.peer.closeGently()
        return True

    def _bindListening(self, host: str, port: int) -> None:
        """
        BIND's first reply: where the peer should connect.
        """
        self._replySuccess(host, port)

    def _bindConnected(self, inbound: RelayEnd) -> None:
        """
        BIND's second reply, naming the peer that connected; then the relay.
        """
        if self._lost or self._ending:
            inbound.transport.loseConnection()  # type: ignore[union-attr]
            return
        peer = inbound.transport.getPeer()  # type: ignore[union-attr]
        self._replySuccess(normaliseAddress(peer.host), peer.port)
        self._startRelay(inbound)

    def _bindFailed(self, reply: Reply, reason: str) -> None:
        self._waiting = False
        if not (self._lost or self._ending):
            self._replyAndEnd(reply, reason)

    # -- SOCKS4 and SOCKS4a -------------------------------------------------

    def _socks4Request(self, request: SOCKS4Request) -> None:
        """
        A SOCKS4/4a CONNECT or BIND.  SOCKS4 has no password: when the server
        requires one, the request is refused (CD 91).
        """
        self.setTimeout(None)
        self._handshakeOver()
        self._dialect = SOCKS4Dialect(request.socks4a)
        self.session.protocol = self._dialect.name
        self.session.command = request.command.name
        self.session.destination = _formatDestination(request.host, request.port)
        if request.userid:
            self.session.details["userid"] = request.userid.decode(
                "utf-8", "backslashreplace"
            )
        if AuthMethod.NO_AUTHENTICATION not in self.factory.methods:
            self._replyAndEnd(
                Reply.NOT_ALLOWED,
                "SOCKS4 carries no password and authentication is required",
            )
            return
        if request.command is Command4.BIND and self.factory.bindOptions is None:
            self._replyAndEnd(Reply.COMMAND_NOT_SUPPORTED, "BIND is not enabled")
            return

        def proceed() -> None:
            if not self._admitUser():
                return
            if request.command is Command4.CONNECT:
                self._connect(request.host, request.port)
            else:
                self._bind(request.host)

        if self.factory.portal is None:
            proceed()
            return

        def loggedIn(result: Any) -> None:
            self._cbLogin(result)
            proceed()

        self._wait(
            self.factory.portal.login(Anonymous(), None, ISOCKSUser),
            loggedIn,
            self._ebAnonymousLogin,
        )

    # -- HTTP ----------------------------------------------------------------

    def _httpRequest(self, head: HTTPRequestHead) -> None:
        """
        An HTTP proxy request: CONNECT opens a tunnel; anything else is
        forwarded by L{socksrelay.httpproxy}.
        """
        self.setTimeout(None)
        self._handshakeOver()
        self.session.command = head.method
        if head.method != "CONNECT":
            self._startForward(head)
            return
        try:
            host, port = parseAuthority(head.target)
        except ProtocolError as e:
            self._refuse(e)
            return
        self.session.destination = _formatDestination(host, port)

        def authorized(outcome: str | None) -> None:
            if outcome is not None:
                self.session.replyText = "407"
                self.transport.write(proxyAuthenticationRequired(outcome))  # type: ignore[union-attr]
                self._end(f"proxy authentication failed: {outcome}")
            elif self._admitUser():
                self._connect(host, port)

        self._wait(
            self._httpAuthorize(head.header("Proxy-Authorization")),
            authorized,
            self._ebHTTPAuthorize,
        )

    def _ebHTTPAuthorize(self, reason: Failure) -> None:
        self._log.failure("HTTP authorization failed", failure=reason)
        self._replyAndEnd(Reply.GENERAL_FAILURE, "authorization error")

    def _httpAuthorize(self, value: str | None) -> Deferred[str | None]:
        """
        Check C{Proxy-Authorization} with the portal.

        @return: a Deferred firing with C{None} when the client may go on, or
            with a short reason for a 407.
        """
        portal = self.factory.portal
        if portal is None:
            return succeed(None)
        credentials = parseBasicCredentials(value)
        if credentials is None:
            if value:
                return succeed("unsupported or malformed credentials")
            if AuthMethod.NO_AUTHENTICATION not in self.factory.methods:
                return succeed("credentials required")
            login = portal.login(Anonymous(), None, ISOCKSUser)
        else:
            username, password = credentials
            if self._forward is None:
                # For a tunnel the session is this user's attempt; a
                # forwarding connection keeps the user that last logged in.
                self.session.user = username.decode("utf-8", "backslashreplace")
            if not username:
                return succeed("empty user name")
            login = portal.login(
                CredUsernamePassword(username, password), None, ISOCKSUser
            )

        def ok(result: Any) -> str | None:
            if self._logout is not None:
                self._logout()
            self._cbLogin(result)
            if self._forward is not None and self._countedUser is None:
                # A forwarding connection counts against its user's limit
                # from the first request that logs in.
                user = getattr(self.avatar, "username", None)
                if user is not None and self._admitted:
                    try:
                        self.factory.admission.admitUser(user, self._userSessionCap())
                    except Refusal as e:
                        self.session.count("limit", reason=e.reason)
                        return f"limit: {e.reason}"
                    self._countedUser = user
                self._forward.throttle = self._acquireThrottle()
            return None

        def refused(reason: Failure) -> str:
            self.session.count("auth-failure")
            if not reason.check(UnauthorizedLogin, UnhandledCredentials):
                self._log.failure(
                    "credential checker failed for user {user}",
                    failure=reason,
                    user=self.session.user,
                )
            return "authentication failed"

        return login.addCallbacks(ok, refused)

    def _startForward(self, head: HTTPRequestHead) -> None:
        """
        Hand the connection to twisted.web for plain-HTTP forward proxying,
        replaying the bytes read so far.
        """
        from socksrelay.httpproxy import CountingTransport, ForwardProxyChannel

        httpFactory = self.factory.httpChannelFactory()
        channel = ForwardProxyChannel(
            self._httpAuthorize,
            self._forwardConnect,
            self._noteForward,
            self._noteForwardStatus,
        )
        channel.factory = httpFactory
        channel.callLater = httpFactory.reactor.callLater  # type: ignore[method-assign]
        channel.timeOut = httpFactory.timeOut
        self.session.command = "HTTP"
        self.session.details["requests"] = 0
        self._forward = channel
        early = head.raw + self._codec.leftover()
        self.bytesIn += len(early)
        self._forwardTransport = CountingTransport(self.transport)
        self.session.downCounter = lambda: self._forwardTransport.written
        channel.makeConnection(self._forwardTransport)
        channel.dataReceived(early)

    def _forwardConnect(self, host: str, port: int, factory: Any) -> Deferred[Any]:
        """
        Connect to an origin for a forwarded request: checked by the policy
        like a CONNECT (a name on every address it resolves to), within the
        connect timeout, and cancelled if the client leaves.
        """
        from socksrelay.httpproxy import Denied

        server = self.factory

        def connect(addresses: tuple[str, ...] | None) -> Deferred[Any]:
            if addresses is not None and not addresses:
                raise error.DNSLookupError(host)
            # Unresolved (a custom endpoint with no policy): only an address
            # given as such can be checked.
            checked = addresses or _literalAddress(host) or ()
            decision = self._checkDestination(host, port, checked)
            if not decision.allowed:
                raise Denied(decision.rule)
            return server.endpointFor(host, port, addresses, self._external()).connect(
                factory
            )

        if server.policy is None and server.connectEndpoint != server.defaultEndpoint:
            d = succeed(None).addCallback(connect)
        else:
            literal = _literalAddress(host)
            if literal is not None:
                d = succeed(literal)
            else:
                d = server.resolveName(host, self._clientIP)
            d.addCallback(connect)
        d.addTimeout(server.connectTimeout, server.reactor)
        self._forwardConnects.add(d)
        return d.addBoth(self._forwardConnectDone, d)

    def _forwardConnectDone(self, result: Any, d: Deferred[Any]) -> Any:
        self._forwardConnects.discard(d)
        return result

    def _noteForwardStatus(self, code: int) -> None:
        self.session.replyText = str(code)

    def _noteForward(self, method: str, host: str, port: int) -> None:
        self.session.details["requests"] += 1
        self.session.destination = _formatDestination(host, port)

    def _replyAndEnd(self, reply: Reply, reason: str) -> None:
        data, self.session.replyText = self._dialect.failure(reply, reason)
        self.session.reply = int(reply)
        self.transport.write(data)  # type: ignore[union-attr]
        self._end(reason)

    def _replySuccess(self, host: str | None, port: int) -> None:
        data, self.session.replyText = self._dialect.success(host, port)
        self.session.reply = int(Reply.SUCCEEDED)
        self.transport.write(data)  # type: ignore[union-attr]

    # -- policy --------------------------------------------------------------

    def _query(
        self, command: str, host: str, port: int, addresses: tuple[str, ...]
    ) -> Query:
        """
        What the policy decides about: this client, user and protocol, and
        the given command and destination.
        """
        protocol = self.session.protocol or "socks5"
        return Query(
            client=self._clientIP,
            protocol="socks4" if protocol == "socks4a" else protocol,
            command=command,
            host=host,
            port=port,
            addresses=addresses,
            user=getattr(self.avatar, "username", None),
            groups=frozenset(getattr(self.avatar, "groups", None) or ()),
        )

    def _decide(
        self, command: str, host: str, port: int, addresses: tuple[str, ...]
    ) -> Decision:
        """
        Ask the factory's policy about a destination.
        """
        return self.factory.policy.decide(self._query(command, host, port, addresses))

    def _external(self) -> dict[int, str]:
        """
        This session's outgoing addresses (chosen once, on first use).
        """
        if self._externalChoice is None:
            own = getattr(self.avatar, "external", None)
            if own:
                # The user's own outgoing address overrides --external.
                own = normaliseAddress(str(own))
                self._externalChoice = {6 if ":" in own else 4: own}
            else:
                self._externalChoice = self.factory.pickExternal()
            if self._externalChoice:
                self.session.details["external"] = ",".join(
                    self._externalChoice.values()
                )
        return self._externalChoice

    def _deny(self, decision: Decision) -> None:
        self.session.count("denied", rule=decision.rule)
        self.session.details["rule"] = decision.rule
        self._replyAndEnd(Reply.NOT_ALLOWED, f"denied by {decision.rule}")

    # -- CONNECT -------------------------------------------------------------

    def _connect(self, host: str, port: int) -> None:
        """
        Check the destination against the policy (a name on every address it
        resolves to), then connect to exactly the checked addresses.  The
        connect timeout covers both.
        """
        self._waiting = True
        factory = self.factory
        self._connectTimer = factory.reactor.callLater(
            factory.connectTimeout, self._connectTimeout
        )
        literal = _literalAddress(host)
        if factory.policy is None and factory.connectEndpoint != factory.defaultEndpoint:
            # The embedder's endpoint resolves: only an address given as
            # such is checked (against the proxy's own listeners).
            self._checkThenOpen(host, port, literal or (), resolved=False)
            return
        if literal is not None:
            self._checkThenOpen(host, port, literal)
            return
        d = factory.resolveName(host, self._clientIP)
        self._connecting = d
        d.addCallback(self._resolvedForConnect, host, port)
        d.addErrback(self._ebConnected)

    def _resolvedForConnect(self, addresses: tuple[str, ...], host: str, port: int) -> None:
        self._connecting = None
        if self._lost or self._ending:
            return
        if not addresses:
            self._ebConnected(Failure(error.DNSLookupError(host)))
            return
        self.session.resolved = ",".join(addresses)
        self._checkThenOpen(host, port, addresses)

    def _checkDestination(
        self, host: str, port: int, addresses: tuple[str, ...]
    ) -> Decision:
        """
        Decide an outbound connection (CONNECT or a forwarded request),
        remember it for a recheck, and record the rule (and a denial).  One
        of the proxy's own listeners is refused, even with no policy.
        """
        decision = self.factory.ownListeners.decide(port, addresses)
        if decision is None and self.factory.policy is None:
            return NO_POLICY
        self._allowedQuery = ("connect", host, port, addresses)
        decision = decision or self._decide("connect", host, port, addresses)
        self.session.details["rule"] = decision.rule
        if not decision.allowed:
            self.session.count("denied", rule=decision.rule)
        return decision

    def _checkThenOpen(
        self, host: str, port: int, addresses: tuple[str, ...], resolved: bool = True
    ) -> None:
        decision = self._checkDestination(host, port, addresses)
        if not decision.allowed:
            self._stopConnectTimer()
            self._waiting = False
            self._replyAndEnd(Reply.NOT_ALLOWED, f"denied by {decision.rule}")
            return
        self._openConnection(host, port, addresses if resolved else None)

    def _openConnection(
        self, host: str, port: int, addresses: tuple[str, ...] | None
    ) -> None:
        factory = self.factory
        self.session.connectStarted = factory.reactor.seconds()
        try:
            endpoint = factory.endpointFor(host, port, addresses, self._external())
            d = endpoint.connect(OutboundFactory(factory.reactor, factory.closeTimeout))
        except Exception:
            d = Deferred()
            d.errback()
        self._connecting = d
        d.addCallbacks(self._cbConnected, self._ebConnected)

    def _connectTimeout(self) -> None:
        self._connectTimer = None
        self._connectTimedOut = True
        if self._connecting is not None:
            self._connecting.cancel()

    def _stopConnectTimer(self) -> None:
        self._connecting = None
        if self._connectTimer is not None and self._connectTimer.active():
            self._connectTimer.cancel()
        self._connectTimer = None

    def _cbConnected(self, outbound: OutboundProtocol) -> None:
        self._stopConnectTimer()
        self._waiting = False
        if self._lost or self._ending:
            outbound.transport.loseConnection()  # type: ignore[union-attr]
            return
        local = outbound.transport.getHost()  # type: ignore[union-attr]
        self.session.connected = self.factory.reactor.seconds()
        self.session.bound = describeAddress(local)
        self.session.resolved = describeAddress(
            outbound.transport.getPeer()  # type: ignore[union-attr]
        )
        self._replySuccess(local.host, local.port)
        self._startRelay(outbound)

    def _startRelay(self, other: RelayEnd) -> None:
        """
        Splice the client with C{other} (an outbound connection, or BIND's
        inbound one) after the success reply: bytes that arrived early are
        sent on first, and an EOF that arrived early is passed on.
        """
        self._waiting = False
        other.onClose = self._sideClosed
        other.onEOF = self._sideEOF
        self.session.outbound = other
        early = self._codec.leftover()
        factory = self.factory
        if factory.idleTimeout or factory.halfClosedTimeout:
            self.activity = other.activity = Activity()
            if factory.idleTimeout:
                self._watchdogs.append(
                    Watchdog(
                        factory.reactor,
                        factory.idleTimeout,
                        self.activity,
                        lambda: self._relayTimeout("idle timeout"),
                    )
                )
        throttle = self._acquireThrottle()
        if throttle is not None:
            self.throttle = other.throttle = throttle
            self.throttleDirection, other.throttleDirection = "up", "down"
        splice(
            self, other, early, zeroCopy=factory.zeroCopy and not self._clientEOF
        )
        if self._clientEOF:
            RelayEnd.readConnectionLost(self)
        else:
            self._resumeReading()

    def _ebConnected(self, reason: Failure) -> None:
        timedOut = self._connectTimedOut
        self._stopConnectTimer()
        self._waiting = False
        if self._lost:
            return
        if reason.check(LookupRefused):
            # Over the lookup limits: 0x01 (SOCKS4 91, HTTP 503) at once.
            data, self.session.replyText = self._dialect.limited(False, False)
            self.session.reply = int(Reply.GENERAL_FAILURE)
            self.transport.write(data)  # type: ignore[union-attr]
            self._end(reason.value.reason)
            return
        if timedOut:
            reply, why = Reply.TTL_EXPIRED, "connection timed out"
        elif reason.check(CancelledError, error.ConnectingCancelledError):
            reply, why = Reply.GENERAL_FAILURE, "connection attempt cancelled"
        else:
            reply, why = replyForFailure(reason)
        self._replyAndEnd(reply, why)

    # -- the end -----------------------------------------------------------

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self.factory.live.discard(self)
        self.setTimeout(None)
        self._stopWatchdogs()
        if self._connecting is not None:
            d = self._connecting
            self._stopConnectTimer()
            d.cancel()
        if self._association is not None:
            self._association.close()
        if self._forward is not None:
            for pending in list(self._forwardConnects):
                pending.cancel()
            self._forward.connectionLost(reason)
        self._handshakeOver(finished=False)
        if self._admitted:
            self._admitted = False
            self.factory.admission.release(self._clientIP, self._countedUser)
        if self._refusedHeld:
            self._refusedHeld = False
            self.factory.admission.refusedGone(self._clientIP)
        if self._bindCleanup is not None:
            cleanup, self._bindCleanup = self._bindCleanup, None
            cleanup()
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()
        RelayEnd.connectionLost(self, reason)
        if self._throttle is not None:
            throttle, self._throttle = self._throttle, None
            self.factory.throttles.release(self._throttleUser, throttle)

    def _sideEOF(self, end: RelayEnd) -> None:
        if end is self:
            self.session.noteClose("client EOF", "client")
        else:
            self.session.noteClose("target EOF", "target")
        timeout = self.factory.halfClosedTimeout
        if timeout and self.activity is not None and not self._halfClosedWatch:
            self._halfClosedWatch = True
            self._watchdogs.append(
                Watchdog(
                    self.factory.reactor,
                    timeout,
                    self.activity,
                    lambda: self._relayTimeout("half-closed timeout"),
                )
            )

    def _relayTimeout(self, reason: str) -> None:
        """
        A relay timed out: close both sides.  The timeout, not an EOF seen
        before it, is why the session ends.
        """
        self._ending = True
        self.session.reason, self.session.closedBy = reason, "proxy"
        self._stopWatchdogs()
        self.closeGently()
        if self.peer is not None:
            self.peer.closeGently()

    def _stopWatchdogs(self) -> None:
        for watchdog in self._watchdogs:
            watchdog.stop()
        self._watchdogs = []

    def _sideClosed(self, end: RelayEnd, reason: Failure) -> None:
        self.session.sideClosed(end is self, reason)


def _replyTextOf(response: bytes) -> str:
    """
    The code that a refusal written by a codec carries, for the log.
    """
    if response.startswith(b"HTTP/"):
        return response.split(b" ", 2)[1].decode("ascii", "replace")
    if len(response) == 8 and response[0] == 0x00:
        return str(response[1])
    if len(response) >= 2 and response[0] == 0x01:
        return f"auth 0x{response[1]:02x}"
    return f"0x{response[1]:02x}" if len(response) >= 2 else "-"


def _onlyProtocol(protocols: frozenset[str]) -> str | None:
    """
    The protocol a listener serving C{protocols} speaks before a client's
    first byte: its only one, or C{None} (not known yet) when it has several.
    """
    return next(iter(protocols)) if len(protocols) == 1 else None


def _literalAddress(host: str) -> tuple[str] | None:
    """
    C{(address,)} when C{host} is an IP address (normalised), else C{None}.
    """
    address = normaliseAddress(host)
    if isIPAddress(address) or isIPv6Address(address):
        return (address,)
    return None


def _formatDestination(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class SOCKS5ServerFactory(Factory):
    """
    Builds L{SOCKS5ServerProtocol}s.

    @param portal: a cred L{Portal} whose realm returns L{ISOCKSUser}
        avatars, or C{None} to accept clients without authentication.
    @param reactor: the reactor; the global one when C{None}.
    @param nameResolver: an L{IHostnameResolver} for destination names, or
        C{None} for the reactor's own.
    @param connectEndpoint: a callable C{(host, port)} returning the
        L{IStreamClientEndpoint} to reach a destination; by default a
        L{HostnameEndpoint} (or a TCP endpoint for an IP address).
    @param handshakeTimeout: seconds from accept until the request is in.
    @param connectTimeout: seconds the outbound connection may take.
    @param closeTimeout: seconds a closing side may take to flush.
    @param udpOptions: L{socksrelay.udp.UDPOptions} for UDP ASSOCIATE;
        C{None} (the default) means C{UDPOptions()}: enabled with its default
        options.  Pass C{False} to refuse UDP ASSOCIATE (reply 0x07).
    @param externals: outgoing IP addresses (see L{externals}).
    @param limits: L{socksrelay.limits.Limits}; C{None} for the defaults.
    @param idleTimeout: seconds a relay may carry no byte either way before
        both sides are closed; 0 (the default) for no limit.
    @param halfClosedTimeout: seconds a relay whose one side has finished may
        carry no byte before both are closed (default 60; 0 for no limit).
    @param zeroCopy: relay plain TCP connections with C{splice(2)} on
        Linux (no copy through Python); C{False} for the ordinary relay.
    @param policy: a L{socksrelay.rules.Policy} deciding who may go where,
        or C{None} (the default for code that embeds the factory) to check
        nothing; C{twistd socks5} always passes one (its secure defaults when
        no rules are configured).
    @param protocols: which protocols the listener serves, told apart by
        their first byte: C{"socks5"}, C{"socks4"} (SOCKS4 and 4a), C{"http"}
        (CONNECT tunnels and plain-HTTP forwarding).  Default: all three.
    @param httpIdleTimeout: seconds an HTTP forward-proxy connection may sit
        idle between requests.
    @param bindOptions: L{socksrelay.bind.BindOptions} for BIND; C{None}
        (the default) means C{BindOptions()}: BIND enabled with its default
        options.  Pass C{False} to refuse BIND (reply 0x07).
    """

    protocol = SOCKS5ServerProtocol

    def __init__(
        self,
        portal: Portal | None = None,
        reactor: Any = None,
        nameResolver: Any = None,
        connectEndpoint: ConnectEndpointFactory | None = None,
        handshakeTimeout: float = 30.0,
        connectTimeout: float = 30.0,
        closeTimeout: float = 30.0,
        udpOptions: Any = None,
        bindOptions: Any = None,
        protocols: Any = ("socks5", "socks4", "http"),
        httpIdleTimeout: float = 60.0,
        policy: Policy | None = None,
        externals: Any = (),
        limits: Limits | None = None,
        idleTimeout: float = 0.0,
        halfClosedTimeout: float = 60.0,
        zeroCopy: bool = True,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.portal = portal
        self.methods = methodPreference(portal)
        self.nameResolver = nameResolver
        self.connectEndpoint = connectEndpoint or self.defaultEndpoint
        self.handshakeTimeout = handshakeTimeout
        self.connectTimeout = connectTimeout
        self.closeTimeout = closeTimeout
        #: L{ISessionObserver}s told about every session (access log,
        #: metrics, control API).
        self.observers: list[Any] = []
        #: Outgoing addresses for outbound connections and UDP sockets
        #: (Dante's C{external}); each session takes one per family in turn.
        #: They apply when C{connectEndpoint} is the default (connections
        #: then go to the addresses resolved, and checked if there is a
        #: policy).
        self.externals = tuple(externals)
        self._externalTurn = {4: 0, 6: 0}
        #: The live client connections.
        self.live: set[SOCKS5ServerProtocol] = set()
        #: Seconds a relay may go without a byte either way (0: no limit).
        self.idleTimeout = idleTimeout
        #: Seconds a relay with one side finished may go without a byte.
        self.halfClosedTimeout = halfClosedTimeout
        #: Relay plain TCP with C{splice(2)} where the platform has it
        #: (L{socksrelay.splicing}).
        self.zeroCopy = zeroCopy
        #: The limits (L{socksrelay.limits.Limits}) and their counts.
        self.admission = Admission(limits or Limits(), reactor.seconds)
        #: Name lookups in flight (L{Limits.lookups}, C{lookupsPerClient}).
        self.lookups = LookupLimiter(lambda: self.admission.limits)
        #: Where this proxy listens (L{socksrelay.ownports}), never relayed to.
        self.ownListeners = OwnListeners()
        self.throttles = ThrottleRegistry(reactor, self.admission.limits.bandwidthBurst)
        #: The access policy (L{socksrelay.rules.Policy}), or C{None} to
        #: check nothing.
        self.policy = policy
        #: The protocols served: any of C{"socks5"}, C{"socks4"} (with 4a)
        #: and C{"http"} (CONNECT and plain forwarding).
        self.protocols = frozenset(protocols)
        unknown = self.protocols - {"socks5", "socks4", "http"}
        if not self.protocols:
            raise ValueError("no protocol to serve")
        if unknown:
            raise ValueError(f"unknown protocols: {', '.join(sorted(unknown))}")
        self.httpIdleTimeout = httpIdleTimeout
        self._httpChannelFactory: Any = None
        #: L{socksrelay.udp.UDPOptions}, or C{None}: UDP ASSOCIATE refused.
        self.udpOptions: Any = None
        self.udpRelay: Any = None
        if udpOptions is not False:
            from socksrelay.udp import UDPOptions, UDPRelay

            self.udpOptions = udpOptions or UDPOptions()
            self.udpRelay = UDPRelay(
                self.udpOptions, reactor, nameResolver or reactor.nameResolver,
                self.lookups,
            )
        #: L{socksrelay.bind.BindOptions}, or C{None}: BIND refused.
        self.bindOptions: Any = None
        if bindOptions is None:
            from socksrelay.bind import BindOptions

            self.bindOptions = BindOptions()
        elif bindOptions is not False:
            self.bindOptions = bindOptions

    def httpChannelFactory(self) -> Any:
        """
        The L{twisted.web.http.HTTPFactory} that forward-proxy channels use.
        """
        if self._httpChannelFactory is None:
            from socksrelay.httpproxy import channelFactory

            self._httpChannelFactory = channelFactory(self.reactor, self.httpIdleTimeout)
        return self._httpChannelFactory

    def reconfigure(
        self,
        portal: Portal | None,
        policy: Policy | None,
        limits: Limits,
        timeouts: dict[str, float],
        externals: Any = None,
    ) -> None:
        """
        Swap in a new configuration, all at once; live sessions keep what
        they have, new sessions get the new one.

        @param timeouts: option name (C{handshake-timeout}, ...) to seconds.
        """
        self.portal = portal
        self.methods = methodPreference(portal)
        self.policy = policy
        self.admission.limits = limits
        self.throttles.burstSeconds = limits.bandwidthBurst
        if externals is not None:
            self.externals = tuple(externals)
        attributes = {
            "handshake-timeout": "handshakeTimeout",
            "connect-timeout": "connectTimeout",
            "idle-timeout": "idleTimeout",
            "half-closed-timeout": "halfClosedTimeout",
        }
        for name, seconds in timeouts.items():
            if name in attributes:
                setattr(self, attributes[name], seconds)
            elif name == "udp-idle-timeout" and self.udpRelay is not None:
                self.udpRelay.options.idleTimeout = seconds
            elif name == "bind-timeout" and self.bindOptions is not None:
                self.bindOptions.timeout = seconds

    def recheck(self) -> int:
        """
        Decide every live session again; close those now denied.

        @return: how many were closed.
        """
        return sum(1 for protocol in list(self.live) if protocol.recheck())

    def resolver(self) -> Any:
        """
        The L{IHostnameResolver} for destination names.
        """
        return self.nameResolver or self.reactor.nameResolver

    def resolveName(self, host: str, client: str | None) -> Deferred[tuple[str, ...]]:
        """
        Resolve a destination name for C{client}: counted against the lookup
        limits, within the connect timeout, cancelled with the Deferred.
        """
        return resolveAddresses(
            self.resolver(), host, "TCP", self.connectTimeout, self.reactor,
            self.lookups, client,
        )

    def pickExternal(self) -> dict[int, str]:
        """
        The outgoing address of each family for a new session, taken from
        L{externals} in turn (round-robin); empty when none are configured.
        """
        chosen = {}
        for family in (4, 6):
            choices = [a for a in self.externals if (6 if ":" in a else 4) == family]
            if choices:
                chosen[family] = choices[self._externalTurn[family] % len(choices)]
                self._externalTurn[family] += 1
        return chosen

    def endpointFor(
        self,
        host: str,
        port: int,
        addresses: tuple[str, ...] | None,
        external: dict[int, str] | None = None,
    ) -> IStreamClientEndpoint:
        """
        The endpoint that reaches C{host}: when C{addresses} were resolved
        (and checked) already, exactly those, from the session's outgoing
        address (C{external}, by family) if there is one; otherwise
        L{connectEndpoint}.

        @raise error.NoRouteError: when outgoing addresses are configured but
            none has the family of any destination address.
        """
        if addresses is None or self.connectEndpoint != self.defaultEndpoint:
            return self.connectEndpoint(host, port)
        bindAddress = None
        if external:
            usable = [a for a in addresses if (6 if ":" in a else 4) in external]
            if not usable:
                raise error.NoRouteError(
                    string="no outgoing address of this address family"
                )
            # One outgoing address serves one family: try that family's
            # addresses (IPv4 first, as resolved).
            family = 6 if ":" in usable[0] else 4
            addresses = tuple(a for a in usable if (6 if ":" in a else 4) == family)
            bindAddress = (external[family], 0)
        if len(addresses) == 1:
            return self.defaultEndpoint(addresses[0], port, bindAddress)
        from socksrelay.resolve import ResolverReactor, StaticResolver

        reactor = ResolverReactor(self.reactor, StaticResolver(addresses))
        # The static resolver ignores the name; an address stands for it, as
        # HostnameEndpoint refuses real names IDNA 2008 does not allow
        # (C{_dmarc.example}, C{ab--cd.example}).
        return HostnameEndpoint(
            reactor, addresses[0], port, timeout=self.connectTimeout,
            bindAddress=bindAddress,
        )

    def defaultEndpoint(
        self, host: str, port: int, bindAddress: tuple[str, int] | None = None
    ) -> IStreamClientEndpoint:
        """
        The endpoint for a destination: TCP for an IP address; otherwise a
        L{HostnameEndpoint}, which resolves without blocking and tries every
        address it gets.
        """
        timeout = self.connectTimeout
        if isIPAddress(host):
            return TCP4ClientEndpoint(
                self.reactor, host, port, timeout=timeout, bindAddress=bindAddress
            )
        if isIPv6Address(host):
            return TCP6ClientEndpoint(
                self.reactor, host, port, timeout=timeout, bindAddress=bindAddress
            )
        reactor = self.reactor
        if self.nameResolver is not None:
            from socksrelay.resolve import ResolverReactor

            reactor = ResolverReactor(reactor, self.nameResolver)
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
