//! The controller manager's metrics in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::cluster::Health;

#[derive(Default)]
pub struct Metrics {
    /// Probes by cluster and result.
    probes: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Whether each cluster was Ready at its last probe.
    ready: Mutex<BTreeMap<String, bool>>,
    /// Per cluster propagated to: keys waiting or being reconciled, and reconciles done.
    sync: Mutex<BTreeMap<String, (usize, u64)>>,
}

fn result(health: &Health) -> &'static str {
    match health {
        Health::Ready => "ready",
        Health::NotReady => "not_ready",
        Health::Unreachable => "unreachable",
        Health::NoCredentials(_) => "no_credentials",
    }
}

impl Metrics {
    pub fn probed(&self, cluster: &str, health: &Health) {
        *self
            .probes
            .lock()
            .expect("not poisoned")
            .entry((cluster.to_string(), result(health)))
            .or_default() += 1;
        self.ready
            .lock()
            .expect("not poisoned")
            .insert(cluster.to_string(), *health == Health::Ready);
    }

    /// Forgets a cluster that is no longer registered.
    pub fn retain(&self, clusters: &[String]) {
        self.probes
            .lock()
            .expect("not poisoned")
            .retain(|(c, _), _| clusters.contains(c));
        self.ready
            .lock()
            .expect("not poisoned")
            .retain(|c, _| clusters.contains(c));
    }

    pub fn sync_pending(&self, cluster: &str, keys: usize) {
        self.sync
            .lock()
            .expect("not poisoned")
            .entry(cluster.to_string())
            .or_default()
            .0 = keys;
    }

    pub fn sync_reconciled(&self, cluster: &str) {
        self.sync
            .lock()
            .expect("not poisoned")
            .entry(cluster.to_string())
            .or_default()
            .1 += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP federation_cluster_probes_total Health probes of member clusters, by cluster and result.\n");
        out.push_str("# TYPE federation_cluster_probes_total counter\n");
        for ((cluster, result), n) in self.probes.lock().expect("not poisoned").iter() {
            let _ = writeln!(
                out,
                "federation_cluster_probes_total{{cluster=\"{cluster}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP federation_cluster_ready Whether a member cluster was Ready at its last probe.\n");
        out.push_str("# TYPE federation_cluster_ready gauge\n");
        for (cluster, ready) in self.ready.lock().expect("not poisoned").iter() {
            let _ = writeln!(
                out,
                "federation_cluster_ready{{cluster=\"{cluster}\"}} {}",
                u8::from(*ready)
            );
        }
        let sync = self.sync.lock().expect("not poisoned");
        out.push_str("# HELP federation_sync_pending Federated objects waiting to be reconciled in a member cluster (queued, running or retrying).\n");
        out.push_str("# TYPE federation_sync_pending gauge\n");
        for (cluster, (pending, _)) in sync.iter() {
            let _ = writeln!(
                out,
                "federation_sync_pending{{cluster=\"{cluster}\"}} {pending}"
            );
        }
        out.push_str("# HELP federation_sync_reconciles_total Reconciles of federated objects in a member cluster.\n");
        out.push_str("# TYPE federation_sync_reconciles_total counter\n");
        for (cluster, (_, done)) in sync.iter() {
            let _ = writeln!(
                out,
                "federation_sync_reconciles_total{{cluster=\"{cluster}\"}} {done}"
            );
        }
        out
    }
}
