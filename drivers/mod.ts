/**
 * The registry layer of crfs: image references, the HTTP client and authentication, the
 * {@link Driver} interface with the built-in drivers (Docker v2 as the fallback, GCR, ICR and
 * the `local` pseudo-registry), OCI image layouts and docker archives as drivers, and {@link defaultDrivers} to set it all up.
 *
 * ```ts
 * const drivers = defaultDrivers({ insecureRegistries: ["registry.lan:5000"] });
 * const ref = parseReference("ubuntu:24.04");
 * const driver = drivers.forHost(ref.host);
 * const { manifest } = await driver.resolve(ref);
 * const layer = await driver.blob(ref, manifest.json.layers[0].digest, manifest.json.layers[0].size);
 * const bytes = await layer.read(0, 4096);
 * ```
 *
 * A new kind of registry is one file here implementing the capabilities of capabilities.ts
 * (`DriverIdentity`, `ManifestReader` and `BlobReader`; `Lister`, `Pusher` and `Pinger` where it
 * can), added to {@link defaultDrivers} (default_drivers.ts); one `driverSuite` call in
 * tests/conformance/drivers_test.ts proves it.
 *
 * @module
 */
export * from "./reference.ts";
export * from "./errors.ts";
export * from "./digest.ts";
export * from "./digester.ts";
export {
  HttpClient,
  type HttpOptions,
  type HttpRequest,
  isLoopbackHost,
  readBody,
  readJson,
  redactText,
  redactUrl,
  responseError,
  RetryableError,
} from "./http.ts";
export * from "./auth.ts";
export * from "./manifest.ts";
export * from "./driver.ts";
export * from "./blob_source.ts";
export * from "./docker_v2.ts";
export * from "./gcr.ts";
export * from "./icr.ts";
export * from "./local.ts";
export * from "./oci_layout_driver.ts";
export * from "./docker_archive.ts";

export { defaultDrivers } from "./default_drivers.ts";
