//! Objects between the store and the wire: decoding request bodies, filling in the metadata
//! the server owns, and presenting stored objects at the version a request asked for.

use bytes::Bytes;
use fellowship_apimachinery::{ApiError, ResourceKind, meta, protobuf};
use fellowship_storage::{KeyValue, Revision};
use serde_json::{Map, Value};

use crate::conversion;

/// The largest request body accepted, as kube-apiserver's limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Decodes a request body: a JSON object, or the Kubernetes protobuf encoding that kubectl
/// 1.32+ uses for typed objects.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(format!(
            "the request body is {} bytes, more than the limit of {MAX_BODY}",
            body.len()
        )));
    }
    if body.starts_with(b"k8s\0") {
        return protobuf::decode_object(body)
            .map_err(|e| ApiError::bad_request(format!("the protobuf body is invalid: {e}")));
    }
    // JSON, or YAML (application/yaml) for a body that does not open with a brace.
    let value: Value = if body.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the body is neither JSON nor UTF-8 YAML"))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(value)
}

/// Checks that a body's `apiVersion` and `kind`, when present, are those of the endpoint, and
/// sets them when absent.
pub fn check_type(object: &mut Value, kind: &ResourceKind) -> Result<(), ApiError> {
    let want_version = kind.api_version();
    let obj = object
        .as_object_mut()
        .expect("decoded objects are JSON objects");
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != want_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want_version})"
            )));
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        _ => {}
    }
    obj.insert("apiVersion".into(), Value::String(want_version));
    obj.insert("kind".into(), Value::String(kind.kind.to_string()));
    Ok(())
}

/// The stored bytes of an object, at its kind's storage version: everything but its
/// `resourceVersion`, which is the store's revision and is added on the way out. `apiVersion`, `kind` and `metadata` lead, in that
/// order, so that a read at the same version can splice the resourceVersion in without
/// parsing the object (see [`present_raw`]).
pub fn encode(kind: &ResourceKind, object: &Value) -> Bytes {
    let hub = conversion::storage_version(kind);
    if object.get("apiVersion").and_then(Value::as_str) == Some(&hub) {
        return encode_as_is(object);
    }
    let mut converted = object.clone();
    conversion::convert(&mut converted, &hub);
    encode_as_is(&converted)
}

thread_local! {
    /// Where objects are written before they are copied out at their exact size: growing a
    /// fresh buffer for each object cost more than the copy, and left up to half of each
    /// stored object's allocation unused.
    static ENCODING: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn encode_as_is(object: &Value) -> Bytes {
    let write = |out: &mut Vec<u8>, v: &Value| {
        serde_json::to_writer(out, v).expect("JSON values serialize");
    };
    let field = |out: &mut Vec<u8>, k: &str, v: &Value| {
        serde_json::to_writer(&mut *out, k).expect("JSON strings serialize");
        out.push(b':');
        serde_json::to_writer(out, v).expect("JSON values serialize");
    };
    let empty = Map::new();
    let obj = object.as_object().unwrap_or(&empty);
    ENCODING.with_borrow_mut(|out| {
        out.clear();
        out.extend_from_slice(b"{\"apiVersion\":");
        write(out, obj.get("apiVersion").unwrap_or(&Value::Null));
        out.extend_from_slice(b",\"kind\":");
        write(out, obj.get("kind").unwrap_or(&Value::Null));
        out.extend_from_slice(b",\"metadata\":");
        match obj.get("metadata") {
            Some(Value::Object(m)) => {
                out.push(b'{');
                let mut first = true;
                for (k, v) in m.iter().filter(|(k, _)| *k != "resourceVersion") {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    field(out, k, v);
                }
                out.push(b'}');
            }
            Some(other) => write(out, other),
            None => out.extend_from_slice(b"{}"),
        }
        for (k, v) in obj {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                out.push(b',');
                field(out, k, v);
            }
        }
        out.push(b'}');
        let bytes = Bytes::copy_from_slice(out);
        if out.capacity() > MAX_BODY {
            *out = Vec::new();
        }
        bytes
    })
}

/// A stored object's JSON at `kind`'s version with its resourceVersion, without parsing it:
/// possible when it was stored at that version (by [`encode`]). `None` otherwise.
pub fn present_raw(kv: &KeyValue, kind: &ResourceKind) -> Option<Vec<u8>> {
    present_raw_at(kv, kind, kv.mod_revision)
}

/// [`present_raw`] with the resourceVersion `revision` (a deletion's, for a watch).
pub fn present_raw_at(kv: &KeyValue, kind: &ResourceKind, revision: Revision) -> Option<Vec<u8>> {
    let prefix = format!(
        "{{\"apiVersion\":\"{}\",\"kind\":\"{}\",\"metadata\":{{",
        kind.api_version(),
        kind.kind
    );
    let rest = kv.value.strip_prefix(prefix.as_bytes())?;
    let rv = format!("\"resourceVersion\":\"{revision}\"");
    let mut out = Vec::with_capacity(kv.value.len() + rv.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(rv.as_bytes());
    if rest.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// A stored object as the API shows it at `kind`'s version.
pub fn present(kv: &KeyValue, kind: &ResourceKind) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is unreadable: {e}", kv.key)))?;
    if !object.is_object() {
        return Err(ApiError::internal(format!(
            "stored object {} is not an object",
            kv.key
        )));
    }
    conversion::convert(&mut object, &kind.api_version());
    let obj = object.as_object_mut().expect("checked above");
    obj.insert("apiVersion".into(), Value::String(kind.api_version()));
    obj.insert("kind".into(), Value::String(kind.kind.to_string()));
    meta::metadata_mut(&mut object).insert(
        "resourceVersion".into(),
        Value::String(kv.mod_revision.to_string()),
    );
    Ok(object)
}

/// The fields of an object that are neither metadata nor status: a change to them bumps
/// `metadata.generation`.
pub fn spec_of(object: &Value) -> Map<String, Value> {
    object
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the type keeps a `metadata.generation` (objects with a desired state).
pub fn has_generation(object: &Value) -> bool {
    object.get("spec").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, federation};
    use serde_json::json;

    #[test]
    fn json_and_yaml_bodies() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  on: \"yes\"\n";
        let v = decode(yaml).unwrap();
        assert_eq!(v["metadata"]["name"], "a");
        assert_eq!(v["data"]["on"], "yes");
        assert_eq!(decode(br#" {"a": 1}"#).unwrap()["a"], 1);
        assert_eq!(decode(b"{bad").unwrap_err().code, 400);
        assert_eq!(decode(b"- a\n- b\n").unwrap_err().code, 400);
        assert_eq!(decode(b"key: [unclosed").unwrap_err().code, 400);
    }

    #[test]
    fn raw_presentation_equals_parsed() {
        let registry = Registry::new(federation());
        let cm = registry.get("", "v1", "configmaps").unwrap();
        let deploy_ext = registry
            .get("extensions", "v1beta1", "deployments")
            .unwrap();
        for object in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "9"}, "data": {"k": "\"metadata\":{"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        ] {
            let kv = KeyValue {
                key: "/configmaps/ns/a".into(),
                value: encode(cm, &object),
                create_revision: 3,
                mod_revision: 7,
            };
            let raw: Value = serde_json::from_slice(&present_raw(&kv, cm).unwrap()).unwrap();
            assert_eq!(raw, present(&kv, cm).unwrap());
            assert_eq!(raw["metadata"]["resourceVersion"], "7");
            // Read at another version: no raw shortcut.
            assert!(present_raw(&kv, deploy_ext).is_none());
        }
    }
}
