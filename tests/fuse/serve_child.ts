/**
 * TEST FIXTURE: a child process that serves the in-memory test filesystem at `Deno.args[0]`,
 * prints `ready <device>` once mounted, and (unless `Deno.args[1]` is "nosignal") unmounts and
 * exits on SIGINT/SIGTERM through `installSignalUnmount`. Used by lifecycle_test.ts.
 *
 * @module
 */
import { installSignalUnmount, mount } from "../../fs/fuse/mount.ts";
import { ROOT_ID } from "../../fs/fuse/ops.ts";
import { MemFs } from "./memfs.ts";

const [mountpoint, mode] = Deno.args;
const fs = new MemFs();
fs.addFile(ROOT_ID, "hello", "hello from the child\n");
const m = await mount(mountpoint, fs);
if (mode !== "nosignal") {
  installSignalUnmount(m, { onSignal: (s) => console.error(`got ${s}`) });
}
console.log(`ready ${m.device}`);
await m.closed;
console.error("closed");
