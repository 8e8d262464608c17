"""
The measures. Each takes the proxy's port (None for direct loopback) and the
targets' ports, and returns numbers or raises. Every loop is bounded in
count and in time.
"""

import collections
import errno
import multiprocessing
import os
import select
import selectors
import socket
import struct
import threading
import time

from .util import (IO_TIMEOUT, LOOP, auth_request, greeting, open_tunnel, pct,
                   recv_exact, reply_length, request, socks5_request, tree_pids, tree_pss,
                   tree_rss)

CHUNK = 1 << 20  # client buffers: 1 MiB per recv_into / sendall


# ------------------------------------------------------------ throughput

def _download(s, n, buf):
    s.sendall(struct.pack("!Q", n))
    got = 0
    while got < n:
        k = s.recv_into(buf)
        if not k:
            raise ConnectionError("download short: %d of %d" % (got, n))
        got += k


def _upload(s, n, data):
    s.sendall(struct.pack("!Q", n))
    left = n
    while left > 0:
        k = min(left, CHUNK)
        s.sendall(data[:k])
        left -= k
    (got,) = struct.unpack("!Q", recv_exact(s, 8))
    if got != n:
        raise ConnectionError("sink got %d of %d" % (got, n))


def m_throughput(pport, t, size, streams, direction):
    """
    MB/s (10^6 bytes/s) in total over `streams` concurrent tunnels moving
    `size` bytes between them (split evenly), one blocking thread per stream.
    Tunnels are opened first and the target's ready byte read on each; the
    clock runs from the moment all threads are released to the moment the
    last stream is done.
    """
    target = t["source"] if direction == "download" else t["sink"]
    shares = [size // streams + (1 if i < size % streams else 0) for i in range(streams)]
    socks = []
    try:
        for _ in range(streams):
            socks.append(open_tunnel(pport, target))
        for s in socks:  # each target thread is running
            if recv_exact(s, 1) != b"R":
                raise ConnectionError("no ready byte from the target")
        go = threading.Barrier(streams + 1, timeout=IO_TIMEOUT)
        ends, errors = [], []
        zeros = memoryview(b"\0" * CHUNK)

        def work(s, n):
            try:
                buf = bytearray(CHUNK) if direction == "download" else None
                go.wait()
                if direction == "download":
                    _download(s, n, buf)
                else:
                    _upload(s, n, zeros)
                ends.append(time.perf_counter())
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s, n), daemon=True)
                   for s, n in zip(socks, shares)]
        for th in threads:
            th.start()
        go.wait()
        t0 = time.perf_counter()
        for th in threads:
            th.join(IO_TIMEOUT * 2)
        if errors:
            raise errors[0]
        if len(ends) != streams:
            raise TimeoutError("%d of %d streams finished" % (len(ends), streams))
        return size / (max(ends) - t0) / 1e6
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------ connections per second

class _Client:
    __slots__ = ("sock", "step", "buf", "t0", "deadline")


