"""Shared helpers: /proc accounting, sockets, SOCKS5 client steps, percentiles."""

import os
import resource
import socket
import struct
import time

LOOP = "127.0.0.1"
IO_TIMEOUT = 60.0
CLK = os.sysconf("SC_CLK_TCK")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind((LOOP, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, deadline):
    """Poll until something accepts on port, or deadline (monotonic) passes."""
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOP, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def _ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    return int(st[st.rindex(")") + 2:].split()[1])


def tree_pids(pid):
    """pid and its descendants, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            children.setdefault(_ppid(int(d)), []).append(int(d))
        except (OSError, ValueError):
            continue
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


def tree_cpu(pid, user_only=False):
    """utime+stime (+ reaped children's) in seconds over the process tree."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if user_only:
                total += int(fields[11]) + int(fields[13])
            else:
                total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError):
            pass
    return total / CLK


def host_user_cpu():
    """User (and nice) CPU seconds of the whole host since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return (int(fields[1]) + int(fields[2])) / CLK
    except (OSError, ValueError, IndexError):
        return None


def time_wait_count(host):
    """TCP sockets in TIME_WAIT whose local address is host (IPv4), from /proc."""
    local = "%08X" % struct.unpack("<I", socket.inet_aton(host))[0]
    n = 0
    try:
        with open("/proc/net/tcp") as f:
            next(f, None)
            for line in f:
                fields = line.split(None, 4)
                if len(fields) > 3 and fields[3] == "06" and fields[1].startswith(local):
                    n += 1
    except OSError:
        pass
    return n


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += part
    return bytes(buf)


def greeting(auth):
    """The client's first message: no-auth, or username/password (0x02) only."""
    return b"\x05\x01\x02" if auth else b"\x05\x01\x00"


def auth_request(auth):
    user, password = (x.encode() for x in auth)
    return b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password


def request(cmd, host, port):
    return b"\x05" + bytes([cmd]) + b"\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port)


def reply_length(buf):
    """Bytes a SOCKS5 reply needs, given its first bytes (5 suffice)."""
    if len(buf) < 5:
        return 5
    return {1: 10, 4: 22}.get(buf[3], 7 + buf[4])


REPLIES = {1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
           4: "host unreachable", 5: "connection refused", 6: "TTL expired",
           7: "command not supported", 8: "address type not supported"}


def socks5_request(sock, cmd, host, port, auth=None):
    """Blocking SOCKS5 handshake on sock; returns the reply's (host, port)."""
    sock.sendall(greeting(auth))
    method = recv_exact(sock, 2)
    if auth:
        if method != b"\x05\x02":
            raise ConnectionError("greeting refused: %r" % method)
        sock.sendall(auth_request(auth))
        if recv_exact(sock, 2) != b"\x01\x00":
            raise ConnectionError("authentication refused")
    elif method != b"\x05\x00":
        raise ConnectionError("greeting refused: %r" % method)
    sock.sendall(request(cmd, host, port))
    head = recv_exact(sock, 5)
    if head[1] != 0:
        raise ConnectionError("reply %d, %s" % (head[1], REPLIES.get(head[1], "?")))
    rest = recv_exact(sock, reply_length(head) - 5)
    reply = head + rest
    if reply[3] == 1:
        return socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0]
    if reply[3] == 4:
        return socket.inet_ntop(socket.AF_INET6, reply[4:20]), struct.unpack("!H", reply[20:22])[0]
    return reply[5:-2].decode("ascii", "replace"), struct.unpack("!H", reply[-2:])[0]


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def _connect(port, timeout, source=None):
    if not source:
        return socket.create_connection((LOOP, port), timeout=timeout)
    s = socket.socket()
    try:
        # Take the port at connect(), per destination, not at bind().
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((source, 0))
        s.settimeout(timeout)
        s.connect((LOOP, port))
    except BaseException:
        s.close()
        raise
    return s


def open_tunnel(proxy_port, port, timeout=IO_TIMEOUT, auth=None, source=None):
    """
    A TCP stream to LOOP:port, through the SOCKS5 proxy on proxy_port if
    given; from the loopback address source if given.
    """
    s = _connect(port if proxy_port is None else proxy_port, timeout, source)
    if proxy_port is not None:
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks5_request(s, 1, LOOP, port, auth)
        except BaseException:
            s.close()
            raise
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]
