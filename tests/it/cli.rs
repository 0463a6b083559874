//! CLI parity with SCONE's `scone` command (reference §2.5): `@argfile`, `-c/--config` and
//! `SCONE_CLI_CONFIG`, `-c/--cas`, `--retries`, `cas show-certificate`, `cert show-key-hash`,
//! `session calculate-hash --with-self-as-creator`, and SCONE's flag spellings.

use std::process::Output;

use crate::support::{CasProcess, assert_success, data, success_stdout, veil};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn argfiles_expand_one_argument_per_line_recursively() {
    let d = tempfile::tempdir().unwrap();
    let policy = data("counter-session-seed.yaml");
    let direct = success_stdout(
        &["session", "check"],
        veil(d.path())
            .args(["session", "check"])
            .arg(&policy)
            .output()
            .unwrap(),
    );
    // The file arguments live in a second argfile that the first one names.
    let inner = d.path().join("inner.args");
    std::fs::write(&inner, format!("{}\n", policy.display())).unwrap();
    let outer = d.path().join("outer.args");
    std::fs::write(&outer, format!("session\ncheck\n@{}\n", inner.display())).unwrap();
    let o = veil(d.path())
        .arg(format!("@{}", outer.display()))
        .output()
        .unwrap();
    assert_success(&o);
    assert_eq!(stdout(&o), direct.trim());
    // A missing argfile is a clear error naming it.
    let o = veil(d.path()).arg("@/nonexistent/args").output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/args"), "{}", stderr(&o));
}

#[test]
fn the_client_config_comes_from_the_flag_or_either_variable() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path();
    let cas_dir = tempfile::tempdir().unwrap();
    let cas = CasProcess::start(home, cas_dir.path());
    let conf = d.path().join("elsewhere.json");
    // Pin into a config named by SCONE's variable; the default config stays empty.
    let o = veil(home)
        .env("SCONE_CLI_CONFIG", &conf)
        .args(["cas", "attest", &cas.api, "-c", &cas.key_hash])
        .output()
        .unwrap();
    assert_success(&o);
    assert!(stdout(&o).contains("is trustworthy"), "{}", stdout(&o));
    assert!(conf.exists());
    let listed = |o: Output| {
        assert_success(&o);
        stdout(&o)
    };
    assert!(listed(veil(home).args(["cas", "list"]).output().unwrap()).is_empty());
    let with_flag = listed(
        veil(home)
            .arg("-c")
            .arg(&conf)
            .args(["cas", "list"])
            .output()
            .unwrap(),
    );
    assert!(
        with_flag.starts_with(&format!("* {}:", cas.api)),
        "{with_flag}"
    );
    let with_var = listed(
        veil(home)
            .env("VEIL_CLI_CONFIG", &conf)
            .args(["cas", "list"])
            .output()
            .unwrap(),
    );
    assert_eq!(with_var, with_flag);
    // Both variables, different values: refused (decision 18), not one silently chosen.
    let o = veil(home)
        .env("VEIL_CLI_CONFIG", &conf)
        .env("SCONE_CLI_CONFIG", d.path().join("other.json"))
        .args(["cas", "list"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("VEIL_CLI_CONFIG and SCONE_CLI_CONFIG are both set"),
        "{}",
        stderr(&o)
    );

    // The CAS's certificate, checked against the pin, hashes to the pinned key hash.
    let o = veil(home)
        .arg("--config")
        .arg(&conf)
        .args(["cas", "show-certificate"])
        .output()
        .unwrap();
    assert_success(&o);
    let pem_file = d.path().join("cas.pem");
    std::fs::write(&pem_file, &o.stdout).unwrap();
    let o = veil(home)
        .args(["cert", "show-key-hash"])
        .arg(&pem_file)
        .output()
        .unwrap();
    assert_success(&o);
    assert_eq!(stdout(&o), cas.key_hash);

    // `-c CAS` on a network command, and `--with-self-as-creator tls` predicts the hash that
    // `session create` prints.
    let ns = d.path().join("ns.yaml");
    std::fs::write(&ns, "name: cli-ns\nversion: \"0.3.10\"\n").unwrap();
    let predicted = success_stdout(
        &["session", "calculate-hash", "--with-self-as-creator", "tls"],
        veil(home)
            .args(["session", "calculate-hash", "--with-self-as-creator", "tls"])
            .arg(&ns)
            .output()
            .unwrap(),
    );
    let created = success_stdout(
        &["session", "create", "-c", "CAS"],
        veil(home)
            .arg("-c")
            .arg(&conf)
            .args(["session", "create", "-c", &cas.api])
            .arg(&ns)
            .output()
            .unwrap(),
    );
    assert_eq!(created, predicted);
    let o = veil(home)
        .args([
            "session",
            "calculate-hash",
            "--with-self-as-creator",
            "signer",
        ])
        .arg(&ns)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("TLS identities only"), "{}", stderr(&o));
}

