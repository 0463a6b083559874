//! `veil sconify-image` (issue 17) on images built here from busybox-static (and, for the
//! loader closure, a program `cc` links dynamically), checked with tools nobody here wrote:
//! `skopeo inspect` (manifest, config), `umoci unpack` (the layers as a runtime applies them),
//! GNU tar (builds the source layers, whiteouts and opaque markers included), `ldd` (what a
//! dynamic program loads), plus the shield (the code region opens at the session's key and
//! tag) and `veil measure` (the launcher's own measurement of a static program).
//!
//! Registries: Debian's `docker-registry` on 127.0.0.1, images pushed and read back with skopeo.
//!
//! Not covered here yet: running the converted image (podman, or the launcher against a CAS);
//! the launcher reads `/etc/veil/program` and `/fspf/fs.fspf` at absolute paths, so that needs
//! a container.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use veil_types::Digest32;

use crate::support::{launcher_bin, success_stdout, veil};

const CAS_KEY_HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed (Debian package: {name}); this test needs it");
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", Digest32::of(data).to_hex())
}

/// An OCI layout written by hand: layers are tars GNU tar makes from directories.
struct Layout {
    dir: PathBuf,
    layers: Vec<(String, String, u64, bool)>, // digest, diff_id, size, gzip
}

impl Layout {
    fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_path_buf(),
            layers: Vec::new(),
        }
    }

    fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        fs::write(
            self.dir
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )
        .unwrap();
        d
    }

    /// Add the content of `tree` as a layer (gzip when `gz`).
    fn layer(&mut self, tree: &Path, gz: bool) {
        let tarf = tree.with_extension("tar");
        run(Command::new(tool("tar"))
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-cf",
            ])
            .arg(&tarf)
            .arg("-C")
            .arg(tree)
            .arg("."));
        let raw = fs::read(&tarf).unwrap();
        let diff_id = sha(&raw);
        let data = if gz {
            run(Command::new(tool("gzip"))
                .args(["-n", "-k", "-f"])
                .arg(&tarf));
            fs::read(tarf.with_extension("tar.gz")).unwrap()
        } else {
            raw
        };
        let d = self.blob(&data);
        self.layers.push((d, diff_id, data.len() as u64, gz));
    }

    fn finish(&self, config: Value, tag: &str) {
        let mut config = config;
        config["rootfs"] = json!({"type": "layers", "diff_ids": self.layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()});
        config["architecture"] = json!("amd64");
        config["os"] = json!("linux");
        let c = serde_json::to_vec(&config).unwrap();
        let cd = self.blob(&c);
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|(d, _, s, gz)| {
                let t = if *gz {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else {
                    "application/vnd.oci.image.layer.v1.tar"
                };
                json!({"mediaType": t, "digest": d, "size": s})
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": c.len()},
            "layers": layers,
        });
        let m = serde_json::to_vec(&manifest).unwrap();
        let md = self.blob(&m);
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }]
        });
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// The counter image: busybox-static as /bin/busybox (sh a symlink, cat a hard link), three
/// layers: base with /code (two files) and /keep; a second layer deleting /code/old.sh, adding
/// /code/new.sh and making /keep opaque; a third touching nothing under /code.
fn counter_image(tmp: &Path) -> PathBuf {
    let busybox = tool("busybox");
    let l1 = tmp.join("l1");
    write(&l1, "bin/.keep", b"");
    fs::remove_file(l1.join("bin/.keep")).unwrap();
    fs::copy(&busybox, l1.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", l1.join("bin/sh")).unwrap();
    fs::hard_link(l1.join("bin/busybox"), l1.join("bin/cat")).unwrap();
    write(&l1, "code/app.sh", b"echo counting\n");
    write(&l1, "code/old.sh", b"echo secret old code\n");
    write(&l1, "keep/lower", b"hidden by the opaque marker\n");
    write(&l1, "etc/hostname", b"counter\n");
    let l2 = tmp.join("l2");
    write(&l2, "code/.wh.old.sh", b"");
    write(&l2, "code/new.sh", b"echo new code\n");
    write(&l2, "keep/.wh..wh..opq", b"");
    write(&l2, "keep/upper", b"upper\n");
    let l3 = tmp.join("l3");
    write(&l3, "data/readme", b"plain data\n");
    let oci = tmp.join("src");
    let mut layout = Layout::new(&oci);
    layout.layer(&l1, true);
    layout.layer(&l2, true);
    layout.layer(&l3, false);
    layout.finish(
        json!({"config": {
            "Env": ["PATH=/bin", "GREETING=hello world"],
            "Entrypoint": ["/bin/sh"],
            "Cmd": ["/code/app.sh"],
            "WorkingDir": "/data",
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"org.example.app": "counter"}
        }}),
        "v1",
    );
    oci
}

