//! The role traits of the store, one SQL transaction (or statement) per operation.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{db_error, is_missing_user, is_race, lock_key, state_key, PgStore};
use crate::store::{
    encode, identity_key, linking, ApiKey, ApiKeys, CompletedLogin, Dump, EmailOwner, Identities,
    Identity, LoginOutcome, PendingLogin, PendingLogins, RemoveOutcome, Session, Sessions, Signups,
    StoreError, StoreResult, Upkeep, User,
};

/// Rows a sweep removes per statement: bounded, so that no sweep holds many locks for long,
/// and any replica can sweep without coordinating.
const SWEEP_BATCH: i64 = 1000;

/// How many times a login that lost a race to another transaction is run again.
const LOGIN_ATTEMPTS: usize = 8;

const USER_COLUMNS: &str = "id, username, email, display_name, created_at";
const IDENTITY_COLUMNS: &str =
    "idp, subject, issuer, user_id, email, email_verified, linked_at, last_login_at, groups";
const SESSION_COLUMNS: &str =
    "user_id, idp, subject, created_at, expires_at, sid, csrf, id_token, device, network";
const API_KEY_COLUMNS: &str = "id, user_id, name, prefix, created_at, expires_at";

fn user(row: &Row) -> User {
    User {
        id: row.get(0),
        username: row.get(1),
        email: row.get(2),
        display_name: row.get(3),
        created_at: row.get(4),
    }
}

fn identity(row: &Row) -> Identity {
    Identity {
        idp: row.get(0),
        subject: row.get(1),
        issuer: row.get(2),
        user_id: row.get(3),
        email: row.get(4),
        email_verified: row.get(5),
        linked_at: row.get(6),
        last_login_at: row.get(7),
        groups: row.get(8),
    }
}

fn session(row: &Row) -> Session {
    Session {
        user_id: row.get(0),
        idp: row.get(1),
        subject: row.get(2),
        created_at: row.get(3),
        expires_at: row.get(4),
        sid: row.get(5),
        csrf: row.get(6),
        id_token: row.get(7),
        device: row.get(8),
        network: row.get(9),
    }
}

fn api_key(row: &Row) -> ApiKey {
    ApiKey {
        id: row.get(0),
        user_id: row.get(1),
        name: row.get(2),
        prefix: row.get(3),
        created_at: row.get(4),
        expires_at: row.get(5),
    }
}

fn count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

/// Why one attempt at a login did not finish.
enum Attempt {
    /// It lost a race to another transaction: run it again, it will decide anew.
    Raced,
    Failed(StoreError),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(err: tokio_postgres::Error) -> Self {
        if is_race(&err) {
            Attempt::Raced
        } else if is_missing_user(&err) {
            Attempt::Failed(StoreError::NoSuchUser)
        } else {
            Attempt::Failed(db_error(err))
        }
    }
}

impl From<StoreError> for Attempt {
    fn from(err: StoreError) -> Self {
        Attempt::Failed(err)
    }
}

