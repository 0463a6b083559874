//! File names that are not UTF-8. Linux names are any bytes but `/` and NUL; the volume keeps
//! names (and symlink targets) as strings. [`name_from_bytes`] maps bytes to such a string without
//! loss: valid UTF-8 stays as it is, every byte that is not part of valid UTF-8 becomes NUL
//! followed by two lowercase hex digits (NUL never occurs in a real name, so nothing else can look
//! like an escape). [`name_to_bytes`] is the inverse. A stored name with a NUL must be in this
//! canonical form ([`is_canonical`]): one byte string has exactly one stored name.

/// The stored form of the name (or symlink target) `bytes`.
pub fn name_from_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_valid(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // `good` is valid UTF-8 by construction; lossy never replaces anything here.
                push_valid(&mut out, &String::from_utf8_lossy(good));
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push('\0');
                    out.push_str(&format!("{b:02x}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

/// Valid UTF-8 as it is, but NUL (the escape character itself) escaped.
fn push_valid(out: &mut String, s: &str) {
    if s.contains('\0') {
        out.push_str(&s.replace('\0', "\u{0}00"));
    } else {
        out.push_str(s);
    }
}

/// The bytes of a stored name (or symlink target); `None` when it holds a malformed escape.
pub fn name_to_bytes(name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\0' {
            let hi = chars.next()?.to_digit(16)?;
            let lo = chars.next()?.to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    Some(out)
}

/// Whether `name` is the stored form of some byte string (always true without NUL).
pub(crate) fn is_canonical(name: &str) -> bool {
    !name.contains('\0') || name_to_bytes(name).is_some_and(|b| name_from_bytes(&b) == name)
}

/// Whether a stored name stands for a valid file name: canonical, and its bytes without `/` or
/// NUL.
pub(crate) fn is_valid_name(name: &str) -> bool {
    is_canonical(name)
        && (!name.contains('\0') || name_to_bytes(name).is_some_and(|b| !b.contains(&0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utf8_is_unchanged_and_other_bytes_are_escaped() {
        assert_eq!(name_from_bytes("ü n i/x".as_bytes()), "ü n i/x");
        assert_eq!(name_from_bytes(b"a\xffb\xc3"), "a\0ffb\0c3");
        assert_eq!(name_to_bytes("a\0ffb\0c3").unwrap(), b"a\xffb\xc3");
        assert!(is_canonical("a\0ff"));
        // An escape of a byte that is valid UTF-8 is not canonical: "A" is stored as "A".
        assert!(!is_canonical("\x0041"));
        assert!(!is_canonical("a\0f"));
        assert!(!is_canonical("a\0zz"));
        assert!(name_to_bytes("\0").is_none());
        assert_eq!(name_from_bytes(b"a\0b"), "a\u{0}00b");
        assert!(is_canonical("a\u{0}00b") && !is_valid_name("a\u{0}00b"));
        assert!(!is_canonical("a\u{0}2fb"), "a slash is never escaped");
    }

    proptest! {
        #[test]
        fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let s = name_from_bytes(&b);
            prop_assert_eq!(name_to_bytes(&s), Some(b));
            prop_assert!(is_canonical(&s));
        }
    }
}
