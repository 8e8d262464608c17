# -*- test-case-name: tests.test_config -*-
"""
Tests for L{socksrelay.config} (C{parseConfig}, C{loadConfig},
L{ConfigError}, C{Config.policy}), for the example file
C{etc/socksrelay.toml}, and for C{--config} in L{socksrelay.tap}: rules and
timeouts from the file, command-line options over the file, and the policy
C{makeFactory} gives the server.

Every error must name the line and the problem.  No network: the files are
written to temporary directories and policies are only asked questions.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
import textwrap

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from socksrelay import tap
from socksrelay.config import Config, ConfigError, loadConfig, parseConfig
from socksrelay.rules import Decision, Policy, Query, Rule, defaultRules
from tests.e2e import REPO_ROOT

EXAMPLE = os.path.join(REPO_ROOT, "etc", "socksrelay.toml")

FULL = """\
# A complete configuration.
[timeouts]
handshake = 10
connect = 20.5
udp-idle = 300
bind = 45

[[rule]]
name = "no metadata"
action = "deny"
networks = ["169.254.0.0/16", "fe80::/10"]

[[rule]]
action = "allow"
clients = ["10.0.0.0/8", "::ffff:0:0/96"]
users = ["alice"]
groups = ["staff", "ops"]
protocols = ["SOCKS5", "http"]
commands = ["connect", "UDP"]
hosts = ["Example.COM.", ".corp.example"]
ports = [80, 443, "8000-8100"]

  [[ rule ]]
