//! Host-provided arguments and environment (`scone.md` §1.11), as pure functions.
//!
//! * An argv element that is exactly `@@N` is replaced by the host's `argv[N]` (`argv[0]` is
//!   the program as given to `veil run -- PROG`); a missing position or one used twice is fatal.
//! * An environment key `\@\@NAME` (or `@@NAME`) takes its value from the host variable `NAME`,
//!   defined empty when the host has none. All other host variables are dropped.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::LauncherError;

/// Expand `@@N` in the service's argv with `host_argv`.
pub fn expand_args(service: &[String], host_argv: &[String]) -> Result<Vec<String>, LauncherError> {
    let mut used = BTreeSet::new();
    let mut out = Vec::with_capacity(service.len());
    for a in service {
        let Some(n) = a.strip_prefix("@@").and_then(|d| {
            (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .then(|| d.parse::<usize>().ok())
                .flatten()
        }) else {
            out.push(a.clone());
            continue;
        };
        if !used.insert(n) {
            return Err(LauncherError::new(format!(
                "The host argument position @@{n} is used more than once in the service's command"
            )));
        }
        let v = host_argv.get(n).ok_or_else(|| {
            LauncherError::new(format!(
                "The service's command needs host argument @@{n}, but only {} were given",
                host_argv.len().saturating_sub(1)
            ))
        })?;
        out.push(v.clone());
    }
    Ok(out)
}

/// Expand `\@\@NAME` keys of the service's environment from `host_env`.
pub fn expand_env(
    service: &BTreeMap<String, String>,
    host_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    service
        .iter()
        .map(|(k, v)| {
            let host = k.strip_prefix("\\@\\@").or_else(|| k.strip_prefix("@@"));
            match host {
                Some(name) if !name.is_empty() => (
                    name.to_string(),
                    host_env.get(name).cloned().unwrap_or_default(),
                ),
                _ => (k.clone(), v.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args_table() {
        let host = s(&["prog", "-v", "/tmp/num"]);
        type Case<'a> = (Vec<&'a str>, Result<Vec<&'a str>, &'a str>);
        let cases: Vec<Case> = vec![
            (vec!["python", "app.py"], Ok(vec!["python", "app.py"])),
            (vec!["app", "@@1", "@@2"], Ok(vec!["app", "-v", "/tmp/num"])),
            (
                vec!["app", "@@2", "x", "@@0"],
                Ok(vec!["app", "/tmp/num", "x", "prog"]),
            ),
            (vec!["app", "@@3"], Err("needs host argument @@3")),
            (vec!["app", "@@1", "@@1"], Err("used more than once")),
            (
                vec!["app", "x@@1", "@@", "@@a"],
                Ok(vec!["app", "x@@1", "@@", "@@a"]),
            ),
        ];
        for (svc, want) in cases {
            let got = expand_args(&s(&svc), &host);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, s(&w), "{svc:?}"),
                (Err(e), Err(m)) => assert!(e.to_string().contains(m), "{svc:?}: {e}"),
                (g, _) => panic!("{svc:?}: {g:?}"),
            }
        }
    }

    #[test]
    fn env_table() {
        let host: BTreeMap<String, String> = [("HOME", "/root"), ("SECRET_HOST", "h")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let svc: BTreeMap<String, String> = [
            ("A", "1"),
            ("\\@\\@HOME", "ignored"),
            ("@@MISSING", "ignored"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let got = expand_env(&svc, &host);
        let want: BTreeMap<String, String> = [("A", "1"), ("HOME", "/root"), ("MISSING", "")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
