# -*- test-case-name: tests.test_config -*-
"""
The configuration file (C{--config FILE}): one TOML file with the access
rules and the timeouts.  A file with an error is refused with a message
naming the line and the problem.

Example (see C{etc/socksrelay.toml})::

    [timeouts]
    handshake = 30      # seconds to finish the handshake
    connect = 30        # seconds for the outbound connection
    udp-idle = 120      # seconds a UDP association may sit idle
    bind = 120          # seconds BIND waits for its peer

    [[rule]]
    name = "office to the web"
    action = "allow"
    clients = ["10.0.0.0/8"]
    commands = ["connect"]
    ports = [80, 443, "8000-8100"]

    [[rule]]
    action = "deny"
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from socksrelay.names import InvalidName
from socksrelay.rules import (
    COMMAND_NAMES,
    PROTOCOL_NAMES,
    Policy,
    Rule,
    canonicalPattern,
)


class ConfigError(Exception):
    """
    The configuration file is not acceptable; the message says where and why.
    """


TIMEOUT_KEYS = {
    "handshake": "handshake-timeout",
    "connect": "connect-timeout",
    "idle": "idle-timeout",
    "half-closed": "half-closed-timeout",
    "udp-idle": "udp-idle-timeout",
    "bind": "bind-timeout",
}
#: Timeouts for which 0 means "no limit".
OPTIONAL_TIMEOUTS = {"idle", "half-closed"}

LIMIT_KEYS = {
    "sessions": "sessions",
    "sessions-per-client": "sessionsPerClient",
    "sessions-per-user": "sessionsPerUser",
    "handshakes": "handshakes",
    "handshakes-per-client": "handshakesPerClient",
    "rate": "rate",
    "burst": "burst",
    "bandwidth-burst": "bandwidthBurst",
    "lookups": "lookups",
    "lookups-per-client": "lookupsPerClient",
    "backlog": "backlog",
}
#: Limits that may be fractions.
FRACTIONAL_LIMITS = {"rate", "bandwidth-burst"}

RULE_KEYS = {
    "name",
    "action",
    "clients",
    "users",
    "groups",
    "protocols",
    "commands",
    "hosts",
    "networks",
    "ports",
}


@dataclass
class Config:
    """
    What a configuration file says.

    @ivar rules: the rules, in order; empty means the defaults apply.
    @ivar timeouts: option name (as on the command line) to seconds.
    @ivar limits: L{socksrelay.limits.Limits} attribute name to value.
    @ivar recheck: on reload, close live sessions the new rules deny.
    @ivar external: outgoing IP addresses, used in turn per session.
    @ivar path: where it was read from.
    """

    rules: list[Rule] = field(default_factory=list)
    timeouts: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    recheck: bool = False
    external: list[str] = field(default_factory=list)
    path: str | None = None

    def policy(self, authRequired: bool) -> Policy:
        """
        The policy: the configured rules, or the defaults when there are
        none.
        """
        if self.rules:
            return Policy(self.rules)
        return Policy.defaults(authRequired)


def _ruleLines(text: str) -> list[int]:
    return [
        number
        for number, line in enumerate(text.splitlines(), 1)
        if re.match(r"^\s*\[\[\s*rule\s*\]\]", line)
    ]


def _lineOf(text: str, pattern: str, default: int) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(pattern, line):
            return number
    return default


def _topLevelLine(text: str, key: str) -> int:
    """
    The line where top-level C{key} is set, as C{key = ...} or as a table
    header C{[key]} / C{[[key]]}.
    """
    return _lineOf(text, rf"^\s*(\[+\s*)?{re.escape(key)}\s*(=|\]|\.)", 1)


def _lineInTable(text: str, table: str, key: str) -> int:
    """
    The line of C{key = ...} inside the C{[table]} section.
    """
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[+\s*([^\]]+?)\s*\]", line)
        if header:
            inside = header.group(1) == table
            continue
        if inside and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return _topLevelLine(text, table)


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return value


def _networks(value: Any, what: str) -> tuple[Any, ...]:
    networks = []
    for item in _strings(value, what):
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not a network (CIDR)") from None
    return tuple(networks)


def _ports(value: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(value, (int, str)):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("ports must be a list of ports or LOW-HIGH ranges")
    ranges = []
    for item in value:
        if isinstance(item, bool):
            raise ValueError(f"ports: {item!r} is not a port")
        if isinstance(item, int):
            low = high = item
        elif isinstance(item, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", item):
            first, _, last = item.partition("-")
            low, high = int(first), int(last or first)
        else:
            raise ValueError(f"ports: {item!r} is not a port or LOW-HIGH range")
        if not 0 < low <= high < 65536:
            raise ValueError(f"ports: {item!r} is out of range 1-65535")
        ranges.append((low, high))
    return tuple(ranges)


def _choices(value: Any, what: str, allowed: frozenset[str]) -> frozenset[str]:
    names = {v.strip().lower() for v in _strings(value, what)}
    unknown = names - allowed
    if unknown:
        raise ValueError(
            f"{what}: unknown {', '.join(sorted(unknown))} "
            f"(expected some of {', '.join(sorted(allowed))})"
        )
    return frozenset(names)


def _hosts(value: Any) -> tuple[str, ...]:
    hosts = []
    for item in _strings(value, "hosts"):
        try:
            name = canonicalPattern(item.strip())
        except InvalidName as e:
            hint = ""
            if item.strip().startswith("*."):
                hint = f"; write {item.strip()[1:]!r} for a domain and every name under it"
            raise ValueError(
                f"hosts: {item!r} is not a host name ({e.why}){hint}"
            ) from None
        hosts.append(name)
    return tuple(hosts)


def _isNumber(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _table(
    data: dict[str, Any], text: str, path: str, name: str, keys: dict[str, str]
) -> list[tuple[str, Any, int]]:
    """
    The C{(key, value, line)} entries of the C{[name]} table, each key one
    of C{keys}.

    @raise ConfigError: naming the line, if it is not a table or has an
        unknown key.
    """
    table = data.get(name, {})
    if not isinstance(table, dict):
        line = _topLevelLine(text, name)
        raise ConfigError(f"{path}, line {line}: {name} must be a [{name}] table")
    entries = []
    for key, value in table.items():
        line = _lineInTable(text, name, key)
        if key not in keys:
            raise ConfigError(
                f"{path}, line {line}: unknown {name.rstrip('s')} {key!r} "
                f"(expected one of {', '.join(sorted(keys))})"
            )
        entries.append((key, value, line))
    return entries


def parseRule(table: Any, index: int, line: int) -> Rule:
    """
    Build the L{Rule} of the C{index}th C{[[rule]]} table.

    @raise ValueError: with the problem.
    """
    if not isinstance(table, dict):
        raise ValueError("a rule must be a table")
    unknown = set(table) - RULE_KEYS
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} in a rule")
    action = table.get("action")
    if action not in ("allow", "deny"):
        raise ValueError('action must be "allow" or "deny"')
    name = table.get("name", f"rule {index} (line {line})")
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    kwargs: dict[str, Any] = {}
    if "clients" in table:
        kwargs["clients"] = _networks(table["clients"], "clients")
    if "networks" in table:
        kwargs["networks"] = _networks(table["networks"], "networks")
    if "users" in table:
        kwargs["users"] = frozenset(_strings(table["users"], "users"))
    if "groups" in table:
        kwargs["groups"] = frozenset(_strings(table["groups"], "groups"))
    if "protocols" in table:
        kwargs["protocols"] = _choices(table["protocols"], "protocols", PROTOCOL_NAMES)
    if "commands" in table:
        kwargs["commands"] = _choices(table["commands"], "commands", COMMAND_NAMES)
    if "hosts" in table:
        kwargs["hosts"] = _hosts(table["hosts"])
    if "ports" in table:
        kwargs["ports"] = _ports(table["ports"])
    return Rule(action, name, **kwargs)


def parseConfig(text: str, path: str = "<config>") -> Config:
    """
    Parse the text of a configuration file.

    @raise ConfigError: naming the line and the problem.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        # tomllib names no line for what it finds only at the end (an
        # unclosed array or string): the last line is where to look.
        lastLine = max(len(text.splitlines()), 1)
        message = message.replace(
            "(at end of document)", f"(at end of document, line {lastLine})"
        )
        raise ConfigError(f"{path}: {message}") from None
    config = Config(path=path)
    unknown = set(data) - {"rule", "timeouts", "limits", "recheck", "external"}
    for key in sorted(unknown):
        line = _topLevelLine(text, key)
        hint = " (rules are written as [[rule]] tables)" if key == "rules" else ""
        raise ConfigError(f"{path}, line {line}: unknown setting {key!r}{hint}")
    recheck = data.get("recheck", False)
    if not isinstance(recheck, bool):
        line = _topLevelLine(text, "recheck")
        raise ConfigError(f"{path}, line {line}: recheck must be true or false")
    config.recheck = recheck
    external = data.get("external", [])
    try:
        for item in _strings(external, "external"):
            config.external.append(str(ipaddress.ip_address(item.strip())))
    except ValueError as e:
        line = _topLevelLine(text, "external")
        raise ConfigError(f"{path}, line {line}: external: {e}") from None
    for key, value, line in _table(data, text, path, "timeouts", TIMEOUT_KEYS):
        optional = key in OPTIONAL_TIMEOUTS
        if not _isNumber(value) or value < 0 or (value == 0 and not optional):
            raise ConfigError(
                f"{path}, line {line}: timeout {key!r} must be a "
                + ("non-negative" if optional else "positive")
                + " number of seconds"
            )
        config.timeouts[TIMEOUT_KEYS[key]] = float(value)
    for key, value, line in _table(data, text, path, "limits", LIMIT_KEYS):
        if not _isNumber(value) or value < 0:
            raise ConfigError(
                f"{path}, line {line}: limit {key!r} must be a number, 0 for no limit"
            )
        if key not in FRACTIONAL_LIMITS and not float(value).is_integer():
            raise ConfigError(f"{path}, line {line}: limit {key!r} must be a whole number")
        if key == "backlog" and value < 1:
            raise ConfigError(f"{path}, line {line}: limit {key!r} must be at least 1")
        config.limits[LIMIT_KEYS[key]] = value
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        line = _topLevelLine(text, "rule")
        raise ConfigError(f"{path}, line {line}: rules are written as [[rule]] tables")
    lines = _ruleLines(text)
    for index, table in enumerate(rules, 1):
        line = lines[index - 1] if index - 1 < len(lines) else 1
        try:
            config.rules.append(parseRule(table, index, line))
        except ValueError as e:
            raise ConfigError(f"{path}, line {line} (rule {index}): {e}") from None
    return config


def loadConfig(path: str) -> Config:
    """
    Read and parse a configuration file.

    @raise ConfigError: if it cannot be read or is not acceptable.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return parseConfig(text, path)
