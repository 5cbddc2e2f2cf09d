//! Real editing traces (josephg/editing-traces, CC BY 4.0, see `shared/traces/README.md`) and
//! their conversion into Yjs v1 updates, one per recorded transaction.
//!
//! Tests and benchmarks use these as realistic input: every transaction becomes the update a
//! Yjs editor would have sent for it, made with yrs on a `Y.Text` named `content`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use yrs::{Doc, GetString, OffsetKind, Options, Text, Transact};

/// Root field the traces are replayed into; the SQL functions default to the same name.
pub const FIELD: &str = "content";

#[derive(Debug, Deserialize)]
pub struct Trace {
    #[serde(rename = "startContent")]
    pub start_content: String,
    #[serde(rename = "endContent")]
    pub end_content: String,
    pub txns: Vec<Txn>,
}

#[derive(Debug, Deserialize)]
pub struct Txn {
    /// `[position, deleted, inserted]`, positions and counts in Unicode code points, listed in
    /// descending position so they can be applied one after another.
    pub patches: Vec<(usize, usize, String)>,
}

#[derive(Debug)]
pub enum TraceError {
    Io(PathBuf, std::io::Error),
    Json(PathBuf, serde_json::Error),
    NotFound(String),
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceError::Io(p, e) => write!(f, "reading {}: {e}", p.display()),
            TraceError::Json(p, e) => write!(f, "parsing {}: {e}", p.display()),
            TraceError::NotFound(name) => write!(
                f,
                "trace {name} not found: set COLLAB_TRACES to the shared/traces folder"
            ),
        }
    }
}

impl std::error::Error for TraceError {}

/// The traces folder: `$COLLAB_TRACES`, else `shared/traces` beside the checkout.
pub fn traces_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("COLLAB_TRACES") {
        return PathBuf::from(dir);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // trace/ -> repo -> its parent holds shared/
    here.join("../../shared/traces")
}

/// Loads `NAME.json.gz` from [`traces_dir`].
pub fn load(name: &str) -> Result<Trace, TraceError> {
    let path = traces_dir().join(format!("{name}.json.gz"));
    if !path.exists() {
        return Err(TraceError::NotFound(name.to_string()));
    }
    let file = File::open(&path).map_err(|e| TraceError::Io(path.clone(), e))?;
    parse_gz(file, &path)
}

/// Parses a gzip-compressed trace (`origin` names it in errors). Tests that run inside a
/// PostgreSQL backend, which may not be allowed to read the checkout, embed the bytes instead.
pub fn parse_gz(gz: impl Read, origin: &Path) -> Result<Trace, TraceError> {
    let mut json = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut json)
        .map_err(|e| TraceError::Io(origin.to_path_buf(), e))?;
    serde_json::from_str(&json).map_err(|e| TraceError::Json(origin.to_path_buf(), e))
}

impl Trace {
    /// Applies the patches to a plain string: the reference the CRDT result is compared with.
    pub fn replay_plain(&self) -> String {
        let mut chars: Vec<char> = self.start_content.chars().collect();
        for txn in &self.txns {
            for (pos, del, ins) in &txn.patches {
                chars.splice(*pos..*pos + *del, ins.chars());
            }
        }
        chars.into_iter().collect()
    }

    /// One Yjs v1 update per transaction, as an editor holding the document would send them.
    pub fn to_updates(&self, client_id: u64) -> Vec<Vec<u8>> {
        let doc = Doc::with_options(Options {
            client_id: yrs::block::ClientID::new(client_id),
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let text = doc.get_or_insert_text(FIELD);
        // Yjs counts UTF-16 units and the trace counts code points; they agree unless a character
        // outside the BMP occurs, and then each position is converted against the current text.
        let astral = self
            .txns
            .iter()
            .flat_map(|t| t.patches.iter())
            .any(|(_, _, s)| s.chars().any(|c| c.len_utf16() == 2))
            || self.start_content.chars().any(|c| c.len_utf16() == 2);
        let mut updates = Vec::with_capacity(self.txns.len() + 1);
        if !self.start_content.is_empty() {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, &self.start_content);
            updates.push(txn.encode_update_v1());
        }
        for t in &self.txns {
            let mut txn = doc.transact_mut();
            for (pos, del, ins) in &t.patches {
                let (start, len) = if astral {
                    let current = text.get_string(&txn);
                    utf16_range(&current, *pos, *del)
                } else {
                    (*pos as u32, *del as u32)
                };
                if len > 0 {
                    text.remove_range(&mut txn, start, len);
                }
                if !ins.is_empty() {
                    text.insert(&mut txn, start, ins);
                }
            }
            updates.push(txn.encode_update_v1());
        }
        debug_assert_eq!(text.get_string(&doc.transact()), self.end_content);
        updates
    }
}

/// Converts a code-point range of `s` to a UTF-16 range.
fn utf16_range(s: &str, pos: usize, len: usize) -> (u32, u32) {
    let mut chars = s.chars();
    let start: usize = chars.by_ref().take(pos).map(char::len_utf16).sum();
    let span: usize = chars.take(len).map(char::len_utf16).sum();
    (start as u32, span as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;

    #[test]
    fn plain_replay_of_every_trace_gives_end_content() {
        for name in [
            "sveltecomponent",
            "rustcode",
            "seph-blog1",
            "automerge-paper",
        ] {
            let trace = load(name).expect("trace present");
            assert_eq!(trace.replay_plain(), trace.end_content, "{name}");
        }
    }

    #[test]
    fn yjs_updates_of_a_trace_rebuild_end_content() {
        let trace = load("sveltecomponent").expect("trace present");
        let updates = trace.to_updates(1);
        assert_eq!(updates.len(), trace.txns.len());
        let doc = Doc::new();
        let text = doc.get_or_insert_text(FIELD);
        let mut txn = doc.transact_mut();
        for u in &updates {
            let update = yrs::Update::decode_v1(u).expect("decodes");
            txn.apply_update(update).expect("applies");
        }
        assert_eq!(text.get_string(&txn), trace.end_content);
    }

    #[test]
    fn utf16_range_counts_astral_characters_twice() {
        assert_eq!(utf16_range("a😀b", 1, 1), (1, 2));
        assert_eq!(utf16_range("a😀b", 2, 1), (3, 1));
    }
}
