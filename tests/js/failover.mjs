// A bridge dies (SIGKILL) while a stock client types; the same Y.Doc continues through another
// bridge with a new provider, and nothing it holds is lost. Driven by bridge/tests/stock_clients.rs.
// Usage: node failover.mjs <ws-base-doomed> <ws-base-survivor> <token> <doc>
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [doomed, survivor, token, doc] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
// disableBc: both clients live in one process; they must talk only through the bridges.
const opts = { WebSocketPolyfill: WebSocket, params: { token }, maxBackoffTime: 500, disableBc: true }
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

async function until (what, cond, ms = 15000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

const writer = new Y.Doc()
const text = writer.getText('content')
let provider = new WebsocketProvider(doomed, doc, writer, opts)
const watcher = new Y.Doc()
const watched = watcher.getText('content')
const watching = new WebsocketProvider(survivor, doc, watcher, opts)
await until('sync', () => provider.synced && watching.synced)

for (let i = 0; i < 20; i++) { text.insert(text.length, `k${i};`); await sleep(5) }
say({ step: 'typed', text: text.toString() })
await lines.next() // the bridge has been killed
for (let i = 20; i < 30; i++) { text.insert(text.length, `k${i};`); await sleep(5) }
provider.destroy()
provider = new WebsocketProvider(survivor, doc, writer, opts)
await until('failover', () => watched.toString() === text.toString() && text.toString().includes('k29;'))
say({ step: 'recovered', text: text.toString() })
provider.destroy()
watching.destroy()
process.exit(0)
