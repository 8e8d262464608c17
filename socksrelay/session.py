# -*- test-case-name: tests.test_server -*-
"""
What the proxy remembers of one client session, and the one log event it
writes when the session ends.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure


class Session:
    """
    The facts of one client session, filled in as it goes.

    The end-of-session event is emitted once, when the client connection and
    (if there was one) the outbound connection are both closed.
    """

    _log = Logger()

    _ids = itertools.count(1)

    @classmethod
    def numberFrom(cls, start: int, step: int = 1) -> None:
        """
        Number the sessions made from now on C{start}, C{start + step},
        C{start + 2 * step}...: worker I of N (0-based) of C{--workers}
        numbers from I + 1 in steps of N, so ids are unique across workers.
        """
        cls._ids = itertools.count(start, step)

    def __init__(
        self, reactor: Any, client: str, listener: str, observers: Any = ()
    ) -> None:
        self._reactor = reactor
        #: A number unique in this process, for logs and the control API.
        self.id = next(Session._ids)
        self.started = reactor.seconds()
        #: When the request was in (the handshake done), when the outbound
        #: connection or listening socket began, and when it was up.
        self.handshakeDone: float | None = None
        self.connectStarted: float | None = None
        self.connected: float | None = None
        #: Who closed first: C{client}, C{target} or C{proxy} (with C{reason}).
        self.closedBy: str | None = None
        #: L{ISessionObserver}s told when the session starts and ends.
        self.observers = tuple(observers)
        self.client = client
        self.listener = listener
        #: C{socks5}, C{socks4}, C{socks4a}, C{http}; C{None} while (or if)
        #: not known.
        self.protocol: str | None = "socks5"
        self.method: str | None = None
        self.user: str | None = None
        self.command: str | None = None
        self.destination: str | None = None
        self.resolved: str | None = None
        self.bound: str | None = None
        self.reply: int | None = None
        #: The reply as the client's protocol shows it (C{0x00}, C{90},
        #: C{200}...).
        self.replyText: str | None = None
        self.reason: str | None = None
        #: Command-specific facts (BIND's peer, UDP's datagram counts...),
        #: logged as key=value after the common fields, in this order.
        self.details: dict[str, Any] = {}
        self.clientEnd: Any = None
        #: Where bytes to the client are counted when there is no outbound
        #: relay end (HTTP forwarding).
        self.downCounter: Any = None
        self.outbound: Any = None
        self._clientGone = False
        self._outboundGone = False
        self._logged = False

    def noteClose(self, reason: str, by: str = "proxy") -> None:
        """
        Record why the session is ending and who ended it, unless known.
        """
        if self.reason is None:
            self.reason = reason
            self.closedBy = by

    def start(self) -> None:
        """
        Tell the observers that the session began.
        """
        for observer in self.observers:
            observer.sessionStarted(self)

    def count(self, event: str, **fields: Any) -> None:
        """
        Tell the observers about something countable that happened in the
        session (C{auth-failure}, C{denied}, C{udp-drop}...).
        """
        for observer in self.observers:
            observer.eventCounted(self, event, fields)

    @property
    def bytesUp(self) -> int:
        """
        Bytes relayed from the client so far.
        """
        return self.clientEnd.bytesIn if self.clientEnd is not None else 0

    @property
    def bytesDown(self) -> int:
        """
        Bytes relayed to the client so far.
        """
        if self.downCounter is not None:
            return int(self.downCounter())
        return self.outbound.bytesIn if self.outbound is not None else 0

    def sideClosed(self, isClient: bool, reason: Failure) -> None:
        """
        One of the connections is closed; log the session once both are.
        """
        side = "client" if isClient else "target"
        if reason.check(ConnectionDone):
            self.noteClose(f"{side} closed", side)
        else:
            text = reason.getErrorMessage()
            self.noteClose(f"{side} connection lost: {text}", side)
        if isClient:
            self._clientGone = True
        else:
            self._outboundGone = True
        if self._clientGone and (self.outbound is None or self._outboundGone):
            self.log()

    def log(self) -> None:
        """
        Emit the end-of-session event (once).
        """
        if self._logged:
            return
        self._logged = True
        self.ended = self._reactor.seconds()
        bytesUp, bytesDown = self.bytesUp, self.bytesDown
        duration = self.ended - self.started
        replyText = self.replyText or (
            "-" if self.reply is None else f"0x{self.reply:02x}"
        )
        # The line is formatted here, once, with an f-string: letting the
        # log observer format twenty fields costs more than the rest of a
        # short session.  Every fact is still in the event as a field.
        extra = "".join(f" {key}={value}" for key, value in self.details.items())
        summary = (
            f"protocol={self.protocol} client={self.client} user={self.user} "
            f"command={self.command} destination={self.destination} "
            f"resolved={self.resolved} reply={replyText} "
            f"up={bytesUp} down={bytesDown}{extra} "
            f"duration={duration:.3f}s reason={self.reason}"
        )
        self._log.info(
            "session ended: {summary}",
            summary=summary,
            **self.details,
            sessionId=self.id,
            started=self.started,
            closedBy=self.closedBy,
            handshakeDone=self.handshakeDone,
            connectStarted=self.connectStarted,
            connected=self.connected,
            client=self.client,
            listener=self.listener,
            protocol=self.protocol,
            method=self.method,
            user=self.user,
            command=self.command,
            destination=self.destination,
            resolved=self.resolved,
            bound=self.bound,
            reply=self.reply,
            replyText=replyText,
            bytesUp=bytesUp,
            bytesDown=bytesDown,
            duration=duration,
            reason=self.reason,
        )
        for observer in self.observers:
            observer.sessionEnded(self)
