//! The CAS's audit log (issue 6, decision 17) from a real `veil cas serve` process: the log of
//! an end-to-end run (sessions via the CLI, a `sim` workload run by the real launcher, a
//! refused attestation, a graceful stop) verifies with `veil audit verify` and holds the
//! expected events; no generated secret appears in any log or output; a rolled-back database
//! is refused at start.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use veil_audit::Event;

use crate::support::{
    CasProcess, CasSpawn, CasStartError, launcher_command, success_stdout, veil, veil_bin,
};

/// A `veil cas serve` process whose stdout and stderr go to files; killed on drop.
struct Cas {
    process: CasProcess,
    stdout: PathBuf,
}

impl std::ops::Deref for Cas {
    type Target = CasProcess;
    fn deref(&self) -> &CasProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Cas {
    fn deref_mut(&mut self) -> &mut CasProcess {
        &mut self.process
    }
}

impl Cas {
    /// Start; `Err(stderr)` when the process exits before writing `ports.json`.
    fn try_start(home: &Path, data: &Path, n: u32) -> Result<Self, String> {
        let logs = home.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let stdout = logs.join(format!("cas-{n}.out"));
        let stderr = logs.join(format!("cas-{n}.err"));
        let spawned = CasProcess::spawn(
            home,
            data,
            &CasSpawn {
                extra: &["--allow-sim-tier"],
                log_level: Some("debug"),
                stdout: Some(&stdout),
                stderr: &stderr,
                timeout: Duration::from_secs(30),
            },
        );
        match spawned {
            Ok(process) => Ok(Self { process, stdout }),
            Err(CasStartError::Exited(log)) => Err(log),
            Err(CasStartError::TimedOut(log)) => panic!("CAS did not start: {log}"),
        }
    }

    fn start(home: &Path, data: &Path, n: u32) -> Self {
        Self::try_start(home, data, n).unwrap_or_else(|e| panic!("CAS did not start: {e}"))
    }

    /// Everything the process printed.
    fn output(&self) -> Vec<u8> {
        let mut v = std::fs::read(&self.stdout).unwrap();
        v.extend(std::fs::read(&self.process.stderr).unwrap());
        v
    }
}

/// A CLI client with its own HOME that records everything it printed.
struct Cli {
    home: tempfile::TempDir,
    printed: std::cell::RefCell<Vec<u8>>,
}

impl Cli {
    fn new(cas: &Cas) -> Self {
        let c = Self {
            home: tempfile::tempdir().unwrap(),
            printed: Default::default(),
        };
        c.ok(&["cas", "attest", &cas.api, "--key-hash", &cas.key_hash]);
        c
    }

    fn record(&self, o: &Output) {
        let mut p = self.printed.borrow_mut();
        p.extend_from_slice(&o.stdout);
        p.extend_from_slice(&o.stderr);
    }

    fn run(&self, args: &[&str]) -> Output {
        let o = veil(self.home.path())
            .env("VEIL_LOG", "debug")
            .args(args)
            .output()
            .unwrap();
        self.record(&o);
        o
    }

