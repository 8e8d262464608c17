# -*- test-case-name: tests.test_users -*-
"""
C{socksrelay-users}: manage a socksrelay users file (L{socksrelay.users}).

    socksrelay-users FILE add NAME [--groups a,b] [--max-sessions N]
        [--up BPS] [--down BPS] [--external IP] [--expires ISO8601]
        [--password-stdin] [--rounds N]
    socksrelay-users FILE passwd NAME [--password-stdin] [--rounds N]
    socksrelay-users FILE set NAME [attribute options] [--clear-ATTR ...]
    socksrelay-users FILE remove NAME
    socksrelay-users FILE list

Passwords come from a prompt (twice) or, with C{--password-stdin}, from
one line of standard input.  Every change rewrites the file atomically.

Exit codes: 0 done; 1 a problem with the request (unknown user, duplicate
user, bad value, unreadable or invalid file); 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, Sequence

from socksrelay.users import (
    ATTRIBUTE_NAMES,
    DEFAULT_ROUNDS,
    UserRecord,
    UsersFileError,
    checkName,
    formatAttributes,
    hashPassword,
    parseAttribute,
    readUsers,
    writeUsers,
)

#: (option, file key) for the attribute options of add and set.
ATTRIBUTE_OPTIONS = (
    ("groups", "groups", "comma-separated group names"),
    ("max-sessions", "max-sessions", "the most concurrent sessions"),
    ("up", "up", "bytes per second, client to destination"),
    ("down", "down", "bytes per second, destination to client"),
    ("external", "external", "the outgoing IP address"),
    ("expires", "expires", "ISO 8601 expiry time, e.g. 2027-01-01T00:00:00Z"),
)


class CommandError(Exception):
    """
    A request that cannot be done; the message is for the user.
    """


def _addAttributeOptions(parser: argparse.ArgumentParser, clear: bool) -> None:
    for option, _, help in ATTRIBUTE_OPTIONS:
        parser.add_argument(f"--{option}", metavar="VALUE", help=help)
        if clear:
            parser.add_argument(
                f"--clear-{option}", action="store_true",
                help=f"remove the {option} attribute",
            )


def _addPasswordOptions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true",
        help="read the password from one line of standard input",
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS,
        help=f"bcrypt cost (4-31, default {DEFAULT_ROUNDS})",
    )


def makeParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socksrelay-users",
        description="Manage a socksrelay users file (for --auth users:FILE).",
    )
    parser.add_argument("file", metavar="FILE", help="the users file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add = commands.add_parser("add", help="add a user")
    add.add_argument("name", metavar="NAME")
    _addPasswordOptions(add)
    _addAttributeOptions(add, clear=False)
    passwd = commands.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name", metavar="NAME")
    _addPasswordOptions(passwd)
    setp = commands.add_parser("set", help="set or clear a user's groups and limits")
    setp.add_argument("name", metavar="NAME")
    _addAttributeOptions(setp, clear=True)
    remove = commands.add_parser("remove", help="remove a user")
    remove.add_argument("name", metavar="NAME")
    commands.add_parser("list", help="list users and their attributes (no hashes)")
    return parser


def _attributeChanges(args: argparse.Namespace, clear: bool) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for option, key, _ in ATTRIBUTE_OPTIONS:
        dest = option.replace("-", "_")
        value = getattr(args, dest)
        cleared = clear and getattr(args, f"clear_{dest}")
        if value is not None and cleared:
            raise CommandError(f"--{option} and --clear-{option} together")
        if value is not None:
            try:
                attr, parsed = parseAttribute(key, value)
            except UsersFileError as e:
                raise CommandError(f"--{option}: {e}")
            changes[attr] = parsed
        elif cleared:
            changes[ATTRIBUTE_NAMES[key]] = frozenset() if key == "groups" else None
    return changes


def _readPassword(args: argparse.Namespace) -> bytes:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CommandError("the passwords do not match")
    if not password:
        raise CommandError("the password is empty")
    return password.encode("utf-8")


def _hash(args: argparse.Namespace) -> bytes:
    if not 4 <= args.rounds <= 31:
        raise CommandError("--rounds must be within 4-31")
    password = _readPassword(args)
    try:
        return hashPassword(password, args.rounds)
    except ValueError as e:
        raise CommandError(str(e))


def _load(path: str, mustExist: bool = True) -> dict[str, UserRecord]:
    try:
        return readUsers(path)
    except FileNotFoundError:
        if mustExist:
            raise CommandError(f"{path}: no such file")
        return {}
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}")
    except (UsersFileError, UnicodeDecodeError) as e:
        raise CommandError(str(e))


def _save(path: str, users: dict[str, UserRecord]) -> None:
    try:
        writeUsers(path, users.values())
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}")


def _existing(users: dict[str, UserRecord], name: str) -> UserRecord:
    if name not in users:
        raise CommandError(f"no user {name!r}")
    return users[name]


def describe(record: UserRecord) -> str:
    """
    One line about a user for C{list}: the name and attributes, no hash.
    """
    return " ".join([record.name, *formatAttributes(record)])


def run(args: argparse.Namespace, out: Any = None) -> None:
    """
    Do what C{args} asks.

    @raise CommandError: if it cannot be done.
    """
    out = out or sys.stdout
    path = args.file
    if args.command == "list":
        for record in _load(path).values():
            print(describe(record), file=out)
        return
    try:
        name = checkName(args.name)
    except UsersFileError as e:
        raise CommandError(str(e))
    if args.command == "add":
        users = _load(path, mustExist=False)
        if name in users:
            raise CommandError(f"user {name!r} already exists")
        changes = _attributeChanges(args, clear=False)
        users[name] = UserRecord(name, _hash(args), **changes)
        _save(path, users)
        print(f"added user {name}", file=out)
    elif args.command == "passwd":
        users = _load(path)
        record = _existing(users, name)
        users[name] = record.withAttributes(passwordHash=_hash(args))
        _save(path, users)
        print(f"changed the password of {name}", file=out)
    elif args.command == "set":
        users = _load(path)
        record = _existing(users, name)
        changes = _attributeChanges(args, clear=True)
        if not changes:
            raise CommandError("nothing to set: give attribute options")
        users[name] = record.withAttributes(**changes)
        _save(path, users)
        print(f"updated user {name}", file=out)
    elif args.command == "remove":
        users = _load(path)
        _existing(users, name)
        del users[name]
        _save(path, users)
        print(f"removed user {name}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = makeParser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except CommandError as e:
        print(f"socksrelay-users: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("socksrelay-users: interrupted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
