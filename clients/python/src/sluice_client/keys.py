"""Ed25519 keys: making one, storing it, loading it, and what is signed at
login. The private key never leaves the client; the server only ever sees
the public key (registered with ``sluice gateway key add``) and a signature
over a nonce that is new for every connection."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PROTOCOL = "sluice.v1"

#: What a client signs at login, before the nonce and its public key.
AUTH_CONTEXT = b"sluice.v1 gateway authentication\0"


def generate_key() -> Ed25519PrivateKey:
    """A new random private key."""
    return Ed25519PrivateKey.generate()


def load_private_key(data: bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """A private key from its 32 raw bytes (the seed) or from PEM (PKCS#8,
    as ``openssl genpkey -algorithm ed25519`` and :func:`private_key_pem`
    write it; ``password`` if it is encrypted)."""
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    key = serialization.load_pem_private_key(data, password=password)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"the gateway takes Ed25519 keys, this is a {type(key).__name__}"
        )
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The private key as unencrypted PEM (PKCS#8), to keep in a file only
    its owner can read; :func:`load_private_key` reads it back."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the key's public half."""
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The public key as ``sluice gateway key add --public-key`` takes it:
    32 bytes in standard base64."""
    return base64.b64encode(public_key_bytes(key)).decode("ascii")


def sign_login(key: Ed25519PrivateKey, nonce: bytes) -> bytes:
    """The login signature: over the context string, the challenge's nonce
    and the public key, so that it is good for this connection and this key
    only (a replay, or the same signature with another key, fails)."""
    if len(nonce) != 32:
        raise ValueError(f"a challenge nonce is 32 bytes, this one {len(nonce)}")
    return key.sign(AUTH_CONTEXT + nonce + public_key_bytes(key))
