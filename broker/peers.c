/* peers.c - who is speaking: routing id, CURVE key and principal, checked per frame */
#include "peers.h"

#include <linux/sockios.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "accord/log.h"

struct peers_t {
    peer_t *items;
    size_t count;
    size_t cap;
    peers_retire_fn *retire;
    void *retire_ctx;
};

peers_t *peers_new(peers_retire_fn *retire, void *ctx)
{
    peers_t *self = acc_xcalloc(1, sizeof(*self));
    self->retire = retire;
    self->retire_ctx = ctx;
    return self;
}

void peers_destroy(peers_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    peers_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        acc_strlist_clear(&self->items[i].subscriptions);
    }
    free(self->items);
    free(self);
    *self_p = NULL;
}

size_t peers_count(const peers_t *self)
{
    return self->count;
}

peer_t *peers_at(peers_t *self, size_t index)
{
    acc_assert(index < self->count);
    return &self->items[index];
}

peer_t *peers_find(peers_t *self, const uint8_t *rid, size_t rid_len)
{
    for (size_t i = 0; i < self->count; i++) {
        peer_t *p = &self->items[i];
        if (p->rid_len == rid_len && memcmp(p->rid, rid, rid_len) == 0) {
            return p;
        }
    }
    return NULL;
}

void peers_retire(peers_t *self, peer_t *p, const char *why)
{
    if (p->closing) {
        return;
    }
    if (self->retire != NULL && !p->gone) {
        self->retire(self->retire_ctx, p, why);
    }
    p->closing = true;
    p->subscriber = false;
    p->welcomed = false;
}

static void s_remove(peers_t *self, size_t index)
{
    acc_strlist_clear(&self->items[index].subscriptions);
    self->items[index] = self->items[self->count - 1];
    self->count--;
}

void peers_reap(peers_t *self)
{
    for (size_t i = 0; i < self->count;) {
        if (self->items[i].closing) {
            s_remove(self, i);
        } else {
            i++;
        }
    }
}

/* ZeroMQ tells a ROUTER nothing of a connection that ends quietly, so a full
 * table forgets the entry heard from least recently. */
static void s_evict_oldest(peers_t *self)
{
    size_t oldest = 0;
    for (size_t i = 1; i < self->count; i++) {
        if (self->items[i].last_seen_ms < self->items[oldest].last_seen_ms) {
            oldest = i;
        }
    }
    peers_retire(self, &self->items[oldest], "the table of connections is full");
    s_remove(self, oldest);
}

static size_t s_count_key(const peers_t *self, const uint8_t *key)
{
    size_t n = 0;
    for (size_t i = 0; i < self->count; i++) {
        const peer_t *p = &self->items[i];
        n += !p->closing && !p->gone && sodium_memcmp(p->key, key, PEERS_KEY_BYTES) == 0 ? 1 : 0;
    }
    return n;
}

static void s_resolve(peer_t *p, const acc_policy_t *policy)
{
    p->known = acc_policy_find_key(policy, p->key, &p->who);
    if (p->known) {
        (void)snprintf(p->id, sizeof(p->id), "%s", p->who.id);
    } else {
        char hex[2 * 8 + 1];
        (void)sodium_bin2hex(hex, sizeof(hex), p->key, 8);
        (void)snprintf(p->id, sizeof(p->id), "key:%s", hex);
    }
}

static peer_t *s_add(peers_t *self, const acc_policy_t *policy, const peers_frame_t *frame)
{
    if (self->count == PEERS_MAX) {
        s_evict_oldest(self);
    }
    if (self->count == self->cap) {
        self->cap = self->cap == 0 ? 16 : self->cap * 2;
        self->items = acc_xrealloc(self->items, self->cap * sizeof(*self->items));
    }
    peer_t *p = &self->items[self->count++];
    memset(p, 0, sizeof(*p));
    memcpy(p->rid, frame->rid, frame->rid_len);
    p->rid_len = frame->rid_len;
    memcpy(p->key, frame->key, PEERS_KEY_BYTES);
    p->fd = frame->fd;
    p->last_seen_ms = frame->now_ms;
    s_resolve(p, policy);
    return p;
}

static bool s_is_same_connection(const peer_t *p, const peers_frame_t *frame)
{
    return !p->closing && p->fd == frame->fd &&
           sodium_memcmp(p->key, frame->key, PEERS_KEY_BYTES) == 0;
}

