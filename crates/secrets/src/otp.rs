//! One-time passwords (RFC 6238 TOTP: HMAC-SHA-1, 6 digits, 30 s steps) with replay
//! protection and lockout, against an injected clock.
//!
//! - A code is accepted for the current step and one step either side (±30 s skew).
//! - Replay: the state keeps the highest accepted step; a code for a step at or below it is
//!   "already used" (so a code is accepted at most once, and never an older one after a newer).
//! - Lockout: [`MAX_FAILURES`] wrong codes within [`FAILURE_WINDOW_SECS`] lock OTP checks for
//!   [`BASE_LOCKOUT_SECS`], doubling per consecutive lockout up to [`MAX_LOCKOUT_SECS`]. While
//!   locked every code is refused, correct or not, with [`OtpError::LockedOut`]. A correct
//!   code resets the consecutive-lockout count.
//! - [`OtpState`] is serde so the CAS persists it (per session and OTP secret) across restarts.

use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder};

/// Seconds per TOTP step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: u64 = 1;
/// Wrong codes within the window that trigger a lockout.
pub const MAX_FAILURES: usize = 5;
/// The window over which failures are counted.
pub const FAILURE_WINDOW_SECS: u64 = 300;
/// The first lockout's length.
pub const BASE_LOCKOUT_SECS: u64 = 300;
/// The longest lockout.
pub const MAX_LOCKOUT_SECS: u64 = 24 * 3600;
/// The smallest accepted shared secret (128 bits).
pub const MIN_SECRET_BYTES: usize = 16;

/// Why an OTP was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtpError {
    /// The code is wrong (counted as a failure).
    #[error("The given One-time Password is invalid. Please try again.")]
    Invalid,
    /// The code was right for a step at or below the last accepted one.
    #[error(
        "A One-time Password was already used within this time-step. Please try again in the next time-step"
    )]
    AlreadyUsed,
    /// Too many wrong codes: every code is refused until `until` (unix seconds).
    /// `started` is true for the failure that began this lockout.
    #[error(
        "Too many invalid One-time Passwords: one-time passwords are not accepted for this service until {until} (unix time); try again later"
    )]
    LockedOut {
        /// End of the lockout (unix seconds).
        until: u64,
        /// Whether this call started the lockout (the CAS audits it).
        started: bool,
    },
    /// The shared secret is not usable (not base32, or shorter than 128 bits).
    #[error("the one-time password shared secret is not usable: {0}")]
    BadSecret(&'static str),
}

/// Replay and lockout state of one OTP secret. Persist it after every check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpState {
    /// The highest accepted step (`unix / 30`).
    pub last_step: Option<u64>,
    /// Times (unix seconds) of recent wrong codes, within the failure window.
    pub failures: Vec<u64>,
    /// While `Some(t)` and `now < t`, every code is refused.
    pub locked_until: Option<u64>,
    /// Lockouts since the last accepted code (decides the next lockout's length).
    pub consecutive_lockouts: u32,
}

impl OtpState {
    /// Whether checks are locked at `now`.
    pub fn is_locked(&self, now_unix: u64) -> bool {
        self.locked_until.is_some_and(|t| now_unix < t)
    }
}

/// Decode a base32 shared secret (RFC 4648, case-insensitive, padding and spaces optional).
pub fn decode_secret(secret_base32: &str) -> Result<Vec<u8>, OtpError> {
    let cleaned: String = secret_base32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .map_err(|_| OtpError::BadSecret("it is not base32 (RFC 4648)"))?;
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(OtpError::BadSecret("it is shorter than 128 bits"));
    }
    Ok(bytes)
}

fn totp(secret: Vec<u8>) -> Result<totp_rs::Totp, OtpError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_skew(0)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .build()
        .map_err(|_| OtpError::BadSecret("it is not accepted by the TOTP generator"))
}

/// The code for `now_unix`.
pub fn current_otp(secret_base32: &str, now_unix: u64) -> Result<String, OtpError> {
    Ok(totp(decode_secret(secret_base32)?)?
        .generate(now_unix)
        .to_string())
}

