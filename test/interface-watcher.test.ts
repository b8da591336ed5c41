/**
 * InterfaceWatcher: glob semantics, appear/vanish/recreate with a fake
 * /sys/class/net, error isolation and retry back-off, scan serialisation,
 * the timer, and one read of the real /sys/class/net (lo, ifindex 1).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';

import {
  checkIfnamePattern,
  compileIfnamePattern,
  InterfaceWatcher,
  type InterfaceWatcherOptions,
  type SysNetLister,
  type WatcherErrorContext,
} from '../src/interface-watcher.js';

describe('interface name patterns', () => {
  const cases: [pattern: string, name: string, matches: boolean][] = [
    ['eth0', 'eth0', true],
    ['eth0', 'eth00', false],
    ['eth0', 'xeth0', false],
    ['eth', 'eth0', false],
    ['veth*', 'veth', true],
    ['veth*', 'veth1a2b3c', true],
    ['veth*', 'xveth1', false],
    ['*', 'anything', true],
    ['*0', 'eth0', true],
    ['*0', 'eth1', false],
    ['e*h*0', 'eth0', true],
    ['e*h*0', 'ehhh0', true],
    ['e*h*0', 'eh', false],
    ['*a*a*a*a*b', 'aaaaaaaaaaaaaa', false],
    ['*a*a*a*a*b', 'aaaaaaaaaaaaab', true],
    ['eth?', 'eth1', true],
    ['eth?', 'eth', false],
    ['eth?', 'eth12', false],
    ['??', 'lo', true],
    ['cali[0-9a-f]*', 'cali3f2a', true],
    ['cali[0-9a-f]*', 'caliz', false],
    ['cali[0-9a-f]*', 'cali', false],
    ['eth[02]', 'eth2', true],
    ['eth[02]', 'eth1', false],
    ['eth[!0]', 'eth1', true],
    ['eth[!0]', 'eth0', false],
    ['eth[^0-4]', 'eth5', true],
    ['eth[^0-4]', 'eth3', false],
    ['x[-a]', 'x-', true],
    ['x[a-]', 'x-', true],
    ['x[a-]', 'xb', false],
    ['a.b', 'a.b', true],
    ['a.b', 'axb', false], // '.' is literal, not a regex wildcard
    ['Eth0', 'eth0', false], // case-sensitive, like the kernel
  ];
  for (const [pattern, name, want] of cases) {
    it(`${pattern} ${want ? 'matches' : 'does not match'} ${name}`, () => {
      assert.equal(compileIfnamePattern(pattern).matches(name), want);
    });
  }

  it('rejects invalid patterns with a reason that does not repeat the pattern', () => {
    const bad: [string, RegExp][] = [
      ['', /empty/],
      ['a234567890123456', /longer than 15/],
      ['veth[', /"\[" without a matching "\]"/],
      ['veth]', /"\]" without a matching "\["/],
      ['v[z-a]', /reversed range/],
      ['v[]', /empty "\[\]"/],
      ['.', /not a valid interface name/],
      ['eth/0', /character other than/],
      ['eth 0', /character other than/],
      ['eth:0', /character other than/],
      ['$(id)', /character other than/],
      ['a;b', /character other than/],
      ['a\nb', /character other than/],
      ['v[a$]', /character other than/],
    ];
    for (const [pattern, reason] of bad) {
      const problem = checkIfnamePattern(pattern);
      assert.ok(problem !== null, `${JSON.stringify(pattern)} accepted`);
      assert.match(problem, reason, JSON.stringify(pattern));
      assert.throws(() => compileIfnamePattern(pattern), /invalid interface pattern/);
    }
    assert.equal(checkIfnamePattern('a23456789012345'), null);
  });
});

/** A mutable fake /sys/class/net. */
class FakeSys implements SysNetLister {
  readonly links = new Map<string, number>();
  listError: Error | null = null;
  listCalls = 0;
  list(): readonly string[] {
    this.listCalls++;
    if (this.listError !== null) throw this.listError;
    return [...this.links.keys()];
  }
  ifindex(name: string): number | null {
    return this.links.get(name) ?? null;
  }
}

interface Recorder {
  events: string[];
  errors: { err: Error; context: WatcherErrorContext }[];
}

