# -*- test-case-name: tests.test_tap -*-
"""
C{twistd socks5}: command-line options and the service they describe.
"""

from __future__ import annotations

from typing import Any


from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.cred import strcred
from twisted.cred.checkers import FilePasswordDB, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IAnonymous, IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from socksrelay.accesslog import AccessLog, AccessLogService, checkAccessLogPath
from socksrelay import listening
from socksrelay.auth import SOCKSRealm, methodPreference
from socksrelay.config import Config, ConfigError, loadConfig
from socksrelay.control import controlService, parseControlEndpoint, readTokenFile
from socksrelay.limits import Limits
from socksrelay.reload import ReloadService
from socksrelay.shutdown import DrainService
from socksrelay.bind import BindOptions, parseAdvertiseAddress
from socksrelay.server import SOCKS5ServerFactory
from socksrelay.udp import UDPOptions
from socksrelay.optionvalues import (  # noqa: F401 (public names of tap)
    PROTOCOLS,
    SHAREABLE_PORTS,
    _nonNegativeFloat,
    _positiveFloat,
    _positiveInt,
    normalisePort,
    parseIPAddress,
    parseNameServer,
    parsePortRange,
    parseProtocols,
    parseWorkers,
)
from socksrelay.wire import AuthMethod

DEFAULT_PORT = "tcp:1080:interface=127.0.0.1"

#: The timeouts a configuration file may set, by option name.
TIMEOUT_OPTIONS = (
    "handshake-timeout",
    "connect-timeout",
    "idle-timeout",
    "half-closed-timeout",
    "udp-idle-timeout",
    "bind-timeout",
)

_log = Logger(namespace="socksrelay.tap")


