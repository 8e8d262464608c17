# -*- test-case-name: tests.test_accesslog -*-
"""
Tests for L{socksrelay.accesslog}: the JSON line of each kind of session,
the file and its reopening, write errors, SIGUSR1, and C{--access-log}.

Sessions are real L{Session}s on a L{Clock}, filled in the way the server
fills them; no network and no real signal is used.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from socksrelay.accesslog import (
    AccessLog,
    AccessLogService,
    checkAccessLogPath,
    isoTime,
    parseDrops,
)
from socksrelay.interfaces import ISessionObserver
from socksrelay.session import Session

#: 2024-05-01T12:00:00.250Z as POSIX time.
START = 1714564800.25

COMMON_FIELDS = {
    "id",
    "start",
    "startEpoch",
    "client",
    "listener",
    "protocol",
    "method",
    "user",
    "command",
    "destination",
    "resolved",
    "bound",
    "rule",
    "reply",
    "replyText",
    "bytesUp",
    "bytesDown",
    "duration",
    "handshakeDuration",
    "connectDuration",
    "closedBy",
    "reason",
}


class CountingEnd:
    """
    Stands for a relay end: only its count of bytes received.
    """

    def __init__(self, bytesIn: int) -> None:
        self.bytesIn = bytesIn


class FakeReactor:
    """
    Records what is handed to C{callFromThread}, without running it.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.calls.append((f, args, kwargs))


class BrokenFile:
    """
    A file whose writes fail with C{ENOSPC}, after writing C{accept} bytes
    of the first one.
    """

    def __init__(self, accept: int = 0) -> None:
        self.accept = accept
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self.accept:
            n, self.accept = min(self.accept, len(data)), 0
            self.written += data[:n]
            return n
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> BrokenFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def accessLogEvents(observer: EventLoggingObserver) -> list[dict]:
    """
    The events the access log itself logged.
    """
    return [
        e for e in observer if "accesslog" in e.get("log_namespace", "")
    ]


