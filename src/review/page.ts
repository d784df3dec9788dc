/**
 * The review page: one HTML document with its CSS and JS inline, served at `/` by the review
 * server under a CSP that runs only the inline script and style carrying the page's nonce. It
 * fetches nothing but the review API (src/review/api.ts), so it works offline.
 *
 * Item data never enters this HTML: the script fetches it as JSON and writes it into the DOM with
 * textContent only, so an item's text (`</script>…`, `<img onerror=…>`) shows as characters and runs
 * nothing. The only values written here are the title, the CSRF token and the nonce, all escaped.
 */
import { esc } from '../report/svg.ts';

export interface PageOptions {
  /** The per-server-session anti-CSRF token, sent back as `X-CSRF-Token` on every POST. */
  csrf: string;
  /** The CSP nonce of this response's inline script and style. */
  nonce: string;
  /** The document title (e.g. the task's name). */
  title: string;
}

/** The review page's HTML. */
export function renderPage(o: PageOptions): string {
  const nonce = esc(o.nonce);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="${esc(o.csrf)}">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>${esc(o.title)}</title>
<style nonce="${nonce}">${CSS}</style>
</head>
<body>
<header id="top">
  <div class="row">
    <strong id="task">review</strong>
    <span id="who" class="muted"></span>
    <span id="progress" class="progress-text" aria-live="polite"
      title="agreement: the share of your labels equal to the label of the teachers' aggregated target"></span>
  </div>
  <div class="meter" aria-hidden="true"><span id="meter"></span></div>
</header>
<div id="message" role="status" aria-live="polite"></div>
<main id="main">
  <section id="item" aria-label="Item">
    <div id="meta" class="muted"></div>
    <div id="reason"></div>
    <div id="content"></div>
    <div id="dists"></div>
    <details id="guide" hidden><summary>Guidelines: what the teacher was told</summary><div id="guide-text"></div></details>
  </section>
  <section id="panel" aria-label="Labels">
    <div id="labels" role="group" aria-label="Labels"></div>
    <div id="actions">
      <button type="button" id="accept" class="action"><kbd>Enter</kbd> <span id="accept-text">accept</span></button>
      <button type="button" id="skip" class="action"><kbd>s</kbd> skip</button>
      <button type="button" id="undo" class="action"><kbd>u</kbd> undo</button>
    </div>
    <div id="typed" aria-live="polite"></div>
    <div id="undo-info" class="muted"></div>
    <p class="help short muted"><kbd>1</kbd>–<kbd>9</kbd> or first letters: a label · <kbd>Enter</kbd> suggestion ·
      <kbd>s</kbd> skip · <kbd>u</kbd> undo</p>
    <p class="help long muted">Keys: <kbd>1</kbd>–<kbd>9</kbd> a label · type a label's first letters (the underlined ones;
      <kbd>/</kbd> first for those shown with a /; <kbd>Enter</kbd> ends a label that begins another) ·
      <kbd>Enter</kbd> the suggestion · <kbd>s</kbd> skip · <kbd>u</kbd> undo · <kbd>Esc</kbd> clear typing</p>
  </section>
</main>
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
}