impl PgStore {
    /// One attempt at [`Identities::complete_login`], in one transaction.
    async fn try_complete_login(&self, login: &CompletedLogin) -> Result<LoginOutcome, Attempt> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Logins of one identity, and first logins wanting one address, one at a time.
        let email = linking::email_key(login);
        let mut locks = vec![lock_key(
            "identity",
            &identity_key(&login.idp, &login.subject),
        )];
        if let Some(email) = &email {
            locks.push(lock_key("email", email.as_bytes()));
        }
        locks.sort_unstable();
        // The locks, then the reads, sent together (pipelined on the connection: one round
        // trip); the server runs them in order, so the reads see what the locks waited for.
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k")
            .await
            .map_err(db_error)?;
        let read_identity = tx
            .prepare_cached(&format!(
                "SELECT {IDENTITY_COLUMNS}, tokens FROM identities
                 WHERE idp = $1 AND subject = $2 FOR UPDATE"
            ))
            .await
            .map_err(db_error)?;
        let read_owner = tx
            .prepare_cached("SELECT user_id, authoritative FROM emails WHERE email = $1")
            .await
            .map_err(db_error)?;
        let (_, existing, owner) = tokio::try_join!(
            async { tx.execute(&lock, &[&locks]).await },
            async {
                tx.query_opt(&read_identity, &[&login.idp, &login.subject])
                    .await
            },
            async {
                match &email {
                    Some(email) => tx.query_opt(&read_owner, &[email]).await,
                    None => Ok(None),
                }
            }
        )?;
        let old_tokens: Option<Vec<u8>> = existing.as_ref().and_then(|row| row.get(9));
        let existing = existing.as_ref().map(identity);
        let owner = owner.map(|row| EmailOwner {
            user_id: row.get(0),
            authoritative: row.get(1),
        });
        let found = linking::Found {
            identity: existing.as_ref(),
            email_owner: owner.as_ref(),
        };
        let link = linking::decide(login, found)?;
        let user_of = |user_id: String| {
            let tx = &tx;
            async move {
                let statement = tx
                    .prepare_cached(&format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR KEY SHARE"
                    ))
                    .await?;
                tx.query_opt(&statement, &[&user_id])
                    .await
                    .map(|row| row.as_ref().map(user))
            }
        };
        let (user, created, linked) = match link {
            linking::Link::Returning { user_id } => {
                let user = user_of(user_id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("identity without its user".into()))?;
                tx.execute(
                    &tx.prepare_cached(
                        "UPDATE identities SET issuer = $3, email = $4, email_verified = $5,
                         last_login_at = $6, tokens = $7, groups = $8
                     WHERE idp = $1 AND subject = $2",
                    )
                    .await
                    .map_err(db_error)?,
                    &[
                        &login.idp,
                        &login.subject,
                        &login.issuer,
                        &login.email,
                        &login.email_verified,
                        &login.now,
                        &login.sealed_tokens,
                        &login.groups,
                    ],
                )
                .await?;
                (user, false, false)
            }
            link => {
                let (user, created) = match link {
                    linking::Link::Join { user_id } => (
                        user_of(user_id).await?.ok_or(StoreError::NoSuchUser)?,
                        false,
                    ),
                    _ => (self.create_user(&tx, login).await?, true),
                };
                (user, created, !created)
            }
        };
        // The writes, sent together (one round trip), then the commit.
        let returning = !created && !linked;
        let email_entry = linking::email_entry(login, &user.id).filter(|_| created);
        let insert_email = tx
            .prepare_cached(
                "INSERT INTO emails (email, user_id, authoritative) VALUES ($1, $2, $3)",
            )
            .await
            .map_err(db_error)?;
        let insert_identity = tx
            .prepare_cached(
                "INSERT INTO identities (idp, subject, issuer, user_id, email, email_verified,
                     linked_at, last_login_at, tokens, groups)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
            )
            .await
            .map_err(db_error)?;
        let insert_session = tx
            .prepare_cached(
                "INSERT INTO sessions (hash, user_id, idp, subject, created_at, expires_at, sid,
                     csrf, id_token, device, network)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await
            .map_err(db_error)?;
        tokio::try_join!(
            async {
                match &email_entry {
                    Some((email, owner)) => {
                        tx.execute(
                            &insert_email,
                            &[email, &owner.user_id, &owner.authoritative],
                        )
                        .await
                    }
                    None => Ok(0),
                }
            },
            async {
                if returning {
                    return Ok(0);
                }
                tx.execute(
                    &insert_identity,
                    &[
                        &login.idp,
                        &login.subject,
                        &login.issuer,
                        &user.id,
                        &login.email,
                        &login.email_verified,
                        &login.now,
                        &login.sealed_tokens,
                        &login.groups,
                    ],
                )
                .await
            },
            async {
                tx.execute(
                    &insert_session,
                    &[
                        &login.session_hash,
                        &user.id,
                        &login.idp,
                        &login.subject,
                        &login.now,
                        &login.session_expires_at,
                        &login.sid,
                        &login.csrf,
                        &login.sealed_id_token,
                        &login.device,
                        &login.network,
                    ],
                )
                .await
            },
        )?;
        tx.commit().await?;
        Ok(LoginOutcome {
            user,
            created,
            linked,
            replaced_tokens: old_tokens.filter(|old| *old != login.sealed_tokens),
        })
    }

    /// The usual logins without the transaction: a returning identity in one statement, and
    /// the facts a first login depends on read alongside it (pipelined on the connection: one
    /// round trip); a first login that the linking rule gives a new user then takes one more
    /// statement ([`Self::new_user_login`]). `None`: anything else (a refusal, a join, an
    /// identity the returning statement did not take, a race), for the transaction that
    /// decides under its locks.
    async fn quick_login(&self, login: &CompletedLogin) -> StoreResult<Option<LoginOutcome>> {
        let client = self.client().await?;
        let returning = client
            .prepare_cached(
                "WITH old AS (
                     SELECT idp, subject, tokens FROM identities
                     WHERE idp = $1 AND subject = $2
                       AND (issuer = $3 OR issuer = ANY($4::text[]))
                       AND ($5::text IS NULL OR user_id = $5)
                     FOR UPDATE
                 ), updated AS (
                     UPDATE identities AS i
                     SET issuer = $3, email = $6, email_verified = $7, last_login_at = $8,
                         tokens = $9, groups = $15
                     FROM old WHERE i.idp = old.idp AND i.subject = old.subject
                     RETURNING i.user_id, old.tokens AS old_tokens
                 ), started AS (
                     INSERT INTO sessions (hash, user_id, idp, subject, created_at, expires_at,
                                           sid, csrf, id_token, device, network)
                     SELECT $10, user_id, $1, $2, $8, $11, $12, $13, $14, $16, $17 FROM updated
                 )
                 SELECT u.id, u.username, u.email, u.display_name, u.created_at,
                        updated.old_tokens
                 FROM updated JOIN users AS u ON u.id = updated.user_id",
            )
            .await
            .map_err(db_error)?;
        // Read after the statement above (the server runs them in order), without locks: a
        // first login acts on them only through unique keys that refuse what a concurrent
        // login changed meanwhile (see `new_user_login`).
        let facts = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM identities WHERE idp = $1 AND subject = $2),
                        owner.user_id, owner.authoritative
                 FROM (SELECT 1) AS one LEFT JOIN emails AS owner ON owner.email = $3::text",
            )
            .await
            .map_err(db_error)?;
        let email = linking::email_key(login);
        let (row, facts) = tokio::join!(
            async {
                client
                    .query_opt(
                        &returning,
                        &[
                            &login.idp,
                            &login.subject,
                            &login.issuer,
                            &login.previous_issuers,
                            &login.link_to,
                            &login.email,
                            &login.email_verified,
                            &login.now,
                            &login.sealed_tokens,
                            &login.session_hash,
                            &login.session_expires_at,
                            &login.sid,
                            &login.csrf,
                            &login.sealed_id_token,
                            &login.groups,
                            &login.device,
                            &login.network,
                        ],
                    )
                    .await
            },
            async {
                client
                    .query_one(&facts, &[&login.idp, &login.subject, &email])
                    .await
            },
        );
        let row = match row {
            Ok(row) => row,
            // The user went meanwhile: the transaction decides anew.
            Err(err) if is_missing_user(&err) => return Ok(None),
            Err(err) => return Err(db_error(err)),
        };
        if let Some(row) = row {
            let old: Option<Vec<u8>> = row.get(5);
            return Ok(Some(LoginOutcome {
                user: user(&row),
                created: false,
                linked: false,
                replaced_tokens: old.filter(|old| *old != login.sealed_tokens),
            }));
        }
        let facts = facts.map_err(db_error)?;
        if facts.get::<_, bool>(0) {
            return Ok(None);
        }
        let owner = facts
            .get::<_, Option<String>>(1)
            .zip(facts.get::<_, Option<bool>>(2))
            .map(|(user_id, authoritative)| EmailOwner {
                user_id,
                authoritative,
            });
        let found = linking::Found {
            identity: None,
            email_owner: owner.as_ref(),
        };
        match linking::decide(login, found) {
            Ok(linking::Link::NewUser) => self.new_user_login(&client, login).await,
            _ => Ok(None),
        }
    }

    /// A first login's new user, with its identity, its indexed address and its session, in
    /// one statement (one round trip, one commit). What the unlocked reads before it assumed
    /// is held by unique keys: an identity or an address another login stored meanwhile makes
    /// the statement fail as a whole, a username taken (or wanted by another login) makes it
    /// store nothing; either way `None`, and the transaction decides anew.
    async fn new_user_login(
        &self,
        client: &deadpool_postgres::Object,
        login: &CompletedLogin,
    ) -> StoreResult<Option<LoginOutcome>> {
        let statement = client
            .prepare_cached(
                "WITH new_user AS (
                     INSERT INTO users (id, username, email, display_name, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
                     RETURNING id
                 ), new_identity AS (
                     INSERT INTO identities (idp, subject, issuer, user_id, email,
                                             email_verified, linked_at, last_login_at, tokens,
                                             groups)
                     SELECT $6, $7, $8, id, $3, $9, $5, $5, $10, $11 FROM new_user
                 ), new_email AS (
                     INSERT INTO emails (email, user_id, authoritative)
                     SELECT $12::text, id, $13 FROM new_user WHERE $12::text IS NOT NULL
                 ), new_session AS (
                     INSERT INTO sessions (hash, user_id, idp, subject, created_at, expires_at,
                                           sid, csrf, id_token, device, network)
                     SELECT $14, id, $6, $7, $5, $15, $16, $17, $18, $19, $20 FROM new_user
                 )
                 SELECT count(*) FROM new_user",
            )
            .await
            .map_err(db_error)?;
        let user = User {
            id: login.new_user_id.clone(),
            username: login.username.clone(),
            email: login.email.clone(),
            display_name: login.display_name.clone(),
            created_at: login.now,
        };
        let entry = linking::email_entry(login, &user.id);
        let (email, authoritative) = match &entry {
            Some((email, owner)) => (Some(email.as_str()), owner.authoritative),
            None => (None, false),
        };
        let stored = client
            .query_one(
                &statement,
                &[
                    &user.id,
                    &user.username,
                    &user.email,
                    &user.display_name,
                    &user.created_at,
                    &login.idp,
                    &login.subject,
                    &login.issuer,
                    &login.email_verified,
                    &login.sealed_tokens,
                    &login.groups,
                    &email,
                    &authoritative,
                    &login.session_hash,
                    &login.session_expires_at,
                    &login.sid,
                    &login.csrf,
                    &login.sealed_id_token,
                    &login.device,
                    &login.network,
                ],
            )
            .await;
        match stored {
            Ok(row) if row.get::<_, i64>(0) == 1 => Ok(Some(LoginOutcome {
                user,
                created: true,
                linked: false,
                replaced_tokens: None,
            })),
            Ok(_) => Ok(None),
            Err(err) if is_race(&err) => Ok(None),
            Err(err) => Err(db_error(err)),
        }
    }

    /// A new user with the wanted username or the first free variant. A name another
    /// transaction takes meanwhile makes the insert conflict: the login runs again.
    async fn create_user(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        login: &CompletedLogin,
    ) -> Result<User, Attempt> {
        // Usually the wanted name is free: one index lookup. Only when it is not are the
        // numbered variants looked up, all at once.
        let statement = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)")
            .await
            .map_err(db_error)?;
        let wanted_taken: bool = tx.query_one(&statement, &[&login.username]).await?.get(0);
        let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
        if wanted_taken {
            let numbered: Vec<String> = crate::store::username_candidates(&login.username)
                .take(999)
                .collect();
            let statement = tx
                .prepare_cached("SELECT username FROM users WHERE username = ANY($1)")
                .await
                .map_err(db_error)?;
            taken = tx
                .query(&statement, &[&numbered])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
        }
        let username = linking::allocate_username(&login.username, |candidate| {
            Ok::<_, StoreError>(taken.contains(candidate))
        })?
        .ok_or(StoreError::UsernameExhausted)?;
        let user = User {
            id: login.new_user_id.clone(),
            username,
            email: login.email.clone(),
            display_name: login.display_name.clone(),
            created_at: login.now,
        };
        let inserted = tx
            .execute(
                &tx.prepare_cached(
                    "INSERT INTO users (id, username, email, display_name, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(db_error)?,
                &[
                    &user.id,
                    &user.username,
                    &user.email,
                    &user.display_name,
                    &user.created_at,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Attempt::Raced);
        }
        Ok(user)
    }

    /// Runs `DELETE … WHERE <key> IN (SELECT <key> … LIMIT n)` until a batch comes back short.
    async fn sweep(
        &self,
        table: &str,
        key: &str,
        condition: &str,
        bound: i64,
    ) -> StoreResult<usize> {
        let client = self.client().await?;
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN
                 (SELECT {key} FROM {table} WHERE {condition} LIMIT {SWEEP_BATCH})"
        );
        let mut removed = 0;
        loop {
            let batch = client
                .execute(
                    &client.prepare_cached(&sql).await.map_err(db_error)?,
                    &[&bound],
                )
                .await
                .map_err(db_error)?;
            removed += count(batch);
            if batch < SWEEP_BATCH as u64 {
                return Ok(removed);
            }
        }
    }
}

