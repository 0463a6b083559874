//! `veil audit verify FILE --cas-key-hash HASH [--last SEQ:HASH]`: check a CAS audit log.
//!
//! Exit codes (SCONE's numbering where it fits): 0 intact; 20 a broken entry (does not parse,
//! bad signature, bad `prev` hash); 19 signed by a different CAS key; 18 the `--last` entry is
//! there but differs (history rewritten); 17 an entry is missing or out of order; 15 the log is
//! empty or its start was removed; 14 the log was cut at its end (torn last line, or it ends
//! before the `--last` entry). 1: the file cannot be read or the arguments are wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// `veil audit` subcommands.
#[derive(clap::Subcommand)]
pub enum AuditCmd {
    /// Verify an audit log's signatures and hash chain. Exit codes: 0 intact, 20 broken
    /// entry, 19 wrong CAS key, 18 rewritten history, 17 missing or reordered entries,
    /// 15 truncated start, 14 truncated end.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// The CAS key hash (64 hex) every `cas_started` entry must carry.
        #[arg(long)]
        cas_key_hash: String,
        /// An entry recorded earlier (`SEQ:HASH`, as printed by a previous verify) that must
        /// still be there, unchanged.
        #[arg(long, value_name = "SEQ:HASH")]
        last: Option<String>,
    },
}

/// Run an audit subcommand.
pub fn run(c: AuditCmd) -> anyhow::Result<ExitCode> {
    match c {
        AuditCmd::Verify {
            file,
            cas_key_hash,
            last,
        } => {
            if !veil_identity::is_key_hash(&cas_key_hash) {
                bail!("--cas-key-hash must be 64 lowercase hex characters");
            }
            let last = match last.as_deref() {
                None => None,
                Some(s) => {
                    let (seq, hash) = s
                        .split_once(':')
                        .context("--last must be SEQ:HASH, e.g. 12:3fa0…")?;
                    let seq: u64 = seq.parse().context("--last: SEQ is not a number")?;
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!("--last: HASH must be 64 hex characters");
                    }
                    Some((seq, hash.to_ascii_lowercase()))
                }
            };
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            match veil_audit::verify(
                &data,
                &cas_key_hash,
                last.as_ref().map(|(s, h)| (*s, h.as_str())),
            ) {
                Ok(rep) => {
                    println!(
                        "{}: intact, {} entries, {} starts, last {}:{}",
                        file.display(),
                        rep.entries,
                        rep.starts,
                        rep.last.seq,
                        rep.last.hash
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    Ok(ExitCode::from(e.exit_code()))
                }
            }
        }
    }
}
