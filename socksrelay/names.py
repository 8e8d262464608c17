# -*- test-case-name: tests.test_names -*-
"""
The one canonical form of a destination name.

A client may write the same name many ways: in another case, with a trailing
dot, in fullwidth letters (C{ｄｅｎｉｅｄ.test}), with characters that IDNA
deletes (U+00AD soft hyphen, U+200B zero-width space), with U+3002 as a dot,
or as a U-label (C{bücher.test}) rather than its A-label.  Resolvers convert
such names with IDNA before they look them up, so rules that compared the
name as sent could be walked around.  L{canonicalName} maps every such
spelling to one form (UTS #46 mapping, non-transitional, to A-labels in lower
case, one trailing dot dropped); the server judges, resolves, logs and
records only that form, and refuses a name that has none.

What is accepted:

  - labels of ASCII letters, digits, hyphens and underscores (C{_dmarc},
    C{123}, C{-x-} all stay as they are: resolvers look such names up, and
    names with underscores are real);
  - labels with other characters, which must be valid IDNA 2008 U-labels
    after UTS #46 mapping (they become A-labels), and A-labels (C{xn--}),
    which must decode to one and encode back to themselves;
  - at most 63 bytes a label and 253 a name (without its trailing dot).

This module does no I/O and imports nothing from C{twisted.internet}.
"""

from __future__ import annotations

import functools
import re

import idna

#: The longest label, in bytes (RFC 1035 section 2.3.4).
MAX_LABEL = 63
#: The longest name, in bytes, without a trailing dot.
MAX_NAME = 253

_ASCII_LABEL = re.compile(r"[a-z0-9_-]+", re.ASCII)
_ASCII_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?", re.ASCII)
_ALABEL_PREFIX = "xn--"


class InvalidName(ValueError):
    """
    A destination name that has no canonical form.

    @ivar name: the name as given.
    @ivar why: what is wrong with it.
    """

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"host name {ascii(name)} cannot be normalised: {why}")
        self.name = name
        self.why = why


@functools.lru_cache(maxsize=4096)
def canonicalName(name: str) -> str:
    """
    The canonical form of the destination name C{name}: UTS #46 mapping
    (non-transitional, without the STD3 rules, so that C{_} stays), every
    label an A-label or an ASCII label in lower case, one trailing dot
    dropped.

    Cached: a UDP association names the same few destinations in every
    datagram.

    @raise InvalidName: if C{name} has no canonical form (an empty label,
        a label or name too long, a character or label IDNA does not allow).
    """
    if name.isascii():
        lowered = name.lower()
        if _ASCII_NAME.fullmatch(lowered) and _ALABEL_PREFIX not in lowered:
            # The common case: already canonical but for case and the dot,
            # which is what the full mapping below gives for it too.
            if lowered.endswith("."):
                lowered = lowered[:-1]
            _checkLengths(name, lowered, lowered.split("."))
            return lowered
    return _canonicalFull(name)


def _canonicalFull(name: str) -> str:
    """
    L{canonicalName} without its fast path.
    """
    try:
        mapped = idna.uts46_remap(name, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError) as e:
        raise InvalidName(name, str(e)) from None
    labels = mapped.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    result = [_canonicalLabel(name, label) for label in labels]
    canonical = ".".join(result)
    _checkLengths(name, canonical, result)
    return canonical


def _canonicalLabel(name: str, label: str) -> str:
    """
    One label of a mapped name, as an ASCII label or an A-label.
    """
    if not label:
        raise InvalidName(name, "empty label")
    if not label.isascii():
        try:
            return idna.alabel(label).decode("ascii")
        except (idna.IDNAError, UnicodeError) as e:
            raise InvalidName(name, str(e) or "invalid label") from None
    if len(label) > MAX_LABEL:
        raise InvalidName(name, f"label longer than {MAX_LABEL} bytes")
    if not _ASCII_LABEL.fullmatch(label):
        raise InvalidName(name, f"label {ascii(label)} holds a character not allowed")
    if label.startswith(_ALABEL_PREFIX):
        try:
            valid = idna.alabel(idna.ulabel(label)).decode("ascii") == label
        except (idna.IDNAError, UnicodeError):
            valid = False
        if not valid:
            raise InvalidName(name, f"{ascii(label)} is not a valid A-label")
    return label


def _checkLengths(name: str, canonical: str, labels: list[str]) -> None:
    if any(not label for label in labels):
        raise InvalidName(name, "empty label")
    if any(len(label) > MAX_LABEL for label in labels):
        raise InvalidName(name, f"label longer than {MAX_LABEL} bytes")
    if len(canonical) > MAX_NAME:
        raise InvalidName(name, f"longer than {MAX_NAME} bytes")
