# -*- test-case-name: tests.test_tap -*-
"""
Parsers for the values of C{twistd socks5}'s command-line options: each
returns the value in its normal form or raises L{ValueError} naming why.
"""

from __future__ import annotations

import ipaddress

from socksrelay.wire import normaliseAddress


def _positiveFloat(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _nonNegativeFloat(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be 0 or a positive number of seconds")
    return number


def _positiveInt(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def parseWorkers(value: str) -> int:
    """
    Parse C{--workers}: a positive number of processes, or C{auto} for one
    per core this process may run on.

    @raise ValueError: for anything else.
    """
    if value.strip().lower() == "auto":
        from socksrelay.workers import availableCores

        return availableCores()
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1, or auto")
    return number


#: The C{--port} endpoint types that C{--workers} can share between
#: processes.
SHAREABLE_PORTS = ("tcp", "tcp6", "unix")

PROTOCOLS = ("socks5", "socks4", "http")


def parseProtocols(value: str) -> tuple[str, ...]:
    """
    Parse a comma-separated list of protocol names.

    @raise ValueError: on an unknown name or an empty list.
    """
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise ValueError(
            f"expected some of {', '.join(PROTOCOLS)}, got {value!r}"
        )
    return names


def parsePortRange(value: str) -> tuple[int, int]:
    """
    Parse C{LOW-HIGH} (or a single port) into C{(low, high)}.

    @raise ValueError: unless 1 <= LOW <= HIGH <= 65535.
    """
    low, sep, high = value.strip().partition("-")
    first, last = int(low), int(high if sep else low)
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{value!r} is not a port range LOW-HIGH within 1-65535")
    return first, last


def parseIPAddress(value: str) -> str:
    """
    Check that C{value} is an IPv4 or IPv6 address and return it normalised.
    """
    return normaliseAddress(str(ipaddress.ip_address(value.strip())))


def normalisePort(description: str) -> str:
    """
    Turn a bare port number into a TCP endpoint on 127.0.0.1; leave any other
    endpoint description as it is.
    """
    description = description.strip()
    if description.isdigit():
        return f"tcp:{int(description)}:interface=127.0.0.1"
    return description


def parseNameServer(value: str) -> tuple[str, int]:
    """
    Parse C{HOST}, C{HOST:PORT}, C{[V6]:PORT} or a bare IPv6 address into
    C{(host, port)}; the port defaults to 53.
    """
    value = value.strip()
    host, port = value, 53
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            raise ValueError("missing ']'")
        if rest:
            if not (rest.startswith(":") and rest[1:].isdigit()):
                raise ValueError("expected [ADDRESS]:PORT")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, portText = value.split(":")
        port = int(portText)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port
