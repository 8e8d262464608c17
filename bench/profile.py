"""
Where socksrelay's time goes: run ``twistd socks5`` under cProfile, drive
one kind of load through it on loopback, and print the profile grouped by
who spends the time (the kernel, through system calls; the reactor and
Twisted's TCP code; logging; socksrelay itself), then the top functions.

    .venv/bin/python bench/profile.py cps      # 32 clients: connect, greet, CONNECT, echo, close
    .venv/bin/python bench/profile.py rtt      # 64-byte round trips on one tunnel
    .venv/bin/python bench/profile.py download # one bulk stream, target to client
    .venv/bin/python bench/profile.py udp      # UDP ASSOCIATE echo, 32 datagrams in flight

Options: ``--seconds S`` (load duration, max 30), ``--top N``,
``--proxy-args "..."`` (extra ``socks5`` options), ``--save FILE`` (the raw
pstats file).  Everything runs on 127.0.0.1 and stops by itself.

cProfile slows Python code down (roughly twofold) but not system calls, so
the shares overstate Python's part; the ranking is what matters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def _echoServer() -> int:
    """
    A threaded TCP echo server on 127.0.0.1; returns its port.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)

    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def _connectRequest(port: int) -> bytes:
    return b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port)


def _tunnel(proxyPort: int, targetPort: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxyPort), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"\x05\x01\x00")
    _recvExact(s, 2)
    s.sendall(_connectRequest(targetPort))
    reply = _recvExact(s, 10)
    if reply[1] != 0:
        raise RuntimeError(f"CONNECT refused: {reply!r}")
    return s


def _recvExact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("closed early")
        data += chunk
    return data


def loadCPS(proxyPort: int, seconds: float) -> str:
    echoPort = _echoServer()

    async def one(stopAt: float, counts: list[int]) -> None:
        while time.monotonic() < stopAt:
            r, w = await asyncio.open_connection("127.0.0.1", proxyPort)
            w.write(b"\x05\x01\x00")
            await r.readexactly(2)
            w.write(_connectRequest(echoPort))
            await r.readexactly(10)
            w.write(b"ping")
            await r.readexactly(4)
            w.close()
            counts[0] += 1

    async def main() -> int:
        counts = [0]
        stopAt = time.monotonic() + seconds
        await asyncio.gather(*(one(stopAt, counts) for _ in range(32)))
        return counts[0]

    started = time.monotonic()
    done = asyncio.run(main())
    return f"{done} sessions, {done / (time.monotonic() - started):.0f}/s"


def loadRTT(proxyPort: int, seconds: float) -> str:
    s = _tunnel(proxyPort, _echoServer())
    message = b"x" * 64
    count = 0
    stopAt = time.monotonic() + seconds
    while time.monotonic() < stopAt and count < 1_000_000:
        s.sendall(message)
        _recvExact(s, 64)
        count += 1
    s.close()
    return f"{count} round trips, {seconds * 1e6 / max(count, 1):.0f} µs each"


def loadDownload(proxyPort: int, seconds: float) -> str:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stopAt = time.monotonic() + seconds

    def source() -> None:
        conn, _ = listener.accept()
        chunk = b"x" * (1 << 20)
        with conn:
            try:
                while time.monotonic() < stopAt:
                    conn.sendall(chunk)
            except OSError:
                pass

    threading.Thread(target=source, daemon=True).start()
    s = _tunnel(proxyPort, listener.getsockname()[1])
    buf = bytearray(1 << 20)
    total = 0
    started = time.monotonic()
    while n := s.recv_into(buf):
        total += n
    s.close()
    return f"{total / 1e6:.0f} MB, {total / 1e6 / (time.monotonic() - started):.0f} MB/s"