#[derive(Debug)]
struct Converted {
    json: Value,
    session: String,
}

fn sconify(home: &Path, args: &[&str]) -> Result<Converted, String> {
    sconify_with(
        home,
        args,
        &["--cas-key-hash", CAS_KEY_HASH, "--disable-session-upload"],
    )
}

fn sconify_with(home: &Path, args: &[&str], extra: &[&str]) -> Result<Converted, String> {
    let session = home.join(format!("session-{}.yml", args.len()));
    let mut c = veil(home);
    c.arg("sconify-image")
        .args(args)
        .args(extra)
        .arg("--json")
        .arg(format!("--session={}", session.display()));
    let o = c.output().unwrap();
    if !o.status.success() {
        assert!(!session.exists(), "a failed conversion left a session file");
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(Converted {
        json: serde_json::from_slice(&o.stdout).unwrap(),
        session: fs::read_to_string(&session).unwrap(),
    })
}

fn unpack(tmp: &Path, image: &str, name: &str) -> PathBuf {
    let bundle = tmp.join(name);
    run(Command::new(tool("umoci"))
        .args(["unpack", "--image", image])
        .arg(&bundle));
    bundle.join("rootfs")
}

fn field<'a>(session: &'a str, key: &str) -> &'a str {
    session
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap()
        .trim_matches('"')
}

