/**
 * The review server's guards: the access token, the per-session anti-CSRF
 * token, the Host and Origin checks, and the request-body limit.
 *
 * The threat model: the page runs on a reviewer's machine next to a browser
 * that also visits other sites. Another site must not read items (DNS
 * rebinding: a name it controls resolving to 127.0.0.1) nor store decisions
 * (cross-site POSTs). On a loopback bind the Host header must name a loopback
 * address (its port is not checked: an SSH tunnel may forward another port,
 * and a rebinding attacker's request names the attacker's host, not a port),
 * which defeats rebinding without any token; on any
 * other bind the access token is mandatory, so a request from anywhere is
 * refused unless it carries the secret. State changes also need the CSRF token
 * (only a page served by this server knows it) and an Origin equal to the
 * origin the request was addressed to.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { SettingError } from '../errors.ts';
import { CSRF_HEADER, MAX_BODY_BYTES, TOKEN_HEADER } from './api.ts';

/** An HTTP failure with the status it is answered with and a one-line message. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** A random secret in hex (URL-safe, and never mistaken for an API key by the log's masking, which looks for `sk-`). */
export function randomToken(bytes = 16): string {
  return randomBytes(bytes).toString('hex');
}

/** Equality that takes the same time wherever the strings differ (compared as digests, so lengths leak nothing either). */
export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** 127.0.0.0/8, ::1 and `localhost`: the addresses only this machine reaches. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '::ffff:127.0.0.1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}

/** The name or address of a Host header, without its port (an IPv6 address keeps no brackets). */
export function hostName(hostHeader: string): string {
  const m = /^\[([^\]]*)\](?::\d*)?$/.exec(hostHeader);
  return m ? m[1] : hostHeader.replace(/:\d*$/, '');
}

/** `host:port` as it appears in a Host header or an origin (IPv6 in brackets). */
export function hostPort(host: string, port: number): string {
  return `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
}

export interface Guard {
  /** The access token every request must carry, or null (loopback without --token). */
  token: string | null;
  /** The per-server-session anti-CSRF token written into the page. */
  csrf: string;
  /** A loopback bind: the Host header must name a loopback address (`127.0.0.1`, `localhost`, `[::1]`); else any (the token guards). */
  loopbackHostOnly: boolean;
}

/** Anything but loopback is reachable from other machines: it needs an access token. */
export function checkBind(bindHost: string, token: string | null): void {
  if (!isLoopback(bindHost) && !token) throw new SettingError('token', null, `a server on ${bindHost} needs an access token`);
}

/** The guard of a server bound to `bindHost`. */
export function makeGuard(o: { bindHost: string; token: string | null; csrf?: string }): Guard {
  checkBind(o.bindHost, o.token);
  return { token: o.token, csrf: o.csrf ?? randomToken(), loopbackHostOnly: isLoopback(o.bindHost) };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The Host check (403): on a loopback bind, a name another site could rebind is refused for every request, reads too. */
export function checkHost(req: IncomingMessage, guard: Guard): void {
  const host = header(req, 'host')?.toLowerCase();
  if (!host) throw new HttpError(400, 'no Host header');
  if (guard.loopbackHostOnly && !isLoopback(hostName(host))) throw new HttpError(403, `Host ${host} is not this server`);
}

/** The access token (401): header X-Review-Token, or `?token=` for what the browser fetches by URL (the page, images). */
export function checkToken(req: IncomingMessage, url: URL, guard: Guard): void {
  if (guard.token === null) return;
  const given = header(req, TOKEN_HEADER) ?? url.searchParams.get('token');
  if (given === undefined || given === null || given === '') throw new HttpError(401, 'this server needs its access token');
  if (!tokensEqual(given, guard.token)) throw new HttpError(401, 'wrong access token');
}

/**
 * A state change (403 unless all hold): the Origin is the origin the request
 * was addressed to (http:// + its Host, which checkHost has vetted), and the
 * CSRF token is the one this server wrote into its page.
 */
export function checkStateChange(req: IncomingMessage, guard: Guard): void {
  const origin = header(req, 'origin');
  if (!origin) throw new HttpError(403, 'a state change needs an Origin header');
  const own = `http://${header(req, 'host')}`.toLowerCase();
  if (origin.toLowerCase() !== own) throw new HttpError(403, `Origin ${origin} is not this server (${own})`);
  const csrf = header(req, CSRF_HEADER);
  if (!csrf || !tokensEqual(csrf, guard.csrf)) throw new HttpError(403, 'missing or wrong CSRF token (reload the page)');
}

/** The request body, at most `limit` bytes (413 past it: the rest is not read). */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const declared = Number(header(req, 'content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(new HttpError(413, `request body over ${limit} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.off('data', onData);
        req.resume();
        reject(new HttpError(413, `request body over ${limit} bytes`));
        return;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks)));
    // The client went away mid-body (a closed tab): its error, not the server's, so nothing is logged as one.
    req.on('error', () => reject(new HttpError(400, 'the request body was cut off')));
  });
}

/** A JSON body (400 when it is not JSON). */
export async function readJson(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<unknown> {
  const type = header(req, 'content-type') ?? '';
  if (!/^application\/json\b/i.test(type)) throw new HttpError(400, 'the body must be JSON (Content-Type: application/json)');
  const raw = await readBody(req, limit);
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch {
    throw new HttpError(400, 'the body is not valid JSON');
  }
}

/**
 * The Content-Security-Policy of every response: nothing from anywhere else;
 * the page's own inline script and style only by this response's nonce;
 * images from this server or data: URLs; fetches to this server.
 */
export function contentSecurityPolicy(nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src 'nonce-${nonce}'`,
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** The headers every response carries. */
export function securityHeaders(nonce: string): Record<string, string> {
  return {
    'content-security-policy': contentSecurityPolicy(nonce),
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
    'x-frame-options': 'DENY',
    'cross-origin-resource-policy': 'same-origin',
  };
}
