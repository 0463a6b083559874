//! Pure appraisal (design decision 10): evidence + collateral + reference values + expected
//! binding + trust anchors + time → an [`AttestationResult`] or an [`AppraisalError`].
//!
//! Nothing in here reads a clock, the network or a file. Each tier has a [`Verifier`] that
//! checks the tier's own cryptography and returns [`Claims`]; the binding (all 64 bytes of
//! report data) and the attestation factors are checked by common code for every tier, so a
//! verifier cannot forget them.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

use crate::binding::ReportData;
use crate::evidence::{Evidence, Tier};
use crate::hash::Digest32;
use crate::measure::{Target, measurement};
use crate::reference::{FactorSet, Factors, ReferenceValues};
use crate::time::UnixTime;
use veil_types::Measurement;

/// Endorsements a tier needs besides the trust anchors (RATS "endorsements"). `sim` and `node`
/// need none; hardware tiers will add their certificate chains, CRLs and TCB data here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Collateral {
    /// No collateral.
    #[default]
    None,
}

/// What the relying party (the CAS) expects the evidence to be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// `ReportData::bind(nonce, client SPKI of this connection)`.
    pub report_data: ReportData,
}

/// A node key registered by the CAS owner (`veil cas register-node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredNodeKey {
    /// The node id it was registered under.
    pub node_id: String,
    /// DER SubjectPublicKeyInfo of the node's ECDSA P-256 key.
    pub spki_der: Vec<u8>,
    /// When it was registered.
    pub registered_at: UnixTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixTime>,
}

impl RegisteredNodeKey {
    /// The key hash (decision 7) of this key.
    pub fn key_hash(&self) -> String {
        veil_types::key_hash(&self.spki_der)
    }
}

/// Trust anchors and freshness limits of the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchors {
    /// Registered node keys (the `node` tier's direct trust).
    pub node_keys: Vec<RegisteredNodeKey>,
    /// Oldest acceptable LAS claims, in ms before `at`.
    pub max_evidence_age_ms: u64,
    /// Tolerated clock skew of a LAS ahead of the CAS, in ms.
    pub max_clock_skew_ms: u64,
}

impl Default for TrustAnchors {
    fn default() -> Self {
        Self {
            node_keys: Vec::new(),
            max_evidence_age_ms: 60_000,
            max_clock_skew_ms: 5_000,
        }
    }
}

/// What a tier's verifier extracted and vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The measurement (matched against `mrenclave`).
    pub measurement: Measurement,
    /// SHA-256 of the launcher executable.
    pub launcher_hash: Digest32,
    /// What the launcher runs.
    pub target: Target,
    /// The report data in the evidence.
    pub report_data: ReportData,
    /// The node that signed (`node` tier).
    pub node_id: Option<String>,
    /// Key hash of the node key that signed (`node` tier).
    pub node_key_hash: Option<String>,
    /// MRSIGNER/ISVPRODID/ISVSVN, where the tier has a signer (hardware SGX only).
    pub signer: Option<(Digest32, u16, u16)>,
}

/// A successful appraisal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationResult {
    /// The tier of the evidence.
    pub tier: Tier,
    /// The `at` the appraisal used.
    pub appraised_at: UnixTime,
    /// SHA-256 of the evidence's stable encoding.
    pub evidence_digest: Digest32,
    /// The vouched-for claims.
    pub claims: Claims,
    /// Index of the first variant that matched (`None` when factors were skipped).
    pub matched_variant: Option<usize>,
}

