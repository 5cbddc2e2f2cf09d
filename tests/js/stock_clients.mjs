// Stock Yjs clients, unchanged: yjs + y-websocket's WebsocketProvider, one on each of two bridges.
// Driven by bridge/tests/stock_clients.rs over stdin/stdout (one JSON line per step), so the
// Rust side can act on the database between steps.
// Usage: node stock_clients.mjs <ws-base-1> <ws-base-2> <token> <doc>
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [base1, base2, token, doc] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const waitLine = async () => (await lines.next()).value

function client (base) {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(base, doc, ydoc, {
    WebSocketPolyfill: WebSocket,
    params: { token },
    maxBackoffTime: 500,
    disableBc: true // same process: no BroadcastChannel shortcut, everything goes through the bridges
  })
  return { ydoc, provider, text: ydoc.getText('content') }
}

async function until (what, cond, ms = 15000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

const a = client(base1)
const b = client(base2)
await until('sync', () => a.provider.synced && b.provider.synced)

// Both type at the same spot at the same time.
for (let i = 0; i < 30; i++) {
  a.text.insert(0, `a${i};`)
  b.text.insert(0, `b${i};`)
  await new Promise(resolve => setTimeout(resolve, 5))
}
const expectedLength = 2 * Array.from({ length: 30 }, (_, i) => `a${i};`.length).reduce((x, y) => x + y)
await until('convergence', () => a.text.length === expectedLength && a.text.toString() === b.text.toString())
say({ step: 'converged', text: a.text.toString() })

// The Rust side inserts through SQL; both clients must see it.
const marker = await waitLine()
await until('the SQL edit', () => a.text.toString().includes(marker) && b.text.toString().includes(marker))
say({ step: 'sql-seen', text: a.text.toString() })

// Client a goes offline, edits, and comes back: its edits are uploaded and reach b.
a.provider.disconnect()
a.text.insert(0, 'offline-edit;')
await new Promise(resolve => setTimeout(resolve, 200))
if (b.text.toString().includes('offline-edit;')) throw new Error('edit leaked while offline')
a.provider.connect()
await until('offline edit delivered', () => b.text.toString().includes('offline-edit;') && a.text.toString() === b.text.toString())
say({ step: 'offline-synced', text: a.text.toString() })

a.provider.destroy()
b.provider.destroy()
process.exit(0)
