"""
The loopback targets, run in a child process (``run.py --serve-targets``) so
they do not share the client's GIL. It prints their ports as one JSON line
and exits when its stdin closes (or after MAX_LIFE seconds).

- sink (TCP): sends one byte, "R" (ready), reads an 8-byte length, then that
  many bytes, and answers with the 8-byte count it received (no half-close
  needed: some proxies lack it);
- source (TCP): sends "R", reads an 8-byte length and sends that many bytes.

  The "R" tells the client the connection's thread runs: with 64 streams,
  accepting and starting the threads takes tens of milliseconds, which the
  client's clock must not include.
- echo (TCP, asyncio): echoes whatever arrives;
- udp_echo (UDP): sends every datagram back to its sender. A blocking thread,
  not an asyncio DatagramProtocol: asyncio does one select() per datagram
  and tops out near 16,000 datagrams/s here, below some proxies, while this
  loop echoes over 60,000/s.
"""

import asyncio
import json
import socket
import struct
import sys
import threading

from .util import IO_TIMEOUT, LOOP, raise_nofile, recv_exact

CHUNK = 1 << 20
MAX_LIFE = 4 * 3600.0
MAX_ACCEPTS = 10_000_000
MAX_DATAGRAMS = 1_000_000_000


def _sink_conn(conn):
    buf = bytearray(CHUNK)
    total = 0
    try:
        conn.settimeout(IO_TIMEOUT)
        conn.sendall(b"R")
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
        conn.sendall(b"R")
        (left,) = struct.unpack("!Q", recv_exact(conn, 8))
        while left > 0:
            n = min(left, CHUNK)
            conn.sendall(data[:n])
            left -= n
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    except (OSError, ConnectionError):
        pass
    finally:
        conn.close()


def _accept_loop(lsock, handler):
    for _ in range(MAX_ACCEPTS):
        conn, _ = lsock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def _udp_echo_loop(sock):
    for _ in range(MAX_DATAGRAMS):
        data, addr = sock.recvfrom(65535)
        try:
            sock.sendto(data, addr)
        except OSError:
            pass


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.t.write(data)


def serve_targets():
    raise_nofile()
    socks = {}
    for name, handler in (("sink", _sink_conn), ("source", _source_conn)):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOP, 0))
        s.listen(512)
        socks[name] = s
        threading.Thread(target=_accept_loop, args=(s, handler), daemon=True).start()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    u.bind((LOOP, 0))
    threading.Thread(target=_udp_echo_loop, args=(u,), daemon=True).start()

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(_Echo, LOOP, 0, backlog=4096)
        ports = {n: s.getsockname()[1] for n, s in socks.items()}
        ports["echo"] = srv.sockets[0].getsockname()[1]
        ports["udp_echo"] = u.getsockname()[1]
        print(json.dumps(ports), flush=True)
        closed = asyncio.Event()

        def watch_stdin():
            sys.stdin.read()
            loop.call_soon_threadsafe(closed.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
        try:
            await asyncio.wait_for(closed.wait(), MAX_LIFE)
        except TimeoutError:
            pass

    asyncio.run(main())
