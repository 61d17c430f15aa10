//! Responses: objects, lists and statuses as JSON, or as the server-side `Table` that
//! `kubectl get` asks for.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use fellowship_apimachinery::{ApiError, ResourceKind, meta};
use serde_json::{Value, json};

/// One item of a list: parsed, or stored JSON passed through as it is.
pub enum Item {
    Parsed(Value),
    Raw(Vec<u8>),
}

impl Item {
    pub fn into_parsed(self) -> Option<Value> {
        match self {
            Item::Parsed(v) => Some(v),
            Item::Raw(b) => serde_json::from_slice(&b).ok(),
        }
    }
}

pub enum Reply {
    Object {
        status: StatusCode,
        object: Value,
        /// Sent as `Warning` headers, which kubectl prints.
        warnings: Vec<String>,
        /// The object as JSON already (its stored bytes, when they are what is shown), so
        /// that a write's reply is not serialized again.
        text: Option<Vec<u8>>,
    },
    List {
        list_kind: String,
        api_version: String,
        plural: &'static str,
        metadata: Value,
        items: Vec<Item>,
    },
    /// A document that is never shown as a table: a Status, a discovery document.
    Json { status: StatusCode, body: Value },
    /// An aggregated discovery document, at the `apidiscovery.k8s.io` version asked for.
    Discovery { version: &'static str, body: Value },
    /// Bytes of another media type (the protobuf OpenAPI document).
    Binary {
        content_type: &'static str,
        body: bytes::Bytes,
    },
    /// A watch: newline-delimited JSON events.
    Stream(Body),
    /// Plain text: health checks, metrics.
    Text(String),
}

impl Reply {
    pub fn object(status: StatusCode, object: Value) -> Reply {
        Reply::Object {
            status,
            object,
            warnings: Vec::new(),
            text: None,
        }
    }

    /// The reply with warnings for the client.
    pub fn warn(mut self, more: Vec<String>) -> Reply {
        if let Reply::Object { warnings, .. } = &mut self {
            warnings.extend(more);
        }
        self
    }

    pub fn json(status: StatusCode, body: Value) -> Reply {
        Reply::Json { status, body }
    }

    pub fn list(kind: &ResourceKind, metadata: Value, items: Vec<Item>) -> Reply {
        Reply::List {
            list_kind: format!("{}List", kind.kind),
            api_version: kind.api_version(),
            plural: kind.plural,
            metadata,
            items,
        }
    }

