/**
 * A RabbitMQ cluster of its own for a test: three nodes (`rabbitmq-server`, run as the broker's
 * user `rabbitmq`) on loopback ports the system chose, with node names, AMQP and distribution ports
 * of their own (the system's broker, `rabbit@localhost` on 5672/25672, is not touched; epmd on 4369
 * is shared), mnesia, logs, config and plugins file in a temp dir under /tmp owned by `rabbitmq`, and
 * the system's Erlang cookie (the broker user's home), started together and joined to the first with
 * `rabbitmqctl join_cluster`. No
 * plugin is enabled. Disposing it stops every node and removes the dir.
 *
 * {@link clusterSkipReason} says why it cannot run here (no `rabbitmq-server`, not root, no cookie):
 * tests skip with that line.
 *
 * @example
 * ```ts
 * await using cluster = await startCluster();
 * await cluster.stop(cluster.nodes[0]);
 * await cluster.start(cluster.nodes[0]);
 * ```
 *
 * @module
 */

import { stdoutOf } from "./command.ts";
import { isRoot, userIds } from "./process.ts";
import { freePort } from "./service.ts";
import { delay } from "./wait.ts";

const SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl";
const HOME = "/var/lib/rabbitmq";
const COOKIE = `${HOME}/.erlang.cookie`;
const USER = "rabbitmq";

/** One node of the cluster. */
export interface ClusterNode {
  /** Erlang node name, e.g. `vt1234a@localhost`. */
  name: string;
  /** AMQP port on 127.0.0.1. */
  port: number;
  distPort: number;
  /** `amqp://guest:guest@127.0.0.1:<port>/`. */
  url: string;
  /** `127.0.0.1:<port>`, as the service's `/status` names it. */
  address: string;
  /** True between {@link Cluster.start} and {@link Cluster.stop}. */
  running: boolean;
}

/** A running cluster; see the module documentation. */
export interface Cluster extends AsyncDisposable {
  nodes: ClusterNode[];
  /** Every node's URL, in order: what RABBITMQ_URL lists. */
  urls: string[];
  /** `rabbitmqctl -n <node> ...args` as the broker's user: its stdout; rejects with all it printed on failure. */
  ctl(node: ClusterNode, ...args: string[]): Promise<string>;
  /** Stops the node (`rabbitmqctl stop`) and waits for its process to end. */
  stop(node: ClusterNode): Promise<void>;
  /** Starts a stopped node again and waits until it is up (it rejoins the cluster by itself). */
  start(node: ClusterNode): Promise<void>;
  /** The node that leads quorum queue `queue`, asked of a running node. */
  leaderOf(queue: string): Promise<ClusterNode>;
  /** The node whose address is `address` (`127.0.0.1:<port>`). */
  byAddress(address: string): ClusterNode;
}

/** Why a cluster cannot be started on this machine; `undefined` when it can. */
export function clusterSkipReason(): string | undefined {
  try {
    Deno.statSync(SERVER);
  } catch {
    return `${SERVER} is absent (install rabbitmq-server)`;
  }
  if (!isRoot()) return "starting nodes as the broker's user (runuser -u rabbitmq) needs root";
  try {
    Deno.statSync(COOKIE);
  } catch {
    return `the broker's Erlang cookie ${COOKIE} is absent`;
  }
  return undefined;
}

