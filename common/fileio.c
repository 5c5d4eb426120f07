// common/fileio.c: see fileio.h.
#define _GNU_SOURCE // mkostemp
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
#include <unistd.h>
#include <sys/stat.h>
#include "common/fileio.h"

int fileio_create_temp(const char* path, char* tmp, size_t n) {
    if ((size_t)snprintf(tmp, n, "%s.tmp.XXXXXX", path) >= n) { errno = ENAMETOOLONG; return -1; }
    int fd = mkostemp(tmp, O_CLOEXEC); // O_CREAT|O_EXCL: a name that exists, whatever it is, is never opened
    if (fd < 0) return -1;
    mode_t um = umask(0);
    umask(um);
    if (fchmod(fd, 0666 & ~um) != 0) { int e = errno; close(fd); unlink(tmp); errno = e; return -1; }
    return fd;
}

void fileio_remove_stale_temps(const char* path) {
    char pat[1200];
    if ((size_t)snprintf(pat, sizeof(pat), "%s.tmp.??????", path) >= sizeof(pat)) return;
    glob_t g;
    if (glob(pat, GLOB_NOSORT | GLOB_NOESCAPE, NULL, &g) != 0) return;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        struct stat st;
        if (lstat(g.gl_pathv[i], &st) == 0 && (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode) || S_ISFIFO(st.st_mode)))
            unlink(g.gl_pathv[i]);
    }
    globfree(&g);
}

const char* fileio_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO (named pipe)";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISLNK(m)) return "a symbolic link";
    return "not a regular file";
}

void fileio_sync_dir(const char* path) {
    char buf[1200];
    snprintf(buf, sizeof(buf), "%s", path);
    int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
}
