/* spool.c - a spool directory of NDJSON files handed to the agent: read safely,
 * answered durably, then moved to done/ */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/log.h"
#include "agent.h"

#define SPOOL_SCAN_MS 500 /* how often an idle spool looks for new files */

#define SPOOL_NAME_MAX 200 /* room left for done/.NAME.N.results.tmp within NAME_MAX */

/* A file in incoming/ that could not be set aside: skipped, logged once, until it
 * changes. */
typedef struct {
    dev_t dev;
    ino_t ino;
    struct timespec ctime;
} kept_t;

struct spool_t {
    const char *tag; /* the command, for log lines */
    char *incoming;
    char *done;
    char *rejected;
    int64_t max_file_bytes; /* max_spool_file_bytes */
    kept_t *kept;
    size_t n_kept;
};

#define INPUT_GONE    (-1) /* it went away between listing and opening */
#define INPUT_REFUSED (-2) /* why says why */

acc_rc_t spool_open(spool_t **out, const char *dir, int64_t max_file_bytes, const char *tag,
                    acc_err_t *err)
{
    spool_t *self = acc_xcalloc(1, sizeof(*self));
    self->tag = tag;
    self->incoming = acc_xasprintf("%s/incoming", dir);
    self->done = acc_xasprintf("%s/done", dir);
    self->rejected = acc_xasprintf("%s/rejected", dir);
    self->max_file_bytes = max_file_bytes;
    acc_rc_t rc = agent_make_dir(dir, err);
    if (rc == ACC_OK) {
        rc = agent_make_dir(self->incoming, err);
    }
    if (rc == ACC_OK) {
        rc = agent_make_dir(self->done, err);
    }
    if (rc == ACC_OK) {
        rc = agent_make_dir(self->rejected, err);
    }
    if (rc != ACC_OK) {
        spool_destroy(&self);
        return rc;
    }
    *out = self;
    return ACC_OK;
}

void spool_destroy(spool_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    spool_t *self = *self_p;
    free(self->kept);
    free(self->incoming);
    free(self->done);
    free(self->rejected);
    free(self);
    *self_p = NULL;
}

const char *spool_incoming(const spool_t *self)
{
    return self->incoming;
}

/* ---- listing incoming/ ---- */

static bool s_is_ready(const char *name)
{
    size_t len = strlen(name);
    return name[0] != '.' && !(len > 4 && strcmp(name + len - 4, ".tmp") == 0);
}

static int s_by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool s_is_kept(const spool_t *self, const struct stat *st)
{
    for (size_t i = 0; i < self->n_kept; i++) {
        const kept_t *k = &self->kept[i];
        if (k->dev == st->st_dev && k->ino == st->st_ino && k->ctime.tv_sec == st->st_ctim.tv_sec &&
            k->ctime.tv_nsec == st->st_ctim.tv_nsec) {
            return true;
        }
    }
    return false;
}

/* Whatever the names are is decided when each is opened (s_open_input), not
 * here: a check by name before the open would say nothing about what is opened. */
char **spool_list(spool_t *self, size_t *count)
{
    *count = 0;
    DIR *d = opendir(self->incoming);
    if (d == NULL) {
        acc_log_error(self->tag, "could not read \"%s\": %s", self->incoming, strerror(errno));
        return NULL;
    }
    size_t cap = 16;
    char **names = acc_xcalloc(cap, sizeof(char *));
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (!s_is_ready(e->d_name) || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            s_is_kept(self, &st)) {
            continue;
        }
        if (*count + 1 >= cap) {
            cap *= 2;
            names = acc_xrealloc(names, cap * sizeof(char *));
        }
        names[(*count)++] = acc_xstrdup(e->d_name);
    }
    (void)closedir(d);
    names[*count] = NULL;
    qsort(names, *count, sizeof(char *), s_by_name);
    return names;
}

void spool_free_names(char **names)
{
    for (size_t i = 0; names != NULL && names[i] != NULL; i++) {
        free(names[i]);
    }
    free(names);
}

/* ---- durable steps ---- */

/* NAME+SUFFIX in dir if nothing (not even a dangling link) has it, else
 * NAME+SUFFIX.2, .3 ...: a file sent twice under one name keeps both. */
static char *s_free_name(const char *dir, const char *name, const char *suffix)
{
    char *path = acc_xasprintf("%s/%s%s", dir, name, suffix);
    struct stat st;
    for (int n = 2; lstat(path, &st) == 0; n++) {
        free(path);
        path = acc_xasprintf("%s/%s%s.%d", dir, name, suffix, n);
    }
    char *base = acc_xstrdup(strrchr(path, '/') + 1);
    free(path);
    return base;
}

/* A temporary output file, created afresh: whatever is at path (a stale file from
 * a crash, or a link planted there) is removed, never opened, and O_EXCL with
 * O_NOFOLLOW refuses anything that appears there meanwhile. */
