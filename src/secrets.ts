/**
 * Masking secrets in anything printed or stored. Kept apart from the teacher
 * client so that every CLI can use it without loading the openai SDK.
 */
/** Every key-looking string in a message, masked: what servers echo back ("Incorrect API key provided: sk-ab***yz") included. */
export function redactSecrets(message: string, secrets: Array<string | undefined>): string {
  let out = message;
  for (const s of secrets) if (s && s.length >= 4) out = out.split(s).join('[redacted]');
  return out.replace(/\b(sk-[A-Za-z0-9_*.-]{3,})/g, 'sk-[redacted]');
}
