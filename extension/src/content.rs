//! What a document holds, read without recursion: its root types (inferred when a document
//! rebuilt from storage only has "undefined" roots), and their text, XML string or JSON. Pure
//! yrs, like [`crate::merge`].
//!
//! yrs recurses once per nesting level when it reads nested types and a stack overflow cannot
//! be caught, so the JSON and XML walks here keep their own stack and give PostgreSQL a chance
//! to cancel them every [`INTERRUPT_EVERY`] nodes.

use yrs::branch::BranchPtr;
use yrs::types::AsPrelim;
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, In, Map, MapRef, Out, ReadTxn, TextRef, Transact, Xml,
    XmlFragment, XmlFragmentRef, XmlOut, XmlTextRef,
};

use crate::error::{CollabError, Result};
use crate::merge::{guarded, interrupt_point, INTERRUPT_EVERY};

/// A root type as the document holds it. Yjs updates do not carry root types, so a document
/// rebuilt from storage has "undefined" roots whose kind is inferred from their content.
pub(crate) enum Root {
    Missing,
    /// Present but with no visible content: compatible with any kind.
    Empty,
    Text(TextRef),
    XmlText(XmlTextRef),
    Xml(XmlFragmentRef),
    Map(MapRef),
    Array(ArrayRef),
    Other(&'static str),
}

impl Root {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Root::Missing | Root::Empty => "missing field",
            Root::Text(_) => "text",
            Root::XmlText(_) => "XML text",
            Root::Xml(_) => "XML fragment",
            Root::Map(_) => "map",
            Root::Array(_) => "array",
            Root::Other(kind) => kind,
        }
    }
}

pub(crate) fn root<T: ReadTxn>(txn: &T, name: &str) -> Root {
    match txn.get(name) {
        None => Root::Missing,
        Some(Out::YText(t)) => Root::Text(t),
        Some(Out::YXmlText(t)) => Root::XmlText(t),
        Some(Out::YXmlFragment(x)) => Root::Xml(x),
        Some(Out::YXmlElement(_)) => Root::Other("XML element"),
        Some(Out::YMap(m)) => Root::Map(m),
        Some(Out::YArray(a)) => Root::Array(a),
        Some(Out::UndefinedRef(branch)) => infer(txn, branch),
        Some(Out::YDoc(_)) => Root::Other("subdocument"),
        Some(Out::Any(_)) => Root::Other("value"),
    }
}

fn infer<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Root {
    match Out::UndefinedRef(branch).as_prelim(txn) {
        In::Text(_) => Root::Text(TextRef::from(branch)),
        In::XmlText(_) => Root::XmlText(XmlTextRef::from(branch)),
        In::XmlElement(_) | In::XmlFragment(_) => Root::Xml(XmlFragmentRef::from(branch)),
        In::Map(m) if m.is_empty() => Root::Empty,
        In::Map(_) => Root::Map(MapRef::from(branch)),
        In::Array(_) => {
            let array = ArrayRef::from(branch);
            match array.get(txn, 0) {
                // A text whose every character was deleted looks like an empty array.
                None => Root::Empty,
                Some(Out::YXmlElement(_)) | Some(Out::YXmlText(_)) => {
                    Root::Xml(XmlFragmentRef::from(branch))
                }
                Some(_) => Root::Array(array),
            }
        }
        _ => Root::Other("value"),
    }
}

/// A scalar `Any` as JSON; None for arrays and maps, which the walk expands.
fn scalar_to_json(any: &Any) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(yrs::any::Number::Int(n)) => Value::from(*n),
        Any::Number(yrs::any::Number::Float(n)) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(b) => {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Any::Array(_) | Any::Map(_) => return None,
    })
}

/// A node still to convert: a value inside content, or what a shared type holds.
enum Node {
    Any(Any),
    Out(Out),
}

type Children = Vec<(Option<String>, Node)>;

/// One step of the walk: a finished value, or a container and its children.
enum Expanded {
    Leaf(serde_json::Value),
    Object(Children),
    Array(Children),
}

