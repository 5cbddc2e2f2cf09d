// The bridge's HTTP API. The token travels only in the HttpOnly cookie the bridge sets: this code
// never sees it and nothing is kept in localStorage.

export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

async function call (method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} }
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  let res
  try {
    res = await fetch(path, init)
  } catch (e) {
    throw new ApiError(0, 'network', `the bridge cannot be reached (${e.message})`)
  }
  if (res.status === 204) return null
  const type = res.headers.get('content-type') || ''
  if (!res.ok) {
    let code = 'http_' + res.status
    let message = res.statusText
    if (type.includes('json')) {
      const err = (await res.json()).error || {}
      code = err.code || code
      message = err.message || message
    }
    throw new ApiError(res.status, code, message)
  }
  if (type.includes('json')) return res.json()
  return new Uint8Array(await res.arrayBuffer())
}

const docPath = (name) => `/api/docs/${encodeURIComponent(name)}`

export const api = {
  session: () => call('GET', '/api/session'),
  access: (name) => call('GET', `/api/session?doc=${encodeURIComponent(name)}`),
  login: (name) => call('POST', '/api/dev/login', { name }),
  logout: () => call('POST', '/api/dev/logout'),
  docs: () => call('GET', '/api/docs'),
  history: (name) => call('GET', `${docPath(name)}/history`),
  stateAt: (name, seq) => call('GET', `${docPath(name)}/state?at=${seq}`),
  // #13: restore a version, who wrote what, search.
  restore: (name, seq) => call('POST', `${docPath(name)}/restore?seq=${seq}`),
  authors: (name) => call('GET', `${docPath(name)}/authors`),
  search: (q) => call('GET', `/api/search?q=${encodeURIComponent(q)}`)
}