static FILE *s_open_tmp(const spool_t *self, const char *path)
{
    FILE *f = NULL;
    if (unlink(path) == 0 || errno == ENOENT) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
        f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (f == NULL && fd >= 0) {
            (void)close(fd);
        }
    }
    if (f == NULL) {
        acc_log_error(self->tag, "could not create \"%s\": %s", path, strerror(errno));
    }
    return f;
}

static bool s_close_synced(FILE *f)
{
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    return fclose(f) == 0 && ok;
}

static bool s_rename(const spool_t *self, const char *from, const char *to)
{
    if (rename(from, to) != 0) {
        acc_log_error(self->tag, "could not move \"%s\" to \"%s\": %s", from, to, strerror(errno));
        return false;
    }
    return true;
}

static bool s_sync(const spool_t *self, const char *dir)
{
    acc_err_t err;
    if (agent_sync_dir(dir, &err) != ACC_OK) {
        acc_log_error(self->tag, "%s", err.msg);
        return false;
    }
    return true;
}

/* ---- taking a file in hand ---- */

static const char *s_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFIFO:
        return "FIFO";
    case S_IFDIR:
        return "directory";
    case S_IFSOCK:
        return "socket";
    case S_IFCHR:
        return "character device";
    case S_IFBLK:
        return "block device";
    case S_IFLNK:
        return "symbolic link";
    default:
        return "special file";
    }
}

/* Only a regular file with one name, within the size limit, is read, and only if
 * it belongs to the agent: owned by its user, or by its group and writable by no
 * one outside it (a case system's user in group accord-NAME writing into the
 * spool, whose setgid directory gives new files that group); why says what else
 * it is. A link to anyone else's file (another agency's key) fails both. */
static bool s_is_readable_input(const spool_t *self, const struct stat *st, char *why,
                                size_t why_len)
{
    if (!S_ISREG(st->st_mode)) {
        (void)snprintf(why, why_len, "it is not a regular file but a %s", s_kind(st->st_mode));
    } else if (st->st_uid != geteuid() &&
               (st->st_gid != getegid() || (st->st_mode & S_IWOTH) != 0)) {
        (void)snprintf(why, why_len,
                       "it is owned by uid %u and gid %u, neither the agent's user (uid %u) nor "
                       "its group (gid %u, and then not writable by others)",
                       (unsigned)st->st_uid, (unsigned)st->st_gid, (unsigned)geteuid(),
                       (unsigned)getegid());
    } else if (st->st_nlink != 1) {
        (void)snprintf(why, why_len, "it has %llu hard links", (unsigned long long)st->st_nlink);
    } else if (st->st_size > self->max_file_bytes) {
        (void)snprintf(why, why_len, "it is %lld bytes, more than max_spool_file_bytes (%lld)",
                       (long long)st->st_size, (long long)self->max_file_bytes);
    } else {
        return true;
    }
    return false;
}

/* Opens incoming/NAME the way an attacker could have left it: a link is not
 * followed, a FIFO does not block the open, and what was opened is checked with
 * fstat before a byte is read. Returns the descriptor, INPUT_GONE or INPUT_REFUSED. */