    /// The HTTP response, as a `Table` when the client's `Accept` asks for one.
    pub fn into_response(self, accept: &str) -> Response {
        let table = accept.contains("as=Table");
        match self {
            Reply::Object {
                status,
                object,
                warnings,
                text,
            } => {
                let mut response = if table {
                    let plural = plural_of(&object);
                    respond(status, to_table(plural, &[object], json!({})))
                } else if let Some(text) = text {
                    respond_bytes(status, text)
                } else {
                    respond(status, object)
                };
                for w in warnings {
                    // RFC 7234 warn-code 299 with a quoted text, as kube-apiserver sends them.
                    let text = format!("299 - {}", serde_json::Value::String(w));
                    if let Ok(v) = HeaderValue::from_str(&text) {
                        response.headers_mut().append(header::WARNING, v);
                    }
                }
                response
            }
            Reply::List {
                plural,
                metadata,
                items,
                ..
            } if table => {
                let items: Vec<Value> = items.into_iter().filter_map(Item::into_parsed).collect();
                respond(StatusCode::OK, to_table(plural, &items, metadata))
            }
            Reply::List {
                list_kind,
                api_version,
                metadata,
                items,
                ..
            } => {
                // Written item by item: a large list is never held twice as JSON values.
                let mut body = serde_json::to_vec(&json!({
                    "kind": list_kind,
                    "apiVersion": api_version,
                    "metadata": metadata,
                }))
                .expect("JSON values serialize");
                body.pop();
                // Sized once: growing a list of 100k objects by doubling copies it over and over.
                let raw: usize = items
                    .iter()
                    .map(|i| match i {
                        Item::Raw(r) => r.len() + 1,
                        Item::Parsed(_) => 1024,
                    })
                    .sum();
                body.reserve(raw + 16);
                body.extend_from_slice(b",\"items\":[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    match item {
                        Item::Raw(raw) => body.extend_from_slice(raw),
                        Item::Parsed(v) => {
                            serde_json::to_writer(&mut body, v).expect("JSON values serialize")
                        }
                    }
                }
                body.extend_from_slice(b"]}");
                respond_bytes(StatusCode::OK, body)
            }
            Reply::Json { status, body } => respond(status, body),
            Reply::Binary { content_type, body } => {
                let mut r = Response::new(Body::from(body));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            Reply::Discovery { version, body } => {
                let mut r = respond(StatusCode::OK, body);
                let content_type = format!(
                    "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
                );
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(&content_type).expect("a valid header value"),
                );
                r
            }
            Reply::Text(text) => {
                let mut r = Response::new(Body::from(text));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            Reply::Stream(body) => {
                let mut r = Response::new(body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
        }
    }
}

pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = respond(status, e.to_status());
    if let Some(secs) = e.details.as_ref().and_then(|d| d.retry_after_seconds) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

fn respond(status: StatusCode, body: Value) -> Response {
    respond_bytes(
        status,
        serde_json::to_vec(&body).expect("JSON values serialize"),
    )
}

fn respond_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The plural used for table columns, from an object's kind.
fn plural_of(object: &Value) -> &'static str {
    match object.get("kind").and_then(Value::as_str) {
        Some("Cluster") => "clusters",
        Some("Namespace") => "namespaces",
        Some("ConfigMap") => "configmaps",
        Some("Secret") => "secrets",
        Some("Service") => "services",
        Some("Deployment") => "deployments",
        Some("ReplicaSet") => "replicasets",
        Some("DaemonSet") => "daemonsets",
        Some("Job") => "jobs",
        Some("HorizontalPodAutoscaler") => "horizontalpodautoscalers",
        Some("Ingress") => "ingresses",
        Some("Lease") => "leases",
        Some("Pod") => "pods",
        Some("Node") => "nodes",
        Some("Endpoints") => "endpoints",
        Some("ServiceAccount") => "serviceaccounts",
        Some("Event") => "events",
        _ => "",
    }
}

/// The columns between NAME and AGE that `kubectl get` shows for each type.
fn columns(plural: &str) -> &'static [&'static str] {
    match plural {
        "clusters" | "namespaces" => &["Status"],
        "configmaps" => &["Data"],
        "secrets" => &["Type", "Data"],
        "services" => &["Type", "Cluster-IP", "External-IP", "Port(s)"],
        "deployments" => &["Ready", "Up-to-date", "Available"],
        "replicasets" => &["Desired", "Current", "Ready"],
        "daemonsets" => &["Desired", "Current", "Ready", "Up-to-date", "Available"],
        "jobs" => &["Completions"],
        "horizontalpodautoscalers" => &["Reference", "MinPods", "MaxPods", "Replicas"],
        "ingresses" => &["Hosts", "Address"],
        "leases" => &["Holder"],
        "pods" => &["Ready", "Status", "Restarts"],
        "nodes" => &["Status", "Roles"],
        "endpoints" => &["Endpoints"],
        "serviceaccounts" => &["Secrets"],
        _ => &[],
    }
}

/// Columns after AGE (as `kubectl get nodes` shows VERSION), and those only `-o wide` shows.
fn trailing_columns(plural: &str) -> (&'static [&'static str], &'static [&'static str]) {
    const WORKLOAD: &[&str] = &["Containers", "Images", "Selector"];
    match plural {
        "services" => (&[], &["Selector"]),
        "deployments" | "replicasets" | "daemonsets" | "jobs" => (&[], WORKLOAD),
        "pods" => (&[], &["IP", "Node", "Nominated Node", "Readiness Gates"]),
        "nodes" => (
            &["Version"],
            &[
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime",
            ],
        ),
        _ => (&[], &[]),
    }
}

/// The cells of [`trailing_columns`], in order.
fn trailing_cells(plural: &str, item: &Value) -> Vec<Value> {
    let s = |path: &str| {
        item.pointer(path)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .unwrap_or("<none>")
            .to_string()
    };
    let selector = |path: &str| {
        let Some(sel) = item.pointer(path).and_then(Value::as_object) else {
            return "<none>".to_string();
        };
        let labels = sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .unwrap_or(sel);
        let mut parts: Vec<String> = labels
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
            .collect();
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            parts.push(format!(
                "{} {} ({})",
                e["key"].as_str().unwrap_or(""),
                e["operator"].as_str().unwrap_or("").to_lowercase(),
                values.join(",")
            ));
        }
        if parts.is_empty() {
            "<none>".into()
        } else {
            parts.join(",")
        }
    };
    let containers = |field: &str| {
        let list: Vec<&str> = item
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c[field].as_str())
            .collect();
        json!(list.join(","))
    };
    let address = |kind: &str| {
        item.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|a| a["type"] == kind))
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    match plural {
        "services" => vec![json!(selector("/spec/selector"))],
        "deployments" | "replicasets" | "daemonsets" | "jobs" => vec![
            containers("name"),
            containers("image"),
            json!(selector("/spec/selector")),
        ],
        "pods" => vec![
            json!(s("/status/podIP")),
            json!(s("/spec/nodeName")),
            json!(s("/status/nominatedNodeName")),
            json!("<none>"),
        ],
        "nodes" => vec![
            json!(s("/status/nodeInfo/kubeletVersion")),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            json!(s("/status/nodeInfo/osImage")),
            json!(s("/status/nodeInfo/kernelVersion")),
            json!(s("/status/nodeInfo/containerRuntimeVersion")),
        ],
        _ => Vec::new(),
    }
}

