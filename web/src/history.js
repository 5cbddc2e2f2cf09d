import Quill from 'quill'
import * as Y from 'yjs'

import { api } from './api.js'
import { showAuthors } from './authors.js'

const time = (ms) => new Date(ms).toLocaleString(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit'
})

/** Makes the page's "Show earlier versions" button (#history-open) open and close the history
 * panel in #history. */
export function toggleHistory (app, name, options = {}) {
  const box = app.querySelector('#history')
  const button = app.querySelector('#history-open')
  let close = null
  button.addEventListener('click', () => {
    if (close) {
      close()
      close = null
      box.hidden = true
      button.textContent = 'Show earlier versions'
      return
    }
    box.hidden = false
    button.textContent = 'Hide earlier versions'
    close = openHistory(box, name, options)
  })
}

/**
 * The history panel: versions of the document's log (bursts of edits) from
 * `GET /api/docs/{doc}/history`; choosing one previews, read-only, the document as it was after
 * that version (`collab.state_at` through `GET /api/docs/{doc}/state?at=SEQ`).
 * `options.preview(el, ydoc)`, when given, renders a version into `el` (returning a function
 * that removes it) instead of the read-only Quill of the Y.Text 'content' (the Tiptap page
 * keeps its document in an XML fragment).
 * Returns a function that closes the panel.
 */
export function openHistory (box, name, options = {}) {
  box.innerHTML = `
    <p class="muted" id="history-status">Loading…</p>
    <button type="button" id="authors-toggle">Show who wrote what</button>
    <div id="authors" class="authors" hidden></div>
    <p id="restore-status" class="muted" role="status"></p>
    <ol id="versions" class="versions"></ol>
    <dialog id="preview" class="preview">
      <header><strong id="preview-title"></strong><button type="button" id="preview-close">Close</button></header>
      <div id="preview-editor"></div>
      <div id="preview-custom" class="tiptap-host" hidden></div>
    </dialog>`
  const list = box.querySelector('#versions')
  const statusEl = box.querySelector('#history-status')
  const dialog = box.querySelector('#preview')
  const quill = new Quill(box.querySelector('#preview-editor'), {
    theme: 'snow', readOnly: true, modules: { toolbar: false }
  })
  box.querySelector('#preview-close').addEventListener('click', () => dialog.close())
  // #13: who wrote what, as a read-only coloured view (works whatever the editor is).
  const authorsBox = box.querySelector('#authors')
  const authorsToggle = box.querySelector('#authors-toggle')
  authorsToggle.addEventListener('click', () => {
    authorsBox.hidden = !authorsBox.hidden
    authorsToggle.textContent = authorsBox.hidden ? 'Show who wrote what' : 'Hide who wrote what'
    if (!authorsBox.hidden) showAuthors(authorsBox, name)
  })
  // #13: restoring writes one new update that every open page merges (collab.restore).
  const restoreStatus = box.querySelector('#restore-status')
  async function restore (v) {
    restoreStatus.textContent = `Restoring #${v.seq_to}…`
    try {
      const r = await api.restore(name, v.seq_to)
      restoreStatus.textContent = `Restored version #${v.seq_to} as #${r.head_seq}.`
      load()
    } catch (e) {
      restoreStatus.textContent = `Could not restore: ${e.message}`
    }
  }

  const custom = box.querySelector('#preview-custom')
  let removeCustom = null
  if (options.preview) {
    box.querySelector('#preview-editor').hidden = true
    box.querySelector('.ql-toolbar')?.remove()
    custom.hidden = false
  }

  let stopped = false
  async function preview (v) {
    box.querySelector("#preview-title").textContent = `${name} at #${v.seq_to} (${time(v.last_at)}), read-only`
    quill.setText('Loading…')
    dialog.showModal()
    try {
      const state = await api.stateAt(name, v.seq_to)
      const doc = new Y.Doc()
      Y.applyUpdate(doc, state)
      if (options.preview) {
        if (removeCustom) removeCustom()
        removeCustom = options.preview(custom, doc)
        return
      }
      quill.setContents(doc.getText('content').toDelta())
      doc.destroy()
    } catch (e) {
      quill.setText(`This version cannot be shown: ${e.message}`)
    }
  }

  async function load () {
    try {
      const h = await api.history(name)
      if (stopped) return
      list.innerHTML = ''
      statusEl.textContent = h.versions.length === 0
        ? 'No edits yet.'
        : `${h.head_seq} updates in the log${h.history_from > 0 ? `, history kept from #${h.history_from}` : ''}.`
      for (const v of h.versions) {
        const li = document.createElement('li')
        const b = document.createElement('button')
        b.type = 'button'
        b.className = 'version'
        b.dataset.seq = String(v.seq_to)
        const n = v.updates === 1 ? '1 edit' : `${v.updates} edits`
        b.innerHTML = '<span class="when"></span><span class="what"></span>'
        b.querySelector('.when').textContent = time(v.last_at)
        const by = v.authors && v.authors.length ? ` · ${v.authors.join(', ')}` : ''
        b.querySelector('.what').textContent = `#${v.seq_to} · ${n}${v.via === 'sql' ? ' · SQL' : ''}${by}`
        b.addEventListener('click', () => preview(v))
        const r = document.createElement('button')
        r.type = 'button'
        r.className = 'restore'
        r.dataset.seq = String(v.seq_to)
        r.textContent = 'Restore this version'
        r.addEventListener('click', () => restore(v))
        li.append(b, r)
        list.append(li)
      }
    } catch (e) {
      statusEl.textContent = `History unavailable: ${e.message}`
    }
  }
  load()
  const refresh = setInterval(load, 10000)
  return () => {
    stopped = true
    clearInterval(refresh)
    if (removeCustom) removeCustom()
    if (dialog.open) dialog.close()
    box.innerHTML = ''
  }
}
