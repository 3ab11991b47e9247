//! Master key loading, per-domain key derivation (HKDF-SHA256) and the per-backend key cache.
//!
//! The master key is read from `mseg.key_file` on first use, checked (regular file, no group or
//! other permission bits, at least 32 bytes) and immediately reduced to an HKDF pseudo-random key;
//! the raw bytes are zeroised. Domain keys are derived per (purpose, domain, version) and cached
//! until the key file setting changes (SIGHUP) or `mseg.domains` changes (relcache invalidation
//! sent by the extension's own trigger on that table). Every cached secret is zeroised on drop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::rc::Rc;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Code, MsegError, Result};
use crate::{catalog, gucs};

pub type HmacSha256 = Hmac<Sha256>;

/// Minimum master key length in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Largest key file we accept; anything bigger is certainly not a key file.
const MAX_KEY_BYTES: u64 = 4096;
/// HKDF salt: fixes the derivation scheme; changing it changes every pseudonym.
const HKDF_SALT: &[u8] = b"pg_mseg master key v1";

/// What a derived key is used for; part of the HKDF info so uses never share a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum KeyUse {
    Pseudonym,
    TokenEncryption,
    TokenNonce,
}

impl KeyUse {
    fn label(self) -> &'static str {
        match self {
            KeyUse::Pseudonym => "pseudonym",
            KeyUse::TokenEncryption => "token-aes256gcm",
            KeyUse::TokenNonce => "token-siv-nonce",
        }
    }
}

/// HKDF info string for a derived key: `pg_mseg/<use>/v<version>/<domain>`.
pub fn hkdf_info(key_use: KeyUse, domain: &str, version: i32) -> Vec<u8> {
    format!("pg_mseg/{}/v{}/{}", key_use.label(), version, domain).into_bytes()
}

/// A keyed HMAC-SHA256 state whose memory is wiped when dropped.
pub struct KeyedMac(HmacSha256);

impl KeyedMac {
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        KeyedMac(<HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()))
    }

    /// HMAC-SHA256(key, message), cloning the pre-keyed state (two compressions per short input).
    #[inline]
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(message);
        let out: [u8; 32] = m.finalize().into_bytes().into();
        out
    }
}

impl Drop for KeyedMac {
    fn drop(&mut self) {
        // SAFETY: HmacSha256 is a flat value (hash states and buffers, no pointers, no Drop),
        // so overwriting its bytes with zeros leaves nothing behind and is never read again.
        unsafe { zeroize::zeroize_flat_type(&mut self.0) }
    }
}

/// All keys of one domain at one version.
pub struct DomainKeys {
    pub domain: String,
    pub version: i32,
    pub pseudonym: KeyedMac,
    pub token_nonce: KeyedMac,
    pub token_encryption: Zeroizing<[u8; 32]>,
}

/// The master pseudo-random key (HKDF-Extract output), never the file bytes themselves.
struct Master {
    hkdf: Hkdf<Sha256>,
}

/// HKDF-SHA256 (RFC 5869): extract with `salt`, expand `info` into `okm`.
/// Fails only when `okm` is longer than 8160 bytes.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
    Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, okm).map_err(|_| MsegError::new(Code::General, "HKDF output length out of range"))
}

impl Master {
    fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = self.hkdf.expand(info, okm.as_mut());
        okm
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // SAFETY: Hkdf<Sha256> holds only a keyed HMAC state (flat, no pointers, no Drop).
        unsafe { zeroize::zeroize_flat_type(&mut self.hkdf) }
    }
}

#[derive(Default)]
struct KeyCache {
    key_generation: u64,
    catalog_generation: u64,
    master: Option<Rc<Master>>,
    /// (domain, version) -> keys
    domains: HashMap<(String, i32), Rc<DomainKeys>>,
    /// domain -> current version (from mseg.domains)
    current_version: HashMap<String, i32>,
}

thread_local! {
    static CACHE: RefCell<KeyCache> = RefCell::new(KeyCache::default());
}

/// Forget every cached secret (zeroised by the values' Drop impls).
pub fn clear_cache() {
    CACHE.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = KeyCache::default();
        }
    });
}

/// Bring the cache in line with the current key file setting and catalog state.
fn revalidate() {
    let key_gen = gucs::key_file_generation();
    let cat_gen = catalog::generation();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.key_generation != key_gen {
            *c = KeyCache { key_generation: key_gen, catalog_generation: cat_gen, ..Default::default() };
        } else if c.catalog_generation != cat_gen {
            c.current_version.clear();
            c.catalog_generation = cat_gen;
        }
    });
}

