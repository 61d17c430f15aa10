//! The cluster-selector annotation (spec §5): a JSON list of requirements on the labels of
//! Cluster objects, all of which must hold. Invalid input is an error: the object then goes
//! nowhere and stays where it is.

use std::collections::BTreeMap;

use serde_json::Value;

pub const ANNOTATION: &str = "federation.alpha.kubernetes.io/cluster-selector";

#[derive(Debug, PartialEq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, PartialEq)]
pub struct Selector(Vec<(String, Op)>);

fn one(values: &[String], op: &str) -> Result<String, String> {
    match values {
        [v] => Ok(v.clone()),
        _ => Err(format!("operator {op:?} takes exactly one value")),
    }
}

fn number(values: &[String], op: &str) -> Result<i64, String> {
    let v = one(values, op)?;
    v.parse()
        .map_err(|_| format!("operator {op:?} takes an integer, not {v:?}"))
}

impl Selector {
    /// The selector of an object's annotations; `None` selects every cluster.
    pub fn of(annotations: Option<&BTreeMap<String, String>>) -> Result<Option<Selector>, String> {
        match annotations.and_then(|a| a.get(ANNOTATION)) {
            None => Ok(None),
            Some(text) => Selector::parse(text).map(Some),
        }
    }

    pub fn parse(text: &str) -> Result<Selector, String> {
        let list: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| format!("the {ANNOTATION} annotation is not a JSON list: {e}"))?;
        let mut requirements = Vec::new();
        for r in &list {
            let key = r["key"].as_str().unwrap_or("").to_string();
            if key.is_empty() {
                return Err("a requirement has no key".into());
            }
            let values: Vec<String> = r["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let op_text = r["operator"].as_str().unwrap_or("");
            let op = match op_text {
                "In" | "in" | "NotIn" | "notin" if values.is_empty() => {
                    return Err(format!("operator {op_text:?} needs values"));
                }
                "In" | "in" => Op::In(values),
                "NotIn" | "notin" => Op::NotIn(values),
                "Exists" | "exists" | "DoesNotExist" | "!" if !values.is_empty() => {
                    return Err(format!("operator {op_text:?} takes no values"));
                }
                "Exists" | "exists" => Op::Exists,
                "DoesNotExist" | "!" => Op::DoesNotExist,
                "=" | "==" => Op::Equals(one(&values, op_text)?),
                "!=" => Op::NotEquals(one(&values, op_text)?),
                "Gt" | "gt" | ">" => Op::Gt(number(&values, op_text)?),
                "Lt" | "lt" | "<" => Op::Lt(number(&values, op_text)?),
                other => return Err(format!("{other:?} is not a cluster-selector operator")),
            };
            requirements.push((key, op));
        }
        Ok(Selector(requirements))
    }

    /// Whether a cluster with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(key, op)| {
            let v = labels.get(key);
            let n = v.and_then(|v| v.parse::<i64>().ok());
            match op {
                Op::In(set) => v.is_some_and(|v| set.contains(v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Equals(want) => v == Some(want),
                Op::NotEquals(want) => v != Some(want),
                Op::Gt(want) => n.is_some_and(|n| n > *want),
                Op::Lt(want) => n.is_some_and(|n| n < *want),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_and_alias() {
        let pci = labels(&[("pci", "true"), ("tier", "3")]);
        let none = labels(&[]);
        #[rustfmt::skip] // one case a line reads as a table
        let cases: &[(&str, bool, bool)] = &[
            (r#"[{"key":"pci","operator":"In","values":["true"]}]"#, true, false),
            (r#"[{"key":"pci","operator":"in","values":["true"]}]"#, true, false),
            (r#"[{"key":"pci","operator":"NotIn","values":["true"]}]"#, false, true),
            (r#"[{"key":"pci","operator":"notin","values":["x"]}]"#, true, true),
            (r#"[{"key":"pci","operator":"Exists"}]"#, true, false),
            (r#"[{"key":"pci","operator":"exists"}]"#, true, false),
            (r#"[{"key":"pci","operator":"DoesNotExist"}]"#, false, true),
            (r#"[{"key":"pci","operator":"!"}]"#, false, true),
            (r#"[{"key":"pci","operator":"=","values":["true"]}]"#, true, false),
            (r#"[{"key":"pci","operator":"==","values":["true"]}]"#, true, false),
            (r#"[{"key":"pci","operator":"!=","values":["true"]}]"#, false, true),
            (r#"[{"key":"tier","operator":"Gt","values":["2"]}]"#, true, false),
            (r#"[{"key":"tier","operator":">","values":["3"]}]"#, false, false),
            (r#"[{"key":"tier","operator":"lt","values":["4"]}]"#, true, false),
            (r#"[{"key":"tier","operator":"<","values":["3"]}]"#, false, false),
            (r#"[{"key":"pci","operator":"In","values":["true"]},{"key":"tier","operator":"Gt","values":["5"]}]"#, false, false),
        ];
        for (text, on_pci, on_none) in cases {
            let s = Selector::parse(text).unwrap();
            assert_eq!(s.matches(&pci), *on_pci, "{text}");
            assert_eq!(s.matches(&none), *on_none, "{text}");
        }
        for bad in [
            "not json",
            r#"[{"key":"pci","operator":"Near","values":["x"]}]"#,
            r#"[{"key":"pci","operator":"In"}]"#,
            r#"[{"key":"pci","operator":"Exists","values":["x"]}]"#,
            r#"[{"key":"tier","operator":"Gt","values":["x"]}]"#,
            r#"[{"key":"tier","operator":"=","values":["a","b"]}]"#,
            r#"[{"operator":"Exists"}]"#,
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
