import type {
  BatchObservableResult,
  Counter,
  Histogram,
  Meter,
  Observable,
} from '@opentelemetry/api';
import {
  METRIC_HOP_LATENCY,
  METRIC_SIGNATURE_COLLISIONS,
  METRIC_SIGNATURES,
  METRIC_TRANSIT_LATENCY,
} from './metric-names.js';

/**
 * The agent's own statistics at one instant. Fields documented as cumulative never decrease
 * while the agent runs; the others are current levels.
 */
export interface SelfStatsSnapshot {
  /** Cumulative: packets the classifier looked at. */
  packetsInspected: number;
  /** Cumulative: packets recognised as audio. */
  audioPackets: number;
  /** Cumulative: ring buffer records handed to user space. */
  eventsDelivered: number;
  /** Cumulative: records dropped because the ring buffer was full. */
  eventsLost: number;
  /** Cumulative: audio payloads longer than the capture limit. */
  payloadTruncated: number;
  /** Cumulative: packets whose headers could not be parsed. */
  packetsMalformed: number;
  /** Level: flows with signature state right now. */
  flowsTracked: number;
  /** Cumulative: flows evicted because the flow table was full. */
  flowsEvicted: number;
  /** Cumulative: flows dropped after the idle timeout. */
  flowsExpired: number;
  /** Level: interfaces the classifier is attached to. */
  interfacesAttached: number;
  /** Cumulative: seconds spent in the BPF program (kernel run-time statistics). */
  bpfRunTimeSeconds: number;
  /** Cumulative: runs of the BPF program. */
  bpfRunCount: number;
  /** Cumulative: completed signature windows rejected as silence. */
  windowsSilent: number;
  /** Level: signatures waiting in the correlator for a partner. */
  pendingSignatures: number;
  /** Cumulative: correlator entries evicted because it was full. */
  correlatorEvictions: number;
  /** Cumulative: correlator entries that expired without a partner. */
  correlatorExpired: number;
  /** Cumulative: TCP segments on audio ports. */
  tcpSegments: number;
  /** Cumulative: TCP payload bytes already seen (retransmissions, overlaps), dropped in the kernel. */
  tcpRetransmittedBytes: number;
  /** Cumulative: TCP segments that started past a hole in the stream. */
  tcpOutOfOrder: number;
  /** Cumulative: TCP streams restarted after a hole. */
  tcpResyncs: number;
  /** Cumulative: TCP stream states reset after FLOW_TIMEOUT_MS idle. */
  tcpFlowsExpired: number;
  /** Cumulative: TCP streams recognised as encrypted (TLS, SSH) and skipped. */
  encryptedFlows: number;
  /** Cumulative: segments of encrypted streams skipped before their payload was read. */
  encryptedSegments: number;
  /** Cumulative: extra events emitted for GSO/GRO super-packets (chunks after the first). */
  gsoChunks: number;
  /** Cumulative: TCP streams marked bulk (faster than any audio) and skipped. */
  bulkFlows: number;
  /** Cumulative: segments of bulk streams skipped before their payload was read. */
  bulkSegments: number;
}

/** The synchronous instruments the data path records into. */
export interface AgentInstruments {
  /** Seconds between two sightings of the same audio; attributes source_pod, dest_pod. */
  hopLatency: Histogram;
  /** Seconds on the network from source_pod to dest_pod; attributes source_pod, dest_pod. */
  transitLatency: Histogram;
  /** Signatures computed; attribute pod. */
  signatures: Counter;
  /** Signatures that matched more than one candidate and were dropped. */
  collisions: Counter;
}

type SelfMetricKind = 'counter' | 'gauge';

interface SelfMetricSpec {
  key: keyof SelfStatsSnapshot;
  name: string;
  kind: SelfMetricKind;
  unit: string;
  description: string;
}

/**
 * Self metrics, read from one SelfStatsSnapshot per collection. Counter names carry no `_total`:
 * the Prometheus exporter appends it to monotonic sums.
 */
