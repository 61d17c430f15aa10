//! Request metrics in the Prometheus text format, under kube-apiserver's names:
//! `apiserver_request_total{verb,resource,code}` and
//! `apiserver_request_duration_seconds{verb,resource}` (a histogram).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    totals: Mutex<BTreeMap<(String, String, u16), u64>>,
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
}

/// The verb and resource of a request path, as kube-apiserver labels them.
pub fn labels(method: &str, path: &str, query: Option<&str>) -> (String, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, plural, tail @ ..] if !plural.is_empty() && rest.len() > 2 => {
            let mut v = vec![*plural];
            v.extend(tail);
            v
        }
        other => other.to_vec(),
    };
    let resource = rest.first().copied().unwrap_or("").to_string();
    let collection = rest.len() == 1;
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match method {
        "GET" if watching => "WATCH",
        "GET" if collection => "LIST",
        "DELETE" if collection => "DELETECOLLECTION",
        m => m,
    };
    (verb.to_string(), resource)
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        let key = (verb.to_string(), resource.to_string());
        *self
            .totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((key.0.clone(), key.1.clone(), code))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut durations = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let h = durations.entry(key).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Requests, by verb, resource and HTTP code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        for ((verb, resource, code), n) in
            self.totals.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP apiserver_request_duration_seconds Request latency, by verb and resource.\n",
        );
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, resource), h) in self
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let l = format!("verb=\"{verb}\",resource=\"{resource}\"");
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_sum{{{l}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{{l}}} {}",
                h.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_text() {
        assert_eq!(
            labels("GET", "/api/v1/namespaces/a/configmaps", None),
            ("LIST".into(), "configmaps".into())
        );
        assert_eq!(
            labels("GET", "/api/v1/namespaces/a/configmaps", Some("watch=true")),
            ("WATCH".into(), "configmaps".into())
        );
        assert_eq!(
            labels("GET", "/apis/apps/v1/namespaces/a/deployments/web", None),
            ("GET".into(), "deployments".into())
        );
        assert_eq!(
            labels("PUT", "/api/v1/namespaces/a", None),
            ("PUT".into(), "namespaces".into())
        );
        assert_eq!(labels("GET", "/healthz", None), ("GET".into(), "".into()));
        let m = Metrics::default();
        m.observe("LIST", "configmaps", 200, Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains(
                "apiserver_request_total{verb=\"LIST\",resource=\"configmaps\",code=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("apiserver_request_duration_seconds_bucket{verb=\"LIST\",resource=\"configmaps\",le=\"0.005\"} 1"));
        assert!(text.contains(
            "apiserver_request_duration_seconds_count{verb=\"LIST\",resource=\"configmaps\"} 1"
        ));
    }
}
