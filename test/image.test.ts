/**
 * The container image without a Docker engine: the Dockerfile's shape (bases, user, entrypoint,
 * no RUN at run time), and the build steps it runs, executed here through the same script
 * (scripts/build-image-root.sh): every COPY source exists afterwards, the addon's shared-library
 * needs are met by the runtime base or shipped in the tree, and the tree runs on its own.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rootUnavailable, requireRoot } from './support/root.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const DOCKERFILE = join(REPO, 'Dockerfile');
const BUILD_SCRIPT = 'scripts/build-image-root.sh';
const BUILDER_OUT = '/out';

/**
 * Shared libraries the runtime base provides, gcr.io/distroless/cc-debian12 (the distroless
 * "cc" image, also the base of distroless/nodejs24-debian12): Debian 12's libc6 (libc, libm,
 * libdl, libpthread, librt, the dynamic loader), libgcc-s1 (libgcc_s), libstdc++6 and libgomp1,
 * plus libssl3 (libssl, libcrypto) from distroless/base. See
 * https://github.com/GoogleContainerTools/distroless/blob/main/cc/README.md. zlib, libelf and
 * libbpf are not among them: the image ships those next to the addon.
 */
const RUNTIME_BASE_LIBS: ReadonlySet<string> = new Set([
  'libc.so.6',
  'libm.so.6',
  'libdl.so.2',
  'libpthread.so.0',
  'librt.so.1',
  'ld-linux-x86-64.so.2',
  'ld-linux-aarch64.so.1',
  'libgcc_s.so.1',
  'libstdc++.so.6',
  'libgomp.so.1',
  'libssl.so.3',
  'libcrypto.so.3',
]);
/** What the addon needs beyond the base; build-image-root.sh copies them next to it. */
const SHIPPED_LIBS = ['libbpf.so.1', 'libelf.so.1', 'libz.so.1'] as const;

interface Instruction {
  keyword: string;
  args: string;
}

