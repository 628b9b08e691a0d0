/* audit_acks.c - every share acknowledged at most once, by its recipient, in
 * either form; checked while verify streams the log, in bounded memory */
#include "audit_acks.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One uint16_t per seq: the recipient of a `shared` row (its agency index + 1,
 * 0 for any other row) and whether it was acknowledged. Kept in pages, so a log
 * of N rows costs 2N bytes and never a copy of them all. */
#define SLOT_ACKED    0x8000U
#define SLOT_AGENCY   0x7fffU
#define SLOT_UNKNOWN  0x7fffU /* lost, or before the first row walked */
#define AGENCIES_MAX  0x7ffeU
#define PAGE_SHIFT    16
#define PAGE_SLOTS    ((size_t)1 << PAGE_SHIFT)
#define PENDING_MIN   1024U
#define ACKED_MSG_MAX 200 /* characters of an agency name quoted in a message */

typedef struct {
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    int64_t seq; /* 0: empty */
} s_pending_t;

struct audit_acks {
    int64_t base; /* the seq of slot 0 */
    uint16_t **pages;
    size_t page_count;
    int64_t next_seq; /* slots below it are written */
    char **agencies;
    size_t agency_count;
    size_t agency_last;   /* the index found last: rows come in runs */
    s_pending_t *pending; /* share id -> seq, open addressing; acknowledged entries */
    size_t pending_cap;   /* are dropped when it is rebuilt (a power of two) */
    size_t pending_used;
    uint8_t hash_key[crypto_shorthash_KEYBYTES]; /* share ids come from the database */
    bool incomplete; /* rows were lost or not walked: an unknown share id proves nothing */
};

audit_acks_t *audit_acks_new(int64_t first_seq)
{
    audit_acks_t *self = acc_xcalloc(1, sizeof(*self));
    self->base = first_seq > 0 ? first_seq : 1;
    self->next_seq = self->base;
    self->incomplete = self->base > 1;
    crypto_shorthash_keygen(self->hash_key);
    return self;
}

void audit_acks_destroy(audit_acks_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    audit_acks_t *self = *self_p;
    for (size_t i = 0; i < self->page_count; i++) {
        free(self->pages[i]);
    }
    free(self->pages);
    for (size_t i = 0; i < self->agency_count; i++) {
        free(self->agencies[i]);
    }
    free(self->agencies);
    free(self->pending);
    free(self);
    *self_p = NULL;
}

size_t audit_acks_bytes(const audit_acks_t *self)
{
    size_t bytes = sizeof(*self) + self->page_count * (PAGE_SLOTS * sizeof(uint16_t) + 8);
    for (size_t i = 0; i < self->agency_count; i++) {
        bytes += strlen(self->agencies[i]) + 1 + sizeof(char *);
    }
    return bytes + self->pending_cap * sizeof(s_pending_t);
}

/* The slot of seq, or NULL for a seq before the first row walked or not walked yet. */
static uint16_t *s_slot(const audit_acks_t *self, int64_t seq)
{
    if (seq < self->base || seq >= self->next_seq) {
        return NULL;
    }
    size_t offset = (size_t)(seq - self->base);
    return &self->pages[offset >> PAGE_SHIFT][offset & (PAGE_SLOTS - 1)];
}

/* Writes the slot of seq, the next row walked; seqs skipped are unknown. */
static void s_set(audit_acks_t *self, int64_t seq, uint16_t value)
{
    acc_assert(seq >= self->next_seq);
    while (self->next_seq <= seq) {
        size_t offset = (size_t)(self->next_seq - self->base);
        if ((offset >> PAGE_SHIFT) == self->page_count) {
            self->pages = acc_xrealloc(self->pages, (self->page_count + 1) * sizeof(uint16_t *));
            self->pages[self->page_count++] = acc_xmalloc(PAGE_SLOTS * sizeof(uint16_t));
        }
        self->pages[offset >> PAGE_SHIFT][offset & (PAGE_SLOTS - 1)] =
            self->next_seq == seq ? value : (uint16_t)SLOT_UNKNOWN;
        self->next_seq++;
    }
}

void audit_acks_note_lost(audit_acks_t *self, int64_t lost_from, int64_t lost_to)
{
    self->incomplete = true;
    if (lost_to >= self->next_seq) {
        s_set(self, lost_to, (uint16_t)SLOT_UNKNOWN);
    }
    (void)lost_from; /* everything up to lost_to not walked is unknown already */
}

