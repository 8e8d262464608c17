# -*- test-case-name: tests.test_workers -*-
"""
Tests for C{--workers N} (L{socksrelay.workers}, L{socksrelay.worker}):
unit tests of the option, the restart policy, session numbering and
routing, the merging of metrics and the supervisor (with a fake process
spawner and a clock); then end-to-end tests of the real
C{twistd socks5 --workers 2} with real clients.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
import unittest
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError as Refused
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.control import (
    REQUESTER_HEADER,
    ControlResource,
    ControlSite,
    SourceUnavailable,
)
from socksrelay.metrics import Metrics
from socksrelay.session import Session
from socksrelay.worker import encodeEvent
from socksrelay.workers import (
    KILL_MARGIN,
    Backoff,
    WorkerSource,
    WorkerSupervisor,
    availableCores,
    mergeMetrics,
    renderMetrics,
    workerArguments,
    workerFor,
)
from tests.e2e import (
    LOOPBACK_V4,
    EchoServer,
    ProxyProcess,
    childPids,
    encodeGreeting,
    encodeRequest,
    processAlive,
    recvExactly,
    socks5Connect,
)
from tests.fakes import FakeListeningPort
from tests.test_control import Harness, fetch
from tests.test_e2e_metrics import METRICS_RE, getJSON, request


def parse(*argv: str) -> tap.Options:
    """
    L{tap.Options} that have parsed C{argv}.
    """
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


# -- the option --------------------------------------------------------------


class OptionTests(SynchronousTestCase):
    """
    C{--workers} on the command line of C{twistd socks5}.
    """

    def test_default(self) -> None:
        """
        Without C{--workers} there is one process, built as before: no
        supervisor in the service tree.
        """
        options = parse()
        self.assertEqual(options["workers"], 1)
        top = tap.makeService(options, MemoryReactorClock())
        self.assertFalse([s for s in top if isinstance(s, WorkerSupervisor)])
        self.assertTrue([s for s in top if isinstance(s, StreamServerEndpointService)])

    def test_number(self) -> None:
        """
        C{--workers 3} asks for three workers.
        """
        self.assertEqual(parse("--workers", "3")["workers"], 3)
        self.assertEqual(parse("--workers=2")["workers"], 2)

    def test_auto(self) -> None:
        """
        C{--workers auto} asks for one worker per core this process may use.
        """
        self.assertEqual(parse("--workers", "auto")["workers"], availableCores())
        self.assertEqual(availableCores(), len(os.sched_getaffinity(0)))

    def test_invalid(self) -> None:
        """
        Zero, a negative number or anything but a number or C{auto} is a
        usage error.
        """
        for value in ("0", "-1", "junk", "", "1.5"):
            with self.assertRaises(usage.UsageError, msg=value):
                parse("--workers", value)

    def test_unshareablePorts(self) -> None:
        """
        With more than one worker, a C{--port} that cannot be shared between
        processes (such as haproxy:) is a usage error that names it.
        """
        for port in ("haproxy:tcp:1080", "haproxy:unix:/run/socks.sock"):
            with self.assertRaises(usage.UsageError) as caught:
                parse("--workers", "2", "--port", port)
            self.assertIn(port, str(caught.exception))
            self.assertIn("--workers 2", str(caught.exception))

    def test_shareablePorts(self) -> None:
        """
        TCP, TCP6 and UNIX ports (and a bare port number) can be shared;
        one worker takes any port.
        """
        options = parse(
            "--workers", "2",
            "--port", "1080",
            "--port", "tcp:1081:interface=127.0.0.1:backlog=10",
            "--port", "tcp6:1082:interface=\\:\\:1",
            "--port", "unix:/tmp/socksrelay-test.sock",
        )
        self.assertEqual(len(options["ports"]), 4)
        self.assertEqual(parse("--port", "haproxy:tcp:1080")["workers"], 1)

    def test_workerArguments(self) -> None:
        """
        A worker gets the options as given (whatever their spelling), without
        those the supervisor keeps: C{--workers}, C{--metrics} and
        C{--control-token-file}.
        """
        with tempfile.NamedTemporaryFile("w", suffix=".token") as token:
            token.write("secret\n")
            token.flush()
            options = parse(
                "-p", "1080",
                "--work", "2",
                "--metrics=9180",
                "--auth", "memory:alice:pw",
                "--control-token-file", token.name,
                "--metrics-per-user",
                "--drain-timeout=5",
            )
        self.assertEqual(
            workerArguments(options),
            [
                "-p", "1080",
                "--auth", "memory:alice:pw",
                "--metrics-per-user",
                "--drain-timeout", "5",
            ],
        )

    def test_makeService(self) -> None:
        """
        With more than one worker the service is a supervisor and, with
        C{--metrics}, the control site over the workers.
        """
        options = parse("--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1")
        top = tap.makeService(options, MemoryReactorClock())
        self.assertIsInstance(top, MultiService)
        supervisors = [s for s in top if isinstance(s, WorkerSupervisor)]
        self.assertEqual(len(supervisors), 1)
        self.assertEqual(supervisors[0].count, 2)
        self.assertTrue(supervisors[0].metrics)
        controls = [s for s in top if isinstance(s, StreamServerEndpointService)]
        self.assertEqual([s.name for s in controls], ["control"])

    def test_supervisorBacklog(self) -> None:
        """
        The supervisor, which makes the listening sockets the workers
        share, opens them with the listen backlog (C{--backlog}, 1024 by
        default) unless a C{--port} sets C{backlog=} itself.
        """
        for argv, expected in [
            ((), [1024, 10]),
            (("--backlog", "400"), [400, 10]),
        ]:
            options = parse(
                "--workers", "2",
                "--port", "1080",
                "--port", "tcp:1081:interface=127.0.0.1:backlog=10",
                *argv,
            )
            reactor = MemoryReactorClock()
            top = tap.makeService(options, reactor)
            (supervisor,) = [s for s in top if isinstance(s, WorkerSupervisor)]
            for endpoint in supervisor.endpoints:
                endpoint.listen(object())
            self.assertEqual([entry[2] for entry in reactor.tcpServers], expected)

    def test_makeServiceToken(self) -> None:
        """
        The supervisor's control site asks for the --control-token-file
        token, as one process's does.
        """
        with tempfile.NamedTemporaryFile("w", suffix=".token") as token:
            token.write("s3cret\n")
            token.flush()
            options = parse(
                "--workers", "2",
                "--metrics", "tcp:0:interface=127.0.0.1",
                "--control-token-file", token.name,
            )
        top = tap.makeService(options, MemoryReactorClock())
        (control,) = [s for s in top if isinstance(s, StreamServerEndpointService)]
        self.assertTrue(control.factory.resource.authorized(FakeRequest("Bearer s3cret")))
        self.assertFalse(control.factory.resource.authorized(FakeRequest(None)))


class FakeRequest:
    """
    A request with (or without) an C{Authorization} header.
    """

    def __init__(self, authorization: str | None) -> None:
        self._authorization = authorization

    def getHeader(self, name: str) -> str | None:
        return self._authorization if name.lower() == "authorization" else None


# -- numbering and routing ---------------------------------------------------


class NumberingTests(SynchronousTestCase):
    """
    Session ids unique across workers, and the worker each id belongs to.
    """

    def setUp(self) -> None:
        previous = Session._ids
        self.addCleanup(setattr, Session, "_ids", previous)

    def ids(self, count: int) -> list[int]:
        reactor = MemoryReactorClock()
        return [Session(reactor, "c", "l").id for _ in range(count)]

    def test_numberFrom(self) -> None:
        """
        Worker I of N numbers its sessions I + 1, I + 1 + N, I + 1 + 2N...
        """
        Session.numberFrom(2, 3)
        self.assertEqual(self.ids(4), [2, 5, 8, 11])

    def test_unique(self) -> None:
        """
        The ids of all the workers never collide, and L{workerFor} finds the
        worker that numbered each.
        """
        for count in (1, 2, 3, 7):
            seen: dict[int, int] = {}
            for index in range(count):
                Session.numberFrom(index + 1, count)
                for sessionId in self.ids(20):
                    self.assertNotIn(sessionId, seen)
                    seen[sessionId] = index
                    self.assertEqual(workerFor(sessionId, count), index)


# -- restarts -----------------------------------------------------------------


class BackoffTests(SynchronousTestCase):
    """
    L{Backoff}: how long a dead worker waits before it is restarted.
    """

    def test_quickDeathsDouble(self) -> None:
        """
        A worker that keeps dying within seconds of its start waits 1 s, then
        twice as long each time, up to 30 s.
        """
        backoff = Backoff()
        delays = [backoff.next(0.5) for _ in range(8)]
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30, 30])

    def test_longRunResets(self) -> None:
        """
        A worker that ran a while is restarted at once, and its next quick
        death starts over at 1 s.
        """
        backoff = Backoff()
        backoff.next(0.1)
        backoff.next(0.1)
        self.assertEqual(backoff.next(60.0), 0)
        self.assertEqual(backoff.next(0.1), 1)


# -- metrics ------------------------------------------------------------------


def workerMetrics(sessions: int, latencies: list[float], active: int = 0) -> str:
    """
    The Prometheus text of a worker that ended C{sessions} sessions, saw
    handshakes of C{latencies} and has C{active} live SOCKS5 sessions.
    """

    class Live:
        protocol = "socks5"
        bytesUp = 10
        bytesDown = 100

    metrics = Metrics(listeningSockets=lambda: 1)
    for _ in range(sessions):
        metrics.sessions.labels("socks5", "CONNECT", "ok").inc()
    for seconds in latencies:
        metrics.handshakeLatency.observe(seconds)
    for _ in range(active):
        metrics.live[Live()] = None  # type: ignore[assignment]
    return generate_latest(metrics.registry).decode("utf-8")


def sample(text: str | bytes, name: str, **labels: str) -> float | None:
    """
    The value of one sample in a Prometheus text, or C{None}.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