fn expand<T: ReadTxn>(txn: &T, node: Node) -> Expanded {
    use serde_json::Value;
    let any = match node {
        Node::Any(any) | Node::Out(Out::Any(any)) => any,
        Node::Out(Out::YMap(m)) => {
            return Expanded::Object(
                m.iter(txn)
                    .map(|(k, v)| (Some(k.to_string()), Node::Out(v)))
                    .collect(),
            )
        }
        Node::Out(Out::YArray(a)) => {
            return Expanded::Array(a.iter(txn).map(|v| (None, Node::Out(v))).collect())
        }
        Node::Out(Out::YText(t)) => return Expanded::Leaf(Value::String(t.get_string(txn))),
        Node::Out(Out::YXmlText(t)) => return Expanded::Leaf(Value::String(t.get_string(txn))),
        Node::Out(Out::YXmlElement(e)) => {
            return Expanded::Leaf(Value::String(xml_string(txn, XmlOut::Element(e))))
        }
        Node::Out(Out::YXmlFragment(f)) => {
            return Expanded::Leaf(Value::String(xml_string(txn, XmlOut::Fragment(f))))
        }
        Node::Out(Out::YDoc(_)) | Node::Out(Out::UndefinedRef(_)) => {
            return Expanded::Leaf(Value::Null)
        }
    };
    match &any {
        Any::Array(items) => {
            Expanded::Array(items.iter().map(|v| (None, Node::Any(v.clone()))).collect())
        }
        Any::Map(map) => Expanded::Object(
            map.iter()
                .map(|(k, v)| (Some(k.clone()), Node::Any(v.clone())))
                .collect(),
        ),
        scalar => Expanded::Leaf(scalar_to_json(scalar).unwrap_or(Value::Null)),
    }
}

