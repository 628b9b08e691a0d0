/* spool.h - a spool directory of NDJSON files handed to the agent: DIR/incoming/NAME
 * is read safely, its results and refusals are written durably, then it moves to
 * DIR/done/NAME (publish --spool, outcome --spool) */
#ifndef ACCORD_AGENTS_SPOOL_H
#define ACCORD_AGENTS_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "accord/rc.h"

typedef struct spool_t spool_t;

/* One incoming file in hand, from spool_take to spool_release. */
typedef struct {
    FILE *in;           /* incoming/NAME, opened as spool_take checked it */
    FILE *results;      /* done/.NAME.results.tmp: one line per input line */
    FILE *rejected;     /* rejected/.NAME.tmp: the refused lines, never the input's bytes */
    char *in_path;      /* incoming/NAME */
    char *done;         /* done/NAME (NAME.2, ... if taken) */
    char *results_path; /* done/NAME.results */
    char *rejected_path;
    char *results_tmp; /* their temporary names while the file is in hand */
    char *rejected_tmp;
} spool_file_t;

#define SPOOL_TAKEN   0    /* *file is in hand: spool_release it */
#define SPOOL_SKIPPED 1    /* it went away, or was refused and set aside (logged) */
#define SPOOL_FAILED  (-1) /* an output could not be created (logged): stop */

/* The spool at dir, creating dir, dir/incoming, dir/done and dir/rejected (0750)
 * as needed; a link or anything else that is not a directory there is an error.
 * Files larger than max_file_bytes are refused. tag ("publish", "outcome") begins
 * every log line about it and is borrowed for the spool's life. ACC_ERR_IO with
 * err saying which directory, and *out untouched, on failure. */
ACC_NODISCARD acc_rc_t spool_open(spool_t **out, const char *dir, int64_t max_file_bytes,
                                  const char *tag, acc_err_t *err);

void spool_destroy(spool_t **self_p);

/* DIR/incoming, borrowed for the spool's life. */
const char *spool_incoming(const spool_t *self);

/* The ready names in incoming/ (not a dot name, not ending .tmp: the agency's
 * system writes under such a name and renames when complete), sorted by name,
 * NULL-terminated, with *count; files that could not be set aside are left out
 * until they change. What each is gets decided when it is opened, not here.
 * NULL (logged) when incoming/ cannot be read. Free with spool_free_names. */
char **spool_list(spool_t *self, size_t *count);

void spool_free_names(char **names);

/* Takes incoming/NAME in hand: opened without following a link or blocking on a
 * FIFO, then checked by fstat before a byte is read (a regular file with one
 * link, owned by the agent's user, or by its group and not writable by others,
 * within max_file_bytes, its name at most 200 bytes). A file that fails is moved
 * unread to rejected/NAME.unread (SPOOL_SKIPPED; if it cannot be moved it stays
 * and is skipped until it changes). SPOOL_TAKEN: *file holds the input and fresh
 * temporary outputs (whatever was at their names, a link included, is removed,
 * never opened). */
int spool_take(spool_t *self, const char *name, spool_file_t *file);

/* Everything is written: closes file's outputs (fsync'd) and puts them in place
 * (rejected/NAME only when any_rejected), durably, and only then moves the input
 * to done/. A crash anywhere before that leaves the input in incoming/, to be
 * taken again in full. false (logged) if any step failed: the input then stays
 * in incoming/. */
bool spool_commit(const spool_t *self, spool_file_t *file, bool any_rejected);

/* Closes what is still open, removes the temporary outputs that were not put in
 * place, and frees the paths; safe after spool_commit and on every failure path. */
void spool_release(spool_file_t *file);

/* One file of incoming, by name: an exit status (EXIT_SUCCESS to go on). */
typedef int spool_each_fn(void *ctx, spool_t *spool, const char *name);
/* Nothing waiting: wait up to ms (doing what the command must meanwhile); an
 * exit status. */
typedef int spool_idle_fn(void *ctx, int64_t ms);

/* Hands every file of incoming to each, oldest first, until agent_stop, a status
 * other than EXIT_SUCCESS, or (once) an empty scan; idle between empty scans.
 * Returns the status that ended it. */
int spool_watch(spool_t *self, bool once, spool_each_fn *each, spool_idle_fn *idle, void *ctx);

#endif