class AccessLogTestCase(SynchronousTestCase):
    """
    An L{AccessLog} on a file in a temporary directory, and sessions on a
    L{Clock} that report to it.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "access.log")
        self.accessLog = AccessLog(self.path)
        self.addCleanup(self.accessLog.close)
        self.clock = Clock()
        self.clock.advance(START)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def session(self, **fields: Any) -> Session:
        """
        A session from 127.0.0.1:40000 to the listener 127.0.0.1:1080,
        started now, with C{fields} set on it.
        """
        session = Session(
            self.clock, "127.0.0.1:40000", "127.0.0.1:1080", (self.accessLog,)
        )
        for name, value in fields.items():
            setattr(session, name, value)
        return session

    def lines(self, path: str | None = None) -> list[dict[str, Any]]:
        """
        Every line of the file, each parsed as JSON.
        """
        with open(path or self.path, "rb") as f:
            raw = f.read()
        self.assertTrue(raw.endswith(b"\n"), raw)
        return [json.loads(line) for line in raw.splitlines()]

    def onlyLine(self) -> dict[str, Any]:
        [line] = self.lines()
        return line


class RecordTests(AccessLogTestCase):
    """
    The JSON object of each kind of session.
    """

    def test_observer(self) -> None:
        """
        L{AccessLog} provides L{ISessionObserver}, and its start and count
        hooks write nothing.
        """
        self.assertTrue(verifyObject(ISessionObserver, self.accessLog))
        session = self.session()
        session.start()
        session.count("udp-drop", reason="policy")
        self.assertFalse(os.path.exists(self.path))

    def test_connect(self) -> None:
        """
        A relayed CONNECT session is one line with every common field: when,
        who, how authenticated, where to, the reply, bytes each way, the
        durations and why it ended.
        """
        session = self.session(
            method="USERNAME_PASSWORD",
            user="alice",
            command="CONNECT",
            destination="example.com:443",
            resolved="192.0.2.1,2001:db8::1",
            bound="10.0.0.5:51000",
            reply=0,
            replyText="0x00",
        )
        session.details["rule"] = "rule 2 (line 7)"
        self.clock.advance(0.5)
        session.handshakeDone = session.connectStarted = self.clock.seconds()
        self.clock.advance(0.25)
        session.connected = self.clock.seconds()
        session.clientEnd = CountingEnd(120)
        session.outbound = CountingEnd(4500)
        self.clock.advance(2.0)
        session.sideClosed(True, Failure(ConnectionDone()))
        self.assertFalse(os.path.exists(self.path))
        session.sideClosed(False, Failure(ConnectionDone()))

        line = self.onlyLine()
        self.assertEqual(set(line), COMMON_FIELDS)
        self.assertEqual(line["id"], session.id)
        self.assertEqual(line["start"], "2024-05-01T12:00:00.250Z")
        self.assertEqual(line["startEpoch"], START)
        self.assertEqual(line["client"], "127.0.0.1:40000")
        self.assertEqual(line["listener"], "127.0.0.1:1080")
        self.assertEqual(line["protocol"], "socks5")
        self.assertEqual(line["method"], "USERNAME_PASSWORD")
        self.assertEqual(line["user"], "alice")
        self.assertEqual(line["command"], "CONNECT")
        self.assertEqual(line["destination"], "example.com:443")
        self.assertEqual(line["resolved"], "192.0.2.1,2001:db8::1")
        self.assertEqual(line["bound"], "10.0.0.5:51000")
        self.assertEqual(line["rule"], "rule 2 (line 7)")
        self.assertEqual(line["reply"], 0)
        self.assertEqual(line["replyText"], "0x00")
        self.assertEqual(line["bytesUp"], 120)
        self.assertEqual(line["bytesDown"], 4500)
        self.assertAlmostEqual(line["duration"], 2.75, places=5)
        self.assertAlmostEqual(line["handshakeDuration"], 0.5, places=5)
        self.assertAlmostEqual(line["connectDuration"], 0.25, places=5)
        self.assertEqual(line["closedBy"], "client")
        self.assertEqual(line["reason"], "client closed")

    def test_oneLinePerSession(self) -> None:
        """
        Each session is written once, on its own line, even if told to log
        again.
        """
        first, second = self.session(command="CONNECT"), self.session(command="BIND")
        first.log()
        first.log()
        second.log()
        self.assertEqual(
            [(line["id"], line["command"]) for line in self.lines()],
            [(first.id, "CONNECT"), (second.id, "BIND")],
        )

    def test_refusedAtGreeting(self) -> None:
        """
        A session refused before any request has C{null} command, reply and
        destination, and zero bytes.
        """
        session = self.session(method="NO_ACCEPTABLE_METHODS")
        session.noteClose("no acceptable authentication method (offered 0x02)")
        session.log()
        line = self.onlyLine()
        self.assertIsNone(line["command"])
        self.assertIsNone(line["reply"])
        self.assertIsNone(line["replyText"])
        self.assertIsNone(line["destination"])
        self.assertIsNone(line["rule"])
        self.assertEqual((line["bytesUp"], line["bytesDown"]), (0, 0))
        self.assertEqual(line["closedBy"], "proxy")

    def test_replyTextDefault(self) -> None:
        """
        A SOCKS5 reply without its own text is written as the text log shows
        it: C{0x05}.
        """
        session = self.session(command="CONNECT", reply=5)
        session.noteClose("connection refused")
        session.log()
        line = self.onlyLine()
        self.assertEqual((line["reply"], line["replyText"]), (5, "0x05"))
        self.assertEqual(line["reason"], "connection refused")

    def test_bind(self) -> None:
        """
        A BIND session adds the expected peer, the one that connected and how
        many others were turned away; C{bound} is the listening address.
        """
        session = self.session(
            command="BIND",
            destination="127.0.0.1:0",
            bound="127.0.0.1:41000",
            reply=0,
        )
        session.details.update(
            expected="127.0.0.1", peer="127.0.0.1:52000", rejected=2
        )
        session.log()
        line = self.onlyLine()
        self.assertEqual(set(line), COMMON_FIELDS | {"expected", "peer", "rejected"})
        self.assertEqual(line["bound"], "127.0.0.1:41000")
        self.assertEqual(line["expected"], "127.0.0.1")
        self.assertEqual(line["peer"], "127.0.0.1:52000")
        self.assertEqual(line["rejected"], 2)

    def test_bindWithoutPeer(self) -> None:
        """
        A BIND that no peer reached has C{peer} C{null}.
        """
        session = self.session(command="BIND", reply=6, replyText="0x06")
        session.details.update(expected="192.0.2.7", peer="-")
        session.noteClose("BIND timed out waiting for 192.0.2.7")
        session.log()
        line = self.onlyLine()
        self.assertIsNone(line["peer"])
        self.assertEqual(line["expected"], "192.0.2.7")
        self.assertEqual(line["reply"], 6)

    def test_udp(self) -> None:
        """
        A UDP association adds datagrams and bytes each way, and its drops
        as an object from reason to count.
        """
        session = self.session(
            command="UDP_ASSOCIATE",
            destination="0.0.0.0:0",
            bound="127.0.0.1:40001",
            reply=0,
        )
        session.details.update(
            datagramsUp=3,
            datagramsDown=2,
            udpBytesUp=300,
            udpBytesDown=200,
            drops="fragment:1,not-allowed:4",
        )
        session.noteClose("client closed the UDP control connection")
        session.log()
        line = self.onlyLine()
        self.assertEqual(
            set(line),
            COMMON_FIELDS
            | {"datagramsUp", "datagramsDown", "udpBytesUp", "udpBytesDown", "drops"},
        )
        self.assertEqual(
            (line["datagramsUp"], line["datagramsDown"]), (3, 2)
        )
        self.assertEqual((line["udpBytesUp"], line["udpBytesDown"]), (300, 200))
        self.assertEqual(line["drops"], {"fragment": 1, "not-allowed": 4})

    def test_udpNoDrops(self) -> None:
        """
        A UDP association without drops has an empty C{drops} object.
        """
        session = self.session(command="UDP_ASSOCIATE")
        session.details.update(drops="-", datagramsUp=0, datagramsDown=0)
        session.log()
        self.assertEqual(self.onlyLine()["drops"], {})

    def test_httpForward(self) -> None:
        """
        An HTTP forwarding session has protocol C{http}, command C{HTTP}, the
        status as its reply text, the number of requests, and the bytes the
        responses carried down.
        """
        session = self.session(
            protocol="http",
            user="bob",
            command="HTTP",
            destination="127.0.0.1:8080",
            replyText="200",
        )
        session.details["requests"] = 3
        session.clientEnd = CountingEnd(250)
        session.downCounter = lambda: 9000
        session.noteClose("client EOF", "client")
        session.log()
        line = self.onlyLine()
        self.assertEqual(line["protocol"], "http")
        self.assertIsNone(line["method"])
        self.assertEqual(line["user"], "bob")
        self.assertEqual(line["command"], "HTTP")
        self.assertEqual(line["replyText"], "200")
        self.assertEqual(line["requests"], 3)
        self.assertEqual((line["bytesUp"], line["bytesDown"]), (250, 9000))

    def test_socks4(self) -> None:
        """
        A SOCKS4 session has its protocol, its reply text (90) and the
        USERID the client sent.
        """
        session = self.session(
            protocol="socks4", command="CONNECT", reply=0, replyText="90"
        )
        session.details["userid"] = "carol"
        session.log()
        line = self.onlyLine()
        self.assertEqual(
            (line["protocol"], line["replyText"], line["userid"]),
            ("socks4", "90", "carol"),
        )

    def test_onlyKnownDetails(self) -> None:
        """
        Facts a session holds that are not access-log fields are not
        written.
        """
        session = self.session(command="CONNECT")
        session.details["password"] = "hunter2"
        session.details["external"] = "192.0.2.50"
        session.log()
        line = self.onlyLine()
        self.assertNotIn("password", line)
        self.assertEqual(line["external"], "192.0.2.50")
        with open(self.path) as f:
            self.assertNotIn("hunter2", f.read())

    def test_nonASCII(self) -> None:
        """
        A user name outside ASCII is written escaped, on one line, and reads
        back as it was.
        """
        session = self.session(user="zoë\nx", command="CONNECT")
        session.log()
        with open(self.path, "rb") as f:
            raw = f.read()
        self.assertEqual(raw.count(b"\n"), 1)
        self.assertEqual(self.onlyLine()["user"], "zoë\nx")

    def test_unwritableSession(self) -> None:
        """
        A session whose line cannot be made is logged as a failure; nothing
        raises and nothing is written.
        """
        self.accessLog.sessionEnded(object())
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)


class CloseReasonTests(AccessLogTestCase):
    """
    Who closed first and why, for each way a session ends.
    """

    def ended(self, session: Session) -> dict[str, Any]:
        session.log()
        line = self.lines()[-1]
        self.assertEqual(line["id"], session.id)
        return line

    def test_clientEOF(self) -> None:
        """
        A client that half-closes first: C{closedBy} C{client}, reason
        C{client EOF}.
        """
        session = self.session(command="CONNECT", reply=0)
        session.noteClose("client EOF", "client")
        session.noteClose("target EOF", "target")
        line = self.ended(session)
        self.assertEqual((line["closedBy"], line["reason"]), ("client", "client EOF"))

    def test_targetEOF(self) -> None:
        """
        A destination that closes first: C{closedBy} C{target}.
        """
        session = self.session(command="CONNECT", reply=0)
        session.outbound = CountingEnd(10)
        session.sideClosed(False, Failure(ConnectionDone()))
        session.sideClosed(True, Failure(ConnectionDone()))
        line = self.ended(session)
        self.assertEqual(
            (line["closedBy"], line["reason"]), ("target", "target closed")
        )

    def test_idleTimeout(self) -> None:
        """
        Timeouts (idle, half-closed, handshake, UDP idle) are the proxy's
        doing, with the timeout named.
        """
        for reason in (
            "idle timeout",
            "half-closed timeout",
            "handshake timeout in request",
            "UDP idle timeout",
        ):
            with self.subTest(reason=reason):
                session = self.session(command="CONNECT")
                session.noteClose(reason)
                line = self.ended(session)
                self.assertEqual((line["closedBy"], line["reason"]), ("proxy", reason))

    def test_policyDenied(self) -> None:
        """
        A request the policy denies has reply 2, the deciding rule, and
        C{denied by} that rule as the reason.
        """
        session = self.session(command="CONNECT", reply=2, replyText="0x02")
        session.details["rule"] = "rule 3 (line 12)"
        session.noteClose("denied by rule 3 (line 12)")
        line = self.ended(session)
        self.assertEqual(line["reply"], 2)
        self.assertEqual(line["rule"], "rule 3 (line 12)")
        self.assertEqual(line["reason"], "denied by rule 3 (line 12)")
        self.assertEqual(line["closedBy"], "proxy")

    def test_error(self) -> None:
        """
        A connection lost with an error has that error's text in the
        reason.
        """
        session = self.session(command="CONNECT", reply=0)
        session.sideClosed(True, Failure(ConnectionLost("Connection reset by peer")))
        line = self.ended(session)
        self.assertEqual(line["closedBy"], "client")
        self.assertIn("Connection reset by peer", line["reason"])
        self.assertTrue(line["reason"].startswith("client connection lost: "))

    def test_protocolError(self) -> None:
        """
        A protocol error is the proxy's close, with the error's text.
        """
        session = self.session(reply=1, replyText="0x01")
        session.noteClose("protocol error: reserved byte is 0x01")
        line = self.ended(session)
        self.assertEqual(
            (line["closedBy"], line["reason"]),
            ("proxy", "protocol error: reserved byte is 0x01"),
        )


class FileTests(AccessLogTestCase):
    """
    Opening, reopening and closing the file, and errors writing it.
    """

    def test_appends(self) -> None:
        """
        Lines go after what the file already holds.
        """
        with open(self.path, "w") as f:
            f.write('{"earlier":true}\n')
        self.accessLog.open()
        self.session(command="CONNECT").log()
        lines = self.lines()
        self.assertEqual(lines[0], {"earlier": True})
        self.assertEqual(lines[1]["command"], "CONNECT")

    def test_writtenAtOnce(self) -> None:
        """
        A line is in the file as soon as its session ends, while the file
        stays open.
        """
        self.accessLog.open()
        self.session(command="CONNECT").log()
        self.assertEqual(len(self.lines()), 1)

    def test_reopenAfterRename(self) -> None:
        """
        After the file is renamed, lines go to the old file until
        L{AccessLog.reopen}, then to a new file by the original name.
        """
        self.accessLog.open()
        before = self.session(command="CONNECT")
        before.log()
        rotated = self.path + ".1"
        os.rename(self.path, rotated)
        between = self.session(command="BIND")
        between.log()
        self.assertFalse(os.path.exists(self.path))

        self.assertTrue(self.accessLog.reopen())
        after = self.session(command="UDP_ASSOCIATE")
        after.log()
        self.assertEqual(
            [line["id"] for line in self.lines(rotated)], [before.id, between.id]
        )
        self.assertEqual([line["id"] for line in self.lines()], [after.id])
        [event] = accessLogEvents(self.events)
        self.assertIn("reopened", event["log_format"])

    def test_reopenFailureKeepsOldFile(self) -> None:
        """
        If the name cannot be opened again, an error is logged and lines
        still go to the old file.
        """
        self.accessLog.open()
        rotated = self.path + ".1"
        os.rename(self.path, rotated)
        os.mkdir(self.path)
        self.assertFalse(self.accessLog.reopen())
        self.session(command="CONNECT").log()
        self.assertEqual(len(self.lines(rotated)), 1)
        [event] = accessLogEvents(self.events)
        self.assertEqual(event["log_level"].name, "error")
        self.assertIn("cannot reopen", event["log_format"])

    def test_reopenWhileClosed(self) -> None:
        """
        With the file closed there is nothing to reopen: L{AccessLog.reopen}
        returns C{False} and leaves it closed.
        """
        self.assertFalse(self.accessLog.reopen())
        self.assertFalse(os.path.exists(self.path))

    def test_writesWhileClosed(self) -> None:
        """
        A session ending while the file is closed (before the service
        starts, or while the server drains at shutdown) is still written.
        """
        self.accessLog.open()
        self.accessLog.close()
        self.session(command="CONNECT").log()
        self.session(command="BIND").log()
        self.assertEqual(
            [line["command"] for line in self.lines()], ["CONNECT", "BIND"]
        )

    def test_writeErrorLoggedOnce(self) -> None:
        """
        Write errors (a full disk) are logged once and never raised; once a
        line is written again that is logged, and a later error is logged
        again.
        """
        broken = BrokenFile()
        self.accessLog._file = broken  # type: ignore[assignment]
        self.session(command="CONNECT").log()
        self.session(command="CONNECT").log()
        errors = [
            e for e in accessLogEvents(self.events) if e["log_level"].name == "error"
        ]
        self.assertEqual(len(errors), 1)
        self.assertIn("No space left on device", errors[0]["error"])
        self.assertEqual(errors[0]["path"], self.path)

        self.accessLog._file = None
        self.accessLog.open()
        self.session(command="BIND").log()
        self.assertEqual([line["command"] for line in self.lines()], ["BIND"])
        self.assertIn("again", accessLogEvents(self.events)[-1]["log_format"])

        self.accessLog.close()
        self.accessLog._file = BrokenFile()  # type: ignore[assignment]
        self.session(command="CONNECT").log()
        errors = [
            e for e in accessLogEvents(self.events) if e["log_level"].name == "error"
        ]
        self.assertEqual(len(errors), 2)

    def test_diskFull(self) -> None:
        """
        Writing to a device that is always full (Linux's /dev/full) logs one
        error and raises nothing.
        """
        if not os.path.exists("/dev/full"):
            raise self.skipTest("no /dev/full on this system")
        accessLog = AccessLog("/dev/full")
        accessLog.open()
        self.addCleanup(accessLog.close)
        for _ in range(3):
            accessLog.sessionEnded(self.session(command="CONNECT"))
        errors = accessLogEvents(self.events)
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["log_level"].name, "error")

    def test_partialLineThenNewLine(self) -> None:
        """
        After a write that stopped within a line, the next line starts on a
        line of its own, so that it still parses.
        """
        self.accessLog._file = BrokenFile(accept=10)  # type: ignore[assignment]
        self.session(command="CONNECT").log()
        self.accessLog._file = None
        self.session(command="BIND").log()
        with open(self.path, "rb") as f:
            raw = f.read()
        empty, line = raw.splitlines()
        self.assertEqual(empty, b"")
        self.assertEqual(json.loads(line)["command"], "BIND")

    def test_unwritableWhileClosed(self) -> None:
        """
        With the file closed and its directory gone, a session's line is an
        error logged once, not an exception.
        """
        accessLog = AccessLog(os.path.join(self.directory, "gone", "access.log"))
        accessLog.sessionEnded(self.session(command="CONNECT"))
        accessLog.sessionEnded(self.session(command="CONNECT"))
        [event] = accessLogEvents(self.events)
        self.assertEqual(event["log_level"].name, "error")


class HelperTests(SynchronousTestCase):
    """
    Formatting times and drops, and checking C{--access-log} paths.
    """

    def test_isoTime(self) -> None:
        """
        Times are ISO 8601 in UTC with milliseconds and a C{Z}.
        """
        self.assertEqual(isoTime(START), "2024-05-01T12:00:00.250Z")
        self.assertEqual(isoTime(0), "1970-01-01T00:00:00.000Z")

    def test_parseDrops(self) -> None:
        """
        Drops text becomes an object; C{-}, empty and an object pass.
        """
        self.assertEqual(parseDrops("a:1,b-c:20"), {"a": 1, "b-c": 20})
        self.assertEqual(parseDrops("-"), {})
        self.assertEqual(parseDrops(""), {})
        self.assertEqual(parseDrops({"x": 2}), {"x": 2})

    def test_checkPath(self) -> None:
        """
        A file in a writable directory is accepted; a directory, or a file
        in a directory that does not exist, is refused.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "access.log")
        self.assertEqual(checkAccessLogPath(path), path)
        self.assertFalse(os.path.exists(path))
        self.assertRaises(ValueError, checkAccessLogPath, directory)
        self.assertRaises(
            ValueError, checkAccessLogPath, os.path.join(directory, "no", "x.log")
        )
        self.assertRaises(ValueError, checkAccessLogPath, "")


