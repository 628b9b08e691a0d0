/* seen.h - the subscriber's hand-over journal: which share ids it began to hand
 * to its agency (intent) and which it finished handing over (done), and for each
 * done, which record it was, so a redelivery (an acknowledgement lost with a
 * connection or a crash) or the same record under a new share id (after a
 * restore of the broker's database) is acknowledged again without reaching the
 * agency's system twice */
#ifndef ACCORD_AGENTS_SEEN_H
#define ACCORD_AGENTS_SEEN_H

#include <stdbool.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/rc.h"

/* By default the newest this many hand-overs are remembered. The broker redelivers
 * only what is unacknowledged, a few pages at most, so this is far more than
 * needed for share ids; for records republished after a restore it covers the
 * newest 262144 deliveries. */
#define SEEN_KEEP 262144u

/* Hand-overs begun and never finished that are remembered; more is only
 * possible after that many crashes or failed hooks on distinct shares. */
#define SEEN_STARTED_MAX 1024u

#define SEEN_RECORD_BYTES 16

typedef struct seen_t seen_t;

/* Which record a delivery carries: BLAKE2b-128 of "accord-seen-v1", from_agency
 * and record_id, each NUL-terminated. Not keyed: the record id is the
 * publisher's own id (DESIGN.md), not a child's identifier, and it stands in
 * clear in the delivered file beside the journal, so a key kept there would
 * hide nothing. */
void seen_record_hash(uint8_t out[SEEN_RECORD_BYTES], const char *from_agency,
                      const char *record_id);

/* Opens the journal at path (created 0600 if missing, with its directory
 * fsync'd) and reads it; a torn last line from a crash is cut off. path NULL:
 * remembered in memory only, for the life of the process. The newest keep
 * hand-overs are remembered; the journal is rewritten with only those (and the
 * unfinished ones) when it reaches twice as many lines. */
ACC_NODISCARD acc_rc_t seen_open(seen_t **out, const char *path, size_t keep, acc_err_t *err);
void seen_destroy(seen_t **self_p);

/* The share id was handed over (done). */
bool seen_has(const seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES]);

/* A record with this hash was handed over, under any share id. */
bool seen_has_record(const seen_t *self, const uint8_t record[SEEN_RECORD_BYTES]);

/* A hand-over of the share id began (seen_start) and was never done: it may
 * have reached the agency's system in part or in full. */
bool seen_is_started(const seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES]);

/* Journals the intent to hand id over; with a journal, on disk (fsync'd) before
 * this returns. A no-op if it is already started. */
ACC_NODISCARD acc_rc_t seen_start(seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES],
                                  acc_err_t *err);

/* Journals that id (carrying record, NULL if not known) was handed over; with a
 * journal, on disk (fsync'd) before this returns, so before any acknowledgement. */
ACC_NODISCARD acc_rc_t seen_add(seen_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES],
                                const uint8_t *record, acc_err_t *err);

/* How many hand-overs are remembered as done. */
size_t seen_count(const seen_t *self);

#endif
