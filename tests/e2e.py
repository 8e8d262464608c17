"""
Helpers for socksrelay's end-to-end tests.

Everything here treats socksrelay as a black box: the proxy runs as a real
C{twistd socks5} child process (L{ProxyProcess}), clients are real clients
(curl, PySocks, python-socks, httpx, or the raw socket client below) and the
destinations are small loopback servers running in threads of the test
process (L{EchoServer}, L{SinkServer}, L{SourceServer}, L{ReplyAfterEOFServer},
L{HTTPTarget}).

Rules every helper keeps:
  - nothing listens on, or connects to, anything but 127.0.0.1 or ::1;
  - no DNS: the only name ever used is C{localhost} (from /etc/hosts);
  - every socket has a timeout and every wait has a deadline;
  - every thread is a daemon and is stopped by C{stop()};
  - only processes this module started are ever signalled, by their PID.
"""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import os
import queue
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
from typing import Callable, Iterable, Iterator, Sequence

#: The repository root: the directory that holds C{socksrelay/} and C{tests/}.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The only addresses anything in the e2e suite may bind or connect to.
LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"
_ALLOWED_HOSTS = {LOOPBACK_V4, LOOPBACK_V6, "localhost"}

#: The default per-operation timeout of every socket made here.
SOCKET_TIMEOUT = 10.0

LISTENING_RE = re.compile(r"listening on (\S+) port (\d+)")
SESSION_ENDED_RE = re.compile(r"session ended")

CHUNK = 64 * 1024


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------


def _checkHost(host: str) -> str:
    if host not in _ALLOWED_HOSTS:
        raise ValueError(
            f"e2e helpers only use loopback addresses or 'localhost', "
            f"not {host!r}"
        )
    return host


def familyOf(host: str) -> int:
    """
    The address family of a loopback literal.
    """
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def twistdPath() -> str:
    """
    The C{twistd} console script that belongs to the running interpreter.
    """
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("twistd")
    if found is None:
        raise RuntimeError(
            f"no twistd next to {sys.executable} and none on PATH"
        )
    return found


def curlPath() -> str:
    found = shutil.which("curl") or (
        "/usr/bin/curl" if os.path.exists("/usr/bin/curl") else None
    )
    if found is None:
        raise RuntimeError("curl is not installed; the e2e suite needs it")
    return found


