//! What a member cluster holds of one federated type, as the sync controller needs to know
//! it: for each object, whether Fellowship made it, its resourceVersion, and which version
//! of the federated object it was last found (or written) to hold. The objects themselves
//! are not kept: a federation of 100,000 objects in 10 clusters would otherwise hold a
//! million copies in memory. A copy is judged when its watch event arrives, and read again
//! from its cluster only when the federated object changes. Copies of spread objects also
//! keep what they report ([`Summary`]: a few counts), and a change of it is sent to the
//! scheduling stage.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use kube::api::{ApiResource, ObjectMeta};
use kube::core::DynamicResourceScope;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch};
use kube::{Api, Client, Resource};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch as signal};

use crate::federatedtypes::{Scheduling, Summary};

/// One object of one type: (type index, namespace, name).
/// Shared strings: a key goes to every member's queue.
pub type Key = (usize, Arc<str>, Arc<str>);

/// The key of an object of type `index`.
pub fn key_of(index: usize, metadata: &ObjectMeta) -> Key {
    let text = |s: &Option<String>| Arc::from(s.as_deref().unwrap_or(""));
    (index, text(&metadata.namespace), text(&metadata.name))
}

/// What is known of one copy in a member.
#[derive(Clone, Debug, PartialEq)]
pub struct Copy {
    /// It carries Fellowship's marker: it is the federation's to change or delete.
    pub managed: bool,
    pub resource_version: Box<str>,
    /// The fingerprint of the desired copy this one was found or written to hold.
    pub holds: Option<u64>,
    /// What it reports, for a spread object.
    pub summary: Option<Arc<Summary>>,
}

/// An object as read from a member: the metadata this controller reads of every copy, and
/// the object's JSON as it arrived, parsed only when the copy must be judged (most watch
/// events are of this controller's own writes, known already by their resourceVersion).
/// kube-apiserver writes a watch event's type before its object, so the object reaches
/// this type straight from the event's text and can be kept as text.
#[derive(Clone, Debug)]
pub struct Raw {
    pub metadata: ObjectMeta,
    pub json: Box<RawValue>,
}

impl Raw {
    /// The whole object, parsed.
    pub fn object(&self) -> Option<Value> {
        serde_json::from_str(self.json.get()).ok()
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        /// What is read of every copy; the rest of the text is skipped, not parsed.
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Meta {
            name: Option<String>,
            namespace: Option<String>,
            resource_version: Option<String>,
            annotations: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize)]
        struct Peek {
            #[serde(default)]
            metadata: Meta,
        }
        let json = Box::<RawValue>::deserialize(d)?;
        let peek: Peek = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        let m = peek.metadata;
        let metadata = ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            resource_version: m.resource_version,
            annotations: m.annotations,
            ..ObjectMeta::default()
        };
        Ok(Raw { metadata, json })
    }
}

impl Resource for Raw {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(ar: &ApiResource) -> Cow<'_, str> {
        ar.kind.as_str().into()
    }
    fn group(ar: &ApiResource) -> Cow<'_, str> {
        ar.group.as_str().into()
    }
    fn version(ar: &ApiResource) -> Cow<'_, str> {
        ar.version.as_str().into()
    }
    fn api_version(ar: &ApiResource) -> Cow<'_, str> {
        ar.api_version.as_str().into()
    }
    fn plural(ar: &ApiResource) -> Cow<'_, str> {
        ar.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

pub use crate::annotations::is_managed;

/// What is made of an object read from a member: which desired copy (by fingerprint) it
/// holds, if any, and what it reports.
#[derive(Default)]
pub struct Judgement {
    pub holds: Option<u64>,
    pub summary: Option<Arc<Summary>>,
}

/// Judges an object read from a member.
pub type Judge = Arc<dyn Fn(&Key, &Raw) -> Judgement + Send + Sync>;

/// What the watch reported of a copy while this controller was writing it.
enum Seen {
    Applied {
        managed: bool,
        resource_version: String,
        /// For a spread type, the object's text: what it reports is read from it only if
        /// this was not the write's own event.
        json: Option<Box<RawValue>>,
    },
    Deleted,
}

/// Copies by namespace, then name: a namespace's name is kept once, not once a copy (a
/// member holds up to a copy of every federated object), and a lookup by the names at hand
/// allocates nothing.
#[derive(Default)]
struct ByName(HashMap<String, HashMap<Box<str>, Copy>>);

