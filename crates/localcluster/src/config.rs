//! What clusters to start: names, regions, zones, nodes and their capacity, from flags or a
//! small YAML file, and how the simulation behaves.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// Default names, from the guide: `rivendell` hosts the federation, the others join it.
pub const NAMES: &[&str] = &[
    "rivendell",
    "gondor",
    "rohan",
    "lothlorien",
    "erebor",
    "shire",
    "moria",
    "isengard",
    "mirkwood",
    "dale",
    "bree",
    "edoras",
];

/// Default regions, cycled through; each has zones `<region>-a`, `-b`, `-c`.
pub const REGIONS: &[&str] = &["us-east1", "us-west1", "europe-west1", "asia-east1"];

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default = "default_nodes")]
    pub nodes: usize,
    #[serde(default)]
    pub node_capacity: Capacity,
    /// Where LoadBalancer Services get their addresses: the first three octets of a /24
    /// (`172.20.1`); derived from the cluster's position when empty.
    #[serde(default)]
    pub load_balancer_pool: String,
    /// 0 picks a free port.
    #[serde(default)]
    pub port: u16,
}

fn default_nodes() -> usize {
    3
}

/// What each simulated node offers.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    #[serde(default = "default_pods")]
    pub pods: u32,
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
}

fn default_pods() -> u32 {
    110
}
fn default_cpu() -> String {
    "4".into()
}
fn default_memory() -> String {
    "16Gi".into()
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            pods: default_pods(),
            cpu: default_cpu(),
            memory: default_memory(),
        }
    }
}

/// How the simulated cluster behaves over time.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Simulation {
    /// How long a Job's Pod runs before it succeeds.
    #[serde(default = "default_job_duration", with = "duration")]
    pub job_duration: Duration,
    /// The CPU utilisation HPAs report when their target sets none.
    #[serde(default = "default_cpu_utilization")]
    pub cpu_utilization: i64,
    /// Writes per second each cluster's control loops may make (0: unlimited), and the
    /// burst they may make at once: kube-controller-manager's `--kube-api-qps` and
    /// `--kube-api-burst`, with its defaults. A cluster's own work then trails a flood of
    /// writes as a real cluster's does, instead of taking the machine from its API.
    #[serde(default = "default_controller_qps")]
    pub controller_qps: u32,
    #[serde(default = "default_controller_burst")]
    pub controller_burst: u32,
    /// Whether workloads run (Deployments, ReplicaSets, DaemonSets, Jobs, their Pods,
    /// HPAs). Off, the clusters serve them but leave them as written, for benchmarks that
    /// write what those controllers would, at the rate they choose.
    #[serde(default = "default_workloads")]
    pub workloads: bool,
}

fn default_workloads() -> bool {
    true
}

fn default_job_duration() -> Duration {
    Duration::from_secs(2)
}
fn default_cpu_utilization() -> i64 {
    50
}

fn default_controller_qps() -> u32 {
    20
}
fn default_controller_burst() -> u32 {
    30
}

impl Default for Simulation {
    fn default() -> Self {
        Simulation {
            job_duration: default_job_duration(),
            cpu_utilization: default_cpu_utilization(),
            controller_qps: default_controller_qps(),
            controller_burst: default_controller_burst(),
            workloads: default_workloads(),
        }
    }
}

mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        fellowship_apimachinery::duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetConfig {
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub simulation: Simulation,
}

impl ClusterConfig {
    /// The `index`th cluster with the defaults: a name from the guide, a region cycled
    /// from [`REGIONS`], its three zones.
    pub fn numbered(index: usize) -> ClusterConfig {
        let name = NAMES
            .get(index)
            .map_or_else(|| format!("cluster-{}", index + 1), |n| n.to_string());
        ClusterConfig {
            name,
            region: String::new(),
            zones: Vec::new(),
            nodes: default_nodes(),
            node_capacity: Capacity::default(),
            load_balancer_pool: String::new(),
            port: 0,
        }
        .with_defaults(index)
    }

