# -*- test-case-name: tests.test_workers -*-
"""
C{--workers N}: one supervisor process and N worker processes.

The supervisor (the C{twistd} process) listens on every C{--port}, says so
in the log as one process would, and never accepts: the workers
(L{socksrelay.worker}, one process each) get the listening sockets as
inherited file descriptors and accept on them, each with a proxy of its own.
The supervisor

  - restarts a worker that dies (at once, or after a delay that grows while
    it keeps dying soon after it starts: L{Backoff});
  - passes SIGHUP (reload) and, with C{--access-log}, SIGUSR1 (reopen) on to
    every worker;
  - on SIGTERM sends SIGTERM to the workers, which drain as one process does
    (C{--drain-timeout}), kills any that outlives the drain by
    L{KILL_MARGIN} seconds, and exits 0; a second SIGTERM is passed on too
    (the workers then close their sessions at once);
  - writes every line a worker logs to its own log, with the worker's
    number in front and in a C{worker} field;
  - with C{--metrics}, serves the metrics and control site for all the
    workers (L{WorkerSource}): each worker serves its own on a UNIX socket
    in a private directory, which the supervisor asks and whose answers it
    adds up.

A worker reads its standard input, a pipe from the supervisor: when that
ends (the supervisor is gone), it stops as on SIGTERM, so no worker outlives
its supervisor for longer than a drain.
"""

from __future__ import annotations

import getopt
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from twisted.application.service import MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

import socksrelay
from socksrelay.auth import SOCKSRealm, methodPreference
from socksrelay.control import REQUESTER_HEADER, SourceUnavailable, sourceService
from socksrelay.interfaces import IControlSource
from socksrelay.metrics import OTHER_USER, PREFIX
from socksrelay.signals import SignalHandler
from socksrelay.wire import AuthMethod

#: Seconds a worker may outlive the drain timeout after SIGTERM before it
#: is killed.
KILL_MARGIN = 5.0

#: Seconds the supervisor waits for a worker's control site to answer.
CONTROL_TIMEOUT = 5.0

#: The options a worker does not get: the supervisor serves the metrics.
SUPERVISOR_ONLY = ("--workers", "--metrics", "--control-token-file")

#: The first file descriptor of a worker that holds a listening socket.
FIRST_LISTENING_FD = 3


def availableCores() -> int:
    """
    The number of cores this process may run on (its CPU affinity where the
    platform tells it, else every core).
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def workerArguments(config: Any) -> list[str]:
    """
    The C{socks5} arguments for a worker: those the supervisor was given
    (re-read with the same C{getopt} rules as L{twisted.python.usage}, so
    abbreviations and C{--name=value} work), without L{SUPERVISOR_ONLY}.
    """
    opts, rest = getopt.getopt(list(config.argv), config.shortOpt, config.longOpt)
    takesValue = {"--" + name[:-1] for name in config.longOpt if name.endswith("=")}
    takesValue.update(
        "-" + letter
        for letter, after in zip(config.shortOpt, config.shortOpt[1:] + " ")
        if letter != ":" and after == ":"
    )
    arguments: list[str] = []
    for name, value in opts:
        if name in SUPERVISOR_ONLY:
            continue
        arguments += [name, value] if name in takesValue else [name]
    return arguments + rest


def workerFor(sessionId: int, count: int) -> int:
    """
    The worker (0-based) that numbered session C{sessionId}: worker I of
    N numbers its sessions I + 1, I + 1 + N, I + 1 + 2N...
    """
    return (sessionId - 1) % count


def describeExit(reason: Failure) -> str:
    """
    How a process ended, for the log: C{status 1}, C{signal 9 (SIGKILL)}.
    """
    value = reason.value
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        try:
            name = signal.Signals(value.signal).name
        except ValueError:
            name = "?"
        return f"signal {value.signal} ({name})"
    return f"status {getattr(value, 'exitCode', None) or 0}"


class Backoff:
    """
    How long to wait before restarting a worker that died: no time when it
    had run for C{quick} seconds or more; C{first} seconds when it died
    sooner, and twice as long each time it does so again, up to C{maximum}.
    """

    def __init__(self, first: float = 1.0, maximum: float = 30.0, quick: float = 5.0) -> None:
        self.first = first
        self.maximum = maximum
        self.quick = quick
        self.delay = 0.0

    def next(self, ranFor: float) -> float:
        """
        The delay before restarting a worker that ran for C{ranFor} seconds.
        """
        if ranFor >= self.quick:
            self.delay = 0.0
        elif not self.delay:
            self.delay = self.first
        else:
            self.delay = min(self.delay * 2, self.maximum)
        return self.delay


# -- metrics -----------------------------------------------------------------


def mergeMetrics(texts: Iterable[str]) -> dict[str, Metric]:
    """
    Add up the Prometheus texts of several workers: every sample with the
    same name and labels is summed (so counters, gauges and histogram
    buckets, counts and sums all add up), except C{*_created} timestamps,
    of which the earliest is kept.

    @return: the merged families by name, in the order first seen.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in samples:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(samples[key], sample.value)
                else:
                    samples[key] += sample.value
    for name, family in families.items():
        for (sampleName, labels), value in values[name].items():
            family.add_sample(sampleName, dict(labels), value)
    return families


