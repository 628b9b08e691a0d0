/* seen.c - the hand-over journal: a ring of the newest hand-overs, linear-probing
 * indexes over it by share id and by record, and an append-only file on disk */
#include "seen.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/keys.h"
#include "accord/log.h"

#define ID_BYTES     ACC_LOGROW_SHARE_BYTES
#define EMPTY        UINT32_MAX
#define UUID_CHARS   36
#define LEGACY_CHARS (UUID_CHARS + 1)     /* "UUID\n" (done, no record) */
#define START_CHARS  (2 + UUID_CHARS + 1) /* "i UUID\n" */
#define DONE_CHARS   (2 + UUID_CHARS + 1 + 2 * SEEN_RECORD_BYTES + 1) /* "d UUID HEX\n" */

_Static_assert(SEEN_RECORD_BYTES == ID_BYTES, "both indexes compare ID_BYTES");

typedef struct {
    uint8_t id[ID_BYTES];
    uint8_t record[SEEN_RECORD_BYTES];
    bool has_record;
} entry_t;

typedef struct {
    uint32_t *slots; /* ring positions, EMPTY where unused */
    size_t key_off;  /* offsetof the entry_t field this index is keyed on */
} index_t;

struct seen_t {
    entry_t *ring;                /* the hand-overs done, oldest at head once full */
    index_t by_id;                /* every entry */
    index_t by_record;            /* entries with a record, the newest for each record */
    size_t keep;                  /* ring capacity */
    size_t mask;                  /* index size - 1: a power of two, at most half full */
    size_t head;                  /* next ring position to write */
    size_t count;                 /* entries in the ring */
    uint8_t (*started)[ID_BYTES]; /* intents with no done yet, oldest first */
    size_t n_started;
    char *path;     /* the journal, NULL in memory-only mode */
    char *dir;      /* its directory, fsync'd after a create or a rename */
    int fd;         /* appends to the journal */
    size_t on_disk; /* lines in the journal, which is compacted when they reach 2 * keep */
};

void seen_record_hash(uint8_t out[SEEN_RECORD_BYTES], const char *from_agency,
                      const char *record_id)
{
    static const char context[] = "accord-seen-v1";
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, NULL, 0, SEEN_RECORD_BYTES);
    (void)crypto_generichash_update(&st, (const unsigned char *)context, sizeof(context));
    (void)crypto_generichash_update(&st, (const unsigned char *)from_agency,
                                    strlen(from_agency) + 1);
    (void)crypto_generichash_update(&st, (const unsigned char *)record_id, strlen(record_id) + 1);
    (void)crypto_generichash_final(&st, out, SEEN_RECORD_BYTES);
}

/* ---- the indexes ---- */

static const uint8_t *s_key(const seen_t *self, const index_t *idx, size_t pos)
{
    return (const uint8_t *)&self->ring[pos] + idx->key_off;
}