def cps_worker(pport, echo_port, clients, start_at, stop_at, auth=None, conn_timeout=10.0):
    """
    One selectors loop driving `clients` concurrent connections, each doing:
    TCP connect, greeting, (RFC 1929 sub-negotiation), CONNECT to the echo
    target, a 4-byte echo, close; then again, until stop_at (monotonic).
    Counts the connections completed by stop_at and the handshake latency
    (connect start to CONNECT reply) of each.

    Raw non-blocking sockets: asyncio streams cost about 2.5 times as much
    CPU per connection and made the client the bottleneck.
    """
    steps = []  # (bytes to send, check of the answer)
    if pport:
        steps.append((greeting(auth), b"\x05\x02" if auth else b"\x05\x00"))
        if auth:
            steps.append((auth_request(auth), b"\x01\x00"))
        steps.append((request(1, LOOP, echo_port), None))  # None: a CONNECT reply
    steps.append((b"ping", b"ping"))
    last = len(steps) - 1
    dest = (LOOP, pport or echo_port)
    sel = selectors.DefaultSelector()
    done, errors, hs = 0, 0, []
    late, last_end = 0, None  # connections completed after stop_at, and when
    reasons = collections.Counter()
    restart = []  # (time, client) to reconnect after an error

    def failed(c, why):
        nonlocal errors
        errors += 1
        reasons[why] += 1
        now = time.monotonic()
        if now < stop_at:
            restart.append((now + 0.01, c))

    def start(c):
        """Open a connection for c; on an immediate failure, retry later."""
        c.sock = socket.socket()
        c.sock.setblocking(False)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.t0 = time.perf_counter()
        c.deadline = time.monotonic() + conn_timeout
        c.step, c.buf = -1, b""
        err = c.sock.connect_ex(dest)
        if err not in (0, errno.EINPROGRESS):
            c.sock.close()
            failed(c, "connect: " + (errno.errorcode.get(err) or str(err)))
            return
        sel.register(c.sock, selectors.EVENT_WRITE, c)

    def finish(c, why=None):
        nonlocal done, late, last_end
        sel.unregister(c.sock)
        c.sock.close()
        if why:
            failed(c, why)
            return
        now = time.monotonic()
        if now <= stop_at:
            done += 1
        else:
            late += 1
            last_end = now
        if now < stop_at:
            start(c)

    def advance(c):
        c.step += 1
        if c.step == last:
            hs.append(time.perf_counter() - c.t0)
        c.buf = b""
        c.sock.send(steps[c.step][0])

    while time.monotonic() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
    for _ in range(clients):
        start(_Client())
    hard_stop = stop_at + conn_timeout + 1
    next_sweep = 0.0
    for _ in range(100_000_000):
        now = time.monotonic()
        if (not sel.get_map() and not restart) or now > hard_stop:
            break
        if restart and now < stop_at:
            due = [c for when, c in restart if when <= now]
            restart[:] = [(when, c) for when, c in restart if when > now]
            for c in due:
                start(c)
        elif now >= stop_at:
            restart.clear()
        if now >= next_sweep:  # per-connection timeouts
            next_sweep = now + 0.2
            for key in list(sel.get_map().values()):
                if key.data.deadline < now:
                    finish(key.data, "timeout (step %d)" % key.data.step)
        for key, _ in sel.select(0.05):
            c = key.data
            if c.sock.fileno() < 0 or key.fd not in sel.get_map():
                continue
            try:
                if c.step == -1:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    advance(c)
                    continue
                data = c.sock.recv(256)
                if not data:
                    raise ConnectionError("closed by peer")
                c.buf += data
                want = steps[c.step][1]
                if want is None:
                    need = reply_length(c.buf)
                    if len(c.buf) < need:
                        continue
                    if c.buf[1] != 0:
                        raise ConnectionError("reply %d" % c.buf[1])
                elif len(c.buf) < len(want):
                    continue
                elif c.buf != want:
                    raise ConnectionError("unexpected answer %r" % c.buf[:8])
                if c.step == last:
                    finish(c)
                else:
                    advance(c)
            except (OSError, ConnectionError) as e:
                finish(c, "step %d: %s" % (c.step, _why(e)))
    for key in list(sel.get_map().values()):
        key.data.sock.close()
    sel.close()
    if not done and late:
        # Nothing finished within the window (a very short run on a loaded
        # machine): the rate over the time the connections actually took.
        done = late * (stop_at - start_at) / (last_end - start_at)
    return {"done": done, "errors": errors, "hs": hs, "reasons": dict(reasons)}


def _why(e):
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return str(e) or type(e).__name__


def _cps_worker_args(args):
    return cps_worker(*args)


