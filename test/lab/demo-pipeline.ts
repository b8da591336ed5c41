/**
 * The demo's voice pipeline (issue 5): four lab pods dressed as Kubernetes pods of namespace
 * `voice`, audio in over UDP RTP and out over TCP, two hops with known delays:
 *
 *   caller --RTP PCMU 20 ms--> sbc (holds 20 ms, new SSRC/seq/ts) --RTP PCMU-->
 *     gateway (holds 40 ms, the same payload bytes out over TCP) --TCP--> stt
 *
 * Every process is moved into its pod's containerd-shaped cgroup right after `ip netns exec`
 * starts it; the Pods are served by a test kubelet (test/support/fake-k8s.ts).
 */
import type { K8sLab, K8sPod } from './k8s-lab.js';
import type { Lab, LabProcess } from './lab.js';
import { LATENCY_BUCKETS } from './scenario.js';
import { spawnInPod } from './tcp-scenario.js';

export const DEMO_NAMESPACE = 'voice';
export const DEMO_NODE = 'demo-node-1';
export const SBC_HOLD_MS = 20;
export const GATEWAY_HOLD_MS = 40;
/** One range for the UDP and the TCP legs: the agent reads both from AUDIO_PORTS. */
export const DEMO_AUDIO_PORTS = '40000-40199';
const SEED = 0x5eed0005;

const PORT = {
  callerOut: 40010,
  sbcIn: 40000,
  sbcOut: 40001,
  gatewayIn: 40020,
  gatewayOut: 40021,
  sttIn: 40022,
} as const;

export type DemoRole = 'caller' | 'sbc' | 'gateway' | 'stt';

export interface DemoPodSpec {
  role: DemoRole;
  /** Lab pod (network namespace) name. */
  labPod: string;
  /** Deployment name: the Kubernetes pod is `<app>-<rs hash>-<suffix>`. */
  app: string;
  what: string;
}

/** In start order of their processes: receivers first. */
export const DEMO_PODS: readonly DemoPodSpec[] = [
  { role: 'stt', labPod: 'stt', app: 'stt', what: 'speech-to-text: takes the audio over TCP' },
  {
    role: 'gateway',
    labPod: 'gateway',
    app: 'media-gateway',
    what: `RTP in, holds ${GATEWAY_HOLD_MS} ms, the same payload bytes out over TCP`,
  },
  {
    role: 'sbc',
    labPod: 'sbc',
    app: 'sbc',
    what: `session border controller: holds ${SBC_HOLD_MS} ms, rewrites SSRC/seq/timestamp`,
  },
  { role: 'caller', labPod: 'caller', app: 'caller', what: 'RTP PCMU sender, 20 ms packets' },
];

export const DEMO_LAB_PODS: string[] = DEMO_PODS.map((p) => p.labPod);

/** A hop the pipeline makes, by role, with the delay its destination adds. */
export interface ExpectedHop {
  source: DemoRole;
  dest: DemoRole;
  delayMs: number;
}

export const EXPECTED_HOPS: readonly ExpectedHop[] = [
  { source: 'caller', dest: 'sbc', delayMs: SBC_HOLD_MS },
  { source: 'sbc', dest: 'gateway', delayMs: GATEWAY_HOLD_MS },
];

/** The lab's buckets plus fine steps just above 40 ms, where the gateway hop lands. */
export const DEMO_BUCKETS: number[] = [
  ...new Set([...LATENCY_BUCKETS, 0.0401, 0.0402, 0.0403, 0.0404, 0.042]),
].sort((a, b) => a - b);

function commandOf(lab: Lab, role: DemoRole): { script: string; args: string[] } {
  const ip = (r: DemoRole): string => lab.pod(r).ip;
  switch (role) {
    case 'stt':
      return { script: 'tcp-sink', args: ['--mode', 'tcp', '--listen', String(PORT.sttIn)] };
    case 'gateway':
      return {
        script: 'tcp-relay',
        args: [
          ...['--in', 'rtp', '--out', 'tcp', '--listen', String(PORT.gatewayIn)],
          ...['--to', `${ip('stt')}:${PORT.sttIn}`, '--sport', String(PORT.gatewayOut)],
          ...['--hold-ms', String(GATEWAY_HOLD_MS), '--seed', '5'],
        ],
      };
    case 'sbc':
      return {
        script: 'relay',
        args: [
          ...['--listen', String(PORT.sbcIn), '--to', `${ip('gateway')}:${PORT.gatewayIn}`],
          ...['--sport', String(PORT.sbcOut), '--hold-ms', String(SBC_HOLD_MS)],
          ...['--in', 'rtp', '--out', 'rtp', '--gather', '1'],
        ],
      };
    case 'caller':
      return {
        script: 'sender',
        args: [
          ...['--dest', `${ip('sbc')}:${PORT.sbcIn}`, '--encoding', 'pcmu', '--transport', 'rtp'],
          ...['--seed', String(SEED), '--duration', '0', '--sport', String(PORT.callerOut)],
        ],
      };
  }
}

export interface DemoProcess {
  spec: DemoPodSpec;
  pod: K8sPod;
  proc: LabProcess;
}

/**
 * Starts the pipeline's processes, receivers first, each moved into its pod's container cgroup
 * and awaited until ready. `started` sees each one as soon as it exists, so a caller tearing
 * down meanwhile can stop it. The agent must already run: it follows TCP streams from the SYN.
 */
export async function startDemoPipeline(
  lab: Lab,
  k8s: K8sLab,
  pods: ReadonlyMap<DemoRole, K8sPod>,
  started: (p: DemoProcess) => void,
): Promise<void> {
  for (const spec of DEMO_PODS) {
    const pod = pods.get(spec.role);
    if (pod === undefined) throw new Error(`demo: no Kubernetes pod for ${spec.role}`);
    const { script, args } = commandOf(lab, spec.role);
    const proc = spawnInPod(lab, spec.labPod, script, args);
    // `ip netns exec` execs node in place: the pid is the pod process's own.
    if (proc.child.pid !== undefined) k8s.place(pod, proc.child.pid);
    started({ spec, pod, proc });
    await proc.ready;
  }
}

/** Stops the processes from the caller down, so each receiver drains what it holds. */
export async function stopDemoPipeline(procs: readonly DemoProcess[]): Promise<void> {
  const order: DemoRole[] = ['caller', 'sbc', 'gateway', 'stt'];
  for (const role of order) {
    for (const p of procs) if (p.spec.role === role) await p.proc.stop('SIGTERM', 3000);
  }
}
