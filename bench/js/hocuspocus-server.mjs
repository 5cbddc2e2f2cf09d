// An in-memory @hocuspocus/server (no extensions: nothing stored), the Hocuspocus relay of the
// side-by-side latency benchmark (scripts/bench-latency.sh). Usage: PORT=N node hocuspocus-server.mjs
import { Server } from '@hocuspocus/server'

const server = new Server({ port: Number(process.env.PORT), address: '127.0.0.1', quiet: true })
await server.listen()
