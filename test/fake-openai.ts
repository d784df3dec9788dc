/**
 * The local OpenAI-compatible server the tests and bench-label talk to. It lives in src/sim/ because
 * `npm run sim-teacher` (scripts/sim-teacher.ts) serves the same API to users; the tests keep importing it from here.
 */
export * from '../src/sim/openai-server.ts';
