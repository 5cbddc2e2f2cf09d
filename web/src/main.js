import './style.css'

import { openEditor } from './editor.js'
import { openTiptap } from './tiptap.js'
import { renderHome } from './home.js'
import { editorFromPath, navigate, startRouter } from './router.js'
import { colorFor, loadSession, session, signIn, signOut } from './session.js'

const app = document.getElementById('app')
const me = document.getElementById('me')
let closeView = null

function renderMe () {
  me.innerHTML = ''
  const s = session()
  if (!s) return
  const name = document.createElement('span')
  name.className = 'me-name'
  name.style.color = colorFor(s.name)
  name.textContent = s.name
  me.append(name)
  if (s.dev) {
    const out = document.createElement('button')
    out.type = 'button'
    out.className = 'link'
    out.textContent = 'Sign out'
    out.addEventListener('click', async () => {
      await signOut()
      route(location.pathname)
    })
    me.append(out)
  }
}

function renderSignIn (path) {
  app.innerHTML = `
    <section class="signin">
      <h1>Sign in</h1>
      <p class="muted">Development mode: pick the name others will see next to your caret.
      The bridge keeps your short-lived token in an HttpOnly cookie; this page never sees it.</p>
      <form id="signin-form">
        <label for="signin-name">Your name</label>
        <div class="row">
          <input id="signin-name" required maxlength="64" autocomplete="nickname" />
          <button type="submit">Continue</button>
        </div>
      </form>
      <p id="signin-error" class="error" hidden></p>
    </section>`
  app.querySelector('#signin-form').addEventListener('submit', async (e) => {
    e.preventDefault()
    const err = app.querySelector('#signin-error')
    try {
      await signIn(app.querySelector('#signin-name').value.trim())
      route(path)
    } catch (ex) {
      err.hidden = false
      err.textContent = ex.status === 404
        ? 'This bridge is not in development mode: sign in through your application, which sets the token cookie.'
        : ex.message
    }
  })
  app.querySelector('#signin-name').focus()
}

async function route (path) {
  if (closeView) {
    closeView()
    closeView = null
  }
  let s = session()
  if (!s) {
    try {
      s = await loadSession()
    } catch (e) {
      app.textContent = `The bridge cannot be reached: ${e.message}`
      return
    }
  }
  renderMe()
  if (!s) return renderSignIn(path)
  const view = editorFromPath(path)
  if (view !== null) {
    document.title = `${view.doc} · pg_collab`
    closeView = view.kind === 'quill' ? openEditor(app, view.doc, s) : openTiptap(app, view.doc, s)
  } else {
    if (path !== '/') return navigate('/')
    document.title = 'pg_collab'
    renderHome(app)
  }
}

startRouter(route)
