//! Signature and claim checks: ID tokens (through `openidconnect`, with pinned algorithms and
//! the checks it leaves to us), and the JWTs authnz verifies itself (access tokens accepted as
//! bearer tokens, back-channel logout tokens).

use super::callback::is_guid;
use super::*;

impl Idp {
    pub(super) fn verifier<'a>(
        &self,
        algs: &[String],
        jwks: CoreJsonWebKeySet,
        not_before: i64,
        now: i64,
    ) -> CoreIdTokenVerifier<'a> {
        let client_id = ClientId::new(self.config.client_id.clone());
        let issuer = self.issuer_url.clone();
        let mut verifier = match &self.config.client_secret {
            Some(secret) => CoreIdTokenVerifier::new_confidential_client(
                client_id,
                ClientSecret::new(secret.expose().to_string()),
                issuer,
                jwks,
            ),
            None => CoreIdTokenVerifier::new_public_client(client_id, issuer, jwks),
        };
        if self.info.issuer_template.is_some() {
            // Checked against the template and the token's own `tid` after verification.
            verifier = verifier.require_issuer_match(false);
        }
        let algs: Vec<CoreJwsSigningAlgorithm> = algs
            .iter()
            .filter_map(|alg| serde_json::from_value(JsonValue::String(alg.clone())).ok())
            .collect();
        let skew = CLOCK_SKEW.as_secs() as i64;
        verifier = verifier
            .set_allowed_algs(algs)
            // `exp` is checked against this clock: the skew is the leeway.
            .set_time_fn(move || to_datetime(now - skew))
            .set_issue_time_verifier_fn(move |iat| {
                let iat = iat.timestamp();
                if iat > now + skew {
                    Err(format!("issued {}s in the future", iat - now))
                } else if iat < not_before - skew {
                    Err("issued before this login started".to_string())
                } else {
                    Ok(())
                }
            });
        verifier
    }

    /// Verifies the ID token, refetching the JWKS once if its key is unknown (key rotation).
    pub(super) async fn verify_id_token<'t>(
        &self,
        discovered: &Discovered,
        id_token: &'t AllIdToken,
        pending: &PendingLogin,
        now: i64,
    ) -> Result<&'t AllIdTokenClaims, Error> {
        // The signature is checked by `verified_payload` (ring where it can: several times
        // faster than the pure-Rust curves, and the largest cost of a callback), with the same
        // rules openidconnect applies; openidconnect then checks every claim.
        let raw = id_token.to_string();
        if let Err(reason) = self.verified_payload(discovered, &raw).await {
            tracing::info!(idp = %self.config.name, reason, "ID token rejected");
            return Err(Error::IdTokenInvalid(
                "the ID token failed verification".into(),
            ));
        }
        let nonce = Nonce::new(pending.nonce.clone());
        let verifier = self
            .verifier(
                &discovered.algs,
                CoreJsonWebKeySet::new(Vec::new()),
                pending.created_at,
                now,
            )
            .insecure_disable_signature_check();
        let claims = id_token.claims(&verifier, &nonce).map_err(|err| {
            tracing::info!(idp = %self.config.name, reason = %claims_error_reason(&err), "ID token rejected");
            Error::IdTokenInvalid("the ID token failed verification".into())
        })?;
        if let Some(template) = &self.info.issuer_template {
            let tid = claims
                .additional_claims()
                .claims
                .get("tid")
                .and_then(JsonValue::as_str)
                .unwrap_or_default();
            // Tenant ids are GUIDs; "common" or "organizations" are not tenants.
            if !is_guid(tid) || claims.issuer().as_str() != template.replace("{tenantid}", tid) {
                tracing::info!(idp = %self.config.name, "ID token issuer does not match its tenant");
                return Err(Error::IdTokenInvalid(
                    "the ID token failed verification".into(),
                ));
            }
        }
        if let Some(azp) = claims.authorized_party() {
            if azp.as_str() != self.config.client_id {
                return Err(Error::IdTokenInvalid(
                    "the ID token was issued to another client (azp)".into(),
                ));
            }
        }
        if !valid_subject(claims.subject().as_str()) {
            return Err(Error::IdTokenInvalid(
                "the ID token's subject is not a valid identifier".into(),
            ));
        }
        Ok(claims)
    }
}

