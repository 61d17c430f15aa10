//! The schema of every served kind: those of the Kubernetes types derived from k8s-openapi
//! (its `schemars` feature), the federation's Cluster and the seed-era
//! `extensions/v1beta1` Ingress written here. They feed the OpenAPI documents (`kubectl
//! explain`, kubectl's patch computation) and the server's own field validation: unknown
//! fields are dropped as a typed decoder drops them, and named in a warning or refused, as the
//! request's `fieldValidation` asks.

use std::collections::{BTreeMap, BTreeSet};

use fellowship_apimachinery::{ApiError, ResourceKind, patch};
use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, networking, rbac};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

/// Where definitions live in an OpenAPI v3 document; v2 documents use `#/definitions/`.
pub const V3_REFS: &str = "#/components/schemas/";

pub struct Schemas {
    /// Every definition, named as kube-apiserver names them (`io.k8s.api.core.v1.Pod`).
    definitions: Map<String, Value>,
    /// The definition of each served (group, version, kind).
    roots: BTreeMap<(&'static str, &'static str, &'static str), String>,
}

/// How a write treats fields its kind does not have (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// The query parameter; kube-apiserver's default is `Warn`.
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        match value.unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

fn definition<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The k8s-openapi type behind a served kind, by group and kind. `extensions/v1beta1`
/// workloads share the `apps/v1` schema: the fields users write are the same.
fn kind_definition(generator: &mut SchemaGenerator, k: &ResourceKind) -> Option<String> {
    Some(match (k.group, k.version, k.kind) {
        ("", _, "Namespace") => definition::<core::v1::Namespace>(generator),
        ("", _, "ConfigMap") => definition::<core::v1::ConfigMap>(generator),
        ("", _, "Secret") => definition::<core::v1::Secret>(generator),
        ("", _, "Service") => definition::<core::v1::Service>(generator),
        ("", _, "Event") => definition::<core::v1::Event>(generator),
        ("", _, "Node") => definition::<core::v1::Node>(generator),
        ("", _, "Pod") => definition::<core::v1::Pod>(generator),
        ("", _, "Endpoints") => definition::<core::v1::Endpoints>(generator),
        ("", _, "ServiceAccount") => definition::<core::v1::ServiceAccount>(generator),
        ("apps" | "extensions", _, "Deployment") => definition::<apps::v1::Deployment>(generator),
        ("apps" | "extensions", _, "ReplicaSet") => definition::<apps::v1::ReplicaSet>(generator),
        ("apps" | "extensions", _, "DaemonSet") => definition::<apps::v1::DaemonSet>(generator),
        ("batch", _, "Job") => definition::<batch::v1::Job>(generator),
        ("autoscaling", "v1", _) => {
            definition::<autoscaling::v1::HorizontalPodAutoscaler>(generator)
        }
        ("autoscaling", "v2", _) => {
            definition::<autoscaling::v2::HorizontalPodAutoscaler>(generator)
        }
        ("networking.k8s.io", _, "Ingress") => definition::<networking::v1::Ingress>(generator),
        ("coordination.k8s.io", _, "Lease") => definition::<coordination::v1::Lease>(generator),
        ("discovery.k8s.io", _, "EndpointSlice") => {
            definition::<discovery::v1::EndpointSlice>(generator)
        }
        ("rbac.authorization.k8s.io", _, "ClusterRole") => {
            definition::<rbac::v1::ClusterRole>(generator)
        }
        ("rbac.authorization.k8s.io", _, "ClusterRoleBinding") => {
            definition::<rbac::v1::ClusterRoleBinding>(generator)
        }
        ("rbac.authorization.k8s.io", _, "Role") => definition::<rbac::v1::Role>(generator),
        ("rbac.authorization.k8s.io", _, "RoleBinding") => {
            definition::<rbac::v1::RoleBinding>(generator)
        }
        ("extensions", "v1beta1", "Ingress") => extensions_ingress(generator),
        ("federation", "v1beta1", "Cluster") => cluster(generator),
        _ => return None,
    })
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("{V3_REFS}{name}")})
}

