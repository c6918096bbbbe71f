//! Group commit: logins arriving together are applied in one transaction and made durable
//! with one flush; each login is applied by [`apply_login`], which asks the linking rule.

use super::*;

/// Group commit: callers that ask for durability while a flush is running share the next one,
/// so 32 concurrent logins cost a few fsyncs, not 32 in a row.
#[derive(Default)]
pub(super) struct GroupCommit {
    /// Callers that asked, numbered from 1 (each after its writes were applied).
    pub(super) requested: std::sync::atomic::AtomicU64,
    /// Every caller numbered up to this is durable.
    pub(super) durable: std::sync::atomic::AtomicU64,
    /// One flush at a time; fair, so waiters are served in order.
    pub(super) turn: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    pub(super) async fn sync(&self, db: Db) -> StoreResult<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.requested.fetch_add(1, SeqCst) + 1;
        let _turn = self.turn.lock().await;
        if self.durable.load(SeqCst) >= ticket {
            return Ok(()); // a flush that started after our writes has finished
        }
        // Everyone numbered up to here applied their writes before taking a number, so this
        // flush covers them all. It runs on the blocking pool: no runtime thread waits on the
        // disk (sled's `flush_async` hung under 32 concurrent callbacks).
        if self.requested.load(SeqCst) > ticket {
            // Others are already waiting: give the rest of this burst a moment to join, so one
            // flush (a sealed log buffer, a write and a sync on sled's IO threads) serves more.
            tokio::time::sleep(COMMIT_WINDOW).await;
        }
        let covered = self.requested.load(SeqCst);
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))?
            .map_err(backend)?;
        self.durable.fetch_max(covered, SeqCst);
        Ok(())
    }
}

/// How long a flush waits for more callers when others are already queued behind it.
pub(super) const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// How many logins one transaction and flush may carry at most.
pub(super) const MAX_LOGIN_BATCH: usize = 128;

/// While logins arrive together, the writer lets the oldest waiting one wait this long before
/// it writes the batch, so that more share it: each batch costs sled two log writes and their
/// syncs, and the wakeups of its IO threads (the callback phase of the benchmark measures what
/// it buys). A lone login never waits.
pub(super) const LOGIN_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_micros(2000);

/// Durable logins, batched: logins that arrive while a batch is being written share the next
/// transaction and flush. sled rolls its log buffer (a write on its IO threads) for every
/// transaction and syncs it for every flush, so at 32 concurrent callbacks one transaction per
/// batch instead of per login is most of the difference.
pub(super) struct LoginBatcher {
    pub(super) db: Db,
    pub(super) trees: AccountTrees,
    pub(super) queue: std::sync::Mutex<LoginQueue>,
}

pub(super) type LoginReply = tokio::sync::oneshot::Sender<StoreResult<LoginOutcome>>;

pub(super) struct WaitingLogin {
    pub(super) login: CompletedLogin,
    pub(super) reply: LoginReply,
    pub(super) arrived: std::time::Instant,
}

#[derive(Default)]
pub(super) struct LoginQueue {
    pub(super) waiting: Vec<WaitingLogin>,
    /// A writer is running on the blocking pool; it takes what waits before it stops.
    pub(super) writing: bool,
}

impl LoginBatcher {
    pub(super) async fn commit(
        self: std::sync::Arc<Self>,
        login: CompletedLogin,
    ) -> StoreResult<LoginOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start_writer = {
            let mut queue = self.lock();
            queue.waiting.push(WaitingLogin {
                login,
                reply,
                arrived: std::time::Instant::now(),
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            tokio::task::spawn_blocking(move || self.write_all());
        }
        answer
            .await
            .map_err(|_| StoreError::Backend("the login writer stopped".into()))?
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, LoginQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes batches until none waits.
    pub(super) fn write_all(&self) {
        let _unstuck = Unstuck(self);
        let mut together = false; // the last batch had company: more are likely on their way
        loop {
            if together {
                std::thread::sleep(self.window_left());
            }
            let batch = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.writing = false;
                    return;
                }
                let rest = queue.waiting.len().saturating_sub(MAX_LOGIN_BATCH);
                let mut batch = std::mem::take(&mut queue.waiting);
                queue.waiting = batch.split_off(batch.len() - rest);
                batch
            };
            together = batch.len() > 1;
            let (logins, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|waiting| (waiting.login, waiting.reply))
                .unzip();
            for (reply, result) in replies.into_iter().zip(self.write(&logins)) {
                let _ = reply.send(result); // the caller may have gone; its login stands
            }
        }
    }

    /// How much longer the oldest waiting login may wait for company.
    pub(super) fn window_left(&self) -> std::time::Duration {
        let queue = self.lock();
        match queue.waiting.first() {
            Some(oldest) if queue.waiting.len() < MAX_LOGIN_BATCH => {
                LOGIN_BATCH_WINDOW.saturating_sub(oldest.arrived.elapsed())
            }
            _ => std::time::Duration::ZERO,
        }
    }

