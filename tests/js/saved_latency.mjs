// How long "Saved" takes: per edit, from the local change to the bridge's acknowledgement that
// its transaction committed (Hocuspocus sync status; y-websocket `?saved=1` message 8), next to
// the time until another client (on the other protocol) has the edit. Stock clients, one
// process. Run by scripts/bench-saved.sh.
// Usage: node saved_latency.mjs <http-base> <token> <edits per second> <seconds>
import * as Y from 'yjs'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'

const [base, token, rateArg, secsArg] = process.argv.slice(2)
const rate = Number(rateArg)
const secs = Number(secsArg)
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const now = () => performance.now()
const ws = base.replace(/^http/, 'ws')

async function until (what, cond, ms = 20000) {
  const start = Date.now()
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

function pct (xs, p) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]
}
const fmt = (xs) => `n=${xs.length} p50=${pct(xs, 50).toFixed(2)} ms p90=${pct(xs, 90).toFixed(2)} ms p99=${pct(xs, 99).toFixed(2)} ms max=${Math.max(...xs).toFixed(2)} ms`

async function run (writerKind) {
  const name = `saved-${writerKind}-${Date.now()}`
  // The Hocuspocus client.
  const socket = new HocuspocusProviderWebsocket({ url: `${ws}/hocuspocus`, WebSocketPolyfill: WebSocket })
  const hdoc = new Y.Doc()
  const hp = new HocuspocusProvider({ websocketProvider: socket, name, document: hdoc, token })
  hp.attach()
  // The y-websocket client, asking for saved messages.
  const ydoc = new Y.Doc()
  const yw = new WebsocketProvider(`${ws}/ws`, name, ydoc, {
    WebSocketPolyfill: WebSocket, params: { token, saved: '1' }, disableBc: true
  })
  const sent = new Map() // edit label -> time
  const saved = []
  const seen = []
  const pendingAcks = [] // labels in send order, acknowledged in commit order
  const label = (i) => `${writerKind}${i};`
  if (writerKind === 'hocuspocus') {
    // The provider counts unsynced edits up on each send and down on each sync status.
    let last = hp.unsyncedChanges
    hp.on('unsyncedChanges', ({ number }) => {
      for (let k = number; k < last; k++) {
        const l = pendingAcks.shift()
        if (l) saved.push(now() - sent.get(l))
      }
      last = number
    })
  }
  // Saved messages (type 8): timed when the y-websocket client writes; its own sync step 2 is
  // acknowledged too (kind 1) and ignored.
  yw.messageHandlers[8] = (_e, decoder) => {
    const kind = decoding.readVarUint(decoder)
    decoding.readVarUint(decoder)
    if (kind !== 0 || writerKind !== 'ywebsocket') return
    const l = pendingAcks.shift()
    if (l) saved.push(now() - sent.get(l))
  }
  const reader = writerKind === 'hocuspocus' ? ydoc : hdoc
  const readerText = reader.getText('content')
  let seenUpTo = 0
  readerText.observe(() => {
    const t = readerText.toString()
    while (seenUpTo < sent.size && t.includes(label(seenUpTo))) {
      seen.push(now() - sent.get(label(seenUpTo)))
      seenUpTo++
    }
  })
  await until('sync', () => hp.isSynced && hp.unsyncedChanges === 0 && yw.synced)
  await sleep(300)
  const text = (writerKind === 'hocuspocus' ? hdoc : ydoc).getText('content')
  const n = Math.round(rate * secs)
  const gap = 1000 / rate
  const start = now()
  for (let i = 0; i < n; i++) {
    const l = label(i)
    pendingAcks.push(l)
    sent.set(l, now())
    text.insert(text.length, l)
    const next = start + (i + 1) * gap
    const wait = next - now()
    if (wait > 0) await sleep(wait)
  }
  await until('every acknowledgement', () => saved.length === n && seen.length === n, 60000)
  console.log(`${writerKind} writes (${rate}/s for ${secs} s): saved ${fmt(saved)}`)
  console.log(`${writerKind} writes: seen by the ${writerKind === 'hocuspocus' ? 'y-websocket' : 'Hocuspocus'} client ${fmt(seen)}`)
  hp.destroy()
  socket.destroy()
  yw.destroy()
}

await run('hocuspocus')
await run('ywebsocket')
process.exit(0)
