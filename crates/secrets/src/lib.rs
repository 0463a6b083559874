//! veil's secrets engine: what the CAS generates, keeps, migrates, formats and shares.
//!
//! - **Generation** ([`generate`]): `ascii`, `binary` from aws-lc-rs's CSPRNG; private keys
//!   (P-256, P-384, Ed25519, RSA-2048, RSA-3072) with aws-lc-rs; certificates with rcgen.
//! - **Storage form** ([`model`]): [`SecretValues`] maps secret names to [`StoredSecret`]s; the
//!   CAS seals it into its database. `Debug` never prints a value.
//! - **Formats** ([`format_secret`]): the placeholder suffixes of SCONE's session language
//!   (`:hex`, `:base64`, `:crt`, `:privatekey:pem`, `:chain`, ...); raw binary only in files.
//! - **OTP** ([`otp`]): RFC 6238 codes with replay state and lockout, against an injected clock.
//! - **Service access token** ([`check_service_access_token`]): a constant-time comparison.
//!
//! Nothing in this crate logs, and no error message contains a secret value: errors name the
//! secret, its kind and the format or context at fault.

pub mod format;
pub mod generate;
pub mod model;
pub mod otp;
pub mod pkcs12;
pub mod session;

pub use format::format_secret;
pub use model::{Context, KeyAlg, Kind, SecretMaterial, SecretValues, StoredSecret};
pub use otp::{OtpError, OtpState, check_otp, current_otp};
pub use session::{
    ImportResolver, NoImports, binary_key, check_export, expand_text, expand_to_string,
    export_allows, materialize, needs_renewal, otp_secret_for_service, public_value_error_msg,
    public_value_json, public_values_json, renew_expiring, resolve_session_reference,
    service_access_token,
};

/// Errors of the secrets engine. Messages name secrets, never their values.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A placeholder asks for a format the secret's kind does not have.
    #[error("secret `{secret}` (kind {kind}) has no format `:{format}`; valid formats: {valid}")]
    Format {
        /// The secret.
        secret: String,
        /// Its kind.
        kind: Kind,
        /// The format asked for.
        format: String,
        /// The formats its kind has.
        valid: String,
    },
    /// Raw binary asked for where only text may go.
    #[error(
        "secret `{secret}` is raw binary and cannot be placed in {context}; use an encoding such as `:hex` or `:base64`"
    )]
    BinaryNotAllowed {
        /// The secret.
        secret: String,
        /// Where it was to go.
        context: &'static str,
    },
    /// A placeholder names a secret the session does not have.
    #[error("placeholder refers to secret `{0}`, which this session does not define")]
    UnknownSecret(String),
    /// A value (explicit, imported or stored) is not valid for its secret.
    #[error("secret `{secret}`: {reason}")]
    InvalidValue {
        /// The secret.
        secret: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// A cryptographic operation failed.
    #[error("secret `{secret}`: {what}")]
    Crypto {
        /// The secret.
        secret: String,
        /// What failed.
        what: String,
    },
    /// Making a certificate failed.
    #[error("secret `{secret}`: cannot make the certificate: {reason}")]
    Certificate {
        /// The secret.
        secret: String,
        /// Why.
        reason: String,
    },
    /// A feature is not supported yet.
    #[error("secret `{secret}`: {what} is not supported yet")]
    NotSupported {
        /// The secret.
        secret: String,
        /// What is unsupported.
        what: String,
    },
    /// An import could not be resolved.
    #[error(
        "secret `{secret}`: cannot import `{source_secret}` from session `{source_session}`: {reason}"
    )]
    Import {
        /// The importing secret.
        secret: String,
        /// The exporting session (resolved name).
        source_session: String,
        /// The exported secret.
        source_secret: String,
        /// Why.
        reason: String,
    },
    /// A public value was asked for that does not exist or is not `export_public`.
    #[error("Secret does not exist or is not visible for a public client")]
    NotPublic {
        /// The secret asked for.
        secret: String,
        /// The session asked.
        session: String,
    },
    /// A relative session reference goes above the root (`../` too often).
    #[error("session reference `{reference}` from `{from}` leaves the namespace root")]
    BadReference {
        /// The reference.
        reference: String,
        /// The referencing session.
        from: String,
    },
    /// Placeholder syntax or expansion failed.
    #[error("{0}")]
    Placeholder(String),
    /// The service access token is required but the workload presented none.
    #[error(
        "the session requires a service access token; set VEIL_SERVICE_ACCESS_TOKEN (or SCONE_SERVICE_ACCESS_TOKEN)"
    )]
    AccessTokenMissing,
    /// The presented service access token is wrong.
    #[error("the service access token is invalid")]
    AccessTokenInvalid,
}

/// Check the workload's service access token against `security.service_access_token`
/// (after placeholder expansion). `expected: None`: no token required, anything passes.
/// The comparison is constant-time in the token contents.
pub fn check_service_access_token(
    expected: Option<&str>,
    presented: Option<&str>,
) -> Result<(), SecretsError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let presented = presented.ok_or(SecretsError::AccessTokenMissing)?;
    // Compare digests so that the comparison time does not depend on the lengths either.
    let a = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, expected.as_bytes());
    let b = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, presented.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref())
        .map_err(|_| SecretsError::AccessTokenInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token() {
        assert!(check_service_access_token(None, None).is_ok());
        assert!(check_service_access_token(None, Some("x")).is_ok());
        assert!(matches!(
            check_service_access_token(Some("tok"), None),
            Err(SecretsError::AccessTokenMissing)
        ));
        assert!(matches!(
            check_service_access_token(Some("tok"), Some("tok2")),
            Err(SecretsError::AccessTokenInvalid)
        ));
        assert!(check_service_access_token(Some("tok"), Some("tok")).is_ok());
        let e = check_service_access_token(Some("s3cr3t"), Some("guess")).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t") && !e.to_string().contains("guess"));
    }
}

#[cfg(test)]
mod session_tests;
