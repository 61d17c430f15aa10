//! The OpenAPI v2 document in the protobuf form kubectl 1.27 and 1.28 ask for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, the `openapi.v2` messages of
//! google/gnostic). They read the definitions (for validation and patches) and the
//! operations' parameters and kinds (to learn that the server validates fields itself); only
//! what they read is written.

use serde_json::Value;

/// What the response says it is: the `@` of the form clients ask for is not valid in a media
/// type that Go's parser accepts, so kube-apiserver answers with a dot.
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// A protobuf message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.varint(u64::from(field << 3 | 2));
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.varint(u64::from(field << 3));
            self.varint(1);
        }
    }

    fn message(&mut self, field: u32, m: Message) {
        self.bytes(field, &m.0);
    }

    /// A `NamedAny` per `x-` key: the value as YAML (JSON is YAML), as gnostic keeps
    /// vendor extensions.
    fn extensions(&mut self, field: u32, object: &Value) {
        for (k, v) in object.as_object().into_iter().flatten() {
            if k.starts_with("x-") {
                let mut any = Message::default();
                any.string(2, &v.to_string());
                let mut named = Message::default();
                named.string(1, k);
                named.message(2, any);
                self.message(field, named);
            }
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn schema(s: &Value) -> Message {
    let mut m = Message::default();
    m.string(1, str_of(s, "$ref"));
    m.string(2, str_of(s, "format"));
    m.string(4, str_of(s, "description"));
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.string(19, r.as_str().unwrap_or(""));
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Message::default();
            item.boolean(2, *b);
            m.message(21, item);
        }
        Some(a @ Value::Object(_)) => {
            let mut item = Message::default();
            item.message(1, schema(a));
            m.message(21, item);
        }
        _ => {}
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let mut t = Message::default();
        for ty in types {
            t.string(1, ty);
        }
        m.message(22, t);
    }
    if let Some(items) = s.get("items") {
        let mut i = Message::default();
        i.message(1, schema(items));
        m.message(23, i);
    }
    for a in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, schema(a));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        let mut p = Message::default();
        for (name, v) in props {
            let mut named = Message::default();
            named.string(1, name);
            named.message(2, schema(v));
            p.message(1, named);
        }
        m.message(25, p);
    }
    m.extensions(31, s);
    m
}

fn operation(op: &Value) -> Message {
    let mut m = Message::default();
    m.string(5, str_of(op, "operationId"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut query = Message::default();
        query.string(2, str_of(p, "in"));
        query.string(3, str_of(p, "description"));
        query.string(4, str_of(p, "name"));
        query.string(6, str_of(p, "type"));
        query.boolean(20, p.get("uniqueItems") == Some(&Value::Bool(true)));
        let mut non_body = Message::default();
        non_body.message(3, query);
        let mut parameter = Message::default();
        parameter.message(2, non_body);
        let mut item = Message::default();
        item.message(1, parameter);
        m.message(8, item);
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut rs = Message::default();
        for (code, r) in responses {
            let mut response = Message::default();
            response.string(1, str_of(r, "description"));
            if let Some(s) = r.get("schema") {
                let mut item = Message::default();
                item.message(1, schema(s));
                response.message(2, item);
            }
            let mut value = Message::default();
            value.message(1, response);
            let mut named = Message::default();
            named.string(1, code);
            named.message(2, value);
            rs.message(1, named);
        }
        m.message(9, rs);
    }
    m.extensions(13, op);
    m
}

/// Encodes a Swagger 2.0 document as an `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut d = Message::default();
    d.string(1, str_of(doc, "swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = Message::default();
        i.string(1, str_of(info, "title"));
        i.string(2, str_of(info, "version"));
        d.message(2, i);
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        let mut ps = Message::default();
        for (path, item) in paths {
            let mut pi = Message::default();
            for (field, method) in [
                (2, "get"),
                (3, "put"),
                (4, "post"),
                (5, "delete"),
                (8, "patch"),
            ] {
                if let Some(op) = item.get(method) {
                    pi.message(field, operation(op));
                }
            }
            let mut named = Message::default();
            named.string(1, path);
            named.message(2, pi);
            ps.message(2, named);
        }
        d.message(8, ps);
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        let mut ds = Message::default();
        for (name, s) in defs {
            let mut named = Message::default();
            named.string(1, name);
            named.message(2, schema(s));
            ds.message(1, named);
        }
        d.message(9, ds);
    }
    d.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_where_gnostic_reads_them() {
        let doc = json!({"swagger": "2.0", "definitions": {"A": {"type": "object", "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "A"}]}}});
        let bytes = encode(&doc);
        // Document.swagger (1), then definitions (9) holding NamedSchema "A".
        assert_eq!(&bytes[..5], b"\x0a\x032.0");
        assert_eq!(bytes[5], 9 << 3 | 2);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("x-kubernetes-group-version-kind"));
        assert!(text.contains(r#"[{"group":"","kind":"A","version":"v1"}]"#));
        assert!(text.contains("object"));
    }
}
