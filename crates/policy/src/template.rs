//! Template variables: `$VAR` and `${VAR}` are replaced before parsing, from explicit values
//! (`-e VAR=value`) and, when enabled, the process environment; explicit values win. Text between
//! `$$` markers (`$$SCONE::name$$` placeholders) is copied unchanged. Positions in the substituted
//! text can be mapped back to the template, so diagnostics point into the file the user wrote.

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Diagnostics, PolicyError, Severity};
use crate::model::Pos;

/// Values for template variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// Explicit values (`-e VAR=value`); they win over the environment.
    pub explicit: BTreeMap<String, String>,
    /// Also take values from the process environment (`--use-env`).
    pub use_env: bool,
}

impl Vars {
    /// The value of a variable, if any.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = self.explicit.get(name) {
            return Some(v.clone());
        }
        if self.use_env {
            return std::env::var(name).ok();
        }
        None
    }
}

/// One piece of the substituted text: copied from the template or produced by a variable.
#[derive(Debug, Clone, Copy)]
struct Segment {
    out_start: usize,
    in_start: usize,
    copied: bool,
}

/// Maps character offsets in substituted text back to positions in the template.
#[derive(Debug, Clone)]
pub(crate) struct SourceMap {
    segments: Vec<Segment>,
    /// Character offset of the start of each template line.
    line_starts: Vec<usize>,
}

impl SourceMap {
    /// The identity map for an unsubstituted text.
    pub(crate) fn identity(text: &str) -> SourceMap {
        SourceMap {
            segments: vec![Segment {
                out_start: 0,
                in_start: 0,
                copied: true,
            }],
            line_starts: line_starts(text),
        }
    }

    /// The template position of a character offset in the substituted text.
    pub(crate) fn pos(&self, out_char: usize) -> Pos {
        let i = self.segments.partition_point(|s| s.out_start <= out_char);
        let in_char = match i.checked_sub(1).and_then(|i| self.segments.get(i)) {
            Some(s) if s.copied => s.in_start + (out_char - s.out_start),
            Some(s) => s.in_start,
            None => out_char,
        };
        let line = self.line_starts.partition_point(|&ls| ls <= in_char);
        let ls = line
            .checked_sub(1)
            .and_then(|l| self.line_starts.get(l))
            .copied()
            .unwrap_or(0);
        Pos {
            line: line.max(1),
            col: in_char - ls + 1,
        }
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    for (i, c) in text.chars().enumerate() {
        if c == '\n' {
            v.push(i + 1);
        }
    }
    v
}

fn is_var_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}
fn is_var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Replace `$VAR` and `${VAR}` in `text`; `$$…$$` spans are left untouched. Every missing
/// variable is reported with its position (`session.yaml:1:7: value for variable $SESSION is
/// missing`).
pub fn substitute(file: &str, text: &str, vars: &Vars) -> Result<String, PolicyError> {
    substitute_mapped(file, text, vars).map(|(s, _)| s)
}

