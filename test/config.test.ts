/**
 * Configuration: defaults, every variable's bad forms, error reporting
 * (all problems, one line each, values quoted/escaped/truncated, secrets
 * hidden), cross-variable rules, and the documentation table.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import {
  type AgentConfig,
  CONFIG_VARIABLES,
  ConfigError,
  describeConfig,
  loadConfig,
} from '../src/config.js';
import { quoteForDisplay } from '../src/log.js';

type Env = Record<string, string | undefined>;

const tmp = mkdtempSync(join(tmpdir(), 'alt-config-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const caFile = join(tmp, 'ca.pem');
const keyFile = join(tmp, 'client.key');
const certFile = join(tmp, 'client.pem');
for (const f of [caFile, keyFile, certFile]) writeFileSync(f, '-----BEGIN TEST-----\n');

function loadError(env: Env): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected a ConfigError for ${JSON.stringify(env)}`);
}

/** The one problem line about `name`, asserting there is exactly one. */
function problemFor(err: ConfigError, name: string): string {
  const lines = err.problems.filter((p) => p.startsWith(`${name}=`) || p.startsWith(`${name} `));
  assert.equal(lines.length, 1, `one problem for ${name} in:\n${err.message}`);
  return lines[0];
}

const DEFAULT_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

describe('defaults', () => {
  it('an empty environment gives every documented default', () => {
    const cfg = loadConfig({});
    const expected: AgentConfig = {
      interfaces: ['eth0'],
      logLevel: 'info',
      metricsPort: 9090,
      audioPorts: 'all',
      signatureWindowSize: 256,
      silenceThreshold: 256,
      signatureAlgorithm: 'xxhash',
      k8s: {
        enabled: false,
        nodeName: null,
        podSource: 'auto',
        nodeIp: null,
        kubeletUrl: null,
        kubeletInsecure: false,
        kubeletCaFile: null,
        tokenFile: null,
        kubeletPollIntervalMs: 2000,
        podCacheSize: 4096,
      },
      labels: { external: 'external', maxValues: 500, seriesTtlMs: 60000 },
      containerRuntime: 'auto',
      maxFlows: 10000,
      flowTimeoutMs: 30000,
      perfBufferPages: 1024,
      maxPendingSignatures: 1048576,
      latencyBuckets: DEFAULT_BUCKETS,
      sampleLog: { enabled: false, ratePerSecond: 100 },
      otlp: {
        enabled: false,
        endpoint: null,
        insecure: false,
        headers: {},
        compression: 'none',
        certificatePath: null,
        clientKeyPath: null,
        clientCertificatePath: null,
        timeoutMs: 10000,
        exportIntervalMs: 60000,
        exportTimeoutMs: 30000,
        temporality: 'cumulative',
        histogramAggregation: 'explicit_bucket_histogram',
        serviceName: 'audio-latency-tracker',
        resourceAttributes: {},
      },
    };
    assert.deepEqual(cfg, expected);
  });

  it('uses the injected environment, not process.env', () => {
    const saved = process.env.METRICS_PORT;
    process.env.METRICS_PORT = '1234';
    try {
      assert.equal(loadConfig({}).metricsPort, 9090);
      assert.equal(loadConfig({ METRICS_PORT: '4321' }).metricsPort, 4321);
    } finally {
      if (saved === undefined) delete process.env.METRICS_PORT;
      else process.env.METRICS_PORT = saved;
    }
  });

  it('is deeply frozen', () => {
    const cfg = loadConfig({ AUDIO_PORTS: '5004', OTEL_RESOURCE_ATTRIBUTES: 'a=b' });
    assert.ok(Object.isFrozen(cfg));
    assert.ok(Object.isFrozen(cfg.interfaces));
    assert.ok(Object.isFrozen(cfg.otlp));
    assert.ok(Object.isFrozen(cfg.otlp.resourceAttributes));
    assert.ok(Array.isArray(cfg.audioPorts) && Object.isFrozen(cfg.audioPorts[0]));
    assert.throws(() => {
      (cfg as { metricsPort: number }).metricsPort = 1;
    }, TypeError);
  });

  it('treats empty OTEL_* values as unset (OpenTelemetry rule)', () => {
    const env: Env = {};
    for (const v of CONFIG_VARIABLES) if (v.name.startsWith('OTEL_')) env[v.name] = '';
    assert.deepEqual(loadConfig(env).otlp, loadConfig({}).otlp);
  });
});

