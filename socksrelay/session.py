# -*- test-case-name: tests.test_server -*-
"""
What the proxy remembers of one client session, and the one log event it
writes when the session ends.
"""

from __future__ import annotations

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

    def __init__(self, reactor: Any, client: str, listener: str) -> None:
        self._reactor = reactor
        self.started = reactor.seconds()
        self.client = client
        self.listener = listener
        self.protocol = "socks5"
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

    def noteClose(self, reason: str) -> None:
        """
        Record why the session is ending, unless a reason is already known.
        """
        if self.reason is None:
            self.reason = reason

    def sideClosed(self, isClient: bool, reason: Failure) -> None:
        """
        One of the connections is closed; log the session once both are.
        """
        side = "client" if isClient else "target"
        if reason.check(ConnectionDone):
            self.noteClose(f"{side} closed")
        else:
            text = reason.getErrorMessage()
            self.noteClose(f"{side} connection lost: {text}")
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
        bytesUp = self.clientEnd.bytesIn if self.clientEnd is not None else 0
        bytesDown = self.outbound.bytesIn if self.outbound is not None else 0
        if self.downCounter is not None:
            bytesDown = self.downCounter()
        extra = "".join(f" {key}={{{key}}}" for key in self.details)
        self._log.info(
            "session ended: protocol={protocol} client={client} user={user} "
            "command={command} "
            "destination={destination} resolved={resolved} reply={replyText} "
            "up={bytesUp} down={bytesDown}" + extra + " "
            "duration={duration:.3f}s reason={reason}",
            **self.details,
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
            replyText=self.replyText
            or ("-" if self.reply is None else f"0x{self.reply:02x}"),
            bytesUp=bytesUp,
            bytesDown=bytesDown,
            duration=self._reactor.seconds() - self.started,
            reason=self.reason,
        )
