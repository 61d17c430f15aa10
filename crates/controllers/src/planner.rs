//! The replica planner (spec §4.4): how many of an object's replicas each cluster runs,
//! from the object's preferences, the clusters' current replicas and what they can hold.
//! A pure function of its inputs, deterministic: the order of clusters of equal weight comes
//! from a hash of the cluster's name and the object's key, not from the names' order, so
//! that single replicas do not all land in the alphabetically first cluster.

use std::collections::BTreeMap;

use serde_json::Value;

/// The preferences annotation of ReplicaSets.
pub const REPLICA_SET_PREFERENCES: &str = "federation.kubernetes.io/replica-set-preferences";
/// The preferences annotation of Deployments.
pub const DEPLOYMENT_PREFERENCES: &str = "federation.kubernetes.io/deployment-preferences";
/// The preferences annotation of Jobs (spec §4.5).
pub const JOB_PREFERENCES: &str = "federation.kubernetes.io/job-preferences";

/// One cluster's preferences (`ClusterPreferences`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterPreferences {
    pub min_replicas: i64,
    /// Unbounded when absent.
    pub max_replicas: Option<i64>,
    pub weight: i64,
}

/// An object's preferences (`ReplicaAllocationPreferences`): by cluster name, `"*"` for the
/// clusters without an entry of their own.
#[derive(Clone, Debug, PartialEq)]
pub struct Preferences {
    pub rebalance: bool,
    pub clusters: BTreeMap<String, ClusterPreferences>,
}

impl Default for Preferences {
    /// Every cluster alike: `{"clusters": {"*": {"weight": 1}}}`.
    fn default() -> Preferences {
        let all = ClusterPreferences {
            weight: 1,
            ..ClusterPreferences::default()
        };
        Preferences {
            rebalance: false,
            clusters: [("*".to_string(), all)].into(),
        }
    }
}

/// The value of a field of `object` whose name matches `name` regardless of case: the Go
/// type behind the annotation has no JSON tags, so Go's decoder matched its fields so, and
/// tools wrote `Rebalance` as often as `rebalance`.
pub(crate) fn field<'a>(
    object: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Option<&'a Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn count(
    object: &serde_json::Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<Option<i64>, String> {
    match field(object, name) {
        None => Ok(None),
        // Bounded as Kubernetes bounds replica counts (int32), so that no sum or product
        // of the planner's can overflow.
        Some(v) => match v.as_i64() {
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{at}.{name}: {v} is not a whole number from 0 to 2147483647"
            )),
        },
    }
}

impl Preferences {
    /// Parses an annotation's value. Stricter than v1, which took anything its decoder
    /// did: counts must be whole numbers from 0 to 2^31-1 and a maximum no less than its
    /// minimum (anything else makes the preferences invalid, and the default plan is used).
    pub fn parse(text: &str) -> Result<Preferences, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Some(top) = value.as_object() else {
            return Err("not a JSON object".into());
        };
        let rebalance = match field(top, "rebalance") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(format!("rebalance: {v} is not true or false")),
        };
        let mut clusters = BTreeMap::new();
        match field(top, "clusters") {
            None => {}
            Some(Value::Object(entries)) => {
                for (name, entry) in entries {
                    let at = format!("clusters[{name:?}]");
                    let Some(entry) = entry.as_object() else {
                        return Err(format!("{at}: not a JSON object"));
                    };
                    let preferences = ClusterPreferences {
                        min_replicas: count(entry, "minReplicas", &at)?.unwrap_or(0),
                        max_replicas: count(entry, "maxReplicas", &at)?,
                        weight: count(entry, "weight", &at)?.unwrap_or(0),
                    };
                    if let Some(max) = preferences.max_replicas
                        && max < preferences.min_replicas
                    {
                        return Err(format!(
                            "{at}: maxReplicas {max} is below minReplicas {}",
                            preferences.min_replicas
                        ));
                    }
                    clusters.insert(name.clone(), preferences);
                }
            }
            Some(v) => return Err(format!("clusters: {v} is not a JSON object")),
        }
        Ok(Preferences {
            rebalance,
            clusters,
        })
    }

    /// The preferences in annotation `key`, if there: `Ok(None)` when absent.
    pub fn of(
        annotations: Option<&BTreeMap<String, String>>,
        key: &str,
    ) -> Result<Option<Preferences>, String> {
        annotations
            .and_then(|a| a.get(key))
            .map(|text| Preferences::parse(text).map_err(|e| format!("{key}: {e}")))
            .transpose()
    }

    /// These preferences without minimums and maximums: the weights and rebalance alone.
    pub fn weights_only(&self) -> Preferences {
        let clusters = (self.clusters.iter())
            .map(|(name, p)| {
                let weight = ClusterPreferences {
                    weight: p.weight,
                    ..ClusterPreferences::default()
                };
                (name.clone(), weight)
            })
            .collect();
        Preferences {
            rebalance: self.rebalance,
            clusters,
        }
    }
}

