/* logrow.h - a sharing-log row's canonical bytes: its hash-chain link and its
 * payload's associated data, shared by the broker that writes and the auditor
 * that verifies */
#ifndef ACCORD_LOGROW_H
#define ACCORD_LOGROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/rc.h"

#define ACC_LOGROW_HASH_BYTES  32 /* BLAKE2b-256 */
#define ACC_LOGROW_SHARE_BYTES 16 /* a share id is a UUID */
#define ACC_LOGROW_TAG_BYTES   32 /* keyed BLAKE2b subject tag */
#define ACC_LOGROW_NONCE_BYTES 24 /* XChaCha20-Poly1305 */
#define ACC_LOGROW_KEY_BYTES   32
#define ACC_LOGROW_MAC_BYTES   16
#define ACC_LOGROW_MAX_RULES   16

/* One row of accord_log. Strings may be NULL (SQL NULL); blobs with length 0 are NULL. */
typedef struct {
    int64_t seq;
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    int64_t at_us; /* microseconds since the Unix epoch, UTC */
    const char *event;
    const char *from_agency;
    const char *to_agency;
    const char *record_type;
    const char *record_id;
    const uint8_t *subject_tag; /* ACC_LOGROW_TAG_BYTES or NULL */
    size_t rule_count;
    const char *rule_ids[ACC_LOGROW_MAX_RULES];
    const char *purpose;
    const char *lawful_basis;
    const char *consent;
    const char *error_code;
    const char *reason;
    const uint8_t *agreement_hash; /* 32 bytes */
    int64_t key_epoch;             /* 0 = none */
    const uint8_t *nonce;          /* ACC_LOGROW_NONCE_BYTES or NULL */
    const uint8_t *payload;        /* ciphertext with MAC, or NULL */
    size_t payload_len;
    const uint8_t *signature; /* checkpoints: ACC_LOGROW_SIG_BYTES, else NULL */
    /* From schema 0008. A publish's first row: BLAKE2b-256 of the record as
     * published (ACC_LOGROW_HASH_BYTES), else NULL. */
    const uint8_t *content_hash;
    /* An `acknowledged` row from schema 0008: the share seqs it acknowledges. */
    size_t acked_count;
    const int64_t *acked_seqs;
    /* From schema 0009: an `outcome` row's share, a `notified` row's lookup
     * (ACC_LOGROW_SHARE_BYTES), else NULL. */
    const uint8_t *refers_to;
} acc_logrow_t;

#define ACC_LOGROW_SIG_BYTES 64

/* The bytes a checkpoint signs: its own sequence number and the hash of the row
 * before it, so the signature vouches for the whole chain up to that row. */
#define ACC_LOGROW_CHECKPOINT_BYTES (20 + 8 + ACC_LOGROW_HASH_BYTES)
void acc_logrow_checkpoint_message(uint8_t out[ACC_LOGROW_CHECKPOINT_BYTES], int64_t seq,
                                   const uint8_t prev[ACC_LOGROW_HASH_BYTES]);

/* What a `restored` row declares: the rows lost_from..lost_to (inclusive) were
 * written once and are gone (the database was restored from a backup or lost
 * data), and the last of them had entry hash lost_hash. The broker writes it as
 * the row's reason, in a fixed form, and signs it with the row's seq and prev hash. */
#define ACC_LOGROW_EVENT_RESTORED "restored"
typedef struct {
    int64_t lost_from;
    int64_t lost_to;
    uint8_t lost_hash[ACC_LOGROW_HASH_BYTES];
} acc_logrow_cut_t;

#define ACC_LOGROW_RESTORED_BYTES (18 + 8 + ACC_LOGROW_HASH_BYTES + 8 + 8 + ACC_LOGROW_HASH_BYTES)
void acc_logrow_restored_message(uint8_t out[ACC_LOGROW_RESTORED_BYTES], int64_t seq,
                                 const uint8_t prev[ACC_LOGROW_HASH_BYTES],
                                 const acc_logrow_cut_t *cut);

