/**
 * Process entry: configuration first (a bad variable exits with status 2 before anything is
 * loaded or attached), then the agent; signals and fatal errors detach everything it attached.
 */
import { readFileSync } from 'node:fs';
import { loadConfig, ConfigError, describeConfig, type AgentConfig } from './config.js';
import { createLogger, serializeError, type Logger } from './log.js';
import { Agent } from './agent.js';
import { NativeError } from './native.js';

const EXIT_CONFIG = 2;
const EXIT_FAILURE = 1;

function packageVersion(): string {
  const url = new URL('../../package.json', import.meta.url);
  const pkg = JSON.parse(readFileSync(url, 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

function readConfig(): AgentConfig {
  try {
    return loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`audio-latency-tracker: invalid configuration\n${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
}

function installLifecycle(agent: Agent, log: Logger): void {
  const stop = (signal: NodeJS.Signals): void => {
    log.info('stopping', { signal });
    agent.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('stop failed', { error: serializeError(err) });
        process.exit(EXIT_FAILURE);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const fatal = (err: unknown): void => {
    log.error('fatal error, detaching and exiting', { error: serializeError(err) });
    agent.closeNow();
    process.exit(EXIT_FAILURE);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  process.on('exit', () => agent.closeNow());
}

async function main(): Promise<void> {
  const config = readConfig();
  const log = createLogger(config.logLevel);
  log.info('configuration', { config: describeConfig(config) });
  let agent: Agent;
  try {
    agent = await Agent.start({ config, log, version: packageVersion() });
  } catch (err) {
    // NativeError messages are already the one line an operator needs (missing capability, ...).
    const msg = err instanceof NativeError ? err.message : 'agent failed to start';
    log.error(msg, { error: serializeError(err) });
    process.exit(EXIT_FAILURE);
  }
  installLifecycle(agent, log);
}

void main();
