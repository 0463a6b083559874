//! The command line of the static `veil-launcher` (parsed by hand: the launcher stays small).
//!
//! ```text
//! veil-launcher [--] [HOST-ARGS]                    the program named in /etc/veil/program
//! veil-launcher --program PROG [--] [HOST-ARGS]     `veil run -- PROG HOST-ARGS`
//! veil-launcher --envcas [--] [HOST-ARGS]           `veil envcas HOST-ARGS`, or argv[0] = envcas
//! veil-launcher --version | --help
//! ```
//!
//! Options come first; the first `--` or the first non-option ends them. Converted images use
//! `["/usr/lib/veil/veil-launcher", "--"]` as their entrypoint, so every host argument passes.

use crate::Kind;

/// The help text.
pub const USAGE: &str = "usage: veil-launcher [--program PROG | --envcas] [--] [HOST-ARGS...]
       veil-launcher --version | --help

Attests to the CAS (VEIL_CONFIG_ID / SCONE_CONFIG_ID, VEIL_CAS_ADDR, ...), receives the
service's configuration and runs the measured program with it. Without --program the program
named in /etc/veil/program is run. Invoked as `envcas` it is envcas. SCONE_HASH=1 prints the
measurement instead.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Launch: what, and the host arguments.
    Launch(Kind, Vec<String>),
    /// `--version`.
    Version,
    /// `--help`.
    Help,
}

/// Parse the arguments after argv[0]; `argv0_is_envcas` when invoked as `envcas`.
pub fn parse(argv0_is_envcas: bool, args: Vec<String>) -> Result<Parsed, String> {
    let mut kind = if argv0_is_envcas {
        Some(Kind::Envcas)
    } else {
        None
    };
    let mut it = args.into_iter().peekable();
    // Options come first; the first `--` or the first non-option ends them.
    while let Some(a) = it.peek() {
        match a.as_str() {
            "--" => {
                it.next();
                break;
            }
            "--version" | "-V" => return Ok(Parsed::Version),
            "--help" | "-h" => return Ok(Parsed::Help),
            "--envcas" if kind.is_none() => {
                it.next();
                kind = Some(Kind::Envcas);
            }
            "--program" if kind.is_none() => {
                it.next();
                let p = it
                    .next()
                    .filter(|p| !p.is_empty())
                    .ok_or("--program needs a program")?;
                kind = Some(Kind::Run { program: Some(p) });
            }
            o if o.starts_with('-') => {
                return Err(format!(
                    "unexpected option `{o}` (host arguments go after `--`)"
                ));
            }
            _ => break,
        }
    }
    Ok(Parsed::Launch(
        kind.unwrap_or(Kind::Run { program: None }),
        it.collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn command_lines() {
        let run = |p: Option<&str>| Kind::Run {
            program: p.map(str::to_string),
        };
        let table: Vec<(bool, Vec<String>, Result<Parsed, ()>)> = vec![
            (false, s(&[]), Ok(Parsed::Launch(run(None), vec![]))),
            (
                false,
                s(&["--", "-x", "y"]),
                Ok(Parsed::Launch(run(None), s(&["-x", "y"]))),
            ),
            (
                false,
                s(&["a", "--b"]),
                Ok(Parsed::Launch(run(None), s(&["a", "--b"]))),
            ),
            (
                false,
                s(&["--program", "/bin/p", "--", "--version"]),
                Ok(Parsed::Launch(run(Some("/bin/p")), s(&["--version"]))),
            ),
            (
                false,
                s(&["--envcas", "1"]),
                Ok(Parsed::Launch(Kind::Envcas, s(&["1"]))),
            ),
            (
                true,
                s(&["1", "2"]),
                Ok(Parsed::Launch(Kind::Envcas, s(&["1", "2"]))),
            ),
            (true, s(&["--program", "p"]), Err(())),
            (false, s(&["--program"]), Err(())),
            (false, s(&["--program", ""]), Err(())),
            (false, s(&["--envcas", "--program", "p"]), Err(())),
            (false, s(&["-x"]), Err(())),
            (false, s(&["--version"]), Ok(Parsed::Version)),
            (false, s(&["--help"]), Ok(Parsed::Help)),
        ];
        for (envcas, args, want) in table {
            let got = parse(envcas, args.clone()).map_err(|_| ());
            assert_eq!(got, want, "{envcas} {args:?}");
        }
    }
}