def cleanEnvironment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """
    A copy of C{os.environ} without any C{*_proxy} variable (in any case),
    so that no client picks up a proxy the test did not ask for.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.lower().endswith("_proxy")
    }
    if extra:
        env.update(extra)
    return env


def requireIPv6Loopback() -> None:
    """
    Fail (never skip) with a clear message when ::1 cannot be bound.
    """
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as e:
        raise AssertionError(
            f"IPv6 is not available on this machine (socket(AF_INET6) "
            f"failed: {e}); the IPv6 e2e tests need ::1"
        ) from e
    try:
        probe.bind((LOOPBACK_V6, 0))
    except OSError as e:
        raise AssertionError(
            f"cannot bind [::1]:0 ({e}); the IPv6 e2e tests need a ::1 "
            f"loopback address"
        ) from e
    finally:
        probe.close()


def closedPort(host: str = LOOPBACK_V4) -> int:
    """
    A TCP port on C{host} that nothing listens on: bind a socket, learn its
    port, close it.
    """
    _checkHost(host)
    s = socket.socket(familyOf(host), socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def pseudoRandomChunks(
    total: int, seed: int, chunkSize: int = CHUNK
) -> Iterator[bytes]:
    """
    C{total} bytes of deterministic pseudo-random data, C{chunkSize} at a
    time.
    """
    rng = random.Random(seed)
    remaining = total
    while remaining > 0:
        n = min(chunkSize, remaining)
        yield rng.randbytes(n)
        remaining -= n


def pseudoRandomBytes(total: int, seed: int) -> bytes:
    return b"".join(pseudoRandomChunks(total, seed))


def digestOf(chunks: Iterable[bytes]) -> tuple[str, int]:
    """
    The SHA-256 hex digest and byte count of the concatenation of C{chunks}.
    """
    h = hashlib.sha256()
    count = 0
    for chunk in chunks:
        h.update(chunk)
        count += len(chunk)
    return h.hexdigest(), count


def recvExactly(sock: socket.socket, n: int) -> bytes:
    """
    Read exactly C{n} bytes, or raise L{EOFError} (with what was read) if
    the peer closes first.  The socket's own timeout bounds every read.
    """
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError(
                f"connection closed after {len(buf)} of {n} bytes: "
                f"{bytes(buf)!r}"
            )
        buf += data
    return bytes(buf)


def recvUntilEOF(
    sock: socket.socket, limit: int = 16 * 1024 * 1024, deadline: float = 30.0
) -> bytes:
    """
    Read until the peer closes (C{recv} returns C{b""}), at most C{limit}
    bytes, within C{deadline} seconds overall.
    """
    end = time.monotonic() + deadline
    buf = bytearray()
    while True:
        if time.monotonic() > end:
            raise TimeoutError(
                f"no EOF within {deadline}s; got {len(buf)} bytes"
            )
        data = sock.recv(65536)
        if not data:
            return bytes(buf)
        buf += data
        if len(buf) > limit:
            raise AssertionError(f"more than {limit} bytes before EOF")


def drainDigest(sock: socket.socket, deadline: float = 100.0) -> tuple[str, int]:
    """
    Read until EOF, hashing as it goes; the SHA-256 hex digest and count.
    """
    end = time.monotonic() + deadline
    h = hashlib.sha256()
    count = 0
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    while True:
        if time.monotonic() > end:
            raise TimeoutError(
                f"no EOF within {deadline}s; got {count} bytes"
            )
        n = sock.recv_into(buf)
        if n == 0:
            return h.hexdigest(), count
        h.update(view[:n])
        count += n


def connectTCP(
    host: str, port: int, timeout: float = SOCKET_TIMEOUT
) -> socket.socket:
    """
    A TCP connection to a loopback address, with a timeout.
    """
    _checkHost(host)
    if host == "localhost":
        host = LOOPBACK_V4
    s = socket.socket(familyOf(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def abortSocket(sock: socket.socket) -> None:
    """
    Close with a TCP RST (SO_LINGER 0) rather than an orderly FIN.
    """
    try:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    finally:
        sock.close()


# --------------------------------------------------------------------------
# The proxy under test
# --------------------------------------------------------------------------


class TwistdProcess:
    """
    A C{twistd -n PLUGIN ...} child process, its output collected line by
    line; the constructor returns once a line matches C{readyRegex}.

    @ivar lines: every line it wrote to stdout or stderr so far (decoded,
        without line endings); appended to by a reader thread.
    @ivar ready: the match of C{readyRegex}.
    """

    STARTUP_TIMEOUT = 20.0
    STOP_TIMEOUT = 10.0

    def __init__(
        self,
        pluginArgs: Sequence[str],
        readyRegex: "re.Pattern[str] | str",
        startupTimeout: float = STARTUP_TIMEOUT,
        env: dict[str, str] | None = None,
        pythonPath: Sequence[str] = (),
    ) -> None:
        self.port: int | None = None
        self.lines: list[str] = []
        self.returncode: int | None = None
        self.killed = False
        self._cond = threading.Condition()
        self._eof = False
        self.argv = [twistdPath(), "-n", "--pidfile=", "--logfile=-", *pluginArgs]
        environment = cleanEnvironment(env)
        paths = [REPO_ROOT, *pythonPath]
        existing = environment.get("PYTHONPATH")
        if existing:
            paths.append(existing)
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        environment["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.pid = self._proc.pid
        self._reader = threading.Thread(
            target=self._readLines,
            name=f"twistd-{self.pid}-stdout",
            daemon=True,
        )
        self._reader.start()
        try:
            self.ready = self.waitForLine(readyRegex, startupTimeout)
        except AssertionError as e:
            self.stop()
            raise AssertionError(
                f"twistd did not get ready: {e}\ncommand: {self.argv}"
            ) from None

    def _readLines(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def mark(self) -> int:
        """
        The number of lines logged so far, for C{waitForLine(since=...)}.
        """
        with self._cond:
            return len(self.lines)

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self.lines)

    def text(self) -> str:
        return "\n".join(self.snapshot())

    def waitForLine(
        self,
        regex: str | re.Pattern[str],
        timeout: float = 10.0,
        since: int = 0,
    ) -> re.Match[str]:
        """
        Wait until a line at index C{since} or later matches C{regex}; the
        match.  Raise L{AssertionError} (with the log) on timeout or when the
        process exits first.
        """
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        end = time.monotonic() + timeout
        index = since
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = pattern.search(self.lines[index])
                    index += 1
                    if match:
                        return match
                if self._eof:
                    raise AssertionError(
                        f"the proxy exited (code {self._proc.poll()}) before "
                        f"logging a line matching {pattern.pattern!r}; "
                        f"log:\n" + "\n".join(self.lines)
                    )
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no line matching {pattern.pattern!r} within "
                        f"{timeout}s; log:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.5))

    def waitForCount(
        self,
        regex: str | re.Pattern[str],
        count: int,
        timeout: float = 10.0,
        since: int = 0,
    ) -> list[str]:
        """
        Wait until at least C{count} lines from index C{since} on match
        C{regex}; those lines.
        """
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    line for line in self.lines[since:] if pattern.search(line)
                ]
                if len(found) >= count:
                    return found
                if self._eof:
                    raise AssertionError(
                        f"the proxy exited before logging {count} lines "
                        f"matching {pattern.pattern!r} (saw {len(found)}); "
                        f"log:\n" + "\n".join(self.lines)
                    )
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"only {len(found)} of {count} lines matching "
                        f"{pattern.pattern!r} within {timeout}s; log:\n"
                        + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.5))

    def linesMatching(self, regex: str, since: int = 0) -> list[str]:
        pattern = re.compile(regex)
        return [line for line in self.snapshot()[since:] if pattern.search(line)]

    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> int | None:
        """
        SIGTERM, up to 10 s, then SIGKILL.  Idempotent; the exit status.
        """
        if self._proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self._proc.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.killed = True
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._proc.wait(self.STOP_TIMEOUT)
        self.returncode = self._proc.returncode
        self._reader.join(self.STOP_TIMEOUT)
        if self._proc.stdout is not None and not self._reader.is_alive():
            self._proc.stdout.close()
        return self.returncode

    def __enter__(self) -> "TwistdProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} port={self.port}>"


class ProxyProcess(TwistdProcess):
    """
    A C{twistd -n socks5} child process listening on an ephemeral loopback
    port.

    @ivar port: the port the server reported it listens on.
    """

    def __init__(
        self,
        extraArgs: Sequence[str] = (),
        startupTimeout: float = TwistdProcess.STARTUP_TIMEOUT,
        env: dict[str, str] | None = None,
        pythonPath: Sequence[str] = (),
    ) -> None:
        self.extraArgs = list(extraArgs)
        self.host = LOOPBACK_V4
        super().__init__(
            # A short drain keeps teardown quick; tests may give their own.
            ["socks5", "--port", "tcp:0:interface=127.0.0.1", "--drain-timeout", "2",
             *self.extraArgs],
            LISTENING_RE,
            startupTimeout,
            env=env,
            pythonPath=pythonPath,
        )
        self.port = int(self.ready.group(2))


class ProxyTestCase(unittest.TestCase):
    """
    One proxy process for the whole class, started in L{setUpClass} with
    C{proxyArgs} and stopped in L{tearDownClass}, after which the whole log
    is checked: no traceback, and none of C{secrets}.
    """

    proxyArgs: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    proxy: ProxyProcess

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.proxy = ProxyProcess(cls.proxyArgs)
        cls.addClassCleanup(cls.proxy.stop)
        cls.startTargets()

    @classmethod
    def startTargets(cls) -> None:
        """
        Start the loopback targets the class needs (with L{startTarget}).
        """

    @classmethod
    def startTarget(cls, target):
        cls.addClassCleanup(target.stop)
        return target

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        lines = cls.proxy.snapshot()
        problems = [line for line in lines if "Traceback" in line]
        for secret in cls.secrets:
            problems += [line for line in lines if secret in line]
        if problems:
            raise AssertionError(
                f"{cls.__name__}: the proxy log has tracebacks or secrets:\n"
                + "\n".join(problems)
                + "\nfull log:\n"
                + "\n".join(lines)
            )
        super().tearDownClass()


# --------------------------------------------------------------------------
# Loopback targets
# --------------------------------------------------------------------------


class LoopbackTCPServer:
    """
    A threaded TCP server on a loopback address and an ephemeral port.
    Subclasses implement L{handle}; each connection gets its own daemon
    thread and a socket timeout.  Whatever L{handle} puts in
    C{self.results} can be waited for with L{waitResult}; exceptions raised
    by L{handle} are kept in C{self.errors}.
    """

    def __init__(
        self, host: str = LOOPBACK_V4, timeout: float = 60.0
    ) -> None:
        self.host = _checkHost(host)
        if host == "localhost":
            self.host = LOOPBACK_V4
        self.timeout = timeout
        self.results: queue.Queue[object] = queue.Queue()
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(familyOf(self.host), socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._acceptThread = threading.Thread(
            target=self._acceptLoop,
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._acceptThread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def _acceptLoop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            conn.settimeout(self.timeout)
            t = threading.Thread(
                target=self._serve, args=(conn,), daemon=True
            )
            with self._lock:
                self._conns.add(conn)
                self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except BaseException as e:  # recorded, not printed
            if not self._stopping.is_set():
                self.errors.append(e)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError()

    def waitResult(self, timeout: float = 30.0) -> object:
        """
        The next result a connection reported, or L{AssertionError} (with any
        handler errors) after C{timeout} seconds.
        """
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{type(self).__name__} on port {self.port} reported nothing "
                f"within {timeout}s; handler errors: {self.errors!r}"
            ) from None

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        self._acceptThread.join(5)
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)


class EchoServer(LoopbackTCPServer):
    """
    Echoes every byte back; on EOF shuts down its write side and closes.
    """

    def handle(self, conn: socket.socket) -> None:
        total = 0
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
            total += len(data)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.results.put(total)


class SinkServer(LoopbackTCPServer):
    """
    Reads until EOF and reports C{(sha256 hexdigest, byte count)} of what it
    received, then closes.
    """

    def handle(self, conn: socket.socket) -> None:
        self.results.put(drainDigest(conn, deadline=self.timeout * 10))


class SourceServer(LoopbackTCPServer):
    """
    Sends C{size} bytes of L{pseudoRandomChunks}C{(size, seed)}, then either
    closes (C{closeAfterSend=True}) or shuts down its write side and keeps
    reading until EOF.  Reports a dict with the digest and count it sent and,
    when it kept reading, the bytes it received after its own shutdown.
    """

    def __init__(
        self,
        size: int,
        seed: int = 1,
        closeAfterSend: bool = True,
        host: str = LOOPBACK_V4,
        timeout: float = 60.0,
    ) -> None:
        self.size = size
        self.seed = seed
        self.closeAfterSend = closeAfterSend
        super().__init__(host, timeout)

    def expected(self) -> tuple[str, int]:
        return digestOf(pseudoRandomChunks(self.size, self.seed))

    def handle(self, conn: socket.socket) -> None:
        h = hashlib.sha256()
        sent = 0
        for chunk in pseudoRandomChunks(self.size, self.seed):
            conn.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
        result: dict[str, object] = {"digest": h.hexdigest(), "sent": sent}
        if self.closeAfterSend:
            self.results.put(result)
            return
        conn.shutdown(socket.SHUT_WR)
        result["received"] = recvUntilEOF(conn, deadline=self.timeout)
        self.results.put(result)


class ReplyAfterEOFServer(LoopbackTCPServer):
    """
    Reads until EOF, then sends C{respond(everything)} and closes.  Reports
    the bytes it received.  The default response is the input reversed.
    """

    def __init__(
        self,
        respond: Callable[[bytes], bytes] = lambda data: data[::-1],
        host: str = LOOPBACK_V4,
        timeout: float = 60.0,
    ) -> None:
        self.respond = respond
        super().__init__(host, timeout)

    def handle(self, conn: socket.socket) -> None:
        data = recvUntilEOF(conn, limit=256 * 1024 * 1024, deadline=self.timeout)
        conn.sendall(self.respond(data))
        self.results.put(data)


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    timeout = 30
    body = b""

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host")))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        self.errors.append(sys.exc_info()[1])


class HTTPTarget:
    """
    An HTTP/1.0 server (L{http.server}) in a thread, serving C{body} with
    status 200 on every GET path.

    @ivar requests: C{(path, Host header)} of every request served.
    """

    def __init__(self, body: bytes, host: str = LOOPBACK_V4) -> None:
        self.host = _checkHost(host)
        self.body = body
        handler = type("Handler", (_QuietHandler,), {"body": body})
        serverClass = type(
            "Server", (_HTTPServer,), {"address_family": familyOf(host)}
        )
        self._server = serverClass((host, 0), handler)
        self._server.requests = []
        self._server.errors = []
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"HTTPTarget-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self._server.requests

    def url(self, name: str | None = None, path: str = "/") -> str:
        """
        The URL of this server, by C{name} (default: its literal address).
        """
        host = name or self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --------------------------------------------------------------------------
# A raw SOCKS5 client
# --------------------------------------------------------------------------

ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

CMD_CONNECT = 0x01

METHOD_NONE = 0x00
METHOD_USERPASS = 0x02
METHOD_NO_ACCEPTABLE = 0xFF

REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class SOCKSReply:
    """
    A parsed SOCKS5 reply.
    """

    def __init__(self, raw: bytes, rep: int, atyp: int, host: str, port: int):
        self.raw = raw
        self.rep = rep
        self.atyp = atyp
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return (
            f"<SOCKSReply rep=0x{self.rep:02x} atyp={self.atyp} "
            f"bound={self.host}:{self.port} raw={self.raw!r}>"
        )


def encodeGreeting(methods: Sequence[int] = (METHOD_NONE,)) -> bytes:
    return bytes([5, len(methods), *methods])


def encodeUserPass(username: str | bytes, password: str | bytes) -> bytes:
    u = username.encode() if isinstance(username, str) else username
    p = password.encode() if isinstance(password, str) else password
    return bytes([1, len(u)]) + u + bytes([len(p)]) + p


def encodeAddress(host: str, port: int, atyp: int | None = None) -> bytes:
    """
    ATYP + address + port.  C{atyp} defaults to the type of C{host}: an IPv4
    literal is 1, an IPv6 literal 4, anything else a name (3).
    """
    if atyp is None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            atyp = ATYP_DOMAIN
        else:
            atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
    if atyp == ATYP_IPV4:
        addr = socket.inet_pton(socket.AF_INET, host)
    elif atyp == ATYP_IPV6:
        addr = socket.inet_pton(socket.AF_INET6, host)
    else:
        name = host.encode("idna")
        addr = bytes([len(name)]) + name
    return bytes([atyp]) + addr + struct.pack("!H", port)


def encodeRequest(
    host: str, port: int, command: int = CMD_CONNECT, atyp: int | None = None
) -> bytes:
    return bytes([5, command, 0]) + encodeAddress(host, port, atyp)


def readMethodSelection(sock: socket.socket) -> int:
    ver, method = recvExactly(sock, 2)
    if ver != 5:
        raise AssertionError(f"method selection with version {ver}")
    return method


def readAuthStatus(sock: socket.socket) -> bytes:
    return recvExactly(sock, 2)


def readReply(sock: socket.socket) -> SOCKSReply:
    """
    Read one SOCKS5 reply: VER REP RSV ATYP BND.ADDR BND.PORT.
    """
    head = recvExactly(sock, 4)
    ver, rep, _rsv, atyp = head
    if ver != 5:
        raise AssertionError(f"reply with version {ver}: {head!r}")
    if atyp == ATYP_IPV4:
        rawAddr = recvExactly(sock, 4)
        host = socket.inet_ntop(socket.AF_INET, rawAddr)
    elif atyp == ATYP_IPV6:
        rawAddr = recvExactly(sock, 16)
        host = socket.inet_ntop(socket.AF_INET6, rawAddr)
    elif atyp == ATYP_DOMAIN:
        length = recvExactly(sock, 1)
        rawAddr = length + recvExactly(sock, length[0])
        host = rawAddr[1:].decode("ascii", "backslashreplace")
    else:
        raise AssertionError(f"reply with unknown ATYP {atyp}: {head!r}")
    rawPort = recvExactly(sock, 2)
    (port,) = struct.unpack("!H", rawPort)
    return SOCKSReply(head + rawAddr + rawPort, rep, atyp, host, port)


class SOCKS5Session:
    """
    One connection to the proxy, driven step by step.
    """

    def __init__(
        self, proxyPort: int, proxyHost: str = LOOPBACK_V4,
        timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        self.sock = connectTCP(proxyHost, proxyPort, timeout)

    def greet(self, methods: Sequence[int] = (METHOD_NONE,)) -> int:
        self.sock.sendall(encodeGreeting(methods))
        return readMethodSelection(self.sock)

    def authenticate(self, username: str, password: str) -> bytes:
        """
        Send the RFC 1929 request; the raw two-byte status.
        """
        self.sock.sendall(encodeUserPass(username, password))
        return readAuthStatus(self.sock)

    def connect(
        self, host: str, port: int, atyp: int | None = None
    ) -> SOCKSReply:
        self.sock.sendall(encodeRequest(host, port, CMD_CONNECT, atyp))
        return readReply(self.sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SOCKS5Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def socks5Connect(
    proxyPort: int,
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    atyp: int | None = None,
    timeout: float = SOCKET_TIMEOUT,
) -> tuple[socket.socket, SOCKSReply]:
    """
    Greeting, optional RFC 1929, CONNECT.  The socket (caller closes it) and
    the reply; raises L{AssertionError} if method negotiation or
    authentication fails.
    """
    session = SOCKS5Session(proxyPort, timeout=timeout)
    try:
        wanted = METHOD_USERPASS if username is not None else METHOD_NONE
        method = session.greet((wanted,))
        if method != wanted:
            raise AssertionError(
                f"proxy selected method 0x{method:02x}, wanted 0x{wanted:02x}"
            )
        if username is not None:
            status = session.authenticate(username, password or "")
            if status != b"\x01\x00":
                raise AssertionError(f"authentication failed: {status!r}")
        reply = session.connect(host, port, atyp)
    except BaseException:
        session.close()
        raise
    return session.sock, reply


# --------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------


def runCurl(
    *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """
    Run C{curl -sS --max-time 20 --noproxy '' ARGS} with an environment
    without proxy variables.
    """
    argv = [curlPath(), "-sS", "--max-time", "20", "--noproxy", "", *args]
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=cleanEnvironment(),
        timeout=timeout,
    )


# --------------------------------------------------------------------------
# UDP
# --------------------------------------------------------------------------

CMD_UDP_ASSOCIATE = 0x03


class UDPEchoServer:
    """
    A UDP echo server on a loopback address, in a daemon thread; records
    every C{(data, sourceAddress)} it received in C{received}.
    """

    def __init__(self, host: str = LOOPBACK_V4) -> None:
        self.host = _checkHost(host)
        self.sock = socket.socket(familyOf(self.host), socket.SOCK_DGRAM)
        self.sock.bind((self.host, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                data, addr = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received.append((data, addr[:2]))
            try:
                self.sock.sendto(data, addr)
            except OSError:
                pass

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.sock.close()


def encodeUDPHeader(host: str, port: int, frag: int = 0, atyp: int | None = None) -> bytes:
    """
    The SOCKS5 UDP request header for a datagram to C{host:port}.
    """
    return b"\x00\x00" + bytes([frag]) + encodeAddress(host, port, atyp)


def parseUDPDatagram(datagram: bytes) -> tuple[int, str, int, bytes]:
    """
    Parse a datagram the relay sent back: C{(atyp, host, port, payload)}.
    Raises L{AssertionError} for a malformed or name-carrying header.
    """
    if len(datagram) < 4 or datagram[:3] != b"\x00\x00\x00":
        raise AssertionError(f"bad UDP header: {datagram[:8]!r}")
    atyp = datagram[3]
    if atyp == ATYP_IPV4:
        host = str(ipaddress.IPv4Address(datagram[4:8]))
        end = 8
    elif atyp == ATYP_IPV6:
        host = str(ipaddress.IPv6Address(datagram[4:20]))
        end = 20
    else:
        raise AssertionError(f"the relay named a source with ATYP {atyp}")
    (port,) = struct.unpack("!H", datagram[end : end + 2])
    return atyp, host, port, datagram[end + 2 :]


class UDPAssociation:
    """
    A UDP association made with raw sockets: the TCP control connection, the
    client's UDP socket, and the relay address the proxy announced.
    """

    def __init__(
        self,
        proxyPort: int,
        requestHost: str = "0.0.0.0",
        requestPort: int = 0,
        clientHost: str = LOOPBACK_V4,
        timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        self.control = SOCKS5Session(proxyPort, timeout=timeout)
        try:
            if self.control.greet() != METHOD_NONE:
                raise AssertionError("method negotiation failed")
            self.control.sock.sendall(
                encodeRequest(requestHost, requestPort, CMD_UDP_ASSOCIATE)
            )
            self.reply = readReply(self.control.sock)
            self.udp = socket.socket(familyOf(clientHost), socket.SOCK_DGRAM)
            self.udp.bind((clientHost, 0))
            self.udp.settimeout(timeout)
        except BaseException:
            self.control.close()
            raise

    @property
    def relay(self) -> tuple[str, int]:
        return (self.reply.host, self.reply.port)

    def send(self, host: str, port: int, payload: bytes, **kw: int) -> None:
        self.udp.sendto(encodeUDPHeader(host, port, **kw) + payload, self.relay)

    def receive(self, timeout: float = SOCKET_TIMEOUT) -> tuple[int, str, int, bytes]:
        self.udp.settimeout(timeout)
        data, _ = self.udp.recvfrom(70000)
        return parseUDPDatagram(data)

    def close(self) -> None:
        self.udp.close()
        self.control.close()

    def __enter__(self) -> "UDPAssociation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# Dante's socksify
# --------------------------------------------------------------------------


def socksifySetup(
    directory: str, proxyPort: int, commands: str
) -> tuple[str, dict[str, str]]:
    """
    Write a Dante client configuration in C{directory} that routes every
    destination (loopback included) through the proxy on 127.0.0.1
    C{proxyPort} with SOCKS5 and no authentication, for C{commands} (e.g.
    C{"udpassociate connect"}).

    @return: the path of C{socksify} and the environment to run it with.
    @raise AssertionError: if socksify (Debian dante-client) is missing.
    """
    socksify = shutil.which("socksify")
    if socksify is None:
        raise AssertionError("socksify (Debian dante-client) is not installed")
    conf = os.path.join(directory, "dante.conf")
    with open(conf, "w") as f:
        f.write(
            "logoutput: stderr\n"
            "route {\n"
            f"    from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = {proxyPort}\n"
            "    proxyprotocol: socks_v5\n"
            "    method: none\n"
            f"    command: {commands}\n"
            "}\n"
        )
    # Without this, Dante's library sends loopback destinations directly.
    env = cleanEnvironment({"SOCKS_CONF": conf, "SOCKS_AUTOADD_LANROUTES": "no"})
    return socksify, env


# --------------------------------------------------------------------------
# SOCKS4/4a and HTTP proxy requests with raw sockets; ncat
# --------------------------------------------------------------------------

SOCKS4_CONNECT = 0x01
SOCKS4_BIND = 0x02

CD_GRANTED = 90
CD_REJECTED = 91

#: DSTIP 0.0.0.1: the SOCKS4a marker that a host name follows the USERID.
SOCKS4A_MARKER = b"\x00\x00\x00\x01"


def encodeSOCKS4Request(
    host: str, port: int, command: int = SOCKS4_CONNECT, userid: bytes = b""
) -> bytes:
    """
    A SOCKS4 request (C{VN=4 CD DSTPORT DSTIP USERID NUL}) for an IPv4
    literal C{host}; for any other C{host}, a SOCKS4a request (DSTIP
    0.0.0.1, the name and a second NUL after the USERID).
    """
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return (
            bytes([4, command]) + struct.pack("!H", port) + SOCKS4A_MARKER
            + userid + b"\x00" + host.encode("idna") + b"\x00"
        )
    return bytes([4, command]) + struct.pack("!H", port) + ip.packed + userid + b"\x00"


class SOCKS4Reply:
    """
    A parsed SOCKS4 reply: C{VN CD DSTPORT DSTIP}.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.vn = raw[0]
        self.cd = raw[1]
        (self.port,) = struct.unpack("!H", raw[2:4])
        self.host = socket.inet_ntop(socket.AF_INET, raw[4:8])

    def __repr__(self) -> str:
        return (
            f"<SOCKS4Reply vn={self.vn} cd={self.cd} "
            f"address={self.host}:{self.port} raw={self.raw!r}>"
        )


