#!/usr/bin/env python3
"""Side-by-side SOCKS5 benchmark: socksrelay vs Dante, microsocks, pproxy, direct.

First version (issue 9). Loopback only; every loop is bounded in count and
time; only processes this script starts are stopped, by PID, in finally.

    /tmp/venv/bin/python bench/run.py            # quick run
    /tmp/venv/bin/python bench/run.py --full     # 512 MiB, 2000 idle tunnels

Results: bench/results/latest.json and bench/results/latest.md.
"""

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
LOOP = "127.0.0.1"
CHUNK = 1 << 20
PEERS = ["direct", "socksrelay", "dante", "microsocks", "pproxy"]
IO_TIMEOUT = 60.0


# ---------------------------------------------------------------- targets
# The targets run in a child process (this script with --serve-targets) so
# that they do not share the client's GIL.

def _sink_conn(conn):
    # Protocol: 8-byte length, then that many bytes; the sink answers with the
    # 8-byte count it received (no half-close needed: some proxies lack it).
    buf = bytearray(CHUNK)
    total = 0
    try:
        conn.settimeout(IO_TIMEOUT)
        (want,) = struct.unpack("!Q", recv_exact(conn, 8))
        while total < want:
            n = conn.recv_into(buf, min(CHUNK, want - total))
            if not n:
                break
            total += n
        conn.sendall(struct.pack("!Q", total))
        conn.recv(1)
    except (OSError, ConnectionError):
        pass
    finally:
        conn.close()


def _source_conn(conn):
    data = memoryview(b"\0" * CHUNK)
    try:
        conn.settimeout(IO_TIMEOUT)
        hdr = b""
        while len(hdr) < 8:
            part = conn.recv(8 - len(hdr))
            if not part:
                return
            hdr += part
        (left,) = struct.unpack("!Q", hdr)
        while left > 0:
            n = min(left, CHUNK)
            conn.sendall(data[:n])
            left -= n
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    except OSError:
        pass
    finally:
        conn.close()


def _accept_loop(lsock, handler):
    while True:
        conn, _ = lsock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.t.write(data)


def serve_targets():
    _raise_nofile()
    socks = {}
    for name in ("sink", "source"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOP, 0))
        s.listen(512)
        socks[name] = s
    threading.Thread(target=_accept_loop, args=(socks["sink"], _sink_conn), daemon=True).start()
    threading.Thread(target=_accept_loop, args=(socks["source"], _source_conn), daemon=True).start()

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(_Echo, LOOP, 0, backlog=4096)
        ports = {n: s.getsockname()[1] for n, s in socks.items()}
        ports["echo"] = srv.sockets[0].getsockname()[1]
        print(json.dumps(ports), flush=True)
        # Exit when the parent closes our stdin (bounded by the parent's life).
        await loop.run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


# ---------------------------------------------------------------- helpers