interface Stage {
  base: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Dockerfile -> stages: joins continuation lines, drops comments, splits on FROM. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // comment inside a continuation
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push(pending + line);
    pending = '';
  }
  const stages: Stage[] = [];
  for (const line of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const keyword = (m[1] ?? '').toUpperCase();
    const args = m[2] ?? '';
    if (keyword === 'FROM') {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(from, `unparsable FROM: ${line}`);
      stages.push({ base: from[1] ?? '', name: from[2], instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    assert.ok(stage, `${keyword} before any FROM`);
    stage.instructions.push({ keyword, args });
  }
  return stages;
}

function of(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.keyword === keyword);
}

interface Copy {
  from: string | undefined;
  sources: string[];
  dest: string;
}

function parseCopy(args: string): Copy {
  const words = args.split(/\s+/).filter((w) => w !== '');
  let from: string | undefined;
  const rest: string[] = [];
  for (const w of words) {
    if (w.startsWith('--from=')) from = w.slice('--from='.length);
    else if (!w.startsWith('--')) rest.push(w);
  }
  assert.ok(rest.length >= 2, `COPY needs a source and a destination: ${args}`);
  return { from, sources: rest.slice(0, -1), dest: rest.at(-1) ?? '' };
}

const stages = parseDockerfile(readFileSync(DOCKERFILE, 'utf8'));
const builder = stages[0];
const runtime = stages.at(-1);

test('Dockerfile: a builder stage and a distroless, pinned, non-root runtime stage', () => {
  assert.equal(stages.length, 2, 'expected exactly two stages (builder, runtime)');
  assert.ok(builder && runtime);
  assert.match(builder.base, /^node:24-bookworm(@sha256:[0-9a-f]{64})?$/);
  assert.ok(builder.name, 'the builder stage must be named (COPY --from refers to it)');
  // Pinned: an explicit tag (or digest), never an implicit or explicit "latest".
  assert.match(
    runtime.base,
    /^gcr\.io\/distroless\/[a-z0-9-]+-debian12:[\w.-]+(@sha256:[0-9a-f]{64})?$/,
  );
  assert.doesNotMatch(runtime.base, /:latest\b/);
  // Both stages on Debian 12: the addon and the BPF object are built against the runtime's glibc.
  assert.match(builder.base, /bookworm/);
  assert.match(runtime.base, /debian12/);
});

test('Dockerfile: runtime stage runs no shell: no RUN, exec-form ENTRYPOINT, non-root USER', () => {
  assert.ok(runtime);
  assert.deepEqual(of(runtime, 'RUN'), [], 'the runtime stage has no shell to RUN with');
  assert.deepEqual(of(runtime, 'CMD'), [], 'no CMD: the entrypoint takes no arguments');
  const users = of(runtime, 'USER');
  assert.equal(users.length, 1, 'exactly one USER in the runtime stage');
  assert.match(users[0]?.args ?? '', /^(nonroot|65532)(:(nonroot|65532))?$/);
  const entry = of(runtime, 'ENTRYPOINT');
  assert.equal(entry.length, 1);
  const argv = JSON.parse(entry[0]?.args ?? '') as unknown;
  assert.ok(Array.isArray(argv) && argv.every((a) => typeof a === 'string'), 'exec form');
  const [bin, script] = argv as string[];
  assert.ok(bin?.startsWith('/') && !/\/(ba|da)?sh$/.test(bin), `no shell: ${bin}`);
  assert.equal(script, '/app/dist/src/main.js');
});

test('Dockerfile: the builder runs scripts/build-image-root.sh into /out, from npm ci', () => {
  assert.ok(builder);
  const runs = of(builder, 'RUN').map((r) => r.args);
  assert.ok(
    runs.some((r) => r.includes('npm ci')),
    'dependencies come from the lockfile (npm ci)',
  );
  assert.ok(
    runs.some((r) => new RegExp(`${BUILD_SCRIPT}\\s+${BUILDER_OUT}\\b`).test(r)),
    `the builder must run ${BUILD_SCRIPT} ${BUILDER_OUT}`,
  );
  for (const c of of(builder, 'COPY').map((i) => parseCopy(i.args))) {
    assert.equal(c.from, undefined);
    for (const src of c.sources) {
      assert.ok(existsSync(join(REPO, src)), `builder COPY source ${src} missing from the repo`);
    }
  }
});

function readelfDynamic(file: string): { needed: string[]; runpath: string[] } {
  const text = execFileSync('readelf', ['-d', file], { encoding: 'utf8' });
  const needed = [...text.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map(
    (m) => m[1] ?? '',
  );
  const runpath = [...text.matchAll(/\((?:RUNPATH|RPATH)\)\s+Library r\w*path: \[([^\]]+)\]/g)]
    .flatMap((m) => (m[1] ?? '').split(':'))
    .filter((p) => p !== '');
  return { needed, runpath };
}

/** The tree build-image-root.sh assembles; built once for every test below. */
let tmp = '';
let tree = '';
let buildError: unknown;

before(() => {
  if (rootUnavailable() !== undefined) return;
  tmp = mkdtempSync(join(tmpdir(), 'alt-image-'));
  // mkdtemp makes the directory 0700; the non-root checks below must reach into it.
  chmodSync(tmp, 0o755);
  tree = join(tmp, 'root');
  try {
    execFileSync('bash', [join(REPO, BUILD_SCRIPT), tree], { stdio: 'pipe', timeout: 600_000 });
  } catch (e) {
    buildError = e;
  }
});

after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function builtTree(): string {
  if (buildError !== undefined) {
    const e = buildError as { stderr?: Buffer; message?: string };
    assert.fail(`${BUILD_SCRIPT} failed: ${e.message ?? ''}\n${e.stderr?.toString() ?? ''}`);
  }
  return tree;
}

test('every COPY --from=<builder> source exists after the build script ran', (t) => {
  if (!requireRoot(t)) return;
  const out = builtTree();
  assert.ok(runtime && builder);
  const copies = of(runtime, 'COPY').map((i) => parseCopy(i.args));
  assert.ok(copies.length > 0);
  for (const c of copies) {
    assert.equal(c.from, builder.name, `runtime COPY must come from the builder: ${c.sources}`);
    for (const src of c.sources) {
      assert.ok(src.startsWith(`${BUILDER_OUT}/`), `${src}: only the assembled tree is copied`);
      const local = join(out, src.slice(BUILDER_OUT.length));
      assert.ok(existsSync(local), `COPY source ${src} missing: ${local}`);
    }
  }
  // What the runtime needs at the paths native.ts derives from the package root.
  for (const p of [
    'app/package.json',
    'app/dist/src/main.js',
    'app/bpf/audio_tc.bpf.o',
    'app/native/build/Release/alt_native.node',
  ]) {
    assert.ok(existsSync(join(out, p)), `${p} missing from the tree`);
  }
  // Dev dependencies pruned: the build-only tools, which nothing at run time depends on, are gone
  // (others, such as @grpc/grpc-js, are also dependencies of production packages and stay).
  for (const dev of ['typescript', 'prettier', 'node-gyp']) {
    assert.ok(existsSync(join(REPO, 'node_modules', dev)), `${dev} missing from the checkout`);
    assert.ok(!existsSync(join(out, 'app/node_modules', dev)), `dev dependency ${dev} shipped`);
  }
});

test("the addon's shared-library needs are met by the runtime base or shipped beside it", (t) => {
  if (!requireRoot(t)) return;
  const out = builtTree();
  const dir = join(out, 'app/native/build/Release');
  const addon = join(dir, 'alt_native.node');
  const { needed, runpath } = readelfDynamic(addon);
  assert.deepEqual(runpath, ['$ORIGIN'], 'the addon finds its shipped libraries beside itself');
  const shipped = new Set<string>(SHIPPED_LIBS);
  for (const lib of needed) {
    assert.ok(
      RUNTIME_BASE_LIBS.has(lib) || (shipped.has(lib) && existsSync(join(dir, lib))),
      `addon needs ${lib}: neither in the runtime base nor shipped beside it`,
    );
  }
  // The shipped libraries' own needs, resolved by soname against what is already loaded.
  for (const lib of SHIPPED_LIBS) {
    for (const dep of readelfDynamic(join(dir, lib)).needed) {
      assert.ok(RUNTIME_BASE_LIBS.has(dep) || needed.includes(dep), `${lib} needs ${dep}`);
    }
  }
  // And the loader really resolves them from the tree, not from the build machine.
  const ldd = execFileSync('ldd', [addon], { encoding: 'utf8' });
  for (const lib of SHIPPED_LIBS) {
    assert.match(ldd, new RegExp(`${lib.replace(/\./g, '\\.')} => ${dir}/\\.?/?${lib}`));
  }
  // The shipped node binary (the image's only executable) needs nothing beyond the base.
  const node = join(out, 'usr/local/bin/node');
  for (const lib of readelfDynamic(node).needed) {
    assert.ok(RUNTIME_BASE_LIBS.has(lib), `node needs ${lib}, absent from the runtime base`);
  }
  const caps = execFileSync('getcap', [node], { encoding: 'utf8' });
  assert.match(caps, /cap_net_admin/);
  assert.match(caps, /cap_perfmon/);
  assert.match(caps, /cap_bpf/);
  assert.match(caps, /=ep/);
});

interface Run {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
}

function startTree(out: string, env: Record<string, string>): Run {
  // The tree's own node and entry point, from /, with no PATH into the checkout.
  const child = spawn(join(out, 'usr/local/bin/node'), [join(out, 'app/dist/src/main.js')], {
    cwd: '/',
    env: { PATH: '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, stdout: [], stderr: [] };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => run.stdout.push(d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => run.stderr.push(d));
  return run;
}

async function exitOf(run: Run): Promise<number | null> {
  if (run.child.exitCode !== null) return run.child.exitCode;
  const [code] = (await once(run.child, 'exit')) as [number | null];
  return code;
}

test('the assembled tree runs without dev dependencies: bad configuration exits 2', async (t) => {
  if (!requireRoot(t)) return;
  const out = builtTree();
  const run = startTree(out, { INTERFACE: 'lo', METRICS_PORT: '70000' });
  assert.equal(await exitOf(run), 2, `stderr:\n${run.stderr.join('')}`);
  const err = run.stderr.join('');
  assert.match(err, /invalid configuration/);
  assert.match(err, /METRICS_PORT="70000" is invalid/);
});

test('the assembled tree becomes ready on lo and exits 0 on SIGTERM', async (t) => {
  if (!requireRoot(t)) return;
  const out = builtTree();
  const port = 19420 + (process.pid % 50);
  const run = startTree(out, { INTERFACE: 'lo', METRICS_PORT: String(port) });
  t.after(() => run.child.kill('SIGKILL'));
  const deadline = Date.now() + 20_000;
  let status = 0;
  while (Date.now() < deadline && run.child.exitCode === null) {
    status = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(status, 200, `never ready; stdout:\n${run.stdout.join('')}\n${run.stderr.join('')}`);
  assert.match(run.stdout.join(''), /"msg":"attached"/);
  run.child.kill('SIGTERM');
  assert.equal(await exitOf(run), 0, `stderr:\n${run.stderr.join('')}`);
});
