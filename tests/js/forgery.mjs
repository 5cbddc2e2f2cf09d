// Stock Yjs clients keep editing through two bridges while a role that may only connect to the
// database forges and replays notifications on channel collab. Driven by bridge/tests/forgery.rs.
// Usage: node forgery.mjs <ws-base-1> <ws-base-2> <token> <doc>
// Reports everything that would betray a forgery: a closed or dropped connection, content no
// client typed, an awareness state from a client that does not exist.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [base1, base2, token, doc] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const waitLine = async () => (await lines.next()).value
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

const closes = []
function client (base, name) {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(base, doc, ydoc, {
    WebSocketPolyfill: WebSocket,
    params: { token },
    maxBackoffTime: 500,
    disableBc: true
  })
  provider.awareness.setLocalStateField('user', { name })
  provider.on('connection-close', (event) => { closes.push({ name, code: event && event.code }) })
  return { ydoc, provider, text: ydoc.getText('content') }
}

async function until (what, cond, ms = 15000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

const a = client(base1, 'ada')
const b = client(base2, 'grace')
await until('sync', () => a.provider.synced && b.provider.synced)

let typed = 0
let typing = true
const typist = (async () => {
  while (typing) {
    a.text.insert(a.text.length, `a${typed};`)
    b.text.insert(0, `b${typed};`)
    typed++
    await sleep(10)
  }
})()
await until('some edits', () => typed >= 10)
say({ step: 'editing', text: a.text.toString() })
await waitLine() // the forgeries are done
await sleep(300) // anything forged would have arrived by now
typing = false
await typist

const expected = []
for (let i = 0; i < typed; i++) expected.push(`a${i};`, `b${i};`)
const complete = (t) => expected.every(s => t.includes(s))
await until('convergence', () => a.text.toString() === b.text.toString() && complete(a.text.toString()))
const strangers = []
for (const c of [a, b]) {
  for (const [id, state] of c.provider.awareness.getStates()) {
    const name = state && state.user && state.user.name
    if (name !== 'ada' && name !== 'grace') strangers.push({ id, state })
  }
}
say({ step: 'final', text: a.text.toString(), typed, closes, strangers })
a.provider.destroy()
b.provider.destroy()
process.exit(0)
