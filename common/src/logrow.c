/* logrow.c - a sharing-log row's canonical bytes, hash-chain link and payload sealing */
#include "accord/logrow.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/keys.h"

#define NULL_LEN 0xffffffffU

/* A streaming sink: a BLAKE2b state or a bounded buffer. Bytes past the
 * buffer's end are counted but not written, so a caller learns the size it needs. */
typedef struct {
    crypto_generichash_state *hash; /* NULL when writing to buf */
    uint8_t *buf;
    size_t cap;
    size_t len;
} s_sink_t;

static void s_put(s_sink_t *sink, const void *bytes, size_t len)
{
    if (sink->hash != NULL) {
        (void)crypto_generichash_update(sink->hash, bytes, len);
        return;
    }
    if (sink->len <= sink->cap && len <= sink->cap - sink->len) {
        memcpy(sink->buf + sink->len, bytes, len);
    }
    sink->len += len;
}

static void s_put_u32(s_sink_t *sink, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    s_put(sink, b, sizeof(b));
}

static void s_put_i64(s_sink_t *sink, int64_t value)
{
    uint64_t v = (uint64_t)value;
    uint8_t b[8];
    for (size_t i = 0; i < sizeof(b); i++) {
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    s_put(sink, b, sizeof(b));
}

static void s_put_blob(s_sink_t *sink, const void *bytes, size_t len)
{
    if (bytes == NULL) {
        s_put_u32(sink, NULL_LEN);
        return;
    }
    acc_assert(len < NULL_LEN);
    s_put_u32(sink, (uint32_t)len);
    s_put(sink, bytes, len);
}

static void s_put_str(s_sink_t *sink, const char *s)
{
    s_put_blob(sink, s, s == NULL ? 0 : strlen(s));
}

static void s_put_identity(s_sink_t *sink, const acc_logrow_t *row)
{
    s_put_i64(sink, row->seq);
    s_put_blob(sink, row->share_id, sizeof(row->share_id));
    s_put_str(sink, row->event);
    s_put_str(sink, row->from_agency);
    s_put_str(sink, row->to_agency);
    s_put_str(sink, row->record_type);
    s_put_str(sink, row->record_id);
    s_put_i64(sink, row->key_epoch);
}

void acc_logrow_hash(uint8_t out[ACC_LOGROW_HASH_BYTES], const uint8_t prev[ACC_LOGROW_HASH_BYTES],
                     const acc_logrow_t *row)
{
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, NULL, 0, ACC_LOGROW_HASH_BYTES);
    s_sink_t sink = { .hash = &st };
    s_put(&sink, "accord.log.v1", 13);
    s_put(&sink, prev, ACC_LOGROW_HASH_BYTES);
    s_put_identity(&sink, row);
    s_put_i64(&sink, row->at_us);
    s_put_blob(&sink, row->subject_tag, row->subject_tag == NULL ? 0 : ACC_LOGROW_TAG_BYTES);
    s_put_u32(&sink, (uint32_t)row->rule_count);
    for (size_t i = 0; i < row->rule_count; i++) {
        s_put_str(&sink, row->rule_ids[i]);
    }
    s_put_str(&sink, row->purpose);
    s_put_str(&sink, row->lawful_basis);
    s_put_str(&sink, row->consent);
    s_put_str(&sink, row->error_code);
    s_put_str(&sink, row->reason);
    s_put_blob(&sink, row->agreement_hash, row->agreement_hash == NULL ? 0 : 32);
    s_put_blob(&sink, row->nonce, row->nonce == NULL ? 0 : ACC_LOGROW_NONCE_BYTES);
    s_put_blob(&sink, row->payload, row->payload_len);
    s_put_blob(&sink, row->signature, row->signature == NULL ? 0 : ACC_LOGROW_SIG_BYTES);
    if (row->content_hash != NULL || row->acked_count > 0) {
        s_put(&sink, "accord.log.0008", 15);
        s_put_blob(&sink, row->content_hash, row->content_hash == NULL ? 0 : ACC_LOGROW_HASH_BYTES);
        acc_assert(row->acked_count < NULL_LEN);
        s_put_u32(&sink, (uint32_t)row->acked_count);
        for (size_t i = 0; i < row->acked_count; i++) {
            s_put_i64(&sink, row->acked_seqs[i]);
        }
    }
    if (row->refers_to != NULL) {
        s_put(&sink, "accord.log.0009", 15);
        s_put(&sink, row->refers_to, ACC_LOGROW_SHARE_BYTES);
    }
    (void)crypto_generichash_final(&st, out, ACC_LOGROW_HASH_BYTES);
}

