import { api } from './api.js'
import { navigate } from './router.js'
import { mountSearch } from './search.js'

const ago = (ms) => {
  const s = Math.round((Date.now() - ms) / 1000)
  if (s < 60) return 'just now'
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`
  return new Date(ms).toLocaleDateString()
}

export async function renderHome (app) {
  app.innerHTML = `
    <section class="home">
      <h1>Documents</h1>
      <form id="open-doc" class="open-doc">
        <label for="doc-name">Open or create a document</label>
        <div class="row">
          <input id="doc-name" name="doc" required maxlength="255" placeholder="e.g. meeting-notes" autocomplete="off" />
          <button type="submit">Open</button>
        </div>
      </form>
      <p id="docs-error" class="error" hidden></p>
      <table class="docs"><thead><tr><th>Name</th><th>Last edit</th><th>Version</th><th></th></tr></thead>
      <tbody id="doc-list"><tr><td colspan="4" class="muted">Loading…</td></tr></tbody></table>
    </section>`
  mountSearch(app.querySelector('#open-doc').parentElement) // #13: the search box
  app.querySelector('#open-doc').addEventListener('submit', (e) => {
    e.preventDefault()
    const name = app.querySelector('#doc-name').value.trim()
    if (name) navigate(`/d/${encodeURIComponent(name)}`)
  })
  const body = app.querySelector('#doc-list')
  try {
    const { docs } = await api.docs()
    body.innerHTML = ''
    if (docs.length === 0) {
      body.innerHTML = '<tr><td colspan="4" class="muted">No documents yet: open one by name above.</td></tr>'
    }
    for (const d of docs) {
      const tr = document.createElement('tr')
      const link = document.createElement('a')
      link.href = `/d/${encodeURIComponent(d.name)}`
      link.dataset.link = ''
      link.textContent = d.name
      const cells = [link, ago(d.updated_at), `#${d.head_seq}`, d.access === 'read' ? 'read-only' : '']
      for (const c of cells) {
        const td = document.createElement('td')
        td.append(c)
        tr.append(td)
      }
      body.append(tr)
    }
  } catch (e) {
    body.innerHTML = ''
    const p = app.querySelector('#docs-error')
    p.hidden = false
    p.textContent = `Could not load the documents: ${e.message}`
  }
}
