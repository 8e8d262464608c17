# -*- test-case-name: tests.test_users -*-
"""
socksrelay's own user database: a human-editable file of users with bcrypt
password hashes, groups and per-user policy, and the twisted.cred checker
that reads it (C{--auth users:FILE}).

The file format
===============

One user per line; blank lines and lines starting with C{#} are ignored::

    # name:bcrypt-hash:attributes
    alice:$2b$12$....:groups=staff,admins;max-sessions=4;up=1000000;down=2000000
    bob:$2b$12$....:external=192.0.2.10;expires=2027-01-01T00:00:00Z
    carol:$2b$12$....:

The three fields are separated by C{:} (neither a name nor a bcrypt hash
contains one).  The third field may be empty; otherwise it is a list of
C{key=value} pairs separated by C{;}:

  - C{groups}: comma-separated group names;
  - C{max-sessions}: the most concurrent sessions the user may have (>= 1);
  - C{up} / C{down}: bandwidth limits in bytes per second (>= 1), client to
    destination and back;
  - C{external}: the outgoing IP address for the user's connections;
  - C{expires}: an ISO 8601 time (UTC unless it says otherwise) after which
    the user is refused.

User names are UTF-8 text without C{:}, whitespace or a leading C{#}.  The
C{socksrelay-users} command (L{socksrelay.userscmd}) manages the file and
writes it atomically (mode 0600); editing it by hand works too: the checker
re-reads it when its modification time or size changes.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
import secrets
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from socksrelay.interfaces import IUserRecord

_log = Logger(namespace="socksrelay.users")

#: The bcrypt cost for new hashes.
DEFAULT_ROUNDS = 12

#: bcrypt looks at no more than this many bytes of a password.
MAX_PASSWORD_BYTES = 72

#: The attribute keys of the file, in the order they are written.
ATTRIBUTE_KEYS = ("groups", "max-sessions", "up", "down", "external", "expires")


class UsersFileError(ValueError):
    """
    A users file (or a value for it) is not valid.

    @ivar lineNumber: the 1-based line with the problem, or C{None}.
    """

    def __init__(self, message: str, lineNumber: int | None = None) -> None:
        self.lineNumber = lineNumber
        if lineNumber is not None:
            message = f"line {lineNumber}: {message}"
        super().__init__(message)


@implementer(IUserRecord)
@dataclass(frozen=True)
class UserRecord:
    """
    One user of the file; the checker's avatar ID for that user.
    """

    name: str
    passwordHash: bytes = field(repr=False)
    groups: frozenset = frozenset()
    maxSessions: int | None = None
    bandwidthUp: int | None = None
    bandwidthDown: int | None = None
    external: str | None = None
    expires: float | None = None

    def expired(self, now: float) -> bool:
        """
        Whether this user's expiry time is at or before C{now}.
        """
        return self.expires is not None and now >= self.expires

    def withAttributes(self, **changes: Any) -> "UserRecord":
        return replace(self, **changes)


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------


def checkName(name: str) -> str:
    """
    @raise UsersFileError: unless C{name} is a valid user name.
    """
    if not name:
        raise UsersFileError("empty user name")
    if ":" in name or any(c.isspace() for c in name) or name.startswith("#"):
        raise UsersFileError(
            f"bad user name {name!r}: no ':', whitespace or leading '#'"
        )
    return name


def parseGroups(value: str) -> frozenset:
    groups = [g.strip() for g in value.split(",") if g.strip()]
    for g in groups:
        if any(c in g for c in ";=:") or any(c.isspace() for c in g):
            raise UsersFileError(f"bad group name {g!r}")
    return frozenset(groups)


def parsePositiveInt(value: str, what: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise UsersFileError(f"{what} must be a whole number, not {value!r}")
    if number < 1:
        raise UsersFileError(f"{what} must be at least 1, not {number}")
    return number


def parseExternal(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise UsersFileError(f"external must be an IP address, not {value!r}")


def parseExpires(value: str) -> float:
    """
    Parse an ISO 8601 time (UTC unless it has an offset) to POSIX seconds.
    """
    try:
        when = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsersFileError(
            f"expires must be an ISO 8601 time like 2027-01-01T00:00:00Z, "
            f"not {value!r}"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def formatExpires(expires: float) -> str:
    when = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)
    if when.microsecond:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


_PARSERS: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "groups": ("groups", parseGroups),
    "max-sessions": ("maxSessions", lambda v: parsePositiveInt(v, "max-sessions")),
    "up": ("bandwidthUp", lambda v: parsePositiveInt(v, "up")),
    "down": ("bandwidthDown", lambda v: parsePositiveInt(v, "down")),
    "external": ("external", parseExternal),
    "expires": ("expires", parseExpires),
}

#: File key -> UserRecord attribute.
ATTRIBUTE_NAMES = {key: attr for key, (attr, _) in _PARSERS.items()}


def parseAttribute(key: str, value: str) -> tuple[str, Any]:
    """
    Parse one C{key=value} of the attributes field.

    @return: the L{UserRecord} attribute name and its value.
    @raise UsersFileError: on an unknown key or a bad value.
    """
    if key not in _PARSERS:
        raise UsersFileError(
            f"unknown attribute {key!r} (expected one of {', '.join(ATTRIBUTE_KEYS)})"
        )
    attr, parse = _PARSERS[key]
    return attr, parse(value)


def _checkHash(passwordHash: str) -> bytes:
    if not (passwordHash.startswith(("$2a$", "$2b$", "$2y$")) and len(passwordHash) == 60):
        raise UsersFileError("the password hash is not a bcrypt hash ($2b$...)")
    return passwordHash.encode("ascii")


# --------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------


def parseUsers(text: str) -> dict[str, UserRecord]:
    """
    Parse the text of a users file.

    @return: the records by name, in file order.
    @raise UsersFileError: naming the first bad line and its problem.
    """
    users: dict[str, UserRecord] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            parts = stripped.split(":", 2)
            if len(parts) != 3:
                raise UsersFileError("expected NAME:HASH:ATTRIBUTES")
            name, passwordHash, attributes = parts
            checkName(name)
            if name in users:
                raise UsersFileError(f"user {name!r} appears twice")
            values: dict[str, Any] = {}
            for item in attributes.split(";"):
                if not item.strip():
                    continue
                key, eq, value = item.partition("=")
                key = key.strip()
                if not eq:
                    raise UsersFileError(f"expected key=value, not {item.strip()!r}")
                if key in ATTRIBUTE_NAMES and ATTRIBUTE_NAMES[key] in values:
                    raise UsersFileError(f"attribute {key!r} given twice")
                attr, parsed = parseAttribute(key, value)
                values[attr] = parsed
            users[name] = UserRecord(name, _checkHash(passwordHash), **values)
        except UsersFileError as e:
            raise UsersFileError(str(e), number) from None
    return users


def formatAttributes(record: UserRecord) -> list[str]:
    """
    A user's attributes as C{key=value} texts, in the file's order.
    """
    items = []
    if record.groups:
        items.append("groups=" + ",".join(sorted(record.groups)))
    if record.maxSessions is not None:
        items.append(f"max-sessions={record.maxSessions}")
    if record.bandwidthUp is not None:
        items.append(f"up={record.bandwidthUp}")
    if record.bandwidthDown is not None:
        items.append(f"down={record.bandwidthDown}")
    if record.external is not None:
        items.append(f"external={record.external}")
    if record.expires is not None:
        items.append(f"expires={formatExpires(record.expires)}")
    return items


def formatRecord(record: UserRecord) -> str:
    items = formatAttributes(record)
    return f"{record.name}:{record.passwordHash.decode('ascii')}:{';'.join(items)}"


def formatUsers(records: Iterable[UserRecord]) -> str:
    """
    The text of a users file holding C{records}; L{parseUsers} reads it back
    to equal records.
    """
    lines = [
        "# socksrelay users: NAME:BCRYPT-HASH:key=value;...",
        "# (groups, max-sessions, up, down, external, expires); "
        "see socksrelay-users --help",
    ]
    lines += [formatRecord(r) for r in records]
    return "\n".join(lines) + "\n"


def readUsers(path: str) -> dict[str, UserRecord]:
    """
    Read and parse a users file.

    @raise OSError: if it cannot be read.
    @raise UsersFileError: if it is not valid (the message names the file).
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return parseUsers(text)
    except UsersFileError as e:
        raise UsersFileError(f"{path}: {e}") from None


