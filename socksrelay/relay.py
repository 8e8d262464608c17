# -*- test-case-name: tests.test_server -*-
"""
The relay: two connections spliced together with flow control both ways and
half-close passed through.

Each side is a L{RelayEnd}.  Once L{splice} has joined two ends, bytes read on
one are written to the other, each transport is registered as the streaming
producer of the other (so a slow reader pauses the fast writer instead of
growing a buffer), an EOF on one side becomes a write shutdown on the other,
and a connection that is lost tears down its peer.
"""

from __future__ import annotations

from typing import Any, Callable

from zope.interface import implementer

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from socksrelay import splicing
from socksrelay.wire import normaliseAddress


def describeAddress(address: Any) -> str:
    """
    Format a Twisted address for logs: C{1.2.3.4:80}, C{[::1]:80}, or the
    path of a UNIX socket.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        host = normaliseAddress(host)
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    name = getattr(address, "name", None)
    if name is not None:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        return f"unix:{name}"
    return str(address)


RELAY_BUFFER = 256 * 1024


def closeTransport(transport: Any) -> None:
    """
    Close C{transport} once what it holds is sent.  A TLS transport is
    first freed of its producer (the relay's other side, which has nothing
    more for a side being closed): Twisted's TLS sends its close_notify only
    once no producer is registered.
    """
    if ISSLTransport.providedBy(transport):
        transport.unregisterProducer()
    transport.loseConnection()


class Activity:
    """
    A count of the chunks relayed, shared by both ends of a relay and read
    by L{Watchdog}s: counting costs an addition, not a timer reset.
    """

    count = 0


class Watchdog:
    """
    Calls C{onExpire} once C{activity} has not moved for C{timeout} seconds
    (checked four times per timeout, so it fires between C{timeout} and
    1.25 times C{timeout}).
    """

    CHECKS = 4

    def __init__(
        self, reactor: Any, timeout: float, activity: Activity, onExpire: Callable[[], None]
    ) -> None:
        self._reactor = reactor
        self._interval = timeout / self.CHECKS
        self._activity = activity
        self._onExpire = onExpire
        self._seen = activity.count
        self._silent = 0
        self._call: IDelayedCall | None = reactor.callLater(self._interval, self._check)

    def _check(self) -> None:
        self._call = None
        if self._activity.count != self._seen:
            self._seen = self._activity.count
            self._silent = 0
        else:
            self._silent += 1
            if self._silent >= self.CHECKS:
                self._onExpire()
                return
        self._call = self._reactor.callLater(self._interval, self._check)

    def stop(self) -> None:
        """
        Stop watching.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


