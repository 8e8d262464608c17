# -*- test-case-name: tests.test_rules -*-
"""
Access rules: who may go where.

A L{Policy} is an ordered list of L{Rule}s; the first rule that matches a
L{Query} decides, and a query that no rule matches is denied.  With no rules
configured, L{defaultRules} apply (see there).

A rule matches when every criterion it has matches:

  - C{clients}: the client's IP is in one of these networks;
  - C{users} / C{groups}: the authenticated user is one of these, or in one
    of these groups;
  - C{protocols}: C{socks5}, C{socks4} (SOCKS4 and 4a) or C{http};
  - C{commands}: C{connect}, C{bind} or C{udp};
  - C{hosts}: the destination I{as asked} is one of these names, exactly, or
    (C{.example.com}) that domain or any name under it.  Names are compared
    in their canonical form (L{socksrelay.names.canonicalName}: UTS #46
    mapping to A-labels, lower case, no trailing dot), both the rule's and
    the destination's, so that C{ＤＥＮＩＥＤ.test}, C{denied.test} with a
    soft hyphen (U+00AD) in it and C{denied.test} are one name, and
    C{bücher.test} is C{xn--bcher-kva.test};
  - C{networks}: the destination's addresses are in these networks.  A name
    is judged on every address it resolves to: an C{allow} rule matches only
    when all of them are inside, a C{deny} rule when any of them is, so that
    no name can smuggle a client into a denied network;
  - C{ports}: the destination port is one of these ports or ranges.

This module does no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

from socksrelay.names import InvalidName
from socksrelay.wire import canonicalHost, normaliseAddress

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

PROTOCOL_NAMES = frozenset({"socks5", "socks4", "http"})
COMMAND_NAMES = frozenset({"connect", "bind", "udp"})

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
#: Addresses that reach the proxy host itself when connected to.
THIS_HOST = (
    *LOOPBACK,
    ipaddress.ip_network("0.0.0.0/32"),
    ipaddress.ip_network("::/128"),
)
LINK_LOCAL = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fc00::/7"),
    *LINK_LOCAL,
)


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Cached: every rule of a decision looks at the same client address.
    try:
        return ipaddress.ip_address(normaliseAddress(text))
    except ValueError:
        return None


def canonicalPattern(pattern: str) -> str:
    """
    The canonical form of an entry of a rule's C{hosts}: a name, an IP
    address, or C{.domain} (that domain and every name under it).

    @raise InvalidName: if the name in it has no canonical form.
    """
    if pattern.startswith(".") and len(pattern) > 1:
        return "." + canonicalHost(pattern[1:])
    return canonicalHost(pattern)


@functools.lru_cache(maxsize=4096)
def _comparable(host: str) -> str:
    # Destinations arrive canonical from the codecs already; this keeps a
    # query built elsewhere (embedding, tests) judged the same way.
    try:
        return canonicalHost(host)
    except InvalidName:
        return host.rstrip(".").lower()


def _inAny(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Iterable[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


@dataclass(frozen=True)
class Query:
    """
    What a decision is about.

    @ivar client: the client's IP address.
    @ivar protocol: C{socks5}, C{socks4} or C{http}.
    @ivar command: C{connect}, C{bind} or C{udp}.
    @ivar host: the destination as asked: an IP address or a name.
    @ivar port: the destination port.
    @ivar addresses: the IP addresses the destination resolved to (for an IP
        destination, that address); empty when not known.
    @ivar user: the authenticated user name, if any.
    @ivar groups: the user's groups.
    """

    client: str
    protocol: str
    command: str
    host: str
    port: int
    addresses: tuple[str, ...] = ()
    user: str | None = None
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """
    The outcome: allowed or not, and by which rule (a label for logs).
    """

    allowed: bool
    rule: str


@dataclass(frozen=True)
class Rule:
    """
    One rule; C{None} for a criterion means "any".
    """

    action: str
    name: str
    clients: tuple[Network, ...] | None = None
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    protocols: frozenset[str] | None = None
    commands: frozenset[str] | None = None
    hosts: tuple[str, ...] | None = None
    networks: tuple[Network, ...] | None = None
    ports: tuple[tuple[int, int], ...] | None = None
    #: Only match clients that are I{not} in C{clients} (for defaults).
    clientsExcept: tuple[Network, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.hosts is not None:
            object.__setattr__(
                self, "hosts", tuple(canonicalPattern(p) for p in self.hosts)
            )

    def matches(self, query: Query) -> bool:
        """
        Whether every criterion of this rule holds for C{query}.
        """
        client = _address(query.client)
        if self.clients is not None and (client is None or not _inAny(client, self.clients)):
            return False
        if self.clientsExcept is not None and client is not None and _inAny(
            client, self.clientsExcept
        ):
            return False
        if self.users is not None or self.groups is not None:
            byUser = self.users is not None and query.user in self.users
            byGroup = self.groups is not None and bool(self.groups & query.groups)
            if not (byUser or byGroup):
                return False
        if self.protocols is not None and query.protocol not in self.protocols:
            return False
        if self.commands is not None and query.command not in self.commands:
            return False
        if self.ports is not None and not any(
            low <= query.port <= high for low, high in self.ports
        ):
            return False
        if self.hosts is not None and not self._hostMatches(query.host):
            return False
        if self.networks is not None and not self._networksMatch(query):
            return False
        return True

    @property
    def hasDestinationCriteria(self) -> bool:
        """
        Whether this rule looks at the destination (hosts, networks, ports).
        """
        return not (self.hosts is None and self.networks is None and self.ports is None)

    def matchesApartFromDestination(self, query: Query) -> bool:
        """
        Whether the criteria about the client, user, protocol and command
        hold (the destination criteria are not looked at).
        """
        return Rule(
            self.action,
            self.name,
            clients=self.clients,
            users=self.users,
            groups=self.groups,
            protocols=self.protocols,
            commands=self.commands,
            clientsExcept=self.clientsExcept,
        ).matches(query)

    def _hostMatches(self, host: str) -> bool:
        name = _comparable(host)
        for pattern in self.hosts or ():
            if pattern.startswith("."):
                if name == pattern[1:] or name.endswith(pattern):
                    return True
            elif name == pattern:
                return True
        return False

    def _networksMatch(self, query: Query) -> bool:
        addresses = [a for a in (_address(x) for x in query.addresses) if a is not None]
        if not addresses:
            direct = _address(query.host)
            if direct is None:
                return False
            addresses = [direct]
        inside = [_inAny(a, self.networks or ()) for a in addresses]
        return any(inside) if self.action == "deny" else all(inside)


def defaultRules(authRequired: bool) -> tuple[Rule, ...]:
    """
    The rules that apply when none are configured:

      1. destinations in link-local networks (169.254.0.0/16, fe80::/10,
         where cloud metadata services live) are denied;
      2. the proxy host's loopback (127.0.0.0/8, ::1) is reachable only by
         clients that are on loopback themselves;
      3. without authentication, only clients from loopback and private
         networks are served;
      4. everything else is allowed.
    """
    rules = [
        Rule("deny", "default: link-local destinations", networks=LINK_LOCAL),
        Rule(
            "deny",
            "default: loopback destinations from other hosts",
            networks=THIS_HOST,
            clientsExcept=LOOPBACK,
        ),
    ]
    if not authRequired:
        rules.append(
            Rule(
                "deny",
                "default: unauthenticated clients from public networks",
                clientsExcept=LOOPBACK + PRIVATE,
            )
        )
    rules.append(Rule("allow", "default: allow"))
    return tuple(rules)


class Policy:
    """
    An ordered list of rules; the first that matches decides, and nothing
    matching means deny.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        #: Whether any rule looks at destination addresses (so names must be
        #: resolved before deciding).
        self.needsAddresses = any(r.networks is not None for r in self.rules)

    @classmethod
    def defaults(cls, authRequired: bool) -> "Policy":
        """
        The policy of a server with no rules configured.
        """
        return cls(defaultRules(authRequired))

    def decideCommand(self, query: Query) -> Decision:
        """
        Decide a BIND or UDP ASSOCIATE request before any destination is
        known: denied when no destination could be allowed, that is when
        the first rule without destination criteria that applies is a
        C{deny} (or none applies) and no C{allow} rule with destination
        criteria comes before it.  A C{deny} rule with destination criteria
        refuses only some destinations, so the rules after it are looked at
        too.  Otherwise the request is let through, and every peer or
        datagram is decided later with L{decide}.
        """
        perDestination: Rule | None = None
        for rule in self.rules:
            if not rule.matchesApartFromDestination(query):
                continue
            if rule.hasDestinationCriteria:
                if rule.action == "allow" and perDestination is None:
                    perDestination = rule
                continue
            if rule.action == "allow" or perDestination is None:
                return Decision(rule.action == "allow", rule.name)
            break
        if perDestination is not None:
            return Decision(True, f"{perDestination.name} (decided per destination)")
        return Decision(False, "no rule matched")

    def decide(self, query: Query) -> Decision:
        """
        Decide C{query}.
        """
        for rule in self.rules:
            if rule.matches(query):
                return Decision(rule.action == "allow", rule.name)
        return Decision(False, "no rule matched")
