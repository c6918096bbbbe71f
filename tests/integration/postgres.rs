//! PostgreSQL: the store conformance suite on a real database (two store objects, each with
//! its own pool, as two replicas have), the migrations, and several real authnz processes on
//! one database.

use std::sync::Arc;

use authnz::store::conformance::{self, Backend, Fresh};
use authnz::store::PgStore;
use authnz_tests::postgres::cluster;

/// Fresh databases on the throwaway cluster, two connection pools on each.
struct Postgres;

#[async_trait::async_trait]
impl Backend for Postgres {
    async fn fresh(&self) -> Result<Fresh, Box<dyn std::error::Error + Send + Sync>> {
        let cluster = cluster();
        let config = cluster.config(&cluster.create_database());
        let store = PgStore::connect(&config).await?;
        let other = PgStore::connect(&config).await?;
        Ok(Fresh {
            store: Arc::new(store),
            other: Arc::new(other),
            guard: Box::new(()),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_conformance_suite() {
    conformance::run_all(&Postgres).await.unwrap();
}
