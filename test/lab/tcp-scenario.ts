/**
 * The TCP lab scenario (issue 3, docs/lab.md "TCP pipelines"): five audio pipelines over TCP and
 * a bulk non-audio transfer, each source -> relay -> sink in its own pods:
 *
 *   tcp      L16 16 kHz, 100 ms writes -> relay holds 20 ms, re-chunks 100-3000 B -> sink
 *   gateway  RTP PCMU over UDP (the lab's sender.js) -> gateway holds 20 ms -> same bytes over TCP
 *   ws       WebSocket client, masked binary frames of L16 16 kHz -> relay (server) holds 20 ms
 *            -> relay as a client (masked, new keys, some messages split) -> sink (server)
 *   sse      SSE source, JSON events with 100 ms of hex L16 -> relay holds each event 2 s and
 *            re-serves re-built JSON -> sink
 *   wsjson   WebSocket client, JSON text frames with base64 mu-law (160 B per event) -> relay
 *            holds 60 ms, re-encodes in two chunks of other sizes -> sink (client, unmasked)
 *   bulk     random bytes at full speed on a non-audio port, beside the audio
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Encoding } from '../../src/abi.js';
import { signPackets, type SignerConfig } from '../../src/signature/index.js';
import { LabProcess, type Lab, type ProcessExit } from './lab.js';
import { LATENCY_BUCKETS } from './scenario.js';
import { streamFrames, streamSpeechSeconds, type StreamFormat } from './tcp-audio.js';

export const TCP_AUDIO_PORTS = '41000-41199';
export const BULK_PORT = 45000;
export const BULK_SPORT = 45001;

export type TcpPipelineKey = 'tcp' | 'gateway' | 'ws' | 'sse' | 'wsjson' | 'tcp2';

export interface TcpPipeline {
  key: TcpPipelineKey;
  source: string;
  relay: string;
  sink: string;
  format: StreamFormat;
  frameMs: number;
  seed: number;
  holdMs: number;
  /** How the agent judges silence of the input and of the output stream's bytes. */
  inEncoding: Encoding;
  outEncoding: Encoding;
  /** |p50 - hold| the test accepts. */
  toleranceMs: number;
  description: string;
  /** Pod processes, in start order (receivers first); `starter` is the one that starts audio. */
  commands: (lab: Lab) => { pod: string; script: string; args: string[]; starter?: boolean }[];
}

const ip = (lab: Lab, pod: string): string => lab.pod(pod).ip;

