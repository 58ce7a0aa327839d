/**
 * {@link defaultDrivers}: the built-in drivers set up together (drivers/mod.ts re-exports it).
 * Importing this module rather than the barrel mod.ts keeps the OCI layout and docker archive
 * drivers (and the tar reader under them) out of what `crfs mount` loads before it is up.
 *
 * @module
 */
import { createContext, type DriverOptions, DriverRegistry } from "./driver.ts";
import { DockerV2Driver } from "./docker_v2.ts";
import { GcrDriver } from "./gcr.ts";
import { IcrDriver } from "./icr.ts";
import { LocalDriver } from "./local.ts";

/**
 * The built-in drivers sharing one HTTP client and authenticator: `local`, GCR, ICR, and the
 * Docker v2 driver for every other host. Register user drivers on the result
 * (`register`, `load(path)`) or process-wide with `registerDriver`.
 *
 * @example
 * ```ts
 * const drivers = defaultDrivers({ insecureRegistries: ["registry.lan:5000"] });
 * const { manifest } = await drivers.forHost("registry.lan:5000").resolve(
 *   { host: "registry.lan:5000", repository: "app", tag: "v1" },
 * );
 * ```
 */
export function defaultDrivers(options: DriverOptions = {}): DriverRegistry {
  const ctx = createContext(options);
  const v2 = { catalogPageSize: options.catalogPageSize };
  const builtin = [
    new LocalDriver({ localDir: options.localDir }),
    new GcrDriver(ctx, { ...v2, gcrUrl: options.gcrUrl, gcrProject: options.gcrProject }),
    new IcrDriver(ctx, {
      ...v2,
      icrUrl: options.icrUrl,
      iamUrl: options.iamUrl,
      icrApiKey: options.icrApiKey,
      icrAccount: options.icrAccount,
    }),
  ];
  return new DriverRegistry(builtin, new DockerV2Driver(ctx, v2), ctx);
}
