//! A small positioned YAML tree built from `saphyr-parser` events. Every node keeps the template
//! position it came from; aliases are expanded with a bound on the total number of nodes and on
//! the total bytes of scalars and tags (no "billion laughs", no "one huge anchor aliased many
//! times"), and nesting depth is bounded (no stack exhaustion).
//!
//! The byte bound ([`MAX_EXPANDED_BYTES`]) counts every scalar value and tag of the expanded tree
//! plus the copies kept of anchored nodes for later aliases; it is checked at each alias *before*
//! the anchored subtree is copied, so a refused document never allocates its expansion.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::model::Pos;
use crate::template::SourceMap;

/// Most nodes a document may expand to, counting every alias expansion.
pub const MAX_NODES: usize = 200_000;
/// Deepest nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 64;
/// Most bytes of scalar values and tags a document may expand to (4 MiB), counting every alias
/// expansion and the copy kept of each anchored node. A document without aliases is at most
/// [`crate::MAX_DOCUMENT_BYTES`] (1 MiB), so only alias expansion can reach this bound.
pub const MAX_EXPANDED_BYTES: usize = 4 << 20;

/// A YAML node with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub tag: Option<String>,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar { value: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of the node's type, for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }
    /// A plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true }
            if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
            && self.tag.is_none()
    }
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// A syntax or limit error at a position.
#[derive(Debug)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

enum Frame {
    Seq {
        pos: Pos,
        tag: Option<String>,
        anchor: usize,
        items: Vec<Node>,
        height: usize,
    },
    Map {
        pos: Pos,
        tag: Option<String>,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        height: usize,
    },
}

fn tag_string(tag: Option<&saphyr_parser::Tag>) -> Option<String> {
    let t = tag?;
    if t.is_yaml_core_schema() {
        Some(format!("!!{}", t.suffix))
    } else if t.handle == "!" {
        Some(format!("!{}", t.suffix))
    } else {
        Some(format!("{}{}", t.handle, t.suffix))
    }
}