export const TCP_PIPELINES: readonly TcpPipeline[] = [
  {
    key: 'tcp',
    source: 'tsrc',
    relay: 'trel',
    sink: 'tsnk',
    format: 'le16k',
    frameMs: 100,
    seed: 0x7c900001,
    holdMs: 20,
    inEncoding: Encoding.RawLe16,
    outEncoding: Encoding.RawLe16,
    toleranceMs: 2,
    description: 'L16 16 kHz over TCP, relay holds 20 ms and re-chunks at random 100-3000 B',
    commands: (lab) => tcpCommands(lab, 'tsrc', 'trel', 'tsnk', 41000, 0x7c900001),
  },
  {
    key: 'gateway',
    source: 'gsrc',
    relay: 'gw',
    sink: 'gsnk',
    format: 'pcmu',
    frameMs: 20,
    seed: 0x7c900002,
    holdMs: 20,
    inEncoding: Encoding.Pcmu,
    outEncoding: Encoding.RawLe16,
    toleranceMs: 2,
    description: 'RTP PCMU in (UDP), gateway holds 20 ms, the same payload bytes out over TCP',
    commands: (lab) => [
      { pod: 'gsnk', script: 'tcp-sink', args: ['--mode', 'tcp', '--listen', '41023'] },
      {
        pod: 'gw',
        script: 'tcp-relay',
        args: [
          ...['--in', 'rtp', '--out', 'tcp', '--listen', '41021', '--sport', '41022'],
          ...['--to', `${ip(lab, 'gsnk')}:41023`, '--hold-ms', '20', '--seed', '2'],
        ],
      },
      {
        pod: 'gsrc',
        script: 'sender',
        starter: true,
        args: [
          ...['--dest', `${ip(lab, 'gw')}:41021`, '--encoding', 'pcmu', '--transport', 'rtp'],
          ...['--seed', String(0x7c900002), '--sport', '41020'],
        ],
      },
    ],
  },
  {
    key: 'ws',
    source: 'wsrc',
    relay: 'wrel',
    sink: 'wsnk',
    format: 'le16k',
    frameMs: 20,
    seed: 0x7c900003,
    holdMs: 20,
    inEncoding: Encoding.RawLe16,
    outEncoding: Encoding.RawLe16,
    toleranceMs: 2,
    description: 'WebSocket binary L16 16 kHz (masked) in and out, relay holds 20 ms',
    commands: (lab) => [
      { pod: 'wsnk', script: 'tcp-sink', args: ['--mode', 'ws', '--listen', '41032'] },
      {
        pod: 'wrel',
        script: 'tcp-relay',
        args: [
          ...['--in', 'ws', '--out', 'ws', '--listen', '41030', '--sport', '41031'],
          ...['--to', `${ip(lab, 'wsnk')}:41032`, '--hold-ms', '20', '--seed', '3'],
        ],
      },
      {
        pod: 'wsrc',
        script: 'tcp-source',
        starter: true,
        args: [
          ...['--mode', 'ws', '--dest', `${ip(lab, 'wrel')}:41030`, '--sport', '41033'],
          ...['--format', 'le16k', '--frame-ms', '20', '--seed', String(0x7c900003)],
        ],
      },
    ],
  },
  {
    key: 'sse',
    source: 'esrc',
    relay: 'erel',
    sink: 'esnk',
    format: 'le16k',
    frameMs: 100,
    seed: 0x7c900004,
    holdMs: 2000,
    inEncoding: Encoding.Opaque,
    outEncoding: Encoding.Opaque,
    toleranceMs: 5,
    description: 'SSE JSON with hex L16 (100 ms events), relay re-builds the JSON, holds 2 s',
    commands: (lab) => [
      {
        pod: 'esrc',
        script: 'tcp-source',
        args: [
          ...['--mode', 'sse', '--listen', '41040', '--format', 'le16k', '--frame-ms', '100'],
          ...['--seed', String(0x7c900004)],
        ],
      },
      {
        pod: 'erel',
        script: 'tcp-relay',
        args: [
          ...['--in', 'sse', '--out', 'sse', '--from', `${ip(lab, 'esrc')}:41040`],
          ...['--out-listen', '41041', '--hold-ms', '2000'],
        ],
      },
      // The sink's request makes the relay subscribe to the source: the audio starts here.
      {
        pod: 'esnk',
        script: 'tcp-sink',
        starter: true,
        args: ['--mode', 'sse', '--from', `${ip(lab, 'erel')}:41041`],
      },
    ],
  },
  {
    key: 'wsjson',
    source: 'jsrc',
    relay: 'jrel',
    sink: 'jsnk',
    format: 'pcmu',
    frameMs: 20,
    seed: 0x7c900005,
    holdMs: 60,
    inEncoding: Encoding.Opaque,
    outEncoding: Encoding.Opaque,
    toleranceMs: 5,
    description: 'WebSocket JSON text, base64 mu-law 160 B/event, relay re-encodes, holds 60 ms',
    commands: (lab) => [
      {
        pod: 'jrel',
        script: 'tcp-relay',
        args: [
          ...['--in', 'ws-json', '--out', 'ws-json', '--listen', '41050'],
          ...['--out-listen', '41051', '--hold-ms', '60', '--seed', '5'],
        ],
      },
      {
        pod: 'jsnk',
        script: 'tcp-sink',
        args: ['--mode', 'ws-json', '--from', `${ip(lab, 'jrel')}:41051`],
      },
      {
        pod: 'jsrc',
        script: 'tcp-source',
        starter: true,
        args: [
          ...['--mode', 'ws-json', '--dest', `${ip(lab, 'jrel')}:41050`, '--sport', '41052'],
          ...['--format', 'pcmu', '--frame-ms', '20', '--seed', String(0x7c900005)],
        ],
      },
    ],
  },
];

