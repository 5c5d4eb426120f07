// common/fileio.h: files written beside their final name and renamed into place, without ever
// opening a name someone else could have planted. A temporary file is created exclusively
// (O_CREAT|O_EXCL|O_NOFOLLOW, through mkostemp) under a fresh name, PATH.tmp.XXXXXX: a symlink or a
// FIFO left at PATH.tmp (or at any other name) is never followed or opened, and two writers of the
// same PATH each get their own temporary file, so a rename puts one whole file in place, never a mix.
#ifndef COMMON_FILEIO_H
#define COMMON_FILEIO_H

#include <stddef.h>
#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

// Creates PATH.tmp.XXXXXX (a new name, exclusively; mode 0666 less the umask, like fopen's), open for
// writing. Returns its descriptor (close-on-exec) with the name in tmp, or -1 with errno set.
int fileio_create_temp(const char* path, char* tmp, size_t n);
// Removes PATH.tmp.XXXXXX files left by a writer that died before its rename (unlink: a planted
// symlink is removed, never followed). Call only while no one else writes PATH (e.g. under a lock).
void fileio_remove_stale_temps(const char* path);
// The kind of a file that is not a regular one, in words ("a directory", "a character device", ...).
const char* fileio_kind(mode_t m);
// fsync the directory that holds path, so that a rename in it survives a power loss.
void fileio_sync_dir(const char* path);

#ifdef __cplusplus
}
#endif

#endif