fn key_file_hint() -> &'static str {
    "Set mseg.key_file in postgresql.conf to a file of at least 32 random bytes \
     (e.g. head -c 32 /dev/urandom), owned by the server's OS user with mode 0600, then reload."
}

/// Read and check the key file; returns its bytes (zeroised on drop).
fn read_key_file() -> Result<Zeroizing<Vec<u8>>> {
    let path = gucs::key_file().ok_or_else(|| {
        MsegError::new(Code::KeyFileNotConfigured, "mseg.key_file is not set")
            .detail("pg_mseg needs a master key to derive pseudonym and token keys.")
            .hint(key_file_hint())
    })?;
    let unreadable = |e: std::io::Error| {
        MsegError::new(Code::KeyFileUnreadable, "the key file named by mseg.key_file cannot be read")
            .detail(format!("The operating system reported: {e}."))
            .hint(key_file_hint())
    };
    let meta = std::fs::metadata(&path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(
            MsegError::new(Code::KeyFileInsecure, "the key file named by mseg.key_file is not a regular file").hint(key_file_hint())
        );
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(MsegError::new(Code::KeyFileInsecure, "the key file named by mseg.key_file is accessible by group or others")
            .detail(format!("Its mode is {:04o}; group and other permission bits must all be clear.", mode & 0o7777))
            .hint("Run chmod 0600 on the key file, then reload."));
    }
    if meta.size() > MAX_KEY_BYTES {
        return Err(MsegError::new(Code::KeyFileInsecure, "the file named by mseg.key_file is too large to be a key file")
            .detail(format!("It holds more than {MAX_KEY_BYTES} bytes."))
            .hint(key_file_hint()));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_BYTES as usize));
    std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(unreadable)?;
    if bytes.len() < MIN_KEY_BYTES {
        let len = bytes.len();
        return Err(MsegError::new(Code::KeyFileTooShort, "the key file named by mseg.key_file is too short")
            .detail(format!("It holds {len} bytes; at least {MIN_KEY_BYTES} are required."))
            .hint(key_file_hint()));
    }
    Ok(bytes)
}

fn master() -> Result<Rc<Master>> {
    revalidate();
    if let Some(m) = CACHE.with(|c| c.borrow().master.clone()) {
        return Ok(m);
    }
    let bytes = read_key_file()?;
    let master = Rc::new(Master { hkdf: Hkdf::<Sha256>::new(Some(HKDF_SALT), &bytes) });
    drop(bytes);
    CACHE.with(|c| c.borrow_mut().master = Some(master.clone()));
    Ok(master)
}

/// The current key version of `domain`, or an UnknownDomain error.
pub fn current_version(domain: &str) -> Result<i32> {
    revalidate();
    if let Some(v) = CACHE.with(|c| c.borrow().current_version.get(domain).copied()) {
        return Ok(v);
    }
    let v = catalog::domain_version(domain)?.ok_or_else(|| unknown_domain(domain))?;
    CACHE.with(|c| c.borrow_mut().current_version.insert(domain.to_owned(), v));
    Ok(v)
}

pub fn unknown_domain(domain: &str) -> MsegError {
    MsegError::new(Code::UnknownDomain, format!("pseudonymisation domain \"{domain}\" does not exist"))
        .hint("Create it with mseg.create_domain(name), or check the spelling against mseg.domains.")
}

/// Keys of `domain` at `version` (which the caller has checked exists).
pub fn domain_keys_at(domain: &str, version: i32) -> Result<Rc<DomainKeys>> {
    let cache_key = (domain.to_owned(), version);
    if let Some(k) = CACHE.with(|c| c.borrow().domains.get(&cache_key).cloned()) {
        return Ok(k);
    }
    let m = master()?;
    let pseudonym = m.derive(&hkdf_info(KeyUse::Pseudonym, domain, version));
    let nonce = m.derive(&hkdf_info(KeyUse::TokenNonce, domain, version));
    let keys = Rc::new(DomainKeys {
        domain: domain.to_owned(),
        version,
        pseudonym: KeyedMac::new(pseudonym.as_ref()),
        token_nonce: KeyedMac::new(nonce.as_ref()),
        token_encryption: m.derive(&hkdf_info(KeyUse::TokenEncryption, domain, version)),
    });
    CACHE.with(|c| c.borrow_mut().domains.insert(cache_key, keys.clone()));
    Ok(keys)
}

