//! Captures every log line of the test process, so tests can assert that no code, token or
//! secret was logged (at the most verbose level authnz logs at).

use std::io::Write;
use std::sync::{Mutex, Once, OnceLock};

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
static INIT: Once = Once::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per process (trace level for every crate).
pub fn init() {
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "authnz=trace,authnz_plugin=trace,openidconnect=trace,oauth2=trace,warn",
            ))
            .with_writer(|| Capture)
            .with_ansi(false)
            .try_init();
    });
}

/// Everything logged so far.
pub fn all() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Asserts that none of `secrets` was logged.
pub fn assert_not_logged(secrets: &[&str]) {
    let logs = all();
    for secret in secrets.iter().filter(|secret| secret.len() >= 8) {
        assert!(!logs.contains(secret), "a secret was logged: {secret}");
    }
}
