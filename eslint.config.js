// typescript-eslint's type-checked rules over the whole tree, and the layering rules of the source folders.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Node modules that do I/O: sockets, files, processes, the host. Pure layers may not import them. */
const NODE_IO = ['dgram', 'net', 'fs', 'fs/promises', 'child_process', 'os', 'http', 'https', 'http2', 'dns', 'dns/promises',
  'tls', 'cluster', 'worker_threads', 'readline', 'readline/promises', 'process', 'timers', 'timers/promises', 'inspector', 'vm', 'v8'];

/**
 * codec (pure wire formats), core (sans-IO state machines) and server (the sans-IO server core) take bytes
 * and time in and give actions out: no Node I/O, and nothing from the layers above them (node: the drivers,
 * cli: the command, lab: the namespaces).
 */
const pureLayer = {
  files: ['src/codec/**/*.ts', 'src/core/**/*.ts', 'src/server/**/*.ts'],
  rules: {
    'no-restricted-imports': ['error', {
      paths: NODE_IO.flatMap((name) => [name, `node:${name}`]).map((name) => ({
        name,
        message: 'codec/, core/ and server/ are pure (sans-IO): sockets, files, processes and timers belong in src/node/.',
      })),
      patterns: [{
        group: ['**/node/*', '**/node', '**/cli/*', '**/cli', '**/lab/*', '**/lab'],
        message: 'codec/, core/ and server/ sit below the drivers (src/node), the CLI (src/cli) and the lab (src/lab): import downwards only.',
      }],
    }],
  },
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'eslint.config.js', 'scripts/**'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
    },
  },
  pureLayer,
  {
    files: ['test/**', 'bench/**'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      // node:test's describe/it return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }],
      }],
    },
  },
);
