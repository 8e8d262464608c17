"""
A seeded, bounded fuzz of the real C{twistd socks5}: valid SOCKS5 (with and
without RFC 1929), SOCKS4/4a, HTTP CONNECT and forward handshakes, mutated
(bytes replaced, inserted, deleted, truncated, extended, fields blown up),
sent in random chunks with small delays, sometimes half-closed or reset;
and UDP associations sent mutated datagrams.

Each case must get a protocol-correct answer of its dialect, or a close,
within a few seconds; afterwards the proxies' logs hold no traceback and
their descriptors are back to their baseline.  (A plain-HTTP forwarding
connection whose request is not yet whole may rightly wait for the rest for
its 60 s idle timeout, so such a case ends with a half-close or a reset
instead of waiting.)

No byte leaves the machine: the policy allows only loopback destinations on
the port of the test's own echo server and denies everything else, and
names are resolved only by the test's own DNS server on loopback (which
answers 127.0.0.1 / ::1 for a few names and NXDOMAIN for every other).
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import tempfile
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from twisted.names import dns

from socksrelay.httpwire import HTTPServerConnection
from socksrelay.wire import NEED_DATA, ProtocolError
from tests.e2e import (
    LOOPBACK_V4,
    EchoServer,
    ProxyProcess,
    UDPAssociation,
    UDPEchoServer,
    parseUDPDatagram,
)

#: The seed of the whole run; a failure names the case, which replays it.
SEED = 13
#: How many cases, at most, and how long the run may start new ones.
CASES = 600
WALL_CLOCK = 45.0
#: UDP associations, each sent a few mutated datagrams.
UDP_CASES = 60
#: Cases in flight at once.
CONCURRENCY = 24
#: How long a case may wait for its answer or close.
CASE_DEADLINE = 6.0
USER, PASSWORD = b"alice", b"fuzz-s3cret"
#: Names the test's DNS server answers; every other name is NXDOMAIN.
KNOWN_NAMES = {b"echo.test", b"localhost", b"loop.test"}

CONFIG = """\
[timeouts]
handshake = 1
connect = 2
bind = 1
udp-idle = 1
half-closed = 1
idle = 2

[[rule]]
name = "the echo servers only"
action = "allow"
clients = ["127.0.0.0/8", "::1/128"]
networks = ["127.0.0.0/8", "::1/128"]
ports = [{port}, {udpPort}]

[[rule]]
name = "nothing else"
action = "deny"
"""


class LoopbackDNSServer:
    """
    A DNS server on 127.0.0.1 (UDP) in a daemon thread: A 127.0.0.1 and
    AAAA ::1 for L{KNOWN_NAMES}, NXDOMAIN for anything else; counts queries.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK_V4, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.queries = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _answer(self, data: bytes) -> bytes:
        query = dns.Message()
        query.fromStr(data)
        answer = dns.Message(id=query.id, answer=1, opCode=query.opCode,
                             recDes=query.recDes, recAv=1)
        answer.queries = query.queries
        for q in query.queries:
            name = q.name.name.lower().rstrip(b".")
            if name not in KNOWN_NAMES:
                answer.rCode = dns.ENAME
            elif q.type == dns.A:
                answer.answers.append(dns.RRHeader(
                    q.name.name, dns.A, ttl=60, payload=dns.Record_A("127.0.0.1", 60)))
            elif q.type == dns.AAAA:
                answer.answers.append(dns.RRHeader(
                    q.name.name, dns.AAAA, ttl=60, payload=dns.Record_AAAA("::1", 60)))
        return answer.toStr()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                data, address = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries += 1
            try:
                self.sock.sendto(self._answer(data), address)
            except Exception:
                pass  # a query it cannot parse gets no answer (and a retry)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.sock.close()


# -- what a correct answer looks like ------------------------------------------

INCOMPLETE, DONE, BAD = "incomplete", "done", "bad"


def _socks5Reply(buf: bytes, i: int) -> tuple[str, int]:
    """Check a SOCKS5 reply at C{buf[i:]}: C{(verdict, end)}."""
    if len(buf) < i + 4:
        return INCOMPLETE, i
    ver, rep, rsv, atyp = buf[i : i + 4]
    if ver != 5 or rep > 8 or rsv != 0 or atyp not in (1, 3, 4):
        return BAD, i
    if atyp == 3:
        if len(buf) < i + 5:
            return INCOMPLETE, i
        end = i + 5 + buf[i + 4] + 2
    else:
        end = i + 4 + (4 if atyp == 1 else 16) + 2
    return (DONE, end) if len(buf) >= end else (INCOMPLETE, i)


