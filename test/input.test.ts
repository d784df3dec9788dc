import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { errorLine } from '../src/cli/run.ts';
import { InputError } from '../src/errors.ts';
import { canonicalJson } from '../src/input/canonical.ts';
import { readItems } from '../src/input/read.ts';
import { DEFAULT_FIELDS, type FieldOptions, type ItemInput } from '../src/input/types.ts';
import type { Task } from '../src/task/task.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'distillery-input-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let fileCounter = 0;
/** A fresh file in its own folder, so image paths relative to it never collide between tests. */
function write(name: string, content: string | Buffer): string {
  const dir = path.join(tmp, `case${++fileCounter}`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  fs.writeFileSync(file, content);
  return file;
}

function makeTask(over: Partial<Task> = {}): Task {
  return {
    name: 'sentiment',
    labels: ['positive', 'negative'],
    input: 'text',
    path: 'prompts/sentiment.md',
    template: 'Classify: {{text}}',
    version: 'v1',
    ...over,
  };
}

const imageTask = makeTask({ name: 'pets', labels: ['cat', 'dog'], input: 'image', template: 'What animal is this?' });

async function collect(file: string, task: Task = makeTask(), opts: FieldOptions = DEFAULT_FIELDS): Promise<ItemInput[]> {
  const items: ItemInput[] = [];
  for await (const item of readItems(file, task, opts)) items.push(item);
  return items;
}

async function rejectsWith(promise: Promise<unknown>, message: string | RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof InputError, `expected an InputError, got ${e}`);
    if (typeof message === 'string') assert.equal(e.message, message);
    else assert.match(e.message, message);
    return true;
  });
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function pngBytes(width: number, height: number, seed = 0): Buffer {
  const png = new PNG({ width, height });
  for (let i = 0; i < png.data.length; i++) png.data[i] = (i * 7 + seed) & 0xff;
  return PNG.sync.write(png);
}

function jpegBytes(width: number, height: number): Buffer {
  const data = Buffer.alloc(width * height * 4, 0x80);
  return jpeg.encode({ width, height, data }, 80).data;
}

describe('canonicalJson', () => {
  test('sorts keys recursively and drops whitespace', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: 'x' } }), '{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}');
  });

  test('sorts integer-like keys as strings and follows JSON.stringify otherwise', () => {
    assert.equal(canonicalJson({ 10: 'a', 2: 'b', x: undefined }), '{"10":"a","2":"b"}');
    assert.equal(canonicalJson([undefined, NaN, 'é']), '[null,null,"é"]');
    assert.equal(canonicalJson('s'), '"s"');
  });
});

