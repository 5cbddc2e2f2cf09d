// Unit tests of the page's reconnection schedule (run by scripts/test.sh with `node --test`).
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Backoff } from '../src/backoff.js'

const draws = (b, n = 2000) => Array.from({ length: n }, () => b.nextDelay())

test('the first connection is immediate', () => {
  assert.equal(new Backoff().nextDelay(), 0)
})

test('retries back off exponentially with equal jitter up to the cap', () => {
  const b = new Backoff({ base: 500, cap: 15000 })
  const ceilings = []
  for (let attempt = 1; attempt <= 8; attempt++) {
    b.failed(1006)
    const d = draws(b)
    const ceiling = Math.min(15000, 500 * 2 ** (attempt - 1))
    ceilings.push(ceiling)
    assert.ok(Math.min(...d) >= ceiling / 2, `attempt ${attempt}: not below half the ceiling`)
    assert.ok(Math.max(...d) <= ceiling, `attempt ${attempt}: not above the ceiling`)
    // Spread: a population of pages does not come back at one instant.
    assert.ok(Math.max(...d) - Math.min(...d) > ceiling * 0.4, `attempt ${attempt}: spread`)
  }
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000])
})

test('a restarting bridge (1012) or "try later" (1013) spreads the first retry wider', () => {
  for (const code of [1012, 1013]) {
    const b = new Backoff({ base: 500, restartBase: 2000 })
    b.failed(code)
    const d = draws(b)
    assert.ok(Math.min(...d) >= 1000 && Math.max(...d) <= 2000)
  }
})

test('a synced connection starts the schedule again', () => {
  const b = new Backoff()
  b.failed(1006)
  b.failed(1006)
  b.succeeded()
  assert.equal(b.nextDelay(), 0)
})

test('coming back online retries soon, still jittered', () => {
  const b = new Backoff({ base: 500 })
  for (let i = 0; i < 6; i++) b.failed(1006)
  b.restart()
  const d = draws(b)
  assert.ok(Math.min(...d) >= 250 && Math.max(...d) <= 500)
})
