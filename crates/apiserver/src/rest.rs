//! The generic REST verbs over any registered resource: get, list, watch, create, update,
//! patch, delete and deletecollection, with Kubernetes semantics for resource versions,
//! preconditions and finalizers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use fellowship_apimachinery::selector::{FieldSelector, LabelSelector};
use fellowship_apimachinery::status::success_status;
use fellowship_apimachinery::validation::validate_metadata;
use fellowship_apimachinery::{ApiError, ResourceKind, meta};
use fellowship_storage::{Error as StoreError, KeyValue, ListOptions, Revision, Store};
use serde_json::{Value, json};

use crate::admission;
use crate::objects::{self, check_type, decode, encode, present};
use crate::reply::{Item, Reply};
use crate::schemas::{FieldValidation, Schemas};
use crate::validate;
use fellowship_apimachinery::managed;

/// What a resource path names.
#[derive(Clone)]
pub struct Target {
    pub kind: Arc<ResourceKind>,
    pub namespace: String,
    pub name: String,
    pub subresource: Option<String>,
}

pub type Query = HashMap<String, String>;

/// The REST layer over one store.
pub struct Rest {
    pub store: Arc<dyn Store>,
    /// The namespaces resource, which NamespaceLifecycle admission reads.
    pub namespaces: Arc<ResourceKind>,
    /// How long events live (`--event-ttl`).
    pub event_ttl: std::time::Duration,
    pub admission: Arc<admission::Chain>,
    pub schemas: Arc<Schemas>,
    /// Whether a garbage collector runs beside the server (the local member clusters): then
    /// a delete with `propagationPolicy=Orphan` adds the `orphan` finalizer, which the
    /// collector removes once the dependents are released, as in kube-apiserver.
    pub garbage_collector: bool,
}

impl Rest {
    /// The time-to-live of an object of `kind`: events expire, nothing else does.
    fn ttl(&self, kind: &ResourceKind) -> Option<std::time::Duration> {
        (kind.group.is_empty() && kind.plural == "events").then_some(self.event_ttl)
    }

    /// Drops the fields the kind does not have. `fieldValidation=Strict` refuses the request
    /// instead; `Warn` (the default) returns warnings naming them.
    fn unknown_fields(
        &self,
        kind: &ResourceKind,
        query: &Query,
        object: &mut Value,
    ) -> Result<Vec<String>, ApiError> {
        let mode = FieldValidation::parse(query.get("fieldValidation").map(String::as_str))?;
        let unknown: Vec<String> = self
            .schemas
            .prune_unknown(kind, object)
            .into_iter()
            .map(|path| format!("unknown field {path:?}"))
            .collect();
        match mode {
            _ if unknown.is_empty() => Ok(unknown),
            FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "{0} in version {1:?} cannot be handled as a {0}: strict decoding error: {2}",
                kind.kind,
                kind.version,
                unknown.join(", ")
            ))),
            FieldValidation::Warn => Ok(unknown),
            FieldValidation::Ignore => Ok(Vec::new()),
        }
    }
}

fn store_error(e: StoreError, kind: &ResourceKind, name: &str) -> ApiError {
    match e {
        StoreError::NotFound { .. } => ApiError::not_found(kind.group_resource(), name),
        StoreError::AlreadyExists { .. } => ApiError::already_exists(kind.group_resource(), name),
        StoreError::Conflict { .. } => ApiError::modified(kind.group_resource(), name),
        StoreError::TooOld { requested, .. } => {
            ApiError::gone(format!("too old resource version: {requested}"))
        }
        StoreError::FutureRevision { requested, current } => ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        StoreError::InvalidContinue(m) => {
            ApiError::bad_request(format!("the provided continue parameter is invalid: {m}"))
        }
        StoreError::Unavailable(m) => ApiError::unavailable(m),
        other => ApiError::internal(other.to_string()),
    }
}

fn parse_rv(s: &str) -> Result<Revision, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

