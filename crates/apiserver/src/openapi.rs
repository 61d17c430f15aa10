//! OpenAPI documents: `/openapi/v3` (an index and one document per group/version) and
//! `/openapi/v2`. kubectl reads them to learn that the server validates fields itself
//! (the `fieldValidation` parameter on writes), and `kubectl explain` reads the schemas.
//!
//! The schemas name each kind and its standard fields; the per-type field schemas are not
//! there yet, so they keep unknown fields.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use fellowship_apimachinery::ResourceKind;
use serde_json::{Value, json};

use crate::registry::Registry;

/// The documents, built once from the registry.
pub struct OpenApi {
    /// By path after `/openapi/v3/`: `api/v1`, `apis/apps/v1`, ...
    v3: BTreeMap<String, (Value, String)>,
    v2: Value,
}

fn schema_name(k: &ResourceKind) -> String {
    let group = if k.group.is_empty() { "core" } else { k.group };
    format!("io.fellowship.api.{group}.{}.{}", k.version, k.kind)
}

fn gvk(k: &ResourceKind) -> Value {
    json!([{"group": k.group, "version": k.version, "kind": k.kind}])
}

fn kind_schema(k: &ResourceKind, meta_ref: &str) -> Value {
    json!({
        "description": format!("{} is a {} resource served by the Fellowship federation API server.", k.kind, k.api_version()),
        "type": "object",
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"description": "Standard object's metadata.", "allOf": [{"$ref": meta_ref}]},
            "spec": {"description": "The desired state.", "type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "status": {"description": "The observed state.", "type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-group-version-kind": gvk(k),
    })
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn object_meta_schema() -> Value {
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Name must be unique within a namespace."},
            "generateName": {"type": "string", "description": "A prefix the server uses to generate a unique name."},
            "namespace": {"type": "string", "description": "The namespace the object lives in."},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values used to organize and select objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Unstructured key value data."},
            "uid": {"type": "string", "description": "The unique in time and space value for this object."},
            "resourceVersion": {"type": "string", "description": "The version of this object, for optimistic concurrency."},
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "When the object was created."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "When the object will be deleted."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
        },
    })
}

/// The operations of one path, each tagged with its kind and action as kube-apiserver's are.
fn operations(k: &ResourceKind, collection: bool, schema_ref: &Value) -> Value {
    let param = |name: &str, description: &str| json!({"name": name, "in": "query", "description": description, "schema": {"type": "string"}, "type": "string", "uniqueItems": true});
    let write_params = json!([
        param("dryRun", "When present, modifications are not persisted."),
        param(
            "fieldManager",
            "A name associated with the actor making these changes."
        ),
        param(
            "fieldValidation",
            "How the server handles unknown or duplicate fields: Ignore, Warn or Strict."
        ),
    ]);
    let op = |action: &str, id: &str, params: Value| {
        json!({
            "operationId": format!("{id}{}", k.kind),
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref}}, "schema": schema_ref}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
        })
    };
    if collection {
        json!({
            "get": op("list", "list", json!([])),
            "post": op("post", "create", write_params),
            "delete": op("deletecollection", "deleteCollection", json!([])),
        })
    } else {
        json!({
            "get": op("get", "read", json!([])),
            "put": op("put", "replace", write_params.clone()),
            "patch": op("patch", "patch", write_params),
            "delete": op("delete", "delete", json!([])),
        })
    }
}

fn paths(k: &ResourceKind) -> Vec<(String, bool)> {
    let base = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    if k.namespaced() {
        vec![
            (
                format!("{base}/namespaces/{{namespace}}/{}", k.plural),
                true,
            ),
            (
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", k.plural),
                false,
            ),
        ]
    } else {
        vec![
            (format!("{base}/{}", k.plural), true),
            (format!("{base}/{}/{{name}}", k.plural), false),
        ]
    }
}

fn digest(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

impl OpenApi {
    pub fn new(registry: &Registry) -> OpenApi {
        let mut by_gv: BTreeMap<String, Vec<&ResourceKind>> = BTreeMap::new();
        for k in registry.all() {
            let key = if k.group.is_empty() {
                format!("api/{}", k.version)
            } else {
                format!("apis/{}/{}", k.group, k.version)
            };
            by_gv.entry(key).or_default().push(k);
        }
        let mut v3 = BTreeMap::new();
        let mut v2_paths = serde_json::Map::new();
        let mut v2_definitions = serde_json::Map::new();
        v2_definitions.insert(OBJECT_META.into(), object_meta_schema());
        for (gv, kinds) in by_gv {
            let mut schemas = serde_json::Map::new();
            schemas.insert(OBJECT_META.into(), object_meta_schema());
            let mut doc_paths = serde_json::Map::new();
            for k in kinds {
                let name = schema_name(k);
                schemas.insert(
                    name.clone(),
                    kind_schema(k, &format!("#/components/schemas/{OBJECT_META}")),
                );
                v2_definitions.insert(
                    name.clone(),
                    kind_schema(k, &format!("#/definitions/{OBJECT_META}")),
                );
                for (path, collection) in paths(k) {
                    let v3_ref = json!({"$ref": format!("#/components/schemas/{name}")});
                    let v2_ref = json!({"$ref": format!("#/definitions/{name}")});
                    doc_paths.insert(path.clone(), operations(k, collection, &v3_ref));
                    v2_paths.insert(path, operations(k, collection, &v2_ref));
                }
            }
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Fellowship", "version": env!("CARGO_PKG_VERSION")},
                "paths": doc_paths,
                "components": {"schemas": schemas},
            });
            let hash = digest(&doc);
            v3.insert(gv, (doc, hash));
        }
        let v2 = json!({
            "swagger": "2.0",
            "info": {"title": "Fellowship", "version": env!("CARGO_PKG_VERSION")},
            "paths": v2_paths,
            "definitions": v2_definitions,
        });
        OpenApi { v3, v2 }
    }

    pub fn v3_index(&self) -> Value {
        let paths: serde_json::Map<String, Value> = self
            .v3
            .iter()
            .map(|(gv, (_, hash))| {
                (
                    gv.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
                )
            })
            .collect();
        json!({"paths": paths})
    }

    pub fn v3(&self, group_version: &str) -> Option<&Value> {
        self.v3.get(group_version).map(|(doc, _)| doc)
    }

    pub fn v2(&self) -> &Value {
        &self.v2
    }
}
