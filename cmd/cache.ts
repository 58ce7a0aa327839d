/**
 * `crfs cache status|prune`: what the disk cache holds, and removing what is old or over a size,
 * without a running crfs (see fs/cache_admin.ts).
 *
 * @module
 */
import {
  CacheAdminError,
  type CacheStatus,
  cacheStatus,
  parseDuration,
  pruneCache,
} from "../fs/cache_admin.ts";
import { defaultCacheDir } from "../fs/disk_cache.ts";
import {
  type Command,
  defineCommand,
  formatBytes,
  type Options,
  parseSize,
  UsageError,
  UserError,
  writeStdout,
} from "./cli.ts";

const HELP = `Usage: crfs cache status [--cache-dir DIR] [--json]
       crfs cache prune [--older-than DURATION] [--to SIZE] [--dry-run] [--cache-dir DIR] [--json]

status shows what the disk cache holds: blob ranges, chunks kept decompressed, manifests and
configs, tag and repository records, and when its entries were last used.

prune removes entries last used more than DURATION ago (30d, 12h, 90m, 2w), then the least
recently used ones until the cache is at most SIZE (500M, 10G). Unfinished writes older than an
hour always go. Safe while crfs runs: it fetches pruned bytes again when they are read.

Options:
      --cache-dir DIR        the cache (default /var/cache/crfs for root, ~/.cache/crfs otherwise)
      --older-than DURATION  prune: entries unused for longer than this
      --to SIZE              prune: shrink to at most this size
      --dry-run              prune: show what would go, remove nothing
      --json                 print the result as JSON
  -h, --help                 show this help
`;

function when(ms: number | undefined): string {
  return ms === undefined ? "-" : new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}

function statusText(s: CacheStatus): string {
  const row = (name: string, files: number, bytes: number, extra = "") =>
    `  ${name.padEnd(8)} ${String(files).padStart(8)} files ${
      formatBytes(bytes).padStart(11)
    }${extra}\n`;
  return `cache ${s.dir}\n` +
    row("ranges", s.ranges.files, s.ranges.bytes, `  (${s.ranges.blobs} blobs)`) +
    row("decoded", s.decoded.files, s.decoded.bytes) +
    row("objects", s.objects.files, s.objects.bytes) +
    row("tags", s.tags.files, s.tags.bytes) +
    row("repos", s.repos.files, s.repos.bytes) +
    (s.tmp.files ? row("tmp", s.tmp.files, s.tmp.bytes) : "") +
    row("total", s.total.files, s.total.bytes) +
    `  last used: oldest ${when(s.oldestUse)}, newest ${when(s.newestUse)}\n`;
}

/** The flags of the command, besides `--help`. */
const FLAGS: Options = {
  "cache-dir": { type: "string" },
  "older-than": { type: "string" },
  to: { type: "string" },
  "dry-run": { type: "boolean" },
  json: { type: "boolean" },
};

export const cacheCommand: Command = defineCommand({
  name: "cache",
  summary: "show or prune the disk cache",
  help: HELP,
  flags: FLAGS,
  takes: "status or prune",
  argsOk: (p) => p.length === 1 && (p[0] === "status" || p[0] === "prune"),
  async run(values, positionals) {
    const action = positionals[0];
    const dir = (values["cache-dir"] as string | undefined) ?? defaultCacheDir();
    const json = values.json === true;
    try {
      if (action === "status") {
        for (const f of ["older-than", "to", "dry-run"]) {
          if (values[f] !== undefined) throw new UsageError(`--${f} is for 'crfs cache prune'`);
        }
        const s = await cacheStatus(dir);
        await writeStdout(json ? JSON.stringify(s, null, 2) + "\n" : statusText(s));
        return 0;
      }
      let olderThanMs: number | undefined;
      if (values["older-than"] !== undefined) {
        try {
          olderThanMs = parseDuration(values["older-than"] as string);
        } catch (e) {
          throw new UsageError(`--older-than: ${(e as Error).message}`);
        }
      }
      const toBytes = values.to === undefined ? undefined : parseSize(values.to as string, "--to");
      const r = await pruneCache(dir, { olderThanMs, toBytes, dryRun: values["dry-run"] === true });
      if (json) await writeStdout(JSON.stringify(r, null, 2) + "\n");
      else {
        await writeStdout(
          `${values["dry-run"] ? "would remove" : "removed"} ${r.removedFiles} files, ` +
            `${formatBytes(r.removedBytes)}; ${formatBytes(r.after.total.bytes)} left in ${dir}\n`,
        );
      }
      return 0;
    } catch (e) {
      if (e instanceof CacheAdminError) throw new UserError(e.message);
      throw e;
    }
  },
});