fn dry_run(query: &Query) -> Result<bool, ApiError> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: unsupported value {other:?}: supported values: \"All\""
        ))),
    }
}

impl Rest {
    pub async fn get(&self, t: &Target) -> Result<Reply, ApiError> {
        let kv = self.read(t).await?;
        Ok(Reply::object(StatusCode::OK, present(&kv, &t.kind)?))
    }

    async fn read(&self, t: &Target) -> Result<KeyValue, ApiError> {
        let key = t.kind.key(&t.namespace, &t.name);
        self.store
            .get(&key)
            .await
            .map_err(|e| store_error(e, &t.kind, &t.name))?
            .ok_or_else(|| ApiError::not_found(t.kind.group_resource(), &t.name))
    }

    /// Lists a collection. `table` says the client asked for a Table; otherwise, without
    /// selectors, stored objects are passed through unparsed (see `present_raw`).
    pub async fn list(&self, t: &Target, query: &Query, table: bool) -> Result<Reply, ApiError> {
        let kind = &t.kind;
        let (labels, fields) = selectors(kind, query)?;
        let filtered = !labels.is_empty() || !fields.is_empty();
        let raw = !table && !filtered;
        let limit: usize = match query.get("limit").map(String::as_str) {
            None | Some("") => 0,
            Some(l) => l
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        };
        let continue_token = query.get("continue").filter(|c| !c.is_empty()).cloned();
        let rv = query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let rv_match = query
            .get("resourceVersionMatch")
            .map(String::as_str)
            .unwrap_or("");
        if continue_token.is_some() && !rv.is_empty() && rv != "0" {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let revision = match (rv, rv_match) {
            ("", "") | ("0", "") | ("0", "NotOlderThan") => None,
            ("0", "Exact") => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
            ("", m) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: {m:?} is forbidden unless resourceVersion is provided"
                )));
            }
            (v, "Exact") => Some(parse_rv(v)?),
            (v, "NotOlderThan") | (v, "") => {
                let wanted = parse_rv(v)?;
                let current = self
                    .store
                    .current_revision()
                    .await
                    .map_err(|e| store_error(e, kind, ""))?;
                if wanted > current {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {wanted}, current: {current}"
                    )));
                }
                None
            }
            (_, m) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: unsupported value {m:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        };
        let prefix = kind.key(&t.namespace, "");
        let mut options = ListOptions {
            revision,
            limit: (limit > 0).then_some(limit),
            continue_token,
        };
        let mut items = Vec::new();
        // Selectors filter after the store's page: read on until the page is full.
        let (revision, next, remaining) = loop {
            let page = self
                .store
                .list(&prefix, options.clone())
                .await
                .map_err(|e| store_error(e, kind, ""))?;
            for kv in &page.items {
                if raw && let Some(bytes) = objects::present_raw(kv, kind) {
                    items.push(Item::Raw(bytes));
                    continue;
                }
                let object = present(kv, kind)?;
                if labels.matches(meta::labels(&object)) && fields.matches(&object) {
                    items.push(Item::Parsed(object));
                }
            }
            match page.continue_token {
                Some(token) if limit > 0 && items.len() < limit => {
                    options.continue_token = Some(token);
                    options.revision = None;
                    options.limit = Some(limit - items.len());
                }
                next => {
                    let remaining = if filtered { None } else { page.remaining };
                    break (page.revision, next, remaining);
                }
            }
        };
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if let Some(next) = next {
            metadata["continue"] = json!(next);
            if let Some(r) = remaining.filter(|r| *r > 0) {
                metadata["remainingItemCount"] = json!(r);
            }
        }
        Ok(Reply::list(kind, metadata, items))
    }

    pub async fn create(&self, t: &Target, query: &Query, body: &[u8]) -> Result<Reply, ApiError> {
        self.create_object(t, query, decode(body)?).await
    }

    /// [`Rest::create`] of an object already decoded (in-process writers).
    pub async fn create_object(
        &self,
        t: &Target,
        query: &Query,
        object: Value,
    ) -> Result<Reply, ApiError> {
        self.create_as(t, query, object, Ownership::Update).await
    }

    async fn create_as(
        &self,
        t: &Target,
        query: &Query,
        mut object: Value,
        ownership: Ownership,
    ) -> Result<Reply, ApiError> {
        let kind = &t.kind;
        check_type(&mut object, kind)?;
        let warnings = self.unknown_fields(kind, query, &mut object)?;
        let m = meta::metadata_mut(&mut object);
        if !kind.namespaced() {
            // A namespace on a cluster-scoped object is cleared, as kube-apiserver does.
            m.remove("namespace");
        } else {
            match m.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != t.namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(t.namespace));
                }
            }
        }
        if m.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && let Some(prefix) = m.get("generateName").and_then(Value::as_str)
        {
            let generated = meta::generated_name(prefix);
            m.insert("name".into(), json!(generated));
        }
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(field);
        }
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        if objects::has_generation(&object) {
            meta::metadata_mut(&mut object).insert("generation".into(), json!(1));
        }
        validate::prepare_create(kind, &mut object);
        if ownership == Ownership::Update {
            meta::metadata_mut(&mut object).remove("managedFields");
            managed::record_update(
                None,
                &mut object,
                field_manager(query),
                &kind.api_version(),
                &meta::now(),
            );
        }
        let name = meta::name(&object).to_string();
        self.admit(admission::Operation::Create, t, &mut object)
            .await?;
        if dry_run(query)? {
            return Ok(Reply::object(StatusCode::CREATED, object).warn(warnings));
        }
        let key = kind.key(&t.namespace, &name);
        let kv = self
            .store
            .create(&key, encode(kind, &object), self.ttl(kind))
            .await
            .map_err(|e| store_error(e, kind, &name))?;
        Ok(stored(StatusCode::CREATED, kind, object, &kv)?.warn(warnings))
    }

    /// Validates the object, runs the admission chain on it, and validates what admission
    /// made of it.
    async fn admit(
        &self,
        operation: admission::Operation,
        t: &Target,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        validate_object(&t.kind, object)?;
        let mut request = admission::Request {
            operation,
            kind: &t.kind,
            namespace: &t.namespace,
            object,
        };
        self.admission.admit(&*self.store, &mut request).await?;
        validate_object(&t.kind, object)
    }

    pub async fn update(&self, t: &Target, query: &Query, body: &[u8]) -> Result<Reply, ApiError> {
        self.update_object(t, query, decode(body)?).await
    }

    /// [`Rest::update`] of an object already decoded (in-process writers).
    pub async fn update_object(
        &self,
        t: &Target,
        query: &Query,
        mut object: Value,
    ) -> Result<Reply, ApiError> {
        check_type(&mut object, &t.kind)?;
        let body_name = meta::name(&object);
        if body_name != t.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                t.name
            )));
        }
        if t.kind.namespaced()
            && !meta::namespace(&object).is_empty()
            && meta::namespace(&object) != t.namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let precondition = meta::meta_str(&object, "resourceVersion").to_string();
        self.write(t, query, precondition, |_| Ok(object.clone()))
            .await
    }

    pub async fn patch(
        &self,
        t: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        if content_type(headers) == "application/apply-patch+yaml" {
            return self.server_side_apply(t, query, body).await;
        }
        let apply = patcher(headers, body)?;
        self.write(t, query, String::new(), apply).await
    }

    /// Server-side apply: the configuration's fields become the manager's, over the live
    /// object or as a new one; fields others set to other values conflict unless `force`.
    async fn server_side_apply(
        &self,
        t: &Target,
        query: &Query,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let kind = &t.kind;
        let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                vec![fellowship_apimachinery::Cause::required("fieldManager")],
            ));
        };
        let force = query.get("force").map(String::as_str) == Some("true");
        let mut config = decode(body)?;
        check_type(&mut config, kind)?;
        // Unknown fields go before ownership is computed: nobody owns what is not kept.
        let warnings = self.unknown_fields(kind, query, &mut config)?;
        let config_name = meta::name(&config);
        if config_name != t.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({config_name}) does not match the name on the URL ({})",
                t.name
            )));
        }
        let api_version = kind.api_version();
        let applied = |live: Option<&Value>| {
            managed::apply(live, &config, manager, &api_version, force, &meta::now())
                .map_err(|conflicts| apply_conflict(kind, &t.name, conflicts))
        };
        let main = Target {
            subresource: None,
            ..t.clone()
        };
        match self.read(&main).await {
            Err(e) if e.code == 404 && t.subresource.is_none() => {
                let object = applied(None)?;
                match self
                    .create_as(&main, query, object, Ownership::Applied)
                    .await
                {
                    // Another writer created it first: apply over theirs.
                    Err(e) if e.code == 409 => {}
                    other => return other.map(|r| r.warn(warnings)),
                }
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        self.write_as(
            t,
            query,
            String::new(),
            |current| applied(Some(current)),
            Ownership::Applied,
        )
        .await
        .map(|r| r.warn(warnings))
    }

    /// The `scale` subresource: an `autoscaling/v1` Scale view of `spec.replicas`.
    async fn scale(
        &self,
        method: &Method,
        t: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let main = Target {
            subresource: None,
            ..t.clone()
        };
        let current = present(&self.read(&main).await?, &t.kind)?;
        let desired = match *method {
            Method::GET => return Ok(Reply::object(StatusCode::OK, scale_of(&current))),
            Method::PUT => decode(body)?,
            Method::PATCH => patcher(headers, body)?(&scale_of(&current))?,
            ref m => {
                return Err(ApiError::method_not_allowed(format!(
                    "{m} is not supported on the scale subresource"
                )));
            }
        };
        let replicas = desired
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    &t.name,
                    vec![fellowship_apimachinery::Cause::invalid(
                        "spec.replicas",
                        &desired
                            .pointer("/spec/replicas")
                            .map(Value::to_string)
                            .unwrap_or_default(),
                        "must be a non-negative integer",
                    )],
                )
            })?;
        let precondition = meta::meta_str(&desired, "resourceVersion").to_string();
        let reply = self
            .write(&main, query, precondition, |object| {
                let mut next = object.clone();
                spec_mut(&mut next, t.kind.kind, &t.name)?
                    .insert("replicas".into(), json!(replicas));
                Ok(next)
            })
            .await?;
        match reply {
            Reply::Object {
                status,
                object,
                warnings,
                ..
            } => Ok(Reply::object(status, scale_of(&object)).warn(warnings)),
            other => Ok(other),
        }
    }

    /// Read-modify-write of one object: `change` turns the current object into the new one.
    /// With a `precondition` (the client's resourceVersion) a stale write is a 409; without, a
    /// race with another writer is retried on the fresh object.
    async fn write(
        &self,
        t: &Target,
        query: &Query,
        precondition: String,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Reply, ApiError> {
        self.write_as(t, query, precondition, change, Ownership::Update)
            .await
    }

    /// [`Rest::write`], saying how field ownership is recorded: as an update by the request's
    /// field manager, or as already done by a server-side apply.
    async fn write_as(
        &self,
        t: &Target,
        query: &Query,
        precondition: String,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
        ownership: Ownership,
    ) -> Result<Reply, ApiError> {
        let kind = &t.kind;
        loop {
            let kv = self.read(t).await?;
            let current = present(&kv, kind)?;
            if !precondition.is_empty() && precondition != kv.mod_revision.to_string() {
                return Err(ApiError::modified(kind.group_resource(), &t.name));
            }
            let mut object = change(&current)?;
            if !object.is_object() {
                return Err(ApiError::bad_request("the result must be a JSON object"));
            }
            // A resourceVersion in the result (a patch may carry one) is a precondition too.
            let asked = meta::meta_str(&object, "resourceVersion");
            if !asked.is_empty() && asked != kv.mod_revision.to_string() {
                return Err(ApiError::modified(kind.group_resource(), &t.name));
            }
            check_type(&mut object, kind)?;
            let warnings = self.unknown_fields(kind, query, &mut object)?;
            merge_server_fields(kind, t.subresource.as_deref(), &current, &mut object)?;
            // A status write keeps all but status from the stored object, managedFields
            // included, and status is no one's: there is nothing to record.
            if ownership == Ownership::Update && t.subresource.as_deref() != Some("status") {
                // managedFields are the server's: kept from the stored object, then updated.
                let owned = current.pointer("/metadata/managedFields").cloned();
                let m = meta::metadata_mut(&mut object);
                match owned {
                    Some(o) => m.insert("managedFields".into(), o),
                    None => m.remove("managedFields"),
                };
                managed::record_update(
                    Some(&current),
                    &mut object,
                    field_manager(query),
                    &kind.api_version(),
                    &meta::now(),
                );
            }
            self.admit(admission::Operation::Update, t, &mut object)
                .await?;
            if dry_run(query)? {
                return Ok(Reply::object(StatusCode::OK, object).warn(warnings));
            }
            let key = kind.key(&t.namespace, &t.name);
            let finalized = object.pointer("/metadata/deletionTimestamp").is_some()
                && meta::finalizers(&object).is_empty()
                && !namespace_finalizers(kind, &object);
            let result = if finalized {
                // The last finalizer is gone from an object being deleted: it goes now.
                self.store
                    .delete(&key, Some(kv.mod_revision))
                    .await
                    .map(|_| None)
            } else {
                self.store
                    .update(&key, encode(kind, &object), kv.mod_revision, self.ttl(kind))
                    .await
                    .map(Some)
            };
            match result {
                Ok(Some(kv)) => {
                    return Ok(stored(StatusCode::OK, kind, object, &kv)?.warn(warnings));
                }
                Ok(None) => return Ok(Reply::object(StatusCode::OK, object).warn(warnings)),
                Err(StoreError::Conflict { .. }) if precondition.is_empty() => continue,
                Err(e) => return Err(store_error(e, kind, &t.name)),
            }
        }
    }

    pub async fn delete(&self, t: &Target, query: &Query, body: &[u8]) -> Result<Reply, ApiError> {
        let kind = &t.kind;
        let options: Value = if body.is_empty() {
            json!({})
        } else {
            decode(body)?
        };
        let dry = dry_run(query)?
            || options
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        loop {
            let kv = self.read(t).await?;
            let current = present(&kv, kind)?;
            if let Some(pre) = options.get("preconditions") {
                let uid = meta::meta_str(&current, "uid");
                if let Some(want) = pre.get("uid").and_then(Value::as_str)
                    && want != uid
                {
                    return Err(ApiError::conflict(
                        kind.group_resource(),
                        &t.name,
                        format!(
                            "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                        ),
                    ));
                }
                if let Some(want) = pre.get("resourceVersion").and_then(Value::as_str)
                    && want != kv.mod_revision.to_string()
                {
                    return Err(ApiError::conflict(
                        kind.group_resource(),
                        &t.name,
                        format!(
                            "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                            kv.mod_revision
                        ),
                    ));
                }
            }
            let key = kind.key(&t.namespace, &t.name);
            let finalizers =
                finalizers_after_delete(&current, &options, query, self.garbage_collector)?;
            if !finalizers.is_empty() || namespace_finalizers(kind, &current) {
                // Finalizers hold the object: mark it deleted and leave it to them. A
                // namespace turns Terminating; the namespace finalizer empties it.
                let deleting = current.pointer("/metadata/deletionTimestamp").is_some();
                if dry || (deleting && finalizers == meta::finalizers(&current)) {
                    return Ok(Reply::object(StatusCode::OK, current));
                }
                let mut object = current.clone();
                let m = meta::metadata_mut(&mut object);
                m.insert("finalizers".into(), json!(finalizers));
                if !deleting {
                    m.insert("deletionTimestamp".into(), json!(meta::now()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                if is_namespaces(kind) {
                    object["status"] = json!({"phase": "Terminating"});
                }
                match self
                    .store
                    .update(&key, encode(kind, &object), kv.mod_revision, None)
                    .await
                {
                    Ok(kv) => return Ok(Reply::object(StatusCode::OK, present(&kv, kind)?)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e, kind, &t.name)),
                }
            }
            if dry {
                return Ok(Reply::object(StatusCode::OK, current));
            }
            match self.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(_) => {
                    let details = json!({
                        "name": t.name,
                        "group": kind.group,
                        "kind": kind.plural,
                        "uid": meta::meta_str(&current, "uid"),
                    });
                    return Ok(Reply::json(StatusCode::OK, success_status(Some(details))));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e, kind, &t.name)),
            }
        }
    }

    pub async fn delete_collection(
        &self,
        t: &Target,
        query: &Query,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let Reply::List { items, .. } = self.list(t, query, true).await? else {
            return Err(ApiError::internal("list returned no list"));
        };
        let items: Vec<Value> = items.into_iter().filter_map(Item::into_parsed).collect();
        for item in &items {
            let target = Target {
                kind: t.kind.clone(),
                namespace: meta::namespace(item).to_string(),
                name: meta::name(item).to_string(),
                subresource: None,
            };
            match self.delete(&target, query, body).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let items = items.into_iter().map(Item::Parsed).collect();
        Ok(Reply::list(&t.kind, json!({}), items))
    }

    /// Dispatches a request on a resource path.
    pub async fn serve(
        &self,
        method: &Method,
        t: &Target,
        query: &Query,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Reply, ApiError> {
        let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let mut query = query.clone();
        if query.get("fieldManager").is_none_or(|m| m.is_empty())
            && let Some(agent) = headers.get("user-agent").and_then(|a| a.to_str().ok())
        {
            let client = agent.split('/').next().unwrap_or(agent).to_string();
            query.insert("fieldManager".into(), client);
        }
        let query = &query;
        if t.subresource.as_deref() == Some("scale") {
            return self.scale(method, t, query, headers, &body).await;
        }
        match (method, t.name.is_empty()) {
            (&Method::GET, true) if watching => crate::watch::watch(self, t, query, headers).await,
            (&Method::GET, true) => {
                let table = headers
                    .get("accept")
                    .and_then(|a| a.to_str().ok())
                    .is_some_and(|a| a.contains("as=Table"));
                self.list(t, query, table).await
            }
            (&Method::POST, true) => self.create(t, query, &body).await,
            (&Method::DELETE, true) => self.delete_collection(t, query, &body).await,
            (&Method::GET, false) => self.get(t).await,
            (&Method::PUT, false) => self.update(t, query, &body).await,
            (&Method::PATCH, false) => self.patch(t, query, headers, &body).await,
            (&Method::DELETE, false) if t.subresource.is_none() => {
                self.delete(t, query, &body).await
            }
            (m, _) => Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on this path"
            ))),
        }
    }
}