/** The raw TCP pipeline again on other pods: the one that runs beside the bulk transfer. */
export const TCP2_PIPELINE: TcpPipeline = {
  ...TCP_PIPELINES[0],
  key: 'tcp2',
  source: 'tsrc2',
  relay: 'trel2',
  sink: 'tsnk2',
  description: 'the tcp pipeline again, beside a bulk transfer at full speed',
  commands: (lab) => tcpCommands(lab, 'tsrc2', 'trel2', 'tsnk2', 41060, 0x7c900001),
};

export const BULK_PODS = { source: 'bsrc', sink: 'bsnk' } as const;

export const TCP_LAB_PODS: string[] = [
  ...TCP_PIPELINES.flatMap((p) => [p.source, p.relay, p.sink]),
  TCP2_PIPELINE.source,
  TCP2_PIPELINE.relay,
  TCP2_PIPELINE.sink,
  BULK_PODS.source,
  BULK_PODS.sink,
];

function tcpCommands(
  lab: Lab,
  src: string,
  rel: string,
  snk: string,
  base: number,
  seed: number,
): { pod: string; script: string; args: string[]; starter?: boolean }[] {
  return [
    { pod: snk, script: 'tcp-sink', args: ['--mode', 'tcp', '--listen', String(base + 2)] },
    {
      pod: rel,
      script: 'tcp-relay',
      args: [
        ...['--in', 'tcp', '--out', 'tcp', '--listen', String(base), '--sport', String(base + 1)],
        ...['--to', `${ip(lab, snk)}:${base + 2}`, '--hold-ms', '20'],
        ...['--chunk-min', '100', '--chunk-max', '3000', '--seed', '1'],
      ],
    },
    {
      pod: src,
      script: 'tcp-source',
      starter: true,
      args: [
        ...['--mode', 'tcp', '--dest', `${ip(lab, rel)}:${base}`, '--sport', String(base + 10)],
        ...['--format', 'le16k', '--frame-ms', '100', '--seed', String(seed)],
      ],
    },
  ];
}

/**
 * Histogram bounds: the UDP lab's (fine around 20, 40, 60 ms) plus fine steps around 60 ms and
 * 2 s, so histogram_quantile resolves the 60 ms and 2 s holds to well under a millisecond.
 */
export const TCP_LATENCY_BUCKETS: number[] = [
  ...new Set([
    ...LATENCY_BUCKETS,
    0.055,
    0.0595,
    0.0601,
    0.0602,
    0.0603,
    0.0604,
    1.99,
    1.995,
    1.998,
    1.999,
    2.0,
    2.0005,
    2.001,
    2.0015,
    2.002,
    2.003,
    2.005,
    2.01,
    2.02,
  ]),
].sort((a, b) => a - b);