export const SELF_METRICS: readonly SelfMetricSpec[] = [
  {
    key: 'packetsInspected',
    name: 'audio_tracker_packets_inspected',
    kind: 'counter',
    unit: '{packet}',
    description: 'Packets inspected by the classifier.',
  },
  {
    key: 'audioPackets',
    name: 'audio_tracker_audio_packets',
    kind: 'counter',
    unit: '{packet}',
    description: 'Packets recognised as audio.',
  },
  {
    key: 'eventsDelivered',
    name: 'audio_tracker_events_delivered',
    kind: 'counter',
    unit: '{event}',
    description: 'Ring buffer events delivered to user space.',
  },
  {
    key: 'eventsLost',
    name: 'audio_tracker_events_lost',
    kind: 'counter',
    unit: '{event}',
    description: 'Events dropped because the ring buffer was full.',
  },
  {
    key: 'payloadTruncated',
    name: 'audio_tracker_payload_truncated',
    kind: 'counter',
    unit: '{packet}',
    description: 'Audio payloads longer than the capture limit, captured in part.',
  },
  {
    key: 'packetsMalformed',
    name: 'audio_tracker_packets_malformed',
    kind: 'counter',
    unit: '{packet}',
    description: 'Packets whose headers could not be parsed.',
  },
  {
    key: 'flowsTracked',
    name: 'audio_tracker_flows_tracked',
    kind: 'gauge',
    unit: '{flow}',
    description: 'Flows with signature state.',
  },
  {
    key: 'flowsEvicted',
    name: 'audio_tracker_flows_evicted',
    kind: 'counter',
    unit: '{flow}',
    description: 'Flows evicted because the flow table was full.',
  },
  {
    key: 'flowsExpired',
    name: 'audio_tracker_flows_expired',
    kind: 'counter',
    unit: '{flow}',
    description: 'Flows dropped after the idle timeout.',
  },
  {
    key: 'interfacesAttached',
    name: 'audio_tracker_interfaces_attached',
    kind: 'gauge',
    unit: '{interface}',
    description: 'Network interfaces the classifier is attached to.',
  },
  {
    key: 'bpfRunTimeSeconds',
    name: 'audio_tracker_bpf_run_time_seconds',
    kind: 'counter',
    unit: 's',
    description: 'Time spent in the BPF classifier (kernel BPF statistics).',
  },
  {
    key: 'bpfRunCount',
    name: 'audio_tracker_bpf_run_count',
    kind: 'counter',
    unit: '{run}',
    description: 'Runs of the BPF classifier (kernel BPF statistics).',
  },
  {
    key: 'windowsSilent',
    name: 'audio_tracker_windows_silent',
    kind: 'counter',
    unit: '{window}',
    description: 'Signature windows rejected as silence.',
  },
  {
    key: 'pendingSignatures',
    name: 'audio_tracker_pending_signatures',
    kind: 'gauge',
    unit: '{signature}',
    description: 'Signatures waiting in the correlator for a partner.',
  },
  {
    key: 'correlatorEvictions',
    name: 'audio_tracker_correlator_evictions',
    kind: 'counter',
    unit: '{signature}',
    description: 'Correlator entries evicted because it was full.',
  },
  {
    key: 'correlatorExpired',
    name: 'audio_tracker_correlator_expired',
    kind: 'counter',
    unit: '{signature}',
    description: 'Correlator entries that expired without a partner.',
  },
  {
    key: 'tcpSegments',
    name: 'audio_tracker_tcp_segments',
    kind: 'counter',
    unit: '{segment}',
    description: 'TCP segments seen on audio ports.',
  },
  {
    key: 'tcpRetransmittedBytes',
    name: 'audio_tracker_tcp_retransmitted_bytes',
    kind: 'counter',
    unit: 'By',
    description:
      'TCP payload bytes already seen (retransmissions, overlaps), skipped in the kernel.',
  },
  {
    key: 'tcpOutOfOrder',
    name: 'audio_tracker_tcp_out_of_order_segments',
    kind: 'counter',
    unit: '{segment}',
    description: 'TCP segments that started past a hole in their stream.',
  },
  {
    key: 'tcpResyncs',
    name: 'audio_tracker_tcp_resyncs',
    kind: 'counter',
    unit: '{stream}',
    description: 'TCP streams resynchronised after a hole.',
  },
  {
    key: 'tcpFlowsExpired',
    name: 'audio_tracker_tcp_flows_expired',
    kind: 'counter',
    unit: '{flow}',
    description: 'TCP stream states dropped after FLOW_TIMEOUT_MS without segments.',
  },
  {
    key: 'encryptedFlows',
    name: 'audio_tracker_encrypted_flows',
    kind: 'counter',
    unit: '{flow}',
    description: 'TCP streams recognised as encrypted (TLS, SSH), marked once and skipped.',
  },
  {
    key: 'encryptedSegments',
    name: 'audio_tracker_encrypted_segments',
    kind: 'counter',
    unit: '{segment}',
    description: 'Segments of encrypted streams skipped before their payload was read.',
  },
  {
    key: 'gsoChunks',
    name: 'audio_tracker_gso_chunks',
    kind: 'counter',
    unit: '{event}',
    description: 'Extra events emitted for GSO/GRO super-packets, beyond one per packet.',
  },
  {
    key: 'bulkFlows',
    name: 'audio_tracker_bulk_flows',
    kind: 'counter',
    unit: '{flow}',
    description: 'TCP streams faster than any audio (over 4 MiB/s), marked once and skipped.',
  },
  {
    key: 'bulkSegments',
    name: 'audio_tracker_bulk_segments',
    kind: 'counter',
    unit: '{segment}',
    description: 'Segments of bulk streams skipped before their payload was read.',
  },
];

