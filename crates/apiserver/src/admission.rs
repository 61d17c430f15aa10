//! The admission chain: plugins that see each create and update before it is stored, and may
//! change or refuse it. Chosen by `--enable-admission-plugins`, `--disable-admission-plugins`
//! or the older `--admission-control`; configured by `--admission-control-config-file`
//! (an `AdmissionConfiguration`, spec §8).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use fellowship_apimachinery::{ApiError, ResourceKind};
use fellowship_storage::{KeyValue, Revision, Store};
use serde::Deserialize;
use serde_json::Value;

/// The plugins the federation API server knows, in the order they run (spec §8).
pub const KNOWN: &[&str] = &[
    "NamespaceLifecycle",
    "OwnerReferencesPermissionEnforcement",
    "MutatingAdmissionWebhook",
    "Initializers",
    "ValidatingAdmissionWebhook",
    "SchedulingPolicy",
];

/// On unless disabled: kube-apiserver's default, and the contract's namespace behaviour.
pub const DEFAULT: &[&str] = &["NamespaceLifecycle"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// What a plugin is shown.
pub struct Request<'a> {
    pub operation: Operation,
    pub kind: &'a ResourceKind,
    pub namespace: &'a str,
    /// The object to be stored; plugins may change it.
    pub object: &'a mut Value,
}

#[async_trait::async_trait]
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    async fn admit(&self, store: &dyn Store, request: &mut Request<'_>) -> Result<(), ApiError>;
}

/// NamespaceLifecycle: no new objects in a namespace that does not exist or is terminating.
pub struct NamespaceLifecycle {
    pub namespaces: Arc<ResourceKind>,
    /// Whether each namespace was terminating, as of the revision it was last read at: every
    /// create looks its namespace up, and parsing it each time cost more than the lookup.
    terminating: Mutex<HashMap<String, (Revision, bool)>>,
}

impl NamespaceLifecycle {
    pub fn new(namespaces: Arc<ResourceKind>) -> NamespaceLifecycle {
        NamespaceLifecycle {
            namespaces,
            terminating: Mutex::default(),
        }
    }

    fn terminating(&self, name: &str, kv: &KeyValue) -> Result<bool, ApiError> {
        let mut known = self.terminating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, terminating)) = known.get(name)
            && *at == kv.mod_revision
        {
            return Ok(*terminating);
        }
        // Only the phase is read.
        #[derive(Deserialize)]
        struct Phase {
            #[serde(default)]
            status: Status,
        }
        #[derive(Deserialize, Default)]
        struct Status {
            #[serde(default)]
            phase: String,
        }
        let namespace: Phase = serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::internal(format!("stored namespace {name} is unreadable: {e}"))
        })?;
        let terminating = namespace.status.phase == "Terminating";
        // Namespaces come and go: what is remembered is bounded, not kept forever.
        if known.len() >= 10_000 {
            known.clear();
        }
        known.insert(name.to_string(), (kv.mod_revision, terminating));
        Ok(terminating)
    }
}

#[async_trait::async_trait]
impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    async fn admit(&self, store: &dyn Store, request: &mut Request<'_>) -> Result<(), ApiError> {
        if request.operation != Operation::Create || !request.kind.namespaced() {
            return Ok(());
        }
        let ns = &self.namespaces;
        let name = request.namespace;
        let kv = store
            .get(&ns.key("", name))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
            .ok_or_else(|| ApiError::not_found(ns.group_resource(), name))?;
        if self.terminating(name, &kv)? {
            return Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {name} because it is being terminated"
            )));
        }
        Ok(())
    }
}

/// The enabled plugins, in order.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<Box<dyn Plugin>>,
}

impl Chain {
    /// Adds a plugin after those chosen by the flags.
    pub fn push(&mut self, plugin: Box<dyn Plugin>) {
        self.plugins.push(plugin);
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    pub async fn admit(
        &self,
        store: &dyn Store,
        request: &mut Request<'_>,
    ) -> Result<(), ApiError> {
        for p in &self.plugins {
            p.admit(store, request).await?;
        }
        Ok(())
    }
}

/// `--admission-control-config-file`: each plugin's configuration, inline or in a file.
#[derive(Deserialize)]
struct AdmissionConfiguration {
    kind: String,
    #[serde(default)]
    plugins: Vec<PluginConfiguration>,
}

#[derive(Deserialize)]
struct PluginConfiguration {
    name: String,
    path: Option<PathBuf>,
    configuration: Option<Value>,
}

/// Reads an AdmissionConfiguration (YAML or JSON): plugin name → its configuration.
pub fn read_config(path: &Path) -> anyhow::Result<BTreeMap<String, Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let config: AdmissionConfiguration =
        serde_saphyr::from_str(&text).with_context(|| format!("{}", path.display()))?;
    if config.kind != "AdmissionConfiguration" {
        bail!(
            "{}: kind is {:?}, expected AdmissionConfiguration",
            path.display(),
            config.kind
        );
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for p in config.plugins {
        if !KNOWN.contains(&p.name.as_str()) {
            bail!("{}: unknown admission plugin {:?}", path.display(), p.name);
        }
        let value = match (p.configuration, p.path) {
            (Some(c), _) => c,
            (None, Some(file)) => {
                let file = base.join(file);
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("{}", file.display()))?;
                serde_saphyr::from_str(&text).with_context(|| format!("{}", file.display()))?
            }
            (None, None) => Value::Null,
        };
        out.insert(p.name, value);
    }
    Ok(out)
}

/// The plugins to run from the flags: `legacy` (`--admission-control`) replaces the
/// defaults; `enable` adds to them and `disable` removes from them. Unknown names are errors,
/// and so are plugins not built yet.
pub fn chain(
    legacy: &[String],
    enable: &[String],
    disable: &[String],
    namespaces: Arc<ResourceKind>,
) -> anyhow::Result<Chain> {
    for name in legacy.iter().chain(enable).chain(disable) {
        if !KNOWN.contains(&name.as_str()) {
            bail!(
                "unknown admission plugin {name:?}; known plugins: {}",
                KNOWN.join(", ")
            );
        }
    }
    let on = |name: &str| {
        if disable.iter().any(|d| d == name) {
            return false;
        }
        if !legacy.is_empty() {
            return legacy.iter().any(|l| l == name);
        }
        DEFAULT.contains(&name) || enable.iter().any(|e| e == name)
    };
    let mut plugins: Vec<Box<dyn Plugin>> = Vec::new();
    for name in KNOWN.iter().filter(|n| on(n)) {
        match *name {
            "NamespaceLifecycle" => {
                plugins.push(Box::new(NamespaceLifecycle::new(namespaces.clone())))
            }
            other => bail!("admission plugin {other} is not available in this build yet"),
        }
    }
    Ok(Chain { plugins })
}
