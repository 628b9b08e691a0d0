/* hwm.c - the broker's high-water mark file, replaced by write and rename */
#include "hwm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/keys.h"

#define HWM_TEXT_MAX 256
#define HWM_PREFIX   "accordd-hwm v1 seq="

struct hwm_t {
    char *dir;
    char *path;
    char *tmp_path;
    int dir_fd; /* for fsync after rename */
};

static acc_rc_t s_check_dir(int fd, const char *dir, bool writing, acc_err_t *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not examine state directory \"%s\": %s", dir,
                           strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        return acc_err_set(err, ACC_ERR_INVALID, "state directory \"%s\" is not a directory", dir);
    }
    if (writing && ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 || st.st_uid != geteuid())) {
        return acc_err_set(err, ACC_ERR_PERMISSION,
                           "state directory \"%s\" must belong to this user and be writable by "
                           "no one else (mode %04o); run chmod 700",
                           dir, (unsigned)(st.st_mode & 07777));
    }
    return ACC_OK;
}

acc_rc_t hwm_open(hwm_t **out, const char *dir, bool create, acc_err_t *err)
{
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return acc_err_set(err, ACC_ERR_IO, "could not create state directory \"%s\": %s", dir,
                           strerror(errno));
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not open state directory \"%s\": %s", dir,
                           strerror(errno));
    }
    acc_rc_t rc = s_check_dir(fd, dir, create, err);
    if (rc != ACC_OK) {
        (void)close(fd);
        return rc;
    }
    hwm_t *self = acc_xcalloc(1, sizeof(*self));
    self->dir = acc_xstrdup(dir);
    self->path = acc_xasprintf("%s/%s", dir, HWM_FILE);
    self->tmp_path = acc_xasprintf("%s/%s.tmp", dir, HWM_FILE);
    self->dir_fd = fd;
    *out = self;
    return ACC_OK;
}

void hwm_destroy(hwm_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    hwm_t *self = *self_p;
    (void)close(self->dir_fd);
    free(self->tmp_path);
    free(self->path);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

const char *hwm_path(const hwm_t *self)
{
    return self->path;
}

/* A decimal number >= 0 at *p, which is moved past it; -1 if there is none. */
static int64_t s_number(const char **p)
{
    const char *c = *p;
    int64_t v = 0;
    for (; *c >= '0' && *c <= '9' && v < INT64_MAX / 10 - 9; c++) {
        v = v * 10 + (*c - '0');
    }
    int64_t result = c == *p ? -1 : v;
    *p = c;
    return result;
}

static acc_rc_t s_parse(hwm_mark_t *out, const char *text, const char *path, acc_err_t *err)
{
    const char *p = text;
    bool ok = strncmp(p, HWM_PREFIX, strlen(HWM_PREFIX)) == 0;
    p += ok ? strlen(HWM_PREFIX) : 0;
    out->seq = ok ? s_number(&p) : -1;
    ok = ok && out->seq >= 0 && strncmp(p, " epoch=", 7) == 0;
    p += ok ? 7 : 0;
    out->epoch = ok ? s_number(&p) : -1;
    ok = ok && out->epoch >= 0 && strncmp(p, " hash=", 6) == 0;
    p += ok ? 6 : 0;
    char hex[2 * ACC_LOGROW_HASH_BYTES + 1] = "";
    if (ok && strlen(p) >= 2 * ACC_LOGROW_HASH_BYTES + 1) {
        memcpy(hex, p, 2 * ACC_LOGROW_HASH_BYTES);
        p += 2 * ACC_LOGROW_HASH_BYTES;
    }
    acc_err_t ignored;
    ok = ok && strcmp(p, "\n") == 0 &&
         acc_hex_decode(out->hash, sizeof(out->hash), hex, &ignored) == ACC_OK;
    if (!ok) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "state file \"%s\" is not in the form accordd writes (\"" HWM_PREFIX
                           "N epoch=N hash=HEX\")",
                           path);
    }
    return ACC_OK;
}

static acc_rc_t s_read_fd(int fd, char *buf, size_t cap, const char *path, acc_err_t *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return acc_err_set(err, ACC_ERR_INVALID, "state file \"%s\" is not a regular file", path);
    }
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t got = read(fd, buf + len, cap - 1 - len);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            return acc_err_set(err, ACC_ERR_IO, "could not read state file \"%s\": %s", path,
                               strerror(errno));
        }
        if (got == 0) {
            break;
        }
        len += (size_t)got;
    }
    buf[len] = '\0';
    return ACC_OK;
}

acc_rc_t hwm_read(const hwm_t *self, hwm_mark_t *out, bool *found, acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    *found = false;
    int fd = open(self->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        return ACC_OK;
    }
    if (fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not open state file \"%s\": %s", self->path,
                           strerror(errno));
    }
    char text[HWM_TEXT_MAX];
    acc_rc_t rc = s_read_fd(fd, text, sizeof(text), self->path, err);
    (void)close(fd);
    if (rc != ACC_OK || text[0] == '\0') {
        return rc;
    }
    rc = s_parse(out, text, self->path, err);
    *found = rc == ACC_OK;
    return rc;
}

static bool s_write_all(int fd, const char *text, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        done += (size_t)n;
    }
    return true;
}

acc_rc_t hwm_write(hwm_t *self, const hwm_mark_t *mark, bool sync, acc_err_t *err)
{
    char hex[2 * ACC_LOGROW_HASH_BYTES + 1];
    acc_hex_encode(hex, sizeof(hex), mark->hash, sizeof(mark->hash));
    char text[HWM_TEXT_MAX];
    int len = snprintf(text, sizeof(text), HWM_PREFIX "%lld epoch=%lld hash=%s\n",
                       (long long)mark->seq, (long long)mark->epoch, hex);
    acc_assert(len > 0 && (size_t)len < sizeof(text));
    int fd = open(self->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not write state file \"%s\": %s", self->tmp_path,
                           strerror(errno));
    }
    bool ok = s_write_all(fd, text, (size_t)len) && (!sync || fsync(fd) == 0);
    ok = close(fd) == 0 && ok;
    ok = ok && rename(self->tmp_path, self->path) == 0;
    ok = ok && (!sync || fsync(self->dir_fd) == 0);
    if (!ok) {
        return acc_err_set(err, ACC_ERR_IO, "could not write state file \"%s\": %s", self->path,
                           strerror(errno));
    }
    return ACC_OK;
}