def judgeSOCKS5(buf: bytes) -> tuple[str, int, bool]:
    """
    The server's SOCKS5 answers so far: C{(verdict, consumed, succeeded)}.
    A complete method selection or auth status that lets the client go on
    is a boundary (INCOMPLETE with C{consumed} at it); FF, auth failure or a
    reply is the end.
    """
    if len(buf) < 2:
        return INCOMPLETE, 0, False
    if buf[0] != 5 or buf[1] not in (0x00, 0x02, 0xFF):
        return BAD, 0, False
    if buf[1] == 0xFF:
        return DONE, 2, False
    i = 2
    if buf[1] == 0x02:
        if len(buf) < 4:
            return INCOMPLETE, 2, False
        if buf[2] != 1 or buf[3] not in (0, 1):
            return BAD, 2, False
        if buf[3] == 1:
            return DONE, 4, False
        i = 4
    verdict, end = _socks5Reply(buf, i)
    return verdict, end if verdict == DONE else i, verdict == DONE and buf[i + 1] == 0


def judgeSOCKS4(buf: bytes) -> tuple[str, int, bool]:
    if len(buf) < 8:
        return INCOMPLETE, 0, False
    if buf[0] != 0 or buf[1] not in (90, 91, 92, 93):
        return BAD, 0, False
    return DONE, 8, buf[1] == 90


_STATUS = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9] [^\r\n]*\r?(\n|\Z)")


def judgeHTTP(buf: bytes) -> tuple[str, int, bool]:
    if len(buf) < 13:
        return INCOMPLETE, 0, False
    if _STATUS.match(buf) is None:
        return BAD, 0, False
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return INCOMPLETE, 0, False
    # After any complete answer the client may stop waiting: a 200 is a
    # tunnel, a forwarded response may be kept alive.
    return DONE, end + 4, buf[9:12] == b"200"


def judgeNothing(buf: bytes) -> tuple[str, int, bool]:
    """A first byte of no protocol gets no answer, only a close."""
    return (BAD if buf else INCOMPLETE), 0, False


def judgeFor(stream: bytes) -> Callable[[bytes], tuple[str, int, bool]]:
    if not stream:
        return judgeNothing
    first = stream[0]
    if first == 5:
        return judgeSOCKS5
    if first == 4:
        return judgeSOCKS4
    if 0x41 <= first <= 0x5A:
        return judgeHTTP
    return judgeNothing


# -- the cases ---------------------------------------------------------------


