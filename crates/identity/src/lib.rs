//! Identities of veil's parties (clients, the CAS, LAS nodes): key pairs with self-signed
//! certificates, and the one **key hash** function every component uses to name a public key.
//!
//! A key hash is the lowercase hex of SHA-256 over the DER-encoded SubjectPublicKeyInfo
//! (decision 7). It is computed in `veil-types` and nowhere else; this crate re-exports it.
//!
//! Besides the hash this crate provides:
//! - [`Identity`]: a P-256 key with a self-signed certificate (rcgen), stored as one PEM file
//!   (PKCS#8 key followed by the certificate, `~/.veil/identity.pem` for clients);
//! - [`spki_from_cert_pem`] / [`spki_from_cert_der`]: the SubjectPublicKeyInfo of a certificate;
//! - rustls configurations for veil's TLS 1.3-only connections: [`server_config`] with an
//!   [`AnyClientCert`] verifier (client certificates optional at the handshake, any well-formed
//!   certificate accepted as an identity but its key must sign the handshake) and
//!   [`client_config`] with a [`PinnedServerKey`] verifier (the server is accepted only when
//!   the key hash of its certificate equals the pinned one).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An identity PEM did not contain a PKCS#8 private key followed by a certificate.
    #[error(
        "{0}: expected a PKCS#8 private key (\"PRIVATE KEY\") followed by an X.509 certificate in PEM"
    )]
    BadPem(String),
    /// The certificate could not be parsed.
    #[error("not a well-formed X.509 certificate: {0}")]
    BadCertificate(String),
    /// The key in an identity file does not belong to its certificate.
    #[error("{0}: the private key does not match the certificate's public key")]
    KeyMismatch(String),
    /// Key or certificate generation failed.
    #[error("cannot generate a key pair or certificate: {0}")]
    Generate(String),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

pub use veil_types::{
    cert_der_to_pem, is_key_hash, key_hash, key_hash_of_cert_der, spki_from_cert_der,
    spki_from_cert_pem,
};

impl From<veil_types::CertError> for IdentityError {
    fn from(e: veil_types::CertError) -> Self {
        Self::BadCertificate(e.0)
    }
}

/// A key pair with its self-signed certificate. `Debug` never prints the private key.
#[derive(Clone)]
pub struct Identity {
    key_pkcs8_der: Vec<u8>,
    cert_der: Vec<u8>,
    spki_der: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("key_hash", &self.key_hash())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new P-256 key and a self-signed certificate with common name `common_name` and the
    /// given subject alternative names (DNS names or IP addresses), valid 1975–4096 like SCONE's.
    pub fn generate(common_name: &str, sans: &[String]) -> Result<Self, IdentityError> {
        let gen_err = |e: rcgen::Error| IdentityError::Generate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = rcgen::CertificateParams::new(sans.to_vec()).map_err(gen_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.not_before = rcgen::date_time_ymd(1975, 1, 1);
        params.not_after = rcgen::date_time_ymd(4096, 1, 1);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let cert_der = cert.der().to_vec();
        let spki_der = spki_from_cert_der(&cert_der)?;
        Ok(Self {
            key_pkcs8_der: key.serialize_der(),
            cert_der,
            spki_der,
        })
    }

    /// Parse `PKCS#8 key PEM` followed by `certificate PEM` (either order is accepted).
    /// `origin` names the source in errors.
    pub fn from_pem(origin: &str, text: &str) -> Result<Self, IdentityError> {
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
            .map_err(|_| IdentityError::BadPem(origin.to_string()))?;
        let PrivateKeyDer::Pkcs8(key) = key else {
            return Err(IdentityError::BadPem(origin.to_string()));
        };
        let cert = CertificateDer::from_pem_slice(text.as_bytes())
            .map_err(|_| IdentityError::BadPem(origin.to_string()))?;
        let spki_der = spki_from_cert_der(&cert)?;
        let pair = rcgen::KeyPair::try_from(key.secret_pkcs8_der())
            .map_err(|_| IdentityError::BadPem(origin.to_string()))?;
        if rcgen::PublicKeyData::subject_public_key_info(&pair) != spki_der {
            return Err(IdentityError::KeyMismatch(origin.to_string()));
        }
        Ok(Self {
            key_pkcs8_der: key.secret_pkcs8_der().to_vec(),
            cert_der: cert.to_vec(),
            spki_der,
        })
    }

    /// The identity as PEM: PKCS#8 key followed by the certificate.
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.key_pkcs8_der);
        let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END PRIVATE KEY-----\n");
        out.push_str(&self.cert_pem());
        out
    }

    /// Load an identity file.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&path.display().to_string(), &text)
    }

    /// Write the identity file with mode 0600 (write to a temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        write_private_file(path, self.to_pem().as_bytes())
    }

    /// Load the identity at `path`, or create a client identity there when the file does not exist.
    ///
    /// Concurrent first uses agree on one identity: the new file is published with an exclusive
    /// create (a hard link that fails if the path exists), and a loser loads the winner's file.
    pub fn load_or_create(path: &Path, common_name: &str) -> Result<Self, IdentityError> {
        if path.exists() {
            return Self::load(path);
        }
        let id = Self::generate(common_name, &[common_name.to_string()])?;
        if create_private_file_exclusive(path, id.to_pem().as_bytes())? {
            Ok(id)
        } else {
            Self::load(path)
        }
    }

    /// The certificate in DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate in PEM.
    pub fn cert_pem(&self) -> String {
        cert_der_to_pem(&self.cert_der)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key hash of this identity (see [`key_hash`]).
    pub fn key_hash(&self) -> String {
        key_hash(&self.spki_der)
    }

    fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![CertificateDer::from(self.cert_der.clone())],
            PrivateKeyDer::Pkcs8(self.key_pkcs8_der.clone().into()),
        )
    }
}

