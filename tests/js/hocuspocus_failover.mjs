// A bridge dies (SIGKILL) while a Hocuspocus client types; the same Y.Doc continues through
// another bridge on a new socket, and nothing it holds is lost. Driven by
// bridge/tests/hocuspocus.rs. Usage: node hocuspocus_failover.mjs <doomed> <survivor> <token> <doc>
import * as Y from 'yjs'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import WebSocket from 'ws'
import readline from 'node:readline'

const [doomed, survivor, token, name] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
process.on('unhandledRejection', (e) => { say({ step: 'failed', error: String(e?.stack ?? e) }); process.exit(1) })

async function until (what, cond, ms = 20000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

function connect (base, document) {
  const socket = new HocuspocusProviderWebsocket({
    url: base.replace(/^http/, 'ws') + '/hocuspocus', WebSocketPolyfill: WebSocket, delay: 100, minDelay: 100, maxDelay: 500
  })
  const provider = new HocuspocusProvider({ websocketProvider: socket, name, document, token })
  provider.attach()
  return { socket, provider }
}

const writer = new Y.Doc()
const text = writer.getText('content')
let w = connect(doomed, writer)
const watcher = new Y.Doc()
const watched = watcher.getText('content')
const watching = connect(survivor, watcher)
await until('sync', () => w.provider.isSynced && watching.provider.isSynced)

let i = 0
for (; i < 20; i++) { text.insert(text.length, `k${i};`); await sleep(5) }
say({ step: 'typed', text: text.toString() })
// Keep typing while the bridge is killed.
let killed = false
lines.next().then(() => { killed = true })
while (!killed || i < 30) { text.insert(text.length, `k${i};`); i++; await sleep(5) }
w.provider.destroy()
w.socket.destroy()
w = connect(survivor, writer)
await until('failover', () => watched.toString() === text.toString() &&
  w.provider.isSynced && w.provider.unsyncedChanges === 0)
say({ step: 'recovered', text: text.toString() })
w.provider.destroy()
w.socket.destroy()
watching.provider.destroy()
watching.socket.destroy()
process.exit(0)
