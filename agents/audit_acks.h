/* audit_acks.h - accord-audit verify's check of acknowledgements: each share
 * acknowledged at most once, only by its recipient, after it was shared, in
 * either form the log holds (one row per share before schema 0008, batched rows
 * listing share seqs from it) */
#ifndef ACCORD_AGENTS_AUDIT_ACKS_H
#define ACCORD_AGENTS_AUDIT_ACKS_H

#include <stddef.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/rc.h"

typedef struct audit_acks audit_acks_t;

/* A check of the rows from first_seq on (1: the whole log). What rows before
 * first_seq were is unknown, so acknowledgements of them are passed over. */
audit_acks_t *audit_acks_new(int64_t first_seq);
void audit_acks_destroy(audit_acks_t **self_p);

/* Rows lost_from..lost_to are gone (a restore the verifier accepted): what they
 * were is unknown, and acknowledgements of them are passed over from now on. */
void audit_acks_note_lost(audit_acks_t *self, int64_t lost_from, int64_t lost_to);

/* Checks one row, in sequence order, after its hash and link verified; the row
 * is borrowed for the call. ACC_ERR_INVALID, with the reason in err, when it
 * acknowledges a seq that is not an earlier `shared` row (or `outcome` or
 * `notified` row, schema 0009) to the same to_agency,
 * lists its seqs out of ascending order, acknowledges a share acknowledged
 * before (in either form), or carries acked_seqs on a row that is no
 * acknowledgement. Memory: 2 bytes per seq walked, plus a table of the share ids
 * not yet acknowledged (about 100 bytes each), for the per-share form. */
ACC_NODISCARD acc_rc_t audit_acks_check(audit_acks_t *self, const acc_logrow_t *row,
                                        acc_err_t *err);

/* Bytes the check holds now. */
size_t audit_acks_bytes(const audit_acks_t *self);

/* Acknowledged seqs (ascending) as runs of consecutive values, "3-5,9"; after
 * max_ranges runs (0: no limit) it stops with ",... (N in all)". Yours to free. */
char *audit_acks_ranges(const int64_t *seqs, size_t n, size_t max_ranges);

#endif
