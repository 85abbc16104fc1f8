"""What the client does on its own, without a server: keys, and the checks
it makes before sending."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sluice_client import (
    Event,
    generate_key,
    load_private_key,
    private_key_pem,
    public_key_b64,
)


def test_a_key_survives_pem_and_raw_bytes() -> None:
    key = generate_key()
    assert public_key_b64(load_private_key(private_key_pem(key))) == public_key_b64(key)
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    assert public_key_b64(load_private_key(seed)) == public_key_b64(key)
    assert len(base64.b64decode(public_key_b64(key), validate=True)) == 32


def test_a_key_of_another_kind_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="Ed25519"):
        load_private_key(other)


def test_keygen_writes_a_private_key_for_its_owner_only_and_prints_the_public_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key.pem"
    made = subprocess.run(
        [sys.executable, "-m", "sluice_client", "keygen", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert made.stdout.strip() == public_key_b64(load_private_key(path.read_bytes()))
    assert path.stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [sys.executable, "-m", "sluice_client", "keygen", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0 and "exists" in again.stderr, "never overwrites a key"


def test_naive_times_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Event("a.b", 1, deliver_at=datetime(2030, 1, 1)).to_frame()
    frame = Event(
        "a.b", 1, deliver_at=datetime.fromisoformat("2030-01-01T00:00:00+02:00")
    ).to_frame()
    assert frame == {
        "subject": "a.b",
        "payload": 1,
        "deliver_at": "2030-01-01T00:00:00+02:00",
    }
