export {
  createAgentInstruments,
  emptySelfStats,
  SELF_METRICS,
  validateBucketBoundaries,
  type AgentInstruments,
  type SelfStatsSnapshot,
} from './instruments.js';
export {
  createMeterPipeline,
  type MeterPipeline,
  type MeterPipelineOptions,
  type LabelStats,
} from './meter-pipeline.js';
export * from './metric-names.js';
export {
  describeEndpoint,
  OtlpExportError,
  resolveEndpoint,
  type ExportErrorHandler,
  type OtlpExportOptions,
  type OtlpHistogramAggregation,
  type OtlpTemporality,
} from './otlp-exporter.js';
export { parseOtlpHeaders, validateOtlpHeaders } from './otlp-headers.js';
export { buildAgentResource, type AgentResourceOptions } from './resource.js';
export {
  K8sResourceDetector,
  k8sResourceDetector,
  type K8sResourceDetectorOptions,
} from './k8s-resource-detector.js';
export {
  filterResourceMetrics,
  pruneRetainedSeries,
  retainedSeriesCount,
  type PruneResult,
  type SeriesPredicate,
} from './series-retention.js';
