/**
 * A small Docker-registry token server for tests, in the shape Docker's token authentication
 * specification describes: `GET /token?service=…&scope=…` with optional Basic credentials, and
 * `POST /token` with an OAuth2 `refresh_token` grant (what `identitytoken`s use). It issues RS256
 * JWTs that docker-registry verifies through the `x5c` header against its
 * `auth.token.rootcertbundle`; the signing key and its self-signed X.509 certificate are made
 * here with WebCrypto and a few lines of DER, so no `openssl` is needed.
 *
 * Requests are recorded (user, scopes, grant type — never passwords) for assertions.
 *
 * @module
 */
import { concat } from "../../format/bytes.ts";

/** Options of {@link startTokenServer}. */
export interface TokenServerOptions {
  /** user → password. */
  users: Record<string, string>;
  /** The registry's `auth.token.service`. */
  service: string;
  /** The registry's `auth.token.issuer`. */
  issuer: string;
  /** Listen address; default 127.0.0.1. */
  hostname?: string;
  /** Actions anonymous clients get on repositories; default none (an empty token). */
  anonymousActions?: string[];
  /** refresh token → user, for the OAuth2 refresh_token grant. */
  refreshTokens?: Record<string, string>;
  /** `expires_in` sent; default 300. Omitted from the response when 0. */
  expiresIn?: number;
  /** Which field carries the token; default both `token` and `access_token`. */
  tokenField?: "token" | "access_token" | "both";
  /**
   * Seconds the JWT itself is valid (its `exp`), when it should differ from `expires_in`: a
   * token that the registry rejects before the client expects it to expire.
   */
  jwtLifetime?: number;
}

/** One request to the token server. */
export interface TokenRequestRecord {
  method: string;
  /** Authenticated user, or undefined for anonymous requests. */
  user?: string;
  /** `basic`, `refresh_token` or `anonymous`. */
  via: "basic" | "refresh_token" | "anonymous";
  scopes: string[];
  service?: string;
  /** HTTP status answered. */
  status: number;
}

/** A running token server. */
export interface TokenServer {
  /** The realm URL, e.g. `http://127.0.0.1:PORT/token`. */
  realm: string;
  /** PEM of the signing certificate (the registry's root cert bundle). */
  certPem: string;
  /** Requests seen so far. */
  requests: TokenRequestRecord[];
  /** Stops listening. */
  stop(): Promise<void>;
}

// ---- DER / X.509 ----

function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

function der(tag: number, ...parts: Uint8Array[]): Uint8Array {
  const body = concat(parts);
  return concat([Uint8Array.of(tag), derLength(body.length), body]);
}

const seq = (...parts: Uint8Array[]) => der(0x30, ...parts);

function derOid(oid: string): Uint8Array {
  const arcs = oid.split(".").map(Number);
  const out = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const chunk = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) {
      chunk.unshift(0x80 | (v & 0x7f));
    }
    out.push(...chunk);
  }
  return der(0x06, Uint8Array.from(out));
}

