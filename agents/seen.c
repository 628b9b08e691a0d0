/* seen.c - a bounded set of share ids: a ring of the newest ids, a
 * linear-probing index over it, and an append-only journal on disk */
#include "seen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accord/log.h"

#define ID_BYTES   ACC_LOGROW_SHARE_BYTES
#define EMPTY      UINT32_MAX
#define LINE_CHARS 37 /* a formatted uuid and its newline */

struct seen_t {
    uint8_t (*ring)[ID_BYTES]; /* the ids, oldest at head once full */
    uint32_t *table;           /* ring positions, EMPTY where unused */
    size_t keep;               /* ring capacity */
    size_t mask;               /* table size - 1: a power of two, at most half full */
    size_t head;               /* next ring position to write */
    size_t count;
    char *path;     /* the journal, NULL in memory-only mode */
    int fd;         /* appends to the journal */
    size_t on_disk; /* ids in the journal, which is compacted when it doubles */
};

static size_t s_home(const seen_t *self, const uint8_t *id)
{
    uint64_t h = 0;
    memcpy(&h, id, sizeof(h));
    return (size_t)((h * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & self->mask;
}

static size_t s_find_slot(const seen_t *self, const uint8_t *id)
{
    size_t i = s_home(self, id);
    while (self->table[i] != EMPTY && memcmp(self->ring[self->table[i]], id, ID_BYTES) != 0) {
        i = (i + 1) & self->mask;
    }
    return i;
}

/* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
static void s_unindex(seen_t *self, const uint8_t *id)
{
    size_t i = s_find_slot(self, id);
    if (self->table[i] == EMPTY) {
        return;
    }
    size_t j = i;
    for (;;) {
        j = (j + 1) & self->mask;
        if (self->table[j] == EMPTY) {
            break;
        }
        size_t k = s_home(self, self->ring[self->table[j]]);
        /* the entry at j may move to i only if its home is not in (i, j] */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            self->table[i] = self->table[j];
            i = j;
        }
    }
    self->table[i] = EMPTY;
}

static void s_remember(seen_t *self, const uint8_t *id)
{
    if (seen_has(self, id)) {
        return;
    }
    if (self->count == self->keep) {
        s_unindex(self, self->ring[self->head]);
        self->count--;
    }
    memcpy(self->ring[self->head], id, ID_BYTES);
    self->table[s_find_slot(self, id)] = (uint32_t)self->head;
    self->head = (self->head + 1) % self->keep;
    self->count++;
}

static acc_rc_t s_load(seen_t *self, acc_err_t *err)
{
    FILE *f = fopen(self->path, "r");
    if (f == NULL) {
        return errno == ENOENT ? ACC_OK
                               : acc_err_set(err, ACC_ERR_IO, "could not read \"%s\": %s",
                                             self->path, strerror(errno));
    }
    char line[128];
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line);
        uint8_t id[ID_BYTES];
        acc_err_t ignored;
        if (len != LINE_CHARS || line[len - 1] != '\n') {
            continue; /* a line torn by a crash was never acknowledged */
        }
        line[len - 1] = '\0';
        if (acc_uuid_parse(id, line, &ignored) == ACC_OK) {
            s_remember(self, id);
            self->on_disk++;
        }
    }
    (void)fclose(f);
    return ACC_OK;
}

static acc_rc_t s_open_append(seen_t *self, acc_err_t *err)
{
    self->fd = open(self->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (self->fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not open \"%s\": %s", self->path,
                           strerror(errno));
    }
    return ACC_OK;
}

acc_rc_t seen_open(seen_t **out, const char *path, size_t keep, acc_err_t *err)
{
    acc_assert(keep > 0 && keep < UINT32_MAX / 4);
    seen_t *self = acc_xcalloc(1, sizeof(*self));
    self->keep = keep;
    size_t table_size = 2;
    while (table_size < 2 * keep) {
        table_size *= 2;
    }
    self->mask = table_size - 1;
    self->ring = acc_xcalloc(keep, sizeof(*self->ring));
    self->table = acc_xmalloc(table_size * sizeof(*self->table));
    memset(self->table, 0xff, table_size * sizeof(*self->table));
    self->fd = -1;
    acc_rc_t rc = ACC_OK;
    if (path != NULL) {
        self->path = acc_xstrdup(path);
        rc = s_load(self, err);
        if (rc == ACC_OK) {
            rc = s_open_append(self, err);
        }
    }
    if (rc != ACC_OK) {
        seen_destroy(&self);
        return rc;
    }
    *out = self;
    return ACC_OK;
}

void seen_destroy(seen_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    seen_t *self = *self_p;
    if (self->fd >= 0) {
        (void)close(self->fd);
    }
    free(self->path);
    free(self->table);
    free(self->ring);
    free(self);
    *self_p = NULL;
}

bool seen_has(const seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES])
{
    return self->table[s_find_slot(self, id)] != EMPTY;
}

size_t seen_count(const seen_t *self)
{
    return self->count;
}

static acc_rc_t s_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return ACC_ERR_IO;
        }
        buf += n;
        len -= (size_t)n;
    }
    return ACC_OK;
}

/* Rewrites the journal with only the ids remembered, oldest first. */
static acc_rc_t s_compact(seen_t *self, acc_err_t *err)
{
    char *tmp = acc_xasprintf("%s.tmp", self->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    acc_rc_t rc = fd < 0 ? ACC_ERR_IO : ACC_OK;
    size_t start = self->count == self->keep ? self->head : 0;
    for (size_t n = 0; rc == ACC_OK && n < self->count; n++) {
        char line[LINE_CHARS + 1];
        acc_uuid_format(line, self->ring[(start + n) % self->keep]);
        line[LINE_CHARS - 1] = '\n';
        rc = s_write_all(fd, line, LINE_CHARS);
    }
    if (rc == ACC_OK && fsync(fd) != 0) {
        rc = ACC_ERR_IO;
    }
    int saved = errno;
    if (fd >= 0) {
        (void)close(fd);
    }
    if (rc == ACC_OK && rename(tmp, self->path) != 0) {
        rc = ACC_ERR_IO;
        saved = errno;
    }
    if (rc != ACC_OK) {
        (void)unlink(tmp);
        free(tmp);
        return acc_err_set(err, ACC_ERR_IO, "could not compact \"%s\": %s", self->path,
                           strerror(saved));
    }
    free(tmp);
    (void)close(self->fd);
    self->on_disk = self->count;
    return s_open_append(self, err);
}

acc_rc_t seen_add(seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES], acc_err_t *err)
{
    if (self->path != NULL) {
        char line[LINE_CHARS + 1];
        acc_uuid_format(line, id);
        line[LINE_CHARS - 1] = '\n';
        if (s_write_all(self->fd, line, LINE_CHARS) != ACC_OK || fdatasync(self->fd) != 0) {
            return acc_err_set(err, ACC_ERR_IO, "could not record a delivery in \"%s\": %s",
                               self->path, strerror(errno));
        }
        self->on_disk++;
    }
    s_remember(self, id);
    if (self->path != NULL && self->on_disk >= 2 * self->keep) {
        return s_compact(self, err);
    }
    return ACC_OK;
}
