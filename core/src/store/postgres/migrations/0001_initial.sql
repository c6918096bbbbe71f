-- The accounts of authnz. Every user-owned row goes with its user (ON DELETE CASCADE), so a
-- deletion racing a connect can leave no orphan.
CREATE TABLE users (
    id           text PRIMARY KEY,
    username     text NOT NULL UNIQUE,
    email        text,
    display_name text,
    created_at   bigint NOT NULL
);

-- One IdP identity of a user, keyed by (entry name, subject); `issuer` NULL: linked before
-- issuers were recorded (matches no login until its entry gives it one). `tokens`: the IdP
-- tokens, sealed by the server's key.
CREATE TABLE identities (
    idp            text NOT NULL,
    subject        text NOT NULL,
    issuer         text,
    user_id        text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email          text,
    email_verified boolean NOT NULL,
    linked_at      bigint NOT NULL,
    last_login_at  bigint NOT NULL,
    tokens         bytea,
    PRIMARY KEY (idp, subject)
);
CREATE INDEX identities_of_user ON identities (user_id);

-- Verified addresses and who holds them (lowercase).
CREATE TABLE emails (
    email         text PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    authoritative boolean NOT NULL
);
CREATE INDEX emails_of_user ON emails (user_id);

-- Sessions under the SHA-256 of their cookie.
CREATE TABLE sessions (
    hash       text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idp        text NOT NULL,
    subject    text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    sid        text,
    csrf       text NOT NULL,
    id_token   text
);
CREATE INDEX sessions_of_identity ON sessions (idp, subject);
CREATE INDEX sessions_of_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- API keys under the SHA-256 of their secret.
CREATE TABLE api_keys (
    hash       text PRIMARY KEY,
    id         text NOT NULL,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL,
    prefix     text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint
);
CREATE INDEX api_keys_of_user ON api_keys (user_id, id);

-- First logins waiting for confirmation (they hold sealed IdP tokens).
CREATE TABLE signups (
    id         text PRIMARY KEY,
    expires_at bigint NOT NULL,
    record     bytea NOT NULL
);
CREATE INDEX signups_by_expiry ON signups (expires_at);

-- Sign-ins in progress, under the SHA-256 of their state. UNLOGGED: no WAL fsync on the hot
-- path; a database crash empties it, dropping only sign-ins in progress.
CREATE UNLOGGED TABLE pending_logins (
    state_hash bytea PRIMARY KEY,
    created_at bigint NOT NULL,
    record     bytea NOT NULL
);
CREATE INDEX pending_logins_by_age ON pending_logins (created_at);

-- Small records of the server itself (the key canary, the write probe).
CREATE TABLE authnz_meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);
