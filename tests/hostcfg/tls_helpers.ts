/**
 * TLS test fixtures: a CA, a server certificate and a client certificate made with openssl,
 * docker-registry serving TLS (optionally requiring client certificates or htpasswd logins), and
 * adding/removing an /etc/hosts line so the registry has a name (crfs uses plain http for
 * loopback addresses).
 *
 * @module
 */
import { freePort } from "../helpers/registry.ts";

/** Runs a program in `cwd`; throws with its stderr when it fails. */
export async function run(cmd: string, args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** A CA, a server certificate for `name`, and a client CA with one client certificate, in `dir`. */
export async function makePki(dir: string, name: string): Promise<void> {
  const o = (args: string) => run("openssl", args.split(" "), dir);
  await o(
    "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=crfs-test-ca",
  );
  await o(`req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=${name}`);
  await Deno.writeTextFile(`${dir}/san.ext`, `subjectAltName=DNS:${name}\n`);
  await o(
    "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext",
  );
  await o(
    "req -x509 -newkey rsa:2048 -nodes -keyout clientca.key -out clientca.crt -days 2 -subj /CN=crfs-client-ca",
  );
  await o("req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=crfs-client");
  // Extensions make it an X.509 v3 certificate: rustls refuses v1 ones.
  await Deno.writeTextFile(`${dir}/client.ext`, "extendedKeyUsage=clientAuth\n");
  await o(
    "x509 -req -in client.csr -CA clientca.crt -CAkey clientca.key -CAcreateserial -out client.cert -days 2 -extfile client.ext",
  );
}

/** A docker-registry serving TLS on 127.0.0.1. */
export interface TlsRegistry {
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts docker-registry with `dir`/server.crt on a free port, storage in `dir`/`sub`; with
 * `clientCa` it requires client certificates signed by it, with `htpasswd` basic auth.
 */
export async function startTlsRegistry(
  dir: string,
  sub: string,
  clientCa?: string,
  htpasswd?: string,
): Promise<TlsRegistry> {
  const port = freePort();
  await Deno.mkdir(`${dir}/${sub}`);
  await Deno.writeTextFile(
    `${dir}/${sub}/config.yml`,
    `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${dir}/${sub}/data}}\n` +
      `http:\n  addr: 127.0.0.1:${port}\n  tls:\n    certificate: ${dir}/server.crt\n    key: ${dir}/server.key\n` +
      (clientCa ? `    clientcas: [${clientCa}]\n` : "") +
      (htpasswd ? `auth:\n  htpasswd:\n    realm: crfs-test\n    path: ${htpasswd}\n` : ""),
  );
  const child = new Deno.Command("docker-registry", {
    args: ["serve", `${dir}/${sub}/config.yml`],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (i > 200) throw new Error("docker-registry (TLS) did not start");
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return {
    port,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

/** The hosts file the tests add their name to. */
export const HOSTS = "/etc/hosts";

/** Appends `line` to /etc/hosts. */
export async function addHostsLine(line: string): Promise<void> {
  const text = await Deno.readTextFile(HOSTS);
  await Deno.writeTextFile(HOSTS, (text.endsWith("\n") ? text : text + "\n") + line + "\n");
}

/** Removes exactly `line` from /etc/hosts. */
export async function removeHostsLine(line: string): Promise<void> {
  const text = await Deno.readTextFile(HOSTS);
  await Deno.writeTextFile(HOSTS, text.split("\n").filter((l) => l !== line).join("\n"));
}

/**
 * `podman login TARGET` as a user of `dir` (storage, HOME and XDG_RUNTIME_DIR under it), trusting
 * the CAs in `certDir`, with an empty registries.conf: the credentials land in
 * `dir/run/containers/auth.json` (or where `env`, set over the rest, says: `REGISTRY_AUTH_FILE`).
 */
export async function podmanLogin(
  dir: string,
  certDir: string,
  target: string,
  username: string,
  password: string,
  env: Record<string, string> = {},
): Promise<void> {
  await podmanLoginWith(dir, ["--cert-dir", certDir, "--username", username, target], password, {
    XDG_RUNTIME_DIR: `${dir}/run`,
    ...env,
  });
}

/**
 * `podman login --password-stdin ARGS` with its storage (vfs: no overlay mount left behind) and
 * HOME in `dir` and an empty registries.conf of its own (not this process's: other test files
 * change it while this one runs), `env` over that; throws with podman's stderr when it fails.
 */
export async function podmanLoginWith(
  dir: string,
  args: string[],
  password: string,
  env: Record<string, string> = {},
): Promise<void> {
  if (env.XDG_RUNTIME_DIR) await Deno.mkdir(env.XDG_RUNTIME_DIR, { recursive: true });
  const conf = `${dir}/podman-login-registries.conf`;
  await Deno.writeTextFile(conf, "# nothing configured\n");
  const login = new Deno.Command("podman", {
    args: [
      "--root",
      `${dir}/root`,
      "--runroot",
      `${dir}/runroot`,
      "--storage-driver",
      "vfs",
      "login",
      "--password-stdin",
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { HOME: `${dir}/home`, CONTAINERS_REGISTRIES_CONF: conf, ...env },
  }).spawn();
  const w = login.stdin.getWriter();
  await w.write(new TextEncoder().encode(`${password.trimEnd()}\n`));
  await w.close();
  const out = await login.output();
  if (!out.success) throw new Error(`podman login: ${new TextDecoder().decode(out.stderr)}`);
}
