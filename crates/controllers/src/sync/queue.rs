//! The work queue each worker drains (kube-runtime's scheduler and runner in one): keys
//! deduplicated while they wait, a bounded number running at once by type, retries after a
//! pause, and the tasks that stop with their owner.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::copies::Key;

/// How long a failed or unfinished reconcile waits before it runs again.
pub const RETRY: Duration = Duration::from_secs(1);
/// Reconciles running at once per member, and of each type: enough to keep a member's API
/// busy while each waits for its round trip. A type given another limit ([`Concurrency`])
/// keeps to it, and a limit above this one raises the member's total to it.
///
/// [`Concurrency`]: super::Concurrency
pub const CONCURRENCY: usize = 16;

/// What a handled key asks for next.
pub enum Next {
    Done,
    Retry,
}

/// Handles the keys sent on `keys`, at most `limits[t]` of type `t` at a time (else
/// [`CONCURRENCY`]; in all, the largest of those), and never one key twice at once (a key
/// sent again while it is handled is handled once more afterwards); a key whose handling
/// asks to retry is sent on `again` after [`RETRY`]. The keys of a type run in the order
/// they came, the types taking turns. Each waiting key is one entry however often it was
/// sent, so a backlog costs a key each, not a task each. `waiting` is told how many keys
/// are queued, running or retrying. Ends when `keys` closes or `handle` has nothing to run
/// them with.
pub async fn drain(
    mut keys: mpsc::UnboundedReceiver<Key>,
    again: mpsc::UnboundedSender<Key>,
    limits: Vec<usize>,
    mut handle: impl FnMut(Key) -> Option<BoxFuture<'static, Next>>,
    mut waiting: impl FnMut(usize),
) {
    let limit = |t: usize| limits.get(t).copied().unwrap_or(CONCURRENCY);
    let at_once = limits.iter().copied().fold(CONCURRENCY, usize::max);
    // By type: the keys waiting for their turn, and how many run.
    let mut queues: Vec<VecDeque<Key>> = Vec::new();
    let mut runs: Vec<usize> = Vec::new();
    let mut turn = 0;
    // The keys in `queues` or `after_run`.
    let mut queued: HashSet<Key> = HashSet::new();
    // Keys whose turn came while they were running: first in line once that run ends.
    let mut after_run: HashSet<Key> = HashSet::new();
    let mut running: HashSet<Key> = HashSet::new();
    let mut inflight: FuturesUnordered<BoxFuture<'static, (Key, Next)>> = FuturesUnordered::new();
    let retrying = Arc::new(AtomicUsize::new(0));
    loop {
        while inflight.len() < at_once {
            let Some(key) = next_key(&mut queues, &runs, limit, &mut turn) else {
                break;
            };
            if running.contains(&key) {
                after_run.insert(key);
                continue;
            }
            let Some(run) = handle(key.clone()) else {
                return;
            };
            queued.remove(&key);
            running.insert(key.clone());
            runs[key.0] += 1;
            inflight.push(Box::pin(async move { (key, run.await) }));
        }
        waiting(queued.len() + inflight.len() + retrying.load(Ordering::Relaxed));
        tokio::select! {
            k = keys.recv() => match k {
                Some(k) => {
                    let mut next = Some(k);
                    while let Some(k) = next {
                        if queued.insert(k.clone()) {
                            if queues.len() <= k.0 {
                                queues.resize_with(k.0 + 1, VecDeque::new);
                                runs.resize(k.0 + 1, 0);
                            }
                            queues[k.0].push_back(k);
                        }
                        next = keys.try_recv().ok();
                    }
                }
                None => return,
            },
            Some((key, next)) = inflight.next(), if !inflight.is_empty() => {
                running.remove(&key);
                runs[key.0] -= 1;
                if after_run.remove(&key) {
                    queues[key.0].push_front(key.clone());
                }
                if let Next::Retry = next {
                    let (tx, retrying) = (again.clone(), retrying.clone());
                    retrying.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        tokio::time::sleep(RETRY).await;
                        retrying.fetch_sub(1, Ordering::Relaxed);
                        let _ = tx.send(key);
                    });
                }
            }
        }
    }
}

