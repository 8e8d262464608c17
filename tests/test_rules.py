# -*- test-case-name: tests.test_rules -*-
"""
Tests for L{socksrelay.rules}: each criterion of a L{Rule} both ways, rules
with several criteria, first-match-wins L{Policy} decisions, the
name-to-denied-network case, address normalisation and L{defaultRules}.

Pure computation: no network, no reactor.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from socksrelay.rules import Decision, Policy, Query, Rule, defaultRules


def nets(*cidrs: str) -> tuple[Any, ...]:
    """
    The networks C{cidrs}, as a rule holds them.
    """
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def query(**kw: Any) -> Query:
    """
    A SOCKS5 CONNECT from 10.1.2.3 to 192.0.2.10 port 80 (an IP
    destination, so its address is itself), with C{kw} replacing any field.
    """
    fields: dict[str, Any] = {
        "client": "10.1.2.3",
        "protocol": "socks5",
        "command": "connect",
        "host": "192.0.2.10",
        "port": 80,
        "addresses": ("192.0.2.10",),
    }
    fields.update(kw)
    return Query(**fields)


def toName(name: str, *addresses: str, **kw: Any) -> Query:
    """
    A query for the destination C{name}, resolved to C{addresses}.
    """
    return query(host=name, addresses=addresses, **kw)


class CriterionTests(SynchronousTestCase):
    """
    Each criterion of a L{Rule} matches when it holds and not otherwise; a
    criterion that is not given matches anything.
    """

    def assertMatch(self, rule: Rule, q: Query) -> None:
        self.assertTrue(rule.matches(q), f"{rule} should match {q}")

    def assertNoMatch(self, rule: Rule, q: Query) -> None:
        self.assertFalse(rule.matches(q), f"{rule} should not match {q}")

    def test_noCriteria(self) -> None:
        """
        A rule without criteria matches every query.
        """
        rule = Rule("allow", "all")
        self.assertMatch(rule, query())
        self.assertMatch(rule, query(client="::1", command="udp", host="x.example", addresses=()))

    def test_clients(self) -> None:
        """
        C{clients} matches a client inside one of its networks, and no other.
        """
        rule = Rule("allow", "r", clients=nets("10.0.0.0/8", "2001:db8::/32"))
        self.assertMatch(rule, query(client="10.1.2.3"))
        self.assertMatch(rule, query(client="2001:db8::5"))
        self.assertNoMatch(rule, query(client="11.1.2.3"))
        self.assertNoMatch(rule, query(client="2001:db9::5"))

    def test_clientsUnparseable(self) -> None:
        """
        A client that is not an IP address is never inside C{clients}.
        """
        rule = Rule("allow", "r", clients=nets("0.0.0.0/0", "::/0"))
        self.assertNoMatch(rule, query(client="not-an-address"))

    def test_users(self) -> None:
        """
        C{users} matches the authenticated users it names, and neither other
        users nor a client that did not authenticate.
        """
        rule = Rule("allow", "r", users=frozenset({"alice", "bob"}))
        self.assertMatch(rule, query(user="alice"))
        self.assertMatch(rule, query(user="bob"))
        self.assertNoMatch(rule, query(user="carol"))
        self.assertNoMatch(rule, query(user=None))

    def test_groups(self) -> None:
        """
        C{groups} matches a user in one of its groups, and no user outside
        all of them.
        """
        rule = Rule("allow", "r", groups=frozenset({"staff"}))
        self.assertMatch(rule, query(user="alice", groups=frozenset({"ops", "staff"})))
        self.assertNoMatch(rule, query(user="alice", groups=frozenset({"ops"})))
        self.assertNoMatch(rule, query(user=None))

    def test_usersOrGroups(self) -> None:
        """
        With both C{users} and C{groups}, a user matches by being named or by
        being in one of the groups.
        """
        rule = Rule("allow", "r", users=frozenset({"alice"}), groups=frozenset({"staff"}))
        self.assertMatch(rule, query(user="alice"))
        self.assertMatch(rule, query(user="bob", groups=frozenset({"staff"})))
        self.assertNoMatch(rule, query(user="bob", groups=frozenset({"guests"})))

    def test_protocols(self) -> None:
        """
        C{protocols} matches the protocols it names, and no other.
        """
        rule = Rule("allow", "r", protocols=frozenset({"socks5", "http"}))
        self.assertMatch(rule, query(protocol="socks5"))
        self.assertMatch(rule, query(protocol="http"))
        self.assertNoMatch(rule, query(protocol="socks4"))

    def test_commands(self) -> None:
        """
        C{commands} matches the commands it names, and no other.
        """
        rule = Rule("allow", "r", commands=frozenset({"bind", "udp"}))
        self.assertMatch(rule, query(command="bind"))
        self.assertMatch(rule, query(command="udp"))
        self.assertNoMatch(rule, query(command="connect"))

    def test_hostExact(self) -> None:
        """
        A host without a leading dot matches that name only, not names under
        it.
        """
        rule = Rule("deny", "r", hosts=("example.com",))
        self.assertMatch(rule, toName("example.com", "192.0.2.1"))
        self.assertNoMatch(rule, toName("www.example.com", "192.0.2.1"))
        self.assertNoMatch(rule, toName("example.org", "192.0.2.1"))

    def test_hostDomain(self) -> None:
        """
        A host with a leading dot matches the domain itself and every name
        under it.
        """
        rule = Rule("deny", "r", hosts=(".example.com",))
        self.assertMatch(rule, toName("example.com", "192.0.2.1"))
        self.assertMatch(rule, toName("www.example.com", "192.0.2.1"))
        self.assertMatch(rule, toName("a.b.example.com", "192.0.2.1"))
        self.assertNoMatch(rule, toName("example.org", "192.0.2.1"))

    def test_hostDomainLookAlike(self) -> None:
        """
        A domain does not match a name that merely ends with the same
        letters (C{notexample.com} is not under C{.example.com}).
        """
        rule = Rule("deny", "r", hosts=(".example.com",))
        self.assertNoMatch(rule, toName("notexample.com", "192.0.2.1"))
        self.assertNoMatch(rule, toName("www.notexample.com", "192.0.2.1"))
        self.assertNoMatch(rule, toName("example.com.evil.net", "192.0.2.1"))

    def test_hostTrailingDotAndCase(self) -> None:
        """
        A name asked with a trailing dot or in another case matches as the
        plain lower-case name would.
        """
        exact = Rule("deny", "r", hosts=("example.com",))
        domain = Rule("deny", "r", hosts=(".example.com",))
        for name in ("Example.COM", "example.com.", "EXAMPLE.COM."):
            self.assertMatch(exact, toName(name, "192.0.2.1"))
            self.assertMatch(domain, toName(name, "192.0.2.1"))
        self.assertMatch(domain, toName("WWW.Example.Com.", "192.0.2.1"))

    def test_hostsJudgeTheNameAsAsked(self) -> None:
        """
        C{hosts} looks at the destination as asked: an IP destination does
        not match a host name, whatever that name resolves to.
        """
        rule = Rule("deny", "r", hosts=("localhost",))
        self.assertNoMatch(rule, query(host="127.0.0.1", addresses=("127.0.0.1",)))
        self.assertMatch(rule, toName("localhost", "127.0.0.1"))

    def test_networksIP(self) -> None:
        """
        C{networks} matches an IP destination inside one of them, and no
        other.
        """
        rule = Rule("deny", "r", networks=nets("192.0.2.0/24", "2001:db8::/32"))
        self.assertMatch(rule, query(host="192.0.2.99", addresses=("192.0.2.99",)))
        self.assertMatch(rule, query(host="2001:db8::1", addresses=("2001:db8::1",)))
        self.assertNoMatch(rule, query(host="198.51.100.1", addresses=("198.51.100.1",)))
        self.assertNoMatch(rule, query(host="2001:db9::1", addresses=("2001:db9::1",)))

    def test_networksIPWithoutAddresses(self) -> None:
        """
        An IP destination whose addresses were not filled in is judged on
        the IP itself.
        """
        rule = Rule("deny", "r", networks=nets("192.0.2.0/24"))
        self.assertMatch(rule, query(host="192.0.2.99", addresses=()))
        self.assertNoMatch(rule, query(host="198.51.100.1", addresses=()))

    def test_networksUnresolvedName(self) -> None:
        """
        A name with no known addresses is in no network.
        """
        deny = Rule("deny", "r", networks=nets("0.0.0.0/0", "::/0"))
        allow = Rule("allow", "r", networks=nets("0.0.0.0/0", "::/0"))
        self.assertNoMatch(deny, toName("example.com"))
        self.assertNoMatch(allow, toName("example.com"))

    def test_networksOtherFamily(self) -> None:
        """
        An IPv4 network never contains an IPv6 destination, nor the reverse.
        """
        rule = Rule("deny", "r", networks=nets("0.0.0.0/0"))
        self.assertNoMatch(rule, query(host="2001:db8::1", addresses=("2001:db8::1",)))
        rule6 = Rule("deny", "r", networks=nets("::/0"))
        self.assertNoMatch(rule6, query())

    def test_portSingle(self) -> None:
        """
        A single port matches that port only.
        """
        rule = Rule("allow", "r", ports=((443, 443),))
        self.assertMatch(rule, query(port=443))
        self.assertNoMatch(rule, query(port=442))
        self.assertNoMatch(rule, query(port=444))

    def test_portRange(self) -> None:
        """
        A range matches its ends and every port between them, and nothing
        outside.
        """
        rule = Rule("allow", "r", ports=((22, 22), (8000, 8100)))
        for port in (22, 8000, 8050, 8100):
            self.assertMatch(rule, query(port=port))
        for port in (21, 23, 7999, 8101):
            self.assertNoMatch(rule, query(port=port))

    def test_allCriteriaMustHold(self) -> None:
        """
        A rule with several criteria matches only when every one of them
        holds: failing any single one is enough not to match.
        """
        rule = Rule(
            "allow",
            "office web",
            clients=nets("10.0.0.0/8"),
            users=frozenset({"alice"}),
            protocols=frozenset({"socks5"}),
            commands=frozenset({"connect"}),
            hosts=(".example.com",),
            networks=nets("192.0.2.0/24"),
            ports=((443, 443),),
        )
        good = {
            "client": "10.1.2.3",
            "user": "alice",
            "protocol": "socks5",
            "command": "connect",
            "host": "www.example.com",
            "addresses": ("192.0.2.7",),
            "port": 443,
        }
        self.assertMatch(rule, query(**good))
        for field, bad in [
            ("client", "11.1.2.3"),
            ("user", "bob"),
            ("protocol", "http"),
            ("command", "udp"),
            ("host", "www.example.org"),
            ("addresses", ("198.51.100.7",)),
            ("port", 80),
        ]:
            self.assertNoMatch(rule, query(**{**good, field: bad}))


class NameToNetworkTests(SynchronousTestCase):
    """
    A name is judged on every address it resolves to: a deny rule with
    networks matches when any address is inside, an allow rule only when all
    are, so that no name smuggles a client into a denied network.
    """

    def test_denyMatchesWhenAnyAddressInside(self) -> None:
        """
        A deny rule matches a name when one of its addresses, first or not,
        is in the denied network.
        """
        rule = Rule("deny", "r", networks=nets("169.254.0.0/16"))
        self.assertTrue(rule.matches(toName("x.test", "192.0.2.1", "169.254.169.254")))
        self.assertTrue(rule.matches(toName("x.test", "169.254.169.254", "192.0.2.1")))
        self.assertFalse(rule.matches(toName("x.test", "192.0.2.1", "198.51.100.1")))

    def test_allowMatchesOnlyWhenAllAddressesInside(self) -> None:
        """
        An allow rule matches a name only when every one of its addresses is
        in the allowed networks.
        """
        rule = Rule("allow", "r", networks=nets("192.0.2.0/24", "2001:db8::/32"))
        self.assertTrue(rule.matches(toName("x.test", "192.0.2.1", "2001:db8::1")))
        self.assertFalse(rule.matches(toName("x.test", "192.0.2.1", "10.0.0.1")))
        self.assertFalse(rule.matches(toName("x.test", "10.0.0.1", "192.0.2.1")))

    def test_policyDeniesMixedName(self) -> None:
        """
        Under "allow the web network, deny the rest", a name that resolves
        into the web network and elsewhere is denied by the second rule.
        """
        policy = Policy(
            [
                Rule("allow", "web", networks=nets("192.0.2.0/24")),
                Rule("deny", "rest"),
            ]
        )
        self.assertEqual(
            policy.decide(toName("x.test", "192.0.2.1")), Decision(True, "web")
        )
        self.assertEqual(
            policy.decide(toName("x.test", "192.0.2.1", "10.0.0.1")),
            Decision(False, "rest"),
        )

    def test_policyDeniesNameIntoDeniedNetwork(self) -> None:
        """
        Under "deny the metadata network, allow the rest", a name with one
        address in the denied network is denied by the first rule.
        """
        policy = Policy(
            [
                Rule("deny", "metadata", networks=nets("169.254.0.0/16")),
                Rule("allow", "rest"),
            ]
        )
        self.assertEqual(
            policy.decide(toName("x.test", "192.0.2.1", "169.254.169.254")),
            Decision(False, "metadata"),
        )
        self.assertEqual(
            policy.decide(toName("x.test", "192.0.2.1")), Decision(True, "rest")
        )


class NormalisationTests(SynchronousTestCase):
    """
    IPv4-mapped IPv6 addresses are judged as the IPv4 addresses they are.
    """

    def test_mappedClient(self) -> None:
        """
        A client at C{::ffff:10.1.2.3} is inside C{10.0.0.0/8}.
        """
        rule = Rule("allow", "r", clients=nets("10.0.0.0/8"))
        self.assertTrue(rule.matches(query(client="::ffff:10.1.2.3")))
        self.assertFalse(rule.matches(query(client="::ffff:11.1.2.3")))

    def test_mappedDestination(self) -> None:
        """
        A destination C{::ffff:169.254.169.254}, as an IP or among a name's
        addresses, is inside C{169.254.0.0/16}.
        """
        rule = Rule("deny", "r", networks=nets("169.254.0.0/16"))
        self.assertTrue(rule.matches(query(host="::ffff:169.254.169.254", addresses=())))
        self.assertTrue(
            rule.matches(
                query(host="::ffff:169.254.169.254", addresses=("::ffff:169.254.169.254",))
            )
        )
        self.assertTrue(rule.matches(toName("x.test", "::ffff:169.254.169.254")))
        self.assertFalse(rule.matches(toName("x.test", "::ffff:192.0.2.1")))

    def test_mappedLoopbackClientByDefault(self) -> None:
        """
        Under the defaults, a client at C{::ffff:127.0.0.1} is a loopback
        client: it may reach this host's loopback.
        """
        policy = Policy.defaults(authRequired=False)
        decision = policy.decide(
            query(client="::ffff:127.0.0.1", host="127.0.0.1", addresses=("127.0.0.1",))
        )
        self.assertTrue(decision.allowed, decision)


class PolicyTests(SynchronousTestCase):
    """
    A L{Policy}: the first matching rule decides; nothing matching denies.
    """

    def test_firstMatchWins(self) -> None:
        """
        Of several matching rules, the first decides, whether it allows or
        denies.
        """
        allowFirst = Policy([Rule("allow", "a"), Rule("deny", "b")])
        denyFirst = Policy([Rule("deny", "b"), Rule("allow", "a")])
        self.assertEqual(allowFirst.decide(query()), Decision(True, "a"))
        self.assertEqual(denyFirst.decide(query()), Decision(False, "b"))

    def test_laterRuleWhenEarlierDoesNotMatch(self) -> None:
        """
        A rule that does not match is passed over for the next.
        """
        policy = Policy(
            [
                Rule("deny", "ssh", ports=((22, 22),)),
                Rule("allow", "rest"),
            ]
        )
        self.assertEqual(policy.decide(query(port=22)), Decision(False, "ssh"))
        self.assertEqual(policy.decide(query(port=80)), Decision(True, "rest"))

    def test_noMatchDenies(self) -> None:
        """
        A query no rule matches is denied, by "no rule matched".
        """
        policy = Policy([Rule("allow", "web", ports=((80, 80),))])
        self.assertEqual(policy.decide(query(port=81)), Decision(False, "no rule matched"))

    def test_emptyPolicyDenies(self) -> None:
        """
        A policy without rules denies everything.
        """
        self.assertEqual(Policy([]).decide(query()), Decision(False, "no rule matched"))

    def test_needsAddresses(self) -> None:
        """
        A policy needs destination addresses exactly when a rule has
        C{networks}.
        """
        self.assertFalse(Policy([Rule("allow", "a", ports=((80, 80),))]).needsAddresses)
        self.assertTrue(Policy([Rule("deny", "a", networks=nets("10.0.0.0/8"))]).needsAddresses)


class DecideCommandTests(SynchronousTestCase):
    """
    L{Policy.decideCommand}: a BIND or UDP ASSOCIATE request, before any
    destination is known, is denied when no destination could be allowed.
    """

    #: Link-local destinations denied, as in etc/socksrelay.toml.
    NO_LINK_LOCAL = Rule("deny", "no link-local", networks=nets("169.254.0.0/16"))

    def command(self, command: str) -> Query:
        return query(command=command, host="0.0.0.0", port=0, addresses=())

    def test_commandDenyAfterDestinationDeny(self) -> None:
        """
        A C{deny commands=[...]} rule after a C{deny} rule with destination
        criteria denies the request: the earlier rule refuses only some
        destinations and allows none.
        """
        for command in ("udp", "bind"):
            policy = Policy(
                [
                    self.NO_LINK_LOCAL,
                    Rule("deny", "no " + command, commands=frozenset({command})),
                    Rule("allow", "rest"),
                ]
            )
            self.assertEqual(
                policy.decideCommand(self.command(command)),
                Decision(False, "no " + command),
            )
            other = "bind" if command == "udp" else "udp"
            self.assertEqual(
                policy.decideCommand(self.command(other)), Decision(True, "rest")
            )

    def test_onlyDestinationDeniesThenNoMatch(self) -> None:
        """
        Deny rules with destination criteria followed by no rule that
        applies: no destination can be allowed, so the request is denied.
        """
        policy = Policy(
            [self.NO_LINK_LOCAL, Rule("allow", "tcp", commands=frozenset({"connect"}))]
        )
        self.assertEqual(
            policy.decideCommand(self.command("udp")), Decision(False, "no rule matched")
        )

    def test_destinationAllowBeforeCommandDeny(self) -> None:
        """
        An C{allow} rule with destination criteria before the command's
        C{deny} allows some destinations: the request goes through, and each
        destination is decided later.
        """
        policy = Policy(
            [
                Rule("allow", "dns", ports=((53, 53),)),
                Rule("deny", "no udp", commands=frozenset({"udp"})),
            ]
        )
        self.assertEqual(
            policy.decideCommand(self.command("udp")),
            Decision(True, "dns (decided per destination)"),
        )

    def test_firstCommandRuleDecides(self) -> None:
        """
        With no destination rule in the way, the first rule that applies
        decides, either way.
        """
        deny = Policy([Rule("deny", "no udp", commands=frozenset({"udp"})), Rule("allow", "a")])
        allow = Policy([self.NO_LINK_LOCAL, Rule("allow", "a"), Rule("deny", "b")])
        self.assertEqual(deny.decideCommand(self.command("udp")), Decision(False, "no udp"))
        self.assertEqual(allow.decideCommand(self.command("udp")), Decision(True, "a"))


class DefaultRulesTests(SynchronousTestCase):
    """
    L{defaultRules}: link-local destinations denied; this host's loopback
    only for loopback clients; without authentication, only loopback and
    private clients served.
    """

    def decide(self, authRequired: bool, **kw: Any) -> Decision:
        return Policy(defaultRules(authRequired)).decide(query(**kw))

    def assertAllowed(self, authRequired: bool, **kw: Any) -> None:
        decision = self.decide(authRequired, **kw)
        self.assertTrue(decision.allowed, f"{kw} (auth {authRequired}): {decision}")

    def assertDenied(self, authRequired: bool, rule: str, **kw: Any) -> None:
        decision = self.decide(authRequired, **kw)
        self.assertEqual(decision, Decision(False, rule), kw)

    def test_defaultsClassMethod(self) -> None:
        """
        L{Policy.defaults} holds exactly the L{defaultRules}.
        """
        for auth in (False, True):
            self.assertEqual(Policy.defaults(auth).rules, defaultRules(auth))

    def test_linkLocalDenied(self) -> None:
        """
        Link-local destinations (169.254.169.254, fe80::1) are denied to
        every client, loopback included, with or without authentication,
        whether asked as an IP or through a name.
        """
        rule = "default: link-local destinations"
        for auth in (False, True):
            for client in ("127.0.0.1", "10.1.2.3", "203.0.113.5"):
                self.assertDenied(
                    auth, rule, client=client, host="169.254.169.254",
                    addresses=("169.254.169.254",),
                )
                self.assertDenied(
                    auth, rule, client=client, host="fe80::1", addresses=("fe80::1",)
                )
                self.assertDenied(
                    auth, rule, client=client, host="metadata.test",
                    addresses=("192.0.2.1", "169.254.169.254"),
                )

    def test_loopbackForLoopbackClients(self) -> None:
        """
        This host's loopback (127.0.0.0/8, ::1) and its unspecified
        addresses (0.0.0.0, ::) are reachable by loopback clients.
        """
        for auth in (False, True):
            for client in ("127.0.0.1", "127.0.0.2", "::1"):
                for dest in ("127.0.0.1", "127.9.9.9", "::1", "0.0.0.0", "::"):
                    self.assertAllowed(auth, client=client, host=dest, addresses=(dest,))

    def test_loopbackDeniedToOtherClients(self) -> None:
        """
        This host's loopback and unspecified addresses are denied to clients
        that are not on loopback, also through a name that resolves there.
        """
        rule = "default: loopback destinations from other hosts"
        for auth in (False, True):
            for client in ("10.1.2.3", "192.168.1.1", "203.0.113.5", "fd00::1"):
                for dest in ("127.0.0.1", "127.9.9.9", "::1", "0.0.0.0", "::"):
                    self.assertDenied(auth, rule, client=client, host=dest, addresses=(dest,))
                self.assertDenied(
                    auth, rule, client=client, host="localhost",
                    addresses=("127.0.0.1", "::1"),
                )

    def test_publicClientsWithoutAuthDenied(self) -> None:
        """
        Without authentication, clients from public networks are denied.
        """
        rule = "default: unauthenticated clients from public networks"
        for client in ("203.0.113.5", "8.8.8.8", "2001:db8::5", "::ffff:203.0.113.5"):
            self.assertDenied(False, rule, client=client)

    def test_privateClientsWithoutAuthAllowed(self) -> None:
        """
        Without authentication, clients from loopback and private networks
        are served (to an ordinary destination).
        """
        for client in (
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "100.64.0.1",
            "fd12::1",
        ):
            self.assertAllowed(False, client=client)

    def test_edgeOfPrivateNetworks(self) -> None:
        """
        Addresses just outside the private networks (172.32.0.1,
        192.169.0.1, 11.0.0.1) count as public without authentication.
        """
        rule = "default: unauthenticated clients from public networks"
        for client in ("172.32.0.1", "192.169.0.1", "11.0.0.1", "100.128.0.1"):
            self.assertDenied(False, rule, client=client)

    def test_publicClientsWithAuthAllowed(self) -> None:
        """
        With authentication required, clients from public networks are
        served (to an ordinary destination).
        """
        for client in ("203.0.113.5", "8.8.8.8", "2001:db8::5"):
            self.assertAllowed(True, client=client)

    def test_orderOfDefaults(self) -> None:
        """
        The defaults end with an allow-everything rule, after the denials.
        """
        for auth in (False, True):
            rules = defaultRules(auth)
            self.assertEqual(rules[-1].action, "allow")
            self.assertTrue(all(r.action == "deny" for r in rules[:-1]))