def setFamily(
    families: dict[str, Metric], name: str, kind: str, documentation: str, value: float
) -> None:
    """
    Put an unlabelled C{kind} (C{gauge} or C{counter}) C{name} with
    C{value} in C{families}, in place of any family of that name.
    """
    family = Metric(name, documentation, kind)
    family.add_sample(name + ("_total" if kind == "counter" else ""), {}, value)
    families[name] = family


class _Families(Collector):
    """
    Merged families, for L{generate_latest}.
    """

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def renderMetrics(families: Iterable[Metric]) -> bytes:
    """
    The Prometheus text exposition of C{families}.
    """
    return generate_latest(_Families(families))


# -- the control site over the workers -----------------------------------------


@implementer(IAgentEndpointFactory)
class _WorkerEndpoints:
    """
    Connects C{http://worker-I/...} to worker I's control socket.
    """

    def __init__(self, reactor: Any, path: Callable[[int], str], timeout: float) -> None:
        self._reactor = reactor
        self._path = path
        self._timeout = timeout

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        index = int(uri.host.decode("ascii").rpartition("-")[2])
        return UNIXClientEndpoint(self._reactor, self._path(index), self._timeout)


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class WorkerClient:
    """
    HTTP requests to the workers' private control sites, over their UNIX
    sockets.

    @param path: the socket path of worker I.
    """

    def __init__(
        self, reactor: Any, path: Callable[[int], str], timeout: float = CONTROL_TIMEOUT
    ) -> None:
        self._reactor = reactor
        self._timeout = timeout
        pool = HTTPConnectionPool(reactor, persistent=False)
        # The pool's factory logs "Starting factory" for every connection.
        pool._factory = _QuietClientFactory
        self._agent = Agent.usingEndpointFactory(
            reactor, _WorkerEndpoints(reactor, path, timeout), pool
        )

    def request(
        self, index: int, method: bytes, path: str, headers: dict[str, str] | None = None
    ) -> Deferred[tuple[int, bytes]]:
        """
        Send one request to worker C{index}; fires with the status code and
        body, or fails (after the timeout at the latest).
        """
        sent = Headers({name: [value] for name, value in (headers or {}).items()})
        uri = f"http://worker-{index}{path}".encode("ascii")
        d = self._agent.request(method, uri, sent)

        def body(response: Any) -> Deferred[tuple[int, bytes]]:
            return readBody(response).addCallback(lambda data: (response.code, data))

        d.addCallback(body)
        d.addTimeout(self._timeout, self._reactor)
        return d


#: A request to one worker: C{(index, method, path, headers)} to
#: C{(code, body)}.
WorkerRequest = Callable[[int, bytes, str, "dict[str, str] | None"], "Deferred[tuple[int, bytes]]"]


