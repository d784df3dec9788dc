import { Transform } from 'node:stream';
import { InputError } from '../errors.ts';

/**
 * Passes the bytes of a text file through unchanged, and fails with the file and
 * line of the first byte sequence that is not UTF-8. Without it, Node's decoder
 * turns bad bytes into U+FFFD silently and the teacher is paid to label mojibake.
 */
export function checkedUtf8(path: string): Transform {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let line = 1;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      try {
        decoder.decode(chunk, { stream: true });
      } catch {
        done(new InputError(path, line + firstBadLine(chunk), 'invalid UTF-8 (save the file as UTF-8)'));
        return;
      }
      line += countNewlines(chunk);
      done(null, chunk);
    },
    flush(done) {
      try {
        decoder.decode();
        done();
      } catch {
        done(new InputError(path, line, 'invalid UTF-8 at the end of the file (a truncated character)'));
      }
    },
  });
}

function countNewlines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) n++;
  return n;
}

/** Lines into the chunk of its first undecodable line (0 when the bad sequence straddles the previous chunk). */
function firstBadLine(chunk: Buffer): number {
  const strict = new TextDecoder('utf-8', { fatal: true });
  let start = 0;
  for (let k = 0; start <= chunk.length; k++) {
    const end = chunk.indexOf(10, start);
    const piece = chunk.subarray(start, end < 0 ? chunk.length : end);
    try {
      // The first piece may begin inside a character split by the chunk boundary: only a bad piece after it counts.
      strict.decode(piece);
    } catch {
      if (k > 0 || !startsMidCharacter(piece)) return k;
    }
    if (end < 0) break;
    start = end + 1;
  }
  return 0;
}

const startsMidCharacter = (b: Buffer) => b.length > 0 && (b[0] & 0xc0) === 0x80;
