"""
The peers: how each proxy is installed, configured, started and stopped.

Every process started here is stopped by PID (Proxy.stop, called from the
runner's finally); descendants are signalled by PID only if they were seen
in the proxy's process tree.
"""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from .util import LOOP, free_port, tree_pids, wait_port

VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
AUTH = ("bench", "benchpw")
START_SECONDS = 30.0

# Columns, in table order. "direct" is no proxy: the physical limit.
PEERS = ["direct", "socksrelay", "socksrelay-workers", "dante", "microsocks", "pproxy"]
LABELS = {"socksrelay-workers": "socksrelay ×N"}
# Peers that cannot take RFC 1929 credentials here, and why.
NO_AUTH = {"dante": "needs a system account", "direct": "no proxy"}

# Why a peer's UDP ASSOCIATE figure is n/a, when it is (for the table's notes).
UDP_NOTES = {
    "microsocks": "microsocks implements CONNECT only, no UDP ASSOCIATE",
    "pproxy": "pproxy's SOCKS5 server accepts CONNECT only; its UDP relay is a "
              "separate listener (-ul) taking SOCKS5 UDP datagrams without the "
              "TCP association, so it cannot take this measure",
}

# peer -> (executable, Debian package)
APT = {"dante": ("danted", "dante-server"), "microsocks": ("microsocks", "microsocks")}


