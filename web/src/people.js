import { colorFor } from './session.js'

/** Who is here: every awareness state with a user, in their colour. */
export class PeopleList {
  constructor (el, awareness) {
    this.el = el
    this.awareness = awareness
    this.onChange = () => this.render()
    awareness.on('change', this.onChange)
    this.render()
  }

  render () {
    this.el.innerHTML = ''
    const me = this.awareness.clientID
    const entries = [...this.awareness.getStates().entries()]
      .filter(([, s]) => s && s.user && s.user.name)
      .sort(([a], [b]) => (a === me ? -1 : b === me ? 1 : 0))
    for (const [id, s] of entries) {
      const li = document.createElement('li')
      const dot = document.createElement('span')
      dot.className = 'dot'
      dot.style.background = s.user.color || colorFor(s.user.name)
      li.append(dot, document.createTextNode(s.user.name + (id === me ? ' (you)' : '')))
      li.dataset.name = s.user.name
      this.el.append(li)
    }
  }

  destroy () {
    this.awareness.off('change', this.onChange)
  }
}
