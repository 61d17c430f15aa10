//! Decoding Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) into the JSON
//! form the server works with. kubectl 1.32 and later send typed objects this way.
//!
//! The body is the `k8s\0` magic and a `runtime.Unknown` envelope naming the apiVersion and
//! kind, around the object's own message. Messages are decoded by a schema table,
//! `schema.json`, generated from the k8s-pb crate's sources by
//! `tools/gen_protobuf_schema.py`: field tags, JSON names and types.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

const MAGIC: &[u8] = b"k8s\0";

/// Deeper messages are refused: some types contain themselves (JSONSchemaProps), and a
/// hostile body must not exhaust the stack. Kubernetes objects nest far less.
const MAX_DEPTH: usize = 64;

#[derive(Deserialize)]
struct Schema {
    messages: HashMap<String, Vec<(u32, String, String, bool)>>,
}

/// A message's fields by tag: (JSON name, type, repeated).
type Fields = HashMap<u32, (String, String, bool)>;

fn schema() -> &'static HashMap<String, Fields> {
    static SCHEMA: OnceLock<HashMap<String, Fields>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let raw: Schema = serde_json::from_str(include_str!("schema.json"))
            .expect("the generated protobuf schema parses");
        raw.messages
            .into_iter()
            .map(|(name, fields)| {
                let by_tag = fields
                    .into_iter()
                    .map(|(tag, json, ty, repeated)| (tag, (json, ty, repeated)))
                    .collect();
                (name, by_tag)
            })
            .collect()
    })
}