/// The `at_hash` of an access token: the left half of its hash with the signature
/// algorithm's hash function, base64url. Computed here rather than from a JWK because HMAC
/// algorithms have no JWK.
pub(super) fn access_token_hash(
    access_token: &str,
    alg: &CoreJwsSigningAlgorithm,
) -> Option<String> {
    use base64::Engine;
    use sha2::Digest;
    use CoreJwsSigningAlgorithm as Alg;
    let digest: Vec<u8> = match alg {
        Alg::RsaSsaPkcs1V15Sha256
        | Alg::RsaSsaPssSha256
        | Alg::EcdsaP256Sha256
        | Alg::HmacSha256 => sha2::Sha256::digest(access_token.as_bytes()).to_vec(),
        Alg::RsaSsaPkcs1V15Sha384
        | Alg::RsaSsaPssSha384
        | Alg::EcdsaP384Sha384
        | Alg::HmacSha384 => sha2::Sha384::digest(access_token.as_bytes()).to_vec(),
        Alg::RsaSsaPkcs1V15Sha512 | Alg::RsaSsaPssSha512 | Alg::HmacSha512 | Alg::EdDsa => {
            sha2::Sha512::digest(access_token.as_bytes()).to_vec()
        }
        _ => return None,
    };
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]))
}

/// A short reason for logs. Claims errors carry no token material.
pub(super) fn claims_error_reason(err: &ClaimsVerificationError) -> String {
    err.to_string()
}

/// Whether a JWK can verify `alg`: openidconnect's rule (key type, and the key's own `alg` if
/// it names one).
pub(super) fn key_fits(key: &CoreJsonWebKey, alg: &CoreJwsSigningAlgorithm) -> bool {
    use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JwsSigningAlgorithm};
    if alg.key_type().as_ref() != Some(key.key_type()) {
        return false;
    }
    match key.signing_alg() {
        JsonWebKeyAlgorithm::Unspecified => true,
        JsonWebKeyAlgorithm::Algorithm(key_alg) => key_alg == alg,
        JsonWebKeyAlgorithm::Unsupported => false,
    }
}

/// Verifies with ring where it can; `None` leaves the key to openidconnect (P-521, RSA keys
/// under 2048 bits). ring's P-256 verification is several times faster than the pure-Rust one.
pub(super) fn ring_verify(
    key: &CoreJsonWebKey,
    alg: &str,
    message: &[u8],
    signature: &[u8],
) -> Option<bool> {
    use base64::Engine;
    use ring::signature as sig;
    let jwk = serde_json::to_value(key).ok()?;
    let bytes = |name: &str| {
        jwk.get(name).and_then(JsonValue::as_str).and_then(|v| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .ok()
        })
    };
    let rsa = |params: &'static sig::RsaParameters| -> Option<bool> {
        let (n, e) = (bytes("n")?, bytes("e")?);
        let n = n.strip_prefix(&[0]).unwrap_or(&n).to_vec();
        if n.len() < 256 {
            return None;
        }
        Some(
            sig::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, message, signature)
                .is_ok(),
        )
    };
    let ec = |algorithm: &'static dyn sig::VerificationAlgorithm, size: usize| -> Option<bool> {
        let (x, y) = (bytes("x")?, bytes("y")?);
        if x.len() != size || y.len() != size {
            return Some(false);
        }
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Some(
            sig::UnparsedPublicKey::new(algorithm, point)
                .verify(message, signature)
                .is_ok(),
        )
    };
    match alg {
        "RS256" => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&sig::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&sig::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&sig::RSA_PSS_2048_8192_SHA512),
        "ES256" => ec(&sig::ECDSA_P256_SHA256_FIXED, 32),
        "ES384" => ec(&sig::ECDSA_P384_SHA384_FIXED, 48),
        "EdDSA" => {
            let x = bytes("x")?;
            Some(
                sig::UnparsedPublicKey::new(&sig::ED25519, x)
                    .verify(message, signature)
                    .is_ok(),
            )
        }
        _ => None,
    }
}