@implementer(IPushProducer)
class ReadGate:
    """
    The streaming producer registered for a relay end's transport when the
    end is throttled: the transport reads only while no reason to pause
    holds.  The peer's backpressure is one reason (C{"backpressure"}, from
    L{pauseProducing}/L{resumeProducing}), the bandwidth throttle another
    (C{"throttle"}), so the peer's write buffer draining does not resume a
    transport paused for want of tokens, nor the reverse.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.reasons: set[str] = set()

    def pause(self, reason: str) -> None:
        """
        Stop reading for C{reason}.
        """
        if not self.reasons:
            self.transport.pauseProducing()
        self.reasons.add(reason)

    def resume(self, reason: str) -> None:
        """
        C{reason} no longer holds: read again if no other does.
        """
        if reason in self.reasons:
            self.reasons.discard(reason)
            if not self.reasons:
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        self.pause("backpressure")

    def resumeProducing(self) -> None:
        self.resume("backpressure")

    def stopProducing(self) -> None:
        if ISSLTransport.providedBy(self.transport):
            # A TLS transport's stopProducing is its raw socket's, which
            # would close under the TLS layer (no close_notify).
            closeTransport(self.transport)
        else:
            self.transport.stopProducing()


@implementer(IHalfCloseableProtocol)
class RelayEnd(Protocol):
    """
    One side of a relay.

    @ivar peer: the other side, once spliced.
    @ivar bytesIn: bytes read from this side's transport and relayed.
    @ivar onClose: called with (this end, reason) when the connection is lost.
    @ivar closeTimeout: seconds a peer asked to close may take to flush its
        buffer before it is aborted.
    """

    peer: "RelayEnd | None" = None
    bytesIn = 0
    closeTimeout = 30.0
    onClose: Callable[["RelayEnd", Failure], None] | None = None
    onEOF: Callable[["RelayEnd"], None] | None = None
    reactor: Any = None

    _readClosed = False
    _writeClosed = False
    _writeClosing = False
    _lost = False
    _abortCall: IDelayedCall | None = None

    activity: Activity | None = None

    #: the L{socksrelay.throttle.UserThrottle} this end spends from, and
    #: the direction (C{"up"} or C{"down"}) of the bytes it reads.
    throttle: Any = None
    throttleDirection = "up"
    readGate: ReadGate | None = None
    #: The L{socksrelay.splicing.Splicer} moving this end's bytes, if any.
    splicer: Any = None
    #: Once L{bytesIn} reaches this, try to move the relay to the splicer
    #: (0: never).
    spliceAt = 0
    #: The peer's transport is plain TCP: bytes for it are sent at once
    #: when it has nothing queued (L{splicing.writeThrough}).
    sendDirect = False

    def relayData(self, data: bytes) -> None:
        """
        Relay bytes read on this side to the peer.
        """
        self.bytesIn += len(data)
        if self.activity is not None:
            self.activity.count += 1
        if self.sendDirect:
            splicing.writeThrough(self.peer.transport, data)  # type: ignore[union-attr]
        else:
            self.peer.transport.write(data)  # type: ignore[union-attr]
        if self.throttle is not None and not self._lost:
            self.throttle.spent(self, self.throttleDirection, len(data))
        elif self.spliceAt and self.bytesIn >= self.spliceAt:
            self._trySplicing()

    def _trySplicing(self) -> None:
        """
        This end has carried enough to be a bulk transfer: hand the relay
        to a L{splicing.Splicer} once both transports have sent what they
        hold.
        """
        peer = self.peer
        if peer is None or self._finishing() or peer._finishing():
            self.spliceAt = 0
            return
        if splicing.buffered(self.transport) or splicing.buffered(peer.transport):
            # Bytes still queued (a full socket): try again with the next
            # chunk; a queue empties as soon as the socket takes it.
            return
        if splicing.start(self.reactor or peer.reactor, self, peer) is None:
            # Refused (out of file descriptors): not before as many bytes more.
            self.spliceAt = self.bytesIn + splicing.AFTER
            return
        self.spliceAt = peer.spliceAt = 0

    def pauseReading(self, reason: str) -> None:
        """
        Stop reading from this side's transport for C{reason}.
        """
        if self.readGate is None:
            self.readGate = ReadGate(self.transport)
        self.readGate.pause(reason)

    def resumeReading(self, reason: str) -> None:
        """
        C{reason} to pause no longer holds.
        """
        if self.readGate is not None and not self._lost:
            self.readGate.resume(reason)

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.relayData(data)

    def readConnectionLost(self) -> None:
        """
        This side sent EOF: pass it on as a write shutdown of the peer, and
        keep relaying the other direction.
        """
        self._readClosed = True
        if self.onEOF is not None:
            self.onEOF(self)
        peer = self.peer
        if peer is None or peer._lost:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        peer.shutdownWrite()
        self._closeIfDone()

    def writeConnectionLost(self) -> None:
        self._writeClosed = True
        self._closeIfDone()

    def _finishing(self) -> bool:
        """
        Whether this side has begun to close in any way.
        """
        return self._lost or self._readClosed or self._writeClosed or self._writeClosing

    def shutdownWrite(self) -> None:
        """
        Send EOF to this side once its buffer is flushed.
        """
        self._writeClosing = True
        transport: Any = self.transport
        if ISSLTransport.providedBy(transport):
            # Twisted's TLS has no half-close, and its C{loseWriteConnection}
            # reaches through to the raw socket (no close_notify; the TLS
            # layer then writes to a shut socket).  Close the TLS way: what
            # is buffered, then close_notify; the client may still send
            # until it answers with its own.
            closeTransport(transport)
            return
        loseWrite = getattr(transport, "loseWriteConnection", None)
        if loseWrite is None:
            transport.loseConnection()
        else:
            loseWrite()

    def _closeIfDone(self) -> None:
        if self._readClosed and self._writeClosed:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def closeGently(self) -> None:
        """
        Close after flushing what is buffered; abort if that takes longer
        than L{closeTimeout}.
        """
        if self._lost or self.transport is None:
            return
        if self.splicer is not None and self.splicer.pendingTo(self):
            # Bytes the peer sent are still in the pipe: they go first.
            self.splicer.closeAfterDrain(self)
        else:
            closeTransport(self.transport)
        if self._abortCall is None and self.reactor is not None and not self._lost:
            self._abortCall = self.reactor.callLater(self.closeTimeout, self._abort)

    def _abort(self) -> None:
        self._abortCall = None
        if not self._lost:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self.splicer is not None:
            self.splicer.release(self)
        if self.throttle is not None:
            self.throttle.detach(self)
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()
        self._abortCall = None
        peer = self.peer
        if peer is not None:
            peer.closeGently()
        if self.onClose is not None:
            self.onClose(self, reason)


class OutboundProtocol(RelayEnd):
    """
    The connection from the proxy to the destination.
    """


class OutboundFactory(Factory):
    """
    Builds the L{OutboundProtocol} for one outbound connection attempt.
    """

    noisy = False
    protocol = OutboundProtocol

    def __init__(self, reactor: Any, closeTimeout: float) -> None:
        self.reactor = reactor
        self.closeTimeout = closeTimeout

    def buildProtocol(self, addr: Any) -> OutboundProtocol:
        p = OutboundProtocol()
        p.factory = self
        p.reactor = self.reactor
        p.closeTimeout = self.closeTimeout
        return p


def splice(
    a: RelayEnd, b: RelayEnd, early: bytes = b"", zeroCopy: bool = False
) -> None:
    """
    Join two connected ends: each becomes the other's peer, and each
    transport the streaming producer of the other, so that a full write
    buffer on one side pauses reading on the other.  When either end has a
    throttle, the producers registered are the ends' L{ReadGate}s.

    C{early} (bytes C{a} sent before the relay began) is relayed first.
    With C{zeroCopy}, a relay that turns out to be a bulk transfer moves to
    C{splice(2)} when both transports allow it (L{socksrelay.splicing}).
    """
    a.peer = b
    b.peer = a
    if zeroCopy and a.throttle is None and b.throttle is None and splicing.possible(a, b):
        a.spliceAt = a.bytesIn + splicing.AFTER
        b.spliceAt = b.bytesIn + splicing.AFTER
    for end in (a, b):
        t = end.transport
        if hasattr(t, "bufferSize"):
            t.bufferSize = RELAY_BUFFER
            t.SEND_LIMIT = RELAY_BUFFER
    a.sendDirect = splicing.plainTCP(b.transport)
    b.sendDirect = splicing.plainTCP(a.transport)
    if (
        a.throttle is not None
        or b.throttle is not None
        or ISSLTransport.providedBy(a.transport)
        or ISSLTransport.providedBy(b.transport)
    ):
        # Throttled: each transport is registered through a ReadGate, so
        # that backpressure and the throttle pause it independently.  TLS:
        # the gate stops a TLS transport the TLS way.
        for end in (a, b):
            if end.readGate is None:
                end.readGate = ReadGate(end.transport)
            if end.throttle is not None and hasattr(end.transport, "bufferSize"):
                # Reads no larger than the user's burst (see throttle.py).
                end.transport.bufferSize = end.throttle.readSize(  # type: ignore[union-attr]
                    end.throttleDirection, RELAY_BUFFER
                )
        a.transport.registerProducer(b.readGate, True)  # type: ignore[union-attr]
        b.transport.registerProducer(a.readGate, True)  # type: ignore[union-attr]
    else:
        a.transport.registerProducer(b.transport, True)  # type: ignore[union-attr]
        b.transport.registerProducer(a.transport, True)  # type: ignore[union-attr]
    if early:
        a.relayData(early)
