//! The one place where CAS errors become HTTP answers, for both ports.
//!
//! Every error of the client API (port 8081: veil's `/v1/…`, SCONE's `POST /session`, the
//! owner routes) and of the workload API (port 18765) is an [`ApiError`].
//! [`ApiError::status_and_code`] is the table that maps each variant to an HTTP status and a
//! stable machine-readable code; [`ApiError::messages`] gives the message chain. The body is
//! always a [`veil_api::ErrorBody`]: `{"code": "<stable_code>", "msg": ["outer", "cause", …]}`
//! (SCONE's `msg` cause chain plus veil's `code`).
//!
//! Internal details (database paths, I/O errors, RNG failures) go to `tracing` where the
//! error is made ([`ApiError::internal`], `From<StoreError>`); the client gets only a generic
//! message. No message contains a secret value, key, OTP code or token.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use veil_api::ErrorBody;
use veil_attest::{AppraisalError, NonceError};
use veil_secrets::OtpError;

/// The outer message of every refused attestation.
pub const ATTESTATION_FAILED: &str = "Attestation failed";

/// The one answer a workload gets when the session or service is unknown, its evidence does not
/// appraise (tier, binding, node key, measurement) or the node restriction refuses it (issue 16
/// §5, "Oracles"): it tells neither whether the session or service exists nor what the policy
/// expects. The detail ([`ApiError::detail_code`], [`ApiError::detail_messages`]) goes to the
/// audit log (`attestation_refused`) and the CAS log.
pub const ATTESTATION_REFUSED: &str =
    "The CAS refused this attestation; the reason is in the CAS's audit log (attestation_refused)";