describe('accepted forms', () => {
  it('integers at both ends of their ranges', () => {
    const cases: [string, string, (c: AgentConfig) => number][] = [
      ['METRICS_PORT', '1', (c) => c.metricsPort],
      ['METRICS_PORT', '65535', (c) => c.metricsPort],
      ['SIGNATURE_WINDOW_SIZE', '32', (c) => c.signatureWindowSize],
      ['SIGNATURE_WINDOW_SIZE', '4096', (c) => c.signatureWindowSize],
      ['SILENCE_THRESHOLD', '0', (c) => c.silenceThreshold],
      ['SILENCE_THRESHOLD', '32767', (c) => c.silenceThreshold],
      ['MAX_FLOWS', '1', (c) => c.maxFlows],
      ['MAX_FLOWS', '1000000', (c) => c.maxFlows],
      ['FLOW_TIMEOUT_MS', '100', (c) => c.flowTimeoutMs],
      ['FLOW_TIMEOUT_MS', '3600000', (c) => c.flowTimeoutMs],
      ['PERF_BUFFER_SIZE', '1', (c) => c.perfBufferPages],
      ['PERF_BUFFER_SIZE', '262144', (c) => c.perfBufferPages],
      ['MAX_PENDING_SIGNATURES', '1024', (c) => c.maxPendingSignatures],
      ['MAX_PENDING_SIGNATURES', '67108864', (c) => c.maxPendingSignatures],
      ['SAMPLE_LOG_RATE', '1', (c) => c.sampleLog.ratePerSecond],
      ['SAMPLE_LOG_RATE', '100000', (c) => c.sampleLog.ratePerSecond],
      ['K8S_KUBELET_POLL_INTERVAL_MS', '200', (c) => c.k8s.kubeletPollIntervalMs],
      ['K8S_KUBELET_POLL_INTERVAL_MS', '60000', (c) => c.k8s.kubeletPollIntervalMs],
      ['K8S_POD_CACHE_SIZE', '16', (c) => c.k8s.podCacheSize],
      ['K8S_POD_CACHE_SIZE', '65536', (c) => c.k8s.podCacheSize],
      ['MAX_POD_LABEL_VALUES', '10', (c) => c.labels.maxValues],
      ['MAX_POD_LABEL_VALUES', '100000', (c) => c.labels.maxValues],
      ['SERIES_TTL_MS', '1000', (c) => c.labels.seriesTtlMs],
      ['SERIES_TTL_MS', '86400000', (c) => c.labels.seriesTtlMs],
      ['OTEL_EXPORTER_OTLP_TIMEOUT', '1', (c) => c.otlp.timeoutMs],
      ['OTEL_METRIC_EXPORT_INTERVAL', '100', (c) => c.otlp.exportIntervalMs],
      ['OTEL_METRIC_EXPORT_INTERVAL', '86400000', (c) => c.otlp.exportIntervalMs],
    ];
    for (const [name, raw, get] of cases) {
      assert.equal(get(loadConfig({ [name]: raw })), Number(raw), `${name}=${raw}`);
    }
  });

  it('booleans: exactly true|false|1|0|yes|no, any case (convict alone would take "0" as true)', () => {
    const cases: [string, boolean][] = [
      ['true', true],
      ['TRUE', true],
      ['1', true],
      ['yes', true],
      ['Yes', true],
      ['false', false],
      ['False', false],
      ['0', false],
      ['no', false],
      ['NO', false],
    ];
    for (const [raw, want] of cases) {
      assert.equal(loadConfig({ SAMPLE_LOG: raw }).sampleLog.enabled, want, `SAMPLE_LOG=${raw}`);
      const k8s = loadConfig({ K8S_ENABLED: raw, K8S_NODE_NAME: 'node-1' }).k8s.enabled;
      assert.equal(k8s, want, `K8S_ENABLED=${raw}`);
    }
  });

  it('enums', () => {
    assert.equal(loadConfig({ LOG_LEVEL: 'debug' }).logLevel, 'debug');
    assert.equal(loadConfig({ LOG_LEVEL: 'WARN' }).logLevel, 'warn');
    assert.equal(
      loadConfig({ SIGNATURE_ALGORITHM: 'rolling_hash' }).signatureAlgorithm,
      'rolling_hash',
    );
    assert.equal(loadConfig({ SIGNATURE_ALGORITHM: 'crc32' }).signatureAlgorithm, 'crc32');
    assert.equal(loadConfig({ CONTAINER_RUNTIME: 'crio' }).containerRuntime, 'crio');
    const otlp = loadConfig({
      OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'LowMemory',
      OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION:
        'base2_exponential_bucket_histogram',
      OTEL_EXPORTER_OTLP_COMPRESSION: 'GZIP',
    }).otlp;
    assert.equal(otlp.temporality, 'lowmemory');
    assert.equal(otlp.histogramAggregation, 'base2_exponential_bucket_histogram');
    assert.equal(otlp.compression, 'gzip');
  });

  it('INTERFACE: names and glob patterns, duplicates dropped', () => {
    const cfg = loadConfig({ INTERFACE: 'eth0,veth*,cali[0-9a-f]*,eth0,lxc[!_]?' });
    assert.deepEqual(cfg.interfaces, ['eth0', 'veth*', 'cali[0-9a-f]*', 'lxc[!_]?']);
    assert.deepEqual(loadConfig({ INTERFACE: 'a23456789012345' }).interfaces, ['a23456789012345']);
  });

  it('AUDIO_PORTS: all, empty, ports and ranges (sorted and merged)', () => {
    assert.equal(loadConfig({ AUDIO_PORTS: 'all' }).audioPorts, 'all');
    assert.equal(loadConfig({ AUDIO_PORTS: 'ALL' }).audioPorts, 'all');
    assert.equal(loadConfig({ AUDIO_PORTS: '' }).audioPorts, 'all');
    assert.deepEqual(loadConfig({ AUDIO_PORTS: '5004,10000-20000' }).audioPorts, [
      { from: 5004, to: 5004 },
      { from: 10000, to: 20000 },
    ]);
    assert.deepEqual(loadConfig({ AUDIO_PORTS: '5006,5004-5005,30-40,1,35-50,65535' }).audioPorts, [
      { from: 1, to: 1 },
      { from: 30, to: 50 },
      { from: 5004, to: 5006 },
      { from: 65535, to: 65535 },
    ]);
  });

  it('Kubernetes pod sources: kubelet URL from NODE_IP (IPv6 in brackets), files, policy', () => {
    assert.equal(loadConfig({ NODE_IP: '10.1.2.3' }).k8s.kubeletUrl, 'https://10.1.2.3:10250');
    const v6 = loadConfig({ NODE_IP: '2001:DB8:0:0::7' }).k8s;
    assert.equal(v6.nodeIp, '2001:db8::7');
    assert.equal(v6.kubeletUrl, 'https://[2001:db8::7]:10250');
    const explicit = loadConfig({
      NODE_IP: '10.1.2.3',
      K8S_KUBELET_URL: 'http://127.0.0.1:10255/',
    }).k8s;
    assert.equal(explicit.kubeletUrl, 'http://127.0.0.1:10255');
    assert.equal(
      loadConfig({ K8S_KUBELET_URL: 'https://[::1]:10250' }).k8s.kubeletUrl,
      'https://[::1]:10250',
    );
    assert.equal(loadConfig({ K8S_KUBELET_URL: '', NODE_IP: '' }).k8s.kubeletUrl, null);
    const files = loadConfig({
      K8S_TOKEN_FILE: keyFile,
      K8S_KUBELET_CA_FILE: caFile,
      K8S_KUBELET_INSECURE: 'yes',
      K8S_POD_SOURCE: 'apiserver',
      K8S_LABEL_EXTERNAL: 'ip',
    });
    assert.equal(files.k8s.tokenFile, keyFile);
    assert.equal(files.k8s.kubeletCaFile, caFile);
    assert.equal(files.k8s.kubeletInsecure, true);
    assert.equal(files.k8s.podSource, 'apiserver');
    assert.equal(files.labels.external, 'ip');
    const creds = loadError({ K8S_KUBELET_URL: 'https://user:pw@10.0.0.1' });
    assert.match(
      creds.message,
      /^K8S_KUBELET_URL=\(hidden\) is invalid: must not contain credentials/,
    );
    assert.doesNotMatch(creds.message, /pw/);
  });

  it('LATENCY_BUCKETS', () => {
    assert.deepEqual(
      loadConfig({ LATENCY_BUCKETS: '0.001,0.5,1,60' }).latencyBuckets,
      [0.001, 0.5, 1, 60],
    );
  });

  it('OTLP: endpoint precedence, merged headers, TLS files, timeouts', () => {
    const cfg = loadConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://general:4317',
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'HTTPS://collector.example:4317/',
      OTEL_EXPORTER_OTLP_HEADERS: 'Authorization=Bearer%20general, x-tenant=t1',
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'authorization=Bearer%20metrics,__proto__=p',
      OTEL_EXPORTER_OTLP_CERTIFICATE: caFile,
      OTEL_EXPORTER_OTLP_CLIENT_KEY: keyFile,
      OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE: certFile,
      OTEL_EXPORTER_OTLP_TIMEOUT: '5000',
      OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: '7000',
      OTEL_EXPORTER_OTLP_COMPRESSION: 'none',
      OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: 'gzip',
      OTEL_SERVICE_NAME: 'my-agent',
      OTEL_RESOURCE_ATTRIBUTES: 'k8s.cluster.name=prod, team=audio%2Cvoice,,__proto__=x',
    });
    assert.equal(cfg.otlp.enabled, true);
    assert.equal(cfg.otlp.endpoint, 'https://collector.example:4317');
    assert.equal(cfg.otlp.insecure, false);
    assert.deepEqual(Object.entries(cfg.otlp.headers), [
      ['authorization', 'Bearer metrics'],
      ['x-tenant', 't1'],
      ['__proto__', 'p'],
    ]);
    assert.equal(cfg.otlp.certificatePath, caFile);
    assert.equal(cfg.otlp.clientKeyPath, keyFile);
    assert.equal(cfg.otlp.clientCertificatePath, certFile);
    assert.equal(cfg.otlp.timeoutMs, 7000);
    assert.equal(cfg.otlp.compression, 'gzip');
    assert.equal(cfg.otlp.serviceName, 'my-agent');
    assert.deepEqual(Object.keys(cfg.otlp.resourceAttributes), [
      'k8s.cluster.name',
      'team',
      '__proto__',
    ]);
    assert.equal(cfg.otlp.resourceAttributes['team'], 'audio,voice');
    // A "__proto__" key is an own property, not a prototype swap.
    assert.equal(Object.getPrototypeOf(cfg.otlp.resourceAttributes), Object.prototype);

    const plain = loadConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317',
      OTEL_EXPORTER_OTLP_INSECURE: 'true',
    }).otlp;
    assert.equal(plain.endpoint, 'http://collector:4317');
    assert.equal(plain.insecure, true);
    assert.equal(
      loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://[::1]:4317' }).otlp.endpoint,
      'http://[::1]:4317',
    );
  });

  it('export timeout: clamped to the interval unless both are set explicitly', () => {
    const clamped = loadConfig({ OTEL_METRIC_EXPORT_INTERVAL: '1000' }).otlp;
    assert.equal(clamped.exportIntervalMs, 1000);
    assert.equal(clamped.exportTimeoutMs, 1000);
    const both = loadConfig({
      OTEL_METRIC_EXPORT_INTERVAL: '5000',
      OTEL_METRIC_EXPORT_TIMEOUT: '4000',
    });
    assert.equal(both.otlp.exportTimeoutMs, 4000);
    const err = loadError({
      OTEL_METRIC_EXPORT_INTERVAL: '1000',
      OTEL_METRIC_EXPORT_TIMEOUT: '2000',
    });
    assert.match(
      err.message,
      /OTEL_METRIC_EXPORT_TIMEOUT \(2000\) must not exceed OTEL_METRIC_EXPORT_INTERVAL \(1000\)/,
    );
  });
});

