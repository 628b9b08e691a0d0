/* pubset.c - an open-addressing set of (agency, record_id) for one batch */
#include "pubset.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "accord/rc.h"

#define PUBSET_FIRST_CAP 256
#define PUBSET_SEP       '\x1f'

void pubset_init(pubset_t *set)
{
    memset(set, 0, sizeof(*set));
    randombytes_buf(set->sip_key, sizeof(set->sip_key));
}

static char *s_key(const char *from, const char *record_id)
{
    return acc_xasprintf("%s%c%s", from, PUBSET_SEP, record_id);
}

static size_t s_slot(const pubset_t *set, const char *key)
{
    uint8_t h[crypto_shorthash_BYTES];
    (void)crypto_shorthash(h, (const uint8_t *)key, strlen(key), set->sip_key);
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(h); i++) {
        v = v << 8 | h[i];
    }
    return (size_t)(v & (set->cap - 1));
}

/* The slot holding key, or the empty slot where it would go. */
static pubset_entry_t *s_probe(const pubset_t *set, const char *key)
{
    size_t i = s_slot(set, key);
    while (set->slots[i].key != NULL && strcmp(set->slots[i].key, key) != 0) {
        i = (i + 1) & (set->cap - 1);
    }
    return &set->slots[i];
}

pubset_entry_t *pubset_find(const pubset_t *set, const char *from, const char *record_id)
{
    if (set->count == 0) {
        return NULL;
    }
    char *key = s_key(from, record_id);
    pubset_entry_t *e = s_probe(set, key);
    free(key);
    return e->key != NULL ? e : NULL;
}

static void s_grow(pubset_t *set)
{
    pubset_t old = *set;
    set->cap = old.cap == 0 ? PUBSET_FIRST_CAP : old.cap * 2;
    set->slots = acc_xcalloc(set->cap, sizeof(*set->slots));
    for (size_t i = 0; i < old.cap; i++) {
        if (old.slots[i].key != NULL) {
            *s_probe(set, old.slots[i].key) = old.slots[i];
        }
    }
    free(old.slots);
}

pubset_entry_t *pubset_put(pubset_t *set, const char *from, const char *record_id)
{
    if ((set->count + 1) * 2 > set->cap) { /* at most half full: probes stay short */
        s_grow(set);
    }
    char *key = s_key(from, record_id);
    pubset_entry_t *e = s_probe(set, key);
    if (e->key != NULL) {
        free(key);
        return e;
    }
    memset(e, 0, sizeof(*e));
    e->key = key;
    set->count++;
    return e;
}

void pubset_keep_staged_after(pubset_t *set, uint64_t gen)
{
    if (set->count == 0) {
        return;
    }
    pubset_t old = *set;
    set->slots = acc_xcalloc(set->cap, sizeof(*set->slots));
    set->count = 0;
    for (size_t i = 0; i < old.cap; i++) {
        pubset_entry_t *e = &old.slots[i];
        if (e->key != NULL && e->staged && e->gen > gen) {
            *s_probe(set, e->key) = *e;
            set->count++;
        } else {
            free(e->key);
        }
    }
    free(old.slots);
}

void pubset_clear(pubset_t *set)
{
    if (set->count == 0) {
        return;
    }
    for (size_t i = 0; i < set->cap; i++) {
        free(set->slots[i].key);
    }
    memset(set->slots, 0, set->cap * sizeof(*set->slots));
    set->count = 0;
}

void pubset_free(pubset_t *set)
{
    pubset_clear(set);
    free(set->slots);
    set->slots = NULL;
    set->cap = 0;
}
