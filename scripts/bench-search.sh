#!/usr/bin/env bash
# Full-text search over 10,000 documents of realistic text (#13): a throwaway cluster with
# default settings; the documents are windows of 3,000 characters (about a page and a half) of
# the final texts of the editing traces in ../shared/traces, each written with
# collab.set_text (so indexed at commit as any write). Prints the write time, the size of
# collab.texts and its GIN index, and the latency of collab.search for a few queries
# (median and max of 20 runs each, measured inside PostgreSQL with clock_timestamp()).
# Results: bench/RESULTS.md ("Search, attribution, restore").
# Usage: scripts/bench-search.sh [documents, default 10000]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
n="${1:-10000}"
traces="${COLLAB_TRACES:-$ROOT/../shared/traces}"
"$ROOT/scripts/setup.sh" >/dev/null
bench_cluster search
corpus="$dir/corpus.txt"
for f in "$traces"/*.json.gz; do
    gzip -dc "$f" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).endContent+"\n"))'
done > "$corpus"
chmod a+r "$dir" "$corpus"
say "corpus: $(wc -c <"$corpus") bytes from $(ls "$traces"/*.json.gz | wc -l) traces; $n documents"
"${psql[@]}" -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE corpus AS SELECT pg_read_file('$corpus') AS t;
\timing on
SELECT count(collab.set_text('doc-' || i, 'content',
         substr(t, 1 + (i * 7919) % greatest(length(t) - 3000, 1), 3000)))
FROM corpus, generate_series(1, $n) i;
\timing off
SELECT count(*) AS documents, pg_size_pretty(sum(length(body))) AS text,
       pg_size_pretty(pg_total_relation_size('collab.texts')) AS texts_total,
       pg_size_pretty(pg_relation_size('collab.texts_tsv')) AS gin_index
FROM collab.texts;
VACUUM ANALYZE collab.texts;
CREATE FUNCTION pg_temp.lat(q text, lim int) RETURNS TABLE (query text, hits bigint, median_ms numeric, max_ms numeric) AS \$\$
DECLARE t0 timestamptz; ms numeric[] := '{}'; h bigint;
BEGIN
  FOR k IN 1..20 LOOP
    t0 := clock_timestamp();
    SELECT count(*) INTO h FROM collab.search(q, 'simple', lim);
    ms := ms || (extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric;
  END LOOP;
  RETURN QUERY SELECT q, h,
    round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(ms) x)::numeric, 2),
    round((SELECT max(x) FROM unnest(ms) x), 2);
END \$\$ LANGUAGE plpgsql;
SELECT (SELECT count(*) FROM collab.texts WHERE tsv @@ websearch_to_tsquery('simple', 'the')) AS docs_with_the,
       (SELECT count(*) FROM collab.texts WHERE tsv @@ websearch_to_tsquery('simple', 'crdt')) AS docs_with_crdt;
SELECT * FROM pg_temp.lat('the', 20)
UNION ALL SELECT * FROM pg_temp.lat('crdt', 20)
UNION ALL SELECT * FROM pg_temp.lat('"operational transformation"', 20)
UNION ALL SELECT * FROM pg_temp.lat('function -return', 20)
UNION ALL SELECT * FROM pg_temp.lat('zyxwvut', 20);
SQL
