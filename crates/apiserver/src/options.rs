//! `federation-apiserver` flags (spec §9.1), and what they build.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fellowship_storage::{EmbeddedConfig, EtcdConfig, Store, StoreConfig};

use fellowship_apimachinery::ResourceKind;

use crate::admission;
use crate::auth::Authenticator;
use crate::tls::TlsOptions;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "federation-apiserver",
    version,
    about = "The Fellowship federation API server"
)]
pub struct Options {
    /// HTTPS port.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: String,
    /// Address advertised to clients in discovery; the bind address when unset.
    #[arg(long, default_value = "")]
    pub advertise_address: String,
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where a self-signed certificate is generated when no TLS files are given.
    #[arg(long, default_value = "/var/run/fellowship")]
    pub cert_dir: PathBuf,
    /// CA that signs client certificates (CN = user, O = groups).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// CSV: password,user,uid[,"group1,group2"].
    #[arg(long)]
    pub basic_auth_file: Option<PathBuf>,
    /// CSV: token,user,uid[,"group1,group2"].
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Serve a CPU profile of the process, pprof-encoded, at /debug/pprof/profile to
    /// authenticated clients.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub profiling: bool,
    /// Allow requests without credentials (forced off with AlwaysAllow authorization).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous_auth: bool,
    #[arg(long, default_value = "AlwaysAllow", value_parser = ["AlwaysAllow"])]
    pub authorization_mode: String,
    /// etcd endpoints, comma-separated; without them the embedded store in --data-dir is used.
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// `etcd3` (with --etcd-servers) or `embedded`; chosen from --etcd-servers when unset.
    #[arg(long, value_parser = ["etcd3", "embedded"])]
    pub storage_backend: Option<String>,
    /// The embedded store's data directory.
    #[arg(long, default_value = "/var/lib/fellowship/apiserver")]
    pub data_dir: PathBuf,
    /// Admission plugins to turn on besides the defaults (NamespaceLifecycle).
    #[arg(long, value_delimiter = ',')]
    pub enable_admission_plugins: Vec<String>,
    /// Admission plugins to turn off.
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
    /// The older form: exactly these admission plugins.
    #[arg(long, value_delimiter = ',')]
    pub admission_control: Vec<String>,
    /// An AdmissionConfiguration (YAML or JSON) with each plugin's configuration.
    #[arg(long)]
    pub admission_control_config_file: Option<PathBuf>,
    /// Turns group/versions (or single resources) on and off: `api/all=true`,
    /// `batch/v1=false`, `extensions/v1beta1/deployments=false`. All are on by default.
    #[arg(long, value_delimiter = ',')]
    pub runtime_config: Vec<String>,
    /// How long events are kept.
    #[arg(long, default_value = "1h", value_parser = fellowship_apimachinery::duration::parse)]
    pub event_ttl: Duration,
    /// Log verbosity, as kube components count it (0 info ... 4+ debug).
    #[arg(long, short = 'v', default_value_t = 0)]
    pub v: u8,
}

