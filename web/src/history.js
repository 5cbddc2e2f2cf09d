import Quill from 'quill'
import * as Y from 'yjs'

import { api } from './api.js'

const time = (ms) => new Date(ms).toLocaleString(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit'
})

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
        b.querySelector('.what').textContent = `#${v.seq_to} · ${n}${v.via === 'sql' ? ' · SQL' : ''}`
        b.addEventListener('click', () => preview(v))
        li.append(b)
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
