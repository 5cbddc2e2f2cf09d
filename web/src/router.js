// Views: `/` (documents), `/d/<name>` (the Tiptap editor, Hocuspocus) and `/q/<name>` (the
// classic Quill editor, y-websocket). Links marked data-link stay in the page.

let onRoute = () => {}

export function startRouter (handler) {
  onRoute = handler
  window.addEventListener('popstate', () => onRoute(location.pathname))
  document.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a[data-link]')
    if (!a || e.metaKey || e.ctrlKey || e.shiftKey || a.origin !== location.origin) return
    e.preventDefault()
    navigate(a.pathname)
  })
  onRoute(location.pathname)
}

export function navigate (path) {
  if (path !== location.pathname) history.pushState(null, '', path)
  onRoute(path)
}

/** The document name of an editor path, or null. */
export function docFromPath (path) {
  if (!path.startsWith('/d/') || path.length <= 3) return null
  try {
    return decodeURIComponent(path.slice(3))
  } catch {
    return null
  }
}

/** The editor of a path: `{ kind: 'tiptap' | 'quill', doc }`, or null. */
export function editorFromPath (path) {
  if (path.startsWith('/q/')) {
    const doc = docFromPath('/d/' + path.slice(3))
    return doc === null ? null : { kind: 'quill', doc }
  }
  const doc = docFromPath(path)
  return doc === null ? null : { kind: 'tiptap', doc }
}