/// One statement on a pooled connection, prepared once per connection.
impl PgStore {
    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(db_error)?;
        client.query(&statement, params).await.map_err(db_error)
    }

    async fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(db_error)?;
        client.query_opt(&statement, params).await.map_err(db_error)
    }

    async fn one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Row> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(db_error)?;
        client.query_one(&statement, params).await.map_err(db_error)
    }

    async fn run(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(db_error)?;
        client.execute(&statement, params).await.map_err(db_error)
    }
}

#[async_trait]
impl PendingLogins for PgStore {
    async fn put_pending_login(&self, state: &str, login: &PendingLogin) -> StoreResult<()> {
        let record = self.pending_record(state, login)?;
        self.run(
            "INSERT INTO pending_logins (state_hash, created_at, record) VALUES ($1, $2, $3)
                 ON CONFLICT (state_hash) DO UPDATE
                     SET created_at = EXCLUDED.created_at, record = EXCLUDED.record",
            &[&state_key(state), &login.created_at, &record],
        )
        .await?;
        Ok(())
    }

    async fn take_pending_login(&self, state: &str) -> StoreResult<Option<PendingLogin>> {
        let client = self.client().await?;
        // One statement: of any number of racing callbacks on any replicas, one gets the row.
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "DELETE FROM pending_logins WHERE state_hash = $1 RETURNING record",
                    )
                    .await
                    .map_err(db_error)?,
                &[&state_key(state)],
            )
            .await
            .map_err(db_error)?;
        row.map(|row| self.pending_login(state, row.get(0)))
            .transpose()
    }

    async fn sweep_pending_logins(&self, created_before: i64) -> StoreResult<usize> {
        self.sweep(
            "pending_logins",
            "state_hash",
            "created_at < $1",
            created_before,
        )
        .await
    }
}

