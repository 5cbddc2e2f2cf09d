import Quill from 'quill'
import QuillCursors from 'quill-cursors'
import { QuillBinding } from 'y-quill'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import 'quill/dist/quill.snow.css'

import { api } from './api.js'
import { Backoff } from './backoff.js'
import { colorFor, loadSession } from './session.js'
import { toggleHistory } from './history.js'
import { PeopleList } from './people.js'
import { trackSaved } from './saved.js'

Quill.register('modules/cursors', QuillCursors)

// The field the SQL text functions use by default (collab.text(doc), collab.insert_text(doc,
// 'content', ...)): y-quill keeps Quill's contents in this Y.Text, so SQL edits and the editor
// work on the same characters.
const FIELD = 'content'

const TOOLBAR = [
  [{ header: [1, 2, 3, false] }],
  ['bold', 'italic', 'underline', 'strike'],
  [{ list: 'ordered' }, { list: 'bullet' }, { list: 'check' }],
  ['blockquote', 'code-block', 'link'],
  ['clean']
]

/** Opens document `name` in `app`; returns a function that closes it. */
export function openEditor (app, name, user) {
  app.innerHTML = `
    <section class="editor-view">
      <div class="editor-main">
        <div id="editor"></div>
      </div>
      <aside class="side">
        <h2>Here now</h2>
        <ul id="people" class="people"></ul>
        <h2>History</h2>
        <button id="history-open" type="button">Show earlier versions</button>
        <div id="history" class="history" hidden></div>
      </aside>
    </section>`
  document.getElementById('doc-title').textContent = name
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText(FIELD)
  const backoff = new Backoff()
  const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`
  const provider = new WebsocketProvider(wsBase, encodeURIComponent(name), ydoc, {
    WebSocketPolyfill: backoff.socketClass(),
    maxBackoffTime: 0,
    // Ask the bridge to say when each edit is committed ("Saving…" / "Saved", saved.js).
    params: { saved: '1' },
    // The database is the sync point: tabs do not talk to each other behind the bridge's back.
    disableBc: true,
    // 4003: no right to this document; 44xx: the bridge decided (e.g. document deleted).
    // 4001 (token missing, expired or revoked) is retried only after signing in again, below.
    shouldReconnect: (e) => !(e.code === 4003 || (e.code >= 4400 && e.code < 4500))
  })
  // The bridge refuses a connection by accepting it and closing with 4001/4003, so the page
  // learns why. On 4001 it asks for its session again (development mode renews the cookie); if
  // there is none, it stops and says so instead of retrying into the same refusal.
  const onConnectionClose = async (event) => {
    if (!event || event.code !== 4001) return
    let current = null
    try {
      current = await loadSession()
    } catch {}
    if (!current) {
      provider.disconnect()
      status.closedReason = 'signed out: sign in again to continue'
      status.render()
    }
  }
  provider.on('connection-close', onConnectionClose)
  const quill = new Quill(app.querySelector('#editor'), {
    theme: 'snow',
    placeholder: 'Start typing…',
    modules: {
      cursors: { transformOnTextChange: true },
      toolbar: TOOLBAR,
      history: { userOnly: true }
    }
  })
  const binding = new QuillBinding(ytext, quill, provider.awareness)
  provider.awareness.setLocalStateField('user', { name: user.name, color: colorFor(user.name) })

  const status = new ConnectionStatus(provider, backoff, ydoc)
  const stopSaved = trackSaved(provider, ydoc, (s) => {
    status.saved = s
    status.render()
  })
  const people = new PeopleList(app.querySelector('#people'), provider.awareness)

  api.access(name).then((s) => {
    if (s.access === 'read') {
      quill.enable(false)
      status.readOnly = true
      status.render()
    }
  }).catch(() => {})

  toggleHistory(app, name)

  // Browsers know when the network is gone; say so instead of retrying into the void, and keep
  // every edit in the page until it comes back.
  const offline = () => {
    provider.disconnect()
    status.render()
  }
  const online = () => {
    backoff.restart()
    provider.connect()
    status.render()
  }
  window.addEventListener('offline', offline)
  window.addEventListener('online', online)
  if (!navigator.onLine) offline()

  // Exposed for tests and curious developers.
  window.collab = { doc: ydoc, text: ytext, provider, quill, status, backoff }

  return () => {
    window.removeEventListener('offline', offline)
    window.removeEventListener('online', online)
    stopSaved()
    status.destroy()
    people.destroy()
    if (closeHistory) closeHistory()
    binding.destroy()
    provider.off('connection-close', onConnectionClose)
    provider.destroy()
    ydoc.destroy()
    document.getElementById('doc-title').textContent = ''
    delete window.collab
  }
}

/** Connection state in the header: connected / reconnecting in N s / offline with unsent edits. */
class ConnectionStatus {
  constructor (provider, backoff, ydoc) {
    this.el = document.getElementById('status')
    this.provider = provider
    this.backoff = backoff
    this.unsent = 0
    this.readOnly = false
    this.closedReason = null
    this.saved = null
    this.onUpdate = (_update, origin) => {
      // Local edits made while not synced wait in the Y.Doc; the sync on reconnect sends them.
      if (origin !== provider && !(provider.wsconnected && provider.synced)) {
        this.unsent++
        this.render()
      }
    }
    ydoc.on('update', this.onUpdate)
    this.onSync = (synced) => {
      if (synced) {
        this.unsent = 0
        this.closedReason = null
        backoff.succeeded()
      }
      this.render()
    }
    provider.on('sync', this.onSync)
    this.onStatus = () => this.render()
    provider.on('status', this.onStatus)
    this.onClosed = ({ code, reason }) => {
      this.closedReason = code === 4003 ? 'no access to this document' : reason || `closed (${code})`
      this.render()
    }
    provider.on('closed', this.onClosed)
    backoff.onChange(() => this.render())
    this.tick = setInterval(() => this.render(), 500)
    this.render()
  }

  state () {
    const p = this.provider
    if (this.closedReason) return ['closed', `Disconnected: ${this.closedReason}`]
    if (!p.shouldConnect) return ['offline', 'Offline']
    if (p.wsconnected && p.synced) return ['connected', this.readOnly ? 'Connected (read-only)' : 'Connected']
    if (p.wsconnected || p.wsconnecting) {
      const wait = this.backoff.waitingUntil - Date.now()
      if (wait > 0) return ['reconnecting', `Reconnecting in ${Math.ceil(wait / 1000)} s`]
      return [this.backoff.attempt > 0 ? 'reconnecting' : 'connecting', this.backoff.attempt > 0 ? 'Reconnecting…' : 'Connecting…']
    }
    return ['reconnecting', 'Reconnecting…']
  }

  render () {
    const [state, label] = this.state()
    const unsent = this.unsent > 0 && state !== 'connected'
      ? ` — ${this.unsent} unsent edit${this.unsent === 1 ? '' : 's'}`
      : ''
    this.el.dataset.state = state
    this.el.dataset.unsent = String(this.unsent)
    // From the bridge's committed signal only (saved.js), never a local guess.
    const saved = this.saved && !this.readOnly ? (this.saved.saved ? 'saved' : 'saving') : null
    if (saved) this.el.dataset.saved = saved
    else delete this.el.dataset.saved
    this.el.textContent = label + unsent + (saved ? ` · ${saved === 'saved' ? 'Saved' : 'Saving…'}` : '')
  }

  destroy () {
    clearInterval(this.tick)
    this.el.textContent = ''
    this.el.dataset.state = 'idle'
    delete this.el.dataset.saved
  }
}
