//! Serving: the listener, the background tasks (discovery, sweeps, the store probe, the config
//! watch) and graceful shutdown.

use std::sync::Arc;

use poem::listener::{Acceptor, TcpAcceptor};
use poem::Server;

use crate::http::routes;
use crate::state::{App, StartError};

/// Serves until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    listener
        .set_nonblocking(true)
        .map_err(|err| StartError::Listen {
            addr: format!("{:?}", listener.local_addr().ok()),
            reason: err.to_string(),
        })?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|err| StartError::Listen {
            addr: String::new(),
            reason: err.to_string(),
        })?;
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(|err| StartError::Listen {
        addr: String::new(),
        reason: err.to_string(),
    })?;
    let local = acceptor
        .local_addr()
        .first()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %local, public_url = %app.server.public_url, "authnz is serving");
    // Discover every IdP (those the start began with are already on their way).
    crate::state::discover_in_background(&app.current().idps);
    let reloader = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { watch_config(app).await })
    };
    let sweeper = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            // The first sweep a minute after startup, not during it.
            let period = std::time::Duration::from_secs(60);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                // A sweep may read every session (sled answers synchronously): on the blocking
                // pool, so that requests keep their runtime threads.
                let app = Arc::clone(&app);
                let runtime = tokio::runtime::Handle::current();
                let _ = tokio::task::spawn_blocking(move || runtime.block_on(app.sweep())).await;
            }
        })
    };
    // A store that cannot resume after a failed write stops the server (see `watch_store`).
    let (stuck_tx, stuck_rx) = tokio::sync::oneshot::channel::<StartError>();
    let store_watch = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let _ = stuck_tx.send(watch_store(app).await);
        })
    };
    let stuck = Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let stuck = Arc::clone(&stuck);
        async move {
            tokio::select! {
                _ = shutdown => {}
                Ok(err) = stuck_rx => {
                    tracing::error!(error = %err, "stopping");
                    *stuck.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(err);
                }
            }
        }
    };
    let result = Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            routes(app),
            shutdown,
            Some(std::time::Duration::from_secs(5)),
        )
        .await
        .map_err(|err| StartError::Listen {
            addr: local,
            reason: err.to_string(),
        });
    sweeper.abort();
    reloader.abort();
    store_watch.abort();
    let stuck = stuck
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    match stuck {
        Some(err) => Err(err),
        None => result,
    }
}

/// Probes the store every second. While writes fail (a full disk, a database gone away),
/// `/readyz` says so; once they succeed again, it is ready again. sled keeps the error of a failed write for good, so
/// when the disk has room again but the store still fails, this returns: the server stops and
/// its supervisor starts it anew (the database reopens; nothing answered is lost).
async fn watch_store(app: Arc<App>) -> StartError {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let probing = Arc::clone(&app);
        let runtime = tokio::runtime::Handle::current();
        let Ok(probe) = tokio::task::spawn_blocking(move || {
            let probe = runtime.block_on(probing.store.probe());
            // Only sled keeps a failed write's error for good; a database server recovers.
            let room = probe.is_err()
                && probing.store.backend() == "sled"
                && has_room(&probing.server.database);
            (probe, room)
        })
        .await
        else {
            continue;
        };
        match probe {
            (Ok(()), _) => {
                if app.set_store_failure(None) {
                    tracing::info!("the store takes writes again");
                }
            }
            (Err(err), room) => {
                if app.set_store_failure(Some(err.to_string())) {
                    tracing::error!(error = %err, backend = app.store.backend(), "the store cannot take writes (a full disk, a database gone away?); logins fail until it can");
                }
                if room {
                    return StartError::StoreStuck {
                        reason: err.to_string(),
                    };
                }
            }
        }
    }
}

/// Whether the database's filesystem can take a megabyte now.
fn has_room(database: &std::path::Path) -> bool {
    use std::io::Write;
    let probe = database.join(".authnz-room-probe");
    let wrote = std::fs::File::create(&probe)
        .and_then(|mut file| {
            file.write_all(&vec![0u8; 1 << 20])?;
            file.sync_all()
        })
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    wrote
}

/// Reloads the config on `SIGHUP` and when the file changes (polled every two seconds).
async fn watch_config(app: Arc<App>) {
    let path = app.current().config.source.clone();
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    // Compared with what the generation in force was read from, so that a change made before
    // this task started is not missed.
    let mut last = app.current().source_modified;
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<bool>();
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            got = signalled => got,
        };
        let now_modified = modified(&path);
        if by_signal || now_modified != last {
            last = now_modified;
            let _ = app.reload().await;
        }
    }
}
