//! SCONE REST compatibility (issue 12): `curl` with certificates made by `openssl`, against a
//! real CAS process; both surfaces (curl and `veil session`) see the same data; bad input.

use std::path::Path;

use crate::cas::Client;
use crate::support::{CasProcess, OpensslId, curl, json, msgs};

fn url(cas: &CasProcess, path: &str) -> String {
    format!("https://{}{path}", cas.api)
}

#[test]
fn scone_surface_with_curl_and_openssl_certs() {
    let dir = tempfile::tempdir().unwrap();
    let cas_home = tempfile::tempdir().unwrap();
    let cas = CasProcess::start(cas_home.path(), &dir.path().join("cas"));
    let alice = OpensslId::new(dir.path(), "alice");
    let mallory = OpensslId::new(dir.path(), "mallory");
    let s1 = dir.path().join("s1.yaml");
    std::fs::write(&s1, "name: ci-app\nversion: \"0.3.10\"\n").unwrap();

    // Create with POST /session, any content type.
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", s1.display()),
            &url(&cas, "/session"),
        ],
    );
    assert!(st == 200 || st == 201, "{st} {body}");
    let h1 = json(&body)["hash"].as_str().unwrap().to_string();
    assert_eq!(h1.len(), 64);

    // Read it back.
    let (st, body) = curl(&cas, Some(&alice), &[&url(&cas, "/v1/sessions/ci-app")]);
    assert_eq!(st, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["hash"], h1);
    assert!(v["session"].as_str().unwrap().contains("name: ci-app"));

    // Update with predecessor (body prefixed, as SCONE's scripts do).
    let s2 = dir.path().join("s2.yaml");
    std::fs::write(&s2, format!("predecessor: {h1}\nname: ci-app\nversion: \"0.3.10\"\naccess_policy:\n  read: [CREATOR]\n  update: [CREATOR]\n")).unwrap();
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &[
            "--data-binary",
            &format!("@{}", s2.display()),
            &url(&cas, "/session"),
        ],
    );
    assert!(st == 200 || st == 201, "{st} {body}");
    let h2 = json(&body)["hash"].as_str().unwrap().to_string();
    assert_ne!(h1, h2);

    // A stale predecessor is refused with 409 and a clear message.
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &[
            "--data-binary",
            &format!("@{}", s2.display()),
            &url(&cas, "/session"),
        ],
    );
    assert_eq!(st, 409, "{body}");
    assert!(msgs(&body).contains("not the current version"), "{body}");

    // The former version by hash.
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &[&url(&cas, &format!("/v1/sessions/ci-app?hash={h1}"))],
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["hash"], h1);

    // A second certificate can neither read nor update (404, no existence oracle).
    let (st, body) = curl(&cas, Some(&mallory), &[&url(&cas, "/v1/sessions/ci-app")]);
    assert_eq!(st, 404, "{body}");
    assert!(msgs(&body).contains("Session not found"), "{body}");
    let s3 = dir.path().join("s3.yaml");
    std::fs::write(
        &s3,
        format!("predecessor: {h2}\nname: ci-app\nversion: \"0.3.10\"\n"),
    )
    .unwrap();
    let (st, body) = curl(
        &cas,
        Some(&mallory),
        &[
            "--data-binary",
            &format!("@{}", s3.display()),
            &url(&cas, "/session"),
        ],
    );
    assert_eq!(st, 404, "{body}");

    // No certificate: protected routes answer 401 with a message; public ones work.
    let (st, body) = curl(&cas, None, &[&url(&cas, "/v1/sessions/ci-app")]);
    assert_eq!(st, 401, "{body}");
    assert!(msgs(&body).contains("client certificate"), "{body}");
    let (st, _) = curl(
        &cas,
        None,
        &[
            "--data-binary",
            &format!("@{}", s3.display()),
            &url(&cas, "/v1/sessions"),
        ],
    );
    assert_eq!(st, 401);
    let (st, body) = curl(&cas, None, &[&url(&cas, "/healthz")]);
    assert_eq!(st, 200, "{body}");
    let (st, body) = curl(&cas, None, &[&format!("https://{}/healthz", cas.enclave)]);
    assert_eq!(st, 200, "{body}");

    // Public values need no certificate; a non-public secret is refused with SCONE's message.
    let s5 = dir.path().join("s5.yaml");
    std::fs::write(&s5, "name: pubvals\nversion: \"0.3.10\"\nsecrets:\n  - name: greeting\n    kind: ascii\n    value: hello42\n    export_public: true\n  - name: hidden\n    kind: ascii\n    size: 12\n").unwrap();
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &[
            "--data-binary",
            &format!("@{}", s5.display()),
            &url(&cas, "/session"),
        ],
    );
    assert!(st == 200 || st == 201, "{st} {body}");
    let (st, body) = curl(&cas, None, &[&url(&cas, "/v1/values/session=pubvals")]);
    assert_eq!(st, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["values"]["greeting"]["value"], "hello42", "{body}");
    assert!(v["values"].get("hidden").is_none(), "{body}");
    let (st, body) = curl(
        &cas,
        None,
        &[&url(&cas, "/v1/values/session=pubvals,secret=greeting")],
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["value"], "hello42");
    let (st, body) = curl(
        &cas,
        None,
        &[&url(&cas, "/v1/values/session=pubvals,secret=hidden")],
    );
    assert_eq!(st, 404, "{body}");
    assert!(
        msgs(&body).contains("Secret does not exist or is not visible for a public client"),
        "{body}"
    );
    // The session read never carries the generated value.
    let (st, body) = curl(&cas, Some(&alice), &[&url(&cas, "/v1/sessions/pubvals")]);
    assert_eq!(st, 200, "{body}");
    assert!(
        !json(&body)["session"]
            .as_str()
            .unwrap()
            .contains("hidden\n    value"),
        "{body}"
    );

    // POST /v1/sessions creates.
    let s4 = dir.path().join("s4.yaml");
    std::fs::write(&s4, "name: ci-other\nversion: \"0.3.10\"\n").unwrap();
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &[
            "--data-binary",
            &format!("@{}", s4.display()),
            &url(&cas, "/v1/sessions"),
        ],
    );
    assert!(st == 200 || st == 201, "{st} {body}");
    let (st, body) = curl(&cas, Some(&alice), &[&url(&cas, "/v1/sessions")]);
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        json(&body)["sessions"],
        serde_json::json!(["ci-app", "ci-other", "pubvals"])
    );

    // Both surfaces see the same data: curl's session read with `veil session read` under the
    // same (openssl-made) identity, and a veil-created session read with curl.
    let client = Client::new();
    client.attest(&cas);
    let idf = alice.combined.display().to_string();
    let yaml = client.ok(&["session", "read", "ci-app", "--identity", &idf]);
    assert!(yaml.contains("name: ci-app"), "{yaml}");
    let f = client.file("veil.yaml", "name: from-veil\nversion: \"0.3.10\"\n");
    let hv = client
        .ok(&["session", "create", &f, "--identity", &idf])
        .trim()
        .to_string();
    let (st, body) = curl(&cas, Some(&alice), &[&url(&cas, "/v1/sessions/from-veil")]);
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["hash"], hv.as_str());
    // ...and mallory's certificate, used by veil, still reads nothing.
    let err = client.fails(&[
        "session",
        "read",
        "ci-app",
        "--identity",
        &mallory.combined.display().to_string(),
    ]);
    assert!(err.contains("Session not found"), "{err}");
}

