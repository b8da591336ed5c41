/**
 * The agent: wires the stages of the data path (classifier -> signature batches -> correlator ->
 * instruments -> exporters) and owns their lifetime. Start order puts everything that can fail
 * for a reason the operator must fix (metrics port taken, BPF load refused) before anything is
 * attached; stop order detaches first, so the node is left clean even if the exporters hang.
 */
import type { AgentConfig } from './config.js';
import type { Logger } from './log.js';
import { rateLimited, serializeError } from './log.js';
import { Classifier, type ClassifierOptions } from './native.js';
import { EndpointTable } from './endpoints.js';
import { Correlator, monotonicNowNs } from './correlate/correlator.js';
import { SignatureBatchDecoder } from './signature-batch.js';
import { HopRecorder } from './hop-recorder.js';
import { InterfaceWatcher, type WatcherErrorContext } from './interface-watcher.js';
import { SampleLogger } from './sample-log.js';
import { KernelStat } from './abi.js';
import { PodCache, PodSourceSwitch } from './k8s/pod-cache.js';
import { detectContainerRuntime } from './k8s/container-runtime.js';
import type { CgroupRuntime } from './k8s/cgroup.js';
import { KubeletSource } from './k8s/kubelet-source.js';
import { invalidateIps, OTHER, PodLabeler } from './k8s/identity.js';
import { CgroupIdentities, cgroupScanner, HostNetworkSources } from './k8s/cgroup-ids.js';
import {
  createMeterPipeline,
  emptySelfStats,
  K8sResourceDetector,
  type MeterPipeline,
  type MeterPipelineOptions,
  type SelfStatsSnapshot,
} from '../otel/index.js';

/** How often idle correlator state is drained by the kernel clock. */
const EXPIRE_INTERVAL_MS = 1000;
/** Endpoints per tracked flow: each flow names two. */
const ENDPOINTS_PER_FLOW = 2;
const MIN_ENDPOINTS = 1024;

/**
 * SIGUSR1 makes Node start its inspector on 127.0.0.1:9229. The agent runs with hostNetwork and
 * hostPID: that is the node's loopback, reachable by every process of the node, and whoever
 * connects runs code with the agent's capabilities (CAP_BPF, CAP_NET_ADMIN). A listener of our
 * own replaces Node's handler, so the signal is only logged. Once per process.
 */
let inspectorSignalRefused = false;

function refuseInspectorSignal(log: Logger): void {
  if (inspectorSignalRefused) return;
  inspectorSignalRefused = true;
  const refused = rateLimited(log, 'sigusr1', 60_000);
  process.on('SIGUSR1', () => {
    refused.warn('SIGUSR1 ignored: the Node.js inspector stays disabled in the agent');
  });
}

export interface AgentOptions {
  config: AgentConfig;
  log: Logger;
  version: string;
  /** Injected in tests: how the classifier is opened. */
  openClassifier?: (opts: ClassifierOptions) => Classifier;
}

export class Agent {
  private classifier: Classifier | null = null;
  private correlator: Correlator | null = null;
  private recorder: HopRecorder | null = null;
  private watcher: InterfaceWatcher | null = null;
  private pipeline: MeterPipeline | null = null;
  private sampleLog: SampleLogger | null = null;
  private endpoints: EndpointTable | null = null;
  private labeler: PodLabeler | null = null;
  private podCache: PodCache | null = null;
  private podSources: PodSourceSwitch | null = null;
  private cgroupIds: CgroupIdentities | null = null;
  private hostSources: HostNetworkSources | null = null;
  private pruneUnsupportedLogged = false;
  private expireTimer: NodeJS.Timeout | null = null;
  private ready = false;
  private stopping: Promise<void> | null = null;

  private constructor(private readonly opts: AgentOptions) {}