describe('readItems: text files', () => {
  test('JSONL: fields, gold, split, lines; blank lines skipped but counted', async () => {
    const file = write(
      'a.jsonl',
      [
        JSON.stringify({ id: 'r1', text: 'great film', label: 'positive', split: 'train', lang: 'en' }),
        '',
        JSON.stringify({ id: 7, text: 'awful', label: 'negative' }),
        '   ',
        JSON.stringify({ text: 'meh' }),
      ].join('\n') + '\n',
    );
    const items = await collect(file);
    assert.equal(items.length, 3);
    assert.deepEqual(items[0].fields, { text: 'great film', lang: 'en' });
    assert.equal(items[0].id, 'r1');
    assert.equal(items[0].gold, 'positive');
    assert.equal(items[0].split, 'train');
    assert.deepEqual(items[0].source, { file, line: 1 });
    assert.equal(items[1].id, '7');
    assert.deepEqual(items[1].source, { file, line: 3 });
    assert.equal(items[2].gold, undefined);
    assert.ok(!('gold' in items[2]));
    assert.equal(items[2].id, '3', 'default id is the record number, not the line number');
    assert.deepEqual(items[2].source, { file, line: 5 });
    assert.match(items[2].hash, /^[0-9a-f]{64}$/);
    assert.ok(items[2].split === 'train' || items[2].split === 'test');
  });

  test('CSV: quoted multi-line field keeps later line numbers right', async () => {
    const file = write(
      'a.csv',
      'id,text,label\n1,"line one\nline two\nline three",positive\n2,"plain, with comma",negative\n\n3,"say ""hi""",\n',
    );
    const items = await collect(file);
    assert.deepEqual(
      items.map((i) => [i.id, i.source.line, i.fields.text, i.gold]),
      [
        ['1', 2, 'line one\nline two\nline three', 'positive'],
        ['2', 5, 'plain, with comma', 'negative'],
        ['3', 7, 'say "hi"', undefined],
      ],
    );
  });

  test('CSV: CRLF line endings, BOM and a quoted CRLF field', async () => {
    const file = write('crlf.csv', '\uFEFFid,text\r\na,"one\r\ntwo"\r\nb,three\r\nc,"x\r\ny\r\nz"\r\nd,four\r\n');
    const items = await collect(file);
    assert.deepEqual(
      items.map((i) => [i.id, i.source.line]),
      [
        ['a', 2],
        ['b', 4],
        ['c', 5],
        ['d', 8],
      ],
    );
    assert.equal(items[0].fields.text, 'one\r\ntwo');
  });

  test('CSV: blank lines before the header do not shift line numbers', async () => {
    const file = write('lead.csv', '\n\ntext\nhello\n');
    const [item] = await collect(file);
    assert.deepEqual(item.source, { file, line: 4 });
    assert.equal(item.id, '1');
  });

  test('TSV', async () => {
    const file = write('a.tsv', 'text\tlabel\tnote\nhello, world\tpositive\tx\nbye\tnegative\t\n');
    const items = await collect(file);
    assert.deepEqual(
      items.map((i) => [i.id, i.source.line, i.fields, i.gold]),
      [
        ['1', 2, { text: 'hello, world', note: 'x' }, 'positive'],
        ['2', 3, { text: 'bye', note: '' }, 'negative'],
      ],
    );
  });

  test('JSONL: BOM, CRLF, numeric ids and gold, and a "__proto__" key', async () => {
    const file = write('crlf.jsonl', '\uFEFF{"id":1,"text":"a","label":1}\r\n\r\n{"id":2.5,"text":"b","label":0,"__proto__":{"x":1}}\r\n');
    const task = makeTask({ labels: ['0', '1'] });
    const items = await collect(file, task);
    assert.deepEqual(
      items.map((i) => [i.id, i.gold, i.source.line]),
      [
        ['1', '1', 1],
        ['2.5', '0', 3],
      ],
    );
    assert.deepEqual(Object.keys(items[1].fields), ['text', '__proto__']);
    assert.equal(Object.getPrototypeOf(items[1].fields), Object.prototype);
  });

  test('a split column value is kept; an empty one falls back to the hash', async () => {
    const file = write('splits.csv', 'text,split\na,validation\nb,\n');
    const [a, b] = await collect(file);
    assert.equal(a.split, 'validation');
    assert.equal(b.split, parseInt(b.hash.slice(0, 8), 16) % 10 === 0 ? 'test' : 'train');
  });

  test('default id is the 1-based data row number in CSV', async () => {
    const file = write('noid.csv', 'text\nfirst\nsecond\nthird\n');
    assert.deepEqual(
      (await collect(file)).map((i) => i.id),
      ['1', '2', '3'],
    );
  });

  test('custom field names; the text column is also exposed as {{text}}', async () => {
    const file = write('custom.csv', 'key,body,y,part,extra\nk1,hello there,negative,dev,e\n');
    const opts: FieldOptions = { textField: 'body', idField: 'key', goldField: 'y', splitField: 'part' };
    const [item] = await collect(file, makeTask({ template: '{{body}} / {{text}} / {{extra}}' }), opts);
    assert.equal(item.id, 'k1');
    assert.equal(item.gold, 'negative');
    assert.equal(item.split, 'dev', 'other split names are kept');
    assert.deepEqual(item.fields, { body: 'hello there', text: 'hello there', extra: 'e' });
  });

  test('same content in a CSV and a JSONL gets the same hash', async () => {
    const csv = write('same.csv', 'lang,text\nen,hello\n');
    const jsonl = write('same.jsonl', JSON.stringify({ text: 'hello', lang: 'en' }) + '\n');
    const [a] = await collect(csv);
    const [b] = await collect(jsonl);
    assert.equal(a.hash, b.hash);
  });

  test('hash ignores id, gold and split', async () => {
    const file = write(
      'ids.jsonl',
      [
        { id: 'a', text: 'same', label: 'positive', split: 'train' },
        { id: 'b', text: 'same', label: 'negative', split: 'test' },
        { text: 'same' },
        { text: 'other' },
      ]
        .map((o) => JSON.stringify(o))
        .join('\n'),
    );
    const items = await collect(file);
    assert.equal(items[0].hash, items[1].hash);
    assert.equal(items[0].hash, items[2].hash);
    assert.notEqual(items[0].hash, items[3].hash);
  });

  test('split: stable, by content, about 10% test', async () => {
    const rows = Array.from({ length: 1000 }, (_, i) => JSON.stringify({ id: `r${i}`, text: `row number ${i}` }));
    const file = write('split.jsonl', rows.join('\n'));
    const shuffled = write('split2.jsonl', [...rows].reverse().join('\n'));
    const first = await collect(file);
    const again = await collect(file);
    const reversed = await collect(shuffled);
    const splitOf = (items: ItemInput[]) => new Map(items.map((i) => [i.id, i.split]));
    assert.deepEqual(splitOf(first), splitOf(again));
    assert.deepEqual(splitOf(first), splitOf(reversed));
    const tests = first.filter((i) => i.split === 'test').length;
    assert.equal(first.filter((i) => i.split !== 'test' && i.split !== 'train').length, 0);
    assert.ok(tests >= 60 && tests <= 140, `expected about 100 test rows, got ${tests}`);
    for (const item of first) assert.equal(item.split === 'test', parseInt(item.hash.slice(0, 8), 16) % 10 === 0);
  });

  test('streams a 100,000-row JSONL to the last line (speed belongs in a benchmark, not here)', async (t) => {
    const lines: string[] = [];
    for (let i = 0; i < 100_000; i++) lines.push(`{"id":"${i}","text":"item number ${i}","label":"${i % 2 ? 'positive' : 'negative'}"}`);
    const file = write('big.jsonl', lines.join('\n') + '\n');
    const started = performance.now();
    let n = 0;
    let last: ItemInput | undefined;
    for await (const item of readItems(file, makeTask())) {
      n++;
      last = item;
    }
    const ms = performance.now() - started;
    t.diagnostic(`read 100,000 rows in ${ms.toFixed(0)} ms`);
    assert.equal(n, 100_000);
    assert.equal(last?.source.line, 100_000);
  });

  test('stopping early is fine', async () => {
    const file = write('early.jsonl', Array.from({ length: 100 }, (_, i) => JSON.stringify({ text: `t${i}` })).join('\n'));
    for await (const item of readItems(file, makeTask())) {
      assert.equal(item.id, '1');
      break;
    }
  });
});

