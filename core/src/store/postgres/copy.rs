//! `authnz copy-store`: an embedded (sled) database copied into PostgreSQL: users, the email
//! index, identities with their sealed tokens, sessions and API keys. Rows already there are
//! left alone, so running it again copies nothing twice. Pending logins and sign-ups, which
//! live for minutes, are not copied.

use std::collections::BTreeMap;

use super::{db_error, PgStore};
use crate::store::{decode, ApiKey, Dump, EmailOwner, Identity, Session, StoreResult, User};

/// What a copy did, per collection: (copied, already there).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub counts: BTreeMap<&'static str, (u64, u64)>,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(name, (copied, there))| {
                format!("{name}: {copied} copied, {there} already there")
            })
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl PgStore {
    /// Copies the records of a sled dump (see [`crate::store::SledStore::dump`]) in one
    /// transaction: all or nothing.
    pub async fn copy_from(&self, dump: &Dump) -> StoreResult<CopyReport> {
        let empty = BTreeMap::new();
        let records = |name: &str| dump.get(name).unwrap_or(&empty);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let mut report = CopyReport::default();
        let mut tally = |name: &'static str, inserted: u64| {
            let entry = report.counts.entry(name).or_default();
            entry.0 += inserted;
            entry.1 += 1 - inserted.min(1);
        };
        for value in records("users").values() {
            let user: User = decode(value)?;
            let inserted = tx
                .execute(
                    "INSERT INTO users (id, username, email, display_name, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &user.id,
                        &user.username,
                        &user.email,
                        &user.display_name,
                        &user.created_at,
                    ],
                )
                .await
                .map_err(db_error)?;
            tally("users", inserted);
        }
        for (email, value) in records("emails") {
            let owner: EmailOwner = decode(value)?;
            let email = String::from_utf8_lossy(email).into_owned();
            let inserted = tx
                .execute(
                    "INSERT INTO emails (email, user_id, authoritative) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&email, &owner.user_id, &owner.authoritative],
                )
                .await
                .map_err(db_error)?;
            tally("email index", inserted);
        }
        let tokens = records("tokens");
        for (key, value) in records("identities") {
            let identity: Identity = decode(value)?;
            let sealed: Option<&Vec<u8>> = tokens.get(key);
            let inserted = tx
                .execute(
                    "INSERT INTO identities (idp, subject, issuer, user_id, email, email_verified,
                         linked_at, last_login_at, tokens, groups)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                    &[
                        &identity.idp,
                        &identity.subject,
                        &identity.issuer,
                        &identity.user_id,
                        &identity.email,
                        &identity.email_verified,
                        &identity.linked_at,
                        &identity.last_login_at,
                        &sealed,
                        &identity.groups,
                    ],
                )
                .await
                .map_err(db_error)?;
            tally("identities", inserted);
        }
        for (hash, value) in records("sessions") {
            let session: Session = decode(value)?;
            let hash = String::from_utf8_lossy(hash).into_owned();
            let inserted = tx
                .execute(
                    "INSERT INTO sessions (hash, user_id, idp, subject, created_at, expires_at,
                         sid, csrf, id_token, device, network)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                    &[
                        &hash,
                        &session.user_id,
                        &session.idp,
                        &session.subject,
                        &session.created_at,
                        &session.expires_at,
                        &session.sid,
                        &session.csrf,
                        &session.id_token,
                        &session.device,
                        &session.network,
                    ],
                )
                .await
                .map_err(db_error)?;
            tally("sessions", inserted);
        }
        for (hash, value) in records("api_keys") {
            let key: ApiKey = decode(value)?;
            let hash = String::from_utf8_lossy(hash).into_owned();
            let inserted = tx
                .execute(
                    "INSERT INTO api_keys (hash, id, user_id, name, prefix, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &[
                        &hash,
                        &key.id,
                        &key.user_id,
                        &key.name,
                        &key.prefix,
                        &key.created_at,
                        &key.expires_at,
                    ],
                )
                .await
                .map_err(db_error)?;
            tally("API keys", inserted);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(report)
    }
}
