import { api, ApiError } from './api.js'

// The signed-in user. The bridge keeps the token in an HttpOnly, SameSite=Strict cookie; the page
// only learns the name and the expiry, and signs in again (development mode) well before the
// token ends, so live connections that close at expiry come back with a fresh cookie.

let current = null
let timer = null

export async function loadSession () {
  try {
    current = await api.session()
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) current = null
    else throw e
  }
  scheduleRefresh()
  return current
}

export async function signIn (name) {
  await api.login(name)
  return loadSession()
}

export async function signOut () {
  await api.logout()
  current = null
  clearTimeout(timer)
}

export const session = () => current

function scheduleRefresh () {
  clearTimeout(timer)
  if (!current || !current.dev) return
  const left = current.expires_at * 1000 - Date.now()
  // A third of the remaining life, at least 1 s; a failed refresh is retried in 30 s.
  timer = setTimeout(async () => {
    try {
      await signIn(current.name)
    } catch {
      timer = setTimeout(scheduleRefresh, 30000)
    }
  }, Math.max(1000, left / 3))
}

// Distinct, readable on white; a name always gets the same one.
const PALETTE = ['#d7263d', '#2e86de', '#1b998b', '#f46036', '#8e44ad', '#e84393', '#0a9396',
  '#ca6702', '#3a0ca3', '#2b9348']

/** A stable colour for a name. */
export function colorFor (name) {
  let h = 2166136261
  for (const ch of name) h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0
  return PALETTE[h % PALETTE.length]
}