    /// One transaction for the batch, then one flush. If a login of the batch is refused, each
    /// login gets its own transaction, so the others are unaffected.
    pub(super) fn write(&self, logins: &[CompletedLogin]) -> Vec<StoreResult<LoginOutcome>> {
        let mut results: Vec<StoreResult<LoginOutcome>> = match self.trees.apply(logins) {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(TransactionError::Abort(_)) if logins.len() > 1 => logins
                .iter()
                .map(|login| self.trees.apply_one(login))
                .collect(),
            Err(TransactionError::Abort(err)) => vec![Err(err)],
            Err(TransactionError::Storage(err)) => {
                logins.iter().map(|_| Err(backend(err.clone()))).collect()
            }
        };
        if results.iter().any(Result::is_ok) {
            if let Err(err) = self.db.flush() {
                for result in results.iter_mut().filter(|result| result.is_ok()) {
                    *result = Err(backend(err.clone()));
                }
            }
        }
        results
    }
}

/// Should a writer ever unwind, the next login starts a new one instead of waiting forever
/// (the logins it held get "the login writer stopped").
pub(super) struct Unstuck<'a>(&'a LoginBatcher);

impl Drop for Unstuck<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().writing = false;
        }
    }
}

/// One login's reads and writes inside a login transaction. A refused login aborts before it
/// writes anything.
pub(super) fn apply_login(trees: &LoginView, login: &CompletedLogin) -> TxResult<LoginOutcome> {
    let (users, usernames, emails, identities, sessions, identity_sessions) = trees;
    let id_key = identity_key(&login.idp, &login.subject);
    let existing: Option<Record<Identity>> = record_in(identities, &id_key)?;
    let owner: Option<EmailOwner> = match linking::email_key(login) {
        Some(email) => get_in(emails, email.as_bytes())?,
        None => None,
    };
    let found = linking::Found {
        identity: existing.as_ref().map(|record| &record.value),
        email_owner: owner.as_ref(),
    };
    let (user, created, linked, identity, old_tokens) =
        match linking::decide(login, found).map_err(abort)? {
            linking::Link::Returning { user_id } => {
                let user = record_in::<UserRecord>(users, user_id.as_bytes())?
                    .ok_or_else(|| abort(StoreError::Corrupt("identity without its user".into())))?
                    .user;
                let Record {
                    value: mut identity,
                    tail: old_tokens,
                } = existing.ok_or_else(|| {
                    abort(StoreError::Corrupt("a returning identity vanished".into()))
                })?;
                identity.issuer = Some(login.issuer.clone());
                identity.email = login.email.clone();
                identity.email_verified = login.email_verified;
                identity.last_login_at = login.now;
                identity.groups = login.groups.clone();
                (user, false, false, identity, old_tokens)
            }
            link => {
                let (mut record, created) = match link {
                    linking::Link::Join { user_id } => {
                        let record = record_in::<UserRecord>(users, user_id.as_bytes())?
                            .ok_or_else(|| abort(StoreError::NoSuchUser))?;
                        (record, false)
                    }
                    _ => {
                        let username = linking::allocate_username(&login.username, |candidate| {
                            Ok::<_, ConflictableTransactionError<StoreError>>(
                                usernames.get(candidate.as_bytes())?.is_some(),
                            )
                        })?
                        .ok_or_else(|| abort(StoreError::UsernameExhausted))?;
                        let user = User {
                            id: login.new_user_id.clone(),
                            username: username.clone(),
                            email: login.email.clone(),
                            display_name: login.display_name.clone(),
                            created_at: login.now,
                        };
                        usernames.insert(username.as_bytes(), user.id.as_bytes())?;
                        if let Some((email, owner)) = linking::email_entry(login, &user.id) {
                            emails.insert(email.as_bytes(), encode(&owner).map_err(abort)?)?;
                        }
                        let record = UserRecord {
                            user,
                            identities: Vec::new(),
                        };
                        (record, true)
                    }
                };
                record.identities.push(id_key.clone());
                put_in(users, record.user.id.as_bytes(), &record)?;
                let identity = Identity {
                    idp: login.idp.clone(),
                    subject: login.subject.clone(),
                    issuer: Some(login.issuer.clone()),
                    user_id: record.user.id.clone(),
                    email: login.email.clone(),
                    email_verified: login.email_verified,
                    linked_at: login.now,
                    last_login_at: login.now,
                    groups: login.groups.clone(),
                };
                let linked = !created;
                (record.user, created, linked, identity, None)
            }
        };
    put_in(
        identities,
        &id_key,
        &Record {
            value: identity,
            tail: Some(login.sealed_tokens.clone()),
        },
    )?;
    let replaced_tokens = old_tokens.filter(|old| *old != login.sealed_tokens);
    let session = Session {
        user_id: user.id.clone(),
        idp: login.idp.clone(),
        subject: login.subject.clone(),
        created_at: login.now,
        expires_at: login.session_expires_at,
        sid: login.sid.clone(),
        csrf: login.csrf.clone(),
        id_token: login.sealed_id_token.clone(),
        device: login.device.clone(),
        network: login.network.clone(),
    };
    sessions.insert(
        login.session_hash.as_bytes(),
        encode(&session).map_err(abort)?,
    )?;
    sessions.insert(
        expiry_key(login.session_expires_at, &login.session_hash),
        &[][..],
    )?;
    identity_sessions.insert(
        key_of(&[&login.idp, &login.subject, &login.session_hash]),
        &[][..],
    )?;
    Ok(LoginOutcome {
        user,
        created,
        linked,
        replaced_tokens,
    })
}
