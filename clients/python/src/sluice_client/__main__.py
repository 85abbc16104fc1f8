"""``python -m sluice_client keygen PATH``: makes a key pair, writes the
private key to PATH (PEM, readable by its owner only) and prints the public
key for ``sluice gateway key add --public-key``; ``python -m sluice_client
pubkey PATH`` prints it again."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .keys import generate_key, load_private_key, private_key_pem, public_key_b64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice_client", description=__doc__
    )
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="make a key pair; print the public key")
    keygen.add_argument(
        "path", type=Path, help="where to write the private key (PEM); must not exist"
    )
    pubkey = commands.add_parser(
        "pubkey", help="print the public key of a private key file"
    )
    pubkey.add_argument("path", type=Path, help="the private key (PEM or 32 raw bytes)")
    args = parser.parse_args(argv)

    if args.command == "keygen":
        key = generate_key()
        # Created with mode 0600 and never overwritten: a private key is not
        # to be replaced by accident, nor readable by others for a moment.
        try:
            fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            print(f"{args.path} exists already", file=sys.stderr)
            return 1
        with os.fdopen(fd, "wb") as file:
            file.write(private_key_pem(key))
    else:
        key = load_private_key(args.path.read_bytes())
    print(public_key_b64(key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