def loadUDP(proxyPort: int, seconds: float) -> str:
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            data, address = echo.recvfrom(65536)
            echo.sendto(data, address)

    threading.Thread(target=serve, daemon=True).start()
    control = socket.create_connection(("127.0.0.1", proxyPort), timeout=10)
    control.sendall(b"\x05\x01\x00")
    _recvExact(control, 2)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    host, port = client.getsockname()
    control.sendall(b"\x05\x03\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port))
    reply = _recvExact(control, 10)
    relay = ("127.0.0.1", struct.unpack("!H", reply[8:10])[0])
    header = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1")
    header += struct.pack("!H", echo.getsockname()[1])
    client.settimeout(0.2)
    inFlight = echoed = lost = 0
    stopAt = time.monotonic() + seconds
    while time.monotonic() < stopAt:
        while inFlight < 32:
            client.sendto(header + b"x" * 64, relay)
            inFlight += 1
        try:
            client.recv(2048)
            echoed += 1
            inFlight -= 1
        except socket.timeout:
            lost += inFlight
            inFlight = 0
    control.close()
    return f"{echoed} datagrams echoed, {echoed / seconds:.0f}/s, {lost} lost"


LOADS = {"cps": loadCPS, "rtt": loadRTT, "download": loadDownload, "udp": loadUDP}

#: Who spends the time, by where the function lives.
GROUPS = (
    ("system calls (kernel work)", lambda f, name: f == "~" and any(
        k in name for k in ("socket", "epoll", "posix", "splice", "_io"))),
    ("logging (twisted.logger: the session lines)", lambda f, name: "twisted/logger" in f),
    ("socksrelay", lambda f, name: "socksrelay" in f),
    ("Twisted (reactor dispatch, TCP, Deferreds)", lambda f, name: "twisted" in f),
)


def summarise(stats: pstats.Stats, top: int) -> str:
    raw = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {g: 0.0 for g, _ in GROUPS}
    totals["other Python (stdlib: ipaddress, asyncio...)"] = 0.0
    idle = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        if filename == "~" and "poll" in name and "epoll" in name:
            idle += tottime  # waiting in epoll_wait: not work
            continue
        for group, matches in GROUPS:
            if matches(filename, name):
                totals[group] += tottime
                break
        else:
            totals["other Python (stdlib: ipaddress, asyncio...)"] += tottime
    busy = sum(totals.values())
    lines = [f"busy {busy:.2f} s (plus {idle:.2f} s waiting in epoll)", ""]
    lines.append("| where | seconds | share |")
    lines.append("|---|---|---|")
    for group, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {group} | {seconds:.2f} | {100 * seconds / busy:.0f}% |")
    lines.append("")
    lines.append(f"top {top} functions by own time (epoll_wait left out):")
    lines.append("")
    lines.append("| own s | calls | function |")
    lines.append("|---|---|---|")
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])
    shown = 0
    for (filename, line, name), (_cc, calls, tottime, _ct, _callers) in rows:
        if filename == "~" and "epoll" in name and "poll" in name:
            continue
        where = name if filename == "~" else (
            f"{os.path.relpath(filename, HERE + '/..') if 'socksrelay' in filename else filename.split('site-packages/')[-1]}:{line} {name}"
        )
        lines.append(f"| {tottime:.3f} | {calls} | `{where}` |")
        shown += 1
        if shown >= top:
            break
    return "\n".join(lines)


def waitListening(proxy: subprocess.Popen, logPath: str) -> int:
    """
    The port the proxy announces in its log ("listening on 127.0.0.1 port
    N"), waited for up to 20 seconds.
    """
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(logPath, encoding="utf-8", errors="replace") as f:
            found = re.search(r"listening on 127\.0\.0\.1 port (\d+)", f.read())
        if found:
            return int(found.group(1))
        if proxy.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"twistd did not start listening; see {logPath}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("load", choices=sorted(LOADS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--proxy-args", default="")
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.5), 30.0)
    workdir = tempfile.mkdtemp(prefix="socksrelay-profile-")
    statsPath = args.save or os.path.join(workdir, "profile.pstats")
    argv = [
        TWISTD, "-n", "--pidfile=", "--profile", statsPath, "--profiler", "cprofile",
        "--savestats", "socks5", "--port", "tcp:0:interface=127.0.0.1",
        *shlex.split(args.proxy_args),
    ]
    logPath = os.path.join(workdir, "twistd.log")
    with open(logPath, "wb") as log:
        proxy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        port = waitListening(proxy, logPath)
        outcome = LOADS[args.load](port, seconds)
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
    if not os.path.exists(statsPath):
        raise SystemExit(f"no profile written; see {logPath}")
    print(f"## profile: {args.load} ({outcome})\n")
    print(summarise(pstats.Stats(statsPath), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
