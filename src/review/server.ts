/**
 * The review server: node's own http, five routes (src/review/api.ts is the
 * contract), every request through the guards of ./security.ts.
 *
 *   GET  /                  the page (./page.ts), with this session's CSRF token
 *   GET  /api/state         ReviewState
 *   POST /api/decide        { itemId, label } → ReviewState (409: { error, state })
 *   POST /api/undo          { decisionId? }   → ReviewState
 *   GET  /api/image/:itemId the item's image bytes
 *
 * Errors are JSON `{ error }` with 400, 401, 403, 404, 405 (a GET to a POST
 * route, or the reverse), 409 or 413. Nothing the server sends is built from
 * the environment: no API key can reach a response.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ZodType } from 'zod';
import { SettingError } from '../errors.ts';
import { DecideBody, UndoBody, type ReviewState } from './api.ts';
import { renderPage } from './page.ts';
import {
  checkHost,
  checkStateChange,
  checkToken,
  hostPort,
  HttpError,
  makeGuard,
  randomToken,
  readJson,
  securityHeaders,
} from './security.ts';
import type { ReviewSession } from './session.ts';

export interface ReviewServerOptions {
  session: ReviewSession;
  /** Default 127.0.0.1. Anything but loopback needs `token`. */
  host?: string;
  /** 0: any free port. */
  port: number;
  /** The access token every request must carry; null: none (loopback only). */
  token: string | null;
  /** Where unexpected errors are reported (the CLI's `log`, which masks secrets); the response only says there was one. */
  log?: (line: string) => void;
}

export interface ReviewServer {
  /** The page's URL, `?token=` included when there is a token. */
  url: string;
  port: number;
  /** Stops accepting, ends open connections, resolves when the server is closed. */
  close(): Promise<void>;
}

interface Request {
  req: http.IncomingMessage;
  url: URL;
  match: RegExpExecArray;
  /** This response's CSP nonce (the page's inline script and style carry it). */
  nonce: string;
}

type Handler = (r: Request) => Promise<Reply> | Reply;

interface Reply {
  status: number;
  type: string;
  body: string | Buffer;
}

interface Route {
  method: 'GET' | 'POST';
  path: RegExp;
  handler: Handler;
}

const json = (value: unknown, status = 200): Reply => ({ status, type: 'application/json; charset=utf-8', body: JSON.stringify(value) });

/** Start serving `session`; resolves once listening. */
export async function startReviewServer(o: ReviewServerOptions): Promise<ReviewServer> {
  const host = o.host ?? '127.0.0.1';
  const { session } = o;
  const csrf = randomToken();
  const guard = makeGuard({ bindHost: host, token: o.token, csrf });
  const routes = makeRoutes(session, csrf);

  const server = http.createServer((req, res) => {
    const nonce = randomToken(16);
    const send = (r: Reply, extra: Record<string, string> = {}) => {
      if (res.headersSent) return;
      res.writeHead(r.status, { ...securityHeaders(nonce), ...extra, 'content-type': r.type, 'content-length': Buffer.byteLength(r.body) });
      res.end(r.body);
    };
    handle(req, nonce)
      .then((r) => send(r))
      .catch((e: unknown) => {
        if (e instanceof HttpError) return send(json({ error: e.message }, e.status), e.headers);
        if (e instanceof ConflictError) return send(json({ error: e.message, state: e.state }, 409));
        if (e instanceof SettingError) return send(json({ error: e.reason }, 400));
        o.log?.(`review server: ${req.method} ${req.url?.split('?')[0]}: ${e instanceof Error ? e.message : String(e)}`.split('\n')[0]);
        send(json({ error: 'internal error (the server printed it)' }, 500));
      });
  });

  async function handle(req: http.IncomingMessage, nonce: string): Promise<Reply> {
    checkHost(req, guard);
    const url = requestUrl(req);
    checkToken(req, url, guard);
    const found = routes.filter((r) => r.path.test(url.pathname));
    if (found.length === 0) throw new HttpError(404, `no such page: ${url.pathname}`);
    const route = found.find((r) => r.method === req.method);
    if (!route) {
      const allow = found.map((r) => r.method).join(', ');
      throw new HttpError(405, `${req.method} is not allowed here (use ${allow})`, { allow });
    }
    if (route.method === 'POST') checkStateChange(req, guard);
    return route.handler({ req, url, match: route.path.exec(url.pathname)!, nonce });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const url = `http://${hostPort(shown, port)}/${o.token ? `?token=${encodeURIComponent(o.token)}` : ''}`;
  return {
    url,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The request target as a URL; an absolute-form target with a host no URL has (`http://[/`) is the client's error (400), not ours (500). */
function requestUrl(req: http.IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://review.invalid');
  } catch {
    throw new HttpError(400, 'the request target is not a URL');
  }
}

/** A decision that contradicts a live one: 409 with the fresh state. */
class ConflictError extends Error {
  constructor(
    message: string,
    readonly state: ReviewState,
  ) {
    super(message);
  }
}

function makeRoutes(session: ReviewSession, csrf: string): Route[] {
  return [
    {
      method: 'GET',
      path: /^\/$/,
      handler: ({ nonce }) => ({ status: 200, type: 'text/html; charset=utf-8', body: page(session, csrf, nonce) }),
    },
    { method: 'GET', path: /^\/api\/state$/, handler: () => json(session.state()) },
    {
      method: 'POST',
      path: /^\/api\/decide$/,
      handler: async ({ req }) => {
        const body = parse(DecideBody, await readJson(req));
        if (!session.has(body.itemId)) throw new HttpError(404, `item ${body.itemId} is not in this review's queue`);
        const r = session.decide(body.itemId, body.label);
        if (r.status === 'conflict') throw new ConflictError(r.state.message ?? 'conflict', r.state);
        return json(r.state);
      },
    },
    {
      method: 'POST',
      path: /^\/api\/undo$/,
      handler: async ({ req }) => {
        const body = parse(UndoBody, await readJson(req));
        return json(session.undo(body.decisionId));
      },
    },
    { method: 'GET', path: /^\/api\/image\/(\d+)$/, handler: ({ match }) => image(session, Number(match[1])) },
  ];
}

/** A body through its zod schema (400 with the first problem). */
function parse<T>(schema: ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue.path.length ? `${issue.path.join('.')}: ` : '';
  throw new HttpError(400, `bad request body: ${where}${issue.message}`);
}

function page(session: ReviewSession, csrf: string, nonce: string): string {
  return renderPage({ csrf, nonce, title: `review: ${session.ctx.task.name}` });
}

/** The image of an item of the task, as stored; only image types are served as such. */
function image(session: ReviewSession, itemId: number): Reply {
  const i = session.ctx.row.get(itemId);
  const sha = i === undefined ? null : session.ctx.targets.items.items[i].image;
  if (!sha) throw new HttpError(404, `item ${itemId} has no image in this review`);
  const blob = session.store.blob(sha);
  const type = /^image\/(png|jpeg|gif|webp|bmp)$/.test(blob.mime) ? blob.mime : 'application/octet-stream';
  return { status: 200, type, body: blob.bytes };
}
