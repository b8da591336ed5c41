import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  cgroupDirectory,
  findCgroupMounts,
  identityFromMountInfo,
  identityFromProcCgroup,
  nodeCgroupFs,
  normalizePodUid,
  parseCgroupPath,
  parseMountInfo,
  parseProcCgroup,
  readCgroupMounts,
  readProcessCgroup,
  readProcessIdentity,
  scanContainerCgroups,
  type CgroupFs,
  type ContainerIdentity,
} from '../src/k8s/cgroup.js';
import {
  collectNodeCgroupPaths,
  detectContainerRuntime,
  runtimeFromCgroupPaths,
} from '../src/k8s/container-runtime.js';

const FIXTURES = new URL('../../test/fixtures/cgroup/', import.meta.url);

function fixture(name: string): string {
  return readFileSync(new URL(name, FIXTURES), 'utf8');
}

/** A CgroupFs over an in-memory file map; directories are derived from the file paths. */
function memoryFs(files: Record<string, string>): CgroupFs & { reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    readFile: async (path) => {
      reads.push(path);
      const text = files[path];
      if (text === undefined) {
        throw Object.assign(new Error(`ENOENT: no such file, open '${path}'`), { code: 'ENOENT' });
      }
      return text;
    },
    listDirectories: async (path) => {
      const prefix = path.endsWith('/') ? path : `${path}/`;
      const names = new Set<string>();
      for (const p of Object.keys(files)) {
        if (!p.startsWith(prefix)) continue;
        const rest = p.slice(prefix.length).split('/');
        if (rest.length > 1) names.add(rest[0]);
      }
      return [...names];
    },
    inode: async () => {
      throw new Error('no inodes in memory');
    },
  };
}

interface Case {
  name: string;
  v2: ContainerIdentity;
  v1: ContainerIdentity;
}

