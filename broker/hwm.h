/* hwm.h - the broker's high-water mark: the last row it committed, kept outside
 * the database, so a database that went back in time (a restore, lost data) is
 * noticed before any sequence number is handed out again */
#ifndef ACCORD_BROKER_HWM_H
#define ACCORD_BROKER_HWM_H

#include <stdbool.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/rc.h"

#define HWM_FILE "accordd.state" /* in the state directory */

typedef struct {
    int64_t seq;                         /* the last committed row */
    uint8_t hash[ACC_LOGROW_HASH_BYTES]; /* its entry hash */
    int64_t epoch;                       /* the highest key epoch started */
} hwm_mark_t;

typedef struct hwm_t hwm_t;

/* Opens the state directory dir. With create, a missing directory is made (mode
 * 0700); an existing one must be a directory no one but its owner can write. */
ACC_NODISCARD acc_rc_t hwm_open(hwm_t **out, const char *dir, bool create, acc_err_t *err);
void hwm_destroy(hwm_t **self_p);

/* The file's path (borrowed, valid until hwm_destroy). */
const char *hwm_path(const hwm_t *self);

/* Reads the newer intact slot's mark into out. *found is false when there is no
 * file, or an empty one (what a crash can leave of a file never synced).
 * ACC_ERR_INVALID names a file with no intact slot. */
ACC_NODISCARD acc_rc_t hwm_read(const hwm_t *self, hwm_mark_t *out, bool *found, acc_err_t *err);

/* Writes mark over the older of the file's two slots (creating the file, mode
 * 0600, on first use); with sync, fdatasync follows, so the mark survives a power
 * loss. */
ACC_NODISCARD acc_rc_t hwm_write(hwm_t *self, const hwm_mark_t *mark, bool sync, acc_err_t *err);

#endif
