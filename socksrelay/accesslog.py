# -*- test-case-name: tests.test_accesslog -*-
"""
The access log: one JSON object per line for every session that ends, in
a file given with C{--access-log}, reopened on SIGUSR1 (for logrotate).

Each line is a small append to a file opened in unbuffered append mode, so
that a line is either in the file or, on a write error, reported (once) in
the twistd log; nothing is held in memory and nothing raises into the
reactor.  Passwords are never part of a session and so never written.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any, BinaryIO

from twisted.application.service import Service
from twisted.logger import Logger
from zope.interface import implementer

from socksrelay.signals import SignalHandler
from socksrelay.interfaces import ISessionObserver

#: Command-specific facts of L{socksrelay.session.Session.details} that go
#: into a line, in this order: UDP ASSOCIATE's counts, BIND's peer, SOCKS4's
#: USERID, HTTP forwarding's request count and the outgoing address.  Only
#: these: nothing else a session holds is written.
DETAIL_FIELDS = (
    "datagramsUp",
    "datagramsDown",
    "udpBytesUp",
    "udpBytesDown",
    "drops",
    "expected",
    "peer",
    "rejected",
    "userid",
    "requests",
    "external",
)


def isoTime(seconds: float) -> str:
    """
    Format POSIX time as ISO 8601 in UTC with milliseconds, such as
    C{2024-05-01T12:00:00.250Z}.
    """
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parseDrops(value: Any) -> dict[str, int]:
    """
    The UDP drops of a session as an object from reason to count; the
    session holds them as C{reason:count,...} text (C{-} for none).
    """
    if isinstance(value, dict):
        return {str(k): int(v) for k, v in value.items()}
    drops: dict[str, int] = {}
    if not value or value == "-":
        return drops
    for item in str(value).split(","):
        reason, _, count = item.rpartition(":")
        try:
            drops[reason] = int(count)
        except ValueError:
            drops[item] = 1
    return drops


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 6)


def sessionRecord(session: Any) -> dict[str, Any]:
    """
    The access-log object for an ended L{socksrelay.session.Session}.

    Every line has the common fields (C{null} when they do not apply); the
    command-specific ones of L{DETAIL_FIELDS} appear when the session has
    them.
    """
    ended = getattr(session, "ended", None)
    if ended is None:
        ended = session.started
    details = session.details
    record: dict[str, Any] = {
        "id": session.id,
        "start": isoTime(session.started),
        "startEpoch": round(session.started, 6),
        "client": session.client,
        "listener": session.listener,
        "protocol": session.protocol,
        "method": session.method,
        "user": session.user,
        "command": session.command,
        "destination": session.destination,
        "resolved": session.resolved,
        "bound": session.bound,
        "rule": details.get("rule"),
        "reply": session.reply,
        "replyText": session.replyText
        or (None if session.reply is None else f"0x{session.reply:02x}"),
        "bytesUp": session.bytesUp,
        "bytesDown": session.bytesDown,
        "duration": round(ended - session.started, 6),
        "handshakeDuration": _seconds(session.started, session.handshakeDone),
        "connectDuration": _seconds(session.connectStarted, session.connected),
        "closedBy": session.closedBy,
        "reason": session.reason,
    }
    for name in DETAIL_FIELDS:
        if name not in details:
            continue
        value = details[name]
        if name == "drops":
            value = parseDrops(value)
        elif name == "peer" and value == "-":
            value = None
        record[name] = value
    return record


def encodeRecord(record: dict[str, Any]) -> bytes:
    """
    One line of JSON (ASCII, so that no byte in it can end the line early),
    with its newline.
    """
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=True, default=str)
    return text.encode("ascii") + b"\n"


@implementer(ISessionObserver)
class AccessLog:
    """
    An L{ISessionObserver} that appends a JSON line to C{path} for every
    session that ends.

    Between L{open} and L{close} the file stays open; at any other time
    (before the service starts, or for sessions that end while the server
    drains at shutdown) each line opens, appends to and closes the file.

    @ivar path: the file's name.
    """

    _log = Logger()

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        #: A write failed and was reported; the next failure is not.
        self._failing = False
        #: The last write stopped within a line: start the next on a new one.
        self._partial = False

    # -- the file ----------------------------------------------------------

    def _openFile(self) -> BinaryIO:
        return open(self.path, "ab", buffering=0)

    def open(self) -> None:
        """
        Open the file for appending (creating it if needed).

        @raise OSError: if it cannot be opened.
        """
        if self._file is None:
            self._file = self._openFile()

    def close(self) -> None:
        """
        Close the file; lines written later open it for themselves.
        """
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                self._reportError("closing", e)

    def reopen(self) -> bool:
        """
        Open the file by its name again and write there from now on (after
        logrotate renamed it); if that fails, keep writing to the old file.

        While the file is closed (each line opens it by name), there is
        nothing to reopen.

        @return: whether the file was reopened.
        """
        if self._file is None:
            return False
        try:
            new = self._openFile()
        except OSError as e:
            self._log.error(
                "cannot reopen the access log {path}, still writing to the "
                "old file: {error}",
                path=self.path,
                error=str(e),
            )
            return False
        old, self._file = self._file, new
        self._partial = False
        if old is not None:
            try:
                old.close()
            except OSError:
                pass
        self._log.info("access log reopened: {path}", path=self.path)
        return True

    def _reportError(self, doing: str, error: OSError) -> None:
        if not self._failing:
            self._failing = True
            self._log.error(
                "error {doing} the access log {path} (reported once until a "
                "line is written again): {error}",
                doing=doing,
                path=self.path,
                error=str(error),
            )

    def write(self, line: bytes) -> None:
        """
        Append C{line}; an error is reported once (until a line is written
        again), never raised.
        """
        if self._partial:
            line = b"\n" + line
        try:
            if self._file is not None:
                self._writeAll(self._file, line)
            else:
                with self._openFile() as f:
                    self._writeAll(f, line)
        except OSError as e:
            self._reportError("writing", e)
            return
        self._partial = False
        if self._failing:
            self._failing = False
            self._log.info("writing the access log {path} again", path=self.path)

    def _writeAll(self, f: BinaryIO, line: bytes) -> None:
        view = memoryview(line)
        while view:
            written = f.write(view)
            if written is None:
                # A non-blocking file that would block: not a regular file.
                raise OSError(f"{self.path} would block")
            if written < len(view):
                self._partial = True
            view = view[written:]

    # -- ISessionObserver --------------------------------------------------

    def sessionStarted(self, session: Any) -> None:
        pass

    def eventCounted(self, session: Any, event: str, fields: dict[str, Any]) -> None:
        pass

    def sessionEnded(self, session: Any) -> None:
        try:
            line = encodeRecord(sessionRecord(session))
        except Exception:
            self._log.failure("cannot make the access log line of a session")
            return
        self.write(line)


class AccessLogService(Service):
    """
    Keeps an L{AccessLog}'s file open while running and reopens it on
    SIGUSR1.

    The file is opened, and the handler installed, in
    C{privilegedStartService} (before twistd drops privileges, like its own
    log file) and again in C{startService} if needed; C{stopService}
    restores the previous handler and closes the file.
    """

    _log = Logger()

    def __init__(self, accessLog: AccessLog, reactor: Any) -> None:
        self.accessLog = accessLog
        self.reactor = reactor
        self._sigusr1 = SignalHandler("SIGUSR1", self._signalled)

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self.accessLog.open()
        self._sigusr1.install()

    def startService(self) -> None:
        Service.startService(self)
        self.accessLog.open()
        self._sigusr1.install()

    def stopService(self) -> Any:
        self._sigusr1.restore()
        self.accessLog.close()
        return Service.stopService(self)

    def _signalled(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.accessLog.reopen)


def checkAccessLogPath(path: str) -> str:
    """
    Check that C{path} names a file that can be appended to (or created);
    for C{--access-log}.

    @raise ValueError: if it cannot be.
    """
    if not path:
        raise ValueError("an empty file name")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ValueError(f"{path} is not writable")
        return path
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"no directory {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"cannot create a file in {directory}")
    return path