describe('readItems: errors', () => {
  test('malformed JSON names the line; earlier rows are still read', async () => {
    const file = write('bad.jsonl', '{"text":"a"}\n{"text":"b"}\n{"text": oops}\n{"text":"d"}\n');
    const seen: string[] = [];
    await rejectsWith(
      (async () => {
        for await (const item of readItems(file, makeTask())) seen.push(item.id);
      })(),
      new RegExp(`^${escapeRe(file)}:3: invalid JSON: `),
    );
    assert.deepEqual(seen, ['1', '2']);
  });

  test('a JSON value that is not an object', async () => {
    const file = write('arr.jsonl', '{"text":"a"}\n[1,2]\n');
    await rejectsWith(collect(file), `${file}:2: invalid JSON: expected an object, got an array`);
  });

  test('missing text column: names the columns found, and the CLI points at --text-field', async () => {
    const file = write('notext.csv', 'id,body\n1,hello\n');
    await rejectsWith(collect(file), `${file}:2: missing column "text" (columns: id, body)`);
    await assert.rejects(collect(file), (e: InputError) => {
      assert.equal(e.setting, 'textField');
      assert.equal(errorLine(e), `${file}:2: missing column "text" (columns: id, body); set --text-field`);
      return true;
    });
  });

  test('empty text', async () => {
    const file = write('empty.csv', 'id,text\n1,ok\n2,"  "\n');
    await rejectsWith(collect(file), `${file}:3: empty text`);
  });

  test('gold label not in the task', async () => {
    const file = write('gold.jsonl', '{"text":"a","label":"positive"}\n{"text":"b","label":"neutral"}\n');
    await rejectsWith(collect(file), `${file}:2: gold label "neutral" is not one of the task's labels (positive, negative)`);
  });

  test('template field missing', async () => {
    const file = write('tpl.csv', 'text,title\nhello,T\n');
    const task = makeTask({ template: '{{title}}: {{text}} ({{author}})' });
    await rejectsWith(collect(file, task), `${file}:2: missing column "author" used by the task template`);
  });

  test('wrong column count, after a multi-line field', async () => {
    const file = write('cols.csv', 'id,text\n1,"a\nb"\n2,ok\n3,too,many\n');
    await rejectsWith(collect(file), `${file}:5: wrong number of columns (the header has 2)`);
    const fewer = write('fewer.csv', 'id,text,note\n1,a,x\n2,b\n');
    await rejectsWith(collect(fewer), `${fewer}:3: wrong number of columns (the header has 3)`);
  });

  test('duplicate column names in the header', async () => {
    const file = write('dup.csv', 'text,note,note\na,b,c\n');
    await rejectsWith(collect(file), `${file}:1: duplicate column "note" in the CSV header`);
  });

  test('unclosed quote', async () => {
    const file = write('quote.csv', 'id,text\n1,"never closed\n');
    await rejectsWith(collect(file), new RegExp(`^${escapeRe(file)}:\\d+: invalid CSV: `));
  });

  test('unknown extension and missing file', async () => {
    const file = write('data.txt', 'hello\n');
    await rejectsWith(collect(file), new RegExp(`^${escapeRe(file)}: unsupported input file type "\\.txt"`));
    const missing = path.join(tmp, 'nope.jsonl');
    await rejectsWith(collect(missing), `${missing}: cannot read input (ENOENT)`);
  });
});