fn meta_reference(generator: &mut SchemaGenerator) -> Value {
    json!({"description": "Standard object's metadata.", "allOf": [reference(&definition::<ObjectMeta>(generator))]})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// Adds hand-written definitions, returning the first (the kind's own).
fn insert(generator: &mut SchemaGenerator, defs: Vec<(&str, Value)>) -> String {
    let first = defs[0].0.to_string();
    for (name, schema) in defs {
        generator.definitions_mut().insert(name.to_string(), schema);
    }
    first
}

/// `federation/v1beta1` Cluster, as spec §1 describes it.
fn cluster(generator: &mut SchemaGenerator) -> String {
    const P: &str = "io.k8s.federation.apis.federation.v1beta1.";
    let metadata = meta_reference(generator);
    let local_ref = reference(&definition::<core::v1::LocalObjectReference>(generator));
    insert(
        generator,
        vec![
            (
                &format!("{P}Cluster"),
                json!({
                    "description": "Information about a registered cluster in a federated kubernetes setup. Clusters are not namespaced and have unique names in the federation.",
                    "type": "object",
                    "properties": {
                        "apiVersion": string("APIVersion defines the versioned schema of this representation of an object."),
                        "kind": string("Kind is a string value representing the REST resource this object represents."),
                        "metadata": metadata,
                        "spec": {"description": "Spec defines the behavior of the Cluster.", "allOf": [reference(&format!("{P}ClusterSpec"))]},
                        "status": {"description": "Status describes the current status of a Cluster.", "allOf": [reference(&format!("{P}ClusterStatus"))]},
                    },
                }),
            ),
            (
                &format!("{P}ClusterSpec"),
                json!({
                    "description": "ClusterSpec describes the attributes of a kubernetes cluster.",
                    "type": "object",
                    "required": ["serverAddressByClientCIDRs"],
                    "properties": {
                        "serverAddressByClientCIDRs": {
                            "description": "A map of client CIDR to server address. Clients pick the entry whose CIDR contains their own address.",
                            "type": "array",
                            "items": reference(&format!("{P}ServerAddressByClientCIDR")),
                            "x-kubernetes-patch-merge-key": "clientCIDR",
                            "x-kubernetes-patch-strategy": "merge",
                        },
                        "secretRef": {"description": "Name of the secret holding the credentials to connect to the cluster, in the federation's system namespace of the host cluster.", "allOf": [local_ref]},
                    },
                }),
            ),
            (
                &format!("{P}ServerAddressByClientCIDR"),
                json!({
                    "description": "ServerAddressByClientCIDR helps the client to determine the server address that they should use, depending on the clientCIDR that they match.",
                    "type": "object",
                    "required": ["clientCIDR", "serverAddress"],
                    "properties": {
                        "clientCIDR": string("The CIDR with which clients can match their IP to figure out the server address that they should use."),
                        "serverAddress": string("Address of this server, suitable for a client that matches the above CIDR: a hostname, hostname:port, IP or IP:port."),
                    },
                }),
            ),
            (
                &format!("{P}ClusterStatus"),
                json!({
                    "description": "ClusterStatus is information about the current status of a cluster updated by the cluster controller periodically.",
                    "type": "object",
                    "properties": {
                        "conditions": {
                            "description": "Conditions is an array of current cluster conditions.",
                            "type": "array",
                            "items": reference(&format!("{P}ClusterCondition")),
                            "x-kubernetes-patch-merge-key": "type",
                            "x-kubernetes-patch-strategy": "merge",
                        },
                        "zones": {"description": "Zones is the list of availability zones in which the nodes of the cluster exist.", "type": "array", "items": {"type": "string"}},
                        "region": string("Region is the name of the region in which all of the nodes in the cluster exist."),
                    },
                }),
            ),
            (
                &format!("{P}ClusterCondition"),
                json!({
                    "description": "ClusterCondition describes the current state of a cluster.",
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": string("Type of cluster condition: Ready or Offline."),
                        "status": string("Status of the condition, one of True, False, Unknown."),
                        "lastProbeTime": {"type": "string", "format": "date-time", "description": "Last time the condition was checked."},
                        "lastTransitionTime": {"type": "string", "format": "date-time", "description": "Last time the condition transitioned from one status to another."},
                        "reason": string("(brief) reason for the condition's last transition."),
                        "message": string("Human readable message indicating details about last transition."),
                    },
                }),
            ),
        ],
    )
}

