//! Prometheus metrics: logins started, completed and failed per IdP (and failure reason), the
//! callback latency per IdP, JWKS fetches, reloads, forward-auth answers per app. Rendered in
//! the text exposition format at `/metrics`; nothing here holds a secret or a user's identity.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the callback latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The logins of one IdP since start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Logins {
    pub started: u64,
    pub completed: u64,
    /// Failed logins by reason (the error code: `invalid_state`, `id_token_invalid`, ...).
    pub failed: BTreeMap<String, u64>,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    started: Mutex<BTreeMap<String, u64>>,
    completed: Mutex<BTreeMap<String, u64>>,
    failed: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    forward: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *map.entry(key).or_insert(0) += 1;
}

/// A label value, escaped as the exposition format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn login_started(&self, idp: &str) {
        bump(&self.started, idp.to_string());
    }

    pub fn login_completed(&self, idp: &str, took: Duration) {
        bump(&self.completed, idp.to_string());
        self.observe(idp, took);
    }

    /// `reason` is the error code (`invalid_state`, `id_token_invalid`, ...).
    pub fn login_failed(&self, idp: &str, reason: &str, took: Duration) {
        bump(&self.failed, (idp.to_string(), reason.to_string()));
        self.observe(idp, took);
    }

    /// A forward-auth answer for a configured app: `admitted`, `anonymous`, `unauthenticated`
    /// or the denial code.
    pub fn forward_answered(&self, app: &str, outcome: &'static str) {
        bump(&self.forward, (app.to_string(), outcome));
    }

    fn observe(&self, idp: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut map = self
            .latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let histogram = map.entry(idp.to_string()).or_default();
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Logins per IdP: started, completed, and failed by reason (the error code).
    pub fn logins(&self) -> BTreeMap<String, Logins> {
        let read = |map: &Mutex<BTreeMap<String, u64>>| {
            map.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        };
        let mut logins: BTreeMap<String, Logins> = BTreeMap::new();
        for (idp, count) in read(&self.started) {
            logins.entry(idp).or_default().started = count;
        }
        for (idp, count) in read(&self.completed) {
            logins.entry(idp).or_default().completed = count;
        }
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for ((idp, reason), count) in failed {
            logins.entry(idp).or_default().failed.insert(reason, count);
        }
        logins
    }

    /// The exposition text; `jwks` is (IdP, fetches) for the IdPs in force.
    pub fn render(&self, jwks: &[(String, u64)], generation: u64) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        let per_idp = |map: &Mutex<BTreeMap<String, u64>>| {
            map.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .map(|(idp, n)| (format!("idp=\"{}\"", label(idp)), *n))
                .collect::<Vec<_>>()
        };
        counter(
            &mut out,
            "authnz_logins_started_total",
            "Logins started (authorize URLs handed out).",
            per_idp(&self.started),
        );
        counter(
            &mut out,
            "authnz_logins_completed_total",
            "Logins that ended with a session.",
            per_idp(&self.completed),
        );
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|((idp, reason), n)| {
                (
                    format!("idp=\"{}\",reason=\"{}\"", label(idp), label(reason)),
                    *n,
                )
            })
            .collect();
        counter(
            &mut out,
            "authnz_logins_failed_total",
            "Callbacks that failed, by reason.",
            failed,
        );
        let _ = writeln!(
            out,
            "# HELP authnz_callback_duration_seconds Time to handle a callback.\n# TYPE authnz_callback_duration_seconds histogram"
        );
        for (idp, histogram) in self
            .latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            let idp = label(idp);
            for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter()) {
                let _ = writeln!(out, "authnz_callback_duration_seconds_bucket{{idp=\"{idp}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "authnz_callback_duration_seconds_bucket{{idp=\"{idp}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "authnz_callback_duration_seconds_sum{{idp=\"{idp}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "authnz_callback_duration_seconds_count{{idp=\"{idp}\"}} {}",
                histogram.count
            );
        }
        let forward = self
            .forward
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|((app, outcome), n)| {
                (
                    format!("app=\"{}\",outcome=\"{}\"", label(app), label(outcome)),
                    *n,
                )
            })
            .collect();
        counter(
            &mut out,
            "authnz_forward_auth_total",
            "Forward-auth answers, by app and outcome (admitted, anonymous, unauthenticated, or the denial).",
            forward,
        );
        counter(
            &mut out,
            "authnz_jwks_fetches_total",
            "JWKS fetches (discovery and key-rotation refetches) of the IdPs in force.",
            jwks.iter()
                .map(|(idp, n)| (format!("idp=\"{}\"", label(idp)), *n))
                .collect(),
        );
        counter(
            &mut out,
            "authnz_reloads_total",
            "Successful configuration reloads.",
            vec![(String::new(), self.reloads.load(Ordering::Relaxed))],
        );
        counter(
            &mut out,
            "authnz_reload_failures_total",
            "Configuration reloads refused (the previous configuration stayed in force).",
            vec![(String::new(), self.reload_failures.load(Ordering::Relaxed))],
        );
        let _ = writeln!(out, "# HELP authnz_config_generation The configuration generation in force.\n# TYPE authnz_config_generation gauge\nauthnz_config_generation {generation}");
        out.replace("{}", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let metrics = Metrics::default();
        metrics.login_started("corp");
        metrics.login_started("corp");
        metrics.login_completed("corp", Duration::from_millis(30));
        metrics.login_failed("corp", "invalid_state", Duration::from_millis(2));
        metrics.forward_answered("galaxy", "admitted");
        let text = metrics.render(&[("corp".into(), 1)], 3);
        for line in [
            "authnz_logins_started_total{idp=\"corp\"} 2",
            "authnz_logins_completed_total{idp=\"corp\"} 1",
            "authnz_logins_failed_total{idp=\"corp\",reason=\"invalid_state\"} 1",
            "authnz_callback_duration_seconds_bucket{idp=\"corp\",le=\"0.005\"} 1",
            "authnz_callback_duration_seconds_bucket{idp=\"corp\",le=\"0.05\"} 2",
            "authnz_callback_duration_seconds_count{idp=\"corp\"} 2",
            "authnz_jwks_fetches_total{idp=\"corp\"} 1",
            "authnz_forward_auth_total{app=\"galaxy\",outcome=\"admitted\"} 1",
            "authnz_reloads_total 0",
            "authnz_config_generation 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
