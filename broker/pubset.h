/* pubset.h - what the current batch knows about earlier publishes of a record
 *
 * Idempotency asks, for every record published, whether the same (agency,
 * record_id) was accepted before. Asking PostgreSQL once per record costs a round
 * trip each; the broker asks once per batch instead and keeps the answers here,
 * together with the records the batch itself has staged. Keys are hashed with
 * SipHash under a random key, so a publisher cannot choose colliding ids; agency
 * ids never hold the separator (the agreement allows a-z 0-9 . _ -), so no two
 * (agency, record_id) pairs share a key. When a batch commits, only the
 * entries of the batch staged after it stay; when one fails, none. */
#ifndef ACCORD_BROKER_PUBSET_H
#define ACCORD_BROKER_PUBSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PUBSET_HASH_BYTES 32

typedef struct {
    char *key;                       /* owned "from<US>record_id"; NULL: empty slot */
    bool found;                      /* false: looked up, and never accepted before */
    bool staged;                     /* accepted in a batch not yet committed */
    uint64_t gen;                    /* staged: that batch's generation */
    uint8_t hash[PUBSET_HASH_BYTES]; /* the content hash, when found */
} pubset_entry_t;

typedef struct {
    pubset_entry_t *slots;
    size_t cap; /* a power of two, or 0 */
    size_t count;
    uint8_t sip_key[16];
} pubset_t;

void pubset_init(pubset_t *set);
/* The entry for (from, record_id), or NULL when the batch knows nothing of it. */
pubset_entry_t *pubset_find(const pubset_t *set, const char *from, const char *record_id);
/* The entry for (from, record_id), created (not found, not staged) if missing. */
pubset_entry_t *pubset_put(pubset_t *set, const char *from, const char *record_id);
/* Forgets every entry, keeping the memory. */
void pubset_clear(pubset_t *set);
/* Forgets every entry except those staged in a batch of generation above gen
 * (the batches after the one that just committed). */
void pubset_keep_staged_after(pubset_t *set, uint64_t gen);
void pubset_free(pubset_t *set);

#endif
