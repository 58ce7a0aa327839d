/**
 * drivers/registries_conf.ts against real files in a temp dir: precedence of the user file over
 * the system file and drop-ins, drop-in order, prefix rewriting, wildcards, mirrors and
 * pull-from-mirror, blocked, v1 files, short names, and one-line errors for bad files.
 */
import assert from "node:assert/strict";
import {
  insecureHosts,
  isShortName,
  loadRegistriesConf,
  RegistriesConfError,
  registriesConfFiles,
  resolveRegistry,
  searchRegistries,
  shortNameCandidates,
} from "../../drivers/registries_conf.ts";
import { parseReference } from "../../drivers/reference.ts";

async function tree(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "crfs-regconf-" });
  for (const [name, text] of Object.entries(files)) {
    const path = `${dir}/${name}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(path, text);
  }
  return dir;
}

function paths(dir: string) {
  return {
    systemFile: `${dir}/etc/registries.conf`,
    systemDir: `${dir}/etc/registries.conf.d`,
    userFile: `${dir}/user/registries.conf`,
    userDir: `${dir}/user/registries.conf.d`,
  };
}

const SYSTEM = `
unqualified-search-registries = ["registry.example.com", "docker.io"]

[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"

[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "mirror-1.local:5000/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "mirror-2.local/tags"
pull-from-mirror = "tag-only"

[[registry]]
location = "registry.com"
blocked = true

[[registry]]
prefix = "*.corp.example"
insecure = true

[[registry.mirror]]
location = "cache.corp.example:5000"

[[registry]]
prefix = "docker.io/library/alpine"
location = "hub-mirror.lan/library/alpine"
`;

const DIGEST = "sha256:" + "a".repeat(64);

Deno.test("registries.conf: system file and drop-ins in lexical order, later ones override", async () => {
  const dir = await tree({
    "etc/registries.conf": SYSTEM,
    "etc/registries.conf.d/20-late.conf": `unqualified-search-registries = ["late.example"]`,
    "etc/registries.conf.d/10-early.conf": `
unqualified-search-registries = ["early.example"]
[[registry]]
prefix = "registry.com"
location = "registry.com"
blocked = false
`,
    "etc/registries.conf.d/ignored.txt": `this is not toml [`,
  });
  try {
    const p = paths(dir);
    assert.deepEqual(await registriesConfFiles(p), [
      p.systemFile,
      `${p.systemDir}/10-early.conf`,
      `${p.systemDir}/20-late.conf`,
    ]);
    const conf = await loadRegistriesConf(p);
    assert.deepEqual(searchRegistries(conf), ["late.example"]);
    // The drop-in's table with the same prefix replaced the system one: no longer blocked.
    const r = resolveRegistry(conf, parseReference("registry.com/x/y:1"));
    assert.equal(r.blocked, false);
    assert.equal(r.entry?.file, `${p.systemDir}/10-early.conf`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registries.conf: the user's file replaces the system file and its drop-ins", async () => {
  const dir = await tree({
    "etc/registries.conf": SYSTEM,
    "etc/registries.conf.d/10.conf": `unqualified-search-registries = ["system-dropin.example"]`,
    "user/registries.conf": `unqualified-search-registries = ["user.example"]`,
    "user/registries.conf.d/50.conf": `
[[registry]]
location = "user-dropin.example"
insecure = true
`,
  });
  try {
    const p = paths(dir);
    assert.deepEqual(await registriesConfFiles(p), [p.userFile, `${p.userDir}/50.conf`]);
    const conf = await loadRegistriesConf(p);
    assert.deepEqual(searchRegistries(conf), ["user.example"]);
    assert.equal(resolveRegistry(conf, parseReference("registry.com/x:1")).blocked, false);
    assert.deepEqual(insecureHosts(conf), ["user-dropin.example"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registries.conf: environment defaults ($CONTAINERS_REGISTRIES_CONF, $XDG_CONFIG_HOME)", async () => {
  const dir = await tree({
    "only.conf": `unqualified-search-registries = ["only.example"]`,
    "xdg/containers/registries.conf": `unqualified-search-registries = ["xdg.example"]`,
  });
  const saved = {
    c: Deno.env.get("CONTAINERS_REGISTRIES_CONF"),
    x: Deno.env.get("XDG_CONFIG_HOME"),
  };
  try {
    Deno.env.delete("CONTAINERS_REGISTRIES_CONF");
    Deno.env.set("XDG_CONFIG_HOME", `${dir}/xdg`);
    assert.deepEqual(searchRegistries(await loadRegistriesConf()), ["xdg.example"]);
    Deno.env.set("CONTAINERS_REGISTRIES_CONF", `${dir}/only.conf`);
    const conf = await loadRegistriesConf();
    assert.deepEqual(conf.files, [`${dir}/only.conf`]);
    assert.deepEqual(searchRegistries(conf), ["only.example"]);
  } finally {
    for (const [k, v] of [["CONTAINERS_REGISTRIES_CONF", saved.c], ["XDG_CONFIG_HOME", saved.x]]) {
      if (v === undefined) Deno.env.delete(k!);
      else Deno.env.set(k!, v);
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registries.conf: rewriting, mirrors in order, pull-from-mirror, wildcard, blocked", async () => {
  const dir = await tree({ "etc/registries.conf": SYSTEM });
  try {
    const conf = await loadRegistriesConf(paths(dir));
    const where = (ref: string) =>
      resolveRegistry(conf, parseReference(ref)).endpoints.map((e) =>
        `${e.mirror ? "M" : "P"}${e.insecure ? "!" : ""} ${e.host} ${e.repository}`
      );
    // By tag: mirror 0, the tag-only mirror 2, then the rewritten primary.
    assert.deepEqual(where("example.com/foo/image:latest"), [
      "M mirror-0.local mirror-for-foo/image",
      "M mirror-2.local tags/image",
      "P internal.example.net bar/image",
    ]);
    // By digest: mirror 0, the digest-only insecure mirror 1, then the primary.
    assert.deepEqual(where(`example.com/foo/image@${DIGEST}`), [
      "M mirror-0.local mirror-for-foo/image",
      "M! mirror-1.local:5000 mirrors/foo/image",
      "P internal.example.net bar/image",
    ]);
    // The prefix ends at a path component boundary.
    assert.deepEqual(where("example.com/foobar:1"), ["P example.com foobar"]);
    // No table: the reference itself.
    assert.deepEqual(where("quay.io/team/app:1"), ["P quay.io team/app"]);
    // Wildcards match any depth of subdomain, no rewrite of the primary; the mirror replaces the host.
    assert.deepEqual(where("a.b.corp.example/x/y:2"), [
      "M cache.corp.example:5000 x/y",
      "P! a.b.corp.example x/y",
    ]);
    assert.deepEqual(where("corp.example/x:2"), ["P corp.example x"]);
    // Docker Hub in crfs's spelling matches docker.io prefixes (with library/).
    assert.deepEqual(where("alpine:3"), ["P hub-mirror.lan library/alpine"]);
    assert.deepEqual(where("docker.io/library/debian:12"), [
      "P registry-1.docker.io library/debian",
    ]);
    const blocked = resolveRegistry(conf, parseReference("registry.com/any/thing:1"));
    assert.equal(blocked.blocked, true);
    assert.equal(resolveRegistry(conf, parseReference("registry.community/x:1")).blocked, false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registries.conf: mirror-by-digest-only, longest prefix wins, tag prefixes", async () => {
  const dir = await tree({
    "etc/registries.conf": `
[[registry]]
location = "r.example"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.example"

[[registry]]
prefix = "r.example/team"
location = "team.example/t"

[[registry]]
prefix = "r.example/team/app:pinned"
location = "pinned.example/app"
`,
  });
  try {
    const conf = await loadRegistriesConf(paths(dir));
    const hosts = (ref: string) =>
      resolveRegistry(conf, parseReference(ref)).endpoints.map((e) => e.location);
    assert.deepEqual(hosts("r.example/x:1"), ["r.example/x"]);
    assert.deepEqual(hosts(`r.example/x@${DIGEST}`), ["m.example/x", "r.example/x"]);
    assert.deepEqual(hosts("r.example/team/app:1"), ["team.example/t/app"]);
    assert.deepEqual(hosts("r.example/team/app:pinned"), ["pinned.example/app"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registries.conf: version 1 files, short names and aliases", async () => {
  const dir = await tree({
    "etc/registries.conf": `
[registries.search]
registries = ['registry1.com', 'docker.io']
[registries.insecure]
registries = ['registry3.com:5000']
[registries.block]
registries = ['registry.untrusted.com']
`,
    "etc/registries.conf.d/aliases.conf": `
[aliases]
"myimage" = "quay.io/team/myimage"
`,
  });
  try {
    const conf = await loadRegistriesConf(paths(dir));
    assert.deepEqual(searchRegistries(conf), ["registry1.com", "docker.io"]);
    assert.deepEqual(insecureHosts(conf), ["registry3.com:5000"]);
    assert.equal(resolveRegistry(conf, parseReference("registry.untrusted.com/a:1")).blocked, true);
    const ep = resolveRegistry(conf, parseReference("registry3.com:5000/a:1")).endpoints;
    assert.equal(ep[0].insecure, true);
    assert.equal(isShortName("ubuntu:22.04"), true);
    assert.equal(isShortName("team/app"), true);
    assert.equal(isShortName("localhost/app"), false);
    assert.equal(isShortName("quay.io/app"), false);
    assert.deepEqual(shortNameCandidates(conf, "ubuntu:22.04"), [
      "registry1.com/ubuntu:22.04",
      "docker.io/library/ubuntu:22.04",
    ]);
    assert.deepEqual(shortNameCandidates(conf, "myimage:2"), ["quay.io/team/myimage:2"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registries.conf: invalid files fail with one line naming the file", async () => {
  const cases: [string, RegExp][] = [
    [`unqualified-search-registries = "docker.io"`, /must be an array of strings/],
    [`[[registry]]\ninsecure = true`, /needs a prefix or a location/],
    [`[[registry]]\nprefix = "example.*.com"`, /wildcard is allowed only/],
    [`[[registry]]\nprefix = "*.example.com/foo"`, /must be \*\.domain only/],
    [`[[registry]]\nlocation = "a.example"\ninsecure = "yes"`, /insecure must be true or false/],
    [
      `[[registry]]\nlocation = "a.example"\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "sometimes"`,
      /pull-from-mirror is one of/,
    ],
    [
      `[[registry]]\nlocation = "a.example"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "all"`,
      /cannot be combined/,
    ],
    [
      `[registries.search]\nregistries = ["a"]\n[[registry]]\nlocation = "b"`,
      /mixes the version 1/,
    ],
    [`[[registry]\nlocation = "b"`, /registries\.conf:1:/],
    [`bogus = 1`, /unknown setting "bogus"/],
  ];
  for (const [text, re] of cases) {
    const dir = await tree({ "etc/registries.conf": text });
    try {
      const err = await assertRejectsWith(() => loadRegistriesConf(paths(dir)));
      assert.ok(err instanceof RegistriesConfError, String(err));
      assert.match(err.message, re);
      assert.ok(err.message.includes(`${dir}/etc/registries.conf`), err.message);
      assert.ok(!err.message.includes("\n"), err.message);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

async function assertRejectsWith(f: () => Promise<unknown>): Promise<Error> {
  try {
    await f();
  } catch (e) {
    return e as Error;
  }
  assert.fail("expected a rejection");
}
