/* hwm.c - the broker's high-water mark file: two checksummed slots written in turn */
#include "hwm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "accord/keys.h"

#define HWM_SLOT_BYTES 192 /* one mark, a line of text padded with spaces */
#define HWM_SLOTS      2   /* written in turn: a torn write spoils only the newer */
#define HWM_SUM_BYTES  16
#define HWM_SUM_HEX    ((size_t)2 * HWM_SUM_BYTES)
#define HWM_HASH_HEX   ((size_t)2 * ACC_LOGROW_HASH_BYTES)
#define HWM_PREFIX     "accordd-hwm v1 seq="

/* The file holds two fixed-size slots, written alternately in place with pwrite:
 * a rename per commit costs 150-570 us on ext4 (measured), a pwrite a few us. A
 * slot carries a BLAKE2b checksum, so a write torn by a crash is recognised and
 * the other slot, one commit older, is used. */
struct hwm_t {
    char *dir;
    char *path;
    int dir_fd;         /* to sync the directory entry once, when the file is created */
    int fd;             /* -1 until the first write */
    uint64_t next_slot; /* the slot the next write goes to */
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
    self->dir_fd = fd;
    self->fd = -1;
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
    if (self->fd >= 0) {
        (void)close(self->fd);
    }
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

/* The checksum of a slot's text up to " sum=", as hex. */
static void s_sum(char out[HWM_SUM_HEX + 1], const char *text, size_t len)
{
    uint8_t sum[HWM_SUM_BYTES];
    (void)crypto_generichash(sum, sizeof(sum), (const uint8_t *)text, len, NULL, 0);
    acc_hex_encode(out, HWM_SUM_HEX + 1, sum, sizeof(sum));
}

/* Formats mark into one slot: the text, " sum=HEX", spaces, and a newline. */
static void s_format(char slot[HWM_SLOT_BYTES], const hwm_mark_t *mark)
{
    char hex[2 * ACC_LOGROW_HASH_BYTES + 1];
    acc_hex_encode(hex, sizeof(hex), mark->hash, sizeof(mark->hash));
    char text[HWM_SLOT_BYTES];
    int len = snprintf(text, sizeof(text), HWM_PREFIX "%lld epoch=%lld hash=%s",
                       (long long)mark->seq, (long long)mark->epoch, hex);
    acc_assert(len > 0 && (size_t)len < sizeof(text));
    char sum[HWM_SUM_HEX + 1];
    s_sum(sum, text, (size_t)len);
    memset(slot, ' ', HWM_SLOT_BYTES);
    int all = snprintf(slot, HWM_SLOT_BYTES, "%s sum=%s", text, sum);
    acc_assert(all > 0 && (size_t)all < HWM_SLOT_BYTES - 1);
    slot[all] = ' '; /* snprintf's NUL: the padding continues */
    slot[HWM_SLOT_BYTES - 1] = '\n';
}

/* Parses one slot; false when it is not a whole, intact mark. */
static bool s_parse_slot(hwm_mark_t *out, const char *slot)
{
    char text[HWM_SLOT_BYTES + 1];
    memcpy(text, slot, HWM_SLOT_BYTES);
    text[HWM_SLOT_BYTES] = '\0';
    const char *sum_at = strstr(text, " sum=");
    if (strncmp(text, HWM_PREFIX, strlen(HWM_PREFIX)) != 0 || sum_at == NULL ||
        text[HWM_SLOT_BYTES - 1] != '\n') {
        return false;
    }
    char want[HWM_SUM_HEX + 1];
    s_sum(want, text, (size_t)(sum_at - text));
    if (strncmp(sum_at + 5, want, HWM_SUM_HEX) != 0) {
        return false;
    }
    const char *p = text + strlen(HWM_PREFIX);
    out->seq = s_number(&p);
    bool ok = out->seq >= 0 && strncmp(p, " epoch=", 7) == 0;
    p += ok ? 7 : 0;
    out->epoch = ok ? s_number(&p) : -1;
    ok = ok && out->epoch >= 0 && strncmp(p, " hash=", 6) == 0 && p + 6 + HWM_HASH_HEX == sum_at;
    char hex[HWM_HASH_HEX + 1] = "";
    if (ok) {
        memcpy(hex, p + 6, HWM_HASH_HEX);
    }
    acc_err_t ignored;
    return ok && acc_hex_decode(out->hash, sizeof(out->hash), hex, &ignored) == ACC_OK;
}

static acc_rc_t s_read_fd(int fd, char *buf, size_t cap, size_t *len, const char *path,
                          acc_err_t *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return acc_err_set(err, ACC_ERR_INVALID, "state file \"%s\" is not a regular file", path);
    }
    *len = 0;
    while (*len < cap) {
        ssize_t got = read(fd, buf + *len, cap - *len);
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
        *len += (size_t)got;
    }
    return ACC_OK;
}