/** `sys` undefined selects the default lister, the real /sys/class/net. */
function watcher(
  sys: SysNetLister | undefined,
  patterns: string[],
  extra: Partial<InterfaceWatcherOptions> = {},
): { w: InterfaceWatcher; rec: Recorder } {
  const rec: Recorder = { events: [], errors: [] };
  const w = new InterfaceWatcher({
    patterns,
    lister: sys,
    onAppear: (name, ifindex) => {
      rec.events.push(`+${name}:${ifindex}`);
    },
    onVanish: (name, ifindex) => {
      rec.events.push(`-${name}:${ifindex}`);
    },
    onError: (err, context) => rec.errors.push({ err, context }),
    ...extra,
  });
  return { w, rec };
}

describe('InterfaceWatcher with a fake /sys/class/net', () => {
  it('reports matching interfaces appearing, in name order, once', async () => {
    const sys = new FakeSys();
    sys.links.set('lo', 1).set('eth0', 2).set('veth9', 9).set('veth1', 5).set('docker0', 3);
    const { w, rec } = watcher(sys, ['eth0', 'veth*']);
    await w.scanNow();
    assert.deepEqual(rec.events, ['+eth0:2', '+veth1:5', '+veth9:9']);
    await w.scanNow();
    assert.equal(rec.events.length, 3, 'no repeat while nothing changes');
    assert.deepEqual(
      [...w.attached],
      [
        ['eth0', 2],
        ['veth1', 5],
        ['veth9', 9],
      ],
    );
    assert.deepEqual(rec.errors, []);
  });

  it('reports vanishing interfaces with their last ifindex', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5).set('veth2', 6);
    const { w, rec } = watcher(sys, ['veth*']);
    await w.scanNow();
    sys.links.delete('veth1');
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth1:5', '+veth2:6', '-veth1:5']);
    assert.deepEqual([...w.attached.keys()], ['veth2']);
  });

  it('a recreated interface (same name, new ifindex) is vanish then appear', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5);
    const { w, rec } = watcher(sys, ['veth*']);
    await w.scanNow();
    sys.links.set('veth1', 17);
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth1:5', '-veth1:5', '+veth1:17']);
    assert.equal(w.attached.get('veth1'), 17);
  });

  it('a renamed interface (same ifindex, new name) is vanish then appear', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5);
    const { w, rec } = watcher(sys, ['veth*']);
    await w.scanNow();
    sys.links.delete('veth1');
    sys.links.set('vethpod', 5);
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth1:5', '-veth1:5', '+vethpod:5']);
  });

  it('an interface gone between readdir and the ifindex read is treated as absent', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5);
    const racy: SysNetLister = { list: () => ['veth1', 'veth2'], ifindex: (n) => sys.ifindex(n) };
    const { w, rec } = watcher(racy, ['veth*']);
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth1:5']);
    assert.deepEqual(rec.errors, []);
  });

  it('callback errors go to onError and never stop the watcher; failed appears are retried with back-off', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5).set('veth2', 6);
    let now = 0;
    let failVeth1 = true;
    const rec: Recorder = { events: [], errors: [] };
    const w = new InterfaceWatcher({
      patterns: ['veth*'],
      lister: sys,
      intervalMs: 1000,
      now: () => now,
      onAppear: (name, ifindex) => {
        if (name === 'veth1' && failVeth1) throw new Error('attach failed: EBUSY');
        rec.events.push(`+${name}:${ifindex}`);
      },
      onVanish: async (name) => {
        await sleep(1);
        throw new Error(`detach ${name} failed`);
      },
      onError: (err, context) => rec.errors.push({ err, context }),
    });
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth2:6']);
    assert.equal(rec.errors.length, 1);
    assert.deepEqual(rec.errors[0].context, { op: 'appear', name: 'veth1', ifindex: 5 });
    assert.match(rec.errors[0].err.message, /EBUSY/);

    // Retries: after 1 interval, then 2, then 4 (scans between are skipped for veth1).
    const attemptsAt: number[] = [];
    for (now = 1000; now <= 8000; now += 1000) {
      const before = rec.errors.length;
      await w.scanNow();
      if (rec.errors.length > before) attemptsAt.push(now);
    }
    assert.deepEqual(attemptsAt, [1000, 3000, 7000]);

    failVeth1 = false;
    now = 15_000;
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth2:6', '+veth1:5']);

    // A throwing (async) onVanish is reported and the interface is forgotten anyway.
    sys.links.delete('veth2');
    await w.scanNow();
    const last = rec.errors.at(-1);
    assert.deepEqual(last?.context, { op: 'vanish', name: 'veth2', ifindex: 6 });
    assert.deepEqual([...w.attached.keys()], ['veth1']);
  });

  it('a recreated interface is retried at once even during back-off', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5);
    let fail = true;
    const calls: string[] = [];
    const w = new InterfaceWatcher({
      patterns: ['veth*'],
      lister: sys,
      now: () => 0,
      onAppear: (name, ifindex) => {
        calls.push(`${name}:${ifindex}`);
        if (fail) throw new Error('no');
      },
      onVanish: () => undefined,
      onError: () => undefined,
    });
    await w.scanNow();
    await w.scanNow(); // in back-off: not retried
    sys.links.set('veth1', 6);
    fail = false;
    await w.scanNow();
    assert.deepEqual(calls, ['veth1:5', 'veth1:6']);
    assert.equal(w.attached.get('veth1'), 6);
  });

  it('a failing lister is reported and the known state is kept', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5);
    const { w, rec } = watcher(sys, ['veth*']);
    await w.scanNow();
    sys.listError = Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' });
    await w.scanNow();
    assert.equal(rec.errors.length, 1);
    assert.equal(rec.errors[0].context.op, 'list');
    assert.deepEqual(rec.events, ['+veth1:5']);
    sys.listError = null;
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth1:5']);
  });

  it('an ifindex read error keeps an attached interface attached', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5);
    let broken = false;
    const lister: SysNetLister = {
      list: () => sys.list(),
      ifindex: (n) => {
        if (broken) throw new Error('EIO');
        return sys.ifindex(n);
      },
    };
    const { w, rec } = watcher(lister, ['veth*']);
    await w.scanNow();
    broken = true;
    await w.scanNow();
    assert.deepEqual(rec.events, ['+veth1:5']);
    assert.deepEqual(rec.errors[0].context, { op: 'ifindex', name: 'veth1' });
  });

  it('scanNow waits for async callbacks, and concurrent scans do not overlap', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5).set('veth2', 6);
    let active = 0;
    let maxActive = 0;
    const appeared: string[] = [];
    const w = new InterfaceWatcher({
      patterns: ['veth*'],
      lister: sys,
      onAppear: async (name) => {
        active++;
        maxActive = Math.max(maxActive, active);
        await sleep(10);
        appeared.push(name);
        active--;
      },
      onVanish: () => undefined,
      onError: (err) => assert.fail(err),
    });
    await Promise.all([w.scanNow(), w.scanNow(), w.scanNow()]);
    assert.deepEqual(appeared, ['veth1', 'veth2']);
    assert.equal(maxActive, 1);
  });

  it('an onError that throws does not stop the watcher', async () => {
    const sys = new FakeSys();
    sys.links.set('veth1', 5).set('veth2', 6);
    const seen: string[] = [];
    const w = new InterfaceWatcher({
      patterns: ['veth*'],
      lister: sys,
      onAppear: (name) => {
        if (name === 'veth1') throw new Error('x');
        seen.push(name);
      },
      onVanish: () => undefined,
      onError: () => {
        throw new Error('reporter broken');
      },
    });
    await w.scanNow();
    assert.deepEqual(seen, ['veth2']);
  });

  it('start() scans every intervalMs until stop()', async () => {
    const sys = new FakeSys();
    const { w, rec } = watcher(sys, ['veth*'], { intervalMs: 20 });
    w.start();
    sys.links.set('veth1', 5);
    await waitFor(() => rec.events.length === 1, 2000);
    sys.links.delete('veth1');
    await waitFor(() => rec.events.length === 2, 2000);
    assert.deepEqual(rec.events, ['+veth1:5', '-veth1:5']);
    await w.stop();
    const calls = sys.listCalls;
    await sleep(80);
    assert.equal(sys.listCalls, calls, 'no scans after stop()');
  });

  it('rejects bad options', () => {
    const sys = new FakeSys();
    assert.throws(() => watcher(sys, []), /at least one pattern/);
    assert.throws(() => watcher(sys, ['veth[']), /invalid interface pattern "veth\["/);
    assert.throws(() => watcher(sys, ['eth0'], { intervalMs: 0 }), /intervalMs/);
  });
});

describe('InterfaceWatcher on the real /sys/class/net', () => {
  it('finds lo with ifindex 1', async () => {
    const { w, rec } = watcher(undefined, ['lo']);
    await w.scanNow();
    assert.deepEqual(rec.errors, []);
    assert.deepEqual(rec.events, ['+lo:1']);
  });
});

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(5);
  }
}
