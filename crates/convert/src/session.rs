//! The generated session (seed 000's shape) and SCONE's template variables.

use std::collections::BTreeMap;

use crate::error::ConvertError;

/// What goes into the session.
pub struct SessionInput<'a> {
    /// `<namespace>/<session>`.
    pub name: &'a str,
    /// The service name.
    pub service: &'a str,
    /// The measurements the service may run with.
    pub mrenclaves: &'a [String],
    /// The command (argv).
    pub command: &'a [String],
    /// The environment.
    pub env: &'a BTreeMap<String, String>,
    /// The working directory.
    pub pwd: &'a str,
    /// Code region path, key (hex) and tag (hex), when there is one.
    pub fspf: Option<(&'a str, String, String)>,
    /// Volumes (name, path).
    pub volumes: &'a [(String, String)],
    /// `--allow-debug-mode`.
    pub allow_debug_mode: bool,
    /// `--allow-tcb-vulnerabilities`.
    pub allow_tcb_vulnerabilities: bool,
    /// `--secrets FILE` content (a YAML sequence).
    pub secrets: Option<&'a str>,
    /// `--injectedfiles FILE` content (a YAML sequence).
    pub injected_files: Option<&'a str>,
}

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// The tolerated attestation weaknesses the flags ask for (SCONE's lists).
fn tolerate(i: &SessionInput<'_>) -> Vec<&'static str> {
    let mut t = Vec::new();
    if i.allow_debug_mode {
        t.push("debug-mode");
    }
    if i.allow_tcb_vulnerabilities {
        t.extend([
            "hyperthreading",
            "insecure-igpu",
            "outdated-tcb",
            "software-hardening-needed",
            "insecure-configuration",
        ]);
    }
    t
}

/// The command as one string, as SCONE writes it.
pub fn command_string(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// `$ENVVARS`: the environment as indented `K: "V"` lines.
fn envvars(env: &BTreeMap<String, String>, by: usize) -> String {
    let pad = " ".repeat(by);
    env.iter()
        .map(|(k, v)| format!("{pad}{}: {}\n", q(k), q(v)))
        .collect()
}

/// The session in seed 000's shape.
pub fn generate(i: &SessionInput<'_>) -> String {
    let image = format!("{}_image", i.service);
    let mut s = String::new();
    s.push_str(&format!("name: {}\nversion: \"0.3\"\n", q(i.name)));
    s.push_str("access_policy:\n  read: [CREATOR]\n  update: [CREATOR]\n");
    if let Some(sec) = i.secrets {
        s.push_str("secrets:\n");
        s.push_str(&indent(sec, 2));
    }
    s.push_str("services:\n");
    s.push_str(&format!(
        "  - name: {}\n    image_name: {}\n",
        q(i.service),
        q(&image)
    ));
    let m: Vec<String> = i.mrenclaves.iter().map(|m| q(m)).collect();
    s.push_str(&format!("    mrenclaves: [{}]\n", m.join(", ")));
    s.push_str(&format!("    command: {}\n", q(&command_string(i.command))));
    if !i.env.is_empty() {
        s.push_str("    environment:\n");
        s.push_str(&envvars(i.env, 6));
    }
    s.push_str(&format!("    pwd: {}\n", q(i.pwd)));
    if let Some((path, key, tag)) = &i.fspf {
        s.push_str(&format!(
            "    fspf_path: {}\n    fspf_key: {}\n    fspf_tag: {}\n",
            q(path),
            q(key),
            q(tag)
        ));
    }
    if !i.volumes.is_empty() {
        s.push_str("volumes:\n");
        for (n, _) in i.volumes {
            s.push_str(&format!("  - name: {}\n", q(n)));
        }
    }
    s.push_str(&format!("images:\n  - name: {}\n", q(&image)));
    if !i.volumes.is_empty() {
        s.push_str("    volumes:\n");
        for (n, p) in i.volumes {
            s.push_str(&format!("      - name: {}\n        path: {}\n", q(n), q(p)));
        }
    }
    if let Some(f) = i.injected_files {
        s.push_str("    injection_files:\n");
        s.push_str(&indent(f, 6));
    }
    let t = tolerate(i);
    if !t.is_empty() {
        s.push_str("security:\n  attestation:\n");
        s.push_str(&format!("    tolerate: [{}]\n", t.join(", ")));
        // SCONE writes `ignore_advisories: "*"` for --allow-tcb-vulnerabilities; veil's
        // validator accepts it only together with debug-mode for now.
        if i.allow_tcb_vulnerabilities && i.allow_debug_mode {
            s.push_str("    ignore_advisories: \"*\"\n");
        }
    }
    s
}

/// Fill a SCONE session template: `$NAMESPACE $SESSION $MRENCLAVE $CMD $ENVVARS
/// $SCONE_FSPF_KEY $SCONE_FSPF_TAG $INJECTED_FILES $SECRETS` (`$ENVVARS` as `K: "V"` lines
/// indented by 6, `$INJECTED_FILES` and `$SECRETS` as given).
pub fn fill_template(
    file: &str,
    template: &str,
    namespace: &str,
    session: &str,
    i: &SessionInput<'_>,
) -> Result<String, ConvertError> {
    let (key, tag) = match &i.fspf {
        Some((_, k, t)) => (k.clone(), t.clone()),
        None => (String::new(), String::new()),
    };
    let mut vars = veil_policy::Vars::default();
    let e = &mut vars.explicit;
    e.insert("NAMESPACE".into(), namespace.into());
    e.insert("SESSION".into(), session.into());
    e.insert("MRENCLAVE".into(), i.mrenclaves.join(", "));
    e.insert("CMD".into(), command_string(i.command));
    e.insert(
        "ENVVARS".into(),
        envvars(i.env, 6).trim_start().trim_end().to_string(),
    );
    e.insert("SCONE_FSPF_KEY".into(), key);
    e.insert("SCONE_FSPF_TAG".into(), tag);
    e.insert(
        "INJECTED_FILES".into(),
        i.injected_files.unwrap_or_default().trim_end().into(),
    );
    e.insert(
        "SECRETS".into(),
        i.secrets.unwrap_or_default().trim_end().into(),
    );
    veil_policy::substitute(file, template, &vars).map_err(|e| ConvertError::Flag {
        flag: format!("--template {file}"),
        why: e.to_string().lines().next().unwrap_or_default().to_string(),
    })
}

/// Parse and validate the generated text; returns the session hash (no creator yet).
pub fn check(text: &str) -> Result<veil_policy::Session, ConvertError> {
    veil_policy::parse("generated session", text).map_err(|e| {
        ConvertError::Session(e.to_string().lines().next().unwrap_or_default().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        env: &'a BTreeMap<String, String>,
        cmd: &'a [String],
        vols: &'a [(String, String)],
        m: &'a [String],
    ) -> SessionInput<'a> {
        SessionInput {
            name: "ns-1/counter",
            service: "counter-service",
            mrenclaves: m,
            command: cmd,
            env,
            pwd: "/",
            fspf: Some(("/fspf/fs.fspf", "11".repeat(32), "22".repeat(16))),
            volumes: vols,
            allow_debug_mode: false,
            allow_tcb_vulnerabilities: false,
            secrets: None,
            injected_files: None,
        }
    }

    #[test]
    fn generated_session_passes_the_policy_checks() {
        let env: BTreeMap<String, String> = [
            ("PATH".to_string(), "/bin".to_string()),
            ("Q".into(), "a \"quoted\": value".into()),
        ]
        .into();
        let cmd = vec![
            "sh".to_string(),
            "-c".into(),
            "echo $((1+1)) > /V1/n".into(),
        ];
        let vols = vec![("V1".to_string(), "/V1".to_string())];
        let m = vec!["ab".repeat(32)];
        let mut i = input(&env, &cmd, &vols, &m);
        let text = generate(&i);
        let s = check(&text).unwrap();
        assert_eq!(s.name, "ns-1/counter");
        assert!(text.contains("read: [CREATOR]"));
        assert!(!text.contains("security:"));
        i.allow_debug_mode = true;
        let text = generate(&i);
        check(&text).unwrap();
        assert!(text.contains("tolerate: [debug-mode]"));
        i.allow_debug_mode = false;
        i.allow_tcb_vulnerabilities = true;
        let text = generate(&i);
        assert!(!text.contains("debug-mode"));
        assert!(text.contains("outdated-tcb"));
        check(&text).unwrap();
        i.allow_debug_mode = true;
        let text = generate(&i);
        assert!(text.contains("ignore_advisories"));
        check(&text).unwrap();
    }

    #[test]
    fn template_variables_are_filled() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        let cmd = vec!["/bin/app".to_string()];
        let m = vec!["cd".repeat(32)];
        let i = input(&env, &cmd, &[], &m);
        let t = "name: $NAMESPACE/$SESSION\nversion: \"0.3\"\nservices:\n  - name: s\n    mrenclaves: [$MRENCLAVE]\n    command: $CMD\n    environment:\n      $ENVVARS\n    fspf_path: /fspf/fs.fspf\n    fspf_key: $SCONE_FSPF_KEY\n    fspf_tag: $SCONE_FSPF_TAG\n";
        let text = fill_template("t.yml", t, "ns-1", "app", &i).unwrap();
        let s = check(&text).unwrap();
        assert_eq!(s.name, "ns-1/app");
        assert!(text.contains(&"11".repeat(32)));
        let e = fill_template("t.yml", "name: $NOPE\n", "n", "s", &i).unwrap_err();
        assert!(e.to_string().starts_with("--template t.yml:"), "{e}");
    }
}