#[async_trait]
impl Identities for PgStore {
    async fn complete_login(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        if let Some(outcome) = self.quick_login(login).await? {
            return Ok(outcome);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_complete_login(login).await {
                Ok(outcome) => return Ok(outcome),
                Err(Attempt::Failed(err)) => return Err(err),
                Err(Attempt::Raced) if attempt < LOGIN_ATTEMPTS => continue,
                Err(Attempt::Raced) => {
                    return Err(StoreError::Backend(
                        "a login lost every race to concurrent ones".into(),
                    ))
                }
            }
        }
    }

    async fn complete_login_durable(&self, login: CompletedLogin) -> StoreResult<LoginOutcome> {
        // A committed transaction is durable (synchronous_commit).
        self.complete_login(&login).await
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        let row = self
            .row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
                &[&user_id],
            )
            .await?;
        Ok(row.as_ref().map(user))
    }

    async fn identity(&self, idp: &str, subject: &str) -> StoreResult<Option<Identity>> {
        let row = self
            .row(
                &format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE idp = $1 AND subject = $2"
                ),
                &[&idp, &subject],
            )
            .await?;
        Ok(row.as_ref().map(identity))
    }

    async fn email_owner(&self, email: &str) -> StoreResult<Option<EmailOwner>> {
        Ok(self
            .row(
                "SELECT user_id, authoritative FROM emails WHERE email = $1",
                &[&email],
            )
            .await?
            .map(|row| EmailOwner {
                user_id: row.get(0),
                authoritative: row.get(1),
            }))
    }

    async fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE user_id = $1
                     ORDER BY idp COLLATE \"C\", subject COLLATE \"C\""
                ),
                &[&user_id],
            )
            .await?;
        Ok(rows.iter().map(identity).collect())
    }

    async fn sealed_tokens(&self, idp: &str, subject: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .row(
                "SELECT tokens FROM identities WHERE idp = $1 AND subject = $2",
                &[&idp, &subject],
            )
            .await?;
        Ok(row.and_then(|row| row.get(0)))
    }

    async fn remove_identity(
        &self,
        user_id: &str,
        idp: &str,
        subject: &str,
        keep_session: Option<&str>,
    ) -> StoreResult<RemoveOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // Removals from one user one at a time: two can never take its last two identities.
        let exists = tx
            .query_opt(
                &tx.prepare_cached("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
                    .await
                    .map_err(db_error)?,
                &[&user_id],
            )
            .await
            .map_err(db_error)?;
        if exists.is_none() {
            return Ok(RemoveOutcome::NotFound);
        }
        let rows = tx
            .query(
                &tx.prepare_cached("SELECT idp, subject FROM identities WHERE user_id = $1")
                    .await
                    .map_err(db_error)?,
                &[&user_id],
            )
            .await
            .map_err(db_error)?;
        let owned = rows
            .iter()
            .any(|row| row.get::<_, &str>(0) == idp && row.get::<_, &str>(1) == subject);
        if !owned {
            return Ok(RemoveOutcome::NotFound);
        }
        if rows.len() <= 1 {
            return Ok(RemoveOutcome::LastIdentity);
        }
        let tokens: Option<Vec<u8>> = tx
            .query_one(
                &tx.prepare_cached(
                    "DELETE FROM identities WHERE idp = $1 AND subject = $2 RETURNING tokens",
                )
                .await
                .map_err(db_error)?,
                &[&idp, &subject],
            )
            .await
            .map_err(db_error)?
            .get(0);
        tx.execute(
            &tx.prepare_cached(
                "DELETE FROM sessions WHERE idp = $1 AND subject = $2 AND hash IS DISTINCT FROM $3",
            )
            .await
            .map_err(db_error)?,
            &[&idp, &subject, &keep_session],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(RemoveOutcome::Removed(tokens))
    }

    async fn replace_tokens(
        &self,
        idp: &str,
        subject: &str,
        expected: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        let swapped = self
            .run(
                "UPDATE identities SET tokens = $4
                 WHERE idp = $1 AND subject = $2 AND tokens = $3",
                &[&idp, &subject, &expected, &new],
            )
            .await?;
        Ok(swapped == 1)
    }

    async fn delete_tokens(&self, idp: &str, subject: &str) -> StoreResult<()> {
        self.run(
            "UPDATE identities SET tokens = NULL WHERE idp = $1 AND subject = $2",
            &[&idp, &subject],
        )
        .await?;
        Ok(())
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        // Identities, emails, sessions and API keys go with it (ON DELETE CASCADE).
        let deleted = client
            .execute(
                &client
                    .prepare_cached("DELETE FROM users WHERE id = $1")
                    .await
                    .map_err(db_error)?,
                &[&user_id],
            )
            .await
            .map_err(db_error)?;
        Ok(deleted > 0)
    }

    async fn migrate_issuers(&self, issuers: &BTreeMap<String, String>) -> StoreResult<usize> {
        let (idps, issuers): (Vec<&String>, Vec<&String>) = issuers.iter().unzip();
        let given = self
            .run(
                "UPDATE identities AS i SET issuer = m.issuer
                 FROM unnest($1::text[], $2::text[]) AS m (idp, issuer)
                 WHERE i.idp = m.idp AND i.issuer IS NULL",
                &[&idps, &issuers],
            )
            .await?;
        Ok(count(given))
    }
}

