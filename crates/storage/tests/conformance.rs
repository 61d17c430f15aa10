//! One conformance suite, run unchanged against every backend: the embedded store on disk,
//! the embedded store in memory, and a real etcd.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fellowship_storage::{Error, EventKind, ListOptions, Revision};
use futures::StreamExt;
use support::{Backend, Kind, assert_quiet, b, list_all, next_event};

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod durable {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::new(super::Kind::Durable)).await }
            )*
        }
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::new(super::Kind::Memory)).await }
            )*
        }
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Backend::new(super::Kind::Etcd)).await }
            )*
        }
    };
}

conformance!(
    create_get_update_delete,
    invalid_keys_are_rejected,
    one_global_increasing_revision,
    list_by_prefix,
    list_pagination,
    list_at_past_revision,
    pagination_is_consistent_while_writes_continue,
    racing_writers_one_winner_per_round,
    watch_delivers_changes_with_previous_values,
    watch_from_revision_replays_then_follows,
    watch_filters_by_prefix,
    many_watchers_see_every_event,
    slow_watcher_is_dropped_others_continue,
    compaction_makes_old_revisions_too_old,
    ttl_expires_keys,
    watch_resumes_after_restart,
    compaction_survives_restart,
    history_is_bounded,
);

async fn create_get_update_delete(backend: Backend) {
    let s = backend.open().await;
    let created = s.create("/t/a", b("one"), None).await.unwrap();
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(&*created.key, "/t/a");
    assert_eq!(s.get("/t/a").await.unwrap(), Some(created.clone()));
    assert_eq!(s.get("/t/missing").await.unwrap(), None);

    match s.create("/t/a", b("again"), None).await {
        Err(Error::AlreadyExists { key }) => assert_eq!(key, "/t/a"),
        other => panic!("create over an existing key: {other:?}"),
    }

    let updated = s
        .update("/t/a", b("two"), created.mod_revision, None)
        .await
        .unwrap();
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.value, b("two"));

    // A stale revision loses, and the error carries what is there now.
    match s
        .update("/t/a", b("three"), created.mod_revision, None)
        .await
    {
        Err(Error::Conflict { expected, current }) => {
            assert_eq!(expected, created.mod_revision);
            assert_eq!(*current, updated);
        }
        other => panic!("stale update: {other:?}"),
    }
    assert!(matches!(
        s.update("/t/none", b("x"), 1, None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.update("/t/none", b("x"), 0, None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("/t/a", Some(created.mod_revision)).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(s.get("/t/a").await.unwrap(), Some(updated.clone()));

    let deleted = s.delete("/t/a", Some(updated.mod_revision)).await.unwrap();
    assert_eq!(deleted.prev, updated);
    assert!(deleted.revision > updated.mod_revision);
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    assert!(matches!(
        s.delete("/t/a", None).await,
        Err(Error::NotFound { .. })
    ));

    // Unconditional delete, and a key can be created again after deletion.
    s.create("/t/b", b("x"), None).await.unwrap();
    s.delete("/t/b", None).await.unwrap();
    let again = s.create("/t/b", b("y"), None).await.unwrap();
    assert!(again.create_revision > deleted.revision);
    assert_eq!(s.current_revision().await.unwrap(), again.mod_revision);

    // Values are bytes, not text.
    let binary = Bytes::from_static(&[0, 0xff, 0xfe, 10, 0]);
    s.create("/t/bin", binary.clone(), None).await.unwrap();
    assert_eq!(s.get("/t/bin").await.unwrap().unwrap().value, binary);
}

async fn invalid_keys_are_rejected(backend: Backend) {
    let s = backend.open().await;
    for key in ["", "relative", "/nul\0key"] {
        assert!(matches!(
            s.create(key, b("x"), None).await,
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(s.get(key).await, Err(Error::InvalidKey(_))));
    }
    let bad = ListOptions {
        continue_token: Some("not-a-token".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.list("/t/", bad).await,
        Err(Error::InvalidContinue(_))
    ));
}

async fn one_global_increasing_revision(backend: Backend) {
    let s = backend.open().await;
    let mut last = s.current_revision().await.unwrap();
    for i in 0..20 {
        let key = format!("/rev/{}/{i}", ["x", "y", "z"][i % 3]);
        let kv = s.create(&key, b("v"), None).await.unwrap();
        assert!(kv.mod_revision > last, "revision must increase across keys");
        last = kv.mod_revision;
        let kv = s.update(&key, b("w"), kv.mod_revision, None).await.unwrap();
        assert!(kv.mod_revision > last);
        last = kv.mod_revision;
    }
    assert_eq!(s.current_revision().await.unwrap(), last);
    // Concurrent writers still get distinct revisions.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..25 {
                let key = format!("/rev/c/{t}/{i}");
                revs.push(s.create(&key, b("v"), None).await.unwrap().mod_revision);
            }
            revs
        }));
    }
    let mut all: Vec<Revision> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "every write has its own revision");
    assert!(all[0] > last);
}

