# -*- test-case-name: tests.test_reload -*-
"""
Live reload: on SIGHUP the configuration file and the credential backends
are read again and swapped in, in one step, on the reactor thread.

A file (or C{--auth} backend) with an error is refused with a log line and
the running configuration stays.  Live sessions go on; new sessions see the
new policy.  With C{recheck = true} in the file, live sessions that the new
rules deny are closed, each with a log line.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.cred import strcred
from twisted.cred.portal import Portal
from twisted.logger import Logger

from socksrelay.auth import SOCKSRealm, methodPreference
from socksrelay.config import Config, ConfigError, loadConfig
from socksrelay.limits import Limits
from socksrelay.signals import SignalHandler
from socksrelay.wire import AuthMethod


def buildPortal(
    authDescriptions: Sequence[str], prepare: Callable[[Any], None]
) -> Portal | None:
    """
    Make the checkers that C{--auth} descriptions name, and a portal with
    them (C{None} when there are none).

    @raise Exception: whatever a checker plugin raises for a bad description
        or an unreadable file.
    """
    checkers = []
    for description in authDescriptions:
        checker = strcred.makeChecker(description)
        prepare(checker)
        checkers.append(checker)
    return Portal(SOCKSRealm(), checkers) if checkers else None


class ReloadService(Service):
    """
    Reloads the configuration of a L{socksrelay.server.SOCKS5ServerFactory}
    on SIGHUP.

    @ivar configPath: the C{--config} file, or C{None}.
    @ivar authDescriptions: the C{--auth} arguments, to rebuild the checkers.
    @ivar overrides: option name to value for timeouts given on the command
        line, which win over the file.
    """

    _log = Logger()

    def __init__(
        self,
        factory: Any,
        reactor: Any,
        configPath: str | None,
        authDescriptions: Sequence[str],
        overrides: dict[str, float],
        prepareChecker: Callable[[Any], None] = lambda checker: None,
        externals: Sequence[str] = (),
        defaults: dict[str, float] | None = None,
    ) -> None:
        self.factory = factory
        self.reactor = reactor
        self.configPath = configPath
        self.authDescriptions = list(authDescriptions)
        self.overrides = dict(overrides)
        self.prepareChecker = prepareChecker
        #: Outgoing addresses given on the command line (kept on reload).
        self.externals = list(externals)
        #: The built-in timeouts: what a timeout removed from the file
        #: returns to.
        self.defaults = dict(defaults or {})
        self._sighup = SignalHandler("SIGHUP", self._signalled)

    def privilegedStartService(self) -> None:
        # twistd listens in privilegedStartService, before startService:
        # take SIGHUP now, or one that comes in between would kill us.
        Service.privilegedStartService(self)
        self._sighup.install()

    def startService(self) -> None:
        Service.startService(self)
        self._sighup.install()

    def stopService(self) -> None:
        self._sighup.restore()
        return Service.stopService(self)

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """
        Read everything again and swap it in; C{False} (and the running
        configuration kept) if anything is wrong.
        """
        try:
            config = loadConfig(self.configPath) if self.configPath else Config()
            portal = buildPortal(self.authDescriptions, self.prepareChecker)
            limits = Limits(**config.limits)
        except (ConfigError, Exception) as e:
            self._log.error(
                "reload refused, the running configuration stays: {error}", error=str(e)
            )
            return False
        authRequired = portal is not None and (
            AuthMethod.NO_AUTHENTICATION not in methodPreference(portal)
        )
        timeouts = dict(self.defaults)
        timeouts.update(config.timeouts)
        timeouts.update(self.overrides)
        self.factory.reconfigure(
            portal=portal,
            policy=config.policy(authRequired),
            limits=limits,
            timeouts=timeouts,
            externals=self.externals + config.external,
        )
        self._log.info(
            "configuration reloaded from {path}: {count} rules",
            path=self.configPath or "(command line)",
            count=len(config.rules) or "default",
        )
        if config.recheck:
            closed = self.factory.recheck()
            self._log.info("recheck closed {closed} live sessions", closed=closed)
        return True