describe('readItems: images', () => {
  test('PNG and JPEG rows: bytes, mime, size; paths relative to the input file', async () => {
    const png = pngBytes(3, 2);
    const jpg = jpegBytes(8, 5);
    const file = write('imgs.csv', 'id,image,label\np,img/a.png,cat\n');
    const dir = path.dirname(file);
    fs.mkdirSync(path.join(dir, 'img'));
    fs.writeFileSync(path.join(dir, 'img', 'a.png'), png);
    const absJpg = path.join(dir, 'img', 'b.jpg');
    fs.writeFileSync(absJpg, jpg);
    fs.appendFileSync(file, `j,${absJpg},dog\n`);

    const [p, j] = await collect(file, imageTask);
    assert.equal(p.image?.mime, 'image/png');
    assert.deepEqual([p.image?.width, p.image?.height], [3, 2]);
    assert.ok(p.image?.bytes.equals(png));
    assert.equal(p.fields.image, 'img/a.png', 'the path is kept as given');
    assert.equal(p.gold, 'cat');
    assert.equal(j.image?.mime, 'image/jpeg');
    assert.deepEqual([j.image?.width, j.image?.height], [8, 5]);
    assert.equal(j.fields.image, absJpg);
    assert.match(j.image?.sha256 ?? '', /^[0-9a-f]{64}$/);
  });

  test('moving an image keeps its hash; different bytes change it', async () => {
    const file = write('moved.jsonl', '');
    const dir = path.dirname(file);
    fs.writeFileSync(path.join(dir, 'one.png'), pngBytes(4, 4));
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub', 'two.png'), pngBytes(4, 4));
    fs.writeFileSync(path.join(dir, 'three.png'), pngBytes(4, 4, 1));
    fs.writeFileSync(file, ['one.png', 'sub/two.png', 'three.png'].map((image) => JSON.stringify({ image })).join('\n'));
    const [a, b, c] = await collect(file, imageTask);
    assert.equal(a.hash, b.hash);
    assert.notEqual(a.hash, c.hash);
  });

  test('truncated PNG is unreadable', async () => {
    const file = write('trunc.jsonl', JSON.stringify({ image: 'bad.png' }) + '\n');
    const png = pngBytes(16, 16);
    fs.writeFileSync(path.join(path.dirname(file), 'bad.png'), png.subarray(0, png.length - 30));
    await rejectsWith(collect(file, imageTask), new RegExp(`^${escapeRe(file)}:1: unreadable image "bad\\.png": `));
  });

  test('a GIF is unsupported', async () => {
    const file = write('gif.jsonl', JSON.stringify({ image: 'x.png' }) + '\n');
    fs.writeFileSync(path.join(path.dirname(file), 'x.png'), Buffer.from('GIF89a\x01\x00\x01\x00\x00\x00\x00;', 'latin1'));
    await rejectsWith(collect(file, imageTask), `${file}:1: unsupported image format (only PNG and JPEG)`);
  });

  test('a missing image file', async () => {
    const file = write('missing.csv', 'image\nnot/there.jpg\n');
    await rejectsWith(collect(file, imageTask), `${file}:2: cannot read image "not/there.jpg"`);
  });

  test('missing image column', async () => {
    const file = write('noimg.csv', 'text\nhello\n');
    await rejectsWith(collect(file, imageTask), `${file}:2: missing column "image"`);
  });
});