def readSOCKS4Reply(sock: socket.socket) -> SOCKS4Reply:
    """
    Read one 8-byte SOCKS4 reply.
    """
    return SOCKS4Reply(recvExactly(sock, 8))


def recvUntilClosed(sock: socket.socket, deadline: float = SOCKET_TIMEOUT) -> bytes:
    """
    Like L{recvUntilEOF}, but a reset also counts as closed: what the peer
    sent before it closed.
    """
    sock.settimeout(deadline)
    end = time.monotonic() + deadline
    buf = bytearray()
    while True:
        if time.monotonic() > end:
            raise TimeoutError(f"not closed within {deadline}s; got {bytes(buf)!r}")
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return bytes(buf)
        if not data:
            return bytes(buf)
        buf += data


def basicCredentials(username: str, password: str) -> str:
    """
    The value of a C{Proxy-Authorization} (or C{Authorization}) header for
    HTTP Basic authentication.
    """
    import base64

    token = base64.b64encode(f"{username}:{password}".encode())
    return "Basic " + token.decode("ascii")


class HTTPResponse:
    """
    A parsed HTTP/1.x response head, and its body when one was read.
    """

    def __init__(
        self, version: str, status: int, reason: str,
        headers: list[tuple[str, str]], head: bytes, body: bytes,
    ) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.head = head
        self.body = body

    def header(self, name: str) -> str | None:
        """
        The first header called C{name} (case-insensitive), or C{None}.
        """
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def __repr__(self) -> str:
        return f"<HTTPResponse {self.status} {self.reason!r} head={self.head!r} body={self.body!r}>"