/** Starts a lab script (a pod process of dist/test/lab/) inside a pod's namespace. */
export function spawnInPod(lab: Lab, podName: string, script: string, args: string[]): LabProcess {
  const pod = lab.pod(podName);
  const path = fileURLToPath(new URL(`./${script}.js`, import.meta.url));
  const child = spawn('ip', ['netns', 'exec', pod.netns, process.execPath, path, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new LabProcess(pod, script, child);
}

export interface RunningTcpPipeline {
  spec: TcpPipeline;
  procs: { role: 'source' | 'relay' | 'sink'; proc: LabProcess; starter: boolean }[];
}

/** Starts a pipeline's receivers, waiting until each is ready (not the starter). */
export async function startTcpReceivers(
  lab: Lab,
  spec: TcpPipeline,
  durationS: number,
): Promise<RunningTcpPipeline> {
  const run: RunningTcpPipeline = { spec, procs: [] };
  for (const c of spec.commands(lab)) {
    if (c.starter) continue;
    const proc = spawnInPod(lab, c.pod, c.script, withDuration(c.script, c.args, durationS));
    run.procs.push({ role: roleOf(spec, c.pod), proc, starter: false });
    await proc.ready;
  }
  return run;
}

/** Starts the process that sets the audio going (source, or the SSE sink that subscribes). */
export async function startTcpStarter(
  lab: Lab,
  run: RunningTcpPipeline,
  durationS: number,
): Promise<void> {
  const c = run.spec.commands(lab).find((x) => x.starter);
  if (!c) throw new Error(`pipeline ${run.spec.key} has no starter`);
  const proc = spawnInPod(lab, c.pod, c.script, withDuration(c.script, c.args, durationS));
  run.procs.push({ role: roleOf(run.spec, c.pod), proc, starter: true });
  await proc.ready;
}

function roleOf(spec: TcpPipeline, pod: string): 'source' | 'relay' | 'sink' {
  return pod === spec.source ? 'source' : pod === spec.relay ? 'relay' : 'sink';
}

function withDuration(script: string, args: string[], durationS: number): string[] {
  return script === 'tcp-source' || script === 'sender'
    ? [...args, '--duration', String(durationS)]
    : args;
}

export function procOf(run: RunningTcpPipeline, role: 'source' | 'relay' | 'sink'): LabProcess {
  const p = run.procs.find((x) => x.role === role);
  if (!p) throw new Error(`pipeline ${run.spec.key}: no ${role} process`);
  return p.proc;
}

export interface TcpReports {
  spec: TcpPipeline;
  source: ProcessExit;
  relay: ProcessExit;
  sink: ProcessExit;
}

/** Waits for the source's own end, then stops relay and sink; returns each one's report. */
export async function stopTcpPipeline(run: RunningTcpPipeline): Promise<TcpReports> {
  const source = await procOf(run, 'source').stop();
  const relay = await procOf(run, 'relay').stop();
  const sink = await procOf(run, 'sink').stop();
  return { spec: run.spec, source, relay, sink };
}

export interface TcpPrediction {
  bytes: number;
  sha256: string;
  /** Non-silent windows as the input and the output stream are judged. */
  inSignatures: number;
  outSignatures: number;
  /** Windows non-silent on both sides: the hop samples to expect. */
  pairable: number;
  speechSeconds: number;
}

/**
 * The reference prediction: the audio bytes the source sends, signed as one stream (per side
 * with the encoding the agent judges that side's silence by; the windows themselves are
 * content-defined, the same on both sides), and the windows non-silent on both sides.
 */
export function predictTcp(cfg: SignerConfig, p: TcpPipeline, durationS: number): TcpPrediction {
  const frames = streamFrames(p.seed, p.format, p.frameMs, durationS);
  const hash = createHash('sha256');
  let bytes = 0;
  for (const f of frames) {
    hash.update(f);
    bytes += f.length;
  }
  const side = (encoding: Encoding): Set<number> =>
    new Set(
      signPackets(
        cfg,
        frames.map((audio) => ({ encoding, audio })),
      ).map((s) => s.windowStart),
    );
  const inWindows = side(p.inEncoding);
  const outWindows = p.outEncoding === p.inEncoding ? inWindows : side(p.outEncoding);
  let pairable = 0;
  for (const w of inWindows) if (outWindows.has(w)) pairable++;
  return {
    bytes,
    sha256: hash.digest('hex'),
    inSignatures: inWindows.size,
    outSignatures: outWindows.size,
    pairable,
    speechSeconds: streamSpeechSeconds(p.seed, durationS, cfg.silenceThreshold),
  };
}
