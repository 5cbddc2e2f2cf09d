//! Log rows that hold several updates: how a batch is cut into rows, and how a row is read back.
//!
//! A row of `collab.updates` holds `span` consecutive updates, `seq ..= seq + span - 1`. A row
//! of span 1 holds the update itself, as every row did before 0.4.0. A longer row (a "pack")
//! holds each update prefixed with its length as a lib0 variable-length unsigned integer, which
//! is what Yjs' `encoding.writeVarUint8Array` writes, so any Yjs library can read one back.
//!
//! Packing is for the write path. A batched write used to pay one heap tuple, one index entry
//! and two WAL records per update: half of `apply_updates`' time, twice yrs' own (bench/RESULTS.md,
//! "Ingest"). A pack pays them once for up to `PACK_BYTES` of updates.

use std::borrow::Cow;

use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

/// What a pack is filled up to. Rows stay under PostgreSQL's TOAST threshold (about 2 kB), so
/// they are stored inline and uncompressed: reading one from a catch-up or a cold load costs no
/// TOAST fetch and no decompression, and an update in the middle of a pack costs at most this
/// much reading. Against one row per update, the saving is already ~98% at a pack of 60 typing
/// updates of 30 bytes; larger packs would gain little more.
pub const PACK_BYTES: usize = 1800;

/// One log row to insert: updates `first .. first + span` of the batch, by `author`.
#[derive(Debug)]
pub struct Row<'a> {
    pub first: usize,
    pub span: usize,
    pub bytes: Cow<'a, [u8]>,
    pub author: &'a str,
}

/// The bytes an update takes in a pack: its length prefix and itself.
fn framed(len: usize) -> usize {
    let mut prefix = 1;
    let mut rest = len >> 7;
    while rest > 0 {
        prefix += 1;
        rest >>= 7;
    }
    prefix + len
}

/// Cuts a batch into log rows, in order: consecutive updates by the same author share a row
/// while it stays within `PACK_BYTES`. A lone update, or one larger than a pack, is a row of
/// span 1 borrowing its bytes.
pub fn pack<'a>(updates: &[&'a [u8]], author_of: impl Fn(usize) -> &'a str) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    let mut i = 0;
    while i < updates.len() {
        let author = author_of(i);
        let mut size = framed(updates[i].len());
        let mut j = i + 1;
        while j < updates.len()
            && author_of(j) == author
            && size + framed(updates[j].len()) <= PACK_BYTES
        {
            size += framed(updates[j].len());
            j += 1;
        }
        let bytes = if j == i + 1 {
            Cow::Borrowed(updates[i])
        } else {
            let mut buf = Vec::with_capacity(size);
            for u in &updates[i..j] {
                buf.write_buf(u);
            }
            Cow::Owned(buf)
        };
        rows.push(Row {
            first: i,
            span: j - i,
            bytes,
            author,
        });
        i = j;
    }
    rows
}

/// The updates of a stored row of `span` updates, in order. Rows come from storage, where a
/// restore or an owner's hand could have put anything: a span or framing that does not match
/// the bytes exactly is refused, and nothing is allocated beyond one slice per byte.
pub fn unpack(span: i64, bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    if span == 1 {
        return Ok(vec![bytes]);
    }
    // Every framed update takes at least its one-byte prefix.
    let count = usize::try_from(span)
        .ok()
        .filter(|n| *n >= 1 && *n <= bytes.len())
        .ok_or_else(|| format!("a row of {} bytes cannot hold {span} updates", bytes.len()))?;
    let mut cursor = Cursor::new(bytes);
    let mut out = Vec::with_capacity(count);
    for k in 0..count {
        let len = cursor
            .read_buf()
            .map_err(|e| format!("update {} of {span} in a row: {e}", k + 1))?
            .len();
        out.push(&bytes[cursor.next - len..cursor.next]);
    }
    if cursor.has_content() {
        return Err(format!(
            "{} bytes after the {span} updates of a row",
            bytes.len() - cursor.next
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(updates: &[&[u8]], authors: &[&'static str]) -> Vec<(usize, usize)> {
        let rows = pack(updates, |i| authors[i % authors.len()]);
        let mut back = Vec::new();
        for r in &rows {
            assert!(r.span == 1 || r.bytes.len() <= PACK_BYTES, "{r:?}");
            let got = unpack(r.span as i64, &r.bytes).expect("unpack");
            assert_eq!(got.len(), r.span);
            for (k, u) in got.iter().enumerate() {
                assert_eq!(authors[(r.first + k) % authors.len()], r.author);
                back.push(u.to_vec());
            }
        }
        let want: Vec<Vec<u8>> = updates.iter().map(|u| u.to_vec()).collect();
        assert_eq!(back, want, "the rows give back the batch, in order");
        rows.iter().map(|r| (r.first, r.span)).collect()
    }

    #[test]
    fn a_lone_update_is_stored_as_itself() {
        let u: &[u8] = &[1, 2, 3];
        let rows = pack(&[u], |_| "a");
        assert_eq!(rows.len(), 1);
        assert!(matches!(rows[0].bytes, Cow::Borrowed(b) if b == u));
    }

    #[test]
    fn updates_by_one_author_share_rows_up_to_the_pack_size() {
        let u = [7u8; 30];
        let batch: Vec<&[u8]> = (0..1000).map(|_| &u[..]).collect();
        let rows = round_trip(&batch, &["a"]);
        // 31 bytes each: 58 per pack.
        assert_eq!(rows.len(), 1000usize.div_ceil(PACK_BYTES / 31));
        assert_eq!(rows[0], (0, PACK_BYTES / 31));
    }

    #[test]
    fn a_change_of_author_starts_a_row() {
        let u = [1u8; 10];
        let batch: Vec<&[u8]> = (0..6).map(|_| &u[..]).collect();
        assert_eq!(
            round_trip(&batch, &["a", "a", "b"]),
            vec![(0, 2), (2, 1), (3, 2), (5, 1)]
        );
    }

    #[test]
    fn an_update_larger_than_a_pack_is_a_row_of_its_own() {
        let big = vec![9u8; PACK_BYTES * 3];
        let small = [1u8; 200];
        let batch: Vec<&[u8]> = vec![&small, &big, &small, &small];
        assert_eq!(round_trip(&batch, &["a"]), vec![(0, 1), (1, 1), (2, 2)]);
    }

    #[test]
    fn length_prefixes_of_several_bytes_read_back() {
        let mid = vec![5u8; 200]; // a two-byte prefix
        let batch: Vec<&[u8]> = vec![&mid, &[1, 2], &mid];
        assert_eq!(round_trip(&batch, &["a"]), vec![(0, 3)]);
    }

    #[test]
    fn rows_whose_span_does_not_match_their_bytes_are_refused() {
        let rows = pack(&[&[1, 2, 3][..], &[4, 5][..]], |_| "a");
        let bytes = &rows[0].bytes;
        assert!(unpack(2, bytes).is_ok());
        assert!(unpack(3, bytes).is_err(), "too few updates");
        assert!(unpack(0, bytes).is_err());
        assert!(unpack(-4, bytes).is_err());
        assert!(
            unpack(i64::MAX, bytes).is_err(),
            "no allocation for a huge span"
        );
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(unpack(2, &longer).is_err(), "trailing bytes");
        assert!(unpack(2, &bytes[..bytes.len() - 1]).is_err(), "cut short");
        assert!(
            unpack(2, &[0xff; 12]).is_err(),
            "a length prefix that never ends"
        );
    }
}
