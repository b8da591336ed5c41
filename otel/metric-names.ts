/**
 * Every metric and attribute name the agent exports, in one place.
 *
 * Instrument names are chosen so that the Prometheus exporter shows them unchanged: it never
 * appends a unit suffix, and appends `_total` only to monotonic sums. So histograms carry their
 * unit in the name (`_seconds`) and counters are named without `_total`.
 */

export const METRIC_HOP_LATENCY = 'audio_latency_seconds' as const;
export const METRIC_TRANSIT_LATENCY = 'audio_transit_latency_seconds' as const;
export const METRIC_SIGNATURES = 'audio_signatures' as const;
export const METRIC_SIGNATURE_COLLISIONS = 'audio_signature_collisions' as const;

/** Counted by the meter pipeline itself, not read from the agent's statistics. */
export const METRIC_OTLP_EXPORT_FAILURES = 'audio_tracker_otlp_export_failures' as const;

/** Data point attributes of the latency histograms. */
export const ATTR_SOURCE_POD = 'source_pod' as const;
export const ATTR_DEST_POD = 'dest_pod' as const;
/** Data point attribute of audio_signatures: the pod whose traffic yielded the signature. */
export const ATTR_POD = 'pod' as const;

/** Instrumentation scope of every instrument the agent creates. */
export const METER_NAME = 'audio-latency-tracker' as const;
export const DEFAULT_SERVICE_NAME = 'audio-latency-tracker' as const;