    /// Fills in what was left out, from the cluster's position.
    pub fn with_defaults(mut self, index: usize) -> ClusterConfig {
        if self.region.is_empty() {
            self.region = REGIONS[index % REGIONS.len()].to_string();
        }
        if self.zones.is_empty() {
            self.zones = ["a", "b", "c"]
                .iter()
                .map(|z| format!("{}-{z}", self.region))
                .collect();
        }
        if self.load_balancer_pool.is_empty() {
            self.load_balancer_pool = format!("172.{}.{}", 20 + index / 256, index % 256);
        }
        self
    }
}

impl FleetConfig {
    /// `count` clusters named from `names` where given, then from the default names not
    /// taken.
    pub fn numbered(count: usize, names: &[String]) -> FleetConfig {
        let mut defaults = (0..)
            .map(|i| ClusterConfig::numbered(i).name)
            .filter(|n| !names.contains(n));
        let clusters = (0..count.max(names.len()))
            .map(|i| {
                let mut c = ClusterConfig::numbered(i);
                c.name = match names.get(i) {
                    Some(name) => name.clone(),
                    None => defaults.next().expect("names never run out"),
                };
                c
            })
            .collect();
        FleetConfig {
            clusters,
            simulation: Simulation::default(),
        }
    }

    pub fn read(path: &Path) -> anyhow::Result<FleetConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let mut config: FleetConfig =
            serde_saphyr::from_str(&text).with_context(|| format!("{}", path.display()))?;
        config.clusters = config
            .clusters
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.with_defaults(i))
            .collect();
        config.check()?;
        Ok(config)
    }

    /// Names must be unique DNS labels: they name kubeconfig contexts and Cluster objects.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.clusters {
            let valid = !c.name.is_empty()
                && c.name.len() <= 63
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !c.name.starts_with('-')
                && !c.name.ends_with('-');
            anyhow::ensure!(
                valid,
                "cluster name {:?} must be a DNS label (lower-case letters, digits, '-')",
                c.name
            );
            anyhow::ensure!(
                seen.insert(&c.name),
                "cluster name {:?} is used twice",
                c.name
            );
            anyhow::ensure!(c.nodes > 0, "cluster {} needs at least one node", c.name);
            for q in [&c.node_capacity.cpu, &c.node_capacity.memory] {
                anyhow::ensure!(
                    crate::quantity::units(q).is_some(),
                    "cluster {}: {q:?} is not a quantity",
                    c.name
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file() {
        let fleet = FleetConfig::numbered(3, &[]);
        let names: Vec<&str> = fleet.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["rivendell", "gondor", "rohan"]);
        assert_eq!(
            fleet.clusters[1].zones,
            ["us-west1-a", "us-west1-b", "us-west1-c"]
        );
        assert_eq!(
            FleetConfig::numbered(20, &[]).clusters[19].name,
            "cluster-20"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.yaml");
        std::fs::write(
            &path,
            "clusters:\n- name: gondor\n  region: eu\n  nodes: 2\n  nodeCapacity: {pods: 4}\n- name: rohan\nsimulation: {jobDuration: 500ms}\n",
        )
        .unwrap();
        let f = FleetConfig::read(&path).unwrap();
        assert_eq!(f.clusters[0].zones, ["eu-a", "eu-b", "eu-c"]);
        assert_eq!(f.clusters[0].node_capacity.pods, 4);
        assert_eq!(f.clusters[0].node_capacity.cpu, "4");
        assert_eq!(f.simulation.job_duration, Duration::from_millis(500));
        std::fs::write(&path, "clusters:\n- name: Bad_Name\n").unwrap();
        assert!(FleetConfig::read(&path).is_err());
        std::fs::write(&path, "clusters:\n- name: a\n  colour: red\n").unwrap();
        assert!(FleetConfig::read(&path).is_err());
    }
}
