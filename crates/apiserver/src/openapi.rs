//! OpenAPI documents: `/openapi/v3` (an index and one document per group/version) and
//! `/openapi/v2`. kubectl reads them to learn that the server validates fields itself
//! (the `fieldValidation` parameter on writes), and `kubectl explain` reads the schemas.
//!
//! The schemas are those of [`Schemas`]: each document carries the definitions its kinds
//! refer to.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use fellowship_apimachinery::ResourceKind;
use serde_json::{Value, json};

use crate::registry::Registry;
use crate::schemas::{Schemas, V3_REFS, to_v2_refs};

/// The documents, built once from the registry.
pub struct OpenApi {
    /// By path after `/openapi/v3/`: `api/v1`, `apis/apps/v1`, ...
    v3: BTreeMap<String, (Value, String)>,
    v2: Value,
    /// `v2` as protobuf, for the kubectl versions that read it so.
    v2_protobuf: bytes::Bytes,
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
    pub fn new(registry: &Registry, schemas: &Schemas) -> OpenApi {
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
        let mut v2_roots = Vec::new();
        for (gv, kinds) in by_gv {
            let mut roots = Vec::new();
            let mut doc_paths = serde_json::Map::new();
            for k in kinds {
                let Some(root) = schemas.root(k) else {
                    continue;
                };
                roots.push(root);
                v2_roots.push(root);
                for (path, collection) in paths(k) {
                    let v3_ref = json!({"$ref": format!("{V3_REFS}{root}")});
                    let v2_ref = json!({"$ref": format!("#/definitions/{root}")});
                    doc_paths.insert(path.clone(), operations(k, collection, &v3_ref));
                    v2_paths.insert(path, operations(k, collection, &v2_ref));
                }
            }
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Fellowship", "version": env!("CARGO_PKG_VERSION")},
                "paths": doc_paths,
                "components": {"schemas": schemas.closure(roots)},
            });
            let hash = digest(&doc);
            v3.insert(gv, (doc, hash));
        }
        let mut v2 = json!({
            "swagger": "2.0",
            "info": {"title": "Fellowship", "version": env!("CARGO_PKG_VERSION")},
            "paths": v2_paths,
            "definitions": schemas.closure(v2_roots),
        });
        to_v2_refs(&mut v2);
        let v2_protobuf = crate::openapi_proto::encode(&v2).into();
        OpenApi {
            v3,
            v2,
            v2_protobuf,
        }
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

    pub fn v2_protobuf(&self) -> bytes::Bytes {
        self.v2_protobuf.clone()
    }
}