#[async_trait]
impl Sessions for PgStore {
    async fn session(&self, session_hash: &str) -> StoreResult<Option<Session>> {
        let row = self
            .row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE hash = $1"),
                &[&session_hash],
            )
            .await?;
        Ok(row.as_ref().map(session))
    }

    async fn delete_session(&self, session_hash: &str) -> StoreResult<bool> {
        let deleted = self
            .run("DELETE FROM sessions WHERE hash = $1", &[&session_hash])
            .await?;
        Ok(deleted > 0)
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(String, Session)>> {
        let rows = self
            .rows(
                &format!("SELECT {SESSION_COLUMNS}, hash FROM sessions WHERE user_id = $1"),
                &[&user_id],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(10), session(row))).collect())
    }

    async fn sweep_expired(&self, now: i64) -> StoreResult<usize> {
        self.sweep("sessions", "hash", "expires_at <= $1", now)
            .await
    }

    async fn repoint_session(
        &self,
        session_hash: &str,
        idp: &str,
        subject: &str,
    ) -> StoreResult<bool> {
        let updated = self
            .run(
                "UPDATE sessions SET idp = $2, subject = $3 WHERE hash = $1",
                &[&session_hash, &idp, &subject],
            )
            .await?;
        Ok(updated > 0)
    }

    async fn end_identity_sessions(
        &self,
        idp: &str,
        subject: Option<&str>,
        sid: Option<&str>,
    ) -> StoreResult<usize> {
        let ended = self
            .run(
                "DELETE FROM sessions WHERE idp = $1
                     AND ($2::text IS NULL OR subject = $2)
                     AND ($3::text IS NULL OR sid = $3)",
                &[&idp, &subject, &sid],
            )
            .await?;
        Ok(count(ended))
    }

    async fn identity_has_other_sessions(
        &self,
        idp: &str,
        subject: &str,
        except: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let row = self
            .one(
                "SELECT EXISTS (SELECT 1 FROM sessions
                     WHERE idp = $1 AND subject = $2 AND hash <> $3 AND expires_at > $4)",
                &[&idp, &subject, &except, &now],
            )
            .await?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl ApiKeys for PgStore {
    async fn put_api_key(&self, key_hash: &str, key: &ApiKey) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                &client.prepare_cached("INSERT INTO api_keys (hash, id, user_id, name, prefix, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)").await.map_err(db_error)?,
                &[
                    &key_hash,
                    &key.id,
                    &key.user_id,
                    &key.name,
                    &key.prefix,
                    &key.created_at,
                    &key.expires_at,
                ],
            )
            .await
            .map_err(|err| {
                if is_missing_user(&err) {
                    StoreError::NoSuchUser
                } else {
                    db_error(err)
                }
            })?;
        Ok(())
    }

    async fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let row = self
            .row(
                &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = $1"),
                &[&key_hash],
            )
            .await?;
        Ok(row.as_ref().map(api_key))
    }

    async fn api_keys_of(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1
                     ORDER BY id COLLATE \"C\""
                ),
                &[&user_id],
            )
            .await?;
        Ok(rows.iter().map(api_key).collect())
    }

    async fn delete_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool> {
        let deleted = self
            .run(
                "DELETE FROM api_keys WHERE user_id = $1 AND id = $2",
                &[&user_id, &key_id],
            )
            .await?;
        Ok(deleted > 0)
    }
}

