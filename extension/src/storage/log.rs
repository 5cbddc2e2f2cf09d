//! Reading the update log: the updates of a sequence range out of the rows that hold them.
//! A row holds `span` consecutive updates (see `pack`), so the row holding the first update of
//! a range may start before it, and every reader takes updates, not rows, from here.

use std::collections::VecDeque;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData};

use super::{checkpoint_at_or_before, query, spi_err, DocRow, INT8};
use crate::error::{CollabError, Result};
use crate::pack;

/// `SELECT seq, span, update <cols>` of the rows holding the updates `$2 < seq <= $3` of
/// document `$1`, in order. The first row is the last one starting at or before `$2 + 1`:
/// rows cover the sequence without gaps, so it is the one holding `$2 + 1`. Two index probes.
macro_rules! log_range {
    ($cols:literal, $tail:literal) => {
        concat!(
            "SELECT seq, span, update",
            $cols,
            " FROM collab.updates WHERE doc_id = $1 AND seq <= $3 \
               AND seq >= coalesce((SELECT max(seq) FROM collab.updates \
                                    WHERE doc_id = $1 AND seq <= $2 + 1), $2 + 1) \
             ORDER BY seq",
            $tail
        )
    };
}

/// Updates with their sequence.
type Numbered = Vec<(i64, Vec<u8>)>;

/// The updates of one stored row (columns `seq, span, update` first) whose sequence lies in
/// `after < seq <= upto`, and the row's last sequence. A row of span 1 is moved, not copied.
fn updates_of(doc: &str, r: &SpiHeapTupleData, after: i64, upto: i64) -> Result<(i64, Numbered)> {
    let seq: i64 = r.get(1).map_err(spi_err)?.unwrap_or_default();
    let span = i64::from(r.get::<i32>(2).map_err(spi_err)?.unwrap_or(1));
    let bytes: Vec<u8> = r.get(3).map_err(spi_err)?.unwrap_or_default();
    let end = seq + span - 1;
    if span == 1 {
        let one = if seq > after && seq <= upto {
            vec![(seq, bytes)]
        } else {
            Vec::new()
        };
        return Ok((end, one));
    }
    let parts = pack::unpack(span, &bytes).map_err(|reason| CollabError::Corrupt {
        doc: doc.to_string(),
        reason: format!("log row at sequence {seq}: {reason}"),
    })?;
    let mut out = Vec::with_capacity(parts.len());
    for (s, u) in (seq..).zip(parts) {
        if s > after && s <= upto {
            out.push((s, u.to_vec()));
        }
    }
    Ok((end, out))
}

/// The updates with `after < seq <= upto`, in order (for building a document).
pub(super) fn updates_between(
    client: &mut SpiClient,
    row: &DocRow,
    after: i64,
    upto: i64,
) -> Result<Vec<Vec<u8>>> {
    let t = query(
        client,
        log_range!("", ""),
        &[INT8, INT8, INT8],
        &[row.id.into(), after.into(), upto.into()],
    )?;
    let mut out = Vec::with_capacity(t.len());
    for r in t {
        out.extend(
            updates_of(&row.name, &r, after, upto)?
                .1
                .into_iter()
                .map(|(_, u)| u),
        );
    }
    Ok(out)
}

/// One update of the log, with what its row records.
pub struct LogRow {
    pub seq: i64,
    pub update: Vec<u8>,
    pub origin: Option<String>,
    pub created_at: Option<TimestampWithTimeZone>,
    pub author: Option<String>,
}

/// Updates read from at most a given number of log rows.
pub struct Page {
    pub updates: Vec<LogRow>,
    /// The last sequence the rows read hold: where the next page starts.
    pub end: i64,
    /// Whether the row limit was reached: there may be more.
    pub full: bool,
}

/// The updates with `after < seq <= upto` from at most `rows` log rows, in order.
pub fn page(row: &DocRow, after: i64, upto: i64, rows: i64) -> Result<Page> {
    Spi::connect_mut(|client| {
        let t = query(
            client,
            log_range!(", origin, created_at, author", " LIMIT $4"),
            &[INT8, INT8, INT8, INT8],
            &[row.id.into(), after.into(), upto.into(), rows.into()],
        )?;
        let full = t.len() as i64 >= rows;
        let mut page = Page {
            updates: Vec::new(),
            end: after,
            full,
        };
        for r in t {
            let (end, updates) = updates_of(&row.name, &r, after, upto)?;
            let origin: Option<String> = r.get(4).map_err(spi_err)?;
            let created_at: Option<TimestampWithTimeZone> = r.get(5).map_err(spi_err)?;
            let author: Option<String> = r.get(6).map_err(spi_err)?;
            page.end = page.end.max(end.min(upto));
            page.updates
                .extend(updates.into_iter().map(|(seq, update)| LogRow {
                    seq,
                    update,
                    origin: origin.clone(),
                    created_at,
                    author: author.clone(),
                }));
        }
        Ok(page)
    })
}