/* NOLINTNEXTLINE(readability-non-const-parameter): out is written through the sink */
void acc_logrow_checkpoint_message(uint8_t out[ACC_LOGROW_CHECKPOINT_BYTES], int64_t seq,
                                   const uint8_t prev[ACC_LOGROW_HASH_BYTES])
{
    s_sink_t sink = { .buf = out, .cap = ACC_LOGROW_CHECKPOINT_BYTES };
    s_put(&sink, "accord.checkpoint.v1", 20);
    s_put_i64(&sink, seq);
    s_put(&sink, prev, ACC_LOGROW_HASH_BYTES);
    acc_assert(sink.len == ACC_LOGROW_CHECKPOINT_BYTES);
}

/* NOLINTNEXTLINE(readability-non-const-parameter): out is written through the sink */
void acc_logrow_restored_message(uint8_t out[ACC_LOGROW_RESTORED_BYTES], int64_t seq,
                                 const uint8_t prev[ACC_LOGROW_HASH_BYTES],
                                 const acc_logrow_cut_t *cut)
{
    s_sink_t sink = { .buf = out, .cap = ACC_LOGROW_RESTORED_BYTES };
    s_put(&sink, "accord.restored.v1", 18);
    s_put_i64(&sink, seq);
    s_put(&sink, prev, ACC_LOGROW_HASH_BYTES);
    s_put_i64(&sink, cut->lost_from);
    s_put_i64(&sink, cut->lost_to);
    s_put(&sink, cut->lost_hash, ACC_LOGROW_HASH_BYTES);
    acc_assert(sink.len == ACC_LOGROW_RESTORED_BYTES);
}

#define CUT_PREFIX "lost seq "
#define CUT_HASH   " (head hash "
#define CUT_TAIL                                                                           \
    "): the database was behind the broker's high-water mark (restored from a backup, or " \
    "lost data) and the operator accepted it with accordd --accept-restore"

void acc_logrow_cut_format(char *out, size_t out_len, const acc_logrow_cut_t *cut)
{
    char hex[2 * ACC_LOGROW_HASH_BYTES + 1];
    acc_hex_encode(hex, sizeof(hex), cut->lost_hash, ACC_LOGROW_HASH_BYTES);
    (void)snprintf(out, out_len, CUT_PREFIX "%lld-%lld" CUT_HASH "%s" CUT_TAIL,
                   (long long)cut->lost_from, (long long)cut->lost_to, hex);
}

/* A decimal number > 0 at *p, which is moved past it; 0 if there is none. */
static int64_t s_parse_seq(const char **p)
{
    int64_t v = 0;
    const char *c = *p;
    for (; *c >= '0' && *c <= '9' && v < INT64_MAX / 10 - 9; c++) {
        v = v * 10 + (*c - '0');
    }
    *p = c;
    return v;
}

