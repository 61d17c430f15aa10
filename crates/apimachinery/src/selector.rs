//! Label and field selectors, in the syntax of `?labelSelector=` and `?fieldSelector=`.

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            '(' | ')' | ',' | '>' | '<' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    '>' => Token::Gt,
                    _ => Token::Lt,
                });
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                out.push(Token::Eq);
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::NotEq);
                } else {
                    out.push(Token::Not);
                }
            }
            c if c.is_ascii_alphanumeric() || "-_./".contains(c) => {
                let mut ident = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || "-_./".contains(c) {
                        ident.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Ident(ident));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let tokens = tokenize(s)?;
        let mut it = tokens.into_iter().peekable();
        let mut requirements = Vec::new();
        let ident = |t: Option<Token>, what: &str| match t {
            Some(Token::Ident(s)) => Ok(s),
            other => Err(format!("expected {what}, found {other:?}")),
        };
        while it.peek().is_some() {
            let req = if it.peek() == Some(&Token::Not) {
                it.next();
                Requirement {
                    key: ident(it.next(), "a key after '!'")?,
                    op: Op::NotExists,
                }
            } else {
                let key = ident(it.next(), "a key")?;
                let op = match it.peek().cloned() {
                    None | Some(Token::Comma) => Op::Exists,
                    Some(Token::Eq) => {
                        it.next();
                        Op::Eq(value(&mut it)?)
                    }
                    Some(Token::NotEq) => {
                        it.next();
                        Op::NotEq(value(&mut it)?)
                    }
                    Some(Token::Gt) | Some(Token::Lt) => {
                        let gt = it.next() == Some(Token::Gt);
                        let v = ident(it.next(), "an integer")?;
                        let n: i64 = v.parse().map_err(|_| format!("{v:?} is not an integer"))?;
                        if gt { Op::Gt(n) } else { Op::Lt(n) }
                    }
                    Some(Token::Ident(word)) if word == "in" || word == "notin" => {
                        it.next();
                        let set = set(&mut it)?;
                        if word == "in" {
                            Op::In(set)
                        } else {
                            Op::NotIn(set)
                        }
                    }
                    Some(other) => return Err(format!("unexpected {other:?} after key {key:?}")),
                };
                Requirement { key, op }
            };
            requirements.push(req);
            match it.next() {
                None => break,
                Some(Token::Comma) if it.peek().is_some() => {}
                other => {
                    return Err(format!(
                        "expected ',' between requirements, found {other:?}"
                    ));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// The object form of workloads and services (`matchLabels`, `matchExpressions` with
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`); a Service's plain map of labels too.
    pub fn from_object(selector: &Value) -> Result<LabelSelector, String> {
        let Some(object) = selector.as_object() else {
            return Ok(LabelSelector::default());
        };
        let as_labels = |m: &Map<String, Value>| -> Vec<Requirement> {
            m.iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::Eq(v.as_str().unwrap_or("").to_string()),
                })
                .collect()
        };
        if !object.contains_key("matchLabels") && !object.contains_key("matchExpressions") {
            return Ok(LabelSelector {
                requirements: as_labels(object),
            });
        }
        let mut requirements = object
            .get("matchLabels")
            .and_then(Value::as_object)
            .map(as_labels)
            .unwrap_or_default();
        for e in object
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let op = match e.get("operator").and_then(Value::as_str) {
                Some("In") => Op::In(values),
                Some("NotIn") => Op::NotIn(values),
                Some("Exists") => Op::Exists,
                Some("DoesNotExist") => Op::NotExists,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            requirements.push(Requirement { key, op });
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether labels (a JSON object of strings, or none) satisfy every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements
            .iter()
            .all(|r| match (&r.op, get(&r.key)) {
                (Op::Exists, v) => v.is_some(),
                (Op::NotExists, v) => v.is_none(),
                (Op::Eq(want), v) => v == Some(want.as_str()),
                (Op::NotEq(want), v) => v != Some(want.as_str()),
                (Op::In(set), v) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                (Op::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                (Op::Gt(n), v) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                (Op::Lt(n), v) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            })
    }
}

/// The selector in the syntax of `?labelSelector=` (what `metav1.FormatLabelSelector`
/// writes), so that a workload's selector can select its Pods in a list request.
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let k = &r.key;
            match &r.op {
                Op::Exists => write!(f, "{k}")?,
                Op::NotExists => write!(f, "!{k}")?,
                Op::Eq(v) => write!(f, "{k}={v}")?,
                Op::NotEq(v) => write!(f, "{k}!={v}")?,
                Op::In(vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Op::NotIn(vs) => write!(f, "{k} notin ({})", vs.join(","))?,
                Op::Gt(n) => write!(f, "{k}>{n}")?,
                Op::Lt(n) => write!(f, "{k}<{n}")?,
            }
        }
        Ok(())
    }
}

fn value(it: &mut std::iter::Peekable<std::vec::IntoIter<Token>>) -> Result<String, String> {
    match it.peek() {
        // `key=` selects an empty value.
        None | Some(Token::Comma) => Ok(String::new()),
        Some(Token::Ident(_)) => match it.next() {
            Some(Token::Ident(s)) => Ok(s),
            _ => unreachable!("peeked an identifier"),
        },
        Some(other) => Err(format!("expected a value, found {other:?}")),
    }
}

fn set(it: &mut std::iter::Peekable<std::vec::IntoIter<Token>>) -> Result<Vec<String>, String> {
    if it.next() != Some(Token::Open) {
        return Err("expected '(' to open a set".into());
    }
    let mut values = Vec::new();
    loop {
        match it.next() {
            Some(Token::Ident(v)) => values.push(v),
            Some(Token::Close) if values.is_empty() => return Ok(values),
            other => return Err(format!("expected a set value, found {other:?}")),
        }
        match it.next() {
            Some(Token::Comma) => {}
            Some(Token::Close) => return Ok(values),
            other => return Err(format!("expected ',' or ')' in a set, found {other:?}")),
        }
    }
}

/// A parsed field selector: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the selector, accepting only the fields `supported` names.
    pub fn parse(s: &str, supported: &[&str]) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in split_unescaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {part:?}"));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, unescape(value)));
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether `object`'s fields satisfy every term; a missing field reads as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, want)| {
            let mut v = object;
            for part in field.split('.') {
                v = v.get(part).unwrap_or(&Value::Null);
            }
            let got = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) == *equal
        })
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            parts.last_mut().expect("non-empty").extend(['\\', c]);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("non-empty").push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_selectors() {
        let labels = |v: Value| v.as_object().cloned();
        let s = LabelSelector::from_object(&serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "canary", "operator": "DoesNotExist"}],
        }))
        .unwrap();
        assert!(s.matches(labels(serde_json::json!({"app": "web", "tier": "b"})).as_ref()));
        assert!(!s.matches(labels(serde_json::json!({"app": "web", "tier": "c"})).as_ref()));
        assert!(!s.matches(
            labels(serde_json::json!({"app": "web", "tier": "a", "canary": "1"})).as_ref()
        ));
        // Written back as a query selects the same.
        assert_eq!(s.to_string(), "app=web,tier in (a,b),!canary");
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
        let plain = LabelSelector::from_object(&serde_json::json!({"run": "nginx"})).unwrap();
        assert!(plain.matches(labels(serde_json::json!({"run": "nginx", "x": "y"})).as_ref()));
        assert!(!plain.matches(None));
        assert!(
            LabelSelector::from_object(
                &serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})
            )
            .is_err()
        );
    }
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_selectors() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app",
            "!missing",
            "app in (web, db)",
            "tier notin (back)",
            "missing notin (x)",
            "app=web,tier=front",
            "n>4",
            "n<6",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        let no = [
            "app=db",
            "!app",
            "app in (db)",
            "missing",
            "n>5",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        for bad in ["app in web", "=x", "a b", "app in (a,", "a,", "a=(b)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a,b", "namespace": "ns"}});
        let f = &["metadata.name", "metadata.namespace"];
        assert!(
            FieldSelector::parse("metadata.name=a\\,b", f)
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("metadata.namespace!=x", f)
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace==x", f)
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.x=1", f).is_err());
    }
}