class MergeTests(SynchronousTestCase):
    """
    L{mergeMetrics}: the workers' metrics added up.
    """

    def test_counters(self) -> None:
        """
        Counters with the same name and labels are summed.
        """
        merged = renderMetrics(
            mergeMetrics([workerMetrics(3, []), workerMetrics(4, [])]).values()
        )
        ok = {"protocol": "socks5", "command": "CONNECT", "result": "ok"}
        self.assertEqual(sample(merged, "socksrelay_sessions_total", **ok), 7)

    def test_gauges(self) -> None:
        """
        Gauges are summed too: live sessions, and the bytes of live sessions.
        """
        merged = renderMetrics(
            mergeMetrics([workerMetrics(0, [], active=2), workerMetrics(0, [], active=3)]).values()
        )
        self.assertEqual(sample(merged, "socksrelay_sessions_active", protocol="socks5"), 5)
        self.assertEqual(sample(merged, "socksrelay_sessions_active", protocol="http"), 0)
        self.assertEqual(sample(merged, "socksrelay_bytes_total", direction="down"), 500)

    def test_histograms(self) -> None:
        """
        Histograms add up bucket by bucket, with their counts and sums.
        """
        merged = renderMetrics(
            mergeMetrics(
                [workerMetrics(0, [0.002, 0.3]), workerMetrics(0, [0.3, 20.0, 0.0001])]
            ).values()
        )
        name = "socksrelay_handshake_seconds"
        self.assertEqual(sample(merged, f"{name}_bucket", le="0.001"), 1)
        self.assertEqual(sample(merged, f"{name}_bucket", le="0.0025"), 2)
        self.assertEqual(sample(merged, f"{name}_bucket", le="0.5"), 4)
        self.assertEqual(sample(merged, f"{name}_bucket", le="30.0"), 5)
        self.assertEqual(sample(merged, f"{name}_bucket", le="+Inf"), 5)
        self.assertEqual(sample(merged, f"{name}_count"), 5)
        self.assertAlmostEqual(sample(merged, f"{name}_sum") or 0, 20.6021)

    def test_createdKeepsEarliest(self) -> None:
        """
        C{_created} timestamps are not summed: the earliest is kept.
        """
        first = workerMetrics(0, [0.1])
        second = workerMetrics(0, [0.1])
        merged = renderMetrics(mergeMetrics([second, first]).values())
        name = "socksrelay_handshake_seconds_created"
        self.assertEqual(sample(merged, name), sample(first, name))

    def test_roundTrip(self) -> None:
        """
        One worker's metrics come out of the merge as they went in.
        """
        text = workerMetrics(2, [0.01, 3.0], active=1)
        self.assertEqual(renderMetrics(mergeMetrics([text]).values()).decode(), text)


