/**
 * Attaching to real interfaces. Each run creates its own veth pair: one end (`altt<pid>a`, no IPv4
 * address) stays in this process's namespace so the classifier can attach to it, the peer moves into
 * a private network namespace with a 10.x address. Traffic:
 *   ingress: UDP sent from inside the namespace toward a static, unanswered neighbour;
 *   egress: UDP sent from here to a link-local neighbour on the veth (fe80::, scoped to it).
 * Both neighbours have made-up MAC addresses, so nothing is delivered or routed anywhere: the
 * frames are seen by TC and dropped.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { after, before, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Direction } from '../src/abi.js';
import { Classifier, NativeError, splitRawEvents, type ClassifierOptions } from '../src/native.js';
import { processTcxLinks } from './lab/attachments.js';
import { requireRoot, rootUnavailable } from './support/root.js';
import { decodeAudioEvent, type AudioEventRecord } from './support/audio-event.js';

const ID = process.pid % 100000;
const NS = `altt${ID}`;
const IF_A = `altt${ID}a`; // ours, in this namespace
const IF_B = `altt${ID}b`; // peer, inside NS
const SUBNET = `10.217.${ID % 250}`;
const NS_ADDR = `${SUBNET}.2`;
const FAKE_V4_NEIGHBOUR = `${SUBNET}.1`;
const LL_OURS = 'fe80::a17:1';
const LL_FAKE_NEIGHBOUR = 'fe80::a17:2';
const AUDIO_PORT = 47004;
const SPORT = 47005;
const PAYLOAD_LEN = 200;
const TC_HANDLE = 0xa17;
const TC_PRIORITY = 0xa17;
const OUR_PROGS = new Set(['tc_ingress', 'tc_egress']);

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function shQuiet(cmd: string, args: string[]): void {
  try {
    sh(cmd, args);
  } catch {
    // cleanup of something already gone
  }
}

function inNs(cmd: string, args: string[]): string {
  return sh('ip', ['netns', 'exec', NS, cmd, ...args]);
}

function createVeth(a: string, b: string): void {
  sh('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
  sh('ip', ['link', 'set', b, 'netns', NS]);
  sh('ip', ['link', 'set', a, 'up']);
  inNs('ip', ['link', 'set', b, 'up']);
}

function setUp(): void {
  sh('ip', ['netns', 'add', NS]);
  createVeth(IF_A, IF_B);
  inNs('ip', ['addr', 'add', `${NS_ADDR}/24`, 'dev', IF_B]);
  inNs('ip', [
    'neigh',
    'add',
    FAKE_V4_NEIGHBOUR,
    'lladdr',
    '02:00:0a:17:00:01',
    'dev',
    IF_B,
    'nud',
    'permanent',
  ]);
  sh('ip', ['-6', 'addr', 'add', `${LL_OURS}/64`, 'dev', IF_A, 'nodad']);
  sh('ip', [
    '-6',
    'neigh',
    'add',
    LL_FAKE_NEIGHBOUR,
    'lladdr',
    '02:00:0a:17:00:02',
    'dev',
    IF_A,
    'nud',
    'permanent',
  ]);
}

function tearDown(): void {
  shQuiet('ip', ['link', 'del', IF_A]);
  shQuiet('ip', ['netns', 'del', NS]);
}

function ifindexOf(name: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim());
}

/** Attach types of the TCX links this process holds on an interface (46 ingress, 47 egress). */
function ourTcxLinks(ifindex: number): number[] {
  return processTcxLinks(process.pid)
    .filter((l) => l.ifindex === ifindex)
    .map((l) => l.attachType)
    .sort();
}

interface NetTc {
  kind: string; // clsact/ingress, clsact/egress
  name?: string;
  id?: number;
}

/** tc attachments on an interface as bpftool sees them. */
function bpftoolTc(dev: string): NetTc[] {
  const out = JSON.parse(sh('bpftool', ['-j', 'net', 'show', 'dev', dev])) as { tc?: NetTc[] }[];
  return out.flatMap((o) => o.tc ?? []);
}

function ourTcFilters(dev: string): string[] {
  return bpftoolTc(dev)
    .map((f) => `${f.kind} ${(f.name ?? '').replace(/:\[\d+\]$/, '')}`) // "tc_ingress:[593]"
    .filter((line) => OUR_PROGS.has(line.split(' ')[1]))
    .sort();
}

/** `tc filter show` lines for one hook (empty when there is no clsact qdisc). */
function tcFilters(dev: string, hook: 'ingress' | 'egress'): string {
  try {
    return sh('tc', ['filter', 'show', 'dev', dev, hook]);
  } catch {
    return '';
  }
}

function hasClsact(dev: string): boolean {
  return sh('tc', ['qdisc', 'show', 'dev', dev]).includes('clsact');
}

class Tap {
  readonly events: AudioEventRecord[] = [];
  readonly classifier: Classifier;