// Expected identities, written from how each fixture was built (IDs chosen per fixture).
const CASES: Case[] = [
  {
    name: 'containerd-systemd-burstable',
    v2: {
      containerId: '7ef4e80d770ca1e55c62e8a7110d7e2101e7e638de5d711b32a0829d51f5d1da',
      podUid: 'b833404c-3b72-4679-aae4-cf80c0a39d01',
      qosClass: 'burstable',
      runtime: 'containerd',
      driver: 'systemd',
    },
    v1: {
      containerId: '7ef4e80d770ca1e55c62e8a7110d7e2101e7e638de5d711b32a0829d51f5d1da',
      podUid: 'b833404c-3b72-4679-aae4-cf80c0a39d01',
      qosClass: 'burstable',
      runtime: 'containerd',
      driver: 'systemd',
    },
  },
  {
    name: 'crio-systemd-besteffort',
    v2: {
      containerId: '9f1e3b4cc9d48e90c6a4dfe1156bf2b8d1b48d90268d435333bd76764523b52b',
      podUid: 'e0f46238-fcd5-41bf-a2cc-e21edb0c9a88',
      qosClass: 'besteffort',
      runtime: 'crio',
      driver: 'systemd',
    },
    v1: {
      containerId: '9f1e3b4cc9d48e90c6a4dfe1156bf2b8d1b48d90268d435333bd76764523b52b',
      podUid: 'e0f46238-fcd5-41bf-a2cc-e21edb0c9a88',
      qosClass: 'besteffort',
      runtime: 'crio',
      driver: 'systemd',
    },
  },
  {
    name: 'docker-systemd-guaranteed',
    v2: {
      containerId: '1c0ed04ce1ad2c5ea7cd987c13499a92fb19c0d6ba513c8f761f16b8a92b3c7b',
      podUid: 'ef28af6e-306a-4254-ab0d-4a7c7cdf6e4a',
      qosClass: 'guaranteed',
      runtime: 'docker',
      driver: 'systemd',
    },
    v1: {
      containerId: '1c0ed04ce1ad2c5ea7cd987c13499a92fb19c0d6ba513c8f761f16b8a92b3c7b',
      podUid: 'ef28af6e-306a-4254-ab0d-4a7c7cdf6e4a',
      qosClass: 'guaranteed',
      runtime: 'docker',
      driver: 'systemd',
    },
  },
  {
    name: 'containerd-systemd-guaranteed',
    v2: {
      containerId: 'db22e4b2d3caddc1b9f67adaabbeaf4043397855efb7e6e0d17614c829401b3b',
      podUid: 'e4756aff-4a37-4116-a8ad-6583e9d5a009',
      qosClass: 'guaranteed',
      runtime: 'containerd',
      driver: 'systemd',
    },
    v1: {
      containerId: 'db22e4b2d3caddc1b9f67adaabbeaf4043397855efb7e6e0d17614c829401b3b',
      podUid: 'e4756aff-4a37-4116-a8ad-6583e9d5a009',
      qosClass: 'guaranteed',
      runtime: 'containerd',
      driver: 'systemd',
    },
  },
  {
    name: 'containerd-cgroupfs-besteffort',
    v2: {
      containerId: '06265e412e77b63eed47bdfa0a1c8b46318623d76cbe11047ed9257bb2f2e947',
      podUid: 'c8690b0d-7232-4d0c-aadb-60e8a682b928',
      qosClass: 'besteffort',
      driver: 'cgroupfs',
    },
    v1: {
      containerId: '06265e412e77b63eed47bdfa0a1c8b46318623d76cbe11047ed9257bb2f2e947',
      podUid: 'c8690b0d-7232-4d0c-aadb-60e8a682b928',
      qosClass: 'besteffort',
      driver: 'cgroupfs',
    },
  },
  {
    name: 'containerd-cgroupfs-guaranteed',
    v2: {
      containerId: 'e455700ed1a8d9b2fe647ee977e218d4fcd484e6c3c183dd7d0b19a68f604fde',
      podUid: '46bc85aa-9472-42c1-a7f8-b4a13a72acb9',
      qosClass: 'guaranteed',
      driver: 'cgroupfs',
    },
    v1: {
      containerId: 'e455700ed1a8d9b2fe647ee977e218d4fcd484e6c3c183dd7d0b19a68f604fde',
      podUid: '46bc85aa-9472-42c1-a7f8-b4a13a72acb9',
      qosClass: 'guaranteed',
      driver: 'cgroupfs',
    },
  },
  {
    name: 'crio-cgroupfs-burstable',
    v2: {
      containerId: '4440c9ce1439cddf01fff4f767ccbef2d3ca150c17d6614434cd755109709766',
      podUid: '7553d0d3-e911-4fe1-ab19-3437790011d5',
      qosClass: 'burstable',
      runtime: 'crio',
      driver: 'cgroupfs',
    },
    v1: {
      containerId: '4440c9ce1439cddf01fff4f767ccbef2d3ca150c17d6614434cd755109709766',
      podUid: '7553d0d3-e911-4fe1-ab19-3437790011d5',
      qosClass: 'burstable',
      runtime: 'crio',
      driver: 'cgroupfs',
    },
  },
  {
    name: 'docker-cgroupfs-plain',
    v2: {
      containerId: '9e7ab4247bb6474221d2239fc532d765ff28f7ff57c270b6f9b4679f988ce883',
      runtime: 'docker',
      driver: 'cgroupfs',
    },
    v1: {
      containerId: '9e7ab4247bb6474221d2239fc532d765ff28f7ff57c270b6f9b4679f988ce883',
      runtime: 'docker',
      driver: 'cgroupfs',
    },
  },
  {
    name: 'docker-systemd-plain',
    v2: {
      containerId: '35e8727879c537a1263e0d48aaa039dc1af0859c547d1ca1eeef967df8adce46',
      runtime: 'docker',
      driver: 'systemd',
    },
    v1: {
      containerId: '35e8727879c537a1263e0d48aaa039dc1af0859c547d1ca1eeef967df8adce46',
      runtime: 'docker',
      driver: 'systemd',
    },
  },
  {
    name: 'containerd-systemd-triple',
    v2: {
      containerId: '52c0039295c37a5b6e8597dfb6efe7127605592395d6b700942b9817700ba7e9',
      podUid: 'b7b43100-3068-4aac-a81a-5e0d885747dd',
      qosClass: 'burstable',
      runtime: 'containerd',
      driver: 'systemd',
    },
    v1: {
      containerId: '52c0039295c37a5b6e8597dfb6efe7127605592395d6b700942b9817700ba7e9',
      podUid: 'b7b43100-3068-4aac-a81a-5e0d885747dd',
      qosClass: 'burstable',
      runtime: 'containerd',
      driver: 'systemd',
    },
  },
  {
    name: 'kind-nested',
    v2: {
      containerId: '753a4bc5446ab48813b0c2ee422ec598f30e61897f9969d0e7271b97985f476b',
      podUid: '1e4f525a-a654-4fda-a2af-f98e7b1a3306',
      qosClass: 'besteffort',
      runtime: 'containerd',
      driver: 'systemd',
    },
    v1: {
      containerId: '753a4bc5446ab48813b0c2ee422ec598f30e61897f9969d0e7271b97985f476b',
      podUid: '1e4f525a-a654-4fda-a2af-f98e7b1a3306',
      qosClass: 'besteffort',
      driver: 'cgroupfs',
    },
  },
  {
    name: 'k3s-nested',
    v2: {
      containerId: 'a22e89f618ad7d40209b30b55e1a7191512f8e0bba0442675c2d0b605acaf15f',
      podUid: 'f35b451c-f3e8-459e-a6c0-fedaed46379b',
      qosClass: 'burstable',
      driver: 'cgroupfs',
    },
    v1: {
      containerId: 'a22e89f618ad7d40209b30b55e1a7191512f8e0bba0442675c2d0b605acaf15f',
      podUid: 'f35b451c-f3e8-459e-a6c0-fedaed46379b',
      qosClass: 'burstable',
      driver: 'cgroupfs',
    },
  },
  {
    name: 'static-pod-cgroupfs',
    v2: {
      containerId: '8f3bdf1d1997574e6e29902fb3cf58f1c37426ee81bc29213e404ea2f67ebdc4',
      podUid: '0766913ef1743da4f4293c1bd0177af8',
      qosClass: 'burstable',
      driver: 'cgroupfs',
    },
    v1: {
      containerId: '8f3bdf1d1997574e6e29902fb3cf58f1c37426ee81bc29213e404ea2f67ebdc4',
      podUid: '0766913ef1743da4f4293c1bd0177af8',
      qosClass: 'burstable',
      driver: 'cgroupfs',
    },
  },
  {
    name: 'crio-systemd-subcgroup',
    v2: {
      containerId: 'd8e1101e8c652e6e4d24ec40a5995ea0f0e310e89071db2ee0dd9eb2a106edf4',
      podUid: 'e63e4cda-0093-4e7b-a4e1-1e067f5f0174',
      qosClass: 'burstable',
      runtime: 'crio',
      driver: 'systemd',
    },
    v1: {
      containerId: 'd8e1101e8c652e6e4d24ec40a5995ea0f0e310e89071db2ee0dd9eb2a106edf4',
      podUid: 'e63e4cda-0093-4e7b-a4e1-1e067f5f0174',
      qosClass: 'burstable',
      runtime: 'crio',
      driver: 'systemd',
    },
  },
];