/// The finalizers an object keeps when deleted with these options. The `orphan` finalizer
/// follows the deletion's propagation policy, as kube-apiserver decides it (spec §6): kept
/// for `Orphan` or `orphanDependents=true`, and when no policy is given; removed for
/// `Background`, `Foreground` or `orphanDependents=false`. The federation API server runs
/// no garbage collector, so it never adds `orphan` or `foregroundDeletion` itself: they would
/// hold the object forever.
fn finalizers_after_delete(
    current: &Value,
    options: &Value,
    query: &Query,
    garbage_collector: bool,
) -> Result<Vec<String>, ApiError> {
    let policy = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(query.get("propagationPolicy").map(String::as_str));
    let orphan_dependents = options.get("orphanDependents").and_then(Value::as_bool).or(
        match query.get("orphanDependents").map(String::as_str) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
    );
    if policy.is_some() && orphan_dependents.is_some() {
        return Err(ApiError::invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            vec![fellowship_apimachinery::Cause::forbidden(
                "propagationPolicy",
                "orphanDependents and propagationPolicy cannot both be set",
            )],
        ));
    }
    let keep_orphan = match (policy, orphan_dependents) {
        (Some("Orphan"), _) => true,
        (Some("Background" | "Foreground"), _) => false,
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: unsupported value {other:?}: supported values: \"Orphan\", \"Background\", \"Foreground\""
            )));
        }
        (None, Some(orphan)) => orphan,
        (None, None) => true,
    };
    let mut finalizers: Vec<String> = meta::finalizers(current)
        .into_iter()
        .filter(|f| keep_orphan || f != "orphan")
        .collect();
    let asked_orphan = policy == Some("Orphan") || orphan_dependents == Some(true);
    if garbage_collector && asked_orphan && !finalizers.iter().any(|f| f == "orphan") {
        finalizers.push("orphan".into());
    }
    Ok(finalizers)
}

