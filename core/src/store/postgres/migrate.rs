//! The schema, as migrations shipped in the binary. Each applied migration is recorded with
//! the SHA-256 of its SQL; replicas starting at once apply them one at a time (a
//! transaction-scoped advisory lock), so each runs once.

use sha2::{Digest, Sha256};

use super::{db_error, PgClient};
use crate::store::{StoreError, StoreResult};

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "groups",
        sql: include_str!("migrations/0002_groups.sql"),
    },
    Migration {
        version: 3,
        name: "session devices",
        sql: include_str!("migrations/0003_session_devices.sql"),
    },
];

/// The advisory lock that serialises migrations (any constant no other lock uses).
const MIGRATION_LOCK: i64 = 0x6175_7468_6e7a_0001;

fn checksum(sql: &str) -> String {
    crate::crypto::hex(&Sha256::digest(sql.as_bytes()))
}

/// Applies the missing migrations (`apply`), or only checks that none is missing; refuses a
/// database migrated by a newer binary, or one whose applied migration differs from this
/// binary's. Returns how many it applied.
pub(super) async fn migrate(client: &mut PgClient, apply: bool) -> StoreResult<usize> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    let recorded: Option<String> = tx
        .query_one("SELECT to_regclass('authnz_migrations')::text", &[])
        .await
        .map_err(db_error)?
        .get(0);
    if recorded.is_none() {
        if !apply {
            return Err(pending(MIGRATIONS.iter().map(|m| m.version).collect()));
        }
        tx.batch_execute(
            "CREATE TABLE authnz_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(db_error)?;
    }
    let applied = tx
        .query(
            "SELECT version, checksum FROM authnz_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(db_error)?;
    let newest_known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut done = Vec::new();
    for row in applied {
        let version: i32 = row.get(0);
        let recorded: String = row.get(1);
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == version) else {
            return Err(StoreError::Schema(format!(
                "the database was migrated by a newer authnz (migration {version}; this binary knows up to {newest_known}): run the newer version, or restore the database from before it"
            )));
        };
        if recorded != checksum(known.sql) {
            return Err(StoreError::Schema(format!(
                "migration {version} ({}) as applied to the database differs from this binary's: the schema was changed by hand or by another build; restore it or apply the change by hand",
                known.name
            )));
        }
        done.push(version);
    }
    let missing: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    if !apply {
        return Err(pending(missing.iter().map(|m| m.version).collect()));
    }
    for migration in &missing {
        tx.batch_execute(migration.sql).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO authnz_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[
                &migration.version,
                &migration.name,
                &checksum(migration.sql),
            ],
        )
        .await
        .map_err(db_error)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "database migration applied"
        );
    }
    tx.commit().await.map_err(db_error)?;
    Ok(missing.len())
}

fn pending(versions: Vec<i32>) -> StoreError {
    StoreError::Schema(format!(
        "the database lacks migrations {versions:?} and `migrate = \"check\"` is set: apply them with `authnz migrate --config FILE`"
    ))
}
