//! Watch fan-out shared by both backends.
//!
//! Each backend publishes its events here once, in batches. Every watcher shares the same
//! `Arc`'d batch (one broadcast slot per batch, whatever the number of watchers) and filters
//! it by prefix itself. A bounded history lets a watcher start from a recent revision; a
//! watcher that falls more than the broadcast buffer behind is dropped with `TooOld`, so a
//! slow reader neither stalls the others nor grows memory.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::StreamExt;
use tokio::sync::broadcast;

use crate::{Error, Event, Result, Revision, WatchStream};

enum Published {
    Events(Vec<Event>),
    /// History continuity was lost (etcd compacted past the hub while it was disconnected):
    /// every watcher must re-list.
    Reset,
}

pub(crate) struct Hub {
    history: RwLock<History>,
    tx: broadcast::Sender<Arc<Published>>,
    limit: usize,
}

/// Recent events in revision order.
pub(crate) struct History {
    events: VecDeque<Event>,
    /// Every event with a revision in `start..=last` is in `events`.
    start: Revision,
    last: Revision,
}

impl History {
    pub(crate) fn start(&self) -> Revision {
        self.start
    }

    /// Events with a revision greater than `after`, oldest first.
    pub(crate) fn since(&self, after: Revision) -> impl Iterator<Item = &Event> {
        let from = self.events.partition_point(|e| e.revision() <= after);
        self.events.range(from..)
    }
}

