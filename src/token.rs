//! Reversible pseudonyms ("tokens"): AES-256-GCM with a synthetic, deterministic nonce.
//!
//! nonce = first 12 bytes of HMAC-SHA256(token-nonce key, plaintext), so the same value in the
//! same domain and key version always gives the same token (joins and GROUP BY work), and two
//! different values never share a nonce. The associated data binds the token to its domain and
//! key version, so a token from another domain or another master key fails authentication.
//!
//! Wire format (unpadded base64url of):
//!   0x01 | key version (u16, big endian) | nonce (12) | ciphertext (n) | GCM tag (16)

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use pgrx::prelude::*;
use subtle::ConstantTimeEq;

use crate::error::{boundary, Code, MsegError, Result};
use crate::keys::{self, DomainKeys};

const FORMAT: u8 = 0x01;
const HEADER: usize = 1 + 2 + 12;
const TAG: usize = 16;

fn aad(domain: &str, version: i32) -> Vec<u8> {
    format!("pg_mseg/token/v1/{domain}/{version}").into_bytes()
}

fn invalid(domain: &str, why: &str) -> MsegError {
    MsegError::new(Code::InvalidToken, format!("invalid token for domain \"{domain}\""))
        .detail(why.to_owned())
        .hint("A token can only be reversed in the domain, and under the master key, that made it.")
}

pub fn encrypt(keys: &DomainKeys, plaintext: &[u8]) -> Result<String> {
    let version =
        u16::try_from(keys.version).map_err(|_| MsegError::new(Code::General, "domain key version exceeds the token format's range"))?;
    let synthetic = keys.token_nonce.mac(plaintext);
    let nonce = Nonce::from_slice(&synthetic[..12]);
    let cipher = Aes256Gcm::new_from_slice(keys.token_encryption.as_ref())
        .map_err(|_| MsegError::new(Code::General, "token key has the wrong length"))?;
    let ct = cipher
        .encrypt(nonce, Payload { msg: plaintext, aad: &aad(&keys.domain, keys.version) })
        .map_err(|_| MsegError::new(Code::General, "token encryption failed"))?;
    let mut out = Vec::with_capacity(HEADER + ct.len());
    out.push(FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&synthetic[..12]);
    out.extend_from_slice(&ct);
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
}

/// Parse the key version out of a token (no authentication yet).
pub fn token_version(domain: &str, token: &str) -> Result<(i32, Vec<u8>)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| invalid(domain, "The token is not unpadded base64url text."))?;
    if raw.len() < HEADER + TAG {
        return Err(invalid(domain, "The token is too short."));
    }
    if raw[0] != FORMAT {
        return Err(invalid(domain, "The token has an unknown format byte."));
    }
    let version = i32::from(u16::from_be_bytes([raw[1], raw[2]]));
    Ok((version, raw))
}

pub fn decrypt(keys: &DomainKeys, raw: &[u8]) -> Result<Vec<u8>> {
    let domain = keys.domain.as_str();
    let cipher = Aes256Gcm::new_from_slice(keys.token_encryption.as_ref())
        .map_err(|_| MsegError::new(Code::General, "token key has the wrong length"))?;
    let nonce = Nonce::from_slice(&raw[3..HEADER]);
    let plaintext = cipher
        .decrypt(nonce, Payload { msg: &raw[HEADER..], aad: &aad(domain, keys.version) })
        .map_err(|_| invalid(domain, "The token does not authenticate: it was altered, or made in another domain or under another key."))?;
    // The nonce must be the synthetic one for this plaintext: tokens are canonical.
    let expected = keys.token_nonce.mac(&plaintext);
    if !bool::from(expected[..12].ct_eq(&raw[3..HEADER])) {
        return Err(invalid(domain, "The token's nonce is not the one this domain derives for its content."));
    }
    Ok(plaintext)
}

/// Reverse a token to its text value.
pub fn detoken_str(domain: &str, token: &str) -> Result<String> {
    let current = keys::current_version(domain)?;
    let (version, raw) = token_version(domain, token)?;
    if version < 1 || version > current {
        return Err(invalid(domain, "The token names a key version this domain never had."));
    }
    let keys = keys::domain_keys_at(domain, version)?;
    let plain = decrypt(&keys, &raw)?;
    String::from_utf8(plain).map_err(|_| invalid(domain, "The token does not hold text."))
}

