//! The CAS's HTTPS servers: TLS 1.3 (tokio-rustls), a manual accept loop that records the
//! peer certificate of each connection, and axum routers.
//!
//! Decision 5: the client certificate is **optional at the handshake** and enforced **per route**
//! by one extractor, [`Caller`]. Any well-formed certificate is accepted as an identity whatever
//! its issuer or dates, but its key must sign the handshake (checked by
//! [`veil_identity::AnyClientCert`]); the identity is the key hash of its SPKI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use veil_api::sessions::{HashResponse, SessionList, SessionResponse};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::CasError;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::routing::{Outer, RouteDef, Verb};
use crate::sessions::{Peer, Sessions};

/// Largest accepted request body (the policy document limit).
pub const MAX_BODY: usize = veil_policy::MAX_DOCUMENT_BYTES;
/// Time limit for a handler.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for the TLS handshake and for reading request headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the accept loop knows about a connection; inserted into every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client certificate's identity, if one was presented.
    pub peer: Option<Arc<Peer>>,
    /// The remote address.
    pub remote: SocketAddr,
}

/// Extractor for routes that need a client certificate: answers 401 without one.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Peer>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.peer.clone())
            .map(Caller)
            .ok_or(ApiError::Unauthenticated)
    }
}

/// The owner key hashes (decision 12), as router state for [`Owner`].
#[derive(Debug, Clone)]
pub struct OwnerKeys(pub Arc<Vec<String>>);

impl FromRef<AppState> for OwnerKeys {
    fn from_ref(st: &AppState) -> Self {
        Self(st.owners.clone())
    }
}

/// Extractor for owner-only routes: like [`Caller`] (401 without a certificate), and 403
/// `owner_required` unless the certificate's key hash is an owner's; everyone is refused when
/// the CAS has no owner. The refusal's outer message is the route's [`Outer`].
#[derive(Debug, Clone)]
pub struct Owner(pub Arc<Peer>);

impl<S: Send + Sync> FromRequestParts<S> for Owner
where
    OwnerKeys: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(peer) = Caller::from_request_parts(parts, state).await?;
        let OwnerKeys(owners) = OwnerKeys::from_ref(state);
        let outer = parts
            .extensions
            .get::<Outer>()
            .map_or("Access denied", |o| o.0);
        if owners.is_empty() {
            return Err(ApiError::OwnerRequired {
                outer,
                no_owner: true,
            });
        }
        if !owners.iter().any(|o| o == &peer.key_hash) {
            return Err(ApiError::OwnerRequired {
                outer,
                no_owner: false,
            });
        }
        Ok(Owner(peer))
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    /// Sessions.
    pub sessions: Sessions,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The CAS key hash.
    pub key_hash: String,
    /// Owner key hashes (decision 12).
    pub owners: Arc<Vec<String>>,
    /// The workload API's state (nonces, leases, instances, node registry).
    pub workload: Arc<crate::workload::Workload>,
}

impl FromRef<AppState> for Arc<crate::workload::Workload> {
    fn from_ref(st: &AppState) -> Self {
        st.workload.clone()
    }
}

/// The routes of the client API (port 8081): sessions, values, the owner-only node registry.
pub fn api_routes() -> Vec<RouteDef> {
    let mut routes = vec![
        RouteDef::new(Verb::Get, "/healthz", healthz),
        RouteDef::new(Verb::Get, "/openapi.json", openapi),
        RouteDef::new(Verb::Get, "/metrics", metrics),
        RouteDef::new(Verb::Post, "/session", post_session),
        RouteDef::new(Verb::Post, "/v1/sessions", post_session),
        RouteDef::new(Verb::Get, "/v1/sessions", list_sessions),
        RouteDef::new(Verb::Get, "/v1/sessions/{*name}", get_session),
        RouteDef::new(Verb::Get, "/v1/values/{*spec}", get_values).documented_as(&[
            "/v1/values/session={name}",
            "/v1/values/session={name},secret={secret}",
        ]),
    ];
    routes.extend(crate::workload::routes::owner_routes());
    routes
}