  /** Starts every stage; on failure, undoes what was started and rethrows. */
  static async start(opts: AgentOptions): Promise<Agent> {
    refuseInspectorSignal(opts.log);
    const agent = new Agent(opts);
    try {
      await agent.startStages();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  private async startStages(): Promise<void> {
    const { config, log } = this.opts;
    // Pod metadata is only read here; the sources that fill the cache start once attached.
    this.podCache = config.k8s.enabled
      ? new PodCache({ maxPods: config.k8s.podCacheSize, log })
      : null;
    const labeler = new PodLabeler({
      cache: this.podCache,
      external: config.labels.external,
      maxValues: config.labels.maxValues,
      seriesTtlMs: config.labels.seriesTtlMs,
    });
    this.labeler = labeler;
    this.startCgroupAttribution(this.podCache);
    const hostSources = this.hostSources;
    const pipeline = await createMeterPipeline(this.pipelineOptions());
    this.pipeline = pipeline;
    log.info('metrics endpoint listening', {
      url: `http://${pipeline.address.host}:${pipeline.address.port}/metrics`,
      otlp: pipeline.otlpEnabled,
    });

    const endpoints = new EndpointTable({
      capacity: Math.max(MIN_ENDPOINTS, config.maxFlows * ENDPOINTS_PER_FLOW),
      minIdleNs: config.flowTimeoutMs * 1e6,
      labeler: (ip) => labeler.labelIp(ip),
      podLabeler: (uid) => labeler.labelHostPod(hostSources?.podUidOf(uid) ?? uid),
    });
    this.endpoints = endpoints;
    labeler.watchEndpoints(endpoints);
    this.podCache?.onChange((ips) => this.onPodsChanged(ips));
    const instruments = pipeline.createInstruments(() => this.snapshot());
    this.sampleLog = config.sampleLog.enabled
      ? new SampleLogger({ ratePerSecond: config.sampleLog.ratePerSecond })
      : null;
    const sampleLog = this.sampleLog;
    const recorder = new HopRecorder({
      ...instruments,
      endpoints,
      onSample: sampleLog
        ? (tsNs, sigHi, sigLo, source, dest, seconds): void =>
            sampleLog.log(tsNs, sigHi, sigLo, source, dest, seconds)
        : undefined,
    });
    this.recorder = recorder;
    const correlator = new Correlator(recorder, {
      timeoutMs: config.flowTimeoutMs,
      maxPending: config.maxPendingSignatures,
    });
    this.correlator = correlator;
    const decoder = new SignatureBatchDecoder(endpoints, correlator, {
      cgroupSources: hostSources,
      localPortTtlMs: config.flowTimeoutMs,
    });

    const open = this.opts.openClassifier ?? Classifier.open;
    this.classifier = open(this.classifierOptions(decoder));
    log.info('classifier loaded', { algorithm: config.signatureAlgorithm });

    this.watcher = this.createWatcher(this.classifier);
    await this.watcher.scanNow();
    this.watcher.start();
    if (this.podCache !== null) await this.startPodSources(this.podCache);
    this.expireTimer = setInterval(() => {
      correlator.expire(monotonicNowNs());
      recorder.flush();
      this.sweepLabels();
      this.cgroupIds?.expire();
    }, EXPIRE_INTERVAL_MS);
    this.expireTimer.unref();
    this.ready = true;
    log.info('agent started', { interfaces: config.interfaces });
  }

  /**
   * hostNetwork attribution (docs/kubernetes.md): the classifier's egress cgroup IDs mapped to
   * containers by walking the cgroup2 tree. The first walk runs in the background; records of
   * cgroups not known yet keep the node address until a (rate-limited) rescan has found them.
   */
  private startCgroupAttribution(cache: PodCache | null): void {
    if (cache === null) return;
    const log = this.opts.log;
    const scan = cgroupScanner({ log });
    // CONTAINER_RUNTIME: containers of another runtime (a docker daemon beside containerd, say)
    // are not the kubelet's and must not name a pod. Detected once, in the background.
    let runtime: CgroupRuntime | undefined;
    const ids = new CgroupIdentities({
      scan: async () =>
        (await scan()).filter(
          (c) => !runtime || !c.identity.runtime || c.identity.runtime === runtime,
        ),
      log,
    });
    this.cgroupIds = ids;
    this.hostSources = new HostNetworkSources(ids, cache);
    void detectContainerRuntime({ configured: this.opts.config.containerRuntime })
      .then((d) => {
        runtime = d.runtime;
        log.info('container runtime', {
          runtime: d.runtime ?? null,
          source: d.source,
          reason: d.reason,
        });
      })
      .catch((err: unknown) =>
        log.warn('container runtime detection failed', { error: serializeError(err) }),
      )
      .then(() => ids.scanNow())
      .then(() => {
        log.info('cgroup scan for hostNetwork attribution', { containers: ids.stats.containers });
      });
  }

  /**
   * Kubelet first and the API server as fallback (K8S_POD_SOURCE), feeding the pod cache in the
   * background: nothing here waits on the network, and until the first list arrives endpoints
   * are labelled as not-yet-known and upgraded through onPodsChanged.
   */
  private async startPodSources(cache: PodCache): Promise<void> {
    const { config, log } = this.opts;
    const k8s = config.k8s;
    // loadConfig() guarantees a node name whenever Kubernetes is enabled.
    const nodeName = k8s.nodeName ?? '';
    const kubelet =
      k8s.podSource !== 'apiserver' && k8s.kubeletUrl !== null
        ? new KubeletSource({
            url: k8s.kubeletUrl,
            nodeName,
            tokenFile: k8s.tokenFile ?? undefined,
            caFile: k8s.kubeletCaFile ?? undefined,
            insecure: k8s.kubeletInsecure,
            pollIntervalMs: k8s.kubeletPollIntervalMs,
            log,
          })
        : null;
    // Loaded only when used: @kubernetes/client-node alone costs about 86 MiB of resident memory.
    const apiserver =
      k8s.podSource !== 'kubelet'
        ? new (await import('./k8s/apiserver-source.js')).ApiServerSource({ nodeName, log })
        : null;
    this.podSources = new PodSourceSwitch({ cache, primary: kubelet, fallback: apiserver, log });
    this.podSources.start();
    log.info('pod metadata sources started', {
      node: nodeName,
      source: k8s.podSource,
      kubelet: kubelet === null ? null : k8s.kubeletUrl,
      apiserver: apiserver !== null,
    });
  }

  /** IPs that changed pods: their endpoints are named again on next use (never the old pod). */
  private onPodsChanged(ips: readonly string[]): void {
    if (this.endpoints !== null) invalidateIps(this.endpoints, ips);
    this.sweepLabels();
  }

  /**
   * Retires the label values of pods gone for SERIES_TTL_MS, and of addresses unused for as long:
   * the exporters stop showing their series at once (filter), and the SDK forgets them (prune)
   * so memory stays bounded.
   */
  private sweepLabels(): void {
    const labeler = this.labeler;
    const pipeline = this.pipeline;
    if (labeler === null || pipeline === null) return;
    const swept = labeler.sweep();
    if (swept.retired > 0) {
      // Counts held under a retired label reach the SDK before it is pruned, not after.
      this.recorder?.flush();
      const pruned = pipeline.pruneSeries();
      if (pruned.supported) labeler.forgetRetired();
      else if (!this.pruneUnsupportedLogged) {
        this.pruneUnsupportedLogged = true;
        this.opts.log.warn(
          'cannot prune dropped series from the OpenTelemetry SDK (unexpected internals): they are still filtered from exports but kept in memory',
        );
      }
      this.opts.log.debug('series of retired label values dropped', {
        values: swept.retired,
        attribute_sets: pruned.removed,
      });
    }
    if (swept.refold) this.endpoints?.invalidateWhere((label) => label === OTHER);
  }

  private pipelineOptions(): MeterPipelineOptions {
    const { config, version, log } = this.opts;
    const otlp = config.otlp;
    const failures = rateLimited(log, 'otlp-export', 60_000);
    return {
      serviceName: otlp.serviceName,
      serviceVersion: version,
      port: config.metricsPort,
      latencyBuckets: [...config.latencyBuckets],
      otlp: {
        enabled: otlp.enabled,
        endpoint: otlp.endpoint ?? '',
        headers: { ...otlp.headers },
        compression: otlp.compression,
        insecure: otlp.insecure,
        certificatePath: otlp.certificatePath ?? undefined,
        clientCertificatePath: otlp.clientCertificatePath ?? undefined,
        clientKeyPath: otlp.clientKeyPath ?? undefined,
        timeoutMs: otlp.timeoutMs,
        exportIntervalMs: otlp.exportIntervalMs,
        exportTimeoutMs: otlp.exportTimeoutMs,
        temporality: otlp.temporality,
        histogramAggregation:
          otlp.histogramAggregation === 'base2_exponential_bucket_histogram'
            ? 'exponential'
            : 'explicit',
      },
      // Outside a pod the detector finds nothing unless Kubernetes is enabled explicitly.
      detectors: [new K8sResourceDetector(config.k8s.enabled ? { inKubernetes: true } : {})],
      dropSeries: (attributes) => this.labeler?.dropSeries(attributes) ?? false,
      labelStats: () => {
        const s = this.labeler?.stats;
        return { overflows: s?.overflows ?? 0, values: s?.values ?? 0 };
      },
      ready: () => this.ready,
      onExportError: (err) => failures.warn('OTLP export failed', { error: err.message }),
    };
  }

  private classifierOptions(decoder: SignatureBatchDecoder): ClassifierOptions {
    const { config } = this.opts;
    return {
      ringBufferPages: config.perfBufferPages,
      audioPorts: config.audioPorts === 'all' ? 'all' : config.audioPorts.map((r) => ({ ...r })),
      algorithm: config.signatureAlgorithm,
      windowSize: config.signatureWindowSize,
      silenceThreshold: config.silenceThreshold,
      maxFlows: config.maxFlows,
      flowTimeoutMs: config.flowTimeoutMs,
      onSignatures: (records, count) => decoder.decode(records, count),
    };
  }

  private createWatcher(classifier: Classifier): InterfaceWatcher {
    const { config, log } = this.opts;
    const errors = rateLimited(log, 'interface-watcher', 10_000);
    return new InterfaceWatcher({
      patterns: config.interfaces,
      onAppear: (name, ifindex) => {
        const stale = classifier.removeStale(name);
        const res = classifier.attach(name);
        log.info('attached', { interface: name, ifindex, mode: res.mode, staleRemoved: stale });
      },
      onVanish: (name, ifindex) => {
        classifier.detach(name);
        log.info('detached', { interface: name, ifindex });
      },
      onError: (err: Error, ctx: WatcherErrorContext) =>
        errors.warn('interface operation failed', { ...ctx, error: serializeError(err) }),
    });
  }

  /** One consistent reading of every stage's counters, taken once per metrics collection. */
  private snapshot(): SelfStatsSnapshot {
    // Observable callbacks run before synchronous instruments are read: pending signature
    // counts reach the counter in the same collection.
    this.recorder?.flush();
    const c = this.classifier;
    const cs = this.correlator?.stats ?? { pending: 0, evictions: 0, expired: 0 };
    if (!c) {
      return {
        ...emptySelfStats(),
        pendingSignatures: cs.pending,
        correlatorEvictions: cs.evictions,
        correlatorExpired: cs.expired,
      };
    }
    const s = c.stats();
    const k = s.kernel;
    return {
      packetsInspected: k[KernelStat.Packets] ?? 0,
      audioPackets: k[KernelStat.Audio] ?? 0,
      eventsDelivered: s.ringbuf.records,
      eventsLost: k[KernelStat.Lost] ?? 0,
      payloadTruncated: k[KernelStat.Truncated] ?? 0,
      packetsMalformed: k[KernelStat.Malformed] ?? 0,
      flowsTracked: s.engine.streamsActive,
      flowsEvicted: s.engine.streamsEvicted,
      flowsExpired: s.engine.streamsExpired,
      interfacesAttached: c.attachedInterfaces().length,
      bpfRunTimeSeconds: s.progs.runTimeNs / 1e9,
      bpfRunCount: s.progs.runCount,
      windowsSilent: s.engine.windowsSilent,
      pendingSignatures: cs.pending,
      correlatorEvictions: cs.evictions,
      correlatorExpired: cs.expired,
      tcpSegments: k[KernelStat.TcpSegments] ?? 0,
      tcpRetransmittedBytes: k[KernelStat.TcpRetransBytes] ?? 0,
      tcpOutOfOrder: k[KernelStat.TcpOutOfOrder] ?? 0,
      tcpResyncs: k[KernelStat.TcpResync] ?? 0,
      tcpFlowsExpired: k[KernelStat.TcpFlowsExpired] ?? 0,
      encryptedFlows: k[KernelStat.EncryptedFlows] ?? 0,
      encryptedSegments: k[KernelStat.EncryptedSegments] ?? 0,
      gsoChunks: k[KernelStat.GsoChunks] ?? 0,
      bulkFlows: k[KernelStat.BulkFlows] ?? 0,
      bulkSegments: k[KernelStat.BulkSegments] ?? 0,
    };
  }

  /** Synchronous last resort (process exit, uncaught error): detach everything now. */
  closeNow(): void {
    this.ready = false;
    this.cgroupIds?.stop();
    if (this.expireTimer) clearInterval(this.expireTimer);
    this.expireTimer = null;
    try {
      this.classifier?.close();
    } finally {
      this.classifier = null;
    }
  }

  /** Orderly stop: detach first, then flush and close the exporters. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.stopStages();
    return this.stopping;
  }

  private async stopStages(): Promise<void> {
    const watcher = this.watcher;
    this.watcher = null;
    if (watcher) await watcher.stop();
    this.closeNow();
    const sources = this.podSources;
    this.podSources = null;
    if (sources) {
      await sources.stop().catch((err: unknown) => {
        this.opts.log.warn('stopping the pod metadata sources failed', {
          error: serializeError(err),
        });
      });
    }
    this.sampleLog?.close();
    const pipeline = this.pipeline;
    this.pipeline = null;
    if (pipeline) await pipeline.shutdown();
  }
}
