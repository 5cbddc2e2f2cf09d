// Stock clients (yjs + y-websocket, unchanged), one per document, all through one bridge,
// driven line by line from stdin by bridge/tests/shards.rs:
//   wait <doc> <text>   → {"step":"seen","doc","ms"} once the document holds <text> (ms: how long)
//   type <doc> <text>   → appends <text> → {"step":"typed"}
//   text <doc>          → {"step":"text","text"}
// Usage: node rooms.mjs <ws-base> <token> <doc>...
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [base, token, ...docs] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
const opts = { WebSocketPolyfill: WebSocket, params: { token }, maxBackoffTime: 500, disableBc: true }

const rooms = new Map(docs.map(name => {
  const doc = new Y.Doc()
  return [name, { doc, text: doc.getText('content'), provider: new WebsocketProvider(base, name, doc, opts) }]
}))
while (![...rooms.values()].every(r => r.provider.synced)) await sleep(10)
say({ step: 'synced' })

for await (const line of readline.createInterface({ input: process.stdin })) {
  const [cmd, name, ...rest] = line.split(' ')
  const room = rooms.get(name)
  if (!room) { say({ step: 'failed', error: `unknown document ${name}` }); process.exit(1) }
  const arg = rest.join(' ')
  if (cmd === 'wait') {
    const start = Date.now()
    while (!room.text.toString().includes(arg)) {
      if (Date.now() - start > 30000) { say({ step: 'failed', error: `${name} never held ${arg}` }); process.exit(1) }
      await sleep(1)
    }
    say({ step: 'seen', doc: name, ms: Date.now() - start })
  } else if (cmd === 'type') {
    room.text.insert(room.text.length, arg)
    say({ step: 'typed' })
  } else if (cmd === 'text') {
    say({ step: 'text', text: room.text.toString() })
  }
}
for (const r of rooms.values()) r.provider.destroy()
process.exit(0)