async fn list_by_prefix(backend: Backend) {
    let s = backend.open().await;
    for k in ["/a/1", "/a/2", "/a/3", "/ab/1", "/b/1", "/a"] {
        s.create(k, b(k), None).await.unwrap();
    }
    let page = s.list("/a/", ListOptions::default()).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|kv| &*kv.key).collect();
    assert_eq!(keys, ["/a/1", "/a/2", "/a/3"]);
    assert_eq!(page.items[1].value, b("/a/2"));
    assert_eq!(page.revision, s.current_revision().await.unwrap());
    assert_eq!(page.continue_token, None);
    let empty = s.list("/none/", ListOptions::default()).await.unwrap();
    assert!(empty.items.is_empty());
    let all = s.list("/", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 6);
}

async fn list_pagination(backend: Backend) {
    let s = backend.open().await;
    for i in 0..25 {
        s.create(&format!("/p/{i:03}"), b(&i.to_string()), None)
            .await
            .unwrap();
    }
    s.create("/q/outside", b("x"), None).await.unwrap();
    let first = s
        .list(
            "/p/",
            ListOptions {
                limit: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.remaining, Some(15));
    assert_eq!(&*first.items[9].key, "/p/009");
    let token = first.continue_token.clone().expect("a continue token");
    // A change after the first page is not seen by the following pages.
    s.delete("/p/015", None).await.unwrap();
    s.create("/p/0105", b("late"), None).await.unwrap();
    let (keys, revision) = list_all(&*s, "/p/", 10, None).await.unwrap();
    assert_eq!(keys.len(), 25, "a fresh list sees the changes");
    assert!(revision > first.revision);

    let second = s
        .list(
            "/p/",
            ListOptions {
                limit: Some(10),
                continue_token: Some(token),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(second.revision, first.revision);
    let keys: Vec<&str> = second.items.iter().map(|kv| &*kv.key).collect();
    assert_eq!(keys[0], "/p/010");
    assert!(
        keys.contains(&"/p/015"),
        "page read at the first page's revision"
    );
    assert!(!keys.contains(&"/p/0105"));
    assert_eq!(second.remaining, Some(5));
    let third = s
        .list(
            "/p/",
            ListOptions {
                limit: Some(10),
                continue_token: second.continue_token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(third.items.len(), 5);
    assert_eq!(third.continue_token, None);
    assert_eq!(&*third.items[4].key, "/p/024");
}

async fn list_at_past_revision(backend: Backend) {
    let s = backend.open().await;
    s.create("/h/a", b("a1"), None).await.unwrap();
    let b1 = s.create("/h/b", b("b1"), None).await.unwrap();
    let c1 = s.create("/h/c", b("c1"), None).await.unwrap();
    let then = s.current_revision().await.unwrap();
    s.update("/h/b", b("b2"), b1.mod_revision, None)
        .await
        .unwrap();
    s.delete("/h/c", Some(c1.mod_revision)).await.unwrap();
    s.create("/h/d", b("d1"), None).await.unwrap();
    s.create("/h/0", b("01"), None).await.unwrap();

    let (past, revision) = list_all(&*s, "/h/", 2, Some(then)).await.unwrap();
    assert_eq!(revision, then);
    assert_eq!(
        past,
        vec![
            ("/h/a".into(), b("a1")),
            ("/h/b".into(), b("b1")),
            ("/h/c".into(), b("c1"))
        ]
    );
    let (now, _) = list_all(&*s, "/h/", 0, None).await.unwrap();
    let keys: Vec<&str> = now.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/h/0", "/h/a", "/h/b", "/h/d"]);

    let future = s.current_revision().await.unwrap() + 100;
    let opts = ListOptions {
        revision: Some(future),
        ..Default::default()
    };
    assert!(matches!(
        s.list("/h/", opts).await,
        Err(Error::FutureRevision { .. })
    ));
}

/// Pages read with limit and continue while a writer keeps changing the keys must, put
/// together, equal the state at the first page's revision, which the writer's own log of
/// acknowledged writes gives independently.
async fn pagination_is_consistent_while_writes_continue(backend: Backend) {
    let s = backend.open().await;
    let mut state: BTreeMap<String, (Revision, Option<Bytes>)> = BTreeMap::new();
    for i in 0..300 {
        let key = format!("/c/{i:04}");
        let kv = s.create(&key, b("v0"), None).await.unwrap();
        state.insert(key, (kv.mod_revision, Some(kv.value)));
    }
    let writer = {
        let s = s.clone();
        let mut state = state.clone();
        tokio::spawn(async move {
            let mut log = Vec::new();
            for round in 1..=600u32 {
                let i = (round * 7919) % 400;
                let key = format!("/c/{i:04}");
                let value = b(&format!("v{round}"));
                let (rev, new) = match state.get(&key) {
                    Some((r, Some(_))) if round % 5 == 0 => {
                        (s.delete(&key, Some(*r)).await.unwrap().revision, None)
                    }
                    Some((r, Some(_))) => {
                        let kv = s.update(&key, value.clone(), *r, None).await.unwrap();
                        (kv.mod_revision, Some(value))
                    }
                    _ => {
                        let kv = s.create(&key, value.clone(), None).await.unwrap();
                        (kv.mod_revision, Some(value))
                    }
                };
                state.insert(key.clone(), (rev, new.clone()));
                log.push((rev, key, new));
            }
            log
        })
    };
    let mut snapshots = Vec::new();
    while !writer.is_finished() {
        snapshots.push(list_all(&*s, "/c/", 17, None).await.unwrap());
    }
    snapshots.push(list_all(&*s, "/c/", 17, None).await.unwrap());
    let log = writer.await.unwrap();
    assert!(snapshots.len() >= 2);
    for (items, revision) in snapshots {
        let mut expected: BTreeMap<String, Option<Bytes>> = state
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        for (rev, key, value) in &log {
            if *rev <= revision {
                expected.insert(key.clone(), value.clone());
            }
        }
        let expected: Vec<(String, Bytes)> = expected
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        assert_eq!(items, expected, "pages at revision {revision}");
    }
}

async fn racing_writers_one_winner_per_round(backend: Backend) {
    let s = backend.open().await;
    let writers = 8;
    let rounds = 30;
    let start = s.create("/race/key", b("0"), None).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(writers));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for round in 0..rounds {
                barrier.wait().await;
                let current = s.get("/race/key").await.unwrap().unwrap();
                barrier.wait().await; // everyone has read the same revision
                match s
                    .update(
                        "/race/key",
                        b(&format!("{round}:{w}")),
                        current.mod_revision,
                        None,
                    )
                    .await
                {
                    Ok(_) => won.push(round),
                    Err(Error::Conflict { .. }) => {}
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            won
        }));
    }
    let mut wins = vec![0; rounds];
    for t in tasks {
        for r in t.await.unwrap() {
            wins[r] += 1;
        }
    }
    assert!(
        wins.iter().all(|w| *w == 1),
        "exactly one winner per round: {wins:?}"
    );
    let end = s.get("/race/key").await.unwrap().unwrap();
    assert!(end.mod_revision >= start.mod_revision + rounds as u64);
}

async fn watch_delivers_changes_with_previous_values(backend: Backend) {
    let s = backend.open().await;
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch("/w/", from).await.unwrap();
    let c = s.create("/w/a", b("1"), None).await.unwrap();
    let u = s
        .update("/w/a", b("2"), c.mod_revision, None)
        .await
        .unwrap();
    let d = s.delete("/w/a", None).await.unwrap();

    let e = next_event(&mut w).await.unwrap();
    assert_eq!(e.kind, EventKind::Added);
    assert_eq!(e.kv, c);
    assert_eq!(e.prev, None);
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(e.kind, EventKind::Modified);
    assert_eq!(e.kv, u);
    assert_eq!(e.prev, Some(c.clone()));
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(e.kind, EventKind::Deleted);
    assert_eq!(&*e.kv.key, "/w/a");
    assert_eq!(e.revision(), d.revision);
    assert_eq!(e.prev, Some(u));
    assert_quiet(&mut w, Duration::from_millis(200)).await;
}

async fn watch_from_revision_replays_then_follows(backend: Backend) {
    let s = backend.open().await;
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            s.create(&format!("/r/{i}"), b("x"), None)
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let mut w = s.watch("/r/", revs[3]).await.unwrap();
    for i in 10..15 {
        revs.push(
            s.create(&format!("/r/{i}"), b("x"), None)
                .await
                .unwrap()
                .mod_revision,
        );
    }
    for expected in &revs[4..] {
        let e = next_event(&mut w).await.unwrap();
        assert_eq!(e.revision(), *expected, "in order, none lost or repeated");
    }
    assert_quiet(&mut w, Duration::from_millis(200)).await;

    // From the current revision: only what comes next.
    let now = s.current_revision().await.unwrap();
    let mut w = s.watch("/r/", now).await.unwrap();
    let kv = s.create("/r/new", b("x"), None).await.unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().kv, kv);
}

async fn watch_filters_by_prefix(backend: Backend) {
    let s = backend.open().await;
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch("/f/a/", from).await.unwrap();
    s.create("/f/ab", b("sibling"), None).await.unwrap();
    s.create("/f/b/1", b("other"), None).await.unwrap();
    let mine = s.create("/f/a/1", b("mine"), None).await.unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(e.kv, mine);
    assert_quiet(&mut w, Duration::from_millis(200)).await;
}

async fn many_watchers_see_every_event(backend: Backend) {
    let s = backend.open().await;
    let from = s.current_revision().await.unwrap();
    let mut watchers = Vec::new();
    for _ in 0..200 {
        watchers.push(s.watch("/m/", from).await.unwrap());
    }
    let mut expected = Vec::new();
    for i in 0..50 {
        expected.push(
            s.create(&format!("/m/{i}"), b("v"), None)
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let tasks: Vec<_> = watchers
        .into_iter()
        .map(|mut w| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 50 {
                    got.push(next_event(&mut w).await.unwrap().revision());
                }
                got
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), expected);
    }
}

async fn slow_watcher_is_dropped_others_continue(mut backend: Backend) {
    backend.watch_buffer = 16;
    let s = backend.open().await;
    let from = s.current_revision().await.unwrap();
    let mut slow = s.watch("/s/", from).await.unwrap();
    let mut fast = s.watch("/s/", from).await.unwrap();
    let n = 300;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..n {
                s.create(&format!("/s/{i}"), b("v"), None).await.unwrap();
                // Paced, so that the reading watcher keeps up on any backend.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut seen = 0;
    while seen < n {
        next_event(&mut fast).await.unwrap();
        seen += 1;
    }
    writer.await.unwrap();
    // The slow watcher never read: it is told it fell behind, then its stream ends.
    let mut result = Ok(());
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), slow.next())
        .await
        .expect("the slow watcher's stream ends")
    {
        if let Err(e) = item {
            result = Err(e);
        }
    }
    assert!(matches!(result, Err(Error::TooOld { .. })), "{result:?}");
}

