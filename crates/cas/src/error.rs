//! The one place where CAS errors become HTTP answers.
//!
//! Every error of the REST API (both surfaces: veil's `/v1/…` and SCONE's `POST /session`) is an
//! [`ApiError`]; [`ApiError::status_and_code`] maps it to an HTTP status and a stable
//! machine-readable code, and the body is always
//! `{"code": "<stable_code>", "msg": ["outer", "cause", …]}` (SCONE's `msg` cause chain plus
//! veil's `code`). Internal details (database paths, I/O errors) are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to a REST client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The route needs a client certificate and the TLS connection has none.
    #[error("this route needs a TLS client certificate")]
    Unauthenticated,
    /// Malformed request (query, name, encoding); the messages say what is wrong.
    #[error("bad request")]
    BadRequest(&'static str, Vec<String>),
    /// The session document is invalid (diagnostics with line:column and field path).
    #[error("invalid session")]
    InvalidSession(Vec<String>),
    /// The session uses something veil parses but does not enforce yet.
    #[error("not supported yet")]
    NotSupported(Vec<String>),
    /// The body is larger than the limit.
    #[error("request body too large")]
    BodyTooLarge(usize),
    /// The caller may not do this (and may know the session exists).
    #[error("forbidden")]
    Forbidden(Vec<String>),
    /// Unknown session, or one the caller may not read (no existence oracle).
    #[error("session not found")]
    SessionNotFound(Vec<String>),
    /// A secret that does not exist or is not public.
    #[error("secret not visible")]
    SecretNotVisible(Vec<String>),
    /// No such route.
    #[error("no such route")]
    NoRoute(String),
    /// Method not allowed on an existing route.
    #[error("method not allowed")]
    MethodNotAllowed(String),
    /// The session name is taken (create without `predecessor`).
    #[error("session exists")]
    Exists(Vec<String>),
    /// The predecessor is not the current version (lost an update race or stale).
    #[error("stale predecessor")]
    Stale(Vec<String>),
    /// The request took too long.
    #[error("timeout")]
    Timeout,
    /// A stored record failed authentication (tampered DB or wrong key).
    #[error("integrity")]
    Integrity,
    /// Any other internal failure (details are logged only).
    #[error("internal")]
    Internal,
}

impl ApiError {
    /// HTTP status and stable code of this error (the single mapping).
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "client_certificate_required"),
            Self::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            Self::InvalidSession(_) => (StatusCode::BAD_REQUEST, "invalid_session"),
            Self::NotSupported(_) => (StatusCode::BAD_REQUEST, "not_supported_yet"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::SessionNotFound(_) => (StatusCode::NOT_FOUND, "session_not_found"),
            Self::SecretNotVisible(_) => (StatusCode::NOT_FOUND, "secret_not_visible"),
            Self::NoRoute(_) => (StatusCode::NOT_FOUND, "no_such_route"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Exists(_) => (StatusCode::CONFLICT, "session_exists"),
            Self::Stale(_) => (StatusCode::CONFLICT, "predecessor_mismatch"),
            Self::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Self::Integrity => (StatusCode::INTERNAL_SERVER_ERROR, "integrity_failure"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// The `msg` cause chain.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Unauthenticated => vec![
                "Access denied".into(),
                "This route needs a TLS client certificate; connect with one (e.g. curl --cert cert.pem --key key.pem)".into(),
            ],
            Self::BadRequest(_, m)
            | Self::InvalidSession(m)
            | Self::NotSupported(m)
            | Self::Forbidden(m)
            | Self::SessionNotFound(m)
            | Self::SecretNotVisible(m)
            | Self::Exists(m)
            | Self::Stale(m) => m.clone(),
            Self::BodyTooLarge(limit) => vec![
                "Request body too large".into(),
                format!("the limit is {limit} bytes"),
            ],
            Self::NoRoute(r) => vec![format!("No route for {r}")],
            Self::MethodNotAllowed(r) => vec![format!("Method not allowed: {r}")],
            Self::Timeout => vec!["The request timed out".into()],
            Self::Integrity => vec![
                "Internal error".into(),
                "a database record failed authentication (the database was modified or the DB key is wrong)".into(),
            ],
            Self::Internal => vec!["Internal error".into(), "see the CAS log".into()],
        }
    }

    /// Shorthand for a [`ApiError::SessionNotFound`] about `name`.
    pub fn not_found(outer: String) -> Self {
        Self::SessionNotFound(vec![outer, "Session not found".into()])
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Integrity { .. } => {
                tracing::error!(error = %e, "database integrity failure");
                Self::Integrity
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "code": code, "msg": self.messages() });
        (status, axum::Json(body)).into_response()
    }
}