/// FNV-1 (not FNV-1a), 32 bits, over the cluster's name and then the object's key: the
/// order among clusters of equal weight, as v1 had it.
fn fnv1_32(parts: &[&str]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in parts.iter().flat_map(|p| p.bytes()) {
        hash = hash.wrapping_mul(0x0100_0193);
        hash ^= u32::from(byte);
    }
    hash
}

/// A plan: replicas per cluster, and the replicas a cluster could not take for lack of
/// capacity that it would be good to keep asking it for (v1's "overflow").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub replicas: BTreeMap<String, i64>,
    pub overflow: BTreeMap<String, i64>,
}

/// Distributes `total` replicas over `clusters` (spec §4.4, exactly as v1's planner):
/// minimums first, in order of weight; then, when not rebalancing, what each cluster runs
/// now; then rounds by weight, each cluster's share rounded up, capped by its maximum and by
/// its capacity (the excess recorded as overflow). `current` and `capacity` may lack
/// clusters (nothing known of them). `key` is the object's `namespace/name`.
pub fn plan(
    preferences: &Preferences,
    total: i64,
    clusters: &[&str],
    current: &BTreeMap<String, i64>,
    capacity: &BTreeMap<String, i64>,
    key: &str,
) -> Plan {
    struct Named<'a> {
        name: &'a str,
        hash: u32,
        preferences: &'a ClusterPreferences,
    }
    let mut replicas: BTreeMap<String, i64> = BTreeMap::new();
    let mut overflow: BTreeMap<String, i64> = BTreeMap::new();
    let mut order: Vec<Named> = Vec::with_capacity(clusters.len());
    for &name in clusters {
        match (preferences.clusters.get(name)).or_else(|| preferences.clusters.get("*")) {
            Some(p) => order.push(Named {
                name,
                hash: fnv1_32(&[name, key]),
                preferences: p,
            }),
            None => {
                replicas.insert(name.to_string(), 0);
            }
        }
    }
    order.sort_by(|a, b| {
        (b.preferences.weight.cmp(&a.preferences.weight)).then(a.hash.cmp(&b.hash))
    });
    let capacity_of = |name: &str| capacity.get(name).copied();
    // A replica count as Kubernetes has it (int32): no sum or product below overflows.
    let mut remaining = total.clamp(0, i64::from(i32::MAX));

    // Each cluster's minimum, as far as the replicas go.
    for p in &order {
        let mut min = p.preferences.min_replicas.min(remaining);
        if let Some(c) = capacity_of(p.name) {
            min = min.min(c);
        }
        remaining -= min;
        replicas.insert(p.name.to_string(), min);
    }

    // Without rebalancing, what a cluster runs beyond its minimum stays there first.
    let mut preallocated: BTreeMap<&str, i64> = BTreeMap::new();
    if !preferences.rebalance {
        for p in &order {
            let planned = replicas[p.name];
            let Some(&count) = current.get(p.name) else {
                continue;
            };
            if count <= planned {
                continue;
            }
            let mut target = count;
            if let Some(max) = p.preferences.max_replicas {
                target = target.min(max);
            }
            if let Some(c) = capacity_of(p.name) {
                target = target.min(c);
            }
            let extra = (target - planned).min(remaining).max(0);
            remaining -= extra;
            preallocated.insert(p.name, extra);
            replicas.insert(p.name.to_string(), planned + extra);
        }
    }

    // Rounds by weight until the replicas are placed or no cluster takes more. Replicas
    // preallocated above count as a cluster's share before any new one does.
    let mut modified = true;
    while modified && remaining > 0 {
        modified = false;
        let weights: i64 = order.iter().map(|p| p.preferences.weight).sum();
        let mut next = Vec::with_capacity(order.len());
        let this_round = remaining;
        for p in order.drain(..) {
            if weights <= 0 {
                break;
            }
            let start = replicas[p.name];
            let mut extra =
                ((this_round * p.preferences.weight + weights - 1) / weights).min(remaining);
            let before = preallocated.get(p.name).copied().unwrap_or(0);
            let used = extra.min(before);
            preallocated.insert(p.name, before - used);
            extra -= used;
            if used > 0 {
                modified = true;
            }
            let mut planned = start + extra;
            let mut full = false;
            if let Some(max) = p.preferences.max_replicas
                && planned > max
            {
                planned = max;
                full = true;
            }
            if let Some(c) = capacity_of(p.name)
                && planned > c
            {
                overflow.insert(p.name.to_string(), planned - c);
                planned = c;
                full = true;
            }
            remaining -= planned - start;
            replicas.insert(p.name.to_string(), planned);
            if planned > start {
                modified = true;
            }
            if !full {
                next.push(p);
            }
        }
        order = next;
    }

    if !preferences.rebalance {
        // Overflow is asked for only as far as replicas are left unplaced.
        overflow = (overflow.into_iter())
            .map(|(name, o)| (name, o.min(remaining)))
            .filter(|(_, o)| *o > 0)
            .collect();
    }
    Plan { replicas, overflow }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(text: &str) -> Preferences {
        Preferences::parse(text).unwrap()
    }

    fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    const EVEN: &str = r#"{"clusters": {"*": {"weight": 1}}}"#;

    /// (preferences, total, clusters, current, capacity, key, plan, overflow)
    type Case<'a> = (
        &'a str,
        i64,
        &'a [&'a str],
        &'a [(&'a str, i64)],
        &'a [(&'a str, i64)],
        &'a str,
        &'a [(&'a str, i64)],
        &'a [(&'a str, i64)],
    );

    fn check(cases: &[Case]) {
        for (i, (p, total, clusters, current, capacity, key, want, want_overflow)) in
            cases.iter().enumerate()
        {
            let got = plan(
                &prefs(p),
                *total,
                clusters,
                &map(current),
                &map(capacity),
                key,
            );
            assert_eq!(
                (got.replicas, got.overflow),
                (map(want), map(want_overflow)),
                "case {i}: {p} {total} over {clusters:?}, current {current:?}, capacity {capacity:?}, key {key:?}"
            );
        }
    }

    const ABC: &[&str] = &["A", "B", "C"];
    const AB: &[&str] = &["A", "B"];

    #[test]
    fn equal_weights_split_evenly_with_ties_broken_by_hash() {
        check(&[
            (
                EVEN,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 16), ("B", 17), ("C", 17)],
                &[],
            ),
            (
                EVEN,
                50,
                ABC,
                &[],
                &[],
                "default/name",
                &[("A", 17), ("B", 16), ("C", 17)],
                &[],
            ),
            (
                EVEN,
                50,
                ABC,
                &[],
                &[],
                "default/nginx",
                &[("A", 17), ("B", 17), ("C", 16)],
                &[],
            ),
            (EVEN, 50, AB, &[], &[], "", &[("A", 25), ("B", 25)], &[]),
            (EVEN, 1, AB, &[], &[], "", &[("A", 0), ("B", 1)], &[]),
            (
                EVEN,
                1,
                AB,
                &[],
                &[],
                "default/name",
                &[("A", 1), ("B", 0)],
                &[],
            ),
            (
                EVEN,
                1,
                &["A", "B", "C", "D"],
                &[],
                &[],
                "",
                &[("A", 0), ("B", 0), ("C", 0), ("D", 1)],
                &[],
            ),
            (EVEN, 1, &["A"], &[], &[], "", &[("A", 1)], &[]),
            (EVEN, 1, &[], &[], &[], "", &[], &[]),
            // Shares are rounded up: 4/4/2, not 4/3/3.
            (
                EVEN,
                10,
                ABC,
                &[],
                &[],
                "",
                &[("A", 2), ("B", 4), ("C", 4)],
                &[],
            ),
            // The guide's example.
            (
                EVEN,
                9,
                &["gondor", "rivendell", "rohan"],
                &[],
                &[],
                "default/web",
                &[("gondor", 3), ("rivendell", 3), ("rohan", 3)],
                &[],
            ),
        ]);
    }

    #[test]
    fn current_replicas_stay_without_rebalance() {
        check(&[
            (
                EVEN,
                50,
                ABC,
                &[("C", 30)],
                &[],
                "",
                &[("A", 10), ("B", 10), ("C", 30)],
                &[],
            ),
            (
                EVEN,
                50,
                AB,
                &[("A", 30)],
                &[],
                "",
                &[("A", 30), ("B", 20)],
                &[],
            ),
            (
                EVEN,
                50,
                AB,
                &[("A", 30)],
                &[],
                "default/name",
                &[("A", 30), ("B", 20)],
                &[],
            ),
            (
                EVEN,
                15,
                AB,
                &[("A", 0), ("B", 8)],
                &[],
                "",
                &[("A", 7), ("B", 8)],
                &[],
            ),
            (
                EVEN,
                15,
                AB,
                &[("A", 1), ("B", 8)],
                &[],
                "",
                &[("A", 7), ("B", 8)],
                &[],
            ),
            (
                EVEN,
                15,
                AB,
                &[("A", 4), ("B", 8)],
                &[],
                "",
                &[("A", 7), ("B", 8)],
                &[],
            ),
            (
                EVEN,
                15,
                AB,
                &[("A", 5), ("B", 8)],
                &[],
                "",
                &[("A", 7), ("B", 8)],
                &[],
            ),
            (
                EVEN,
                15,
                AB,
                &[("A", 6), ("B", 8)],
                &[],
                "",
                &[("A", 7), ("B", 8)],
                &[],
            ),
            (
                EVEN,
                15,
                AB,
                &[("A", 7), ("B", 8)],
                &[],
                "",
                &[("A", 7), ("B", 8)],
                &[],
            ),
            (
                EVEN,
                500000,
                AB,
                &[("A", 300000)],
                &[],
                "",
                &[("A", 300000), ("B", 200000)],
                &[],
            ),
            (
                EVEN,
                50,
                AB,
                &[("A", 10)],
                &[],
                "",
                &[("A", 25), ("B", 25)],
                &[],
            ),
            // kubernetes#31816: 10/40 would be better; v1 gives this, and so does this.
            (
                EVEN,
                50,
                AB,
                &[("A", 10), ("B", 70)],
                &[],
                "",
                &[("A", 0), ("B", 50)],
                &[],
            ),
            (
                EVEN,
                50,
                AB,
                &[("A", 10), ("B", 70)],
                &[],
                "default/name",
                &[("A", 10), ("B", 40)],
                &[],
            ),
            (
                EVEN,
                1,
                AB,
                &[("A", 30)],
                &[],
                "",
                &[("A", 1), ("B", 0)],
                &[],
            ),
            (
                EVEN,
                50,
                AB,
                &[("A", 10), ("B", 20)],
                &[],
                "",
                &[("A", 25), ("B", 25)],
                &[],
            ),
            // With rebalance, what runs now does not count.
            (
                r#"{"rebalance": true, "clusters": {"*": {"weight": 1}}}"#,
                50,
                AB,
                &[("A", 30)],
                &[],
                "",
                &[("A", 25), ("B", 25)],
                &[],
            ),
        ]);
    }

    #[test]
    fn capacity_caps_a_cluster_and_overflow_is_asked_for() {
        let rebalance =
            |clusters: &str| format!(r#"{{"rebalance": true, "clusters": {clusters}}}"#);
        let even = rebalance(r#"{"*": {"weight": 1}}"#);
        let a_b = rebalance(r#"{"A": {"weight": 10000}, "B": {"weight": 1}}"#);
        let one_two = rebalance(r#"{"A": {"weight": 1}, "B": {"weight": 2}}"#);
        let maxes = rebalance(
            r#"{"A": {"weight": 10000, "maxReplicas": 10}, "B": {"weight": 1}, "C": {"weight": 1, "maxReplicas": 21}, "D": {"weight": 1, "maxReplicas": 10}}"#,
        );
        let min20 = rebalance(r#"{"*": {"minReplicas": 20, "weight": 1}}"#);
        check(&[
            (
                &even,
                50,
                ABC,
                &[],
                &[("C", 10)],
                "",
                &[("A", 20), ("B", 20), ("C", 10)],
                &[("C", 7)],
            ),
            (
                &a_b,
                50,
                &["B", "C"],
                &[],
                &[("B", 10)],
                "",
                &[("B", 10), ("C", 0)],
                &[("B", 40)],
            ),
            (
                &one_two,
                60,
                ABC,
                &[],
                &[("B", 10)],
                "",
                &[("A", 50), ("B", 10), ("C", 0)],
                &[("B", 30)],
            ),
            (
                &maxes,
                71,
                &["A", "B", "C", "D"],
                &[],
                &[("C", 10)],
                "",
                &[("A", 10), ("B", 41), ("C", 10), ("D", 10)],
                &[("C", 11)],
            ),
            (
                &min20,
                60,
                AB,
                &[],
                &[("B", 10)],
                "",
                &[("A", 50), ("B", 10)],
                &[("B", 15)],
            ),
            // Without rebalance, overflow is trimmed to what is left unplaced.
            (
                r#"{"clusters": {"A": {"weight": 1}, "B": {"weight": 1}}}"#,
                60,
                ABC,
                &[],
                &[("A", 10), ("B", 10)],
                "",
                &[("A", 10), ("B", 10), ("C", 0)],
                &[("A", 20), ("B", 20)],
            ),
            (
                r#"{"clusters": {"A": {"weight": 1}, "B": {"weight": 5}}}"#,
                60,
                ABC,
                &[],
                &[("B", 10)],
                "",
                &[("A", 50), ("B", 10), ("C", 0)],
                &[],
            ),
            (
                r#"{"clusters": {"*": {"minReplicas": 20, "weight": 0}}}"#,
                50,
                ABC,
                &[],
                &[("B", 10)],
                "",
                &[("A", 20), ("B", 10), ("C", 20)],
                &[],
            ),
        ]);
    }

    #[test]
    fn minimums_come_first_in_order_of_weight() {
        check(&[
            (
                r#"{"clusters": {"*": {"minReplicas": 2}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 2), ("B", 2), ("C", 2)],
                &[],
            ),
            (
                r#"{"clusters": {"*": {"minReplicas": 20}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 10), ("B", 20), ("C", 20)],
                &[],
            ),
            (
                r#"{"clusters": {"*": {"minReplicas": 20}, "A": {"minReplicas": 100, "weight": 1}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 50), ("B", 0), ("C", 0)],
                &[],
            ),
            (
                r#"{"clusters": {"*": {"minReplicas": 10, "weight": 1, "maxReplicas": 12}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 12), ("B", 12), ("C", 12)],
                &[],
            ),
        ]);
    }

    #[test]
    fn maximums_and_weights() {
        check(&[
            (
                r#"{"clusters": {"*": {"weight": 1, "maxReplicas": 2}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 2), ("B", 2), ("C", 2)],
                &[],
            ),
            (
                r#"{"clusters": {"*": {"weight": 0, "maxReplicas": 2}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 0), ("B", 0), ("C", 0)],
                &[],
            ),
            (
                r#"{"clusters": {"A": {"weight": 1}, "B": {"weight": 2}}}"#,
                60,
                ABC,
                &[],
                &[],
                "",
                &[("A", 20), ("B", 40), ("C", 0)],
                &[],
            ),
            (
                r#"{"clusters": {"A": {"weight": 10000}, "B": {"weight": 1}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 50), ("B", 0), ("C", 0)],
                &[],
            ),
            (
                r#"{"clusters": {"A": {"weight": 10000}, "B": {"weight": 1}}}"#,
                50,
                &["B", "C"],
                &[],
                &[],
                "",
                &[("B", 50), ("C", 0)],
                &[],
            ),
            (
                r#"{"clusters": {"A": {"weight": 10000, "maxReplicas": 10}, "B": {"weight": 1}, "C": {"weight": 1}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 10), ("B", 20), ("C", 20)],
                &[],
            ),
            (
                r#"{"clusters": {"A": {"weight": 10000, "maxReplicas": 10}, "B": {"weight": 1}, "C": {"weight": 1, "maxReplicas": 10}}}"#,
                50,
                ABC,
                &[],
                &[],
                "",
                &[("A", 10), ("B", 30), ("C", 10)],
                &[],
            ),
            (
                r#"{"clusters": {"A": {"weight": 10000, "maxReplicas": 10}, "B": {"weight": 1}, "C": {"weight": 1, "maxReplicas": 21}, "D": {"weight": 1, "maxReplicas": 10}}}"#,
                71,
                &["A", "B", "C", "D"],
                &[],
                &[],
                "",
                &[("A", 10), ("B", 30), ("C", 21), ("D", 10)],
                &[],
            ),
            (
                r#"{"clusters": {"A": {"weight": 10000, "maxReplicas": 10}, "B": {"weight": 1}, "C": {"weight": 1, "maxReplicas": 21}, "D": {"weight": 1, "maxReplicas": 10}, "E": {"weight": 1}}}"#,
                91,
                &["A", "B", "C", "D", "E"],
                &[],
                &[],
                "",
                &[("A", 10), ("B", 25), ("C", 21), ("D", 10), ("E", 25)],
                &[],
            ),
        ]);
    }

    #[test]
    fn the_contract_e2e_preferences() {
        // Spec §10, items 17 to 19, on three clusters c0..c2.
        let clusters = &["c0", "c1", "c2"];
        check(&[
            // 17, weight: c0 has no entry, ci weight i, replicas Σi.
            (
                r#"{"clusters": {"c1": {"weight": 1}, "c2": {"weight": 2}}}"#,
                3,
                clusters,
                &[],
                &[],
                "e2e/rs",
                &[("c0", 0), ("c1", 1), ("c2", 2)],
                &[],
            ),
            // 18, min: c0 weight 100; ci weight 1, min i+2; replicas Σ(i+2)+1.
            (
                r#"{"clusters": {"c0": {"weight": 100}, "c1": {"weight": 1, "minReplicas": 3}, "c2": {"weight": 1, "minReplicas": 4}}}"#,
                8,
                clusters,
                &[],
                &[],
                "e2e/rs",
                &[("c0", 1), ("c1", 3), ("c2", 4)],
                &[],
            ),
            // 19, max: c0 weight 1; ci weight 100, max i; replicas Σi + 5.
            (
                r#"{"clusters": {"c0": {"weight": 1}, "c1": {"weight": 100, "maxReplicas": 1}, "c2": {"weight": 100, "maxReplicas": 2}}}"#,
                8,
                clusters,
                &[],
                &[],
                "e2e/rs",
                &[("c0", 5), ("c1", 1), ("c2", 2)],
                &[],
            ),
        ]);
    }

    #[test]
    fn preferences_are_read_as_v1_read_them_and_bad_ones_are_refused() {
        let go_style = prefs(
            r#"{"Rebalance": true, "Clusters": {"a": {"MinReplicas": 1, "MaxReplicas": 3, "Weight": 2}, "*": {"WEIGHT": 1, "maxReplicas": null}}}"#,
        );
        assert!(go_style.rebalance);
        assert_eq!(
            go_style.clusters["a"],
            ClusterPreferences {
                min_replicas: 1,
                max_replicas: Some(3),
                weight: 2
            }
        );
        assert_eq!(go_style.clusters["*"].max_replicas, None);
        assert_eq!(
            prefs("{}"),
            Preferences {
                rebalance: false,
                clusters: BTreeMap::new()
            }
        );
        for bad in [
            "not json",
            "[]",
            r#"{"rebalance": "yes"}"#,
            r#"{"clusters": []}"#,
            r#"{"clusters": {"a": 1}}"#,
            r#"{"clusters": {"a": {"weight": -1}}}"#,
            r#"{"clusters": {"a": {"weight": 1.5}}}"#,
            r#"{"clusters": {"a": {"weight": 4611686018427387904}}}"#,
            r#"{"clusters": {"a": {"minReplicas": 3, "maxReplicas": 2}}}"#,
        ] {
            assert!(Preferences::parse(bad).is_err(), "{bad}");
        }
        let annotations: BTreeMap<String, String> =
            [(DEPLOYMENT_PREFERENCES.to_string(), "{".to_string())].into();
        let err = Preferences::of(Some(&annotations), DEPLOYMENT_PREFERENCES).unwrap_err();
        assert!(err.starts_with(DEPLOYMENT_PREFERENCES), "{err}");
        assert_eq!(Preferences::of(None, DEPLOYMENT_PREFERENCES), Ok(None));
    }
}