class Options(usage.Options, strcred.AuthOptionMixin):
    """
    Options for C{twistd socks5}.
    """

    synopsis = "[options]"
    longdesc = (
        "A SOCKS5 proxy server (RFC 1928) with username/password "
        "authentication (RFC 1929) through twisted.cred. By default it "
        "listens on 127.0.0.1 port 1080 and accepts clients without "
        "authentication; use --auth to require credentials before listening "
        "on a public address."
    )
    supportedInterfaces = (IUsernamePassword, IAnonymous)

    optParameters = [
        [
            "handshake-timeout",
            None,
            30.0,
            "Seconds a client has, from connecting, to finish the SOCKS "
            "handshake (greeting, authentication and request).",
            _positiveFloat,
        ],
        [
            "connect-timeout",
            None,
            30.0,
            "Seconds the outbound connection to a destination may take before "
            "the client gets reply 0x06 (TTL expired).",
            _positiveFloat,
        ],
        [
            "bind-ports",
            None,
            None,
            "LOW-HIGH: take BIND listening ports from this range (for "
            "firewalls and containers). Default: any free port.",
            parsePortRange,
        ],
        [
            "bind-advertise",
            None,
            None,
            "The IP address to put in BIND's first reply instead of the "
            "address the client's connection arrived on (for NAT).",
            parseAdvertiseAddress,
        ],
        [
            "bind-timeout",
            None,
            120.0,
            "Seconds BIND waits for the expected peer to connect before the "
            "client gets reply 0x06 (TTL expired).",
            _positiveFloat,
        ],
        [
            "idle-timeout",
            None,
            0.0,
            "Seconds a relayed connection may carry no byte either way before "
            "both sides are closed; 0 for no limit.",
            _nonNegativeFloat,
        ],
        [
            "half-closed-timeout",
            None,
            60.0,
            "Seconds a relayed connection whose one side has finished may carry "
            "no byte before both sides are closed; 0 for no limit.",
            _nonNegativeFloat,
        ],
        [
            "drain-timeout",
            None,
            30.0,
            "On SIGTERM, seconds live sessions may take to finish before they "
            "are closed (a second SIGTERM closes them at once).",
            _nonNegativeFloat,
        ],
        [
            "protocols",
            None,
            "socks5,socks4,http",
            "Comma-separated protocols to serve on every --port, told apart by "
            "their first byte: socks5, socks4 (SOCKS4 and 4a), http (CONNECT "
            "tunnels and plain-HTTP forwarding).",
            parseProtocols,
        ],
        [
            "udp-ports",
            None,
            None,
            "LOW-HIGH: take UDP relay ports from this range (for firewalls and "
            "containers). Default: any free port.",
            parsePortRange,
        ],
        [
            "udp-advertise",
            None,
            None,
            "The IP address to tell UDP clients to send to, instead of the "
            "address their control connection arrived on (for NAT).",
            parseIPAddress,
        ],
        [
            "udp-idle-timeout",
            None,
            120.0,
            "Seconds without a datagram either way after which a UDP "
            "association and its control connection end.",
            _positiveFloat,
        ],
        [
            "udp-max-per-client",
            None,
            16,
            "UDP associations one client IP address may hold at once.",
            _positiveInt,
        ],
        [
            "udp-max-total",
            None,
            1024,
            "UDP associations the server holds at once.",
            _positiveInt,
        ],
        [
            "metrics",
            None,
            None,
            "ENDPOINT: serve Prometheus metrics (/metrics), the live-sessions "
            "API (/sessions) and page (/) here, e.g. tcp:9180:interface="
            "127.0.0.1; a bare port number listens on 127.0.0.1 only.",
            parseControlEndpoint,
        ],
        [
            "metrics-max-users",
            None,
            100,
            "With --metrics-per-user: users with series of their own; the "
            "others are counted as user=\"_other\".",
            _positiveInt,
        ],
        [
            "control-token-file",
            None,
            None,
            "FILE holding a token that every request to the --metrics "
            "endpoint must carry (Authorization: Bearer TOKEN).",
            readTokenFile,
        ],
        [
            "access-log",
            None,
            None,
            "FILE: append one JSON object per line for every session that "
            "ends (reopened on SIGUSR1, for logrotate).",
            checkAccessLogPath,
        ],
        [
            "backlog",
            None,
            Limits.backlog,
            "Connections the kernel queues on each --port (tcp:, tcp6:, ssl:, "
            "unix:, haproxy:) before they are accepted, unless the endpoint "
            "sets backlog= itself; capped by net.core.somaxconn.",
            _positiveInt,
        ],
        [
            "workers",
            None,
            1,
            "Run N worker processes sharing the listening sockets (tcp:, "
            "tcp6: and unix: ports only), or auto for one per core; a worker "
            "that dies is restarted.",
            parseWorkers,
        ],
    ]

    optFlags = [
        [
            "no-zero-copy",
            None,
            "Relay TCP through Python buffers even where Linux splice(2) "
            "could move the bytes without copying them (the default for "
            "plain TCP relays without a bandwidth limit).",
        ],
        [
            "udp-open-filtering",
            None,
            "Let any host answer through a UDP association (endpoint-"
            "independent filtering, for peer-to-peer use). Default: only hosts "
            "the client has sent to.",
        ],
        [
            "metrics-per-user",
            None,
            "Also count sessions and bytes by user in --metrics (capped by "
            "--metrics-max-users).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["nameservers"] = []
        self["config"] = None
        self["configPath"] = None
        self["authDescriptions"] = []
        self["externals"] = []
        self["overrides"] = {}
        self._defaults = {name: default for name, _, default, *_ in self.optParameters}
        self._explicit: set[str] = set()

    def opt_port(self, description: str) -> None:
        """Where to listen: a port number (on 127.0.0.1 only) or a Twisted endpoint description such as tcp:1080:interface=0.0.0.0, tcp6:1080:interface=\\:\\:, unix:/run/socks.sock, ssl:..., systemd:... or haproxy:tcp:1080. May be given more than once. Default: 1080."""  # noqa: E501
        description = normalisePort(description)
        try:
            from twisted.internet.testing import MemoryReactor

            serverFromString(MemoryReactor(), description)
        except Exception as e:
            raise usage.UsageError(f"Invalid --port {description!r}: {e}")
        self["ports"].append(description)

    opt_p = opt_port

    def parseOptions(self, options: Any = None) -> None:
        # Note which timeouts the command line sets, so that they win over
        # the configuration file even when they equal the default.
        import sys

        args = sys.argv[1:] if options is None else list(options)
        #: The arguments as given, for the workers of --workers.
        self.argv = args
        self._explicit = {
            name
            for name in self._defaults
            if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)
        }
        super().parseOptions(options)

    def opt_auth(self, description: str) -> None:
        """Require credentials checked by this twisted.cred backend (memory:USER:PASSWORD..., file:PATH, unix, anonymous, or any installed ICheckerFactory plugin; see --help-auth). May be given more than once."""  # noqa: E501
        strcred.AuthOptionMixin.opt_auth(self, description)
        self["authDescriptions"].append(description)

    def opt_config(self, path: str) -> None:
        """Read access rules, limits, timeouts and outgoing addresses from this TOML file (see etc/socksrelay.toml); command-line options override its timeouts. Re-read on SIGHUP."""  # noqa: E501
        try:
            self["config"] = loadConfig(path)
        except ConfigError as e:
            raise usage.UsageError(str(e))
        self["configPath"] = path

    def opt_external(self, value: str) -> None:
        """An outgoing IP address for outbound connections and UDP sockets (like Dante's external); given more than once, sessions take them in turn."""  # noqa: E501
        try:
            self["externals"].append(parseIPAddress(value))
        except ValueError as e:
            raise usage.UsageError(f"Invalid --external {value!r}: {e}")

    def opt_nameserver(self, value: str) -> None:
        """Resolve destination names through this DNS server (IP[:PORT], default port 53) instead of the system resolver. May be given more than once."""  # noqa: E501
        try:
            self["nameservers"].append(parseNameServer(value))
        except ValueError as e:
            raise usage.UsageError(f"Invalid --nameserver {value!r}: {e}")

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = [DEFAULT_PORT]
        config = self.get("config")
        if config is not None:
            for name, seconds in config.timeouts.items():
                # The file sets a timeout unless the command line did.
                if name not in self._explicit:
                    self[name] = seconds
            if "backlog" in config.limits and "backlog" not in self._explicit:
                self["backlog"] = int(config.limits["backlog"])
        for name in self._explicit:
            if name.endswith("-timeout"):
                self["overrides"][name] = self[name]
        if isinstance(self["protocols"], str):
            # usage.Options does not coerce defaults.
            self["protocols"] = parseProtocols(self["protocols"])
        for checker in self.get("credCheckers", []):
            try:
                _bytesInMemoryChecker(checker)
            except ValueError as e:
                raise usage.UsageError(str(e))
        if self["workers"] > 1:
            for description in self["ports"]:
                if description.split(":", 1)[0].strip().lower() not in SHAREABLE_PORTS:
                    raise usage.UsageError(
                        f"--workers {self['workers']} can share only "
                        f"{', '.join(p + ':' for p in SHAREABLE_PORTS)} ports, "
                        f"not --port {description!r}"
                    )


def _bytesInMemoryChecker(checker: Any) -> None:
    """
    Make a checker from C{--auth} ready: Twisted's C{memory:} plugin stores
    names and passwords as text, but credentials from the wire are bytes (as
    L{FilePasswordDB} expects), so store them as UTF-8 bytes; and a
    C{file:} whose file cannot be read is an error now, not a warning
    followed by every login failing.

    @raise ValueError: if a password file cannot be read.
    """
    if isinstance(checker, FilePasswordDB):
        try:
            with open(checker.filename, "rb"):
                pass
        except OSError as e:
            raise ValueError(f"cannot read password file {checker.filename}: {e}")
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        checker.users = {
            (k.encode("utf-8") if isinstance(k, str) else k): (
                v.encode("utf-8") if isinstance(v, str) else v
            )
            for k, v in checker.users.items()
        }


class AnnouncingEndpoint(listening.AnnouncingEndpoint):
    """
    A SOCKS listener: says where it listens, and warns when an open proxy
    listens on a non-loopback address.
    """

    suffix = " (SOCKS5)"
    warning = (
        "WARNING: OPEN PROXY. Listening on {address} without "
        "authentication: anyone who can reach this address can use "
        "this proxy. Use --auth, or listen on 127.0.0.1 only."
    )


def makeFactory(config: Options, reactor: Any) -> SOCKS5ServerFactory:
    """
    Build the protocol factory that C{config} describes.
    """
    checkers = config.get("credCheckers", [])
    portal = Portal(SOCKSRealm(), checkers) if checkers else None
    authRequired = portal is not None and AuthMethod.NO_AUTHENTICATION not in (
        methodPreference(portal)
    )
    fileConfig = config.get("config") or Config()
    policy = fileConfig.policy(authRequired)
    nameResolver = None
    if config["nameservers"]:
        from socksrelay.resolve import NamesHostnameResolver

        nameResolver = NamesHostnameResolver.forServers(
            config["nameservers"], reactor, timeout=config["connect-timeout"]
        )
    return SOCKS5ServerFactory(
        portal=portal,
        reactor=reactor,
        nameResolver=nameResolver,
        handshakeTimeout=config["handshake-timeout"],
        connectTimeout=config["connect-timeout"],
        idleTimeout=config["idle-timeout"],
        halfClosedTimeout=config["half-closed-timeout"],
        zeroCopy=not config["no-zero-copy"],
        limits=Limits(**fileConfig.limits),
        policy=policy,
        externals=config["externals"] + fileConfig.external,
        protocols=config["protocols"],
        bindOptions=BindOptions(
            ports=config["bind-ports"],
            advertise=config["bind-advertise"],
            timeout=config["bind-timeout"],
        ),
        udpOptions=UDPOptions(
            ports=config["udp-ports"],
            advertise=config["udp-advertise"],
            idleTimeout=config["udp-idle-timeout"],
            openFiltering=bool(config["udp-open-filtering"]),
            maxPerClient=config["udp-max-per-client"],
            maxTotal=config["udp-max-total"],
        ),
    )


def makeService(config: Options, reactor: Any = None) -> service.MultiService:
    """
    Build the C{twistd socks5} service: one listening service per C{--port}.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    if config.get("workers", 1) > 1:
        from socksrelay.workers import supervisorService

        return supervisorService(config, reactor)
    factory = makeFactory(config, reactor)
    openProxy = AuthMethod.NO_AUTHENTICATION in factory.methods
    top = service.MultiService()
    top.setName("socksrelay")
    addSessionServices(top, config, factory, reactor)
    endpoints = []
    for description in config["ports"]:
        description = listening.withBacklog(description, config["backlog"])
        endpoint = AnnouncingEndpoint(serverFromString(reactor, description), openProxy)
        endpoint.onListening.append(factory.ownListeners.add)
        endpoints.append(endpoint)
        StreamServerEndpointService(endpoint, factory).setServiceParent(top)
    if config.get("metrics"):
        tokenFile = config.get("control-token-file")
        control = controlService(
            factory,
            config["metrics"],
            reactor,
            perUser=bool(config.get("metrics-per-user")),
            maxUsers=config.get("metrics-max-users", 100),
            token=None if tokenFile is None else tokenFile.token,
            listeningSockets=lambda: sum(e.listening for e in endpoints),
        )
        # Never relayed to, like the SOCKS ports.
        control.endpoint.onListening.append(factory.ownListeners.add)
        control.setServiceParent(top)
    return top


def addSessionServices(
    top: service.MultiService, config: Options, factory: SOCKS5ServerFactory, reactor: Any
) -> None:
    """
    Add what runs beside the listeners of a process that serves clients (one
    proxy, or a worker of C{--workers}): the drain on SIGTERM, the reload on
    SIGHUP and, with C{--access-log}, the access log.
    """
    DrainService(factory, reactor, config["drain-timeout"]).setServiceParent(top)
    ReloadService(
        factory,
        reactor,
        config["configPath"],
        config["authDescriptions"],
        config["overrides"],
        _bytesInMemoryChecker,
        config["externals"],
        {name: config._defaults[name] for name in TIMEOUT_OPTIONS},
    ).setServiceParent(top)
    if config.get("access-log"):
        accessLog = AccessLog(config["access-log"])
        factory.observers.append(accessLog)
        AccessLogService(accessLog, reactor).setServiceParent(top)