/// Issue 16 (oracles): without a certificate, `GET /v1/values/…` must not tell an attacker
/// whether a session exists. A session that never existed answers exactly like one that
/// exports nothing public (status and body); for `secret=S` the only difference is the session
/// name the request itself carries in SCONE's message. Public values are still served.
#[test]
fn public_values_are_no_session_existence_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let cas_home = tempfile::tempdir().unwrap();
    let cas = CasProcess::start(cas_home.path(), &dir.path().join("cas"));
    let alice = OpensslId::new(dir.path(), "alice");
    let upload = |file: &str, yaml: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        let (st, body) = curl(
            &cas,
            Some(&alice),
            &[
                "--data-binary",
                &format!("@{}", path.display()),
                &url(&cas, "/session"),
            ],
        );
        assert!(st == 200 || st == 201, "{st} {body}");
    };
    // Exists, exports nothing public (one generated, one literal non-public secret).
    upload(
        "quiet.yaml",
        "name: oracle-quiet\nversion: \"0.3.10\"\nsecrets:\n  - name: hidden\n    kind: ascii\n    size: 12\n  - name: plain\n    kind: ascii\n    value: notpublic\n",
    );
    // Exists, exports one public value.
    upload(
        "open.yaml",
        "name: oracle-open\nversion: \"0.3.10\"\nsecrets:\n  - name: greeting\n    kind: ascii\n    value: hello42\n    export_public: true\n  - name: hidden\n    kind: ascii\n    size: 12\n",
    );
    let get = |path: &str| curl(&cas, None, &[&url(&cas, path)]);

    // `session=X`: existing-but-nothing-public and never-existed are byte-identical.
    let quiet = get("/v1/values/session=oracle-quiet");
    let ghost = get("/v1/values/session=oracle-ghost");
    assert_eq!(quiet.0, 200, "{}", quiet.1);
    assert_eq!(
        json(&quiet.1),
        serde_json::json!({"values": {}}),
        "{}",
        quiet.1
    );
    assert_eq!(
        ghost, quiet,
        "an absent session must answer like one with nothing public"
    );
    // Namespaced names too.
    assert_eq!(get("/v1/values/session=oracle-ghost/child"), quiet);

    // `session=X,secret=S`: S non-public, S absent, X absent: one status and code, SCONE's
    // messages; the bodies differ only by the requested session name.
    let refused = get("/v1/values/session=oracle-quiet,secret=hidden");
    assert_eq!(refused.0, 404, "{}", refused.1);
    assert_eq!(
        json(&refused.1)["code"],
        "secret_not_visible",
        "{}",
        refused.1
    );
    assert_eq!(
        json(&refused.1)["msg"],
        serde_json::json!([
            "Failed to read value 'hidden' of '/session=oracle-quiet' requested by a public client",
            "Secret does not exist or is not visible for a public client"
        ]),
        "{}",
        refused.1
    );
    let as_quiet = |(st, body): (u16, String), name: &str| {
        (
            st,
            body.replace(&format!("/session={name}'"), "/session=oracle-quiet'"),
        )
    };
    for (path, name) in [
        (
            "/v1/values/session=oracle-ghost,secret=hidden",
            "oracle-ghost",
        ),
        (
            "/v1/values/session=oracle-open,secret=hidden",
            "oracle-open",
        ),
    ] {
        let r = get(path);
        assert_ne!(
            r.1, refused.1,
            "the message names the requested session: {}",
            r.1
        );
        assert_eq!(as_quiet(r, name), refused, "{path}");
    }
    // A plain (literal) non-public secret, and one that does not exist, answer the same.
    let plain = get("/v1/values/session=oracle-quiet,secret=plain");
    let nosuch = get("/v1/values/session=oracle-quiet,secret=nosuch");
    let ghost_nosuch = get("/v1/values/session=oracle-ghost,secret=nosuch");
    assert_eq!(plain.0, 404, "{}", plain.1);
    assert_eq!(
        nosuch,
        (404, plain.1.replace("'plain'", "'nosuch'")),
        "absent secret vs non-public secret"
    );
    assert_eq!(as_quiet(ghost_nosuch, "oracle-ghost"), nosuch);

    // Public values are still served.
    let (st, body) = get("/v1/values/session=oracle-open");
    assert_eq!(st, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["values"]["greeting"]["value"], "hello42", "{body}");
    assert!(v["values"].get("hidden").is_none(), "{body}");
    let (st, body) = get("/v1/values/session=oracle-open,secret=greeting");
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["value"], "hello42", "{body}");
}