/// Write `bytes` to `path` with mode 0600: temporary file, fsync, rename; parents are created.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Write `bytes` to `path` (mode 0600, fsynced) only if `path` does not exist yet. Returns
/// whether this call created it; `false` means another writer won and its file stays. The file
/// appears complete or not at all (written to a unique temporary name, then hard-linked).
pub fn create_private_file_exclusive(path: &Path, bytes: &[u8]) -> Result<bool, IdentityError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| IdentityError::Generate("random".into()))?;
    let tmp = path.with_extension(format!(
        "tmp{}-{}",
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    let write = || -> Result<bool, IdentityError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io(e)),
        }
    };
    let created = write();
    let _ = std::fs::remove_file(&tmp);
    created
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

/// Client-certificate verifier of veil's servers (decision 5): a certificate is optional at the
/// handshake; when one is presented, any well-formed X.509 certificate is accepted whatever its
/// issuer or validity dates, but its key must sign the TLS 1.3 handshake. Routes then decide
/// whether they need an identity.
#[derive(Debug)]
pub struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl AnyClientCert {
    /// `mandatory`: whether the handshake fails without a client certificate.
    pub fn new(mandatory: bool) -> Self {
        Self {
            algs: algorithms(),
            mandatory,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        spki_from_cert_der(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// What a [`PinnedServerKey`] verifier saw of the server.
#[derive(Debug, Default, Clone)]
pub struct SeenServer {
    /// The key hash of the server's certificate in the last handshake.
    pub key_hash: Option<String>,
    /// Whether that key hash differed from the pinned one.
    pub mismatch: bool,
    /// The server's certificate (DER) in the last handshake.
    pub cert_der: Option<Vec<u8>>,
}

/// Server verifier of veil's clients: the server is accepted only when the key hash of its
/// certificate equals the pinned one (no CA, no names, no dates); with no pin (only for
/// `veil cas attest --only-for-testing-trust-any`) any server key is accepted and recorded.
#[derive(Debug)]
pub struct PinnedServerKey {
    pinned: Option<veil_types::KeyHash>,
    seen: Arc<Mutex<SeenServer>>,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedServerKey {
    /// A verifier for the pinned key hash (`None` = accept any key and record it).
    pub fn new(pinned: Option<veil_types::KeyHash>) -> Self {
        Self {
            pinned,
            seen: Arc::default(),
            algs: algorithms(),
        }
    }

    /// Shared handle to what the verifier saw (read it after a handshake).
    pub fn seen(&self) -> Arc<Mutex<SeenServer>> {
        self.seen.clone()
    }
}

impl ServerCertVerifier for PinnedServerKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = veil_types::KeyHash::of_cert_der(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mismatch = self.pinned.is_some_and(|p| p != hash);
        if let Ok(mut seen) = self.seen.lock() {
            seen.key_hash = Some(hash.to_hex());
            seen.mismatch = mismatch;
            seen.cert_der = Some(end_entity.to_vec());
        }
        if mismatch {
            return Err(rustls::Error::General(format!(
                "the server's key hash {hash} differs from the pinned one"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A TLS 1.3-only server configuration presenting `identity`, with client certificates
/// verified by `client_verifier` (usually [`AnyClientCert`]). ALPN: `http/1.1`.
pub fn server_config(
    identity: &Identity,
    client_verifier: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig, IdentityError> {
    let (chain, key) = identity.chain_and_key();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A TLS 1.3-only client configuration that verifies the server with `verifier` (usually
/// [`PinnedServerKey`]) and presents `identity` as client certificate when given.
pub fn client_config(
    identity: Option<&Identity>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, IdentityError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match identity {
        Some(id) => {
            let (chain, key) = id.chain_and_key();
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_first_uses_agree_on_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/.veil/identity.pem");
        let hashes: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Identity::load_or_create(&path, "cli").map(|i| i.key_hash())))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
        assert_eq!(Identity::load(&path).unwrap().key_hash(), hashes[0]);
        // Only the identity file is left: no temporary files.
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("identity.pem")]);
        assert!(!create_private_file_exclusive(&path, b"other").unwrap());
        assert_eq!(Identity::load(&path).unwrap().key_hash(), hashes[0]);
    }

    #[test]
    fn key_hash_is_sha256_hex() {
        // SHA-256 of the empty string.
        assert_eq!(
            key_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_key_hash(&key_hash(b"x")));
        assert!(!is_key_hash("E3B0"));
    }

    #[test]
    fn identity_round_trips_through_pem_and_file() {
        let id = Identity::generate("veil cli", &["veil cli".into()]).unwrap();
        let pem = id.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = Identity::from_pem("x", &pem).unwrap();
        assert_eq!(back.key_hash(), id.key_hash());
        assert_eq!(spki_from_cert_pem(&id.cert_pem()).unwrap(), id.spki_der());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.pem");
        let created = Identity::load_or_create(&path, "veil cli").unwrap();
        let loaded = Identity::load_or_create(&path, "veil cli").unwrap();
        assert_eq!(created.key_hash(), loaded.key_hash());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{id:?}").contains("PRIVATE"));
    }

    #[test]
    fn mismatched_key_and_garbage_are_refused() {
        let a = Identity::generate("a", &[]).unwrap();
        let b = Identity::generate("b", &[]).unwrap();
        let a_pem = a.to_pem();
        let key_part = &a_pem[..a_pem.find("-----BEGIN CERTIFICATE").unwrap()];
        let mixed = format!("{key_part}{}", b.cert_pem());
        assert!(matches!(
            Identity::from_pem("m", &mixed),
            Err(IdentityError::KeyMismatch(_))
        ));
        assert!(matches!(
            Identity::from_pem("g", "garbage"),
            Err(IdentityError::BadPem(_))
        ));
        assert!(spki_from_cert_der(b"nope").is_err());
    }

    #[test]
    fn configs_build() {
        let id = Identity::generate("cas", &["localhost".into(), "127.0.0.1".into()]).unwrap();
        server_config(&id, Arc::new(AnyClientCert::new(false))).unwrap();
        client_config(Some(&id), Arc::new(PinnedServerKey::new(None))).unwrap();
        client_config(
            None,
            Arc::new(PinnedServerKey::new(Some(id.key_hash().parse().unwrap()))),
        )
        .unwrap();
    }
}