const HEX64 = /^[0-9a-f]{64}$/;
const UID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$/;

describe('cgroup paths of every runtime, driver and cgroup version', () => {
  for (const c of CASES) {
    for (const version of ['v2', 'v1'] as const) {
      it(`${c.name} (${version})`, () => {
        const cgroup = parseProcCgroup(fixture(`${c.name}.${version}.cgroup`));
        assert.ok(cgroup, 'parsed');
        if (version === 'v2') {
          assert.equal(cgroup.version, 'v2');
          assert.equal(cgroup.v1Paths.size, 0);
        } else {
          assert.ok(cgroup.version === 'v1' || cgroup.version === 'hybrid', cgroup.version);
          assert.ok(cgroup.v1Paths.has('memory') && cgroup.v1Paths.has('name=systemd'));
        }
        const identity = identityFromProcCgroup(cgroup);
        assert.deepEqual(identity, c[version]);
        assert.match(identity?.containerId ?? '', HEX64);
        if (identity?.podUid !== undefined) assert.match(identity.podUid, UID);
      });
    }
  }

  it('reads a process through an injected fs and a custom proc root', async () => {
    const c = CASES[0];
    const fs = memoryFs({ '/host/proc/4242/cgroup': fixture(`${c.name}.v1.cgroup`) });
    const identity = await readProcessIdentity(4242, { fs, procRoot: '/host/proc' });
    assert.deepEqual(identity, c.v1);
    assert.deepEqual(fs.reads, ['/host/proc/4242/cgroup']);
    assert.equal(
      (await readProcessCgroup(4242, { fs, procRoot: '/host/proc' }))?.version,
      'hybrid',
    );
  });

  it('a hybrid host shows the v1 paths and the 0:: line; cgroupfs leaves the unified path at /', () => {
    const cgroup = parseProcCgroup(fixture('containerd-cgroupfs-besteffort.v1.cgroup'));
    assert.equal(cgroup?.version, 'hybrid');
    assert.equal(cgroup?.unifiedPath, '/');
    assert.equal(cgroup?.v1Paths.get('cpu'), cgroup?.v1Paths.get('cpuacct'));
    // The unified path names nothing, the v1 ones name the container: the v1 answer is taken.
    assert.equal(identityFromProcCgroup(cgroup!)?.containerId, CASES[4].v1.containerId);
  });

  it('pure v1 (no cgroup2 mounted anywhere) has no 0:: line', () => {
    const cgroup = parseProcCgroup(fixture('crio-cgroupfs-burstable.v1.cgroup'));
    assert.equal(cgroup?.version, 'v1');
    assert.equal(cgroup?.unifiedPath, undefined);
  });
});