#[test]
fn unpinned_cases_need_the_testing_flag_and_network_errors_are_retried() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path();
    let cas_dir = tempfile::tempdir().unwrap();
    let cas = CasProcess::start(home, cas_dir.path());
    // Nothing pinned: refused, naming what to do.
    let o = veil(home)
        .args(["session", "list", "--cas", &cas.api])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not attested"), "{}", stderr(&o));
    // SCONE's spelling of the testing flag connects without a pin, and says so.
    let o = veil(home)
        .args([
            "session",
            "list",
            "--cas",
            &cas.api,
            "--only_for_testing-disable-attestation-verification",
        ])
        .output()
        .unwrap();
    assert_success(&o);
    assert!(
        stderr(&o).contains("not verifying the key"),
        "{}",
        stderr(&o)
    );
    // An address where nothing listens: the connection is tried 1 + N times, then the error
    // names the address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let started = std::time::Instant::now();
    let o = veil(home)
        .args([
            "session",
            "list",
            "--only-for-testing-disable-attestation-verification",
            "--retries",
            "2",
            "-c",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&addr), "{}", stderr(&o));
    // Two back-offs (250 ms + 500 ms) happened.
    assert!(started.elapsed() >= std::time::Duration::from_millis(750));
}

#[test]
fn key_hashes_of_pem_files() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path();
    let mine = success_stdout(
        &["self", "show-key-hash"],
        veil(home).args(["self", "show-key-hash"]).output().unwrap(),
    );
    // The identity file itself (key + certificate), the certificate alone, and stdin.
    let id_file = home.join(".veil/identity.pem");
    let by_identity = success_stdout(
        &["cert", "show-key-hash"],
        veil(home)
            .args(["cert", "show-key-hash"])
            .arg(&id_file)
            .output()
            .unwrap(),
    );
    assert_eq!(by_identity, mine);
    let cert = veil(home)
        .args(["self", "show-certificate"])
        .output()
        .unwrap();
    assert_success(&cert);
    let cert_file = d.path().join("me.pem");
    std::fs::write(&cert_file, &cert.stdout).unwrap();
    let by_cert = success_stdout(
        &["cert", "show-key-hash"],
        veil(home)
            .args(["cert", "show-key-hash"])
            .arg(&cert_file)
            .output()
            .unwrap(),
    );
    assert_eq!(by_cert, mine);
    // Anything else is an error naming the file and what was found.
    let key_only = d.path().join("key.pem");
    let text = std::fs::read_to_string(&id_file).unwrap();
    let key_block: String = text
        .split_inclusive('\n')
        .take_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .collect();
    std::fs::write(&key_only, key_block).unwrap();
    let text_file = d.path().join("notes.txt");
    std::fs::write(&text_file, "just some text\n").unwrap();
    for (file, want) in [
        (
            key_only.as_path(),
            "no CERTIFICATE or PUBLIC KEY block (found PRIVATE KEY)",
        ),
        (text_file.as_path(), "no PEM block found"),
    ] {
        let o = veil(home)
            .args(["cert", "show-key-hash"])
            .arg(file)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{file:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&file.display().to_string()),
            "{}",
            stderr(&o)
        );
    }
}
