//! Login: the server's nonce, and the check of the client's signature over
//! the context string, the nonce and its public key.

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use rand::Rng;

use crate::protocol::AUTH_CONTEXT;

/// A fresh nonce for one connection.
pub(crate) fn nonce() -> [u8; 32] {
    rand::rng().random()
}

pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a client signs: the context, the nonce, its public key.
pub fn signed_message(nonce: &[u8; 32], public_key: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(AUTH_CONTEXT.len() + 64);
    message.extend_from_slice(AUTH_CONTEXT);
    message.extend_from_slice(nonce);
    message.extend_from_slice(public_key);
    message
}

/// Checks `signature` (base64) by `public_key` over this connection's
/// nonce. Strict verification: no malleable or small-order signatures.
pub(crate) fn verify(nonce: &[u8; 32], public_key: &[u8; 32], signature: &str) -> Result<(), String> {
    let bytes = crate::keys::decode_base64(signature).ok_or("the signature is not base64")?;
    let bytes: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("an Ed25519 signature is 64 bytes, this one is {}", bytes.len()))?;
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| "not a valid Ed25519 public key")?;
    key.verify_strict(&signed_message(nonce, public_key), &Signature::from_bytes(&bytes))
        .map_err(|_| "the signature does not verify for this connection's nonce and this key".to_string())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    #[test]
    fn a_signature_holds_for_its_nonce_and_key_only() {
        let signing = SigningKey::from_bytes(&[7; 32]);
        let public = signing.verifying_key().to_bytes();
        let (nonce, other) = (nonce(), nonce());
        assert_ne!(nonce, other, "fresh nonces");
        let signature = encode(&signing.sign(&signed_message(&nonce, &public)).to_bytes());
        assert_eq!(verify(&nonce, &public, &signature), Ok(()));
        assert!(verify(&other, &public, &signature).is_err(), "replayed on another connection");
        let stranger = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        assert!(verify(&nonce, &stranger, &signature).is_err(), "presented with another key");
        assert!(verify(&nonce, &public, "not base64!").unwrap_err().contains("not base64"));
        assert!(verify(&nonce, &public, &encode(&[1; 10])).unwrap_err().contains("64 bytes"));
    }
}
