# -*- test-case-name: tests.test_names -*-
"""
Tests for L{socksrelay.names}: the one canonical form of a destination
name, in which it is judged, resolved, logged and recorded.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.names import InvalidName, _canonicalFull, canonicalName
from socksrelay.wire import canonicalHost

#: Spellings of C{denied.test} that resolvers (the system's through Python's
#: IDNA codec, and twisted.names) look up as C{denied.test}.
CONFUSABLES = {
    "fullwidth letters": "\uff44\uff45\uff4e\uff49\uff45\uff44.test",
    "fullwidth capitals": "\uff24\uff25\uff2e\uff29\uff25\uff24.test",
    "soft hyphen": "den\u00adied.test",
    "zero-width space": "den\u200bied.test",
    "ideographic full stop": "denied\u3002test",
    "fullwidth full stop": "denied\uff0etest",
    "halfwidth ideographic full stop": "denied\uff61test",
    "upper case": "DENIED.Test",
    "trailing dot": "denied.test.",
    "trailing ideographic full stop": "denied.test\u3002",
}

#: Names that have no canonical form, by why.
INVALID = {
    "empty label": "a..b.test",
    "leading empty label": ".denied.test",
    "two trailing dots": "denied.test..",
    "only a dot": ".",
    "empty": "",
    "label over 63 bytes": "a" * 64 + ".test",
    "long IDN label": "\u00fc" * 60 + ".test",
    "name over 253 bytes": ".".join(["a" * 63] * 4),
    "space": "den ied.test",
    "percent-encoding": "%64enied.test",
    "slash": "denied.test/x",
    "colon": "denied.test:80",
    "NUL": "denied\x00.test",
    "invalid A-label": "xn--abc-.test",
    "A-label of control characters": "xn--abc.test",
    "empty A-label": "xn--.test",
    "zero-width joiner": "\u200ddenied.test",
    "disallowed symbol": "\u2603.test",
    "label that maps to nothing": "\u00ad.test",
}


class CanonicalNameTests(SynchronousTestCase):
    """
    L{canonicalName} maps every spelling of a name to one form, and refuses
    a name that has none.
    """

    def test_confusablesAreOneName(self) -> None:
        """
        Fullwidth letters, U+00AD, U+200B, U+3002 (and the other IDNA dots),
        case and one trailing dot all give C{denied.test}.
        """
        got = {why: canonicalName(name) for why, name in CONFUSABLES.items()}
        self.assertEqual(got, {why: "denied.test" for why in CONFUSABLES})

    def test_uLabelBecomesALabel(self) -> None:
        """
        A U-label becomes its A-label, and an A-label in any case is that
        same A-label; non-transitional: C{ß} stays C{ß}.
        """
        for name in ("bücher.test", "BÜCHER.test", "xn--bcher-kva.test", "XN--BCHER-KVA.TEST"):
            self.assertEqual(canonicalName(name), "xn--bcher-kva.test", name)
        self.assertEqual(canonicalName("straße.test"), "xn--strae-oqa.test")

    def test_realNamesKeepWorking(self) -> None:
        """
        Underscore labels, all-numeric labels, C{localhost}, hyphens where
        IDNA 2008 would not have them, and an IP address written as a name
        are kept as they are (lower case, without a trailing dot).
        """
        for name, expected in [
            ("_dmarc.x.test", "_dmarc.x.test"),
            ("_sip._udp.Example.test.", "_sip._udp.example.test"),
            ("123.456.test", "123.456.test"),
            ("localhost", "localhost"),
            ("LOCALHOST.", "localhost"),
            ("ab--cd.test", "ab--cd.test"),
            ("-x-.test", "-x-.test"),
            ("127.0.0.1", "127.0.0.1"),
            ("a" * 63 + ".test", "a" * 63 + ".test"),
        ]:
            self.assertEqual(canonicalName(name), expected, name)

    def test_longestName(self) -> None:
        """
        A name of 253 bytes is accepted, with or without a trailing dot; one
        of 254 is not.
        """
        name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
        self.assertEqual(len(name), 253)
        self.assertEqual(canonicalName(name), name)
        self.assertEqual(canonicalName(name + "."), name)
        self.assertRaises(InvalidName, canonicalName, name + "d")

    def test_invalid(self) -> None:
        """
        Each class of name that IDNA (or DNS) refuses raises L{InvalidName},
        a L{ValueError}, whose message names the name and why.
        """
        for why, name in INVALID.items():
            e = self.assertRaises(InvalidName, canonicalName, name)
            self.assertIsInstance(e, ValueError)
            self.assertEqual(e.name, name, why)
            self.assertIn(ascii(name), str(e), why)

    def test_fastPathEqualsFullPath(self) -> None:
        """
        For the names the fast path takes, the full UTS #46 path gives the
        same answer.
        """
        for name in ("Example.COM.", "_dmarc.x.test", "a-b.c", "1.2.3.4", "localhost"):
            self.assertEqual(canonicalName(name), _canonicalFull(name), name)

    def test_canonicalIsFixedPoint(self) -> None:
        """
        The canonical form of a canonical name is itself.
        """
        for name in [*CONFUSABLES.values(), "bücher.test", "_dmarc.x.test"]:
            canonical = canonicalName(name)
            self.assertEqual(canonicalName(canonical), canonical)


class CanonicalHostTests(SynchronousTestCase):
    """
    L{canonicalHost} leaves IP addresses to L{normaliseAddress} and
    canonicalises names.
    """

    def test_addresses(self) -> None:
        """
        IPv4 and IPv6 addresses (with a scope, IPv4-mapped) are normalised
        as addresses, not names.
        """
        self.assertEqual(canonicalHost("192.0.2.1"), "192.0.2.1")
        self.assertEqual(canonicalHost("2001:DB8::1"), "2001:db8::1")
        self.assertEqual(canonicalHost("fe80::1%eth0"), "fe80::1")
        self.assertEqual(canonicalHost("::ffff:192.0.2.1"), "192.0.2.1")

    def test_fullwidthAddressIsTheAddress(self) -> None:
        """
        An IPv4 address in fullwidth digits and dots (which a resolver maps
        to the address) comes out as that address, so network rules see it.
        """
        self.assertEqual(canonicalHost("\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11"), "127.0.0.1")

    def test_names(self) -> None:
        """
        A name is canonicalised; one with no canonical form raises.
        """
        self.assertEqual(canonicalHost("\uff44enied.test"), "denied.test")
        self.assertRaises(InvalidName, canonicalHost, "a..b")


#: Characters from which names are built for the property tests: the
#: fast path's alphabet and the characters that change a name's form.
_ALPHABET = (
    string.ascii_letters + string.digits + "-_." + "\u00ad\u200b\u3002\uff0e\uff44\uff24\u00fc\u00df "
)


class CanonicalNamePropertyTests(SynchronousTestCase):
    """
    Properties of L{canonicalName} over generated names.
    """

    @settings(max_examples=500, deadline=None)
    @given(st.text(alphabet=_ALPHABET, max_size=80))
    def test_fastPathEqualsFullPath(self, name: str) -> None:
        """
        Whatever the name, L{canonicalName} (fast path or not) and the full
        UTS #46 path agree: the same form, or both refuse it.
        """
        try:
            expected: object = _canonicalFull(name)
        except InvalidName:
            expected = InvalidName
        try:
            got: object = canonicalName(name)
        except InvalidName:
            got = InvalidName
        self.assertEqual(got, expected)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=70),
            min_size=1,
            max_size=6,
        ),
        st.booleans(),
    )
    def test_fastPathEqualsFullPathAtTheLimits(self, labels: list[str], dot: bool) -> None:
        """
        For ASCII names near the length limits (labels of up to 70 bytes,
        names of up to about 400), both paths agree too.
        """
        name = ".".join(labels) + ("." if dot else "")
        try:
            expected: object = _canonicalFull(name)
        except InvalidName:
            expected = InvalidName
        try:
            got: object = canonicalName(name)
        except InvalidName:
            got = InvalidName
        self.assertEqual(got, expected)

    @settings(max_examples=500, deadline=None)
    @given(st.text(alphabet=_ALPHABET, max_size=80))
    def test_canonicalIsStable(self, name: str) -> None:
        """
        A canonical name is ASCII, at most 253 bytes, has no empty label and
        no trailing dot, and is its own canonical form.
        """
        try:
            canonical = canonicalName(name)
        except InvalidName:
            return
        self.assertTrue(canonical.isascii())
        self.assertLessEqual(len(canonical), 253)
        self.assertNotIn("", canonical.split("."))
        self.assertEqual(canonicalName(canonical), canonical)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=40))
    def test_onlyInvalidNameEscapes(self, name: str) -> None:
        """
        Any text at all gives a name or L{InvalidName}, never another error.
        """
        try:
            canonicalName(name)
        except InvalidName:
            pass
