//! How a measurement is built (design decision 3).
//!
//! * A program started by the launcher (`veil run -- PROG`):
//!   `SHA-256("veil-measure-v1" ‖ SHA-256(launcher) ‖ SHA-256(program))`.
//! * `envcas`, whose program is only known after attestation:
//!   `SHA-256("veil-measure-envcas-v1" ‖ SHA-256(launcher))`.
//!
//! * A converted image's program with what it loads at start (decision 23):
//!   `SHA-256("veil-measure-v2" ‖ SHA-256(launcher) ‖ SHA-256(program) ‖ SHA-256(list) ‖
//!   SHA-256(file₁) ‖ … ‖ SHA-256(fileₙ))`, where the files are the program's ELF interpreter, the
//!   loader cache and its `DT_NEEDED` closure as the converter resolved them, and `list` is their
//!   absolute paths, each followed by `\n` ([`loaded_list`]): exactly the lines after the first
//!   (the program) of a converted image's `/etc/veil/program`.
//!
//! The domain strings keep the forms apart: no launcher/program pair can produce an envcas
//! measurement or the other way round. The result is matched against a policy's `mrenclave`.

use std::io;
use std::path::Path;

use crate::hash::Digest32;
use veil_types::Measurement;

/// Domain string of a launcher + program measurement.
pub const MEASURE_DOMAIN: &[u8] = b"veil-measure-v1";
/// Domain string of an envcas measurement (launcher only).
pub const MEASURE_ENVCAS_DOMAIN: &[u8] = b"veil-measure-envcas-v1";

/// Domain string of a launcher + program + loaded files measurement (decision 23).
pub const MEASURE_V2_DOMAIN: &[u8] = b"veil-measure-v2";

/// The `list` of a v2 measurement: each path followed by `\n`.
pub fn loaded_list<S: AsRef<str>>(paths: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(p.as_ref().as_bytes());
        out.push(b'\n');
    }
    out
}

/// The v2 measurement of `launcher_hash` running the program `program_hash` that loads, at start,
/// the files whose paths are `list` (see [`loaded_list`]) and whose SHA-256 are `file_hashes`, in
/// the same order.
pub fn measurement_v2(
    launcher_hash: &Digest32,
    program_hash: &Digest32,
    list: &[u8],
    file_hashes: &[Digest32],
) -> Measurement {
    measurement_v2_of(
        launcher_hash,
        program_hash,
        &Digest32::of(list),
        file_hashes,
    )
}

/// [`measurement_v2`] from the list's SHA-256 (what [`Target::Image`] carries).
pub fn measurement_v2_of(
    launcher_hash: &Digest32,
    program_hash: &Digest32,
    list_hash: &Digest32,
    file_hashes: &[Digest32],
) -> Measurement {
    let mut parts: Vec<&[u8]> = vec![
        MEASURE_V2_DOMAIN,
        &launcher_hash.0,
        &program_hash.0,
        &list_hash.0,
    ];
    parts.extend(file_hashes.iter().map(|h| &h.0[..]));
    Measurement::from(Digest32::of_parts(&parts))
}

/// Most files an [`Target::Image`] may name (a program's loader closure is tens of files; the
/// bound keeps evidence small).
pub const MAX_LOADED_FILES: usize = 1024;

/// What the launcher will execute after attestation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// A program fixed before attestation, by the SHA-256 of its executable.
    Program {
        /// SHA-256 of the program's executable file.
        hash: Digest32,
    },
    /// `envcas`: the program comes from the CAS configuration and is not measured.
    Envcas,
    /// A converted image's program and what it loads at start (decision 23): measured with
    /// [`measurement_v2`].
    Image {
        /// SHA-256 of the program's executable file.
        program: Digest32,
        /// SHA-256 of the list of loaded files ([`loaded_list`]).
        list: Digest32,
        /// SHA-256 of each listed file, in list order (at most [`MAX_LOADED_FILES`]).
        files: Vec<Digest32>,
    },
}

/// The measurement of `launcher_hash` running `target`.
pub fn measurement(launcher_hash: &Digest32, target: &Target) -> Measurement {
    Measurement::from(match target {
        Target::Program { hash } => {
            Digest32::of_parts(&[MEASURE_DOMAIN, &launcher_hash.0, &hash.0])
        }
        Target::Envcas => Digest32::of_parts(&[MEASURE_ENVCAS_DOMAIN, &launcher_hash.0]),
        Target::Image {
            program,
            list,
            files,
        } => return measurement_v2_of(launcher_hash, program, list, files),
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
    fn v2_construction_is_as_documented() {
        let l = Digest32::of(b"launcher");
        let p = Digest32::of(b"program");
        let list = loaded_list(&["/lib64/ld-linux-x86-64.so.2", "/lib/libc.so.6"]);
        assert_eq!(
            list,
            b"/lib64/ld-linux-x86-64.so.2\n/lib/libc.so.6\n".to_vec()
        );
        let f1 = Digest32::of(b"ld.so");
        let f2 = Digest32::of(b"libc");
        let mut buf = b"veil-measure-v2".to_vec();
        buf.extend_from_slice(&l.0);
        buf.extend_from_slice(&p.0);
        buf.extend_from_slice(&Digest32::of(&list).0);
        buf.extend_from_slice(&f1.0);
        buf.extend_from_slice(&f2.0);
        assert_eq!(
            measurement_v2(&l, &p, &list, &[f1, f2]),
            Measurement::from(Digest32::of(&buf))
        );
    }

    #[test]
    fn v2_differs_from_v1_and_depends_on_every_input() {
        let l = Digest32::of(b"launcher");
        let p = Digest32::of(b"program");
        let f = Digest32::of(b"libc");
        let g = Digest32::of(b"libc2");
        let one = loaded_list(&["/lib/libc.so.6"]);
        let other = loaded_list(&["/usr/lib/libc.so.6"]);
        let cases = [
            measurement(&l, &Target::Program { hash: p }),
            measurement_v2(&l, &p, &loaded_list::<&str>(&[]), &[]),
            measurement_v2(&l, &p, &one, &[f]),
            measurement_v2(&l, &p, &one, &[g]),
            measurement_v2(&l, &p, &other, &[f]),
            measurement_v2(&Digest32::of(b"l2"), &p, &one, &[f]),
            measurement_v2(&l, &Digest32::of(b"p2"), &one, &[f]),
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
