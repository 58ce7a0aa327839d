/**
 * fs/config_file.ts: the example in its own module documentation parses (so the documented
 * schema is the real one), values come out in parseFlags form for each command, the command
 * line overrides the file, every key names a real flag of `crfs mount`/`crfs store` (or one of
 * the flags this file adds), and bad files fail with one line naming the file and the key.
 */
import assert from "node:assert/strict";
import {
  CONFIG_KEYS,
  ConfigFileError,
  loadConfigFile,
  mergeConfig,
  parseConfig,
} from "../../fs/config_file.ts";
import { registryFlags } from "../../cmd/registry_options.ts";
import { parseFlags } from "../../cmd/cli.ts";

async function docExample(): Promise<string> {
  const src = await Deno.readTextFile(new URL("../../fs/config_file.ts", import.meta.url));
  const m = /```toml\n([\s\S]*?)```/.exec(src);
  assert.ok(m, "the module documentation has a toml example");
  return m[1].split("\n").map((l) => l.replace(/^ \* ?/, "")).join("\n");
}

Deno.test("config file: the documented example parses, per command", async () => {
  const text = await docExample();
  const mount = parseConfig(text, "/etc/crfs/config.toml", "mount");
  assert.equal(mount.positional, "/crfs");
  assert.deepEqual(mount.values["insecure-registry"], ["registry.lan:5000"]);
  assert.equal(mount.values["cache-size"], "20G");
  assert.equal(mount.values["tag-ttl"], "60");
  assert.equal(mount.values["read-ahead"], "1024");
  assert.equal(mount.values["allow-other"], true);
  assert.equal(mount.values["no-cache"], false);
  assert.equal(mount.values["tls-verify"], "true");
  assert.deepEqual(mount.values.host, ["registry.lan:5000"]);
  assert.equal(mount.values["layer-store"], "/var/lib/crfs/store");
  const store = parseConfig(text, "/etc/crfs/config.toml", "store");
  assert.equal(store.positional, "/var/lib/crfs/store");
  assert.equal(store.values.host, undefined, "mount-only keys stay out of store");
  assert.equal(store.values["metrics-address"], "127.0.0.1:9184");
});

Deno.test("config file: the command line overrides the file; values pass the flag parser", () => {
  const conf = parseConfig(
    `cache-size = 1048576\nprefetch = "all"\ninsecure-registry = ["a:1", "b:2"]\n` +
      `[store]\ndir = "/srv/store"\nprefetch = "off"\nread-ahead = 64\n`,
    "c.toml",
    "store",
  );
  assert.equal(conf.values.prefetch, "off", "a command's table overrides the top level");
  const cli = parseFlags(["--insecure-registry", "c:3", "/cli/dir"], {
    "allow-other": { type: "boolean" },
    "read-ahead": { type: "string" },
    ...registryFlags,
  });
  const merged = mergeConfig(conf, cli.values, cli.positionals);
  assert.deepEqual(merged.values["insecure-registry"], ["c:3"]);
  assert.equal(merged.values["cache-size"], "1048576");
  assert.equal(merged.values["read-ahead"], "64");
  assert.deepEqual(merged.positionals, ["/cli/dir"]);
  assert.deepEqual(mergeConfig(conf, {}, []).positionals, ["/srv/store"]);
  assert.deepEqual(mergeConfig(undefined, { debug: true }, ["x"]), {
    values: { debug: true },
    positionals: ["x"],
  });
});

Deno.test("config file: every key maps to a flag of crfs mount/store or a documented new one", async () => {
  const mountSrc = await Deno.readTextFile(new URL("../../cmd/mount.ts", import.meta.url));
  const storeSrc = await Deno.readTextFile(new URL("../../cmd/store.ts", import.meta.url));
  const added = ["authfile", "tls-verify", "certs-dir", "metrics-address"];
  for (const [key, spec] of Object.entries(CONFIG_KEYS)) {
    if (spec.flag === "positional") continue;
    const flag = spec.flag ?? key;
    if (added.includes(flag)) continue;
    for (const cmd of spec.commands) {
      const src = cmd === "mount" ? mountSrc : storeSrc;
      const known = flag in registryFlags || src.includes(`"${flag}": {`) ||
        src.includes(`  ${flag}: {`);
      assert.ok(known, `${key} is a flag of crfs ${cmd}`);
    }
  }
  // And every registry flag except the password is configurable.
  for (const flag of Object.keys(registryFlags)) {
    // Credentials have no key: they belong in an auth file, not a config file.
    if (["password-stdin", "username", "creds", "creds-host"].includes(flag)) continue;
    assert.ok(flag in CONFIG_KEYS, `${flag} has a config key`);
  }
});

Deno.test("config file: files on disk, missing files, errors name the file and key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-config-" });
  try {
    const file = `${dir}/config.toml`;
    assert.equal(await loadConfigFile("mount", { path: file }), undefined);
    await assert.rejects(
      () => loadConfigFile("mount", { path: file, required: true }),
      /cannot read config file .*config\.toml/,
    );
    const saved = Deno.env.get("CRFS_CONFIG");
    try {
      await Deno.writeTextFile(file, `[mount]\nmountpoint = "/mnt/x"\n`);
      Deno.env.set("CRFS_CONFIG", file);
      assert.equal((await loadConfigFile("mount"))?.positional, "/mnt/x");
    } finally {
      if (saved === undefined) Deno.env.delete("CRFS_CONFIG");
      else Deno.env.set("CRFS_CONFIG", saved);
    }
    const cases: [string, RegExp][] = [
      [`cache-sise = "1G"`, /unknown key "cache-sise"/],
      [`password = "x"`, /unknown key "password" \(credentials go in an auth file/],
      [`host = ["a"]`, /host belongs in the \[mount\] table/],
      [`read-ahead = -1`, /read-ahead must be a whole number/],
      [`read-ahead = "1024"`, /read-ahead must be a whole number/],
      [`cache-size = "lots"`, /cache-size must be a size/],
      [`allow-other = "yes"`, /allow-other must be true or false/],
      [`insecure-registry = "a:1"`, /insecure-registry must be a list/],
      [`[store]\nhost = ["a"]`, /\[store\]: host is not a setting of crfs store/],
      [`[mount]\nbogus = 1`, /\[mount\]: unknown key "bogus"/],
      [`mount = 3`, /mount must be a table/],
      [`[mount\nx = 1`, /config\.toml:1:/],
    ];
    for (const [text, re] of cases) {
      await Deno.writeTextFile(file, text);
      const err = await loadConfigFile("store", { path: file }).then(() => undefined, (e) => e);
      assert.ok(err instanceof ConfigFileError, `${text}: ${err}`);
      assert.match(err.message, re);
      assert.ok(err.message.includes(file), err.message);
      assert.ok(!err.message.includes("\n"), err.message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
