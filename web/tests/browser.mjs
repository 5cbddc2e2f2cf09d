// Browser end-to-end scenarios for the demo page, driven by bridge/tests/browser.rs.
// Real parts only: Debian's Chromium (playwright-core with executablePath, no download), the page
// built by Vite and served by a real collab-bridge in --dev mode, a real PostgreSQL.
//
// Usage: node browser.mjs <scenario> <bridge base url> <document> <artifacts dir>
// Protocol: one JSON line per step on stdout ({"step": name, ...}); where the Rust side must act
// (SQL, restarting the bridge) the script waits for one line on stdin.

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import readline from 'node:readline'

import { chromium } from 'playwright-core'

const [scenario, base, doc, artifacts, ...tokens] = process.argv.slice(2)
const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const step = (name, data = {}) => console.log(JSON.stringify({ step: name, ...data }))
const waitLine = async () => (await input.next()).value
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking']
})
const pageErrors = []

/** A person with their own browser context (own cookie), signed in, on the document in the
 * classic Quill page (y-websocket; /q/). */
async function person (name, docName = doc) {
  const ctx = await browser.newContext({ viewport: { width: 900, height: 620 } })
  const page = await ctx.newPage()
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`))
  await page.goto(`${base}/q/${encodeURIComponent(docName)}`)
  await page.fill('#signin-name', name)
  await page.click('#signin-form button[type=submit]')
  await page.waitForSelector('.ql-editor')
  await page.waitForSelector('#status[data-state=connected]', { timeout: 15000 })
  // Every connection state the page shows, in order, for assertions.
  await page.evaluate(() => {
    const el = document.getElementById('status')
    window.__states = [el.dataset.state]
    new MutationObserver(() => {
      const s = el.dataset.state
      if (window.__states[window.__states.length - 1] !== s) window.__states.push(s)
    }).observe(el, { attributes: true, attributeFilter: ['data-state'] })
    window.__closes = []
    window.collab.provider.on('connection-close', (e) => window.__closes.push(e ? e.code : null))
  })
  return { name, ctx, page }
}

const text = (p) => p.page.evaluate(() => window.collab.text.toString())

/** A person on the Tiptap page (/d/: Hocuspocus, one socket for the document and its notes). */
async function tiptapPerson (name, ctx = null) {
  ctx = ctx || await browser.newContext({ viewport: { width: 900, height: 620 } })
  const page = await ctx.newPage()
  const sockets = []
  page.on('websocket', (ws) => sockets.push(new URL(ws.url()).pathname))
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`))
  if (process.env.BROWSER_DEBUG) page.on('console', (m) => console.error(name, m.type(), m.text()))
  if (process.env.BROWSER_DEBUG) page.on('pageerror', (e) => console.error(name, 'pageerror', e.message))
  await page.goto(`${base}/d/${encodeURIComponent(doc)}`)
  await page.waitForSelector('#signin-form, #editor .tiptap')
  if (await page.$('#signin-form')) {
    await page.fill('#signin-name', name)
    await page.click('#signin-form button[type=submit]')
  }
  await page.waitForSelector('#editor .tiptap')
  await page.waitForSelector('#status[data-state=connected][data-saved=saved]', { timeout: 20000 })
  // Every saved state the header shows, in order, for assertions.
  await page.evaluate(() => {
    const el = document.getElementById('status')
    window.__saved = [el.dataset.saved]
    new MutationObserver(() => {
      const s = el.dataset.saved
      if (window.__saved[window.__saved.length - 1] !== s) window.__saved.push(s)
    }).observe(el, { attributes: true, attributeFilter: ['data-saved'] })
  })
  return { name, ctx, page, sockets }
}

const tiptapText = (p) => p.page.evaluate(() => window.collab.editor.getText())
const notesText = (p) => p.page.evaluate(() => window.collab.notesEditor.getText())
const savedSeen = (p) => p.page.evaluate(() => window.__saved)
async function typeTiptap (p, selector, s) {
  await p.page.click(`${selector} .tiptap`)
  await p.page.keyboard.press('End')
  await p.page.keyboard.type(s, { delay: 8 })
}
async function until (what, cond, timeout = 20000) {
  const deadline = Date.now() + timeout
  while (Date.now() < deadline) {
    if (await cond()) return
    await sleep(50)
  }
  throw new Error(`timed out waiting for ${what}`)
}
const state = (p) => p.page.evaluate(() => document.getElementById('status').dataset.state)
const statesSeen = (p) => p.page.evaluate(() => window.__states)
const placeCaret = (p, index) => p.page.evaluate((i) => window.collab.quill.setSelection(i, 0), index)
const connected = (p, timeout = 30000) =>
  p.page.waitForSelector('#status[data-state=connected]', { timeout })