def readHTTPResponse(
    sock: socket.socket, body: bool = True, limit: int = 64 * 1024,
    deadline: float = SOCKET_TIMEOUT,
) -> HTTPResponse:
    """
    Read a response head one byte at a time (so that nothing after it is
    consumed: a tunnel's bytes stay in the socket), then, if C{body}, a body
    of C{Content-Length} bytes (none without that header).
    """
    end = time.monotonic() + deadline
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if time.monotonic() > end:
            raise TimeoutError(f"no response head within {deadline}s: {bytes(head)!r}")
        if len(head) > limit:
            raise AssertionError(f"response head over {limit} bytes: {bytes(head[:200])!r}")
        byte = sock.recv(1)
        if not byte:
            raise EOFError(f"connection closed within the response head: {bytes(head)!r}")
        head += byte
    lines = bytes(head[:-4]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    statusText, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not statusText.isdigit():
        raise AssertionError(f"not an HTTP response: {bytes(head)!r}")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    response = HTTPResponse(version, int(statusText), reason, headers, bytes(head), b"")
    if body:
        length = response.header("Content-Length")
        if length is not None:
            response.body = recvExactly(sock, int(length))
    return response


def ncatPath() -> str:
    """
    The C{ncat} program (nmap's ncat); L{AssertionError} if missing.
    """
    found = shutil.which("ncat")
    if found is None:
        raise AssertionError("ncat (Debian package ncat, from nmap) is not installed")
    return found


def runNcat(
    *args: str, input: bytes = b"", timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """
    Run C{ncat -w 10 ARGS} (10 s to connect) with C{input} on its standard
    input, then EOF, in an environment without proxy variables; C{timeout}
    bounds the whole run.  ncat half-closes on that EOF and exits when the
    other side closes.  (Not C{-i}: with an idle timeout, ncat 7.93 does not
    pass the EOF on and only exits, with status 1, when the timeout expires.)
    """
    argv = [ncatPath(), "-w", "10", *args]
    return subprocess.run(
        argv,
        input=input,
        capture_output=True,
        env=cleanEnvironment(),
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def childPids(pid: int) -> list[int]:
    """
    The PIDs of the live (not zombie) processes whose parent is C{pid}, read
    from /proc.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry))
    return sorted(found)


def processAlive(pid: int) -> bool:
    """
    Whether process C{pid} exists and is not a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"
