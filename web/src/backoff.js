// Reconnection with exponential backoff and jitter. y-websocket's own schedule is deterministic
// (every client retries after 100, 200, 400 ms... of the same close), so a bridge restart would
// bring every page back in the same millisecond. The provider gets a WebSocket class whose
// constructor waits a jittered delay before it really connects; y-websocket's own delay is set to
// zero, so this is the only schedule.

export class Backoff {
  /**
   * @param {object} opts
   * @param {number} [opts.base] first retry ceiling in ms after an ordinary close
   * @param {number} [opts.restartBase] first retry ceiling after "server restarting" (1012) or
   *   "try again later" (1013): larger, so a whole population of pages spreads out
   * @param {number} [opts.cap] longest wait in ms
   */
  constructor ({ base = 500, restartBase = 2000, cap = 15000 } = {}) {
    this.base = base
    this.restartBase = restartBase
    this.cap = cap
    this.attempt = 0
    this.lastCode = null
    this.waitingUntil = 0
    this.listeners = new Set()
  }

  /** The next delay in ms: uniformly in [ceiling/2, ceiling] ("equal jitter"); 0 the first time. */
  nextDelay () {
    if (this.attempt === 0 && this.lastCode === null) return 0
    const base = this.lastCode === 1012 || this.lastCode === 1013 ? this.restartBase : this.base
    const ceiling = Math.min(this.cap, base * 2 ** Math.max(0, this.attempt - 1))
    return ceiling / 2 + Math.random() * (ceiling / 2)
  }

  /** A connection synced: the next trouble starts from the first step again. */
  succeeded () {
    this.attempt = 0
    this.lastCode = null
  }

  /** The network came back: retry soon, still with jitter. */
  restart () {
    this.attempt = 1
    this.lastCode = 0
  }

  failed (code) {
    this.attempt++
    this.lastCode = code
  }

  onChange (f) {
    this.listeners.add(f)
  }

  _emit () {
    this.listeners.forEach((f) => f(this))
  }

  /** The WebSocket class to give y-websocket (`WebSocketPolyfill`). */
  socketClass () {
    const backoff = this
    return class JitteredWebSocket {
      static CONNECTING = 0
      static OPEN = 1
      static CLOSING = 2
      static CLOSED = 3
      // y-websocket compares `ws.readyState === ws.OPEN`: instances need the constants too.
      get CONNECTING () { return 0 }
      get OPEN () { return 1 }
      get CLOSING () { return 2 }
      get CLOSED () { return 3 }

      constructor (url, protocols) {
        this.url = url
        this.binaryType = 'arraybuffer'
        this.readyState = 0
        this.onopen = this.onclose = this.onmessage = this.onerror = null
        this._ws = null
        const delay = backoff.nextDelay()
        backoff.waitingUntil = Date.now() + delay
        backoff._emit()
        this._timer = setTimeout(() => this._connect(url, protocols), delay)
      }

      _connect (url, protocols) {
        this._timer = null
        backoff.waitingUntil = 0
        backoff._emit()
        const ws = new WebSocket(url, protocols)
        ws.binaryType = this.binaryType
        this._ws = ws
        ws.onopen = (e) => {
          this.readyState = 1
          this.onopen && this.onopen(e)
        }
        ws.onmessage = (e) => this.onmessage && this.onmessage(e)
        ws.onerror = (e) => this.onerror && this.onerror(e)
        ws.onclose = (e) => {
          this.readyState = 3
          backoff.failed(e.code)
          this.onclose && this.onclose(e)
        }
      }

      send (data) {
        if (this._ws && this._ws.readyState === 1) this._ws.send(data)
      }

      close (code, reason) {
        if (this._timer !== null) {
          clearTimeout(this._timer)
          this._timer = null
          this.readyState = 3
          backoff.waitingUntil = 0
          backoff._emit()
          return
        }
        if (this._ws) this._ws.close(code, reason)
      }
    }
  }
}
