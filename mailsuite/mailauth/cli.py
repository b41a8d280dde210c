"""``mailsuite dkim ...``: make DKIM keys and show the DNS records to publish.

* ``mailsuite dkim keygen DOMAIN [--selector S] [--algorithm rsa|ed25519] [--bits N] [--force]``
  writes ``<key_dir>/<DOMAIN>/<S>.key`` (0600) and prints the exact TXT record.
  The default selector names the algorithm and the month (``rsa202611``), so
  an RSA and an Ed25519 key can coexist and a rotated key gets a new name.
* ``mailsuite dkim show [DOMAIN]`` prints the records of the existing keys.

A running server signs with a new key from the next message on; publish
the record first (or list the old selector alone in ``mailauth.selectors``
until DNS has it).
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from mailsuite.cli import EXIT_OK, EXIT_USAGE, CommandError, load_config
from mailsuite.errors import InvalidName
from mailsuite.mailauth.keys import ALGORITHMS, check_domain, generate_key, load_key


def default_selector(algorithm: str, today: datetime.date | None = None) -> str:
    """``rsa202611`` / ``ed202611``: algorithm and month, unique per rotation."""
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    prefix = "ed" if algorithm == "ed25519" else "rsa"
    return f"{prefix}{today:%Y%m}"


def _keygen(args: argparse.Namespace) -> int:
    from mailsuite.mailauth.service import key_dir

    config = load_config(args)
    try:
        domain = check_domain(args.domain)
        selector = args.selector or default_selector(args.algorithm)
        key, path = generate_key(key_dir(config), domain, selector, args.algorithm, bits=args.bits, force=args.force)
    except InvalidName as e:
        raise CommandError(e.text, EXIT_USAGE) from None
    except FileExistsError:
        raise CommandError(f"a key for selector {selector!r} of {domain} exists already: choose another --selector or use --force") from None
    except ValueError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    except OSError as e:
        raise CommandError(f"cannot write the key: {e}") from None
    print(f"DKIM key for {key.domain} ({key.algorithm}, selector {key.selector}) written to {path}")
    print("Publish this DNS TXT record (zone-file syntax; the strings join into one value):")
    print(key.zone_line())
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from mailsuite.mailauth.service import key_dir

    root = key_dir(load_config(args))
    domains = [check_domain(args.domain)] if args.domain else sorted(p.name for p in root.glob("*") if p.is_dir())
    for domain in domains:
        for path in sorted((root / domain).glob("*.key")):
            try:
                print(load_key(path, domain, path.stem).zone_line())
            except (OSError, ValueError, TypeError) as e:
                print(f"; {path}: unreadable key ({e})")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``mailsuite dkim keygen|show``."""
    parser = subparsers.add_parser("dkim", help="DKIM signing keys", description="Make DKIM keys and print the DNS records to publish.")
    inner = parser.add_subparsers(dest="dkim_command", metavar="ACTION")
    inner.required = True
    p = inner.add_parser("keygen", help="make a signing key for a domain",
                         description="Write a DKIM private key under <data_root>/dkim/DOMAIN/ (or mailauth.key_dir) "
                         "and print the TXT record to publish.")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("--selector", "-s", help="DKIM selector (default: rsaYYYYMM or edYYYYMM)")
    p.add_argument("--algorithm", "-a", choices=ALGORITHMS, default="rsa", help="rsa (rsa-sha256, default) or ed25519 (RFC 8463)")
    p.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    p.add_argument("--force", action="store_true", help="replace an existing key of that selector")
    p.set_defaults(func=_keygen)
    p = inner.add_parser("show", help="print the DNS records of existing keys", description="Print the TXT record of every key (of DOMAIN).")
    p.add_argument("domain", metavar="DOMAIN", nargs="?")
    p.set_defaults(func=_show)
