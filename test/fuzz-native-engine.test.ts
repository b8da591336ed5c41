/**
 * Fuzzes the production signature engine (native/signature/, SignatureEngine::ingest/expire)
 * outside the addon, under AddressSanitizer and UndefinedBehaviorSanitizer:
 *
 *  - native/signature/fuzz_engine.cc is compiled with the engine sources binding.gyp names
 *    (g++ or clang++, -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all) into a
 *    temp dir under dist/ and run for FUZZ_ITERATIONS seeded inputs. Each input is a tape of
 *    choices: records with contradictory headers, TCP streams of HTTP heads, chunked bodies,
 *    WebSocket frames with 64-bit lengths and text runs, cut into segments with gaps, impossible
 *    timestamps, small max_streams. The harness abort()s on any broken invariant (streams_active > max_streams,
 *    unbalanced counters, a record naming another flow, the engine's heap past the bound set by
 *    max_streams and the window); any sanitizer report, leak or non-zero exit fails the test.
 *  - the same binary replays mutated raw records (test/support/event-mutator.ts) and every
 *    signature must equal the TypeScript reference engine's, in order, with equal counters: on
 *    hostile input too, the engine computes what the reference specifies.
 *
 * No root needed. Without a C++ compiler the test fails under CI=true and skips loudly otherwise.
 *
 * Runs (after `npx tsc -p tsconfig.json`):
 *   node --test dist/test/fuzz-native-engine.test.js                          2,000 inputs, ~40 s
 *   FUZZ_ITERATIONS=200000 node --test dist/test/fuzz-native-engine.test.js   longer, on demand
 *   FUZZ_SEED=0x1234abcd node --test dist/test/fuzz-native-engine.test.js     replay a failure
 * The seed is printed first. On a failure the harness names the iteration and the command that
 * reproduces it by hand (`fuzz_engine ITERATIONS SEED`); the build stays in the dir it names.
 *
 * Coverage-guided, on demand (clang's libFuzzer, installed with clang here; not used in CI):
 *   clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -DALT_FUZZ_ENGINE \
 *     -DALT_LIBFUZZER native/signature/fuzz_engine.cc native/signature/engine.cc -o /tmp/fe_lf
 *   mkdir -p /tmp/fe_corpus && /tmp/fe_lf -max_total_time=600 -max_len=65536 /tmp/fe_corpus
 * A crash leaves crash-<sha1> in the working directory; `/tmp/fe_lf crash-<sha1>` replays it.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { SigRecordLayout, SIG_RECORD_SIZE } from '../src/abi.js';
import type { SignatureAlgorithm } from '../src/signature/index.js';
import {
  AudioEventMutator,
  ReferenceEngine,
  type ReferenceEngineConfig,
} from './support/event-mutator.js';
import { FuzzRng, fuzzSettings } from './support/fuzz-random.js';
import { concat } from './support/tcp-streams.js';

const DEFAULT_ITERATIONS = 2000;
/** Scenarios of mutated records replayed per configuration in the parity check. */
const PARITY_SCENARIOS = 500;

const {
  seed: SEED,
  iterations: ITERATIONS,
  replay: REPLAY,
} = fuzzSettings('fuzz-native-engine', DEFAULT_ITERATIONS);

const NATIVE = new URL('../../native/', import.meta.url).pathname;
/** Build products go under dist/ (the machine's /tmp is shared with other work). */
const DIST = new URL('../', import.meta.url).pathname;