fn cells(plural: &str, item: &Value) -> Vec<Value> {
    let s = |path: &str| {
        item.pointer(path)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let n = |path: &str| item.pointer(path).and_then(Value::as_i64).unwrap_or(0);
    let count = |path: &str| {
        item.pointer(path)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    let or_none = |v: String| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v
        }
    };
    match plural {
        "clusters" => vec![json!(cluster_status(item))],
        "namespaces" => vec![json!(s("/status/phase"))],
        "configmaps" => vec![json!(count("/data") + count("/binaryData"))],
        "secrets" => vec![json!(s("/type")), json!(count("/data"))],
        "services" => {
            let ingress = load_balancer(item, &["ip", "hostname"]);
            let external = match (ingress.is_empty(), s("/spec/type").as_str()) {
                (false, _) => ingress.join(","),
                (true, "LoadBalancer") => "<pending>".into(),
                _ => "<none>".into(),
            };
            let ports: Vec<String> = item
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                            match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                                Some(node) => format!("{port}:{node}/{proto}"),
                                None => format!("{port}/{proto}"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(s("/spec/type")),
                json!(or_none(s("/spec/clusterIP"))),
                json!(external),
                json!(or_none(ports.join(","))),
            ]
        }
        "deployments" => vec![
            json!(format!(
                "{}/{}",
                n("/status/readyReplicas"),
                n("/spec/replicas")
            )),
            json!(n("/status/updatedReplicas")),
            json!(n("/status/availableReplicas")),
        ],
        "replicasets" => vec![
            json!(n("/spec/replicas")),
            json!(n("/status/replicas")),
            json!(n("/status/readyReplicas")),
        ],
        "daemonsets" => vec![
            json!(n("/status/desiredNumberScheduled")),
            json!(n("/status/currentNumberScheduled")),
            json!(n("/status/numberReady")),
            json!(n("/status/updatedNumberScheduled")),
            json!(n("/status/numberAvailable")),
        ],
        "jobs" => {
            let completions = item
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![json!(format!("{}/{completions}", n("/status/succeeded")))]
        }
        "horizontalpodautoscalers" => vec![
            json!(format!(
                "{}/{}",
                s("/spec/scaleTargetRef/kind"),
                s("/spec/scaleTargetRef/name")
            )),
            json!(
                item.pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            ),
            json!(n("/spec/maxReplicas")),
            json!(n("/status/currentReplicas")),
        ],
        "ingresses" => {
            let hosts: Vec<&str> = item
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|r| r.get("host").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            let address = load_balancer(item, &["ip"]);
            vec![
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(address.join(",")),
            ]
        }
        "leases" => vec![json!(or_none(s("/spec/holderIdentity")))],
        "pods" => pod_cells(item),
        "nodes" => {
            let ready = item
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            vec![
                json!(if ready { "Ready" } else { "NotReady" }),
                json!("<none>"),
            ]
        }
        "endpoints" => {
            let mut shown = Vec::new();
            for subset in item
                .pointer("/subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ports: Vec<i64> = subset["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["port"].as_i64())
                    .collect();
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    let ip = a["ip"].as_str().unwrap_or("");
                    match ports.as_slice() {
                        [] => shown.push(ip.to_string()),
                        ps => shown.extend(ps.iter().map(|p| format!("{ip}:{p}"))),
                    }
                }
            }
            vec![json!(or_none(shown.join(",")))]
        }
        "serviceaccounts" => vec![json!(
            item.get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        )],
        _ => Vec::new(),
    }
}

/// READY (ready containers/all), STATUS (the phase, or why it is waiting) and RESTARTS.
fn pod_cells(item: &Value) -> Vec<Value> {
    let containers = item
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses: Vec<&Value> = item
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let phase = item
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let status = if item.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".to_string()
    } else if phase == "Succeeded" {
        "Completed".to_string()
    } else {
        phase.to_string()
    };
    vec![
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts),
    ]
}

/// The addresses in `status.loadBalancer.ingress`: of each entry, the first of `fields` set.
fn load_balancer<'a>(item: &'a Value, fields: &[&str]) -> Vec<&'a str> {
    item.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    fields
                        .iter()
                        .find_map(|f| i.get(*f).and_then(Value::as_str))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `meta.k8s.io/v1` Table of `items`, with the columns kubectl users know for the type.