def m_cps(pport, t, clients, duration, auth=None, procs=1):
    """
    Connections per second over `duration` seconds with `clients` concurrent
    clients, spread over `procs` client processes (1: this one) started
    together; handshake latency p50/p99.
    """
    procs = max(1, min(procs, clients))
    if procs == 1:
        start_at = time.monotonic() + 0.05
        parts = [cps_worker(pport, t["echo"], clients, start_at, start_at + duration, auth)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(procs) as pool:
            pool.map(abs, range(procs))  # warm: the workers exist and have imported us
            start_at = time.monotonic() + 0.3
            split = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
            parts = pool.map(_cps_worker_args, [
                (pport, t["echo"], n, start_at, start_at + duration, auth) for n in split])
    hs = [x for p in parts for x in p["hs"]]
    if not sum(p["done"] for p in parts):
        raise ConnectionError("no connection completed (%s)" % ", ".join(
            "%d× %s" % (n, why) for p in parts for why, n in p["reasons"].items()))
    reasons = collections.Counter()
    for p in parts:
        reasons.update(p["reasons"])
    return {"cps": sum(p["done"] for p in parts) / duration,
            "errors": sum(p["errors"] for p in parts),
            "error_reasons": dict(reasons.most_common(5)),
            "connections": sum(p["done"] for p in parts),
            "hs_p50_us": pct(hs, 50) * 1e6 if hs else None,
            "hs_p99_us": pct(hs, 99) * 1e6 if hs else None}


# ------------------------------------------------------------ round trip

def m_rtt(pport, t, count, max_seconds=60.0):
    """
    64-byte round trips over one established tunnel, one at a time; returns
    the latencies in seconds (the runner merges chunks run interleaved).
    """
    s = open_tunnel(pport, t["echo"])
    try:
        msg = b"x" * 64
        lat = []
        end = time.monotonic() + max_seconds
        for _ in range(count):
            t0 = time.perf_counter()
            s.sendall(msg)
            recv_exact(s, 64)
            lat.append(time.perf_counter() - t0)
            if time.monotonic() > end:
                break
    finally:
        s.close()
    return lat


# ------------------------------------------------------------ idle memory

IDLE_SOURCES = ["127.0.1.%d" % i for i in range(1, 21)]
IDLE_PER_SOURCE = 500


def m_idle_memory(proxy, t, n, max_seconds=180.0):
    """
    RSS and PSS increase, summed over the proxy's process tree, with n idle
    tunnels open to the echo target (one byte echoed through each first, so
    each is fully relayed), divided by n. The tunnels come from 127.0.1.1,
    127.0.1.2, ..., 500 from each.
    """
    before = tree_rss(proxy.pid)
    before_pss = tree_pss(proxy.pid)
    socks = []
    deadline = time.monotonic() + max_seconds
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            # A few client addresses, as many clients would be: one address
            # may not open 2,000 sessions (socksrelay's default is 1,024).
            source = IDLE_SOURCES[len(socks) // IDLE_PER_SOURCE % len(IDLE_SOURCES)]
            socks.append(open_tunnel(proxy.port, t["echo"], timeout=10, source=source))
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


# ------------------------------------------------------------ UDP

def m_udp(pport, t, duration, window=32, size=64, loss_after=0.2):
    """
    UDP echo datagrams per second: over a UDP ASSOCIATE (its TCP control
    connection held open) or, for direct, straight to the UDP echo target.
    `window` datagrams of `size` payload bytes stay in flight; one that has
    not come back within `loss_after` seconds counts as lost and its slot is
    reused. Counts echoes received within `duration` seconds.
    """
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ctl = None
    try:
        u.bind((LOOP, 0))
        header = b""
        if pport:
            ctl = socket.create_connection((LOOP, pport), timeout=10)
            try:
                host, port = socks5_request(ctl, 3, LOOP, u.getsockname()[1])
            except ConnectionError as e:
                why = str(e)
                if why.startswith("closed after 0 "):
                    why = "connection closed, no reply"
                raise ConnectionError("UDP ASSOCIATE: " + why)
            if host in ("0.0.0.0", "::"):
                host = LOOP
            u.connect((host, port))
            header = b"\0\0\0\x01" + socket.inet_aton(LOOP) + struct.pack("!H", t["udp_echo"])
        else:
            u.connect((LOOP, t["udp_echo"]))
        u.setblocking(False)
        pad = b"\0" * (size - 8)
        out = collections.OrderedDict()  # seq -> send time, oldest first
        seq = received = lost = 0
        t0 = time.monotonic()
        end = t0 + duration
        next_expiry = t0 + loss_after / 4
        for _ in range(50_000_000):
            now = time.monotonic()
            if now >= end:
                break
            while len(out) < window:
                try:
                    u.send(header + struct.pack("!Q", seq) + pad)
                except BlockingIOError:
                    break
                out[seq] = now
                seq += 1
            if now >= next_expiry:
                next_expiry = now + loss_after / 4
                while out:
                    k, sent = next(iter(out.items()))
                    if now - sent < loss_after:
                        break
                    del out[k]
                    lost += 1
            try:
                data = u.recv(2048)
            except BlockingIOError:
                select.select([u], [], [], loss_after / 4)
                continue
            except ConnectionRefusedError:
                continue
            if len(data) < size:
                continue
            (k,) = struct.unpack("!Q", data[-size:][:8])
            if out.pop(k, None) is not None:
                received += 1
        # Whatever is still out after loss_after more is lost.
        stop = time.monotonic() + loss_after
        while out and time.monotonic() < stop:
            if not select.select([u], [], [], 0.02)[0]:
                continue
            try:
                data = u.recv(2048)
            except OSError:
                continue
            if len(data) >= size:
                out.pop(struct.unpack("!Q", data[-size:][:8])[0], None)
        lost += len(out)
        if not received:
            raise ConnectionError("no datagram came back (%d sent)" % seq)
        return {"dps": received / duration, "seconds": duration, "sent": seq,
                "received": received, "lost": lost}
    finally:
        u.close()
        if ctl:
            ctl.close()

