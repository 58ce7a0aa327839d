/**
 * Bounded pagination: a hostile registry whose catalog and tag listings paginate forever (a new
 * `Link: rel="next"` on every page, never repeating) is read up to the caps — 1,000 pages or
 * 100,000 entries by default — and the truncation is noted in the debug log.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver, MAX_LIST_ENTRIES, MAX_LIST_PAGES } from "../../drivers/docker_v2.ts";

function endlessRegistry(perPage: number) {
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/v2/") return new Response("{}");
    requests++;
    const page = Number(url.searchParams.get("page") ?? 0);
    const names = Array.from({ length: perPage }, (_, i) => `n${page}x${i}`);
    const link = `<${url.pathname}?page=${page + 1}>; rel="next"`;
    const body = url.pathname === "/v2/_catalog"
      ? { repositories: names.map((n) => `r/${n}`) }
      : { name: "a/b", tags: names };
    return Response.json(body, { headers: { link } });
  });
  return {
    host: `127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    requests: () => requests,
    stop: () => server.shutdown(),
  };
}

Deno.test("a catalog that paginates forever stops at the page cap, noted in the log", async () => {
  const reg = endlessRegistry(1);
  try {
    const lines: string[] = [];
    const d = new DockerV2Driver(
      createContext({ dockerConfig: false, debug: (l) => lines.push(l) }),
    );
    const repos = await d.listRepositories(reg.host);
    assert.equal(MAX_LIST_PAGES, 1000);
    assert.equal(reg.requests(), MAX_LIST_PAGES);
    assert.equal(repos.length, MAX_LIST_PAGES);
    assert.ok(
      lines.some((l) => /catalog\): listing truncated after 1000 pages/.test(l)),
      lines.slice(-3).join("\n"),
    );
  } finally {
    await reg.stop();
  }
});

Deno.test("a tag listing that paginates forever stops at the entry cap", async () => {
  const reg = endlessRegistry(10_000);
  try {
    const lines: string[] = [];
    const d = new DockerV2Driver(
      createContext({ dockerConfig: false, debug: (l) => lines.push(l) }),
    );
    const tags = await d.tagNames({ host: reg.host, repository: "a/b" });
    assert.equal(tags.length, MAX_LIST_ENTRIES);
    assert.equal(reg.requests(), MAX_LIST_ENTRIES / 10_000);
    assert.ok(
      lines.some((l) => /a\/b: listing truncated after 10 pages and 100000 entries/.test(l)),
    );
  } finally {
    await reg.stop();
  }
});