def find_exe(name):
    for cand in (shutil.which(name), "/usr/sbin/" + name, "/usr/bin/" + name):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def install_missing(wanted, say):
    """
    Install the peers that are missing: Debian packages with apt-get (only as
    root, non-interactively), pproxy with pip into this interpreter's
    environment. Failures are reported and left for start() to turn into n/a.
    """
    pkgs = [pkg for peer, (exe, pkg) in APT.items() if peer in wanted and not find_exe(exe)]
    if pkgs:
        if not shutil.which("apt-get"):
            say("cannot install %s: no apt-get" % " ".join(pkgs))
        elif os.geteuid() != 0:
            say("cannot install %s: not root" % " ".join(pkgs))
        else:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + pkgs
            say("+ " + " ".join(cmd))
            try:
                if subprocess.run(cmd, env=env, timeout=900).returncode != 0:
                    # Stale or missing package lists: refresh once and retry.
                    subprocess.run(["apt-get", "update", "-q"], env=env, timeout=900)
                    subprocess.run(cmd, env=env, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as e:
                say("apt-get failed: %s" % e)
    if "pproxy" in wanted and importlib.util.find_spec("pproxy") is None:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "pproxy"]
        say("+ " + " ".join(cmd))
        try:
            subprocess.run(cmd, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            say("pip failed: %s" % e)
        importlib.invalidate_caches()


# Dante bind()s its outbound sockets to the external address before connecting,
# so each takes an ephemeral port of that address outright, and TIME_WAIT
# sockets hold them for 60 s: at a few thousand connections/s the ports run out
# (reply 3) within seconds. A loopback address of its own keeps the client's
# and the other proxies' TIME_WAIT sockets (on 127.0.0.1) out of its way; the
# runner waits for Dante's own to expire before its connection runs.
DANTE_EXTERNAL = "127.0.0.3"

DANTE_CONF = """\
logoutput: %(log)s
internal: 127.0.0.1 port = %(port)d
external: %(external)s
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
    from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect udpassociate udpreply
    protocol: tcp udp
}
"""

def _starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return int(st[st.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


LISTENING = re.compile(rb"listening on 127\.0\.0\.1 port (\d+)")


class Proxy:
    """One proxy process (and its descendants), without or with RFC 1929 auth."""

    def __init__(self, name, workdir, auth=None):
        self.name = name
        self.auth = auth
        self.key = name + ("+auth" if auth else "")
        self.workdir = workdir
        self.proc = None
        self.port = None
        self.error = None
        self.seen = {}  # pid -> start time (clock ticks since boot)
        self.log = None
        self.processes = None
        self.bind_addr = None  # the address its outbound sockets bind() explicitly

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _spawn(self, argv):
        self.log = open(os.path.join(self.workdir, self.key + ".log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)

    def _log_tail(self):
        try:
            with open(self.log.name, "rb") as f:
                text = f.read()[-4000:].decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""
        m = re.search(r"option --\S+ not recognized", text)
        if m:
            return m.group(0)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[-1][:120] if lines else ""

    def spawn(self):
        """Start the process; ready() waits for it to listen."""
        try:
            if self.auth and self.name in NO_AUTH:
                raise RuntimeError(NO_AUTH[self.name])
            if self.name in ("socksrelay", "socksrelay-workers"):
                twistd = os.path.join(VENV_BIN, "twistd")
                if not os.path.exists(twistd):
                    raise RuntimeError("no twistd next to " + sys.executable)
                argv = [twistd, "-n", "--pidfile=", "socks5"]
                if self.name == "socksrelay":
                    argv += ["--port", "tcp:0:interface=" + LOOP]  # port from the log
                else:
                    # A fixed port: workers that each bind port 0 would differ.
                    self.port = free_port()
                    argv += ["--port", "tcp:%d:interface=%s" % (self.port, LOOP),
                             "--workers", "auto"]
                if self.auth:
                    argv += ["--auth", "memory:%s:%s" % self.auth]
                self._spawn(argv)
            elif self.name == "dante":
                exe = find_exe("danted")
                if not exe:
                    raise RuntimeError("danted not installed")
                self.port = free_port()
                conf = os.path.join(self.workdir, "danted.conf")
                with open(conf, "w") as f:
                    f.write(DANTE_CONF % {"port": self.port, "external": DANTE_EXTERNAL,
                                          "log": os.path.join(self.workdir, "danted.out")})
                self.bind_addr = DANTE_EXTERNAL
                self._spawn([exe, "-f", conf])
            elif self.name == "microsocks":
                exe = find_exe("microsocks")
                if not exe:
                    raise RuntimeError("microsocks not installed")
                self.port = free_port()
                argv = [exe, "-i", LOOP, "-p", str(self.port)]
                if self.auth:
                    argv += ["-u", self.auth[0], "-P", self.auth[1]]
                self._spawn(argv)
            elif self.name == "pproxy":
                if importlib.util.find_spec("pproxy") is None:
                    raise RuntimeError("pproxy not installed")
                self.port = free_port()
                uri = "socks5://%s:%d" % (LOOP, self.port)
                if self.auth:
                    uri += "#%s:%s" % self.auth
                self._spawn([sys.executable, "-m", "pproxy", "-l", uri])
            else:
                raise RuntimeError("unknown peer")
        except Exception as e:
            self.error = str(e)
            self.stop()

    def ready(self, deadline):
        """Wait (until deadline, monotonic) for the proxy to listen; else error."""
        if self.error:
            return
        try:
            for _ in range(int(START_SECONDS / 0.05) + 100):
                if self.proc.poll() is not None:
                    raise RuntimeError("exited %s: %s" % (self.proc.returncode,
                                                          self._log_tail()))
                if self.port is None:
                    with open(self.log.name, "rb") as f:
                        m = LISTENING.search(f.read())
                    if m:
                        self.port = int(m.group(1))
                if self.port is not None and wait_port(self.port, time.monotonic() + 0.1):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("did not listen within %.0f s" % START_SECONDS)
                time.sleep(0.05)
            else:
                raise RuntimeError("did not listen")
            if self.name == "socksrelay-workers":
                self._settle(deadline)
            if self.proc.poll() is not None:
                raise RuntimeError("exited %s: %s" % (self.proc.returncode, self._log_tail()))
            self.remember_children()
            self.processes = len(tree_pids(self.proc.pid))
        except Exception as e:
            self.error = str(e)
            self.stop()

    def _settle(self, deadline):
        """Wait until the process tree stops growing (workers starting), <= 5 s."""
        last, stable_since = None, time.monotonic()
        end = min(deadline, time.monotonic() + 5.0)
        while time.monotonic() < end:
            n = len(tree_pids(self.proc.pid))
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since > 0.5:
                return
            time.sleep(0.1)

    def remember_children(self):
        if self.proc and self.proc.poll() is None:
            for p in tree_pids(self.proc.pid):
                self.seen.setdefault(p, _starttime(p))

    def stop(self):
        if self.proc is None:
            if self.log:
                self.log.close()
            return
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # Descendants we saw (Dante's children, workers), only if still
        # parented by a process we saw or orphaned: signal them by PID.
        # (The start time tells a reused PID apart.)
        for p, started in self.seen.items():
            if p == self.proc.pid or started is None:
                continue
            try:
                with open("/proc/%d/stat" % p) as f:
                    st = f.read()
                fields = st[st.rindex(")") + 2:].split()
                ppid, now_started = int(fields[1]), int(fields[19])
                if now_started == started and (ppid in self.seen or ppid == 1):
                    os.kill(p, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        if self.log:
            self.log.close()