#[test]
fn a_busybox_counter_is_converted_and_tools_read_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = counter_image(t);
    let keys = t.join("keys.json");
    let dst = t.join("dst");
    let started = std::time::Instant::now();
    let out = sconify(
        t,
        &[
            &format!("--from=oci:{}:v1", src.display()),
            "--to",
            &format!("oci:{}:v1", dst.display()),
            "--dir=/code",
            "--volume=V1:/V1",
            "--env",
            "SCONE_LOG=7",
            "--namespace=ns-test",
            "--name",
            "counter",
            "--service-name=counter-service",
            "--keys",
            keys.to_str().unwrap(),
        ],
    )
    .unwrap();
    eprintln!("conversion took {:?}", started.elapsed());
    let j = &out.json;
    assert_eq!(j["session"], "ns-test/counter");
    assert_eq!(j["program"], "/bin/busybox");
    assert_eq!(
        j["loaded"],
        json!([]),
        "busybox-static loads nothing at start"
    );
    assert_eq!(
        j["layers"],
        json!({"passed": 1, "rewritten": 2, "added": 1})
    );

    // skopeo reads the manifest and config.
    let image = format!("oci:{}:v1", dst.display());
    let inspect: Value =
        serde_json::from_str(&run(Command::new(tool("skopeo")).args(["inspect", &image]))).unwrap();
    assert_eq!(inspect["Digest"], j["digest"]);
    let raw: Value = serde_json::from_str(&run(
        Command::new(tool("skopeo")).args(["inspect", "--raw", &image])
    ))
    .unwrap();
    assert_eq!(raw["annotations"]["dev.veil.measurement"], j["measurement"]);
    assert_eq!(raw["annotations"]["dev.veil.session"], "ns-test/counter");
    let src_raw: Value = serde_json::from_str(&run(Command::new(tool("skopeo")).args([
        "inspect",
        "--raw",
        &format!("oci:{}:v1", src.display()),
    ])))
    .unwrap();
    assert_eq!(
        raw["layers"][2]["digest"], src_raw["layers"][2]["digest"],
        "the layer no --dir touches is passed through by digest"
    );
    assert_ne!(raw["layers"][0]["digest"], src_raw["layers"][0]["digest"]);
    let config: Value = serde_json::from_str(&run(
        Command::new(tool("skopeo")).args(["inspect", "--config", &image])
    ))
    .unwrap();
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        json!(["/usr/lib/veil/veil-launcher", "--"])
    );
    assert!(c.get("Cmd").is_none_or(Value::is_null));
    assert_eq!(c["WorkingDir"], "/data");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}}));
    assert_eq!(c["Labels"], json!({"org.example.app": "counter"}));
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        vec![
            "PATH=/bin",
            "GREETING=hello world",
            "SCONE_CONFIG_ID=ns-test/counter/counter-service",
            "SCONE_CAS_ADDR=cas",
            "SCONE_LAS_ADDR=localhost:18766"
        ]
    );

    // umoci applies the layers as a runtime does.
    let root = unpack(t, &format!("{}:v1", dst.display()), "bundle");
    assert_eq!(
        fs::read_dir(root.join("code")).unwrap().count(),
        0,
        "/code is empty in the plain layers"
    );
    assert_eq!(
        fs::read(root.join("usr/lib/veil/veil-launcher")).unwrap(),
        fs::read(launcher_bin()).unwrap()
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/veil/program")).unwrap(),
        "/bin/busybox\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/veil/cas-key-hash")).unwrap(),
        format!("{CAS_KEY_HASH}\n")
    );
    assert_eq!(
        fs::read_to_string(root.join("data/readme")).unwrap(),
        "plain data\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "counter\n"
    );
    assert!(!root.join("keep/lower").exists() && root.join("keep/upper").exists());
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read(root.join("bin/cat")).unwrap(),
        fs::read(root.join("bin/busybox")).unwrap()
    );
    // No plaintext of the code anywhere in the image's blobs.
    for e in fs::read_dir(dst.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let mut data = fs::read(&p).unwrap();
        if data.starts_with(&[0x1f, 0x8b]) {
            let mut d = flate2_free_gunzip(&p);
            data.append(&mut d);
        }
        for secret in [&b"echo counting"[..], b"secret old code", b"echo new code"] {
            assert!(
                !data.windows(secret.len()).any(|w| w == secret),
                "{} holds code in plaintext",
                p.display()
            );
        }
    }

    // The region's store is readable by the image's non-root User (it holds only ciphertext).
    for e in fs::read_dir(root.join("fspf/fs.fspf")).unwrap() {
        let md = e.unwrap().metadata().unwrap();
        if md.is_file() {
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
                0o644
            );
        }
    }
    // The code region opens at the session's key and tag and holds /code as the image had it.
    let key = veil_shield::VolumeKey::from_hex(field(&out.session, "fspf_key")).unwrap();
    let tag: veil_types::Tag = field(&out.session, "fspf_tag").parse().unwrap();
    let vol = veil_shield::open(
        &root.join("fspf/fs.fspf"),
        &key,
        &veil_shield::VolumeId::default(),
        veil_shield::Expect::Tag(tag),
        veil_shield::Access::ReadOnly,
        veil_shield::Options::named("code-region"),
    )
    .unwrap();
    let plain = t.join("plain");
    vol.unpack(&plain).unwrap();
    assert_eq!(
        fs::read_to_string(plain.join("code/app.sh")).unwrap(),
        "echo counting\n"
    );
    assert_eq!(
        fs::read_to_string(plain.join("code/new.sh")).unwrap(),
        "echo new code\n"
    );
    assert!(
        !plain.join("code/old.sh").exists(),
        "a whited-out file is not resurrected"
    );

    // The session: seed 000's shape, accepted by veil session check.
    let s = &out.session;
    for want in [
        "name: \"ns-test/counter\"",
        "read: [CREATOR]",
        "command: \"/bin/sh /code/app.sh\"",
        "\"GREETING\": \"hello world\"",
        "\"SCONE_LOG\": \"7\"",
        "pwd: \"/data\"",
        "fspf_path: \"/fspf/fs.fspf\"",
        "path: \"/V1\"",
    ] {
        assert!(s.contains(want), "{want} missing from\n{s}");
    }
    let sf = t.join("check.yml");
    fs::write(&sf, s).unwrap();
    success_stdout(
        &["session", "check"],
        veil(t)
            .arg("session")
            .arg("check")
            .arg(&sf)
            .output()
            .unwrap(),
    );

    // The launcher's own measurement of busybox is one the session accepts (v1: a static
    // program loads nothing else), next to the v2 measurement in the annotation.
    let m = success_stdout(
        &["measure"],
        veil(t)
            .args(["measure", "--launcher"])
            .arg(launcher_bin())
            .arg("--program")
            .arg(root.join("bin/busybox"))
            .output()
            .unwrap(),
    );
    let mrenclaves: Vec<String> = j["mrenclaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(mrenclaves.len(), 2);
    assert_eq!(mrenclaves[0], j["measurement"].as_str().unwrap());
    assert_eq!(mrenclaves[1], m.trim());
    let l = Digest32::of(&fs::read(launcher_bin()).unwrap());
    let p = Digest32::of(&fs::read(root.join("bin/busybox")).unwrap());
    let v2 = veil_attest::measure::measurement_v2(&l, &p, b"", &[]);
    assert_eq!(v2.to_hex(), mrenclaves[0]);
}