fn is_namespaces(kind: &ResourceKind) -> bool {
    kind.group.is_empty() && kind.plural == "namespaces"
}

/// Whether a namespace still has `spec.finalizers` (the namespace finalizer's own).
fn namespace_finalizers(kind: &ResourceKind, object: &Value) -> bool {
    is_namespaces(kind)
        && object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// How a write records field ownership.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// An ordinary write: the request's field manager owns what it changed.
    Update,
    /// A server-side apply, which recorded ownership itself.
    Applied,
}

/// The field manager a write is recorded under: `?fieldManager=`, else the client's name from
/// its User-Agent (as kube-apiserver does), set by [`Rest::serve`].
fn field_manager(query: &Query) -> &str {
    query
        .get("fieldManager")
        .map(String::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
}

/// The 409 an apply gets when others own fields it sets to other values.
fn apply_conflict(kind: &ResourceKind, name: &str, conflicts: Vec<managed::Conflict>) -> ApiError {
    let n = conflicts.len();
    let listed: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with {:?}: {}", c.manager, c.field))
        .collect();
    let mut e = ApiError::conflict(kind.group_resource(), name, "apply failed");
    e.message = format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        listed.join("\n")
    );
    if let Some(d) = e.details.as_mut() {
        d.causes = conflicts
            .into_iter()
            .map(|c| fellowship_apimachinery::Cause {
                reason: "FieldManagerConflict",
                message: format!("conflict with {:?}", c.manager),
                field: c.field,
            })
            .collect();
    }
    e
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The change a PATCH body makes, by its content type.
fn patcher(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<impl Fn(&Value) -> Result<Value, ApiError> + use<>, ApiError> {
    let content_type = content_type(headers);
    if !matches!(
        content_type.as_str(),
        "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json"
    ) {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
        )));
    }
    if body.len() > objects::MAX_BODY {
        return Err(ApiError::too_large(
            "the patch is larger than the request limit",
        ));
    }
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    Ok(move |current: &Value| -> Result<Value, ApiError> {
        let mut patched = current.clone();
        match content_type.as_str() {
            "application/merge-patch+json" => json_patch::merge(&mut patched, &patch),
            "application/strategic-merge-patch+json" => {
                patched = fellowship_apimachinery::patch::strategic_merge(current, &patch)
                    .map_err(|e| {
                        ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
                    })?;
            }
            _ => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut patched, &ops).map_err(|e| {
                    ApiError::invalid(
                        meta::meta_str(current, "kind"),
                        "",
                        meta::name(current),
                        vec![fellowship_apimachinery::Cause {
                            reason: "FieldValueInvalid",
                            message: format!("the JSON patch failed: {e}"),
                            field: String::new(),
                        }],
                    )
                })?;
            }
        }
        Ok(patched)
    })
}

