//! The dependency picture ARCHITECTURE.md promises, checked with `cargo tree -e normal` (normal
//! dependencies only: what a crate links into its users). A crate that starts pulling in a
//! server, TLS or FUSE where the architecture says it must not fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Every package in the normal-dependency tree of `krate`.
fn tree(krate: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "-p", krate])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_absent(krate: &str, forbidden: &[&str], why: &str) {
    let deps = tree(krate);
    assert!(deps.contains(krate), "{krate} is not a workspace package");
    let found: Vec<&&str> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(
        found.is_empty(),
        "{krate} must not depend on {found:?} ({why}); see ARCHITECTURE.md"
    );
}

const SERVERS: &[&str] = &["axum", "hyper", "tokio", "redb", "veil-cas", "veil-las"];
const TLS: &[&str] = &["rustls", "rcgen", "tokio-rustls", "veil-identity"];

#[test]
fn no_library_depends_on_the_binary() {
    for krate in [
        "veil-types",
        "veil-api",
        "veil-identity",
        "veil-client",
        "veil-policy",
        "veil-shield",
        "veil-secrets",
        "veil-audit",
        "veil-attest",
        "veil-cas",
        "veil-las",
        "veil-launcher",
    ] {
        assert_absent(krate, &["veil"], "a library never depends on the binary");
    }
}

#[test]
fn the_foundation_knows_no_network_tls_or_server() {
    for krate in [
        "veil-types",
        "veil-api",
        "veil-policy",
        "veil-attest",
        "veil-audit",
    ] {
        assert_absent(krate, SERVERS, "it knows no network");
        assert_absent(krate, TLS, "it needs no TLS");
    }
    assert_absent("veil-shield", SERVERS, "the shield knows no network");
    assert_absent("veil-shield", TLS, "the shield knows no network");
}

#[test]
fn the_cas_links_no_launcher_or_fuse_code() {
    assert_absent(
        "veil-cas",
        &["veil-launcher", "veil-shield", "fuser", "veil-client"],
        "the CAS is a server only",
    );
}

#[test]
fn the_launcher_links_no_server_code() {
    assert_absent(
        "veil-launcher",
        &[
            "axum",
            "redb",
            "veil-cas",
            "veil-las",
            "veil-secrets",
            "veil-policy",
            "dcap-qvl",
            "sev",
            "clap",
        ],
        "the launcher runs in every workload and is measured: it links no server, no hardware verifier and no CLI framework",
    );
}

#[test]
fn the_las_server_links_no_cas_or_launcher() {
    assert_absent(
        "veil-las",
        &["veil-cas", "veil-launcher", "redb", "veil-shield"],
        "the LAS is a small node agent",
    );
}