describe('cgroup paths that are not a pod container', () => {
  it('a CRI-O conmon scope gives the pod, never the conmon ID as the container', () => {
    for (const version of ['v1', 'v2']) {
      const text = fixture(`crio-conmon.${version}.cgroup`);
      const conmonId = /crio-conmon-([0-9a-f]{64})/.exec(text)?.[1];
      assert.ok(conmonId);
      const identity = identityFromProcCgroup(parseProcCgroup(text)!);
      assert.deepEqual(identity, {
        podUid: 'f40491ca-78fe-4f39-a75a-de29886343a8',
        qosClass: 'burstable',
        driver: 'systemd',
      });
      assert.ok(!JSON.stringify(identity).includes(conmonId));
    }
  });

  it('kind on cgroup v1: the node container before /kubelet is not the pod container', () => {
    const identity = identityFromProcCgroup(parseProcCgroup(fixture('kind-nested.v1.cgroup'))!);
    assert.notEqual(
      identity?.containerId,
      '7232fa5b7fe3f027d56d3feba41858ad7e5841fa3432d4b5b9f98c0186b6abbb',
    );
    // The node container's own processes (containerd, kubelet) are attributed to the node.
    assert.deepEqual(
      parseCgroupPath(
        '/docker/7232fa5b7fe3f027d56d3feba41858ad7e5841fa3432d4b5b9f98c0186b6abbb/system.slice/containerd.service',
      ),
      {
        containerId: '7232fa5b7fe3f027d56d3feba41858ad7e5841fa3432d4b5b9f98c0186b6abbb',
        runtime: 'docker',
        driver: 'cgroupfs',
      },
    );
  });

  it('a pod-level slice gives the pod without a container', () => {
    const identity = identityFromProcCgroup(parseProcCgroup(fixture('pod-level.v2.cgroup'))!);
    assert.deepEqual(identity, {
      podUid: '93c21b02-bad2-43cd-ae3d-b27dff19f2b8',
      qosClass: 'burstable',
      driver: 'systemd',
    });
  });

  it('host processes and a cgroup namespace root give nothing', () => {
    for (const name of ['host-session.v2', 'host-session.v1', 'cgroupns-root.v2']) {
      const cgroup = parseProcCgroup(fixture(`${name}.cgroup`));
      assert.ok(cgroup, name);
      assert.equal(identityFromProcCgroup(cgroup), undefined, name);
    }
    // A sandbox's own cgroup naming (seen on this development machine): 32 hex outside kubepods.
    assert.equal(parseCgroupPath('/process_api/6f9fea92e875c1d03c419e61b92a6710'), undefined);
    // `pod<uid>` outside kubepods is not a pod; the bare ID under it is still a container.
    assert.deepEqual(
      parseCgroupPath('/pod6f9fea92-e875-c1d0-3c41-9e61b92a6710/' + 'a'.repeat(64)),
      {
        containerId: 'a'.repeat(64),
        driver: 'cgroupfs',
      },
    );
  });

  it('shapes that only look like containers are refused', () => {
    const id = 'c'.repeat(64);
    for (const path of [
      `/docker/${id.slice(1)}`, // 63 hex
      `/docker/${id}0`, // 65 hex
      `/docker/${id.toUpperCase()}`,
      `/system.slice/docker-${id}.service`,
      `/system.slice/docker-${id}`,
      `/kubepods.slice/kubepods-burstable.slice/crio-conmon-${id}.scope`,
      `/kubepods/besteffort/podnot-a-uid/${'x'.repeat(64)}`,
      `/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods-x.scope`,
      `/system.slice/containerd.service/kubepods-burstable-podzz.slice:cri-containerd:${id}x`,
      '/',
      '',
      '////',
      '/../../..',
    ]) {
      assert.equal(parseCgroupPath(path), undefined, path);
    }
  });

  it('normalises slice-form pod UIDs', () => {
    assert.equal(
      normalizePodUid('b833404c_3b72_4679_aae4_cf80c0a39d01'),
      'b833404c-3b72-4679-aae4-cf80c0a39d01',
    );
    assert.equal(
      normalizePodUid('0766913ef1743da4f4293c1bd0177af8'),
      '0766913ef1743da4f4293c1bd0177af8',
    );
  });
});

