# -*- test-case-name: tests.test_shutdown -*-
"""
Graceful shutdown.

On SIGTERM the proxy stops listening at once and lets live sessions finish
for up to the drain timeout; then it closes the rest (each logged, with
reason C{shutdown}) and exits with status 0.  A second SIGTERM closes
everything at once.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from socksrelay.signals import SignalHandler


class DrainService(Service):
    """
    Holds the reactor's shutdown until the factory's live sessions are gone
    or the drain timeout has passed.

    Added to the service tree beside the listening services: the
    L{twisted.application.service.MultiService} stops them all at once, so
    the ports close at once while this one waits.
    """

    _log = Logger()
    POLL = 0.1

    def __init__(self, factory: Any, reactor: Any, drainTimeout: float) -> None:
        self.factory = factory
        self.reactor = reactor
        self.drainTimeout = drainTimeout
        self._terminating = False
        self._sigterm = SignalHandler("SIGTERM", self._signalled)
        self._drained: Deferred[None] | None = None
        self._calls: list[Any] = []

    def startService(self) -> None:
        # The reactor installed its own SIGTERM handler when it started (it
        # makes twistd exit with the signal); ours makes a clean exit 0 and
        # lets a second signal cut the drain short.
        Service.startService(self)
        # After the reactor's own handlers, which it installs as it runs.
        self.reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        if self.running:
            self._sigterm.install()

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.terminate)

    def terminate(self) -> None:
        """
        SIGTERM: the first one starts the shutdown, a later one closes every
        session at once.
        """
        if not self._terminating:
            self._terminating = True
            self._log.info(
                "SIGTERM: no longer listening; letting {count} live sessions "
                "finish for up to {timeout:g} s",
                count=len(self.factory.live),
                timeout=self.drainTimeout,
            )
            self.reactor.stop()
        else:
            self._log.info(
                "second SIGTERM: closing {count} live sessions now",
                count=len(self.factory.live),
            )
            self.closeAll("shutdown: second SIGTERM")

    def closeAll(self, reason: str) -> None:
        """
        Close every live session at once.
        """
        for protocol in list(self.factory.live):
            protocol.session.noteClose(reason)
            for end in (protocol, protocol.peer):
                transport = getattr(end, "transport", None)
                if transport is not None:
                    transport.abortConnection()

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if not self.factory.live:
            self._sigterm.restore()
            return None
        self._terminating = True
        drained: Deferred[None] = Deferred()
        self._drained = drained
        self._calls.append(self.reactor.callLater(self.POLL, self._poll))
        self._calls.append(
            self.reactor.callLater(self.drainTimeout, self._drainTimeout)
        )
        return drained

    def _poll(self) -> None:
        if not self.factory.live:
            self._finish()
            return
        self._calls.append(self.reactor.callLater(self.POLL, self._poll))

    def _drainTimeout(self) -> None:
        count = len(self.factory.live)
        if count:
            self._log.info(
                "drain timeout: closing {count} live sessions", count=count
            )
            self.closeAll("shutdown: drain timeout")

    def _finish(self) -> None:
        self._sigterm.restore()
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        if self._drained is not None and not self._drained.called:
            self._drained.callback(None)