/// Reversible pseudonym of `value` in `domain` (same value, same token).
#[pg_extern(volatile, parallel_safe, name = "token")]
fn token_sql(value: Option<&str>, domain: Option<&str>) -> Option<String> {
    boundary(|| {
        let domain = domain.ok_or_else(|| MsegError::null_argument("domain"))?;
        keys::check_not_internal(domain)?;
        let Some(value) = value else { return Ok(None) };
        let keys = keys::domain_keys(domain)?;
        encrypt(&keys, value.as_bytes()).map(Some)
    })
}

/// The value a token was made from. Only for the re-identification role.
#[pg_extern(volatile, parallel_safe, name = "detoken")]
fn detoken_sql(token: Option<&str>, domain: Option<&str>) -> Option<String> {
    boundary(|| {
        let domain = domain.ok_or_else(|| MsegError::null_argument("domain"))?;
        keys::check_not_internal(domain)?;
        let Some(token) = token else { return Ok(None) };
        detoken_str(domain, token).map(Some)
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::keys;
    use crate::test_support::{hex, setup_domains};
    use crate::token;

    #[pg_test]
    fn aes256_gcm_mcgrew_viega_cases_13_and_14() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        use aes_gcm::{Aes256Gcm, Nonce};
        let cipher = Aes256Gcm::new_from_slice(&[0u8; 32]).unwrap();
        let nonce = Nonce::from_slice(&[0u8; 12]);
        let ct = cipher.encrypt(nonce, Payload { msg: &[], aad: &[] }).unwrap();
        assert_eq!(ct, hex("530f8afbc74536b9a963b4f1c4cb738b"));
        let ct = cipher.encrypt(nonce, Payload { msg: &[0u8; 16], aad: &[] }).unwrap();
        assert_eq!(ct, hex("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"));
    }

    #[pg_test]
    fn token_roundtrip_is_deterministic() {
        setup_domains();
        let keys = keys::domain_keys("t_one").unwrap();
        let t1 = token::encrypt(&keys, "bob@example.com".as_bytes()).unwrap();
        let t2 = token::encrypt(&keys, "bob@example.com".as_bytes()).unwrap();
        assert_eq!(t1, t2);
        assert_ne!(t1, token::encrypt(&keys, "bob@example.org".as_bytes()).unwrap());
        assert_eq!(token::detoken_str("t_one", &t1).unwrap(), "bob@example.com");
    }

    #[pg_test]
    fn token_from_another_domain_or_tampered_is_refused() {
        setup_domains();
        let keys = keys::domain_keys("t_one").unwrap();
        let t = token::encrypt(&keys, b"carol").unwrap();
        let err = token::detoken_str("t_two", &t).unwrap_err();
        assert_eq!(err.code.sqlstate(), "MS012");
        // flip one character in the ciphertext part
        let mut bytes = t.clone().into_bytes();
        let i = bytes.len() - 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(token::detoken_str("t_one", &tampered).unwrap_err().code.sqlstate(), "MS012");
        assert_eq!(token::detoken_str("t_one", "not*base64").unwrap_err().code.sqlstate(), "MS012");
        assert_eq!(token::detoken_str("t_one", "AQAB").unwrap_err().code.sqlstate(), "MS012");
    }

    #[pg_test]
    fn token_survives_rotation() {
        setup_domains();
        let old = Spi::get_one::<String>("SELECT mseg.token('dave', 't_one')").unwrap().unwrap();
        Spi::run("SELECT mseg.rotate_domain('t_one')").unwrap();
        let new = Spi::get_one::<String>("SELECT mseg.token('dave', 't_one')").unwrap().unwrap();
        assert_ne!(old, new);
        let back = Spi::get_one_with_args::<String>("SELECT mseg.detoken($1, 't_one')", &[old.as_str().into()]).unwrap();
        assert_eq!(back.as_deref(), Some("dave"));
    }
}