/// The seed-era `extensions/v1beta1` Ingress: backends name a service and port directly.
fn extensions_ingress(generator: &mut SchemaGenerator) -> String {
    const P: &str = "io.k8s.api.extensions.v1beta1.";
    let metadata = meta_reference(generator);
    let tls = reference(&definition::<networking::v1::IngressTLS>(generator));
    let load_balancer = reference(&definition::<networking::v1::IngressLoadBalancerStatus>(
        generator,
    ));
    let typed_ref = reference(&definition::<core::v1::TypedLocalObjectReference>(
        generator,
    ));
    let backend = || json!({"description": "The backend that serves the requests.", "allOf": [reference(&format!("{P}IngressBackend"))]});
    insert(
        generator,
        vec![
            (
                &format!("{P}Ingress"),
                json!({
                    "description": "Ingress is a collection of rules that allow inbound connections to reach the endpoints defined by a backend.",
                    "type": "object",
                    "properties": {
                        "apiVersion": string("APIVersion defines the versioned schema of this representation of an object."),
                        "kind": string("Kind is a string value representing the REST resource this object represents."),
                        "metadata": metadata,
                        "spec": {"description": "Spec is the desired state of the Ingress.", "allOf": [reference(&format!("{P}IngressSpec"))]},
                        "status": {
                            "description": "Status is the current state of the Ingress.",
                            "type": "object",
                            "properties": {"loadBalancer": {"description": "LoadBalancer contains the current status of the load-balancer.", "allOf": [load_balancer]}},
                        },
                    },
                }),
            ),
            (
                &format!("{P}IngressSpec"),
                json!({
                    "description": "IngressSpec describes the Ingress the user wishes to exist.",
                    "type": "object",
                    "properties": {
                        "backend": backend(),
                        "ingressClassName": string("The name of the IngressClass cluster resource."),
                        "rules": {"description": "A list of host rules used to configure the Ingress.", "type": "array", "items": reference(&format!("{P}IngressRule"))},
                        "tls": {"description": "TLS configuration.", "type": "array", "items": tls},
                    },
                }),
            ),
            (
                &format!("{P}IngressRule"),
                json!({
                    "description": "IngressRule represents the rules mapping the paths under a specified host to the related backend services.",
                    "type": "object",
                    "properties": {
                        "host": string("Host is the fully qualified domain name of a network host."),
                        "http": {
                            "type": "object",
                            "properties": {"paths": {"type": "array", "description": "A collection of paths that map requests to backends.", "items": reference(&format!("{P}HTTPIngressPath"))}},
                            "required": ["paths"],
                        },
                    },
                }),
            ),
            (
                &format!("{P}HTTPIngressPath"),
                json!({
                    "description": "HTTPIngressPath associates a path with a backend.",
                    "type": "object",
                    "required": ["backend"],
                    "properties": {
                        "path": string("Path is matched against the path of an incoming request."),
                        "pathType": string("PathType determines the interpretation of the path matching: Exact, Prefix or ImplementationSpecific."),
                        "backend": backend(),
                    },
                }),
            ),
            (
                &format!("{P}IngressBackend"),
                json!({
                    "description": "IngressBackend describes all endpoints for a given service and port.",
                    "type": "object",
                    "properties": {
                        "serviceName": string("Specifies the name of the referenced service."),
                        "servicePort": {"description": "Specifies the port of the referenced service.", "x-kubernetes-int-or-string": true},
                        "resource": {"description": "Resource is an ObjectRef to another Kubernetes resource in the namespace of the Ingress object.", "allOf": [typed_ref]},
                    },
                }),
            ),
        ],
    )
}

/// Marks keyed lists with the merge key the server's strategic merge uses, so kubectl
/// computes the same patches it would against kube-apiserver.
fn mark_merge_keys(definitions: &mut Map<String, Value>) {
    let snapshot = definitions.clone();
    for schema in definitions.values_mut() {
        let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, property) in properties.iter_mut() {
            if property.get("type").and_then(Value::as_str) != Some("array") {
                continue;
            }
            // The element's property names tell `ports` of containers from those of services.
            let sample: Map<String, Value> = property
                .pointer("/items/$ref")
                .and_then(Value::as_str)
                .and_then(|r| snapshot.get(r.trim_start_matches(V3_REFS)))
                .and_then(|d| d.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(|k| (k.clone(), Value::Null)).collect())
                .unwrap_or_default();
            match patch::list_kind(field, &[Value::Object(sample)]) {
                patch::ListKind::Keyed(key) => {
                    property["x-kubernetes-patch-merge-key"] = json!(key);
                    property["x-kubernetes-patch-strategy"] = json!("merge");
                }
                patch::ListKind::Set => property["x-kubernetes-patch-strategy"] = json!("merge"),
                patch::ListKind::Atomic => {}
            }
        }
    }
}