#[test]
fn bad_input_gets_clear_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let cas_home = tempfile::tempdir().unwrap();
    let cas = CasProcess::start(cas_home.path(), &dir.path().join("cas"));
    let alice = OpensslId::new(dir.path(), "alice");
    let post = |file: &Path| {
        curl(
            &cas,
            Some(&alice),
            &[
                "--data-binary",
                &format!("@{}", file.display()),
                &url(&cas, "/v1/sessions"),
            ],
        )
    };

    // Oversized body.
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("name: big\nx: \"{}\"\n", "a".repeat(2 << 20))).unwrap();
    let (st, body) = post(&big);
    assert_eq!(st, 413, "{body}");
    assert_eq!(json(&body)["code"], "body_too_large");

    // Not YAML / not a session.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "{{{ this is : not yaml").unwrap();
    let (st, body) = post(&bad);
    assert_eq!(st, 400, "{body}");
    assert_eq!(json(&body)["code"], "invalid_session");
    assert!(msgs(&body).contains(":1:"), "position expected: {body}");

    // Invalid UTF-8.
    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, b"name: \xff\xfe\n").unwrap();
    let (st, body) = post(&bin);
    assert_eq!(st, 400, "{body}");
    assert_eq!(json(&body)["code"], "invalid_utf8");

    // Unsupported keys are refused, not ignored.
    let unsup = dir.path().join("unsup.yaml");
    std::fs::write(
        &unsup,
        "name: u\nversion: \"0.3.10\"\nsecurity:\n  singleton_enclaves: true\n",
    )
    .unwrap();
    let (st, body) = post(&unsup);
    assert_eq!(st, 400, "{body}");
    assert!(msgs(&body).contains("is not supported yet"), "{body}");

    // Names with `/..`.
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &["--path-as-is", &url(&cas, "/v1/sessions/a/../b")],
    );
    assert_eq!(st, 400, "{body}");
    assert_eq!(json(&body)["code"], "invalid_name");

    // Unknown query parameters.
    let (st, body) = curl(&cas, Some(&alice), &[&url(&cas, "/v1/sessions/x?foo=1")]);
    assert_eq!(st, 400, "{body}");
    assert!(
        msgs(&body).contains("Unknown query parameter `foo`"),
        "{body}"
    );
    let (st, body) = curl(&cas, Some(&alice), &[&url(&cas, "/v1/sessions/x?hash=zz")]);
    assert_eq!(st, 400, "{body}");

    // Unknown route and method: JSON errors too.
    let (st, body) = curl(&cas, Some(&alice), &[&url(&cas, "/nope")]);
    assert_eq!(st, 404, "{body}");
    assert_eq!(json(&body)["code"], "no_such_route");
    let (st, body) = curl(
        &cas,
        Some(&alice),
        &["-X", "DELETE", &url(&cas, "/v1/sessions/x")],
    );
    assert_eq!(st, 405, "{body}");

    // OpenAPI lists the SCONE-compatible surface; metrics on loopback.
    let (st, body) = curl(&cas, None, &[&url(&cas, "/openapi.json")]);
    assert_eq!(st, 200);
    let doc = json(&body);
    for p in [
        "/session",
        "/v1/sessions",
        "/v1/sessions/{name}",
        "/healthz",
        "/metrics",
        "/v1/values/session={name}",
        "/v1/values/session={name},secret={secret}",
    ] {
        assert!(doc["paths"][p].is_object(), "OpenAPI lacks {p}");
    }
    let (st, body) = curl(&cas, None, &[&url(&cas, "/metrics")]);
    assert_eq!(st, 200, "{body}");
    assert!(
        body.contains(
            "veil_cas_requests_total{method=\"POST\",route=\"/v1/sessions\",status=\"413\"} 1"
        ),
        "{body}"
    );
    assert!(body.contains("veil_cas_sessions 0"), "{body}");
}