/// Every update with `after < seq <= upto`, `rows` log rows at a time: `each` is called once
/// per page, so the caller decides what to keep.
pub fn each_page(
    row: &DocRow,
    after: i64,
    upto: i64,
    rows: i64,
    mut each: impl FnMut(Vec<LogRow>) -> Result<()>,
) -> Result<()> {
    let mut after = after;
    while after < upto {
        let p = page(row, after, upto, rows)?;
        each(p.updates)?;
        if !p.full || p.end <= after {
            break;
        }
        after = p.end;
        pgrx::check_for_interrupts!();
    }
    Ok(())
}

/// Log updates after `after`, for listeners catching up, fetched a page at a time as the
/// caller consumes them, so memory is one page, not the log. When `after` lies in pruned
/// history, the checkpoint at the history floor comes first (origin `checkpoint`) so nothing
/// is missed.
pub fn rows_since(row: &DocRow, after: i64) -> Result<LogPages> {
    let mut pages = LogPages {
        doc: Some(row.clone()),
        after: after.max(0),
        upto: row.head_seq,
        page: LogPages::FIRST_PAGE,
        buf: VecDeque::new(),
    };
    if pages.after < row.history_from {
        let floor = Spi::connect_mut(|c| checkpoint_at_or_before(c, row.id, row.history_from))?;
        if let Some((seq, state)) = floor {
            pages.buf.push_back(LogRow {
                seq,
                update: state,
                origin: Some("checkpoint".into()),
                created_at: None,
                author: None,
            });
            pages.after = seq;
        }
    }
    Ok(pages)
}

/// The rows of `collab.updates_since`, read in pages sized to their bytes.
pub struct LogPages {
    doc: Option<DocRow>,
    /// Last sequence read.
    after: i64,
    /// The head when the call started: later rows are the next call's.
    upto: i64,
    /// Log rows to fetch next: doubled while pages are small, halved while they are big.
    page: i64,
    buf: VecDeque<LogRow>,
}

impl LogPages {
    const FIRST_PAGE: i64 = 64;
    const MAX_PAGE: i64 = 8192;
    /// Bytes a page aims at (rows are up to `collab.max_update_bytes` each).
    const PAGE_BYTES: usize = 4 << 20;

    pub fn empty() -> Self {
        LogPages {
            doc: None,
            after: 0,
            upto: 0,
            page: Self::FIRST_PAGE,
            buf: VecDeque::new(),
        }
    }

    fn fetch(&mut self) -> Result<()> {
        let Some(doc) = &self.doc else {
            self.upto = self.after;
            return Ok(());
        };
        // Pages after the first are read while PostgreSQL consumes the rows, after the function
        // body returned: as the table owner again (the caller's right was checked at the start).
        let p = crate::rights::as_owner(|| page(doc, self.after, self.upto, self.page))?;
        let bytes: usize = p.updates.iter().map(|r| r.update.len()).sum();
        if !p.full || p.end <= self.after {
            self.upto = self.after; // nothing more
        }
        self.after = self.after.max(p.end);
        self.page = if bytes < Self::PAGE_BYTES / 2 {
            (self.page * 2).min(Self::MAX_PAGE)
        } else if bytes > Self::PAGE_BYTES {
            (self.page / 2).max(1)
        } else {
            self.page
        };
        self.buf.extend(p.updates);
        Ok(())
    }
}

impl Iterator for LogPages {
    type Item = Result<LogRow>;

    fn next(&mut self) -> Option<Result<LogRow>> {
        if self.buf.is_empty() && self.after < self.upto {
            if let Err(e) = self.fetch() {
                self.upto = self.after;
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// Every update of document `name` after `after`, with its metadata: nothing for a document
/// never written or deleted.
pub fn updates_after(name: &str, after: i64) -> Result<Vec<LogRow>> {
    let row = match super::find(name) {
        Ok(Some(row)) => row,
        Ok(None) | Err(CollabError::Deleted(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    each_page(&row, after, row.head_seq, 1024, |updates| {
        out.extend(updates);
        Ok(())
    })?;
    Ok(out)
}
