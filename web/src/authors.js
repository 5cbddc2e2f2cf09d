// "Who wrote this": the current text of a document with each run coloured by its author
// (GET /api/docs/{doc}/authors, from collab.text_authors). A read-only view of its own, so it
// works whatever editor the page uses.

import { api } from './api.js'
import { colorFor } from './session.js'

/** Fills `box` with the authored text of `name` (field `content`) and a legend. */
export async function showAuthors (box, name) {
  box.innerHTML = '<p class="muted">Loading…</p>'
  try {
    const { spans } = await api.authors(name)
    box.innerHTML = ''
    const legend = document.createElement('p')
    legend.className = 'authors-legend'
    const text = document.createElement('div')
    text.className = 'authored'
    const seen = new Map()
    for (const s of spans) {
      const who = s.author ?? 'unknown'
      const span = document.createElement('span')
      span.className = 'by'
      span.dataset.author = who
      span.title = who
      span.textContent = s.text
      const color = s.author ? colorFor(s.author) : '#999'
      span.style.borderBottomColor = color
      span.style.backgroundColor = color + '22'
      text.append(span)
      seen.set(who, color)
    }
    for (const [who, color] of seen) {
      const tag = document.createElement('span')
      tag.className = 'author-tag'
      tag.style.backgroundColor = color
      tag.textContent = who
      legend.append(tag)
    }
    if (spans.length === 0) text.textContent = '(empty)'
    box.append(legend, text)
  } catch (e) {
    box.innerHTML = ''
    const p = document.createElement('p')
    p.className = 'error'
    p.textContent = `Authors unavailable: ${e.message}`
    box.append(p)
  }
}
