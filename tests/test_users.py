"""
Tests for L{socksrelay.users} (the users file and its checker), the realm's
use of user records, and the C{socksrelay-users} command run as a
subprocess.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile

import bcrypt

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from socksrelay.auth import SOCKSRealm
from socksrelay.interfaces import ISOCKSUser, IUserRecord
from socksrelay.users import (
    UserRecord,
    UsersChecker,
    UsersFileError,
    checkPassword,
    formatUsers,
    parseUsers,
    readUsers,
    writeUsers,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4))
OTHER_HASH = bcrypt.hashpw(b"other", bcrypt.gensalt(4))


class FakeThreadPool:
    """
    A thread pool that runs work at once and remembers what it ran.
    """

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        self.calls.append((f, args))
        try:
            result = f(*args, **kwargs)
        except BaseException as e:  # pragma: no cover
            onResult(False, e)
        else:
            onResult(True, result)


class FakeReactor(Clock):
    """
    A clock with a fake thread pool and a C{callFromThread} that calls at
    once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = FakeThreadPool()

    def getThreadPool(self):
        return self.pool

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class FileFormatTests(SynchronousTestCase):
    """
    L{parseUsers}, L{formatUsers} and L{writeUsers}.
    """

    def test_parseAllAttributes(self) -> None:
        """
        A line with every attribute parses into a record with those values.
        """
        text = (
            "# comment\n\n"
            f"alice:{HASH.decode()}:groups=staff,admins;max-sessions=4;up=1000000;"
            "down=2000000;external=192.0.2.10;expires=2027-01-01T00:00:00Z\n"
            f"bob:{OTHER_HASH.decode()}:\n"
        )
        users = parseUsers(text)
        self.assertEqual(list(users), ["alice", "bob"])
        alice = users["alice"]
        self.assertEqual(alice.groups, frozenset({"staff", "admins"}))
        self.assertEqual(alice.maxSessions, 4)
        self.assertEqual(alice.bandwidthUp, 1000000)
        self.assertEqual(alice.bandwidthDown, 2000000)
        self.assertEqual(alice.external, "192.0.2.10")
        self.assertEqual(alice.expires, 1798761600.0)
        self.assertEqual(alice.passwordHash, HASH)
        bob = users["bob"]
        self.assertEqual(
            (bob.groups, bob.maxSessions, bob.bandwidthUp, bob.external, bob.expires),
            (frozenset(), None, None, None, None),
        )
        self.assertTrue(IUserRecord.providedBy(alice))

    def test_roundTrip(self) -> None:
        """
        Formatting records and parsing the text gives equal records.
        """
        records = [
            UserRecord("alice", HASH, frozenset({"a", "b"}), 3, 10, 20,
                       "2001:db8::1", 1798761600.5),
            UserRecord("bob", OTHER_HASH),
        ]
        self.assertEqual(list(parseUsers(formatUsers(records)).values()), records)

    def test_badLinesNameTheLine(self) -> None:
        """
        Each kind of bad line is refused with an error naming its line number
        and the problem.
        """
        good = f"alice:{HASH.decode()}:\n"
        cases = [
            ("bob\n", "expected NAME:HASH:ATTRIBUTES"),
            ("bob:plain:\n", "not a bcrypt hash"),
            (f"bob:{HASH.decode()}:colour=red\n", "unknown attribute 'colour'"),
            (f"bob:{HASH.decode()}:up=fast\n", "up must be a whole number"),
            (f"bob:{HASH.decode()}:max-sessions=0\n", "at least 1"),
            (f"bob:{HASH.decode()}:external=nowhere\n", "IP address"),
            (f"bob:{HASH.decode()}:expires=tomorrow\n", "ISO 8601"),
            (f"bob:{HASH.decode()}:groups\n", "expected key=value"),
            (f"bob:{HASH.decode()}:up=1;up=2\n", "given twice"),
            (good, "appears twice"),
        ]
        for line, problem in cases:
            with self.assertRaises(UsersFileError) as caught:
                parseUsers("# header\n" + good + line)
            self.assertIn("line 3:", str(caught.exception))
            self.assertIn(problem, str(caught.exception))
            self.assertEqual(caught.exception.lineNumber, 3)

    def test_writeIsAtomicAndPrivate(self) -> None:
        """
        L{writeUsers} replaces the file with a mode 0600 one, leaving no
        temporary file behind, and L{readUsers} reads it back.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        path = os.path.join(directory, "users.db")
        with open(path, "w") as f:
            f.write("old\n")
        writeUsers(path, [UserRecord("alice", HASH, frozenset({"x"}))])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(directory), ["users.db"])
        self.assertEqual(readUsers(path)["alice"].groups, frozenset({"x"}))


class CheckerTestsMixin:
    def makeChecker(self, records, **kw):
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        self.path = os.path.join(directory, "users.db")
        writeUsers(self.path, records)
        self.reactor = FakeReactor()
        self.hashed: list[bytes] = []

        def spy(password, passwordHash):
            self.hashed.append(passwordHash)
            return checkPassword(password, passwordHash)

        return UsersChecker(self.path, reactor=self.reactor, checkPassword=spy, **kw)

    def login(self, checker, name, password):
        return self.successResultOf(
            checker.requestAvatarId(UsernamePassword(name.encode(), password.encode()))
        )

    def refused(self, checker, name, password):
        failure = self.failureResultOf(
            checker.requestAvatarId(UsernamePassword(name.encode(), password.encode()))
        )
        failure.trap(UnauthorizedLogin)
        return failure

    def rewrite(self, records):
        writeUsers(self.path, records)
        # Make sure the change is visible even within one mtime tick.
        st = os.stat(self.path)
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


class CheckerTests(CheckerTestsMixin, SynchronousTestCase):
    """
    L{UsersChecker}.
    """

    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_rightPassword(self) -> None:
        """
        The right password gives the user's record as the avatar ID.
        """
        record = UserRecord("alice", HASH, frozenset({"g"}), maxSessions=2)
        checker = self.makeChecker([record])
        self.assertEqual(self.login(checker, "alice", "s3cret"), record)

    def test_wrongPasswordAndUnknownUser(self) -> None:
        """
        A wrong password and an unknown user are both refused.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)])
        self.refused(checker, "alice", "nope")
        self.refused(checker, "mallory", "s3cret")

    def test_unknownUserCostsAHashCheck(self) -> None:
        """
        An unknown name is refused only after a bcrypt check (in the thread
        pool, against a user's hash), like a known name with a wrong
        password, so response time does not reveal which names exist.  The
        refusal holds even with that user's right password.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)])
        self.refused(checker, "mallory", "s3cret")
        self.assertEqual(self.hashed, [HASH])
        self.assertEqual(len(self.reactor.pool.calls), 1)

    def test_unknownUserEmptyFile(self) -> None:
        """
        With no user in the file there is nothing to reveal: an unknown
        name is refused at once, without a hash check.
        """
        checker = self.makeChecker([])
        self.refused(checker, "mallory", "s3cret")
        self.assertEqual(self.hashed, [])

    def test_hashingInThreadPool(self) -> None:
        """
        The bcrypt check runs in the reactor's thread pool.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)])
        self.login(checker, "alice", "s3cret")
        self.assertEqual(len(self.reactor.pool.calls), 1)
        self.assertEqual(self.reactor.pool.calls[0][1], (b"s3cret", HASH))

    def test_cacheHitSkipsBcrypt(self) -> None:
        """
        A second login with the same password does not hash again, and the
        cache holds no plain password.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)])
        self.login(checker, "alice", "s3cret")
        self.login(checker, "alice", "s3cret")
        self.assertEqual(len(self.hashed), 1)
        self.refused(checker, "alice", "wrong")
        self.assertEqual(len(self.hashed), 2)
        for key in checker._cache:
            self.assertNotIn(b"s3cret", key[1])
            self.assertEqual(len(key[1]), 32)

    def test_cacheExpires(self) -> None:
        """
        A cached check is not used after its lifetime.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)], cacheLifetime=60)
        self.login(checker, "alice", "s3cret")
        self.reactor.advance(61)
        self.login(checker, "alice", "s3cret")
        self.assertEqual(len(self.hashed), 2)

    def test_cacheBounded(self) -> None:
        """
        The cache keeps no more than C{cacheSize} entries.
        """
        checker = self.makeChecker(
            [UserRecord("alice", HASH), UserRecord("bob", OTHER_HASH)], cacheSize=1
        )
        self.login(checker, "alice", "s3cret")
        self.login(checker, "bob", "other")
        self.assertEqual(len(checker._cache), 1)
        self.login(checker, "alice", "s3cret")
        self.assertEqual(len(self.hashed), 3)

    def test_fileReReadAndCacheDropped(self) -> None:
        """
        A changed file is re-read at the next login: a new password works,
        the old one (though cached) no longer does, and a new attribute shows.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)])
        self.login(checker, "alice", "s3cret")
        self.rewrite([UserRecord("alice", OTHER_HASH, frozenset({"new"}))])
        self.refused(checker, "alice", "s3cret")
        self.assertEqual(self.login(checker, "alice", "other").groups, frozenset({"new"}))

    def test_attributeChangeDropsCache(self) -> None:
        """
        Changing only a user's attributes drops their cached check.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)])
        self.login(checker, "alice", "s3cret")
        self.rewrite([UserRecord("alice", HASH, maxSessions=1)])
        self.assertEqual(self.login(checker, "alice", "s3cret").maxSessions, 1)
        self.assertEqual(len(self.hashed), 2)

    def test_badFileKeepsOldUsers(self) -> None:
        """
        A file made invalid after start is logged and the old users stay.
        """
        checker = self.makeChecker([UserRecord("alice", HASH)])
        with open(self.path, "a") as f:
            f.write("garbage\n")
        self.login(checker, "alice", "s3cret")
        messages = [formatEvent(e) for e in self.events]
        self.assertTrue(any("not re-read" in m and "line 4" in m for m in messages))

    def test_expiredRefusedWithLog(self) -> None:
        """
        An expired user with the right password is refused, with a log line
        that names the user and says why, and never the password.
        """
        checker = self.makeChecker([UserRecord("alice", HASH, expires=1000.0)])
        self.reactor.advance(999)
        self.login(checker, "alice", "s3cret")
        self.reactor.advance(1)
        self.refused(checker, "alice", "s3cret")
        messages = [formatEvent(e) for e in self.events]
        expired = [m for m in messages if "expired" in m]
        self.assertEqual(len(expired), 1)
        self.assertIn("alice", expired[0])
        self.assertFalse(any("s3cret" in m for m in messages))

    def test_missingFileIsAnError(self) -> None:
        """
        The checker cannot be made for a missing file.
        """
        with self.assertRaises(OSError):
            UsersChecker("/nonexistent/users.db", reactor=FakeReactor())

    def test_pluginAndTap(self) -> None:
        """
        C{--auth users:FILE} makes a L{UsersChecker}; a missing file is a
        usage error.
        """
        from twisted.python import usage

        from socksrelay.tap import Options

        self.makeChecker([UserRecord("alice", HASH)])
        options = Options()
        options.parseOptions(["--auth", f"users:{self.path}"])
        self.assertIsInstance(options["credCheckers"][0], UsersChecker)
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--auth", "users:/nonexistent/users.db"])
        self.assertIn("/nonexistent/users.db", str(caught.exception))

    def test_reloadBuildsPortal(self) -> None:
        """
        The SIGHUP path (L{socksrelay.reload.buildPortal}) builds a portal
        from a users description.
        """
        from socksrelay.reload import buildPortal
        from socksrelay.tap import _bytesInMemoryChecker

        self.makeChecker([UserRecord("alice", HASH)])
        portal = buildPortal([f"users:{self.path}"], _bytesInMemoryChecker)
        self.assertIsNotNone(portal)