def writeUsers(path: str, records: Iterable[UserRecord]) -> None:
    """
    Replace the file at C{path} with C{records} atomically: write a temporary
    file (mode 0600) in the same directory, then rename it over C{path}.
    """
    text = formatUsers(records)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def hashPassword(password: bytes, rounds: int = DEFAULT_ROUNDS) -> bytes:
    """
    A bcrypt hash of C{password}.

    @raise ValueError: if the password is empty or longer than bcrypt allows.
    """
    import bcrypt

    if not password:
        raise ValueError("the password is empty")
    if len(password) > MAX_PASSWORD_BYTES:
        raise ValueError(
            f"the password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)"
        )
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds))


def checkPassword(password: bytes, passwordHash: bytes) -> bool:
    """
    Whether C{password} matches the bcrypt C{passwordHash}.  Slow on
    purpose: call it off the reactor thread.
    """
    import bcrypt

    if len(password) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(password, passwordHash)
    except ValueError:
        return False


# --------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------


@implementer(ICredentialsChecker)
class UsersChecker:
    """
    Check user names and passwords against a users file.

    The file is re-read when its modification time, size or inode changes
    (one C{stat} per login).  Password hashes are checked in the reactor's
    thread pool.  Recent successful checks are cached, keyed by the name and
    an HMAC-SHA256 of the password under a random per-process key (the
    plain password is never kept); an entry lasts C{cacheLifetime} seconds
    and is dropped when the user's record changes.

    The avatar ID of a successful login is the user's L{UserRecord}.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        path: str,
        reactor: Any = None,
        cacheSize: int = 1024,
        cacheLifetime: float = 300.0,
        checkPassword: Callable[[bytes, bytes], bool] = checkPassword,
    ) -> None:
        """
        @raise OSError: if the file cannot be read.
        @raise UsersFileError: if it is not valid.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.path = path
        self.reactor = reactor
        self.cacheSize = cacheSize
        self.cacheLifetime = cacheLifetime
        self._checkPassword = checkPassword
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[tuple[str, bytes], tuple[UserRecord, float]] = (
            OrderedDict()
        )
        self._stat: tuple[int, int, int] | None = None
        self.users: dict[str, UserRecord] = {}
        self._load(initial=True)

    def _statKey(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self, initial: bool = False) -> None:
        try:
            key = self._statKey()
        except OSError as e:
            if initial:
                raise
            if self._stat is not None:
                _log.error(
                    "cannot read users file {path}: {error}; keeping the users "
                    "read before",
                    path=self.path,
                    error=str(e),
                )
                self._stat = None
            return
        if key == self._stat:
            return
        try:
            users = readUsers(self.path)
        except (OSError, UsersFileError, UnicodeDecodeError) as e:
            if initial:
                raise
            _log.error(
                "users file {path} not re-read: {error}; keeping the users "
                "read before",
                path=self.path,
                error=str(e),
            )
            self._stat = key
            return
        if not initial:
            _log.info(
                "re-read users file {path}: {count} users", path=self.path,
                count=len(users),
            )
        self._stat = key
        self.users = users
        for cacheKey, (record, _) in list(self._cache.items()):
            if users.get(record.name) != record:
                del self._cache[cacheKey]

    def _cacheKey(self, name: str, password: bytes) -> tuple[str, bytes]:
        return name, hmac.new(self._key, password, hashlib.sha256).digest()

    def _cached(self, cacheKey: tuple[str, bytes], record: UserRecord) -> bool:
        entry = self._cache.get(cacheKey)
        if entry is None:
            return False
        cachedRecord, expiresAt = entry
        if cachedRecord != record or self.reactor.seconds() >= expiresAt:
            del self._cache[cacheKey]
            return False
        self._cache.move_to_end(cacheKey)
        return True

    def _remember(self, cacheKey: tuple[str, bytes], record: UserRecord) -> None:
        if self.cacheSize <= 0:
            return
        self._cache[cacheKey] = (record, self.reactor.seconds() + self.cacheLifetime)
        self._cache.move_to_end(cacheKey)
        while len(self._cache) > self.cacheSize:
            self._cache.popitem(last=False)

    def _verify(self, password: bytes, record: UserRecord) -> defer.Deferred:
        return deferToThreadPool(
            self.reactor,
            self.reactor.getThreadPool(),
            self._checkPassword,
            password,
            record.passwordHash,
        )

    def _decide(self, record: UserRecord) -> UserRecord:
        now = self.reactor.seconds()
        if record.expired(now):
            _log.info(
                "login refused for user {user}: the account expired at {expires}",
                user=record.name,
                expires=formatExpires(record.expires),  # type: ignore[arg-type]
            )
            raise UnauthorizedLogin("expired")
        return record

    def _refuseUnknown(self, password: bytes) -> defer.Deferred:
        """
        Refuse a name that is not in the file, but only after checking the
        password against some user's hash: a refusal takes as long as for
        a known name with a wrong password, so timing does not tell which
        names exist.
        """
        decoy = next(iter(self.users.values()), None)
        if decoy is None:
            return defer.fail(UnauthorizedLogin())

        def refuse(ignored: object) -> None:
            raise UnauthorizedLogin()

        return self._verify(password, decoy).addCallback(refuse)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        self._load()
        username, password = credentials.username, credentials.password
        if isinstance(username, bytes):
            try:
                username = username.decode("utf-8")
            except UnicodeDecodeError:
                return defer.fail(UnauthorizedLogin())
        if isinstance(password, str):
            password = password.encode("utf-8")
        record = self.users.get(username)
        if record is None:
            return self._refuseUnknown(password)
        cacheKey = self._cacheKey(username, password)
        if self._cached(cacheKey, record):
            return defer.maybeDeferred(self._decide, record)
        d = self._verify(password, record)

        def verified(ok: bool) -> UserRecord:
            if not ok:
                raise UnauthorizedLogin()
            # The file may have changed while the hash was checked.
            if self.users.get(username) == record:
                self._remember(cacheKey, record)
            return self._decide(record)

        d.addCallback(verified)
        return d