/** The first C++ compiler that answers, or undefined. */
function findCompiler(): string | undefined {
  for (const cc of [process.env.CXX, 'c++', 'g++', 'clang++']) {
    if (!cc) continue;
    const r = spawnSync(cc, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return cc;
  }
  return undefined;
}

interface GypTarget {
  sources: string[];
  cflags_cc?: string[];
}

/**
 * The engine's sources and C++ flags as binding.gyp builds them into the addon: its signature/
 * sources (the addon's own files need Node and libbpf, and the engine needs neither), the
 * `ls` command expansion done here, and the language flags without the optimisation level.
 */
function engineBuild(): { sources: string[]; flags: string[] } {
  const text = readFileSync(join(NATIVE, 'binding.gyp'), 'utf8');
  const gyp = JSON.parse(text.replace(/^\s*#.*$/gm, '')) as { targets: GypTarget[] };
  const target = gyp.targets[0];
  const sources: string[] = [];
  for (const s of target.sources) {
    const glob = /^<!@\(ls -1 (signature\/)\*\.cc\)$/.exec(s);
    if (glob) {
      for (const f of readdirSync(join(NATIVE, glob[1])).sort())
        if (f.endsWith('.cc')) sources.push(join(NATIVE, glob[1], f));
    } else if (s.startsWith('signature/')) {
      sources.push(join(NATIVE, s));
    }
  }
  const flags = (target.cflags_cc ?? []).filter((f) => !/^-O/.test(f));
  return { sources, flags };
}

/** The sanitizers' reports, and the harness's own. */
const SANITIZER_REPORT =
  /ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer|invariant violated/;

/** Runs a command to completion; rejects with its output when it fails. */
function runTool(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')}\nfailed (${code}):\n${output}`));
    });
  });
}

class FuzzBinary {
  readonly bin: string;
  compileSeconds = 0;
  private failed = false;

  private constructor(readonly dir: string) {
    this.bin = join(dir, 'fuzz_engine');
  }

  /** Compiles each source on its own (in parallel: the sanitizers make this slow), then links. */
  static async build(cc: string): Promise<FuzzBinary> {
    const b = new FuzzBinary(mkdtempSync(join(DIST, 'fuzz-engine-')));
    const { sources, flags } = engineBuild();
    assert.ok(
      sources.some((s) => s.endsWith('/fuzz_engine.cc')) &&
        sources.some((s) => s.endsWith('/engine.cc')),
      `binding.gyp no longer names the engine sources: ${sources.join(' ')}`,
    );
    const sanitize = ['-fsanitize=address,undefined', '-fno-sanitize-recover=all'];
    const compile = [...flags, '-Werror', '-O1', '-g', '-fno-omit-frame-pointer', ...sanitize];
    const t0 = performance.now();
    const objects = sources.map((_, i) => join(b.dir, `${i}.o`));
    await Promise.all(
      sources.map((src, i) =>
        runTool(cc, [...compile, '-DALT_FUZZ_ENGINE', '-c', src, '-o', objects[i]]),
      ),
    );
    await runTool(cc, [...sanitize, ...objects, '-o', b.bin]);
    b.compileSeconds = (performance.now() - t0) / 1000;
    return b;
  }

  run(args: string[], timeoutMs: number): { stdout: string; stderr: string } {
    const r = spawnSync(this.bin, args, {
      encoding: 'utf8',
      timeout: timeoutMs,
      maxBuffer: 64 << 20,
      env: {
        ...process.env,
        ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1:halt_on_error=1:allocator_may_return_null=0',
        UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
      },
    });
    const what = `${this.bin} ${args.join(' ')}`;
    if (r.error) throw new Error(`${what}: ${r.error.message} (${REPLAY})`);
    const report = SANITIZER_REPORT.exec(r.stderr);
    if (r.status !== 0 || r.signal !== null || report) {
      this.failed = true;
      throw new Error(
        `${what} exited ${r.status ?? r.signal}${report ? `, reported "${report[0]}"` : ''} ` +
          `(${REPLAY}; binary kept in ${this.dir}):\n${r.stderr.slice(-20000)}`,
      );
    }
    return { stdout: r.stdout, stderr: r.stderr };
  }

