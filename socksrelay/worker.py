# -*- test-case-name: tests.test_workers -*-
"""
One worker of C{twistd socks5 --workers N}, started by
L{socksrelay.workers.WorkerSupervisor} as::

    python -m socksrelay.worker --index I --count N --listen FD:BACKLOG... \\
        [--control ENDPOINT] -- SOCKS5-OPTIONS

It serves clients on the listening sockets it inherited (C{--listen}, one
per C{--port} of the supervisor) with a proxy built from the C{socks5}
options, as one C{twistd socks5} process would (drain on SIGTERM, reload on
SIGHUP, access log), numbers its sessions I + 1, I + 1 + N..., serves its
metrics and sessions on C{--control} (a private socket the supervisor asks),
writes its log to standard output as JSON lines for the supervisor, and
stops when its standard input (a pipe from the supervisor) ends.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from typing import Any, ClassVar

from twisted.application.service import MultiService, Service
from twisted.internet import fdesc, tcp, unix
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ReactorNotRunning
from twisted.internet.process import ProcessReader
from twisted.logger import Logger, formatEvent, globalLogBeginner
from twisted.python import usage
from twisted.python.failure import Failure

from socksrelay import tap
from socksrelay.control import controlService
from socksrelay.relay import describeAddress
from socksrelay.session import Session


class WorkerOptions(usage.Options):
    """
    The command line of a worker; the C{socks5} options follow C{--}.
    """

    synopsis = "--index I --count N --listen FD:BACKLOG... [--control ENDPOINT] -- SOCKS5-OPTIONS"

    optParameters: ClassVar[list[list[Any]]] = [
        ["index", None, 0, "This worker's number, from 0.", int],
        ["count", None, 1, "How many workers there are.", int],
        ["control", None, None, "Serve metrics and sessions here, for the supervisor."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, value: str) -> None:
        """An inherited listening socket: FD:BACKLOG (the backlog it was made with)."""
        fd, _, backlog = value.partition(":")
        try:
            self["listen"].append((int(fd), int(backlog or 50)))
        except ValueError:
            raise usage.UsageError(f"--listen {value!r}: expected FD:BACKLOG") from None

    def parseArgs(self, *socks5: str) -> None:
        self["socks5"] = list(socks5)

    def postOptions(self) -> None:
        if not 0 <= self["index"] < self["count"]:
            raise usage.UsageError("--index must be from 0 to --count - 1")


class SharedUNIXPort(unix.Port):
    """
    A UNIX listening socket shared with the supervisor and the other
    workers.  The supervisor made it and owns its path, so a worker keeps
    its mode and backlog, and neither shuts it down nor removes its path
    when it stops listening.
    """

    _shouldShutdown = False

    @classmethod
    def adopt(cls, reactor: Any, fd: int, factory: Any, backlog: int) -> SharedUNIXPort:
        """
        Listen for C{factory} on the UNIX socket C{fd} (a copy of it).
        """
        port = cls._fromListeningDescriptor(reactor, fd, factory)
        # startListening calls listen(2) and chmod(2) again: with the
        # values the supervisor used.
        port.backlog = backlog
        path = os.fsdecode(port._bindPath or "")
        if path and not path.startswith("\0"):
            port.mode = stat.S_IMODE(os.stat(path).st_mode)
        port.startListening()
        return port  # type: ignore[no-any-return]

    def connectionLost(self, reason: Failure) -> None:
        # Not unix.Port's, which removes the path.
        tcp.Port.connectionLost(self, reason)


def adoptPort(reactor: Any, fd: int, backlog: int, factory: Any) -> Any:
    """
    Accept connections for C{factory} on the inherited listening socket
    C{fd}; the port works on a copy, and C{fd} is closed.
    """
    probe = socket.socket(fileno=fd)
    family = probe.family
    probe.detach()
    fdesc.setNonBlocking(fd)
    try:
        if family == socket.AF_UNIX:
            return SharedUNIXPort.adopt(reactor, fd, factory, backlog)
        return reactor.adoptStreamPort(fd, family, factory)
    finally:
        os.close(fd)


class SharedPortsService(Service):
    """
    Accepts clients for C{factory} on the inherited listening sockets
    C{sockets} (C{(fd, backlog)} pairs) while it runs.
    """

    _log = Logger()

    def __init__(self, reactor: Any, factory: Any, sockets: list[tuple[int, int]]) -> None:
        self.reactor = reactor
        self.factory = factory
        self.sockets = list(sockets)
        self.ports: list[Any] = []

    @property
    def listening(self) -> int:
        """
        How many of them it accepts on now (for the metrics).
        """
        return len(self.ports)

    def startService(self) -> None:
        Service.startService(self)
        sockets, self.sockets = self.sockets, []
        for fd, backlog in sockets:
            self.ports.append(adoptPort(self.reactor, fd, backlog, self.factory))
        ownListeners = getattr(self.factory, "ownListeners", None)
        if ownListeners is not None:
            for port in self.ports:
                ownListeners.add(port.getHost())
        self._log.info(
            "ready: accepting clients on {addresses}",
            addresses=", ".join(describeAddress(p.getHost()) for p in self.ports),
        )

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        ports, self.ports = self.ports, []
        return gatherResults([p.stopListening() for p in ports])


class _SupervisorWatch:
    """
    What a L{ProcessReader} on standard input reports to: the end of the
    pipe from the supervisor.
    """

    def __init__(self, gone: Any) -> None:
        self._gone = gone

    def childDataReceived(self, name: str, data: bytes) -> None:
        pass

    def childConnectionLost(self, name: str, reason: Failure) -> None:
        self._gone()


class SupervisorWatchService(Service):
    """
    Stops the worker, as SIGTERM would (its sessions drain), when its
    standard input ends: the supervisor is gone.
    """

    _log = Logger()

    def __init__(self, reactor: Any, fd: int = 0) -> None:
        self.reactor = reactor
        self.fd = fd
        self._reader: Any = None

    def startService(self) -> None:
        Service.startService(self)
        self._reader = ProcessReader(
            self.reactor, _SupervisorWatch(self.supervisorGone), "supervisor", self.fd
        )

    def stopService(self) -> None:
        Service.stopService(self)
        if self._reader is not None:
            self._reader.stopReading()

    def supervisorGone(self) -> None:
        self._reader = None
        if not self.running:
            return
        self._log.warn("the supervisor is gone (standard input closed): stopping")
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass


def makeWorkerService(
    options: WorkerOptions, config: tap.Options, reactor: Any
) -> MultiService:
    """
    The services of one worker, from its own options and the C{socks5}
    ones.
    """
    Session.numberFrom(options["index"] + 1, options["count"])
    factory = tap.makeFactory(config, reactor)
    top = MultiService()
    tap.addSessionServices(top, config, factory, reactor)
    ports = SharedPortsService(reactor, factory, options["listen"])
    ports.setServiceParent(top)
    if options["control"]:
        controlService(
            factory,
            options["control"],
            reactor,
            perUser=bool(config.get("metrics-per-user")),
            maxUsers=config.get("metrics-max-users", 100),
            listeningSockets=lambda: ports.listening,
            private=True,
        ).setServiceParent(top)
    SupervisorWatchService(reactor).setServiceParent(top)
    return top


#: Field values a log record carries across to the supervisor as they are.
_SCALARS = (str, int, float, bool, type(None))


def encodeEvent(event: dict[str, Any]) -> str:
    """
    One log event as the line a worker writes for the supervisor: a record
    separator, then JSON of the text already formatted here (with the
    traceback, if any), the level, namespace and time, and the event's
    plain-valued fields.  Cheaper than L{twisted.logger.eventAsJSON}, which
    flattens and serialises every field: the supervisor relays a line per
    session.
    """
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}"
    record = {
        key: value
        for key, value in event.items()
        if not key.startswith("log_") and isinstance(value, _SCALARS)
    }
    level = event.get("log_level")
    record["log_level"] = getattr(level, "name", "info")
    record["log_namespace"] = event.get("log_namespace", "-")
    record["log_time"] = event.get("log_time")
    record["log_text"] = text
    return "\x1e" + json.dumps(record, default=str) + "\n"


def compactLogObserver(out: Any) -> Any:
    """
    A log observer writing L{encodeEvent} lines to C{out}.
    """

    def observe(event: dict[str, Any]) -> None:
        out.write(encodeEvent(event))

    return observe


def main(argv: list[str] | None = None) -> None:
    """
    Run one worker until it is stopped.
    """
    # Its own process group: a Ctrl-C at a terminal reaches the supervisor,
    # which passes a SIGTERM on, rather than every worker at once.
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    globalLogBeginner.beginLoggingTo(
        [compactLogObserver(sys.stdout)], redirectStandardIO=False
    )
    try:
        options = WorkerOptions()
        options.parseOptions(sys.argv[1:] if argv is None else argv)
        config = tap.Options()
        config.parseOptions(options["socks5"])
    except usage.UsageError as e:
        Logger().critical("worker: bad command line: {error}", error=str(e))
        sys.exit(2)

    from twisted.internet import reactor

    service = makeWorkerService(options, config, reactor)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    # Run the module's own copy, not this __main__ one, so that its classes
    # (and log namespaces) are socksrelay.worker's.
    from socksrelay.worker import main as _main

    _main()
