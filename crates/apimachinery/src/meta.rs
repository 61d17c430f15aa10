//! Object metadata on untyped objects (`serde_json::Value`): what the API server fills in.

use serde_json::{Map, Value};

/// The current time as Kubernetes writes timestamps: RFC 3339, seconds, UTC.
pub fn now() -> String {
    thread_local! {
        // Every write stamps the time: formatted once a second per thread.
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let t = jiff::Timestamp::now();
    LAST.with_borrow_mut(|(second, text)| {
        if *second != t.as_second() {
            *second = t.as_second();
            *text = t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        }
        text.clone()
    })
}

/// A new object UID.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `metadata` of an object, created empty if absent (or replaced if not an object).
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let obj = object.as_object_mut().expect("objects are JSON objects");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

/// A string field of `metadata`, "" when absent.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(object: &Value) -> &str {
    meta_str(object, "name")
}

pub fn namespace(object: &Value) -> &str {
    meta_str(object, "namespace")
}

pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    object
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
}

/// `metadata.finalizers` as strings.
pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A random suffix for `generateName`, from the alphabet kube-apiserver uses (no vowels, no
/// look-alike characters), five characters long.
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let suffix: String = bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    // As kube-apiserver: the prefix is cut to 58 bytes (a generated name then also fits a
    // 63-character label), at a character boundary.
    let mut keep = prefix.len().min(58);
    while !prefix.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &prefix[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_names() {
        let mut o = json!({"kind": "ConfigMap"});
        metadata_mut(&mut o).insert("name".into(), json!("a"));
        assert_eq!(name(&o), "a");
        assert_eq!(namespace(&o), "");
        let g = generated_name("web-");
        assert!(g.starts_with("web-") && g.len() == 9, "{g}");
        assert_eq!(now().len(), 20);
        let long = format!("a{}", "é".repeat(124));
        assert!(generated_name(&long).len() <= 63);
    }
}
