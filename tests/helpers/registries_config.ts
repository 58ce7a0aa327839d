/**
 * A parsed registries.conf for tests of short names: only `unqualified-search-registries` and
 * `[aliases]` set, podman's credential lookup, no `[[registry]]` tables.
 *
 * @module
 */
import type { RegistriesConfig } from "../../drivers/registries_conf.ts";

/** A registries.conf of search registries `search` and short-name `aliases`. */
export const shortNameConfig = (
  search: string[],
  aliases: Record<string, string> = {},
): RegistriesConfig => ({
  registries: [],
  unqualifiedSearchRegistries: search,
  credentialHelpers: ["containers-auth.json"],
  aliases,
  files: [],
} as unknown as RegistriesConfig);