impl ByName {
    fn get(&self, namespace: &str, name: &str) -> Option<&Copy> {
        self.0.get(namespace)?.get(name)
    }

    fn insert(&mut self, namespace: &str, name: &str, copy: Copy) {
        let names = match self.0.get_mut(namespace) {
            Some(names) => names,
            None => self.0.entry(namespace.to_string()).or_default(),
        };
        names.insert(name.into(), copy);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.0.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                self.0.remove(namespace);
            }
        }
    }

    fn ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|(ns, names)| names.keys().map(move |name| (ns.as_str(), &**name)))
    }
}

/// One member's copies of one type.
pub struct Copies {
    copies: Mutex<ByName>,
    /// Copies being written by this controller, with the last event seen of each meanwhile:
    /// a write's own event often arrives before its reply, and must not be taken for
    /// someone else's change.
    writing: Mutex<HashMap<(String, String), Option<Seen>>>,
    ready: signal::Sender<bool>,
    /// For a spread type: how its copies are summarized, its index among the types, and
    /// where the keys of copies whose summary changed go.
    summarized: Option<(Arc<dyn Scheduling>, usize, mpsc::UnboundedSender<Key>)>,
}

impl Copies {
    /// The copies of a spread type, of index `index`: what each reports is kept, and a key
    /// whose copy reports something new is sent on `changed`.
    pub fn summarized(
        scheduling: Arc<dyn Scheduling>,
        index: usize,
        changed: mpsc::UnboundedSender<Key>,
    ) -> Copies {
        Copies {
            summarized: Some((scheduling, index, changed)),
            ..Copies::default()
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Copy> {
        self.copies
            .lock()
            .expect("not poisoned")
            .get(namespace, name)
            .cloned()
    }

    /// What `object` reports, for a spread type.
    fn summary(&self, object: &Value) -> Option<Arc<Summary>> {
        let (scheduling, _, _) = self.summarized.as_ref()?;
        Some(Arc::new(scheduling.summarize(object)))
    }

    /// Records `copy` (`None`: gone). What the member says of it (`from_member`: an event or
    /// a read) that changes what it reports is told to the scheduling stage; this
    /// controller's own writes change nothing it reports but its generation, which tells
    /// the stage nothing until the member's controller has seen it.
    fn put(
        &self,
        copies: &mut ByName,
        namespace: &str,
        name: &str,
        copy: Option<Copy>,
        from_member: bool,
    ) {
        let before = copies.get(namespace, name).and_then(|c| c.summary.clone());
        let after = copy.as_ref().and_then(|c| c.summary.clone());
        match copy {
            Some(c) => copies.insert(namespace, name, c),
            None => copies.remove(namespace, name),
        }
        if let Some((_, index, changed)) = &self.summarized
            && from_member
            && before != after
        {
            let _ = changed.send((*index, namespace.into(), name.into()));
        }
    }

    /// Records that the copy, read at `resource_version` as `object`, holds the desired
    /// copy `print`; not if another version arrived meanwhile (that one is judged on its
    /// own).
    pub fn holds(
        &self,
        namespace: &str,
        name: &str,
        resource_version: &str,
        print: u64,
        object: &Value,
    ) {
        let mut copies = self.copies.lock().expect("not poisoned");
        let Some(c) = copies
            .get(namespace, name)
            .filter(|c| *c.resource_version == *resource_version)
        else {
            return;
        };
        let copy = Copy {
            holds: Some(print),
            summary: self.summary(object),
            ..c.clone()
        };
        self.put(&mut copies, namespace, name, Some(copy), true);
    }

    /// Whether this controller is writing the copy now.
    pub fn is_writing(&self, namespace: &str, name: &str) -> bool {
        let id = (namespace.to_string(), name.to_string());
        self.writing.lock().expect("not poisoned").contains_key(&id)
    }

    /// Notes that this controller is about to write the copy, until the [`Write`] returned
    /// is finished (or dropped, should the write never end).
    pub fn begin<'a>(&'a self, namespace: &str, name: &str) -> Write<'a> {
        let id = (namespace.to_string(), name.to_string());
        self.writing
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), None);
        Write {
            copies: self,
            id: Some(id),
        }
    }

    /// Records how a write ended (`written`: the copy it made, if it succeeded). Whether
    /// the copy must be looked at again: an event of another version arrived meanwhile,
    /// and which of the two is the newer is not known.
    fn finish(&self, id: (String, String), written: Option<Copy>) -> bool {
        let seen = self
            .writing
            .lock()
            .expect("not poisoned")
            .remove(&id)
            .flatten();
        let mut copies = self.copies.lock().expect("not poisoned");
        let (ns, name) = (&id.0, &id.1);
        let reported = |json: Option<Box<RawValue>>| {
            let object = serde_json::from_str(json?.get()).ok()?;
            self.summary(&object)
        };
        let (copy, again) = match (written, seen) {
            (None, None) => return false,
            (None, Some(Seen::Deleted)) => return true,
            (
                None,
                Some(Seen::Applied {
                    managed,
                    resource_version,
                    json,
                }),
            ) => {
                let copy = Copy {
                    managed,
                    resource_version: resource_version.into(),
                    holds: None,
                    summary: reported(json),
                };
                (copy, true)
            }
            (
                Some(c),
                Some(Seen::Applied {
                    resource_version, ..
                }),
            ) if *resource_version == *c.resource_version => (c, false),
            (Some(c), None) => (c, false),
            (Some(c), Some(Seen::Applied { json, .. })) => {
                let summary = reported(json).or(c.summary.clone());
                (
                    Copy {
                        holds: None,
                        summary,
                        ..c
                    },
                    true,
                )
            }
            (Some(c), Some(Seen::Deleted)) => (Copy { holds: None, ..c }, true),
        };
        // What the member showed of another version is news to the scheduling stage; this
        // controller's own write is not.
        self.put(&mut copies, ns, name, Some(copy), again);
        again
    }

    /// Forgets a copy found gone.
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut copies = self.copies.lock().expect("not poisoned");
        self.put(&mut copies, namespace, name, None, true);
    }

    /// Waits until the first listing is in.
    pub async fn ready(&self) {
        let _ = self.ready.subscribe().wait_for(|r| *r).await;
    }

    /// Follows the member's objects of type `index` for as long as the task runs, sending
    /// the key of every copy that changed other than by this controller's own writes.
    pub async fn follow(
        self: Arc<Self>,
        client: Client,
        ar: ApiResource,
        index: usize,
        keys: mpsc::UnboundedSender<Key>,
        judge: Judge,
    ) {
        let api = Api::<Raw>::all_with(client, &ar);
        let mut events = watch(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listing: Option<HashSet<(String, String)>> = None;
        while let Some(event) = events.next().await {
            let changed: Vec<(String, String)> = match event {
                Ok(Event::Init) => {
                    listing = Some(HashSet::new());
                    Vec::new()
                }
                Ok(Event::InitApply(o)) => {
                    let id = id_of(&o);
                    if let Some(l) = &mut listing {
                        l.insert(id.clone());
                    }
                    self.applied(id, &o, index, &judge)
                }
                Ok(Event::InitDone) => {
                    // Copies gone while the watch was down.
                    let seen = listing.take().unwrap_or_default();
                    let mut copies = self.copies.lock().expect("not poisoned");
                    let gone: Vec<(String, String)> = copies
                        .ids()
                        .map(|(ns, name)| (ns.to_string(), name.to_string()))
                        .filter(|k| !seen.contains(k))
                        .collect();
                    for (ns, name) in &gone {
                        self.put(&mut copies, ns, name, None, true);
                    }
                    drop(copies);
                    self.ready.send_replace(true);
                    gone
                }
                Ok(Event::Apply(o)) => self.applied(id_of(&o), &o, index, &judge),
                Ok(Event::Delete(o)) => {
                    let id = id_of(&o);
                    if let Some(seen) = self.writing.lock().expect("not poisoned").get_mut(&id) {
                        *seen = Some(Seen::Deleted);
                    }
                    self.remove(&id.0, &id.1);
                    vec![id]
                }
                Err(e) => {
                    tracing::debug!(resource = %ar.plural, error = %e, "member watch");
                    Vec::new()
                }
            };
            for (ns, name) in changed {
                if keys.send((index, ns.into(), name.into())).is_err() {
                    return;
                }
            }
        }
    }

    /// Takes in an object the member reports; what changed, to reconcile.
    fn applied(
        &self,
        id: (String, String),
        o: &Raw,
        index: usize,
        judge: &Judge,
    ) -> Vec<(String, String)> {
        let rv = o.metadata.resource_version.clone().unwrap_or_default();
        if let Some(seen) = self.writing.lock().expect("not poisoned").get_mut(&id) {
            *seen = Some(Seen::Applied {
                managed: is_managed(&o.metadata),
                resource_version: rv,
                json: self.summarized.as_ref().map(|_| o.json.clone()),
            });
            return Vec::new();
        }
        // The event of this controller's own write: known already.
        if self
            .copies
            .lock()
            .expect("not poisoned")
            .get(&id.0, &id.1)
            .is_some_and(|c| *c.resource_version == *rv)
        {
            return Vec::new();
        }
        let key = (index, id.0.as_str().into(), id.1.as_str().into());
        let Judgement { holds, summary } = judge(&key, o);
        let copy = Copy {
            managed: is_managed(&o.metadata),
            resource_version: rv.into(),
            holds,
            summary,
        };
        let mut copies = self.copies.lock().expect("not poisoned");
        self.put(&mut copies, &id.0, &id.1, Some(copy), true);
        vec![id]
    }
}