def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port():
    s = socket.socket()
    s.bind((LOOP, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOP, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def tree_pids(pid):
    """pid and its descendants, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo and len(out) < 10000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss(pid, field="VmRSS:", path="status"):
    """RSS (or, with field="Pss:", path="smaps_rollup", PSS) summed over the tree."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open("/proc/%d/%s" % (p, path)) as f:
                for line in f:
                    if line.startswith(field):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def tree_pss(pid):
    return tree_rss(pid, "Pss:", "smaps_rollup")


CLK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid):
    """utime+stime (+ reaped children's) in seconds over the process tree."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError):
            pass
    return total / CLK


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += part
    return bytes(buf)


def socks5_handshake(sock, port):
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        raise ConnectionError("greeting refused")
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(LOOP) + struct.pack("!H", port))
    head = recv_exact(sock, 4)
    if head[1] != 0:
        raise ConnectionError("CONNECT reply %d" % head[1])
    atyp = head[3]
    if atyp == 1:
        recv_exact(sock, 6)
    elif atyp == 4:
        recv_exact(sock, 18)
    else:
        recv_exact(sock, recv_exact(sock, 1)[0] + 2)


def open_tunnel(proxy_port, port, timeout=IO_TIMEOUT):
    if proxy_port is None:
        s = socket.create_connection((LOOP, port), timeout=timeout)
    else:
        s = socket.create_connection((LOOP, proxy_port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks5_handshake(s, port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


# ---------------------------------------------------------------- proxies

class Proxy:
    def __init__(self, name, workdir):
        self.name = name
        self.workdir = workdir
        self.proc = None
        self.port = None
        self.error = None
        self.seen = set()
        self.log = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _spawn(self, argv):
        self.log = open(os.path.join(self.workdir, self.name + ".log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)

    def start(self):
        deadline = time.monotonic() + 20
        try:
            if self.name == "socksrelay":
                twistd = os.path.join(VENV_BIN, "twistd")
                self._spawn([twistd, "-n", "--pidfile=", "socks5",
                             "--port", "tcp:0:interface=" + LOOP])
                pat = re.compile(rb"listening on 127\.0\.0\.1 port (\d+)")
                while time.monotonic() < deadline and self.port is None:
                    if self.proc.poll() is not None:
                        raise RuntimeError("twistd exited %s" % self.proc.returncode)
                    with open(self.log.name, "rb") as f:
                        m = pat.search(f.read())
                    if m:
                        self.port = int(m.group(1))
                    else:
                        time.sleep(0.05)
            elif self.name == "dante":
                exe = shutil.which("danted") or "/usr/sbin/danted"
                if not os.path.exists(exe):
                    raise RuntimeError("danted not installed")
                self.port = free_port()
                conf = os.path.join(self.workdir, "danted.conf")
                with open(conf, "w") as f:
                    f.write(DANTE_CONF % {"port": self.port,
                                          "log": os.path.join(self.workdir, "danted.out")})
                self._spawn([exe, "-f", conf])
            elif self.name == "microsocks":
                exe = shutil.which("microsocks") or "/usr/bin/microsocks"
                if not os.path.exists(exe):
                    raise RuntimeError("microsocks not installed")
                self.port = free_port()
                self._spawn([exe, "-i", LOOP, "-p", str(self.port)])
            elif self.name == "pproxy":
                exe = os.path.join(VENV_BIN, "pproxy")
                if not os.path.exists(exe):
                    raise RuntimeError("pproxy not installed")
                self.port = free_port()
                self._spawn([exe, "-l", "socks5://%s:%d" % (LOOP, self.port)])
            if self.port is None or not wait_port(self.port, deadline):
                raise RuntimeError("did not listen within 20 s")
            if self.proc.poll() is not None:
                raise RuntimeError("exited %s" % self.proc.returncode)
        except Exception as e:
            self.error = str(e)
            self.stop()

    def remember_children(self):
        if self.proc and self.proc.poll() is None:
            self.seen.update(tree_pids(self.proc.pid))

    def stop(self):
        if self.proc is None:
            return
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # Descendants we saw (Dante's children), only if still its children-era
        # processes of the same name: signal by PID.
        for p in self.seen - {self.proc.pid}:
            try:
                with open("/proc/%d/stat" % p) as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                if ppid in self.seen or ppid == 1:
                    os.kill(p, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if self.log:
            self.log.close()


DANTE_CONF = """\
logoutput: %(log)s
internal: 127.0.0.1 port = %(port)d
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
    from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect
}
"""


# ---------------------------------------------------------------- measures

def m_download(pport, t, size):
    s = open_tunnel(pport, t["source"])
    try:
        buf = bytearray(CHUNK)
        t0 = time.perf_counter()
        s.sendall(struct.pack("!Q", size))
        got = 0
        while got < size:
            n = s.recv_into(buf)
            if not n:
                raise ConnectionError("download short: %d of %d" % (got, size))
            got += n
        dt = time.perf_counter() - t0
    finally:
        s.close()
    return size / dt / 1e6


def m_upload(pport, t, size):
    s = open_tunnel(pport, t["sink"])
    try:
        data = memoryview(b"\0" * CHUNK)
        t0 = time.perf_counter()
        s.sendall(struct.pack("!Q", size))
        left = size
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(data[:n])
            left -= n
        (got,) = struct.unpack("!Q", recv_exact(s, 8))
        dt = time.perf_counter() - t0
        if got != size:
            raise ConnectionError("sink got %d of %d" % (got, size))
    finally:
        s.close()
    return size / dt / 1e6


def m_rtt(pport, t, count):
    s = open_tunnel(pport, t["echo"])
    try:
        msg = b"x" * 64
        lat = []
        for _ in range(count):
            t0 = time.perf_counter()
            s.sendall(msg)
            recv_exact(s, 64)
            lat.append(time.perf_counter() - t0)
    finally:
        s.close()
    return {"p50_us": pct(lat, 50) * 1e6, "p99_us": pct(lat, 99) * 1e6}


async def _areadexactly(r, n):
    return await r.readexactly(n)


def m_cps(pport, t, clients, duration):
    async def one(stop_at, hs, counts):
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(
                    LOOP, pport if pport else t["echo"]), 10)
                try:
                    if pport:
                        w.write(b"\x05\x01\x00")
                        if await asyncio.wait_for(r.readexactly(2), 10) != b"\x05\x00":
                            raise ConnectionError("greeting")
                        w.write(b"\x05\x01\x00\x01" + socket.inet_aton(LOOP)
                                + struct.pack("!H", t["echo"]))
                        head = await asyncio.wait_for(r.readexactly(4), 10)
                        if head[1] != 0:
                            raise ConnectionError("reply %d" % head[1])
                        await asyncio.wait_for(
                            r.readexactly(6 if head[3] == 1 else 18), 10)
                    hs.append(time.perf_counter() - t0)
                    w.write(b"ping")
                    await asyncio.wait_for(r.readexactly(4), 10)
                    counts[0] += 1
                finally:
                    w.close()
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                    ConnectionError):
                counts[1] += 1
                await asyncio.sleep(0.01)

    async def main():
        hs, counts = [], [0, 0]
        stop_at = time.monotonic() + duration
        t0 = time.perf_counter()
        await asyncio.gather(*(one(stop_at, hs, counts) for _ in range(clients)))
        dt = time.perf_counter() - t0
        return {"cps": counts[0] / dt, "errors": counts[1],
                "hs_p50_us": pct(hs, 50) * 1e6 if hs else None,
                "hs_p99_us": pct(hs, 99) * 1e6 if hs else None}

    return asyncio.run(main())


def m_idle_memory(proxy, t, n):
    if proxy is None:
        return None
    before = tree_rss(proxy.pid)
    before_pss = tree_pss(proxy.pid)
    socks = []
    deadline = time.monotonic() + 120
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            socks.append(open_tunnel(proxy.port, t["echo"], timeout=10))
        # one byte through each, so each tunnel is fully relayed, then idle
        for s in socks:
            s.sendall(b"x")
        for s in socks:
            recv_exact(s, 1)
        proxy.remember_children()
        time.sleep(1.0)
        after = tree_rss(proxy.pid)
        after_pss = tree_pss(proxy.pid)
        procs = len(tree_pids(proxy.pid))
    finally:
        for s in socks:
            s.close()
    return {"tunnels": len(socks), "rss_before": before, "rss_after": after,
            "bytes_per_tunnel": (after - before) / max(1, len(socks)),
            "pss_before": before_pss, "pss_after": after_pss,
            "pss_bytes_per_tunnel": (after_pss - before_pss) / max(1, len(socks)),
            "processes": procs}


# ---------------------------------------------------------------- report

def fmt(v, kind):
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    if kind == "mbs":
        return "%.0f" % v
    if kind == "us":
        return "%.0f" % v
    if kind == "kib":
        return "%.1f" % (v / 1024.0)
    if kind == "cps":
        return "%.0f" % v
    if kind == "cpu":
        return "%.2f" % v
    return str(v)


ROWS = [
    ("download MB/s (1 stream)", "download_mbs", "mbs", True),
    ("upload MB/s (1 stream)", "upload_mbs", "mbs", True),
    ("connections/s (32 clients)", "cps", "cps", True),
    ("handshake p50 µs", "hs_p50_us", "us", False),
    ("handshake p99 µs", "hs_p99_us", "us", False),
    ("64 B round trip p50 µs", "rtt_p50_us", "us", False),
    ("64 B round trip p99 µs", "rtt_p99_us", "us", False),
    ("idle tunnel KiB (RSS summed over processes)", "idle_bytes", "kib", False),
    ("idle tunnel KiB (PSS summed over processes)", "idle_pss_bytes", "kib", False),
    ("proxy CPU s per GB relayed", "cpu_s_per_gb", "cpu", False),
]


def markdown(results, meta):
    cols = PEERS
    lines = ["| measure | " + " | ".join(cols) + " | socksrelay/dante |",
             "|---" * (len(cols) + 2) + "|"]
    for label, key, kind, _ in ROWS:
        cells = []
        for c in cols:
            r = results[c]
            if "error" in r:
                cells.append("n/a (%s)" % r["error"])
            else:
                cells.append(fmt(r.get(key), kind))
        a, b = results["socksrelay"].get(key), results["dante"].get(key)
        ratio = ("%.2f×" % (a / b)) if isinstance(a, (int, float)) and \
            isinstance(b, (int, float)) and b else "-"
        lines.append("| %s | %s | %s |" % (label, " | ".join(cells), ratio))
    lines.append("")
    lines.append("%s; %d MiB each way; %d idle tunnels; %d-core %s; rounds %d (best for "
                 "throughput/cps, median of round medians for latencies)." % (
                     meta["date"], meta["size_mib"], meta["tunnels"], meta["cpus"],
                     meta["machine"], meta["rounds"]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="MiB each way (default 256)")
    ap.add_argument("--tunnels", type=int, default=500, help="idle tunnels (default 500)")
    ap.add_argument("--full", action="store_true",
                    help="the issue's sizes: --size 512 --tunnels 2000")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    ap.add_argument("--cps-seconds", type=float, default=3.0)
    ap.add_argument("--cps-clients", type=int, default=32)
    ap.add_argument("--rtt-count", type=int, default=5000)
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="comma-separated subset of " + ",".join(PEERS))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--serve-targets", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_targets:
        return serve_targets()
    if a.full:
        a.size, a.tunnels = max(a.size, 512), max(a.tunnels, 2000)
    a.rounds = max(1, min(a.rounds, 10))
    a.cps_seconds = min(a.cps_seconds, 30.0)
    a.rtt_count = min(a.rtt_count, 100000)
    a.tunnels = min(a.tunnels, 10000)
    size = a.size << 20
    wanted = [p for p in a.peers.split(",") if p in PEERS]
    _raise_nofile()

    workdir = tempfile.mkdtemp(prefix="socksbench-")
    targets_proc = None
    proxies = {}
    results = {p: {} for p in PEERS}
    for p in PEERS:
        if p not in wanted:
            results[p]["error"] = "not selected"
    raw = {p: {} for p in PEERS}
    try:
        targets_proc = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                         "--serve-targets"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        t = json.loads(targets_proc.stdout.readline())
        for name in wanted:
            if name == "direct":
                continue
            px = Proxy(name, workdir)
            px.start()
            if px.error:
                results[name]["error"] = px.error
                print("%s: n/a (%s)" % (name, px.error), file=sys.stderr)
            else:
                proxies[name] = px
                print("%s: pid %d port %d" % (name, px.pid, px.port), file=sys.stderr)
        live = [p for p in wanted if p == "direct" or p in proxies]

        def run(name, label, fn):
            """Run one measure for one peer, recording a failure as the cell."""
            if "error" in results[name]:
                return None
            try:
                return fn()
            except Exception as e:
                print("%s %s failed: %s" % (name, label, e), file=sys.stderr)
                raw[name].setdefault("failures", []).append("%s: %s" % (label, e))
                return None

        def port_of(name):
            return None if name == "direct" else proxies[name].port

        # Idle memory first, while each proxy is fresh (allocator pools not yet
        # grown by the other measures).
        for name in live:
            if name == "direct":
                continue
            m = run(name, "idle memory", lambda: m_idle_memory(proxies[name], t, a.tunnels))
            raw[name]["idle_memory"] = m
            print("%s: idle %s" % (name, m), file=sys.stderr)
            time.sleep(0.5)

        cpu_used = {p: 0.0 for p in live}
        bytes_relayed = {p: 0 for p in live}
        for rnd in range(a.rounds):
            for name in live:  # throughput, interleaved
                px = proxies.get(name)
                c0 = tree_cpu(px.pid) if px else 0
                if px:
                    px.remember_children()
                d = run(name, "download", lambda: m_download(port_of(name), t, size))
                u = run(name, "upload", lambda: m_upload(port_of(name), t, size))
                if px:
                    cpu_used[name] += tree_cpu(px.pid) - c0
                    bytes_relayed[name] += size * ((d is not None) + (u is not None))
                raw[name].setdefault("download_mbs", []).append(d)
                raw[name].setdefault("upload_mbs", []).append(u)
                print("round %d %s: down %s up %s MB/s" % (rnd, name, fmt(d, "mbs"),
                                                           fmt(u, "mbs")), file=sys.stderr)
            for name in live:
                c = run(name, "cps", lambda: m_cps(port_of(name), t, a.cps_clients,
                                                   a.cps_seconds))
                raw[name].setdefault("cps", []).append(c)
                print("round %d %s: cps %s" % (rnd, name, c), file=sys.stderr)
            for name in live:
                r = run(name, "rtt", lambda: m_rtt(port_of(name), t, a.rtt_count))
                raw[name].setdefault("rtt", []).append(r)
                print("round %d %s: rtt %s" % (rnd, name, r), file=sys.stderr)
        def best(xs):
            xs = [x for x in xs if x is not None]
            return max(xs) if xs else None

        def med(xs):
            xs = sorted(x for x in xs if x is not None)
            return xs[len(xs) // 2] if xs else None

        for name in live:
            r, w = raw[name], results[name]
            w["download_mbs"] = best(r.get("download_mbs", []))
            w["upload_mbs"] = best(r.get("upload_mbs", []))
            cps = [c for c in r.get("cps", []) if c]
            w["cps"] = best([c["cps"] for c in cps])
            w["hs_p50_us"] = med([c["hs_p50_us"] for c in cps])
            w["hs_p99_us"] = med([c["hs_p99_us"] for c in cps])
            rtt = [x for x in r.get("rtt", []) if x]
            w["rtt_p50_us"] = med([x["p50_us"] for x in rtt])
            w["rtt_p99_us"] = med([x["p99_us"] for x in rtt])
            if name == "direct":
                w["idle_bytes"] = w["idle_pss_bytes"] = "n/a (no proxy)"
                w["cpu_s_per_gb"] = "n/a (no proxy)"
            else:
                m = r.get("idle_memory")
                w["idle_bytes"] = m["bytes_per_tunnel"] if m else None
                w["idle_pss_bytes"] = m["pss_bytes_per_tunnel"] if m else None
                w["cpu_s_per_gb"] = (cpu_used[name] / (bytes_relayed[name] / 1e9)
                                     if bytes_relayed[name] else None)
            if r.get("failures"):
                w["failures"] = r["failures"]
    finally:
        for px in proxies.values():
            px.stop()
        if targets_proc:
            try:
                targets_proc.stdin.close()
                targets_proc.wait(5)
            except Exception:
                targets_proc.kill()
                targets_proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "size_mib": a.size, "tunnels": a.tunnels, "rounds": a.rounds,
            "cps_seconds": a.cps_seconds, "cps_clients": a.cps_clients,
            "rtt_count": a.rtt_count, "cpus": os.cpu_count(),
            "machine": os.uname().machine, "python": sys.version.split()[0]}
    md = markdown(results, meta)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "latest.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "raw": raw}, f, indent=2, default=str)
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
