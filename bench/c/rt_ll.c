/*
 * The C side of bench/fuse_roundtrip.ts: a libfuse3 low-level filesystem with one empty root
 * directory that answers GETXATTR with ENODATA, LOOKUP with ENOENT and GETATTR of the root,
 * served by libfuse's single-threaded loop (or its multi-threaded one with "-mt").
 * Usage: rt_ll MOUNTPOINT [-mt]. Prints "ready" once mounted; unmount to end it.
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void root_attr(struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = 1;
  st->st_mode = S_IFDIR | 0755;
  st->st_nlink = 2;
}

static void on_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  (void)parent;
  (void)name;
  fuse_reply_err(req, ENOENT);
}

static void on_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  struct stat st;
  if (ino != 1) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  root_attr(&st);
  fuse_reply_attr(req, &st, 0.0);
}

static void on_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  (void)ino;
  (void)name;
  (void)size;
  fuse_reply_err(req, ENODATA);
}

static const struct fuse_lowlevel_ops ops = {
  .lookup = on_lookup,
  .getattr = on_getattr,
  .getxattr = on_getxattr,
};

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: rt_ll MOUNTPOINT [-mt]\n");
    return 2;
  }
  int mt = argc > 2 && strcmp(argv[2], "-mt") == 0;
  char *fargv[] = {argv[0], "-o", "ro,fsname=rt_ll", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
  struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
  if (se == NULL) return 1;
  if (fuse_session_mount(se, argv[1]) != 0) return 1;
  printf("ready\n");
  fflush(stdout);
  int rc;
  if (mt) {
    struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = 10};
    rc = fuse_session_loop_mt(se, &cfg);
  } else {
    rc = fuse_session_loop(se);
  }
  fuse_session_unmount(se);
  fuse_session_destroy(se);
  return rc < 0 ? 1 : 0;
}
