//! Kubeconfig files: a context per cluster (named as the cluster) added to a file that may
//! hold others, and removed again, leaving the others alone.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

/// One cluster as kubeconfig names it.
pub struct Context {
    pub name: String,
    pub server: String,
    pub ca_pem: String,
    pub token: String,
}

/// `$KUBECONFIG`'s first file, else `~/.kube/config`, as kubectl picks where to write.
pub fn default_path() -> PathBuf {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".kube").join("config")
}

fn read(path: &Path) -> anyhow::Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            serde_saphyr::from_str(&text).with_context(|| format!("reading {}", path.display()))
        }
        Ok(_) => Ok(json!({})),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write(path: &Path, config: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let text = serde_saphyr::to_string(config)?;
    // Written aside and renamed: a reader never sees half a file.
    let tmp = path.with_extension("fellowship-tmp");
    fellowship_apiserver::tls::write_private(&tmp, &text)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Replaces the entries named `name` in a list, or appends.
fn upsert(list: &mut Value, name: &str, entry: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    let items = list.as_array_mut().expect("made an array");
    items.retain(|e| e["name"] != name);
    items.push(entry);
}

fn remove_named(list: &mut Value, names: &[String]) {
    if let Some(items) = list.as_array_mut() {
        items.retain(|e| !names.iter().any(|n| e["name"] == n.as_str()));
    }
}

/// Adds (or replaces) a cluster, user and context per entry; `current` becomes the current
/// context when given.
pub fn merge(path: &Path, contexts: &[Context], current: Option<&str>) -> anyhow::Result<()> {
    let mut config = read(path)?;
    if !config.is_object() {
        config = json!({});
    }
    config["apiVersion"] = json!("v1");
    config["kind"] = json!("Config");
    for c in contexts {
        let ca = base64::engine::general_purpose::STANDARD.encode(&c.ca_pem);
        upsert(
            &mut config["clusters"],
            &c.name,
            json!({"name": c.name, "cluster": {"server": c.server, "certificate-authority-data": ca}}),
        );
        upsert(
            &mut config["users"],
            &c.name,
            json!({"name": c.name, "user": {"token": c.token}}),
        );
        upsert(
            &mut config["contexts"],
            &c.name,
            json!({"name": c.name, "context": {"cluster": c.name, "user": c.name}}),
        );
    }
    if let Some(current) = current {
        config["current-context"] = json!(current);
    }
    write(path, &config)
}

/// Removes the clusters, users and contexts of these names.
pub fn remove(path: &Path, names: &[String]) -> anyhow::Result<()> {
    let mut config = read(path)?;
    if !config.is_object() {
        return Ok(());
    }
    for list in ["clusters", "users", "contexts"] {
        remove_named(&mut config[list], names);
    }
    if config["current-context"]
        .as_str()
        .is_some_and(|c| names.iter().any(|n| n == c))
    {
        config["current-context"] = json!("");
    }
    write(path, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_other_entries_and_remove_takes_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: https://prod}\nusers: []\ncontexts:\n- name: prod\n  context: {cluster: prod, user: prod}\ncurrent-context: prod\n",
        )
        .unwrap();
        let ctx = |name: &str| Context {
            name: name.into(),
            server: "https://127.0.0.1:1".into(),
            ca_pem: "ca".into(),
            token: "t".into(),
        };
        merge(&path, &[ctx("gondor"), ctx("rohan")], None).unwrap();
        merge(&path, &[ctx("gondor")], Some("gondor")).unwrap();
        let config = read(&path).unwrap();
        let names = |list: &str| -> Vec<String> {
            config[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("contexts"), ["prod", "rohan", "gondor"]);
        assert_eq!(config["current-context"], "gondor");
        remove(&path, &["gondor".into(), "rohan".into()]).unwrap();
        let config = read(&path).unwrap();
        assert_eq!(config["contexts"].as_array().unwrap().len(), 1);
        assert_eq!(config["clusters"][0]["cluster"]["server"], "https://prod");
        assert_eq!(config["current-context"], "");
    }
}
