/**
 * Adapting nodes of crfs's tree (fs/) to the listing interface of `crfs ls`.
 *
 * @module
 */
import type { FsNode } from "../fs/node.ts";
import type { ListItem } from "./listing.ts";

/** A tree node as a listing item, with lazily loaded children for directories. */
export function fsListItem(name: string, node: FsNode): ListItem {
  return {
    name,
    attr: node.attr(),
    children: node.list
      ? async () => (await node.list!()).map(([n, c]) => fsListItem(n, c))
      : undefined,
  };
}