const CSS = `
* { box-sizing: border-box; }
html, body { height: 100%; margin: 0; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a; background: #f6f7f9;
  display: flex; flex-direction: column; height: 100vh; height: 100dvh; overflow: hidden; }
header { padding: 8px 16px 6px; background: #fff; border-bottom: 1px solid #dde1e6; flex: none; }
header .row { display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: baseline; }
.muted { color: #5b6570; font-size: 13px; }
.progress-text { margin-left: auto; font-variant-numeric: tabular-nums; font-size: 13px; }
.meter { height: 4px; background: #e8ebef; margin-top: 6px; border-radius: 2px; overflow: hidden; }
.meter span { display: block; height: 100%; width: 0; background: #2f6fb0; }
#message { flex: none; min-height: 0; padding: 0 16px; font-size: 14px; }
#message:not(:empty) { padding: 6px 16px; background: #eef4fb; border-bottom: 1px solid #cfdff0; }
#message.error { background: #fdecea; border-color: #f2c2bc; color: #8a1c10; }
main { flex: 1; min-height: 0; display: flex; gap: 0; }
#item { flex: 1; min-width: 0; overflow: auto; padding: 12px 16px 16px; }
#panel { flex: none; width: 440px; overflow: auto; padding: 12px 16px; background: #fff; border-left: 1px solid #dde1e6; }
#reason { margin: 4px 0 10px; padding: 6px 10px; background: #fff8e6; border-left: 3px solid #e0a800; font-size: 14px; }
#reason:empty { display: none; }
#guide { margin-top: 16px; font-size: 14px; }
#guide summary { cursor: pointer; color: #3b4650; }
#guide-text { margin-top: 6px; padding: 10px 12px; background: #fff; border: 1px solid #dde1e6; border-radius: 6px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
#content .text { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 12px 14px; font-size: 17px;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 50vh; overflow: auto; }
#content img { max-width: 100%; max-height: 45vh; image-rendering: pixelated; min-width: 112px; background: #fff;
  border: 1px solid #dde1e6; border-radius: 6px; }
#content .field { font-size: 12px; color: #5b6570; margin: 8px 0 2px; }
#content .text + .field { margin-top: 10px; }
#content .done { font-size: 18px; padding: 24px 0; }
#dists { margin-top: 14px; overflow-x: auto; }
table.dist { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
table.dist th { font-weight: 600; text-align: left; padding: 2px 8px 4px 0; white-space: nowrap; max-width: 12em;
  overflow: hidden; text-overflow: ellipsis; }
table.dist td { padding: 1px 8px 1px 0; white-space: nowrap; }
table.dist td.lab { max-width: 12em; overflow: hidden; text-overflow: ellipsis; }
table.dist tr.top td.lab { font-weight: 600; }
.cell { display: flex; align-items: center; gap: 4px; }
.bar { display: inline-block; width: 64px; height: 10px; background: #eceff3; border-radius: 2px; overflow: hidden; }
.bar span { display: block; height: 100%; background: #7a8fa6; }
.bar.target span { background: #2f6fb0; } .bar.student span { background: #d9822b; }
.p { width: 3.2em; text-align: right; color: #39424c; }
.hidden-rows { color: #5b6570; font-size: 12px; padding-top: 4px; }
#labels { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 6px; }
button { font: inherit; color: inherit; cursor: pointer; }
button:focus { outline: none; }
button:focus-visible, summary:focus-visible { outline: 3px solid #1a5fb4; outline-offset: 2px; }
button.label { display: flex; align-items: center; gap: 6px; min-height: 34px; padding: 3px 8px; text-align: left;
  background: #fff; border: 1px solid #c5ccd4; border-radius: 6px; position: relative; overflow: hidden; }
button.label:hover { border-color: #2f6fb0; background: #f2f7fc; }
button.label .name { flex: 1 1 auto; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
button.label .name u { text-decoration-thickness: 2px; text-underline-offset: 2px; }
button.label .tbar { position: absolute; left: 0; bottom: 0; height: 3px; background: #2f6fb0; width: 0; }
button.label.suggested { border: 2px solid #2f6fb0; background: #eef4fb; }
button.label.match { background: #fff3c4; border-color: #c69500; }
button.label.dim { opacity: 0.45; }
button.label.chosen { background: #dff0e0; border-color: #3c8d40; }
kbd { font: 12px/1 ui-monospace, SFMono-Regular, Menlo, monospace; background: #eef0f3; border: 1px solid #c5ccd4;
  border-bottom-width: 2px; border-radius: 4px; padding: 2px 5px; color: #1d232a; }
button.label kbd.slot { min-width: 1.6em; text-align: center; }
button.label kbd.none { visibility: hidden; }
.mark { font-size: 11px; color: #2f6fb0; white-space: nowrap; font-weight: 600; min-width: 0; overflow: hidden; flex: 0 4 auto;
  text-overflow: ellipsis; }
#actions { display: flex; gap: 6px; margin-top: 8px; flex-wrap: wrap; }
button.action { padding: 5px 10px; border: 1px solid #c5ccd4; background: #f6f7f9; border-radius: 6px; min-height: 32px; }
button.action:hover { background: #eef4fb; }
button.action:disabled { opacity: 0.5; cursor: default; }
#accept-text { display: inline-block; max-width: 12em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  vertical-align: bottom; }
#typed { min-height: 1.4em; margin-top: 6px; font-size: 13px; }
#typed b { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; background: #fff3c4; padding: 0 4px; }
.help { margin: 6px 0 0; line-height: 1.8; }
.help.short { display: none; }
body.busy #panel { cursor: progress; }
@media (max-width: 820px) {
  main { flex-direction: column; }
  #item { padding: 8px 10px; }
  #panel { width: auto; border-left: 0; border-top: 1px solid #dde1e6; padding: 8px 10px; flex: none; max-height: 62%; }
  #labels { grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); gap: 4px; }
  button.label { min-height: 30px; padding: 2px 6px; gap: 4px; font-size: 14px; }
  #content .text { font-size: 16px; max-height: none; }
  .help.long { display: none; }
  .bar { width: 36px; } .p { width: 2.8em; } table.dist td, table.dist th { padding-right: 5px; }
  .help.short { display: block; margin: 4px 0 0; line-height: 1.5; font-size: 12px; }
  #undo-info { display: none; }
  header { padding: 6px 10px 4px; }
}
`;

