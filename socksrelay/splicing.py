# -*- test-case-name: tests.test_splicing -*-
"""
Zero-copy relaying on Linux: once a plain TCP relay is established, its
bytes move socket to pipe to socket with C{splice(2)}, never through Python
buffers.

Each end's Twisted transport stays connected but paused (it reads nothing
and has nothing to write); the splicer registers its own descriptor with
the reactor for each socket, on a duplicate of the socket's file
descriptor, so that the reactor's bookkeeping of the transport and of the
splicer never collide.  Everything that ends a session still goes through
the transports (C{loseConnection}, C{abortConnection}); the relay end's
C{connectionLost} tells the splicer, which then lets go of that socket.

Back-pressure is the pipe: a direction reads from its source only while
its pipe is empty, so at most one pipe's worth (L{CHUNK} bytes) is in
flight per direction, held by the kernel.

A relay starts on the ordinary transport-to-transport path; once it has
carried L{AFTER} bytes one way (a bulk transfer, not a chat), it moves to
the splicer if it can: Linux with C{os.splice}, both transports plain TCP
(not TLS, not wrapped), nothing left buffered in either, no bandwidth
throttle.  Short sessions so never pay for the pipes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from typing import Any

from twisted.internet import error, tcp
from twisted.internet.interfaces import IReadWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

AVAILABLE = hasattr(os, "splice") and sys.platform.startswith("linux")

#: Bytes moved per C{splice} call, and the pipe size asked for.
CHUNK = 256 * 1024

#: Bytes a relay carries one way on the ordinary path before it moves to
#: the splicer; after a refused try (out of file descriptors), as many again.
AFTER = 256 * 1024

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)

_log = Logger()


def buffered(transport: Any) -> int:
    """
    Bytes the transport holds that it has not sent yet.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def plainTCP(transport: Any) -> bool:
    """
    Whether C{transport} is a plain TCP connection (not TLS, not wrapped),
    whose socket bytes can be sent to directly.
    """
    return isinstance(transport, tcp.Connection) and not transport.TLS


def spliceable(transport: Any) -> bool:
    """
    Whether C{transport} is a plain TCP connection whose socket the splicer
    can take over, once anything it buffered is sent.
    """
    return (
        AVAILABLE
        and plainTCP(transport)
        and transport.connected
        and not transport.disconnecting
    )


def writeThrough(transport: Any, data: bytes) -> None:
    """
    Write C{data} to a plain TCP C{transport}: straight to its socket when
    nothing is queued before it, so a relayed chunk leaves in the same
    reactor turn it arrived in; what the socket does not take (or any
    error) goes through the transport's buffer as usual.
    """
    if buffered(transport) or transport.disconnecting or not transport.connected:
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # Full (EAGAIN), or failing: the transport's own write path queues
        # the bytes, or meets the error and closes as it always does.
        sent = 0
    if sent < len(data):
        transport.write(data[sent:] if sent else data)


