//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which manager set which fields, in the FieldsV1 form kubectl and
//! client-go read (`{"f:spec":{"f:replicas":{}}}`, `k:{"name":"web"}` for keyed list items,
//! `v:"x"` for set members). An apply sets the fields of its configuration, takes them from
//! no one else unless forced (a field another manager set to another value is a conflict),
//! and removes the fields it set before and no longer lists, unless someone else owns them.
//! Lists merge as in strategic merge patch (by merge key, sets, or whole).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::patch::{ListKind, list_kind, strategic_merge};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    Field(String),
    /// A keyed list element, by its key fields as compact JSON.
    Key(String),
    /// A member of a set-like list, as JSON.
    Value(String),
}

pub type Path = Vec<Seg>;

/// Fields the server owns or that identify the object: never anyone's.
fn ignored(path: &[Seg]) -> bool {
    matches!(path, [Seg::Field(f), ..] if f == "apiVersion" || f == "kind" || f == "status")
        || matches!(path, [Seg::Field(m), Seg::Field(f), ..] if m == "metadata" && matches!(f.as_str(),
            "name" | "namespace" | "uid" | "resourceVersion" | "generation" | "creationTimestamp"
            | "deletionTimestamp" | "deletionGracePeriodSeconds" | "managedFields" | "selfLink"))
}

/// Every leaf field of an object with its value (a keyed list item's value is its key).
pub fn leaves(object: &Value) -> BTreeMap<Path, &Value> {
    let mut out = BTreeMap::new();
    visit(object, &mut Vec::new(), None, &mut |path, v| {
        out.insert(path.clone(), v);
    });
    out
}

/// Calls `leaf` with every leaf field's path and value.
fn visit<'a>(
    v: &'a Value,
    path: &mut Path,
    field: Option<&str>,
    leaf: &mut impl FnMut(&Path, &'a Value),
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(Seg::Field(k.clone()));
                // Ignored fields are never descended into: status and managedFields are
                // most of an object.
                if path.len() > 2 || !ignored(path) {
                    visit(child, path, Some(k), leaf);
                }
                path.pop();
            }
        }
        Value::Array(items) => match list_kind(field.unwrap_or(""), items) {
            ListKind::Keyed(key) => {
                for item in items {
                    let Some(id) = item.get(key) else { continue };
                    path.push(Seg::Key(json!({ key: id }).to_string()));
                    leaf(path, id);
                    visit(item, path, None, leaf);
                    path.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    path.push(Seg::Value(item.to_string()));
                    leaf(path, item);
                    path.pop();
                }
            }
            ListKind::Atomic => leaf(path, v),
        },
        _ => leaf(path, v),
    }
}

/// A path set in FieldsV1 form.
pub fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        add_path(&mut root, p);
    }
    Value::Object(root)
}

/// Adds one path to a FieldsV1 tree.
fn add_path(root: &mut Map<String, Value>, path: &Path) {
    let mut node = root;
    for seg in path {
        let key = match seg {
            Seg::Field(f) => format!("f:{f}"),
            Seg::Key(k) => format!("k:{k}"),
            Seg::Value(v) => format!("v:{v}"),
        };
        node = node
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("FieldsV1 nodes are objects");
        if matches!(seg, Seg::Key(_)) {
            node.entry(".").or_insert_with(|| json!({}));
        }
    }
}

/// A FieldsV1 value as the leaf paths it names.
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn go(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if (children.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in children {
            let seg = match k.split_once(':') {
                Some(("f", f)) => Seg::Field(f.to_string()),
                Some(("k", k)) => Seg::Key(k.to_string()),
                Some(("v", v)) => Seg::Value(v.to_string()),
                _ => continue,
            };
            path.push(seg);
            go(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// One manager's entry in `metadata.managedFields`.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    fields: BTreeSet<Path>,
}

fn entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    Entry {
                        manager: s("manager"),
                        operation: s("operation"),
                        api_version: s("apiVersion"),
                        time: s("time"),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store_entries(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let fields = to_fields_v1(&e.fields);
            entry_value(&e.manager, &e.operation, &e.api_version, &e.time, fields)
        })
        .collect();
    set_entries(object, list);
}

fn entry_value(
    manager: &str,
    operation: &str,
    api_version: &str,
    time: &str,
    fields: Value,
) -> Value {
    json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    })
}