/** A snapshot with every statistic at zero (before a stage exists; tests). */
export function emptySelfStats(): SelfStatsSnapshot {
  return Object.fromEntries(SELF_METRICS.map((m) => [m.key, 0])) as unknown as SelfStatsSnapshot;
}

/** Throws unless the boundaries are finite and strictly increasing. */
export function validateBucketBoundaries(boundaries: readonly number[]): void {
  if (boundaries.length === 0) {
    throw new Error('latency buckets: at least one boundary is required');
  }
  for (let i = 0; i < boundaries.length; i++) {
    const b = boundaries[i];
    if (!Number.isFinite(b)) {
      throw new Error(`latency buckets: boundary ${i} is not a finite number (${b})`);
    }
    if (i > 0 && b <= boundaries[i - 1]) {
      throw new Error(
        `latency buckets: boundaries must increase strictly (${boundaries[i - 1]} then ${b})`,
      );
    }
  }
}

function createLatencyHistogram(
  meter: Meter,
  name: string,
  description: string,
  boundaries: number[],
): Histogram {
  // Advice, not a View: a View's aggregation would apply to every reader and stop the OTLP
  // reader from choosing exponential histograms.
  return meter.createHistogram(name, {
    description,
    unit: 's',
    advice: { explicitBucketBoundaries: boundaries },
  });
}

function registerSelfMetrics(meter: Meter, stats: () => SelfStatsSnapshot): void {
  const observables: Observable[] = SELF_METRICS.map((spec) => {
    const options = { description: spec.description, unit: spec.unit };
    return spec.kind === 'counter'
      ? meter.createObservableCounter(spec.name, options)
      : meter.createObservableGauge(spec.name, options);
  });
  // One batch callback so that all self metrics of a collection come from the same snapshot.
  meter.addBatchObservableCallback((result: BatchObservableResult) => {
    const snapshot = stats();
    for (let i = 0; i < SELF_METRICS.length; i++) {
      const value = snapshot[SELF_METRICS[i].key];
      // A missing or broken statistic must not poison the whole collection.
      if (Number.isFinite(value)) result.observe(observables[i], value);
    }
  }, observables);
}

/**
 * Creates the agent's instruments on `meter`. Latency histograms use `latencyBuckets` (seconds)
 * as explicit bucket boundaries wherever explicit buckets are exported (always for Prometheus).
 * `stats` is called once per collection of each reader.
 */
export function createAgentInstruments(
  meter: Meter,
  latencyBuckets: readonly number[],
  stats: () => SelfStatsSnapshot,
): AgentInstruments {
  validateBucketBoundaries(latencyBuckets);
  const boundaries = [...latencyBuckets];
  const instruments: AgentInstruments = {
    hopLatency: createLatencyHistogram(
      meter,
      METRIC_HOP_LATENCY,
      'Time between the same audio seen at source_pod and at dest_pod.',
      boundaries,
    ),
    transitLatency: createLatencyHistogram(
      meter,
      METRIC_TRANSIT_LATENCY,
      'Time the audio spent on the network from source_pod to dest_pod.',
      boundaries,
    ),
    signatures: meter.createCounter(METRIC_SIGNATURES, {
      description: 'Audio signatures computed, by pod.',
      unit: '{signature}',
    }),
    collisions: meter.createCounter(METRIC_SIGNATURE_COLLISIONS, {
      description: 'Signatures matching several candidates, dropped as ambiguous.',
      unit: '{signature}',
    }),
  };
  registerSelfMetrics(meter, stats);
  return instruments;
}
