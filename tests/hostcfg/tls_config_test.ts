/**
 * drivers/tls_config.ts against docker-registry serving TLS with certificates from a CA this test
 * makes with openssl, under a name added to /etc/hosts for the test (and removed after):
 * unknown CA → a message naming the host and the certs.d directory; certs.d `ca.crt` → trusted;
 * the system CA bundle → trusted; `--tls-verify=false` → https without checks (GET, HEAD and a
 * streamed POST); a registry requiring client certificates → `client.cert` + `client.key`; a
 * plain-http server on an https URL; broken certs.d directories.
 */
import assert from "node:assert/strict";
import { hostTlsConfig, TlsClients, TlsConfigError } from "../../drivers/tls_config.ts";
import { freePort } from "../helpers/registry.ts";
import { addHostsLine, HOSTS, makePki, removeHostsLine, startTlsRegistry } from "./tls_helpers.ts";

async function certsDir(
  base: string,
  host: string,
  files: Record<string, string>,
): Promise<string> {
  await Deno.mkdir(`${base}/${host}`, { recursive: true });
  for (const [name, from] of Object.entries(files)) {
    await Deno.copyFile(from, `${base}/${host}/${name}`);
  }
  return base;
}

async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  assert.fail("expected a failure");
}

Deno.test("TLS: certs.d CAs, system store, tls-verify=false, client certificates, messages", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-tls-" });
  const name = `crfs-tls-${crypto.randomUUID().slice(0, 8)}.test`;
  const hostsLine = `127.0.0.1 ${name} # crfs tls test`;
  await makePki(dir, name);
  await addHostsLine(hostsLine);
  const open = await startTlsRegistry(dir, "open");
  const mtls = await startTlsRegistry(dir, "mtls", `${dir}/clientca.crt`);
  const clients: TlsClients[] = [];
  const tls = (o: ConstructorParameters<typeof TlsClients>[0]) => {
    const c = new TlsClients({ systemCaFile: null, ...o });
    clients.push(c);
    return c;
  };
  try {
    const host = `${name}:${open.port}`;
    const url = `https://${host}/v2/`;

    // No CA anywhere: a one-line message naming the host and where the CA goes.
    const none = tls({ certsDirs: [`${dir}/empty`] });
    const e1 = await failure(none.fetch(url));
    assert.ok(e1 instanceof TypeError);
    assert.match(
      e1.message,
      new RegExp(`certificate of ${host.replace(/\./g, "\\.")} is signed by an unknown authority`),
    );
    assert.ok(e1.message.includes(`/etc/containers/certs.d/${host}/ca.crt`), e1.message);
    assert.ok(e1.message.includes("--tls-verify=false"));

    // certs.d/HOST:PORT/ca.crt; the first existing directory wins over later ones.
    const d1 = await certsDir(`${dir}/certs1`, host, { "ca.crt": `${dir}/ca.crt` });
    const d2 = await certsDir(`${dir}/certs2`, host, { "other.crt": `${dir}/clientca.crt` });
    const cfg = await hostTlsConfig(host, {
      certsDirs: [`${dir}/missing`, d1, d2],
      systemCaFile: null,
    });
    assert.equal(cfg.dir, `${d1}/${host}`);
    assert.deepEqual(cfg.files, [`${d1}/${host}/ca.crt`]);
    const trusted = tls({ certsDirs: [d1] });
    const r1 = await trusted.fetch(url);
    assert.equal(r1.status, 200);
    assert.deepEqual(await r1.json(), {});
    // The directory name carries the port: another port of the same name is not covered.
    assert.equal(
      (await hostTlsConfig(`${name}:1`, { certsDirs: [d1], systemCaFile: null })).caCerts.length,
      0,
    );

    // The system CA bundle counts too.
    const system = tls({ certsDirs: [], systemCaFile: `${dir}/ca.crt` });
    assert.equal((await system.fetch(url)).status, 200);

    // --tls-verify=false: https without checks, distinct from plain http.
    const unchecked = tls({ certsDirs: [], noVerifyHosts: [host] });
    const r2 = await unchecked.fetch(url, { headers: { accept: "application/json" } });
    assert.equal(r2.status, 200);
    assert.equal(r2.headers.get("docker-distribution-api-version"), "registry/2.0");
    assert.equal(await r2.text(), "{}");
    const head = await unchecked.fetch(url, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.body, null);
    const post = await unchecked.fetch(`https://${host}/v2/team/app/blobs/uploads/`, {
      method: "POST",
      body: ReadableStream.from([new Uint8Array([1, 2, 3])]),
    });
    assert.equal(post.status, 202);
    assert.match(post.headers.get("location") ?? "", /\/v2\/team\/app\/blobs\/uploads\//);
    await post.body?.cancel();
    const all = tls({ certsDirs: [], tlsVerify: false });
    assert.equal((await all.fetch(url)).status, 200);
    const aborted = new AbortController();
    aborted.abort(new DOMException("stop", "AbortError"));
    await assert.rejects(() => unchecked.fetch(url, { signal: aborted.signal }), /stop/);

    // A registry that requires a client certificate.
    const mhost = `${name}:${mtls.port}`;
    const murl = `https://${mhost}/v2/`;
    const caOnly = await certsDir(`${dir}/certs-m1`, mhost, { "ca.crt": `${dir}/ca.crt` });
    const e2 = await failure(tls({ certsDirs: [caOnly] }).fetch(murl).then((r) => r.text()));
    assert.match(
      e2.message,
      new RegExp(`refused the connection without an accepted client certificate`),
      e2.message,
    );
    assert.ok(e2.message.includes(`${caOnly}/${mhost}/`), e2.message);
    const withClient = await certsDir(`${dir}/certs-m2`, mhost, {
      "ca.crt": `${dir}/ca.crt`,
      "client.cert": `${dir}/client.cert`,
      "client.key": `${dir}/client.key`,
    });
    assert.equal((await tls({ certsDirs: [withClient] }).fetch(murl)).status, 200);
    // … and through the unchecked path too.
    const mUnchecked = tls({ certsDirs: [withClient], noVerifyHosts: [mhost] });
    assert.equal((await mUnchecked.fetch(murl)).status, 200);

    // A plain-http server on an https URL.
    const plainPort = freePort();
    const plain = Deno.serve(
      { hostname: "127.0.0.1", port: plainPort, onListen() {} },
      () => new Response("x"),
    );
    try {
      const e3 = await failure(tls({ certsDirs: [] }).fetch(`https://${name}:${plainPort}/v2/`));
      assert.match(e3.message, /does not speak TLS on that port/);
      assert.match(e3.message, new RegExp(`--insecure-registry ${name}:${plainPort}`));
    } finally {
      await plain.shutdown();
    }

    // Broken certs.d directories.
    const broken = `${dir}/certs-broken`;
    await Deno.mkdir(`${broken}/${host}`, { recursive: true });
    await Deno.copyFile(`${dir}/client.cert`, `${broken}/${host}/client.cert`);
    await assert.rejects(
      () => hostTlsConfig(host, { certsDirs: [broken] }),
      (e: Error) =>
        e instanceof TlsConfigError &&
        /client certificate without its key \(client\.key\)/.test(e.message),
    );
    await Deno.rename(`${broken}/${host}/client.cert`, `${broken}/${host}/lonely.key`);
    await assert.rejects(
      () => hostTlsConfig(host, { certsDirs: [broken] }),
      /client key without its certificate/,
    );
  } finally {
    for (const c of clients) c.close();
    await open.stop();
    await mtls.stop();
    await removeHostsLine(hostsLine);
    await Deno.remove(dir, { recursive: true });
  }
  assert.ok(!(await Deno.readTextFile(HOSTS)).includes(name), "the /etc/hosts line is gone");
});
