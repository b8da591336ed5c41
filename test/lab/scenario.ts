/**
 * The standard lab scenario shared by the e2e test and the demo: two audio pipelines of three pods
 * each, the ways audio really crosses a media relay.
 *
 *   rtp: sender1 --RTP PCMU 20 ms--> relay1 (holds 20 ms, new SSRC/seq/ts) --RTP PCMU--> sink1
 *   raw: sender2 --raw LE16 20 ms--> relay2 (gathers 3 -> one 60 ms packet, holds 20 ms) --> sink2
 */
import type { AudioFormat } from './audio-source.js';
import type { Lab, LabProcess, ProcessExit } from './lab.js';

export const HOLD_MS = 20;
export const AUDIO_PORTS = '40000-40199';

export interface PipelineSpec {
  key: 'rtp' | 'raw';
  sender: string;
  relay: string;
  sink: string;
  encoding: AudioFormat;
  transport: 'rtp' | 'raw';
  seed: number;
  senderPort: number;
  relayPort: number;
  relayOutPort: number;
  sinkPort: number;
  /** Input payloads per output packet at the relay. */
  gather: number;
  description: string;
}

export const PIPELINES: readonly PipelineSpec[] = [
  {
    key: 'rtp',
    sender: 'sender1',
    relay: 'relay1',
    sink: 'sink1',
    encoding: 'pcmu',
    transport: 'rtp',
    seed: 0x5eed0001,
    senderPort: 40010,
    relayPort: 40000,
    relayOutPort: 40001,
    sinkPort: 40002,
    gather: 1,
    description: 'RTP PCMU 20 ms, relay holds 20 ms and rewrites SSRC/seq/timestamp',
  },
  {
    key: 'raw',
    sender: 'sender2',
    relay: 'relay2',
    sink: 'sink2',
    encoding: 'le16',
    transport: 'raw',
    seed: 0x5eed0002,
    senderPort: 40110,
    relayPort: 40100,
    relayOutPort: 40101,
    sinkPort: 40102,
    gather: 3,
    description: 'raw LE16 20 ms, relay re-frames 3 x 20 ms into 60 ms and holds 20 ms',
  },
];

export const LAB_PODS: string[] = PIPELINES.flatMap((p) => [p.sender, p.relay, p.sink]);

/**
 * Histogram bounds (seconds): fine around 20 ms so histogram_quantile resolves well under 1 ms,
 * fine around 40 and 60 ms (the re-framing relay's hold plus one or two packet times), and fine
 * below 5 ms for the transit histogram.
 */
export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.018, 0.019, 0.0195, 0.02,
  0.0201, 0.0202, 0.0203, 0.0204, 0.0205, 0.021, 0.022, 0.025, 0.03, 0.035, 0.039, 0.04, 0.0405,
  0.041, 0.045, 0.05, 0.059, 0.06, 0.0605, 0.061, 0.065, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** The agent's configuration for a lab: its interfaces, the lab's ports, the signature scheme. */
export function agentEnv(lab: Lab, extra: Record<string, string> = {}): Record<string, string> {
  return {
    INTERFACE: lab.interfaceGlob,
    AUDIO_PORTS,
    LATENCY_BUCKETS: LATENCY_BUCKETS.join(','),
    // Spelled out, so the test's prediction uses the same scheme whatever the defaults become.
    SIGNATURE_WINDOW_SIZE: '256',
    SILENCE_THRESHOLD: '256',
    SIGNATURE_ALGORITHM: 'xxhash',
    FLOW_TIMEOUT_MS: '30000',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

export interface RunningPipeline {
  spec: PipelineSpec;
  sink: LabProcess;
  relay: LabProcess;
  sender?: LabProcess;
}

/** Starts sinks, then relays (receivers before senders), waiting until each is listening. */
export async function startReceivers(lab: Lab): Promise<RunningPipeline[]> {
  const out: RunningPipeline[] = [];
  for (const spec of PIPELINES) {
    const sinkIp = lab.pod(spec.sink).ip;
    const sink = lab.spawn(spec.sink, 'sink', [
      '--listen',
      String(spec.sinkPort),
      '--in',
      spec.transport,
    ]);
    await sink.ready;
    const relay = lab.spawn(spec.relay, 'relay', [
      '--listen',
      String(spec.relayPort),
      '--to',
      `${sinkIp}:${spec.sinkPort}`,
      '--sport',
      String(spec.relayOutPort),
      '--hold-ms',
      String(HOLD_MS),
      '--in',
      spec.transport,
      '--out',
      spec.transport,
      '--gather',
      String(spec.gather),
    ]);
    await relay.ready;
    out.push({ spec, sink, relay });
  }
  return out;
}

/** Starts every sender; durationS 0 streams until stopped. */
export async function startSenders(
  lab: Lab,
  pipes: RunningPipeline[],
  durationS: number,
): Promise<void> {
  for (const p of pipes) {
    const s = p.spec;
    p.sender = lab.spawn(s.sender, 'sender', [
      '--dest',
      `${lab.pod(s.relay).ip}:${s.relayPort}`,
      '--encoding',
      s.encoding,
      '--transport',
      s.transport,
      '--seed',
      String(s.seed),
      '--duration',
      String(durationS),
      '--sport',
      String(s.senderPort),
    ]);
  }
  await Promise.all(pipes.map((p) => p.sender?.ready));
}

export interface PipelineReports {
  spec: PipelineSpec;
  sender: ProcessExit | null;
  relay: ProcessExit;
  sink: ProcessExit;
}

/** Stops senders, then relays (after they flushed), then sinks; returns each one's report. */
export async function stopPipelines(pipes: RunningPipeline[]): Promise<PipelineReports[]> {
  const senders = await Promise.all(pipes.map((p) => (p.sender ? p.sender.stop() : null)));
  const relays = await Promise.all(pipes.map((p) => p.relay.stop()));
  const sinks = await Promise.all(pipes.map((p) => p.sink.stop()));
  return pipes.map((p, i) => ({
    spec: p.spec,
    sender: senders[i],
    relay: relays[i],
    sink: sinks[i],
  }));
}