describe('garbage never throws', () => {
  it('the garbage fixture parses to lines that name nothing', () => {
    const cgroup = parseProcCgroup(fixture('garbage.cgroup'));
    assert.ok(cgroup);
    // Only the well-formed lines survive: numeric id, two colons, absolute path.
    assert.deepEqual(
      cgroup.lines.map((l) => l.hierarchyId),
      [0, 0],
    );
    assert.equal(identityFromProcCgroup(cgroup), undefined);
    assert.equal(parseProcCgroup(''), undefined);
    assert.equal(parseProcCgroup('\n\n\n'), undefined);
    assert.equal(parseProcCgroup(42 as unknown as string), undefined);
    assert.equal(parseCgroupPath(undefined as unknown as string), undefined);
    assert.equal(parseCgroupPath('/' + 'a/'.repeat(5000)), undefined);
    assert.deepEqual(parseMountInfo(fixture('garbage.mountinfo')), []);
    assert.deepEqual(parseMountInfo(null as unknown as string), []);
  });

  it('random mutations of every fixture never throw', () => {
    let seed = 0x9e3779b9;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const alphabet = ':/-_.\n 0123456789abcdefz\\';
    const names = readdirSync(FIXTURES);
    let parsed = 0;
    for (let round = 0; round < 2000; round++) {
      const text = fixture(names[rand(names.length)]).split('');
      for (let k = 0; k < 8; k++) {
        const at = rand(text.length + 1);
        if (rand(2) === 0) text.splice(at, 1);
        else text.splice(at, 0, alphabet[rand(alphabet.length)]);
      }
      const mutated = text.join('');
      const cgroup = parseProcCgroup(mutated);
      if (cgroup) {
        const identity = identityFromProcCgroup(cgroup);
        if (identity?.containerId) assert.match(identity.containerId, HEX64);
        if (identity?.podUid) assert.match(identity.podUid, UID);
        parsed++;
      }
      findCgroupMounts(mutated);
      identityFromMountInfo(mutated);
    }
    assert.ok(parsed > 0);
  });
});