/* The index + 1 of a recipient agency, added when new; 0 when there are too many. */
static uint16_t s_agency(audit_acks_t *self, const char *name)
{
    if (self->agency_count > 0 && strcmp(self->agencies[self->agency_last], name) == 0) {
        return (uint16_t)(self->agency_last + 1);
    }
    for (size_t i = 0; i < self->agency_count; i++) {
        if (strcmp(self->agencies[i], name) == 0) {
            self->agency_last = i;
            return (uint16_t)(i + 1);
        }
    }
    if (self->agency_count == AGENCIES_MAX) {
        return 0;
    }
    self->agencies =
        acc_xrealloc(self->agencies, (self->agency_count + 1) * sizeof(self->agencies[0]));
    self->agencies[self->agency_count] = acc_xstrdup(name);
    self->agency_last = self->agency_count++;
    return (uint16_t)self->agency_count;
}

static size_t s_bucket(const audit_acks_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES])
{
    uint8_t h[crypto_shorthash_BYTES];
    (void)crypto_shorthash(h, id, ACC_LOGROW_SHARE_BYTES, self->hash_key);
    uint64_t v = 0;
    memcpy(&v, h, sizeof(v));
    return (size_t)v & (self->pending_cap - 1);
}

/* The entry for id, or the empty one where it would go. */
static s_pending_t *s_probe(const audit_acks_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES])
{
    size_t i = s_bucket(self, id);
    while (self->pending[i].seq != 0 &&
           memcmp(self->pending[i].id, id, ACC_LOGROW_SHARE_BYTES) != 0) {
        i = (i + 1) & (self->pending_cap - 1);
    }
    return &self->pending[i];
}

static bool s_is_awaiting(const audit_acks_t *self, int64_t seq)
{
    const uint16_t *slot = s_slot(self, seq);
    return slot != NULL && (*slot & SLOT_ACKED) == 0;
}

/* Rebuilds the table with only the shares still awaiting acknowledgement, at a
 * third full or less, so its size follows what is pending, not the log. */
static void s_rebuild(audit_acks_t *self)
{
    size_t live = 0;
    for (size_t i = 0; i < self->pending_cap; i++) {
        live += self->pending[i].seq != 0 && s_is_awaiting(self, self->pending[i].seq);
    }
    size_t cap = PENDING_MIN;
    while (cap < 3 * (live + 1)) {
        cap *= 2;
    }
    s_pending_t *old = self->pending;
    size_t old_cap = self->pending_cap;
    self->pending = acc_xcalloc(cap, sizeof(s_pending_t));
    self->pending_cap = cap;
    self->pending_used = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].seq != 0 && s_is_awaiting(self, old[i].seq)) {
            *s_probe(self, old[i].id) = old[i];
            self->pending_used++;
        }
    }
    free(old);
}

static void s_add_pending(audit_acks_t *self, const uint8_t id[ACC_LOGROW_SHARE_BYTES], int64_t seq)
{
    if (2 * (self->pending_used + 1) > self->pending_cap) {
        s_rebuild(self);
    }
    s_pending_t *p = s_probe(self, id);
    if (p->seq == 0) {
        self->pending_used++;
    }
    memcpy(p->id, id, ACC_LOGROW_SHARE_BYTES);
    p->seq = seq; /* a share id used twice: the later share is the one acknowledged */
}

static const char *s_or_none(const char *text)
{
    return text != NULL ? text : "(none)";
}

/* One seq a batched row lists. */
static acc_rc_t s_ack_seq(audit_acks_t *self, const acc_logrow_t *row, int64_t seq, uint16_t agency,
                          acc_err_t *err)
{
    if (seq >= row->seq) {
        return acc_err_set(err, ACC_ERR_INVALID, "acknowledges seq %lld, which is not before it",
                           (long long)seq);
    }
    if (seq < 1) {
        return acc_err_set(err, ACC_ERR_INVALID, "acknowledges seq %lld, which is not a shared row",
                           (long long)seq);
    }
    uint16_t *slot = s_slot(self, seq);
    if (slot == NULL || *slot == SLOT_UNKNOWN) {
        return ACC_OK; /* before the rows walked, or lost: nothing to check it against */
    }
    uint16_t to = (uint16_t)(*slot & SLOT_AGENCY);
    if (to == 0) {
        return acc_err_set(err, ACC_ERR_INVALID, "acknowledges seq %lld, which is not a shared row",
                           (long long)seq);
    }
    if (to != agency) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "acknowledges share seq %lld, a share to %.*s, not to %.*s",
                           (long long)seq, ACKED_MSG_MAX, self->agencies[to - 1], ACKED_MSG_MAX,
                           s_or_none(row->to_agency));
    }
    if ((*slot & SLOT_ACKED) != 0) {
        return acc_err_set(err, ACC_ERR_INVALID, "acknowledges share seq %lld a second time",
                           (long long)seq);
    }
    *slot |= SLOT_ACKED;
    return ACC_OK;
}

