/**
 * One declaration, everything from it: every command answers --help, -h and `burrow help COMMAND` with every
 * flag it accepts and does nothing else; the version comes from package.json; the README's generated
 * sections match the schema, and every `burrow ...` line in the README and docs/ parses; the layering lint
 * rule is in effect.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { renderReadme } from '../../src/cli/docs.js';
import { ORDER } from '../../src/cli/help.js';
import { flagsOf, parseCommand } from '../../src/cli/parse.js';
import { COMMANDS, isCommandName, type CommandName } from '../../src/cli/schema.js';
import { runCli } from '../support/cli.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-help-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function words(name: CommandName): string[] {
  return name.split(' ');
}

describe('help from the schema', () => {
  it('every command answers --help, -h and `burrow help COMMAND` alike, exit 0, listing every flag', async () => {
    for (const name of ORDER) {
      const runs = await Promise.all([
        runCli([...words(name), '--help']),
        runCli([...words(name), '-h']),
        runCli(['help', ...words(name)]),
      ]);
      for (const r of runs) {
        assert.equal(r.code, 0, `${name}: ${r.stderr}`);
        assert.equal(r.stderr, '', `${name} --help wrote to stderr`);
      }
      const [help = '', ...others] = runs.map((r) => r.stdout);
      for (const other of others) assert.equal(other, help, `${name}: the three ways differ`);
      assert.match(help, new RegExp(`^Usage: burrow ${name}`, 'm'));
      for (const [flag, spec] of flagsOf(COMMANDS[name])) {
        assert.ok(help.includes(`--${flag}`), `${name} --help does not list --${flag}`);
        if (spec.short !== undefined) assert.ok(help.includes(`-${spec.short}, --${flag}`), `${name}: -${spec.short}`);
        if (spec.negatedHelp !== undefined) assert.ok(help.includes(`--no-${flag}`), `${name}: --no-${flag}`);
      }
      assert.match(help, /-h, --help/);
      assert.match(help, /Exit codes:\n +0 +success/);
    }
  });

  it('help does nothing else: no secret from keygen, no file from keygen --out, no demo, no server', async () => {
    const file = join(dir, 'never-written');
    const [keygen, keygenOut, demo, serve, punch] = await Promise.all([
      runCli(['keygen', '--help']),
      runCli(['keygen', '--out', file, '-h']),
      runCli(['demo', '--help']),
      runCli(['serve', '--listen', '127.0.0.1:0', '--help']),
      // Help wins over everything else on the line, even flags that are wrong.
      runCli(['punch', '--server', '127.0.0.1:0', '--bogus', '--help']),
    ]);
    for (const r of [keygen, keygenOut, demo, serve, punch]) assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(keygen.stdout, /^[A-Za-z0-9_-]{43}$/m, 'keygen --help printed a secret');
    assert.equal(existsSync(file), false, 'keygen --out --help wrote a file');
    assert.doesNotMatch(demo.stdout + demo.stderr, /demo 1|server listening|alice/);
    assert.doesNotMatch(serve.stdout + serve.stderr, /listening on|"listening"/);
    assert.match(punch.stdout, /^Usage: burrow punch/);
  });

  it('the overview lists every command; no command is exit 2; an unknown one suggests the closest', async () => {
    const help = await runCli(['help']);
    assert.equal(help.code, 0);
    for (const name of ORDER) assert.match(help.stdout, new RegExp(`^ {2}${name} +\\S`, 'm'), name);
    assert.match(help.stdout, /BURROW_SERVER/);
    assert.match(help.stdout, /BURROW_SECRET_FILE/);
    const typo = await runCli(['pnuch']);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /unknown command "pnuch"\nburrow: hint: did you mean `burrow punch`\?/);
  });

  it('burrow --version, -V and version print the version in package.json', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const args of [['--version'], ['-V'], ['version']]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `burrow ${pkg.version}\n`);
    }
  });
});

describe('the README and the schema', () => {
  it("the README's generated sections (commands, secrets, exit codes, deploy/ quotes) match the declarations", async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const expected = renderReadme(readme, ROOT);
    assert.ok(readme === expected, 'README.md differs from the CLI\'s declarations: run `npm run docs`');
    // And the comparison can fail: a README with one flag removed from the reference differs.
    const drifted = readme.replace('| `--send-only` |', '| `--sendonly` |');
    assert.notEqual(renderReadme(drifted, ROOT), drifted);
  });

  it('every `burrow ...` command line in the README, docs/ and deploy/ parses against the schema', async () => {
    const sources = [join(ROOT, 'README.md'), ...(await readdir(join(ROOT, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => join(ROOT, 'docs', f)),
      ...(await readdir(join(ROOT, 'deploy'))).filter((f) => f.endsWith('.service')).map((f) => join(ROOT, 'deploy', f))];
    let checked = 0;
    for (const path of sources) {
      // The generated reference holds synopses, not command lines.
      const text = (await readFile(path, 'utf8')).replace(/<!-- BEGIN generated:commands -->[^]*<!-- END generated:commands -->/, '');
      for (const line of commandLines(text, path.endsWith('.service'))) {
        const [command, ...args] = line;
        let name: string = command === '--version' ? 'version' : command ?? '';
        let rest = args;
        if (name === 'lab') {
          name = `lab ${args[0] ?? ''}`;
          rest = args.slice(1);
        }
        assert.ok(isCommandName(name), `${path}: unknown command in "burrow ${line.join(' ')}"`);
        try {
          parseCommand(name, rest, { BURROW_SERVER: 'rv.example.org:3478' });
        } catch (err) {
          assert.fail(`${path}: "burrow ${line.join(' ')}" does not parse: ${err instanceof Error ? err.message : String(err)}`);
        }
        checked++;
      }
    }
    assert.ok(checked >= 15, `only ${checked} command lines found`);
  });
});

/** `burrow` command lines in fenced code blocks (or ExecStart= lines of units), split into words. */
function commandLines(text: string, unit: boolean): string[][] {
  const out: string[][] = [];
  const blocks: string[] = [];
  if (unit) blocks.push(text);
  else {
    let current: string[] | undefined;
    for (const line of text.split('\n')) {
      if (line.startsWith('```')) {
        if (current) blocks.push(current.join('\n'));
        current = current ? undefined : [];
      } else current?.push(line);
    }
  }
  for (const block of blocks) {
    const joined = block.replace(/\\\n\s*/g, ' ');
    for (const raw of joined.split('\n')) {
      const line = raw.replace(/^\s*(?:sudo\s+|ExecStart=)/, '').replace(/\s+#\s.*$/, '');
      const m = /^(?:\/usr\/local\/bin\/)?burrow\s+(.*)$/.exec(line.trim());
      if (!m?.[1] || line.includes('...')) continue;
      if (unit && !raw.startsWith('ExecStart=')) continue;
      // Placeholders stand for real values.
      out.push(shellWords(m[1]).map((w) => (/^(?:HOST|SERVER):PORT$/.test(w) ? 'rv.example.org:3478' : w)));
    }
  }
  return out;
}

function shellWords(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)) out.push(m[1] ?? m[2] ?? m[3] ?? '');
  return out;
}

describe('layers', () => {
  it('eslint refuses Node I/O and imports of node/ or cli/ in codec/, core/ and server/, and allows them in node/', async () => {
    const { ESLint } = await import('eslint');
    const eslint = new ESLint({ cwd: ROOT });
    const code = "import dgram from 'node:dgram';\nimport { readFileSync } from 'fs';\nimport { bindUdp } from '../node/udp.js';\nimport { main } from '../cli/main.js';\nexport const all = [dgram, readFileSync, bindUdp, main];\n";
    for (const file of ['src/codec/address.ts', 'src/core/stun-client.ts', 'src/server/limits.ts']) {
      const [result] = await eslint.lintText(code, { filePath: join(ROOT, file) });
      const restricted = (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports');
      assert.equal(restricted.length, 4, `${file}: ${JSON.stringify(result?.messages.map((m) => m.message))}`);
    }
    const [driver] = await eslint.lintText("import dgram from 'node:dgram';\nexport const d = dgram;\n", { filePath: join(ROOT, 'src/node/udp.ts') });
    assert.equal((driver?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').length, 0);
  });
});