  constructor(overrides: Partial<ClassifierOptions> = {}) {
    this.classifier = Classifier.open({
      ringBufferPages: 64,
      audioPorts: [{ from: AUDIO_PORT, to: AUDIO_PORT }],
      algorithm: 'xxhash',
      windowSize: 256,
      silenceThreshold: 10,
      maxFlows: 64,
      flowTimeoutMs: 10_000,
      onSignatures: () => {},
      onRawEvents: (buf, count) => {
        for (const b of splitRawEvents(buf, count)) this.events.push(decodeAudioEvent(b));
      },
      ...overrides,
    });
  }

  /** Waits (bounded) until `want` events of a direction arrived; returns those seen. */
  async waitFor(direction: number, want: number): Promise<AudioEventRecord[]> {
    const matching = (): AudioEventRecord[] =>
      this.events.filter((e) => e.direction === direction && e.dport === AUDIO_PORT);
    for (let i = 0; i < 40 && matching().length < want; i++) {
      await this.classifier.drain();
      if (matching().length < want) await sleep(50);
    }
    return matching();
  }
}

const SENDER = `
const d = require('node:dgram').createSocket('udp4');
const buf = Buffer.alloc(${PAYLOAD_LEN}, 0x11);
let left = Number(process.argv[1]);
d.bind(${SPORT}, () => {
  const next = () => (left-- > 0 ? d.send(buf, ${AUDIO_PORT}, '${FAKE_V4_NEIGHBOUR}', next) : d.close());
  next();
});`;

/** UDP from inside the namespace: crosses the veth into IF_A's ingress. */
function sendIngress(count: number): void {
  inNs(process.execPath, ['-e', SENDER, String(count)]);
}

/** UDP from here to the link-local neighbour: leaves through IF_A's egress. */
async function sendEgress(count: number): Promise<void> {
  const s = createSocket('udp6');
  await new Promise<void>((resolve) => s.bind(SPORT, resolve));
  const buf = Buffer.alloc(PAYLOAD_LEN, 0x22);
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) =>
      s.send(buf, AUDIO_PORT, `${LL_FAKE_NEIGHBOUR}%${IF_A}`, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  await new Promise<void>((resolve) => s.close(() => resolve()));
}

let ready = false;

before(() => {
  if (rootUnavailable() !== undefined) return;
  tearDown(); // leftovers of a killed earlier run with the same pid
  setUp();
  ready = true;
});

after(() => {
  if (ready) tearDown();
});

const taps: Tap[] = [];
after(() => {
  for (const t of taps) t.classifier.close();
});

function tap(t: TestContext, overrides: Partial<ClassifierOptions> = {}): Tap | undefined {
  if (!requireRoot(t)) return undefined;
  assert.ok(ready, 'veth pair and namespace were set up');
  const x = new Tap(overrides);
  taps.push(x);
  return x;
}

test('TCX attach by name: both hooks linked, real traffic classified both ways, detach clean', async (t) => {
  const x = tap(t);
  if (!x) return;
  const c = x.classifier;
  const ifindex = ifindexOf(IF_A);

  const res = c.attach(IF_A);
  assert.deepEqual(res, { ifindex, name: IF_A, mode: 'tcx' });
  assert.deepEqual(c.attach(IF_A), res, 'attach is idempotent');
  assert.deepEqual(c.attachedInterfaces(), [res]);
  assert.deepEqual(ourTcxLinks(ifindex), [46, 47], 'TCX ingress and egress links');
  assert.deepEqual(ourTcFilters(IF_A), [], 'no tc filter in TCX mode');

  sendIngress(5);
  const ingress = await x.waitFor(Direction.Ingress, 5);
  assert.equal(ingress.length, 5);
  for (const e of ingress) {
    assert.equal(e.ifindex, ifindex);
    assert.equal(e.family, 4);
    assert.equal(e.sport, SPORT);
    assert.equal(e.payloadLen, PAYLOAD_LEN);
    assert.deepEqual([...e.saddr.subarray(0, 4)], NS_ADDR.split('.').map(Number));
  }
  await sendEgress(3);
  const egress = await x.waitFor(Direction.Egress, 3);
  assert.equal(egress.length, 3);
  for (const e of egress) {
    assert.equal(e.ifindex, ifindex);
    assert.equal(e.family, 6);
    assert.equal(e.payloadLen, PAYLOAD_LEN);
  }

  c.detach(IF_A);
  c.detach(IF_A); // idempotent
  assert.deepEqual(c.attachedInterfaces(), []);
  assert.deepEqual(ourTcxLinks(ifindex), []);
  const packets = c.stats().kernel[0];
  sendIngress(2);
  await sleep(100);
  assert.equal(c.stats().kernel[0], packets, 'no packet reaches a detached classifier');
});