/// gunzip through GNU gzip (so the test does not depend on the converter's own decoder).
fn flate2_free_gunzip(p: &Path) -> Vec<u8> {
    let o = Command::new(tool("gzip"))
        .args(["-dc"])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout
}

#[test]
fn the_same_keys_give_the_same_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = counter_image(t);
    let keys = t.join("keys.json");
    let conv = |dst: &str, keys: &Path| {
        sconify(
            t,
            &[
                &format!("--from=oci:{}:v1", src.display()),
                &format!("--to=oci:{}:v1", t.join(dst).display()),
                "--dir=/code",
                "--name=counter",
                &format!("--keys={}", keys.display()),
            ],
        )
        .unwrap()
    };
    let a = conv("a", &keys);
    let b = conv("b", &keys);
    assert_eq!(a.json["digest"], b.json["digest"]);
    assert_eq!(a.json["session_hash"], b.json["session_hash"]);
    assert_eq!(a.session, b.session);
    let ns =
        serde_json::from_str::<Value>(&fs::read_to_string(&keys).unwrap()).unwrap()["namespace"]
            .clone();
    assert_eq!(
        a.json["session"],
        format!("{}/counter", ns.as_str().unwrap()),
        "the namespace comes from --keys"
    );
    let c = conv("c", &t.join("other-keys.json"));
    assert_ne!(a.json["digest"], c.json["digest"]);
    assert_eq!(
        a.json["measurement"], c.json["measurement"],
        "the measurement does not depend on the key"
    );
}

#[test]
fn docker_archives_in_and_out_and_a_template() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = counter_image(t);
    // skopeo writes the docker archive we read ...
    let archive = t.join("src.tar");
    run(Command::new(tool("skopeo")).args([
        "copy",
        &format!("oci:{}:v1", src.display()),
        &format!("docker-archive:{}:counter:v1", archive.display()),
    ]));
    let out_archive = t.join("out.tar");
    let out = sconify(
        t,
        &[
            &format!("--from=docker-archive:{}", archive.display()),
            &format!(
                "--to=docker-archive:{}:counter-veil:v1",
                out_archive.display()
            ),
            "--dir=/code",
            "--namespace=ns-t",
            "--name=tpl",
            "--template",
            crate::support::data("sconify/template.yml")
                .to_str()
                .unwrap(),
        ],
    )
    .unwrap();
    assert!(out.session.contains("name: ns-t/tpl"), "{}", out.session);
    assert!(out.session.contains(&format!(
        "mrenclaves: [{}",
        out.json["measurement"].as_str().unwrap()
    )));
    assert!(out.session.contains("\"GREETING\": \"hello world\""));
    // ... and reads the one we write; umoci unpacks it after skopeo copies it to OCI.
    let inspect: Value = serde_json::from_str(&run(Command::new(tool("skopeo")).args([
        "inspect",
        "--config",
        &format!("docker-archive:{}", out_archive.display()),
    ])))
    .unwrap();
    assert_eq!(
        inspect["config"]["Entrypoint"],
        json!(["/usr/lib/veil/veil-launcher", "--"])
    );
    let back = t.join("back");
    run(Command::new(tool("skopeo")).args([
        "copy",
        &format!("docker-archive:{}", out_archive.display()),
        &format!("oci:{}:v1", back.display()),
    ]));
    let root = unpack(t, &format!("{}:v1", back.display()), "bundle");
    assert_eq!(
        fs::read_to_string(root.join("etc/veil/program")).unwrap(),
        "/bin/busybox\n"
    );
    assert!(root.join("fspf/fs.fspf").read_dir().unwrap().count() > 0);
    assert!(!root.join("code/app.sh").exists());
}