/** Values every variable must reject, with a few per-variable additions. */
const INJECTIONS = ['5004;rm -rf /', '$(id)', 'a\nb', 'x\r\nLOG_LEVEL=debug'];
const INT_BAD = [
  '',
  '12abc',
  '1e3',
  ' 5',
  '5 ',
  '-1',
  '+5',
  '0x10',
  '5.0',
  'abc',
  '99999999999999999999',
  ...INJECTIONS,
];
const BOOL_BAD = ['', 'maybe', '2', 'truex', ' true', 'on', 'y', ...INJECTIONS];
const ENDPOINT_BAD = [
  'collector:4317',
  'ftp://x',
  'http://',
  'http://x/v1/metrics',
  'http://x?a=b',
  'http://x:99999',
  'http://x y',
  ...INJECTIONS,
];

const BAD_VALUES: Readonly<Record<string, readonly string[]>> = {
  INTERFACE: [
    '',
    'eth0,',
    ',eth0',
    'a234567890123456',
    'eth/0',
    'eth 0',
    'eth:0',
    'veth[',
    'veth]',
    'v[z-a]',
    'v[]',
    '.',
    'x'.repeat(100000),
    ...INJECTIONS,
  ],
  LOG_LEVEL: ['', 'verbose', 'trace', ' info', ...INJECTIONS],
  METRICS_PORT: [...INT_BAD, '0', '65536', '70000'],
  AUDIO_PORTS: [
    '0',
    '65536',
    '20000-10000',
    '5004,',
    ',5004',
    'abc',
    '-5',
    '5004-',
    '1e3',
    ' 5004',
    '5004, 5006',
    '5004--5006',
    '99999999999999999999',
    ...INJECTIONS,
  ],
  SIGNATURE_WINDOW_SIZE: [...INT_BAD, '0', '31', '4097'],
  SILENCE_THRESHOLD: [...INT_BAD, '32768'],
  SIGNATURE_ALGORITHM: ['', 'XXHASH', 'md5', ...INJECTIONS],
  K8S_ENABLED: BOOL_BAD,
  K8S_NODE_NAME: ['Node_1', 'UPPER', '-node', 'node-', 'a'.repeat(254), 'node..a', ...INJECTIONS],
  CONTAINER_RUNTIME: ['', 'podman', 'Docker', ...INJECTIONS],
  K8S_POD_SOURCE: ['', 'both', 'Kubelet', 'api-server', ...INJECTIONS],
  K8S_KUBELET_URL: [
    '10.0.0.1:10250',
    'ftp://10.0.0.1',
    'https://',
    'https://10.0.0.1:10250/pods',
    'https://10.0.0.1?x=1',
    'https://10.0.0.1:99999',
    'https://[::1',
    ...INJECTIONS,
  ],
  NODE_IP: ['node-a', '10.0.0', '10.0.0.256', '::g', '10.0.0.1/24', ' 10.0.0.1', ...INJECTIONS],
  K8S_KUBELET_INSECURE: BOOL_BAD,
  K8S_KUBELET_CA_FILE: ['/nonexistent/ca.crt', tmp, ...INJECTIONS],
  K8S_TOKEN_FILE: ['/nonexistent/token', tmp, ...INJECTIONS],
  K8S_KUBELET_POLL_INTERVAL_MS: [...INT_BAD, '199', '60001'],
  K8S_POD_CACHE_SIZE: [...INT_BAD, '15', '65537'],
  K8S_LABEL_EXTERNAL: ['', 'IP', 'none', 'pod', ...INJECTIONS],
  MAX_POD_LABEL_VALUES: [...INT_BAD, '0', '9', '100001'],
  SERIES_TTL_MS: [...INT_BAD, '0', '999', '86400001'],
  MAX_FLOWS: [...INT_BAD, '0', '1000001'],
  FLOW_TIMEOUT_MS: [...INT_BAD, '99', '3600001'],
  PERF_BUFFER_SIZE: [...INT_BAD, '0', '262145'],
  MAX_PENDING_SIGNATURES: [...INT_BAD, '1023', '67108865'],
  LATENCY_BUCKETS: [
    '',
    '0',
    '-1',
    '1,1',
    '2,1',
    'abc',
    '1e3',
    'Infinity',
    'NaN',
    '0.1,',
    ' 0.1',
    '.5',
    '1.',
    '9'.repeat(400),
    Array.from({ length: 101 }, (_, i) => String(i + 1)).join(','),
    ...INJECTIONS,
  ],
  SAMPLE_LOG: BOOL_BAD,
  SAMPLE_LOG_RATE: [...INT_BAD, '0', '100001'],
  OTEL_EXPORTER_OTLP_ENDPOINT: ENDPOINT_BAD,
  OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: ENDPOINT_BAD,
  OTEL_EXPORTER_OTLP_HEADERS: [
    'token',
    '=v',
    'k=',
    'k=%zz',
    'k=a%0Ab',
    'k=caf%C3%A9',
    'a b=c',
    'k-bin=x',
    'a=1,a=2',
    'a=1,',
    ...INJECTIONS,
  ],
  OTEL_EXPORTER_OTLP_METRICS_HEADERS: ['token', 'k=', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_COMPRESSION: ['zip', 'deflate', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: ['zip', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_INSECURE: ['maybe', '2', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_METRICS_INSECURE: ['maybe', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_CERTIFICATE: ['/nonexistent/ca.pem', tmp, ...INJECTIONS],
  OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: ['/nonexistent/ca.pem', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_CLIENT_KEY: ['/nonexistent/key', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY: ['/nonexistent/key', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: ['/nonexistent/cert', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE: ['/nonexistent/cert', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_TIMEOUT: [...INT_BAD.filter((v) => v !== ''), '0', '3600001'],
  OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: [...INT_BAD.filter((v) => v !== ''), '0'],
  OTEL_METRIC_EXPORT_INTERVAL: [...INT_BAD.filter((v) => v !== ''), '99', '86400001'],
  OTEL_METRIC_EXPORT_TIMEOUT: [...INT_BAD.filter((v) => v !== ''), '0', '86400001'],
  OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: ['cumulativ', 'both', ...INJECTIONS],
  OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION: [
    'exponential',
    'explicit',
    ...INJECTIONS,
  ],
  // Free text: only control characters and length are wrong.
  OTEL_SERVICE_NAME: ['a\nb', 'x\u0007', 'x\u009b[2J', 's'.repeat(256)],
  OTEL_RESOURCE_ATTRIBUTES: [
    'a',
    'a=b=c',
    '=b',
    'a=%zz',
    'a=1,a=2',
    `k=${'v'.repeat(256)}`,
    'k=a%0Ab',
    ...INJECTIONS,
  ],
};

describe('rejected forms', () => {
  it('has bad-value cases for every variable', () => {
    assert.deepEqual(Object.keys(BAD_VALUES).sort(), CONFIG_VARIABLES.map((v) => v.name).sort());
  });

  for (const variable of CONFIG_VARIABLES) {
    it(`${variable.name}: each bad value -> ConfigError naming the variable and value`, () => {
      for (const raw of BAD_VALUES[variable.name]) {
        const err = loadError({ [variable.name]: raw });
        const line = problemFor(err, variable.name);
        const shown = variable.sensitive ? '(hidden)' : quoteForDisplay(raw);
        assert.ok(
          line.startsWith(`${variable.name}=${shown} is invalid: `),
          `line for ${JSON.stringify(raw)}: ${line}`,
        );
        assert.match(line, /expected /);
        assert.ok(
          !line.includes('\n') && !line.includes('\r'),
          `single line: ${JSON.stringify(line)}`,
        );
        assert.equal(err.problems.length, 1, err.message);
      }
    });
  }

  it('METRICS_PORT message matches the documented example', () => {
    assert.equal(
      loadError({ METRICS_PORT: '70000' }).message,
      'METRICS_PORT="70000" is invalid: expected an integer from 1 to 65535',
    );
  });

  it('collects every problem, one line each, in table order', () => {
    const err = loadError({
      METRICS_PORT: 'abc',
      LOG_LEVEL: 'loud',
      AUDIO_PORTS: '5004;rm -rf /',
      SAMPLE_LOG: '0\n1',
      LATENCY_BUCKETS: '1,0.5',
    });
    assert.equal(err.problems.length, 5);
    assert.deepEqual(
      err.problems.map((p) => p.split('=')[0]),
      ['LOG_LEVEL', 'METRICS_PORT', 'AUDIO_PORTS', 'LATENCY_BUCKETS', 'SAMPLE_LOG'],
    );
    assert.equal(err.message.split('\n').length, 5);
    assert.match(err.message, /^AUDIO_PORTS="5004;rm -rf \/" is invalid: item 1 is not a port/m);
    assert.match(err.message, /^SAMPLE_LOG="0\\n1" is invalid/m);
  });

  it('escapes control and bidi characters and truncates long values', () => {
    const err = loadError({
      LOG_LEVEL: '\u001b[31mred\u202eevil\u0000',
      CONTAINER_RUNTIME: 'z'.repeat(300),
    });
    const level = problemFor(err, 'LOG_LEVEL');
    assert.ok(level.startsWith('LOG_LEVEL="\\u001b[31mred\\u202eevil\\u0000" is invalid'), level);
    const runtime = problemFor(err, 'CONTAINER_RUNTIME');
    assert.ok(runtime.includes(`"${'z'.repeat(64)}" (truncated, 300 characters)`), runtime);
    assert.ok(!runtime.includes('z'.repeat(65)));
  });

  it('never prints header values, not even parts of them', () => {
    const secret = 'SuperSecret42';
    const err = loadError({
      OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%zz${secret}`,
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: `${secret}`,
      METRICS_PORT: '0',
    });
    assert.equal(err.problems.length, 3);
    assert.ok(!err.message.includes(secret), err.message);
    assert.ok(!err.message.includes('Bearer'), err.message);
    assert.match(
      problemFor(err, 'OTEL_EXPORTER_OTLP_HEADERS'),
      /=\(hidden\) is invalid: entry 1 has invalid percent-encoding/,
    );
  });

  it('hides an endpoint that carries credentials', () => {
    const err = loadError({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://user:hunter2@collector:4317' });
    assert.ok(!err.message.includes('hunter2'), err.message);
    assert.match(
      err.message,
      /^OTEL_EXPORTER_OTLP_ENDPOINT=\(hidden\) is invalid: must not contain credentials/,
    );
  });

  it('describeConfig reports header names only', () => {
    const cfg = loadConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector:4317',
      OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20SuperSecret42,x-scope=tenant',
    });
    assert.equal(cfg.otlp.headers['authorization'], 'Bearer SuperSecret42');
    const summary = describeConfig(cfg);
    const text = JSON.stringify(summary);
    assert.ok(!text.includes('SuperSecret42'), text);
    assert.ok(!text.includes('tenant'), text);
    assert.deepEqual(summary.otlp.headerNames, ['authorization', 'x-scope']);
    assert.equal(summary.metricsPort, 9090);
  });
});

describe('cross-variable rules', () => {
  it('K8S_ENABLED defaults to true when KUBERNETES_SERVICE_HOST is set', () => {
    assert.equal(loadConfig({}).k8s.enabled, false);
    assert.equal(loadConfig({ KUBERNETES_SERVICE_HOST: '' }).k8s.enabled, false);
    const inPod = loadConfig({
      KUBERNETES_SERVICE_HOST: '10.96.0.1',
      K8S_NODE_NAME: 'node-a.example',
    });
    assert.equal(inPod.k8s.enabled, true);
    assert.equal(inPod.k8s.nodeName, 'node-a.example');
    const optedOut = loadConfig({ KUBERNETES_SERVICE_HOST: '10.96.0.1', K8S_ENABLED: 'false' });
    assert.equal(optedOut.k8s.enabled, false);
    assert.equal(optedOut.k8s.nodeName, null);
  });

  it('K8S_NODE_NAME missing (or empty) while K8S_ENABLED -> a clear error', () => {
    for (const env of [
      { KUBERNETES_SERVICE_HOST: '10.96.0.1' },
      { K8S_ENABLED: 'true' },
      { K8S_ENABLED: 'yes', K8S_NODE_NAME: '' },
    ]) {
      const err = loadError(env);
      assert.equal(err.problems.length, 1);
      assert.match(err.message, /^K8S_NODE_NAME is required when K8S_ENABLED is true/);
      assert.match(err.message, /spec\.nodeName/);
    }
  });

  it('K8S_POD_SOURCE=kubelet without K8S_KUBELET_URL or NODE_IP -> a clear error', () => {
    const err = loadError({ K8S_ENABLED: 'true', K8S_NODE_NAME: 'n1', K8S_POD_SOURCE: 'kubelet' });
    assert.equal(err.problems.length, 1);
    assert.match(err.message, /^K8S_POD_SOURCE=kubelet needs the kubelet address/);
    // Either one provides it; without Kubernetes the rule does not apply.
    loadConfig({
      K8S_ENABLED: 'true',
      K8S_NODE_NAME: 'n1',
      K8S_POD_SOURCE: 'kubelet',
      NODE_IP: '10.0.0.5',
    });
    loadConfig({ K8S_POD_SOURCE: 'kubelet' });
    // auto without a kubelet address is the API server alone, not an error.
    assert.equal(loadConfig({ K8S_ENABLED: 'true', K8S_NODE_NAME: 'n1' }).k8s.kubeletUrl, null);
  });

  it('mutual TLS needs both the key and the certificate', () => {
    const err = loadError({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector:4317',
      OTEL_EXPORTER_OTLP_CLIENT_KEY: keyFile,
    });
    assert.match(err.message, /CLIENT_KEY and .*CLIENT_CERTIFICATE must be set together/);
  });

  it('INSECURE=true contradicts https://; TLS files contradict http://', () => {
    const insecure = loadError({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector:4317',
      OTEL_EXPORTER_OTLP_METRICS_INSECURE: 'true',
    });
    assert.match(
      insecure.message,
      /INSECURE is true but OTEL_EXPORTER_OTLP_ENDPOINT is https:\/\//,
    );
    const tls = loadError({
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://collector:4317',
      OTEL_EXPORTER_OTLP_CERTIFICATE: caFile,
    });
    assert.match(tls.message, /OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is http:\/\/ \(plaintext\)/);
  });

  it('cross-variable problems are reported together with per-variable ones', () => {
    const err = loadError({ K8S_ENABLED: 'true', METRICS_PORT: '-1', MAX_FLOWS: '1e3' });
    assert.deepEqual(
      err.problems.map((p) => p.split(/[= ]/)[0]),
      ['METRICS_PORT', 'MAX_FLOWS', 'K8S_NODE_NAME'],
    );
  });

  it('a rule whose input is itself invalid is not reported twice', () => {
    const err = loadError({ K8S_ENABLED: 'maybe' });
    assert.equal(err.problems.length, 1);
    assert.match(err.message, /^K8S_ENABLED="maybe" is invalid/);
  });
});

describe('docs/configuration.md', () => {
  it('has a table row for every variable with its default', () => {
    const doc = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    for (const v of CONFIG_VARIABLES) {
      const row = doc.split('\n').find((l) => l.startsWith(`| \`${v.name}\` |`));
      assert.ok(row !== undefined, `no row for ${v.name}`);
      assert.ok(row.includes(v.default), `row for ${v.name} lacks default ${v.default}: ${row}`);
    }
  });
});
