//! `?watch=true`: a stream of `{"type": ..., "object": ...}` events, one JSON document per
//! line, with kube-apiserver's resourceVersion rules, selector transitions, bookmarks and
//! `410 Gone` for history that is no longer kept.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use fellowship_apimachinery::{ApiError, meta};
use fellowship_storage::{Error as StoreError, EventKind, ListOptions};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::objects::{present, present_raw, present_raw_at};
use crate::reply::{Item, Reply, to_table};
use crate::rest::{Query, Rest, Target, selectors};

/// How long a watch lasts without `timeoutSeconds`, as kube-apiserver's minimum request
/// timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

pub async fn watch(
    rest: &Rest,
    t: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Reply, ApiError> {
    let kind = t.kind.clone();
    let (labels, fields) = selectors(&kind, query)?;
    let timeout = match query.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => DEFAULT_TIMEOUT,
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
    };
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let table = headers
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let prefix = kind.key(&t.namespace, "");
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    // Streaming lists (client-go WatchList, kube-rs streaming_lists): the current state as
    // ADDED events, then a bookmark marking their end.
    let send_initial = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    // Without selectors or a Table, stored objects pass through unparsed.
    let raw = !table && labels.is_empty() && fields.is_empty();

    // Without a resource version (or "0"), the watch starts with the current state as ADDED
    // events, then follows from the revision of that state.
    let mut initial = Vec::new();
    let after = if rv.is_empty() || rv == "0" || send_initial {
        let mut options = ListOptions::default();
        loop {
            let page = rest
                .store
                .list(&prefix, options.clone())
                .await
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            for kv in &page.items {
                match raw.then(|| present_raw(kv, &kind)).flatten() {
                    Some(bytes) => initial.push(Item::Raw(bytes)),
                    None => initial.push(Item::Parsed(present(kv, &kind)?)),
                }
            }
            match page.continue_token {
                Some(token) => options.continue_token = Some(token),
                None => break page.revision,
            }
        }
    } else {
        rv.parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?
    };

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let plural = kind.plural;
    let send_line = move |tx: &mpsc::Sender<Bytes>, kind_word: &'static str, object: Value| {
        let object = if table && kind_word != "ERROR" && kind_word != "BOOKMARK" {
            to_table(plural, &[object], json!({}))
        } else {
            object
        };
        let object = serde_json::to_vec(&object).expect("JSON values serialize");
        send_raw(tx.clone(), kind_word, object)
    };

    let mut events = match rest.store.watch(&prefix, after).await {
        Ok(events) => Some(events),
        Err(StoreError::TooOld { requested, .. }) => {
            let status = ApiError::gone(format!("too old resource version: {requested}"));
            send_line(&tx, "ERROR", status.to_status()).await;
            None
        }
        Err(e) => return Err(ApiError::unavailable(e.to_string())),
    };
    let matches = move |o: &Value| labels.matches(meta::labels(o)) && fields.matches(o);
    let task_kind = kind.clone();
    tokio::spawn(async move {
        let kind = task_kind;
        for object in initial {
            let sent = match object {
                Item::Raw(bytes) => send_raw(tx.clone(), "ADDED", bytes).await,
                Item::Parsed(o) if matches(&o) => send_line(&tx, "ADDED", o).await,
                Item::Parsed(_) => true,
            };
            if !sent {
                return;
            }
        }
        if send_initial {
            let end = json!({
                "kind": kind.kind,
                "apiVersion": kind.api_version(),
                "metadata": {
                    "resourceVersion": after.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            });
            if !send_line(&tx, "BOOKMARK", end).await {
                return;
            }
        }
        let Some(events) = events.as_mut() else {
            return;
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last = after;
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                // The client went away: stop following the store.
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    let bookmark = json!({
                        "kind": kind.kind,
                        "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": last.to_string()},
                    });
                    if !send_line(&tx, "BOOKMARK", bookmark).await {
                        return;
                    }
                }
                event = events.next() => {
                    let event = match event {
                        None => return,
                        Some(Err(StoreError::TooOld { requested, .. })) => {
                            let status = ApiError::gone(format!("too old resource version: {requested}"));
                            send_line(&tx, "ERROR", status.to_status()).await;
                            return;
                        }
                        Some(Err(e)) => {
                            let status = ApiError::internal(e.to_string());
                            send_line(&tx, "ERROR", status.to_status()).await;
                            return;
                        }
                        Some(Ok(event)) => event,
                    };
                    last = event.revision();
                    if raw && let Some((word, object)) = outgoing_raw(&kind, &event) {
                        if !send_raw(tx.clone(), word, object).await {
                            return;
                        }
                        continue;
                    }
                    let Ok(out) = outgoing(&kind, &event, &matches) else {
                        continue;
                    };
                    if let Some((word, object)) = out
                        && !send_line(&tx, word, object).await
                    {
                        return;
                    }
                }
            }
        }
    });
    let body =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok(Reply::Stream(Body::from_stream(body)))
}

/// Sends one event line. The type comes first, as kube-apiserver writes it: clients such
/// as kube-rs then decode the object straight from the line rather than buffering it.
async fn send_raw(tx: mpsc::Sender<Bytes>, kind_word: &'static str, object: Vec<u8>) -> bool {
    let mut line = Vec::with_capacity(object.len() + kind_word.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind_word.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(&object);
    line.extend_from_slice(b"}\n");
    tx.send(Bytes::from(line)).await.is_ok()
}

/// [`outgoing`] for a watcher without selectors, from the stored bytes; `None` when an
/// object was stored at another version and must be converted.
fn outgoing_raw(
    kind: &fellowship_apimachinery::ResourceKind,
    event: &fellowship_storage::Event,
) -> Option<(&'static str, Vec<u8>)> {
    match event.kind {
        EventKind::Deleted => {
            let prev = event.prev.as_ref()?;
            Some(("DELETED", present_raw_at(prev, kind, event.revision())?))
        }
        EventKind::Added => Some(("ADDED", present_raw(&event.kv, kind)?)),
        _ => Some(("MODIFIED", present_raw(&event.kv, kind)?)),
    }
}

/// The event a watcher sees for a store event: a change that moves an object into or out of
/// the selection is an ADDED or DELETED for this watcher, as kube-apiserver reports it.
fn outgoing(
    kind: &fellowship_apimachinery::ResourceKind,
    event: &fellowship_storage::Event,
    matches: &impl Fn(&Value) -> bool,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let prev = event.prev.as_ref().map(|p| present(p, kind)).transpose()?;
    let was = prev.as_ref().is_some_and(matches);
    // Gone for this watcher: the object as it last saw it, at the event's revision.
    let departed = |mut p: Value| {
        meta::metadata_mut(&mut p).insert(
            "resourceVersion".into(),
            json!(event.revision().to_string()),
        );
        ("DELETED", p)
    };
    Ok(match event.kind {
        EventKind::Deleted => prev.filter(|_| was).map(departed),
        _ => {
            let now = present(&event.kv, kind)?;
            match (was, matches(&now)) {
                (_, true) if event.kind == EventKind::Added || !was => Some(("ADDED", now)),
                (true, true) => Some(("MODIFIED", now)),
                // Leaving the selection.
                (true, false) => prev.map(departed),
                _ => None,
            }
        }
    })
}