/// The routes of the enclave (workload) API (port 18765).
pub fn enclave_routes() -> Vec<RouteDef> {
    let mut routes = vec![RouteDef::new(Verb::Get, "/healthz", healthz)];
    routes.extend(crate::workload::routes::enclave_routes());
    routes
}

/// The client API router (port 8081), built from [`api_routes`].
pub fn api_router(state: AppState) -> Router {
    finish(crate::routing::router(api_routes()), state)
}

/// The enclave (workload) API router (port 18765), built from [`enclave_routes`].
pub fn enclave_router(state: AppState) -> Router {
    finish(crate::routing::router(enclave_routes()), state)
}

/// Fallbacks, the observing middleware and the state, common to both routers.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Metrics, timeout and a request log line (without bodies) around every handler.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let resp = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout.into_response(),
    };
    let took = start.elapsed();
    st.metrics
        .record(method.as_str(), &route, resp.status().as_u16(), took);
    tracing::debug!(%method, route, status = resp.status().as_u16(), micros = took.as_micros() as u64, "request");
    resp
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        crate::OPENAPI_JSON,
    )
        .into_response()
}

async fn metrics(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let local = req
        .extensions()
        .get::<ConnInfo>()
        .is_some_and(|c| c.remote.ip().is_loopback());
    if !local {
        return Err(ApiError::Forbidden(vec![
            "Access denied".into(),
            "/metrics is served to loopback clients only".into(),
        ]));
    }
    let text = st.metrics.render(
        st.sessions.store().session_count(),
        st.sessions.store().counter(),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute(format!("{method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} {}", uri.path()))
}

/// Parse the query string, refusing any parameter not in `allowed`.
fn query(uri: &Uri, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let q: axum::extract::Query<Vec<(String, String)>> = axum::extract::Query::try_from_uri(uri)
        .map_err(|e| {
            ApiError::BadRequest(
                "invalid_query",
                vec!["Invalid query string".into(), e.body_text()],
            )
        })?;
    for (k, _) in &q.0 {
        if !allowed.contains(&k.as_str()) {
            let known = if allowed.is_empty() {
                "this route takes no query parameters".to_string()
            } else {
                format!("known parameters: {}", allowed.join(", "))
            };
            return Err(ApiError::BadRequest(
                "unknown_query_parameter",
                vec![format!("Unknown query parameter `{k}`"), known],
            ));
        }
    }
    Ok(q.0)
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(ApiError::BadRequest(
            "invalid_name",
            vec![format!(
                "Invalid session name `{name}`: empty, `.` and `..` path segments are not allowed"
            )],
        ));
    }
    veil_policy::check_session_name(name).map_err(|m| ApiError::BadRequest("invalid_name", vec![m]))
}

/// Read a UTF-8 body of at most [`MAX_BODY`] bytes. A declared `Content-Length` over the
/// limit is refused before the body is read (so `Expect: 100-continue` clients never send it).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::body_too_large(MAX_BODY));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::body_too_large(MAX_BODY))?;
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        ApiError::BadRequest(
            "invalid_utf8",
            vec![
                "The request body is not valid UTF-8".into(),
                format!("invalid byte at offset {}", e.utf8_error().valid_up_to()),
            ],
        )
    })
}

/// `POST /session` and `POST /v1/sessions`: create, or update when `predecessor` is present.
async fn post_session(
    State(st): State<AppState>,
    Caller(peer): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    let text = read_body(&headers, body).await?;
    let hash = st.sessions.upload(&peer, &text).await?;
    Ok((StatusCode::CREATED, axum::Json(HashResponse { hash })).into_response())
}