impl Hub {
    /// `events` must cover every revision in `start..=last`.
    pub(crate) fn new(
        start: Revision,
        last: Revision,
        events: VecDeque<Event>,
        limit: usize,
        buffer: usize,
    ) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Hub {
            history: RwLock::new(History {
                events,
                start,
                last,
            }),
            tx,
            limit: limit.max(1),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, History> {
        self.history.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The new history start if publishing `incoming` would exceed the history limit: the
    /// oldest tenth is forgotten at once, so trimming happens rarely.
    pub(crate) fn trim_point(&self, incoming: &[Event]) -> Option<Revision> {
        let h = self.read();
        let total = h.events.len() + incoming.len();
        if total <= self.limit {
            return None;
        }
        let drop = total - self.limit * 9 / 10;
        let first_kept = if drop < h.events.len() {
            h.events.get(drop).map(Event::revision)
        } else {
            incoming.get(drop - h.events.len()).map(Event::revision)
        };
        Some(first_kept.unwrap_or_else(|| incoming.last().map_or(h.last, Event::revision) + 1))
    }

    /// Appends `events` (revisions above the current last, ending at `last`), forgets history
    /// before `new_start` if given, runs `before_wake` (the backend makes its new state
    /// readable there, so a watcher that reads after an event sees it), and wakes the watchers.
    pub(crate) fn publish(
        &self,
        events: Vec<Event>,
        last: Revision,
        new_start: Option<Revision>,
        before_wake: impl FnOnce(),
    ) {
        {
            let mut h = self.history.write().unwrap_or_else(|e| e.into_inner());
            h.events.extend(events.iter().cloned());
            h.last = h.last.max(last);
            if let Some(start) = new_start.filter(|s| *s > h.start) {
                let drop = h.events.partition_point(|e| e.revision() < start);
                h.events.drain(..drop);
                h.start = start;
            }
            // Still under the lock: a subscriber that finds these events in the history can
            // already read the state they lead to.
            before_wake();
        }
        if !events.is_empty() {
            // No receiver is not an error: nobody is watching.
            let _ = self.tx.send(Arc::new(Published::Events(events)));
        }
    }

    /// Drops all history: the next events start at `start`. Current watchers end with TooOld.
    pub(crate) fn reset(&self, start: Revision) {
        {
            let mut h = self.history.write().unwrap_or_else(|e| e.into_inner());
            h.events.clear();
            h.start = start;
            h.last = start.saturating_sub(1);
        }
        let _ = self.tx.send(Arc::new(Published::Reset));
    }

    /// A stream of the events under `prefix` after revision `after`.
    pub(crate) fn subscribe(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading the history: a batch published in between is then in both,
        // and the revision filter below drops the second copy.
        let rx = self.tx.subscribe();
        let h = self.read();
        if after.saturating_add(1) < h.start {
            return Err(Error::TooOld {
                requested: after,
                compacted: h.start,
            });
        }
        let backlog: VecDeque<Event> = h
            .since(after)
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let state = Watcher {
            prefix: prefix.to_string(),
            skip_upto: after.max(h.last),
            delivered: after,
            backlog,
            batch: None,
            rx,
            ended: false,
        };
        drop(h);
        Ok(futures::stream::unfold(state, Watcher::next).boxed())
    }
}

struct Watcher {
    prefix: String,
    /// Live events at or below this revision are in the backlog or predate `after`: a batch
    /// published while subscribing is seen twice, and this drops the second copy. Fixed at
    /// subscription: one revision may carry several events (etcd expires a lease's keys in one
    /// transaction), so it must not move with each delivery.
    skip_upto: Revision,
    /// The last revision delivered, for the error a lagging watcher gets.
    delivered: Revision,
    backlog: VecDeque<Event>,
    batch: Option<(Arc<Published>, usize)>,
    rx: broadcast::Receiver<Arc<Published>>,
    ended: bool,
}

impl Watcher {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        if self.ended {
            return None;
        }
        if let Some(e) = self.backlog.pop_front() {
            self.delivered = self.delivered.max(e.revision());
            return Some((Ok(e), self));
        }
        loop {
            if let Some((batch, index)) = &mut self.batch
                && let Published::Events(events) = &**batch
            {
                while let Some(e) = events.get(*index) {
                    *index += 1;
                    if e.revision() > self.skip_upto && e.kv.key.starts_with(&self.prefix) {
                        self.delivered = e.revision();
                        let e = e.clone();
                        return Some((Ok(e), self));
                    }
                }
            }
            self.batch = None;
            match self.rx.recv().await {
                Ok(batch) => {
                    if let Published::Reset = &*batch {
                        return self.too_old();
                    }
                    self.batch = Some((batch, 0));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return self.too_old(),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn too_old(mut self) -> Option<(Result<Event>, Self)> {
        self.ended = true;
        let err = Error::TooOld {
            requested: self.delivered,
            compacted: self.delivered.saturating_add(1),
        };
        Some((Err(err), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, KeyValue};

    fn event(key: &str, revision: Revision) -> Event {
        Event {
            kind: EventKind::Deleted,
            kv: KeyValue {
                key: key.into(),
                value: Default::default(),
                create_revision: 1,
                mod_revision: revision,
            },
            prev: None,
        }
    }

    /// etcd deletes all keys of an expired lease in one transaction: one revision, several
    /// events. A watcher must get each of them.
    #[tokio::test]
    async fn events_sharing_a_revision_all_arrive() {
        let hub = Hub::new(1, 1, VecDeque::new(), 100, 16);
        let mut w = hub.subscribe("/e/", 1).unwrap();
        hub.publish(vec![event("/e/a", 5), event("/e/b", 5)], 5, None, || ());
        hub.publish(vec![event("/e/c", 6)], 6, None, || ());
        let mut keys = Vec::new();
        for _ in 0..3 {
            keys.push(w.next().await.unwrap().unwrap().kv.key.to_string());
        }
        assert_eq!(keys, ["/e/a", "/e/b", "/e/c"]);
        // A watcher subscribing after the batch replays it from the history, whole.
        let mut late = hub.subscribe("/e/", 4).unwrap();
        assert_eq!(&*late.next().await.unwrap().unwrap().kv.key, "/e/a");
        assert_eq!(&*late.next().await.unwrap().unwrap().kv.key, "/e/b");
    }
}