function derUtcTime(d: Date): Uint8Array {
  const p = (n: number) => String(n).padStart(2, "0");
  const s = `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}` +
    `${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  return der(0x17, new TextEncoder().encode(s));
}

function derName(cn: string): Uint8Array {
  return seq(der(0x31, seq(derOid("2.5.4.3"), der(0x0c, new TextEncoder().encode(cn)))));
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function base64url(bytes: Uint8Array | string): string {
  const b = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  return base64(b).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** An RSA signing key and a self-signed certificate (DER) for it. */
export interface SigningKey {
  privateKey: CryptoKey;
  /** PKCS#8 PEM of the private key (e.g. for a TLS test server). */
  keyPem: string;
  certDer: Uint8Array;
  certPem: string;
}

/** Generates an RS256 key pair and a self-signed X.509 v3 certificate for it (valid for a day). */
export async function makeSigningKey(cn = "crfs-test-token-issuer"): Promise<SigningKey> {
  const alg = {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: Uint8Array.of(1, 0, 1),
    hash: "SHA-256",
  };
  const pair = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]) as CryptoKeyPair;
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const sigAlg = seq(derOid("1.2.840.113549.1.1.11"), Uint8Array.of(0x05, 0x00));
  const serial = crypto.getRandomValues(new Uint8Array(8));
  serial[0] &= 0x7f;
  serial[0] |= 0x01;
  const now = Date.now();
  const tbs = seq(
    der(0xa0, der(0x02, Uint8Array.of(2))),
    der(0x02, serial),
    sigAlg,
    derName(cn),
    seq(derUtcTime(new Date(now - 3600_000)), derUtcTime(new Date(now + 86400_000))),
    derName(cn),
    spki,
  );
  const sig = new Uint8Array(
    await crypto.subtle.sign(alg.name, pair.privateKey, tbs as Uint8Array<ArrayBuffer>),
  );
  const certDer = seq(tbs, sigAlg, der(0x03, Uint8Array.of(0), sig));
  const pem = (label: string, bytes: Uint8Array) =>
    `-----BEGIN ${label}-----\n${
      base64(bytes).replace(/.{64}/g, "$&\n").replace(/\n?$/, "\n")
    }-----END ${label}-----\n`;
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  return {
    privateKey: pair.privateKey,
    keyPem: pem("PRIVATE KEY", pkcs8),
    certDer,
    certPem: pem("CERTIFICATE", certDer),
  };
}

/** Signs an RS256 JWT with the certificate in its `x5c` header. */
export async function signJwt(key: SigningKey, claims: Record<string, unknown>): Promise<string> {
  const header = { typ: "JWT", alg: "RS256", x5c: [base64(key.certDer)] };
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  const sig = await crypto.subtle.sign(
    "RSASSA-PKCS1-v1_5",
    key.privateKey,
    new TextEncoder().encode(input),
  );
  return `${input}.${base64url(new Uint8Array(sig))}`;
}

function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  // type:name:actions, where name may itself contain ':' (a port in a registry name).
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first < 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(",").filter(Boolean),
  };
}

/** Starts the token server; see the module documentation. */
export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const key = await makeSigningKey();
  const requests: TokenRequestRecord[] = [];
  const hostname = options.hostname ?? "127.0.0.1";
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname !== "/token") return new Response("not found", { status: 404 });
    let user: string | undefined;
    let via: TokenRequestRecord["via"] = "anonymous";
    let scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" ")).filter(Boolean);
    let service = url.searchParams.get("service") ?? undefined;
    const record = (status: number) =>
      requests.push({ method: req.method, user, via, scopes, service, status });
    if (req.method === "POST") {
      const form = new URLSearchParams(await req.text());
      service = form.get("service") ?? service;
      scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
      if (form.get("grant_type") !== "refresh_token") {
        record(400);
        return Response.json({ error: "unsupported_grant_type" }, { status: 400 });
      }
      via = "refresh_token";
      user = options.refreshTokens?.[form.get("refresh_token") ?? ""];
      if (!user) {
        record(401);
        return Response.json({ error: "invalid_grant" }, { status: 401 });
      }
    } else {
      const auth = req.headers.get("authorization");
      if (auth) {
        const m = /^Basic\s+(.+)$/i.exec(auth);
        const decoded = m ? atob(m[1]) : "";
        const colon = decoded.indexOf(":");
        const name = decoded.slice(0, colon);
        if (
          !m || colon < 0 || options.users[name] === undefined ||
          options.users[name] !== decoded.slice(colon + 1)
        ) {
          record(401);
          return Response.json({
            errors: [{ code: "UNAUTHORIZED", message: "invalid username or password" }],
          }, {
            status: 401,
            headers: { "www-authenticate": 'Basic realm="crfs-test-token"' },
          });
        }
        user = name;
        via = "basic";
      }
    }
    if (service !== options.service) {
      record(400);
      return Response.json({ errors: [{ code: "UNSUPPORTED", message: "unknown service" }] }, {
        status: 400,
      });
    }
    const access = [];
    for (const s of scopes) {
      const parsed = parseScope(s);
      if (!parsed) continue;
      const granted = user !== undefined
        ? parsed.actions
        : parsed.actions.filter((a) =>
          (options.anonymousActions ?? []).includes(a) && parsed.type === "repository"
        );
      if (granted.length) access.push({ type: parsed.type, name: parsed.name, actions: granted });
    }
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = options.expiresIn ?? 300;
    const token = await signJwt(key, {
      iss: options.issuer,
      sub: user ?? "",
      aud: options.service,
      exp: now + (options.jwtLifetime ?? (expiresIn || 60)),
      nbf: now - 10,
      iat: now,
      jti: crypto.randomUUID(),
      access,
    });
    record(200);
    const field = options.tokenField ?? "both";
    const body: Record<string, unknown> = { issued_at: new Date(now * 1000).toISOString() };
    if (expiresIn) body.expires_in = expiresIn;
    if (field !== "access_token") body.token = token;
    if (field !== "token") body.access_token = token;
    return Response.json(body);
  };
  const server = Deno.serve({ hostname, port: 0, onListen() {} }, handler);
  const addr = server.addr as Deno.NetAddr;
  return {
    realm: `http://${hostname}:${addr.port}/token`,
    certPem: key.certPem,
    requests,
    async stop() {
      await server.shutdown();
    },
  };
}