impl Options {
    pub fn store_config(&self) -> anyhow::Result<StoreConfig> {
        let backend = self.storage_backend.clone().unwrap_or_else(|| {
            if self.etcd_servers.is_empty() {
                "embedded"
            } else {
                "etcd3"
            }
            .to_string()
        });
        Ok(match backend.as_str() {
            "etcd3" => {
                anyhow::ensure!(
                    !self.etcd_servers.is_empty(),
                    "--storage-backend=etcd3 needs --etcd-servers"
                );
                let mut c = EtcdConfig::new(self.etcd_servers.clone());
                c.prefix = self.etcd_prefix.clone();
                c.ca_file = self.etcd_cafile.clone();
                c.cert_file = self.etcd_certfile.clone();
                c.key_file = self.etcd_keyfile.clone();
                StoreConfig::Etcd(c)
            }
            _ => StoreConfig::Embedded(EmbeddedConfig::durable(&self.data_dir)),
        })
    }

    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        fellowship_storage::open(self.store_config()?)
            .await
            .context("opening the store")
    }

    pub fn authenticator(&self) -> anyhow::Result<Authenticator> {
        let mut auth = Authenticator::default();
        if let Some(p) = &self.token_auth_file {
            auth.load_tokens(p)?;
        }
        if let Some(p) = &self.basic_auth_file {
            auth.load_passwords(p)?;
        }
        // spec §9.1: AlwaysAllow turns anonymous access off, so requests without
        // credentials get 401.
        auth.anonymous = self.anonymous_auth && self.authorization_mode != "AlwaysAllow";
        Ok(auth)
    }

    /// The served resources: the federation API less what `--runtime-config` turns off.
    pub fn resources(&self) -> anyhow::Result<Vec<ResourceKind>> {
        let mut all = true;
        let mut versions: Vec<(String, bool)> = Vec::new();
        let mut resources: Vec<(String, bool)> = Vec::new();
        for entry in &self.runtime_config {
            let (key, value) = entry.split_once('=').unwrap_or((entry, "true"));
            let on = match value {
                "true" => true,
                "false" => false,
                v => anyhow::bail!("--runtime-config {entry:?}: {v:?} is not true or false"),
            };
            match key.split('/').collect::<Vec<_>>().as_slice() {
                ["api", "all"] => all = on,
                ["api", "v1"] => versions.push(("v1".into(), on)),
                [g, v] => versions.push((format!("{g}/{v}"), on)),
                ["api", "v1", r] => resources.push((format!("v1/{r}"), on)),
                [g, v, r] => resources.push((format!("{g}/{v}/{r}"), on)),
                _ => anyhow::bail!(
                    "--runtime-config {entry:?}: expected group/version[/resource]=true|false"
                ),
            }
        }
        let known = crate::registry::federation();
        for (name, _) in versions.iter().chain(&resources) {
            let exists = known.iter().any(|k| {
                let gv = k.api_version();
                *name == gv || *name == format!("{gv}/{}", k.plural)
            });
            anyhow::ensure!(exists, "--runtime-config: this server serves no {name}");
        }
        let setting = |list: &[(String, bool)], name: String| {
            list.iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, on)| *on)
        };
        Ok(known
            .into_iter()
            .filter(|k| {
                let gv = k.api_version();
                setting(&resources, format!("{gv}/{}", k.plural))
                    .or_else(|| setting(&versions, gv))
                    .unwrap_or(all)
            })
            .collect())
    }

    /// The admission chain the flags ask for.
    pub fn admission(&self, namespaces: Arc<ResourceKind>) -> anyhow::Result<admission::Chain> {
        if let Some(path) = &self.admission_control_config_file {
            // Parsed now so that a bad file stops the server at start, not at a request.
            admission::read_config(path)?;
        }
        admission::chain(
            &self.admission_control,
            &self.enable_admission_plugins,
            &self.disable_admission_plugins,
            namespaces,
        )
    }

    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_private_key_file.clone(),
            cert_dir: self.cert_dir.clone(),
            client_ca_file: self.client_ca_file.clone(),
            hosts: vec![self.advertise_address.clone(), self.bind_address.clone()],
        }
    }

    pub fn advertise(&self) -> String {
        let host = if self.advertise_address.is_empty() {
            if self.bind_address == "0.0.0.0" {
                "127.0.0.1"
            } else {
                &self.bind_address
            }
        } else {
            &self.advertise_address
        };
        format!("{host}:{}", self.secure_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_flags() {
        let ns = Arc::new(crate::registry::federation().remove(0));
        let parse = |args: &[&str]| {
            let mut all = vec!["federation-apiserver"];
            all.extend(args);
            Options::try_parse_from(all).unwrap().admission(ns.clone())
        };
        assert_eq!(parse(&[]).unwrap().names(), ["NamespaceLifecycle"]);
        assert!(
            parse(&["--disable-admission-plugins=NamespaceLifecycle"])
                .unwrap()
                .names()
                .is_empty()
        );
        assert!(parse(&["--admission-control=Initializers"]).is_err());
        let Err(e) = parse(&["--enable-admission-plugins=NoSuchPlugin"]) else {
            panic!("an unknown plugin was accepted");
        };
        assert!(e.to_string().contains("unknown admission plugin"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            dir.path().join("policy.yml"),
            "kubeconfig: /etc/opa\nretryBackoff: 100\n",
        )
        .unwrap();
        std::fs::write(&config, "apiVersion: apiserver.k8s.io/v1alpha1\nkind: AdmissionConfiguration\nplugins:\n- name: SchedulingPolicy\n  path: policy.yml\n").unwrap();
        let read = admission::read_config(&config).unwrap();
        assert_eq!(read["SchedulingPolicy"]["retryBackoff"], 100);
        std::fs::write(
            &config,
            "kind: AdmissionConfiguration\nplugins:\n- name: Bogus\n",
        )
        .unwrap();
        assert!(admission::read_config(&config).is_err());
    }

    #[test]
    fn runtime_config() {
        let served = |args: &[&str]| {
            let mut all = vec!["federation-apiserver"];
            all.extend(args);
            Options::try_parse_from(all)
                .unwrap()
                .resources()
                .map(|kinds| {
                    kinds
                        .iter()
                        .map(|k| format!("{}/{}", k.api_version(), k.plural))
                        .collect::<Vec<_>>()
                })
        };
        assert!(served(&[]).unwrap().contains(&"batch/v1/jobs".to_string()));
        let off = served(&["--runtime-config=batch/v1=false,extensions/v1beta1/deployments=false"])
            .unwrap();
        assert!(!off.contains(&"batch/v1/jobs".to_string()));
        assert!(!off.contains(&"extensions/v1beta1/deployments".to_string()));
        assert!(off.contains(&"extensions/v1beta1/replicasets".to_string()));
        let only = served(&["--runtime-config=api/all=false,api/v1=true,federation/v1beta1=true"])
            .unwrap();
        assert!(
            only.iter()
                .all(|r| r.starts_with("v1/") || r.starts_with("federation/")),
            "{only:?}"
        );
        assert!(served(&["--runtime-config=nosuch/v1=true"]).is_err());
        assert!(served(&["--runtime-config=batch/v1=maybe"]).is_err());
    }

    #[test]
    fn unknown_flags_are_errors() {
        let e = Options::try_parse_from(["federation-apiserver", "--no-such-flag"]).unwrap_err();
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
    }
}