# -- the control source over the workers -----------------------------------------


class FakeSupervisor:
    """
    What L{WorkerSource} asks of a L{WorkerSupervisor}.
    """

    def __init__(self, count: int, running: list[int] | None = None) -> None:
        self.count = count
        self.running = list(range(count)) if running is None else running
        self.listening = 1
        self.restarts = 3

    def runningWorkers(self) -> list[int]:
        return list(self.running)


class FakeWorkers:
    """
    Answers L{WorkerSource}'s requests as workers would, and records them.

    @ivar answers: worker number to C{(method, path)} to C{(code, body)},
        or an exception to fail with.
    """

    def __init__(self) -> None:
        self.answers: dict[int, dict[tuple[bytes, str], Any]] = {}
        self.requests: list[tuple[int, bytes, str, dict[str, str] | None]] = []

    def request(
        self, index: int, method: bytes, path: str, headers: dict[str, str] | None = None
    ) -> Deferred[tuple[int, bytes]]:
        self.requests.append((index, method, path, headers))
        answer = self.answers.get(index, {}).get((method, path), (404, b"{}"))
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)


def resultOf(d: Deferred[Any]) -> Any:
    """
    What an already-fired Deferred fired with (a L{Failure} for an error).
    """
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has not fired")
    return results[0]


class WorkerSourceTests(SynchronousTestCase):
    """
    L{WorkerSource}: the public control site's view of all the workers.
    """

    def setUp(self) -> None:
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.workers = FakeWorkers()
        self.supervisor = FakeSupervisor(2)
        self.source = WorkerSource(self.supervisor, self.workers.request)  # type: ignore[arg-type]

    def session(self, sessionId: int) -> bytes:
        return json.dumps({"id": sessionId}).encode()

    def test_sessionsMerged(self) -> None:
        """
        C{/sessions} is every running worker's list, in id order, with the
        filters passed on.
        """
        path = "/sessions?user=alice&destination=example.com%3A443"
        self.workers.answers = {
            0: {(b"GET", path): (200, b'[{"id": 1}, {"id": 5}]')},
            1: {(b"GET", path): (200, b'[{"id": 2}]')},
        }
        found = resultOf(self.source.sessions("alice", None, "example.com:443"))
        self.assertEqual([s["id"] for s in found], [1, 2, 5])
        self.assertEqual(sorted(r[0] for r in self.workers.requests), [0, 1])

    def test_silentWorkerSkipped(self) -> None:
        """
        A worker that does not answer is left out, logged and counted; the
        others' sessions are still listed.
        """
        self.workers.answers = {
            0: {(b"GET", "/sessions"): (200, b'[{"id": 1}]')},
            1: {(b"GET", "/sessions"): Refused()},
        }
        found = resultOf(self.source.sessions(None, None, None))
        self.assertEqual([s["id"] for s in found], [1])
        self.assertEqual(self.source.unanswered, 1)
        self.assertIn(
            "worker 1 did not answer GET /sessions", " ".join(formatEvent(e) for e in self.log)
        )

    def test_sessionRouted(self) -> None:
        """
        C{/sessions/ID} asks only the worker that numbered the session.
        """
        self.workers.answers = {1: {(b"GET", "/sessions/4"): (200, self.session(4))}}
        self.assertEqual(resultOf(self.source.session(4)), {"id": 4})
        self.assertEqual(resultOf(self.source.session(3)), None)
        self.assertEqual(
            [(i, p) for i, _, p, _ in self.workers.requests],
            [(1, "/sessions/4"), (0, "/sessions/3")],
        )

    def test_sessionOfStoppedWorker(self) -> None:
        """
        A session of a worker that is not running is not live; nobody is
        asked.
        """
        self.supervisor.running = [0]
        self.assertIsNone(resultOf(self.source.session(2)))
        self.assertFalse(resultOf(self.source.close(2, "127.0.0.1:5555")))
        self.assertEqual(self.workers.requests, [])

    def test_sessionWorkerSilent(self) -> None:
        """
        When the worker of a session does not answer, the site says so
        (L{SourceUnavailable}, a 503).
        """
        self.workers.answers = {0: {(b"GET", "/sessions/1"): Refused()}}
        failure = resultOf(self.source.session(1))
        self.assertIsInstance(failure, Failure)
        failure.trap(SourceUnavailable)

    def test_closeRouted(self) -> None:
        """
        Closing a session goes to its worker, naming who asked; a session
        the worker does not know is not closed.
        """
        self.workers.answers = {1: {(b"POST", "/sessions/6/close"): (200, b'{"closed": [6]}')}}
        self.assertTrue(resultOf(self.source.close(6, "127.0.0.1:5555")))
        self.assertFalse(resultOf(self.source.close(8, "127.0.0.1:5555")))
        self.assertEqual(
            self.workers.requests[0],
            (1, b"POST", "/sessions/6/close", {REQUESTER_HEADER: "127.0.0.1:5555"}),
        )

    def test_closeUser(self) -> None:
        """
        Closing a user's sessions asks every worker and lists every closed id.
        """
        path = "/sessions/close?user=bob"
        self.workers.answers = {
            0: {(b"POST", path): (200, b'{"closed": [3, 1]}')},
            1: {(b"POST", path): (200, b'{"closed": [2]}')},
        }
        self.assertEqual(resultOf(self.source.closeUser("bob", "127.0.0.1:1")), [1, 2, 3])

    def test_metrics(self) -> None:
        """
        C{/metrics} is the sum of the workers' metrics, with the supervisor's
        own: running workers, restarts, unanswered requests, and the
        listening sockets counted once.
        """
        self.workers.answers = {
            0: {(b"GET", "/metrics"): (200, workerMetrics(2, [0.1]).encode())},
            1: {(b"GET", "/metrics"): (200, workerMetrics(5, [0.2]).encode())},
        }
        text = resultOf(self.source.metricsText())
        ok = {"protocol": "socks5", "command": "CONNECT", "result": "ok"}
        self.assertEqual(sample(text, "socksrelay_sessions_total", **ok), 7)
        self.assertEqual(sample(text, "socksrelay_handshake_seconds_count"), 2)
        self.assertEqual(sample(text, "socksrelay_listening_sockets"), 1)
        self.assertEqual(sample(text, "socksrelay_workers"), 2)
        self.assertEqual(sample(text, "socksrelay_worker_restarts_total"), 3)
        self.assertEqual(sample(text, "socksrelay_worker_unanswered_total"), 0)

    def test_usersTrackedOnce(self) -> None:
        """
        With per-user metrics, a user with series in both workers is tracked
        once, and their sessions add up.
        """

        def perUser(*users: str) -> bytes:
            metrics = Metrics(perUser=True)
            counter = metrics.userSessions
            if counter is None:
                raise AssertionError("no per-user series")
            for user in users:
                counter.labels(metrics.userLabel(user)).inc()
            return generate_latest(metrics.registry)

        self.workers.answers = {
            0: {(b"GET", "/metrics"): (200, perUser("alice", "bob"))},
            1: {(b"GET", "/metrics"): (200, perUser("alice"))},
        }
        text = resultOf(self.source.metricsText())
        self.assertEqual(sample(text, "socksrelay_users_tracked"), 2)
        self.assertEqual(sample(text, "socksrelay_user_sessions_total", user="alice"), 2)

    def test_metricsWithoutSilentWorker(self) -> None:
        """
        A worker that does not answer a scrape is left out of it and counted.
        """
        self.workers.answers = {
            0: {(b"GET", "/metrics"): (200, workerMetrics(2, []).encode())},
            1: {(b"GET", "/metrics"): Refused()},
        }
        text = resultOf(self.source.metricsText())
        ok = {"protocol": "socks5", "command": "CONNECT", "result": "ok"}
        self.assertEqual(sample(text, "socksrelay_sessions_total", **ok), 2)
        self.assertEqual(sample(text, "socksrelay_worker_unanswered_total"), 1)