/* The reason text of a restored row (out: at least ACC_LOGROW_CUT_TEXT_MAX bytes). */
#define ACC_LOGROW_CUT_TEXT_MAX 256
void acc_logrow_cut_format(char *out, size_t out_len, const acc_logrow_cut_t *cut);
/* Parses that text back; ACC_ERR_INVALID if it is not in the broker's form. */
ACC_NODISCARD acc_rc_t acc_logrow_cut_parse(acc_logrow_cut_t *out, const char *reason,
                                            acc_err_t *err);

/* entry = BLAKE2b-256(prev || canonical(row)). The canonical form is every
 * column in table order, each length-prefixed (big-endian u32; NULL is 0xffffffff),
 * integers as big-endian 64-bit, so no two different rows encode alike. The
 * columns schema 0008 added (content_hash, acked_seqs) follow the signature, and
 * only in rows that have either; then, only in rows that have it, the column
 * schema 0009 added (refers_to). Rows written before encode as they did. */
void acc_logrow_hash(uint8_t out[ACC_LOGROW_HASH_BYTES], const uint8_t prev[ACC_LOGROW_HASH_BYTES],
                     const acc_logrow_t *row);

/* The associated data binding a payload to its row: seq, share id, event, from,
 * to, record type, record id and key epoch, canonically encoded into out
 * (out_len bytes; out may be NULL when out_len is 0). Returns the length the
 * encoding needs; when that is more than out_len, out holds only its first
 * out_len bytes, so call again with a buffer that large. A ciphertext moved to
 * another row does not decrypt. ACC_LOGROW_AD_MAX is what validated rows need
 * at most; seal and open take a bigger buffer for anything longer. */
#define ACC_LOGROW_AD_MAX 1024
size_t acc_logrow_ad(uint8_t *out, size_t out_len, const acc_logrow_t *row);

/* Encrypts plain into out (plain_len + ACC_LOGROW_MAC_BYTES bytes) under key and
 * row->nonce, bound to the row's associated data. */
void acc_logrow_seal(uint8_t *out, size_t out_len, const uint8_t *plain, size_t plain_len,
                     const acc_logrow_t *row, const uint8_t key[ACC_LOGROW_KEY_BYTES]);

/* Decrypts row->payload into out (payload_len - MAC bytes). ACC_ERR_CRYPTO if the
 * key is wrong or the ciphertext or its row was changed. */
ACC_NODISCARD acc_rc_t acc_logrow_open(uint8_t *out, size_t out_len, const acc_logrow_t *row,
                                       const uint8_t key[ACC_LOGROW_KEY_BYTES], acc_err_t *err);

/* Formats a share id as a UUID string (37 bytes with NUL) and parses one back. */
void acc_uuid_format(char out[37], const uint8_t id[ACC_LOGROW_SHARE_BYTES]);
ACC_NODISCARD acc_rc_t acc_uuid_parse(uint8_t out[ACC_LOGROW_SHARE_BYTES], const char *text,
                                      acc_err_t *err);
/* A random version-4 UUID. */
void acc_uuid_random(uint8_t out[ACC_LOGROW_SHARE_BYTES]);
/* A version-7 UUID (RFC 9562): unix_ms in its first 48 bits, big-endian, then 74
 * random bits. Ids made in later milliseconds sort after earlier ones, so an index
 * on share ids grows at its right edge like the log; within one millisecond the
 * order is random, which is all the index needs. It says when it was made, to the
 * millisecond: no more than the row's own time beside it. */
void acc_uuid_v7(uint8_t out[ACC_LOGROW_SHARE_BYTES], uint64_t unix_ms);
/* acc_uuid_v7 at the current time: every share id the broker hands out. */
void acc_uuid_time_ordered(uint8_t out[ACC_LOGROW_SHARE_BYTES]);

#endif
