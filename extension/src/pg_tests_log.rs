//! `#[pg_test]`s of the log's packed rows (0.4.0): a batch shares rows, every reader still
//! sees one update per sequence, history is cut at row ends, and a row whose span does not
//! match its bytes is a clean `data_corrupted` error.

#[pgrx::pg_schema]
mod tests {
    use pgrx::datum::DatumWithOid;
    use pgrx::prelude::*;
    use yrs::{Text, Transact};

    use crate::pack::PACK_BYTES;

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn one_with<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> T {
        Spi::get_one_with_args::<T>(sql, args)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn sqlstate(sql: &str) -> String {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS \
             $$ BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )
        .expect("helper");
        one_with::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()])
    }

    /// `n` one-character insertions by one client, as a typist's updates.
    fn typing(client: u64, n: u32) -> Vec<Vec<u8>> {
        let d = yrs::Doc::with_client_id(client);
        let text = d.get_or_insert_text("content");
        (0..n)
            .map(|i| {
                let mut txn = d.transact_mut();
                text.insert(&mut txn, i, "x");
                txn.encode_update_v1()
            })
            .collect()
    }

    /// The log of `doc` as `updates_since` gives it: (seq, update).
    fn log_of(doc: &str, after: i64) -> Vec<(i64, Vec<u8>)> {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT seq, update FROM collab.updates_since($1, $2)",
                None,
                &[doc.into(), after.into()],
            )?;
            let mut out = Vec::new();
            for r in t {
                out.push((
                    r.get::<i64>(1)?.unwrap_or(0),
                    r.get::<Vec<u8>>(2)?.unwrap_or_default(),
                ));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
        .expect("updates_since")
    }

    fn rows_of(doc: &str) -> i64 {
        one_with(
            "SELECT count(*) FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id \
             WHERE d.name = $1",
            &[doc.into()],
        )
    }

    #[pg_test]
    fn a_batch_by_one_author_is_stored_in_packed_rows_and_read_back_update_by_update() {
        let batch = typing(1, 1000);
        let last: i64 = one_with(
            "SELECT collab.apply_updates('packed', $1)",
            &[batch.clone().into()],
        );
        assert_eq!(last, 1000);
        let rows = rows_of("packed");
        assert!(rows < 1000 / 20, "{rows} rows for 1000 typing updates");
        assert_eq!(
            one::<i64>("SELECT sum(span)::int8 FROM collab.updates"),
            1000
        );
        assert!(
            one::<i32>("SELECT max(octet_length(update)) FROM collab.updates") <= PACK_BYTES as i32,
            "rows stay under the pack size"
        );
        let numbered: Vec<(i64, Vec<u8>)> = (1..).zip(batch.iter().cloned()).collect();
        assert_eq!(log_of("packed", 0), numbered, "every update, as sent");
        // From the middle of a row: the row holding 501 starts before it.
        assert_eq!(log_of("packed", 500), numbered[500..].to_vec());
        assert_eq!(log_of("packed", 999), numbered[999..].to_vec());
        assert!(log_of("packed", 1000).is_empty());
        // A cold rebuild up to the middle of a row.
        let at: String = one("SELECT collab.text_at('packed', 777)");
        assert_eq!(at, "x".repeat(777));
        // The per-update views see updates, not rows.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM collab.log_entries('packed', 10)"),
            990
        );
        assert_eq!(
            one::<i64>(
                "SELECT sum(bytes)::int8 FROM collab.history('packed') WHERE author IS NOT NULL"
            ),
            batch.iter().map(|u| u.len() as i64).sum::<i64>()
        );
        // Writes after the batch continue the sequence in rows of their own.
        let more = typing(2, 1);
        let seq: i64 = one_with(
            "SELECT collab.apply_update('packed', $1)",
            &[more[0].as_slice().into()],
        );
        assert_eq!(seq, 1001);
        assert_eq!(rows_of("packed"), rows + 1);
    }

    #[pg_test]
    fn a_change_of_author_starts_a_log_row_and_history_keeps_each_author() {
        let batch = typing(3, 6);
        let authors = vec![
            Some("ann"),
            Some("ann"),
            Some("bob"),
            None,
            None,
            Some("ann"),
        ];
        Spi::run("SET collab.author = 'sql'").expect("author");
        one_with::<i64>(
            "SELECT collab.apply_updates('mixed', $1, NULL, $2)",
            &[batch.into(), authors.into()],
        );
        assert_eq!(rows_of("mixed"), 4);
        let who: String =
            one("SELECT string_agg(author, ',' ORDER BY seq) FROM collab.history('mixed')");
        assert_eq!(who, "ann,ann,bob,sql,sql,ann");
        let runs: String = one(
            "SELECT string_agg(author || '@' || seq || '+' || span, ',' \
                                ORDER BY seq) FROM collab.updates",
        );
        assert_eq!(runs, "ann@1+2,bob@3+1,sql@4+2,ann@6+1");
        // Undoing one author's insertions after sequence 1 finds them inside shared rows, the
        // first of which starts before the range: 2 and 6 go, 1 stays.
        one::<i64>("SELECT collab.undo_author('mixed', 'ann', 1)");
        let text: String = one("SELECT collab.text('mixed')");
        assert_eq!(text, "xxxx");
        Spi::run("RESET collab.author").expect("reset");
    }

    #[pg_test]
    fn prune_cuts_history_at_the_end_of_a_log_row_and_counts_updates() {
        one_with::<i64>(
            "SELECT collab.apply_updates('cut', $1)",
            &[typing(4, 100).into()],
        );
        // Everything so far is older than the cut: one transaction, one created_at.
        let pruned: i64 = one("SELECT collab.prune('cut', now() + interval '1 second')");
        assert_eq!(pruned, 100, "prune counts updates");
        assert_eq!(rows_of("cut"), 0);
        assert_eq!(
            one::<i64>("SELECT history_from FROM collab.documents WHERE name = 'cut'"),
            100
        );
        assert_eq!(one::<String>("SELECT collab.text('cut')"), "x".repeat(100));
        let log = log_of("cut", 0);
        assert_eq!(
            log.len(),
            1,
            "the floor checkpoint stands for pruned history"
        );
        assert_eq!(log[0].0, 100);
    }

    #[pg_test]
    fn a_log_row_whose_span_does_not_match_its_bytes_is_data_corrupted() {
        let batch = typing(5, 3);
        one_with::<i64>("SELECT collab.apply_updates('bent', $1)", &[batch.into()]);
        // As a restore or the owner's hand could leave it: one update too many claimed.
        Spi::run("UPDATE collab.updates SET span = 4").expect("bend");
        Spi::run("UPDATE collab.documents SET head_seq = 4 WHERE name = 'bent'").expect("head");
        for read in [
            "SELECT collab.text_at('bent', 2)",
            "SELECT count(*) FROM collab.updates_since('bent', 0)",
            "SELECT count(*) FROM collab.history('bent')",
        ] {
            assert_eq!(sqlstate(read), "XX001", "{read}");
        }
        // A span far beyond the bytes allocates nothing.
        Spi::run("UPDATE collab.updates SET span = 2000000000").expect("bend");
        assert_eq!(
            sqlstate("SELECT count(*) FROM collab.updates_since('bent', 0)"),
            "XX001"
        );
    }
}
