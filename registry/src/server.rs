//! The registry server: publish (verified on upload), pull by name@version or
//! by hash, list, versions, yank. Blobs content-addressed on disk, metadata
//! and the audit log in the [`Store`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::{BlobStore, ComponentRow, Digest, KeyId, Store, StoreError, TrustStore};

/// Default upload limit: 64 MiB.
pub const DEFAULT_MAX_UPLOAD: usize = 64 << 20;

/// How to run a registry.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (loopback by default).
    pub addr: SocketAddr,
    /// `sqlite://...` or `postgres://...`.
    pub store_url: String,
    /// Directory for blobs.
    pub blobs: PathBuf,
    /// Keys whose signatures the registry accepts for publishing.
    pub trust: TrustStore,
    /// Largest upload, bytes.
    pub max_upload: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob directory is unusable.
    #[error(transparent)]
    Blob(#[from] crate::BlobError),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What a successful publish returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Receipt {
    /// name@version.
    pub reference: String,
    /// sha256 of the signed component as stored.
    pub digest: String,
    /// Publisher key id.
    pub publisher: String,
    /// False if the same bytes were already published.
    pub new: bool,
}

/// A yank request, signed by the publisher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct YankRequest {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// When, RFC 3339.
    pub at: String,
    /// Signing key id.
    pub key_id: KeyId,
    /// Hex ed25519 signature of [`yank_message`].
    pub signature: String,
}

/// The bytes a yank request signs.
pub fn yank_message(name: &str, version: &str, at: &str) -> Vec<u8> {
    format!("garden-yank-v1\n{name}@{version}\n{at}").into_bytes()
}

struct AppState {
    store: Store,
    blobs: BlobStore,
    trust: TrustStore,
}

/// Record a refusal; a failure to record must not hide the refusal itself.
async fn refuse(s: &AppState, module: &str, actor: &str, detail: &str) {
    if let Err(e) = s
        .store
        .audit(&now(), "refusal", module, actor, detail)
        .await
    {
        tracing::error!("could not audit a refusal: {e}");
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An error response: status and a one-line reason.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Collision { .. } => Failure(StatusCode::CONFLICT, e.to_string()),
            other => Failure(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// Bind `config.addr` and build the server; returns the bound address and
/// the future that serves until `shutdown` completes.
pub async fn bind(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = std::io::Result<()>>,
    ),
    ServerError,
> {
    let store = Store::connect(&config.store_url).await?;
    let blobs = BlobStore::open(&config.blobs)?;
    let state = Arc::new(AppState {
        store,
        blobs,
        trust: config.trust,
    });
    let app = Router::new()
        .route("/v1/components", post(publish).get(list))
        .route("/v1/components/{name}", get(versions))
        .route("/v1/components/{name}/{version}", get(pull))
        .route("/v1/blobs/{digest}", get(pull_blob))
        .route("/v1/yank", post(yank))
        .route("/health", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(config.max_upload))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.addr,
        source,
    })?;
    let serve = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((addr, serve))
}

async fn publish(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<impl IntoResponse, Failure> {
    let verified = match s.trust.verify(&body) {
        Ok(v) => v,
        Err(e) => {
            refuse(&s, "-", "-", &format!("publish refused: {e}")).await;
            return Err(Failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("refused: {e}"),
            ));
        }
    };
    let manifest = verified.manifest().clone();
    let publisher = verified.component.key_id.to_string();
    let digest = s
        .blobs
        .put(&body)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let row = ComponentRow {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        digest: digest.to_hex(),
        publisher: publisher.clone(),
        size: body.len() as i64,
        published_at: now(),
        yanked: false,
    };
    let new = match s.store.insert_component(&row).await {
        Ok(new) => new,
        Err(e) => {
            refuse(&s, &manifest.reference(), &publisher, &e.to_string()).await;
            return Err(e.into());
        }
    };
    s.store
        .audit(
            &now(),
            "publish",
            &manifest.reference(),
            &publisher,
            &format!("sha256:{}", row.digest),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Receipt {
            reference: manifest.reference(),
            digest: row.digest,
            publisher,
            new,
        }),
    ))
}

async fn list(State(s): State<Arc<AppState>>) -> Result<impl IntoResponse, Failure> {
    let rows: Vec<ComponentRow> = s
        .store
        .components(None)
        .await?
        .into_iter()
        .filter(|r| !r.yanked)
        .collect();
    Ok(axum::Json(rows))
}

async fn versions(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    let rows = s.store.components(Some(&name)).await?;
    if rows.is_empty() {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no component named `{name}`"),
        ));
    }
    Ok(axum::Json(rows))
}

async fn serve_blob(s: &AppState, row: &ComponentRow) -> Result<Response, Failure> {
    let digest: Digest = row.digest.parse().map_err(|e: crate::ParseDigestError| {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?;
    let bytes = s
        .blobs
        .get(&digest)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    s.store
        .audit(
            &now(),
            "pull",
            &format!("{}@{}", row.name, row.version),
            "-",
            &format!("sha256:{}", row.digest),
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

async fn pull(
    State(s): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let Some(row) = s.store.component(&name, &version).await? else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("{name}@{version} is not published"),
        ));
    };
    if row.yanked {
        return Err(Failure(
            StatusCode::GONE,
            format!(
                "{name}@{version} was yanked; pull it by hash (sha256:{}) if you must",
                row.digest
            ),
        ));
    }
    serve_blob(&s, &row).await
}

async fn pull_blob(
    State(s): State<Arc<AppState>>,
    Path(digest): Path<String>,
) -> Result<Response, Failure> {
    let digest = digest
        .strip_prefix("sha256:")
        .unwrap_or(&digest)
        .to_string();
    let Some(row) = s.store.component_by_digest(&digest).await? else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no component with sha256 {digest}"),
        ));
    };
    serve_blob(&s, &row).await
}

async fn yank(
    State(s): State<Arc<AppState>>,
    axum::Json(req): axum::Json<YankRequest>,
) -> Result<impl IntoResponse, Failure> {
    let reference = format!("{}@{}", req.name, req.version);
    let Some(row) = s.store.component(&req.name, &req.version).await? else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("{reference} is not published"),
        ));
    };
    let key = s
        .trust
        .keys
        .iter()
        .find(|k| k.id == req.key_id)
        .and_then(|k| {
            crate::PublicKey::from_pem(&k.public_key, std::path::Path::new("trust store")).ok()
        });
    let signature = hex::decode(&req.signature).unwrap_or_default();
    let valid =
        key.is_some_and(|k| k.verify(&yank_message(&req.name, &req.version, &req.at), &signature));
    if !valid || row.publisher != req.key_id.to_string() {
        refuse(
            &s,
            &reference,
            &req.key_id.to_string(),
            "yank refused: not signed by the publisher",
        )
        .await;
        return Err(Failure(
            StatusCode::FORBIDDEN,
            format!(
                "yank of {reference} refused: it must be signed by its publisher {}",
                row.publisher
            ),
        ));
    }
    s.store.yank(&req.name, &req.version).await?;
    s.store
        .audit(
            &now(),
            "yank",
            &reference,
            &req.key_id.to_string(),
            "yanked",
        )
        .await?;
    Ok((StatusCode::OK, format!("yanked {reference}\n")))
}