class ServiceTests(SynchronousTestCase):
    """
    L{AccessLogService}: the file while running, and SIGUSR1.  No signal is
    ever sent: the installed handler is called directly.
    """

    def setUp(self) -> None:
        original = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, original)
        self.original = original
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "access.log")
        self.accessLog = AccessLog(self.path)
        self.addCleanup(self.accessLog.close)
        self.reactor = FakeReactor()
        self.service = AccessLogService(self.accessLog, self.reactor)

    def test_startOpensAndInstalls(self) -> None:
        """
        Starting opens (creates) the file and installs a SIGUSR1 handler;
        stopping restores the previous handler and closes the file.
        """
        self.service.startService()
        self.assertTrue(os.path.exists(self.path))
        self.assertIsNotNone(self.accessLog._file)
        self.assertEqual(signal.getsignal(signal.SIGUSR1), self.service._signalled)
        self.service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), self.original)
        self.assertIsNone(self.accessLog._file)

    def test_privilegedStart(self) -> None:
        """
        The file and handler are taken in C{privilegedStartService} (as
        twistd starts, before dropping privileges), once: after
        C{startService} too, stopping restores the original handler.
        """
        self.service.privilegedStartService()
        opened = self.accessLog._file
        self.assertIsNotNone(opened)
        self.assertEqual(signal.getsignal(signal.SIGUSR1), self.service._signalled)
        self.service.startService()
        self.assertIs(self.accessLog._file, opened)
        self.service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), self.original)

    def test_previousHandlerRestored(self) -> None:
        """
        A handler installed before the service is the one put back.
        """

        def previous(signum: int, frame: Any) -> None:
            pass

        signal.signal(signal.SIGUSR1, previous)
        self.service.startService()
        self.service.stopService()
        self.assertIs(signal.getsignal(signal.SIGUSR1), previous)

    def test_signalSchedulesReopen(self) -> None:
        """
        The handler does no I/O itself: it hands L{AccessLog.reopen} to the
        reactor thread with C{callFromThread}.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        handler = signal.getsignal(signal.SIGUSR1)
        handler(signal.SIGUSR1, None)  # type: ignore[operator]
        self.assertEqual(self.reactor.calls, [(self.accessLog.reopen, (), {})])

    def test_reopenOnSignalAfterRename(self) -> None:
        """
        Running what the handler scheduled after a rename makes the next
        line go to a new file by the original name.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        rotated = self.path + ".1"
        os.rename(self.path, rotated)
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)  # type: ignore[operator]
        [(f, args, kwargs)] = self.reactor.calls
        f(*args, **kwargs)
        clock = Clock()
        Session(clock, "127.0.0.1:1", "127.0.0.1:2", (self.accessLog,)).log()
        with open(self.path) as new, open(rotated) as old:
            self.assertEqual(len(new.read().splitlines()), 1)
            self.assertEqual(old.read(), "")