async fn compaction_makes_old_revisions_too_old(backend: Backend) {
    let s = backend.open().await;
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            s.create(&format!("/k/{i}"), b("v"), None)
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let at = revs[5];
    s.compact(at).await.unwrap();
    s.compact(at).await.unwrap(); // again: already done, not an error
    let opts = |r| ListOptions {
        revision: Some(r),
        ..Default::default()
    };
    assert!(matches!(
        s.list("/k/", opts(revs[4])).await,
        Err(Error::TooOld { .. })
    ));
    assert_eq!(s.list("/k/", opts(at)).await.unwrap().items.len(), 6);
    assert!(matches!(
        s.watch("/k/", revs[3]).await.map(|_| ()),
        Err(Error::TooOld { .. })
    ));
    let mut w = s.watch("/k/", revs[4]).await.unwrap();
    for r in &revs[5..] {
        assert_eq!(next_event(&mut w).await.unwrap().revision(), *r);
    }
    let future = s.current_revision().await.unwrap() + 10;
    assert!(matches!(
        s.compact(future).await,
        Err(Error::FutureRevision { .. })
    ));
    // Reads of the current state are unaffected.
    assert_eq!(
        s.list("/k/", ListOptions::default())
            .await
            .unwrap()
            .items
            .len(),
        10
    );
}