/// Problems with the evidence itself (whose fault: the attester's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceProblem {
    /// The node key is not registered with this CAS.
    #[error("The node key {key_hash} is not registered with this CAS")]
    UnregisteredNodeKey {
        /// The key hash the evidence named.
        key_hash: String,
    },
    /// The node key was revoked.
    #[error("The node key {key_hash} of node `{node_id}` was revoked")]
    RevokedNodeKey {
        /// Its key hash.
        key_hash: String,
        /// Its node id.
        node_id: String,
    },
    /// The signature does not verify with the registered key.
    #[error("The LAS signature does not verify with the registered node key")]
    BadSignature,
    /// The claims name another node than the key was registered for.
    #[error(
        "The evidence names node `{claimed}` but the key is registered for node `{registered}`"
    )]
    NodeIdMismatch {
        /// Node id in the claims.
        claimed: String,
        /// Node id of the registration.
        registered: String,
    },
    /// The claims are older than allowed.
    #[error("The evidence is stale (made at {made} ms, appraised at {at} ms)")]
    Stale {
        /// Claim time.
        made: u64,
        /// Appraisal time.
        at: u64,
    },
    /// The claims are from the future beyond the tolerated skew.
    #[error("The evidence is from the future (made at {made} ms, appraised at {at} ms)")]
    FromFuture {
        /// Claim time.
        made: u64,
        /// Appraisal time.
        at: u64,
    },
    /// The stated measurement is not the one its parts give.
    #[error("The evidence's measurement does not match its launcher and program hashes")]
    InconsistentMeasurement,
    /// The report data is not the expected binding.
    #[error("The evidence is not bound to this connection's nonce and key (report data mismatch)")]
    ReportDataMismatch,
}

/// One failed attestation factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactorMismatch {
    /// MRENCLAVE not in the accepted list.
    Measurement {
        /// What the evidence has.
        got: Measurement,
        /// What the variant accepts.
        want: Vec<Measurement>,
    },
    /// A signer factor, but the tier has no signer.
    NoSigner {
        /// The tier.
        tier: Tier,
    },
    /// The signer does not match.
    Signer {
        /// What the evidence has: (mrsigner, isvprodid, isvsvn).
        got: (Digest32, u16, u16),
    },
    /// An attestation map naming no factor at all.
    EmptyVariant,
    /// No variant at all.
    NoFactors,
}

impl std::fmt::Display for FactorMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FactorMismatch::Measurement { got, want } => {
                let want: Vec<String> = want.iter().map(|w| w.to_hex()).collect();
                write!(
                    f,
                    "Unexpected enclave measurement (MRENCLAVE, {got}) - Expected {}",
                    want.join(" or ")
                )
            }
            FactorMismatch::NoSigner { tier } => write!(
                f,
                "Unexpected enclave signer: evidence of tier `{tier}` has no signer (MRSIGNER)"
            ),
            FactorMismatch::Signer { got } => write!(
                f,
                "Unexpected enclave signer (MRSIGNER {}, ISVPRODID {}, ISVSVN {})",
                got.0, got.1, got.2
            ),
            FactorMismatch::EmptyVariant => {
                f.write_str("An attestation variant of the service names no factor")
            }
            FactorMismatch::NoFactors => f.write_str("The service defines no attestation factor"),
        }
    }
}

/// Why appraisal (or the tier decision) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppraisalError {
    /// No verifier for this tier is built into this CAS.
    #[error("Attestation tier `{0}` is not supported by this CAS")]
    UnsupportedTier(Tier),
    /// The request names one tier, the evidence another.
    #[error("The request names tier `{declared}` but carries `{evidence}` evidence")]
    TierMismatch {
        /// Tier in the request.
        declared: Tier,
        /// Tier of the evidence.
        evidence: Tier,
    },
    /// The CAS's configuration refuses the `sim` tier.
    #[error(
        "The `sim` tier is disabled on this CAS (its owner can enable it with `[attestation] allow_sim = true` or `--allow-sim-tier`)"
    )]
    SimDisabled,
    /// The policy does not tolerate the `sim` tier.
    #[error(
        "The `sim` tier requires the policy to tolerate it: `security.attestation.tolerate: [debug-mode]` or `mode: none`"
    )]
    SimNotTolerated,
    /// The evidence failed a tier check.
    #[error("{0}")]
    BadEvidence(#[from] EvidenceProblem),
    /// No attestation-factor variant matched.
    #[error("None of the required enclave properties are met by the enclave")]
    NotTrustworthy(Vec<FactorMismatch>),
}

