//! What a member copy of a federated object is made of (spec §4.3: name, namespace,
//! labels, annotations and everything but metadata and status), and when a copy a member
//! holds counts as in step with it. Pure.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};

use kube::api::DynamicObject;
use serde_json::Value;

use crate::annotations::{ADOPT, DEPLOYMENT_REVISION, MANAGED, PROPAGATION, REPLICAS};

/// A member copy as this controller writes it: its JSON text, and which version of it this
/// is (a hash of the text; for a share of a spread object, a hash of the object's own print
/// and the share, which say as much and cost no text).
pub struct Desired {
    pub text: Vec<u8>,
    pub print: u64,
}

/// A member copy's metadata, as [`Desired`] writes it (fields in the order JSON objects
/// keep theirs, so the text is the same as the object's).
#[derive(serde::Serialize)]
struct CopyMeta<'a> {
    annotations: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    name: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

/// One top-level field of a member copy.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text(&'a str),
    Value(&'a Value),
    Meta(CopyMeta<'a>),
}

impl Desired {
    /// What a member copy of `object` is made of: name, namespace, labels, annotations (and
    /// the marker), and everything but metadata and status; `spec` in place of the object's
    /// when given (a cluster's share of a spread object). Written straight from the
    /// federated object (each member's reconcile makes one; no copy of the object is built).
    fn text(object: &DynamicObject, spec: Option<&Value>) -> Vec<u8> {
        let mut out: BTreeMap<&str, Part> = BTreeMap::new();
        if let Some(t) = &object.types {
            out.insert("apiVersion", Part::Text(&t.api_version));
            out.insert("kind", Part::Text(&t.kind));
        }
        for (k, v) in object.data.as_object().into_iter().flatten() {
            if !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind") {
                out.insert(k, Part::Value(v));
            }
        }
        if let Some(spec) = spec {
            out.insert("spec", Part::Value(spec));
        }
        let meta = &object.metadata;
        let mut annotations: BTreeMap<&str, &str> = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                // What the federation says of the object is not the members' to hold. Each
                // member's deployment controller writes its own revision: copying the
                // federated one (there when it was copied from a cluster) would fight it
                // (spec §4.3).
                !matches!(
                    k.as_str(),
                    PROPAGATION | REPLICAS | ADOPT | DEPLOYMENT_REVISION
                )
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        annotations.insert(MANAGED, "true");
        let metadata = CopyMeta {
            annotations,
            labels: meta.labels.as_ref(),
            name: &meta.name,
            namespace: meta.namespace.as_deref(),
        };
        out.insert("metadata", Part::Meta(metadata));
        serde_json::to_vec(&out).expect("JSON values serialize")
    }

    /// The copy of `object` as it is.
    pub fn of(object: &DynamicObject) -> Desired {
        let text = Desired::text(object, None);
        let mut h = std::hash::DefaultHasher::new();
        text.hash(&mut h);
        Desired {
            text,
            print: h.finish(),
        }
    }

    /// A copy of `object` with `spec` in place of its own: a share, which `print` names.
    pub fn shaped(object: &DynamicObject, spec: &Value, print: u64) -> Desired {
        Desired {
            text: Desired::text(object, Some(spec)),
            print,
        }
    }

    /// The copy as a JSON value, to compare with what a member holds.
    pub fn object(&self) -> Value {
        serde_json::from_slice(&self.text).expect("written as JSON above")
    }
}

/// Whether `have` holds everything `want` says: fields members fill in themselves (a
/// Service's cluster IP and node ports, defaults, annotations their controllers add) are
/// no reason to write.
pub fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| {
            h.get(k).is_some_and(|hv| covers(hv, wv)) || (wv.is_null() && h.get(k).is_none())
        }),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(h, w)| covers(h, w))
        }
        (h, w) => h == w,
    }
}

/// `have` with `want` written over it (maps merged, everything else replaced).
pub fn merge(have: &mut Value, want: &Value) {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            for (k, wv) in w {
                match h.get_mut(k) {
                    Some(hv) if hv.is_object() && wv.is_object() => merge(hv, wv),
                    _ => {
                        h.insert(k.clone(), wv.clone());
                    }
                }
            }
        }
        (h, w) => *h = w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn copies_and_what_counts_as_in_step() {
        let fed: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "9", "finalizers": ["orphan"], "labels": {"a": "b"},
                "annotations": {PROPAGATION: "{}", REPLICAS: "{}"}},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}, "status": {"loadBalancer": {}}}))
        .unwrap();
        let want = Desired::of(&fed).object();
        assert_eq!(
            want["metadata"],
            json!({"name": "web", "namespace": "default", "labels": {"a": "b"}, "annotations": {MANAGED: "true"}})
        );
        assert!(want.get("status").is_none());
        // The member filled in a cluster IP, a node port and an annotation: in step.
        let mut member = want.clone();
        member["spec"]["clusterIP"] = json!("10.96.0.10");
        member["spec"]["ports"][0]["nodePort"] = json!(30001);
        member["metadata"]["annotations"]["added"] = json!("by member");
        assert!(covers(&member, &want));
        // Someone changed the port in the member: not in step; the merge puts it back and
        // keeps what the member owns.
        member["spec"]["ports"][0]["port"] = json!(81);
        assert!(!covers(&member, &want));
        merge(&mut member, &want);
        assert!(covers(&member, &want));
        assert_eq!(member["spec"]["clusterIP"], "10.96.0.10");
        // A share's spec in place of the object's.
        let shared = Desired::shaped(&fed, &json!({"ports": []}), 7);
        assert_eq!(shared.object()["spec"], json!({"ports": []}));
        assert_eq!(shared.object()["metadata"], want["metadata"]);
    }
}
