//! `#[pg_test]`s of #13 through SQL with updates a Yjs client would send: restoring map, array
//! and XML (Tiptap) roots, merging a concurrent edit after a restore, and searching the text
//! inside XML roots.

#[pgrx::pg_schema]
#[allow(clippy::unwrap_used)]
mod tests {
    use pgrx::prelude::*;
    use yrs::updates::decoder::Decode;
    use yrs::{
        Array, Doc, Map, ReadTxn, Text, Transact, Update, WriteTxn, XmlElementPrelim, XmlFragment,
        XmlTextPrelim,
    };

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn apply(doc: &str, update: &[u8]) -> i64 {
        one(&format!(
            "SELECT collab.apply_update('{doc}', '\\x{}'::bytea)",
            hex(update)
        ))
    }

    fn edit(d: &Doc, f: impl FnOnce(&mut yrs::TransactionMut)) -> Vec<u8> {
        let mut txn = d.transact_mut();
        f(&mut txn);
        txn.encode_update_v1()
    }

    #[pg_test]
    fn restore_brings_back_map_array_and_xml_roots_and_merges_a_concurrent_edit() {
        let client = Doc::new();
        let first = edit(&client, |txn| {
            let m = txn.get_or_insert_map("meta");
            m.insert(txn, "title", "Plan");
            m.insert(txn, "status", "draft");
            let a = txn.get_or_insert_array("tags");
            a.insert(txn, 0, "a");
            a.insert(txn, 1, "b");
            let x = txn.get_or_insert_xml_fragment("prosemirror");
            let p = x.insert(txn, 0, XmlElementPrelim::empty("paragraph"));
            p.insert(txn, 0, XmlTextPrelim::new("Rivers flow"));
        });
        let version = apply("rich", &first);
        let before: pgrx::JsonB = one("SELECT collab.to_json('rich')");
        apply(
            "rich",
            &edit(&client, |txn| {
                let m = txn.get_or_insert_map("meta");
                m.insert(txn, "status", "final");
                m.insert(txn, "owner", "ada");
                let a = txn.get_or_insert_array("tags");
                a.remove(txn, 0);
                a.insert(txn, 1, "c");
                let x = txn.get_or_insert_xml_fragment("prosemirror");
                let h = x.insert(txn, 1, XmlElementPrelim::empty("heading"));
                h.insert(txn, 0, XmlTextPrelim::new("Mountains"));
            }),
        );
        // A peer that has everything so far edits the title concurrently with the restore.
        let concurrent = edit(&client, |txn| {
            txn.get_or_insert_map("meta").insert(txn, "title", "Plan B");
        });
        // Searchable: the text inside the XML root, without tags.
        let found: String = one("SELECT string_agg(name, ',') FROM collab.search('mountains')");
        assert_eq!(found, "rich");

        one::<i64>(&format!("SELECT collab.restore('rich', {version})"));
        let after: pgrx::JsonB = one("SELECT collab.to_json('rich')");
        assert_eq!(after.0, before.0, "every root reads as at the version");
        let gone: i64 = one("SELECT count(*) FROM collab.search('mountains')");
        assert_eq!(gone, 0);

        apply("rich", &concurrent);
        let merged: pgrx::JsonB = one("SELECT collab.to_json('rich')");
        let mut expected = before.0.clone();
        expected["meta"]["title"] = serde_json::json!("Plan B");
        assert_eq!(
            merged.0, expected,
            "the concurrent edit merges into the restored document"
        );

        // A Yjs client that received the restore reads the same.
        let state: Vec<u8> = one("SELECT collab.state('rich')");
        let peer = Doc::new();
        peer.transact_mut()
            .apply_update(Update::decode_v1(&state).unwrap())
            .unwrap();
        let tags: Vec<String> = {
            let txn = peer.transact();
            let a = txn.get_array("tags").unwrap();
            a.iter(&txn).map(|v| v.to_string(&txn)).collect()
        };
        assert_eq!(tags, ["a", "b"]);
    }

    #[pg_test]
    fn search_backlog_shows_what_a_lagging_writer_left_stale_until_it_is_refreshed() {
        let d = Doc::new();
        let text = d.get_or_insert_text("content");
        // (stale documents, whether the oldest stale write is this transaction's)
        let backlog = || -> (i64, bool) {
            let row: String = one(
                "SELECT documents || ',' || coalesce((oldest_write = now())::text, '') \
                 FROM collab.search_backlog()",
            );
            let (n, at) = row.split_once(',').unwrap();
            (n.parse().unwrap(), at == "true")
        };
        apply(
            "current",
            &edit(&d, |t| text.insert(t, 0, "searchable at commit")),
        );
        assert_eq!(backlog(), (0, false), "nothing stale without a lag");

        Spi::run("SET collab.search_lag = 60000").unwrap();
        let e = Doc::new();
        let etext = e.get_or_insert_text("content");
        apply("lagging", &edit(&e, |t| etext.insert(t, 0, "first")));
        apply("lagging", &edit(&e, |t| etext.insert(t, 5, " second")));
        // The second write was left stale; it was made in this transaction.
        assert_eq!(backlog(), (1, true));
        Spi::run("RESET collab.search_lag").unwrap();
        one::<i64>("SELECT collab.refresh_search()");
        assert_eq!(backlog(), (0, false));
    }
}
