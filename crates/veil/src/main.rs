//! The `veil` binary: one entry point, one clap subcommand per component.
//! Each subcommand lives in `cmd/<area>.rs`; this file only parses and dispatches.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Confidential containers: policies, attestation, encrypted volumes",
    propagate_version = true
)]
struct Cli {
    /// Client config (pinned CAS keys) [default: $VEIL_CLI_CONFIG, $SCONE_CLI_CONFIG or
    /// ~/.veil/config.json]. Arguments may also come from files: `@FILE` (one per line).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check, hash and manage sessions (policies).
    #[command(subcommand)]
    Session(cmd::session::SessionCmd),
    /// Encrypted, rollback-protected volumes (the file shield).
    #[command(subcommand)]
    Volume(cmd::volume::VolumeCmd),
    /// Run or talk to a configuration and attestation service (CAS).
    #[command(subcommand)]
    Cas(cmd::cas::CasCmd),
    /// This client's identity (key and certificate).
    #[command(name = "self", subcommand)]
    SelfId(cmd::identity::SelfCmd),
    /// Key hashes of certificates and public keys.
    #[command(subcommand)]
    Cert(cmd::cert::CertCmd),
    /// Print the current one-time password for a base32 secret.
    Otp(cmd::otp::OtpArgs),
    /// Verify the CAS audit log.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCmd),
    /// The local attestation service (one per node).
    #[command(subcommand)]
    Las(cmd::las::LasCmd),
    /// Attest, fetch the configuration from the CAS and run a program.
    Run(cmd::run::RunArgs),
    /// Attest, then run a native program with the CAS's arguments, environment and files.
    Envcas(cmd::run::EnvcasArgs),
    /// Verify recorded SGX/TDX/SEV-SNP evidence offline against vendor collateral.
    #[command(subcommand)]
    Evidence(cmd::evidence::EvidenceCmd),
    /// Compute a measurement offline.
    Measure(cmd::run::MeasureArgs),
    /// Convert a container image into a confidential image and generate its session.
    SconifyImage(Box<cmd::sconify::SconifyArgs>),
    /// Benchmarks that compare veil with a baseline on this machine.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
}

fn main() -> ExitCode {
    cmd::init_logging();
    // SCONE's `@argfile`: one argument per line, files may name further files.
    let mut args = match argfile::expand_args(argfile::parse_fromfile, argfile::PREFIX) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: reading an @argfile: {e}");
            return ExitCode::from(2);
        }
    };
    // Multi-call: a binary (or link) named `envcas` behaves as `veil envcas`.
    let is_envcas = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "envcas");
    if is_envcas {
        args.insert(1, "envcas".into());
    }
    let cli = Cli::parse_from(args);
    if let Some(path) = cli.config {
        veil_client::set_config_path(path);
    }
    let result = match cli.cmd {
        Cmd::Session(c) => cmd::session::run(c),
        Cmd::Volume(c) => cmd::volume::run(c),
        Cmd::Cas(c) => cmd::cas::run(c),
        Cmd::SelfId(c) => cmd::identity::run(c),
        Cmd::Cert(c) => cmd::cert::run(c),
        Cmd::Otp(a) => cmd::otp::run(a),
        Cmd::Audit(c) => cmd::audit::run(c),
        Cmd::Las(c) => cmd::las::run(c),
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Envcas(a) => cmd::run::envcas(a),
        Cmd::Measure(a) => cmd::run::measure(a),
        Cmd::SconifyImage(a) => cmd::sconify::run(*a),
        Cmd::Evidence(c) => cmd::evidence::run(c),
        Cmd::Bench(c) => cmd::bench::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  Caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