/** Starts a cluster of `size` nodes (first one, then the others joining it). */
export async function startCluster(size = 3): Promise<Cluster> {
  const reason = clusterSkipReason();
  if (reason) throw new Error(`cannot start a RabbitMQ cluster: ${reason}`);
  const dir = await Deno.makeTempDir({ prefix: "vote-cluster-", dir: "/tmp" });
  const { uid, gid } = userIds(USER);
  const processes = new Map<string, Deno.ChildProcess>();
  const nodes: ClusterNode[] = [];
  for (let i = 0; i < size; i++) {
    const port = await freePort();
    nodes.push({
      name: `vt${Deno.pid}${String.fromCharCode(97 + i)}@localhost`,
      port,
      distPort: await freePort(),
      url: `amqp://guest:guest@127.0.0.1:${port}/`,
      address: `127.0.0.1:${port}`,
      running: false,
    });
  }
  // An env file of its own: the system's rabbitmq-env.conf names the system's node.
  await Deno.writeTextFile(`${dir}/rabbitmq-env.conf`, "");
  await Deno.writeTextFile(`${dir}/enabled_plugins`, "[].\n");
  for (const node of nodes) {
    await Deno.mkdir(`${dir}/${node.name}/log`, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/${node.name}/rabbitmq.conf`,
      `listeners.tcp.1 = 127.0.0.1:${node.port}\nloopback_users = none\n`,
    );
  }
  await chownTree(dir, uid, gid);

  const common = {
    HOME,
    RABBITMQ_CONF_ENV_FILE: `${dir}/rabbitmq-env.conf`,
    ERL_EPMD_ADDRESS: "127.0.0.1",
  };
  const asBroker = (env: Record<string, string>, command: string, args: string[]) =>
    new Deno.Command("runuser", {
      args: [
        "-u",
        USER,
        "--",
        "env",
        ...Object.entries({ ...common, ...env }).map(([k, v]) => `${k}=${v}`),
        command,
        ...args,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    });
  // stdout alone: what rabbitmqctl prints on stderr (a warning after the JSON) is not part of the answer.
  const ctl = (node: ClusterNode, ...args: string[]) =>
    stdoutOf(asBroker({}, CTL, ["-n", node.name, ...args]), `rabbitmqctl -n ${node.name} ${args.join(" ")}`);
  const spawn = async (node: ClusterNode) => {
    const base = `${dir}/${node.name}`;
    const child = asBroker(
      {
        RABBITMQ_NODENAME: node.name,
        RABBITMQ_NODE_IP_ADDRESS: "127.0.0.1",
        RABBITMQ_NODE_PORT: String(node.port),
        RABBITMQ_DIST_PORT: String(node.distPort),
        RABBITMQ_MNESIA_BASE: `${base}/mnesia`,
        RABBITMQ_LOG_BASE: `${base}/log`,
        RABBITMQ_CONFIG_FILE: `${base}/rabbitmq.conf`,
        RABBITMQ_ENABLED_PLUGINS_FILE: `${dir}/enabled_plugins`,
        RABBITMQ_PID_FILE: `${base}/pid`,
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-kernel inet_dist_use_interface {127,0,0,1}",
      },
      SERVER,
      [],
    ).spawn();
    // The server logs to its files; its console output is not needed, but must not fill a pipe.
    child.stdout.pipeTo(new WritableStream()).catch(() => {});
    child.stderr.pipeTo(new WritableStream()).catch(() => {});
    processes.set(node.name, child);
    node.running = true;
    // await_startup fails at once while the node is not registered with epmd yet: retry that.
    const deadline = Date.now() + 120_000;
    for (;;) {
      try {
        await ctl(node, "await_startup", "--timeout", "120");
        return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        const done = await Promise.race([child.status.then(() => true), delay(500).then(() => false)]);
        if (done) throw new Error(`node ${node.name} exited at start: ${await logTail(base, node.name)}`);
      }
    }
  };
  const stop = async (node: ClusterNode) => {
    const child = processes.get(node.name);
    node.running = false;
    await ctl(node, "stop").catch(() => {});
    if (child) {
      const ended = await Promise.race([child.status.then(() => true), delay(30_000).then(() => false)]);
      if (!ended) killNode(`${dir}/${node.name}`, child);
      await child.status;
      processes.delete(node.name);
    }
  };

  // A test run interrupted (Ctrl-C, a CI timeout) must not leave the nodes running: kill them.
  const onSignal = () => {
    for (const node of nodes) {
      const child = processes.get(node.name);
      if (child) killNode(`${dir}/${node.name}`, child);
    }
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* a node still writing: left for /tmp's cleanup */ }
    Deno.exit(130);
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);

  const cluster: Cluster = {
    nodes,
    urls: nodes.map((node) => node.url),
    ctl,
    stop,
    start: (node) => spawn(node),
    async leaderOf(queue) {
      const running = nodes.find((node) => node.running);
      if (!running) throw new Error("no node is running");
      const rows = JSON.parse(await ctl(running, "list_queues", "-q", "--formatter", "json", "name", "leader")) as {
        name: string;
        leader: string;
      }[];
      const leader = rows.find((row) => row.name === queue)?.leader;
      const node = nodes.find((n) => n.name === leader);
      if (!node) throw new Error(`no leader for ${queue}: ${JSON.stringify(rows)}`);
      return node;
    },
    byAddress(address) {
      const node = nodes.find((n) => n.address === address);
      if (!node) throw new Error(`no cluster node at ${address}`);
      return node;
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.filter((node) => processes.has(node.name)).map((node) => stop(node)));
      for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  try {
    await Promise.all(nodes.map((node) => spawn(node)));
    // One at a time: two nodes joining at once may race on the cluster's schema.
    for (const node of nodes.slice(1)) {
      await ctl(node, "stop_app");
      await ctl(node, "join_cluster", nodes[0].name);
      await ctl(node, "start_app");
    }
    const status = await ctl(nodes[0], "cluster_status", "--formatter", "json");
    const running = (JSON.parse(status) as { running_nodes: string[] }).running_nodes;
    if (running.length !== size) throw new Error(`cluster has ${running.length} running nodes: ${status}`);
  } catch (error) {
    await cluster[Symbol.asyncDispose]();
    throw error;
  }
  return cluster;
}

async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  await Deno.chown(path, uid, gid);
  const info = await Deno.stat(path);
  if (!info.isDirectory) return;
  for await (const entry of Deno.readDir(path)) await chownTree(`${path}/${entry.name}`, uid, gid);
}

// A node that did not stop when asked: its Erlang VM by the pid file it wrote, then the runuser parent.
function killNode(base: string, child: Deno.ChildProcess): void {
  try {
    const pid = Number(Deno.readTextFileSync(`${base}/pid`).trim());
    if (pid > 0) Deno.kill(pid, "SIGKILL");
  } catch { /* no pid file: not started that far */ }
  try {
    child.kill("SIGKILL");
  } catch { /* gone */ }
}

async function logTail(base: string, name: string): Promise<string> {
  const text = await Deno.readTextFile(`${base}/log/${name}.log`).catch(() => "(no log)");
  return text.slice(-2000);
}
