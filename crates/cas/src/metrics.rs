//! Prometheus text metrics: requests by route and status, latency histograms by route, and
//! the number of sessions. Served at `/metrics` to loopback clients only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Hist>>,
}

impl Metrics {
    /// Record one request on `route` (the matched route pattern, not the raw path).
    pub fn record(&self, method: &str, route: &str, status: u16, took: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_string(), route.to_string(), status))
                .or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route.to_string()).or_default();
            let s = took.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, sessions: u64, counter: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP veil_cas_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE veil_cas_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((m, route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "veil_cas_requests_total{{method=\"{m}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP veil_cas_request_duration_seconds Request latency by route.\n# TYPE veil_cas_request_duration_seconds histogram\n",
        );
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "veil_cas_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "veil_cas_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "veil_cas_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "veil_cas_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP veil_cas_sessions Number of sessions (names).\n# TYPE veil_cas_sessions gauge\nveil_cas_sessions {sessions}"
        );
        let _ = writeln!(
            out,
            "# HELP veil_cas_db_counter Monotonic count of committed writes.\n# TYPE veil_cas_db_counter counter\nveil_cas_db_counter {counter}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let m = Metrics::default();
        m.record("GET", "/healthz", 200, Duration::from_millis(2));
        m.record("GET", "/healthz", 200, Duration::from_millis(200));
        let t = m.render(3, 9);
        assert!(t.contains(
            "veil_cas_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"
        ));
        assert!(t.contains(
            "veil_cas_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.0025\"} 1"
        ));
        assert!(t.contains("veil_cas_request_duration_seconds_count{route=\"/healthz\"} 2"));
        assert!(t.contains("veil_cas_sessions 3"));
    }
}
