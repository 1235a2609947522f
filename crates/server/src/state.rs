//! What every handler shares: the engine handle, model ids, limits and request counters.
//! All of it is read-only or atomic; the engine's state lives in its actor.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ferrollama_engine::scheduler::Engine;

/// Service limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Upper clamp of `max_tokens`.
    pub max_tokens: usize,
    /// Largest `n`.
    pub max_n: usize,
    /// Most requests in one batch call.
    pub max_batch: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 4 << 20,
            default_max_tokens: 1024,
            max_tokens: 8192,
            max_n: 8,
            max_batch: 64,
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// Shared server state.
#[derive(Debug)]
pub struct AppState {
    pub engine: Engine,
    pub model_ids: Vec<String>,
    pub api_key: Option<String>,
    /// Browser origin allowed by CORS (`*` for any); none means no CORS headers at all.
    pub cors_origin: Option<String>,
    pub limits: Limits,
    pub created: u64,
    pub requests: RequestCounters,
    /// The Ollama routes' store, pull settings and model files.
    pub ollama: crate::ollama::OllamaState,
}

/// `ferrollama_requests_total{route,status}`: one counter per (route, status), fixed at
/// start so counting never locks.
#[derive(Debug)]
pub struct RequestCounters {
    pub routes: Vec<&'static str>,
    counts: Vec<AtomicU64>,
}

/// Statuses we count separately; others fall in the last slot as their class.
const STATUSES: [u16; 12] = [200, 400, 401, 404, 405, 408, 413, 415, 422, 429, 500, 503];

impl RequestCounters {
    pub fn new(routes: Vec<&'static str>) -> RequestCounters {
        let n = (routes.len() + 1) * (STATUSES.len() + 1);
        RequestCounters {
            routes,
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(&self, route: &str, status: u16) -> usize {
        let r = self
            .routes
            .iter()
            .position(|&x| x == route)
            .unwrap_or(self.routes.len());
        let s = STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(STATUSES.len());
        r * (STATUSES.len() + 1) + s
    }

    pub fn record(&self, route: &str, status: u16) {
        let i = self.index(route, status);
        self.counts[i].fetch_add(1, Relaxed);
    }

    /// (route, status label, count) for every non-zero counter.
    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for (ri, route) in self
            .routes
            .iter()
            .copied()
            .chain(std::iter::once("other"))
            .enumerate()
        {
            for si in 0..=STATUSES.len() {
                let n = self.counts[ri * (STATUSES.len() + 1) + si].load(Relaxed);
                if n > 0 {
                    let label = STATUSES
                        .get(si)
                        .map_or_else(|| "other".to_string(), |s| s.to_string());
                    out.push((route, label, n));
                }
            }
        }
        out
    }
}
