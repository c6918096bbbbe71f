//! The keys that sign what authnz asserts to applications (ES256 JWTs), and the JWKS that
//! publishes their public halves.
//!
//! A key is a P-256 private key in a PKCS#8 PEM file, as
//! `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes it; replicas share
//! the file. Its `kid` is its RFC 7638 thumbprint, so every replica names it alike. Earlier
//! keys (after a rotation) are published too, so that assertions they signed still verify,
//! and sign nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Why a signing key could not be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("signing failed")]
    Sign,
}

/// One P-256 key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    /// The public JWK's key members (`crv`, `kty`, `x`, `y`).
    public: Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM file holding a P-256 key.
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let der = read_pkcs8(path, "a P-256 private key")?;
        Self::from_pkcs8(&der).map_err(|reason| SigningKeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
            .map_err(|err| format!("not a P-256 private key with its public key ({err}); make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"))?;
        let public = p256_public(&pair)?;
        let kid = thumbprint(&public);
        Ok(Self { pair, kid, public })
    }

    /// A new random key, as PKCS#8 DER (for tests and `keygen`).
    pub fn generate_pkcs8() -> Result<Vec<u8>, SigningKeyError> {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| SigningKeyError::Sign)
    }

    /// The RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let mut jwk = self.public.clone();
        if let Some(members) = jwk.as_object_mut() {
            members.insert("kid".into(), json!(self.kid));
            members.insert("alg".into(), json!("ES256"));
            members.insert("use".into(), json!("sig"));
        }
        jwk
    }

    /// `claims` as a compact ES256 JWS.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, SigningKeyError> {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| SigningKeyError::Sign)?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The public half of a P-256 key pair as the JWK members RFC 7638 requires (`crv`, `kty`, `x`,
/// `y`).
pub(crate) fn p256_public(pair: &EcdsaKeyPair) -> Result<Value, String> {
    // 0x04 || x || y.
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return Err("unexpected public key encoding".into());
    }
    Ok(json!({
        "crv": "P-256",
        "kty": "EC",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }))
}

/// The RFC 7638 thumbprint of a public JWK's required members: SHA-256 of them in
/// lexicographic order without spaces (as serde_json writes a map: sorted).
pub(crate) fn thumbprint(public: &Value) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(public.to_string().as_bytes()))
}

/// The DER of the PKCS#8 private key in the PEM file at `path` (`what` names the key a
/// wrong section should have been).
pub fn read_pkcs8(path: &Path, what: &str) -> Result<Vec<u8>, SigningKeyError> {
    let invalid = |reason: &str| SigningKeyError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let text = std::fs::read(path).map_err(|err| SigningKeyError::Unreadable {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })?;
    let mut sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&text);
    let (kind, der) = match sections.next() {
        Some(Ok(section)) => section,
        _ => {
            return Err(invalid(
                "not a PEM file (expected -----BEGIN PRIVATE KEY-----)",
            ))
        }
    };
    match kind {
        SectionKind::PrivateKey => Ok(der),
        SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey => Err(invalid(
            "not PKCS#8 (a SEC1 \"EC PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\" file): convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem`",
        )),
        _ => Err(invalid(&format!(
            "expected {what} (-----BEGIN PRIVATE KEY-----)"
        ))),
    }
}

/// The signing key in force and the earlier ones.
#[derive(Debug, Default)]
pub struct Signer {
    current: Option<SigningKey>,
    previous: Vec<SigningKey>,
}

impl Signer {
    /// The keys of `signing_key_file` and `previous_signing_key_files`.
    pub fn load(current: Option<&Path>, previous: &[PathBuf]) -> Result<Self, SigningKeyError> {
        Ok(Self {
            current: current.map(SigningKey::load).transpose()?,
            previous: previous
                .iter()
                .map(|path| SigningKey::load(path))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The key that signs, if one is configured.
    pub fn current(&self) -> Option<&SigningKey> {
        self.current.as_ref()
    }

    /// `{"keys": [...]}`: the current key first, then the earlier ones (each once).
    pub fn jwks(&self) -> Value {
        let mut keys: Vec<Value> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for key in self.current.iter().chain(&self.previous) {
            if seen.insert(key.kid.clone()) {
                keys.push(key.jwk());
            }
        }
        json!({ "keys": keys })
    }
}

/// PKCS#8 DER as a PEM file's text.
pub fn pkcs8_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_jwk_verifies_and_its_kid_is_the_thumbprint() {
        let der = SigningKey::generate_pkcs8().unwrap();
        let key = SigningKey::from_pkcs8(&der).unwrap();
        let jwt = key.sign_jwt(&json!({"sub": "u1"})).unwrap();
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        let jwk = key.jwk();
        let (x, y) = (jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap());
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(x).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(y).unwrap());
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            point,
        );
        public
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], key.kid());
        assert_eq!(header["alg"], "ES256");
        // RFC 7638: the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        assert_eq!(
            key.kid(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
        assert!(!format!("{key:?}").contains(x));
    }

    #[test]
    fn files_that_are_no_p256_pkcs8_key_name_themselves_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let der = SigningKey::generate_pkcs8().unwrap();
        let good = write("good.pem", &pkcs8_pem(&der));
        assert!(SigningKey::load(&good).is_ok());
        let sec1 = write(
            "sec1.pem",
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        );
        for (path, says) in [
            (write("text.pem", "hello"), "not a PEM file"),
            (sec1, "SEC1"),
            (
                write(
                    "cert.pem",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                "expected a P-256 private key",
            ),
            (write("junk.pem", &pkcs8_pem(b"junk")), "not a P-256"),
            (dir.path().join("missing.pem"), "cannot read"),
        ] {
            let err = SigningKey::load(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }
}