/// `GET /v1/sessions/{*name}[?hash=H]` → `{"session", "hash"}`.
async fn get_session(
    State(st): State<AppState>,
    Caller(peer): Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = query(&uri, &["hash"])?;
    check_name(&name)?;
    let hash = q.iter().find(|(k, _)| k == "hash").map(|(_, v)| v.as_str());
    if let Some(h) = hash
        && !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::BadRequest(
            "invalid_hash",
            vec![format!("Invalid `hash` {h:?}: expected 64 hex characters")],
        ));
    }
    let hash = hash.map(|h| h.to_ascii_lowercase());
    let (session, hash) = st.sessions.read(&peer, &name, hash.as_deref())?;
    st.sessions
        .store()
        .audit(vec![veil_audit::Event::SessionRead {
            session: name.clone(),
            hash: hash.clone(),
            by: peer.key_hash.clone(),
        }])
        .await?;
    Ok(axum::Json(SessionResponse { session, hash }).into_response())
}

/// `GET /v1/sessions[?namespace=NS]` → `{"sessions": [names]}` (those whose `list_sessions`
/// admits the caller).
async fn list_sessions(
    State(st): State<AppState>,
    Caller(peer): Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = query(&uri, &["namespace"])?;
    let ns = q
        .iter()
        .find(|(k, _)| k == "namespace")
        .map(|(_, v)| v.as_str());
    if let Some(ns) = ns {
        check_name(ns)?;
    }
    let names = st.sessions.list(&peer, ns)?;
    Ok(axum::Json(SessionList { sessions: names }).into_response())
}

#[derive(Debug)]
struct ValuesSpec {
    session: String,
    secret: Option<String>,
}

fn parse_values_spec(spec: &str) -> Result<ValuesSpec, ApiError> {
    let bad = |m: String| ApiError::BadRequest("invalid_values_path", vec![m]);
    let mut session = None;
    let mut secret = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("session", v)) if session.is_none() => session = Some(v.to_string()),
            Some(("secret", v)) if secret.is_none() => secret = Some(v.to_string()),
            _ => {
                return Err(bad(format!(
                    "Invalid values path `{spec}`: expected `session=<name>` or `session=<name>,secret=<secret>`"
                )));
            }
        }
    }
    let session = session.ok_or_else(|| {
        bad(format!(
            "Invalid values path `{spec}`: `session=<name>` is missing"
        ))
    })?;
    Ok(ValuesSpec { session, secret })
}

/// `GET /v1/values/session=<name>[,secret=<s>]` (no client certificate needed). Never an
/// existence oracle: an absent session answers byte-for-byte like one with nothing public
/// (see [`crate::sessions::Sessions::public_values`]).
async fn get_values(
    State(st): State<AppState>,
    Path(spec): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    query(&uri, &[])?;
    let spec = parse_values_spec(&spec)?;
    check_name(&spec.session)?;
    let value = st
        .sessions
        .public_values(&spec.session, spec.secret.as_deref())?;
    Ok(axum::Json(value).into_response())
}

