#!/usr/bin/env python3
"""Side-by-side SOCKS5 benchmark: socksrelay vs Dante, microsocks, pproxy, direct.

Issue 9. One command starts its own loopback targets (sink, source, TCP echo,
UDP echo) and the proxies (installing missing ones), then measures them side
by side, interleaved per measure:

    .venv/bin/python bench/run.py              # the issue's sizes: 512 MiB, 2000 tunnels
    .venv/bin/python bench/run.py --quick      # 256 MiB, 500 tunnels
    .venv/bin/python bench/run.py --smoke      # seconds; direct and socksrelay only

Loopback only; every loop is bounded in count and time; only processes this
script starts are stopped, by PID, in a finally. Results: latest.json and
latest.md in --out (default bench/results). See bench/README.rst.
"""

import argparse
import importlib.metadata
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from socksbench import measures, report
from socksbench.peers import AUTH, PEERS, START_SECONDS, Proxy, find_exe, install_missing
from socksbench.util import host_user_cpu, pct, raise_nofile, time_wait_count, tree_cpu

# Presets: --size MiB, --tunnels, --cps-seconds, --rtt-count, --udp-seconds, --peers
PRESETS = {
    "default": (512, 2000, 3.0, 5000, 3.0, ",".join(PEERS)),
    "quick": (256, 500, 2.0, 3000, 2.0, ",".join(PEERS)),
    # Enough idle tunnels (about 1 MB of RSS) that page-sized noise cannot
    # make the per-tunnel figure zero or negative.
    "smoke": (4, 200, 0.5, 300, 0.5, "direct,socksrelay"),
}
# Throughput runs: (streams, direction, result key)
THROUGHPUT = [(1, "download", "download_mbs"), (1, "upload", "upload_mbs"),
              (8, "download", "download8_mbs"), (8, "upload", "upload8_mbs"),
              (64, "download", "download64_mbs"), (64, "upload", "upload64_mbs")]


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="256 MiB each way, 500 idle tunnels, 2 s runs")
    size.add_argument("--smoke", action="store_true",
                      help="tiny (4 MiB, 200 tunnels, 0.5 s runs), peers direct,socksrelay; "
                           "for the test suite")
    size.add_argument("--full", action="store_true", help=argparse.SUPPRESS)  # the default now
    ap.add_argument("--size", type=int, help="MiB moved each way per throughput run "
                    "(default 512)")
    ap.add_argument("--tunnels", type=int, help="idle tunnels (default 2000)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1, max 10)")
    ap.add_argument("--cps-seconds", type=float, help="seconds per connections/s run (default 3)")
    ap.add_argument("--cps-clients", type=int, default=32)
    ap.add_argument("--cps-procs", type=int, default=1,
                    help="client processes for connections/s (default 1; the 32 clients "
                         "are split between them)")
    ap.add_argument("--rtt-count", type=int, help="64-byte round trips (default 5000)")
    ap.add_argument("--udp-seconds", type=float, help="seconds per UDP run (default 3)")
    ap.add_argument("--peers", help="comma-separated subset of " + ",".join(PEERS))
    ap.add_argument("--no-install", action="store_true",
                    help="do not apt-get/pip install missing peers")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="directory for latest.json and latest.md")
    ap.add_argument("--serve-targets", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    preset = PRESETS["smoke" if a.smoke else "quick" if a.quick else "default"]
    for name, value in zip(("size", "tunnels", "cps_seconds", "rtt_count", "udp_seconds",
                            "peers"), preset):
        if getattr(a, name) is None:
            setattr(a, name, value)
    a.rounds = max(1, min(a.rounds, 10))
    a.size = max(1, min(a.size, 8192))
    a.tunnels = max(1, min(a.tunnels, 10000))
    a.cps_seconds = max(0.1, min(a.cps_seconds, 30.0))
    a.cps_clients = max(1, min(a.cps_clients, 1024))
    a.cps_procs = max(1, min(a.cps_procs, 8))
    a.rtt_count = max(10, min(a.rtt_count, 100000))
    a.udp_seconds = max(0.1, min(a.udp_seconds, 30.0))
    return a


def versions():
    """What was measured, for the JSON (best effort, bounded)."""
    out = {"python": sys.version.split()[0]}
    for dist in ("socksrelay", "twisted", "pproxy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    git = ["git", "--no-optional-locks", "-C", os.path.dirname(HERE)]
    for name, cmd in (("dante", [find_exe("danted") or "danted", "-v"]),
                      ("microsocks", ["dpkg-query", "-W", "-f", "${Version}", "microsocks"]),
                      ("socksrelay-commit", git + ["rev-parse", "--short", "HEAD"]),
                      ("socksrelay-uncommitted", git + ["status", "--porcelain", "--",
                                                        "socksrelay"])):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            text = (r.stdout or r.stderr).strip()
            if r.returncode == 0 and name == "socksrelay-uncommitted":
                out[name] = len(text.splitlines())  # files changed under socksrelay/
            elif r.returncode == 0 and text:
                out[name] = text.splitlines()[0][:80]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return out


class Bench:
    """One run: the targets, the proxies, the raw figures per peer."""

    def __init__(self, a, workdir):
        self.a = a
        self.workdir = workdir
        self.wanted = [p for p in PEERS if p in a.peers.split(",")]
        self.results = {p: {} for p in self.wanted}
        self.raw = {p: {} for p in self.wanted}
        self.proxies = {}  # peer -> Proxy without auth
        self.auth_proxies = {}  # peer -> Proxy with RFC 1929 auth
        self.cpu = {}
        self.relayed = {}
        self.t = None
        self.drained = 0.0  # seconds spent waiting for TIME_WAIT to drain
        self.client_cpu = {}  # peer -> measure -> [client CPU share of one core]
        self.quiet_seconds = 0.0  # seconds spent waiting for idle peers
        self.targets_pid = None
        self.foreign_cpu = None  # other processes' user CPU share during the run

    # -- setup

    def start_peers(self):
        started = []
        for name in self.wanted:
            if name == "direct":
                continue
            for auth in (None, AUTH):
                px = Proxy(name, self.workdir, auth)
                px.spawn()
                started.append(px)
        deadline = time.monotonic() + START_SECONDS
        for px in started:
            px.ready(deadline)
            if px.error:
                say("%s: n/a (%s)" % (px.key, px.error))
            else:
                say("%s: pid %d port %d, %d process(es)" % (px.key, px.pid, px.port,
                                                             px.processes))
            if px.auth:
                self.auth_proxies[px.name] = px
            else:
                self.proxies[px.name] = px
                if px.error:
                    self.results[px.name]["error"] = px.error
        self.live = [p for p in self.wanted if p == "direct" or p in self.proxies
                     and not self.proxies[p].error]

    def port_of(self, name, auth=False):
        if name == "direct":
            return None
        return (self.auth_proxies if auth else self.proxies)[name].port

    def order(self, rnd):
        """The live peers, rotated by round so no peer always runs first."""
        k = rnd % len(self.live)
        return self.live[k:] + self.live[:k]

    def run(self, name, label, fn, *args):
        """
        fn(*args): one measure for one peer; a failure is recorded, and is
        the cell. Also records the client's CPU use during the run, as a
        share of one core (all its threads), to show whether it could have
        been the bottleneck.
        """
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        try:
            return fn(*args)
        except Exception as e:
            reason = str(e) or type(e).__name__
            say("%s %s failed: %s" % (name, label, reason))
            self.raw[name].setdefault("failures", {})[label] = reason
            return None
        finally:
            r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            share = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / max(w1 - w0, 1e-6)
            self.client_cpu.setdefault(name, {}).setdefault(label, []).append(round(share, 2))

    # -- measures

    def idle_memory(self):
        # First, while each proxy is fresh (allocator pools not yet grown by
        # the other measures).
        for name in self.live:
            if name == "direct":
                continue
            m = self.run(name, "idle_bytes", measures.m_idle_memory, self.proxies[name],
                         self.t, self.a.tunnels)
            self.raw[name]["idle_memory"] = m
            say("%s: idle %s" % (name, m))
            time.sleep(0.5)

    def quiet(self, max_wait=5.0, window=0.25, idle=0.05):
        """
        Wait (at most max_wait s) until the proxies and the targets are idle:
        together under `idle` of a core over `window` s. So no run shares the
        CPU with another peer still closing the previous run's connections.
        """
        pids = [px.pid for px in self.proxies.values() if px.proc and not px.error]
        pids += [px.pid for px in self.auth_proxies.values() if px.proc and not px.error]
        pids.append(self.targets_pid)
        t0 = time.monotonic()
        for _ in range(int(max_wait / window) + 1):
            c0 = sum(tree_cpu(p) for p in pids)
            time.sleep(window)
            if sum(tree_cpu(p) for p in pids) - c0 <= idle * window:
                break
            if time.monotonic() - t0 > max_wait:
                break
        self.quiet_seconds += time.monotonic() - t0

    def warmup(self, size=32 << 20):
        """One unmeasured download and upload per peer before the first round."""
        for name in self.live:
            for direction in ("download", "upload"):
                try:
                    measures.m_throughput(self.port_of(name), self.t, min(size, self.a.size << 20),
                                          1, direction)
                except Exception as e:
                    say("%s warm-up %s failed: %s" % (name, direction, e))

    def throughput(self, rnd):
        size = self.a.size << 20
        for streams, direction, key in THROUGHPUT:
            for name in self.order(rnd):
                px = self.proxies.get(name)
                if px:
                    px.remember_children()
                    c0 = tree_cpu(px.pid)
                v = self.run(name, key, measures.m_throughput, self.port_of(name), self.t,
                             size, streams, direction)
                if px:
                    self.cpu[name] = self.cpu.get(name, 0.0) + tree_cpu(px.pid) - c0
                    self.relayed[name] = self.relayed.get(name, 0) + (size if v else 0)
                self.raw[name].setdefault(key, []).append(v)
                say("round %d %s: %s %s MB/s" % (rnd, name, key,
                                                 report.fmt(v, "mbs")))

    def cps(self, rnd, auth):
        key = "cps_auth" if auth else "cps"
        for name in self.order(rnd):
            if auth and name != "direct":
                px = self.auth_proxies.get(name)
                if px is None or px.error:
                    continue
            elif auth:
                continue
            self.drain()
            self.quiet()
            c = self.run(name, key, measures.m_cps, self.port_of(name, auth), self.t,
                         self.a.cps_clients, self.a.cps_seconds, AUTH if auth else None,
                         self.a.cps_procs)
            self.raw[name].setdefault(key, []).append(c)
            say("round %d %s: %s %s" % (rnd, name, key, c))
        self.drain()  # before the next measure, too

    def cps_plain(self, rnd):
        self.cps(rnd, auth=False)

    def cps_auth(self, rnd):
        self.cps(rnd, auth=True)

    def drain(self, limit=3000, max_wait=65.0):
        """
        Before each connections/s run: wait (at most max_wait s) until the
        TIME_WAIT sockets of proxies that bind() their outbound sockets
        (Dante) are below limit. Those hold their ports against connect() from
        any address for 60 s; after a Dante run they take most of the
        ephemeral range, and the next peer's client would get EADDRNOTAVAIL.
        """
        addrs = {px.bind_addr for px in self.proxies.values() if px.bind_addr and not px.error}
        t0 = time.monotonic()
        for _ in range(int(max_wait) + 1):
            n = sum(time_wait_count(a) for a in addrs)
            if n <= limit or time.monotonic() - t0 > max_wait:
                break
            time.sleep(1.0)
        if time.monotonic() - t0 > 1:
            say("waited %.0f s for TIME_WAIT on %s to drain (%d left)" % (
                time.monotonic() - t0, ",".join(sorted(addrs)), n))
        self.drained += time.monotonic() - t0

    def rtt(self, rnd, chunks=5):
        """Round trips, in chunks interleaved across the peers, merged."""
        lat = {}
        for _ in range(chunks):
            for name in self.order(rnd):
                if lat.get(name, []) is None:
                    continue  # failed in an earlier chunk
                r = self.run(name, "rtt", measures.m_rtt, self.port_of(name), self.t,
                             max(1, self.a.rtt_count // chunks))
                lat[name] = None if r is None else lat.get(name, []) + r
        for name in self.order(rnd):
            xs = lat.get(name)
            r = {"p50_us": pct(xs, 50) * 1e6, "p99_us": pct(xs, 99) * 1e6,
                 "count": len(xs)} if xs else None
            self.raw[name].setdefault("rtt", []).append(r)
            say("round %d %s: rtt %s" % (rnd, name, r))

    def udp(self, rnd, chunks=3):
        """UDP echo, in chunks interleaved across the peers, summed."""
        runs = {}
        for _ in range(chunks):
            for name in self.order(rnd):
                if runs.get(name, []) is None:
                    continue
                u = self.run(name, "udp_dps", measures.m_udp, self.port_of(name), self.t,
                             self.a.udp_seconds / chunks)
                runs[name] = None if u is None else runs.get(name, []) + [u]
        for name in self.order(rnd):
            us = runs.get(name)
            u = None
            if us:
                u = {k: sum(x[k] for x in us) for k in ("seconds", "sent", "received", "lost")}
                u["dps"] = u["received"] / u["seconds"]
            self.raw[name].setdefault("udp", []).append(u)
            say("round %d %s: udp %s" % (rnd, name, u))

    # -- results

    def summarise(self):
        def best(xs):
            xs = [x for x in xs if x is not None]
            return max(xs) if xs else None

        def med(xs):
            xs = sorted(x for x in xs if x is not None)
            return xs[len(xs) // 2] if xs else None

        for name in self.wanted:
            r, w = self.raw[name], self.results[name]
            if "error" in w:
                for _, key, _, _, _ in report.ROWS:
                    w[key] = "n/a (%s)" % w["error"]
                continue
            for _, _, key in THROUGHPUT:
                w[key] = best(r.get(key, []))
            for key, pre in (("cps", "hs_"), ("cps_auth", "hs_auth_")):
                runs = [c for c in r.get(key, []) if c]
                w[key] = best([c["cps"] for c in runs])
                w[pre + "p50_us"] = med([c["hs_p50_us"] for c in runs])
                w[pre + "p99_us"] = med([c["hs_p99_us"] for c in runs])
            rtt = [x for x in r.get("rtt", []) if x]
            w["rtt_p50_us"] = med([x["p50_us"] for x in rtt])
            w["rtt_p99_us"] = med([x["p99_us"] for x in rtt])
            udp = [x for x in r.get("udp", []) if x]
            w["udp_dps"] = best([x["dps"] for x in udp])
            w["udp_lost"] = sum(x["lost"] for x in udp) if udp else None
            if name == "direct":
                for key in ("idle_bytes", "idle_pss_bytes", "cpu_s_per_gb", "cps_auth",
                            "hs_auth_p50_us", "hs_auth_p99_us"):
                    w[key] = report.NA_DIRECT
            else:
                m = r.get("idle_memory")
                w["idle_bytes"] = m["bytes_per_tunnel"] if m else None
                w["idle_pss_bytes"] = m["pss_bytes_per_tunnel"] if m else None
                gb = self.relayed.get(name, 0) / 1e9
                w["cpu_s_per_gb"] = self.cpu[name] / gb if gb else None
                apx = self.auth_proxies.get(name)
                if apx is not None and apx.error:
                    for key in ("cps_auth", "hs_auth_p50_us", "hs_auth_p99_us"):
                        w[key] = "n/a (%s)" % apx.error
            if self.client_cpu.get(name):
                w["client_cpu"] = {k: max(v) for k, v in self.client_cpu[name].items()}
            # A measure that failed shows its reason.
            for label, reason in r.get("failures", {}).items():
                keys = {"rtt": ("rtt_p50_us", "rtt_p99_us"), "udp_dps": ("udp_dps", "udp_lost"),
                        "idle_bytes": ("idle_bytes", "idle_pss_bytes"),
                        "cps": ("cps", "hs_p50_us", "hs_p99_us"),
                        "cps_auth": ("cps_auth", "hs_auth_p50_us", "hs_auth_p99_us")}
                for key in keys.get(label, (label,)):
                    if w.get(key) is None:
                        w[key] = "n/a (%s)" % reason


def main(argv=None):
    a = parse_args(argv)
    if a.serve_targets:
        from socksbench.targets import serve_targets
        return serve_targets()
    started = time.monotonic()
    unknown = [p for p in a.peers.split(",") if p not in PEERS]
    if unknown:
        say("unknown peers: %s (known: %s)" % (",".join(unknown), ",".join(PEERS)))
        return 2
    raise_nofile()
    if not a.no_install:
        install_missing(a.peers.split(","), say)

    workdir = tempfile.mkdtemp(prefix="socksbench-")
    b = Bench(a, workdir)
    targets = None
    try:
        targets = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                    "--serve-targets"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        b.t = json.loads(targets.stdout.readline())
        b.targets_pid = targets.pid
        host0, ours0, wall0 = host_user_cpu(), tree_cpu(os.getpid(), True), time.monotonic()
        b.start_peers()
        b.idle_memory()
        b.quiet()
        b.warmup()
        for rnd in range(a.rounds):
            # Connection rates last: they leave the kernel busy with
            # hundreds of thousands of TIME_WAIT sockets for a minute.
            for measure in (b.throughput, b.rtt, b.udp, b.cps_plain, b.cps_auth):
                b.quiet()
                measure(rnd)
        b.summarise()
        host1, ours1 = host_user_cpu(), tree_cpu(os.getpid(), True)
        if host0 is not None and host1 is not None:
            # Other processes' user time: a busy neighbour skews every figure.
            b.foreign_cpu = max(0.0, (host1 - host0) - (ours1 - ours0)) / (
                (time.monotonic() - wall0) * (os.cpu_count() or 1))
    finally:
        for px in list(b.proxies.values()) + list(b.auth_proxies.values()):
            px.stop()
        if targets:
            try:
                targets.stdin.close()
                targets.wait(5)
            except Exception:
                targets.kill()
                targets.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "preset": "smoke" if a.smoke else "quick" if a.quick else "default",
            "size_mib": a.size, "tunnels": a.tunnels, "rounds": a.rounds,
            "cps_seconds": a.cps_seconds, "cps_clients": a.cps_clients,
            "cps_procs": a.cps_procs, "rtt_count": a.rtt_count,
            "udp_seconds": a.udp_seconds, "udp_window": 32, "udp_payload": 64,
            "cpus": os.cpu_count(), "machine": os.uname().machine,
            "peers": b.wanted, "versions": versions(),
            "time_wait_drain_seconds": round(b.drained, 1),
            "quiet_wait_seconds": round(b.quiet_seconds, 1),
            "other_processes_user_cpu": (round(b.foreign_cpu, 3)
                                         if b.foreign_cpu is not None else None),
            "processes": {n: px.processes for n, px in b.proxies.items() if px.processes}}
    meta["headroom"] = report.headroom(b.results)
    meta["wall_seconds"] = time.monotonic() - started
    md = report.markdown(b.results, meta, b.wanted)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "latest.json"), "w") as f:
        json.dump({"meta": meta, "results": b.results, "raw": b.raw}, f, indent=2,
                  default=str)
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