/** Waits until every page holds the same text and `pred` holds for it; returns the text. */
async function converge (people, pred = () => true, timeout = 20000) {
  const deadline = Date.now() + timeout
  let texts = []
  while (Date.now() < deadline) {
    texts = await Promise.all(people.map(text))
    if (texts.every((t) => t === texts[0]) && pred(texts[0])) return texts[0]
    await sleep(50)
  }
  throw new Error(`pages did not converge: ${JSON.stringify(texts)}`)
}

async function typeIn (p, index, s) {
  await placeCaret(p, index)
  await p.page.keyboard.type(s, { delay: 8 })
}

/** Both pages side by side in one image, via a third page showing their screenshots. */
async function sideBySide (a, b, file) {
  const shots = await Promise.all([a, b].map((p) => p.page.screenshot()))
  const ctx = await browser.newContext({ viewport: { width: 1820, height: 660 } })
  const page = await ctx.newPage()
  const img = (buf, who) => `<figure><img src="data:image/png;base64,${buf.toString('base64')}"><figcaption>${who}</figcaption></figure>`
  await page.setContent(`<style>body{margin:0;display:flex;gap:20px;padding:10px;background:#d0d5dd;font:14px sans-serif}
    figure{margin:0} img{display:block;border:1px solid #98a2b3;width:890px}</style>
    ${img(shots[0], a.name)}${img(shots[1], b.name)}`)
  await page.waitForLoadState('load')
  mkdirSync(artifacts, { recursive: true })
  writeFileSync(join(artifacts, file), await page.screenshot({ fullPage: true }))
  await ctx.close()
}