@implementer(IReadWriteDescriptor)
class _Socket:
    """
    One socket of a spliced relay, as the reactor sees it: a duplicate of
    the transport's file descriptor, readable for the direction that starts
    here and writable for the one that ends here.
    """

    __slots__ = ("splicer", "end", "fd", "reading", "writing")

    def __init__(self, splicer: Splicer, end: Any) -> None:
        self.splicer = splicer
        self.end = end
        self.fd = os.dup(end.transport.fileno())
        self.reading = False
        self.writing = False

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "splice"

    def doRead(self) -> None:
        self.splicer.readable(self)

    def doWrite(self) -> None:
        self.splicer.writable(self)

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor saw the socket fail or hang up (epoll reports that even
        on a socket registered only for writing), or it is disconnecting
        every descriptor as it stops: end this socket's transport with the
        socket's own error.  Any other reason is a bug in the splicer: end
        the relay rather than leave it half-driven.
        """
        if self.fd >= 0 and reason.check(error.ConnectionDone, error.ConnectionLost):
            code = errno.EPIPE
            try:
                with socket.socket(fileno=os.dup(self.fd)) as probe:
                    code = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or code
            except OSError:
                pass
            self.splicer._lost(self, OSError(code, os.strerror(code)))
            return
        _log.failure("splice relay failed", reason)
        self.splicer.abort()


class _Direction:
    """
    Bytes from C{source} to C{sink} through one pipe.
    """

    __slots__ = ("source", "sink", "r", "w", "pending", "eof", "closeSink")

    def __init__(self, source: _Socket, sink: _Socket) -> None:
        self.source = source
        self.sink = sink
        self.r = self.w = -1
        self.pending = 0
        self.eof = False
        #: Close the sink once the pipe is empty (its peer is gone).
        self.closeSink = False

    def openPipe(self) -> None:
        self.r, self.w = PIPES.take()

    def closePipe(self) -> None:
        """
        Let go of the pipe: lent back when empty, closed (its bytes with
        it) when not.
        """
        if self.r >= 0:
            if self.pending:
                os.close(self.r)
                os.close(self.w)
            else:
                PIPES.give(self.r, self.w)
        self.r = self.w = -1
        self.pending = 0


class PipePool:
    """
    Pipes lent to spliced directions only while bytes are in them: a
    direction takes one to read into and gives it back once it has written
    everything out.  So a relay that is idle, or whose bytes flow straight
    through, holds no pipe; only directions whose sink is full do.  This
    keeps file descriptors and the kernel's per-user pipe allowance
    (C{fs.pipe-user-pages-soft}, which counts a pipe's whole size) for
    relays that need them.

    Up to L{keep} empty pipes wait for the next taker while any splicer is
    alive; when the last one ends they are closed.
    """

    keep = 16

    def __init__(self) -> None:
        self.idle: list[tuple[int, int]] = []
        self.users = 0

    def take(self) -> tuple[int, int]:
        if self.idle:
            return self.idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, CHUNK)
        except OSError:
            # Over the user's pipe allowance, or above pipe-max-size: the
            # default size works too, in smaller steps.
            pass
        return r, w

    def give(self, r: int, w: int) -> None:
        if self.users > 0 and len(self.idle) < self.keep:
            self.idle.append((r, w))
        else:
            os.close(r)
            os.close(w)

    def enter(self) -> None:
        self.users += 1

    def leave(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.users = 0
            while self.idle:
                r, w = self.idle.pop()
                os.close(r)
                os.close(w)


PIPES = PipePool()


class Splicer:
    """
    A relay between two L{socksrelay.relay.RelayEnd}s that moves bytes with
    C{splice(2)}.  Built by L{start}; each end's C{splicer} points to it.
    """

    __slots__ = ("reactor", "a", "b", "up", "down", "_done")

    def __init__(self, reactor: Any, a: Any, b: Any) -> None:
        self.reactor = reactor
        self.a = _Socket(self, a)
        try:
            self.b = _Socket(self, b)
        except OSError:
            os.close(self.a.fd)
            raise
        self.up = _Direction(self.a, self.b)
        self.down = _Direction(self.b, self.a)
        self._done = False
        PIPES.enter()

    # -- registration ----------------------------------------------------

    def _read(self, side: _Socket, on: bool) -> None:
        if side.fd < 0 or side.reading == on:
            return
        side.reading = on
        if on:
            self.reactor.addReader(side)
        else:
            self.reactor.removeReader(side)

    def _write(self, side: _Socket, on: bool) -> None:
        if side.fd < 0 or side.writing == on:
            return
        side.writing = on
        if on:
            self.reactor.addWriter(side)
        else:
            self.reactor.removeWriter(side)

    def _direction(self, source: _Socket) -> _Direction:
        return self.up if source is self.a else self.down

    # -- moving bytes ----------------------------------------------------

    def readable(self, side: _Socket) -> None:
        d = self._direction(side)
        if d.pending or d.eof:
            self._read(side, False)
            return
        if d.w < 0:
            try:
                d.openPipe()
            except OSError as e:
                # Out of file descriptors: this side cannot go on.
                self._lost(side, e)
                return
        try:
            n = os.splice(side.fd, d.w, CHUNK, flags=_FLAGS)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(side, e)
            return
        if n == 0:
            d.eof = True
            self._read(side, False)
            self._drained(d)
            return
        d.pending += n
        end = side.end
        end.bytesIn += n
        if end.activity is not None:
            end.activity.count += 1
        self._flush(d)

    def writable(self, side: _Socket) -> None:
        d = self._direction(self.b if side is self.a else self.a)
        if d.pending:
            self._flush(d)
        else:
            self._write(side, False)

    def _flush(self, d: _Direction) -> None:
        sink = d.sink
        while d.pending:
            try:
                n = os.splice(d.r, sink.fd, d.pending, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError as e:
                self._lost(sink, e)
                return
            d.pending -= n
        if d.pending:
            # The sink is full: stop reading the source until it drains.
            self._read(d.source, False)
            self._write(sink, True)
            return
        self._write(sink, False)
        # Empty: the pipe goes back to the pool until more bytes come.
        d.closePipe()
        if d.eof or d.closeSink:
            self._drained(d)
        elif d.source.fd >= 0:
            self._read(d.source, True)

    def _drained(self, d: _Direction) -> None:
        """
        C{d}'s pipe is empty after its source sent EOF or went away: pass
        the EOF on (or close the sink whose peer is gone).
        """
        if d.pending:
            return
        sinkEnd = d.sink.end
        if d.closeSink:
            self.release(sinkEnd)
            if not sinkEnd._lost:
                sinkEnd.transport.loseConnection()
            return
        # The source sent EOF: tell its protocol, as its transport would
        # have; the relay passes it on as a write shutdown of the sink.
        d.source.end.readConnectionLost()

    def _lost(self, side: _Socket, e: OSError) -> None:
        """
        A socket failed (reset, broken pipe): its transport is lost, as if
        the reactor had seen it.
        """
        end = side.end
        transport = end.transport
        if end._lost or transport is None:
            return
        if transport.disconnected or getattr(transport, "_aborting", False):
            # Already closing (an abort in this same turn): its own
            # connectionLost is on the way.
            self.release(end)
            return
        reason = os.strerror(e.errno) if e.errno else str(e)
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            failure = Failure(error.ConnectionLost(reason))
        else:
            failure = Failure(error.ConnectionLost(f"splice: {reason}"))
        self.release(end)
        end.transport.connectionLost(failure)

    # -- letting go ------------------------------------------------------

    def pendingTo(self, end: Any) -> int:
        """
        Bytes in the pipe on their way to C{end}.
        """
        d = self.down if end is self.a.end else self.up
        return d.pending

    def closeAfterDrain(self, end: Any) -> None:
        """
        C{end}'s peer is gone: send C{end} what is still in the pipe, then
        close it.
        """
        d = self.down if end is self.a.end else self.up
        d.closeSink = True
        self._read(d.source, False)
        if d.pending:
            self._flush(d)
        else:
            self._drained(d)

    def release(self, end: Any) -> None:
        """
        Stop driving C{end}'s socket: unregister and close its duplicate,
        and close the pipes that no longer have a use.
        """
        side = self.a if end is self.a.end else self.b
        if side.fd >= 0:
            self._read(side, False)
            self._write(side, False)
            os.close(side.fd)
            side.fd = -1
        outgoing = self._direction(side)
        incoming = self.down if outgoing is self.up else self.up
        # Nothing more can reach this socket; what it sent may still be
        # flowing to the peer.
        incoming.closePipe()
        self._read(incoming.source, False)
        if not outgoing.pending:
            outgoing.closePipe()
        if self.a.fd < 0 and self.b.fd < 0 and not self._done:
            self.up.closePipe()
            self.down.closePipe()
            self._done = True
            PIPES.leave()

    def abort(self) -> None:
        """
        End the relay at once (a failure inside the splicer).
        """
        for side in (self.a, self.b):
            end = side.end
            self.release(end)
            if not end._lost and end.transport is not None:
                end.transport.abortConnection()


def possible(a: Any, b: Any) -> bool:
    """
    Whether the relay between the ends C{a} and C{b} could ever be spliced:
    both transports are plain TCP connections on Linux.
    """
    return spliceable(a.transport) and spliceable(b.transport)


def start(reactor: Any, a: Any, b: Any) -> Splicer | None:
    """
    Take over the relay between the ends C{a} and C{b} (each other's peers,
    with nothing buffered in either transport) if both transports allow it;
    return the L{Splicer}, or C{None} when the ordinary relay must go on.
    """
    if not possible(a, b):
        return None
    try:
        splicer = Splicer(reactor, a, b)
    except OSError:
        # Out of file descriptors: the ordinary relay needs none more.
        return None
    # The ends no longer feed each other's transports: no producers.
    a.transport.unregisterProducer()
    b.transport.unregisterProducer()
    a.transport.pauseProducing()
    b.transport.pauseProducing()
    a.splicer = b.splicer = splicer
    splicer._read(splicer.a, True)
    splicer._read(splicer.b, True)
    return splicer
