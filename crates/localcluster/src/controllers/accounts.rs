//! Service accounts: every active namespace has a `default` one; every service account gets
//! a token Secret (`kubernetes.io/service-account-token`, with `token`, `ca.crt` and
//! `namespace`) listed in its `secrets`, which `kubefed join` waits for (spec §3.1); and
//! those tokens authenticate to the cluster as `system:serviceaccount:NS:NAME`.

use base64::Engine as _;
use fellowship_apimachinery::{ApiError, meta};
use fellowship_apiserver::auth::User;
use fellowship_storage::EventKind;
use serde_json::{Value, json};

use super::{CONTROLLER_MANAGER, Controllers};

const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const ACCOUNT_NAME: &str = "kubernetes.io/service-account.name";
const ACCOUNT_UID: &str = "kubernetes.io/service-account.uid";

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// The service account a token Secret belongs to.
pub fn token_owner(secret: &Value) -> Option<&str> {
    (secret.get("type")? == TOKEN_TYPE)
        .then(|| annotation(secret, ACCOUNT_NAME))
        .flatten()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Keeps the server's token table in step with the token Secrets.
pub fn track_token(c: &Controllers, event: &EventKind, secret: &Value, namespace: &str) {
    let Some(account) = token_owner(secret) else {
        return;
    };
    let Some(token) = secret
        .pointer("/data/token")
        .and_then(Value::as_str)
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .and_then(|t| String::from_utf8(t).ok())
    else {
        return;
    };
    match event {
        EventKind::Deleted => c.tokens.remove(&token),
        _ => c.tokens.insert(
            token,
            User {
                name: format!("system:serviceaccount:{namespace}:{account}"),
                uid: annotation(secret, ACCOUNT_UID).unwrap_or("").to_string(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ],
            },
        ),
    }
}

/// An active namespace has a `default` service account.
pub async fn namespace(c: &Controllers, name: &str) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let Some(ns) = c.access.get(&k.namespaces, "", name).await? else {
        return Ok(());
    };
    if ns.pointer("/status/phase") != Some(&json!("Active")) {
        return Ok(());
    }
    if c.access
        .get(&k.service_accounts, name, "default")
        .await?
        .is_none()
    {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
        match c
            .access
            .create(&k.service_accounts, name, CONTROLLER_MANAGER, &sa)
            .await
        {
            // The namespace began terminating meanwhile.
            Err(e) if e.code == 403 || e.code == 409 => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

pub async fn service_account(c: &Controllers, namespace: &str, name: &str) -> Result<(), ApiError> {
    let k = &c.access.kinds;
    let account = c.access.get(&k.service_accounts, namespace, name).await?;
    let secrets = c.access.list(&k.secrets, namespace).await?;
    let uid = account.as_ref().map(|a| meta::meta_str(a, "uid"));
    // Tokens of an account that is gone (or was replaced) go too.
    for s in secrets.iter().filter(|s| token_owner(s) == Some(name)) {
        if uid.is_none_or(|uid| annotation(s, ACCOUNT_UID).is_some_and(|u| u != uid)) {
            c.access
                .delete(&k.secrets, namespace, meta::name(s), CONTROLLER_MANAGER)
                .await?;
        }
    }
    let Some(account) = account else {
        return Ok(());
    };
    if account.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(());
    }
    let uid = meta::meta_str(&account, "uid");
    let mine: Vec<&Value> = secrets
        .iter()
        .filter(|s| {
            token_owner(s) == Some(name) && annotation(s, ACCOUNT_UID).is_none_or(|u| u == uid)
        })
        .collect();
    // A token Secret someone created for the account is filled in, as the token controller
    // does; an account without one gets one.
    for s in mine.iter().filter(|s| s.pointer("/data/token").is_none()) {
        let mut filled = (*s).clone();
        filled["data"] = token_data(c, namespace);
        filled["metadata"]["annotations"][ACCOUNT_UID] = json!(uid);
        c.access
            .update(&k.secrets, &filled, false, CONTROLLER_MANAGER)
            .await?;
    }
    let secret_name = match mine.first() {
        Some(s) => meta::name(s).to_string(),
        None => {
            let secret = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "type": TOKEN_TYPE,
                "metadata": {
                    "generateName": format!("{name}-token-"),
                    "namespace": namespace,
                    "annotations": {ACCOUNT_NAME: name, ACCOUNT_UID: uid},
                },
                "data": token_data(c, namespace),
            });
            let created = c
                .access
                .create(&k.secrets, namespace, CONTROLLER_MANAGER, &secret)
                .await?;
            created
                .map(|s| meta::name(&s).to_string())
                .unwrap_or_default()
        }
    };
    let listed = account
        .get("secrets")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|r| r["name"] == secret_name.as_str()));
    if !listed && !secret_name.is_empty() {
        let mut next = account.clone();
        let mut list = account
            .get("secrets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        list.push(json!({"name": secret_name}));
        next["secrets"] = json!(list);
        c.access
            .update(&k.service_accounts, &next, false, CONTROLLER_MANAGER)
            .await?;
    }
    Ok(())
}

fn token_data(c: &Controllers, namespace: &str) -> Value {
    let token = crate::cluster::random_token();
    json!({
        "token": b64(&token),
        "ca.crt": b64(&c.ca_pem),
        "namespace": b64(namespace),
    })
}