acc_rc_t acc_logrow_cut_parse(acc_logrow_cut_t *out, const char *reason, acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    const char *p = reason != NULL ? reason : "";
    bool ok = strncmp(p, CUT_PREFIX, strlen(CUT_PREFIX)) == 0;
    p += ok ? strlen(CUT_PREFIX) : 0;
    out->lost_from = ok ? s_parse_seq(&p) : 0;
    ok = ok && out->lost_from > 0 && *p == '-';
    p += ok ? 1 : 0;
    out->lost_to = ok ? s_parse_seq(&p) : 0;
    ok = ok && out->lost_to >= out->lost_from && strncmp(p, CUT_HASH, strlen(CUT_HASH)) == 0;
    p += ok ? strlen(CUT_HASH) : 0;
    const size_t hex_len = (size_t)2 * ACC_LOGROW_HASH_BYTES;
    char hex[(size_t)2 * ACC_LOGROW_HASH_BYTES + 1] = "";
    if (ok && strlen(p) > hex_len) {
        memcpy(hex, p, hex_len);
        p += hex_len;
    }
    ok = ok && strcmp(p, CUT_TAIL) == 0 &&
         acc_hex_decode(out->lost_hash, ACC_LOGROW_HASH_BYTES, hex, err) == ACC_OK;
    if (!ok) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "a restored row's reason is not in the form "
                           "\"lost seq A-B (head hash HEX): ...\"");
    }
    return ACC_OK;
}

/* NOLINTNEXTLINE(readability-non-const-parameter): out is written through the sink */
size_t acc_logrow_ad(uint8_t *out, size_t out_len, const acc_logrow_t *row)
{
    s_sink_t sink = { .buf = out, .cap = out_len };
    s_put(&sink, "accord.payload.v1", 17);
    s_put_identity(&sink, row);
    return sink.len;
}

/* The row's associated data fits the stack buffer unless a string is unusually
 * long (validation bounds them); then it gets a buffer of its own. */
static uint8_t *s_ad_new(uint8_t *stack_ad, const acc_logrow_t *row, size_t *ad_len)
{
    *ad_len = acc_logrow_ad(NULL, 0, row);
    uint8_t *ad = *ad_len <= ACC_LOGROW_AD_MAX ? stack_ad : acc_xmalloc(*ad_len);
    (void)acc_logrow_ad(ad, *ad_len, row);
    return ad;
}

static void s_ad_free(uint8_t *ad, const uint8_t *stack_ad)
{
    if (ad != stack_ad) {
        free(ad);
    }
}

void acc_logrow_seal(uint8_t *out, size_t out_len, const uint8_t *plain, size_t plain_len,
                     const acc_logrow_t *row, const uint8_t key[ACC_LOGROW_KEY_BYTES])
{
    acc_assert(out_len == plain_len + ACC_LOGROW_MAC_BYTES);
    acc_assert(row->nonce != NULL);
    uint8_t stack_ad[ACC_LOGROW_AD_MAX];
    size_t ad_len = 0;
    uint8_t *ad = s_ad_new(stack_ad, row, &ad_len);
    unsigned long long written = 0;
    (void)crypto_aead_xchacha20poly1305_ietf_encrypt(out, &written, plain, plain_len, ad, ad_len,
                                                     NULL, row->nonce, key);
    s_ad_free(ad, stack_ad);
    acc_assert(written == out_len);
}

acc_rc_t acc_logrow_open(uint8_t *out, size_t out_len, const acc_logrow_t *row,
                         const uint8_t key[ACC_LOGROW_KEY_BYTES], acc_err_t *err)
{
    if (row->payload == NULL || row->nonce == NULL || row->payload_len < ACC_LOGROW_MAC_BYTES ||
        out_len != row->payload_len - ACC_LOGROW_MAC_BYTES) {
        return acc_err_set(err, ACC_ERR_INVALID, "log row %lld has no payload of the right size",
                           (long long)row->seq);
    }
    uint8_t stack_ad[ACC_LOGROW_AD_MAX];
    size_t ad_len = 0;
    uint8_t *ad = s_ad_new(stack_ad, row, &ad_len);
    unsigned long long written = 0;
    int failed = crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, &written, NULL, row->payload, row->payload_len, ad, ad_len, row->nonce, key);
    s_ad_free(ad, stack_ad);
    if (failed != 0) {
        return acc_err_set(err, ACC_ERR_CRYPTO,
                           "payload of log row %lld does not decrypt: wrong key, or the row or "
                           "its ciphertext was changed",
                           (long long)row->seq);
    }
    return ACC_OK;
}

