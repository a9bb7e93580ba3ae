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
    /// Largest upload, bytes: a longer body is refused before it is read
    /// whole.
    pub max_upload: usize,
    /// Requests served at once; more wait.
    pub max_concurrent: usize,
    /// Requests one client address may make per second, on average.
    pub per_client_per_second: u64,
    /// Requests one client address may make in a burst.
    pub per_client_burst: u32,
    /// How far a signed yank's or delegation's time may lie from the
    /// registry's clock: older ones are stale, and are refused.
    pub statement_window: std::time::Duration,
    /// The registry's data directory: its key signs the audit log's head
    /// after every append, and its own copy of that head is kept there.
    /// `None` leaves the head unsigned (tests of other things).
    pub data_dir: Option<PathBuf>,
}

impl ServerConfig {
    /// A configuration with the default limits.
    pub fn new(addr: SocketAddr, store_url: String, blobs: PathBuf, trust: TrustStore) -> Self {
        ServerConfig {
            addr,
            store_url,
            blobs,
            trust,
            max_upload: DEFAULT_MAX_UPLOAD,
            max_concurrent: 64,
            per_client_per_second: 50,
            per_client_burst: 200,
            statement_window: std::time::Duration::from_secs(300),
            data_dir: None,
        }
    }
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
    /// The registry's audit key cannot be made or read.
    #[error(transparent)]
    Key(#[from] crate::KeyError),
    /// The rate limits are unusable (zero).
    #[error("the per-client rate limit must be above zero")]
    Limits,
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
    /// sha256 of the component yanked (as the registry lists it).
    pub digest: String,
    /// The registry's id (`GET /v1/registry`).
    pub registry: String,
    /// When, RFC 3339; must lie within the registry's window of its clock.
    pub at: String,
    /// Signing key id.
    pub key_id: KeyId,
    /// Hex ed25519 signature of [`yank_message`].
    pub signature: String,
}

/// The bytes a yank request signs: the registry, the component and the
/// time, so it cannot be replayed at another registry, for other bytes, or
/// later.
pub fn yank_message(registry: &str, name: &str, version: &str, digest: &str, at: &str) -> Vec<u8> {
    format!("garden-yank-v2\n{registry}\n{name}@{version}\nsha256:{digest}\n{at}").into_bytes()
}

/// A delegation, signed by a name's owner: `delegate` may publish under
/// `name` at this registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DelegateRequest {
    /// The name.
    pub name: String,
    /// The key that may publish under it.
    pub delegate: KeyId,
    /// The registry's id.
    pub registry: String,
    /// When, RFC 3339.
    pub at: String,
    /// The owner's key id.
    pub key_id: KeyId,
    /// Hex ed25519 signature of [`delegate_message`].
    pub signature: String,
}

/// The bytes a delegation signs.
pub fn delegate_message(registry: &str, name: &str, delegate: &KeyId, at: &str) -> Vec<u8> {
    format!("garden-delegate-v1\n{registry}\n{name}\n{delegate}\n{at}").into_bytes()
}

/// What `GET /v1/registry` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryInfo {
    /// The registry's id, which signed statements name.
    pub id: String,
}

/// The response header that marks a yanked component served by digest.
pub const YANKED_HEADER: &str = "x-garden-yanked";

struct AppState {
    store: Store,
    blobs: BlobStore,
    trust: TrustStore,
    id: String,
    window: std::time::Duration,
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

impl Failure {
    /// A failure of the registry itself: the client learns that it
    /// happened, the registry's log learns what (paths, URLs), so nothing
    /// about the server's files reaches a client.
    fn internal(what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!("{what}: {detail}");
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the registry failed to {what}; its log has the details"),
        )
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Collision { .. } => Failure(StatusCode::CONFLICT, e.to_string()),
            StoreError::NotOwner { .. } => Failure(StatusCode::FORBIDDEN, e.to_string()),
            other => Failure::internal("use its store", other),
        }
    }
}

/// Run blocking work (signature checks, file I/O) off the async workers.
async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::internal(what, e))
}

/// Whether the RFC 3339 time `at` lies within `window` of now.
fn within(at: &str, window: std::time::Duration) -> bool {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else {
        return false;
    };
    let skew = (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).abs();
    skew.to_std().is_ok_and(|d| d <= window)
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
    let mut store = Store::connect(&config.store_url).await?;
    if let Some(dir) = &config.data_dir {
        let key = crate::anchor::host_key(dir)?;
        store =
            store.with_audit_signer(key, Some(crate::anchor::head_file(dir, &config.store_url)));
    }
    let blobs = BlobStore::open(&config.blobs)?;
    let id = store.registry_id().await?;
    let state = Arc::new(AppState {
        store,
        blobs,
        trust: config.trust,
        id,
        window: config.statement_window,
    });
    let governor = tower_governor::governor::GovernorConfigBuilder::default()
        .per_millisecond((1000 / config.per_client_per_second.max(1)).max(1))
        .burst_size(config.per_client_burst.max(1))
        .finish()
        .map(Arc::new)
        .ok_or(ServerError::Limits)?;
    let app = Router::new()
        .route("/v1/registry", get(info))
        .route("/v1/components", post(publish).get(list))
        .route("/v1/components/{name}", get(versions))
        .route("/v1/components/{name}/{version}", get(pull))
        .route("/v1/blobs/{digest}", get(pull_blob))
        .route("/v1/yank", post(yank))
        .route("/v1/delegate", post(delegate))
        .route("/health", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(config.max_upload))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            config.max_concurrent.max(1),
        ))
        .layer(tower_governor::GovernorLayer::new(governor))
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
        // The rate limit is per client address, which needs the peer's.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    };
    Ok((addr, serve))
}

