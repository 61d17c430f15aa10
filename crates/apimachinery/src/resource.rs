//! What the API server knows of one resource: names, scope, subresources, validation rule.

use crate::status::GroupResource;
use crate::validation::NameRule;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// One resource as served at one group/version. Several can share a `storage` prefix: one
/// stored object seen through each of its versions (`apps/v1` and `extensions/v1beta1`
/// deployments).
#[derive(Clone, Debug)]
pub struct ResourceKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub scope: Scope,
    /// Subresources served under an object, e.g. `status`, `scale`.
    pub subresources: &'static [&'static str],
    pub name_rule: NameRule,
    /// Field selectors this resource supports beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// Key prefix in the store, shared by every version of the resource.
    pub storage: &'static str,
}

impl ResourceKind {
    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn group_resource(&self) -> GroupResource<'static> {
        GroupResource {
            group: self.group,
            resource: self.plural,
        }
    }

    /// The store key of an object, or the prefix of a collection when `name` is empty.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        match (self.namespaced(), namespace.is_empty(), name.is_empty()) {
            (_, true, true) => format!("/{}/", self.storage),
            (false, _, _) => format!("/{}/{name}", self.storage),
            (true, false, true) => format!("/{}/{namespace}/", self.storage),
            (true, _, _) => format!("/{}/{namespace}/{name}", self.storage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let cm = ResourceKind {
            group: "",
            version: "v1",
            kind: "ConfigMap",
            plural: "configmaps",
            singular: "configmap",
            short_names: &["cm"],
            categories: &[],
            scope: Scope::Namespaced,
            subresources: &[],
            name_rule: NameRule::Dns1123Subdomain,
            fields: &[],
            storage: "configmaps",
        };
        assert_eq!(cm.key("ns", "a"), "/configmaps/ns/a");
        assert_eq!(cm.key("ns", ""), "/configmaps/ns/");
        assert_eq!(cm.key("", ""), "/configmaps/");
        assert_eq!(cm.api_version(), "v1");
    }
}
