/**
 * format/timers.ts: `after` fires once after its delay and not once cancelled, `timeout`
 * resolves, an infinite delay never fires, and a pending timer keeps its process alive like
 * `setTimeout` (a cancelled one does not).
 *
 * @module
 */
import assert from "node:assert/strict";
import { after, timeout } from "../../format/timers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("after fires once after its delay, and not once cancelled", async () => {
  const t0 = performance.now();
  let fired = 0;
  let at = 0;
  after(30, () => {
    fired++;
    at = performance.now() - t0;
  });
  let cancelled = 0;
  const cancel = after(30, () => cancelled++);
  cancel();
  after(Infinity, () => cancelled++)();
  await sleep(120);
  assert.equal(fired, 1);
  assert.ok(at >= 25, `fired after ${at} ms`);
  assert.equal(cancelled, 0);
});

Deno.test("timeout resolves", async () => {
  const t = timeout(20);
  assert.equal(await Promise.race([t.promise, sleep(1000).then(() => "late")]), "timeout");
  const c = timeout(20);
  c.cancel();
  assert.equal(await Promise.race([c.promise, sleep(100).then(() => "cancelled")]), "cancelled");
});

Deno.test("a pending timer keeps its process alive, a cancelled one does not", async () => {
  const url = new URL("../../format/timers.ts", import.meta.url).href;
  const run = async (code: string) => {
    const t0 = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", `import { after } from "${url}"; ${code}`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return { ms: performance.now() - t0, stdout: new TextDecoder().decode(out.stdout) };
  };
  const fired = await run(`after(300, () => console.log("fired"));`);
  assert.equal(fired.stdout.trim(), "fired");
  const cancelled = await run(`after(60000, () => console.log("fired"))();`);
  assert.equal(cancelled.stdout, "");
  assert.ok(cancelled.ms < 30_000, "a cancelled timer kept the process waiting");
});
