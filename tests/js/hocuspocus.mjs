// The Hocuspocus provider, unchanged (npm @hocuspocus/provider 4.8.0 + yjs), against two real
// bridges' /hocuspocus endpoints: many documents per socket, a refused document, read-only
// scope, closing and reopening a document on a live socket, stateless messages, token refresh,
// a document edited through both protocols at once, and "saved" only once committed.
// Driven by bridge/tests/hocuspocus.rs over stdin/stdout (one JSON line per step).
// Usage: node hocuspocus.mjs <http-base-a> <http-base-b> <tokens-json>
import * as Y from 'yjs'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [baseA, baseB, tokensJson] = process.argv.slice(2)
const tokens = JSON.parse(tokensJson)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const waitLine = async () => (await lines.next()).value
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
// y-websocket logs a message type it does not know: count those (there must be none).
let unknownAtY = 0
const consoleError = console.error
console.error = (...args) => {
  if (String(args[0]).includes('Unable to compute message')) unknownAtY++
  consoleError(...args)
}
process.on('unhandledRejection', (e) => { say({ step: 'failed', error: String(e?.stack ?? e) }); process.exit(1) })

async function until (what, cond, ms = 20000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

function socket (base) {
  const s = new HocuspocusProviderWebsocket({
    url: base.replace(/^http/, 'ws') + '/hocuspocus',
    WebSocketPolyfill: WebSocket,
    delay: 100,
    minDelay: 100,
    maxDelay: 500
  })
  s.disconnects = 0
  s.on('disconnect', () => { s.disconnects += 1 })
  return s
}

// One document on a shared socket; `token` may be a function (asked again on refresh).
function open (sock, name, token = tokens.write) {
  const doc = new Y.Doc()
  const p = new HocuspocusProvider({ websocketProvider: sock, name, document: doc, token })
  const d = { doc, p, text: doc.getText('content'), denied: null, scopes: [], stateless: [] }
  p.on('authenticationFailed', ({ reason }) => { d.denied = reason })
  p.on('authenticated', ({ scope }) => { d.scopes.push(scope) })
  p.on('stateless', ({ payload }) => { d.stateless.push(payload) })
  p.attach()
  return d
}

const saved = (d) => d.p.isSynced && d.p.unsyncedChanges === 0

const sockA = socket(baseA)
const sockB = socket(baseB)

// Many documents on one socket, on two bridges; a refused one in the middle.
const a1 = open(sockA, 'multi/one')
const a2 = open(sockA, 'multi/two')
const secret = open(sockA, 'secret')
const b1 = open(sockB, 'multi/one')
const b2 = open(sockB, 'multi/two')
await until('the refusal', () => secret.denied !== null)
await until('sync', () => [a1, a2, b1, b2].every(saved))
for (let i = 0; i < 20; i++) {
  a1.text.insert(0, `a${i};`)
  b2.text.insert(0, `b${i};`)
  await sleep(5)
}
await until('convergence', () =>
  a1.text.toString() === b1.text.toString() && a2.text.toString() === b2.text.toString() &&
  a1.text.length > 0 && b2.text.length > 0 && [a1, a2, b1, b2].every(saved))
say({
  step: 'multi',
  one: a1.text.toString(),
  two: b2.text.toString(),
  denied: secret.denied,
  secretScopes: secret.scopes,
  scopes: a1.scopes,
  disconnects: sockA.disconnects + sockB.disconnects
})
await waitLine()

// Read-only scope: the edit is never acknowledged as saved, and the Rust side finds it unstored.
const ro = open(sockA, 'ro/doc', tokens.write)
await until('read-only sync', () => ro.p.isSynced && ro.scopes.length > 0)
ro.text.insert(0, 'READONLY-EDIT;')
await sleep(500)
say({ step: 'readonly', scopes: ro.scopes, unsynced: ro.p.unsyncedChanges })
await waitLine()

// Close a document on the live socket and open it again: no reconnect, the content is back.
a2.p.destroy()
await sleep(200)
const a2again = open(sockA, 'multi/two')
await until('reopened', () => saved(a2again) && a2again.text.toString() === b2.text.toString())
b2.text.insert(0, 'after-reopen;')
await until('reopened receives', () => a2again.text.toString().startsWith('after-reopen;'))
say({ step: 'reopened', text: a2again.text.toString(), disconnects: sockA.disconnects + sockB.disconnects })

// Stateless messages reach the document's other connections (the other bridge), not the sender.
const sa = open(sockA, 'stateless')
const sb = open(sockB, 'stateless')
await until('stateless sync', () => saved(sa) && saved(sb))
sa.p.sendStateless('hello from a')
await until('stateless at b', () => sb.stateless.includes('hello from a'))
sb.p.sendStateless('hello from b')
await until('stateless at a', () => sa.stateless.includes('hello from b'))
say({ step: 'stateless', a: sa.stateless, b: sb.stateless })

// Token refresh on the live socket: a short read-only token, then the bridge asks for a fresh
// one ahead of its expiry and the provider's token function gives a writer's token.
let current = tokens.shortRead
const rf = open(sockA, 'refresh', () => current)
await until('refresh sync', () => rf.p.isSynced && rf.scopes.length > 0)
const before = [...rf.scopes]
current = tokens.write
await until('the renewed scope', () => rf.scopes.includes('read-write'), 30000)
rf.text.insert(0, 'after-refresh;')
await until('refresh saved', () => saved(rf))
say({ step: 'refreshed', before, after: rf.scopes, text: rf.text.toString(), disconnects: sockA.disconnects })
await waitLine()

// One document edited at once through both endpoints: y-websocket on b, Hocuspocus on a.
const hp = open(sockA, 'mixed')
const yd = new Y.Doc()
const yw = new WebsocketProvider(baseB.replace(/^http/, 'ws') + '/ws', 'mixed', yd, {
  WebSocketPolyfill: WebSocket, params: { token: tokens.write }, disableBc: true, maxBackoffTime: 500
})
const yt = yd.getText('content')
await until('mixed sync', () => saved(hp) && yw.synced)
for (let i = 0; i < 20; i++) {
  hp.text.insert(0, `h${i};`)
  yt.insert(0, `y${i};`)
  await sleep(5)
}
await until('mixed convergence', () =>
  hp.text.toString() === yt.toString() && hp.text.toString().includes('h19;') &&
  hp.text.toString().includes('y19;') && saved(hp))
// A stateless message on the document reaches no y-websocket client: once the y-websocket
// client has the edit made after it (same NOTIFY channel, in order), it would have had it.
hp.p.sendStateless('not for y-websocket')
hp.text.insert(0, 'after-stateless;')
await until('the edit after the stateless message', () => yt.toString().startsWith('after-stateless;') && saved(hp))
say({ step: 'mixed', text: hp.text.toString(), unknownAtY })
await waitLine()
yw.destroy()

// "Saved" only once committed: the Rust side holds the document's row, the edit cannot commit.
const sv = open(sockA, 'saved')
sv.text.insert(0, 'first;')
await until('saved sync', () => saved(sv))
say({ step: 'saved-ready' })
await waitLine() // the row is locked now
sv.text.insert(0, 'WHILE-LOCKED;')
await sleep(1500)
say({ step: 'while-locked', unsynced: sv.p.unsyncedChanges })
await waitLine() // released
await until('saved after the commit', () => saved(sv))
say({ step: 'after-commit', unsynced: sv.p.unsyncedChanges, text: sv.text.toString() })

sockA.destroy()
sockB.destroy()
process.exit(0)