/// Keys of the current version of `domain`.
pub fn domain_keys(domain: &str) -> Result<Rc<DomainKeys>> {
    let v = current_version(domain)?;
    domain_keys_at(domain, v)
}

/// A short, non-secret identifier of the active master key: `mseg1:` + 16 hex digits of
/// SHA-256 over a dedicated HKDF output. It reveals nothing usable about the key.
pub fn fingerprint() -> Result<String> {
    let m = master()?;
    let okm = m.derive(b"pg_mseg/fingerprint");
    let digest = Sha256::digest(okm.as_ref());
    let mut hex = String::with_capacity(22);
    hex.push_str("mseg1:");
    for b in &digest[..8] {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(hex)
}

/// Domains whose names start with this prefix belong to the extension itself.
pub const INTERNAL_DOMAIN_PREFIX: &str = "mseg.";
/// The internal domain of subject references in the ledger and the audit log.
pub const SUBJECT_DOMAIN: &str = "mseg.subjects";

/// Domains whose names start with this prefix are those of trusted partners (created by
/// `add_partner`): their pseudonyms are what a partner holds, so only the export and `resolve` use them.
pub const PARTNER_DOMAIN_PREFIX: &str = "partner.";

/// Refuse user operations on the extension's internal domains and on partners' domains.
pub fn check_not_internal(name: &str) -> Result<()> {
    if name.starts_with(INTERNAL_DOMAIN_PREFIX) {
        return Err(MsegError::new(Code::InvalidDomain, format!("domain \"{name}\" is internal to pg_mseg"))
            .detail("Names starting with \"mseg.\" are reserved for the extension's own pseudonyms.")
            .hint("Choose a name without the mseg. prefix."));
    }
    if name.starts_with(PARTNER_DOMAIN_PREFIX) {
        return Err(MsegError::new(Code::InvalidDomain, format!("domain \"{name}\" belongs to a trusted partner"))
            .detail("A partner's pseudonyms are made by the Variant Twin export and mapped back only by mseg.resolve, which checks the purpose and audits.")
            .hint("Choose a name without the partner. prefix; partners' domains are created by mseg.add_partner."));
    }
    Ok(())
}

/// The controller's Ed25519 signing key for Variant Twin dumps, derived from the master key.
pub fn signing_key() -> Result<ed25519_dalek::SigningKey> {
    let m = master()?;
    let seed = m.derive(b"pg_mseg/ed25519-dump-signing/v1");
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// HKDF info of the seed of the trusted party's OPRF key (src/linkage.rs).
pub const OPRF_SEED_INFO: &[u8] = b"pg_mseg/oprf-ristretto255-sha512/v1";

/// The trusted party's OPRF server (RFC 9497, ristretto255-SHA512), its key derived from the
/// master key (DeriveKeyPair over an HKDF output). It never leaves Rust: whoever held it could
/// compute every person's link from an e-mail address.
pub fn oprf_server() -> Result<voprf::OprfServer<voprf::Ristretto255>> {
    let m = master()?;
    let seed = m.derive(OPRF_SEED_INFO);
    voprf::OprfServer::<voprf::Ristretto255>::new_from_seed(seed.as_ref(), b"pg_mseg linkage")
        .map_err(|_| MsegError::new(Code::General, "the OPRF key cannot be derived"))
}

/// HKDF info of the key that seeds the noise of published segment sizes (`src/sizes.rs`).
pub const SIZE_NOISE_INFO: &[u8] = b"pg_mseg/size-noise/v1";

/// The keyed HMAC that seeds the noise of published sizes, derived from the master key. It never
/// leaves Rust: whoever knew it could subtract the noise from every published size.
pub fn size_noise_key() -> Result<KeyedMac> {
    let m = master()?;
    let key = m.derive(SIZE_NOISE_INFO);
    Ok(KeyedMac::new(key.as_ref()))
}

/// Domain names: a lower-case letter, then up to 62 of `a-z 0-9 _ - . :`.
pub fn check_domain_name(name: &str) -> Result<()> {
    catalog::check_name(catalog::NameKind::Domain, name)
}

/// Wipe a byte buffer (used by tests and by callers holding transient secrets).
pub fn wipe(buf: &mut [u8]) {
    buf.zeroize();
}

// ---------------------------------------------------------------------------------------------
// SQL interface
// ---------------------------------------------------------------------------------------------

use crate::error::boundary;

/// Identifies the active master key without revealing it.
#[pg_extern(volatile, parallel_safe)]
fn key_fingerprint() -> String {
    boundary(fingerprint)
}

/// Create a pseudonymisation domain (key version 1).
#[pg_extern(volatile, parallel_unsafe)]
fn create_domain(name: Option<&str>, description: default!(Option<&str>, "NULL")) -> String {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        check_domain_name(name)?;
        check_not_internal(name)?;
        if !catalog::create_domain(name, description)? {
            return Err(MsegError::new(Code::DuplicateObject, format!("pseudonymisation domain \"{name}\" already exists"))
                .hint("Use mseg.rotate_domain(name) to give it a new key version."));
        }
        catalog::audit("domain.create", name, serde_json::json!({}))?;
        Ok(name.to_owned())
    })
}

