//! Reads of the current document: binary state for Yjs peers, text and JSON for applications.

use pgrx::prelude::*;

use super::{doc_name, field_name, read};
use crate::error::{required, OrRaise};
use crate::{content, merge};

/// The whole document as one Yjs v1 update.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn state(doc: Option<&str>) -> Vec<u8> {
    (|| read(doc_name(doc)?, |d| Ok(merge::state(d))))().or_raise()
}

/// The document's state vector (v1), as sent in y-protocols sync step 1.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn state_vector(doc: Option<&str>) -> Vec<u8> {
    (|| read(doc_name(doc)?, |d| Ok(merge::state_vector(d))))().or_raise()
}

/// Exactly what a peer holding `state_vector` lacks: the y-protocols sync step 2 answer.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn diff(doc: Option<&str>, state_vector: Option<&[u8]>) -> Vec<u8> {
    (|| {
        let name = doc_name(doc)?;
        let sv = required(state_vector, "state_vector")?;
        merge::decode_state_vector(sv)?;
        read(name, |d| merge::diff(d, sv))
    })()
    .or_raise()
}

/// The text of root field `field` ('' when absent; XML fragments as their XML string).
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn text(doc: Option<&str>, field: default!(Option<&str>, "'content'")) -> String {
    (|| {
        let name = doc_name(doc)?;
        let field = field_name(field)?;
        read(name, |d| content::read_text(d, name, field))
    })()
    .or_raise()
}

/// Every root type of the document as JSON.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
fn to_json(doc: Option<&str>) -> pgrx::JsonB {
    (|| read(doc_name(doc)?, content::to_json))()
        .map(pgrx::JsonB)
        .or_raise()
}
