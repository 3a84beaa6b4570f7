//! HS256 JSON Web Tokens, just enough for the demo: sign and verify with one shared secret.
//!
//! HMAC-SHA256 is written out over `sha2` (RFC 2104) so the demo needs no JWT crate.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// What a valid token says.
#[derive(Debug, Clone)]
pub struct Claims {
    pub sub: String,
    pub role: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token for `sub` with `role`, valid for `ttl_secs`.
pub fn sign(secret: &[u8], sub: &str, role: &str, ttl_secs: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let now = now_secs();
    let payload =
        serde_json::json!({ "sub": sub, "role": role, "iat": now, "exp": now + ttl_secs });
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let signing_input = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

/// Checks the signature and the expiry.
pub fn verify(secret: &[u8], token: &str) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let expected = hmac_sha256(secret, format!("{header}.{payload}").as_bytes());
    // Compare in constant time: the demo is small, not careless.
    if sig.len() != expected.len()
        || sig
            .iter()
            .zip(expected)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return Err(TokenError::BadSignature);
    }
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if claims["exp"].as_u64().is_some_and(|exp| exp < now_secs()) {
        return Err(TokenError::Expired);
    }
    Ok(Claims {
        sub: claims["sub"].as_str().unwrap_or("unknown").to_string(),
        role: claims["role"].as_str().unwrap_or("").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signs_and_verifies() {
        let t = sign(b"k", "admin", "admin", 60);
        let c = verify(b"k", &t).unwrap();
        assert_eq!(c.sub, "admin");
        assert_eq!(verify(b"other", &t).unwrap_err(), TokenError::BadSignature);
        assert_eq!(verify(b"k", "x.y").unwrap_err(), TokenError::Malformed);
    }
}
