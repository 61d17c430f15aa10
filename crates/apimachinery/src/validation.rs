//! Name and label validation with the messages kube-apiserver gives.

use serde_json::Value;

use crate::status::Cause;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Which rule an object's name follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// Most objects (ConfigMap, Deployment, ...).
    Dns1123Subdomain,
    /// Namespaces.
    Dns1123Label,
    /// Services and Clusters.
    Dns1035Label,
    /// RBAC roles and bindings: anything usable as one URL path segment.
    PathSegment,
}

fn label_chars_ok(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && if first_alpha {
            b[0].is_ascii_lowercase()
        } else {
            alnum(b[0])
        }
        && alnum(b[b.len() - 1])
        && b.iter().all(|c| alnum(*c) || *c == b'-')
}

/// Errors of `name` under `rule`, empty if it is valid.
pub fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if rule == NameRule::PathSegment {
        if name == "." || name == ".." {
            errs.push(format!("may not be '{name}'"));
        }
        for bad in ["/", "%"] {
            if name.contains(bad) {
                errs.push(format!("may not contain '{bad}'"));
            }
        }
        return errs;
    }
    let (max, ok, msg) = match rule {
        NameRule::PathSegment => unreachable!("handled above"),
        NameRule::Dns1123Label => (63, label_chars_ok(name, false), DNS1123_LABEL_MSG),
        NameRule::Dns1035Label => (63, label_chars_ok(name, true), DNS1035_LABEL_MSG),
        NameRule::Dns1123Subdomain => (
            253,
            name.split('.').all(|part| label_chars_ok(part, false)),
            DNS1123_SUBDOMAIN_MSG,
        ),
    };
    if name.len() > max {
        errs.push(format!("must be no more than {max} characters"));
    }
    if !ok {
        errs.push(msg.to_string());
    }
    errs
}

/// A qualified name, as label and annotation keys are: `[prefix/]name`.
fn qualified_name_errors(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                name_errors(NameRule::Dns1123Subdomain, p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63
        || !alnum(b[0])
        || !alnum(b[b.len() - 1])
        || !b.iter().all(|c| alnum(*c) || b"-_.".contains(c))
    {
        errs.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with at most 63 characters".into());
    }
    errs
}

fn label_value_errors(v: &str) -> Vec<String> {
    let b = v.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    if v.is_empty()
        || (v.len() <= 63
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|c| alnum(*c) || b"-_.".contains(c)))
    {
        Vec::new()
    } else {
        vec!["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?') with at most 63 characters".into()]
    }
}

/// Validates an object's metadata: name (or generateName), namespace presence, labels and
/// annotations. `namespaced` says whether the object must have a namespace.
pub fn validate_metadata(meta: &Value, rule: NameRule, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else {
        for e in name_errors(rule, name) {
            causes.push(Cause::invalid("metadata.name", name, e));
        }
    }
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    if namespaced && ns.is_empty() {
        causes.push(Cause::required("metadata.namespace"));
    } else if !namespaced && !ns.is_empty() {
        causes.push(Cause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for e in qualified_name_errors(k) {
                causes.push(Cause::invalid("metadata.labels", k, e));
            }
            match v.as_str() {
                Some(v) => {
                    for e in label_value_errors(v) {
                        causes.push(Cause::invalid("metadata.labels", v, e));
                    }
                }
                None => causes.push(Cause::invalid(
                    format!("metadata.labels.{k}"),
                    &v.to_string(),
                    "must be a string",
                )),
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in annotations {
            for e in qualified_name_errors(&k.to_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", k, e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(name_errors(NameRule::Dns1123Subdomain, "web.example-1").is_empty());
        assert!(!name_errors(NameRule::Dns1123Subdomain, "Web").is_empty());
        assert!(!name_errors(NameRule::Dns1123Subdomain, "a..b").is_empty());
        assert!(name_errors(NameRule::Dns1123Label, "123-abc").is_empty());
        assert!(!name_errors(NameRule::Dns1123Label, "a.b").is_empty());
        assert!(!name_errors(NameRule::Dns1035Label, "1abc").is_empty());
        assert!(name_errors(NameRule::PathSegment, "system:controller:x").is_empty());
        assert!(!name_errors(NameRule::PathSegment, "a/b").is_empty());
        assert!(!name_errors(NameRule::PathSegment, "..").is_empty());
        assert!(name_errors(NameRule::Dns1035Label, "gondor").is_empty());
        assert_eq!(
            name_errors(NameRule::Dns1123Label, &"a".repeat(64)),
            ["must be no more than 63 characters"]
        );
    }

    #[test]
    fn metadata() {
        let ok = json!({"name": "a", "namespace": "ns", "labels": {"app.kubernetes.io/name": "x"}});
        assert!(validate_metadata(&ok, NameRule::Dns1123Subdomain, true).is_empty());
        let bad = json!({"name": "A_", "labels": {"-x": "y y"}});
        let causes = validate_metadata(&bad, NameRule::Dns1123Subdomain, true);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "metadata.namespace",
                "metadata.labels",
                "metadata.labels"
            ]
        );
    }
}