/* A batched row (schema 0008): its to_agency acknowledges the shares it lists. */
static acc_rc_t s_check_batch(audit_acks_t *self, const acc_logrow_t *row, acc_err_t *err)
{
    uint16_t agency = row->to_agency != NULL ? s_agency(self, row->to_agency) : 0;
    for (size_t i = 0; i < row->acked_count; i++) {
        if (i > 0 && row->acked_seqs[i] <= row->acked_seqs[i - 1]) {
            return acc_err_set(err, ACC_ERR_INVALID,
                               "acked_seqs not in ascending order: seq %lld follows seq %lld",
                               (long long)row->acked_seqs[i], (long long)row->acked_seqs[i - 1]);
        }
        acc_rc_t rc = s_ack_seq(self, row, row->acked_seqs[i], agency, err);
        if (rc != ACC_OK) {
            return rc;
        }
    }
    return ACC_OK;
}

/* A row of its own (before schema 0008): it names its share by share id. */
static acc_rc_t s_check_single(audit_acks_t *self, const acc_logrow_t *row, acc_err_t *err)
{
    s_pending_t *p = self->pending_cap > 0 ? s_probe(self, row->share_id) : NULL;
    uint16_t *slot = p != NULL && p->seq != 0 ? s_slot(self, p->seq) : NULL;
    uint16_t agency = row->to_agency != NULL ? s_agency(self, row->to_agency) : 0;
    if (slot != NULL && (*slot & SLOT_ACKED) == 0 && (*slot & SLOT_AGENCY) == agency) {
        *slot |= SLOT_ACKED;
        return ACC_OK;
    }
    if (self->incomplete && slot == NULL) {
        return ACC_OK; /* its share may be in rows not walked or lost */
    }
    char id[37];
    acc_uuid_format(id, row->share_id);
    return acc_err_set(err, ACC_ERR_INVALID,
                       "acknowledges share id %s, which is not an earlier share to %.*s awaiting "
                       "acknowledgement (no shared row to it has that id, or it was acknowledged "
                       "already)",
                       id, ACKED_MSG_MAX, s_or_none(row->to_agency));
}

acc_rc_t audit_acks_check(audit_acks_t *self, const acc_logrow_t *row, acc_err_t *err)
{
    const char *event = row->event != NULL ? row->event : "";
    bool acknowledged = strcmp(event, "acknowledged") == 0;
    if (row->acked_count > 0 && !acknowledged) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "acked_seqs on a row that is not an "
                           "acknowledgement");
    }
    if (row->seq < self->next_seq) {
        return ACC_OK; /* the verifier reports rows out of order before this is asked */
    }
    uint16_t slot = 0;
    /* what is delivered, and so acknowledged: shares, and (schema 0009) outcomes
     * back to publishers and lookups' notifications */
    bool delivered = strcmp(event, "shared") == 0 || strcmp(event, "outcome") == 0 ||
                     strcmp(event, "notified") == 0;
    if (delivered && row->to_agency != NULL) {
        slot = s_agency(self, row->to_agency);
        if (slot == 0) {
            return acc_err_set(err, ACC_ERR_LIMIT,
                               "shares to more than %u agencies: acknowledgements not checked",
                               AGENCIES_MAX);
        }
        s_add_pending(self, row->share_id, row->seq);
    }
    s_set(self, row->seq, slot);
    if (!acknowledged) {
        return ACC_OK;
    }
    return row->acked_count > 0 ? s_check_batch(self, row, err) : s_check_single(self, row, err);
}

char *audit_acks_ranges(const int64_t *seqs, size_t n, size_t max_ranges)
{
    size_t cap = 64;
    char *out = acc_xcalloc(cap, 1);
    size_t len = 0;
    size_t ranges = 0;
    for (size_t i = 0; i < n; ranges++) {
        size_t j = i;
        while (j + 1 < n && seqs[j] < INT64_MAX && seqs[j + 1] == seqs[j] + 1) {
            j++;
        }
        if (max_ranges > 0 && ranges == max_ranges) {
            char *more = acc_xasprintf("%s,... (%zu in all)", out, n);
            free(out);
            return more;
        }
        if (len + 48 > cap) {
            cap = 2 * cap + 48;
            out = acc_xrealloc(out, cap);
        }
        len += j > i ? (size_t)snprintf(out + len, cap - len, "%s%lld-%lld", i > 0 ? "," : "",
                                        (long long)seqs[i], (long long)seqs[j])
                     : (size_t)snprintf(out + len, cap - len, "%s%lld", i > 0 ? "," : "",
                                        (long long)seqs[i]);
        i = j + 1;
    }
    return out;
}