/// Converts a node to JSON with an explicit stack: no recursion however deep it nests (the
/// document's depth is bounded anyway; stored 0.1.0 documents may not be). Gives PostgreSQL a
/// chance to cancel every few thousand nodes.
fn node_to_json<T: ReadTxn>(txn: &T, root: Node, visited: &mut usize) -> serde_json::Value {
    use serde_json::{Map as JsonMap, Value};
    enum Container {
        Object(JsonMap<String, Value>),
        Array(Vec<Value>),
    }
    struct Frame {
        key: Option<String>,
        container: Container,
        todo: std::vec::IntoIter<(Option<String>, Node)>,
    }
    fn put(frame: &mut Frame, key: Option<String>, value: Value) {
        match &mut frame.container {
            Container::Object(o) => {
                o.insert(key.unwrap_or_default(), value);
            }
            Container::Array(a) => a.push(value),
        }
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut next = Some((None, root));
    loop {
        if let Some((key, node)) = next.take() {
            *visited += 1;
            if (*visited).is_multiple_of(INTERRUPT_EVERY) {
                interrupt_point();
            }
            let (container, children) = match expand(txn, node) {
                Expanded::Leaf(v) => match stack.last_mut() {
                    Some(top) => {
                        put(top, key, v);
                        continue;
                    }
                    None => return v,
                },
                Expanded::Object(c) => (Container::Object(JsonMap::new()), c),
                Expanded::Array(c) => (Container::Array(Vec::with_capacity(c.len())), c),
            };
            stack.push(Frame {
                key,
                container,
                todo: children.into_iter(),
            });
        }
        let Some(top) = stack.last_mut() else {
            return Value::Null;
        };
        if let Some(child) = top.todo.next() {
            next = Some(child);
            continue;
        }
        let Some(done) = stack.pop() else {
            return Value::Null;
        };
        let value = match done.container {
            Container::Object(o) => Value::Object(o),
            Container::Array(a) => Value::Array(a),
        };
        match stack.last_mut() {
            Some(parent) => put(parent, done.key, value),
            None => return value,
        }
    }
}

/// The XML string of a node (as yrs's `get_string`), walked with an explicit stack.
pub(crate) fn xml_string<T: ReadTxn>(txn: &T, node: XmlOut) -> String {
    use std::fmt::Write;
    enum Step {
        Open(XmlOut),
        Close(std::sync::Arc<str>),
    }
    let mut out = String::new();
    let mut stack = vec![Step::Open(node)];
    let mut visited = 0usize;
    while let Some(step) = stack.pop() {
        visited += 1;
        if visited.is_multiple_of(INTERRUPT_EVERY) {
            interrupt_point();
        }
        let children: Vec<XmlOut> = match step {
            Step::Close(tag) => {
                let _ = write!(out, "</{tag}>");
                continue;
            }
            Step::Open(XmlOut::Text(t)) => {
                out.push_str(&t.get_string(txn));
                continue;
            }
            Step::Open(XmlOut::Element(e)) => {
                // `tag()` panics on a node that is not really an element (the fuzzer
                // made one); such a node reads with an empty tag.
                let tag = e.try_tag().cloned().unwrap_or_else(|| "".into());
                let _ = write!(out, "<{tag}");
                for (k, v) in e.attributes(txn) {
                    let _ = write!(out, " {k}=\"{}\"", v.to_string(txn));
                }
                out.push('>');
                stack.push(Step::Close(tag));
                e.children(txn).collect()
            }
            Step::Open(XmlOut::Fragment(f)) => f.children(txn).collect(),
        };
        stack.extend(children.into_iter().rev().map(Step::Open));
    }
    out
}

fn read_root<T: ReadTxn>(txn: &T, root: &Root, visited: &mut usize) -> serde_json::Value {
    use serde_json::Value;
    match root {
        Root::Missing | Root::Empty | Root::Other(_) => Value::Null,
        Root::Text(t) => Value::String(t.get_string(txn)),
        Root::XmlText(t) => Value::String(t.get_string(txn)),
        Root::Xml(x) => Value::String(xml_string(txn, XmlOut::Fragment(x.clone()))),
        Root::Map(m) => node_to_json(txn, Node::Out(Out::YMap(m.clone())), visited),
        Root::Array(a) => node_to_json(txn, Node::Out(Out::YArray(a.clone())), visited),
    }
}

/// The text of a root field ('' when absent). XML fragments read as their XML string.
pub fn read_text(doc: &Doc, doc_name: &str, field: &str) -> Result<String> {
    let outcome = guarded(|| {
        let txn = doc.transact();
        match root(&txn, field) {
            Root::Missing | Root::Empty => Ok(String::new()),
            Root::Text(t) => Ok(t.get_string(&txn)),
            Root::XmlText(t) => Ok(t.get_string(&txn)),
            Root::Xml(x) => Ok(xml_string(&txn, XmlOut::Fragment(x))),
            other => Err(CollabError::WrongType {
                doc: doc_name.to_string(),
                field: field.to_string(),
                actual: other.kind(),
            }),
        }
    });
    outcome.unwrap_or_else(|panic| Err(CollabError::Internal(panic)))
}

/// Every root type as JSON: text and XML as strings, maps as objects, arrays as arrays.
pub fn to_json(doc: &Doc) -> Result<serde_json::Value> {
    guarded(|| {
        let txn = doc.transact();
        let mut names: Vec<String> = txn.root_refs().map(|(name, _)| name.to_string()).collect();
        names.sort();
        let mut object = serde_json::Map::new();
        let mut visited = 0usize;
        for name in names {
            let root = root(&txn, &name);
            if matches!(root, Root::Missing | Root::Empty) {
                continue;
            }
            object.insert(name, read_root(&txn, &root, &mut visited));
        }
        serde_json::Value::Object(object)
    })
    .map_err(CollabError::Internal)
}

#[cfg(test)]
mod tests {
    use yrs::{Array, Map, XmlFragment};

    use super::*;
    use crate::merge::new_doc;
    use crate::merge::testing::*;

    #[test]
    fn integrate_then_read_text_and_json() {
        let doc = new_doc();
        integrate_bytes(&doc, &typed("hello")).expect("integrates");
        assert_eq!(read_text(&doc, "d", "content").expect("text"), "hello");
        assert_eq!(read_text(&doc, "d", "absent").expect("text"), "");
        let json = to_json(&doc).expect("json");
        assert_eq!(json, serde_json::json!({"content": "hello"}));
    }

    #[test]
    fn json_covers_maps_arrays_and_xml() {
        let (_, bytes) = update_from(|d| {
            let m = d.get_or_insert_map("meta");
            let a = d.get_or_insert_array("list");
            let x = d.get_or_insert_xml_fragment("prosemirror");
            let mut txn = d.transact_mut();
            m.insert(&mut txn, "title", "Hi");
            m.insert(&mut txn, "n", 3.0);
            a.push_back(&mut txn, 1.0);
            a.push_back(&mut txn, "two");
            let p = x.push_back(&mut txn, yrs::XmlElementPrelim::empty("paragraph"));
            p.push_back(&mut txn, yrs::XmlTextPrelim::new("para"));
        });
        let doc = load("d", Some(&bytes), []).expect("loads");
        let json = to_json(&doc).expect("json");
        assert_eq!(json["meta"], serde_json::json!({"title": "Hi", "n": 3.0}));
        assert_eq!(json["list"], serde_json::json!([1.0, "two"]));
        assert_eq!(json["prosemirror"], "<paragraph>para</paragraph>");
        let err = read_text(&doc, "d", "meta").expect_err("map is not text");
        assert!(matches!(err, CollabError::WrongType { actual: "map", .. }));
    }
}
