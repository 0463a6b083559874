//! How a measurement is built (design decision 3).
//!
//! * A program started by the launcher (`veil run -- PROG`):
//!   `SHA-256("veil-measure-v1" ‖ SHA-256(launcher) ‖ SHA-256(program))`.
//! * `envcas`, whose program is only known after attestation:
//!   `SHA-256("veil-measure-envcas-v1" ‖ SHA-256(launcher))`.
//!
//! The domain strings keep the two forms apart: no launcher/program pair can produce an envcas
//! measurement or the other way round. The result is matched against a policy's `mrenclave`.

use std::io;
use std::path::Path;

use crate::hash::Digest32;
use veil_types::Measurement;

/// Domain string of a launcher + program measurement.
pub const MEASURE_DOMAIN: &[u8] = b"veil-measure-v1";
/// Domain string of an envcas measurement (launcher only).
pub const MEASURE_ENVCAS_DOMAIN: &[u8] = b"veil-measure-envcas-v1";

/// What the launcher will execute after attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// A program fixed before attestation, by the SHA-256 of its executable.
    Program {
        /// SHA-256 of the program's executable file.
        hash: Digest32,
    },
    /// `envcas`: the program comes from the CAS configuration and is not measured.
    Envcas,
}

/// The measurement of `launcher_hash` running `target`.
pub fn measurement(launcher_hash: &Digest32, target: &Target) -> Measurement {
    Measurement::from(match target {
        Target::Program { hash } => {
            Digest32::of_parts(&[MEASURE_DOMAIN, &launcher_hash.0, &hash.0])
        }
        Target::Envcas => Digest32::of_parts(&[MEASURE_ENVCAS_DOMAIN, &launcher_hash.0]),
    })
}

/// SHA-256 of the file at `path`.
pub fn hash_file(path: &Path) -> io::Result<Digest32> {
    Digest32::of_reader(std::fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_is_as_documented() {
        let l = Digest32::of(b"launcher");
        let p = Digest32::of(b"program");
        let mut buf = b"veil-measure-v1".to_vec();
        buf.extend_from_slice(&l.0);
        buf.extend_from_slice(&p.0);
        assert_eq!(
            measurement(&l, &Target::Program { hash: p }),
            Measurement::from(Digest32::of(&buf))
        );
        let mut buf = b"veil-measure-envcas-v1".to_vec();
        buf.extend_from_slice(&l.0);
        assert_eq!(
            measurement(&l, &Target::Envcas),
            Measurement::from(Digest32::of(&buf))
        );
    }

    #[test]
    fn every_input_changes_the_measurement() {
        let l = Digest32::of(b"launcher");
        let l2 = Digest32::of(b"launcher2");
        let p = Digest32::of(b"program");
        let p2 = Digest32::of(b"program2");
        let cases = [
            measurement(&l, &Target::Program { hash: p }),
            measurement(&l2, &Target::Program { hash: p }),
            measurement(&l, &Target::Program { hash: p2 }),
            measurement(&l, &Target::Envcas),
            measurement(&l2, &Target::Envcas),
        ];
        for (i, a) in cases.iter().enumerate() {
            for b in cases.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn hash_file_matches_content() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("x");
        std::fs::write(&f, b"hello")?;
        assert_eq!(hash_file(&f)?, Digest32::of(b"hello"));
        assert!(hash_file(&dir.path().join("missing")).is_err());
        Ok(())
    }
}