peers_rc_t peers_bind(peers_t *self, const acc_policy_t *policy, const peers_frame_t *frame,
                      peer_t **out)
{
    acc_assert(frame->rid_len <= PEERS_RID_MAX);
    peer_t *p = peers_find(self, frame->rid, frame->rid_len);
    if (p != NULL && s_is_same_connection(p, frame)) {
        p->last_seen_ms = frame->now_ms;
        *out = p;
        return PEERS_OK;
    }
    if (p != NULL) {
        /* a routing id is the peer's choice: once its connection has gone, anyone
         * may take it, so nothing of the old entry may carry over */
        peers_retire(self, p, "another connection now uses its routing id");
        s_remove(self, (size_t)(p - self->items));
    }
    if (s_count_key(self, frame->key) >= PEERS_PER_KEY_MAX) {
        return PEERS_TOO_MANY;
    }
    *out = s_add(self, policy, frame);
    return PEERS_OK;
}

void peers_disconnected(peers_t *self, int fd)
{
    for (size_t i = 0; i < self->count; i++) {
        peer_t *p = &self->items[i];
        if (p->fd == fd && !p->gone && !p->closing) {
            if (self->retire != NULL) {
                self->retire(self->retire_ctx, p, "its connection closed");
            }
            p->gone = true;
            p->subscriber = false;
        }
    }
}

peer_t *peers_connection(peers_t *self, const peers_frame_t *frame)
{
    peer_t *p = peers_find(self, frame->rid, frame->rid_len);
    return p != NULL && !p->gone && s_is_same_connection(p, frame) ? p : NULL;
}

bool peers_trusted(const peer_t *p)
{
    return !p->gone && !p->closing && p->fresh_run >= (uint32_t)PEERS_TRUST_AFTER << p->distrust;
}

void peers_note_publish(peer_t *p, bool repeat, bool caught_at_commit)
{
    if (!repeat) {
        p->fresh_run += p->fresh_run < UINT32_MAX ? 1 : 0;
        return;
    }
    p->fresh_run = 0;
    if (caught_at_commit && p->distrust < PEERS_DISTRUST_MAX) {
        p->distrust++;
    }
}

bool peers_is_current(peers_t *self, const uint8_t *rid, size_t rid_len,
                      const uint8_t key[PEERS_KEY_BYTES], int fd)
{
    const peer_t *p = peers_find(self, rid, rid_len);
    return p == NULL ||
           (!p->gone && p->fd == fd && sodium_memcmp(p->key, key, PEERS_KEY_BYTES) == 0);
}

void peers_rebind(peers_t *self, const acc_policy_t *policy)
{
    for (size_t i = 0; i < self->count; i++) {
        peer_t *p = &self->items[i];
        if (p->closing) {
            continue;
        }
        acc_principal_t who;
        bool found = acc_policy_find_key(policy, p->key, &who);
        if (!found || !p->known || strcmp(who.id, p->id) != 0 || who.auditor != p->who.auditor) {
            /* a revoked or rotated key stops at once: its next frame finds no
             * entry and is refused */
            peers_retire(self, p, "its key is no longer in the agreement for it");
            continue;
        }
        p->who = who;
    }
}

size_t peers_unread_bytes(const peer_t *p)
{
    /* ZMQ_SRCFD names libzmq's own descriptor for the connection; asking the
     * kernel how much of its send queue is outstanding changes nothing */
    int unread = 0;
    if (p->fd < 0 || ioctl(p->fd, SIOCOUTQ, &unread) != 0 || unread < 0) {
        return 0;
    }
    return (size_t)unread;
}

/* What a frame of the broker's costs on the wire beyond its bytes: the ZMTP frame
 * header and CURVE's MESSAGE command, its nonce and its MAC (under 64 bytes). */
#define FRAME_OVERHEAD 64

bool peers_unread_within(peer_t *p, size_t limit, int64_t now_ms)
{
    if (p->unread_asked_ms == 0 || p->unread_bound > limit ||
        now_ms - p->unread_asked_ms >= PEERS_UNREAD_ASK_MS) {
        p->unread_bound = peers_unread_bytes(p);
        p->unread_asked_ms = now_ms > 0 ? now_ms : 1;
    }
    return p->unread_bound <= limit;
}

void peers_note_sent(peer_t *p, size_t len)
{
    p->unread_bound += len + FRAME_OVERHEAD;
}
