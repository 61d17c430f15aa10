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

/// Counts by verb, then resource: looked up by the request's own strings, so that counting
/// a request allocates nothing.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<String, BTreeMap<String, Series>>>,
}

#[derive(Default)]
struct Series {
    codes: BTreeMap<u16, u64>,
    durations: Histogram,
}

/// The verb and resource of a request path, as kube-apiserver labels them.
pub fn labels<'a>(method: &'a str, path: &'a str, query: Option<&str>) -> (&'a str, &'a str) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, plural, ..] if !plural.is_empty() => &rest[2..],
        other => other,
    };
    let resource = rest.first().copied().unwrap_or("");
    let collection = rest.len() == 1;
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match method {
        "GET" if watching => "WATCH",
        "GET" if collection => "LIST",
        "DELETE" if collection => "DELETECOLLECTION",
        m => m,
    };
    (verb, resource)
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let by_resource = match series.get_mut(verb) {
            Some(r) => r,
            None => series.entry(verb.to_string()).or_default(),
        };
        let s = match by_resource.get_mut(resource) {
            Some(s) => s,
            None => by_resource.entry(resource.to_string()).or_default(),
        };
        *s.codes.entry(code).or_default() += 1;
        let secs = took.as_secs_f64();
        let h = &mut s.durations;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let all = || {
            series
                .iter()
                .flat_map(|(verb, r)| r.iter().map(move |(resource, s)| (verb, resource, s)))
        };
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Requests, by verb, resource and HTTP code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        for (verb, resource, s) in all() {
            for (code, n) in &s.codes {
                let _ = writeln!(
                    out,
                    "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP apiserver_request_duration_seconds Request latency, by verb and resource.\n",
        );
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for (verb, resource, s) in all() {
            let h = &s.durations;
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
            ("LIST", "configmaps")
        );
        assert_eq!(
            labels("GET", "/api/v1/namespaces/a/configmaps", Some("watch=true")),
            ("WATCH", "configmaps")
        );
        assert_eq!(
            labels("GET", "/apis/apps/v1/namespaces/a/deployments/web", None),
            ("GET", "deployments")
        );
        assert_eq!(
            labels("PUT", "/api/v1/namespaces/a", None),
            ("PUT", "namespaces")
        );
        assert_eq!(labels("GET", "/healthz", None), ("GET", ""));
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