fn set_entries(object: &mut Value, list: Vec<Value>) {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn covers(owned: &Path, leaf: &Path) -> bool {
    leaf.starts_with(owned) || owned.starts_with(leaf)
}

/// Records a create, update or patch by `manager`: it owns the fields it added or changed;
/// nobody owns fields that are gone.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: &str,
) {
    let Some(old) = old else {
        // A create: the manager owns every field, written straight into FieldsV1 form.
        let mut fields = Map::new();
        visit(new, &mut Vec::new(), None, &mut |path, _| {
            add_path(&mut fields, path)
        });
        let list = if fields.is_empty() {
            Vec::new()
        } else {
            vec![entry_value(
                manager,
                "Update",
                api_version,
                now,
                Value::Object(fields),
            )]
        };
        set_entries(new, list);
        return;
    };
    let before = leaves(old);
    let after = leaves(new);
    let changed: BTreeSet<Path> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let mut list = entries(old);
    for e in &mut list {
        e.fields
            .retain(|p| after.contains_key(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        match list
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update")
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_string();
            }
            None => list.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                fields: changed,
            }),
        }
    }
    store_entries(new, list);
}

/// A field another manager holds with another value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// A path as kubectl prints it: `.spec.containers[name="web"].image`.
pub fn display(path: &Path) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::Key(k) => {
                let inner = k
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .replace(':', "=");
                s.push_str(&format!("[{inner}]"));
            }
            Seg::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// Server-side apply of `config` by `manager` over `live` (None: the object is created).
/// Returns the new object with its managedFields, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let applied = leaves(config);
    let mut list = live.map(entries).unwrap_or_default();
    let live_leaves = live.map(leaves).unwrap_or_default();
    // Managers are told apart by name and operation: the same client's updates (kubectl
    // scale) are another owner than its applies, as in kube-apiserver.
    let is_me = |e: &Entry| e.manager == manager && e.operation == "Apply";
    let mut conflicts = Vec::new();
    for (path, value) in &applied {
        for e in list.iter().filter(|e| !is_me(e)) {
            if e.fields.iter().any(|p| covers(p, path)) && live_leaves.get(path) != Some(value) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    field: display(path),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.dedup();
        return Err(conflicts);
    }
    // Fields this manager applied before and leaves out now go, unless others own them.
    let previous: BTreeSet<Path> = list
        .iter()
        .filter(|e| is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut object = match live {
        Some(l) => strategic_merge(l, config).map_err(|e| {
            vec![Conflict {
                manager: String::new(),
                field: e,
            }]
        })?,
        None => config.clone(),
    };
    for gone in previous.iter().filter(|p| !applied.contains_key(*p)) {
        let shared = list
            .iter()
            .any(|e| !is_me(e) && e.fields.iter().any(|p| covers(p, gone)));
        if !shared {
            remove(&mut object, gone);
        }
    }
    let mine: BTreeSet<Path> = applied.keys().cloned().collect();
    for e in &mut list {
        if !is_me(e) {
            e.fields.retain(|p| !mine.iter().any(|m| covers(m, p)));
        }
    }
    list.retain(|e| !is_me(e));
    list.push(Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        time: now.to_string(),
        fields: mine,
    });
    store_entries(&mut object, list);
    Ok(object)
}

