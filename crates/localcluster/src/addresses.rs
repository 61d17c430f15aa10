//! Service addresses, allocated when a Service is written as kube-apiserver allocates them:
//! a cluster IP from 10.96.0.0/12 (headless Services keep `None`), and node ports from
//! 30000-32767 for NodePort and LoadBalancer Services. An admission plugin of the member
//! clusters' chain.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use fellowship_apimachinery::{ApiError, Cause, ResourceKind};
use fellowship_apiserver::admission::{Plugin, Request};
use fellowship_apiserver::objects::present;
use fellowship_storage::{ListOptions, Store};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const FIRST_IP: u32 = u32::from_be_bytes([10, 96, 0, 10]);
const LAST_IP: u32 = u32::from_be_bytes([10, 111, 255, 254]);
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

#[derive(Default)]
struct Used {
    /// Read from the stored Services on first use, and again when a range runs out.
    loaded: bool,
    ips: HashSet<u32>,
    ports: HashSet<i64>,
    next_ip: u32,
    next_port: i64,
}

#[derive(Default)]
pub struct ServiceAddresses {
    used: Mutex<Used>,
}

impl Used {
    async fn load(&mut self, store: &dyn Store, kind: &ResourceKind) -> Result<(), ApiError> {
        let page = store
            .list(&kind.key("", ""), ListOptions::default())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.ips.clear();
        self.ports.clear();
        for kv in &page.items {
            let s = present(kv, kind)?;
            if let Some(ip) = s
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            {
                self.ips.insert(u32::from(ip));
            }
            for p in s
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                    self.ports.insert(n);
                }
            }
        }
        self.loaded = true;
        Ok(())
    }

    fn ip(&mut self) -> Option<u32> {
        let span = LAST_IP - FIRST_IP + 1;
        for i in 0..span {
            let candidate = FIRST_IP + (self.next_ip + i) % span;
            if self.ips.insert(candidate) {
                self.next_ip = candidate - FIRST_IP + 1;
                return Some(candidate);
            }
        }
        None
    }

    fn port(&mut self) -> Option<i64> {
        let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
        for i in 0..span {
            let candidate = NODE_PORTS.start() + (self.next_port + i) % span;
            if self.ports.insert(candidate) {
                self.next_port = candidate - NODE_PORTS.start() + 1;
                return Some(candidate);
            }
        }
        None
    }
}

fn exhausted(what: &str) -> ApiError {
    ApiError::internal(format!("no {what} left to allocate"))
}

#[async_trait::async_trait]
impl Plugin for ServiceAddresses {
    fn name(&self) -> &'static str {
        "ServiceAddresses"
    }

    async fn admit(&self, store: &dyn Store, request: &mut Request<'_>) -> Result<(), ApiError> {
        if (request.kind.group, request.kind.plural) != ("", "services") {
            return Ok(());
        }
        let Some(spec) = request.object.get("spec").cloned() else {
            return Ok(());
        };
        let kind = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let wants_ip = kind != "ExternalName"
            && spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
        let wants_ports = matches!(kind, "NodePort" | "LoadBalancer")
            && spec
                .get("ports")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p.get("nodePort").is_none()));
        if !wants_ip && !wants_ports {
            return Ok(());
        }
        let kind = request.kind;
        let mut used = self.used.lock().await;
        if !used.loaded {
            used.load(store, kind).await?;
        }
        let spec = request.object["spec"]
            .as_object_mut()
            .expect("checked above");
        if wants_ip {
            let ip = match used.ip() {
                Some(ip) => ip,
                None => {
                    used.load(store, kind).await?;
                    used.ip().ok_or_else(|| exhausted("cluster IPs"))?
                }
            };
            let ip = Ipv4Addr::from(ip).to_string();
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
            spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        }
        if wants_ports {
            for port in spec
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter(|p| p.get("nodePort").is_none())
            {
                let n = used.port().ok_or_else(|| {
                    ApiError::invalid(
                        "Service",
                        "",
                        "",
                        vec![Cause::invalid(
                            "spec.ports.nodePort",
                            "",
                            "no node ports left in 30000-32767",
                        )],
                    )
                })?;
                port["nodePort"] = json!(n);
            }
        }
        Ok(())
    }
}