async fn ttl_expires_keys(backend: Backend) {
    let s = backend.open().await;
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch("/ttl/", from).await.unwrap();
    let started = Instant::now();
    s.create("/ttl/short", b("x"), Some(Duration::from_secs(2)))
        .await
        .unwrap();
    s.create("/ttl/forever", b("y"), None).await.unwrap();
    let long = s
        .create("/ttl/long", b("z"), Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(s.get("/ttl/short").await.unwrap().is_some());
    for _ in 0..3 {
        next_event(&mut w).await.unwrap();
    }
    let e = tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("expiry within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(e.kind, EventKind::Deleted);
    assert_eq!(&*e.kv.key, "/ttl/short");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert_eq!(s.get("/ttl/short").await.unwrap(), None);
    assert!(s.get("/ttl/forever").await.unwrap().is_some());
    assert_eq!(s.get("/ttl/long").await.unwrap(), Some(long));
}

/// A watch resumes from a revision taken before the store (or etcd) restarted.
async fn watch_resumes_after_restart(mut backend: Backend) {
    if backend.kind == Kind::Memory {
        return; // nothing survives a restart in memory, by design
    }
    let s = backend.open().await;
    let first = s.create("/res/a", b("1"), None).await.unwrap();
    let second = s.create("/res/b", b("2"), None).await.unwrap();
    drop(s);
    if let Some(etcd) = &mut backend.etcd {
        etcd.restart();
    }
    let s = backend.open().await;
    assert_eq!(s.current_revision().await.unwrap(), second.mod_revision);
    let mut w = s.watch("/res/", first.mod_revision - 1).await.unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().kv, first);
    assert_eq!(next_event(&mut w).await.unwrap().kv, second);
    let third = s.create("/res/c", b("3"), None).await.unwrap();
    assert_eq!(third.mod_revision, second.mod_revision + 1);
    assert_eq!(next_event(&mut w).await.unwrap().kv, third);
}

/// After compaction and a restart, the current state, the state at the compaction point and
/// the history after it are all intact.
async fn compaction_survives_restart(mut backend: Backend) {
    if backend.kind == Kind::Memory {
        return;
    }
    let s = backend.open().await;
    let mut revs = BTreeMap::new();
    for round in 0..5 {
        for k in 0..10 {
            let key = format!("/cr/{k}");
            let kv = match revs.get(&key) {
                Some(r) if (k + round) % 4 == 0 => {
                    s.delete(&key, Some(*r)).await.unwrap();
                    revs.remove(&key);
                    continue;
                }
                Some(r) => s.update(&key, b(&format!("{round}")), *r, None).await,
                None => s.create(&key, b(&format!("{round}")), None).await,
            }
            .unwrap();
            revs.insert(key, kv.mod_revision);
        }
        if round == 2 {
            let at = s.current_revision().await.unwrap();
            s.compact(at).await.unwrap();
        }
    }
    let compacted_at = {
        // The point of the compaction: the first revision still listable.
        let mut r = s.current_revision().await.unwrap();
        while s
            .list(
                "/cr/",
                ListOptions {
                    revision: Some(r - 1),
                    ..Default::default()
                },
            )
            .await
            .is_ok()
        {
            r -= 1;
        }
        r
    };
    let before_now = list_all(&*s, "/cr/", 0, None).await.unwrap().0;
    let before_then = list_all(&*s, "/cr/", 3, Some(compacted_at))
        .await
        .unwrap()
        .0;
    let mut w = s.watch("/cr/", compacted_at).await.unwrap();
    let mut history = Vec::new();
    let now = s.current_revision().await.unwrap();
    while history.last().is_none_or(|r| *r < now) {
        history.push(next_event(&mut w).await.unwrap().revision());
    }
    drop(w);
    drop(s);
    if let Some(etcd) = &mut backend.etcd {
        etcd.restart();
    }
    let s = backend.open().await;
    assert_eq!(list_all(&*s, "/cr/", 0, None).await.unwrap().0, before_now);
    assert_eq!(
        list_all(&*s, "/cr/", 3, Some(compacted_at))
            .await
            .unwrap()
            .0,
        before_then
    );
    assert!(matches!(
        s.list(
            "/cr/",
            ListOptions {
                revision: Some(compacted_at - 1),
                ..Default::default()
            }
        )
        .await,
        Err(Error::TooOld { .. })
    ));
    let mut w = s.watch("/cr/", compacted_at).await.unwrap();
    for r in history {
        let e = next_event(&mut w).await.unwrap();
        assert_eq!(e.revision(), r);
        if e.kind != EventKind::Added {
            assert!(
                e.prev.is_some(),
                "the previous value survives compaction: {e:?}"
            );
        }
    }
}

/// The history kept for watches and old reads is bounded; the state is not affected.
async fn history_is_bounded(mut backend: Backend) {
    backend.history_limit = 50;
    let s = backend.open().await;
    let first = s.current_revision().await.unwrap();
    let mut revs = BTreeMap::new();
    for i in 0..500 {
        let key = format!("/hb/{}", i % 20);
        let kv = match revs.get(&key) {
            Some(r) => s.update(&key, b(&i.to_string()), *r, None).await,
            None => s.create(&key, b(&i.to_string()), None).await,
        }
        .unwrap();
        revs.insert(key, kv.mod_revision);
    }
    let state = list_all(&*s, "/hb/", 7, None).await.unwrap().0;
    assert_eq!(state.len(), 20);
    assert_eq!(state[0], ("/hb/0".to_string(), b("480")));
    if backend.kind != Kind::Etcd {
        // etcd keeps its own history; the embedded store forgets beyond the limit.
        assert!(matches!(
            s.watch("/hb/", first).await.map(|_| ()),
            Err(Error::TooOld { .. })
        ));
    }
    // Recent history is there.
    let recent = s.current_revision().await.unwrap() - 10;
    let mut w = s.watch("/hb/", recent).await.unwrap();
    for _ in 0..10 {
        next_event(&mut w).await.unwrap();
    }
    if backend.kind != Kind::Memory {
        drop(w);
        drop(s);
        if let Some(etcd) = &mut backend.etcd {
            etcd.restart();
        }
        let s = backend.open().await;
        assert_eq!(list_all(&*s, "/hb/", 7, None).await.unwrap().0, state);
    }
}
