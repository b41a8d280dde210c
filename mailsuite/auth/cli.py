"""Admin commands for the directory: ``user`` (with ``user senders``), ``alias`` and ``domain``.

Registered by :mod:`mailsuite.cli` through :func:`register`.  They work on
the SQLite file directly, so a running server sees the change at its next
lookup.  Run them as the user the server runs as (the database is 0600).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from typing import Any

from mailsuite.auth.addresses import normalise_address
from mailsuite.auth.directory import DirectoryError, SQLiteDirectory
from mailsuite.auth.service import open_directory
from mailsuite.cli import CommandError, load_config, read_password

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from "500M", "2G", "1024" (binary units); 0 means unlimited."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 1048576, 500M, 2G)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or greater")
    return value


def _directory(args: argparse.Namespace) -> SQLiteDirectory:
    return open_directory(load_config(args))


def _run(action: Any) -> Any:
    def command(args: argparse.Namespace) -> int:
        try:
            return int(action(args) or 0)
        except DirectoryError as e:
            raise CommandError(str(e)) from None
        except (sqlite3.Error, OSError) as e:
            raise CommandError(f"cannot use the user directory: {e} (run as the user the server runs as?)") from None

    return command


def _password_or_hash(args: argparse.Namespace) -> dict[str, str]:
    if args.hash_stdin:
        stored = sys.stdin.readline().strip()
        if not stored:
            raise CommandError("no hash on stdin")
        return {"password_hash": stored}
    return {"password": read_password(args)}


def _fmt_quota(value: int | None, unit: str = "") -> str:
    if value is None:
        return "default"
    return "unlimited" if value == 0 else f"{value}{unit}"


# -- user ------------------------------------------------------------------------

def _user_add(args: argparse.Namespace) -> None:
    directory = _directory(args)
    address = normalise_address(args.address)  # bad address or foreign domain: fail before prompting
    directory.require_local(address)
    if directory.find_user(address) is not None:
        raise DirectoryError(f"user {address} exists already")
    secret = _password_or_hash(args)
    address = directory.add_user(address, quota_bytes=args.quota, quota_messages=args.quota_messages, **secret)
    print(f"user {address} added")


def _user_passwd(args: argparse.Namespace) -> None:
    directory = _directory(args)
    if directory.find_user(normalise_address(args.address)) is None:  # fail before prompting
        raise DirectoryError(f"no such user: {args.address}")
    directory.set_password(args.address, **_password_or_hash(args))
    print(f"password of {args.address} changed")


def _user_quota(args: argparse.Namespace) -> None:
    _directory(args).set_quota(args.address, args.quota, args.quota_messages)
    print(f"quota of {args.address}: {_fmt_quota(args.quota, ' bytes')}, {_fmt_quota(args.quota_messages, ' messages')}")


def _user_remove(args: argparse.Namespace) -> None:
    _directory(args).remove_user(args.address)
    print(f"user {args.address} removed (their mail stays under the data root's mail/ folder)")


def _user_list(args: argparse.Namespace) -> None:
    for user in _directory(args).list_users(args.domain):
        if args.verbose:
            print(f"{user.address}\tquota={_fmt_quota(user.quota_bytes)}\tmessages={_fmt_quota(user.quota_messages)}")
        else:
            print(user.address)


def _senders_add(args: argparse.Namespace) -> None:
    added = _directory(args).add_senders(args.address, args.senders)
    print(f"{args.address} may now also send as {', '.join(added)}")


def _senders_remove(args: argparse.Namespace) -> None:
    removed = _directory(args).remove_senders(args.address, args.senders)
    if args.senders:
        print(f"{args.address} may no longer send as {', '.join(args.senders)}")
    else:
        print(f"{args.address}: {removed} extra sender address(es) removed")


def _senders_list(args: argparse.Namespace) -> None:
    directory = _directory(args)
    if args.address is None:
        for user, extra in directory.list_senders():
            print(f"{user}\t{', '.join(extra)}")
        return
    for address, why in directory.own_sender_addresses(args.address):
        print(f"{address}\t{why}")


# -- alias -----------------------------------------------------------------------

def _alias_add(args: argparse.Namespace) -> None:
    added = _directory(args).add_alias(args.source, args.targets)
    print(f"alias {args.source} -> {', '.join(added)} added")


def _alias_remove(args: argparse.Namespace) -> None:
    _directory(args).remove_alias(args.source, args.targets)
    print(f"alias {args.source}{' -> ' + ', '.join(args.targets) if args.targets else ''} removed")


def _alias_list(args: argparse.Namespace) -> None:
    for source, targets in _directory(args).list_aliases(args.domain):
        print(f"{source}\t{', '.join(targets)}")


# -- domain ----------------------------------------------------------------------

def _domain_add(args: argparse.Namespace) -> None:
    print(f"domain {_directory(args).add_domain(args.domain)} added")


def _domain_remove(args: argparse.Namespace) -> None:
    _directory(args).remove_domain(args.domain, force=args.force)
    print(f"domain {args.domain} removed")


def _domain_list(args: argparse.Namespace) -> None:
    for domain in _directory(args).list_domains():
        print(domain)


def _secret_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin instead of prompting")
    group.add_argument("--hash-stdin", action="store_true", help="read an existing hash from stdin (argon2, or Dovecot {ARGON2ID}, {BLF-CRYPT}, {SHA512-CRYPT}) to migrate a user")


def _quota_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quota", type=parse_size, metavar="SIZE", help="mailbox size limit, e.g. 500M or 2G (0: unlimited; default: the configured [quota])")
    parser.add_argument("--quota-messages", type=_non_negative, metavar="N", help="message count limit (0: unlimited; default: the configured [quota])")


def _group(subparsers: Any, name: str, help: str) -> Any:
    parser = subparsers.add_parser(name, help=help, description=help)
    inner = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    inner.required = True
    return inner


def register(subparsers: Any) -> None:
    """Add the ``user``, ``alias`` and ``domain`` commands to the top-level parser."""
    users = _group(subparsers, "user", "manage users (mailboxes that can log in)")
    p = users.add_parser("add", help="add a user", description="Add a user; the password is asked for twice, or read from stdin with --password-stdin.")
    p.add_argument("address", help="full address, e.g. alice@example.org (its domain must be local)")
    _secret_options(p)
    _quota_options(p)
    p.set_defaults(func=_run(_user_add))
    p = users.add_parser("passwd", help="change a user's password", description="Set a new password (prompt, --password-stdin or --hash-stdin).")
    p.add_argument("address")
    _secret_options(p)
    p.set_defaults(func=_run(_user_passwd))
    p = users.add_parser("quota", help="change a user's quota", description="Set a user's own quota; leave an option out to use the configured default.")
    p.add_argument("address")
    _quota_options(p)
    p.set_defaults(func=_run(_user_quota))
    p = users.add_parser("remove", help="remove a user", description="Remove a user from the directory; their stored mail is kept on disk.")
    p.add_argument("address")
    p.set_defaults(func=_run(_user_remove))
    p = users.add_parser("list", help="list users", description="List users, one address per line.")
    p.add_argument("--domain", help="only this domain")
    p.add_argument("-v", "--verbose", action="store_true", help="show quotas too")
    p.set_defaults(func=_run(_user_list))
    senders = users.add_parser("senders", help="extra addresses a user may send as",
                               description="A user may send (MAIL FROM, and the From and Sender header fields) as their own address "
                                           "and aliases leading only to them; these commands manage extra addresses, "
                                           "like Postfix's smtpd_sender_login_maps.")
    inner = senders.add_subparsers(dest="senders_command", metavar="ACTION")
    inner.required = True
    p = inner.add_parser("add", help="let a user send as more addresses",
                         description="Let ADDRESS also send as each SENDER: an address (any domain) or @domain for every address of a domain.")
    p.add_argument("address", help="the user")
    p.add_argument("senders", nargs="+", metavar="SENDER", help="an address, or @domain")
    p.set_defaults(func=_run(_senders_add))
    p = inner.add_parser("remove", help="take extra sender addresses back", description="Remove the SENDERs named, or all of ADDRESS's extra sender addresses.")
    p.add_argument("address", help="the user")
    p.add_argument("senders", nargs="*", metavar="SENDER")
    p.set_defaults(func=_run(_senders_remove))
    p = inner.add_parser("list", help="list sender addresses",
                         description="With ADDRESS: every address that user may send as, tab, why (own, alias, extra). "
                                     "Without: each user with extra addresses, tab, the extras.")
    p.add_argument("address", nargs="?", help="the user")
    p.set_defaults(func=_run(_senders_list))

    aliases = _group(subparsers, "alias", "manage aliases (addresses forwarding to others) and catch-alls")
    p = aliases.add_parser("add", help="forward an address to one or more addresses",
                           description="Forward SOURCE to each TARGET (local or remote). SOURCE @domain (or *@domain) is the domain's catch-all.")
    p.add_argument("source", help="alias address, or @domain for a catch-all")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="where copies go")
    p.set_defaults(func=_run(_alias_add))
    p = aliases.add_parser("remove", help="remove an alias or some of its targets", description="Remove SOURCE entirely, or only the TARGETs named.")
    p.add_argument("source")
    p.add_argument("targets", nargs="*", metavar="TARGET")
    p.set_defaults(func=_run(_alias_remove))
    p = aliases.add_parser("list", help="list aliases", description="List aliases: source, tab, targets.")
    p.add_argument("--domain", help="only this domain")
    p.set_defaults(func=_run(_alias_list))

    domains = _group(subparsers, "domain", "manage local domains (mail for them is stored here)")
    p = domains.add_parser("add", help="add a local domain", description="Make DOMAIN local: its users and aliases can be created.")
    p.add_argument("domain")
    p.set_defaults(func=_run(_domain_add))
    p = domains.add_parser("remove", help="remove a local domain", description="Stop accepting mail for DOMAIN (refused while it has users or aliases unless --force).")
    p.add_argument("domain")
    p.add_argument("--force", action="store_true", help="also remove the domain's users and aliases")
    p.set_defaults(func=_run(_domain_remove))
    p = domains.add_parser("list", help="list local domains", description="List local domains (from the configuration and the directory).")
    p.set_defaults(func=_run(_domain_list))