impl AppraisalError {
    /// SCONE-style failure chain, outermost first: `Attestation failed`, then the causes.
    pub fn chain(&self) -> Vec<String> {
        let mut out = vec!["Attestation failed".to_string()];
        match self {
            AppraisalError::NotTrustworthy(m) if m.len() == 1 => {
                out.extend(m.iter().map(|x| x.to_string()));
            }
            AppraisalError::NotTrustworthy(m) => {
                out.push("The program enclave is not trustworthy".to_string());
                out.push(self.to_string());
                let n = m.len();
                for (i, x) in m.iter().enumerate() {
                    out.push(format!("Error {} of {n}: {x}", i + 1));
                }
            }
            other => out.push(other.to_string()),
        }
        out
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AppraisalError::UnsupportedTier(_) => "attestation_tier_unsupported",
            AppraisalError::TierMismatch { .. } => "attestation_tier_mismatch",
            AppraisalError::SimDisabled => "attestation_sim_disabled",
            AppraisalError::SimNotTolerated => "attestation_sim_not_tolerated",
            AppraisalError::BadEvidence(EvidenceProblem::ReportDataMismatch) => {
                "attestation_binding_mismatch"
            }
            AppraisalError::BadEvidence(EvidenceProblem::UnregisteredNodeKey { .. })
            | AppraisalError::BadEvidence(EvidenceProblem::RevokedNodeKey { .. }) => {
                "attestation_node_key_untrusted"
            }
            AppraisalError::BadEvidence(_) => "attestation_bad_evidence",
            AppraisalError::NotTrustworthy(_) => "attestation_factor_mismatch",
        }
    }
}

/// A tier's verifier: checks the tier's own cryptography and extracts claims. Pure.
pub trait Verifier: Send + Sync {
    /// The tier it verifies.
    fn tier(&self) -> Tier;
    /// Check `evidence` against `collateral` and `anchors` at time `at`, returning its claims.
    /// Binding and reference values are checked by [`appraise_with`], not here.
    fn claims(
        &self,
        evidence: &Evidence,
        collateral: &Collateral,
        anchors: &TrustAnchors,
        at: UnixTime,
    ) -> Result<Claims, AppraisalError>;
}

/// The `sim` tier: the launcher's own word, checked only for internal consistency.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimVerifier;

impl Verifier for SimVerifier {
    fn tier(&self) -> Tier {
        Tier::Sim
    }

    fn claims(
        &self,
        evidence: &Evidence,
        _collateral: &Collateral,
        _anchors: &TrustAnchors,
        _at: UnixTime,
    ) -> Result<Claims, AppraisalError> {
        let Evidence::Sim(s) = evidence else {
            return Err(AppraisalError::TierMismatch {
                declared: Tier::Sim,
                evidence: evidence.tier(),
            });
        };
        if measurement(&s.launcher_hash, &s.target) != s.measurement {
            return Err(EvidenceProblem::InconsistentMeasurement.into());
        }
        Ok(Claims {
            measurement: s.measurement,
            launcher_hash: s.launcher_hash,
            target: s.target.clone(),
            report_data: s.report_data,
            node_id: None,
            node_key_hash: None,
            signer: None,
        })
    }
}

/// The `node` tier: claims signed by a LAS whose key the CAS owner registered.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeVerifier;

impl Verifier for NodeVerifier {
    fn tier(&self) -> Tier {
        Tier::Node
    }

