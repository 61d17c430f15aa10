//! Continue tokens for paginated lists, in the shape kube-apiserver uses: base64 of a small
//! JSON document naming the revision of the first page and where the next page starts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Revision};

const VERSION: &str = "fellowship/v1";

/// Where the next page of a list starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continue {
    #[serde(rename = "v")]
    version: String,
    /// The revision every page of this list is read at.
    #[serde(rename = "rv")]
    pub revision: Revision,
    /// The first key of the next page, relative to the listed prefix, so that a token cannot
    /// lead a list outside its prefix.
    pub start: String,
}

impl Continue {
    pub fn new(revision: Revision, prefix: &str, next_key: &str) -> Self {
        let start = next_key
            .strip_prefix(prefix)
            .unwrap_or(next_key)
            .to_string();
        Continue {
            version: VERSION.to_string(),
            revision,
            start,
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("token serializes"))
    }

    pub fn decode(token: &str) -> Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|e| Error::InvalidContinue(format!("not base64: {e}")))?;
        let c: Continue = serde_json::from_slice(&bytes)
            .map_err(|e| Error::InvalidContinue(format!("malformed: {e}")))?;
        if c.version != VERSION {
            return Err(Error::InvalidContinue(format!(
                "unknown version {:?}",
                c.version
            )));
        }
        if c.revision == 0 {
            return Err(Error::InvalidContinue("no revision".into()));
        }
        Ok(c)
    }

    /// The full key the next page starts at.
    pub fn start_key(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.start)
    }
}

/// The revision and first key a list reads from, given its options.
pub(crate) fn resolve(
    prefix: &str,
    options: &crate::ListOptions,
) -> Result<(Option<Revision>, String)> {
    match &options.continue_token {
        Some(token) => {
            let c = Continue::decode(token)?;
            Ok((Some(c.revision), c.start_key(prefix)))
        }
        None => Ok((options.revision.filter(|r| *r > 0), prefix.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let c = Continue::new(42, "/configmaps/", "/configmaps/default/b");
        let decoded = Continue::decode(&c.encode()).unwrap();
        assert_eq!(decoded, c);
        assert_eq!(decoded.start_key("/configmaps/"), "/configmaps/default/b");
        assert!(matches!(
            Continue::decode("!!"),
            Err(Error::InvalidContinue(_))
        ));
        assert!(matches!(
            Continue::decode(&URL_SAFE_NO_PAD.encode(b"{}")),
            Err(Error::InvalidContinue(_))
        ));
    }
}
