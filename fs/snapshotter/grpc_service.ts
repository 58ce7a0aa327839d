/**
 * containerd's snapshots API (`containerd.services.snapshots.v1.Snapshots`, the protos vendored
 * under `vendor/proto/`) served over gRPC on a unix socket with `@grpc/grpc-js`, answering from a
 * {@link Snapshotter}. containerd reaches it as a proxy plugin:
 *
 * ```toml
 * [proxy_plugins.crfs]
 *   type = "snapshot"
 *   address = "/run/crfs/snapshotter.sock"
 * ```
 *
 * Refusals travel as gRPC status codes (ALREADY_EXISTS, NOT_FOUND, FAILED_PRECONDITION,
 * INVALID_ARGUMENT), which containerd turns back into its errdefs errors; anything else is
 * UNKNOWN with the message.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { SnapshotError, type SnapshotInfo, type Snapshotter } from "./snapshots.ts";
import type { MountSpec } from "./mounts.ts";

const PROTO_DIR = new URL("../../vendor/proto/", import.meta.url).pathname;
const SNAPSHOTS_PROTO =
  "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto";

const CODES: Record<SnapshotError["code"], grpc.status> = {
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  NOT_FOUND: grpc.status.NOT_FOUND,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
};

/** Loads a vendored proto (keeping field names, enums as strings, int64 as numbers). */
export function loadProto(file: string): grpc.GrpcObject {
  const def = protoLoader.loadSync(file, {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}

/** The Snapshots service definition. */
export function snapshotsService(): grpc.ServiceDefinition {
  // deno-lint-ignore no-explicit-any
  const pkg = loadProto(SNAPSHOTS_PROTO) as any;
  return pkg.containerd.services.snapshots.v1.Snapshots.service;
}

/** A protobuf Timestamp. */
function timestamp(d: Date): { seconds: number; nanos: number } {
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

function infoMessage(i: SnapshotInfo) {
  return {
    name: i.name,
    parent: i.parent,
    kind: i.kind.toUpperCase(),
    created_at: timestamp(i.created),
    updated_at: timestamp(i.updated),
    labels: i.labels,
  };
}

function mountMessages(m: MountSpec[]) {
  return m.map((x) => ({
    type: x.type,
    source: x.source,
    target: x.target ?? "",
    options: x.options,
  }));
}

function toStatus(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof SnapshotError) return { code: CODES[e.code], details: e.message };
  return { code: grpc.status.UNKNOWN, details: (e as Error)?.message ?? String(e) };
}

// deno-lint-ignore no-explicit-any
type Req = any;

/** One unary handler: runs `f`, answers its value or the error's status. */
function unary<T>(
  f: (req: Req) => Promise<T>,
  log?: (line: string) => void,
  name?: string,
): grpc.handleUnaryCall<Req, T> {
  return (call, callback) => {
    f(call.request).then(
      (v) => callback(null, v),
      (e) => {
        if (!(e instanceof SnapshotError)) {
          log?.(`crfs snapshotter: ${name}: ${(e as Error).message}`);
        }
        callback(toStatus(e) as grpc.ServiceError);
      },
    );
  };
}

/** The handlers of the Snapshots service over `sn`. */
export function snapshotsHandlers(
  sn: Snapshotter,
  log?: (line: string) => void,
): grpc.UntypedServiceImplementation {
  return {
    Prepare: unary(
      async (r) => ({ mounts: mountMessages(await sn.prepare(r.key, r.parent, r.labels ?? {})) }),
      log,
      "Prepare",
    ),
    View: unary(
      async (r) => ({ mounts: mountMessages(await sn.view(r.key, r.parent, r.labels ?? {})) }),
      log,
      "View",
    ),
    Mounts: unary(async (r) => ({ mounts: mountMessages(await sn.mounts(r.key)) }), log, "Mounts"),
    Commit: unary(
      async (r) => {
        await sn.commit(r.name, r.key, r.labels ?? {});
        return {};
      },
      log,
      "Commit",
    ),
    Remove: unary(
      async (r) => {
        await sn.remove(r.key);
        return {};
      },
      log,
      "Remove",
    ),
    Stat: unary(async (r) => ({ info: infoMessage(await sn.stat(r.key)) }), log, "Stat"),
    Update: unary(
      async (r) => {
        const info = await sn.update(
          { name: r.info?.name ?? "", labels: r.info?.labels ?? {} },
          r.update_mask?.paths ?? [],
        );
        return { info: infoMessage(info) };
      },
      log,
      "Update",
    ),
    Usage: unary(async (r) => await sn.usage(r.key), log, "Usage"),
    Cleanup: unary(
      async () => {
        await sn.cleanup();
        return {};
      },
      log,
      "Cleanup",
    ),
    List: (call: grpc.ServerWritableStream<Req, unknown>) => {
      sn.list(call.request.filters ?? []).then((infos) => {
        for (let i = 0; i < infos.length; i += 100) {
          call.write({ info: infos.slice(i, i + 100).map(infoMessage) });
        }
        call.end();
      }, (e) => call.emit("error", { ...toStatus(e), message: toStatus(e).details }));
    },
  };
}

/** A served socket. */
export interface SnapshotsServer {
  /** The socket path. */
  readonly address: string;
  /** Stops accepting calls, ends open ones, removes the socket. */
  close(): Promise<void>;
}

/**
 * Serves `sn` on the unix socket `address` (its directory is created; a stale socket there is
 * replaced).
 */
export async function serveSnapshots(
  sn: Snapshotter,
  address: string,
  log?: (line: string) => void,
): Promise<SnapshotsServer> {
  const dir = address.slice(0, address.lastIndexOf("/"));
  if (dir) await Deno.mkdir(dir, { recursive: true });
  try {
    const st = await Deno.lstat(address);
    if (!st.isSocket) throw new Error(`${address} exists and is not a socket`);
    await Deno.remove(address);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 16 << 20,
    "grpc.max_send_message_length": 16 << 20,
  });
  server.addService(snapshotsService(), snapshotsHandlers(sn, log));
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(
      `unix:${address}`,
      grpc.ServerCredentials.createInsecure(),
      (err) => err ? reject(err) : resolve(),
    )
  );
  await Deno.chmod(address, 0o660);
  let closed: Promise<void> | undefined;
  return {
    address,
    close() {
      closed ??= (async () => {
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 2000);
          server.tryShutdown(() => {
            clearTimeout(t);
            resolve();
          });
        });
        await Deno.remove(address).catch(() => {});
      })();
      return closed;
    },
  };
}
