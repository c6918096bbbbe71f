//! The key authnz proves itself to an IdP with instead of a shared secret
//! (`client_auth = "private_key_jwt"`, RFC 7523): a P-256 key signing ES256, or an RSA key
//! signing RS256 or PS256, from a PKCS#8 PEM file; optionally the certificate an IdP
//! registered for it (Entra), named in each assertion's `x5t#S256` header. Its public half is
//! served as a JWKS for IdPs that fetch it. `kid` is the RFC 7638 thumbprint.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::signing::{p256_public, read_pkcs8, thumbprint, SigningKeyError};

/// The algorithms a client key signs with.
pub const CLIENT_KEY_ALGS: &[&str] = &["ES256", "RS256", "PS256"];

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A client's private key (never in `Debug` output).
pub struct ClientKey {
    pair: Pair,
    alg: &'static str,
    kid: String,
    /// The public JWK's key members (`kty` and `crv`/`x`/`y` or `n`/`e`).
    public: Value,
    /// SHA-256 of the registered certificate's DER, base64url.
    x5t_s256: Option<String>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Reads a PKCS#8 PEM file: P-256 (ES256) or RSA (`alg` RS256, the default, or PS256).
    pub fn load(path: &Path, alg: Option<&str>) -> Result<Self, SigningKeyError> {
        let der = read_pkcs8(path, "a P-256 or RSA private key")?;
        Self::from_pkcs8(&der, alg).map_err(|reason| SigningKeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// A key from PKCS#8 DER; `alg` must fit it (ES256 for P-256, RS256 or PS256 for RSA).
    pub fn from_pkcs8(der: &[u8], alg: Option<&str>) -> Result<Self, String> {
        let (pair, alg, public) = if let Ok(pair) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
        {
            if !matches!(alg, None | Some("ES256")) {
                return Err("a P-256 key signs ES256 only".into());
            }
            let public = p256_public(&pair)?;
            (Pair::Ec(pair), "ES256", public)
        } else if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
            let alg = match alg {
                None | Some("RS256") => "RS256",
                Some("PS256") => "PS256",
                Some(_) => return Err("an RSA key signs RS256 or PS256".into()),
            };
            if pair.public().modulus_len() < 256 {
                return Err("an RSA key needs at least 2048 bits".into());
            }
            let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public());
            let public = json!({
                "e": URL_SAFE_NO_PAD.encode(&parts.e),
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(&parts.n),
            });
            (Pair::Rsa(pair), alg, public)
        } else {
            return Err("not a P-256 or RSA private key; make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` or `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072`".into());
        };
        let kid = thumbprint(&public);
        Ok(Self {
            pair,
            alg,
            kid,
            public,
            x5t_s256: None,
        })
    }

    /// Names the certificate in the PEM file at `path` (its first) in every assertion.
    pub fn with_certificate(mut self, path: &Path) -> Result<Self, SigningKeyError> {
        let invalid = |reason: &str| SigningKeyError::Invalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let text = std::fs::read(path).map_err(|err| SigningKeyError::Unreadable {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        let der = <(SectionKind, Vec<u8>)>::pem_slice_iter(&text)
            .filter_map(Result::ok)
            .find(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| der)
            .ok_or_else(|| invalid("no certificate (-----BEGIN CERTIFICATE-----)"))?;
        self.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)));
        Ok(self)
    }

    pub fn alg(&self) -> &'static str {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let mut jwk = self.public.clone();
        if let Some(members) = jwk.as_object_mut() {
            members.insert("kid".into(), json!(self.kid));
            members.insert("alg".into(), json!(self.alg));
            members.insert("use".into(), json!("sig"));
            if let Some(x5t) = &self.x5t_s256 {
                members.insert("x5t#S256".into(), json!(x5t));
            }
        }
        jwk
    }

    /// `claims` as a compact JWS with this key.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, SigningKeyError> {
        let mut header = json!({"alg": self.alg, "typ": "JWT", "kid": self.kid});
        if let (Some(x5t), Some(members)) = (&self.x5t_s256, header.as_object_mut()) {
            members.insert("x5t#S256".into(), json!(x5t));
        }
        self.sign_with_header(&header, claims)
    }

    /// A DPoP proof (RFC 9449 §4.2): `claims` signed, the public key itself in the header.
    pub fn sign_proof(&self, claims: &Value) -> Result<String, SigningKeyError> {
        let header = json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public});
        self.sign_with_header(&header, claims)
    }

    /// The RFC 7638 thumbprint of the public key (DPoP's `jkt`).
    pub fn thumbprint(&self) -> &str {
        &self.kid
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> Result<String, SigningKeyError> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Ec(pair) => pair
                .sign(&rng, input.as_bytes())
                .map_err(|_| SigningKeyError::Sign)?
                .as_ref()
                .to_vec(),
            Pair::Rsa(pair) => {
                let padding: &'static dyn ring::signature::RsaEncoding = if self.alg == "PS256" {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, input.as_bytes(), &mut signature)
                    .map_err(|_| SigningKeyError::Sign)?;
                signature
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;

    fn rsa_pkcs8() -> Vec<u8> {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        key.to_pkcs8_der().unwrap().as_bytes().to_vec()
    }

    fn verify(jwt: &str, alg: &'static dyn ring::signature::VerificationAlgorithm, public: &[u8]) {
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(alg, public)
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
    }

    fn header(jwt: &str) -> Value {
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn each_algorithm_signs_what_its_jwk_verifies() {
        let ec = ClientKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap(), None).unwrap();
        let jwt = ec.sign_jwt(&json!({"sub": "c"})).unwrap();
        let jwk = ec.jwk();
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        verify(&jwt, &ring::signature::ECDSA_P256_SHA256_FIXED, &point);
        assert_eq!(header(&jwt)["alg"], "ES256");
        assert_eq!(header(&jwt)["kid"], ec.kid());

        let der = rsa_pkcs8();
        for (alg, verification) in [
            ("RS256", &ring::signature::RSA_PKCS1_2048_8192_SHA256),
            ("PS256", &ring::signature::RSA_PSS_2048_8192_SHA256),
        ] {
            let key = ClientKey::from_pkcs8(&der, Some(alg)).unwrap();
            let jwt = key.sign_jwt(&json!({"sub": "c"})).unwrap();
            let jwk = key.jwk();
            let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
            let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
            let components = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
            let (input, signature) = jwt.rsplit_once('.').unwrap();
            components
                .verify(
                    verification,
                    input.as_bytes(),
                    &URL_SAFE_NO_PAD.decode(signature).unwrap(),
                )
                .unwrap();
            assert_eq!(header(&jwt)["alg"], alg);
            assert_eq!(jwk["alg"], alg);
        }
        assert!(ClientKey::from_pkcs8(&der, Some("ES256")).is_err());
        assert!(!format!("{ec:?}").contains(jwk["x"].as_str().unwrap()));
    }

    #[test]
    fn a_certificate_is_named_by_its_sha256_thumbprint() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let key = ClientKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap(), None)
            .unwrap()
            .with_certificate(&cert)
            .unwrap();
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest([0u8, 1, 2, 3]));
        let jwt = key.sign_jwt(&json!({})).unwrap();
        assert_eq!(header(&jwt)["x5t#S256"], expected.as_str());
        assert_eq!(key.jwk()["x5t#S256"], expected.as_str());
        let none = dir.path().join("none.pem");
        std::fs::write(&none, "nothing").unwrap();
        let refused = ClientKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap(), None)
            .unwrap()
            .with_certificate(&none)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("no certificate"), "{refused}");
    }
}