impl Idp {
    /// Verifies a compact JWS from this IdP: an allowed algorithm (never `none`), no `crit`,
    /// and a signature by one of its keys (the JWKS refetched once for an unknown `kid`).
    /// Returns the claims; the caller checks them. The error is a reason for logs only.
    pub async fn verify_jws(&self, jwt: &str, typs: &[&str]) -> Result<JsonValue, &'static str> {
        if !typ_allowed(jwt, typs) {
            return Err("typ");
        }
        let discovered = self.discovered().await.map_err(|_| "IdP unavailable")?;
        let payload = self.verified_payload(&discovered, jwt).await?;
        serde_json::from_slice(&payload).map_err(|_| "claims")
    }

    /// Checks a compact JWS's signature with the IdP's keys and returns its decoded payload:
    /// the `alg` must be one of `id_token_algs` (never `none`), no `crit` header, and exactly one
    /// key may match the `kid` and algorithm (HS* use the client secret). An unknown key
    /// refetches the JWKS once (coalesced and throttled). ID tokens, logout tokens and JWT
    /// access tokens all go through here.
    pub(super) async fn verified_payload(
        &self,
        discovered: &Discovered,
        jwt: &str,
    ) -> Result<Vec<u8>, &'static str> {
        let parts: Vec<&str> = jwt.split('.').collect();
        if parts.len() != 3 {
            return Err("not a signed JWT");
        }
        use base64::Engine;
        let decode = |part: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        };
        let header: JsonValue = decode(parts[0])
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("header")?;
        let payload = decode(parts[1]).ok_or("claims")?;
        let signature = decode(parts[2]).ok_or("signature encoding")?;
        let alg_name = header
            .get("alg")
            .and_then(JsonValue::as_str)
            .unwrap_or("none");
        if alg_name == "none" || !discovered.algs.iter().any(|alg| alg == alg_name) {
            if crate::config::SUPPORTED_ALGS.contains(&alg_name) {
                // Most often a real IdP that signs with what nobody allowed: say what to set.
                tracing::warn!(
                    idp = %self.config.name,
                    alg = %crate::text::loggable(alg_name),
                    allowed = %discovered.algs.join(", "),
                    "a token signed with an algorithm this IdP may not use was refused; if the IdP signs with it, add it to id_token_algs in its [idps.*] entry"
                );
            }
            return Err("algorithm not allowed");
        }
        if header.get("crit").is_some() || header.get("enc").is_some() {
            return Err("crit or enc header");
        }
        let alg: CoreJwsSigningAlgorithm =
            serde_json::from_value(JsonValue::String(alg_name.to_string()))
                .map_err(|_| "algorithm")?;
        let message = &jwt[..parts[0].len() + 1 + parts[1].len()];
        let kid = header.get("kid").and_then(JsonValue::as_str);
        let verify_with = |jwks: &CoreJsonWebKeySet| -> Result<(), SignatureVerificationError> {
            use openidconnect::JsonWebKey;
            if alg_name.starts_with("HS") {
                // A public client has no secret: anyone could forge such a signature.
                let secret = self.config.client_secret.as_ref().ok_or_else(|| {
                    SignatureVerificationError::DisallowedAlg("no client secret".into())
                })?;
                return CoreJsonWebKey::new_symmetric(secret.expose().as_bytes().to_vec())
                    .verify_signature(&alg, message.as_bytes(), &signature);
            }
            let keys: Vec<&CoreJsonWebKey> = jwks
                .keys()
                .iter()
                .filter(|key| kid.is_none_or(|kid| key.key_id().map(|id| id.as_str()) == Some(kid)))
                .filter(|key| {
                    key.key_use()
                        .is_none_or(|u| u == &openidconnect::core::CoreJsonWebKeyUse::Signature)
                })
                .filter(|key| key_fits(key, &alg))
                .collect();
            match keys.as_slice() {
                [] => Err(SignatureVerificationError::NoMatchingKey),
                [key] => match ring_verify(key, alg_name, message.as_bytes(), &signature) {
                    Some(true) => Ok(()),
                    Some(false) => Err(SignatureVerificationError::CryptoError(
                        "bad signature".into(),
                    )),
                    None => key.verify_signature(&alg, message.as_bytes(), &signature),
                },
                _ => Err(SignatureVerificationError::AmbiguousKeyId(
                    "several keys".into(),
                )),
            }
        };
        let (generation, jwks) = discovered.jwks();
        let mut checked = verify_with(&jwks);
        if matches!(checked, Err(SignatureVerificationError::NoMatchingKey)) {
            if let Some(jwks) = self.refetch_jwks(discovered, generation).await {
                checked = verify_with(&jwks);
            }
        }
        match checked {
            Ok(()) => Ok(payload),
            Err(SignatureVerificationError::NoMatchingKey) => Err("no matching key"),
            Err(SignatureVerificationError::AmbiguousKeyId(_)) => Err("ambiguous key"),
            Err(_) => Err("signature"),
        }
    }

    /// Verifies an IdP-issued JWT access token presented as a bearer token: signature,
    /// `typ` (`at+jwt` or `JWT`, if any), `iss`, an `aud` among `accepted_audiences` and never
    /// our own client id, no `nonce` (an ID token is no access token: SECURITY I72), `exp`
    /// (required), `nbf`, and a valid `sub`. Returns the verified claims, for the provider's
    /// own policy and subject mapping. Only IdPs with `accepted_audiences` accept any.
    pub async fn verify_access_token(
        &self,
        jwt: &str,
        now: i64,
    ) -> Result<authnz_plugin::VerifiedClaims, &'static str> {
        if self.config.accepted_audiences.is_empty() {
            return Err("this IdP's access tokens are not accepted");
        }
        let claims = self.verify_jws(jwt, &["at+jwt", "JWT"]).await?;
        let string = |name: &str| claims.get(name).and_then(JsonValue::as_str);
        if !string("iss").is_some_and(|iss| self.issuer_matches(iss)) {
            return Err("iss");
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(JsonValue::String(aud)) => vec![aud.as_str()],
            Some(JsonValue::Array(auds)) => auds.iter().filter_map(JsonValue::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|aud| self.config.accepted_audiences.iter().any(|ok| ok == aud))
        {
            return Err("aud");
        }
        // An ID token is addressed to us and carries the login's nonce; an access token is
        // for an API, never for our client.
        if audiences.contains(&self.config.client_id.as_str()) {
            return Err("aud is our own client: an ID token");
        }
        // Claims only ID tokens carry (OpenID Connect Core §2, §3.1.3.6).
        if ["nonce", "at_hash", "c_hash"]
            .iter()
            .any(|claim| claims.get(claim).is_some())
        {
            return Err("an ID token's claim (nonce, at_hash or c_hash)");
        }
        let skew = CLOCK_SKEW.as_secs() as i64;
        match claims.get("exp").and_then(JsonValue::as_i64) {
            Some(exp) if exp > now - skew => {}
            _ => return Err("exp"),
        }
        if claims
            .get("nbf")
            .and_then(JsonValue::as_i64)
            .is_some_and(|nbf| nbf > now + skew)
        {
            return Err("nbf");
        }
        let subject = match string("sub") {
            Some(sub) if valid_subject(sub) => sub.to_string(),
            _ => return Err("sub"),
        };
        let issuer = string("iss").unwrap_or_default().to_string();
        let JsonValue::Object(claims) = claims else {
            return Err("claims");
        };
        Ok(authnz_plugin::VerifiedClaims {
            issuer,
            subject,
            claims,
        })
    }

    /// Verifies a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.6) and returns
    /// what it names. Every failure is a 400. The caller refuses a `jti` seen before.
    pub async fn verify_logout_token(&self, jwt: &str, now: i64) -> Result<LogoutClaims, Error> {
        let bad = |why: &str| {
            tracing::info!(idp = %self.config.name, reason = why, "logout token rejected");
            Error::InvalidLogoutToken("the logout token is invalid".into())
        };
        // Unreachable keys are the IdP's failure, not a bad token.
        self.discovered().await?;
        let claims = self
            .verify_jws(jwt, &["logout+jwt", "JWT"])
            .await
            .map_err(bad)?;
        let string = |name: &str| {
            claims
                .get(name)
                .and_then(JsonValue::as_str)
                .map(str::to_string)
        };
        let issuer_ok = match &self.info.issuer_template {
            None => string("iss").as_deref() == Some(self.config.issuer.as_str()),
            Some(_) => string("iss").is_some_and(|iss| self.issuer_matches(&iss)),
        };
        if !issuer_ok {
            return Err(bad("iss"));
        }
        let audience_ok = match claims.get("aud") {
            Some(JsonValue::String(aud)) => aud == &self.config.client_id,
            Some(JsonValue::Array(auds)) => {
                auds.len() == 1 && auds[0].as_str() == Some(self.config.client_id.as_str())
            }
            _ => false,
        };
        if !audience_ok {
            return Err(bad("aud"));
        }
        let iat = claims
            .get("iat")
            .and_then(JsonValue::as_i64)
            .ok_or_else(|| bad("iat"))?;
        let skew = CLOCK_SKEW.as_secs() as i64;
        if iat > now + skew || iat < now - 600 {
            return Err(bad("iat out of bounds"));
        }
        if claims
            .get("exp")
            .and_then(JsonValue::as_i64)
            .is_some_and(|exp| exp < now - skew)
        {
            return Err(bad("expired"));
        }
        let jti = string("jti")
            .filter(|jti| !jti.is_empty() && jti.len() <= 256)
            .ok_or_else(|| bad("jti"))?;
        let event_ok = claims
            .get("events")
            .and_then(JsonValue::as_object)
            .and_then(|events| events.get("http://schemas.openid.net/event/backchannel-logout"))
            .is_some_and(JsonValue::is_object);
        if !event_ok {
            return Err(bad("events"));
        }
        if claims.get("nonce").is_some() {
            return Err(bad("nonce"));
        }
        let (sub, sid) = (string("sub"), string("sid"));
        if sub.is_none() && sid.is_none() {
            return Err(bad("neither sub nor sid"));
        }
        if sub.as_deref().is_some_and(|sub| !valid_subject(sub)) {
            return Err(bad("sub"));
        }
        Ok(LogoutClaims {
            sub,
            sid,
            jti,
            // Past this, the `iat` window refuses the token anyway.
            replayable_until: iat + 600 + skew,
            claims: match claims {
                JsonValue::Object(claims) => claims,
                _ => JsonMap::new(),
            },
        })
    }
}

