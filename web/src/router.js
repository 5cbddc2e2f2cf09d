// Two views: `/` (documents) and `/d/<name>` (the editor). Links marked data-link stay in the page.

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