/// The schema module of an API group: `apps` → `api.apps`, `networking.k8s.io` →
/// `api.networking`, the core group → `api.core`.
fn module(group: &str) -> String {
    match group {
        "" => "api.core".into(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".into(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".into(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    }
}

/// Decodes a protobuf-encoded object to its JSON form, with `apiVersion` and `kind`.
pub fn decode_object(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf body (no k8s magic)")?;
    let unknown = decode_message(envelope, "apimachinery.pkg.runtime.Unknown", 0)?;
    let api_version = unknown
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = unknown
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let raw = unknown
        .get("Raw")
        .and_then(Value::as_str)
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let message = format!("{}.{version}.{kind}", module(group));
    let mut object = decode_message(&raw, &message, 0)?;
    let obj = object
        .as_object_mut()
        .ok_or("the object is not a message")?;
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(object)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or("truncated field")?;
        self.buf = rest;
        Ok(head)
    }
}

/// One field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn decode_message(buf: &[u8], message: &str, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("objects nest more than {MAX_DEPTH} levels deep"));
    }
    let fields = schema()
        .get(message)
        .ok_or_else(|| format!("unknown protobuf message {message}"))?;
    let mut out = Map::new();
    let mut r = Reader { buf };
    while !r.buf.is_empty() {
        let key = r.varint()?;
        let (tag, wire_type) = ((key >> 3) as u32, key & 7);
        let wire = match wire_type {
            0 => Wire::Varint(r.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let len = r.varint()? as usize;
                Wire::Bytes(r.take(len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"))),
            t => return Err(format!("unsupported wire type {t} in {message}")),
        };
        // Fields this build does not know are skipped, as protobuf decoders do.
        let Some((json, ty, repeated)) = fields.get(&tag) else {
            continue;
        };
        if let Some(value_type) = ty.strip_prefix("map:") {
            let Wire::Bytes(entry) = wire else {
                return Err(format!(
                    "{message}.{json}: a map entry must be length-delimited"
                ));
            };
            let (k, v) = map_entry(entry, value_type, depth)?;
            let map = out
                .entry(json.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(m) = map.as_object_mut() {
                m.insert(k, v);
            }
            continue;
        }
        let values = scalar_or_message(wire, ty, *repeated, depth)?;
        if *repeated {
            let list = out
                .entry(json.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(a) = list.as_array_mut() {
                a.extend(values);
            }
        } else if let Some(v) = values.into_iter().next_back() {
            match v {
                // Empty strings and zero times are what Go's encoder writes for unset
                // non-pointer fields; JSON omits them.
                Value::Null => {}
                Value::String(s) if s.is_empty() => {}
                v => {
                    out.insert(json.clone(), v);
                }
            }
        }
    }
    Ok(special(message, Value::Object(out)))
}

/// Values of one field occurrence: several for a packed repeated scalar.
fn scalar_or_message(
    wire: Wire<'_>,
    ty: &str,
    repeated: bool,
    depth: usize,
) -> Result<Vec<Value>, String> {
    let one = |v: Value| Ok(vec![v]);
    match (ty, wire) {
        ("string", Wire::Bytes(b)) => one(Value::String(
            String::from_utf8(b.to_vec()).map_err(|e| e.to_string())?,
        )),
        ("bytes", Wire::Bytes(b)) => one(Value::String(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        ("bool", Wire::Varint(v)) => one(Value::Bool(v != 0)),
        ("int32", Wire::Varint(v)) => one(Value::from(v as i64 as i32)),
        ("int64", Wire::Varint(v)) => one(Value::from(v as i64)),
        ("double", Wire::Fixed64(v)) => {
            one(serde_json::Number::from_f64(f64::from_bits(v)).map_or(Value::Null, Value::Number))
        }
        ("float", Wire::Fixed32(v)) => {
            one(serde_json::Number::from_f64(f64::from(f32::from_bits(v)))
                .map_or(Value::Null, Value::Number))
        }
        (t, Wire::Bytes(b)) if t.starts_with("message:") => {
            one(decode_message(b, &t["message:".len()..], depth + 1)?)
        }
        // A packed repeated scalar: every value in one length-delimited field.
        (t, Wire::Bytes(b)) if repeated => {
            let mut r = Reader { buf: b };
            let mut values = Vec::new();
            while !r.buf.is_empty() {
                let wire = match t {
                    "double" => {
                        Wire::Fixed64(u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes")))
                    }
                    _ => Wire::Varint(r.varint()?),
                };
                values.extend(scalar_or_message(wire, t, false, depth)?);
            }
            Ok(values)
        }
        (t, _) => Err(format!("field of type {t} has the wrong wire type")),
    }
}

fn map_entry(entry: &[u8], value_type: &str, depth: usize) -> Result<(String, Value), String> {
    let mut r = Reader { buf: entry };
    let (mut key, mut value) = (String::new(), Value::Null);
    while !r.buf.is_empty() {
        let tag = r.varint()?;
        if tag & 7 != 2 {
            return Err("map entries hold length-delimited keys and values".into());
        }
        let len = r.varint()? as usize;
        let bytes = r.take(len)?;
        match tag >> 3 {
            1 => key = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?,
            2 => {
                value = match value_type {
                    "string" => {
                        Value::String(String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?)
                    }
                    "bytes" => {
                        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                    t => decode_message(bytes, t.strip_prefix("message:").unwrap_or(t), depth + 1)?,
                }
            }
            _ => {}
        }
    }
    if value.is_null() {
        value = match value_type {
            "string" | "bytes" => Value::String(String::new()),
            _ => Value::Object(Map::new()),
        };
    }
    Ok((key, value))
}

/// Messages whose JSON form is not an object of their fields.
fn special(message: &str, decoded: Value) -> Value {
    let field = |name: &str| decoded.get(name).cloned();
    match message {
        "apimachinery.pkg.api.resource.Quantity" => field("string").unwrap_or(Value::Null),
        "apimachinery.pkg.util.intstr.IntOrString" => {
            if decoded.get("type").and_then(Value::as_i64) == Some(1) {
                field("strVal").unwrap_or(Value::String(String::new()))
            } else {
                field("intVal").unwrap_or(Value::from(0))
            }
        }
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let seconds = decoded.get("seconds").and_then(Value::as_i64);
            let nanos = decoded.get("nanos").and_then(Value::as_i64).unwrap_or(0);
            match seconds {
                // An unset time is encoded as an empty message.
                None if nanos == 0 => Value::Null,
                s => {
                    let t = jiff::Timestamp::new(s.unwrap_or(0), nanos as i32)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                    let format = if message.ends_with("MicroTime") {
                        "%Y-%m-%dT%H:%M:%S%.6fZ"
                    } else {
                        "%Y-%m-%dT%H:%M:%SZ"
                    };
                    Value::String(t.strftime(format).to_string())
                }
            }
        }
        // `generation` is a plain int64 that Go's encoder always writes; JSON omits 0.
        "apimachinery.pkg.apis.meta.v1.ObjectMeta" => {
            let mut decoded = decoded;
            if let Some(m) = decoded.as_object_mut()
                && m.get("generation").and_then(Value::as_i64) == Some(0)
            {
                m.remove("generation");
            }
            decoded
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let nanos = decoded.get("duration").and_then(Value::as_i64).unwrap_or(0);
            Value::String(go_duration(nanos))
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            decoded
                .get("Raw")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|raw| serde_json::from_slice(&raw).ok())
                .unwrap_or(Value::Null)
        }
        _ => decoded,
    }
}

/// A duration as Go prints it (`1h0m0s`, `1.5s`).
fn go_duration(nanos: i64) -> String {
    let secs = nanos as f64 / 1e9;
    let (h, m) = ((secs / 3600.0).floor(), ((secs % 3600.0) / 60.0).floor());
    let s = secs % 60.0;
    match (h > 0.0, m > 0.0) {
        (true, _) => format!("{h}h{m}m{s}s"),
        (false, true) => format!("{m}m{s}s"),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// Encodes a length-delimited field.
    fn ld(tag: u32, bytes: &[u8]) -> Vec<u8> {
        [
            varint(((tag << 3) | 2) as usize),
            varint(bytes.len()),
            bytes.to_vec(),
        ]
        .concat()
    }

    #[test]
    fn namespace_envelope() {
        // ObjectMeta{name: "prod", labels: {a: b}, creationTimestamp: <unset>, generation: 0}
        let mut meta = ld(1, b"prod");
        meta.extend(ld(11, &[ld(1, b"a"), ld(2, b"b")].concat()));
        meta.extend(ld(8, &[]));
        meta.extend([varint(7 << 3), varint(0)].concat());
        let ns = ld(1, &meta);
        let type_meta = [ld(1, b"v1"), ld(2, b"Namespace")].concat();
        let unknown = [ld(1, &type_meta), ld(2, &ns)].concat();
        let body = [MAGIC, &unknown].concat();
        let object = decode_object(&body).unwrap();
        assert_eq!(
            object,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "prod", "labels": {"a": "b"}},
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        // JsonSchemaProps.not (tag 28) holds another JsonSchemaProps, 200 levels deep.
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..200 {
            inner = ld(28, &inner);
        }
        let type_meta = [ld(1, b"apiextensions.k8s.io/v1"), ld(2, b"JsonSchemaProps")].concat();
        let raw = ld(2, &inner);
        let body = [MAGIC, &ld(1, &type_meta), &raw].concat();
        let e = decode_object(&body).unwrap_err();
        assert!(e.contains("nest"), "{e}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_object(b"{}").is_err());
        assert!(decode_object(b"k8s\0\x0a\xff").is_err());
    }
}