describe('mountinfo', () => {
  it('finds cgroup2 on a pure v2 host', () => {
    const mounts = findCgroupMounts(fixture('host-v2.mountinfo'));
    assert.deepEqual(mounts.unified, { mountPoint: '/sys/fs/cgroup', root: '/' });
    assert.equal(mounts.cgroup2.length, 1);
    assert.equal(mounts.v1.size, 0);
  });

  it('finds the unified mount and every v1 controller on a hybrid host', () => {
    const mounts = findCgroupMounts(fixture('host-hybrid.mountinfo'));
    assert.deepEqual(mounts.unified, { mountPoint: '/sys/fs/cgroup/unified', root: '/' });
    assert.equal(mounts.v1.get('cpu')?.mountPoint, '/sys/fs/cgroup/cpu,cpuacct');
    assert.equal(mounts.v1.get('cpuacct')?.mountPoint, '/sys/fs/cgroup/cpu,cpuacct');
    assert.equal(mounts.v1.get('name=systemd')?.mountPoint, '/sys/fs/cgroup/systemd');
    assert.equal(mounts.v1.get('memory')?.mountPoint, '/sys/fs/cgroup/memory');
    // Mount options are not controllers.
    for (const opt of ['rw', 'ro', 'xattr', 'nosuid']) assert.equal(mounts.v1.has(opt), false);
  });

  it('inside a cgroup namespace, prefers the host tree mounted elsewhere', () => {
    const mounts = findCgroupMounts(fixture('containerd-cgroupns.v2.mountinfo'));
    assert.deepEqual(
      mounts.cgroup2.map((m) => m.mountPoint),
      ['/sys/fs/cgroup', '/host/sys/fs/cgroup'],
    );
    assert.deepEqual(mounts.unified, { mountPoint: '/host/sys/fs/cgroup', root: '/../../..' });
  });

  it('unescapes mount points and reads optional fields', () => {
    const mounts = findCgroupMounts(fixture('escaped.mountinfo'));
    assert.equal(mounts.unified?.mountPoint, '/mnt/cgroup v2');
    assert.equal(mounts.v1.get('cpuset')?.mountPoint, '/opt/cg\ttab');
    assert.equal(mounts.v1.has('clone_children'), false);
  });

  it('maps a cgroup path to its directory under a mount', () => {
    const root = { mountPoint: '/sys/fs/cgroup', root: '/' };
    const path = '/kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope';
    assert.equal(cgroupDirectory(root, path), `/sys/fs/cgroup${path}`);
    assert.equal(cgroupDirectory(root, '/'), '/sys/fs/cgroup');
    assert.equal(
      cgroupDirectory({ mountPoint: '/sys/fs/cgroup/', root: '/' }, '/a'),
      '/sys/fs/cgroup/a',
    );
    // A process outside our namespace, through the host tree mounted in the container.
    const host = { mountPoint: '/host/sys/fs/cgroup', root: '/../../..' };
    assert.equal(cgroupDirectory(host, `/../../..${path}`), `/host/sys/fs/cgroup${path}`);
    assert.equal(cgroupDirectory(host, '/../../..'), '/host/sys/fs/cgroup');
    // ... but not through our own namespaced mount, which cannot show it.
    assert.equal(cgroupDirectory(root, `/../../..${path}`), undefined);
    // A v1 mount whose root is the container's own cgroup.
    const v1 = { mountPoint: '/sys/fs/cgroup/memory', root: '/docker/abc' };
    assert.equal(cgroupDirectory(v1, '/docker/abc'), '/sys/fs/cgroup/memory');
    assert.equal(cgroupDirectory(v1, '/docker/abc/sub'), '/sys/fs/cgroup/memory/sub');
    assert.equal(cgroupDirectory(v1, '/docker/abd'), undefined);
    assert.equal(cgroupDirectory(v1, '/docker'), undefined);
    assert.equal(cgroupDirectory(root, 'relative'), undefined);
    assert.equal(cgroupDirectory(root, '/a/../../b'), undefined);
  });

  it('resolves this process own cgroup2 directory from the real /proc', async () => {
    const mounts = await readCgroupMounts('self');
    const own = await readProcessCgroup('self');
    assert.ok(mounts && own, 'the real /proc is readable');
    if (!mounts.unified || own.unifiedPath === undefined) {
      console.warn('no cgroup2 mounted here: skipping the real-directory check');
      return;
    }
    const dir = cgroupDirectory(mounts.unified, own.unifiedPath);
    assert.ok(dir, `${own.unifiedPath} under ${JSON.stringify(mounts.unified)}`);
    const procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n');
    assert.ok(procs.includes(String(process.pid)), `pid ${process.pid} in ${dir}/cgroup.procs`);
  });

  it('what a container mount table says about its own container', () => {
    assert.deepEqual(identityFromMountInfo(fixture('containerd-cgroupns.v2.mountinfo')), {
      podUid: 'bb7e880b-d92e-44ad-a1ff-818da8d83205',
    });
    assert.deepEqual(identityFromMountInfo(fixture('containerd-cgroupfs.v1.mountinfo')), {
      cgroupIdentity: {
        containerId: '9f4e31b9bc50cb59f129e2b820d470b15bab2220fa403730f8bc94a02b997aa0',
        podUid: '8960a1de-a153-4196-afda-99c5bb0c08af',
        qosClass: 'besteffort',
        driver: 'cgroupfs',
      },
      podUid: '8960a1de-a153-4196-afda-99c5bb0c08af',
    });
    const docker = '75fa0da51edf8e8733218239743f8e532bfe4edb0da959e8404d0cff5db0853d';
    assert.deepEqual(identityFromMountInfo(fixture('docker-plain.v1.mountinfo')), {
      cgroupIdentity: { containerId: docker, runtime: 'docker', driver: 'cgroupfs' },
      hostnameContainerId: docker,
    });
    assert.deepEqual(identityFromMountInfo(fixture('docker-plain.v2.mountinfo')), {
      hostnameContainerId: '4341398531201c6de00d2b38cf34d1398a8312c5245a22e71f795ddaa2889a4f',
    });
    // CRI-O: the hostname file is the sandbox's (infra container), as documented.
    assert.deepEqual(identityFromMountInfo(fixture('crio-cgroupns.v2.mountinfo')), {
      podUid: '676804c2-1a8c-481c-af24-55b18d1b4977',
      hostnameContainerId: '9868ec9e8d81acaa2a24e98eca19492a6ff64d8b27e3ab269f0248be97f693fa',
    });
  });
});

