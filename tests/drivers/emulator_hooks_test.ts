/**
 * No environment variable redirects real registry traffic: `$CRFS_GCR_URL`, `$CRFS_ICR_URL` and
 * `$CRFS_IBM_IAM_URL` (test hooks of old) are ignored; emulators are wired only through the
 * drivers' explicit constructor options, which only tests set.
 *
 * @module
 */
import assert from "node:assert/strict";
import { GcrDriver } from "../../drivers/gcr.ts";
import { IAM_TOKEN_URL, IcrDriver } from "../../drivers/icr.ts";
import { defaultDrivers } from "../../drivers/mod.ts";

Deno.test("CRFS_GCR_URL, CRFS_ICR_URL and CRFS_IBM_IAM_URL do not redirect traffic", () => {
  const vars = {
    CRFS_GCR_URL: "http://127.0.0.1:9/gcr",
    CRFS_ICR_URL: "http://127.0.0.1:9/icr",
    CRFS_IBM_IAM_URL: "http://127.0.0.1:9/iam",
  };
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    const drivers = defaultDrivers({ dockerConfig: false });
    const gcr = drivers.forHost("gcr.io") as GcrDriver;
    const icr = drivers.forHost("us.icr.io") as IcrDriver;
    assert.equal(gcr.name, "gcr");
    assert.equal(icr.name, "icr");
    assert.equal(gcr.origin("gcr.io"), "https://gcr.io");
    assert.equal(icr.origin("us.icr.io"), "https://us.icr.io");
    assert.equal(icr.icr.iamUrl, IAM_TOKEN_URL);
    // The explicit options still wire an emulator.
    const wired = defaultDrivers({
      dockerConfig: false,
      gcrUrl: "http://127.0.0.1:1234",
      icrUrl: "http://127.0.0.1:1235",
      iamUrl: "http://127.0.0.1:1236/identity/token",
    });
    assert.equal((wired.forHost("gcr.io") as GcrDriver).origin("gcr.io"), "http://127.0.0.1:1234");
    const wiredIcr = wired.forHost("us.icr.io") as IcrDriver;
    assert.equal(wiredIcr.origin("us.icr.io"), "http://127.0.0.1:1235");
    assert.equal(wiredIcr.icr.iamUrl, "http://127.0.0.1:1236/identity/token");
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  }
});