/// Removes the field a path names.
fn remove(object: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = object;
    for seg in parents {
        let next = match (seg, node) {
            (Seg::Field(f), Value::Object(m)) => m.get_mut(f),
            (Seg::Key(k), Value::Array(items)) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                items
                    .iter_mut()
                    .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)))
            }
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match (last, node) {
        (Seg::Field(f), Value::Object(m)) => {
            m.remove(f);
        }
        (Seg::Key(k), Value::Array(items)) => {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            items.retain(|i| !key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
        }
        (Seg::Value(v), Value::Array(items)) => {
            let member: Value = serde_json::from_str(v).unwrap_or(Value::Null);
            items.retain(|i| *i != member);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let o = json!({"metadata": {"name": "a", "labels": {"app": "web"}, "finalizers": ["x"]},
            "spec": {"replicas": 2, "containers": [{"name": "web", "image": "nginx"}], "args": ["a"]}});
        let paths: BTreeSet<Path> = leaves(&o).into_keys().collect();
        let f = to_fields_v1(&paths);
        assert!(f["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:image"].is_object());
        assert!(f["f:metadata"]["f:finalizers"]["v:\"x\""].is_object());
        assert!(f["f:metadata"].get("f:name").is_none());
        assert_eq!(from_fields_v1(&f), paths);
    }

    #[test]
    fn a_create_owns_every_field_it_sets() {
        let now = "2026-01-01T00:00:00Z";
        let mut o = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"app": "web"}, "finalizers": ["x"],
                "managedFields": [{"manager": "forged"}]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"replicas": 9}});
        let paths: BTreeSet<Path> = leaves(&o).into_keys().collect();
        record_update(None, &mut o, "kubectl", "apps/v1", now);
        let list = o["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(list.len(), 1, "the client's own managedFields are replaced");
        assert_eq!(list[0]["manager"], "kubectl");
        assert_eq!(list[0]["operation"], "Update");
        assert_eq!(list[0]["fieldsV1"], to_fields_v1(&paths));
        let item = &list[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(item["."], json!({}));
        assert_eq!(item["f:image"], json!({}));
        assert!(list[0]["fieldsV1"].get("f:status").is_none());
        // Nothing but what the server owns: no entry at all.
        let mut bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}});
        record_update(None, &mut bare, "kubectl", "v1", now);
        assert!(bare["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn apply_conflicts_force_and_removal() {
        let now = "2026-01-01T00:00:00Z";
        let config = json!({"metadata": {"name": "d", "labels": {"a": "1"}}, "spec": {"replicas": 2, "paused": false}});
        let created = apply(None, &config, "alice", "apps/v1", false, now).unwrap();
        // alice's own update is another owner than her applies.
        let mut own = created.clone();
        own["spec"]["paused"] = json!(true);
        record_update(Some(&created), &mut own, "alice", "apps/v1", now);
        let err = apply(Some(&own), &config, "alice", "apps/v1", false, now).unwrap_err();
        assert_eq!(
            err,
            [Conflict {
                manager: "alice".into(),
                field: ".spec.paused".into()
            }]
        );
        // bob changes replicas with an update: he owns it now.
        let mut updated = created.clone();
        updated["spec"]["replicas"] = json!(5);
        record_update(Some(&created), &mut updated, "bob", "apps/v1", now);
        // alice applies replicas 2 again: conflict with bob, unless forced.
        let err = apply(Some(&updated), &config, "alice", "apps/v1", false, now).unwrap_err();
        assert_eq!(
            err,
            [Conflict {
                manager: "bob".into(),
                field: ".spec.replicas".into()
            }]
        );
        let forced = apply(Some(&updated), &config, "alice", "apps/v1", true, now).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        // alice drops `paused` from her configuration: it goes.
        let smaller =
            json!({"metadata": {"name": "d", "labels": {"a": "1"}}, "spec": {"replicas": 2}});
        let applied = apply(Some(&forced), &smaller, "alice", "apps/v1", false, now).unwrap();
        assert!(applied["spec"].get("paused").is_none());
        assert_eq!(
            applied["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