    fn claims(
        &self,
        evidence: &Evidence,
        _collateral: &Collateral,
        anchors: &TrustAnchors,
        at: UnixTime,
    ) -> Result<Claims, AppraisalError> {
        let Evidence::Node(n) = evidence else {
            return Err(AppraisalError::TierMismatch {
                declared: Tier::Node,
                evidence: evidence.tier(),
            });
        };
        // The anchor is chosen by hash, but the hash is recomputed from the registered key: the
        // evidence never supplies key material.
        let anchor = anchors
            .node_keys
            .iter()
            .find(|k| k.key_hash() == n.node_key_hash)
            .ok_or_else(|| EvidenceProblem::UnregisteredNodeKey {
                key_hash: n.node_key_hash.chars().take(64).collect(),
            })?;
        if anchor.revoked_at.is_some_and(|r| r <= at) {
            return Err(EvidenceProblem::RevokedNodeKey {
                key_hash: anchor.key_hash(),
                node_id: anchor.node_id.clone(),
            }
            .into());
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &anchor.spki_der)
            .verify(&n.claims.signed_bytes(), &n.signature)
            .map_err(|_| EvidenceProblem::BadSignature)?;
        let c = &n.claims;
        if c.node_id != anchor.node_id {
            return Err(EvidenceProblem::NodeIdMismatch {
                claimed: c.node_id.chars().take(100).collect(),
                registered: anchor.node_id.clone(),
            }
            .into());
        }
        if c.time > at.plus_millis(anchors.max_clock_skew_ms) {
            return Err(EvidenceProblem::FromFuture {
                made: c.time.0,
                at: at.0,
            }
            .into());
        }
        if c.time < at.minus_millis(anchors.max_evidence_age_ms) {
            return Err(EvidenceProblem::Stale {
                made: c.time.0,
                at: at.0,
            }
            .into());
        }
        if measurement(&c.launcher_hash, &c.target) != c.measurement {
            return Err(EvidenceProblem::InconsistentMeasurement.into());
        }
        Ok(Claims {
            measurement: c.measurement,
            launcher_hash: c.launcher_hash,
            target: c.target.clone(),
            report_data: c.report_data,
            node_id: Some(c.node_id.clone()),
            node_key_hash: Some(anchor.key_hash()),
            signer: None,
        })
    }
}

/// The built-in verifier for `tier`, if this build has one.
pub fn verifier_for(tier: Tier) -> Result<&'static dyn Verifier, AppraisalError> {
    match tier {
        Tier::Sim => Ok(&SimVerifier),
        Tier::Node => Ok(&NodeVerifier),
        other => Err(AppraisalError::UnsupportedTier(other)),
    }
}

/// Appraise with the built-in verifier for the evidence's tier. See [`appraise_with`].
pub fn appraise(
    evidence: &Evidence,
    collateral: &Collateral,
    reference: &ReferenceValues,
    expected: &Expected,
    anchors: &TrustAnchors,
    at: UnixTime,
) -> Result<AttestationResult, AppraisalError> {
    let v = verifier_for(evidence.tier())?;
    appraise_with(v, evidence, collateral, reference, expected, anchors, at)
}

/// Appraise `evidence` with `verifier`: tier checks, then the binding (all 64 bytes of report
/// data), then the attestation factors. Pure: same inputs, same output.
pub fn appraise_with(
    verifier: &dyn Verifier,
    evidence: &Evidence,
    collateral: &Collateral,
    reference: &ReferenceValues,
    expected: &Expected,
    anchors: &TrustAnchors,
    at: UnixTime,
) -> Result<AttestationResult, AppraisalError> {
    if verifier.tier() != evidence.tier() {
        return Err(AppraisalError::TierMismatch {
            declared: verifier.tier(),
            evidence: evidence.tier(),
        });
    }
    let claims = verifier.claims(evidence, collateral, anchors, at)?;
    if claims.report_data != expected.report_data {
        return Err(EvidenceProblem::ReportDataMismatch.into());
    }
    let matched_variant = match &reference.factors {
        Factors::Skip => None,
        Factors::AnyOf(variants) => Some(match_variants(variants, &claims, evidence.tier())?),
    };
    Ok(AttestationResult {
        tier: evidence.tier(),
        appraised_at: at,
        evidence_digest: evidence.digest(),
        claims,
        matched_variant,
    })
}