async fn info(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(RegistryInfo { id: s.id.clone() })
}

async fn publish(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<impl IntoResponse, Failure> {
    let trust = s.trust.clone();
    let checked = body.clone();
    let verified = blocking("verify an upload", move || {
        trust
            .verify(&checked)
            .map(|v| (v.manifest().clone(), v.component.key_id.to_string()))
    })
    .await?;
    let (manifest, publisher) = match verified {
        Ok(v) => v,
        Err(e) => {
            // Anyone can send bytes: counted, not audited one by one.
            if let Err(e) = s.store.count("refused-uploads").await {
                tracing::error!("could not count a refused upload: {e}");
            }
            return Err(Failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("refused: {e}"),
            ));
        }
    };
    if let Err(e) = s
        .store
        .check_owner(&manifest.name, &publisher, &now())
        .await
    {
        refuse(&s, &manifest.reference(), &publisher, &e.to_string()).await;
        return Err(e.into());
    }
    let size = i64::try_from(body.len()).unwrap_or(i64::MAX);
    let blobs = s.blobs.clone();
    let digest = blocking("store the component", move || blobs.put(&body))
        .await?
        .map_err(|e| Failure::internal("store the component", e))?;
    let row = ComponentRow {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        digest: digest.to_hex(),
        publisher: publisher.clone(),
        size,
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
    let digest: Digest = row
        .digest
        .parse()
        .map_err(|e: crate::ParseDigestError| Failure::internal("read its index", e))?;
    let blobs = s.blobs.clone();
    let bytes = blocking("read the component", move || blobs.get(&digest))
        .await?
        .map_err(|e| Failure::internal("read the component", e))?;
    // Pulls are anonymous: counted, not audited one by one.
    if let Err(e) = s.store.count("pulls").await {
        tracing::error!("could not count a pull: {e}");
    }
    let yanked = if row.yanked { "true" } else { "false" };
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm"),
            (header::HeaderName::from_static(YANKED_HEADER), yanked),
        ],
        bytes,
    )
        .into_response())
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
    let message = yank_message(&req.registry, &req.name, &req.version, &req.digest, &req.at);
    let signed_by_publisher = signed_by(&s.trust, &req.key_id, &message, &req.signature)
        && row
            .publisher
            .parse::<KeyId>()
            .is_ok_and(|p| p.matches(&req.key_id));
    let refusal = if !signed_by_publisher {
        Some((
            StatusCode::FORBIDDEN,
            format!("it must be signed by its publisher {}", row.publisher),
        ))
    } else if req.registry != s.id {
        Some((
            StatusCode::FORBIDDEN,
            format!(
                "it was signed for registry {}, this is {}",
                req.registry, s.id
            ),
        ))
    } else if req.digest != row.digest {
        Some((
            StatusCode::CONFLICT,
            format!(
                "it names sha256:{}, the registry holds sha256:{}",
                req.digest, row.digest
            ),
        ))
    } else if !within(&req.at, s.window) {
        Some((
            StatusCode::FORBIDDEN,
            format!(
                "it was signed at {:?}, outside {} s of the registry's clock (stale or replayed); sign a fresh one",
                req.at.chars().take(40).collect::<String>(),
                s.window.as_secs()
            ),
        ))
    } else if row.yanked {
        Some((
            StatusCode::CONFLICT,
            "it is yanked already (a replay?)".to_string(),
        ))
    } else {
        None
    };
    if let Some((status, why)) = refusal {
        if signed_by_publisher {
            refuse(
                &s,
                &reference,
                &req.key_id.to_string(),
                &format!("yank refused: {why}"),
            )
            .await;
        }
        return Err(Failure(
            status,
            format!("yank of {reference} refused: {why}"),
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

async fn delegate(
    State(s): State<Arc<AppState>>,
    axum::Json(req): axum::Json<DelegateRequest>,
) -> Result<impl IntoResponse, Failure> {
    let Some(owner) = s.store.owner(&req.name).await? else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!(
                "nobody has published `{}` yet; its first publisher owns it",
                req.name
            ),
        ));
    };
    let message = delegate_message(&req.registry, &req.name, &req.delegate, &req.at);
    let by_owner = signed_by(&s.trust, &req.key_id, &message, &req.signature)
        && owner.parse::<KeyId>().is_ok_and(|o| o.matches(&req.key_id));
    if !by_owner || req.registry != s.id || !within(&req.at, s.window) {
        return Err(Failure(
            StatusCode::FORBIDDEN,
            format!(
                "delegation of `{}` refused: it must be signed by the name's owner {owner}, for this registry ({}), within {} s of its clock",
                req.name,
                s.id,
                s.window.as_secs()
            ),
        ));
    }
    s.store
        .delegate(
            &req.name,
            &req.delegate.to_string(),
            &owner,
            &req.at,
            &req.signature,
        )
        .await?;
    s.store
        .audit(
            &now(),
            "delegate",
            &req.name,
            &owner,
            &format!("to {}", req.delegate),
        )
        .await?;
    Ok((
        StatusCode::OK,
        format!("{} may publish `{}`\n", req.delegate, req.name),
    ))
}

/// Whether `signature` (hex) is `key_id`'s signature of `message`, by a key
/// the registry trusts.
fn signed_by(trust: &TrustStore, key_id: &KeyId, message: &[u8], signature: &str) -> bool {
    let Some(key) = trust
        .keys
        .iter()
        .find(|k| k.id.matches(key_id))
        .and_then(|k| {
            crate::PublicKey::from_pem(&k.public_key, std::path::Path::new("trust store")).ok()
        })
    else {
        return false;
    };
    hex::decode(signature).is_ok_and(|sig| key.verify(message, &sig))
}