describe('readers over an injected fs', () => {
  it('missing, unreadable and throwing files give undefined', async () => {
    const fs = memoryFs({});
    assert.equal(await readProcessCgroup(1, { fs }), undefined);
    assert.equal(await readCgroupMounts('self', { fs }), undefined);
    const throwing: CgroupFs = {
      readFile: () => {
        throw new Error('EACCES');
      },
      listDirectories: () => {
        throw new Error('EACCES');
      },
      inode: () => {
        throw new Error('EACCES');
      },
    };
    assert.equal(await readProcessIdentity(1, { fs: throwing }), undefined);
    assert.deepEqual(
      await scanContainerCgroups({ mountPoint: '/x', root: '/' }, { fs: throwing }),
      [],
    );
  });

  it('refuses pids that are not positive integers without touching the fs', async () => {
    const fs = memoryFs({ '/proc/-1/cgroup': '0::/docker/' + 'a'.repeat(64) });
    for (const pid of [-1, 0, 1.5, Number.NaN, Infinity]) {
      assert.equal(await readProcessCgroup(pid, { fs }), undefined, String(pid));
    }
    assert.deepEqual(fs.reads, []);
  });
});

describe('scanning a cgroup tree for containers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cgscan-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('lists container cgroups with their inode as cgroup ID, without descending into them', async () => {
    const a = 'a'.repeat(64);
    const b = 'b'.repeat(64);
    const c = 'c'.repeat(64);
    const podSlice =
      'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_4000_8000_00000000000a.slice';
    const made = [
      `${podSlice}/cri-containerd-${a}.scope`,
      `${podSlice}/cri-containerd-${a}.scope/nested-${b}`, // not visited: inside a container
      `${podSlice}/crio-conmon-${c}.scope`,
      `kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-00000000000b/${b}`,
      `system.slice/docker-${c}.scope`,
      'user.slice/user-0.slice',
    ];
    for (const m of made) mkdirSync(join(dir, m), { recursive: true });
    const found = await scanContainerCgroups({ mountPoint: dir, root: '/' }, { fs: nodeCgroupFs });
    const byPath = new Map(found.map((f) => [f.path, f]));
    assert.deepEqual(
      [...byPath.keys()].sort(),
      [
        `/${podSlice}/cri-containerd-${a}.scope`,
        `/kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-00000000000b/${b}`,
        `/system.slice/docker-${c}.scope`,
      ].sort(),
    );
    for (const f of found) {
      assert.equal(f.cgroupId, statSync(join(dir, f.path), { bigint: true }).ino);
    }
    assert.equal(
      byPath.get(`/${podSlice}/cri-containerd-${a}.scope`)?.identity.podUid,
      '0a1b2c3d-0000-4000-8000-00000000000a',
    );
    const shallow = await scanContainerCgroups({ mountPoint: dir, root: '/' }, { maxDepth: 2 });
    assert.deepEqual(
      shallow.map((f) => f.path),
      [`/system.slice/docker-${c}.scope`],
    );
    const capped = await scanContainerCgroups({ mountPoint: dir, root: '/' }, { maxContainers: 1 });
    assert.equal(capped.length, 1);
  });
});