  /** Removes the build, unless a run failed: then it stays to reproduce the failure by hand. */
  close(): void {
    if (!this.failed) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Present, or a loud skip (a failure under CI, which must run it). */
function requireCompiler(t: TestContext, cc: string | undefined): cc is string {
  if (cc !== undefined) return true;
  const reason = 'no C++ compiler (c++, g++ or clang++) to build the fuzz harness';
  if (process.env.CI === 'true') assert.fail(`${t.name}: ${reason}, and CI must run it`);
  console.warn(`SKIPPED ${t.name}: ${reason}`);
  t.skip(reason);
  return false;
}

interface FuzzSummary {
  seed: number;
  iterations: number;
  seconds: number;
  events: number;
  bytes: number;
  signatures: number;
  streamsEvicted: number;
  streamsExpired: number;
  streamsEnded: number;
  restarts: number;
  heapPeakShare: number;
  longLived: { streamsActive: number; heapPeak: number; heapBound: number };
}

interface ReplayStats {
  records: number;
  bytes: number;
  windows: number;
  signatures: number;
  restarts: number;
  streamsEnded: number;
  streamsActive: number;
}

const ALGORITHM_ID: Record<SignatureAlgorithm, number> = { xxhash: 0, crc32: 1, rolling_hash: 2 };

/** [u32 length][u32 0][record] entries padded to 8 bytes: the harness's replay input. */
function replayFile(events: Uint8Array[]): Uint8Array {
  return concat(
    events.map((ev) => {
      const entry = new Uint8Array(8 + ((ev.length + 7) & ~7));
      new DataView(entry.buffer).setUint32(0, ev.length, true);
      entry.set(ev, 8);
      return entry;
    }),
  );
}

/** A record as the reference writes it: stream key (hex), signature, encoding, timestamp. */
function recordText(rec: Uint8Array, at: number): string {
  const L = SigRecordLayout;
  const v = new DataView(rec.buffer, rec.byteOffset + at, SIG_RECORD_SIZE);
  const key =
    Buffer.from(rec.subarray(at + L.saddr, at + L.dport + 2)).toString('hex') +
    Buffer.from(rec.subarray(at + L.ifindex, at + L.protocol + 1)).toString('hex');
  const sig = (BigInt(v.getUint32(L.sigHi, true)) << 32n) | BigInt(v.getUint32(L.sigLo, true));
  const ts = Number(v.getBigUint64(L.tsNs, true));
  return `${key} ${sig.toString(16)} enc=${rec[at + L.encoding]} ts=${ts}`;
}

const PARITY_CONFIGS: ReferenceEngineConfig[] = [
  {
    algorithm: 'xxhash',
    windowSize: 256,
    silenceThreshold: 256,
    maxStreams: 4,
    streamTimeoutNs: 1_000_000_000n,
  },
  { algorithm: 'crc32', windowSize: 32, silenceThreshold: 0, maxStreams: 2, streamTimeoutNs: 0n },
  {
    algorithm: 'rolling_hash',
    windowSize: 1000,
    silenceThreshold: 70000,
    maxStreams: 64,
    streamTimeoutNs: 5_000_000n,
  },
];

describe('fuzz: the C++ signature engine under ASan and UBSan', () => {
  const cc = findCompiler();
  let binary: FuzzBinary | undefined;

  before(async () => {
    if (cc !== undefined) binary = await FuzzBinary.build(cc);
  });
  after(() => binary?.close());

  it('survives every hostile record and stream within its bounds', (t) => {
    if (!requireCompiler(t, cc)) return;
    const b = binary as FuzzBinary;
    // About 20 ms per input under the sanitizers here; generous for a loaded CI machine.
    const timeoutMs = 120_000 + ITERATIONS * 200;
    const { stdout } = b.run([String(ITERATIONS), String(SEED)], timeoutMs);
    const lines = stdout.trim().split('\n');
    const summary = JSON.parse(lines[lines.length - 1]) as FuzzSummary;
    assert.equal(summary.iterations, ITERATIONS);
    assert.equal(summary.seed, SEED);
    if (ITERATIONS >= 100) {
      // The run reached what it is meant to: eviction, expiry, stream ends, restarts, output.
      assert.ok(summary.events > ITERATIONS && summary.signatures > 0, 'events and signatures');
      assert.ok(summary.streamsEvicted > 0 && summary.streamsExpired > 0, 'eviction and expiry');
      assert.ok(summary.streamsEnded > 0 && summary.restarts > 0, 'stream ends and restarts');
    }
    assert.ok(summary.heapPeakShare <= 1, `heap peak ${summary.heapPeakShare} of its bound`);
    assert.ok(summary.longLived.streamsActive <= 4);
    assert.ok(summary.longLived.heapPeak <= summary.longLived.heapBound);
    console.log(
      `fuzz-native-engine: ${ITERATIONS} inputs, ${summary.events} events, ` +
        `${(summary.bytes / 1e6).toFixed(0)} MB, ${summary.signatures} signatures in ` +
        `${summary.seconds.toFixed(1)} s (compile ${b.compileSeconds.toFixed(1)} s); ` +
        `${summary.streamsEvicted} evicted, ${summary.streamsExpired} expired, ` +
        `${summary.streamsEnded} ended, ${summary.restarts} restarts; heap peak ` +
        `${(summary.heapPeakShare * 100).toFixed(0)}% of its bound`,
    );
  });

  for (const cfg of PARITY_CONFIGS) {
    const label = `${cfg.algorithm} W=${cfg.windowSize} threshold=${cfg.silenceThreshold} streams=${cfg.maxStreams} timeout=${cfg.streamTimeoutNs}`;
    it(`signs mutated records exactly as the TypeScript reference (${label})`, (t) => {
      if (!requireCompiler(t, cc)) return;
      const b = binary as FuzzBinary;
      const rng = new FuzzRng(SEED ^ cfg.windowSize);
      // Timestamps below 2^53: the reference's are numbers.
      const mutator = new AudioEventMutator(rng, { maxTimestampNs: (1n << 53n) - 1n });
      const events: Uint8Array[] = [];
      for (let i = 0; i < PARITY_SCENARIOS; i++) events.push(...mutator.scenario());
      const reference = new ReferenceEngine(cfg);
      const want = events.flatMap((ev) =>
        reference
          .ingest(ev)
          .map((r) => `${r.key} ${r.sig.toString(16)} enc=${r.encoding} ts=${r.tsNs}`),
      );

      const inFile = join(b.dir, 'events.bin');
      const outFile = join(b.dir, 'sigs.bin');
      writeFileSync(inFile, replayFile(events));
      const args = [
        'replay',
        inFile,
        outFile,
        String(ALGORITHM_ID[cfg.algorithm]),
        String(cfg.windowSize),
        String(cfg.silenceThreshold),
        String(cfg.maxStreams),
        String(cfg.streamTimeoutNs),
      ];
      const { stdout } = b.run(args, 120_000);
      const stats = JSON.parse(stdout.trim()) as ReplayStats;
      const out = new Uint8Array(readFileSync(outFile));
      const got: string[] = [];
      for (let at = 0; at < out.length; at += SIG_RECORD_SIZE) got.push(recordText(out, at));

      const where = `${REPLAY}, ${label}`;
      const first = got.findIndex((g, i) => g !== want[i]);
      assert.equal(
        first === -1 && got.length === want.length,
        true,
        `records differ from the reference at ${first === -1 ? got.length : first}: engine ` +
          `${got[first] ?? '(none)'} vs reference ${want[first] ?? '(none)'} (${where})`,
      );
      const r = reference.stats;
      assert.deepEqual(
        [stats.bytes, stats.windows, stats.signatures, stats.restarts, stats.streamsEnded],
        [r.bytes, r.windows, r.signatures, r.restarts, r.streamsEnded],
        `bytes, windows, signatures, restarts, ended (${where})`,
      );
      assert.equal(stats.streamsActive, reference.streamsActive);
      assert.ok(want.length > 100, `${want.length} signatures compared`);
      console.log(
        `fuzz-native-engine parity ${label}: ${events.length} records, ${want.length} ` +
          `signatures, ${r.restarts} restarts, ${r.streamsEvicted} evicted, ${r.streamsExpired} ` +
          `expired: identical`,
      );
    });
  }
});
