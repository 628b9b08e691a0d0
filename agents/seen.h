/* seen.h - the share ids a subscriber has already handed to its agency, so a
 * redelivery (an acknowledgement lost with a connection or a crash) is
 * acknowledged again without reaching the agency's system twice */
#ifndef ACCORD_AGENTS_SEEN_H
#define ACCORD_AGENTS_SEEN_H

#include <stdbool.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/rc.h"

/* By default the newest this many ids are remembered. The broker redelivers only
 * what is unacknowledged, a few pages at most, so this is far more than needed. */
#define SEEN_KEEP 262144u

typedef struct seen_t seen_t;

/* Opens the journal at path (created 0600 if missing) and reads the ids in it;
 * a torn last line from a crash is ignored. path NULL: remembered in memory only,
 * for the life of the process. The newest keep ids are remembered; the journal
 * is rewritten with only those when it reaches twice as many. */
ACC_NODISCARD acc_rc_t seen_open(seen_t **out, const char *path, size_t keep, acc_err_t *err);
void seen_destroy(seen_t **self_p);

bool seen_has(const seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES]);

/* Remembers id; with a journal, on disk (fsync'd) before this returns. */
ACC_NODISCARD acc_rc_t seen_add(seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES],
                                acc_err_t *err);

/* How many ids are remembered. */
size_t seen_count(const seen_t *self);

#endif