describe('CONTAINER_RUNTIME auto-detection', () => {
  const paths = (name: string): string[] =>
    parseProcCgroup(fixture(name))!.lines.map((l) => l.path);
  const none = (): boolean => false;

  it('a configured runtime is taken as is', async () => {
    const seen: string[] = [];
    const d = await detectContainerRuntime({
      configured: 'crio',
      cgroupPaths: paths('containerd-systemd-burstable.v2.cgroup'),
      exists: (p) => (seen.push(p), true),
    });
    assert.deepEqual(d, { runtime: 'crio', source: 'config', reason: 'CONTAINER_RUNTIME=crio' });
    assert.deepEqual(seen, []);
  });

  it('pod cgroups name the runtime, the majority wins, sockets are not consulted', async () => {
    const cgroupPaths = [
      ...paths('containerd-systemd-burstable.v1.cgroup'), // 13 lines, one container
      ...paths('containerd-systemd-guaranteed.v2.cgroup'),
      ...paths('kind-nested.v2.cgroup'),
      ...paths('docker-systemd-guaranteed.v2.cgroup'),
      ...paths('docker-systemd-plain.v2.cgroup'), // outside pods: does not vote
      ...paths('docker-cgroupfs-plain.v2.cgroup'),
    ];
    const vote = runtimeFromCgroupPaths(cgroupPaths);
    assert.deepEqual(vote.podContainers, { docker: 1, containerd: 3, crio: 0 });
    assert.deepEqual(vote.otherContainers, { docker: 2, containerd: 0, crio: 0 });
    const d = await detectContainerRuntime({
      configured: 'auto',
      cgroupPaths,
      exists: () => {
        throw new Error('sockets must not be checked');
      },
    });
    assert.equal(d.runtime, 'containerd');
    assert.equal(d.source, 'cgroup');
    assert.match(d.reason, /containerd=3 docker=1/);
  });

  it('CRI-O under cgroupfs is still named by its cgroups', async () => {
    const d = await detectContainerRuntime({
      configured: 'auto',
      cgroupPaths: paths('crio-cgroupfs-burstable.v1.cgroup'),
      exists: none,
    });
    assert.deepEqual([d.runtime, d.source], ['crio', 'cgroup']);
  });

  it('bare cgroupfs IDs fall back to the sockets', async () => {
    const cgroupPaths = [
      ...paths('containerd-cgroupfs-besteffort.v2.cgroup'),
      ...paths('containerd-cgroupfs-guaranteed.v1.cgroup'),
    ];
    const table: Array<[string[], string | undefined]> = [
      [['/run/containerd/containerd.sock'], 'containerd'],
      [['/var/run/docker.sock', '/run/containerd/containerd.sock'], 'containerd'],
      [
        ['/var/run/docker.sock', '/run/containerd/containerd.sock', '/run/cri-dockerd.sock'],
        'docker',
      ],
      [['/var/run/crio/crio.sock', '/run/containerd/containerd.sock'], 'crio'],
      [['/run/k3s/containerd/containerd.sock'], 'containerd'],
      [['/var/run/docker.sock'], 'docker'],
    ];
    for (const [present, expected] of table) {
      const d = await detectContainerRuntime({
        configured: 'auto',
        cgroupPaths,
        exists: (p) => present.includes(p),
      });
      assert.equal(d.runtime, expected, present.join(' '));
      assert.equal(d.source, 'socket');
      assert.match(d.reason, /2 pod container cgroups name no runtime/);
      for (const p of present) assert.ok(d.reason.includes(p), d.reason);
    }
  });

  it('looks for sockets under the host root and survives a throwing check', async () => {
    const asked: string[] = [];
    const d = await detectContainerRuntime({
      configured: 'auto',
      cgroupPaths: [],
      hostRoot: '/host',
      exists: async (p) => {
        asked.push(p);
        if (p.includes('crio')) throw new Error('EACCES');
        return p === '/host/run/containerd/containerd.sock';
      },
    });
    assert.equal(d.runtime, 'containerd');
    assert.ok(asked.every((p) => p.startsWith('/host/')));
  });

  it('only containers outside pods: their runtime; nothing at all: undefined', async () => {
    const plain = await detectContainerRuntime({
      configured: 'auto',
      cgroupPaths: paths('docker-systemd-plain.v1.cgroup'),
      exists: none,
    });
    assert.deepEqual([plain.runtime, plain.source], ['docker', 'cgroup']);
    const nothing = await detectContainerRuntime({
      configured: 'auto',
      cgroupPaths: paths('host-session.v2.cgroup'),
      exists: none,
    });
    assert.deepEqual([nothing.runtime, nothing.source], [undefined, 'none']);
  });

  it('collects the node paths from every /proc/<pid>/cgroup it can read', async () => {
    const fs = memoryFs({
      '/hp/1/cgroup': fixture('host-session.v2.cgroup'),
      '/hp/310/cgroup': fixture('crio-systemd-besteffort.v2.cgroup'),
      '/hp/311/cgroup': fixture('crio-systemd-besteffort.v1.cgroup'),
      '/hp/self/cgroup': '0::/',
      '/hp/self/mountinfo': fixture('host-v2.mountinfo'),
      '/hp/sys/kernel/x': '',
    });
    const collected = await collectNodeCgroupPaths({ fs, procRoot: '/hp' });
    assert.equal(collected.length, 1 + 1 + 12);
    const d = await detectContainerRuntime({
      configured: 'auto',
      fs,
      procRoot: '/hp',
      exists: none,
    });
    assert.deepEqual([d.runtime, d.source], ['crio', 'cgroup']);
    assert.ok(!fs.reads.includes('/hp/sys/cgroup'), 'only numeric entries are processes');
  });
});
