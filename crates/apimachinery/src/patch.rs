//! Strategic merge patch (`application/strategic-merge-patch+json`), as kubectl apply, edit,
//! set and scale send it: maps merge key by key (null deletes); lists of objects that have a
//! merge key merge element by element; other lists are replaced; `metadata.finalizers` merges
//! as a set. Directives: `$patch` (`replace`, `delete`, `merge`), `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>`.
//!
//! No maintained Rust crate does this; the merge keys are those of the Kubernetes types
//! (`patchMergeKey` in their Go definitions), looked up by field name.

use serde_json::{Map, Value};

/// The merge key of a list field, judged by its name and, where one name is shared by
/// differently keyed lists (`ports`), by the elements.
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "secrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "readinessGates" => "conditionType",
        "topologySpreadConstraints" => "topologyKey",
        "serverAddressByClientCIDRs" => "clientCIDR",
        "ports" if elements.iter().any(|e| e.get("containerPort").is_some()) => "containerPort",
        "ports" if elements.iter().all(|e| e.get("port").is_some()) => "port",
        _ => return None,
    })
}

/// Lists of scalars that merge as sets rather than being replaced.
fn merges_as_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// Element by element, matched on this key.
    Keyed(&'static str),
    /// As a set of scalars.
    Set,
    /// Replaced whole.
    Atomic,
}

pub fn list_kind(field: &str, elements: &[Value]) -> ListKind {
    if merges_as_set(field) {
        ListKind::Set
    } else if let Some(key) = merge_key(field, elements) {
        ListKind::Keyed(key)
    } else {
        ListKind::Atomic
    }
}

pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, String> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => merge_map(o, p).map(Value::Object),
        (_, p) => Ok(strip_directives(p)),
    }
}

fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            return Ok(strip_map(&replaced));
        }
        Some("delete") => return Ok(Map::new()),
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive {other:?}")),
    }
    let mut out = original.clone();
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value
                .as_array()
                .ok_or("$deleteFromPrimitiveList takes a list")?;
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(p) if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                out.remove(key);
            }
            Value::Object(p) => {
                let merged = match out.get(key) {
                    Some(Value::Object(o)) => merge_map(o, p)?,
                    _ => merge_map(&Map::new(), p)?,
                };
                out.insert(key.clone(), Value::Object(merged));
            }
            Value::Array(p) => {
                let merged = match out.get(key) {
                    Some(Value::Array(o)) => merge_list(key, o, p)?,
                    _ => merge_list(key, &[], p)?,
                };
                out.insert(key.clone(), Value::Array(merged));
            }
            v => {
                out.insert(key.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

fn merge_list(field: &str, original: &[Value], patch: &[Value]) -> Result<Vec<Value>, String> {
    // `{"$patch": "replace"}` as an element replaces the whole list with the other elements.
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .map(strip_directives)
            .collect());
    }
    if merges_as_set(field) {
        let mut out = original.to_vec();
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(out);
    }
    let Some(key) = merge_key(field, patch).or_else(|| merge_key(field, original)) else {
        return Ok(patch.iter().map(strip_directives).collect());
    };
    let mut out = original.to_vec();
    for element in patch {
        let id = element
            .get(key)
            .ok_or_else(|| format!("an element of {field} has no merge key {key:?}: {element}"))?;
        let at = out.iter().position(|o| o.get(key) == Some(id));
        let delete = element.get("$patch").and_then(Value::as_str) == Some("delete");
        match (at, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic_merge(&out[i], element)?,
            (None, false) => out.push(strip_directives(element)),
        }
    }
    Ok(out)
}

fn strip_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

/// A patch value as plain data: directives removed, nulls in maps dropped.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            strip_map(m)
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_and_null_deletes() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "y"}});
        let p = json!({"metadata": {"labels": {"a": null, "c": "3"}}});
        assert_eq!(
            strategic_merge(&o, &p).unwrap(),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "data": {"x": "y"}})
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let o = json!({"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}});
        let p = json!({"spec": {"containers": [
            {"name": "web", "image": "nginx:2"},
            {"name": "new", "image": "redis"},
            {"name": "side", "$patch": "delete"}]}});
        let m = strategic_merge(&o, &p).unwrap();
        assert_eq!(
            m["spec"]["containers"],
            json!([
                {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]},
                {"name": "new", "image": "redis"}])
        );
    }

    #[test]
    fn lists_without_keys_are_replaced_finalizers_merge() {
        let o = json!({"spec": {"args": ["a", "b"]}, "metadata": {"finalizers": ["x"]}});
        let p = json!({"spec": {"args": ["c"]}, "metadata": {"finalizers": ["y", "x"]}});
        let m = strategic_merge(&o, &p).unwrap();
        assert_eq!(m["spec"]["args"], json!(["c"]));
        assert_eq!(m["metadata"]["finalizers"], json!(["x", "y"]));
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
        assert_eq!(
            strategic_merge(&o, &p).unwrap()["metadata"]["finalizers"],
            json!([])
        );
    }

    #[test]
    fn directives() {
        let o = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(
            strategic_merge(&o, &p).unwrap(),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
        let p = json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}});
        assert_eq!(
            strategic_merge(&o, &p).unwrap()["spec"]["strategy"],
            json!({"type": "Recreate"})
        );
        let p = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "$setElementOrder/ports": [{"port": 80}]}});
        let o = json!({"spec": {"ports": [{"port": 80, "targetPort": 80}, {"port": 443}]}});
        assert_eq!(
            strategic_merge(&o, &p).unwrap()["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080}, {"port": 443}])
        );
    }
}