/// What a verified logout token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sub: Option<String>,
    pub sid: Option<String>,
    /// Its unique id: a second use is a replay (SECURITY I75).
    pub jti: String,
    /// Unix seconds until which the token would still verify.
    pub replayable_until: i64,
    /// Every claim, for the provider's subject mapping.
    pub claims: JsonMap<String, JsonValue>,
}

/// Whether a JWS's `typ` header is absent or one of `typs` (compared as RFC 7515 §4.1.9 says:
/// case-insensitively, an `application/` prefix optional).
pub(super) fn typ_allowed(jwt: &str, typs: &[&str]) -> bool {
    use base64::Engine;
    let header = jwt
        .split('.')
        .next()
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<JsonValue>(&bytes).ok());
    match header.as_ref().and_then(|header| header.get("typ")) {
        None => true,
        Some(JsonValue::String(typ)) => {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            typs.iter().any(|allowed| allowed.eq_ignore_ascii_case(typ))
        }
        Some(_) => false,
    }
}

/// The `iss` and `sub` of a stored ID token (already verified when it was stored).
pub(super) struct IdTokenClaimsView {
    pub(super) iss: String,
    pub(super) sub: String,
}

impl IdTokenClaimsView {
    pub(super) fn of(id_token: &str) -> Option<Self> {
        use base64::Engine;
        let payload = id_token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        let claims: JsonValue = serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            iss: claims.get("iss")?.as_str()?.to_string(),
            sub: claims.get("sub")?.as_str()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subject_shape() {
        for good in ["a", "248289761001", &"x".repeat(255), "ü-ñ"] {
            assert!(valid_subject(good), "{good}");
        }
        for bad in ["", &"x".repeat(256), "a\nb", "a\u{0}b", "\u{7f}"] {
            assert!(!valid_subject(bad), "{bad:?}");
        }
    }

    fn jwk(value: JsonValue) -> CoreJsonWebKey {
        serde_json::from_value(value).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn ring_verifies_es256_and_eddsa_and_leaves_the_rest() {
        use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let key = jwk(
            json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        );
        let signature = pair.sign(&rng, b"header.claims").unwrap();
        assert!(key_fits(&key, &CoreJwsSigningAlgorithm::EcdsaP256Sha256));
        assert!(!key_fits(
            &key,
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        ));
        assert_eq!(
            ring_verify(&key, "ES256", b"header.claims", signature.as_ref()),
            Some(true)
        );
        assert_eq!(
            ring_verify(&key, "ES256", b"header.claimz", signature.as_ref()),
            Some(false)
        );
        let mut short = signature.as_ref().to_vec();
        short.pop();
        assert_eq!(
            ring_verify(&key, "ES256", b"header.claims", &short),
            Some(false)
        );

        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key =
            jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}));
        let signature = pair.sign(b"m");
        assert_eq!(
            ring_verify(&key, "EdDSA", b"m", signature.as_ref()),
            Some(true)
        );
        assert_eq!(
            ring_verify(&key, "EdDSA", b"n", signature.as_ref()),
            Some(false)
        );

        // Left to openidconnect: RSA under 2048 bits, P-521, HMAC.
        let small = jwk(json!({"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"}));
        assert_eq!(ring_verify(&small, "RS256", b"m", &[0; 128]), None);
        assert_eq!(ring_verify(&small, "HS256", b"m", &[0; 32]), None);
        let big = jwk(json!({"kty": "RSA", "n": b64(&[0xc5; 256]), "e": "AQAB"}));
        assert_eq!(ring_verify(&big, "RS256", b"m", &[1; 256]), Some(false));
        let keyed = jwk(json!({"kty": "RSA", "alg": "PS256", "n": b64(&[0xc5; 256]), "e": "AQAB"}));
        assert!(!key_fits(
            &keyed,
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        ));
        assert!(key_fits(&keyed, &CoreJwsSigningAlgorithm::RsaSsaPssSha256));
    }
}