/// An error answered to a client of either port.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // ---- Both ports: access, requests, internal failures ----
    /// The route needs a client certificate and the TLS connection has none.
    #[error("this route needs a TLS client certificate")]
    Unauthenticated,
    /// An owner-only route called by someone else, or by anyone when the CAS has no owner.
    #[error("owner required")]
    OwnerRequired {
        /// What was refused (`Cannot register the node key`, …).
        outer: &'static str,
        /// The CAS has no owner at all.
        no_owner: bool,
    },
    /// Malformed request (query, name, encoding) with its own stable code.
    #[error("bad request")]
    BadRequest(&'static str, Vec<String>),
    /// A JSON request body (workload and node routes) that does not parse or is not valid.
    #[error("invalid request")]
    InvalidRequest {
        /// What was refused.
        outer: &'static str,
        /// Why.
        cause: String,
    },
    /// The body is larger than the limit.
    #[error("request body too large")]
    BodyTooLarge {
        /// What was refused (`Request body too large` on the session routes).
        outer: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// No such route.
    #[error("no such route")]
    NoRoute(String),
    /// Method not allowed on an existing route.
    #[error("method not allowed")]
    MethodNotAllowed(String),
    /// The request took too long.
    #[error("timeout")]
    Timeout,
    /// A stored record failed authentication (tampered DB or wrong key).
    #[error("integrity")]
    Integrity,
    /// Any other internal failure (details are logged only, see [`ApiError::internal`]).
    #[error("internal")]
    Internal,

    // ---- Client API: sessions and values ----
    /// The session document is invalid (diagnostics with line:column and field path).
    #[error("invalid session")]
    InvalidSession(Vec<String>),
    /// The session uses something veil parses but does not enforce yet.
    #[error("not supported yet")]
    NotSupported(Vec<String>),
    /// The caller may not do this (and may know the session exists).
    #[error("forbidden")]
    Forbidden(Vec<String>),
    /// Unknown session, or one the caller may not read (no existence oracle).
    #[error("session not found")]
    SessionNotFound(Vec<String>),
    /// A secret that does not exist or is not public.
    #[error("secret not visible")]
    SecretNotVisible(Vec<String>),
    /// The session name is taken (create without `predecessor`).
    #[error("session exists")]
    Exists(Vec<String>),
    /// The predecessor is not the current version (lost an update race or stale).
    #[error("stale predecessor")]
    Stale(Vec<String>),

    // ---- Client API: owner routes (node registry) ----
    /// Another live registration uses this node id with a different key.
    #[error("node id taken")]
    NodeIdTaken {
        /// What was refused.
        outer: &'static str,
        /// The node id.
        node_id: String,
        /// The key hash it is registered with.
        key_hash: String,
    },
    /// No registration with this key hash or node id.
    #[error("node not found")]
    NodeNotFound {
        /// What was refused.
        outer: &'static str,
        /// The key hash or node id asked for.
        key: String,
    },

    // ---- Workload API: attestation (docs/workload-api.md, steps 1–10) ----
    /// Step 1: the config id is not `session/service[@otp]`.
    #[error("invalid config id")]
    InvalidConfigId(String),
    /// Step 2 (and `POST /v1/workload/nonce`): the nonce is unknown, expired, or over a limit.
    #[error("nonce: {0}")]
    Nonce(NonceError),
    /// Steps 3, 5 and 7: tier mismatch or refusal, bad evidence, binding, measurement.
    #[error("appraisal: {0}")]
    Appraisal(AppraisalError),
    /// Step 7: the node evidence's uid or cgroup is outside the service's `veil.node`
    /// restriction, or a restricted service attested with another tier.
    #[error("node restriction")]
    NodeRestricted(String),
    /// Step 4: unknown session or service (one answer for both).
    #[error("config not found")]
    ConfigNotFound {
        /// The session name.
        session: String,
        /// The service name.
        service: String,
    },
    /// Steps 6, 8–10: the session cannot be turned into a configuration.
    #[error("invalid configuration")]
    InvalidConfiguration(String),
    /// Step 8: the service needs an OTP and the config id has none.
    #[error("otp missing")]
    OtpMissing,
    /// Step 8: the OTP was refused.
    #[error("otp: {0}")]
    Otp(OtpError),
    /// Step 9: the service access token is missing or wrong.
    #[error("service access token invalid")]
    AccessTokenInvalid(String),
    /// Step 10: the CAS keeps too many running instances.
    #[error("too many instances")]
    TooManyInstances,

    // ---- Workload API: running instances (tags, leases, heartbeat, exit) ----
    /// A `rollback_protected` volume's lease is held by another live instance.
    #[error("volume in use")]
    VolumeInUse {
        /// What was refused.
        outer: String,
        /// The volume.
        volume: String,
        /// Public short id of the holder.
        holder_short: String,
        /// Milliseconds until the lease lapses without a heartbeat.
        expires_in_ms: u64,
    },
    /// The instance token is unknown (exited, idle too long, or the CAS restarted).
    #[error("unknown instance")]
    InstanceUnknown {
        /// What was refused.
        outer: String,
    },
    /// The instance's service has no such volume (or no code region).
    #[error("unknown volume")]
    VolumeUnknown {
        /// What was refused.
        outer: String,
    },
    /// The new tag is not 32 lowercase hex characters.
    #[error("invalid tag")]
    InvalidTag {
        /// What was refused.
        outer: String,
    },
    /// The recorded tag is not the one the caller started from.
    #[error("tag mismatch")]
    TagMismatch {
        /// What was refused.
        outer: String,
        /// The tag the CAS holds.
        recorded: Option<String>,
        /// The tag the caller claimed.
        claimed: Option<String>,
    },
    /// The recorded tag changed between reading and the compare-and-swap.
    #[error("tag changed concurrently")]
    TagChanged {
        /// What was refused.
        outer: String,
    },
}

impl ApiError {
    /// HTTP status and stable code of this error: the single table for both ports.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            // Both ports.
            Self::Unauthenticated => (S::UNAUTHORIZED, "client_certificate_required"),
            Self::OwnerRequired { .. } => (S::FORBIDDEN, "owner_required"),
            Self::BadRequest(code, _) => (S::BAD_REQUEST, code),
            Self::InvalidRequest { .. } => (S::BAD_REQUEST, "invalid_request"),
            Self::BodyTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::NoRoute(_) => (S::NOT_FOUND, "no_such_route"),
            Self::MethodNotAllowed(_) => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Timeout => (S::SERVICE_UNAVAILABLE, "timeout"),
            Self::Integrity => (S::INTERNAL_SERVER_ERROR, "integrity_failure"),
            Self::Internal => (S::INTERNAL_SERVER_ERROR, "internal_error"),
            // Client API: sessions and values.
            Self::InvalidSession(_) => (S::BAD_REQUEST, "invalid_session"),
            Self::NotSupported(_) => (S::BAD_REQUEST, "not_supported_yet"),
            Self::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            Self::SessionNotFound(_) => (S::NOT_FOUND, "session_not_found"),
            Self::SecretNotVisible(_) => (S::NOT_FOUND, "secret_not_visible"),
            Self::Exists(_) => (S::CONFLICT, "session_exists"),
            Self::Stale(_) => (S::CONFLICT, "predecessor_mismatch"),
            // Client API: owner routes.
            Self::NodeIdTaken { .. } => (S::CONFLICT, "node_id_taken"),
            Self::NodeNotFound { .. } => (S::NOT_FOUND, "node_not_found"),
            // Workload API: attestation.
            Self::InvalidConfigId(_) => (S::BAD_REQUEST, "invalid_config_id"),
            Self::Nonce(NonceError::Unknown) => (S::FORBIDDEN, "attestation_nonce_unknown"),
            Self::Nonce(NonceError::Expired) => (S::FORBIDDEN, "attestation_nonce_expired"),
            Self::Nonce(NonceError::PeerLimit { .. } | NonceError::Full { .. }) => {
                (S::TOO_MANY_REQUESTS, "attestation_nonce_limit")
            }
            Self::Nonce(NonceError::Random(_)) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
            // One answer for existence, tier, evidence and measurement refusals (oracles).
            Self::Appraisal(_) | Self::ConfigNotFound { .. } | Self::NodeRestricted(_) => {
                (S::FORBIDDEN, "attestation_refused")
            }
            Self::InvalidConfiguration(_) => (S::UNPROCESSABLE_ENTITY, "invalid_configuration"),
            Self::OtpMissing => (S::FORBIDDEN, "otp_missing"),
            Self::Otp(OtpError::Invalid) => (S::FORBIDDEN, "otp_invalid"),
            Self::Otp(OtpError::AlreadyUsed) => (S::FORBIDDEN, "otp_already_used"),
            Self::Otp(OtpError::LockedOut { .. }) => (S::TOO_MANY_REQUESTS, "otp_locked_out"),
            Self::Otp(OtpError::BadSecret(_)) => (S::UNPROCESSABLE_ENTITY, "invalid_configuration"),
            Self::AccessTokenInvalid(_) => (S::FORBIDDEN, "service_access_token_invalid"),
            Self::TooManyInstances => (S::SERVICE_UNAVAILABLE, "too_many_instances"),
            // Workload API: running instances.
            Self::VolumeInUse { .. } => (S::CONFLICT, "volume_in_use"),
            Self::InstanceUnknown { .. } => (S::FORBIDDEN, "instance_unknown"),
            Self::VolumeUnknown { .. } => (S::NOT_FOUND, "volume_unknown"),
            Self::InvalidTag { .. } => (S::BAD_REQUEST, "invalid_tag"),
            Self::TagMismatch { .. } | Self::TagChanged { .. } => {
                (S::CONFLICT, "volume_tag_mismatch")
            }
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The `msg` cause chain, outermost first.
    pub fn messages(&self) -> Vec<String> {
        let attest = |cause: String| vec![ATTESTATION_FAILED.to_string(), cause];
        match self {
            Self::Unauthenticated => vec![
                "Access denied".into(),
                "This route needs a TLS client certificate; connect with one (e.g. curl --cert cert.pem --key key.pem)".into(),
            ],
            Self::OwnerRequired { outer, no_owner: true } => vec![
                outer.to_string(),
                "Owner-only operations are disabled: this CAS has no owner (`[owner] key_hashes` in cas.toml, or `--owner`)".into(),
            ],
            Self::OwnerRequired { outer, no_owner: false } => {
                vec![outer.to_string(), "Only the CAS owner may do this".into()]
            }
            Self::BadRequest(_, m)
            | Self::InvalidSession(m)
            | Self::NotSupported(m)
            | Self::Forbidden(m)
            | Self::SessionNotFound(m)
            | Self::SecretNotVisible(m)
            | Self::Exists(m)
            | Self::Stale(m) => m.clone(),
            Self::InvalidRequest { outer, cause } => vec![outer.to_string(), cause.clone()],
            Self::BodyTooLarge { outer, limit } => {
                vec![outer.to_string(), format!("the limit is {limit} bytes")]
            }
            Self::NoRoute(r) => vec![format!("No route for {r}")],
            Self::MethodNotAllowed(r) => vec![format!("Method not allowed: {r}")],
            Self::Timeout => vec!["The request timed out".into()],
            Self::Integrity => vec![
                "Internal error".into(),
                "a database record failed authentication (the database was modified or the DB key is wrong)".into(),
            ],
            Self::Internal | Self::Nonce(NonceError::Random(_)) => {
                vec!["Internal error".into(), "see the CAS log".into()]
            }
            Self::NodeIdTaken {
                outer,
                node_id,
                key_hash,
            } => vec![
                outer.to_string(),
                format!("Node `{node_id}` is registered with another key ({key_hash}); revoke it first"),
            ],
            Self::NodeNotFound { outer, key } => vec![
                outer.to_string(),
                format!("No node key {key} (key hash or node id) is registered"),
            ],
            Self::InvalidConfigId(m) => attest(m.clone()),
            Self::Nonce(e) => attest(e.to_string()),
            Self::Appraisal(_) | Self::ConfigNotFound { .. } | Self::NodeRestricted(_) => {
                attest(ATTESTATION_REFUSED.into())
            }
            Self::InvalidConfiguration(m) => vec![
                ATTESTATION_FAILED.into(),
                "The session cannot be turned into a configuration".into(),
                m.clone(),
            ],
            Self::OtpMissing => attest(
                "The service requires a One-time Password: append `@<code>` to the config id".into(),
            ),
            Self::Otp(e) => attest(e.to_string()),
            Self::AccessTokenInvalid(m) => attest(m.clone()),
            Self::TooManyInstances => attest("Too many running instances on this CAS".into()),
            Self::VolumeInUse {
                outer,
                volume,
                holder_short,
                expires_in_ms,
            } => vec![
                outer.clone(),
                format!(
                    "volume {volume} is in use by instance {holder_short} (its lease lapses in {} s unless renewed)",
                    expires_in_ms.div_ceil(1000)
                ),
            ],
            Self::InstanceUnknown { outer } => vec![
                outer.clone(),
                "The instance token is unknown: the instance exited, was idle too long, or the CAS restarted".into(),
            ],
            Self::VolumeUnknown { outer } => vec![
                outer.clone(),
                "This instance's service has no such volume (or no code region)".into(),
            ],
            Self::InvalidTag { outer } => vec![
                outer.clone(),
                "The new tag is not 32 lowercase hex characters".into(),
            ],
            Self::TagMismatch {
                outer,
                recorded,
                claimed,
            } => vec![
                outer.clone(),
                format!(
                    "The CAS holds tag {} for it, not {} (a rollback, or another writer)",
                    recorded.as_deref().unwrap_or("<none>"),
                    claimed.as_deref().unwrap_or("<none>")
                ),
            ],
            Self::TagChanged { outer } => {
                vec![outer.clone(), "The recorded tag changed concurrently".into()]
            }
        }
    }

    /// The specific code behind a generic answer (`attestation_refused`), for the audit log
    /// and the CAS log only; [`ApiError::code`] for every other error.
    pub fn detail_code(&self) -> &'static str {
        match self {
            Self::Appraisal(e) => e.code(),
            Self::ConfigNotFound { .. } => "config_not_found",
            Self::NodeRestricted(_) => "attestation_node_restricted",
            other => other.code(),
        }
    }

    /// The specific message chain behind a generic answer, for the audit log and the CAS log
    /// only (it may name the policy's expected measurement); [`ApiError::messages`] for every
    /// other error.
    pub fn detail_messages(&self) -> Vec<String> {
        match self {
            Self::Appraisal(e) => e.chain(),
            Self::ConfigNotFound { session, service } => vec![
                ATTESTATION_FAILED.into(),
                format!(
                    "Could not find service `{service}` in session `{session}` (or the session does not exist)"
                ),
            ],
            Self::NodeRestricted(m) => vec![ATTESTATION_FAILED.into(), m.clone()],
            other => other.messages(),
        }
    }

    /// The answer body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            msg: self.messages(),
        }
    }

    /// A session body over `limit` bytes.
    pub fn body_too_large(limit: usize) -> Self {
        Self::BodyTooLarge {
            outer: "Request body too large",
            limit,
        }
    }

    /// Shorthand for a [`ApiError::SessionNotFound`] about `name`.
    pub fn not_found(outer: String) -> Self {
        Self::SessionNotFound(vec![outer, "Session not found".into()])
    }

    /// An internal failure: `detail` goes to the log, the client gets a generic message.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "{what}");
        Self::Internal
    }

    /// A nonce refusal (an RNG failure is internal and logged).
    pub fn nonce(e: NonceError) -> Self {
        match e {
            NonceError::Random(_) => Self::internal("attestation nonce", e),
            other => Self::Nonce(other),
        }
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

impl From<AppraisalError> for ApiError {
    fn from(e: AppraisalError) -> Self {
        Self::Appraisal(e)
    }
}

impl From<OtpError> for ApiError {
    fn from(e: OtpError) -> Self {
        Self::Otp(e)
    }
}

impl From<crate::workload::build::BuildError> for ApiError {
    /// The message names fields and secrets, never values.
    fn from(e: crate::workload::build::BuildError) -> Self {
        Self::InvalidConfiguration(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    //! The table: codes are stable, internal errors say nothing about their cause.

    use super::*;

    #[test]
    fn codes_and_statuses_are_stable() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::Unauthenticated,
                401,
                "client_certificate_required",
            ),
            (
                ApiError::OwnerRequired {
                    outer: "x",
                    no_owner: true,
                },
                403,
                "owner_required",
            ),
            (
                ApiError::InvalidConfigId("m".into()),
                400,
                "invalid_config_id",
            ),
            (
                ApiError::Nonce(NonceError::Unknown),
                403,
                "attestation_nonce_unknown",
            ),
            (
                ApiError::Nonce(NonceError::Expired),
                403,
                "attestation_nonce_expired",
            ),
            (
                ApiError::Nonce(NonceError::Full { limit: 1 }),
                429,
                "attestation_nonce_limit",
            ),
            (
                ApiError::Appraisal(AppraisalError::SimDisabled),
                403,
                "attestation_refused",
            ),
            (
                ApiError::ConfigNotFound {
                    session: "s".into(),
                    service: "a".into(),
                },
                403,
                "attestation_refused",
            ),
            (
                ApiError::NodeRestricted("uid 1 is not allowed".into()),
                403,
                "attestation_refused",
            ),
            (ApiError::OtpMissing, 403, "otp_missing"),
            (ApiError::Otp(OtpError::Invalid), 403, "otp_invalid"),
            (
                ApiError::Otp(OtpError::AlreadyUsed),
                403,
                "otp_already_used",
            ),
            (
                ApiError::Otp(OtpError::LockedOut {
                    until: 1,
                    started: false,
                }),
                429,
                "otp_locked_out",
            ),
            (
                ApiError::Otp(OtpError::BadSecret("short")),
                422,
                "invalid_configuration",
            ),
            (
                ApiError::TagMismatch {
                    outer: "o".into(),
                    recorded: None,
                    claimed: None,
                },
                409,
                "volume_tag_mismatch",
            ),
            (
                ApiError::InstanceUnknown { outer: "o".into() },
                403,
                "instance_unknown",
            ),
            (
                ApiError::BodyTooLarge {
                    outer: "o",
                    limit: 1,
                },
                413,
                "body_too_large",
            ),
            (ApiError::Internal, 500, "internal_error"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e:?}");
            assert!(!e.messages().is_empty());
        }
        let m = ApiError::ConfigNotFound {
            session: "s".into(),
            service: "a".into(),
        }
        .messages();
        assert_eq!(m[0], ATTESTATION_FAILED);
    }

    #[test]
    fn refused_attestations_give_one_answer_and_keep_the_detail() {
        let expected = "ab".repeat(32);
        let errors = [
            ApiError::ConfigNotFound {
                session: "secret-session".into(),
                service: "a".into(),
            },
            ApiError::Appraisal(AppraisalError::NotTrustworthy(vec![])),
            ApiError::Appraisal(AppraisalError::SimDisabled),
            ApiError::NodeRestricted(format!("uid 7 {expected}")),
        ];
        let bodies: Vec<String> = errors
            .iter()
            .map(|e| serde_json::to_string(&e.body()).unwrap())
            .collect();
        assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
        assert!(!bodies[0].contains("secret-session") && !bodies[0].contains(&expected));
        assert_eq!(errors[0].detail_code(), "config_not_found");
        assert!(
            errors[0]
                .detail_messages()
                .join(" ")
                .contains("secret-session")
        );
        assert_eq!(errors[1].detail_code(), "attestation_factor_mismatch");
        assert_eq!(errors[3].detail_code(), "attestation_node_restricted");
        assert!(errors[3].detail_messages().join(" ").contains(&expected));
        // OTP messages stay specific.
        assert_eq!(ApiError::OtpMissing.detail_code(), "otp_missing");
        assert_eq!(ApiError::OtpMissing.code(), "otp_missing");
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let e = ApiError::internal("volume key", "/secret/path: permission denied");
        let body = serde_json::to_string(&e.body()).unwrap();
        assert!(!body.contains("/secret/path"), "{body}");
        assert_eq!(e.code(), "internal_error");
        let e = ApiError::nonce(NonceError::Random(veil_attest::binding::RandomError));
        assert!(matches!(e, ApiError::Internal));
        assert_eq!(e.messages(), ["Internal error", "see the CAS log"]);
    }
}