#[test]
fn a_dynamic_program_is_measured_with_what_it_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::write(
        t.join("hello.c"),
        "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n",
    )
    .unwrap();
    run(Command::new(tool("cc"))
        .arg("-o")
        .arg(t.join("hello"))
        .arg(t.join("hello.c")));
    let l1 = t.join("l1");
    write(&l1, "app/hello", &fs::read(t.join("hello")).unwrap());
    fs::set_permissions(
        l1.join("app/hello"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // What ldd says the program loads, copied to the same paths.
    let ldd = run(Command::new(tool("ldd")).arg(t.join("hello")));
    let mut want = Vec::new();
    for line in ldd.lines() {
        let p = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if p.starts_with('/') {
            write(&l1, p.trim_start_matches('/'), &fs::read(p).unwrap());
            want.push(p.to_string());
        }
    }
    let mut layout = Layout::new(&t.join("src"));
    layout.layer(&l1, true);
    layout.finish(json!({"config": {"Entrypoint": ["/app/hello"]}}), "v1");
    let out = sconify(
        t,
        &[
            &format!("--from=oci:{}:v1", t.join("src").display()),
            &format!("--to=oci:{}:v1", t.join("dst").display()),
            "--name=hello",
            "--namespace=ns",
        ],
    )
    .unwrap();
    let loaded: Vec<String> = out.json["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let interp = want
        .iter()
        .find(|w| w.contains("ld-linux"))
        .unwrap()
        .clone();
    assert_eq!(loaded.first(), Some(&interp), "the interpreter comes first");
    let mut a = loaded.clone();
    a.sort();
    let mut b = want.clone();
    b.sort();
    assert_eq!(a, b, "the converter's closure is ldd's");
    let root = unpack(t, &format!("{}:v1", t.join("dst").display()), "bundle");
    let program = fs::read_to_string(root.join("etc/veil/program")).unwrap();
    let lines: Vec<&str> = program.lines().collect();
    assert_eq!(lines.first(), Some(&"/app/hello"));
    assert_eq!(
        &lines[1..],
        loaded
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
    );
    // The v2 measurement recomputed from the unpacked files.
    let h = |p: &str| Digest32::of(&fs::read(root.join(p.trim_start_matches('/'))).unwrap());
    let hashes: Vec<Digest32> = loaded.iter().map(|p| h(p)).collect();
    let list = veil_attest::measure::loaded_list(&loaded);
    let v2 = veil_attest::measure::measurement_v2(
        &Digest32::of(&fs::read(launcher_bin()).unwrap()),
        &h("/app/hello"),
        &list,
        &hashes,
    );
    assert_eq!(out.json["measurement"], v2.to_hex());
    assert_eq!(
        out.json["mrenclaves"],
        json!([v2.to_hex()]),
        "no v1 measurement for a dynamic program"
    );
}

#[test]
fn bad_input_is_one_line_naming_it_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = counter_image(t);
    let from = format!("--from=oci:{}:v1", src.display());
    let dst = t.join("dst");
    let to = format!("--to=oci:{}:v1", dst.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![&from, &to, "--dir=/nope"],
            "--dir /nope: does not exist in the image",
        ),
        (vec![&from, &to, "--dir=/bin"], "is inside --dir /bin"),
        (
            vec![&from, &to, "--binary=/bin/missing"],
            "--binary /bin/missing",
        ),
        (
            vec![&from, &to, "--platform=linux/arm64"],
            "unsupported platform linux/amd64",
        ),
        (
            vec!["--from=busybox:latest", &to],
            "--from busybox:latest: unknown transport",
        ),
        (
            vec![
                &from,
                "--to=docker://127.0.0.1:1/x:v1",
                "--dest-tls-verify=false",
            ],
            "--to docker://127.0.0.1:1/x:v1: ",
        ),
        (
            vec![
                "--from=docker://127.0.0.1:1/x:v1",
                &to,
                "--src-tls-verify=false",
            ],
            "--from docker://127.0.0.1:1/x:v1: ",
        ),
        (
            vec![&from, &to, "--volume=V1"],
            "--volume V1: expected the form NAME:PATH",
        ),
    ];
    for (args, want) in cases {
        let e = sconify(t, &args).unwrap_err();
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
        assert!(!dst.exists(), "{args:?} left {}", dst.display());
    }
    // A corrupt layer: one byte flipped in the base layer's blob.
    let index: Value = serde_json::from_slice(&fs::read(src.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let m: Value =
        serde_json::from_slice(&fs::read(src.join("blobs/sha256").join(md)).unwrap()).unwrap();
    let l0 = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let p = src
        .join("blobs/sha256")
        .join(l0.trim_start_matches("sha256:"));
    let mut data = fs::read(&p).unwrap();
    let n = data.len() - 10;
    data[n] ^= 1;
    fs::write(&p, data).unwrap();
    let e = sconify(t, &[&from, &to]).unwrap_err();
    assert!(e.contains(&format!("layer 0 ({l0})")), "{e}");
    assert!(!dst.exists());
    // An unpinned --cas is named.
    let o = veil(t)
        .args(["sconify-image", &from, &to, "--cas", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--cas 127.0.0.1:1: not a pinned CAS"), "{e}");
    assert!(!dst.exists());
}

#[test]
fn the_session_is_uploaded_and_a_new_version_updates_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cas_dir = tempfile::tempdir().unwrap();
    let cas = crate::support::CasProcess::start(t, cas_dir.path());
    let id = veil_identity::Identity::generate("ci-runner", &[]).unwrap();
    crate::support::pin_cas_as(t, &id, &cas);
    let src = counter_image(t);
    let keys = t.join("keys.json");
    let conv = |dst: &str, env: &str| {
        sconify_with(
            t,
            &[
                &format!("--from=oci:{}:v1", src.display()),
                &format!("--to=oci:{}:v1", t.join(dst).display()),
                "--dir=/code",
                "--volume=V1:/V1",
                "--namespace=ns-up",
                "--name=counter",
                &format!("--env={env}"),
                &format!("--keys={}", keys.display()),
                "--create-namespace",
            ],
            &["--cas", &cas.api],
        )
        .unwrap()
    };
    let v1 = conv("v1", "VERSION=1");
    let read = |name: &str| {
        let o = veil(t).args(["session", "read", name]).output().unwrap();
        success_stdout(&["session", "read"], o)
    };
    let first = read("ns-up/counter");
    assert!(
        first.contains(v1.json["measurement"].as_str().unwrap()),
        "{first}"
    );
    assert!(read("ns-up").contains("create_sessions"));
    // The image trusts the pinned CAS.
    let root = unpack(t, &format!("{}:v1", t.join("v1").display()), "bundle");
    assert_eq!(
        fs::read_to_string(root.join("etc/veil/cas-key-hash")).unwrap(),
        format!("{}\n", cas.key_hash)
    );
    // A second conversion updates the session: its predecessor is the first version.
    let v2 = conv("v2", "VERSION=2");
    assert_ne!(v1.json["session_hash"], v2.json["session_hash"]);
    let second = read("ns-up/counter");
    assert!(second.contains("VERSION"), "{second}");
    assert!(
        second.contains(v1.json["session_hash"].as_str().unwrap()),
        "the new version names the first as its predecessor:\n{second}"
    );
}

/// Debian's `docker-registry` serving plain HTTP on a free 127.0.0.1 port.
struct Registry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let conf = dir.path().join("config.yml");
        fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not start on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn registry_to_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reg = Registry::start();
    let src = counter_image(t);
    let from = format!("docker://{}/counter:v1", reg.addr);
    let to = format!("docker://{}/counter-veil:v1", reg.addr);
    run(Command::new(tool("skopeo")).args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &from,
    ]));
    let out = sconify(
        t,
        &[
            "--from",
            &from,
            "--to",
            &to,
            "--src-tls-verify=false",
            "--dest-tls-verify",
            "false",
            "--dir=/code",
            "--namespace=ns",
            "--name=counter",
        ],
    )
    .unwrap();
    let inspect: Value = serde_json::from_str(&run(Command::new(tool("skopeo")).args([
        "inspect",
        "--tls-verify=false",
        &to,
    ])))
    .unwrap();
    assert_eq!(
        inspect["Digest"], out.json["digest"],
        "the registry holds the manifest we computed"
    );
    let back = t.join("back");
    run(Command::new(tool("skopeo")).args([
        "copy",
        "--src-tls-verify=false",
        &to,
        &format!("oci:{}:v1", back.display()),
    ]));
    let root = unpack(t, &format!("{}:v1", back.display()), "bundle");
    assert_eq!(
        fs::read_to_string(root.join("etc/veil/program")).unwrap(),
        "/bin/busybox\n"
    );
    assert_eq!(fs::read_dir(root.join("code")).unwrap().count(), 0);
    assert!(root.join("fspf/fs.fspf").read_dir().unwrap().count() > 0);
    // The layer no --dir touches keeps its digest through pull, conversion and push (skopeo
    // compressed it on the way into the registry, so compare with the registry's source).
    let src_raw: Value = serde_json::from_str(&run(Command::new(tool("skopeo")).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &from,
    ])))
    .unwrap();
    let raw: Value = serde_json::from_str(&run(Command::new(tool("skopeo")).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &to,
    ])))
    .unwrap();
    assert_eq!(raw["layers"][2]["digest"], src_raw["layers"][2]["digest"]);
}