/// [`drain`] for a worker whose every key is handled alike, a few at a time: `handle` says
/// whether the key needs nothing more; a key that does, or whose handling failed (logged as
/// `what`), is tried again.
pub async fn work_through<F>(
    keys: mpsc::UnboundedReceiver<Key>,
    again: mpsc::UnboundedSender<Key>,
    what: &'static str,
    mut handle: impl FnMut(Key) -> F,
) where
    F: Future<Output = anyhow::Result<bool>> + Send + 'static,
{
    let handle = |key: Key| {
        let run = handle(key.clone());
        Some(Box::pin(async move {
            match run.await {
                Ok(true) => Next::Done,
                Ok(false) => Next::Retry,
                Err(e) => {
                    tracing::debug!(?key, error = %e, "{what}");
                    Next::Retry
                }
            }
        }) as BoxFuture<'static, Next>)
    };
    drain(keys, again, Vec::new(), handle, |_| {}).await;
}

/// The next key to run: the oldest of the first type from `turn` on that has keys waiting
/// and runs fewer than its limit; the type after it is first next time.
fn next_key(
    queues: &mut [VecDeque<Key>],
    runs: &[usize],
    limit: impl Fn(usize) -> usize,
    turn: &mut usize,
) -> Option<Key> {
    let types = queues.len();
    let t = (0..types)
        .map(|i| (*turn + i) % types)
        .find(|&t| runs[t] < limit(t) && !queues[t].is_empty())?;
    *turn = (t + 1) % types;
    queues[t].pop_front()
}

/// Stops a task when its owner goes.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    #[tokio::test]
    async fn a_queued_key_runs_once_at_a_time_and_a_retry_comes_back() {
        let key = |name: &str| -> Key { (0, "n".into(), name.into()) };
        let (tx, rx) = mpsc::unbounded_channel();
        // Sent three times before the worker looks: one entry, run once.
        for k in ["a", "a", "a", "r"] {
            tx.send(key(k)).unwrap();
        }
        let runs: Arc<Mutex<Vec<String>>> = Arc::default();
        let running: Arc<Mutex<HashSet<Key>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let handle = {
            let (runs, running, release) = (runs.clone(), running.clone(), release.clone());
            move |k: Key| {
                let (runs, running, release) = (runs.clone(), running.clone(), release.clone());
                Some(Box::pin(async move {
                    assert!(
                        running.lock().unwrap().insert(k.clone()),
                        "{k:?} ran twice at once"
                    );
                    let first = {
                        let mut runs = runs.lock().unwrap();
                        runs.push(k.2.to_string());
                        runs.iter().filter(|r| **r == *k.2).count() == 1
                    };
                    if &*k.2 == "a" && first {
                        release.notified().await;
                    }
                    running.lock().unwrap().remove(&k);
                    if &*k.2 == "r" && first {
                        Next::Retry
                    } else {
                        Next::Done
                    }
                }) as BoxFuture<'static, Next>)
            }
        };
        let worker = tokio::spawn(drain(rx, tx.clone(), Vec::new(), handle, |_| {}));
        let count = |name: &str| runs.lock().unwrap().iter().filter(|r| *r == name).count();
        while count("a") == 0 {
            tokio::task::yield_now().await;
        }
        // Sent again while it runs: it runs once more, after.
        tx.send(key("a")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count("a"), 1);
        release.notify_one();
        let deadline = tokio::time::Instant::now() + RETRY * 5;
        while (count("a"), count("r")) != (2, 2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                runs.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worker.abort();
    }

    #[tokio::test]
    async fn a_type_at_its_limit_waits_while_other_types_go_ahead() {
        let (tx, rx) = mpsc::unbounded_channel();
        // Type 0 may run one at a time: its second key waits behind the first, held.
        let keys = [(0, "a"), (0, "b"), (1, "c"), (1, "d"), (2, "e"), (2, "f")];
        for (t, name) in keys {
            tx.send((t, "n".into(), name.into())).unwrap();
        }
        // The keys in the order they were started.
        let started: Arc<Mutex<Vec<String>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let handle = {
            let (started, release) = (started.clone(), release.clone());
            move |k: Key| {
                started.lock().unwrap().push(k.2.to_string());
                let release = release.clone();
                Some(Box::pin(async move {
                    if &*k.2 == "a" {
                        release.notified().await;
                    }
                    Next::Done
                }) as BoxFuture<'static, Next>)
            }
        };
        let worker = tokio::spawn(drain(rx, tx.clone(), vec![1], handle, |_| {}));
        let until = async |count: usize| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while started.lock().unwrap().len() < count {
                assert!(tokio::time::Instant::now() < deadline, "{started:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            started.lock().unwrap().clone()
        };
        until(5).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The types take turns; type 0, at its limit, is passed over.
        assert_eq!(until(5).await, ["a", "c", "e", "d", "f"]);
        release.notify_one();
        assert_eq!(until(6).await[5], "b");
        worker.abort();
    }
}
