/* ledger_audit.h - the sharing log as auditors read it: filtered pages of rows, and the
 * epoch keys sealed to them */
#ifndef ACCORD_BROKER_LEDGER_AUDIT_H
#define ACCORD_BROKER_LEDGER_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/rc.h"
#include "ledger.h"

/* Which rows an auditor asked for. Every filter left NULL or "" (0 for the numbers)
 * selects every row; the others are ANDed. Values are checked by the caller (the
 * tag computed from a valid NHS number, the share id a UUID, since and until
 * dates or times); a value PostgreSQL still refuses fails the query. */
typedef struct {
    uint64_t after_seq;         /* only rows logged after this sequence */
    const uint8_t *subject_tag; /* ACC_LOGROW_TAG_BYTES: the child's rows, the
                                 * acknowledgements of its shares, and every `restored` row */
    const char *agency;         /* either side of the row */
    const char *from_agency;
    const char *to_agency;
    const char *record_type;
    const char *event;
    const char *rule;      /* a rule id among the row's */
    const char *since;     /* at >= since (a timestamptz text) */
    const char *until;     /* at < until */
    const char *share_id;  /* text UUID: the share's rows, its acknowledgement and the rows
                            * referring to it (outcomes; for a lookup, the agencies told) */
    uint32_t overdue_days; /* > 0: shares older than this under one of outcome_rules that
                            * no outcome was reported on */
    const char *const *outcome_rules; /* the rules taking outcomes, for overdue_days */
    size_t outcome_rule_count;
    size_t limit;     /* rows of the page, at least 1 */
    bool payloads;    /* hand over nonces and payloads */
    size_t max_bytes; /* with payloads: a row is fetched only while the payloads before it
                       * in the page total at most this, so fn sees the row that crosses
                       * it and ends the page there */
} ledger_audit_filter_t;

/* Bytes read from the log; len 0 for a NULL or empty column. */
typedef struct {
    const uint8_t *data;
    size_t len;
} ledger_bytes_t;

/* One log row, every column of it. Strings are NULL for a NULL column; strings
 * and bytes are valid only during the callback. */
typedef struct {
    int64_t seq;
    const char *share_id; /* text UUID */
    const char *at;       /* ISO 8601, UTC, microseconds */
    int64_t at_us;        /* at in microseconds since 1970 */
    const char *event;
    const char *from_agency;
    const char *to_agency;
    const char *record_type;
    const char *record_id;
    ledger_bytes_t subject_tag;
    const char *const *rule_ids;
    size_t rule_count;
    const char *purpose;
    const char *lawful_basis;
    const char *consent;
    const char *error_code;
    const char *reason;
    ledger_bytes_t agreement_hash;
    int64_t key_epoch;    /* 0 when the row has none */
    ledger_bytes_t nonce; /* empty unless the filter asked for payloads */
    ledger_bytes_t payload;
    ledger_bytes_t signature;
    ledger_bytes_t prev_hash;
    ledger_bytes_t entry_hash;
    ledger_bytes_t content_hash;
    const int64_t *acked_seqs; /* an `acknowledged` row: the shares it acknowledges */
    size_t acked_count;
    const char *refers_to; /* text UUID; "" when the row refers to none */
} ledger_audit_row_t;

/* Called for each row of a page, in log order. Returns false to end the page
 * before row (it is not part of the page, and more rows follow). */
typedef bool ledger_audit_row_fn(void *ctx, const ledger_audit_row_t *row);

/* Calls fn for up to filter->limit rows matching filter, in log order, read in a
 * read-only transaction cancelled after the query timeout; *more says that more
 * rows follow: past the limit, past max_bytes, or from where fn ended the page.
 * ACC_ERR_DB with err set when the log could not be read (a cancelled query says
 * "statement timeout"); fn was then not called. Never call it with rows staged
 * mid-commit. */
ACC_NODISCARD acc_rc_t ledger_audit_page(ledger_t *self, const ledger_audit_filter_t *filter,
                                         ledger_audit_row_fn *fn, void *ctx, bool *more,
                                         acc_err_t *err);

/* An epoch key as sealed to one auditor (crypto_box_seal to its box key). Valid
 * only during the callback. */
typedef struct {
    int64_t epoch;
    ledger_bytes_t sealed_key;
} ledger_sealed_key_t;

typedef void ledger_sealed_key_fn(void *ctx, const ledger_sealed_key_t *key);

/* The keys one auditor needs to open a page's payloads. */
typedef struct {
    const char *auditor;
    const int64_t *epochs; /* the page's rows' key epochs; repeats allowed */
    size_t epoch_count;
    ledger_sealed_key_fn *fn; /* called for each key found, in no particular order */
    void *ctx;
} ledger_audit_keys_t;

/* Calls q->fn for each key of one of q->epochs sealed to q->auditor, read
 * under the query timeout. ACC_ERR_DB with err set when they could not be read;
 * fn was then not called. */
ACC_NODISCARD acc_rc_t ledger_audit_epoch_keys(ledger_t *self, const ledger_audit_keys_t *q,
                                               acc_err_t *err);

#endif