pub(crate) fn substitute_mapped(
    file: &str,
    text: &str,
    vars: &Vars,
) -> Result<(String, SourceMap), PolicyError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut out_chars = 0usize;
    let mut segments = vec![Segment {
        out_start: 0,
        in_start: 0,
        copied: true,
    }];
    let mut errors: Vec<(usize, String)> = Vec::new();
    let mut i = 0usize;
    let push_copy = |segments: &mut Vec<Segment>, out_chars: usize, in_start: usize| {
        segments.push(Segment {
            out_start: out_chars,
            in_start,
            copied: true,
        });
    };
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            out_chars += 1;
            i += 1;
            continue;
        }
        // `$$ … $$`: copy verbatim up to and including the closing `$$`.
        if chars.get(i + 1) == Some(&'$') {
            let mut j = i + 2;
            let mut end = None;
            while j + 1 < chars.len() {
                if chars[j] == '$' && chars[j + 1] == '$' {
                    end = Some(j + 2);
                    break;
                }
                j += 1;
            }
            let end = end.unwrap_or(i + 2);
            for &ch in &chars[i..end] {
                out.push(ch);
            }
            out_chars += end - i;
            i = end;
            continue;
        }
        let (name, next) = if chars.get(i + 1) == Some(&'{') {
            let mut j = i + 2;
            while j < chars.len() && is_var_char(chars[j]) {
                j += 1;
            }
            let name: String = chars[i + 2..j].iter().collect();
            if chars.get(j) != Some(&'}') || name.is_empty() || !name.starts_with(is_var_start) {
                errors.push((
                    i,
                    "malformed variable reference: expected `${NAME}`".to_string(),
                ));
                out.push('$');
                out_chars += 1;
                i += 1;
                continue;
            }
            (name, j + 1)
        } else if chars.get(i + 1).copied().is_some_and(is_var_start) {
            let mut j = i + 1;
            while j < chars.len() && is_var_char(chars[j]) {
                j += 1;
            }
            (chars[i + 1..j].iter().collect::<String>(), j)
        } else {
            // A lone `$` is literal.
            out.push('$');
            out_chars += 1;
            i += 1;
            continue;
        };
        match vars.get(&name) {
            Some(v) => {
                segments.push(Segment {
                    out_start: out_chars,
                    in_start: i,
                    copied: false,
                });
                out.push_str(&v);
                out_chars += v.chars().count();
                push_copy(&mut segments, out_chars, next);
            }
            None => errors.push((i, format!("value for variable ${name} is missing"))),
        }
        i = next;
    }
    let map = SourceMap {
        segments,
        line_starts: line_starts(text),
    };
    if errors.is_empty() {
        return Ok((out, map));
    }
    let ident = SourceMap::identity(text);
    Err(PolicyError::Invalid(Diagnostics(
        errors
            .into_iter()
            .map(|(at, message)| {
                let p = ident.pos(at);
                Diagnostic {
                    file: file.to_string(),
                    line: p.line,
                    col: p.col,
                    path: String::new(),
                    message,
                    severity: Severity::Error,
                }
            })
            .collect(),
    )))
}

#[cfg(test)]
mod tests {
    //! Template substitution: both `$VAR` forms, `$$` left alone, missing variables with positions,
    //! explicit values over the environment, positions mapped back to the original text.

    use super::*;

    fn vars(kv: &[(&str, &str)]) -> Vars {
        Vars {
            explicit: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            use_env: false,
        }
    }

    #[test]
    fn replaces_both_forms_and_keeps_placeholders() {
        let v = vars(&[("A", "1"), ("BB", "xyz")]);
        let out = substitute("f", "a: $A ${BB}x $$SCONE::s$$ $ $9 $$", &v).unwrap();
        assert_eq!(out, "a: 1 xyzx $$SCONE::s$$ $ $9 $$");
    }

    #[test]
    fn missing_variable_has_position() {
        let e = substitute("session.yaml", "name: $SESSION\n", &Vars::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "session.yaml:1:7: value for variable $SESSION is missing"
        );
        let e = substitute("f", "a: 1\nb: x${Y}\n", &Vars::default()).unwrap_err();
        assert_eq!(e.to_string(), "f:2:5: value for variable $Y is missing");
        let e = substitute("f", "a: ${Y\n", &Vars::default()).unwrap_err();
        assert!(e.to_string().starts_with("f:1:4: malformed"));
    }

    #[test]
    fn explicit_wins_over_env() {
        // PATH is always set in the environment.
        let mut v = vars(&[("PATH", "mine")]);
        v.use_env = true;
        assert_eq!(substitute("f", "$PATH", &v).unwrap(), "mine");
        v.explicit.clear();
        assert_ne!(substitute("f", "$PATH", &v).unwrap(), "$PATH");
    }

    #[test]
    fn positions_map_back() {
        let v = vars(&[("LONG", "0123456789")]);
        let (out, map) = substitute_mapped("f", "a: $LONG b\nc: d", &v).unwrap();
        let b = out.chars().position(|c| c == 'b').unwrap();
        assert_eq!(map.pos(b), Pos { line: 1, col: 10 });
        let inside = out.chars().position(|c| c == '5').unwrap();
        assert_eq!(map.pos(inside), Pos { line: 1, col: 4 });
        let c = out.chars().position(|c| c == 'c').unwrap();
        assert_eq!(map.pos(c), Pos { line: 2, col: 1 });
    }
}