class ControlSiteTests(SynchronousTestCase):
    """
    The control site (L{socksrelay.control}) in front of the workers, and
    in front of one worker for its supervisor.
    """

    def setUp(self) -> None:
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_overWorkers(self) -> None:
        """
        The public site over L{WorkerSource} lists every worker's sessions
        and answers 503 when the worker of a session does not answer.
        """
        workers = FakeWorkers()
        workers.answers = {
            0: {
                (b"GET", "/sessions"): (200, b'[{"id": 3}]'),
                (b"GET", "/sessions/1"): Refused(),
            },
            1: {(b"GET", "/sessions"): (200, b'[{"id": 2}]')},
        }
        source = WorkerSource(FakeSupervisor(2), workers.request)  # type: ignore[arg-type]
        root = ControlResource(source)
        site = ControlSite(root, reactor=MemoryReactorClock())
        self.assertEqual(fetch(site, "GET", "/sessions").json(), [{"id": 2}, {"id": 3}])
        response = fetch(site, "GET", "/sessions/1")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.json(), {"error": "worker 0 did not answer"})
        self.assertEqual(fetch(site, "GET", "/sessions/4").code, 404)

    def test_requesterBelievedOnlyWhenPrivate(self) -> None:
        """
        A worker's private site logs the requester its supervisor names; a
        public site ignores that header and names the address that asked.
        """
        for private, expected in ((True, "192.0.2.9:4000"), (False, "127.0.0.1:5555")):
            h = Harness()
            h.root.trustRequester = private
            client, _, _ = h.session(b"alice", "192.0.2.1", 80)
            sessionId = client.session.id
            response = h.fetch(
                "POST", f"/sessions/{sessionId}/close", **{REQUESTER_HEADER: "192.0.2.9:4000"}
            )
            self.assertEqual(response.code, 200)
            self.assertEqual(
                client.session.reason, f"closed by control request from {expected}"
            )


# -- the supervisor -------------------------------------------------------------


class SharedPort(FakeListeningPort):
    """
    A listening port with a file descriptor, as a TCP port has.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(IPv4Address("TCP", "127.0.0.1", 1080))
        self.fd = fd
        self.backlog = 50
        self.reading = True
        self.listening = True
        self._shouldShutdown = True

    def stopReading(self) -> None:
        self.reading = False

    def fileno(self) -> int:
        return self.fd

    def stopListening(self) -> None:
        self.listening = False


class SharedEndpoint:
    """
    An endpoint whose C{listen} gives a L{SharedPort}.
    """

    def __init__(self, fd: int) -> None:
        self.port = SharedPort(fd)

    def listen(self, factory: Any) -> Deferred[SharedPort]:
        return succeed(self.port)


class FakeProcess:
    """
    A worker process that records the signals it gets.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, signum: int) -> None:
        self.signals.append(signum)