/// The `autoscaling/v1` Scale of an object with `spec.replicas`.
fn scale_of(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let m = object.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// `spec` as an object, created if absent; a `spec` of another type is a 422.
fn spec_mut<'a>(
    object: &'a mut Value,
    kind: &str,
    name: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, ApiError> {
    let obj = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object must be a JSON object"))?;
    let spec = obj.entry("spec").or_insert_with(|| json!({}));
    if spec.is_null() {
        *spec = json!({});
    }
    let shown = spec.to_string();
    spec.as_object_mut().ok_or_else(|| {
        ApiError::invalid(
            kind,
            "",
            name,
            vec![fellowship_apimachinery::Cause::invalid(
                "spec",
                &shown,
                "must be an object",
            )],
        )
    })
}

/// The reply to a write of `object`, stored as `kv`: the object as a read of it would show
/// it, with the new resourceVersion (parsed back only when it was converted on the way in),
/// and the stored bytes as its JSON when they are that object.
fn stored(
    status: StatusCode,
    kind: &ResourceKind,
    mut object: Value,
    kv: &KeyValue,
) -> Result<Reply, ApiError> {
    if crate::conversion::storage_version(kind) != kind.api_version() {
        return Ok(Reply::object(status, present(kv, kind)?));
    }
    meta::metadata_mut(&mut object).insert(
        "resourceVersion".into(),
        Value::String(kv.mod_revision.to_string()),
    );
    Ok(Reply::Object {
        status,
        object,
        warnings: Vec::new(),
        text: objects::present_raw_at(kv, kind, kv.mod_revision),
    })
}

pub fn selectors(
    kind: &ResourceKind,
    query: &Query,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let mut supported = vec!["metadata.name", "metadata.namespace"];
    supported.extend(kind.fields);
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map_or("", String::as_str),
        &supported,
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn validate_object(kind: &ResourceKind, object: &Value) -> Result<(), ApiError> {
    let name = meta::name(object);
    let mut causes = validate_metadata(
        object.get("metadata").unwrap_or(&Value::Null),
        kind.name_rule,
        kind.namespaced(),
    );
    causes.extend(validate::kind_causes(kind, object));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind.kind, kind.group, name, causes))
    }
}