class RealmTests(CheckerTestsMixin, SynchronousTestCase):
    """
    L{SOCKSRealm} gives avatars with a user's policy, or the defaults.
    """

    def test_recordAttributes(self) -> None:
        """
        A login through the users checker gives an avatar with the user's
        name, groups and limits.
        """
        record = UserRecord("alice", HASH, frozenset({"g"}), 4, 100, 200,
                            "192.0.2.1", 2e9)
        checker = self.makeChecker([record])
        portal = Portal(SOCKSRealm(), [checker])
        _, avatar, _ = self.successResultOf(
            portal.login(UsernamePassword(b"alice", b"s3cret"), None, ISOCKSUser)
        )
        self.assertEqual(
            (avatar.username, avatar.groups, avatar.maxSessions, avatar.bandwidthUp,
             avatar.bandwidthDown, avatar.external, avatar.expires),
            ("alice", frozenset({"g"}), 4, 100, 200, "192.0.2.1", 2e9),
        )

    def test_memoryCheckerDefaults(self) -> None:
        """
        Twisted's in-memory checker (a yes/no backend) gives the defaults.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(bob=b"pw")
        checker.users = {b"bob": b"pw"}
        portal = Portal(SOCKSRealm(), [checker])
        _, avatar, _ = self.successResultOf(
            portal.login(UsernamePassword(b"bob", b"pw"), None, ISOCKSUser)
        )
        self.assertEqual(
            (avatar.username, avatar.groups, avatar.maxSessions, avatar.bandwidthUp,
             avatar.bandwidthDown, avatar.external, avatar.expires),
            ("bob", frozenset(), None, None, None, None, None),
        )

    def test_fileCheckerDefaults(self) -> None:
        """
        Twisted's C{file:} checker gives the defaults too.
        """
        from twisted.cred.checkers import FilePasswordDB

        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        path = os.path.join(directory, "pw")
        with open(path, "w") as f:
            f.write("carol:pw\n")
        portal = Portal(SOCKSRealm(), [FilePasswordDB(path)])
        _, avatar, _ = self.successResultOf(
            portal.login(UsernamePassword(b"carol", b"pw"), None, ISOCKSUser)
        )
        self.assertEqual((avatar.username, avatar.groups, avatar.external),
                         ("carol", frozenset(), None))


class CommandTests(SynchronousTestCase):
    """
    C{socksrelay-users} end to end, as a subprocess.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(directory))
        self.path = os.path.join(directory, "users.db")

    def cmd(self, *args, stdin=""):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT
        return subprocess.run(
            [sys.executable, "-m", "socksrelay.userscmd", self.path, *args],
            input=stdin.encode(), capture_output=True, env=env, timeout=60,
        )

    def test_addListPasswdSetRemove(self) -> None:
        """
        Add, list, passwd, set and remove change the file as they say, and
        list shows no hash.
        """
        result = self.cmd("add", "alice", "--password-stdin", "--rounds", "4",
                          "--groups", "staff,ops", "--max-sessions", "4",
                          "--up", "1000000", "--down", "2000000",
                          "--external", "192.0.2.10",
                          "--expires", "2027-01-01T00:00:00Z", stdin="pw1\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        alice = readUsers(self.path)["alice"]
        self.assertTrue(checkPassword(b"pw1", alice.passwordHash))
        self.assertEqual(alice.maxSessions, 4)
        listed = self.cmd("list")
        self.assertEqual(listed.returncode, 0)
        self.assertEqual(
            listed.stdout.decode().strip(),
            "alice groups=ops,staff max-sessions=4 up=1000000 down=2000000 "
            "external=192.0.2.10 expires=2027-01-01T00:00:00Z",
        )
        self.assertNotIn(b"$2b$", listed.stdout)
        self.assertEqual(
            self.cmd("passwd", "alice", "--password-stdin", "--rounds", "4",
                     stdin="pw2\n").returncode, 0)
        alice = readUsers(self.path)["alice"]
        self.assertTrue(checkPassword(b"pw2", alice.passwordHash))
        self.assertEqual(
            self.cmd("set", "alice", "--clear-up", "--groups", "x",
                     "--max-sessions", "2").returncode, 0)
        alice = readUsers(self.path)["alice"]
        self.assertEqual((alice.bandwidthUp, alice.groups, alice.maxSessions,
                          alice.bandwidthDown), (None, frozenset({"x"}), 2, 2000000))
        self.assertEqual(self.cmd("remove", "alice").returncode, 0)
        self.assertEqual(readUsers(self.path), {})

    def test_errors(self) -> None:
        """
        A duplicate, an unknown user, a bad value, an empty password and a
        missing file each exit 1 with a clear message and leave the file.
        """
        missing = self.cmd("list")
        self.assertEqual(missing.returncode, 1)
        self.assertIn(b"no such file", missing.stderr)
        self.assertEqual(self.cmd("add", "alice", "--password-stdin", "--rounds", "4",
                                  stdin="pw\n").returncode, 0)
        with open(self.path, "rb") as f:
            before = f.read()
        cases = [
            (("add", "alice", "--password-stdin", "--rounds", "4"), "pw\n",
             b"already exists"),
            (("passwd", "bob", "--password-stdin", "--rounds", "4"), "pw\n",
             b"no user 'bob'"),
            (("set", "bob", "--up", "5"), "", b"no user 'bob'"),
            (("remove", "bob"), "", b"no user 'bob'"),
            (("set", "alice", "--up", "fast"), "", b"--up: up must be a whole number"),
            (("set", "alice", "--expires", "soon"), "", b"ISO 8601"),
            (("set", "alice", "--up", "5", "--clear-up"), "", b"together"),
            (("add", "bob", "--password-stdin", "--rounds", "4"), "\n",
             b"password is empty"),
            (("add", "b:ob", "--password-stdin", "--rounds", "4"), "pw\n",
             b"bad user name"),
        ]
        for args, stdin, message in cases:
            result = self.cmd(*args, stdin=stdin)
            self.assertEqual(result.returncode, 1, args)
            self.assertIn(message, result.stderr, args)
            self.assertIn(b"socksrelay-users: error:", result.stderr)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(self.cmd("frobnicate").returncode, 2)