fn check_variant(v: &FactorSet, claims: &Claims, tier: Tier) -> Vec<FactorMismatch> {
    let mut out = Vec::new();
    if v.is_empty() {
        out.push(FactorMismatch::EmptyVariant);
        return out;
    }
    if !v.mrenclave.is_empty() && !v.mrenclave.contains(&claims.measurement) {
        out.push(FactorMismatch::Measurement {
            got: claims.measurement,
            want: v.mrenclave.clone(),
        });
    }
    if let Some(s) = &v.signer {
        match claims.signer {
            None => out.push(FactorMismatch::NoSigner { tier }),
            Some(got @ (mrsigner, prod, svn)) => {
                let ok = mrsigner == s.mrsigner
                    && prod == s.isvprodid
                    && s.isvsvn_min.is_none_or(|m| svn >= m)
                    && s.isvsvn_max.is_none_or(|m| svn <= m);
                if !ok {
                    out.push(FactorMismatch::Signer { got });
                }
            }
        }
    }
    out
}

/// Any variant whose factors all hold; else every mismatch of every variant.
fn match_variants(
    variants: &[FactorSet],
    claims: &Claims,
    tier: Tier,
) -> Result<usize, AppraisalError> {
    if variants.is_empty() {
        return Err(AppraisalError::NotTrustworthy(vec![
            FactorMismatch::NoFactors,
        ]));
    }
    let mut all = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let m = check_variant(v, claims, tier);
        if m.is_empty() {
            return Ok(i);
        }
        all.extend(m);
    }
    Err(AppraisalError::NotTrustworthy(all))
}

/// `security.attestation.mode` as far as tiers are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestationMode {
    /// `hardware` (the default): `node` and hardware tiers.
    Hardware,
    /// `none`: attestation factors are not checked.
    None,
}

/// The parts of a policy's `security.attestation` that decide which tiers are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierPolicy {
    /// The mode.
    pub mode: AttestationMode,
    /// Whether `tolerate` contains `debug-mode`.
    pub tolerates_debug_mode: bool,
}