static size_t s_home(const seen_t *self, const uint8_t *key)
{
    uint64_t h = 0;
    memcpy(&h, key, sizeof(h));
    return (size_t)((h * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & self->mask;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t s_find_slot(const seen_t *self, const index_t *idx, const uint8_t *key)
{
    size_t i = s_home(self, key);
    while (idx->slots[i] != EMPTY && memcmp(s_key(self, idx, idx->slots[i]), key, ID_BYTES) != 0) {
        i = (i + 1) & self->mask;
    }
    return i;
}

/* Removes ring position pos if idx points at it. Backward-shift deletion keeps
 * every probe chain unbroken without tombstones. */
static void s_unindex(seen_t *self, index_t *idx, size_t pos)
{
    size_t i = s_find_slot(self, idx, s_key(self, idx, pos));
    if (idx->slots[i] != pos) {
        return;
    }
    size_t j = i;
    for (;;) {
        j = (j + 1) & self->mask;
        if (idx->slots[j] == EMPTY) {
            break;
        }
        size_t k = s_home(self, s_key(self, idx, idx->slots[j]));
        /* the entry at j may move to i only if its home is not in (i, j] */
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            idx->slots[i] = idx->slots[j];
            i = j;
        }
    }
    idx->slots[i] = EMPTY;
}

static void s_index(seen_t *self, index_t *idx, size_t pos)
{
    idx->slots[s_find_slot(self, idx, s_key(self, idx, pos))] = (uint32_t)pos;
}

static void s_forget_start(seen_t *self, const uint8_t *id)
{
    for (size_t i = 0; i < self->n_started; i++) {
        if (memcmp(self->started[i], id, ID_BYTES) == 0) {
            memmove(&self->started[i], &self->started[i + 1],
                    (self->n_started - i - 1) * sizeof(*self->started));
            self->n_started--;
            return;
        }
    }
}

static void s_remember_start(seen_t *self, const uint8_t *id)
{
    if (seen_is_started(self, id) || seen_has(self, id)) {
        return;
    }
    if (self->n_started == SEEN_STARTED_MAX) {
        s_forget_start(self, self->started[0]);
    }
    memcpy(self->started[self->n_started++], id, ID_BYTES);
}

static void s_remember(seen_t *self, const uint8_t *id, const uint8_t *record)
{
    s_forget_start(self, id);
    if (seen_has(self, id)) {
        return;
    }
    if (self->count == self->keep) {
        s_unindex(self, &self->by_id, self->head);
        if (self->ring[self->head].has_record) {
            s_unindex(self, &self->by_record, self->head);
        }
        self->count--;
    }
    entry_t *e = &self->ring[self->head];
    memcpy(e->id, id, ID_BYTES);
    e->has_record = record != NULL;
    if (record != NULL) {
        memcpy(e->record, record, SEEN_RECORD_BYTES);
        s_index(self, &self->by_record, self->head); /* the newest entry for the record */
    }
    s_index(self, &self->by_id, self->head);
    self->head = (self->head + 1) % self->keep;
    self->count++;
}

/* ---- the journal's lines ---- */

static size_t s_format_start(char line[START_CHARS + 1], const uint8_t *id)
{
    line[0] = 'i';
    line[1] = ' ';
    acc_uuid_format(line + 2, id);
    line[START_CHARS - 1] = '\n';
    return START_CHARS;
}

static size_t s_format_done(char line[DONE_CHARS + 1], const entry_t *e)
{
    if (!e->has_record) {
        acc_uuid_format(line, e->id);
        line[LEGACY_CHARS - 1] = '\n';
        return LEGACY_CHARS;
    }
    line[0] = 'd';
    line[1] = ' ';
    acc_uuid_format(line + 2, e->id);
    line[2 + UUID_CHARS] = ' ';
    acc_hex_encode(line + 3 + UUID_CHARS, 2 * SEEN_RECORD_BYTES + 1, e->record, SEEN_RECORD_BYTES);
    line[DONE_CHARS - 1] = '\n';
    return DONE_CHARS;
}

/* One complete line (newline stripped); unknown lines are skipped. */
static void s_apply_line(seen_t *self, char *line, size_t len)
{
    uint8_t id[ID_BYTES];
    uint8_t record[SEEN_RECORD_BYTES];
    acc_err_t ignored;
    if (len == UUID_CHARS && acc_uuid_parse(id, line, &ignored) == ACC_OK) {
        s_remember(self, id, NULL);
    } else if (len == START_CHARS - 1 && line[0] == 'i' && line[1] == ' ' &&
               acc_uuid_parse(id, line + 2, &ignored) == ACC_OK) {
        s_remember_start(self, id);
    } else if (len == DONE_CHARS - 1 && line[0] == 'd' && line[2 + UUID_CHARS] == ' ') {
        line[2 + UUID_CHARS] = '\0';
        if (acc_uuid_parse(id, line + 2, &ignored) == ACC_OK &&
            acc_hex_decode(record, sizeof(record), line + 3 + UUID_CHARS, &ignored) == ACC_OK) {
            s_remember(self, id, record);
        }
    }
}

/* Reads the journal; *good is the length of its complete lines, so a torn last
 * line (a crash mid-append) can be cut off before anything is appended to it. */
static acc_rc_t s_load(seen_t *self, off_t *good, acc_err_t *err)
{
    *good = 0;
    FILE *f = fopen(self->path, "r");
    if (f == NULL) {
        return errno == ENOENT ? ACC_OK
                               : acc_err_set(err, ACC_ERR_IO, "could not read \"%s\": %s",
                                             self->path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') {
            break; /* torn by a crash: never done, so never acknowledged */
        }
        *good += (off_t)n;
        self->on_disk++;
        line[n - 1] = '\0';
        s_apply_line(self, line, (size_t)n - 1);
    }
    free(line);
    (void)fclose(f);
    return ACC_OK;
}

static acc_rc_t s_sync_dir(const seen_t *self, acc_err_t *err)
{
    int fd = open(self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int saved = errno;
        if (fd >= 0) {
            (void)close(fd);
        }
        return acc_err_set(err, ACC_ERR_IO, "could not sync directory \"%s\": %s", self->dir,
                           strerror(saved));
    }
    (void)close(fd);
    return ACC_OK;
}

/* good >= 0: the journal is cut to that length (a torn last line). */
static acc_rc_t s_open_append(seen_t *self, off_t good, acc_err_t *err)
{
    struct stat st;
    bool existed = stat(self->path, &st) == 0;
    self->fd = open(self->path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (self->fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not open \"%s\": %s", self->path,
                           strerror(errno));
    }
    if (fstat(self->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return acc_err_set(err, ACC_ERR_IO, "\"%s\" is not a regular file", self->path);
    }
    if (good >= 0 && st.st_size > good &&
        (ftruncate(self->fd, good) != 0 || fsync(self->fd) != 0)) {
        return acc_err_set(err, ACC_ERR_IO, "could not cut a torn line off \"%s\": %s", self->path,
                           strerror(errno));
    }
    return existed ? ACC_OK : s_sync_dir(self, err);
}

static char *s_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        return acc_xstrdup(".");
    }
    return slash == path ? acc_xstrdup("/") : acc_xasprintf("%.*s", (int)(slash - path), path);
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
    self->by_id.slots = acc_xmalloc(table_size * sizeof(uint32_t));
    self->by_id.key_off = offsetof(entry_t, id);
    self->by_record.slots = acc_xmalloc(table_size * sizeof(uint32_t));
    self->by_record.key_off = offsetof(entry_t, record);
    memset(self->by_id.slots, 0xff, table_size * sizeof(uint32_t));
    memset(self->by_record.slots, 0xff, table_size * sizeof(uint32_t));
    self->started = acc_xcalloc(SEEN_STARTED_MAX, sizeof(*self->started));
    self->fd = -1;
    acc_rc_t rc = ACC_OK;
    if (path != NULL) {
        self->path = acc_xstrdup(path);
        self->dir = s_dir_of(path);
        off_t good = 0;
        rc = s_load(self, &good, err);
        if (rc == ACC_OK) {
            rc = s_open_append(self, good, err);
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
    free(self->dir);
    free(self->started);
    free(self->by_id.slots);
    free(self->by_record.slots);
    free(self->ring);
    free(self);
    *self_p = NULL;
}

bool seen_has(const seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES])
{
    return self->by_id.slots[s_find_slot(self, &self->by_id, id)] != EMPTY;
}

bool seen_has_record(const seen_t *self, const uint8_t record[SEEN_RECORD_BYTES])
{
    return self->by_record.slots[s_find_slot(self, &self->by_record, record)] != EMPTY;
}

bool seen_is_started(const seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES])
{
    for (size_t i = 0; i < self->n_started; i++) {
        if (memcmp(self->started[i], id, ID_BYTES) == 0) {
            return true;
        }
    }
    return false;
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

/* Writes what is remembered to fd: the hand-overs done, oldest first, then the
 * ones begun and not done. */
static acc_rc_t s_write_remembered(const seen_t *self, int fd)
{
    acc_rc_t rc = ACC_OK;
    size_t start = self->count == self->keep ? self->head : 0;
    char line[DONE_CHARS + 1];
    for (size_t n = 0; rc == ACC_OK && n < self->count; n++) {
        size_t len = s_format_done(line, &self->ring[(start + n) % self->keep]);
        rc = s_write_all(fd, line, len);
    }
    for (size_t n = 0; rc == ACC_OK && n < self->n_started; n++) {
        size_t len = s_format_start(line, self->started[n]);
        rc = s_write_all(fd, line, len);
    }
    return rc;
}

/* Rewrites the journal with only what is remembered: the new file is fsync'd,
 * renamed over the old one, and the directory fsync'd, so after a power cut
 * the journal is the old one or the new one, complete. */
static acc_rc_t s_compact(seen_t *self, acc_err_t *err)
{
    char *tmp = acc_xasprintf("%s.tmp", self->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    acc_rc_t rc = fd < 0 ? ACC_ERR_IO : s_write_remembered(self, fd);
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
    rc = s_sync_dir(self, err);
    if (rc != ACC_OK) {
        return rc;
    }
    (void)close(self->fd);
    self->on_disk = self->count + self->n_started;
    return s_open_append(self, -1, err);
}

static acc_rc_t s_append(seen_t *self, const char *line, size_t len, acc_err_t *err)
{
    if (s_write_all(self->fd, line, len) != ACC_OK || fdatasync(self->fd) != 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not record a delivery in \"%s\": %s", self->path,
                           strerror(errno));
    }
    self->on_disk++;
    return ACC_OK;
}

acc_rc_t seen_start(seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES], acc_err_t *err)
{
    if (seen_is_started(self, id)) {
        return ACC_OK;
    }
    if (self->path != NULL) {
        char line[START_CHARS + 1];
        acc_rc_t rc = s_append(self, line, s_format_start(line, id), err);
        if (rc != ACC_OK) {
            return rc;
        }
    }
    s_remember_start(self, id);
    return ACC_OK;
}

acc_rc_t seen_add(seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES], const uint8_t *record,
                  acc_err_t *err)
{
    if (self->path != NULL) {
        entry_t e = { .has_record = record != NULL };
        memcpy(e.id, id, ID_BYTES);
        if (record != NULL) {
            memcpy(e.record, record, SEEN_RECORD_BYTES);
        }
        char line[DONE_CHARS + 1];
        acc_rc_t rc = s_append(self, line, s_format_done(line, &e), err);
        if (rc != ACC_OK) {
            return rc;
        }
    }
    s_remember(self, id, record);
    if (self->path != NULL && self->on_disk >= 2 * self->keep) {
        return s_compact(self, err);
    }
    return ACC_OK;
}