/// Keeps what the server owns across an update: identity and creation metadata, the status
/// on a main-resource write (the spec on a status write) where the type has a status
/// subresource, and `generation`, bumped when the spec changes.
fn merge_server_fields(
    kind: &ResourceKind,
    subresource: Option<&str>,
    current: &Value,
    object: &mut Value,
) -> Result<(), ApiError> {
    if subresource == Some("status") {
        let status = object.get("status").cloned();
        let mut next = current.clone();
        match status {
            Some(s) => next["status"] = s,
            None => {
                next.as_object_mut().map(|o| o.remove("status"));
            }
        }
        *object = next;
    } else if subresource == Some("finalize") && is_namespaces(kind) {
        // Only spec.finalizers changes through /finalize.
        let finalizers = object
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        let mut next = current.clone();
        spec_mut(&mut next, kind.kind, meta::name(current))?
            .insert("finalizers".into(), finalizers);
        *object = next;
    } else if subresource.is_some() {
        return Err(ApiError::method_not_allowed(format!(
            "the {} subresource cannot be written yet",
            subresource.unwrap_or_default()
        )));
    } else if kind.subresources.contains(&"status") {
        if is_namespaces(kind) {
            // spec.finalizers changes only through /finalize, as kube-apiserver keeps it.
            let finalizers = current
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            spec_mut(object, kind.kind, meta::name(current))?
                .insert("finalizers".into(), finalizers);
        }
        match current.get("status") {
            Some(s) => object["status"] = s.clone(),
            None => {
                object.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    let m = meta::metadata_mut(object);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match current.get("metadata").and_then(|cm| cm.get(field)) {
            Some(v) => {
                m.insert(field.into(), v.clone());
            }
            None => {
                m.remove(field);
            }
        }
    }
    validate::prepare_update(kind, current, object);
    if objects::has_generation(current) || objects::has_generation(object) {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bumped = if objects::spec_of(current) != objects::spec_of(object) {
            generation + 1
        } else {
            generation
        };
        meta::metadata_mut(object).insert("generation".into(), json!(bumped));
    }
    Ok(())
}