/// Parse one YAML document into a positioned tree. `Ok(None)` for an empty stream.
pub(crate) fn parse(text: &str, map: &SourceMap) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    // anchor id -> (node, size in nodes, size in bytes, height)
    let mut anchors: HashMap<usize, (Node, usize, usize, usize)> = HashMap::new();
    let mut total = 0usize;
    let mut bytes = 0usize;
    let mut root: Option<Node> = None;
    let mut docs = 0usize;
    let too_many = |pos| YamlError {
        pos,
        message: format!(
            "document expands to more than {MAX_NODES} YAML nodes (aliases included); refusing it"
        ),
    };
    let too_big = |pos| YamlError {
        pos,
        message: format!(
            "the document expands to more than {} MiB through aliases (scalar and tag bytes, every alias expansion counted); refusing it",
            MAX_EXPANDED_BYTES >> 20
        ),
    };
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e| YamlError {
            pos: map.pos(e.marker().index()),
            message: format!("YAML syntax error: {}", e.info()),
        })?;
        let pos = map.pos(span.start.index());
        let is_seq = matches!(ev, Event::SequenceStart(..));
        // A completed node (with its size and height) to attach to the parent.
        let done: Option<(Node, usize, usize, usize)> = match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(YamlError {
                        pos,
                        message: "only one YAML document is allowed".into(),
                    });
                }
                None
            }
            Event::Alias(id) => {
                let Some((node, size, nbytes, height)) = anchors.get(&id) else {
                    return Err(YamlError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                if stack.len() + height > MAX_DEPTH {
                    return Err(YamlError {
                        pos,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                total += size;
                if total > MAX_NODES {
                    return Err(too_many(pos));
                }
                // Checked before the clone below: the expansion is never allocated.
                bytes = bytes.saturating_add(*nbytes);
                if bytes > MAX_EXPANDED_BYTES {
                    return Err(too_big(pos));
                }
                Some((node.clone(), 0, *size, *height))
            }
            Event::Scalar(value, style, anchor, tag) => {
                total += 1;
                if total > MAX_NODES {
                    return Err(too_many(pos));
                }
                let tag = tag_string(tag.as_deref());
                bytes = bytes.saturating_add(value.len() + tag.as_ref().map_or(0, String::len));
                if bytes > MAX_EXPANDED_BYTES {
                    return Err(too_big(pos));
                }
                let node = Node {
                    pos,
                    tag,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                Some((node, anchor, 1, 0))
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                total += 1;
                if total > MAX_NODES {
                    return Err(too_many(pos));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError {
                        pos,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                let tag = tag_string(tag.as_deref());
                bytes = bytes.saturating_add(tag.as_ref().map_or(0, String::len));
                if bytes > MAX_EXPANDED_BYTES {
                    return Err(too_big(pos));
                }
                stack.push(if is_seq {
                    Frame::Seq {
                        pos,
                        tag,
                        anchor,
                        items: Vec::new(),
                        height: 0,
                    }
                } else {
                    Frame::Map {
                        pos,
                        tag,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                        height: 0,
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    pos,
                    tag,
                    anchor,
                    items,
                    height,
                }) => {
                    let size = 1 + items.len();
                    Some((
                        Node {
                            pos,
                            tag,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                        size,
                        height + 1,
                    ))
                }
                Some(Frame::Map {
                    pos,
                    tag,
                    anchor,
                    entries,
                    height,
                    ..
                }) => {
                    let size = 1 + 2 * entries.len();
                    Some((
                        Node {
                            pos,
                            tag,
                            kind: Kind::Map(entries),
                        },
                        anchor,
                        size,
                        height + 1,
                    ))
                }
                None => {
                    return Err(YamlError {
                        pos,
                        message: "unbalanced YAML structure".into(),
                    });
                }
            },
        };
        let Some((node, anchor, _size, height)) = done else {
            continue;
        };
        if anchor > 0 {
            // Size of the subtree, counting nested expansions, for later aliases. The copy kept
            // here counts against the byte bound too (nested anchors would otherwise copy a
            // large subtree once per level).
            let (size, nbytes) = subtree_size(&node);
            bytes = bytes.saturating_add(nbytes);
            if bytes > MAX_EXPANDED_BYTES {
                return Err(too_big(node.pos));
            }
            anchors.insert(anchor, (node.clone(), size, nbytes, height));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq {
                items, height: h, ..
            }) => {
                *h = (*h).max(height);
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                key,
                height: h,
                ..
            }) => {
                *h = (*h).max(height);
                match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                }
            }
        }
    }
    Ok(root)
}

/// Nodes and bytes (scalar values and tags) of a subtree.
fn subtree_size(n: &Node) -> (usize, usize) {
    // Iterative to avoid deep recursion (depth is bounded anyway).
    let mut count = 0;
    let mut bytes = 0usize;
    let mut todo = vec![n];
    while let Some(n) = todo.pop() {
        count += 1;
        bytes = bytes.saturating_add(n.tag.as_ref().map_or(0, String::len));
        match &n.kind {
            Kind::Scalar { value, .. } => bytes = bytes.saturating_add(value.len()),
            Kind::Seq(v) => todo.extend(v.iter()),
            Kind::Map(v) => {
                for (k, val) in v {
                    todo.push(k);
                    todo.push(val);
                }
            }
        }
    }
    (count, bytes)
}

#[cfg(test)]
mod tests {
    //! The YAML reader: positions, and the limits (alias expansion, nesting, one document).

    use super::*;

    fn p(s: &str) -> Result<Option<Node>, YamlError> {
        parse(s, &SourceMap::identity(s))
    }

    #[test]
    fn positions() {
        let n = p("a: 1\nb:\n  - x\n  - y\n").unwrap().unwrap();
        let Kind::Map(e) = &n.kind else { panic!() };
        assert_eq!(e[1].0.pos, Pos { line: 2, col: 1 });
        let Kind::Seq(items) = &e[1].1.kind else {
            panic!()
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            s.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                std::iter::repeat_n(prev.as_str(), 10)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let e = p(&s).unwrap_err();
        assert!(e.message.contains("more than"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let s = "[".repeat(10_000) + &"]".repeat(10_000);
        let m = p(&s).unwrap_err().message;
        assert!(m.contains("nesting") || m.contains("recursion"), "{m}");
    }

    #[test]
    fn two_documents_are_refused() {
        assert!(p("a: 1\n---\nb: 2\n").is_err());
    }
}