    fn ok(&self, args: &[&str]) -> String {
        success_stdout(args, self.run(args))
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// Run the real launcher (`veil envcas`, `sim` tier) for `service` of `session`.
    fn envcas(&self, cas: &Cas, session: &str, service: &str) -> Output {
        let o = launcher_command(&veil_bin())
            .env("HOME", self.home.path())
            .env("VEIL_LOG", "debug")
            .env("VEIL_MODE", "sim")
            .env("SCONE_CONFIG_ID", format!("{session}/{service}"))
            .env("VEIL_CAS_ADDR", &cas.enclave)
            .env("VEIL_CAS_KEY_HASH", &cas.key_hash)
            .arg("envcas")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        self.record(&o);
        o
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn events(audit_log: &Path) -> Vec<Event> {
    let data = std::fs::read(audit_log).unwrap();
    veil_audit::read_entries(&data)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

fn verify(cli: &Cli, audit_log: &Path, key_hash: &str) -> String {
    cli.ok(&[
        "audit",
        "verify",
        &audit_log.display().to_string(),
        "--cas-key-hash",
        key_hash,
    ])
}

#[test]
fn e2e_log_verifies_has_the_events_and_no_secret() {
    let cas_home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cas = Cas::start(cas_home.path(), data.path(), 1);
    let cli = Cli::new(&cas);

    // The envcas session (ascii + binary generated secrets), via the CLI.
    let mrenclave = {
        let o = veil(cli.home.path())
            .env("SCONE_HASH", "1")
            .arg("envcas")
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    assert_eq!(mrenclave.len(), 64, "{mrenclave}");
    let o = out.path().display().to_string();
    let yaml = std::fs::read_to_string(crate::support::data("envcas-session.yaml"))
        .unwrap()
        .replace("/work/out", &format!("{o}/out"));
    let f = cli.file("envcas.yaml", &yaml);
    let session = "audit-envcas";
    cli.ok(&[
        "session",
        "create",
        "-e",
        &format!("SESSION={session}"),
        "-e",
        &format!("MRENCLAVE={mrenclave}"),
        &f,
    ]);
    cli.ok(&["session", "read", session]);
    // A plain session, created, updated and read.
    let p1 = cli.file("p1.yaml", "name: audit-plain\nversion: \"0.3.10\"\n");
    let h1 = cli.ok(&["session", "create", &p1]).trim().to_string();
    let p2 = cli.file(
        "p2.yaml",
        "name: audit-plain\nversion: \"0.3.10\"\nsecrets:\n  - name: x\n    kind: binary\n",
    );
    let h2 = cli.ok(&["session", "update", &p2]).trim().to_string();
    assert_ne!(h1, h2);
    cli.ok(&["session", "read", "audit-plain"]);

    // The workload runs: its configuration carries the generated secrets.
    let run = cli.envcas(&cas, session, "envcas");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ascii = stdout.lines().find(|l| !l.is_empty()).unwrap().to_string();
    assert_eq!(ascii.len(), 32, "{stdout}");
    let binary = std::fs::read(out.path().join("out2")).unwrap();
    assert!(binary.len() >= 64, "{}", binary.len());
    let binary = binary[..64].to_vec();
    // A refused attestation: a wrong one-time password.
    let refused = cli.envcas(&cas, session, "with_otp@000000");
    assert!(!refused.status.success());
    cas.stop();

    let log = data.path().join("audit.log");
    let report = verify(&cli, &log, &cas.key_hash);
    assert!(!report.is_empty());
    let ev = events(&log);
    assert!(
        matches!(ev.first(), Some(Event::CasStarted { counter: 0, .. })),
        "{ev:?}"
    );
    // Three session writes, and the OTP state the refused attempt wrote (every DB write moves
    // the counter, issue 16 §2).
    assert_eq!(ev.last(), Some(&Event::CasStopped { counter: 4 }), "{ev:?}");
    assert!(
        ev.contains(&Event::StateCommitted {
            kind: "workload_otp".into(),
            counter: 4
        }),
        "{ev:?}"
    );
    let created: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::SessionCreated { session, .. } => Some(session.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(created, [session, "audit-plain"]);
    assert!(ev.iter().any(|e| matches!(e,
        Event::SessionUpdated { session, hash, predecessor, .. }
            if session == "audit-plain" && *hash == h2 && *predecessor == h1)));
    for name in [session, "audit-plain"] {
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::SessionRead { session: s, .. } if s == name)),
            "{ev:?}"
        );
    }
    assert!(ev.iter().any(|e| matches!(e,
        Event::ServiceAttested { session: s, service, tier, measurement, .. }
            if s == session && service == "envcas" && tier == "sim" && *measurement == mrenclave)));
    assert!(ev.iter().any(|e| matches!(e,
        Event::AttestationRefused { session: s, service, reason }
            if s == session && service == "with_otp" && reason.contains("One-time Password"))));
    assert!(ev.iter().any(|e| matches!(e,
        Event::OtpFailure { session: s, service } if s == session && service == "with_otp")));

    // No generated value in the audit log, the CAS's output or the CLI's output (the
    // workload's own stdout, which prints the secret by design, is left out).
    let audit = std::fs::read(&log).unwrap();
    let mut printed = cli.printed.borrow().clone();
    printed.extend_from_slice(&refused.stderr);
    let cas_out = cas.output();
    let launcher_err = run.stderr.clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let forms: Vec<Vec<u8>> = vec![
        ascii.as_bytes().to_vec(),
        binary.clone(),
        binary
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
        b64.encode(&binary).into_bytes(),
    ];
    let cli_only: Vec<u8> = {
        // The launcher's stdout is the workload's; drop it from what the CLI printed.
        let mut p = printed.clone();
        if let Some(i) = p.windows(run.stdout.len()).position(|w| w == run.stdout) {
            p.drain(i..i + run.stdout.len());
        }
        p
    };
    for (what, hay) in [
        ("audit.log", &audit),
        ("CAS output", &cas_out),
        ("CLI output", &cli_only),
        ("launcher stderr", &launcher_err),
    ] {
        for (i, form) in forms.iter().enumerate() {
            assert!(!contains(hay, form), "secret form {i} found in the {what}");
        }
    }
    // The CAS did log (the scan is not of empty output).
    assert!(contains(&cas_out, b"service attested"));
}

#[test]
fn a_rolled_back_database_is_refused() {
    let cas_home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cas = Cas::start(cas_home.path(), data.path(), 1);
    let cli = Cli::new(&cas);
    let a = cli.file("a.yaml", "name: rb-a\nversion: \"0.3.10\"\n");
    cli.ok(&["session", "create", &a]);
    cas.stop();
    let db = data.path().join("cas.redb");
    let old = std::fs::read(&db).unwrap();

    // More writes; the second run ends in a crash (no cas_stopped): the session writes in
    // the log still count.
    let cas = Cas::start(cas_home.path(), data.path(), 2);
    let b = cli.file("b.yaml", "name: rb-b\nversion: \"0.3.10\"\n");
    std::fs::remove_file(cli.home.path().join(".veil/config.json")).unwrap();
    cli.ok(&["cas", "attest", &cas.api, "--key-hash", &cas.key_hash]);
    cli.ok(&["session", "create", &b]);
    drop(cas);
    let new = std::fs::read(&db).unwrap();

    std::fs::write(&db, &old).unwrap();
    let err = match Cas::try_start(cas_home.path(), data.path(), 3) {
        Ok(_) => panic!("a rolled-back database must not start"),
        Err(e) => e,
    };
    assert!(err.contains("rollback detected"), "{err}");
    assert!(
        err.contains("counter is 1") && err.contains("records 2 writes"),
        "{err}"
    );
    // The refused start did not touch the log; the current database starts again.
    std::fs::write(&db, &new).unwrap();
    let mut cas = Cas::start(cas_home.path(), data.path(), 4);
    cas.stop();
    let log = data.path().join("audit.log");
    let ev = events(&log);
    let starts = ev
        .iter()
        .filter(|e| matches!(e, Event::CasStarted { .. }))
        .count();
    assert_eq!(starts, 3, "{ev:?}");
    verify(&cli, &log, &cas.key_hash);

    // A missing log next to a database with session writes is refused too.
    std::fs::rename(&log, data.path().join("audit.log.moved")).unwrap();
    let err = match Cas::try_start(cas_home.path(), data.path(), 5) {
        Ok(_) => panic!("a database without its audit log must not start"),
        Err(e) => e,
    };
    assert!(err.contains("missing or empty"), "{err}");
}
