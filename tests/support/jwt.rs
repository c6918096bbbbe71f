//! Hand-built JWTs and keys, so a hostile IdP can sign anything: good tokens, bad signatures,
//! `alg: none`, foreign keys, odd headers.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// An RSA signing key with its `kid`.
pub struct RsaKey {
    pub kid: String,
    pub key: RsaPrivateKey,
}

fn generate(kid: &str) -> RsaKey {
    RsaKey {
        kid: kid.to_string(),
        key: RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap(),
    }
}

/// The IdP's usual key.
pub fn key_a() -> &'static RsaKey {
    static KEY: OnceLock<RsaKey> = OnceLock::new();
    KEY.get_or_init(|| generate("key-a"))
}

/// A second key: a rotation target, or the attacker's.
pub fn key_b() -> &'static RsaKey {
    static KEY: OnceLock<RsaKey> = OnceLock::new();
    KEY.get_or_init(|| generate("key-b"))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl RsaKey {
    /// The public JWK.
    pub fn jwk(&self) -> Value {
        let public = self.key.to_public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": b64(&public.n().to_bytes_be()),
            "e": b64(&public.e().to_bytes_be()),
        })
    }

    /// An RS256 JWT with this key's `kid` (unless `header` overrides it).
    pub fn sign(&self, header: Value, claims: &Value) -> String {
        let mut full = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        merge(&mut full, header);
        let input = signing_input(&full, claims);
        let signer = SigningKey::<Sha256>::new(self.key.clone());
        let signature = signer.sign(input.as_bytes()).to_vec();
        format!("{input}.{}", b64(&signature))
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        for (key, value) in from {
            if value.is_null() {
                into.remove(&key);
            } else {
                into.insert(key, value);
            }
        }
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 JWT MAC'd with `secret`.
pub fn sign_hs256(secret: &[u8], header: Value, claims: &Value) -> String {
    let mut full = json!({"alg": "HS256", "typ": "JWT"});
    merge(&mut full, header);
    let input = signing_input(&full, claims);
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// An unsigned JWT (`alg: none`, empty signature).
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.",
        signing_input(&json!({"alg": "none", "typ": "JWT"}), claims)
    )
}

/// The `at_hash` of an access token for RS256/HS256.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    b64(&digest[..16])
}

/// Flips one bit of the signature.
pub fn corrupt_signature(jwt: &str) -> String {
    let (input, signature) = jwt.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 1;
    format!("{input}.{}", b64(&bytes))
}

/// An ES256 (P-256) signing key with its `kid`.
pub struct EcKey {
    pub kid: String,
    key: p256::ecdsa::SigningKey,
}

/// The IdP's EC key (fixed scalar: a test key, not a secret).
pub fn ec_key() -> EcKey {
    EcKey {
        kid: "ec-key".into(),
        key: p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap(),
    }
}

impl EcKey {
    pub fn jwk(&self) -> Value {
        let point = self.key.verifying_key().to_sec1_point(false);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": "ES256",
            "kid": self.kid,
            "x": b64(point.x().unwrap()),
            "y": b64(point.y().unwrap()),
        })
    }

    pub fn sign(&self, header: Value, claims: &Value) -> String {
        use p256::ecdsa::signature::Signer as _;
        let mut full = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        merge(&mut full, header);
        let input = signing_input(&full, claims);
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }
}

/// The claims of an ES256 JWT whose signature verifies with the key of its `kid` in `jwks`
/// (as an app verifying an assertion would); `None` when nothing verifies it.
pub fn verify_es256(jwt: &str, jwks: &Value) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let header: Value = serde_json::from_slice(&decode(header)?).ok()?;
    if header["alg"] != "ES256" {
        return None;
    }
    let key = jwks["keys"]
        .as_array()?
        .iter()
        .find(|key| key["kid"] == header["kid"])?;
    let mut point = vec![4u8];
    point.extend(decode(key["x"].as_str()?)?);
    point.extend(decode(key["y"].as_str()?)?);
    let input = &jwt[..jwt.rfind('.')?];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(input.as_bytes(), &decode(signature)?)
        .ok()?;
    serde_json::from_slice(&decode(claims)?).ok()
}

/// The header and the claims of a compact JWS, unverified.
pub fn parts(jwt: &str) -> (Value, Value) {
    let decode = |part: Option<&str>| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.unwrap_or_default()).unwrap()).unwrap()
    };
    let mut parts = jwt.split('.');
    (decode(parts.next()), decode(parts.next()))
}
