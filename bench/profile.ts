/**
 * Where the service's CPU goes during a drain: N preloaded messages (the
 * bench's mix: 5 % duplicate attempts, 1 % malformed) drained by the service
 * run with the permissions and V8 flags of `deno task start` plus
 * `--cpu-prof`; then the profile's busiest functions, as shares of the
 * process's busy time (idle excluded): by self time, and by inclusive time for
 * this repository's code and the npm packages. Also the CPU per message of
 * the service and of its PostgreSQL backends, as the drain phase measures
 * them. The profile file stays for DevTools or `deno run -A bench/profile.ts
 * --read FILE`.
 *
 * ```sh
 * deno run -A bench/profile.ts -n 200000
 * ```
 *
 * @module
 */

import { parseFlags } from "../lib/config/cli.ts";
import { loadConfig } from "../lib/config/config.ts";
import { cpuSeconds, totalCpuSeconds } from "../tests/support/process.ts";
import { createTestDatabase, createTestQueue } from "../tests/support/servers.ts";
import { spawnService } from "../tests/support/service.ts";
import { permissionFlags } from "../tools/permissions.ts";
import {
  benchEnv,
  benchMix,
  type Options,
  preload,
  serviceBackends,
  SHUTDOWN_GRACE_MS,
  visibleVotes,
} from "./common.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const IDLE = new Set(["(idle)", "(program)"]);

/** `functionName file:line`, with the npm cache's and this checkout's prefixes cut. */
function frameName({ functionName, url, lineNumber }: ProfileNode["callFrame"]): string {
  const file = url.replace(/^.*\/registry\.npmjs\.org\//, "npm:").replace(/^file:\/\/.*?\/(lib|bench|tests)\//, "$1/");
  return `${functionName || "(anonymous)"}${file ? ` ${file}:${lineNumber + 1}` : ""}`;
}

/** The busiest functions of `profile`: self time, and inclusive time of this code and the npm packages. */
export function summarize(profile: CpuProfile, top = 25): string {
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const inclusiveOf = new Map<number, number>();
  const inclusive = (id: number): number => {
    const known = inclusiveOf.get(id);
    if (known !== undefined) return known;
    const node = byId.get(id)!;
    const total = (self.get(id) ?? 0) + (node.children ?? []).reduce((sum, c) => sum + inclusive(c), 0);
    inclusiveOf.set(id, total);
    return total;
  };
  const selfByName = new Map<string, number>();
  const inclusiveByName = new Map<string, number>();
  let busy = 0;
  // A function counts once per call path (its outermost frame), so recursion is not counted twice.
  const walk = (id: number, onPath: Set<string>) => {
    const node = byId.get(id)!;
    const name = frameName(node.callFrame);
    const t = self.get(id) ?? 0;
    if (!IDLE.has(node.callFrame.functionName)) busy += t;
    selfByName.set(name, (selfByName.get(name) ?? 0) + t);
    if (!onPath.has(name)) inclusiveByName.set(name, (inclusiveByName.get(name) ?? 0) + inclusive(id));
    const next = new Set(onPath).add(name);
    for (const child of node.children ?? []) walk(child, next);
  };
  walk(profile.nodes[0].id, new Set());
  const list = (entries: Map<string, number>, keep: (name: string) => boolean) =>
    [...entries].filter(([name]) => keep(name) && !IDLE.has(name.split(" ")[0]))
      .sort((a, b) => b[1] - a[1]).slice(0, top)
      .map(([name, t]) => `${(100 * t / busy).toFixed(1).padStart(6)} %  ${name}`).join("\n");
  return [
    `busy ${(busy / 1e6).toFixed(2)} s (idle excluded)`,
    "--- self time",
    list(selfByName, () => true),
    "--- inclusive time, this code and npm packages",
    list(inclusiveByName, (name) => / (lib|bench|tests)\/| npm:/.test(name)),
  ].join("\n");
}

async function drainProfiled(n: number, dir: string): Promise<string> {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const options = { laws: 5, prefetch: 3000 } as Options;
  const votes = benchMix(options, n);
  await preload(queue, votes, "profile", new AbortController().signal);
  const env = benchEnv(options, db, queue);
  for (const name of ["BATCH_SIZE", "RABBITMQ_PREFETCH_COUNT", "MAX_INFLIGHT_BATCHES", "POSTGRES_PREPARE"]) {
    delete env[name]; // the service's defaults
  }
  const permissions = [...permissionFlags(loadConfig(env)), "--cpu-prof", `--cpu-prof-dir=${dir}`];
  await using service = await spawnService(env, { permissions, waitHealthy: false });
  let first: { visible: number; service: number; postgres: number } | undefined;
  let backends: number[] = [];
  const postgresCpu = () => totalCpuSeconds(backends);
  for (let visible = 0; visible < votes.valid;) {
    visible = await visibleVotes(db.sql);
    if (visible > 0 && first === undefined) {
      backends = await serviceBackends(db);
      first = { visible, service: cpuSeconds(service.pid) ?? 0, postgres: postgresCpu() };
    }
    if (service.exitCode !== undefined) throw new Error(`the service exited:\n${service.output().slice(-2000)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const messages = (votes.valid - first!.visible) * n / votes.valid;
  const perMessage = (seconds: number) => (seconds / messages * 1e6).toFixed(1);
  console.log(
    `drained ${n} messages; CPU per message from the first vote visible: service ${
      perMessage((cpuSeconds(service.pid) ?? 0) - first!.service)
    } µs, its PostgreSQL backends ${perMessage(postgresCpu() - first!.postgres)} µs`,
  );
  await service.stopWithin(SHUTDOWN_GRACE_MS); // the profile is written as the process exits
  const file = [...Deno.readDirSync(dir)].find((e) => e.name.endsWith(".cpuprofile"));
  if (!file) throw new Error(`no .cpuprofile in ${dir}`);
  return `${dir}/${file.name}`;
}

if (import.meta.main) {
  const values = parseFlags(Deno.args, {
    n: { type: "string", short: "n", default: "200000" },
    read: { type: "string" },
    top: { type: "string", default: "25" },
  });
  const file = values.read ?? await drainProfiled(Number(values.n), await Deno.makeTempDir({ prefix: "va-profile-" }));
  console.log(`profile: ${file}`);
  console.log(summarize(JSON.parse(await Deno.readTextFile(file)), Number(values.top)));
}
