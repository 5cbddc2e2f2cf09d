import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { Editor } from '@tiptap/core'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import StarterKit from '@tiptap/starter-kit'
import { IndexeddbPersistence } from 'y-indexeddb'
import * as Y from 'yjs'

import { colorFor, loadSession } from './session.js'
import { toggleHistory } from './history.js'
import { PeopleList } from './people.js'

// The Tiptap page: the document and a small side document of notes (`<name>/notes`), both over
// ONE socket to the bridge's Hocuspocus endpoint. Tiptap keeps its ProseMirror document in the
// Y.XmlFragment `FIELD` (collab.text(doc, 'default') shows it as XML); the Quill page
// (/q/<name>) keeps plain rich text in the Y.Text 'content', so a document belongs to one kind
// of editor.
export const FIELD = 'default'

/** A document over the shared socket, kept in IndexedDB too so edits survive reloads offline. */
function attach (socket, name, user) {
  const ydoc = new Y.Doc()
  // Offline across reloads: what the page typed is in IndexedDB before it is anywhere else, and
  // the provider's sync uploads it when the bridge is reachable again.
  const local = new IndexeddbPersistence(`pg_collab:${name}`, ydoc)
  const provider = new HocuspocusProvider({
    websocketProvider: socket,
    name,
    document: ydoc,
    // Empty: the bridge uses the HttpOnly cookie of the socket's upgrade (this page never sees
    // the token).
    token: ''
  })
  provider.attach()
  provider.setAwarenessField('user', { name: user.name, color: colorFor(user.name) })
  return { ydoc, local, provider }
}

/** Opens document `name` in `app` with Tiptap; returns a function that closes it. */
export function openTiptap (app, name, user) {
  app.innerHTML = `
    <section class="editor-view">
      <div class="editor-main">
        <div id="editor" class="tiptap-host"></div>
      </div>
      <aside class="side">
        <h2>Here now</h2>
        <ul id="people" class="people"></ul>
        <h2>Notes</h2>
        <div id="notes" class="tiptap-host notes"></div>
        <h2>History</h2>
        <button id="history-open" type="button">Show earlier versions</button>
        <div id="history" class="history" hidden></div>
        <p class="muted"><a id="classic" data-link>Classic editor (Quill over y-websocket)</a></p>
      </aside>
    </section>`
  document.getElementById('doc-title').textContent = name
  app.querySelector('#classic').href = `/q/${encodeURIComponent(name)}`
  const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/hocuspocus`
  const socket = new HocuspocusProviderWebsocket({ url: wsBase, delay: 500, minDelay: 500, maxDelay: 10000 })
  const main = attach(socket, name, user)
  const notes = attach(socket, `${name}/notes`, user)

  const editor = new Editor({
    element: app.querySelector('#editor'),
    extensions: [
      StarterKit.configure({ undoRedo: false }),
      Collaboration.configure({ document: main.ydoc, field: FIELD }),
      CollaborationCaret.configure({ provider: main.provider, user: { name: user.name, color: colorFor(user.name) } })
    ]
  })
  const notesEditor = new Editor({
    element: app.querySelector('#notes'),
    extensions: [
      StarterKit.configure({ undoRedo: false, heading: false }),
      Collaboration.configure({ document: notes.ydoc, field: FIELD })
    ]
  })

  const status = new SaveStatus(socket, [main.provider, notes.provider])
  const people = new PeopleList(app.querySelector('#people'), main.provider.awareness)

  // Refused or expired: ask for the session again (development mode renews the cookie), then
  // reconnect the socket so its upgrade carries the new cookie; no session: stop and say so.
  const onDenied = async ({ reason }) => {
    let current = null
    try {
      current = await loadSession()
    } catch {}
    if (!current || !/expired|invalid|required/.test(reason)) {
      status.closedReason = current ? reason : 'signed out: sign in again to continue'
      status.render()
      return
    }
    socket.disconnect()
    socket.connect()
  }
  main.provider.on('authenticationFailed', onDenied)
  main.provider.on('authenticated', ({ scope }) => {
    editor.setEditable(scope !== 'readonly')
    status.readOnly = scope === 'readonly'
    status.render()
  })

  toggleHistory(app, name, { preview: previewTiptap })

  const offline = () => {
    socket.disconnect()
    status.render()
  }
  const online = () => {
    socket.connect()
    status.render()
  }
  window.addEventListener('offline', offline)
  window.addEventListener('online', online)
  if (!navigator.onLine) offline()

  // Exposed for tests and curious developers.
  window.collab = { kind: 'tiptap', doc: main.ydoc, provider: main.provider, notes, socket, editor, notesEditor, status }

  return () => {
    window.removeEventListener('offline', offline)
    window.removeEventListener('online', online)
    status.destroy()
    people.destroy()
    if (closeHistory) closeHistory()
    editor.destroy()
    notesEditor.destroy()
    for (const d of [main, notes]) {
      d.provider.destroy()
      d.local.destroy()
      d.ydoc.destroy()
    }
    socket.destroy()
    document.getElementById('doc-title').textContent = ''
    delete window.collab
  }
}

/**
 * The header: connection, and "Saving…" / "Saved" from the bridge's sync status, which it sends
 * only once the transaction holding the edit has committed (never a local guess).
 * data-state: connecting | connected | offline | closed; data-saved: saving | saved.
 */
class SaveStatus {
  constructor (socket, providers) {
    this.el = document.getElementById('status')
    this.socket = socket
    this.providers = providers
    this.readOnly = false
    this.closedReason = null
    this.render = this.render.bind(this)
    socket.on('status', this.render)
    for (const p of providers) {
      p.on('unsyncedChanges', this.render)
      p.on('synced', this.render)
    }
    this.tick = setInterval(this.render, 500)
    this.render()
  }

  saving () {
    return this.providers.some((p) => p.hasUnsyncedChanges || !p.isSynced)
  }

  render () {
    const s = this.socket
    let state, label
    if (this.closedReason) [state, label] = ['closed', `Disconnected: ${this.closedReason}`]
    else if (!s.shouldConnect) [state, label] = ['offline', 'Offline']
    else if (s.status === 'connected' && this.providers.every((p) => p.isSynced)) [state, label] = ['connected', this.readOnly ? 'Connected (read-only)' : 'Connected']
    else [state, label] = ['connecting', 'Connecting…']
    const saving = !this.readOnly && this.saving()
    this.el.dataset.state = state
    this.el.dataset.saved = saving ? 'saving' : 'saved'
    this.el.textContent = `${label} · ${saving ? 'Saving…' : 'Saved'}`
  }

  destroy () {
    clearInterval(this.tick)
    this.socket.off('status', this.render)
    this.el.textContent = ''
    this.el.dataset.state = 'idle'
    delete this.el.dataset.saved
  }
}

/** The history panel's preview of a past version: a read-only Tiptap editor on that state. */
function previewTiptap (el, ydoc) {
  const ed = new Editor({
    element: el,
    editable: false,
    extensions: [StarterKit.configure({ undoRedo: false }), Collaboration.configure({ document: ydoc, field: FIELD })]
  })
  return () => ed.destroy()
}