/// How often lapsed persisted leases are removed.
const LEASE_SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// Serve `router` with TLS on `listener` until the process ends. Each connection's client
/// certificate (if any) is attached to its requests as [`ConnInfo`].
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| Peer::from_der(c).ok())
                .map(Arc::new);
            let info = ConnInfo { peer, remote };
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                let r = router.clone();
                async move {
                    use tower::ServiceExt as _;
                    r.oneshot(req.map(Body::new)).await
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Settings of a CAS instance (from flags and `cas.toml`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Data directory (DB, identity, DB key, ports.json).
    pub data_dir: PathBuf,
    /// Client API address.
    pub api_listen: SocketAddr,
    /// Enclave API address.
    pub enclave_listen: SocketAddr,
    /// DB key file; `None` = `<data_dir>/cas.db-key`, generated with a warning when missing.
    pub db_key_file: Option<PathBuf>,
    /// Owner key hashes.
    pub owners: Vec<String>,
    /// Subject alternative names of the CAS certificate (first start only).
    pub alt_names: Vec<String>,
    /// Accept `sim` evidence (decision 1: `[attestation] allow_sim`, `--allow-sim-tier`).
    pub allow_sim: bool,
}

/// A running CAS.
pub struct Running {
    /// Bound client API address.
    pub api_addr: SocketAddr,
    /// Bound enclave API address.
    pub enclave_addr: SocketAddr,
    /// The CAS key hash.
    pub key_hash: String,
    /// The server tasks (they run until aborted or the runtime ends).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    store: crate::store::Store,
}

impl Running {
    /// Graceful stop: stop accepting connections, then append `cas_stopped` with the DB
    /// counter to the audit log and close it. Requests still in flight after this get an
    /// error instead of an unaudited answer.
    pub async fn stop(self) -> Result<(), CasError> {
        for t in &self.tasks {
            t.abort();
        }
        let store = self.store;
        let Some(audit) = store.audit_log() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || audit.close(store.counter()))
            .await
            .map_err(|e| CasError::Audit(e.to_string()))?
            .map_err(|e| CasError::Audit(e.to_string()))
    }
}

/// Open the store, load or create the CAS identity, bind both ports, write `ports.json` and
/// start serving.
pub async fn start(opts: ServeOptions) -> Result<Running, CasError> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|source| CasError::Io {
        path: opts.data_dir.display().to_string(),
        source,
    })?;
    let identity = crate::load_or_create_cas_identity(&opts.data_dir, &opts.alt_names)?;
    let key_hash = identity.key_hash();
    let db_key = crate::db_key(&opts)?;
    let db_path = opts.data_dir.join("cas.redb");
    let store = crate::store::Store::open(&db_path, &db_key)?;
    let audit = crate::audit::Audit::open(&opts.data_dir, &identity, store.counter())?;
    store.set_audit(Arc::new(audit));
    let workload = crate::workload::Workload::new(store.clone(), opts.allow_sim)?;
    let state = AppState {
        sessions: Sessions::new(store.clone()),
        metrics: Arc::default(),
        key_hash: key_hash.clone(),
        owners: Arc::new(opts.owners.clone()),
        workload,
    };
    if opts.owners.is_empty() {
        tracing::warn!("no CAS owner configured: owner-only operations are disabled");
    }
    let tls = veil_identity::server_config(
        &identity,
        Arc::new(veil_identity::AnyClientCert::new(false)),
    )?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| CasError::Bind { addr, source })
    };
    let api = bind(opts.api_listen).await?;
    let enclave = bind(opts.enclave_listen).await?;
    let api_addr = api.local_addr().map_err(|source| CasError::Bind {
        addr: opts.api_listen,
        source,
    })?;
    let enclave_addr = enclave.local_addr().map_err(|source| CasError::Bind {
        addr: opts.enclave_listen,
        source,
    })?;
    let ports = serde_json::json!({
        "api": api_addr.to_string(),
        "enclave": enclave_addr.to_string(),
        "key_hash": key_hash,
    });
    let ports_path = opts.data_dir.join("ports.json");
    let tmp = opts.data_dir.join("ports.json.tmp");
    std::fs::write(&tmp, ports.to_string())
        .and_then(|_| std::fs::rename(&tmp, &ports_path))
        .map_err(|source| CasError::Io {
            path: ports_path.display().to_string(),
            source,
        })?;
    tracing::info!(%api_addr, %enclave_addr, "CAS listening (client API, enclave API)");
    let sweeper = state.workload.clone();
    let tasks = vec![
        tokio::spawn(serve_tls(api, acceptor.clone(), api_router(state.clone()))),
        tokio::spawn(serve_tls(enclave, acceptor, enclave_router(state))),
        // Persisted leases that lapsed without heartbeats are removed from the DB.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = sweeper.sweep().await {
                    tracing::warn!(error = %e, "removing lapsed leases failed");
                }
            }
        }),
    ];
    Ok(Running {
        api_addr,
        enclave_addr,
        key_hash,
        tasks,
        store,
    })
}