@implementer(IControlSource)
class WorkerSource:
    """
    The sessions and metrics of every worker of a L{WorkerSupervisor}, for
    its public control site: lists and metrics are gathered from every
    running worker and merged (a worker that does not answer is left out,
    logged and counted in C{socksrelay_worker_unanswered_total}); a
    session's own requests go to the worker that numbered it
    (L{workerFor}).

    @param supervisor: the L{WorkerSupervisor}.
    @param request: sends one request to a worker (L{WorkerClient.request}).
    """

    _log = Logger()

    def __init__(self, supervisor: WorkerSupervisor, request: WorkerRequest) -> None:
        self.supervisor = supervisor
        self._request = request
        #: Requests to a worker that got no answer.
        self.unanswered = 0

    def _ask(
        self, index: int, method: bytes, path: str, headers: dict[str, str] | None = None
    ) -> Deferred[tuple[int, bytes]]:
        def failed(reason: Failure) -> Failure:
            self.unanswered += 1
            self._log.warn(
                "worker {worker} did not answer {method} {path}: {error}",
                worker=index,
                method=method.decode("ascii"),
                path=path,
                error=reason.getErrorMessage() or reason.type.__name__,
            )
            return reason

        return self._request(index, method, path, headers).addErrback(failed)

    def _askAll(
        self, method: bytes, path: str, headers: dict[str, str] | None = None
    ) -> Deferred[list[tuple[int, bytes]]]:
        """
        Ask every running worker; fires with the answers of those that
        answered.
        """
        asked = [self._ask(i, method, path, headers) for i in self.supervisor.runningWorkers()]
        d = DeferredList(asked, consumeErrors=True)
        return d.addCallback(lambda results: [value for ok, value in results if ok])

    def _askOne(
        self, sessionId: int, method: bytes, path: str, headers: dict[str, str] | None = None
    ) -> Deferred[tuple[int, bytes] | None]:
        """
        Ask the worker that numbered C{sessionId}; C{None} when it is not
        running (so the session is not live).
        """
        index = workerFor(sessionId, self.supervisor.count)
        if index not in self.supervisor.runningWorkers():
            return succeed(None)

        def failed(reason: Failure) -> None:
            raise SourceUnavailable(f"worker {index} did not answer")

        return self._ask(index, method, path, headers).addErrback(failed)

    def metricsText(self) -> Deferred[bytes]:
        def merge(answers: list[tuple[int, bytes]]) -> bytes:
            texts = [body.decode("utf-8") for code, body in answers if code == 200]
            families = mergeMetrics(texts)
            listening = families.get(f"{PREFIX}_listening_sockets")
            if listening is not None:
                # Every worker counts the same shared sockets.
                setFamily(
                    families,
                    listening.name,
                    "gauge",
                    listening.documentation,
                    self.supervisor.listening,
                )
            tracked = families.get(f"{PREFIX}_users_tracked")
            perUser = families.get(f"{PREFIX}_user_sessions")
            if tracked is not None and perUser is not None:
                # A user with series in several workers counts once.
                users = {s.labels.get("user") for s in perUser.samples} - {OTHER_USER}
                setFamily(families, tracked.name, "gauge", tracked.documentation, len(users))
            setFamily(
                families,
                f"{PREFIX}_workers",
                "gauge",
                "Worker processes running now (--workers).",
                len(self.supervisor.runningWorkers()),
            )
            setFamily(
                families,
                f"{PREFIX}_worker_restarts",
                "counter",
                "Workers restarted after they died.",
                self.supervisor.restarts,
            )
            setFamily(
                families,
                f"{PREFIX}_worker_unanswered",
                "counter",
                "Requests to a worker's control socket that got no answer in "
                "time (that worker was left out of the answer).",
                self.unanswered,
            )
            return renderMetrics(families.values())

        return self._askAll(b"GET", "/metrics").addCallback(merge)

    def sessions(
        self, user: str | None, client: str | None, destination: str | None
    ) -> Deferred[list[dict[str, Any]]]:
        query = urlencode(
            {
                name: value
                for name, value in (
                    ("user", user),
                    ("client", client),
                    ("destination", destination),
                )
                if value is not None
            }
        )
        path = "/sessions" + (f"?{query}" if query else "")

        def merge(answers: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for code, body in answers:
                if code == 200:
                    found += json.loads(body)
            return sorted(found, key=lambda s: s["id"])

        return self._askAll(b"GET", path).addCallback(merge)

    def session(self, sessionId: int) -> Deferred[dict[str, Any] | None]:
        def answer(result: tuple[int, bytes] | None) -> dict[str, Any] | None:
            if result is None or result[0] == 404:
                return None
            code, body = result
            if code != 200:
                raise SourceUnavailable(f"worker answered {code}")
            return json.loads(body)  # type: ignore[no-any-return]

        d = self._askOne(sessionId, b"GET", f"/sessions/{sessionId}")
        return d.addCallback(answer)

    def close(self, sessionId: int, requester: str) -> Deferred[bool]:
        def answer(result: tuple[int, bytes] | None) -> bool:
            if result is None or result[0] == 404:
                return False
            if result[0] != 200:
                raise SourceUnavailable(f"worker answered {result[0]}")
            return True

        d = self._askOne(
            sessionId,
            b"POST",
            f"/sessions/{sessionId}/close",
            {REQUESTER_HEADER: requester},
        )
        return d.addCallback(answer)

    def closeUser(self, user: str, requester: str) -> Deferred[list[int]]:
        def merge(answers: list[tuple[int, bytes]]) -> list[int]:
            closed: list[int] = []
            for code, body in answers:
                if code == 200:
                    closed += json.loads(body)["closed"]
            return sorted(closed)

        path = "/sessions/close?" + urlencode({"user": user})
        return self._askAll(b"POST", path, {REQUESTER_HEADER: requester}).addCallback(merge)


# -- the worker processes ------------------------------------------------------


class Worker:
    """
    One worker's place: its number, and the process that fills it now.

    @ivar process: the L{IProcessTransport} while a process runs, else
        C{None}.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.pid: int | None = None
        self.started = 0.0
        self.backoff = Backoff()
        self.restart: Any = None


class WorkerProtocol(ProcessProtocol):
    """
    Hands a worker process's output to its supervisor line by line, and
    tells it when the process ends.
    """

    #: Longer lines are passed on in pieces of this size.
    MAX_LINE = 256 * 1024

    def __init__(self, supervisor: WorkerSupervisor, worker: Worker) -> None:
        self.supervisor = supervisor
        self.worker = worker
        self._partial: dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, rest = (self._partial.pop(childFD, b"") + data).split(b"\n")
        while len(rest) > self.MAX_LINE:
            lines.append(rest[: self.MAX_LINE])
            rest = rest[self.MAX_LINE :]
        if rest:
            self._partial[childFD] = rest
        for line in lines:
            self.supervisor.workerSaid(self.worker, childFD, line)

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in sorted(self._partial.items()):
            self.supervisor.workerSaid(self.worker, childFD, rest)
        self._partial.clear()
        self.supervisor.workerEnded(self.worker, reason)


class _NoAccept(Factory):
    """
    The factory of the supervisor's listening ports, which never accept.
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> None:
        return None


#: Starts a worker process: C{(protocol, argv, childFDs)} to an
#: L{IProcessTransport}.
Spawner = Callable[[ProcessProtocol, "list[str]", "dict[int, Any]"], Any]


class WorkerSupervisor(Service):
    """
    Listens on C{endpoints} without accepting, and keeps C{count} worker
    processes running that accept on those sockets (see the module
    docstring).

    @param endpoints: L{IStreamServerEndpoint}s to listen on (TCP or UNIX,
        whose ports have a C{fileno}); they may announce themselves.
    @param arguments: the C{socks5} arguments for every worker.
    @param drainTimeout: the workers' C{--drain-timeout}.
    @param metrics: give every worker a private control site (for
        L{WorkerSource}).
    @param forwardUSR1: take SIGUSR1 and pass it on (with C{--access-log}).
    @param spawn: starts a process; C{reactor.spawnProcess} by default.

    @ivar workers: the L{Worker}s, by number.
    @ivar restarts: how many times a worker was restarted.
    @ivar controlDirectory: the private directory of the workers' control
        sockets while it exists, or C{None}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        endpoints: Sequence[Any],
        arguments: Sequence[str],
        drainTimeout: float,
        metrics: bool = False,
        forwardUSR1: bool = False,
        spawn: Spawner | None = None,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.endpoints = list(endpoints)
        self.arguments = list(arguments)
        self.drainTimeout = drainTimeout
        self.metrics = metrics
        self.forwardUSR1 = forwardUSR1
        self._spawn = spawn or self._spawnProcess
        self.workers = [Worker(i) for i in range(count)]
        self.ports: list[Any] = []
        self.restarts = 0
        self.controlDirectory: str | None = None
        self._listened: Deferred[Any] | None = None
        self._stopping = False
        self._terminating = False
        self._ended: Deferred[None] | None = None
        self._kill: Any = None
        self._sighup = SignalHandler("SIGHUP", self._signalled)
        self._sigusr1 = SignalHandler("SIGUSR1", self._signalled)
        self._sigterm = SignalHandler("SIGTERM", self._signalled)

    # -- listening -------------------------------------------------------------

    @property
    def listening(self) -> int:
        """
        How many sockets it listens on for the workers now.
        """
        return len(self.ports)

    def privilegedStartService(self) -> None:
        # Listen now, while twistd may still bind privileged ports; take
        # SIGHUP now, as ReloadService does, or one before startService
        # would kill the process.
        Service.privilegedStartService(self)
        self._sighup.install()
        self._listen()

    def _listen(self) -> None:
        if self._listened is not None:
            return

        def listening(port: Any) -> None:
            # The workers accept; the supervisor only holds the socket.
            port.stopReading()
            self.ports.append(port)

        def failed(reason: Failure) -> None:
            self._log.failure("cannot listen", reason)

        self._listened = gatherResults(
            [
                endpoint.listen(_NoAccept()).addCallbacks(listening, failed)
                for endpoint in self.endpoints
            ]
        )

    def startService(self) -> None:
        Service.startService(self)
        self._listen()
        self._sighup.install()
        if self.forwardUSR1:
            self._sigusr1.install()
        if self.metrics:
            # Made now, after twistd has shed any privileges, so that the
            # workers can make their sockets in it.
            self.controlDirectory = tempfile.mkdtemp(prefix="socksrelay-workers-")
        self.reactor.callWhenRunning(self._run)

    def _run(self) -> None:
        if not self.running:
            return
        # After the reactor's own handlers, which it installs as it runs.
        self._sigterm.install()
        self._listen()
        if self._listened is not None:
            self._listened.addCallback(lambda _: self._startAll())

    def _startAll(self) -> None:
        if self.running:
            for worker in self.workers:
                self._start(worker)

    # -- the processes -----------------------------------------------------------

    def controlPath(self, index: int) -> str:
        """
        Where worker C{index} serves its control site (with C{metrics}).
        """
        return os.path.join(self.controlDirectory or "", f"worker-{index}.sock")

    def workerArgv(self, index: int) -> list[str]:
        """
        The command line of worker C{index}.
        """
        argv = [
            sys.executable,
            "-m",
            "socksrelay.worker",
            "--index",
            str(index),
            "--count",
            str(self.count),
        ]
        for n, port in enumerate(self.ports):
            argv += ["--listen", f"{FIRST_LISTENING_FD + n}:{getattr(port, 'backlog', 50)}"]
        if self.controlDirectory is not None:
            escaped = self.controlPath(index).replace("\\", "\\\\").replace(":", "\\:")
            argv += ["--control", f"unix:{escaped}"]
        return argv + ["--", *self.arguments]

    def _spawnProcess(
        self, protocol: ProcessProtocol, argv: list[str], childFDs: dict[int, Any]
    ) -> Any:
        env = dict(os.environ)
        # The worker imports the same socksrelay as this process.
        here = os.path.dirname(os.path.dirname(os.path.abspath(socksrelay.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            [here] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        return self.reactor.spawnProcess(
            protocol, argv[0], argv, env=env, childFDs=childFDs
        )

    def _start(self, worker: Worker) -> None:
        worker.restart = None
        if not self.running:
            return
        if self.controlDirectory is not None:
            # What a worker that died left behind.
            try:
                os.unlink(self.controlPath(worker.index))
            except FileNotFoundError:
                pass
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for n, port in enumerate(self.ports):
            childFDs[FIRST_LISTENING_FD + n] = port.fileno()
        protocol = WorkerProtocol(self, worker)
        worker.started = self.reactor.seconds()
        try:
            worker.process = self._spawn(protocol, self.workerArgv(worker.index), childFDs)
        except OSError:
            self._log.failure("cannot start worker {worker}", worker=worker.index)
            self._restartLater(worker, 0.0)
            return
        worker.pid = worker.process.pid
        self._log.info(
            "worker {worker} started (pid {pid})", worker=worker.index, pid=worker.pid
        )

    def _restartLater(self, worker: Worker, ranFor: float) -> float:
        delay = worker.backoff.next(ranFor)
        worker.restart = self.reactor.callLater(delay, self._restart, worker)
        return delay

    def _restart(self, worker: Worker) -> None:
        self.restarts += 1
        self._start(worker)

    def runningWorkers(self) -> list[int]:
        """
        The numbers of the workers whose process runs now.
        """
        return [w.index for w in self.workers if w.process is not None]

    def workerSaid(self, worker: Worker, childFD: int, raw: bytes) -> None:
        """
        Log a line that worker C{worker} wrote: its log events (on standard
        output, as L{socksrelay.worker.encodeEvent} writes them) keep their
        text, level, namespace, time and plain-valued fields, and get C{worker} and
        C{workerPID} fields and the worker's number in front of their text;
        any other line is logged as it is.
        """
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if childFD == 1 and line.startswith("\x1e"):
            try:
                event = json.loads(line[1:])
            except ValueError:
                event = None
            if isinstance(event, dict) and "log_text" in event:
                try:
                    level = LogLevel.levelWithName(str(event.get("log_level")))
                except InvalidLogLevelError:
                    level = LogLevel.info
                if not isinstance(event.get("log_time"), (int, float)):
                    event["log_time"] = self.reactor.seconds()
                event.update(
                    log_level=level,
                    log_format="worker {worker}: {workerMessage}",
                    worker=worker.index,
                    workerPID=worker.pid,
                    workerMessage=event.pop("log_text"),
                )
                self._log.observer(event)
                return
        if line.strip():
            self._log.warn(
                "worker {worker}: {line}", worker=worker.index, workerPID=worker.pid, line=line
            )

    def workerEnded(self, worker: Worker, reason: Failure) -> None:
        """
        Worker C{worker}'s process ended: restart it, unless stopping.
        """
        worker.process = None
        status = describeExit(reason)
        if self._stopping:
            self._log.info(
                "worker {worker} (pid {pid}) exited with {status}",
                worker=worker.index,
                pid=worker.pid,
                status=status,
            )
            if not self.runningWorkers():
                self._finish()
            return
        ranFor = self.reactor.seconds() - worker.started
        delay = self._restartLater(worker, ranFor)
        self._log.warn(
            "worker {worker} (pid {pid}) exited with {status} after "
            "{ranFor:.1f} s; restarting" + (" in {delay:g} s" if delay else ""),
            worker=worker.index,
            pid=worker.pid,
            status=status,
            ranFor=ranFor,
            delay=delay,
        )

    def signalWorkers(self, signum: int) -> int:
        """
        Send signal C{signum} to every running worker; how many there were.
        """
        sent = 0
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.signalProcess(signum)
            except (ProcessExitedAlready, OSError):
                continue
            sent += 1
        return sent

    # -- signals ---------------------------------------------------------------

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.signalled, signum)

    def signalled(self, signum: int) -> None:
        """
        SIGHUP and SIGUSR1 go on to the workers; SIGTERM stops them all
        (L{terminate}).
        """
        if signum == signal.SIGTERM:
            self.terminate()
            return
        name = signal.Signals(signum).name
        count = self.signalWorkers(signum)
        what = {"SIGHUP": "reload", "SIGUSR1": "reopen the access log"}.get(name, name)
        self._log.info(
            "{name}: asked {count} workers to {what}", name=name, count=count, what=what
        )

    def terminate(self) -> None:
        """
        SIGTERM: the first one stops the workers (letting their sessions
        drain) and then the process; a later one is passed on, so that the
        workers close their sessions at once.
        """
        if not self._terminating:
            self._terminating = True
            self._log.info(
                "SIGTERM: stopping {count} workers; they let live sessions "
                "finish for up to {timeout:g} s",
                count=len(self.runningWorkers()),
                timeout=self.drainTimeout,
            )
            self.reactor.stop()
        else:
            count = self.signalWorkers(signal.SIGTERM)
            self._log.info(
                "second SIGTERM: passed on to {count} workers, which close "
                "their sessions now",
                count=count,
            )

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        self._stopping = True
        self._terminating = True
        self._sighup.restore()
        self._sigusr1.restore()
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
        # Stop listening at once (the workers stop too, on SIGTERM), but
        # without shutdown(2), which would stop the workers' accept(2) on
        # the same socket while they are still running.
        closing = []
        for port in self.ports:
            port._shouldShutdown = False
            closing.append(port.stopListening())
        self.ports = []
        self.signalWorkers(signal.SIGTERM)
        ended: Deferred[None] = Deferred()
        self._ended = ended
        if self.runningWorkers():
            self._kill = self.reactor.callLater(
                self.drainTimeout + KILL_MARGIN, self._killStragglers
            )
        else:
            self._finish()
        return gatherResults([ended, *[d for d in closing if d is not None]])

    def _killStragglers(self) -> None:
        self._kill = None
        for worker in self.workers:
            if worker.process is None:
                continue
            self._log.warn(
                "worker {worker} (pid {pid}) still runs {seconds:g} s after "
                "SIGTERM; killing it",
                worker=worker.index,
                pid=worker.pid,
                seconds=self.drainTimeout + KILL_MARGIN,
            )
            try:
                worker.process.signalProcess(signal.SIGKILL)
            except (ProcessExitedAlready, OSError):
                pass

    def _finish(self) -> None:
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        self._kill = None
        self._sigterm.restore()
        if self.controlDirectory is not None:
            shutil.rmtree(self.controlDirectory, ignore_errors=True)
            self.controlDirectory = None
        ended, self._ended = self._ended, None
        if ended is not None:
            ended.callback(None)


def isOpenProxy(config: Any) -> bool:
    """
    Whether the proxy that C{config} describes lets clients in without
    credentials.
    """
    checkers = config.get("credCheckers", [])
    portal = Portal(SOCKSRealm(), checkers) if checkers else None
    return AuthMethod.NO_AUTHENTICATION in methodPreference(portal)


def supervisorService(config: Any, reactor: Any) -> MultiService:
    """
    The service of C{twistd socks5 --workers N} (N > 1): a
    L{WorkerSupervisor} and, with C{--metrics}, the control site over its
    workers.
    """
    from socksrelay.listening import withBacklog
    from socksrelay.tap import AnnouncingEndpoint

    top = MultiService()
    top.setName("socksrelay")
    openProxy = isOpenProxy(config)
    endpoints = [
        AnnouncingEndpoint(
            serverFromString(reactor, withBacklog(description, config["backlog"])),
            openProxy,
        )
        for description in config["ports"]
    ]
    supervisor = WorkerSupervisor(
        reactor,
        config["workers"],
        endpoints,
        workerArguments(config),
        config["drain-timeout"],
        metrics=bool(config.get("metrics")),
        forwardUSR1=bool(config.get("access-log")),
    )
    supervisor.setServiceParent(top)
    if config.get("metrics"):
        client = WorkerClient(reactor, supervisor.controlPath)
        tokenFile = config.get("control-token-file")
        sourceService(
            WorkerSource(supervisor, client.request),
            config["metrics"],
            reactor,
            token=None if tokenFile is None else tokenFile.token,
        ).setServiceParent(top)
    return top