describe('readItems: class folders', () => {
  function makeFolders(layout: Record<string, Record<string, Buffer>>): string {
    const root = path.join(tmp, `folders${++fileCounter}`);
    for (const [label, files] of Object.entries(layout)) {
      fs.mkdirSync(path.join(root, label), { recursive: true });
      for (const [name, bytes] of Object.entries(files)) fs.writeFileSync(path.join(root, label, name), bytes);
    }
    return root;
  }

  test('folder = gold label; sorted; id = label/file', async () => {
    const root = makeFolders({
      dog: { 'b.jpeg': jpegBytes(2, 2), 'a.png': pngBytes(2, 3) },
      cat: { 'z.jpg': jpegBytes(3, 3), 'm.png': pngBytes(5, 1) },
    });
    fs.writeFileSync(path.join(root, 'cat', '.DS_Store'), 'junk');
    const items = await collect(root, imageTask);
    assert.deepEqual(
      items.map((i) => [i.id, i.gold, i.image?.mime]),
      [
        ['cat/m.png', 'cat', 'image/png'],
        ['cat/z.jpg', 'cat', 'image/jpeg'],
        ['dog/a.png', 'dog', 'image/png'],
        ['dog/b.jpeg', 'dog', 'image/jpeg'],
      ],
    );
    assert.equal(items[0].source.file, path.join(root, 'cat', 'm.png'));
    assert.equal(items[0].fields.image, path.join(root, 'cat', 'm.png'));
    assert.ok(items.every((i) => i.split === 'train' || i.split === 'test'));
  });

  test('a symlinked class folder is followed', async () => {
    const elsewhere = makeFolders({ stash: { 'd.png': pngBytes(2, 2) } });
    const root = makeFolders({ cat: { 'c.png': pngBytes(1, 1) } });
    fs.symlinkSync(path.join(elsewhere, 'stash'), path.join(root, 'dog'));
    assert.deepEqual(
      (await collect(root, imageTask)).map((i) => i.id),
      ['cat/c.png', 'dog/d.png'],
    );
  });

  test('same image in a folder and in a JSONL gets the same hash', async () => {
    const bytes = pngBytes(6, 6, 3);
    const root = makeFolders({ cat: { 'p.png': bytes } });
    const file = write('one.jsonl', JSON.stringify({ image: 'p.png', label: 'dog' }) + '\n');
    fs.writeFileSync(path.join(path.dirname(file), 'p.png'), bytes);
    const [fromFolder] = await collect(root, imageTask);
    const [fromFile] = await collect(file, imageTask);
    assert.equal(fromFolder.hash, fromFile.hash);
  });

  test('a folder that is not a label', async () => {
    const root = makeFolders({ cat: { 'a.png': pngBytes(1, 1) }, horse: { 'h.png': pngBytes(1, 1) } });
    const folder = path.join(root, 'horse');
    await rejectsWith(collect(root, imageTask), `${folder}: folder "horse" is not one of the task's labels (cat, dog)`);
  });

  test('files beside the class folders are skipped (an index, a README); an image there is an error', async () => {
    const root = makeFolders({ cat: { 'c.png': pngBytes(1, 1) }, dog: { 'd.png': pngBytes(2, 2) } });
    fs.writeFileSync(path.join(root, 'shapes.jsonl'), '{"image":"cat/c.png","label":"cat"}\n');
    fs.writeFileSync(path.join(root, 'README.md'), '# the images\n');
    assert.deepEqual(
      (await collect(root, imageTask)).map((i) => i.id),
      ['cat/c.png', 'dog/d.png'],
    );
    fs.writeFileSync(path.join(root, 'stray.png'), pngBytes(1, 1));
    await rejectsWith(
      collect(root, imageTask),
      `${path.join(root, 'stray.png')}: an image outside a class folder has no label (<folder>/<label>/<image>)`,
    );
  });

  test('a bad image names its file', async () => {
    const root = makeFolders({ cat: { 'a.png': pngBytes(1, 1), 'b.gif': Buffer.from('GIF89a') } });
    await rejectsWith(collect(root, imageTask), `${path.join(root, 'cat', 'b.gif')}: unsupported image format (only PNG and JPEG)`);
  });

  test('a folder for a text task', async () => {
    const root = makeFolders({ positive: {} });
    await rejectsWith(collect(root, makeTask()), new RegExp(`^${escapeRe(root)}: a folder of class folders is only for image tasks`));
  });
});

