/**
 * The memory reclaimer: once the process is quiet, buffers nothing references any more are
 * collected (external memory falls back), and stopping it stops the timer.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startMemoryReclaim } from "../../fs/memory_reclaim.ts";

Deno.test("garbage buffers are collected once the process is quiet", async () => {
  const stop = startMemoryReclaim({ intervalMs: 20, slackBytes: 1 << 20 });
  try {
    let junk: Uint8Array[] | undefined = [];
    for (let i = 0; i < 10; i++) junk.push(new Uint8Array(4 << 20).fill(i + 1));
    const high = Deno.memoryUsage().external;
    assert.ok(junk.length === 10);
    junk = undefined;
    let now = high;
    for (let i = 0; i < 200 && now > high - (32 << 20); i++) {
      await new Promise((r) => setTimeout(r, 20));
      now = Deno.memoryUsage().external;
    }
    assert.ok(now <= high - (32 << 20), `external memory ${now} did not fall from ${high}`);
  } finally {
    stop();
  }
});
