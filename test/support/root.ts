/**
 * Gate for tests that need root and BPF. Outside CI they skip loudly (a warning on stderr and the
 * reason in the test report); under CI=true they fail, because CI must run them.
 *
 *   test('attaches', (t) => { if (!requireRoot(t)) return; ... });
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';

/** Why this process cannot load and attach BPF programs, or undefined when it can. */
export function rootUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux, running on ${process.platform}`;
  if (process.getuid?.() !== 0) return 'needs root (CAP_BPF, CAP_NET_ADMIN)';
  // Present whenever the kernel has the bpf() system call (CONFIG_BPF_SYSCALL).
  if (!existsSync('/proc/sys/kernel/unprivileged_bpf_disabled')) return 'kernel without BPF';
  return undefined;
}

export function requireRoot(t: TestContext): boolean {
  const reason = rootUnavailable();
  if (reason === undefined) return true;
  if (process.env.CI === 'true') {
    assert.fail(`${t.name}: ${reason}, and CI must run every root/BPF test`);
  }
  console.warn(`SKIPPED ${t.name}: ${reason}`);
  t.skip(reason);
  return false;
}
