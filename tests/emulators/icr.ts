/**
 * An emulator of IBM Cloud Container Registry and IBM Cloud IAM, for tests. Written from IBM's
 * public API documentation (the Container Registry API v1 reference — `GET /api/v1/namespaces`,
 * `GET /api/v1/images` with its `namespace`/`repository` parameters and `RepoTags`,
 * `RepoDigests`, `DigestTags` fields, the `Account` header — the IAM "create an access token
 * from an API key" reference, and the registry's `iamapikey` login), not from any client's code:
 *
 * - `POST /identity/token` (form `grant_type=urn:ibm:params:oauth:grant-type:apikey`,
 *   `apikey=…`) → `{access_token, refresh_token, token_type, expires_in, expiration}`; a wrong
 *   key → 400 with IAM's error shape.
 * - `/api/v1/…` needs `Authorization: Bearer <IAM token>` and, when configured, the `Account`
 *   header.
 * - `/v2/…` needs Basic `iamapikey:<key>` (a `Basic` challenge otherwise) and is passed to a real
 *   docker-registry (the backend) holding the images.
 *
 * @module
 */
import { backendCatalog, backendManifest, backendTags, forward } from "./registry_backend.ts";

/** Options of {@link startIcrEmulator}. */
export interface IcrEmulatorOptions {
  /** The backend registry URL. */
  backend: string;
  /** The valid API key. */
  apiKey: string;
  /** When set, `/api/v1` requests must carry this `Account` header. */
  account?: string;
  /** Host name used in `RepoTags` (e.g. `us.icr.io`); default the emulator's own. */
  registryHost?: string;
  /** `expires_in` of IAM tokens; default 3600. */
  tokenExpiresIn?: number;
  hostname?: string;
}

/** A running ICR emulator. */
export interface IcrEmulator {
  /** `http://127.0.0.1:PORT`: the driver's `icrUrl`. */
  url: string;
  /** The IAM token endpoint: the driver's `iamUrl`. */
  iamUrl: string;
  host: string;
  /** Requests so far (never the API key). */
  requests: { method: string; path: string; account?: string; auth?: string }[];
  /** IAM tokens issued. */
  tokensIssued: number;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts the emulator; see the module documentation. */
export function startIcrEmulator(options: IcrEmulatorOptions): IcrEmulator {
  const hostname = options.hostname ?? "127.0.0.1";
  const tokens = new Set<string>();
  let self = "";
  const emu: IcrEmulator = {
    url: "",
    iamUrl: "",
    host: "",
    requests: [],
    tokensIssued: 0,
    stop: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => emu.stop(),
  };
  const unauthorized = (message: string) =>
    Response.json({ code: "CRG0100E", message }, { status: 401 });

  async function images(url: URL): Promise<Response> {
    const namespace = url.searchParams.get("namespace");
    const repository = url.searchParams.get("repository");
    const display = options.registryHost ?? self;
    const out = [];
    for (const repo of await backendCatalog(options.backend)) {
      const ns = repo.split("/")[0];
      if (namespace && ns !== namespace) continue;
      if (repository && repo !== repository && !repo.endsWith(`/${repository}`)) continue;
      const byDigest = new Map<
        string,
        { tags: string[]; size: number; config: string; type: string }
      >();
      for (const tag of await backendTags(options.backend, repo)) {
        const m = await backendManifest(options.backend, repo, tag);
        const layers = (m.json.layers as { size: number }[] | undefined) ?? [];
        const e = byDigest.get(m.digest) ?? {
          tags: [],
          size: layers.reduce((n, l) => n + l.size, 0),
          config: (m.json.config as { digest?: string } | undefined)?.digest ?? m.digest,
          type: m.mediaType,
        };
        e.tags.push(tag);
        byDigest.set(m.digest, e);
      }
      for (const [digest, e] of byDigest) {
        out.push({
          Id: e.config,
          Created: 1700000000,
          DigestTags: { [digest]: e.tags },
          ManifestType: e.type,
          RepoDigests: [`${display}/${repo}@${digest}`],
          RepoTags: e.tags.map((t) => `${display}/${repo}:${t}`),
          Size: e.size,
          VirtualSize: e.size,
          Labels: {},
        });
      }
    }
    return Response.json(out);
  }

  const server = Deno.serve({ hostname, port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const auth = req.headers.get("authorization")?.split(" ")[0];
    emu.requests.push({
      method: req.method,
      path: url.pathname + url.search,
      ...(req.headers.get("account") ? { account: req.headers.get("account")! } : {}),
      ...(auth ? { auth } : {}),
    });
    if (url.pathname === "/identity/token" && req.method === "POST") {
      const form = new URLSearchParams(await req.text());
      if (form.get("grant_type") !== "urn:ibm:params:oauth:grant-type:apikey") {
        return Response.json({
          errorCode: "BXNIM0109E",
          errorMessage: "Property missing or empty.",
        }, { status: 400 });
      }
      if (form.get("apikey") !== options.apiKey) {
        return Response.json({
          errorCode: "BXNIM0415E",
          errorMessage: "Provided API key could not be found.",
        }, { status: 400 });
      }
      const token = `iam-${crypto.randomUUID()}`;
      tokens.add(token);
      emu.tokensIssued++;
      const expiresIn = options.tokenExpiresIn ?? 3600;
      return Response.json({
        access_token: token,
        refresh_token: "not-supported",
        token_type: "Bearer",
        expires_in: expiresIn,
        expiration: Math.floor(Date.now() / 1000) + expiresIn,
        scope: "ibm openid",
      });
    }
    if (url.pathname.startsWith("/api/v1/")) {
      const bearer = /^Bearer (.+)$/.exec(req.headers.get("authorization") ?? "")?.[1];
      if (!bearer || !tokens.has(bearer)) {
        return unauthorized("You are not authorized to access the specified resource.");
      }
      if (options.account && req.headers.get("account") !== options.account) {
        return Response.json({
          code: "CRG0020E",
          message: "You are not authorized to access the specified account.",
        }, { status: 401 });
      }
      if (url.pathname === "/api/v1/namespaces") {
        const ns = new Set((await backendCatalog(options.backend)).map((r) => r.split("/")[0]));
        return Response.json([...ns].sort());
      }
      if (url.pathname === "/api/v1/images") return await images(url);
      return Response.json({ code: "CRG0001E", message: "not found" }, { status: 404 });
    }
    if (url.pathname.startsWith("/v2/")) {
      const basic = /^Basic (.+)$/.exec(req.headers.get("authorization") ?? "")?.[1];
      if (!basic || atob(basic) !== `iamapikey:${options.apiKey}`) {
        await req.body?.cancel();
        return Response.json({
          errors: [{ code: "UNAUTHORIZED", message: "authentication required" }],
        }, {
          status: 401,
          headers: { "www-authenticate": `Basic realm="${self}"` },
        });
      }
      return await forward(req, options.backend, self);
    }
    return new Response("not found", { status: 404 });
  });
  const port = (server.addr as Deno.NetAddr).port;
  self = `${hostname}:${port}`;
  emu.url = `http://${self}`;
  emu.iamUrl = `http://${self}/identity/token`;
  emu.host = self;
  emu.stop = async () => {
    await server.shutdown();
  };
  return emu;
}