/* The newer intact slot of what was read; *slot_out is its index. */
static bool s_newest(const char *buf, size_t len, hwm_mark_t *out, uint64_t *slot_out)
{
    bool found = false;
    for (size_t i = 0; i < HWM_SLOTS && (i + 1) * HWM_SLOT_BYTES <= len; i++) {
        hwm_mark_t m = { 0 };
        if (s_parse_slot(&m, buf + i * HWM_SLOT_BYTES) && (!found || m.seq > out->seq)) {
            *out = m;
            *slot_out = i;
            found = true;
        }
    }
    return found;
}

static acc_rc_t s_read_path(const char *path, hwm_mark_t *out, bool *found, uint64_t *slot,
                            acc_err_t *err)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        return ACC_OK;
    }
    if (fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not open state file \"%s\": %s", path,
                           strerror(errno));
    }
    char buf[HWM_SLOTS * HWM_SLOT_BYTES];
    size_t len = 0;
    acc_rc_t rc = s_read_fd(fd, buf, sizeof(buf), &len, path, err);
    (void)close(fd);
    if (rc != ACC_OK || len == 0) {
        return rc; /* empty: a crash before the first write reached the disk */
    }
    *found = s_newest(buf, len, out, slot);
    if (!*found) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "state file \"%s\" holds no intact high-water mark (not written by "
                           "accordd, or damaged)",
                           path);
    }
    return ACC_OK;
}

acc_rc_t hwm_read(const hwm_t *self, hwm_mark_t *out, bool *found, acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    *found = false;
    uint64_t slot = 0;
    return s_read_path(self->path, out, found, &slot, err);
}

/* Opens the file for writing on first use; the next write goes to the slot
 * after the newest intact one, so the newest survives a torn write. */
static acc_rc_t s_open_for_write(hwm_t *self, acc_err_t *err)
{
    hwm_mark_t m;
    bool found = false;
    uint64_t slot = 0;
    acc_rc_t rc = s_read_path(self->path, &m, &found, &slot, err);
    if (rc != ACC_OK && rc != ACC_ERR_INVALID) {
        return rc;
    }
    self->next_slot = found ? slot + 1 : 0;
    self->fd = open(self->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (self->fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not open state file \"%s\": %s", self->path,
                           strerror(errno));
    }
    struct stat st;
    if (fstat(self->fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077) != 0) {
        (void)close(self->fd);
        self->fd = -1;
        return acc_err_set(err, ACC_ERR_PERMISSION,
                           "state file \"%s\" must be a regular file of this user's, mode 0600",
                           self->path);
    }
    if (fsync(self->dir_fd) != 0) { /* the new file's name, once */
        return acc_err_set(err, ACC_ERR_IO, "could not sync state directory \"%s\": %s", self->dir,
                           strerror(errno));
    }
    return ACC_OK;
}

acc_rc_t hwm_write(hwm_t *self, const hwm_mark_t *mark, bool sync, acc_err_t *err)
{
    if (self->fd < 0) {
        acc_rc_t rc = s_open_for_write(self, err);
        if (rc != ACC_OK) {
            return rc;
        }
    }
    char slot[HWM_SLOT_BYTES];
    s_format(slot, mark);
    off_t at = (off_t)((self->next_slot % HWM_SLOTS) * HWM_SLOT_BYTES);
    ssize_t n = pwrite(self->fd, slot, sizeof(slot), at);
    bool ok = n == (ssize_t)sizeof(slot) && (!sync || fdatasync(self->fd) == 0);
    if (!ok) {
        return acc_err_set(err, ACC_ERR_IO, "could not write state file \"%s\": %s", self->path,
                           n >= 0 && n < (ssize_t)sizeof(slot) ? "short write" : strerror(errno));
    }
    self->next_slot++;
    return ACC_OK;
}
