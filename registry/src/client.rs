//! A blocking client for the registry server (`garden publish`, `pull`,
//! `yank`). Whatever it pulls must be verified again before use.

use crate::server::{
    DelegateRequest, Receipt, RegistryInfo, YANKED_HEADER, YankRequest, delegate_message,
    yank_message,
};
use crate::{ComponentRow, Digest, KeyId, SigningKey};

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached.
    #[error("cannot reach the registry at {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The registry answered with an error.
    #[error("the registry answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its one-line reason.
        message: String,
    },
    /// The component was yanked by its publisher.
    #[error(
        "{0} was yanked by its publisher; pull it by digest with --allow-yanked only if you must run it"
    )]
    Yanked(String),
    /// The answer is not what was asked for.
    #[error("the registry's answer is unusable: {0}")]
    BadAnswer(String),
}

/// What to pull.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// `name@version`.
    Version {
        /// Name.
        name: String,
        /// Version.
        version: String,
    },
    /// `sha256:<hex>`.
    Digest(Digest),
}

/// As written on the command line: `name@version` or `sha256:<hex>`.
impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Version { name, version } => write!(f, "{name}@{version}"),
            Reference::Digest(d) => write!(f, "sha256:{}", d.to_hex()),
        }
    }
}

impl std::str::FromStr for Reference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("sha256:") {
            return s
                .parse()
                .map(Reference::Digest)
                .map_err(|e: crate::ParseDigestError| e.to_string());
        }
        match s.split_once('@') {
            Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok(Reference::Version {
                name: n.into(),
                version: v.into(),
            }),
            _ => Err(format!("`{s}` is neither name@version nor sha256:<hex>")),
        }
    }
}

/// A registry client.
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client for the registry at `base` (e.g. `http://127.0.0.1:7878`).
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::blocking::Client::new(),
        }
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let resp = req.send().map_err(|source| ClientError::Http {
            url: url.into(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let message = resp.text().unwrap_or_default().trim().to_string();
        Err(ClientError::Refused { status, message })
    }

    /// Publish a signed component.
    pub fn publish(&self, bytes: Vec<u8>) -> Result<Receipt, ClientError> {
        let url = format!("{}/v1/components", self.base);
        let resp = self.send(self.http.post(&url).body(bytes), &url)?;
        let text = resp.text().map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// Pull bytes (not yet verified: verify before use). A yanked version
    /// is refused, by name (the registry answers 410) or by digest, unless
    /// `allow_yanked` and the reference is a digest: a pin.
    pub fn pull(&self, reference: &Reference, allow_yanked: bool) -> Result<Vec<u8>, ClientError> {
        let url = match reference {
            Reference::Version { name, version } => {
                format!("{}/v1/components/{name}/{version}", self.base)
            }
            Reference::Digest(d) => format!("{}/v1/blobs/{}", self.base, d.to_hex()),
        };
        let resp = self.send(self.http.get(&url), &url)?;
        let yanked = resp
            .headers()
            .get(YANKED_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        if yanked && !allow_yanked {
            return Err(ClientError::Yanked(url));
        }
        let bytes = resp
            .bytes()
            .map_err(|source| ClientError::Http { url, source })?
            .to_vec();
        if let Reference::Digest(d) = reference
            && Digest::of(&bytes) != *d
        {
            return Err(ClientError::BadAnswer(format!(
                "asked for sha256:{} but got bytes hashing to sha256:{}",
                d.to_hex(),
                Digest::of(&bytes).to_hex()
            )));
        }
        Ok(bytes)
    }

    /// Every published (not yanked) component, or every version of `name`.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<ComponentRow>, ClientError> {
        let url = match name {
            Some(n) => format!("{}/v1/components/{n}", self.base),
            None => format!("{}/v1/components", self.base),
        };
        let resp = self.send(self.http.get(&url), &url)?;
        let text = resp
            .text()
            .map_err(|source| ClientError::Http { url, source })?;
        serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// The registry's id, which signed statements name.
    pub fn registry_id(&self) -> Result<String, ClientError> {
        let url = format!("{}/v1/registry", self.base);
        let resp = self.send(self.http.get(&url), &url)?;
        let text = resp
            .text()
            .map_err(|source| ClientError::Http { url, source })?;
        serde_json::from_str::<RegistryInfo>(&text)
            .map(|i| i.id)
            .map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// Yank name@version, signed by `key` (must be its publisher) at `at`
    /// (RFC 3339, close to now: the registry refuses stale statements).
    pub fn yank(
        &self,
        name: &str,
        version: &str,
        key: &SigningKey,
        at: &str,
    ) -> Result<(), ClientError> {
        let registry = self.registry_id()?;
        let digest = self
            .list(Some(name))?
            .into_iter()
            .find(|r| r.version == version)
            .map(|r| r.digest)
            .ok_or_else(|| ClientError::BadAnswer(format!("{name}@{version} is not listed")))?;
        let url = format!("{}/v1/yank", self.base);
        let req = YankRequest {
            name: name.into(),
            version: version.into(),
            signature: hex::encode(key.sign(&yank_message(&registry, name, version, &digest, at))),
            digest,
            registry,
            at: at.into(),
            key_id: key.public().id(),
        };
        self.post_json(&url, &req)
    }

    /// Let `delegate` publish under `name`, signed by `key` (the name's
    /// owner) at `at`.
    pub fn delegate(
        &self,
        name: &str,
        delegate: KeyId,
        key: &SigningKey,
        at: &str,
    ) -> Result<(), ClientError> {
        let registry = self.registry_id()?;
        let url = format!("{}/v1/delegate", self.base);
        let req = DelegateRequest {
            name: name.into(),
            signature: hex::encode(key.sign(&delegate_message(&registry, name, &delegate, at))),
            delegate,
            registry,
            at: at.into(),
            key_id: key.public().id(),
        };
        self.post_json(&url, &req)
    }

    fn post_json(&self, url: &str, body: &impl serde::Serialize) -> Result<(), ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        self.send(
            self.http
                .post(url)
                .header("content-type", "application/json")
                .body(body),
            url,
        )?;
        Ok(())
    }
}