/// Decision 1: may `tier` be accepted under `policy`, given whether the CAS's own configuration
/// allows `sim`? `sim` needs both the CAS switch and `debug-mode` tolerated (or `mode: none`);
/// `node` is accepted in any mode; hardware tiers need a verifier this build does not have.
pub fn tier_accepted(
    tier: Tier,
    policy: &TierPolicy,
    cas_allows_sim: bool,
) -> Result<(), AppraisalError> {
    match tier {
        Tier::Sim => {
            if !cas_allows_sim {
                return Err(AppraisalError::SimDisabled);
            }
            if policy.mode == AttestationMode::None || policy.tolerates_debug_mode {
                Ok(())
            } else {
                Err(AppraisalError::SimNotTolerated)
            }
        }
        Tier::Node => Ok(()),
        other => Err(AppraisalError::UnsupportedTier(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::Nonce;
    use crate::evidence::{NodeClaims, NodeEvidence, SimEvidence};
    use crate::reference::SignerFactor;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    struct Node {
        key: EcdsaKeyPair,
        spki: Vec<u8>,
    }

    fn node() -> Node {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("keygen");
        let spki = key.public_key().as_der().expect("spki").as_ref().to_vec();
        Node { key, spki }
    }

    const AT: UnixTime = UnixTime(1_700_000_000_000);

    fn launcher() -> Digest32 {
        Digest32::of(b"launcher")
    }
    fn program() -> Target {
        Target::Program {
            hash: Digest32::of(b"program"),
        }
    }
    fn good_measurement() -> Measurement {
        measurement(&launcher(), &program())
    }
    fn rd() -> ReportData {
        ReportData::bind(&Nonce([5; 32]), b"client-spki")
    }

    fn node_evidence(n: &Node, f: impl FnOnce(&mut NodeClaims)) -> NodeEvidence {
        let mut claims = NodeClaims {
            node_id: "node-1".into(),
            time: AT.minus_millis(1000),
            pid: 42,
            launcher_hash: launcher(),
            target: program(),
            measurement: good_measurement(),
            report_data: rd(),
            uid: 1000,
            gid: 1000,
            cgroup: "/user.slice".into(),
        };
        f(&mut claims);
        let sig = n
            .key
            .sign(&SystemRandom::new(), &claims.signed_bytes())
            .expect("sign");
        NodeEvidence {
            claims,
            node_key_hash: veil_types::key_hash(&n.spki),
            signature: sig.as_ref().to_vec(),
        }
    }

    fn anchors(n: &Node) -> TrustAnchors {
        TrustAnchors {
            node_keys: vec![RegisteredNodeKey {
                node_id: "node-1".into(),
                spki_der: n.spki.clone(),
                registered_at: UnixTime(0),
                revoked_at: None,
            }],
            ..TrustAnchors::default()
        }
    }

    fn rv(m: Vec<Measurement>) -> ReferenceValues {
        ReferenceValues::from_policy(vec![FactorSet::mrenclave(m)], vec![])
    }

    fn run(
        ev: &Evidence,
        rv: &ReferenceValues,
        anchors: &TrustAnchors,
    ) -> Result<AttestationResult, AppraisalError> {
        appraise(
            ev,
            &Collateral::None,
            rv,
            &Expected { report_data: rd() },
            anchors,
            AT,
        )
    }

    #[test]
    fn node_table() {
        let n = node();
        let other = node();
        let good = rv(vec![good_measurement()]);
        let wrong = Digest32::of(b"other");
        type Case = (
            &'static str,
            Evidence,
            ReferenceValues,
            TrustAnchors,
            Option<&'static str>,
        );
        let mut flipped = node_evidence(&n, |_| {});
        if let Some(b) = flipped.signature.last_mut() {
            *b ^= 1;
        }
        let mut relabeled = node_evidence(&n, |_| {});
        relabeled.claims.report_data.0[63] ^= 1;
        let mut revoked = anchors(&n);
        revoked.node_keys[0].revoked_at = Some(AT);
        let mut renamed = anchors(&n);
        renamed.node_keys[0].node_id = "node-2".into();
        let cases: Vec<Case> = vec![
            (
                "good",
                Evidence::Node(node_evidence(&n, |_| {})),
                good.clone(),
                anchors(&n),
                None,
            ),
            (
                "skip factors",
                Evidence::Node(node_evidence(&n, |_| {})),
                ReferenceValues::skip(),
                anchors(&n),
                None,
            ),
            (
                "wrong node key",
                Evidence::Node(node_evidence(&other, |_| {})),
                good.clone(),
                anchors(&n),
                Some("attestation_node_key_untrusted"),
            ),
            (
                "no anchors",
                Evidence::Node(node_evidence(&n, |_| {})),
                good.clone(),
                TrustAnchors::default(),
                Some("attestation_node_key_untrusted"),
            ),
            (
                "revoked",
                Evidence::Node(node_evidence(&n, |_| {})),
                good.clone(),
                revoked,
                Some("attestation_node_key_untrusted"),
            ),
            (
                "bad signature",
                Evidence::Node(flipped),
                good.clone(),
                anchors(&n),
                Some("attestation_bad_evidence"),
            ),
            (
                "claims changed after signing",
                Evidence::Node(relabeled),
                good.clone(),
                anchors(&n),
                Some("attestation_bad_evidence"),
            ),
            (
                "node id mismatch",
                Evidence::Node(node_evidence(&n, |_| {})),
                good.clone(),
                renamed,
                Some("attestation_bad_evidence"),
            ),
            (
                "stale",
                Evidence::Node(node_evidence(&n, |c| c.time = AT.minus_millis(61_000))),
                good.clone(),
                anchors(&n),
                Some("attestation_bad_evidence"),
            ),
            (
                "future",
                Evidence::Node(node_evidence(&n, |c| c.time = AT.plus_millis(6_000))),
                good.clone(),
                anchors(&n),
                Some("attestation_bad_evidence"),
            ),
            (
                "inconsistent measurement",
                Evidence::Node(node_evidence(&n, |c| c.measurement = wrong.into())),
                rv(vec![wrong.into()]),
                anchors(&n),
                Some("attestation_bad_evidence"),
            ),
            (
                "other nonce",
                Evidence::Node(node_evidence(&n, |c| {
                    c.report_data = ReportData::bind(&Nonce([6; 32]), b"client-spki")
                })),
                good.clone(),
                anchors(&n),
                Some("attestation_binding_mismatch"),
            ),
            (
                "other key",
                Evidence::Node(node_evidence(&n, |c| {
                    c.report_data = ReportData::bind(&Nonce([5; 32]), b"other-spki")
                })),
                good.clone(),
                anchors(&n),
                Some("attestation_binding_mismatch"),
            ),
            (
                "zero tail differs",
                Evidence::Node(node_evidence(&n, |c| c.report_data.0[40] = 1)),
                good.clone(),
                anchors(&n),
                Some("attestation_binding_mismatch"),
            ),
            (
                "wrong mrenclave",
                Evidence::Node(node_evidence(&n, |_| {})),
                rv(vec![wrong.into()]),
                anchors(&n),
                Some("attestation_factor_mismatch"),
            ),
            (
                "envcas vs program",
                Evidence::Node(node_evidence(&n, |c| {
                    c.target = Target::Envcas;
                    c.measurement = measurement(&launcher(), &Target::Envcas);
                })),
                good.clone(),
                anchors(&n),
                Some("attestation_factor_mismatch"),
            ),
        ];
        for (name, ev, rv, an, want) in cases {
            let got = run(&ev, &rv, &an);
            match (want, &got) {
                (None, Ok(r)) => {
                    assert_eq!(r.tier, Tier::Node, "{name}");
                    assert_eq!(r.claims.node_id.as_deref(), Some("node-1"), "{name}");
                    assert_eq!(r.appraised_at, AT, "{name}");
                }
                (Some(code), Err(e)) => assert_eq!(e.code(), code, "{name}: {e:?}"),
                _ => panic!("{name}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn sim_table() {
        let good = Evidence::Sim(SimEvidence::new(launcher(), program(), rd()));
        let mut lying = SimEvidence::new(launcher(), program(), rd());
        lying.measurement = Digest32::of(b"claimed").into();
        let unbound = Evidence::Sim(SimEvidence::new(launcher(), program(), ReportData([0; 64])));
        let an = TrustAnchors::default();
        assert!(run(&good, &rv(vec![good_measurement()]), &an).is_ok());
        assert_eq!(
            run(
                &Evidence::Sim(lying),
                &rv(vec![Digest32::of(b"claimed").into()]),
                &an
            )
            .map(|_| ()),
            Err(AppraisalError::BadEvidence(
                EvidenceProblem::InconsistentMeasurement
            ))
        );
        assert_eq!(
            run(&unbound, &rv(vec![good_measurement()]), &an).map(|_| ()),
            Err(AppraisalError::BadEvidence(
                EvidenceProblem::ReportDataMismatch
            ))
        );
        // A verifier of another tier refuses.
        assert!(matches!(
            appraise_with(
                &NodeVerifier,
                &good,
                &Collateral::None,
                &ReferenceValues::skip(),
                &Expected { report_data: rd() },
                &an,
                AT
            ),
            Err(AppraisalError::TierMismatch { .. })
        ));
    }

    #[test]
    fn factor_matching_all_of_map_any_of_list() {
        let m = good_measurement();
        let x = Measurement::from(Digest32::of(b"x"));
        let y = Measurement::from(Digest32::of(b"y"));
        let signer = SignerFactor {
            mrsigner: Digest32::of(b"s"),
            isvprodid: 1,
            isvsvn_min: None,
            isvsvn_max: None,
        };
        let ev = Evidence::Sim(SimEvidence::new(launcher(), program(), rd()));
        let an = TrustAnchors::default();
        type Case = (&'static str, ReferenceValues, Result<Option<usize>, usize>);
        let cases: Vec<Case> = vec![
            ("single match", rv(vec![m]), Ok(Some(0))),
            ("list contains", rv(vec![x, m]), Ok(Some(0))),
            (
                "second variant",
                ReferenceValues::from_policy(
                    vec![FactorSet::mrenclave(vec![x]), FactorSet::mrenclave(vec![m])],
                    vec![],
                ),
                Ok(Some(1)),
            ),
            (
                "legacy mrenclaves",
                ReferenceValues::from_policy(vec![], vec![y, m]),
                Ok(Some(0)),
            ),
            (
                "legacy after variants",
                ReferenceValues::from_policy(vec![FactorSet::mrenclave(vec![x])], vec![m]),
                Ok(Some(1)),
            ),
            (
                "map needs all: signer missing",
                ReferenceValues::from_policy(
                    vec![FactorSet {
                        mrenclave: vec![m],
                        signer: Some(signer.clone()),
                    }],
                    vec![],
                ),
                Err(1),
            ),
            (
                "two variants fail",
                ReferenceValues::from_policy(
                    vec![FactorSet::mrenclave(vec![x]), FactorSet::mrenclave(vec![y])],
                    vec![],
                ),
                Err(2),
            ),
            (
                "no variants",
                ReferenceValues::from_policy(vec![], vec![]),
                Err(1),
            ),
            (
                "empty map",
                ReferenceValues::from_policy(vec![FactorSet::default()], vec![]),
                Err(1),
            ),
            ("skip", ReferenceValues::skip(), Ok(None)),
        ];
        for (name, rv, want) in cases {
            match (run(&ev, &rv, &an), want) {
                (Ok(r), Ok(v)) => assert_eq!(r.matched_variant, v, "{name}"),
                (Err(AppraisalError::NotTrustworthy(ms)), Err(n)) => {
                    assert_eq!(ms.len(), n, "{name}")
                }
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn scone_failure_chains() {
        let got = good_measurement();
        let want = Measurement::from(Digest32::of(b"want"));
        let ev = Evidence::Sim(SimEvidence::new(launcher(), program(), rd()));
        let err = run(&ev, &rv(vec![want]), &TrustAnchors::default()).expect_err("must fail");
        assert_eq!(
            err.chain(),
            vec![
                "Attestation failed".to_string(),
                format!("Unexpected enclave measurement (MRENCLAVE, {got}) - Expected {want}"),
            ]
        );
        let two = ReferenceValues::from_policy(
            vec![
                FactorSet::mrenclave(vec![want]),
                FactorSet::mrenclave(vec![want]),
            ],
            vec![],
        );
        let chain = run(&ev, &two, &TrustAnchors::default())
            .expect_err("must fail")
            .chain();
        assert_eq!(chain[1], "The program enclave is not trustworthy");
        assert_eq!(
            chain[2],
            "None of the required enclave properties are met by the enclave"
        );
        assert!(chain[3].starts_with("Error 1 of 2: Unexpected enclave measurement (MRENCLAVE, "));
        assert!(chain[4].starts_with("Error 2 of 2: "));
        assert_eq!(AppraisalError::SimDisabled.chain()[0], "Attestation failed");
    }

    #[test]
    fn appraisal_is_deterministic() {
        let n = node();
        let ev = Evidence::Node(node_evidence(&n, |_| {}));
        let a = run(&ev, &rv(vec![good_measurement()]), &anchors(&n));
        let b = run(&ev, &rv(vec![good_measurement()]), &anchors(&n));
        assert_eq!(a, b);
    }

    #[test]
    fn tier_decision_table() {
        let hw = |debug| TierPolicy {
            mode: AttestationMode::Hardware,
            tolerates_debug_mode: debug,
        };
        let none = TierPolicy {
            mode: AttestationMode::None,
            tolerates_debug_mode: false,
        };
        let cases = [
            (Tier::Sim, hw(true), true, Ok(())),
            (Tier::Sim, none, true, Ok(())),
            (
                Tier::Sim,
                hw(false),
                true,
                Err(AppraisalError::SimNotTolerated),
            ),
            (Tier::Sim, hw(true), false, Err(AppraisalError::SimDisabled)),
            (Tier::Sim, none, false, Err(AppraisalError::SimDisabled)),
            (Tier::Node, hw(false), false, Ok(())),
            (Tier::Node, none, false, Ok(())),
            (
                Tier::Sgx,
                hw(true),
                true,
                Err(AppraisalError::UnsupportedTier(Tier::Sgx)),
            ),
        ];
        for (tier, policy, allow, want) in cases {
            assert_eq!(
                tier_accepted(tier, &policy, allow),
                want,
                "{tier} {policy:?} {allow}"
            );
        }
    }
}