class TapTests(SynchronousTestCase):
    """
    C{--access-log} on the command line.
    """

    def test_option(self) -> None:
        """
        C{--access-log FILE} adds an L{AccessLog} on FILE to the factory's
        observers and its service to the service tree.
        """
        from twisted.application.internet import StreamServerEndpointService

        from socksrelay.tap import Options, makeService

        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "access.log")
        options = Options()
        options.parseOptions(["--access-log", path])
        self.assertEqual(options["access-log"], path)
        top = makeService(options, reactor=MemoryReactorClock())
        [service] = [s for s in top if isinstance(s, AccessLogService)]
        self.assertEqual(service.accessLog.path, path)
        factories = {
            s.factory for s in top if isinstance(s, StreamServerEndpointService)
        }
        self.assertEqual(len(factories), 1)
        self.assertIn(service.accessLog, factories.pop().observers)

    def test_noOption(self) -> None:
        """
        Without C{--access-log} there is no access log.
        """
        from socksrelay.tap import Options, makeService

        options = Options()
        options.parseOptions([])
        self.assertIsNone(options["access-log"])
        top = makeService(options, reactor=MemoryReactorClock())
        self.assertEqual([s for s in top if isinstance(s, AccessLogService)], [])

    def test_badPath(self) -> None:
        """
        A path in a directory that does not exist is a usage error.
        """
        from socksrelay.tap import Options

        missing = os.path.join(self.mktemp(), "access.log")
        self.assertRaises(
            UsageError, Options().parseOptions, ["--access-log", missing]
        )
