//! API errors as Kubernetes `Status` objects: the code, reason and message that kubectl,
//! client-go and kube-rs read, with field causes for validation failures.

use serde_json::{Value, json};

/// One field-level reason a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    pub message: String,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl AsRef<str>) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value:?}: {}", detail.as_ref()),
            field: field.into(),
        }
    }

    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {}", detail.into()),
            field: field.into(),
        }
    }
}

/// What the error is about, as `Status.details`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    pub group: String,
    /// The resource (plural) for most errors, the Kind for `Invalid`, as kube-apiserver does.
    pub kind: String,
    pub causes: Vec<Cause>,
    pub retry_after_seconds: Option<u32>,
}

/// An error the API answers with: HTTP code, `Status.reason` and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel in `Result`s on every path, and most have no details.
    pub details: Option<Box<Details>>,
}

/// A group and resource, as errors name them (`configmaps`, `deployments.apps`).
#[derive(Clone, Copy, Debug)]
pub struct GroupResource<'a> {
    pub group: &'a str,
    pub resource: &'a str,
}

impl std::fmt::Display for GroupResource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, gr: GroupResource<'_>, name: &str) -> ApiError {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: gr.group.to_string(),
            kind: gr.resource.to_string(),
            ..Default::default()
        }));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> ApiError {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(403, "Forbidden", message)
    }

    pub fn not_found(gr: GroupResource<'_>, name: &str) -> ApiError {
        Self::new(404, "NotFound", format!("{gr} {name:?} not found")).about(gr, name)
    }

    /// A path that names no resource.
    pub fn no_route() -> ApiError {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn already_exists(gr: GroupResource<'_>, name: &str) -> ApiError {
        Self::new(
            409,
            "AlreadyExists",
            format!("{gr} {name:?} already exists"),
        )
        .about(gr, name)
    }

    pub fn conflict(gr: GroupResource<'_>, name: &str, why: impl std::fmt::Display) -> ApiError {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gr} {name:?}: {why}"),
        )
        .about(gr, name)
    }

    /// The object changed since the client read it.
    pub fn modified(gr: GroupResource<'_>, name: &str) -> ApiError {
        Self::conflict(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// Validation failed: 422 with one cause per field.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = match list.len() {
            1 => format!("{kind} {name:?} is invalid: {}", list[0]),
            _ => format!("{kind} {name:?} is invalid: [{}]", list.join(", ")),
        };
        ApiError {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(Box::new(Details {
                name: name.to_string(),
                group: group.to_string(),
                kind: kind.to_string(),
                causes,
                retry_after_seconds: None,
            })),
        }
    }

    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: u32) -> ApiError {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details = Some(Box::new(Details {
            retry_after_seconds: Some(retry_after_seconds),
            ..Default::default()
        }));
        e
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        Self::new(504, "Timeout", message)
    }

    /// The `Status` object, as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            for (k, v) in [("name", &d.name), ("group", &d.group), ("kind", &d.kind)] {
                if !v.is_empty() {
                    details.insert(k.into(), json!(v));
                }
            }
            if !d.causes.is_empty() {
                let causes: Vec<Value> = d
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            if let Some(s) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), json!(s));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The `Status` a successful delete of a collection or an object without a body returns.
pub fn success_status(details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    });
    if let Some(d) = details {
        status["details"] = d;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const CM: GroupResource<'static> = GroupResource {
        group: "",
        resource: "configmaps",
    };

    #[test]
    fn statuses_read_as_kube_apiserver_writes_them() {
        let s = ApiError::not_found(CM, "a").to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "configmaps \"a\" not found");
        assert_eq!(s["details"]["kind"], "configmaps");
        let apps = GroupResource {
            group: "apps",
            resource: "deployments",
        };
        let s = ApiError::modified(apps, "web").to_status();
        assert_eq!(s["code"], 409);
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .starts_with("Operation cannot be fulfilled on deployments.apps \"web\"")
        );
        let s = ApiError::invalid(
            "ConfigMap",
            "",
            "A",
            vec![Cause::invalid("metadata.name", "A", "bad")],
        )
        .to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "ConfigMap \"A\" is invalid: metadata.name: Invalid value: \"A\": bad"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    }
}
