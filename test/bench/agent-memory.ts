/**
 * Resident memory of the real agent process with MAX_FLOWS=10000 flows active, against the same
 * agent idle (baseline, same run). Traffic: a network namespace sends noise-like audio on 10000
 * UDP flows through a veth whose host side the agent watches; a static neighbour entry sends the
 * packets out without any peer, so they end on the host-side veth and go nowhere else.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './types.js';

const FLOWS = 10_000;
const PACKETS_PER_FLOW = 4; // 4 x 320 bytes: enough for a warm Gear state and signatures
const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));
const tag = `${process.pid % 10000}`;
const NS = `alt-mem-${tag}`;
const HOST_IF = `altmem${tag}`;
const POD_IP = '10.251.77.1';
const GHOST_IP = '10.251.77.2';
const PORT = 19471;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

function setUp(): void {
  tearDown();
  ip('netns', 'add', NS);
  ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS);
  ip('link', 'set', HOST_IF, 'up');
  ip('-n', NS, 'addr', 'add', `${POD_IP}/24`, 'dev', 'eth0');
  ip('-n', NS, 'link', 'set', 'eth0', 'up');
  ip('-n', NS, 'neigh', 'add', GHOST_IP, 'lladdr', '02:00:00:00:00:02', 'dev', 'eth0');
}

function tearDown(): void {
  for (const args of [
    ['link', 'del', HOST_IF],
    ['netns', 'del', NS],
  ]) {
    try {
      ip(...args);
    } catch {
      // not there
    }
  }
}

/** Sends PACKETS_PER_FLOW rounds over FLOWS destination ports, paced to spare the ring buffer. */
const SENDER = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
let seed = 12345;
const payload = Buffer.alloc(320);
function fill() { for (let i = 0; i < payload.length; i++) { seed = (seed * 1103515245 + 12345) >>> 0; payload[i] = seed >>> 24; } }
async function main() {
  for (let round = 0; round < ${PACKETS_PER_FLOW}; round++) {
    for (let f = 0; f < ${FLOWS}; f++) {
      fill();
      await new Promise((r) => s.send(payload, 20000 + f, '${GHOST_IP}', r));
      if (f % 500 === 499) await new Promise((r) => setTimeout(r, 20));
    }
  }
  s.close();
}
main();
`;

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1]);
  return kb / 1024;
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${PORT}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  return Number(line?.split(' ').at(-1));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitHealthy(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${PORT}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error('agent did not become ready');
}

export async function benchAgentMemory(): Promise<BenchRow[]> {
  setUp();
  const agent = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      INTERFACE: HOST_IF,
      METRICS_PORT: String(PORT),
      MAX_FLOWS: String(FLOWS),
      LOG_LEVEL: 'warn',
    },
    stdio: 'ignore',
  });
  try {
    await waitHealthy();
    await sleep(1000);
    const idle = rssMiB(agent.pid ?? -1);
    execFileSync('ip', ['netns', 'exec', NS, process.execPath, '-e', SENDER], { stdio: 'pipe' });
    await sleep(2000);
    const flows = await metric('audio_tracker_flows_tracked');
    const lost = await metric('audio_tracker_events_lost_total');
    const busy = rssMiB(agent.pid ?? -1);
    return [
      { name: 'agent RSS idle', value: round1(idle), unit: 'MiB' },
      {
        name: `agent RSS with ${flows} flows tracked (target < 150 MB)`,
        value: round1(busy),
        unit: 'MiB',
        baseline: 'idle agent',
        ratio: busy / idle,
      },
      { name: 'events lost while loading the flows', value: lost, unit: 'events' },
    ];
  } finally {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
    tearDown();
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