/// A Python that has `helm_python` (helm-python-sdk) and `kubernetes_validate` (PyPI):
/// `VEIL_HELM_PYTHON`, else `python3`.
fn helm_python() -> PathBuf {
    let py = std::env::var_os("VEIL_HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let ok = Command::new(&py)
        .args(["-c", "import helm_python, kubernetes_validate"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import helm_python and kubernetes_validate: pip install helm-python-sdk kubernetes-validate (in a venv; set VEIL_HELM_PYTHON to its python)",
        py.display()
    );
    py
}

#[test]
fn the_helm_chart_lints_renders_and_validates() {
    let py = helm_python();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = counter_image(t);
    let charts = t.join("charts");
    let out = sconify(
        t,
        &[
            &format!("--from=oci:{}:v1", src.display()),
            &format!("--to=oci:{}:v1", t.join("dst").display()),
            "--dir=/code",
            "--volume=V1:/V1",
            "--namespace=ns",
            "--name=counter",
            "--service-name=counter-service",
            &format!("--k8s-helm-output-dir={}", charts.display()),
            "--k8s-helm-workload-type=job",
            "--k8s-helm-expose=8080",
        ],
    )
    .unwrap();
    let chart = charts.join("counter-service");
    assert_eq!(out.json["chart"], chart.to_str().unwrap());
    let values = fs::read_to_string(chart.join("values.yaml")).unwrap();
    assert!(
        values.contains(out.json["digest"].as_str().unwrap()),
        "{values}"
    );
    assert!(
        values.contains("configID: \"ns/counter/counter-service\""),
        "{values}"
    );
    assert!(values.contains("workloadType: job"));
    assert!(values.contains("volumev1:"));
    let o = Command::new(&py)
        .arg(crate::support::data("sconify/check_chart.py"))
        .arg(&chart)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(report.contains("lint ok"), "{report}");
    assert!(
        report.contains("render job staged persistence=True"),
        "{report}"
    );
    assert!(
        report.contains("schema refuses {'replicaCount': 2}"),
        "{report}"
    );
    assert!(
        report.contains("schema refuses {'workloadType': 'daemonset'}"),
        "{report}"
    );
    // A second conversion does not overwrite the chart, and fails before writing the image.
    let e = sconify(
        t,
        &[
            &format!("--from=oci:{}:v1", src.display()),
            &format!("--to=oci:{}:v1", t.join("dst2").display()),
            "--service-name=counter-service",
            &format!("--k8s-helm-output-dir={}", charts.display()),
        ],
    )
    .unwrap_err();
    assert!(e.contains("counter-service exists"), "{e}");
    assert!(!t.join("dst2").exists());
}
