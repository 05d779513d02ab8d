/**
 * The product package as a user gets it (issue 18, "Package shape"): `npm pack` of
 * packages/sluice, installed into an empty project, brings none of the lab's dependencies, its
 * CLI runs, and its public types compile in a consumer `.ts` file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
const PRODUCT = join(ROOT, 'packages/sluice');
const LAB_ONLY = ['vega', 'vega-lite', '@resvg/resvg-js', 'playwright-core', 'cli-progress'];

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
}

test('npm pack of sluice installs without the lab, runs, and its public types compile', { timeout: 360_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-pack-'));
  try {
    const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], PRODUCT)) as { filename: string; files: { path: string }[] }[];
    const files = packed[0].files.map((f) => f.path);
    assert.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts') && files.includes('bin/sluice.js'), 'the tarball holds the build and the CLI');
    assert.ok(!files.some((f) => f.startsWith('src/') || f.includes('/lab/')), `no sources or lab files in the tarball: ${files.filter((f) => f.startsWith('src/')).slice(0, 3)}`);

    const app = join(dir, 'app');
    run('mkdir', ['-p', app], dir);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    // The registry (or npm's cache) serves the dependencies, as for any user.
    run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', join(dir, packed[0].filename)], app);

    const installed = readdirSync(join(app, 'node_modules')).flatMap((n) => (n.startsWith('@') ? readdirSync(join(app, 'node_modules', n)).map((m) => `${n}/${m}`) : [n]));
    for (const dep of LAB_ONLY) assert.ok(!installed.includes(dep), `${dep} must not come with sluice`);
    assert.ok(!installed.includes('@sluice/lab'));

    // The CLI answers, and `sluice lab` says how to get the lab instead of failing obscurely.
    assert.match(run(join(app, 'node_modules/.bin/sluice'), ['--help'], app), /serve/);
    let labErr = '';
    try {
      run(join(app, 'node_modules/.bin/sluice'), ['lab'], app);
    } catch (e) {
      labErr = String((e as { stderr?: string }).stderr);
    }
    assert.match(labErr, /needs the lab package/);

    // A consumer's TypeScript file against the public entry points.
    await writeFile(
      join(app, 'consumer.ts'),
      `import { Pipeline, FileSink, splitAndRetry, MemoryDeadLetters, envelope, RecordIdRule, type Sink, type Envelope } from 'sluice';
import { MemorySink, constantArrivals } from 'sluice/testing';
class Counting implements Sink<unknown> {
  readonly name = 'counting';
  readonly fixedCostKind = 'none' as const;
  n = 0;
  async write(batch: readonly Envelope<unknown>[]): Promise<void> { this.n += batch.length; }
  fixedCostOps(): number { return this.n; }
  async close(): Promise<void> {}
}
const sink = new Counting();
const p = new Pipeline({ sink, handler: splitAndRetry(sink, { dlq: new MemoryDeadLetters() }), window: { maxItems: 10, maxWaitMs: 5 } });
await p.put(envelope({ hello: 'world' }, { intendedAtMs: performance.now() }));
await p.close();
const id: string = new RecordIdRule({ idField: 'id' }).id(Buffer.from('{}'), {});
export { FileSink, MemorySink, constantArrivals, id };
`,
    );
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, types: ['node'], typeRoots: [join(ROOT, 'node_modules/@types')] }, files: ['consumer.ts', 'readme-example.ts'] }),
    );
    // The README's library example compiles as printed.
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const example = /```ts\n([\s\S]*?)```/.exec(readme);
    assert.ok(example, 'the README has a TypeScript example');
    await writeFile(join(app, 'readme-example.ts'), example[1]);
    const tsc = join(ROOT, 'node_modules/.bin/tsc');
    assert.ok(existsSync(tsc));
    try {
      run(tsc, ['-p', 'tsconfig.json'], app);
    } catch (e) {
      assert.fail(`consumer.ts does not compile against the packed types:\n${(e as { stdout?: string }).stdout}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