class SupervisorTests(SynchronousTestCase):
    """
    L{WorkerSupervisor} with a fake process spawner and a clock.
    """

    def setUp(self) -> None:
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.spawned: list[tuple[Any, list[str], dict[int, Any], FakeProcess]] = []
        self.pids = itertools.count(1000)
        self.endpoints = [SharedEndpoint(7), SharedEndpoint(9)]
        self.supervisor = WorkerSupervisor(
            self.reactor,
            2,
            self.endpoints,
            ["--port", "tcp:1080", "--drain-timeout", "4"],
            drainTimeout=4.0,
            spawn=self.spawn,
        )
        for handler in ("_sighup", "_sigusr1", "_sigterm"):
            self.addCleanup(getattr(self.supervisor, handler).restore)
        self.supervisor.privilegedStartService()
        self.supervisor.startService()

    def spawn(self, protocol: Any, argv: list[str], childFDs: dict[int, Any]) -> FakeProcess:
        process = FakeProcess(next(self.pids))
        self.spawned.append((protocol, argv, childFDs, process))
        return process

    def end(self, n: int, reason: Any = None) -> None:
        """
        The process spawned C{n}th ends.
        """
        protocol = self.spawned[n][0]
        protocol.processEnded(Failure(reason or ProcessTerminated(signal=signal.SIGKILL)))

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.log]

    def test_startsWorkers(self) -> None:
        """
        Each worker is started with the listening sockets as its file
        descriptors 3, 4... (the supervisor itself no longer reads them), its
        number, the worker count and the C{socks5} arguments.
        """
        self.assertEqual(len(self.spawned), 2)
        for index, (_, argv, childFDs, _) in enumerate(self.spawned):
            self.assertEqual(childFDs, {0: "w", 1: "r", 2: "r", 3: 7, 4: 9})
            self.assertEqual(argv[1:3], ["-m", "socksrelay.worker"])
            self.assertEqual(argv[argv.index("--index") + 1], str(index))
            self.assertEqual(argv[argv.index("--count") + 1], "2")
            self.assertEqual(
                argv[argv.index("--") + 1 :], ["--port", "tcp:1080", "--drain-timeout", "4"]
            )
            self.assertIn("3:50", argv)
            self.assertIn("4:50", argv)
        self.assertFalse([e for e in self.endpoints if e.port.reading])
        self.assertEqual(self.supervisor.runningWorkers(), [0, 1])
        self.assertIn("worker 1 started (pid 1001)", self.messages())

    def test_restartAtOnce(self) -> None:
        """
        A worker that dies after running a while is logged and restarted at
        once in the same place.
        """
        self.reactor.advance(60)
        self.end(1)
        self.assertEqual(self.supervisor.runningWorkers(), [0])
        self.assertIn(
            "worker 1 (pid 1001) exited with signal 9 (SIGKILL) after 60.0 s; restarting",
            self.messages(),
        )
        self.reactor.advance(0)
        self.assertEqual(len(self.spawned), 3)
        self.assertEqual(self.spawned[2][1][self.spawned[2][1].index("--index") + 1], "1")
        self.assertEqual(self.supervisor.runningWorkers(), [0, 1])
        self.assertEqual(self.supervisor.restarts, 1)

    def test_restartBacksOff(self) -> None:
        """
        A worker that keeps dying soon after it starts is restarted after 1,
        2, 4... seconds, by the clock.
        """
        current = 0
        for delay in (1, 2, 4, 8):
            self.end(current, ProcessTerminated(exitCode=1))
            self.assertIn(
                f"exited with status 1 after 0.0 s; restarting in {delay} s",
                self.messages()[-1],
            )
            spawned = len(self.spawned)
            self.reactor.advance(delay - 0.01)
            self.assertEqual(len(self.spawned), spawned)
            self.reactor.advance(0.01)
            self.assertEqual(len(self.spawned), spawned + 1)
            current = spawned
        self.assertEqual(self.supervisor.restarts, 4)

    def test_signalsPassedOn(self) -> None:
        """
        SIGHUP (reload) and SIGUSR1 (reopen) go to every running worker.
        """
        self.end(0)
        self.supervisor.signalled(signal.SIGHUP)
        self.supervisor.signalled(signal.SIGUSR1)
        self.assertEqual(self.spawned[0][3].signals, [])
        self.assertEqual(self.spawned[1][3].signals, [signal.SIGHUP, signal.SIGUSR1])
        self.assertIn("SIGHUP: asked 1 workers to reload", self.messages())

    def test_stop(self) -> None:
        """
        Stopping sends SIGTERM to every worker, closes the listening sockets
        without shutting them down (the workers still use them), restarts
        nobody, and is done when every worker has exited.
        """
        stopped = self.supervisor.stopService()
        for _, _, _, process in self.spawned:
            self.assertEqual(process.signals, [signal.SIGTERM])
        for endpoint in self.endpoints:
            self.assertFalse(endpoint.port.listening)
            self.assertFalse(endpoint.port._shouldShutdown)
        self.end(0, ProcessDone(0))
        self.assertNoResult(stopped)
        self.end(1, ProcessDone(0))
        self.successResultOf(stopped)
        self.reactor.advance(100)
        self.assertEqual(len(self.spawned), 2)
        self.assertIn("worker 0 (pid 1000) exited with status 0", self.messages())

    def test_stopKillsStragglers(self) -> None:
        """
        A worker still running the drain timeout and a margin after SIGTERM
        is killed.
        """
        stopped = self.supervisor.stopService()
        self.end(0, ProcessDone(0))
        self.reactor.advance(4.0 + KILL_MARGIN - 0.1)
        self.assertEqual(self.spawned[1][3].signals, [signal.SIGTERM])
        self.reactor.advance(0.1)
        self.assertEqual(self.spawned[1][3].signals, [signal.SIGTERM, signal.SIGKILL])
        self.end(1)
        self.successResultOf(stopped)

    def test_secondSIGTERM(self) -> None:
        """
        The first SIGTERM stops the reactor (and so the workers); a second
        one is passed on to the workers, which then close their sessions.
        """
        self.supervisor.terminate()
        self.assertFalse(self.reactor.running)
        self.supervisor.stopService()
        self.supervisor.terminate()
        for _, _, _, process in self.spawned:
            self.assertEqual(process.signals, [signal.SIGTERM, signal.SIGTERM])

    def test_workerLog(self) -> None:
        """
        A worker's log events (as L{encodeEvent} writes them) are logged
        again with its number in front and in a C{worker} field, their
        plain-valued fields, level and namespace kept, a traceback in the
        text; other output is logged as it is.
        """
        protocol = self.spawned[1][0]
        event = {
            "log_format": "session ended: {summary}",
            "summary": "protocol=socks5",
            "sessionId": 4,
            "log_level": LogLevel.info,
            "log_namespace": "socksrelay.session.Session",
            "log_time": 1.0,
        }
        try:
            1 / 0
        except ZeroDivisionError:
            failed = {
                "log_format": "relay failed",
                "log_failure": Failure(),
                "log_level": LogLevel.critical,
                "log_namespace": "socksrelay.splicing",
                "log_time": 2.0,
            }
        line = encodeEvent(event).encode()
        protocol.childDataReceived(1, line[:10])
        protocol.childDataReceived(1, line[10:] + b"plain text\n")
        protocol.childDataReceived(2, b"Fatal Python error\n")
        protocol.childDataReceived(1, encodeEvent(failed).encode())
        relayed = [e for e in self.log if "workerPID" in e]
        self.assertEqual(len(relayed), 4)
        self.assertEqual(
            [formatEvent(e) for e in relayed[:3]],
            [
                "worker 1: session ended: protocol=socks5",
                "worker 1: plain text",
                "worker 1: Fatal Python error",
            ],
        )
        self.assertTrue(formatEvent(relayed[3]).startswith("worker 1: relay failed\nTraceback"))
        self.assertIn("ZeroDivisionError", formatEvent(relayed[3]))
        self.assertEqual(relayed[3]["log_level"], LogLevel.critical)
        self.assertEqual(relayed[0]["sessionId"], 4)
        self.assertEqual(relayed[0]["log_level"], LogLevel.info)
        self.assertEqual(relayed[0]["log_namespace"], "socksrelay.session.Session")
        self.assertEqual(relayed[0]["workerPID"], 1001)


