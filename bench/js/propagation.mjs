// Propagation latency and throughput of a y-websocket server, measured with stock Yjs clients.
// Every client types at a fixed rate into its document; every other client of that document
// records when each edit arrives (one process, one clock). Used side by side against
// collab-bridge and the y-websocket reference server by scripts/bench-bridge.sh.
// Usage: node propagation.mjs <ws-base> <token|-> <docs> <clients-per-doc> <updates/s per client> <seconds>
// With LATENCIES=FILE it also writes every latency (ms, sorted) to FILE as JSON.
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'

// PROVIDER=hocuspocus: clients are @hocuspocus/provider's (from bench/js, with its own yjs),
// for @hocuspocus/server; otherwise y-websocket's WebsocketProvider (from tests/js).
const hocuspocus = process.env.PROVIDER === 'hocuspocus'
const require = createRequire(new URL(hocuspocus ? './package.json' : '../../tests/js/package.json', import.meta.url))
const Y = require('yjs')
const WebSocket = require('ws')
const { WebsocketProvider } = hocuspocus ? {} : require('y-websocket')
const { HocuspocusProvider } = hocuspocus ? require('@hocuspocus/provider') : {}
const connect = (base, room, ydoc, token) => {
  if (!hocuspocus) {
    const params = token === '-' ? {} : { token }
    const p = new WebsocketProvider(base, room, ydoc, { WebSocketPolyfill: WebSocket, params, disableBc: true })
    return { p, synced: () => p.synced, destroy: () => p.destroy() }
  }
  const p = new HocuspocusProvider({
    url: base, name: room, document: ydoc, WebSocketPolyfill: WebSocket, ...(token === '-' ? {} : { token })
  })
  return { p, synced: () => p.isSynced, destroy: () => p.destroy() }
}

process.setMaxListeners(0) // one exit listener per provider
const [base, token, docs, perDoc, rate, seconds] = process.argv.slice(2)
const D = Number(docs); const M = Number(perDoc); const R = Number(rate); const S = Number(seconds)
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const run = Math.random().toString(36).slice(2, 8)

const sent = new Map()
const latencies = []
let received = 0
const clients = []
for (let d = 0; d < D; d++) {
  for (let m = 0; m < M; m++) {
    const ydoc = new Y.Doc()
    const provider = connect(base, `bench-${run}-${d}`, ydoc, token)
    const text = ydoc.getText('content')
    text.observe((event, txn) => {
      if (txn.local) return
      const now = performance.now()
      for (const op of event.delta) {
        if (typeof op.insert !== 'string') continue
        for (const match of op.insert.matchAll(/(\d+)\.(\d+);/g)) {
          const t = sent.get(match[0])
          if (t !== undefined) { latencies.push(now - t); received++ }
        }
      }
    })
    clients.push({ id: clients.length, provider, text })
  }
}
const start = performance.now()
while (!clients.every(c => c.provider.synced())) {
  if (performance.now() - start > 30000) throw new Error('clients did not sync')
  await sleep(20)
}

let count = 0
const cpu0 = process.cpuUsage()
const timers = clients.map(c => {
  let n = 0
  return setInterval(() => {
    const marker = `${c.id}.${n++};`
    sent.set(marker, performance.now())
    c.text.insert(0, marker)
    count++
  }, 1000 / R)
})
const t0 = performance.now()
await sleep(S * 1000)
timers.forEach(clearInterval)
const elapsed = (performance.now() - t0) / 1000
const cpu = process.cpuUsage(cpu0)
await sleep(2000) // drain
latencies.sort((a, b) => a - b)
// Several harness processes (scripts/bench-latency.sh) merge their latencies from these files.
if (process.env.LATENCIES) (await import('node:fs')).writeFileSync(process.env.LATENCIES, JSON.stringify(latencies))
const q = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : NaN
const expected = count * (M - 1)
console.log(JSON.stringify({
  docs: D, clients: D * M, sent_per_s: Math.round(count / elapsed),
  delivered: received, expected, p50_ms: +q(0.5).toFixed(2), p99_ms: +q(0.99).toFixed(2),
  // CPU of this harness process while sending (100 = one core busy): is the harness the limit?
  harness_cpu_pct: Math.round((cpu.user + cpu.system) / 1e4 / elapsed)
}))
clients.forEach(c => c.provider.destroy())
process.exit(0)