/**
 * The page's script, plain ES2020 written out as a string (no bundler; a function's source through
 * tsx would carry its helpers). It keeps the last ReviewState and renders every answer the API
 * returns, so the next item appears without another request.
 */
const SCRIPT = String.raw`
(() => {
  'use strict';
  const token = new URLSearchParams(location.search).get('token');
  const csrf = document.querySelector('meta[name="csrf-token"]').getAttribute('content');
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const pct = (p) => (typeof p === 'number' && isFinite(p) ? Math.round(p * 100) + '%' : '–');

  let state = null;
  let labels = [];
  let labelsKey = '';
  let buttons = [];
  let prefixes = [];
  // Typed label letters: null when not typing; '' after '/' (typing begun, nothing yet).
  let typed = null;
  let typedTimer = 0;
  /** An answer is on its way to the server. */
  let busy = false;
  const TYPE_PAUSE_MS = 1500;
  /** A label gets a row in the bars when some column gives it this much. */
  const MIN_ROW = 0.05;
  /** Enter's answer: the suggestion of the item on screen. */
  const SUGGESTION = {};

  function headers(body) {
    const h = { Accept: 'application/json' };
    if (token) h['X-Review-Token'] = token;
    if (body) {
      h['Content-Type'] = 'application/json';
      h['X-CSRF-Token'] = csrf;
    }
    return h;
  }

  async function call(method, url, body) {
    let res;
    try {
      res = await fetch(url, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (e) {
      throw Object.assign(new Error('the review server cannot be reached (is it still running?)'), { status: 0 });
    }
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (res.ok) return data;
    const msg = data && typeof data.error === 'string' ? data.error : 'HTTP ' + res.status;
    throw Object.assign(new Error(msg), { status: res.status, state: data && data.state ? data.state : null });
  }

  function message(text, kind) {
    const m = $('message');
    m.textContent = text || '';
    m.className = kind === 'error' ? 'error' : '';
  }

  /**
   * Sends one answer at a time. A key pressed while an answer is on its way is not sent: it was meant for the item
   * on screen, which already has its answer, and must not fall on the next item before the reviewer has seen it.
   */
  function send(what, action) {
    if (busy) {
      message('Still saving the last answer: ' + what + ' was not sent. Press it again.', 'error');
      return;
    }
    busy = true;
    document.body.classList.add('busy');
    action()
      .catch((e) => {
        if (e && e.state) render(e.state);
        message((e && e.status === 409 ? 'Conflict: ' : 'Error: ') + (e && e.message ? e.message : String(e)), 'error');
      })
      .finally(() => {
        busy = false;
        document.body.classList.remove('busy');
      });
  }

  /** Answers the item on screen: a label, null (skip), or SUGGESTION (its suggestion). */
  function decide(answer) {
    if (!state) return message('The page is still loading.');
    const item = state.item;
    if (!item) return message('Nothing to decide: the queue is done.');
    const label = answer === SUGGESTION ? item.suggestion : answer;
    if (label === null && answer === SUGGESTION) return message('This item has no suggestion: pick a label.');
    send(label === null ? 'the skip' : '“' + label + '”', async () => {
      const next = await call('POST', '/api/decide', { itemId: item.id, label });
      render(next);
      if (next.message) message(next.message);
      else message(label === null ? 'Skipped ' + itemName(item) + '.' : 'Stored “' + label + '” for ' + itemName(item) + '.');
    });
  }

  function undo() {
    if (!state) return message('The page is still loading.');
    if (!state.undo) return message('Nothing to undo.');
    // The decision the page says u takes back, even if another tab has decided something since.
    const { decisionId } = state.undo;
    const what = undoText(state.undo);
    send('the undo', async () => {
      const next = await call('POST', '/api/undo', { decisionId });
      render(next);
      message(next.message || 'Undone: ' + what + '.');
    });
  }

  function acceptSuggestion() {
    decide(SUGGESTION);
  }

  const itemName = (item) => 'item ' + item.id;
  const undoText = (u) => (u.label === null ? 'the skip' : '“' + u.label + '”') + ' of item ' + u.itemId;

  // ---------------------------------------------------------------- labels and their keys

  /** Each label's shortest unique prefix (lower case); a label that begins another needs all its letters and Enter. */
  function uniquePrefixes(ls) {
    const low = ls.map((l) => l.toLowerCase());
    return low.map((l, i) => {
      for (let k = 1; k <= l.length; k++) {
        const p = l.slice(0, k);
        if (!low.some((o, j) => j !== i && o.startsWith(p))) return { n: k, enter: false };
      }
      return { n: l.length, enter: true };
    });
  }

  function buildButtons() {
    const box = $('labels');
    box.replaceChildren();
    prefixes = uniquePrefixes(labels);
    buttons = labels.map((label, i) => {
      const b = el('button', 'label');
      b.type = 'button';
      b.title = label;
      b.dataset.label = label;
      if (i < 9) b.setAttribute('aria-keyshortcuts', String(i + 1));
      b.appendChild(el('kbd', i < 9 ? 'slot' : 'slot none', i < 9 ? String(i + 1) : '0'));
      const name = el('span', 'name');
      const p = prefixes[i];
      if (!startsTyping(label.charAt(0))) name.appendChild(el('span', 'muted', '/'));
      name.appendChild(el('u', null, label.slice(0, p.n)));
      name.appendChild(document.createTextNode(label.slice(p.n)));
      if (p.enter) name.appendChild(el('span', 'muted', ' +Enter'));
      b.appendChild(name);
      b.appendChild(el('span', 'mark'));
      b.appendChild(el('span', 'tbar'));
      b.addEventListener('click', (e) => {
        // A mouse click leaves no focus behind, so Enter afterwards means "the suggestion", not this button again.
        if (e.detail > 0) b.blur();
        clearTyped();
        decide(label);
      });
      box.appendChild(b);
      return b;
    });
  }

  /** Can this character begin a label's letters without "/" first? Not digits, s, u or "/", which are keys of their own. */
  function startsTyping(ch) {
    const c = ch.toLowerCase();
    return c !== 's' && c !== 'u' && /^[\p{L}_\-.]$/u.test(c);
  }

  function clearTyped() {
    typed = null;
    clearTimeout(typedTimer);
    $('typed').replaceChildren();
    for (const b of buttons) b.classList.remove('match', 'dim');
  }

  function showTyped(matches) {
    const t = $('typed');
    t.replaceChildren();
    t.appendChild(document.createTextNode('Typed '));
    t.appendChild(el('b', null, typed || '/'));
    t.appendChild(document.createTextNode(
      matches.length > 1 ? ': ' + matches.length + ' labels match, keep typing (Enter takes an exact match, Esc clears)' : '',
    ));
    buttons.forEach((b, i) => {
      b.classList.toggle('match', matches.includes(i));
      b.classList.toggle('dim', !matches.includes(i));
    });
  }

  function type(ch) {
    typed = (typed || '') + ch.toLowerCase();
    clearTimeout(typedTimer);
    typedTimer = setTimeout(clearTyped, TYPE_PAUSE_MS);
    const matches = labels.map((l, i) => i).filter((i) => labels[i].toLowerCase().startsWith(typed));
    if (matches.length === 0) {
      message('No label starts with “' + typed + '”.', 'error');
      clearTyped();
    } else if (matches.length === 1) {
      const label = labels[matches[0]];
      clearTyped();
      decide(label);
    } else showTyped(matches);
  }

  function enterTyped() {
    const exact = labels.find((l) => l.toLowerCase() === typed);
    clearTyped();
    if (exact !== undefined) decide(exact);
    else message('Typed letters match more than one label: type more, or Esc.', 'error');
  }

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const k = e.key;
    // A held key repeats: one answer per press, never a run of items labeled by a key left down.
    if (e.repeat && k !== 'Backspace') return e.preventDefault();
    // Enter or Space on a focused button (or the guidelines' summary) is its click (keyboard navigation with Tab).
    const clickable = e.target instanceof HTMLButtonElement || (e.target instanceof HTMLElement && e.target.tagName === 'SUMMARY');
    if ((k === 'Enter' || k === ' ') && clickable) return;
    if (k === 'Escape') return clearTyped();
    if (k === 'Backspace' && typed !== null) {
      e.preventDefault();
      typed = typed.slice(0, -1);
      if (typed === '') return clearTyped();
      return type('');
    }
    if (k === 'Enter') {
      e.preventDefault();
      if (typed) return enterTyped();
      clearTyped();
      return acceptSuggestion();
    }
    if (k.length !== 1) return;
    if (typed !== null) {
      e.preventDefault();
      return type(k);
    }
    const c = k.toLowerCase();
    if (c === '/') {
      e.preventDefault();
      typed = '';
      clearTimeout(typedTimer);
      typedTimer = setTimeout(clearTyped, TYPE_PAUSE_MS * 2);
      return showTyped(labels.map((l, i) => i));
    }
    if (c >= '1' && c <= '9') {
      e.preventDefault();
      const i = Number(c) - 1;
      if (i < labels.length) decide(labels[i]);
      else message('There is no label ' + c + '.', 'error');
      return;
    }
    if (c === 's' || c === 'u') {
      e.preventDefault();
      return c === 's' ? decide(null) : undo();
    }
    if (startsTyping(c)) {
      e.preventDefault();
      return type(c);
    }
  });

  $('accept').addEventListener('click', (e) => {
    if (e.detail > 0) e.currentTarget.blur();
    acceptSuggestion();
  });
  $('skip').addEventListener('click', (e) => {
    if (e.detail > 0) e.currentTarget.blur();
    decide(null);
  });
  $('undo').addEventListener('click', (e) => {
    if (e.detail > 0) e.currentTarget.blur();
    undo();
  });

  // ---------------------------------------------------------------- rendering

  function render(s) {
    state = s;
    const key = JSON.stringify(s.labels);
    if (key !== labelsKey) {
      labels = s.labels.slice();
      labelsKey = key;
      buildButtons();
    }
    document.title = 'review: ' + s.task + (s.item ? '' : ' (done)');
    $('task').textContent = s.task;
    $('who').textContent = 'reviewer ' + s.reviewer + ' · ' + s.policy;
    renderProgress(s.progress);
    renderItem(s.item);
    // The task's instructions, as text (never markup), folded until the reviewer opens them.
    $('guide').hidden = !s.guidelines;
    if ($('guide-text').textContent !== (s.guidelines || '')) $('guide-text').textContent = s.guidelines || '';
    const u = s.undo;
    $('undo').disabled = !u;
    $('undo-info').textContent = u ? 'u takes back ' + undoText(u) + '.' : '';
  }

  function renderProgress(p) {
    const agree = 'agreement with the teachers ' + (p.agreement === null ? '–' : pct(p.agreement));
    $('progress').textContent = p.done + ' done / ' + p.queue + ' in the queue · ' + p.skipped + ' skipped · ' + agree;
    $('meter').style.width = (p.queue > 0 ? Math.min(100, (100 * (p.done + p.skipped)) / p.queue) : 100) + '%';
  }

  function renderItem(item) {
    $('item').dataset.itemId = item ? String(item.id) : '';
    const content = $('content');
    content.replaceChildren();
    $('dists').replaceChildren();
    $('reason').textContent = item ? item.reason.text : '';
    const meta = $('meta');
    meta.textContent = '';
    for (const b of buttons) {
      b.classList.remove('suggested', 'chosen');
      b.querySelector('.mark').textContent = '';
      b.querySelector('.tbar').style.width = '0';
    }
    $('accept').disabled = !item || !item.suggestion;
    $('skip').disabled = !item;
    $('accept-text').textContent = item && item.suggestion ? 'accept “' + item.suggestion + '”' : 'accept';
    if (!item) {
      content.appendChild(el('div', 'done', 'The queue is done: every item of it has a decision. u takes back the last one.'));
      return;
    }
    meta.textContent = itemName(item) + ' · “' + item.extId + '” · ' + item.split + ' split · ' + item.reason.policy +
      ' score ' + item.reason.score.toFixed(3);
    if (item.image) {
      const img = el('img');
      img.alt = 'item ' + item.id;
      img.src = item.image + (token ? (item.image.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : '');
      content.appendChild(img);
    }
    // One field: its value alone; several: each under its name.
    for (const f of item.fields) {
      if (item.fields.length > 1) content.appendChild(el('div', 'field', f.name));
      content.appendChild(el('div', 'text', f.value));
    }
    renderDists(item);
    const target = item.target ? item.target.probs : null;
    buttons.forEach((b, i) => {
      if (target) b.querySelector('.tbar').style.width = Math.round(100 * (target[i] || 0)) + '%';
      const marks = [];
      if (item.suggestion === labels[i]) {
        b.classList.add('suggested');
        marks.push('Enter');
      }
      if (item.student && item.student.label === labels[i]) marks.push('student');
      b.querySelector('.mark').textContent = marks.join(' ');
    });
  }

  /** Each teacher's distribution, the aggregated target and the student's prediction, one column each. */
  function renderDists(item) {
    const cols = [];
    for (const t of item.teachers || []) cols.push({ name: t.name, probs: t.probs, label: t.label, cls: 'teacher' });
    if (item.target) cols.push({ name: 'target', probs: item.target.probs, label: item.target.label, cls: 'target' });
    if (item.student) {
      const name = item.student.outOfFold ? 'student (out of fold)' : 'student';
      cols.push({ name, probs: item.student.probs, label: item.student.label, cls: 'student' });
    }
    if (cols.length === 0) return;
    const table = el('table', 'dist');
    const head = el('tr');
    head.appendChild(el('th', null, 'label'));
    for (const c of cols) {
      const th = el('th', null, c.name);
      th.title = c.name + (c.label ? ': ' + c.label : ': no label for this item');
      head.appendChild(th);
    }
    table.appendChild(el('thead')).appendChild(head);
    const body = el('tbody');
    // Rows some column gives at least MIN_ROW or names as its label; the rest are counted, so 20 classes stay short.
    const shown = labels
      .map((l, i) => i)
      .filter((i) => cols.some((c) => (c.probs && (c.probs[i] || 0) >= MIN_ROW) || c.label === labels[i]));
    const top = item.target ? item.target.label : null;
    for (const i of shown) {
      const tr = el('tr', labels[i] === top ? 'top' : null);
      const lab = el('td', 'lab', labels[i]);
      lab.title = labels[i];
      tr.appendChild(lab);
      for (const c of cols) {
        const td = el('td');
        const cell = el('div', 'cell');
        if (!c.probs && c.label === null) {
          td.appendChild(el('span', 'p', '–'));
          tr.appendChild(td);
          continue;
        }
        const p = c.probs ? c.probs[i] || 0 : c.label === labels[i] ? 1 : 0;
        const bar = el('span', 'bar ' + c.cls);
        const fill = el('span');
        fill.style.width = Math.round(100 * p) + '%';
        bar.appendChild(fill);
        cell.appendChild(bar);
        cell.appendChild(el('span', 'p', pct(p)));
        td.appendChild(cell);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    table.appendChild(body);
    $('dists').appendChild(table);
    if (shown.length < labels.length) {
      $('dists').appendChild(el('div', 'hidden-rows', labels.length - shown.length + ' more labels, each under ' + pct(MIN_ROW) + ' everywhere'));
    }
  }

  call('GET', '/api/state')
    .then(render)
    .catch((e) => message('Error: ' + e.message, 'error'));
})();
`;
