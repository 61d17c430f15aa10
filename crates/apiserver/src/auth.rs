//! Authentication: client certificates (CN = user, O = groups), static tokens
//! (`--token-auth-file`), basic auth (`--basic-auth-file`) and, when allowed, anonymous
//! requests. Authorization is AlwaysAllow for now.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine as _;
use fellowship_apimachinery::ApiError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// Tokens that come and go while the server runs (service-account tokens).
#[derive(Default)]
pub struct TokenTable(std::sync::RwLock<HashMap<String, Arc<User>>>);

impl TokenTable {
    pub fn insert(&self, token: String, user: User) {
        self.0
            .write()
            .expect("not poisoned")
            .insert(token, Arc::new(user));
    }

    pub fn remove(&self, token: &str) {
        self.0.write().expect("not poisoned").remove(token);
    }

    fn get(&self, token: &str) -> Option<Arc<User>> {
        self.0.read().expect("not poisoned").get(token).cloned()
    }
}

#[derive(Default)]
pub struct Authenticator {
    /// Shared, so that authenticating a request copies no names.
    tokens: HashMap<String, Arc<User>>,
    /// Checked after the static tokens.
    pub dynamic_tokens: Option<std::sync::Arc<TokenTable>>,
    /// By user name: the password and the user.
    passwords: HashMap<String, (String, Arc<User>)>,
    pub anonymous: bool,
}

impl Authenticator {
    pub fn add_token(&mut self, token: String, user: User) {
        self.tokens.insert(token, Arc::new(user));
    }

    /// Loads `token,user,uid[,"group1,group2"]` lines.
    pub fn load_tokens(&mut self, path: &Path) -> anyhow::Result<()> {
        for (secret, user) in read_csv(path)? {
            self.tokens.insert(secret, Arc::new(user));
        }
        Ok(())
    }

    /// Loads `password,user,uid[,"group1,group2"]` lines.
    pub fn load_passwords(&mut self, path: &Path) -> anyhow::Result<()> {
        for (secret, user) in read_csv(path)? {
            self.passwords
                .insert(user.name.clone(), (secret, Arc::new(user)));
        }
        Ok(())
    }

    /// Who sent the request: the credentials in its headers, else its client certificate,
    /// else anonymous if allowed. Wrong credentials are refused even where anonymous
    /// requests are allowed, as kube-apiserver does.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        cert_user: Option<&Arc<User>>,
    ) -> Result<Arc<User>, ApiError> {
        if let Some(auth) = headers.get("authorization") {
            let auth = auth.to_str().map_err(|_| ApiError::unauthorized())?;
            if let Some(token) = auth.strip_prefix("Bearer ") {
                let token = token.trim();
                return self
                    .tokens
                    .get(token)
                    .cloned()
                    .or_else(|| self.dynamic_tokens.as_ref()?.get(token))
                    .ok_or_else(ApiError::unauthorized);
            }
            if let Some(basic) = auth.strip_prefix("Basic ") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(basic.trim())
                    .map_err(|_| ApiError::unauthorized())?;
                let decoded = String::from_utf8(decoded).map_err(|_| ApiError::unauthorized())?;
                let (name, password) =
                    decoded.split_once(':').ok_or_else(ApiError::unauthorized)?;
                return match self.passwords.get(name) {
                    Some((want, user)) if want == password => Ok(user.clone()),
                    _ => Err(ApiError::unauthorized()),
                };
            }
            return Err(ApiError::unauthorized());
        }
        if let Some(user) = cert_user {
            return Ok(user.clone());
        }
        if self.anonymous {
            return Ok(Arc::new(User::anonymous()));
        }
        Err(ApiError::unauthorized())
    }
}

fn read_csv(path: &Path) -> anyhow::Result<Vec<(String, User)>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields = csv_fields(line);
        if fields.len() < 3 || fields[0].is_empty() || fields[1].is_empty() {
            anyhow::bail!(
                "{}:{}: expected secret,user,uid[,\"group1,group2\"]",
                path.display(),
                n + 1
            );
        }
        let groups = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            fields[0].clone(),
            User {
                name: fields[1].clone(),
                uid: fields[2].clone(),
                groups,
            },
        ));
    }
    Ok(out)
}

/// Splits one CSV line, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("non-empty").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields.iter().map(|f| f.trim().to_string()).collect()
}

/// The user a client certificate names: CN, and O as groups.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(User {
        name,
        uid: String::new(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quoted_groups() {
        assert_eq!(
            csv_fields(r#"s3cret,admin,1,"system:masters,dev""#),
            ["s3cret", "admin", "1", "system:masters,dev"]
        );
    }

    #[test]
    fn credentials() {
        let mut a = Authenticator::default();
        let user = Arc::new(User {
            name: "admin".into(),
            uid: "1".into(),
            groups: vec![],
        });
        a.tokens.insert("t".into(), user.clone());
        a.passwords
            .insert("admin".into(), ("pw".into(), user.clone()));
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            h
        };
        assert_eq!(a.authenticate(&h("Bearer t"), None), Ok(user.clone()));
        assert!(a.authenticate(&h("Bearer x"), None).is_err());
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:pw");
        assert_eq!(
            a.authenticate(&h(&format!("Basic {basic}")), None),
            Ok(user)
        );
        let wrong = base64::engine::general_purpose::STANDARD.encode("admin:no");
        assert!(a.authenticate(&h(&format!("Basic {wrong}")), None).is_err());
        assert!(a.authenticate(&HeaderMap::new(), None).is_err());
        a.anonymous = true;
        assert_eq!(
            a.authenticate(&HeaderMap::new(), None).unwrap().name,
            "system:anonymous"
        );
    }
}
