//! Databases from before records carried what belongs to them: their `tokens` (one key per
//! identity), `user_identities` (one per identity) and `user_sessions` (one per session) trees
//! are folded into the records on the first open, then dropped.
//!
//! Each record moves in its own transaction that also removes what it moved, so an open
//! stopped halfway carries on where it stopped the next time.

use super::*;

const OLD_TREES: [&str; 3] = ["tokens", "user_identities", "user_sessions"];

/// Folds the old trees of `db`, if it has any, into `trees`' records.
pub(super) fn fold_old_trees(db: &Db, trees: &AccountTrees) -> StoreResult<()> {
    let names = db.tree_names();
    let present = |name: &str| names.iter().any(|tree| tree.as_ref() == name.as_bytes());
    if !OLD_TREES.iter().any(|name| present(name)) {
        return Ok(());
    }
    tracing::info!("folding the database's token and index trees into their records (once)");
    let (mut tokens, mut links) = (0, 0);
    if present("tokens") {
        let old = db.open_tree("tokens").map_err(backend)?;
        for entry in old.iter() {
            let (key, sealed) = entry.map_err(backend)?;
            (&trees.identities, &old)
                .transaction(|(identities, old)| {
                    if let Some(mut record) = record_in::<Record<Identity>>(identities, &key)? {
                        record.tail = Some(sealed.to_vec());
                        put_in(identities, &key, &record)?;
                    }
                    old.remove(&key)?;
                    Ok(())
                })
                .map_err(txn_error)?;
            tokens += 1;
        }
    }
    if present("user_identities") {
        let old = db.open_tree("user_identities").map_err(backend)?;
        // `user \0 idp \0 subject`, grouped by user.
        let mut by_user: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for key in old.iter().keys() {
            let key = key.map_err(backend)?;
            if let Some(at) = key.iter().position(|byte| *byte == 0) {
                let user = String::from_utf8_lossy(&key[..at]).into_owned();
                by_user.entry(user).or_default().push(key.to_vec());
            }
        }
        for (user_id, keys) in by_user {
            let identity_of = |key: &[u8]| key[user_id.len() + 1..].to_vec();
            (&trees.users, &old)
                .transaction(|(users, old)| {
                    if let Some(mut record) = record_in::<UserRecord>(users, user_id.as_bytes())? {
                        for key in &keys {
                            let identity = identity_of(key);
                            if !record.identities.contains(&identity) {
                                record.identities.push(identity);
                            }
                        }
                        put_in(users, user_id.as_bytes(), &record)?;
                    }
                    for key in &keys {
                        old.remove(key.as_slice())?;
                    }
                    Ok(())
                })
                .map_err(txn_error)?;
            links += keys.len();
        }
    }
    // Every session is also under its identity in `identity_sessions`: nothing to move.
    for name in OLD_TREES {
        if present(name) {
            db.drop_tree(name).map_err(backend)?;
        }
    }
    db.flush().map_err(backend)?;
    tracing::info!(
        tokens,
        identities = links,
        "the database now keeps tokens and identity lists in their records"
    );
    Ok(())
}
