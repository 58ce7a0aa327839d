/**
 * Adapting nodes of crfs's tree (fs/) to the listing interface of `crfs ls`.
 *
 * @module
 */
import type { FsNode } from "../fs/node.ts";
import type { ListItem } from "./listing.ts";

/** A tree node as a listing item, with lazily loaded children for directories. */
export async function fsListItem(name: string, node: FsNode): Promise<ListItem> {
  const a = node.attr();
  return {
    name,
    node: {
      type: a.kind,
      mode: a.mode,
      nlink: a.nlink,
      uid: a.uid,
      gid: a.gid,
      userName: a.userName ?? "",
      groupName: a.groupName ?? "",
      size: a.size,
      mtimeSec: a.mtimeSec,
      mtimeNsec: a.mtimeNsec,
      linkName: node.readlink ? await node.readlink() : "",
      devMajor: a.devMajor,
      devMinor: a.devMinor,
      xattrs: node.xattrs?.(),
    },
    children: node.list
      ? async () => await Promise.all((await node.list!()).map(([n, c]) => fsListItem(n, c)))
      : undefined,
  };
}