#[async_trait]
impl Signups for PgStore {
    async fn put_signup(&self, id: &str, expires_at: i64, record: &[u8]) -> StoreResult<()> {
        self.run(
            "INSERT INTO signups (id, expires_at, record) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE
                     SET expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
            &[&id, &expires_at, &record],
        )
        .await?;
        Ok(())
    }

    async fn sweep_signups(&self, now: i64) -> StoreResult<usize> {
        self.sweep("signups", "id", "expires_at < $1", now).await
    }

    async fn take_signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .row("DELETE FROM signups WHERE id = $1 RETURNING record", &[&id])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .row("SELECT record FROM signups WHERE id = $1", &[&id])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }
}

#[async_trait]
impl Upkeep for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn sync(&self) -> StoreResult<()> {
        // Every operation commits durably before it returns.
        Ok(())
    }

    async fn dump(&self) -> StoreResult<Dump> {
        let client = self.client().await?;
        let mut out = Dump::new();
        let mut collect = |name: &str, records: BTreeMap<Vec<u8>, Vec<u8>>| {
            out.insert(name.to_string(), records);
        };
        let rows = |sql: String| {
            let client = &client;
            async move {
                client
                    .query(&client.prepare_cached(&sql).await.map_err(db_error)?, &[])
                    .await
                    .map_err(db_error)
            }
        };
        let mut records = BTreeMap::new();
        for row in rows(format!("SELECT {USER_COLUMNS} FROM users")).await? {
            let user = user(&row);
            records.insert(user.id.clone().into_bytes(), encode(&user)?);
        }
        collect("users", records);
        let mut identities = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        for row in rows(format!("SELECT {IDENTITY_COLUMNS}, tokens FROM identities")).await? {
            let identity = identity(&row);
            let key = identity_key(&identity.idp, &identity.subject);
            if let Some(sealed) = row.get::<_, Option<Vec<u8>>>(9) {
                tokens.insert(key.clone(), sealed);
            }
            identities.insert(key, encode(&identity)?);
        }
        collect("identities", identities);
        collect("tokens", tokens);
        let mut records = BTreeMap::new();
        for row in rows("SELECT email, user_id, authoritative FROM emails".into()).await? {
            let owner = EmailOwner {
                user_id: row.get(1),
                authoritative: row.get(2),
            };
            records.insert(row.get::<_, String>(0).into_bytes(), encode(&owner)?);
        }
        collect("emails", records);
        let mut records = BTreeMap::new();
        for row in rows(format!("SELECT {SESSION_COLUMNS}, hash FROM sessions")).await? {
            records.insert(
                row.get::<_, String>(10).into_bytes(),
                encode(&session(&row))?,
            );
        }
        collect("sessions", records);
        let mut records = BTreeMap::new();
        for row in rows(format!("SELECT {API_KEY_COLUMNS}, hash FROM api_keys")).await? {
            records.insert(
                row.get::<_, String>(6).into_bytes(),
                encode(&api_key(&row))?,
            );
        }
        collect("api_keys", records);
        let mut records = BTreeMap::new();
        for row in rows("SELECT id, record FROM signups".into()).await? {
            records.insert(row.get::<_, String>(0).into_bytes(), row.get(1));
        }
        collect("signups", records);
        let mut records = BTreeMap::new();
        for row in rows("SELECT state_hash, record FROM pending_logins".into()).await? {
            records.insert(row.get(0), row.get(1));
        }
        collect("pending_logins", records);
        Ok(out)
    }

    async fn probe(&self) -> StoreResult<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        self.run(
            "INSERT INTO authnz_meta (key, value) VALUES ('write-probe', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&now.to_be_bytes().as_slice()],
        )
        .await?;
        Ok(())
    }

    async fn key_canary(&self) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .row(
                "SELECT value FROM authnz_meta WHERE key = 'key-canary'",
                &[],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn put_key_canary(&self, sealed: &[u8]) -> StoreResult<()> {
        self.run(
            "INSERT INTO authnz_meta (key, value) VALUES ('key-canary', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&sealed],
        )
        .await?;
        Ok(())
    }
}