#[cfg(test)]
mod tests {
    //! Query and name checks, the route tables against the OpenAPI document, and the
    //! [`Caller`]/[`Owner`] extractors through the real routers.

    use std::collections::BTreeSet;

    use veil_api::ErrorBody;
    use veil_identity::Identity;

    use super::*;

    /// Every (method, path) the two routers serve is documented in `/openapi.json`, and
    /// every documented operation is served. The routers are built from the same tables.
    #[test]
    fn openapi_documents_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI_JSON).unwrap();
        let served: BTreeSet<(String, String)> = api_routes()
            .iter()
            .chain(enclave_routes().iter())
            .flat_map(|r| {
                r.openapi_paths()
                    .into_iter()
                    .map(|p| (r.verb.openapi_key().to_string(), p))
            })
            .collect();
        let methods = [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ];
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| methods.contains(&m.as_str()))
                    .map(|m| (m.clone(), path.clone()))
            })
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
        );
        // The workload and node routes are among them.
        for p in [
            veil_api::workload::NONCE_PATH,
            veil_api::workload::ATTEST_PATH,
            veil_api::nodes::NODES_PATH,
        ] {
            assert!(served.contains(&("post".into(), p.into())), "{p}");
        }
    }

    fn state(dir: &std::path::Path, owners: Vec<String>) -> AppState {
        let store = crate::store::Store::open(&dir.join("cas.redb"), &[1u8; 32]).unwrap();
        AppState {
            sessions: Sessions::new(store.clone()),
            metrics: Arc::default(),
            key_hash: String::new(),
            owners: Arc::new(owners),
            workload: crate::workload::Workload::new(store, false).unwrap(),
        }
    }

    /// `method path` with `body`, on a connection with `id`'s certificate (if any).
    async fn call(
        router: &Router,
        method: &str,
        path: &str,
        id: Option<&Identity>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        use tower::ServiceExt as _;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_string()))
            .unwrap();
        req.extensions_mut().insert(ConnInfo {
            peer: id.map(|i| Arc::new(Peer::from_der(i.cert_der()).unwrap())),
            remote: "127.0.0.1:1".parse().unwrap(),
        });
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn error(v: serde_json::Value) -> ErrorBody {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn owner_routes_need_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Identity::generate("owner", &[]).unwrap();
        let stranger = Identity::generate("stranger", &[]).unwrap();
        let router = api_router(state(dir.path(), vec![owner.key_hash()]));
        // No certificate: 401, as for any Caller route.
        let (st, v) = call(&router, "GET", "/v1/nodes", None, "").await;
        assert_eq!(
            (st, error(v).code.as_str()),
            (401, "client_certificate_required")
        );
        // Not the owner: 403 with the route's own outer message.
        for (method, path, outer) in [
            ("GET", "/v1/nodes", "Cannot list the node keys"),
            ("POST", "/v1/nodes", "Cannot register the node key"),
            ("DELETE", "/v1/nodes/abc", "Cannot revoke the node key"),
        ] {
            let (st, v) = call(&router, method, path, Some(&stranger), "{}").await;
            let e = error(v);
            assert_eq!(
                (st, e.code.as_str()),
                (403, "owner_required"),
                "{method} {path}"
            );
            assert_eq!(e.msg, [outer, "Only the CAS owner may do this"]);
        }
        // The owner passes the extractor and reaches the handler.
        let (st, v) = call(&router, "GET", "/v1/nodes", Some(&owner), "").await;
        assert_eq!((st, v), (200, serde_json::json!({"nodes": []})));
        let (st, v) = call(&router, "DELETE", "/v1/nodes/abc", Some(&owner), "").await;
        assert_eq!((st, error(v).code.as_str()), (404, "node_not_found"));
        let (st, v) = call(&router, "POST", "/v1/nodes", Some(&owner), "{\"x\": 1}").await;
        let e = error(v);
        assert_eq!((st, e.code.as_str()), (400, "invalid_request"));
        assert_eq!(e.msg[0], "Cannot register the node key");
        // Without a configured owner everyone is refused, the owner-to-be too.
        let dir = tempfile::tempdir().unwrap();
        let router = api_router(state(dir.path(), vec![]));
        let (st, v) = call(&router, "GET", "/v1/nodes", Some(&owner), "").await;
        let e = error(v);
        assert_eq!((st, e.code.as_str()), (403, "owner_required"));
        assert!(
            e.msg[1].starts_with("Owner-only operations are disabled"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn workload_bodies_are_parsed_at_the_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let router = enclave_router(state(dir.path(), vec![]));
        let launcher = Identity::generate("launcher", &[]).unwrap();
        let (st, v) = call(&router, "POST", "/v1/workload/nonce", None, "").await;
        assert_eq!(
            (st, error(v).code.as_str()),
            (401, "client_certificate_required")
        );
        let (st, v) = call(&router, "POST", "/v1/workload/nonce", Some(&launcher), "").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["nonce"].as_str().map(str::len), Some(64));
        // `POST /v1/workload/tags` by the launcher: volume V1 of instance "t" to `new_tag`.
        let post_tag = async |new_tag: &str| {
            let body = serde_json::json!({
                "instance_token": "t", "volume": "V1", "old_tag": null, "new_tag": new_tag
            });
            call(
                &router,
                "POST",
                "/v1/workload/tags",
                Some(&launcher),
                &body.to_string(),
            )
            .await
        };
        // A malformed tag is refused when the body is read.
        let (st, v) = post_tag("nothex").await;
        let e = error(v);
        assert_eq!((st, e.code.as_str()), (400, "invalid_request"));
        assert_eq!(e.msg[0], "Cannot update a volume tag");
        // A well-formed update with an unknown token.
        let (st, v) = post_tag(&"a".repeat(32)).await;
        assert_eq!((st, error(v).code.as_str()), (403, "instance_unknown"));
        let big = "x".repeat(crate::workload::MAX_WORKLOAD_BODY + 1);
        let (st, v) = call(&router, "POST", "/v1/workload/exit", Some(&launcher), &big).await;
        let e = error(v);
        assert_eq!((st, e.code.as_str()), (413, "body_too_large"));
        assert_eq!(e.msg[0], "Cannot report the exit");
        let (st, v) = call(&router, "GET", "/v1/workload/exit", Some(&launcher), "").await;
        assert_eq!((st, error(v).code.as_str()), (405, "method_not_allowed"));
    }

    #[test]
    fn values_spec_and_names() {
        let s = parse_values_spec("session=a/b,secret=x").unwrap();
        assert_eq!(s.session, "a/b");
        assert_eq!(s.secret.as_deref(), Some("x"));
        assert!(parse_values_spec("secret=x").is_err());
        assert!(parse_values_spec("session=a,foo=b").is_err());
        assert!(check_name("a/../b").is_err());
        assert!(check_name("a//b").is_err());
        assert!(check_name("a/b").is_ok());
    }

    #[test]
    fn names() {
        assert!(check_name("a/../b").is_err());
        assert!(check_name("a//b").is_err());
        assert!(check_name("a/b").is_ok());
    }

    #[test]
    fn unknown_query_parameters_are_refused() {
        let uri: Uri = "/v1/sessions/x?hash=1&foo=2".parse().unwrap();
        assert!(query(&uri, &["hash"]).is_err());
        let uri: Uri = "/v1/sessions/x?hash=1".parse().unwrap();
        assert_eq!(query(&uri, &["hash"]).unwrap().len(), 1);
    }
}