describe('UTF-8', () => {
  const line = (i: number) => JSON.stringify({ id: `r${i}`, text: `ligne ${i}: café, naïve, 日本語, 🙂` });

  test('valid multi-byte text across 1 MiB read chunks is read as written', async () => {
    const rows = Array.from({ length: 60_000 }, (_, i) => line(i));
    const file = write('big.jsonl', rows.join('\n') + '\n');
    assert.ok(fs.statSync(file).size > 2 << 20, 'several read chunks');
    const items = await collect(file);
    assert.equal(items.length, 60_000);
    assert.equal(items[59_999].fields.text, 'ligne 59999: café, naïve, 日本語, 🙂');
  });

  test('a byte that is not UTF-8 names its line: JSONL, CSV, far into a large file, a truncated last character', async () => {
    const bad = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "caf" + a Latin-1 é
    const jsonl = write('bad.jsonl', Buffer.concat([Buffer.from(`${line(0)}\n{"text":"`), bad, Buffer.from('"}\n')]));
    await rejectsWith(collect(jsonl), new RegExp(`^${escapeRe(jsonl)}:2: invalid UTF-8`));
    const csv = write('bad.csv', Buffer.concat([Buffer.from('text,label\nfine,cat\n"'), bad, Buffer.from('",dog\n')]));
    await rejectsWith(collect(csv), new RegExp(`^${escapeRe(csv)}:3: invalid UTF-8`));
    const far = Array.from({ length: 20_000 }, (_, i) => line(i)).join('\n') + '\n';
    const big = write('far.jsonl', Buffer.concat([Buffer.from(far), Buffer.from('{"text":"'), bad, Buffer.from('"}\n')]));
    await rejectsWith(collect(big), new RegExp(`^${escapeRe(big)}:20001: invalid UTF-8`));
    const cut = write('cut.jsonl', Buffer.concat([Buffer.from(`${line(0)}\n{"text":"x"}`), Buffer.from([0xe6, 0x97])]));
    await rejectsWith(collect(cut), new RegExp(`^${escapeRe(cut)}:2: invalid UTF-8`));
  });
});