impl Schemas {
    pub fn new<'a>(kinds: impl IntoIterator<Item = &'a ResourceKind>) -> Schemas {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut roots = BTreeMap::new();
        let mut gvks: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for k in kinds {
            let Some(name) = kind_definition(&mut generator, k) else {
                continue;
            };
            gvks.entry(name.clone())
                .or_default()
                .push(json!({"group": k.group, "version": k.version, "kind": k.kind}));
            roots.insert((k.group, k.version, k.kind), name);
        }
        let mut definitions = generator.take_definitions(true);
        mark_merge_keys(&mut definitions);
        for (name, list) in gvks {
            if let Some(d) = definitions.get_mut(&name) {
                d["x-kubernetes-group-version-kind"] = json!(list);
            }
        }
        Schemas { definitions, roots }
    }

    /// The definition name of a served kind.
    pub fn root(&self, k: &ResourceKind) -> Option<&str> {
        self.roots
            .get(&(k.group, k.version, k.kind))
            .map(String::as_str)
    }

    /// The definitions the named ones refer to, transitively, with themselves.
    pub fn closure<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Map<String, Value> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<String> = names.into_iter().map(String::from).collect();
        let mut out = Map::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(d) = self.definitions.get(&name) {
                collect_refs(d, &mut pending);
                out.insert(name, d.clone());
            }
        }
        out
    }

    /// Drops the fields of `object` that its kind does not have, returning their paths
    /// (`spec.template.spec.containers[0].imagePullPolicyy`). Kinds without a schema keep
    /// everything.
    pub fn prune_unknown(&self, k: &ResourceKind, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        if let Some(schema) = self.root(k).and_then(|r| self.definitions.get(r)) {
            self.prune(schema, object, &mut String::new(), &mut unknown);
        }
        unknown
    }

    /// `path` is where `value` is (a buffer extended and cut back on the way down: this
    /// runs on every write, and building each field's path anew cost more than the rest).
    fn prune(
        &self,
        schema: &Value,
        value: &mut Value,
        path: &mut String,
        unknown: &mut Vec<String>,
    ) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            if let Some(d) = self.definitions.get(r.trim_start_matches(V3_REFS)) {
                self.prune(d, value, path, unknown);
            }
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.prune(s, value, path, unknown);
            }
        }
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
            return;
        }
        let len = path.len();
        let enter = |path: &mut String, key: &str| {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        };
        match value {
            Value::Object(map) => {
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    map.retain(|key, _| {
                        let known = properties.contains_key(key);
                        if !known {
                            let mut at = path.clone();
                            enter(&mut at, key);
                            unknown.push(at);
                        }
                        known
                    });
                    for (key, v) in map.iter_mut() {
                        enter(path, key);
                        self.prune(&properties[key], v, path, unknown);
                        path.truncate(len);
                    }
                } else if let Some(values) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    for (key, v) in map
                        .iter_mut()
                        .filter(|(_, v)| v.is_object() || v.is_array())
                    {
                        enter(path, key);
                        self.prune(values, v, path, unknown);
                        path.truncate(len);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, v) in items.iter_mut().enumerate() {
                        use std::fmt::Write as _;
                        let _ = write!(path, "[{i}]");
                        self.prune(item, v, path, unknown);
                        path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        out.push(r.trim_start_matches(V3_REFS).to_string())
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Rewrites references for an OpenAPI v2 document.
pub fn to_v2_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        *r = r.replacen(V3_REFS, "#/definitions/", 1);
                    }
                    (_, v) => to_v2_refs(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_v2_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, federation};

    #[test]
    fn unknown_fields_are_found_at_any_depth_and_dropped() {
        let registry = Registry::new(federation());
        let schemas = Schemas::new(registry.all().map(|k| &**k));
        let deployments = registry.get("apps", "v1", "deployments").unwrap();
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"x": "y"}, "bogus": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                    {"name": "c", "image": "nginx", "imagePullPolicyy": "Always", "ports": [{"containerPort": 80}]}]}}},
        });
        let unknown = schemas.prune_unknown(deployments, &mut d);
        assert_eq!(
            unknown,
            [
                "metadata.bogus",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
        assert!(d.pointer("/metadata/bogus").is_none());
        assert_eq!(d["metadata"]["labels"]["x"], "y");
        assert_eq!(
            d.pointer("/spec/template/spec/containers/0/ports/0/containerPort"),
            Some(&json!(80))
        );
        let clusters = registry.get("federation", "v1beta1", "clusters").unwrap();
        let mut c = json!({"spec": {"serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "x", "port": 1}], "secretRef": {"name": "s"}}});
        assert_eq!(
            schemas.prune_unknown(clusters, &mut c),
            ["spec.serverAddressByClientCIDRs[0].port"]
        );
        let ingress = registry.get("extensions", "v1beta1", "ingresses").unwrap();
        let mut i = json!({"spec": {"backend": {"serviceName": "s", "servicePort": 80}}});
        assert!(schemas.prune_unknown(ingress, &mut i).is_empty());
    }

    #[test]
    fn kinds_are_tagged_and_keyed_lists_marked() {
        let registry = Registry::new(federation());
        let schemas = Schemas::new(registry.all().map(|k| &**k));
        let defs = schemas.closure(["io.k8s.api.apps.v1.Deployment"]);
        let gvks = defs["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"]
            .as_array()
            .unwrap();
        assert_eq!(gvks.len(), 2, "apps/v1 and extensions/v1beta1");
        assert_eq!(
            defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.Container"]["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    }
}
