# -*- test-case-name: tests.test_httpproxy -*-
"""
Plain-HTTP forward proxying (C{GET http://host/path HTTP/1.1}) through
L{twisted.web}'s HTTP machinery.

The listener recognises the request head, then hands the connection to a
L{ForwardProxyChannel}: a L{twisted.web.proxy.Proxy} whose requests
authenticate with the same cred portal as every other protocol (per request,
from C{Proxy-Authorization: Basic}), drop hop-by-hop headers both ways as an
HTTP/1.1 proxy must (RFC 9110 section 7.6.1), and reach the origin through
the server's own outbound endpoints (same resolver, same connect timeout).
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import SplitResult, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectBindError, ConnectingCancelledError, TimeoutError
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPFactory
from twisted.web.proxy import Proxy, ProxyClient, ProxyClientFactory, ProxyRequest

from socksrelay.dialects import HTTP_REALM
from socksrelay.httpwire import canonicalTargetHost
from socksrelay.wire import ProtocolError
from socksrelay.limits import Refusal

#: Headers that belong to one connection, never forwarded (RFC 9110 7.6.1),
#: plus the proxy's own credentials.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def hopByHop(connectionValues: list[bytes]) -> frozenset[bytes]:
    """
    The header names not to forward: the fixed hop-by-hop set, and every
    name listed in the message's C{Connection} headers.
    """
    named = {
        token.strip().lower()
        for value in connectionValues
        for token in value.split(b",")
        if token.strip()
    }
    return HOP_BY_HOP | named


class Denied(Exception):
    """
    The access policy refused the destination; C{rule} names the rule.
    """

    def __init__(self, rule: str) -> None:
        super().__init__(f"denied by {rule}")
        self.rule = rule


def forwardTarget(uri: bytes) -> tuple[SplitResult, str, int]:
    """
    Split the target of a forwarded request: an absolute C{http://} URI
    with a host and, if given, a port from 1 to 65535 (80 when absent or
    empty).

    @return: the split URI, its host and the port.
    @raise ValueError: with the text for a 400, if it is not one.
    """
    try:
        parts = urlsplit(uri.decode("ascii"))
        host = parts.hostname
    except (UnicodeDecodeError, ValueError):
        raise ValueError("only absolute http:// URIs are proxied") from None
    if parts.scheme != "http" or not host:
        raise ValueError("only absolute http:// URIs are proxied")
    portText = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if not portText:
        return parts, host, 80
    if not (portText.isascii() and portText.isdigit()) or not 0 < int(portText) < 65536:
        raise ValueError(f"bad port {portText!r} in the request URI")
    return parts, host, int(portText)


class _ForwardClient(ProxyClient):
    """
    The request to the origin.  The response's headers are held until the
    end of the header block, so that hop-by-hop headers can be dropped even
    when the C{Connection} header that names them comes last; an origin that
    closes without a status line becomes a 502.
    """

    _gotStatus = False
    _log = Logger()
    #: The user's throttle (L{ForwardProxyChannel.throttle}), if any.
    _throttle: Any = None

    def connectionMade(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self.father.outbound = self
        self._throttle = getattr(self.father.channel, "throttle", None)
        if self.father._disconnected:
            # The client left while this connection was being made.
            self.transport.loseConnection()
            return
        ProxyClient.connectionMade(self)

    def lineReceived(self, line: bytes) -> None:
        # twisted.web's client parser raises on a status line that is not
        # "HTTP/x.y NNN ...": check it before handing it over.
        if self.firstLine:
            parts = line.split(None, 2)
            if not (
                len(parts) >= 2
                and parts[0].startswith(b"HTTP/")
                and len(parts[1]) == 3
                and parts[1].isdigit()
            ):
                self._malformed("status line")
                return
        ProxyClient.lineReceived(self, line)

    def extractHeader(self, header: bytes) -> None:
        # ... and on a header line without a colon, or a Content-Length that
        # is not a number.
        name, colon, value = header.partition(b":")
        if not colon or (
            name.strip().lower() == b"content-length" and not value.strip().isdigit()
        ):
            self._malformed("header line")
            return
        ProxyClient.extractHeader(self, header)

    def _malformed(self, what: str) -> None:
        """
        The origin's response head cannot be parsed: answer 502 and drop the
        origin connection (the line parser stops once it is disconnecting).
        """
        if self._finished:
            return
        self._finished = True
        self._log.info("the origin sent a malformed {what}", what=what)
        request: ForwardRequest = self.father
        request._answer(502, b"Bad Gateway", f"the origin sent a malformed {what}")
        self.transport.loseConnection()  # type: ignore[union-attr,misc]

    def handleStatus(self, version: bytes, code: bytes, message: bytes) -> None:
        self._gotStatus = True
        ProxyClient.handleStatus(self, version, code, message)

    def handleHeader(self, key: bytes, value: bytes) -> None:
        self._headers.append((key, value))

    def handleEndHeaders(self) -> None:
        skip = hopByHop([v for k, v in self._headers if k.lower() == b"connection"])
        for key, value in self._headers:
            if key.lower() not in skip:
                ProxyClient.handleHeader(self, key, value)
        ProxyClient.handleEndHeaders(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the origin: relayed, then spent from the user's download
        budget (L{ForwardProxyChannel.throttle}), which pauses reading from
        the origin while in debt.
        """
        ProxyClient.dataReceived(self, data)
        if self._throttle is not None and self.transport is not None:
            self._throttle.spent(self, "down", len(data))

    def pauseReading(self, reason: str) -> None:
        transport: Any = self.transport
        if transport is not None and self.connected and not transport.disconnecting:
            transport.pauseProducing()

    def resumeReading(self, reason: str) -> None:
        transport: Any = self.transport
        if transport is not None and self.connected and not transport.disconnecting:
            transport.resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._throttle is not None:
            self._throttle.detach(self)
        ProxyClient.connectionLost(self, reason)

    def handleResponseEnd(self) -> None:
        if not self._gotStatus and not self._finished:
            self._finished = True
            request: ForwardRequest = self.father
            request._answer(502, b"Bad Gateway", "the origin closed without a response")
            self.transport.loseConnection()
            return
        ProxyClient.handleResponseEnd(self)


class _ForwardClientFactory(ProxyClientFactory):
    protocol = _ForwardClient
    noisy = False


class ForwardRequest(ProxyRequest):
    """
    One proxied request.  C{self.channel} is a L{ForwardProxyChannel}.
    """

    _log = Logger()
    #: The whole request (head and body) is in: it will be answered.
    received = False

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.received = True
        ProxyRequest.requestReceived(self, command, path, version)

    def process(self) -> None:
        channel: ForwardProxyChannel = self.channel  # type: ignore[assignment]
        try:
            parts, host, port = forwardTarget(self.uri)
        except ValueError as e:
            self._answer(400, b"Bad Request", str(e))
            return
        try:
            host = canonicalTargetHost(host)
        except ProtocolError as e:
            self._answer(400, b"Bad Request", e.message)
            return
        value = self.requestHeaders.getRawHeaders(b"proxy-authorization", [None])[0]
        d = channel.authorize(value.decode("latin-1") if value else None)
        d.addCallback(self._authorized, host, port, parts)

    def _authorized(self, outcome: str | None, host: str, port: int, parts: Any) -> None:
        if self.finished or self.channel is None:
            return
        if outcome is not None and outcome.startswith("limit: "):
            self._answer(503, b"Service Unavailable", outcome)
            return
        if outcome is not None:
            self.setHeader(b"proxy-authenticate", f'Basic realm="{HTTP_REALM}"'.encode())
            self._answer(407, b"Proxy Authentication Required", outcome)
            return
        channel: ForwardProxyChannel = self.channel  # type: ignore[assignment]
        skip = hopByHop(self.requestHeaders.getRawHeaders(b"connection", []))
        headers: dict[bytes, bytes] = {}
        for name, values in self.requestHeaders.getAllRawHeaders():
            lowered = name.lower()
            if lowered in skip or lowered == b"content-length":
                continue
            separator = b"; " if lowered == b"cookie" else b", "
            headers[lowered] = separator.join(values)
        authority = parts.netloc.rpartition("@")[2]
        headers[b"host"] = authority.encode("ascii")
        self.content.seek(0, 0)
        body = self.content.read()
        if body or self.method in (b"POST", b"PUT", b"PATCH"):
            headers[b"content-length"] = b"%d" % len(body)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        channel.noteRequest(self.method.decode("ascii", "replace"), host, port)
        factory = _ForwardClientFactory(
            self.method, path.encode("ascii"), self.clientproto, headers, body, self
        )
        d = channel.connect(host, port, factory)
        d.addErrback(self._connectFailed, host, port)

    def _connectFailed(self, reason: Failure, host: str, port: int) -> None:
        if self.finished or self.channel is None:
            return
        if reason.check(Denied):
            self._answer(403, b"Forbidden", f"{host}:{port}: {reason.getErrorMessage()}")
        elif reason.check(ConnectBindError):
            text = f"cannot bind the outgoing address: {reason.getErrorMessage()}"
            self._answer(502, b"Bad Gateway", text)
        elif reason.check(Refusal):
            self._answer(503, b"Service Unavailable", reason.getErrorMessage())
        elif reason.check(TimeoutError, DeferredTimeoutError, ConnectingCancelledError):
            self._answer(504, b"Gateway Timeout", f"{host}:{port} did not answer in time")
        else:
            self._answer(502, b"Bad Gateway", f"cannot reach {host}:{port}: {reason.getErrorMessage()}")

    outbound: Any = None

    def connectionLost(self, reason: Failure) -> None:
        """
        The client left: close the connection to the origin too.
        """
        ProxyRequest.connectionLost(self, reason)
        if self.outbound is not None and self.outbound.transport is not None:
            self.outbound.transport.loseConnection()

    def write(self, data: bytes) -> None:
        if self._disconnected:
            return
        ProxyRequest.write(self, data)

    def finish(self) -> None:
        if self._disconnected:
            return
        channel = self.channel
        if channel is not None and not self.finished:
            channel.noteStatus(self.code)
        ProxyRequest.finish(self)

    def _answer(self, code: int, message: bytes, text: str) -> None:
        body = f"{message.decode()}: {text}\n".encode("utf-8")
        self.setResponseCode(code, message)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()


class ForwardProxyChannel(Proxy):
    """
    The HTTP channel a connection becomes once it is known to be a
    plain-HTTP proxy request.

    @ivar authorize: C{(Proxy-Authorization value or None) ->
        Deferred[None or reason]}: C{None} lets the request through.
    @ivar connect: C{(host, port, factory) -> Deferred}: connects to the
        origin the way the server connects everywhere.
    @ivar noteRequest: called with C{(method, host, port)} for each request.
    @ivar noteStatus: called with the status code of each response.
    """

    requestFactory = ForwardRequest
    #: Lines end in LF, with or without a CR before it (RFC 9112 section
    #: 2.2), as in the first head, which L{socksrelay.httpwire} parsed:
    #: twisted.web alone splits on CRLF only, and would wait for ever.
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        Proxy.lineReceived(self, line)
    #: The user's L{socksrelay.throttle.UserThrottle}, once a request of a
    #: user with bandwidth limits has logged in.
    throttle: Any = None

    def __init__(
        self,
        authorize: Callable[[str | None], Deferred[str | None]],
        connect: Callable[[str, int, Any], Deferred[Any]],
        noteRequest: Callable[[str, str, int], None],
        noteStatus: Callable[[int], None],
    ) -> None:
        Proxy.__init__(self)
        self.authorize = authorize
        self.connect = connect
        self.noteRequest = noteRequest
        self.noteStatus = noteStatus

    def clientEOF(self) -> None:
        """
        The client sends no more: close once the response to the last
        request is finished; at once when that request was cut short (its
        head or body incomplete), as it can never be answered.
        """
        transport: Any = self.transport
        last = self.requests[-1] if self.requests else None
        if last is not None and last.received:
            last.notifyFinish().addBoth(lambda _: transport.loseConnection())
        else:
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        Proxy.connectionLost(self, reason)


class CountingTransport:
    """
    Stands for a transport, counting the bytes written through it.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self._transport.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.written += sum(len(chunk) for chunk in data)
        self._transport.writeSequence(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def channelFactory(reactor: Any, idleTimeout: float) -> HTTPFactory:
    """
    The L{HTTPFactory} that gives forward-proxy channels their reactor and
    idle timeout (it writes no access log of its own).
    """
    factory = HTTPFactory(logPath=None, timeout=idleTimeout, reactor=reactor)
    factory.log = lambda request: None  # type: ignore[method-assign]
    return factory
