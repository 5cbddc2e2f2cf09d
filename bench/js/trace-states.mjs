// Replays each editing trace of ../shared/traces into a stock yjs document and writes its final
// state (what a pg_collab checkpoint holds) to OUT/<trace>.state. Used by scripts/bench-toast.sh.
// Usage: node bench/js/trace-states.mjs TRACES_DIR OUT_DIR
import fs from 'fs';
import zlib from 'zlib';
import * as Y from '../../tests/js/node_modules/yjs/dist/yjs.mjs';

const [traces, out] = process.argv.slice(2);
for (const name of ['automerge-paper','seph-blog1','sveltecomponent','rustcode']) {
  const t = JSON.parse(zlib.gunzipSync(fs.readFileSync(`${traces}/${name}.json.gz`)));
  const doc = new Y.Doc(); const text = doc.getText('content');
  for (const txn of t.txns) doc.transact(() => { for (const [pos, del, ins] of txn.patches) { if (del) text.delete(pos, del); if (ins) text.insert(pos, ins); } });
  const state = Y.encodeStateAsUpdate(doc);
  fs.writeFileSync(`${out}/${name}.state`, state);
  console.log(`${name}: state of ${state.length} bytes`);
}