/// A write of a copy under way (see [`Copies::begin`]).
pub struct Write<'a> {
    copies: &'a Copies,
    id: Option<(String, String)>,
}

impl Write<'_> {
    /// See [`Copies::finish`].
    pub fn finish(mut self, written: Option<Copy>) -> bool {
        let id = self.id.take().expect("finished once");
        self.copies.finish(id, written)
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.copies.finish(id, None);
        }
    }
}

impl Default for Copies {
    fn default() -> Copies {
        Copies {
            copies: Mutex::new(ByName::default()),
            writing: Mutex::new(HashMap::new()),
            ready: signal::channel(false).0,
            summarized: None,
        }
    }
}

fn id_of(o: &Raw) -> (String, String) {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rv: &str) -> Raw {
        serde_json::from_str(&format!(
            r#"{{"metadata": {{"name": "a", "namespace": "n", "resourceVersion": "{rv}",
                "annotations": {{"{}": "true"}}}}, "data": {{"k": "v"}}}}"#,
            crate::annotations::MANAGED
        ))
        .unwrap()
    }

    fn written(rv: &str) -> Option<Copy> {
        Some(Copy {
            managed: true,
            resource_version: rv.into(),
            holds: Some(7),
            summary: None,
        })
    }

    #[test]
    fn a_writes_own_event_is_not_taken_for_a_change_even_before_its_reply() {
        let copies = Copies::default();
        let judge: Judge = Arc::new(|_, _| panic!("an own write's event is not judged"));
        let id = ("n".to_string(), "a".to_string());
        // The event arrives before the write's reply: nothing to reconcile, and the reply's
        // version is what the copy holds.
        let write = copies.begin("n", "a");
        let changed = copies.applied(id.clone(), &event("5"), 0, &judge);
        assert!(changed.is_empty());
        assert!(!write.finish(written("5")));
        assert_eq!(copies.get("n", "a").unwrap().holds, Some(7));
        // After the reply, the same event again is known by its version.
        let changed = copies.applied(id, &event("5"), 0, &judge);
        assert!(changed.is_empty());
    }

    #[test]
    fn another_version_seen_during_a_write_is_looked_at_again() {
        let copies = Copies::default();
        let judge: Judge = Arc::new(|_, _| Judgement {
            holds: Some(1),
            summary: None,
        });
        let id = ("n".to_string(), "a".to_string());
        let write = copies.begin("n", "a");
        copies.applied(id.clone(), &event("6"), 0, &judge);
        assert!(write.finish(written("5")));
        assert_eq!(copies.get("n", "a").unwrap().holds, None);
        // A write that ended without a reply (failed, or dropped) learns of the copy the
        // event showed.
        let write = copies.begin("n", "a");
        copies.applied(id.clone(), &event("8"), 0, &judge);
        drop(write);
        let copy = copies.get("n", "a").unwrap();
        assert_eq!((&*copy.resource_version, copy.holds), ("8", None));
        assert!(copy.managed);
        // Nothing is being written any more: events are taken in again.
        assert_eq!(copies.applied(id.clone(), &event("9"), 0, &judge), vec![id]);
    }
}
