/**
 * The host's configuration end to end. First with the drivers alone: docker-registry serving TLS (a CA
 * made with openssl, a name in /etc/hosts) behind htpasswd; `podman login HOST/team` verifying
 * the registry through a certs.d directory and writing its primary auth file; then crfs's
 * DockerV2Driver, given `TlsClients.fetch` and `AuthFiles` credentials, pulls the manifest and a
 * layer with exactly those files. Without the certs.d directory the error names the host and
 * what to configure; another namespace gets no credentials. Then as a user runs it: `crfs mount`
 * (a subprocess) with `--certs-dir`, the podman login in `$XDG_RUNTIME_DIR` and a registries.conf
 * mirror standing in for a registry that is down reads a private eStargz image lazily, another
 * namespace is refused, and `--metrics-address` serves the requests and FUSE operations.
 */
import assert from "node:assert/strict";
import { AuthFiles } from "../../drivers/auth_files.ts";
import { TlsClients } from "../../drivers/tls_config.ts";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { buildImage, imageBlobs, sha256, skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import {
  addHostsLine,
  makePki,
  podmanLogin,
  removeHostsLine,
  run,
  startTlsRegistry,
} from "./tls_helpers.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { pushEStargzLayers } from "../../convert/push.ts";
import { freePort } from "../helpers/registry.ts";
import { type MountProcess, startMount, tarTree, toEStargz } from "../mount/helpers.ts";

Deno.test("host config: podman login over TLS with certs.d, then crfs pulls with the same files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-hoste2e-" });
  const name = `crfs-e2e-${crypto.randomUUID().slice(0, 8)}.test`;
  const hostsLine = `127.0.0.1 ${name} # crfs host e2e test`;
  await makePki(dir, name);
  await run("htpasswd", ["-Bbc", `${dir}/htpasswd`, "alice", "alice-tls-pw"], dir);
  await addHostsLine(hostsLine);
  const reg = await startTlsRegistry(dir, "reg", undefined, `${dir}/htpasswd`);
  const clients: TlsClients[] = [];
  try {
    const host = `${name}:${reg.port}`;
    const image = await buildImage({ files: { "etc/hello": "hello over tls\n" } });
    await writeOciLayout(`${dir}/oci`, imageBlobs(image), { v1: image.manifest });
    const digest = await skopeoCopy(`oci:${dir}/oci:v1`, `docker://${host}/team/app:v1`, {
      destCreds: "alice:alice-tls-pw",
    });

    const certsd = `${dir}/certs.d`;
    await Deno.mkdir(`${certsd}/${host}`, { recursive: true });
    await Deno.copyFile(`${dir}/ca.crt`, `${certsd}/${host}/ca.crt`);
    await Deno.mkdir(`${dir}/run`);
    await podmanLogin(dir, `${certsd}/${host}`, `${host}/team`, "alice", "alice-tls-pw");

    const files = new AuthFiles({ env: (n) => ({ XDG_RUNTIME_DIR: `${dir}/run` })[n] });
    const tls = new TlsClients({ certsDirs: [certsd], systemCaFile: null });
    clients.push(tls);
    const driverFor = (repository: string, fetch = tls.fetch) =>
      new DockerV2Driver(createContext({
        dockerConfig: false,
        retries: 0,
        fetch,
        // Today's providers see only the host; the repository is this driver's.
        providers: [(h) => files.credentialsFor({ host: h, path: repository })],
      }));
    const d = driverFor("team/app");
    const repo = { host, repository: "team/app" };
    const m = await d.getManifest(repo, "v1");
    assert.equal(m.digest, digest);
    const layer = image.layers[0];
    const src = await d.blob(repo, layer.digest);
    const bytes = await src.read(0, layer.bytes.length);
    assert.equal(await sha256(bytes), layer.digest);

    // Without the certs.d directory: the error names the host and says what to configure.
    const bare = new TlsClients({ certsDirs: [], systemCaFile: null });
    clients.push(bare);
    const e1 = await driverFor("team/app", bare.fetch).getManifest(repo, "v1").then(
      () => undefined,
      (e) => e,
    );
    assert.ok(e1 instanceof RegistryError, String(e1));
    assert.equal(e1.code, "TLS");
    assert.ok(e1.message.includes(host), e1.message);
    assert.match(e1.message, /certs\.d/);

    // The login was for team/: another namespace has no credentials, and the registry says so.
    assert.equal(await files.credentialsFor({ host, path: "other/app" }), undefined);
    const e2 = await driverFor("other/app").getManifest({ host, repository: "other/app" }, "v1")
      .then(() => undefined, (e) => e);
    assert.ok(e2 instanceof RegistryError && e2.code === "UNAUTHORIZED", String(e2));
  } finally {
    for (const c of clients) c.close();
    await reg.stop();
    await removeHostsLine(hostsLine);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("host config end to end: crfs mount reads a private eStargz image with podman's login, through a mirror while the original is down", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-hoste2e-mount-" });
  const name = `crfs-e2e-${crypto.randomUUID().slice(0, 8)}.test`;
  const hostsLine = `127.0.0.1 ${name} # crfs host e2e mount test`;
  await makePki(dir, name);
  await run("htpasswd", ["-Bbc", `${dir}/htpasswd`, "alice", "alice-tls-pw"], dir);
  await addHostsLine(hostsLine);
  const reg = await startTlsRegistry(dir, "reg", undefined, `${dir}/htpasswd`);
  const tls = new TlsClients({ certsDirs: [`${dir}/certs.d`], systemCaFile: null });
  let mount: MountProcess | undefined;
  try {
    const host = `${name}:${reg.port}`;
    const certsd = `${dir}/certs.d`;
    await Deno.mkdir(`${certsd}/${host}`, { recursive: true });
    await Deno.copyFile(`${dir}/ca.crt`, `${certsd}/${host}/ca.crt`);

    // A private eStargz image in team/, pushed over TLS with alice's password.
    const content = "lazily read over tls\n".repeat(1000);
    await Deno.mkdir(`${dir}/tree/etc`, { recursive: true });
    await Deno.writeTextFile(`${dir}/tree/etc/hello`, content);
    await Deno.writeFile(`${dir}/tree/big.bin`, crypto.getRandomValues(new Uint8Array(60_000)));
    await tarTree(`${dir}/tree`, `${dir}/layer.tar`);
    const layer = await toEStargz(`${dir}/layer.tar`);
    const pusher = defaultDrivers({
      fetch: tls.fetch,
      authFiles: false,
      explicitCredentials: [{
        hosts: [host],
        username: "alice",
        password: "alice-tls-pw",
        source: "test",
      }],
    });
    await pushEStargzLayers(
      pusher.forHost(host),
      { host, repository: "team/app" },
      "esgz",
      [{ blobPath: layer.blob, result: layer }],
      { config: { Cmd: ["/bin/sh"] } },
    );

    // podman login HOST/team: the primary auth file under XDG_RUNTIME_DIR.
    await Deno.mkdir(`${dir}/run`);
    await podmanLogin(dir, `${certsd}/${host}`, `${host}/team`, "alice", "alice-tls-pw");

    // registries.conf: the original "down.HOST" (nothing listens there) is mirrored by HOST.
    const down = `127.0.0.1:${freePort()}`;
    await Deno.writeTextFile(
      `${dir}/registries.conf`,
      `[[registry]]\nprefix = "${down}/team"\nlocation = "${down}/team"\n` +
        `[[registry.mirror]]\nlocation = "${host}/team"\n`,
    );
    const mnt = `${dir}/mnt`;
    const metricsPort = freePort();
    mount = await startMount(mnt, [
      "--certs-dir",
      certsd,
      "--host",
      host,
      "--no-background-fetch",
      "--metrics-address",
      `127.0.0.1:${metricsPort}`,
    ], {
      // Given explicitly, not set in this process: other test files run in it at the same time.
      env: {
        XDG_RUNTIME_DIR: `${dir}/run`,
        CONTAINERS_REGISTRIES_CONF: `${dir}/registries.conf`,
        REGISTRY_AUTH_FILE: "",
        CRFS_CONFIG: "",
      },
    });

    const direct = `${mnt}/images/${host}/team/app/esgz`;
    assert.equal(await Deno.readTextFile(`${direct}/etc/hello`), content);
    // Lazily: the file's bytes, not the layer's (the random big.bin stays in the registry).
    const status = JSON.parse(await Deno.readTextFile(`${mnt}/crfs-status.json`)) as {
      layers: { digest: string; bytesFetched: number }[];
    };
    const served = status.layers.find((l) => l.digest === layer.blobDigest);
    assert.ok(served && served.bytesFetched > 0, JSON.stringify(status));
    assert.ok(served.bytesFetched < layer.blobSize - 50_000, JSON.stringify(served));
    // Through the mirror: the original is down, the same bytes come from HOST.
    const viaMirror = await Deno.readTextFile(`${mnt}/images/${down}/team/app/esgz/etc/hello`)
      .catch((e) => `${e}\n${mount?.stderr()}`);
    assert.equal(viaMirror, content);
    // The login was for team/: other/ gets nothing (the registry refuses it).
    const other = await Deno.readTextFile(`${mnt}/images/${host}/other/app/esgz/etc/hello`).then(
      (t) => `read ${t.length} bytes\n${mount?.stderr()}`,
      (e) => e,
    );
    assert.ok(other instanceof Error, String(other));
    assert.ok(!mount.stderr().includes("alice-tls-pw"), "no password in the log");
    // The metrics endpoint counts the registry requests and the FUSE operations served.
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(
      metrics,
      new RegExp(
        `crfs_registry_requests_total\\{host="${name}:\\d+",kind="blob",status="206"\\} [1-9]`,
      ),
    );
    assert.match(metrics, /crfs_fuse_operations_total\{op="read"\} [1-9]/);
    assert.match(metrics, /crfs_fuse_errors_total\{op="[a-z]+",errno="E[A-Z]+"\} [1-9]/);
  } finally {
    await mount?.stop();
    tls.close();
    await reg.stop();
    await removeHostsLine(hostsLine);
    await Deno.remove(dir, { recursive: true });
  }
});