const scenarios = {
  // Tiptap through the Hocuspocus provider: two people, the document and its notes on one
  // socket each, carets with names, who is here, "Saved".
  async tiptap () {
    const ada = await tiptapPerson('Ada')
    const grace = await tiptapPerson('Grace')
    await typeTiptap(ada, '#editor', 'Hello from Ada.')
    await typeTiptap(grace, '#notes', 'A note from Grace.')
    await until('convergence', async () => {
      const [a, g, an, gn] = [await tiptapText(ada), await tiptapText(grace), await notesText(ada), await notesText(grace)]
      return a === g && a.includes('Hello from Ada.') && an === gn && an.includes('A note from Grace.')
    })
    await typeTiptap(grace, '#editor', ' And Grace.')
    await ada.page.waitForFunction(() => document.querySelector('.collaboration-carets__label')?.textContent === 'Grace', null, { timeout: 10000 })
    await ada.page.waitForSelector('#people li[data-name="Grace"]', { timeout: 10000 })
    await Promise.all([ada, grace].map((p) => p.page.waitForSelector('#status[data-saved=saved]', { timeout: 20000 })))
    await sleep(300)
    await sideBySide(ada, grace, 'tiptap.png')
    step('tiptap', {
      text: await tiptapText(ada),
      notes: await notesText(ada),
      caret: await ada.page.textContent('.collaboration-carets__label'),
      people: await ada.page.$$eval('#people li', (els) => els.map((e) => e.dataset.name)),
      sockets: ada.sockets,
      label: await ada.page.textContent('#status')
    })
    // The history panel previews a version in a read-only Tiptap.
    await ada.page.click('#history-open')
    await ada.page.waitForSelector('#versions button.version', { timeout: 10000 })
    await ada.page.locator('#versions button.version').last().click()
    await ada.page.waitForFunction(() => (document.querySelector('#preview-custom .tiptap')?.textContent || '').length > 0, null, { timeout: 10000 })
    step('history', {
      preview: await ada.page.textContent('#preview-custom .tiptap'),
      editable: await ada.page.getAttribute('#preview-custom .tiptap', 'contenteditable')
    })
  },

  // PostgreSQL stops: a keystroke shows "Saving…" (never "Saved") until it is back and the edit
  // is committed. The Tiptap page (Hocuspocus sync status) and the Quill page (saved.js).
  async saving () {
    const ada = await tiptapPerson('Ada')
    const grace = await person('Grace', `${doc}-quill`)
    await typeTiptap(ada, '#editor', 'Before.')
    await typeIn(grace, 0, 'Before.')
    await ada.page.waitForSelector('#status[data-saved=saved]', { timeout: 20000 })
    await grace.page.waitForSelector('#status[data-saved=saved]', { timeout: 20000 })
    await grace.page.evaluate(() => {
      const el = document.getElementById('status')
      window.__saved = [el.dataset.saved]
      new MutationObserver(() => {
        const s = el.dataset.saved
        if (window.__saved[window.__saved.length - 1] !== s) window.__saved.push(s)
      }).observe(el, { attributes: true, attributeFilter: ['data-saved'] })
    })
    await ada.page.evaluate(() => { window.__saved = [document.getElementById('status').dataset.saved] })
    step('ready')
    await waitLine() // PostgreSQL is stopped
    await typeTiptap(ada, '#editor', ' While down.')
    await typeIn(grace, (await text(grace)).length, ' While down.')
    await Promise.all([ada, grace].map((p) => p.page.waitForSelector('#status[data-saved=saving]', { timeout: 10000 })))
    await sleep(3000)
    step('down', {
      ada: await savedSeen(ada),
      grace: await savedSeen(grace),
      ada_label: await ada.page.textContent('#status'),
      grace_label: await grace.page.textContent('#status')
    })
    await waitLine() // PostgreSQL runs again
    await Promise.all([ada, grace].map((p) => p.page.waitForSelector('#status[data-saved=saved]', { timeout: 60000 })))
    step('saved', { ada: await savedSeen(ada), grace: await savedSeen(grace), text: await tiptapText(ada), quill: await text(grace) })
  },

  // Offline across reloads: the bridge cannot be reached (WebSockets refused; the page itself
  // still loads), Ada types, reloads, sees her text (IndexedDB), and once the bridge is
  // reachable it is uploaded.
  async offline_reload () {
    const ctx = await browser.newContext({ viewport: { width: 900, height: 620 } })
    let blocked = false
    await ctx.routeWebSocket(/\/hocuspocus/, (ws) => {
      if (blocked) ws.close()
      else ws.connectToServer()
    })
    let ada = await tiptapPerson('Ada', ctx)
    await typeTiptap(ada, '#editor', 'Online.')
    await ada.page.waitForSelector('#status[data-saved=saved]', { timeout: 20000 })
    blocked = true
    await ctx.setOffline(true)
    await ada.page.waitForSelector('#status[data-state=offline]', { timeout: 10000 })
    await typeTiptap(ada, '#editor', ' Offline edit.')
    step('typed', { label: await ada.page.textContent('#status') })
    await waitLine()
    await ctx.setOffline(false)
    await ada.page.reload()
    await ada.page.waitForSelector('#editor .tiptap')
    await ada.page.waitForFunction(() => window.collab && window.collab.editor.getText().includes('Offline edit.'), null, { timeout: 10000 })
    step('reloaded', { text: await tiptapText(ada), label: await ada.page.textContent('#status') })
    await waitLine()
    blocked = false
    await ada.page.waitForSelector('#status[data-state=connected][data-saved=saved]', { timeout: 30000 })
    step('online', { text: await tiptapText(ada) })
    ada = null
  },

  // Two people type at the same position at the same moment; nothing may be lost.
  async concurrent_typing () {
    const ada = await person('Ada')
    const grace = await person('Grace')
    await typeIn(ada, 0, 'Hello world')
    await converge([ada, grace], (t) => t.startsWith('Hello world'))
    const a = ' ' + 'a'.repeat(40)
    const g = ' ' + 'g'.repeat(40)
    await Promise.all([placeCaret(ada, 5), placeCaret(grace, 5)])
    await Promise.all([ada.page.keyboard.type(a, { delay: 8 }), grace.page.keyboard.type(g, { delay: 8 })])
    const t = await converge([ada, grace], (t) => t.includes('a'.repeat(40)) && t.includes('g'.repeat(40)))
    step('converged', { text: t, cookie_visible: await ada.page.evaluate(() => document.cookie) })

    // Rich text through the toolbar: Ada makes a heading, Grace a bulleted list with bold text.
    await typeIn(ada, 0, 'Meeting notes\n')
    await placeCaret(ada, 3)
    await ada.page.click('.ql-toolbar .ql-header .ql-picker-label')
    await ada.page.click('.ql-toolbar .ql-header .ql-picker-item[data-value="1"]')
    await converge([ada, grace], (t) => t.startsWith('Meeting notes\n'))
    const end = (await text(grace)).length
    await typeIn(grace, end, '\n')
    await grace.page.click('.ql-toolbar button.ql-list[value="bullet"]')
    await grace.page.keyboard.type('first point ', { delay: 8 })
    await grace.page.keyboard.press('Control+b')
    await grace.page.keyboard.type('in bold', { delay: 8 })
    await grace.page.keyboard.press('Control+b')
    await converge([ada, grace], (t) => t.includes('first point in bold'))
    const html = await Promise.all([ada, grace].map((p) => p.page.$eval('.ql-editor', (e) => e.innerHTML)))
    const delta = await ada.page.evaluate(() => window.collab.text.toDelta())
    step('rich', {
      text: await text(ada),
      html,
      heading: html.map((h) => h.includes('<h1>Meeting notes</h1>')),
      list: html.map((h) => h.includes('<li data-list="bullet">')),
      bold: html.map((h) => h.includes('<strong>in bold</strong>')),
      delta
    })

    // Carets and names in the screenshot.
    await Promise.all([placeCaret(ada, 20), placeCaret(grace, 8)])
    await ada.page.waitForSelector('.ql-cursor-name', { state: 'attached', timeout: 5000 })
    await grace.page.waitForSelector('.ql-cursor-name', { state: 'attached', timeout: 5000 })
    await sleep(300)
    await sideBySide(ada, grace, 'two-pages.png')
    const cookies = await ada.ctx.cookies()
    step('cookies', { cookies: cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite })) })
  },

  // An edit made in SQL shows up in both pages within a second.
  async sql_insert () {
    const ada = await person('Ada')
    const grace = await person('Grace')
    await typeIn(ada, 0, 'Typed in the browser.')
    await converge([ada, grace], (t) => t.startsWith('Typed in the browser.'))
    step('ready')
    const marker = await waitLine() // the Rust side has committed collab.insert_text(marker)
    const started = Date.now()
    const seen = await Promise.all([ada, grace].map(async (p) => {
      await p.page.waitForFunction((m) => window.collab.text.toString().includes(m), marker, { timeout: 10000, polling: 'raf' })
      return Date.now() - started
    }))
    step('seen', { ms: Math.max(...seen), text: await converge([ada, grace]) })
  },

  // Page A sees page B's caret and name, and B in the list of who is here.
  async presence () {
    const ada = await person('Ada')
    const grace = await person('Grace')
    await typeIn(grace, 0, 'Grace was here')
    await converge([ada, grace], (t) => t.startsWith('Grace was here'))
    await placeCaret(grace, 5)
    const flag = await ada.page.waitForSelector('.ql-cursor .ql-cursor-name', { state: 'attached', timeout: 10000 })
    await ada.page.waitForFunction(() => document.querySelector('.ql-cursor-name')?.textContent === 'Grace', null, { timeout: 10000 })
    await ada.page.waitForSelector('#people li[data-name="Grace"]', { timeout: 10000 })
    const caretColor = await ada.page.evaluate(() => getComputedStyle(document.querySelector('.ql-cursor-caret')).backgroundColor)
    step('seen', {
      name: await flag.textContent(),
      people: await ada.page.$$eval('#people li', (els) => els.map((e) => e.dataset.name)),
      caret_color: caretColor
    })
    // Closing B's page removes B from A's list.
    await grace.ctx.close()
    await ada.page.waitForSelector('#people li[data-name="Grace"]', { state: 'detached', timeout: 15000 })
    step('gone', { people: await ada.page.$$eval('#people li', (els) => els.map((e) => e.dataset.name)) })
  },

  // A page goes offline, edits, comes back; both converge with both sides' edits.
  async offline () {
    const ada = await person('Ada')
    const grace = await person('Grace')
    await typeIn(ada, 0, 'Shared line.')
    await converge([ada, grace], (t) => t.startsWith('Shared line.'))
    await ada.ctx.setOffline(true)
    await ada.page.waitForSelector('#status[data-state=offline]', { timeout: 10000 })
    await typeIn(ada, 0, 'Offline edit. ')
    await typeIn(grace, (await text(grace)).length, ' Online edit.')
    const offlineLabel = await ada.page.textContent('#status')
    await sleep(500)
    const graceMeanwhile = await text(grace)
    await ada.ctx.setOffline(false)
    await connected(ada)
    const t = await converge([ada, grace], (t) => t.includes('Offline edit.') && t.includes('Online edit.'))
    step('converged', { text: t, offline_label: offlineLabel, grace_meanwhile: graceMeanwhile })
  },

  // The bridge restarts mid-session: pages show "reconnecting", come back, lose nothing.
  async restart () {
    const ada = await person('Ada')
    const grace = await person('Grace')
    await typeIn(ada, 0, 'Before the restart.')
    await converge([ada, grace], (t) => t.startsWith('Before the restart.'))
    step('ready')
    await waitLine() // the bridge was stopped (SIGTERM, close code 1012)
    await Promise.all([ada, grace].map((p) =>
      p.page.waitForSelector('#status[data-state=reconnecting]', { timeout: 10000 })))
    await typeIn(ada, 0, 'Typed while down. ')
    await typeIn(grace, (await text(grace)).length, ' Grace too.')
    const labels = await Promise.all([ada, grace].map((p) => p.page.textContent('#status')))
    step('typed', { labels })
    await waitLine() // the bridge runs again on the same address
    await Promise.all([connected(ada), connected(grace)])
    const t = await converge([ada, grace], (t) => t.includes('Typed while down.') && t.includes('Grace too.'))
    step('converged', { text: t, states: await statesSeen(ada) })
  },

  // The token ends during the connection: the bridge closes with 4001, the page (which renewed
  // its cookie meanwhile) comes straight back, and editing goes on.
  async token_expiry () {
    const ada = await person('Ada')
    const grace = await person('Grace')
    await typeIn(ada, 0, 'Before expiry.')
    await converge([ada, grace], (t) => t === 'Before expiry.')
    await ada.page.waitForFunction(() => window.__closes.includes(4001), null, { timeout: 30000 })
    await connected(ada)
    await typeIn(ada, (await text(ada)).length, ' After expiry.')
    const t = await converge([ada, grace], (t) => t.endsWith(' After expiry.'))
    step('renewed', {
      text: t,
      closes: await ada.page.evaluate(() => window.__closes),
      states: await statesSeen(ada)
    })
  },

  // The operator revokes Ada: the bridge closes her connection with 4001, the page asks for its
  // session, is told it has none, and stops instead of retrying into the same refusal.
  async revoked () {
    const ada = await person('Ada')
    await typeIn(ada, 0, 'Before revocation.')
    step('ready')
    await waitLine() // the Rust side wrote Ada into the revocation list
    await ada.page.waitForFunction(() => window.__closes.includes(4001), null, { timeout: 30000 })
    await ada.page.waitForSelector('#status[data-state=closed]', { timeout: 10000 })
    // Give a retry loop time to show itself: the page must stay closed, with one 4001.
    await new Promise((resolve) => setTimeout(resolve, 3000))
    step('stopped', {
      label: await ada.page.textContent('#status'),
      closes: await ada.page.evaluate(() => window.__closes),
      should_connect: await ada.page.evaluate(() => window.collab.provider.shouldConnect)
    })
  },

  // Without --dev the application sets the token cookie; a read-only token gives a read-only
  // editor that still follows the writer.
  async app_cookie () {
    const [writerToken, readerToken] = tokens
    const open = async (token) => {
      const ctx = await browser.newContext({ viewport: { width: 900, height: 620 } })
      await ctx.addCookies([{ name: 'collab_token', value: token, url: base, httpOnly: true, sameSite: 'Strict' }])
      const page = await ctx.newPage()
      page.on('pageerror', (e) => pageErrors.push(e.message))
      await page.goto(`${base}/q/${encodeURIComponent(doc)}`)
      await page.waitForSelector('#status[data-state=connected]', { timeout: 15000 })
      return { ctx, page }
    }
    const writer = await open(writerToken)
    const reader = await open(readerToken)
    await reader.page.waitForFunction(() => document.getElementById('status').textContent === 'Connected (read-only)', null, { timeout: 10000 })
    await typeIn(writer, 0, 'Written by the writer.')
    const t = await converge([writer, reader], (t) => t === 'Written by the writer.')
    // Typing into the read-only page changes nothing.
    await reader.page.click('.ql-editor')
    await reader.page.keyboard.type('nope', { delay: 8 })
    await sleep(500)
    step('seen', {
      text: t,
      reader_text: await text(reader),
      reader_editable: await reader.page.getAttribute('.ql-editor', 'contenteditable'),
      reader_status: await reader.page.textContent('#status'),
      signin_shown: (await writer.page.$('#signin-form')) !== null
    })
  },

  // #13: Ada restores an earlier version while Grace is typing: both pages converge on the
  // restored text plus what Grace typed after it; "who wrote this" names both.
  async restore () {
    const ada = await person('Ada')
    await typeIn(ada, 0, 'First draft.')
    const grace = await person('Grace')
    await converge([ada, grace], (t) => t === 'First draft.')
    step('ready')
    await waitLine() // the Rust side appended text through SQL, a version of its own
    await converge([ada, grace], (t) => t.endsWith('Reviewed.'))
    await ada.page.click('#history-open')
    await ada.page.waitForSelector('#versions button.restore >> nth=1', { timeout: 10000 })
    // Grace types at the start while Ada restores the oldest version.
    const typing = typeIn(grace, 0, 'abcdefgh')
    await ada.page.locator('#versions button.restore').last().click()
    await ada.page.waitForFunction(
      () => (document.getElementById('restore-status')?.textContent || '').startsWith('Restored'),
      null, { timeout: 10000 })
    await typing
    await converge([ada, grace], (t) => !t.includes('Reviewed.'))
    // Typing after the restore.
    await typeIn(grace, 0, 'XYZ ')
    const t = await converge([ada, grace], (t) => t.startsWith('XYZ '))
    await ada.page.click('#authors-toggle')
    await ada.page.waitForSelector('#authors .authored .by', { timeout: 10000 })
    const authors = await ada.page.$$eval('#authors .authored .by', (els) => els.map((e) => e.dataset.author))
    const versions = await ada.page.$$eval('#versions button.version', (els) => els.map((e) => e.textContent))
    step('restored', { text: t, authors, versions })
  },

  // The history panel previews an earlier version, read-only.
  async history () {
    const ada = await person('Ada')
    await typeIn(ada, 0, 'First draft.')
    await converge([ada], (t) => t.startsWith('First draft.'))
    step('ready')
    await waitLine() // the Rust side appended text through SQL, a version of its own
    await ada.page.waitForFunction(() => window.collab.text.toString().includes('Reviewed.'), null, { timeout: 10000 })
    await ada.page.click('#history-open')
    await ada.page.waitForSelector('#versions button.version >> nth=1', { timeout: 10000 })
    const versions = await ada.page.$$eval('#versions button.version', (els) => els.map((e) => e.textContent))
    // The oldest version: before the SQL edit.
    await ada.page.locator('#versions button.version').last().click()
    await ada.page.waitForFunction(() => {
      const t = document.querySelector('#preview-editor .ql-editor')?.textContent || ''
      return t.length > 0 && !t.startsWith('Loading')
    }, null, { timeout: 10000 })
    const preview = await ada.page.textContent('#preview-editor .ql-editor')
    const editable = await ada.page.getAttribute('#preview-editor .ql-editor', 'contenteditable')
    step('preview', { versions, preview, editable, live: await text(ada) })
  }
}

try {
  const run = scenarios[scenario]
  if (!run) throw new Error(`unknown scenario ${scenario}`)
  await run()
  step('done', { page_errors: pageErrors })
} catch (e) {
  step('failed', { error: String(e && e.stack ? e.stack : e), page_errors: pageErrors })
  process.exitCode = 1
} finally {
  await browser.close()
}