action = "deny"
"""


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def query(**kw: object) -> Query:
    fields: dict = {
        "client": "192.168.1.10",
        "protocol": "socks5",
        "command": "connect",
        "host": "203.0.113.10",
        "port": 443,
        "addresses": ("203.0.113.10",),
    }
    fields.update(kw)
    return Query(**fields)  # type: ignore[arg-type]


class ParseTests(SynchronousTestCase):
    """
    A valid file becomes a L{Config}: timeouts under their option names,
    rules in order with their criteria.
    """

    def test_fullFile(self) -> None:
        """
        Every timeout is mapped to its command-line option name, in seconds.
        """
        config = parseConfig(FULL, "full.toml")
        self.assertEqual(
            config.timeouts,
            {
                "handshake-timeout": 10.0,
                "connect-timeout": 20.5,
                "udp-idle-timeout": 300.0,
                "bind-timeout": 45.0,
            },
        )
        self.assertEqual(config.path, "full.toml")

    def test_rulesInOrder(self) -> None:
        """
        The rules come in file order, with their actions; a rule without a
        name is called "rule N (line L)" after its position and the line of
        its C{[[rule]]}.
        """
        config = parseConfig(FULL)
        self.assertEqual(
            [(r.action, r.name) for r in config.rules],
            [
                ("deny", "no metadata"),
                ("allow", "rule 2 (line 13)"),
                ("deny", "rule 3 (line 23)"),
            ],
        )

    def test_criteria(self) -> None:
        """
        Criteria are parsed: networks as networks, names lowered, host names
        without their trailing dot, ports as (low, high) ranges.
        """
        rule = parseConfig(FULL).rules[1]
        self.assertEqual(
            rule.clients,
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::ffff:0:0/96")),
        )
        self.assertEqual(rule.users, frozenset({"alice"}))
        self.assertEqual(rule.groups, frozenset({"staff", "ops"}))
        self.assertEqual(rule.protocols, frozenset({"socks5", "http"}))
        self.assertEqual(rule.commands, frozenset({"connect", "udp"}))
        self.assertEqual(rule.hosts, ("example.com", ".corp.example"))
        self.assertEqual(rule.ports, ((80, 80), (443, 443), (8000, 8100)))
        self.assertIsNone(rule.networks)
        self.assertEqual(
            parseConfig(FULL).rules[0].networks,
            (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")),
        )

    def test_unsetCriteriaMatchAnything(self) -> None:
        """
        A rule with only an action has no criteria: it matches every query.
        """
        rule = parseConfig(FULL).rules[2]
        self.assertEqual(rule, Rule("deny", "rule 3 (line 23)"))
        self.assertTrue(rule.matches(query()))

    def test_singleValues(self) -> None:
        """
        A single string or port stands for a list of one.
        """
        config = parseConfig(
            dedent(
                """
                [[rule]]
                action = "allow"
                clients = "10.0.0.0/8"
                hosts = "example.com"
                ports = 443
                commands = "connect"
                """
            )
        )
        [rule] = config.rules
        self.assertEqual(rule.clients, (ipaddress.ip_network("10.0.0.0/8"),))
        self.assertEqual(rule.hosts, ("example.com",))
        self.assertEqual(rule.ports, ((443, 443),))
        self.assertEqual(rule.commands, frozenset({"connect"}))

    def test_parsedRulesDecide(self) -> None:
        """
        The parsed rules decide as written: a host pattern given in capitals
        with a trailing dot still matches its name.
        """
        policy = parseConfig(FULL).policy(authRequired=False)
        allowed = query(
            client="10.1.1.1",
            user="alice",
            host="www.corp.example",
            addresses=("192.0.2.8",),
            port=8080,
        )
        self.assertEqual(policy.decide(allowed), Decision(True, "rule 2 (line 13)"))
        self.assertTrue(
            policy.decide(
                query(client="10.1.1.1", user="alice", host="EXAMPLE.com", addresses=("192.0.2.8",))
            ).allowed
        )
        self.assertEqual(
            policy.decide(query(host="169.254.169.254", addresses=("169.254.169.254",))),
            Decision(False, "no metadata"),
        )
        self.assertEqual(policy.decide(query()), Decision(False, "rule 3 (line 23)"))

    def test_emptyFile(self) -> None:
        """
        An empty file has no rules and no timeouts.
        """
        config = parseConfig("")
        self.assertEqual((config.rules, config.timeouts), ([], {}))


class PolicyOfConfigTests(SynchronousTestCase):
    """
    C{Config.policy}: the file's rules, or the defaults when it has none.
    """

    def test_rules(self) -> None:
        """
        With rules, the policy is exactly those rules, whatever
        C{authRequired} says.
        """
        config = parseConfig(FULL)
        for auth in (False, True):
            policy = config.policy(auth)
            self.assertIsInstance(policy, Policy)
            self.assertEqual(policy.rules, tuple(config.rules))

    def test_defaults(self) -> None:
        """
        Without rules, the policy is the defaults for C{authRequired}.
        """
        config = parseConfig("[timeouts]\nconnect = 5\n")
        self.assertEqual(config.policy(False).rules, defaultRules(False))
        self.assertEqual(config.policy(True).rules, defaultRules(True))
        self.assertEqual(Config().policy(True).rules, defaultRules(True))


class ErrorTests(SynchronousTestCase):
    """
    A file with an error raises L{ConfigError} whose message names the file,
    the line and the problem.
    """

    def error(self, text: str) -> str:
        """
        The message of the L{ConfigError} that parsing C{text} raises.
        """
        e = self.assertRaises(ConfigError, parseConfig, text, "policy.toml")
        message = str(e)
        self.assertIn("policy.toml", message)
        return message

    def assertLine(self, message: str, *lines: int) -> None:
        """
        C{message} names one of C{lines} (a rule's error may be placed on its
        C{[[rule]]} line or on the offending key's line) and no other.
        """
        named = {int(n) for n in re.findall(r"\bline (\d+)\b", message)}
        self.assertTrue(named, f"no line in {message!r}")
        self.assertTrue(named <= set(lines), f"{message!r} should name line {lines}")

    def test_tomlSyntax(self) -> None:
        """
        A TOML syntax error names its line.
        """
        message = self.error("[timeouts]\nhandshake = 30\nconnect = = 5\n")
        self.assertLine(message, 3)

    def test_tomlErrorAtEnd(self) -> None:
        """
        An error tomllib only finds at the end of the file (an array never
        closed) names the last line, where it was found.
        """
        message = self.error('[[rule]]\naction = "allow"\nports = [80,\n443,\n')
        self.assertIn("end of document", message)
        self.assertLine(message, 4)

    def test_unknownTopLevelKey(self) -> None:
        """
        An unknown top-level key or table is refused, naming it and its line.
        """
        message = self.error("[timeouts]\nconnect = 5\n\ncolour = 1\n")
        self.assertIn("'colour'", message)
        self.assertLine(message, 4)
        message = self.error("[[rule]]\naction = \"deny\"\n\n[logging]\nlevel = 1\n")
        self.assertIn("'logging'", message)
        self.assertLine(message, 4)

    def test_misspeltRuleTable(self) -> None:
        """
        C{[[rules]]} (for C{[[rule]]}) is refused naming the line it is on.
        """
        message = self.error('[[rule]]\naction = "allow"\n\n[[rules]]\naction = "deny"\n')
        self.assertIn("'rules'", message)
        self.assertLine(message, 4)

    def test_ruleNotAnArrayOfTables(self) -> None:
        """
        C{[rule]} (one table, not C{[[rule]]}) is refused naming its line.
        """
        message = self.error('[timeouts]\nconnect = 5\n\n[rule]\naction = "deny"\n')
        self.assertIn("[[rule]]", message)
        self.assertLine(message, 4)

    def test_timeoutsNotATable(self) -> None:
        """
        C{timeouts = 5} is refused naming its line.
        """
        message = self.error("# timeouts\n\ntimeouts = 5\n")
        self.assertIn("timeouts", message)
        self.assertLine(message, 3)

    def test_unknownTimeout(self) -> None:
        """
        An unknown key in C{[timeouts]} is refused, naming it and its line.
        """
        message = self.error("[timeouts]\nhandshake = 5\nhandshak = 5\n")
        self.assertIn("'handshak'", message)
        self.assertLine(message, 3)

    def test_unknownTimeoutAfterRules(self) -> None:
        """
        The line named is the one in C{[timeouts]}, even when a rule earlier
        in the file has a key of the same name.
        """
        message = self.error(
            '[[rule]]\nname = "x"\naction = "allow"\n\n[timeouts]\nconnect = 5\nname = 5\n'
        )
        self.assertIn("'name'", message)
        self.assertLine(message, 7)

    def test_badTimeoutValues(self) -> None:
        """
        A timeout that is zero, negative, a boolean, a string or not a
        number is refused, naming the timeout and its line.
        """
        for value in ("0", "-1", "-0.5", "true", '"30"', "[30]"):
            message = self.error(f"[timeouts]\nhandshake = 30\nconnect = {value}\n")
            self.assertIn("'connect'", message, value)
            self.assertIn("positive number", message, value)
            self.assertLine(message, 3)

    def test_nanTimeout(self) -> None:
        """
        A timeout of C{nan} (which TOML allows) is not a positive number of
        seconds and is refused, naming the timeout and its line.
        """
        message = self.error("[timeouts]\nhandshake = 30\nconnect = nan\n")
        self.assertIn("'connect'", message)
        self.assertLine(message, 3)

    def test_badAction(self) -> None:
        """
        A rule whose action is missing or neither "allow" nor "deny" is
        refused, naming its line.
        """
        for action in ('action = "permit"', 'action = "Allow"', "action = true", ""):
            message = self.error(f'[[rule]]\naction = "deny"\n\n[[rule]]\nname = "x"\n{action}\n')
            self.assertIn("action", message)
            self.assertIn("rule 2", message)
            self.assertLine(message, 4, 6)

    def test_unknownRuleKey(self) -> None:
        """
        An unknown key in a rule is refused, naming the key and the line.
        """
        message = self.error('# rules\n[[rule]]\naction = "deny"\nport = 22\n')
        self.assertIn("'port'", message)
        self.assertLine(message, 2, 4)

    def test_badCIDR(self) -> None:
        """
        A client or destination network that is not a CIDR network is
        refused, naming it and the line.
        """
        for key in ("clients", "networks"):
            for bad in ("10.0.0.0/33", "10.0.0", "example.com", "fe80::/129"):
                message = self.error(f'\n[[rule]]\naction = "allow"\n{key} = ["10.0.0.0/8", "{bad}"]\n')
                self.assertIn(key, message)
                self.assertIn(repr(bad), message)
                self.assertLine(message, 2, 4)

    def test_networksNotStrings(self) -> None:
        """
        Networks given as numbers are refused, naming the line.
        """
        message = self.error('[[rule]]\naction = "allow"\nclients = [10]\n')
        self.assertIn("clients", message)
        self.assertLine(message, 1, 3)

    def test_badPorts(self) -> None:
        """
        Port 0, a port over 65535, a malformed or reversed range and a
        boolean are refused, naming the port and the line.
        """
        for bad, shown in [
            ("0", "0"),
            ("70000", "70000"),
            ("65536", "65536"),
            ('"80-x"', "'80-x'"),
            ('"90-80"', "'90-80'"),
            ('"0-10"', "'0-10'"),
            ("true", "True"),
            ("8.5", "8.5"),
        ]:
            message = self.error(f'[[rule]]\naction = "allow"\nports = [443, {bad}]\n')
            self.assertIn("ports", message, bad)
            self.assertIn(shown, message, bad)
            self.assertLine(message, 1, 3)

    def test_unknownProtocol(self) -> None:
        """
        An unknown protocol is refused, naming it and the line.
        """
        message = self.error('[[rule]]\naction = "allow"\nprotocols = ["socks5", "gopher"]\n')
        self.assertIn("gopher", message)
        self.assertIn("protocols", message)
        self.assertLine(message, 1, 3)

    def test_unknownCommand(self) -> None:
        """
        An unknown command is refused, naming it and the line.
        """
        message = self.error('[[rule]]\naction = "allow"\ncommands = ["connect", "listen"]\n')
        self.assertIn("listen", message)
        self.assertIn("commands", message)
        self.assertLine(message, 1, 3)

    def test_emptyHost(self) -> None:
        """
        An empty host name (or a lone dot) is refused, naming the line.
        """
        for bad in ('""', '"."', '"  "'):
            message = self.error(f'[[rule]]\naction = "deny"\nhosts = ["example.com", {bad}]\n')
            self.assertIn("hosts", message, bad)
            self.assertLine(message, 1, 3)

    def test_hostWithoutCanonicalForm(self) -> None:
        """
        A host that has no canonical form (an empty label, a wildcard) is
        refused, naming the line and why; a wildcard gets the C{.domain}
        spelling as a hint.
        """
        message = self.error('[[rule]]\naction = "deny"\nhosts = ["a..b.test"]\n')
        self.assertIn("empty label", message)
        self.assertLine(message, 1, 3)
        message = self.error('[[rule]]\naction = "deny"\nhosts = ["*.example.com"]\n')
        self.assertIn("'.example.com'", message)
        self.assertLine(message, 1, 3)

    def test_badName(self) -> None:
        """
        A rule name that is not a string is refused, naming the line.
        """
        message = self.error('[[rule]]\naction = "deny"\nname = 3\n')
        self.assertIn("name", message)
        self.assertLine(message, 1, 3)

    def test_errorInLaterRule(self) -> None:
        """
        An error in the third rule names the third rule and its line, not the
        first rule's.
        """
        text = dedent(
            """
            [[rule]]
            action = "allow"
            ports = [80]

            [[rule]]
            action = "allow"
            ports = [443]

            [[rule]]
            action = "deny"
            ports = [70000]
            """
        )
        message = self.error(text)
        self.assertIn("rule 3", message)
        self.assertLine(message, 9, 11)


class LoadConfigTests(SynchronousTestCase):
    """
    L{loadConfig} reads a file and parses it.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def test_load(self) -> None:
        """
        A file is read and parsed, and its path remembered.
        """
        path = os.path.join(self.directory, "socksrelay.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(FULL)
        config = loadConfig(path)
        self.assertEqual(config.path, path)
        self.assertEqual(config.timeouts["bind-timeout"], 45.0)
        self.assertEqual(len(config.rules), 3)

    def test_missingFile(self) -> None:
        """
        A file that does not exist raises L{ConfigError} naming it.
        """
        path = os.path.join(self.directory, "missing.toml")
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertIn(path, str(e))

    def test_errorNamesPath(self) -> None:
        """
        An error in a loaded file names the file's path and the line.
        """
        path = os.path.join(self.directory, "bad.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write('[[rule]]\naction = "deny"\n\n[[rule]]\naction = "maybe"\n')
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertIn(path, str(e))
        self.assertRegex(str(e), r"\bline [45]\b")

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 raises L{ConfigError}, not a decoding error.
        """
        path = os.path.join(self.directory, "latin1.toml")
        with open(path, "wb") as f:
            f.write(b'# caf\xe9\n[[rule]]\naction = "deny"\n')
        e = self.assertRaises(ConfigError, loadConfig, path)
        self.assertIn(path, str(e))


class ExampleFileTests(SynchronousTestCase):
    """
    C{etc/socksrelay.toml} is valid and its policy does what its comments
    say.
    """

    def setUp(self) -> None:
        self.config = loadConfig(EXAMPLE)
        self.policy = self.config.policy(authRequired=False)

    def test_timeouts(self) -> None:
        """
        The example sets the handshake, connect, UDP idle and BIND timeouts
        to their usual values.
        """
        timeouts = self.config.timeouts
        self.assertEqual(
            {k: timeouts.get(k) for k in ("handshake-timeout", "connect-timeout", "udp-idle-timeout", "bind-timeout")},
            {
                "handshake-timeout": 30.0,
                "connect-timeout": 30.0,
                "udp-idle-timeout": 120.0,
                "bind-timeout": 120.0,
            },
        )

    def test_lanWeb(self) -> None:
        """
        A machine on the LAN may reach a web server (port 443, or 8080 in
        the 8000-8100 range).
        """
        for port in (80, 443, 8080):
            decision = self.policy.decide(query(port=port))
            self.assertEqual(decision, Decision(True, "lan: web and dns"), port)

    def test_metadataDenied(self) -> None:
        """
        Nobody reaches 169.254.169.254, not even on a web port from
        loopback, nor through a name.
        """
        for client in ("192.168.1.10", "127.0.0.1"):
            decision = self.policy.decide(
                query(client=client, host="169.254.169.254", addresses=("169.254.169.254",), port=80)
            )
            self.assertEqual(decision, Decision(False, "no link-local"))
        decision = self.policy.decide(
            query(host="metadata.test", addresses=("203.0.113.1", "169.254.169.254"), port=80)
        )
        self.assertEqual(decision, Decision(False, "no link-local"))

    def test_sshDenied(self) -> None:
        """
        Port 22 on an outside host is denied to the LAN.
        """
        decision = self.policy.decide(query(port=22))
        self.assertEqual(decision, Decision(False, "deny the rest"))

    def test_publicClientDenied(self) -> None:
        """
        A client from a public network is denied even a web request.
        """
        decision = self.policy.decide(query(client="203.0.113.99", port=443))
        self.assertEqual(decision, Decision(False, "deny the rest"))

    def test_loopbackOnlyForLocalClients(self) -> None:
        """
        This host's services are for local clients only.
        """
        local = self.policy.decide(
            query(client="127.0.0.1", host="127.0.0.1", addresses=("127.0.0.1",), port=22)
        )
        self.assertEqual(local, Decision(True, "local services for local clients"))
        remote = self.policy.decide(
            query(client="192.168.1.10", host="127.0.0.1", addresses=("127.0.0.1",), port=80)
        )
        self.assertEqual(remote, Decision(False, "no loopback from elsewhere"))


class TapConfigTests(SynchronousTestCase):
    """
    C{twistd socks5 --config FILE}.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def write(self, text: str, name: str = "socksrelay.toml") -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_fileTimeouts(self) -> None:
        """
        The file's timeouts become the options' values.
        """
        path = self.write("[timeouts]\nhandshake = 7\nconnect = 8\nudp-idle = 9\nbind = 11\n")
        options = self.parse("--config", path)
        self.assertEqual(
            [options[k] for k in ("handshake-timeout", "connect-timeout", "udp-idle-timeout", "bind-timeout")],
            [7.0, 8.0, 9.0, 11.0],
        )

    def test_commandLineWins(self) -> None:
        """
        A timeout given on the command line wins over the file's, before or
        after C{--config}; the file still sets the others.
        """
        path = self.write("[timeouts]\nhandshake = 30\nconnect = 12\n")
        for argv in (
            ("--handshake-timeout", "5", "--config", path),
            ("--config", path, "--handshake-timeout", "5"),
        ):
            options = self.parse(*argv)
            self.assertEqual(options["handshake-timeout"], 5.0, argv)
            self.assertEqual(options["connect-timeout"], 12.0, argv)

    def test_commandLineDefaultValueWins(self) -> None:
        """
        A timeout given on the command line wins even when its value happens
        to be the built-in default (C{--handshake-timeout 30} over the
        file's 5).
        """
        path = self.write("[timeouts]\nhandshake = 5\n")
        options = self.parse("--handshake-timeout", "30", "--config", path)
        self.assertEqual(options["handshake-timeout"], 30.0)

    def test_timeoutsReachFactory(self) -> None:
        """
        The factory built from the options uses the file's timeouts.
        """
        path = self.write("[timeouts]\nhandshake = 7\nconnect = 8\nudp-idle = 9\nbind = 11\n")
        factory = tap.makeFactory(self.parse("--config", path), MemoryReactorClock())
        self.assertEqual(factory.handshakeTimeout, 7.0)
        self.assertEqual(factory.connectTimeout, 8.0)
        self.assertEqual(factory.udpOptions.idleTimeout, 9.0)
        self.assertEqual(factory.bindOptions.timeout, 11.0)

    def test_badFile(self) -> None:
        """
        A file with an error is a usage error whose message names the file,
        the line and the problem.
        """
        path = self.write('[[rule]]\naction = "allow"\n\n[[rule]]\naction = "deny"\nports = [0]\n')
        e = self.assertRaises(usage.UsageError, self.parse, "--config", path)
        self.assertIn(path, str(e))
        self.assertRegex(str(e), r"\bline [46]\b")
        self.assertIn("ports", str(e))

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is a usage error naming it.
        """
        path = os.path.join(self.directory, "nope.toml")
        e = self.assertRaises(usage.UsageError, self.parse, "--config", path)
        self.assertIn(path, str(e))

    def test_fileRules(self) -> None:
        """
        With rules in the file, the factory's policy is exactly those rules
        (with or without authentication).
        """
        path = self.write('[[rule]]\nname = "only web"\naction = "allow"\nports = [443]\n')
        for argv in ((), ("--auth", "memory:alice:pw")):
            factory = tap.makeFactory(self.parse("--config", path, *argv), MemoryReactorClock())
            self.assertEqual(
                [(r.action, r.name) for r in factory.policy.rules], [("allow", "only web")]
            )

    def test_fileWithoutRules(self) -> None:
        """
        A file without rules leaves the defaults in force.
        """
        path = self.write("[timeouts]\nconnect = 5\n")
        factory = tap.makeFactory(self.parse("--config", path), MemoryReactorClock())
        self.assertEqual(factory.policy.rules, defaultRules(False))

    def test_defaultsWithoutAuth(self) -> None:
        """
        Without C{--config} and C{--auth}, the policy is the defaults that
        serve only loopback and private clients.
        """
        factory = tap.makeFactory(self.parse(), MemoryReactorClock())
        self.assertEqual(factory.policy.rules, defaultRules(False))
        self.assertFalse(factory.policy.decide(query(client="203.0.113.5")).allowed)

    def test_defaultsWithAuth(self) -> None:
        """
        With C{--auth memory:...} (authentication required), the defaults
        serve public clients too.
        """
        factory = tap.makeFactory(self.parse("--auth", "memory:alice:pw"), MemoryReactorClock())
        self.assertEqual(factory.policy.rules, defaultRules(True))
        self.assertTrue(factory.policy.decide(query(client="203.0.113.5")).allowed)

    def test_defaultsWithAnonymousAuth(self) -> None:
        """
        C{--auth anonymous} lets clients in without credentials, so the
        defaults are those without authentication.
        """
        factory = tap.makeFactory(self.parse("--auth", "anonymous"), MemoryReactorClock())
        self.assertEqual(factory.policy.rules, defaultRules(False))

    def test_exampleFileAccepted(self) -> None:
        """
        C{--config etc/socksrelay.toml} is accepted and gives its rules.
        """
        factory = tap.makeFactory(self.parse("--config", EXAMPLE), MemoryReactorClock())
        self.assertEqual(factory.policy.rules[0].name, "no link-local")
        self.assertEqual(factory.policy.rules[-1].name, "deny the rest")