def destination(rng: random.Random, echoPort: int) -> tuple[str, bytes, int]:
    """
    C{(kind, address, port)}: kind "ip4", "ip6" or "name"; most go to the
    echo server, some to other loopback ports, names known and unknown.
    """
    port = echoPort if rng.random() < 0.6 else rng.choice([0, 1, 80, 65535, rng.randrange(65536)])
    kind = rng.choice(["ip4", "ip4", "ip6", "name", "name"])
    if kind == "ip4":
        return kind, rng.choice([b"\x7f\x00\x00\x01", b"\x7f\x01\x02\x03",
                                 b"\x00\x00\x00\x00", b"\xc0\x00\x02\x01"]), port
    if kind == "ip6":
        return kind, rng.choice([b"\x00" * 15 + b"\x01", b"\x00" * 10 + b"\xff\xff\x7f\x00\x00\x01",
                                 b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"]), port
    name = rng.choice([b"echo.test", b"localhost", b"LOOP.test.", b"nx.test",
                       b"a..b.test", b"x" * 64 + b".test", "ｅｃｈｏ.test".encode(),
                       "bücher.test".encode(), b"\xff\xfe.test", b"a\x00b",
                       b"-.test", "x\u00adecho.test".encode()])
    return "name", name, port


def socks5Handshake(rng: random.Random, echoPort: int, auth: bool) -> bytes:
    kind, address, port = destination(rng, echoPort)
    command = rng.choice([1, 1, 1, 1, 2, 3])
    if kind == "name":
        addr = bytes([3, len(address) % 256]) + address
    else:
        addr = bytes([1 if kind == "ip4" else 4]) + address
    request = bytes([5, command, 0]) + addr + struct.pack("!H", port)
    if auth:
        user = USER if rng.random() < 0.8 else b"mallory"
        password = PASSWORD if rng.random() < 0.8 else b"guess"
        return (bytes([5, 2, 0, 2]) + bytes([1, len(user)]) + user
                + bytes([len(password)]) + password + request)
    return bytes([5, 1, 0]) + request


def socks4Handshake(rng: random.Random, echoPort: int) -> bytes:
    kind, address, port = destination(rng, echoPort)
    command = rng.choice([1, 1, 1, 2])
    userid = rng.choice([b"", b"alice", b"u" * 255])
    if kind == "name":
        return (bytes([4, command]) + struct.pack("!H", port) + b"\x00\x00\x00\x01"
                + userid + b"\x00" + address.replace(b"\x00", b"") + b"\x00")
    ip = address if kind == "ip4" else b"\x7f\x00\x00\x01"
    return bytes([4, command]) + struct.pack("!H", port) + ip + userid + b"\x00"


def httpHandshake(rng: random.Random, echoPort: int, auth: bool) -> bytes:
    kind, address, port = destination(rng, echoPort)
    if kind == "ip4":
        host = socket.inet_ntop(socket.AF_INET, address).encode()
    elif kind == "ip6":
        host = b"[" + socket.inet_ntop(socket.AF_INET6, address).encode() + b"]"
    else:
        host = address
    portText = str(port).encode()
    if rng.random() < 0.05:
        portText = rng.choice([b"00", b"0" * 4400 + portText, b"1" + b"0" * 4400])
    authority = host + b":" + portText
    eol = rng.choice([b"\r\n", b"\r\n", b"\n"])
    headers = [b"Host: " + authority, b"User-Agent: fuzz"]
    if auth and rng.random() < 0.8:
        import base64

        headers.append(b"Proxy-Authorization: Basic "
                       + base64.b64encode(USER + b":" + PASSWORD))
    if rng.random() < 0.5:
        line = b"CONNECT " + authority + b" HTTP/1.1"
    else:
        method = rng.choice([b"GET", b"HEAD", b"POST", b"DELETE"])
        line = method + b" http://" + authority + b"/path?q=1 HTTP/1.1"
        if method == b"POST":
            body = b"b" * rng.choice([0, 5, 100])
            headers.append(b"Content-Length: " + str(len(body)).encode())
            return eol.join([line, *headers]) + eol + eol + body
    return eol.join([line, *headers]) + eol + eol


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Zero to three mutations of C{data}."""
    buf = bytearray(data)
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        if not buf:
            buf += bytes([rng.randrange(256)])
        i = rng.randrange(len(buf))
        op = rng.randrange(8)
        if op == 0:
            buf[i] = rng.randrange(256)
        elif op == 1:
            buf[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
        elif op == 2:
            buf.insert(i, rng.randrange(256))
        elif op == 3:
            del buf[i]
        elif op == 4:
            del buf[i:]
        elif op == 5:
            buf += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif op == 6:
            # a field blown up: a long run of one byte
            buf[i:i] = bytes([rng.choice([0x30, 0x31, 0x61, 0x3A, 0xFF])]) * rng.choice([64, 300, 5000])
        else:
            j = rng.randrange(i, len(buf) + 1)
            buf[j:j] = buf[i:j]
    return bytes(buf)


def makeCase(index: int, echoPort: int) -> tuple[bool, bytes, list[tuple[bytes, float]], str]:
    """
    Case C{index}: C{(useAuthProxy, stream, [(chunk, delayBefore)], ending)};
    ending is "wait", "half-close" or "reset".
    """
    rng = random.Random(SEED * 100003 + index)
    auth = rng.random() < 0.4
    kind = rng.choice(["socks5", "socks5", "socks4", "http", "http", "random"])
    if kind == "socks5":
        stream = socks5Handshake(rng, echoPort, auth)
    elif kind == "socks4":
        stream = socks4Handshake(rng, echoPort)
    elif kind == "http":
        stream = httpHandshake(rng, echoPort, auth)
    else:
        stream = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        if stream and rng.random() < 0.5:
            stream = bytes([rng.choice([4, 5, 0x43, 0x47])]) + stream
    stream = mutate(rng, stream)
    chunks = []
    i = 0
    while i < len(stream):
        n = rng.choice([1, 2, 3, 7, 64, len(stream)])
        chunks.append((stream[i : i + n], rng.choice([0.0, 0.0, 0.001, 0.01, 0.03])))
        i += n
    ending = rng.choice(["wait", "wait", "half-close", "half-close", "reset"])
    if ending == "wait" and judgeFor(stream) is judgeHTTP and not wholeRequest(stream):
        # A forwarding connection may rightly wait for the rest of a head or
        # body for its idle timeout (60 s): end it instead.
        ending = "half-close"
    return auth, stream, chunks, ending


def wholeRequest(stream: bytes) -> bool:
    """
    Whether C{stream} holds a whole request that the proxy must answer (or
    refuse) without waiting for more: a malformed head, a CONNECT head, or a
    forwarding head with all of its C{Content-Length} body.
    """
    codec = HTTPServerConnection()
    try:
        codec.receiveData(stream)
        head = codec.nextEvent()
    except ProtocolError:
        return True
    if head is NEED_DATA:
        return False
    if head.method == "CONNECT":
        return True
    if head.header("Transfer-Encoding") is not None:
        return False
    length = head.header("Content-Length") or "0"
    return length.isascii() and length.isdigit() and len(codec.leftover()) >= int(length)


def runCase(port: int, stream: bytes, chunks: list[tuple[bytes, float]], ending: str) -> str | None:
    """
    Play one case against the proxy on C{port}; C{None} if it was answered
    correctly or closed in time, else what went wrong.
    """
    judge = judgeFor(stream)
    sock = socket.create_connection((LOOPBACK_V4, port), timeout=CASE_DEADLINE)
    received = b""
    try:
        try:
            for chunk, delay in chunks:
                if delay:
                    time.sleep(delay)
                sock.sendall(chunk)
            if ending == "half-close":
                sock.shutdown(socket.SHUT_WR)
            elif ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return None
        except OSError:
            pass  # the proxy closed first; what it sent is judged below
        deadline = time.monotonic() + CASE_DEADLINE
        while True:
            verdict, consumed, succeeded = judge(received)
            if verdict == BAD:
                return f"not a valid answer: {received[:80]!r}"
            if verdict == DONE and (succeeded or judge is judgeHTTP):
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"no answer and no close within {CASE_DEADLINE}s (got {received[:80]!r})"
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                if consumed != len(received):
                    return f"closed in the middle of an answer: {received[:80]!r}"
                return None
            received += data
    finally:
        sock.close()


#: Returned by L{runUDPCase} when the association was refused.
REFUSED = "refused"


def runUDPCase(proxyPort: int, index: int, echoPort: int) -> str | None:
    """
    Make a UDP association and send it a few mutated datagrams (names,
    addresses, FRAG, truncation); whatever comes back must be a well-formed
    header naming the UDP echo server, the only source the policy allows.

    @return: C{None} if all was well, L{REFUSED} if the association was
        refused (the fuzz's own UDP ASSOCIATEs may have taken the client's
        16 associations), else what went wrong.
    """
    rng = random.Random(SEED * 7919 + index)
    with UDPAssociation(proxyPort, timeout=CASE_DEADLINE) as association:
        if association.reply.rep == 0x01:
            return REFUSED
        if association.reply.rep != 0:
            return f"UDP ASSOCIATE answered 0x{association.reply.rep:02x}"
        for _ in range(rng.randrange(1, 6)):
            kind, address, port = destination(rng, echoPort)
            if kind == "name":
                addr = bytes([3, len(address) % 256]) + address
            else:
                addr = bytes([1 if kind == "ip4" else 4]) + address
            frag = rng.choice([0, 0, 0, 1, 0x80])
            datagram = b"\x00\x00" + bytes([frag]) + addr + struct.pack("!H", port)
            association.udp.sendto(mutate(rng, datagram + b"payload"), association.relay)
        deadline = time.monotonic() + 0.3
        while (remaining := deadline - time.monotonic()) > 0:
            association.udp.settimeout(remaining)
            try:
                data, _ = association.udp.recvfrom(70000)
            except TimeoutError:
                break
            try:
                _, host, port, _ = parseUDPDatagram(data)
            except AssertionError as e:
                return str(e)
            if (host, port) != (LOOPBACK_V4, echoPort):
                return f"a datagram from {host}:{port}"
    return None


def openDescriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@unittest.skipUnless(os.path.isdir("/proc/self/fd"), "needs /proc/PID/fd")
class HandshakeFuzzTests(unittest.TestCase):
    """
    Two proxies, one without and one with RFC 1929 (C{--auth memory:}),
    both with the loopback-only policy and the test's DNS server.
    """

    def setUp(self) -> None:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.udpEcho = UDPEchoServer()
        self.addCleanup(self.udpEcho.stop)
        self.dns = LoopbackDNSServer()
        self.addCleanup(self.dns.stop)
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "fuzz.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(CONFIG.format(port=self.echo.port, udpPort=self.udpEcho.port))
        common = ["--config", path, "--nameserver", f"127.0.0.1:{self.dns.port}"]
        self.open = ProxyProcess(common)
        self.addCleanup(self.open.stop)
        self.authed = ProxyProcess(
            [*common, "--auth", f"memory:{USER.decode()}:{PASSWORD.decode()}"])
        self.addCleanup(self.authed.stop)

    def warmUp(self, proxy: ProxyProcess) -> int:
        """
        Relay one echo through C{proxy} (so that its reactor runs: the
        signal wake-up pipe is made after it logs that it listens), then its
        descriptor count once that session ended.
        """
        mark = proxy.mark()
        auth = proxy is self.authed
        with socket.create_connection((LOOPBACK_V4, proxy.port), timeout=10) as sock:
            if auth:
                sock.sendall(b"\x05\x01\x02\x01" + bytes([len(USER)]) + USER
                             + bytes([len(PASSWORD)]) + PASSWORD)
            else:
                sock.sendall(b"\x05\x01\x00")
            sock.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01"
                         + struct.pack("!H", self.echo.port) + b"ping")
            received = b""
            while not received.endswith(b"ping"):
                data = sock.recv(100)
                self.assertTrue(data, f"warm-up got {received!r}")
                received += data
        proxy.waitForLine("session ended", 10, since=mark)
        return openDescriptors(proxy.pid)

    def test_fuzzedHandshakes(self) -> None:
        """
        Every mutated handshake of every protocol gets a valid answer of its
        dialect or a close within L{CASE_DEADLINE}, every datagram relayed
        back has a valid header; no traceback is logged and both proxies'
        descriptors return to their baseline.
        """
        proxies = (self.open, self.authed)
        baseline = {p.pid: self.warmUp(p) for p in proxies}
        start = time.monotonic()
        failures: list[str] = []

        played: list[int] = []

        def play(index: int) -> None:
            if time.monotonic() - start > WALL_CLOCK:
                return
            played.append(index)
            auth, stream, chunks, ending = makeCase(index, self.echo.port)
            proxy = self.authed if auth else self.open
            problem = runCase(proxy.port, stream, chunks, ending)
            if problem:
                failures.append(
                    f"case {index} ({'auth' if auth else 'open'}, {ending}, "
                    f"{len(chunks)} chunks) {stream[:120]!r}: {problem}")

        udpPlayed: list[int] = []

        def playUDP(index: int) -> None:
            problem = runUDPCase(self.open.port, index, self.udpEcho.port)
            if problem != REFUSED:
                udpPlayed.append(index)
            if problem and problem != REFUSED:
                failures.append(f"case {CASES + index} (UDP {index}): {problem}")

        with ThreadPoolExecutor(CONCURRENCY) as pool, ThreadPoolExecutor(4) as udpPool:
            udp = udpPool.map(playUDP, range(UDP_CASES))
            list(pool.map(play, range(CASES)))
            list(udp)
        self.assertGreaterEqual(len(udpPlayed), UDP_CASES // 2)
        # On a slow machine the wall-clock cap may cut the run short, but
        # never to a token few cases.
        self.assertGreaterEqual(len(played), CASES // 4)

        deadline = time.monotonic() + 15
        now = {p.pid: openDescriptors(p.pid) for p in proxies}
        while now != baseline and time.monotonic() < deadline:
            time.sleep(0.2)
            now = {p.pid: openDescriptors(p.pid) for p in proxies}
        problems = sorted(failures, key=lambda f: int(f.split()[1]))
        if now != baseline:
            problems.append(f"descriptors: baseline {baseline}, now {now}")
        for proxy in proxies:
            lines = proxy.snapshot()
            for i, line in enumerate(lines):
                if "Traceback" in line or "Unhandled" in line:
                    problems.append(f"log of {proxy.pid}: " + "\n".join(lines[i - 2 : i + 25]))
        self.assertEqual(problems, [], "\n".join(problems[:60]))
