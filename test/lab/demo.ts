/**
 * The demo (`npm run demo`): builds the lab (six pods in network namespaces on a bridge, two
 * audio pipelines through relays), runs the agent on the lab's interfaces, streams speech-like
 * audio until stopped and shows, every second, per hop: samples and p50/p95/p99 latency, computed
 * from the agent's /metrics.
 *
 *   node dist/test/lab/demo.js [--duration <s>] [--prometheus] [--port <metrics port>]
 *
 * Ctrl-C (SIGINT) or SIGTERM stops everything and removes the lab; nothing is left behind.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { AGENT_ENTRY, AgentProcess, sleep } from './agent-process.js';
import { cleanupStale, isRoot, Lab } from './lab.js';
import {
  bucketsOf,
  histogramQuantile,
  labelPairs,
  parseMetrics,
  sumOf,
  type Sample,
} from './metrics-text.js';
import { Prometheus } from './prometheus.js';
import {
  agentEnv,
  HOLD_MS,
  LAB_PODS,
  PIPELINES,
  startReceivers,
  startSenders,
  stopPipelines,
  type RunningPipeline,
} from './scenario.js';

const HOP = 'audio_latency_seconds';
const TRANSIT = 'audio_transit_latency_seconds';

interface DemoOptions {
  durationS: number; // 0: until stopped
  prometheus: boolean;
  port: number; // 0: a free one
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`demo: ${msg}\n`);
  process.stderr.write(
    'usage: node dist/test/lab/demo.js [--duration <seconds>] [--prometheus] [--port <metrics port>]\n',
  );
  process.exit(2);
}

function parseOptions(): DemoOptions {
  let values: { duration?: string; prometheus?: boolean; port?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        duration: { type: 'string' },
        prometheus: { type: 'boolean', default: false },
        port: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (values.help) usage();
  const durationS = values.duration === undefined ? 0 : Number(values.duration);
  if (!Number.isFinite(durationS) || durationS < 0) usage(`bad --duration '${values.duration}'`);
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad --port '${values.port}'`);
  return { durationS, prometheus: values.prometheus ?? false, port };
}

function ms(seconds: number): string {
  return Number.isFinite(seconds) ? (seconds * 1000).toFixed(2) : '-';
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

/** One frame of the live view, from one scrape. */
function render(lab: Lab, samples: Sample[], elapsedS: number, header: string[]): string {
  const name = (ip: string): string => {
    const p = lab.podByIp(ip);
    return p ? `${p.name} (${ip})` : ip;
  };
  const lines = [...header, ''];
  const hops = labelPairs(samples, `${HOP}_count`, 'source_pod', 'dest_pod').sort((a, b) =>
    `${a[0]}${a[1]}`.localeCompare(`${b[0]}${b[1]}`),
  );
  const attached = sumOf(samples, 'audio_tracker_interfaces_attached') ?? 0;
  const sigs = sumOf(samples, 'audio_signatures_total') ?? 0;
  if (hops.length === 0) {
    const spin = '|/-\\'[Math.floor(elapsedS) % 4];
    lines.push(
      `${spin} warming up ${elapsedS.toFixed(0)} s: ${attached}/${lab.hostInterfaces.length} interfaces ` +
        `attached, ${sigs} signatures so far, waiting for the first hop samples...`,
    );
    return lines.join('\n');
  }
  const w = 52;
  lines.push(
    `${pad('hop (source -> dest)', w)}${pad('samples', 9, true)}${pad('p50 ms', 9, true)}` +
      `${pad('p95 ms', 9, true)}${pad('p99 ms', 9, true)}`,
  );
  for (const [src, dst] of hops) {
    const sel = { source_pod: src, dest_pod: dst };
    const buckets = bucketsOf(samples, HOP, sel);
    const count = sumOf(samples, `${HOP}_count`, sel) ?? 0;
    lines.push(
      `${pad(`${name(src)} -> ${name(dst)}`, w)}${pad(String(count), 9, true)}` +
        `${pad(ms(histogramQuantile(0.5, buckets)), 9, true)}` +
        `${pad(ms(histogramQuantile(0.95, buckets)), 9, true)}` +
        `${pad(ms(histogramQuantile(0.99, buckets)), 9, true)}`,
    );
  }
  const tCount = sumOf(samples, `${TRANSIT}_count`) ?? 0;
  const tSum = sumOf(samples, `${TRANSIT}_sum`) ?? 0;
  lines.push('');
  lines.push(
    `transit (same packet at two interfaces): ${tCount} samples, mean ` +
      `${tCount ? ((tSum / tCount) * 1e6).toFixed(0) : '-'} us; ${sigs} signatures; ` +
      `${attached} interfaces attached; streaming ${elapsedS.toFixed(0)} s`,
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions();
  if (!isRoot()) {
    process.stderr.write(
      'demo: must run as root: it creates network namespaces, veth pairs and a bridge, and the\n' +
        'agent loads eBPF programs. Run: sudo npm run demo  (or sudo bash scripts/bootstrap.sh demo)\n',
    );
    process.exit(1);
  }
  if (!existsSync(AGENT_ENTRY)) {
    process.stderr.write(`demo: ${AGENT_ENTRY} is missing: build first (npm run build)\n`);
    process.exit(1);
  }

  const stale = cleanupStale();
  if (stale > 0) console.log(`removed ${stale} namespaces/links left by an earlier run`);
  const lab = Lab.create({ pods: LAB_PODS, signalHandlers: false });
  let agent: AgentProcess | undefined;
  let prom: Prometheus | undefined;
  let pipes: RunningPipeline[] = [];
  let stopping: Promise<void> | undefined;

  const shutdown = (reason: string, code: number): Promise<void> => {
    stopping ??= (async () => {
      process.stdout.write(
        `\n${reason}: stopping the streams, the agent and removing the lab...\n`,
      );
      await stopPipelines(pipes).catch(() => []);
      const exit = agent ? await agent.stop() : undefined;
      await prom?.stop().catch(() => {});
      lab.teardown();
      if (exit && exit.code !== 0) {
        process.stdout.write(`agent exited with code ${exit.code} signal ${exit.signal}\n`);
        process.stdout.write(`${agent?.logs(20).join('\n')}\n`);
      }
      process.stdout.write('lab removed; nothing left behind.\n');
      process.exit(exit && exit.code !== 0 ? 1 : code);
    })();
    return stopping;
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) {
        // Second Ctrl-C: no more waiting; the exit handlers kill and remove synchronously.
        process.exit(130);
      }
      void shutdown(sig, 0);
    });
  }

  try {
    console.log(
      `building lab ${lab.id}: ${LAB_PODS.length} pods on bridge ${lab.bridge} (${lab.subnet})`,
    );
    pipes = await startReceivers(lab);
    agent = await AgentProcess.start({ env: agentEnv(lab), metricsPort: opts.port || undefined });
    lab.track(agent.pid);
    const header = [
      `audio-latency-tracker demo: lab ${lab.id}, agent pid ${agent.pid} on ${lab.interfaceGlob}`,
      `metrics at http://${hostname()}:${agent.port}/metrics  (also http://127.0.0.1:${agent.port}/metrics)`,
    ];
    if (opts.prometheus) {
      prom = await Prometheus.start({ targets: [`127.0.0.1:${agent.port}`] });
      lab.track(prom.pid);
      lab.trackDir(prom.dir);
      header.push(
        `Prometheus at ${prom.url}  e.g. histogram_quantile(0.5, sum by (le, source_pod, dest_pod) ` +
          `(rate(${HOP}_bucket[30s])))`,
      );
    }
    for (const p of PIPELINES) {
      header.push(`  ${p.sender} -> ${p.relay} -> ${p.sink}: ${p.description}`);
    }
    header.push(
      `  expect ${HOLD_MS} ms on ${PIPELINES[0].sender} -> ${PIPELINES[0].relay}; 20/40/60 ms on the ` +
        `re-framing ${PIPELINES[1].relay} (a window leaves with the 60 ms packet holding its end)`,
    );
    header.push(
      opts.durationS > 0
        ? `running ${opts.durationS} s (Ctrl-C stops earlier)`
        : 'running until Ctrl-C',
    );
    await startSenders(lab, pipes, 0);
    const started = Date.now();
    const tty = process.stdout.isTTY === true;
    let frames = 0;
    while (!stopping) {
      if (agent && !agent.running) {
        process.stdout.write(`agent exited unexpectedly:\n${agent.logs(30).join('\n')}\n`);
        await shutdown('agent died', 1);
        return;
      }
      const elapsedS = (Date.now() - started) / 1000;
      if (opts.durationS > 0 && elapsedS >= opts.durationS) {
        await shutdown(`${opts.durationS} s elapsed`, 0);
        return;
      }
      let frame: string;
      try {
        frame = render(lab, parseMetrics(await agent.scrape()), elapsedS, header);
      } catch (err) {
        frame = `${header.join('\n')}\n\n(scrape failed: ${(err as Error).message})`;
      }
      // A terminal gets a live view; a log (pipe, CI) a frame every 5 s.
      if (tty) process.stdout.write(`\x1b[H\x1b[2J${frame}\n`);
      else if (frames % 5 === 0) process.stdout.write(`${frame}\n---\n`);
      frames++;
      await sleep(1000);
    }
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    if (agent) process.stderr.write(`${agent.logs(30).join('\n')}\n`);
    await shutdown('error', 1);
  }
}

void main();
