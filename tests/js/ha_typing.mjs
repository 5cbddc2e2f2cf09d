// Two stock clients (yjs + y-websocket, unchanged) type into one document through two bridges
// while the database fails over underneath them. Driven by bridge/tests/failover.rs.
// Usage: node ha_typing.mjs <ws-base-a> <ws-base-b> <token> <doc>
// Steps: "typing" (both synced and typing) → reads "killed <epoch-ms>" → "flowing" (each client
// saw a token the other typed after the kill; times in ms since the kill) → reads "stop" →
// "final" (both texts equal and holding every token typed; the tokens each client typed).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [baseA, baseB, token, room] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
// disableBc: both clients live in one process; they must talk only through the bridges.
const opts = { WebSocketPolyfill: WebSocket, params: { token }, maxBackoffTime: 250, disableBc: true }
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

async function until (what, cond, ms = 60000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

function client (base, tag) {
  const doc = new Y.Doc()
  const text = doc.getText('content')
  const provider = new WebsocketProvider(base, room, doc, opts)
  return { tag, doc, text, provider, typed: [], stop: false }
}

const a = client(baseA, 'a')
const b = client(baseB, 'b')
const clients = [a, b]
await until('sync', () => a.provider.synced && b.provider.synced)

// Each client appends its own numbered tokens, one every 20 ms, whatever the connection does.
async function type (c) {
  for (let i = 0; !c.stop; i++) {
    const t = `${c.tag}${i};`
    c.text.insert(c.text.length, t)
    c.typed.push({ t, at: Date.now() })
    await sleep(20)
  }
}
const typing = clients.map(type)
await sleep(300)
say({ step: 'typing' })

const killedAt = Number((await lines.next()).value.split(' ')[1])
// The first token each client typed after the kill; edits flow again once the other client
// holds it (it went through the new primary: the bridges share nothing else).
const firstAfter = (c) => c.typed.find(x => x.at > killedAt)?.t
const flowing = {}
await until('edits to flow again', () => {
  for (const [from, to] of [[a, b], [b, a]]) {
    const t = firstAfter(from)
    if (t && flowing[from.tag] === undefined && to.text.toString().includes(t)) {
      flowing[from.tag] = Date.now() - killedAt
    }
  }
  return flowing.a !== undefined && flowing.b !== undefined
}, 90000)
say({ step: 'flowing', a_to_b_ms: flowing.a, b_to_a_ms: flowing.b })

await lines.next() // stop
for (const c of clients) c.stop = true
await Promise.all(typing)
const all = clients.flatMap(c => c.typed.map(x => x.t))
await until('convergence', () => clients.every(c => all.every(t => c.text.toString().includes(t))) &&
  a.text.toString() === b.text.toString())
say({ step: 'final', text: a.text.toString(), tokens: all })
for (const c of clients) c.provider.destroy()
process.exit(0)
