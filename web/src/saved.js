// "Saved" for y-websocket clients (a small helper; the Quill page uses it). A client that
// connects with the query parameter saved=1 (WebsocketProvider option `params: { saved: '1' }`)
// is told by collab-bridge when each of its update messages has been committed:
// message type 8, then varUint kind (0: an update message, 1: a sync step 2, 2: refused,
// read-only), then varUint seq (the committed log sequence; 0 when the message changed
// nothing). Clients that did not ask never receive this message type.
import * as decoding from 'lib0/decoding'

export const MESSAGE_SAVED = 8

/**
 * Follows what of `ydoc`'s local edits is committed. `onChange({ saved, refused, seq })` is
 * called whenever that changes; returns a function that stops following.
 *
 * Edits sent while connected go out as update messages, each acknowledged once committed (kind
 * 0). Edits made while disconnected, and those whose acknowledgement a dropped connection never
 * delivered, travel in the sync step 2 the provider sends on the next connect, acknowledged as
 * kind 1. So: saved = no edit awaiting a step 2, and every update message sent on this
 * connection acknowledged.
 */
export function trackSaved (provider, ydoc, onChange) {
  let sent = 0
  let acked = 0
  let owedStep2 = false
  let refused = false
  let seq = 0
  const report = () => onChange({ saved: !owedStep2 && sent === acked && !refused, refused, seq })
  provider.messageHandlers[MESSAGE_SAVED] = (_encoder, decoder) => {
    const kind = decoding.readVarUint(decoder)
    const at = decoding.readVarUint(decoder)
    if (kind === 0) acked = Math.min(acked + 1, sent)
    else if (kind === 1) owedStep2 = false
    else refused = true
    seq = Math.max(seq, at)
    report()
  }
  const onUpdate = (_update, origin) => {
    if (origin === provider) return
    if (provider.wsconnected) sent++
    else owedStep2 = true
    report()
  }
  const onStatus = ({ status }) => {
    if (status !== 'connected') {
      // Unacknowledged update messages ride in the next connection's sync step 2.
      if (sent > acked) owedStep2 = true
      sent = 0
      acked = 0
    }
    report()
  }
  ydoc.on('update', onUpdate)
  provider.on('status', onStatus)
  report()
  return () => {
    ydoc.off('update', onUpdate)
    provider.off('status', onStatus)
    delete provider.messageHandlers[MESSAGE_SAVED]
  }
}
