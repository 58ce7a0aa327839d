/**
 * The memory reclaimer: once the process is quiet, buffers nothing references any more are
 * collected (external memory falls back), and stopping it stops the timer; over its budget the
 * registered memory caches are emptied first (once, not again for memory that stays live),
 * under it they are kept.
 *
 * @module
 */
import assert from "node:assert/strict";
import { reclaimable, startMemoryReclaim } from "../../fs/memory_reclaim.ts";

Deno.test("garbage buffers are collected once the process is quiet", async () => {
  const stop = startMemoryReclaim({ startDelayMs: 0, intervalMs: 20, slackBytes: 1 << 20 });
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

Deno.test("over budget, a quiet process empties the registered memory caches first", async () => {
  let cleared = 0;
  const cache = { clear: () => void cleared++ };
  reclaimable(cache);
  reclaimable(cache); // once is enough
  const stop = startMemoryReclaim({
    startDelayMs: 0,
    intervalMs: 20,
    slackBytes: 1 << 20,
    budgetBytes: 1,
  });
  try {
    let junk: Uint8Array[] | undefined = [];
    for (let i = 0; i < 4; i++) junk.push(new Uint8Array(4 << 20).fill(i + 1));
    assert.equal(junk.length, 4);
    junk = undefined;
    for (let i = 0; i < 200 && cleared === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(cleared, 1, "cleared once, when the process went quiet");
    // Quiet and nothing new: no second collection of what stays live.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(cleared, 1);
  } finally {
    stop();
  }
});

Deno.test("under budget, the memory caches are kept", async () => {
  let cleared = 0;
  reclaimable({ clear: () => void cleared++ });
  const stop = startMemoryReclaim({
    startDelayMs: 0,
    intervalMs: 20,
    slackBytes: 1 << 20,
    budgetBytes: 2 ** 40,
  });
  try {
    let junk: Uint8Array[] | undefined = [];
    for (let i = 0; i < 4; i++) junk.push(new Uint8Array(4 << 20).fill(i + 1));
    const high = Deno.memoryUsage().external;
    assert.equal(junk.length, 4);
    junk = undefined;
    let now = high;
    for (let i = 0; i < 200 && now > high - (8 << 20); i++) {
      await new Promise((r) => setTimeout(r, 20));
      now = Deno.memoryUsage().external;
    }
    assert.ok(now <= high - (8 << 20), "the garbage was collected");
    assert.equal(cleared, 0, "no cache emptied under budget");
  } finally {
    stop();
  }
});

Deno.test("under budget, the garbage of a burst is collected as soon as the burst ends", async () => {
  // What a big read leaves: V8 collected part of it on the way (external memory fell below the
  // level of the reclaimer's last collection), and what died after that is less than
  // `slackBytes`: without the burst rule nothing collects it while the process stays idle.
  const v8 = (await import("node:v8")).default;
  const vm = (await import("node:vm")).default;
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  // Longer than the reclaimer's interval: each step below is seen by at least one check.
  const tick = () => new Promise((r) => setTimeout(r, 30));
  let live: Uint8Array[] | undefined = [0, 1, 2, 3].map(() => new Uint8Array(4 << 20).fill(1));
  const stop = startMemoryReclaim({
    startDelayMs: 0,
    intervalMs: 20,
    slackBytes: 8 << 20,
    budgetBytes: 2 ** 40,
  });
  try {
    await tick();
    for (let i = 0; i < 3; i++) new Uint8Array(4 << 20).fill(2);
    await tick();
    assert.equal(live.length, 4);
    live = undefined;
    gc();
    await tick();
    for (let i = 0; i < 2; i++) new Uint8Array(3 << 20).fill(3);
    const high = Deno.memoryUsage().external;
    let now = high;
    for (let i = 0; i < 40 && now > high - (5 << 20); i++) {
      await tick();
      now = Deno.memoryUsage().external;
    }
    assert.ok(now <= high - (5 << 20), `external memory ${now} did not fall from ${high}`);
  } finally {
    stop();
  }
});