void acc_uuid_format(char out[37], const uint8_t id[ACC_LOGROW_SHARE_BYTES])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < ACC_LOGROW_SHARE_BYTES; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 0x0f];
    }
    out[o] = '\0';
}

static int s_hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

acc_rc_t acc_uuid_parse(uint8_t out[ACC_LOGROW_SHARE_BYTES], const char *text, acc_err_t *err)
{
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    size_t n = 0;
    for (const char *p = text; *p != '\0'; p++) {
        size_t pos = (size_t)(p - text);
        if ((pos == 8 || pos == 13 || pos == 18 || pos == 23) && *p == '-') {
            continue;
        }
        int hi = s_hexval(*p);
        int lo = p[1] == '\0' ? -1 : s_hexval(p[1]);
        if (hi < 0 || lo < 0 || n == sizeof(id)) {
            return acc_err_set(err, ACC_ERR_INVALID, "share id is not a UUID");
        }
        id[n++] = (uint8_t)(hi << 4 | lo);
        p++;
    }
    if (n != sizeof(id) || strlen(text) != 36) {
        return acc_err_set(err, ACC_ERR_INVALID, "share id is not a UUID");
    }
    memcpy(out, id, sizeof(id));
    return ACC_OK;
}

/* The random bits of version-7 ids come from a pool of libsodium's randomness,
 * refilled 4 KiB at a time: randombytes_buf is a getrandom(2) call each time, and
 * the broker makes an id for every log row (a tenth of its loop's time went on
 * those calls under load). The pool is per thread; a process forked from one
 * holding it fills its own (pthread_atfork), so parent and child never hand out
 * the same bits. Ids are not secrets, and the pool's bytes are used once. */
#define UUID_POOL_BYTES 4096

static _Thread_local uint8_t s_pool[UUID_POOL_BYTES];
static _Thread_local size_t s_pool_next = UUID_POOL_BYTES;
static _Thread_local unsigned s_pool_forks;
static atomic_uint s_forks;
static pthread_once_t s_pool_once = PTHREAD_ONCE_INIT;

static void s_on_fork_child(void)
{
    atomic_fetch_add(&s_forks, 1);
}

static void s_pool_register(void)
{
    (void)pthread_atfork(NULL, NULL, s_on_fork_child);
}

static void s_pool_take(uint8_t *out, size_t len)
{
    (void)pthread_once(&s_pool_once, s_pool_register);
    unsigned forks = atomic_load(&s_forks);
    if (s_pool_forks != forks || UUID_POOL_BYTES - s_pool_next < len) {
        randombytes_buf(s_pool, sizeof(s_pool));
        s_pool_next = 0;
        s_pool_forks = forks;
    }
    memcpy(out, s_pool + s_pool_next, len);
    s_pool_next += len;
}

void acc_uuid_v7(uint8_t out[ACC_LOGROW_SHARE_BYTES], uint64_t unix_ms)
{
    s_pool_take(out + 6, ACC_LOGROW_SHARE_BYTES - 6);
    for (int i = 0; i < 6; i++) { /* 48-bit big-endian milliseconds, then the version */
        out[i] = (uint8_t)(unix_ms >> (40 - 8 * i));
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x70);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

void acc_uuid_time_ordered(uint8_t out[ACC_LOGROW_SHARE_BYTES])
{
    struct timespec now;
    (void)clock_gettime(CLOCK_REALTIME, &now);
    acc_uuid_v7(out, (uint64_t)now.tv_sec * 1000U + (uint64_t)now.tv_nsec / 1000000U);
}

void acc_uuid_random(uint8_t out[ACC_LOGROW_SHARE_BYTES])
{
    randombytes_buf(out, ACC_LOGROW_SHARE_BYTES);
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}