pub fn to_table(plural: &str, items: &[Value], metadata: Value) -> Value {
    if plural == "events" {
        return event_table(items, metadata);
    }
    let mut columns_json = vec![column(
        "Name",
        "name",
        "Name must be unique within a namespace.",
    )];
    for c in columns(plural) {
        columns_json.push(column(c, "", ""));
    }
    columns_json.push(column("Age", "", "The time since the object was created."));
    let (after_age, wide) = trailing_columns(plural);
    for c in after_age {
        columns_json.push(column(c, "", ""));
    }
    for c in wide {
        let mut c = column(c, "", "");
        c["priority"] = json!(1);
        columns_json.push(c);
    }
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut row = vec![json!(meta::name(item))];
            row.extend(cells(plural, item));
            row.push(json!(age(item, now)));
            row.extend(trailing_cells(plural, item));
            table_row(row, item)
        })
        .collect();
    table(columns_json, rows, metadata)
}

fn table_row(cells: Vec<Value>, item: &Value) -> Value {
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
        },
    })
}

fn table(columns: Vec<Value>, rows: Vec<Value>, metadata: Value) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// Events are listed as kube-apiserver lists them: when, what and about which object, the
/// name only with `-o wide`.
fn event_table(items: &[Value], metadata: Value) -> Value {
    let columns: [(&str, u8); 10] = [
        ("Last Seen", 0),
        ("Type", 0),
        ("Reason", 0),
        ("Object", 0),
        ("Subobject", 1),
        ("Source", 1),
        ("Message", 0),
        ("First Seen", 1),
        ("Count", 1),
        ("Name", 1),
    ];
    let columns_json: Vec<Value> = columns
        .iter()
        .map(|(name, priority)| {
            let mut c = column(name, if *name == "Name" { "name" } else { "" }, "");
            c["priority"] = json!(priority);
            c
        })
        .collect();
    let now = jiff::Timestamp::now();
    let since = |t: &str| {
        t.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| human_duration((now.as_second() - t.as_second()).max(0) as u64))
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let s = |path: &str| item.pointer(path).and_then(Value::as_str).unwrap_or("");
            let last = since(s("/lastTimestamp"))
                .or_else(|| since(s("/eventTime")))
                .or_else(|| since(meta::meta_str(item, "creationTimestamp")))
                .unwrap_or_else(|| "<unknown>".into());
            let first = since(s("/firstTimestamp")).unwrap_or_else(|| last.clone());
            let object = format!(
                "{}/{}",
                s("/involvedObject/kind").to_lowercase(),
                s("/involvedObject/name")
            );
            let source = [s("/source/component"), s("/source/host")]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            let count = item.get("count").and_then(Value::as_i64).unwrap_or(1);
            let cells = vec![
                json!(last),
                json!(s("/type")),
                json!(s("/reason")),
                json!(object),
                json!(s("/involvedObject/fieldPath")),
                json!(source),
                json!(s("/message")),
                json!(first),
                json!(count),
                json!(meta::name(item)),
            ];
            table_row(cells, item)
        })
        .collect();
    table(columns_json, rows, metadata)
}

fn column(name: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0})
}

/// spec §1.2: each condition as its type if True, else `Not<Type>`, comma-joined;
/// `Unknown` without conditions.
pub fn cluster_status(cluster: &Value) -> String {
    let conditions = cluster
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    match conditions {
        None => "Unknown".into(),
        Some(conditions) => conditions
            .iter()
            .map(|c| {
                let t = c.get("type").and_then(Value::as_str).unwrap_or("");
                if c.get("status").and_then(Value::as_str) == Some("True") {
                    t.to_string()
                } else {
                    format!("Not{t}")
                }
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn age(item: &Value, now: jiff::Timestamp) -> String {
    meta::meta_str(item, "creationTimestamp")
        .parse::<jiff::Timestamp>()
        .map(|t| human_duration((now.as_second() - t.as_second()).max(0) as u64))
        .unwrap_or_else(|_| "<unknown>".into())
}

/// The short age kubectl prints (`5s`, `3m12s`, `4h`, `12d`).
pub fn human_duration(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match () {
        _ if secs < 120 => format!("{secs}s"),
        _ if m < 10 => format!("{m}m{}s", secs % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ if d < 365 * 8 => format!("{}y{}d", d / 365, d % 365),
        _ => format!("{}y", d / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_status_column() {
        assert_eq!(cluster_status(&json!({})), "Unknown");
        let c = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Offline", "status": "False"}]}});
        assert_eq!(cluster_status(&c), "NotReady,NotOffline");
        let c = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(cluster_status(&c), "Ready");
    }

    #[test]
    fn ages() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(5 * 3600 + 120), "5h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400), "3d0h");
        assert_eq!(human_duration(100 * 86400), "100d");
    }
}
