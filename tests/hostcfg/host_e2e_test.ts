/**
 * The host's configuration end to end, with today's drivers: docker-registry serving TLS (a CA
 * made with openssl, a name in /etc/hosts) behind htpasswd; `podman login HOST/team` verifying
 * the registry through a certs.d directory and writing its primary auth file; then crfs's
 * DockerV2Driver, given `TlsClients.fetch` and `AuthFiles` credentials, pulls the manifest and a
 * layer with exactly those files. Without the certs.d directory the error names the host and
 * what to configure; another namespace gets no credentials.
 */
import assert from "node:assert/strict";
import { AuthFiles } from "../../drivers/auth_files.ts";
import { TlsClients } from "../../drivers/tls_config.ts";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { buildImage, imageBlobs, sha256, skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import { addHostsLine, makePki, removeHostsLine, run, startTlsRegistry } from "./tls_helpers.ts";

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
    const login = new Deno.Command("podman", {
      args: [
        "--root",
        `${dir}/root`,
        "--runroot",
        `${dir}/runroot`,
        "--storage-driver",
        "vfs",
        "login",
        "--cert-dir",
        `${certsd}/${host}`,
        "--username",
        "alice",
        "--password-stdin",
        `${host}/team`,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { HOME: `${dir}/home`, XDG_RUNTIME_DIR: `${dir}/run` },
    }).spawn();
    const w = login.stdin.getWriter();
    await w.write(new TextEncoder().encode("alice-tls-pw\n"));
    await w.close();
    const out = await login.output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));

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