static int s_open_input(const spool_t *self, const char *name, char *why, size_t why_len)
{
    char *path = acc_xasprintf("%s/%s", self->incoming, name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    int saved = errno;
    free(path);
    if (fd < 0 && saved == ENOENT) {
        return INPUT_GONE;
    }
    if (fd < 0 && saved == ELOOP) {
        (void)snprintf(why, why_len, "it is a symbolic link");
        return INPUT_REFUSED;
    }
    if (fd < 0) {
        (void)snprintf(why, why_len, "it could not be opened: %s", strerror(saved));
        return INPUT_REFUSED;
    }
    struct stat st;
    bool ok = fstat(fd, &st) == 0;
    if (!ok) {
        (void)snprintf(why, why_len, "it could not be examined: %s", strerror(errno));
    }
    ok = ok && s_is_readable_input(self, &st, why, why_len);
    if (ok && strlen(name) > SPOOL_NAME_MAX) {
        (void)snprintf(why, why_len, "its name is longer than %d bytes", SPOOL_NAME_MAX);
        ok = false;
    }
    int flags = ok ? fcntl(fd, F_GETFL) : -1;
    if (ok && (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)) {
        (void)snprintf(why, why_len, "it could not be read: %s", strerror(errno));
        ok = false;
    }
    if (!ok) {
        (void)close(fd);
        return INPUT_REFUSED;
    }
    return fd;
}

/* A refused file is moved unread to rejected/NAME.unread (a rename moves a link or
 * a FIFO itself; nothing is opened through it), so incoming/ holds only work and
 * the agency's system sees what was refused. If it cannot be moved it stays where
 * it is and is skipped, logged once, until it changes. */
static void s_set_aside(spool_t *self, const char *name, const char *why)
{
    char *from = acc_xasprintf("%s/%s", self->incoming, name);
    char *base = s_free_name(self->rejected, name, ".unread");
    char *to = acc_xasprintf("%s/%s", self->rejected, base);
    struct stat st;
    bool stat_ok = lstat(from, &st) == 0;
    if (rename(from, to) == 0) {
        acc_log_warn(self->tag, "refused incoming file \"%s\": %s; moved unread to rejected/%s",
                     name, why, base);
        (void)(s_sync(self, self->rejected) && s_sync(self, self->incoming));
    } else if (errno != ENOENT) {
        acc_log_error(self->tag,
                      "refused incoming file \"%s\": %s; it could not be moved to rejected/ (%s), "
                      "so it stays in incoming/ and is skipped until it changes",
                      name, why, strerror(errno));
        if (stat_ok) {
            self->kept = acc_xrealloc(self->kept, (self->n_kept + 1) * sizeof(*self->kept));
            self->kept[self->n_kept++] =
                (kept_t){ .dev = st.st_dev, .ino = st.st_ino, .ctime = st.st_ctim };
        }
    }
    free(to);
    free(base);
    free(from);
}

static void s_paths_init(spool_file_t *f, const spool_t *self, const char *name)
{
    char *final = s_free_name(self->done, name, "");
    f->in_path = acc_xasprintf("%s/%s", self->incoming, name);
    f->done = acc_xasprintf("%s/%s", self->done, final);
    f->results_path = acc_xasprintf("%s/%s.results", self->done, final);
    f->rejected_path = acc_xasprintf("%s/%s", self->rejected, final);
    f->results_tmp = acc_xasprintf("%s/.%s.results.tmp", self->done, final);
    f->rejected_tmp = acc_xasprintf("%s/.%s.tmp", self->rejected, final);
    free(final);
}

int spool_take(spool_t *self, const char *name, spool_file_t *file)
{
    memset(file, 0, sizeof(*file));
    char why[256];
    int fd = s_open_input(self, name, why, sizeof(why));
    if (fd == INPUT_GONE) {
        return SPOOL_SKIPPED;
    }
    if (fd == INPUT_REFUSED) {
        s_set_aside(self, name, why);
        return SPOOL_SKIPPED;
    }
    file->in = fdopen(fd, "r");
    if (file->in == NULL) {
        acc_log_error(self->tag, "could not read \"%s/%s\": %s", self->incoming, name,
                      strerror(errno));
        (void)close(fd);
        return SPOOL_FAILED;
    }
    s_paths_init(file, self, name);
    file->results = s_open_tmp(self, file->results_tmp);
    file->rejected = s_open_tmp(self, file->rejected_tmp);
    if (file->results == NULL || file->rejected == NULL) {
        spool_release(file);
        return SPOOL_FAILED;
    }
    return SPOOL_TAKEN;
}

/* Results and rejections go into place first, durably; the input moves to done/
 * last. A crash anywhere before that leaves the input in incoming/, to be taken
 * again in full: the broker answers a repeat with its first answer. */
bool spool_commit(const spool_t *self, spool_file_t *file, bool any_rejected)
{
    bool closed = s_close_synced(file->results);
    closed = s_close_synced(file->rejected) && closed;
    file->results = file->rejected = NULL;
    return closed && s_rename(self, file->results_tmp, file->results_path) &&
           (!any_rejected || s_rename(self, file->rejected_tmp, file->rejected_path)) &&
           s_sync(self, self->rejected) && s_sync(self, self->done) &&
           s_rename(self, file->in_path, file->done) && s_sync(self, self->done) &&
           s_sync(self, self->incoming);
}

void spool_release(spool_file_t *file)
{
    if (file->results != NULL) {
        (void)fclose(file->results);
    }
    if (file->rejected != NULL) {
        (void)fclose(file->rejected);
    }
    if (file->in != NULL) {
        (void)fclose(file->in);
    }
    if (file->results_tmp != NULL) {
        (void)unlink(file->results_tmp);
    }
    if (file->rejected_tmp != NULL) {
        (void)unlink(file->rejected_tmp);
    }
    free(file->in_path);
    free(file->done);
    free(file->results_path);
    free(file->rejected_path);
    free(file->results_tmp);
    free(file->rejected_tmp);
    memset(file, 0, sizeof(*file));
}

int spool_watch(spool_t *self, bool once, spool_each_fn *each, spool_idle_fn *idle, void *ctx)
{
    int status = EXIT_SUCCESS;
    while (status == EXIT_SUCCESS && !agent_stop) {
        size_t count = 0;
        char **names = spool_list(self, &count);
        if (names == NULL) {
            return EXIT_OUTPUT;
        }
        for (size_t i = 0; i < count && status == EXIT_SUCCESS && !agent_stop; i++) {
            status = each(ctx, self, names[i]);
        }
        spool_free_names(names);
        if (count == 0 && once) {
            break;
        }
        if (count == 0 && status == EXIT_SUCCESS && !agent_stop) {
            status = idle(ctx, SPOOL_SCAN_MS);
        }
    }
    return status;
}
