/**
 * PLACEHOLDER until branch p10-page is merged (p10-page owns this file): a page that only shows the state as text.
 */
export interface PageOptions {
  csrf: string;
  nonce: string;
  title: string;
}

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function renderPage(o: PageOptions): string {
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="csrf-token" content="${escape(o.csrf)}">
<title>${escape(o.title)}</title></head><body><pre id="state"></pre>
<script nonce="${escape(o.nonce)}">
const token = new URLSearchParams(location.search).get('token');
fetch('/api/state', { headers: token ? { 'X-Review-Token': token } : {} })
  .then((r) => r.json()).then((s) => { document.getElementById('state').textContent = JSON.stringify(s, null, 2); });
</script></body></html>`;
}
