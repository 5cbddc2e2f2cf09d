// Full-text search over every document the user may read (GET /api/search, collab.search).
// Choosing a result opens the document and selects the first match in the page.

import { api } from './api.js'
import { navigate } from './router.js'

/** Appends a search box and its result list to `container`. */
export function mountSearch (container) {
  const form = document.createElement('form')
  form.id = 'search'
  form.className = 'open-doc'
  form.innerHTML = `
    <label for="search-q">Search every document</label>
    <div class="row">
      <input id="search-q" name="q" type="search" maxlength="1000" placeholder="words, &quot;a phrase&quot;, -not" autocomplete="off" />
      <button type="submit">Search</button>
    </div>
    <ol id="search-results" class="results"></ol>`
  const list = form.querySelector('#search-results')
  form.addEventListener('submit', async (e) => {
    e.preventDefault()
    const q = form.querySelector('#search-q').value.trim()
    list.innerHTML = ''
    if (!q) return
    try {
      const { results } = await api.search(q)
      if (results.length === 0) {
        list.innerHTML = '<li class="muted">Nothing found.</li>'
      }
      for (const r of results) {
        const li = document.createElement('li')
        const a = document.createElement('a')
        a.href = `/d/${encodeURIComponent(r.name)}`
        a.className = 'result'
        a.textContent = r.name
        a.addEventListener('click', (ev) => {
          ev.preventDefault()
          openAtMatch(r.name, firstMatch(r.snippet) || q)
        })
        const snippet = document.createElement('p')
        snippet.className = 'snippet'
        renderSnippet(snippet, r.snippet)
        li.append(a, snippet)
        list.append(li)
      }
    } catch (err) {
      const li = document.createElement('li')
      li.className = 'error'
      li.textContent = `Search failed: ${err.message}`
      list.append(li)
    }
  })
  container.append(form)
}

/** The snippet's text with its <mark> runs as real <mark> elements (never as HTML). */
function renderSnippet (el, snippet) {
  const parts = snippet.split(/<mark>|<\/mark>/)
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const m = document.createElement('mark')
      m.textContent = part
      el.append(m)
    } else {
      el.append(part)
    }
  })
}

function firstMatch (snippet) {
  const m = /<mark>(.*?)<\/mark>/.exec(snippet)
  return m ? m[1] : null
}

/**
 * Opens document `name` and selects the first occurrence of `word` once the editor shows it
 * (the browser's own find, so it works with any editor; tried for up to 5 s while it syncs).
 */
export function openAtMatch (name, word) {
  navigate(`/d/${encodeURIComponent(name)}`)
  const until = Date.now() + 5000
  const tick = () => {
    window.getSelection()?.removeAllRanges()
    if (typeof window.find === 'function' && window.find(word, false, false, true)) return
    if (Date.now() < until) setTimeout(tick, 150)
  }
  setTimeout(tick, 150)
}