# -- end to end ---------------------------------------------------------------

#: What the supervisor logs when it starts a worker, and a worker once it
#: accepts clients.
STARTED_RE = re.compile(r"worker (\d+) started \(pid (\d+)\)")
READY_RE = r"worker {index}: ready: accepting clients on "

DENY_ECHO = """
[[rule]]
name = "echo now denied"
action = "deny"
ports = [{port}]

[[rule]]
name = "everything else"
action = "allow"
"""


def isWorker(pid: int) -> bool:
    """
    Whether process C{pid} is a socksrelay worker (so that cleanup never
    signals a process that merely reuses a PID).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"socksrelay.worker" in f.read()
    except OSError:
        return False


class WorkersProxy(ProxyProcess):
    """
    C{twistd socks5 --workers 2} on an ephemeral loopback port, returned
    once both workers accept clients.  L{stop} also kills any worker it saw
    that is still running.
    """

    def __init__(self, extraArgs: list[str] | tuple[str, ...] = (), workers: int = 2) -> None:
        super().__init__(["--workers", str(workers), *extraArgs])
        self.workers = workers
        try:
            for index in range(workers):
                self.waitForLine(READY_RE.format(index=index), 20)
        except AssertionError:
            self.stop()
            raise

    def workerPids(self) -> dict[int, int]:
        """
        The PID of each worker, as last started.
        """
        pids = {}
        for line in self.snapshot():
            match = STARTED_RE.search(line)
            if match:
                pids[int(match.group(1))] = int(match.group(2))
        return pids

    def allWorkerPids(self) -> set[int]:
        return {int(m.group(2)) for m in map(STARTED_RE.search, self.snapshot()) if m}

    def metricsPort(self) -> int:
        return int(self.waitForLine(METRICS_RE, 10).group(2))

    def stop(self) -> int | None:
        code = super().stop()
        for pid in self.allWorkerPids():
            if processAlive(pid) and isWorker(pid):
                os.kill(pid, signal.SIGKILL)
        return code


def waitUntil(condition: Any, timeout: float, what: str) -> None:
    """
    Poll C{condition} every 50 ms until it is true, or fail after
    C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def workersOf(lines: list[str], pattern: str) -> list[int]:
    """
    The worker number in front of each line that matches C{pattern}.
    """
    found = []
    for line in lines:
        match = re.search(r"worker (\d+): " + pattern, line)
        if match:
            found.append(int(match.group(1)))
    return found


