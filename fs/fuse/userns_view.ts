/**
 * A read-only FUSE filesystem as a rootless container engine's user namespace must see it. Rootless
 * podman runs in a user namespace mapping its root to the user and uids 1…N to the user's range in
 * `/etc/subuid` (gids likewise from `/etc/subgid`); a normal pull extracts layers with their owners
 * shifted that way. A layer store served by the same user must present the same shift, or every
 * file owned by root in the image is owned by a uid the namespace cannot map (shown as `nobody`),
 * and the engine's root may not even create `/etc/mtab` in the container.
 *
 * {@link userNamespaceView} wraps `FuseOps` so that attributes carry host ids: image id 0 → the
 * user's own, id k (1…N) → range start + k − 1, anything else → the overflow id 65534. It also
 * answers `user.overlay.*` xattrs with the `trusted.overlay.*` ones (overlayfs mounted in a user
 * namespace reads opaque markers from `user.overlay.opaque`: `userxattr`).
 *
 * @module
 */
import {
  type AttrReply,
  type EntryReply,
  FuseError,
  type FuseOps,
  type MaybePromise,
} from "./ops.ts";

/** One id range: ids `inside` … `inside + count − 1` are host ids `outside` …. */
export interface IdRange {
  inside: number;
  outside: number;
  count: number;
}

/** The uid and gid maps of a user namespace, as /proc/PID/uid_map and gid_map list them. */
export interface IdMaps {
  uids: IdRange[];
  gids: IdRange[];
}

/** The kernel's overflow id: what an unmapped id shows as. */
export const OVERFLOW_ID = 65534;

/** Host id of namespace id `id` under `ranges`, or {@link OVERFLOW_ID}. */
export function toHost(ranges: IdRange[], id: number): number {
  for (const r of ranges) {
    if (id >= r.inside && id < r.inside + r.count) return r.outside + (id - r.inside);
  }
  return OVERFLOW_ID;
}

/**
 * The first range of `user` (name or numeric id) in an `/etc/subuid`-format text
 * (`name:start:count` lines).
 */
export function subordinateRange(
  text: string,
  user: { name?: string; id: number },
): { start: number; count: number } | undefined {
  for (const line of text.split("\n")) {
    const [who, start, count] = line.trim().split(":");
    if (who === undefined || start === undefined || count === undefined) continue;
    if (who !== user.name && who !== String(user.id)) continue;
    const s = Number(start), c = Number(count);
    if (Number.isSafeInteger(s) && Number.isSafeInteger(c) && c > 0) return { start: s, count: c };
  }
  return undefined;
}

/** The name of `uid` in `/etc/passwd`. */
async function userName(uid: number): Promise<string | undefined> {
  try {
    for (const line of (await Deno.readTextFile("/etc/passwd")).split("\n")) {
      const f = line.split(":");
      if (f.length > 2 && Number(f[2]) === uid) return f[0];
    }
  } catch {
    // no passwd
  }
  return undefined;
}

async function readOr(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

/**
 * The maps rootless podman uses for this process's user: 0 → the uid (gid), 1… → the user's
 * `/etc/subuid` (`/etc/subgid`) range; just 0 → the uid when the user has no range there.
 */
export async function rootlessIdMaps(
  uid = Deno.uid() ?? 0,
  gid = Deno.gid() ?? 0,
  files = { subuid: "/etc/subuid", subgid: "/etc/subgid" },
): Promise<IdMaps> {
  const name = await userName(uid);
  const maps: IdMaps = {
    uids: [{ inside: 0, outside: uid, count: 1 }],
    gids: [{ inside: 0, outside: gid, count: 1 }],
  };
  const su = subordinateRange(await readOr(files.subuid), { name, id: uid });
  if (su) maps.uids.push({ inside: 1, outside: su.start, count: su.count });
  const sg = subordinateRange(await readOr(files.subgid), { name, id: uid });
  if (sg) maps.gids.push({ inside: 1, outside: sg.start, count: sg.count });
  return maps;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const USER_OVERLAY = "user.overlay.";
const TRUSTED_OVERLAY = "trusted.overlay.";

/** `ops` with attributes shifted by `maps` and `user.overlay.*` answered as `trusted.overlay.*`. */
export function userNamespaceView<T extends FuseOps>(ops: T, maps: IdMaps): T {
  const shiftAttr = <R extends AttrReply | EntryReply>(r: R): R =>
    // A negative entry (node 0) has no attributes of a node.
    (r as EntryReply).nodeId === 0 ? r : r.attr
      ? {
        ...r,
        attr: { ...r.attr, uid: toHost(maps.uids, r.attr.uid), gid: toHost(maps.gids, r.attr.gid) },
      }
      : r;
  // Synchronous answers stay synchronous (the FUSE loop replies to them at once).
  const shiftOne = <A extends AttrReply | EntryReply | FuseError>(r: A): A =>
    r instanceof FuseError ? r : shiftAttr(r as AttrReply | EntryReply) as A;
  const shifted = <A extends AttrReply | EntryReply | FuseError>(
    r: MaybePromise<A>,
  ): MaybePromise<A> => r instanceof Promise ? r.then(shiftOne) : shiftOne(r);
  const overrides: Partial<FuseOps> = {
    lookup: (parent, name) => shifted(ops.lookup(parent, name)),
    getattr: (nodeId) => shifted(ops.getattr(nodeId)),
    getxattr: (nodeId, name) => {
      const s = dec.decode(name);
      const asked = s.startsWith(USER_OVERLAY)
        ? enc.encode(TRUSTED_OVERLAY + s.slice(USER_OVERLAY.length))
        : name;
      return ops.getxattr(nodeId, asked);
    },
    listxattr: async (nodeId) => {
      const names = await ops.listxattr(nodeId);
      const extra = names
        .map((n) => dec.decode(n))
        .filter((n) => n.startsWith(TRUSTED_OVERLAY))
        .map((n) => enc.encode(USER_OVERLAY + n.slice(TRUSTED_OVERLAY.length)));
      return [...names, ...extra];
    },
  };
  if (ops.readdirplusEntry) {
    const inner = ops.readdirplusEntry.bind(ops);
    overrides.readdirplusEntry = (parent, item) => shifted(inner(parent, item));
  }
  return new Proxy(ops, {
    get(target, prop, receiver) {
      if (typeof prop === "string" && prop in overrides) {
        return overrides[prop as keyof FuseOps];
      }
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
