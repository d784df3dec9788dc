import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTask, renderTemplate, templateFields } from '../src/task/task.ts';

test('a task file parses into front matter, template and a sha256 prompt version', () => {
  const t = parseTask(
    '---\nname: tickets\nlabels: [billing, bug report]\nsystem: Be careful.\n---\nTicket: {{text}} ({{ lang }})\n',
    'p.md',
  );
  assert.equal(t.name, 'tickets');
  assert.deepEqual(t.labels, ['billing', 'bug report']);
  assert.equal(t.input, 'text');
  assert.equal(t.system, 'Be careful.');
  assert.match(t.version, /^[0-9a-f]{64}$/);
  assert.deepEqual(templateFields(t.template), ['text', 'lang']);
  assert.equal(renderTemplate(t.template, { text: 'hi', lang: 'en' }), 'Ticket: hi (en)');
  assert.throws(() => renderTemplate(t.template, { text: 'hi' }), /missing field "lang"/);
});

test('bad task files name the file and line', () => {
  assert.throws(
    () => parseTask('name: x\n', 'a.md'),
    /^Error: a\.md:1: a task file starts with YAML front matter|a\.md:1: a task file starts/,
  );
  assert.throws(() => parseTask('---\nname: x\ninput: text\n---\nbody {{text}}\n', 'b.md'), /b\.md:2: invalid task: labels: /);
  assert.throws(
    () => parseTask('---\nname: x\nlabels: [a]\n---\nbody\n', 'c.md'),
    /c\.md:3: invalid task: labels: a task needs at least 2 labels/,
  );
  assert.throws(
    () => parseTask('---\nname: x\nlabels: [a, a]\n---\nbody\n', 'd.md'),
    /d\.md:3: invalid task: labels: labels must be unique/,
  );
  assert.throws(() => parseTask('---\nname: x\nlabels: [a, b]\ninput: video\n---\nbody\n', 'e.md'), /e\.md:4: invalid task: input: /);
  assert.throws(() => parseTask('---\nname: x\nlabels: [a, b\n---\nbody\n', 'f.md'), /f\.md:\d+: invalid YAML/);
  assert.throws(() => parseTask('---\nname: x\nlabels: [a, b]\n---\n\n', 'g.md'), /g\.md: the task has no body/);
  assert.throws(() => parseTask('---\nname: x\nlabels: [a, b]\ncolour: red\n---\nbody\n', 'h.md'), /h\.md:\d+: invalid task: .*colour/);
});