/// Drop a domain that no pseudonym column uses.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_domain(name: Option<&str>) -> bool {
    boundary(|| {
        let name = name.ok_or_else(|| MsegError::null_argument("name"))?;
        check_not_internal(name)?;
        current_version(name)?;
        let users = catalog::columns_of_domain(name)?;
        if !users.is_empty() {
            return Err(MsegError::new(Code::InvalidArgument, format!("domain \"{name}\" is still used by pseudonym columns"))
                .detail(format!("Used by: {}.", users.join(", ")))
                .hint("Drop those columns with mseg.drop_pseudonym_column first."));
        }
        catalog::drop_domain(name)?;
        catalog::audit("domain.drop", name, serde_json::json!({}))?;
        Ok(true)
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::keys::{self, hkdf_sha256, KeyedMac};
    use crate::test_support::hex;

    #[pg_test]
    fn hmac_sha256_rfc4231_case1_and_2() {
        let mac = KeyedMac::new(&[0x0b; 20]);
        assert_eq!(mac.mac(b"Hi There").to_vec(), hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
        let mac = KeyedMac::new(b"Jefe");
        assert_eq!(
            mac.mac(b"what do ya want for nothing?").to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        // the keyed state is reusable: a second message gives the same answer as a fresh key
        assert_eq!(mac.mac(b"what do ya want for nothing?"), KeyedMac::new(b"Jefe").mac(b"what do ya want for nothing?"));
    }

    #[pg_test]
    fn hkdf_sha256_rfc5869_case1() {
        let mut okm = [0u8; 42];
        hkdf_sha256(&hex("000102030405060708090a0b0c"), &[0x0b; 22], &hex("f0f1f2f3f4f5f6f7f8f9"), &mut okm).unwrap();
        assert_eq!(okm.to_vec(), hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
    }

    #[pg_test]
    fn hkdf_rejects_oversized_output() {
        let mut okm = vec![0u8; 255 * 32 + 1];
        assert!(hkdf_sha256(b"s", b"k", b"i", &mut okm).is_err());
    }

    #[pg_test]
    fn hkdf_info_separates_uses_versions_and_domains() {
        use keys::KeyUse::*;
        let a = keys::hkdf_info(Pseudonym, "analytics", 1);
        assert_eq!(a, b"pg_mseg/pseudonym/v1/analytics".to_vec());
        assert_ne!(a, keys::hkdf_info(Pseudonym, "analytics", 2));
        assert_ne!(a, keys::hkdf_info(TokenEncryption, "analytics", 1));
        assert_ne!(a, keys::hkdf_info(Pseudonym, "analytics2", 1));
    }

    #[pg_test]
    fn oprf_key_is_derived_from_the_master_key_and_stable() {
        let a = keys::oprf_server().unwrap().evaluate(b"ann@example.org").unwrap();
        let b = keys::oprf_server().unwrap().evaluate(b"ann@example.org").unwrap();
        assert_eq!(a, b);
        let other = voprf::OprfServer::<voprf::Ristretto255>::new_from_seed(&[0u8; 32], b"pg_mseg linkage").unwrap();
        assert_ne!(a, other.evaluate(b"ann@example.org").unwrap());
        assert_ne!(a, keys::oprf_server().unwrap().evaluate(b"bob@example.org").unwrap());
    }

    #[pg_test]
    fn key_fingerprint_is_stable_and_short() {
        let a = Spi::get_one::<String>("SELECT mseg.key_fingerprint()").unwrap().unwrap();
        let b = Spi::get_one::<String>("SELECT mseg.key_fingerprint()").unwrap().unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("mseg1:") && a.len() == 22);
    }
}
