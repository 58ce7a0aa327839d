/**
 * `crfs store` on a host set up as podman users set it up, with real parts only: docker-registry
 * serving TLS (a CA made with openssl, the registry's name in /etc/hosts, the CA in
 * /etc/containers/certs.d/HOST:PORT/ where podman and crfs both find it) behind htpasswd, and
 * again behind a token server; a
 * private eStargz image made with `crfs convert`; `podman login HOST/team` writing
 * `$XDG_RUNTIME_DIR/containers/auth.json` (with the token server: the `$REGISTRY_AUTH_FILE` it
 * names); then `crfs store` started with no credential or TLS
 * flag and `podman run` of the image through it. The container's output is right, every layer
 * request the registry logs is a range request (the store served the layers, podman downloaded
 * none), and a layer's unread file stays in the registry. Without the login the store refuses
 * the layers with an error naming the registry and podman's login, and podman says it cannot
 * use the layer.
 *
 * @module
 */
import assert from "node:assert/strict";
import { buildTarImage, crfs } from "../cmd/helpers.ts";
import { randomBytes, writeOciLayout } from "../helpers/images.ts";
import { blobGets, startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { baseLayer, Podman, startStore } from "../podman/helpers.ts";
import { addHostsLine, makePki, podmanLogin, removeHostsLine } from "./tls_helpers.ts";

/** Where podman and crfs look for a host's CA first (containers-certs.d(5)). */
const SYSTEM_CERTS_D = "/etc/containers/certs.d";

/** The manifest of team/app:v1, read with `creds` (Basic, or a bearer token for them). */
async function manifestOf(
  reg: TestRegistry,
  ca: string,
  creds: string,
): Promise<{ layers: { digest: string; size: number }[] }> {
  using client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(ca)] });
  const basic = `Basic ${btoa(creds)}`;
  const get = (authorization: string) =>
    fetch(`${reg.url}/v2/team/app/manifests/v1`, {
      client,
      headers: { accept: "application/vnd.oci.image.manifest.v1+json", authorization },
    });
  let res = await get(basic);
  const challenge = /^Bearer realm="([^"]+)",service="([^"]+)"/.exec(
    res.headers.get("www-authenticate") ?? "",
  );
  if (res.status === 401 && challenge) {
    await res.body?.cancel();
    const url = new URL(challenge[1]);
    url.searchParams.set("service", challenge[2]);
    url.searchParams.set("scope", "repository:team/app:pull");
    const token = await (await fetch(url, { headers: { authorization: basic } })).json();
    res = await get(`Bearer ${token.token}`);
  }
  assert.equal(res.status, 200);
  return await res.json();
}

for (const auth of ["basic", "token"] as const) {
  Deno.test(
    `crfs store end to end (${
      auth === "basic" ? "htpasswd" : "token server"
    }): podman login over TLS, then podman runs a private eStargz image lazily through the store`,
    () => storeEndToEnd(auth),
  );
}

async function storeEndToEnd(auth: "basic" | "token"): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "crfs-store-e2e-" });
  const name = `crfs-store-${crypto.randomUUID().slice(0, 8)}.test`;
  const hostsLine = `127.0.0.1 ${name} # crfs store e2e test`;
  // Where podman login writes, and what the store and podman are given: the runtime directory
  // (htpasswd), or $REGISTRY_AUTH_FILE (token server). Always explicitly: other test files
  // running in this process change its environment. registries.conf: an empty one of ours.
  const authPath = auth === "basic" ? `${dir}/run/containers/auth.json` : `${dir}/login/auth.json`;
  const envFor = (loggedIn: boolean): Record<string, string> => ({
    XDG_RUNTIME_DIR: auth === "basic" && loggedIn ? `${dir}/run` : `${dir}/run-empty`,
    REGISTRY_AUTH_FILE: auth === "basic" ? "" : loggedIn ? authPath : `${dir}/login/none.json`,
    CONTAINERS_REGISTRIES_CONF: `${dir}/registries.conf`,
    CRFS_CONFIG: "",
  });
  const cleanups: (() => Promise<void>)[] = [];
  let reg: TestRegistry | undefined;
  let certsd: string | undefined;
  const hadCertsD = await Deno.stat(SYSTEM_CERTS_D).then(() => true, () => false);
  try {
    await Deno.mkdir(`${dir}/run-empty`);
    await Deno.mkdir(`${dir}/login`);
    await Deno.writeTextFile(`${dir}/login/none.json`, `{"auths": {}}\n`);
    await Deno.writeTextFile(`${dir}/registries.conf`, "# nothing configured\n");
    await makePki(dir, name);
    await addHostsLine(hostsLine);
    cleanups.push(() => removeHostsLine(hostsLine));
    reg = await startRegistry({
      auth,
      users: { alice: "alice-store-pw" },
      tls: {
        name,
        certificate: `${dir}/server.crt`,
        key: `${dir}/server.key`,
        ca: `${dir}/ca.crt`,
      },
    });
    // The host's own certs.d: the only TLS configuration either tool is given.
    certsd = `${SYSTEM_CERTS_D}/${reg.host}`;
    await Deno.mkdir(certsd, { recursive: true });
    await Deno.copyFile(`${dir}/ca.crt`, `${certsd}/ca.crt`);

    // A private image in team/: programs, then a layer with a file read and one never read.
    const image = await buildTarImage([await baseLayer(), {
      "etc/motd": "hello from a private registry\n",
      "data/unread.bin": randomBytes(3 << 20, 7),
    }], dir);
    await writeOciLayout(`${dir}/layout`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    const ref = `${reg.host}/team/app:v1`;
    const conv = await crfs([
      "convert",
      "-q",
      "--dest-creds",
      "alice:alice-store-pw",
      `oci:${dir}/layout:v1`,
      ref,
    ], { env: envFor(false) });
    assert.equal(conv.code, 0, `crfs convert: ${conv.stderr}`);
    const manifest = await manifestOf(reg, `${dir}/ca.crt`, "alice:alice-store-pw");
    const layers = manifest.layers.map((l) => l.digest);
    assert.equal(layers.length, 2);

    // podman login HOST/team as a user does: auth.json in $XDG_RUNTIME_DIR/containers, or
    // $REGISTRY_AUTH_FILE.
    await Deno.mkdir(`${dir}/run`);
    const { XDG_RUNTIME_DIR: _, ...loginEnv } = envFor(true);
    await podmanLogin(dir, certsd, `${reg.host}/team`, "alice", "alice-store-pw", loginEnv);
    const authFile = JSON.parse(await Deno.readTextFile(authPath));
    assert.ok(authFile.auths[`${reg.host}/team`], JSON.stringify(Object.keys(authFile.auths)));

    const store = await startStore(`${dir}/store`, [], envFor(true));
    cleanups.push(() => store.stop());
    const pod = await Podman.create({ storeFlag: store.dir, env: envFor(true) });
    cleanups.push(() => pod.close());
    // podman checks the certificate too (no --tls-verify=false anywhere).
    const runArgs = (...args: string[]) =>
      pod.runArgs(...args).filter((a) => a !== "--tls-verify=false");

    reg.clearLog();
    const out = await pod.run(runArgs("--entrypoint", "/bin/cat", ref, "/etc/motd"));
    assert.equal(out.code, 0, `podman run: ${out.stderr}\ncrfs store: ${store.stderr()}`);
    assert.equal(out.stdout, "hello from a private registry\n");
    // Lazily, through the store: only range requests for the layers, and the unread file's
    // layer mostly still in the registry.
    const gets = blobGets(await reg.accessLog(), layers);
    assert.ok(gets.length > 0, "the store read the layers from the registry");
    assert.deepEqual(gets.filter((e) => e.status !== 206), [], "no layer downloaded whole");
    const dataLayer = manifest.layers[1];
    const dataBytes = gets.filter((e) => e.path.endsWith(dataLayer.digest))
      .reduce((n, e) => n + e.bytes, 0);
    assert.ok(dataBytes < dataLayer.size / 4, `data layer: ${dataBytes} of ${dataLayer.size}`);
    // podman's layers point into the store: none was copied into its own storage.
    const links = await new Deno.Command("find", {
      args: [`${pod.dir}/root/overlay`, "-maxdepth", "2", "-name", "diff", "-type", "l"],
      stdout: "piped",
    }).output();
    assert.equal(
      new TextDecoder().decode(links.stdout).trim().split("\n").filter(Boolean).length,
      layers.length,
    );
    assert.ok(!store.stderr().includes("alice-store-pw"), "no password in the store's log");

    // Without the login, for podman and the store: podman refuses with a clear error.
    const bare = await startStore(`${dir}/store-bare`, [], envFor(false));
    cleanups.push(() => bare.stop());
    const pod2 = await Podman.create({ storeFlag: bare.dir, env: envFor(false) });
    cleanups.push(() => pod2.close());
    const refused = await pod2.run(runArgs("--entrypoint", "/bin/cat", ref, "/etc/motd"));
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /authentication required|unauthorized/i);
    // podman logged in, the store not: the store refuses the layers and says how to log in;
    // podman then downloads them whole (what the login above avoids).
    const pod3 = await Podman.create({ storeFlag: bare.dir, env: envFor(true) });
    cleanups.push(() => pod3.close());
    reg.clearLog();
    const full = await pod3.run(runArgs("--entrypoint", "/bin/cat", ref, "/etc/motd"));
    assert.equal(full.code, 0, full.stderr);
    assert.equal(full.stdout, "hello from a private registry\n");
    const fullGets = blobGets(await reg.accessLog(), layers).filter((e) => e.status === 200);
    assert.deepEqual(
      fullGets.map((e) => e.bytes).sort(),
      manifest.layers.map((l) => l.size).sort(),
    );
    assert.match(
      bare.stderr(),
      new RegExp(`${reg.host}/team/app:v1: .*authentication required; log in with 'podman login`),
    );
  } finally {
    for (const c of cleanups.reverse()) await c().catch((e) => console.error(e));
    if (certsd) await Deno.remove(certsd, { recursive: true }).catch(() => {});
    if (!hadCertsD) await Deno.remove(SYSTEM_CERTS_D).catch(() => {}); // when empty
    await reg?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
