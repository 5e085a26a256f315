//! A small read-only view over a simd-json tape.
//!
//! simd-json parses a record in place into a flat tape of nodes; strings on the tape point
//! into the record's own (unescaped-in-place) bytes. Walking the tape directly gives us
//! lookups and iteration with no per-object maps and no allocation, and lets every `&str` we
//! hand out borrow from the input (`'a`) rather than from the tape.

use simd_json::{Node, StaticNode};

use crate::value::write_json_string;

/// One JSON value: the node slice starting at its header.
#[derive(Clone, Copy)]
pub(crate) struct Json<'t, 'a>(&'t [Node<'a>]);

/// The JSON kind of a value, for error messages.
pub(crate) fn kind_name(node: &Node<'_>) -> &'static str {
    match node {
        Node::String(_) => "string",
        Node::Object { .. } => "object",
        Node::Array { .. } => "array",
        Node::Static(StaticNode::Null) => "null",
        Node::Static(StaticNode::Bool(_)) => "boolean",
        Node::Static(StaticNode::F64(_)) => "float",
        Node::Static(_) => "integer",
    }
}

/// Total nodes a value occupies, header included.
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

impl<'t, 'a> Json<'t, 'a> {
    /// The root value of a parsed tape.
    pub(crate) fn root(nodes: &'t [Node<'a>]) -> Option<Self> {
        let first = nodes.first()?;
        nodes.get(..span(first)).map(Json)
    }

    pub(crate) fn node(self) -> &'t Node<'a> {
        &self.0[0]
    }

    pub(crate) fn kind(self) -> &'static str {
        kind_name(self.node())
    }

    pub(crate) fn is_null(self) -> bool {
        matches!(self.node(), Node::Static(StaticNode::Null))
    }

    pub(crate) fn as_str(self) -> Option<&'a str> {
        match self.node() {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_bool(self) -> Option<bool> {
        match self.node() {
            Node::Static(StaticNode::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// An integer that fits `i64`.
    pub(crate) fn as_i64(self) -> Option<i64> {
        match self.node() {
            Node::Static(StaticNode::I64(v)) => Some(*v),
            Node::Static(StaticNode::U64(v)) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// Any JSON number as `f64` (integers convert).
    pub(crate) fn as_f64(self) -> Option<f64> {
        match self.node() {
            Node::Static(StaticNode::F64(v)) => Some(*v),
            Node::Static(StaticNode::I64(v)) => Some(*v as f64),
            Node::Static(StaticNode::U64(v)) => Some(*v as f64),
            _ => None,
        }
    }

    /// Iterates `(key, value)` pairs of an object; empty for anything else.
    pub(crate) fn entries(self) -> Entries<'t, 'a> {
        match self.node() {
            Node::Object { len, .. } => Entries { rest: &self.0[1..], left: *len },
            _ => Entries { rest: &[], left: 0 },
        }
    }

    /// The first member named `key` (the JSON converter never repeats keys).
    pub(crate) fn get(self, key: &str) -> Option<Json<'t, 'a>> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Iterates the elements of an array; empty for anything else.
    pub(crate) fn elements(self) -> Elements<'t, 'a> {
        match self.node() {
            Node::Array { len, .. } => Elements { rest: &self.0[1..], left: *len },
            _ => Elements { rest: &[], left: 0 },
        }
    }

    /// Members of an object or elements of an array (0 for scalars).
    pub(crate) fn len(self) -> usize {
        match self.node() {
            Node::Object { len, .. } | Node::Array { len, .. } => *len,
            _ => 0,
        }
    }

    pub(crate) fn is_object(self) -> bool {
        matches!(self.node(), Node::Object { .. })
    }

    /// Writes this value back as compact JSON (used only for values we pass through unparsed).
    pub(crate) fn write_json(self, out: &mut String) {
        match self.node() {
            Node::String(s) => write_json_string(out, s),
            Node::Static(StaticNode::Null) => out.push_str("null"),
            Node::Static(StaticNode::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            Node::Static(StaticNode::I64(v)) => out.push_str(itoa::Buffer::new().format(*v)),
            Node::Static(StaticNode::U64(v)) => out.push_str(itoa::Buffer::new().format(*v)),
            Node::Static(StaticNode::F64(v)) => out.push_str(ryu::Buffer::new().format(*v)),
            Node::Object { .. } => {
                out.push('{');
                for (i, (k, v)) in self.entries().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, k);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
            Node::Array { .. } => {
                out.push('[');
                for (i, v) in self.elements().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
        }
    }
}

/// Iterator over object members.
pub(crate) struct Entries<'t, 'a> {
    rest: &'t [Node<'a>],
    left: usize,
}

impl<'t, 'a> Iterator for Entries<'t, 'a> {
    type Item = (&'a str, Json<'t, 'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some((Node::String(key), after)) = self.rest.split_first() else {
            self.left = 0;
            return None;
        };
        let len = span(after.first()?);
        let (value, rest) = after.split_at_checked(len)?;
        self.rest = rest;
        Some((key, Json(value)))
    }
}

/// Iterator over array elements.
pub(crate) struct Elements<'t, 'a> {
    rest: &'t [Node<'a>],
    left: usize,
}

impl<'t, 'a> Iterator for Elements<'t, 'a> {
    type Item = Json<'t, 'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = span(self.rest.first()?);
        let (value, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(Json(value))
    }
}