test('tc mode: our filters at the fixed position, a second instance removes them as stale, a foreign filter stays', async (t) => {
  const first = tap(t);
  if (!first) return;
  // A foreign filter (classic BPF that never matches) on a qdisc that is not ours.
  sh('tc', ['qdisc', 'add', 'dev', IF_A, 'clsact']);
  sh('tc', [
    'filter',
    'add',
    'dev',
    IF_A,
    'ingress',
    'pref',
    '100',
    'handle',
    '7',
    'bpf',
    'bytecode',
    '1,6 0 0 0,',
  ]);

  assert.equal(first.classifier.attach(IF_A, { mode: 'tc' }).mode, 'tc');
  assert.deepEqual(ourTcFilters(IF_A), ['clsact/egress tc_egress', 'clsact/ingress tc_ingress']);
  for (const hook of ['ingress', 'egress'] as const) {
    const text = tcFilters(IF_A, hook);
    assert.match(
      text,
      new RegExp(`pref ${TC_PRIORITY} bpf .*handle 0x${TC_HANDLE.toString(16)} .*direct-action`),
    );
  }
  sendIngress(3);
  assert.equal((await first.waitFor(Direction.Ingress, 3)).length, 3, 'the tc path classifies');

  // As after a crash: a new instance finds the filters by position and program name.
  const second = tap(t);
  assert.ok(second);
  assert.equal(second.classifier.removeStale(IF_A), 2);
  assert.deepEqual(ourTcFilters(IF_A), []);
  assert.match(tcFilters(IF_A, 'ingress'), /pref 100 bpf .*handle 0x7 /, 'foreign filter kept');
  assert.equal(second.classifier.removeStale(IF_A), 0);

  // The first instance's detach finds its filters gone and leaves the rest alone.
  first.classifier.detach(IF_A);
  assert.match(tcFilters(IF_A, 'ingress'), /handle 0x7 /);
  assert.ok(hasClsact(IF_A), 'a qdisc we did not create stays');
  sh('tc', ['qdisc', 'del', 'dev', IF_A, 'clsact']);
});

test('tc mode: a clsact qdisc we created goes when left empty, stays when others filter there', async (t) => {
  const x = tap(t);
  if (!x) return;
  const c = x.classifier;
  assert.ok(!hasClsact(IF_A));
  c.attach(IF_A, { mode: 'tc' });
  assert.ok(hasClsact(IF_A));
  c.detach(IF_A);
  assert.ok(!hasClsact(IF_A), 'our own empty qdisc removed');

  c.attach(IF_A, { mode: 'tc' });
  sh('tc', [
    'filter',
    'add',
    'dev',
    IF_A,
    'egress',
    'pref',
    '100',
    'handle',
    '9',
    'bpf',
    'bytecode',
    '1,6 0 0 0,',
  ]);
  c.detach(IF_A);
  assert.deepEqual(ourTcFilters(IF_A), []);
  assert.ok(hasClsact(IF_A), 'qdisc kept for the other filter');
  assert.match(tcFilters(IF_A, 'egress'), /handle 0x9 /);
  sh('tc', ['qdisc', 'del', 'dev', IF_A, 'clsact']);
});

test('close() detaches everything, TCX and tc alike', async (t) => {
  const x = tap(t);
  if (!x) return;
  const extra = `altt${ID}c`;
  createVeth(extra, `altt${ID}d`);
  try {
    x.classifier.attach(IF_A);
    x.classifier.attach(extra, { mode: 'tc' });
    assert.equal(x.classifier.attachedInterfaces().length, 2);
    x.classifier.close();
    x.classifier.close(); // idempotent
    assert.deepEqual(ourTcxLinks(ifindexOf(IF_A)), []);
    assert.deepEqual(ourTcFilters(extra), []);
    assert.ok(!hasClsact(extra));
    assert.deepEqual(x.classifier.attachedInterfaces(), []);
  } finally {
    shQuiet('ip', ['link', 'del', extra]);
  }
});

test('detach tolerates an interface deleted while attached', async (t) => {
  const x = tap(t);
  if (!x) return;
  for (const mode of ['tcx', 'tc'] as const) {
    const gone = `altt${ID}e`;
    createVeth(gone, `altt${ID}f`);
    assert.equal(x.classifier.attach(gone, { mode }).mode, mode);
    sh('ip', ['link', 'del', gone]);
    x.classifier.detach(gone);
    assert.deepEqual(x.classifier.attachedInterfaces(), [], mode);
  }
});

test('attaching a missing interface fails with one clear line', async (t) => {
  const x = tap(t);
  if (!x) return;
  assert.throws(
    () => x.classifier.attach(`altt${ID}zz`),
    (e: unknown) =>
      e instanceof NativeError &&
      e.code === 'ENODEV' &&
      e.errno < 0 &&
      /no such network interface/.test(e.message) &&
      !e.message.includes('\n'),
  );
});
