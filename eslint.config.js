// ESLint flat config. Syntax-only typescript-eslint rules (no type information), so `npm run lint`
// stays fast on two cores; `npx tsc --noEmit` is the type check.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { cwd } from 'node:process';
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';
import ts from 'typescript';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';

/** Relative imports of a file, `import type` and `export … from` included, resolved to absolute paths. */
const importsCache = new Map();
function relativeImports(file) {
  const cached = importsCache.get(file);
  if (cached) return cached;
  const specs = ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles.map((f) => f.fileName);
  const targets = specs
    .filter((s) => s.startsWith('.'))
    .map((s) => resolve(dirname(file), s))
    .filter((p) => existsSync(p));
  importsCache.set(file, targets);
  return targets;
}

/** The shortest import path from `start` back to `file`, or null. */
function pathBack(start, file) {
  const previous = new Map([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const current = queue.shift();
    if (current === file) {
      const route = [];
      for (let at = current; at !== null; at = previous.get(at)) route.unshift(at);
      return route;
    }
    for (const next of relativeImports(current)) {
      if (!previous.has(next)) {
        previous.set(next, current);
        queue.push(next);
      }
    }
  }
  return null;
}

// import-x/no-cycle (4.x) always skips `import type`, with no option to count it. Type-only cycles
// cost nothing at run time but still tie two modules together, so this rule counts them too.
const noCycleWithTypes = {
  meta: {
    type: 'problem',
    docs: { description: 'Forbid import cycles between files, type-only imports included' },
    messages: { cycle: 'Import cycle (type-only imports counted): {{route}}' },
    schema: [],
  },
  create(context) {
    const file = context.physicalFilename;
    const check = (node) => {
      const spec = node.source?.value;
      if (typeof spec !== 'string' || !spec.startsWith('.')) return;
      const target = resolve(dirname(file), spec);
      if (!existsSync(target) || target === file) return;
      const route = pathBack(target, file);
      if (route) {
        context.report({ node, messageId: 'cycle', data: { route: [file, ...route].map((p) => relative(cwd(), p)).join(' -> ') } });
      }
    };
    return { ImportDeclaration: check, ExportNamedDeclaration: check, ExportAllDeclaration: check };
  },
};

export default defineConfig(
  globalIgnores(['node_modules/', 'demo/', 'out/', 'tmp/', 'datasets/']),
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    files: ['src/**/*.ts', 'scripts/**/*.ts', 'test/**/*.ts'],
    plugins: { 'import-x': importX, distillery: { rules: { 'no-cycle-with-types': noCycleWithTypes } } },
    settings: {
      // Without these, import-x skips .ts files when it follows imports, and finds no cycle at all.
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.json', '.node'] })],
    },
    rules: {
      'import-x/no-cycle': 'error',
      'distillery/no-cycle-with-types': 'error',
      // `_name` marks a value that is deliberately dropped (e.g. `const { secret: _s, ...rest } = row`).
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // `any` sits at a few untyped edges (commander options, SQLite rows, test doubles): flag it, don't fail on it.
      '@typescript-eslint/no-explicit-any': 'warn',
      // A getter inside a returned object literal has its own `this`; `const self = this` is the readable way out.
      '@typescript-eslint/no-this-alias': ['error', { allowedNames: ['self'] }],
    },
  },
  {
    // SQL lives in src/store/: the store's own modules reach its connection through Store.sqlOf, everyone else calls a
    // Store method (tests open their own connection on store.path).
    files: ['src/**/*.ts', 'scripts/**/*.ts', 'test/**/*.ts'],
    ignores: ['src/store/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "MemberExpression[property.name='sqlOf']",
          message: 'Store.sqlOf is for src/store/ only: add a Store method for the query.',
        },
      ],
    },
  },
);