/// Check `code` at `now_unix`, updating `state` (persist it whatever the result).
pub fn check_otp(
    secret_base32: &str,
    code: &str,
    now_unix: u64,
    state: &mut OtpState,
) -> Result<(), OtpError> {
    if let Some(until) = state.locked_until {
        if now_unix < until {
            return Err(OtpError::LockedOut {
                until,
                started: false,
            });
        }
        state.locked_until = None;
    }
    let t = totp(decode_secret(secret_base32)?)?;
    let current = now_unix / STEP_SECS;
    let well_formed = code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit());
    let mut fresh: Option<u64> = None;
    let mut used = false;
    if well_formed {
        let lo = current.saturating_sub(SKEW_STEPS);
        for step in lo..=current.saturating_add(SKEW_STEPS) {
            let expected = t.generate(step * STEP_SECS).to_string();
            let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
                expected.as_bytes(),
                code.as_bytes(),
            )
            .is_ok();
            if matches {
                if state.last_step.is_some_and(|last| step <= last) {
                    used = true;
                } else {
                    fresh = Some(fresh.map_or(step, |f: u64| f.max(step)));
                }
            }
        }
    }
    if let Some(step) = fresh {
        state.last_step = Some(step);
        state.consecutive_lockouts = 0;
        return Ok(());
    }
    if used {
        return Err(OtpError::AlreadyUsed);
    }
    // A wrong code.
    state
        .failures
        .retain(|&t| t.saturating_add(FAILURE_WINDOW_SECS) > now_unix);
    state.failures.push(now_unix);
    if state.failures.len() >= MAX_FAILURES {
        let shift = state.consecutive_lockouts.min(16);
        let len = BASE_LOCKOUT_SECS
            .saturating_mul(1u64 << shift)
            .min(MAX_LOCKOUT_SECS);
        let until = now_unix.saturating_add(len);
        state.locked_until = Some(until);
        state.consecutive_lockouts = state.consecutive_lockouts.saturating_add(1);
        state.failures.clear();
        return Err(OtpError::LockedOut {
            until,
            started: true,
        });
    }
    Err(OtpError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B test secret ("12345678901234567890", SHA-1).
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc6238_vectors_six_digits() {
        // The RFC lists 8 digits; the last 6 are the 6-digit code.
        for (t, code) in [
            (59u64, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
        ] {
            assert_eq!(current_otp(RFC_SECRET, t).unwrap(), code, "t={t}");
        }
    }

    #[test]
    fn valid_then_replay_then_next_step() {
        let now = 1_700_000_010;
        let mut st = OtpState::default();
        let code = current_otp(RFC_SECRET, now).unwrap();
        check_otp(RFC_SECRET, &code, now, &mut st).unwrap();
        assert_eq!(
            check_otp(RFC_SECRET, &code, now + 1, &mut st),
            Err(OtpError::AlreadyUsed)
        );
        let next = current_otp(RFC_SECRET, now + STEP_SECS).unwrap();
        check_otp(RFC_SECRET, &next, now + STEP_SECS, &mut st).unwrap();
        // An older (still within skew) code after a newer one is refused as used.
        assert_eq!(
            check_otp(RFC_SECRET, &code, now + STEP_SECS, &mut st),
            Err(OtpError::AlreadyUsed)
        );
        assert!(st.failures.is_empty());
    }

    #[test]
    fn skew_edges() {
        let step = 56_666_667u64;
        let now = step * STEP_SECS; // first second of `step`
        for (delta, ok) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let mut st = OtpState::default();
            let t = (now as i64 + delta * STEP_SECS as i64) as u64;
            let code = current_otp(RFC_SECRET, t).unwrap();
            let r = check_otp(RFC_SECRET, &code, now, &mut st);
            // A code of a neighbouring step might coincide by chance; compare with the set.
            assert_eq!(r.is_ok(), ok, "delta {delta}: {r:?}");
        }
        // Last second of a step still accepts the previous step's code.
        let mut st = OtpState::default();
        let prev = current_otp(RFC_SECRET, now - 1).unwrap();
        check_otp(RFC_SECRET, &prev, now + STEP_SECS - 1, &mut st).unwrap();
    }

    fn wrong_code(now: u64) -> String {
        let good: Vec<String> = (0..3)
            .map(|i| current_otp(RFC_SECRET, now - STEP_SECS + i * STEP_SECS).unwrap())
            .collect();
        (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|c| !good.contains(c))
            .unwrap()
    }

    #[test]
    fn wrong_codes_lock_out_then_expire_and_double() {
        let mut now = 1_800_000_000u64;
        let mut st = OtpState::default();
        let bad = wrong_code(now);
        for _ in 0..4 {
            assert_eq!(
                check_otp(RFC_SECRET, &bad, now, &mut st),
                Err(OtpError::Invalid)
            );
            now += 10;
        }
        assert_eq!(
            check_otp(RFC_SECRET, &bad, now, &mut st),
            Err(OtpError::LockedOut {
                until: now + 300,
                started: true
            })
        );
        // A correct code while locked is refused with the lockout message.
        let good = current_otp(RFC_SECRET, now + 100).unwrap();
        assert_eq!(
            check_otp(RFC_SECRET, &good, now + 100, &mut st),
            Err(OtpError::LockedOut {
                until: now + 300,
                started: false
            })
        );
        // Expiry: after the lockout a correct code works.
        now += 300;
        let good = current_otp(RFC_SECRET, now).unwrap();
        check_otp(RFC_SECRET, &good, now, &mut st).unwrap();
        assert_eq!(st.consecutive_lockouts, 0);

        // Two lockouts in a row: the second lasts twice as long.
        let bad = wrong_code(now + 1000);
        let mut t = now + 1000;
        for _ in 0..5 {
            let _ = check_otp(RFC_SECRET, &bad, t, &mut st);
        }
        assert_eq!(st.locked_until, Some(t + 300));
        t += 300;
        let bad = wrong_code(t);
        for i in 0..5 {
            let r = check_otp(RFC_SECRET, &bad, t, &mut st);
            if i == 4 {
                assert_eq!(
                    r,
                    Err(OtpError::LockedOut {
                        until: t + 600,
                        started: true
                    })
                );
            }
        }
    }

    #[test]
    fn lockout_capped_at_a_day() {
        let mut st = OtpState {
            consecutive_lockouts: 20,
            ..Default::default()
        };
        let now = 1_900_000_000;
        let bad = wrong_code(now);
        for _ in 0..5 {
            let _ = check_otp(RFC_SECRET, &bad, now, &mut st);
        }
        assert_eq!(st.locked_until, Some(now + MAX_LOCKOUT_SECS));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut now = 1_800_000_000u64;
        let mut st = OtpState::default();
        for _ in 0..10 {
            let bad = wrong_code(now);
            assert_eq!(
                check_otp(RFC_SECRET, &bad, now, &mut st),
                Err(OtpError::Invalid)
            );
            now += 76; // any 5 consecutive failures span more than 300 s
        }
    }

    #[test]
    fn malformed_codes_are_failures() {
        let mut st = OtpState::default();
        for c in ["", "12345", "1234567", "+12345"] {
            assert_eq!(
                check_otp(RFC_SECRET, c, 1_000_000, &mut st),
                Err(OtpError::Invalid)
            );
        }
        assert_eq!(st.failures.len(), 4);
    }

    #[test]
    fn state_survives_restart() {
        let now = 1_700_000_100;
        let mut st = OtpState::default();
        let code = current_otp(RFC_SECRET, now).unwrap();
        check_otp(RFC_SECRET, &code, now, &mut st).unwrap();
        let bad = wrong_code(now);
        let _ = check_otp(RFC_SECRET, &bad, now, &mut st);
        let json = serde_json::to_string(&st).unwrap();
        let mut restored: OtpState = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, st);
        assert_eq!(
            check_otp(RFC_SECRET, &code, now + 2, &mut restored),
            Err(OtpError::AlreadyUsed)
        );
        assert_eq!(restored.failures.len(), 1);
    }

    #[test]
    fn bad_secrets() {
        assert!(matches!(
            current_otp("not base32!", 0),
            Err(OtpError::BadSecret(_))
        ));
        assert!(matches!(
            current_otp("JBSWY3DP", 0),
            Err(OtpError::BadSecret(_))
        ));
        // Lower case, spaces and padding are tolerated.
        assert_eq!(
            current_otp("gezd gnbv gy3t qojq gezd gnbv gy3t qojq", 59).unwrap(),
            "287082"
        );
    }
}