class WorkersEndToEndTests(unittest.TestCase):
    """
    The real C{twistd socks5 --workers 2}, driven with real clients over
    loopback.
    """

    def setUp(self) -> None:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)

    def start(self, *args: str) -> WorkersProxy:
        proxy = WorkersProxy(args)
        self.addCleanup(proxy.stop)
        return proxy

    def tunnel(self, proxy: WorkersProxy, payload: bytes = b"ping") -> socket.socket:
        """
        An open tunnel to the echo server, checked with one round trip.
        """
        sock, reply = socks5Connect(proxy.port, LOOPBACK_V4, self.echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(reply.rep, 0)
        sock.sendall(payload)
        self.assertEqual(recvExactly(sock, len(payload)), payload)
        return sock

    def concurrently(self, count: int, task: Any) -> list[Any]:
        """
        The results of C{task(n)} for C{n} in C{range(count)}, run from
        eight threads at once (so that both workers get clients).
        """
        results: list[Any] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        numbers = iter(range(count))

        def run() -> None:
            while True:
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                try:
                    result = task(n)
                except (OSError, EOFError, AssertionError) as e:
                    errors.append(e)
                    return
                with lock:
                    results.append(result)

        threads = [threading.Thread(target=run, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), count)
        return results

    def tunnels(self, proxy: WorkersProxy, count: int) -> list[socket.socket]:
        """
        C{count} tunnels opened at once.
        """
        return self.concurrently(count, lambda n: self.tunnel(proxy, f"ping {n}".encode()))

    def tearDown(self) -> None:
        for proxy in [c for c in vars(self).values() if isinstance(c, WorkersProxy)]:
            self.assertNotIn("Traceback", proxy.text())

    def test_bothWorkersServe(self) -> None:
        """
        twistd runs two worker processes as its children, and both serve:
        of 40 tunnels opened at once, each worker holds some, and each
        session's end is logged with the number of the worker that served it.
        """
        proxy = self.start()
        pids = proxy.workerPids()
        self.assertEqual(sorted(pids), [0, 1])
        self.assertEqual(childPids(proxy.pid), sorted(pids.values()))
        self.assertTrue(all(isWorker(pid) for pid in pids.values()))
        mark = proxy.mark()
        for sock in self.tunnels(proxy, 40):
            sock.close()
        ended = proxy.waitForCount(r"session ended", 40, 20, since=mark)
        served = workersOf(ended, "session ended")
        self.assertEqual(len(served), 40)
        self.assertEqual(set(served), {0, 1}, f"{served.count(0)} and {served.count(1)}")
        self.assertEqual(len(proxy.linesMatching(r"listening on .* \(SOCKS5\)")), 1)

    def test_killedWorkerReplaced(self) -> None:
        """
        A worker killed with SIGKILL is logged and replaced by a new child
        process in its place; the proxy serves throughout.
        """
        proxy = self.start()
        victim = proxy.workerPids()[0]
        mark = proxy.mark()
        os.kill(victim, signal.SIGKILL)
        for _ in range(5):
            self.tunnel(proxy).close()
        proxy.waitForLine(
            rf"worker 0 \(pid {victim}\) exited with signal 9 \(SIGKILL\) after .*; restarting",
            10,
            since=mark,
        )
        proxy.waitForLine(READY_RE.format(index=0), 20, since=mark)
        replacement = proxy.workerPids()[0]
        self.assertNotEqual(replacement, victim)
        self.assertFalse(processAlive(victim))
        self.assertEqual(childPids(proxy.pid), sorted(proxy.workerPids().values()))
        for sock in self.tunnels(proxy, 10):
            sock.close()

    def test_reloadReachesEveryWorker(self) -> None:
        """
        SIGHUP to twistd after the --config file changed makes every worker
        reload it, and the new rules apply in both workers.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        config = os.path.join(directory, "socksrelay.toml")
        with open(config, "w") as f:
            f.write('[[rule]]\nname = "all"\naction = "allow"\n')
        proxy = self.start("--config", config)
        self.tunnel(proxy).close()
        with open(config + ".new", "w") as f:
            f.write(DENY_ECHO.format(port=self.echo.port))
        os.replace(config + ".new", config)
        mark = proxy.mark()
        os.kill(proxy.pid, signal.SIGHUP)
        reloaded = proxy.waitForCount(r"worker \d+: configuration reloaded", 2, 10, since=mark)
        self.assertEqual(sorted(workersOf(reloaded, "configuration reloaded")), [0, 1])

        def denied(n: int) -> int:
            sock, reply = socks5Connect(proxy.port, LOOPBACK_V4, self.echo.port)
            sock.close()
            return reply.rep

        self.assertEqual(set(self.concurrently(30, denied)), {0x02})
        lines = proxy.waitForCount(r"session ended.*rule=echo now denied", 30, 10, since=mark)
        self.assertEqual(set(workersOf(lines, "session ended")), {0, 1})

    def test_sigtermStopsEverything(self) -> None:
        """
        SIGTERM to twistd stops both workers (a live tunnel is closed once
        the drain timeout passes) and twistd exits 0 in bounded time,
        leaving no worker process behind.
        """
        proxy = self.start()
        pids = list(proxy.workerPids().values())
        sock = self.tunnel(proxy)
        started = time.monotonic()
        os.kill(proxy.pid, signal.SIGTERM)
        sock.settimeout(15)
        try:
            self.assertEqual(sock.recv(1), b"")
        except ConnectionResetError:
            pass
        self.assertEqual(proxy._proc.wait(15), 0)
        self.assertLess(time.monotonic() - started, 15)
        self.assertEqual([pid for pid in pids if processAlive(pid)], [])
        proxy.waitForLine(r"SIGTERM: stopping 2 workers", 5)
        self.assertEqual(len(proxy.linesMatching(r"worker \d \(pid \d+\) exited with status 0")), 2)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK_V4, proxy.port), timeout=5).close()

    def test_orphanedWorkersStop(self) -> None:
        """
        When twistd dies without a chance to stop its workers (SIGKILL),
        they notice and exit on their own.
        """
        proxy = self.start()
        pids = list(proxy.workerPids().values())
        os.kill(proxy.pid, signal.SIGKILL)
        proxy._proc.wait(10)
        waitUntil(
            lambda: not any(processAlive(pid) for pid in pids),
            15,
            f"workers {pids} exit after their supervisor was killed",
        )

    def test_metricsAndSessions(self) -> None:
        """
        With --metrics, the supervisor's /metrics counts every session of
        both workers; /sessions lists the live sessions of both workers with
        unique ids; one session is read and closed by its id.
        """
        proxy = self.start("--metrics", "tcp:0:interface=127.0.0.1")
        port = proxy.metricsPort()
        mark = proxy.mark()
        for sock in self.tunnels(proxy, 12):
            sock.close()
        ended = proxy.waitForCount(r"session ended", 12, 20, since=mark)
        text = request(port, "GET", "/metrics")[2]
        ok = {"protocol": "socks5", "command": "CONNECT", "result": "ok"}
        self.assertEqual(sample(text, "socksrelay_sessions_total", **ok), 12)
        sent = sum(len(f"ping {n}") for n in range(12))
        self.assertEqual(sample(text, "socksrelay_bytes_total", direction="up"), sent)
        self.assertEqual(sample(text, "socksrelay_bytes_total", direction="down"), sent)
        self.assertEqual(sample(text, "socksrelay_handshake_seconds_count"), 12)
        self.assertEqual(sample(text, "socksrelay_workers"), 2)
        self.assertEqual(sample(text, "socksrelay_listening_sockets"), 1)
        self.assertEqual(sample(text, "socksrelay_worker_unanswered_total"), 0)
        self.assertEqual(len(workersOf(ended, "session ended")), 12)

        live = self.tunnels(proxy, 20)
        sessions = getJSON(port, "/sessions")
        ids = [s["id"] for s in sessions]
        self.assertEqual(len(ids), 20)
        self.assertEqual(len(set(ids)), 20)
        self.assertEqual({workerFor(i, 2) for i in ids}, {0, 1})
        active = sample(
            request(port, "GET", "/metrics")[2], "socksrelay_sessions_active", protocol="socks5"
        )
        self.assertEqual(active, 20)
        for session in sessions:
            one = getJSON(port, f"/sessions/{session['id']}")
            self.assertEqual((one["id"], one["client"]), (session["id"], session["client"]))
        victim = next(s for s in sessions if workerFor(s["id"], 2) == 1)
        status, _, body = request(port, "POST", f"/sessions/{victim['id']}/close")
        self.assertEqual((status, json.loads(body)), (200, {"closed": [victim["id"]]}))
        proxy.waitForLine(
            rf"worker 1: control: closing session {victim['id']} of "
            rf"{re.escape(victim['client'])} .* as asked by 127\.0\.0\.1:\d+",
            10,
        )
        waitUntil(
            lambda: request(port, "GET", f"/sessions/{victim['id']}")[0] == 404,
            10,
            "the closed session is gone",
        )
        self.assertEqual(request(port, "POST", f"/sessions/{victim['id']}/close")[0], 404)
        self.assertEqual(len(getJSON(port, "/sessions")), 19)
        for sock in live:
            sock.close()

    def test_accessLogShared(self) -> None:
        """
        Both workers append their --access-log lines to the same file, one
        whole JSON object per line; SIGUSR1 to twistd makes every worker
        reopen it by its name (after logrotate's rename).
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "access.log")
        proxy = self.start("--access-log", path)

        def records(name: str) -> list[dict[str, Any]]:
            with open(name) as f:
                return [json.loads(line) for line in f]

        for sock in self.tunnels(proxy, 30):
            sock.close()
        waitUntil(lambda: len(records(path)) == 30, 10, "30 access-log lines")
        ids = [r["id"] for r in records(path)]
        self.assertEqual(len(set(ids)), 30)
        self.assertEqual({workerFor(i, 2) for i in ids}, {0, 1})

        os.rename(path, path + ".1")
        mark = proxy.mark()
        os.kill(proxy.pid, signal.SIGUSR1)
        proxy.waitForLine(r"SIGUSR1: asked 2 workers to reopen the access log", 10, since=mark)
        reopened = proxy.waitForCount(r"access log reopened", 2, 10, since=mark)
        self.assertEqual(sorted(workersOf(reopened, "access log reopened")), [0, 1])
        for sock in self.tunnels(proxy, 30):
            sock.close()
        waitUntil(
            lambda: os.path.exists(path) and len(records(path)) == 30,
            10,
            "30 lines in the new access log",
        )
        self.assertEqual({workerFor(r["id"], 2) for r in records(path)}, {0, 1})
        self.assertEqual(len(records(path + ".1")), 30)

    def test_unixPortShared(self) -> None:
        """
        A UNIX --port is shared too: clients connect through its path, which
        keeps the mode it was made with, and which is removed at exit.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "socks.sock")
        proxy = self.start("--port", f"unix:{path}:mode=0600")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        mark = proxy.mark()
        for n in range(8):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                sock.sendall(encodeGreeting([0]))
                self.assertEqual(recvExactly(sock, 2), b"\x05\x00")
                sock.sendall(encodeRequest(LOOPBACK_V4, self.echo.port, 1))
                self.assertEqual(recvExactly(sock, 10)[:2], b"\x05\x00")
                sock.sendall(b"unix %d" % n)
                self.assertEqual(recvExactly(sock, 6), b"unix %d" % n)
        proxy.waitForCount(r"session ended", 8, 10, since=mark)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(proxy.stop(), 0)
        self.assertFalse(os.path.exists(path))

    def test_noRelayToItselfAndBacklog(self) -> None:
        """
        Every worker knows the shared listening sockets as its own: a
        CONNECT to the wildcard listener's port at another loopback address
        gets 0x02 from whichever worker accepts it; and the shared socket
        was made with the default backlog, 1024.
        """
        from tests.test_e2e_limits import OTHER_LOOPBACK, listenBacklog

        proxy = self.start("--port", "tcp:0:interface=0.0.0.0")
        wildcard = int(proxy.waitForLine(r"listening on 0\.0\.0\.0 port (\d+)").group(1))
        mark = proxy.mark()
        for _ in range(8):
            with socket.create_connection((LOOPBACK_V4, wildcard), timeout=10) as sock:
                sock.sendall(encodeGreeting([0]) + encodeRequest(OTHER_LOOPBACK, wildcard, 1))
                self.assertEqual(recvExactly(sock, 2), b"\x05\x00")
                self.assertEqual(recvExactly(sock, 10)[:2], b"\x05\x02")
        lines = proxy.waitForCount(r"session ended.* reply=0x02", 8, 10, since=mark)
        self.assertTrue(all("own listener" in line for line in lines), lines)
        self.assertEqual(len(proxy.linesMatching(r"session ended", since=mark)), 8)
        if shutil.which("ss"):
            self.assertEqual(listenBacklog(proxy.pid, wildcard), 1024)
        self.assertEqual(proxy.stop(), 0)
