/* delivery.c - getting each share to its recipient, from the log */
#include "delivery.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/clock.h"
#include "accord/keys.h"
#include "accord/log.h"
#include "accord/pbwipe.h"
#include "broker_internal.h"

/* A subscriber holding this many deliveries, or bytes, unacknowledged is sent no
 * more until it acknowledges some: the rest wait in the log, not in memory. */
#define INFLIGHT_MAX       1000
#define INFLIGHT_BYTES_MAX ((size_t)16 * 1024 * 1024)

/* ...and none while this much it was sent sits unread in its TCP send queue: a
 * redelivery to a subscriber that stopped reading would only queue the same
 * deliveries again behind the ones it never read. */
#define SUBSCRIBER_UNREAD_MAX ((size_t)1024 * 1024)

#define PAGE_ROWS      500                       /* shares read from the log at a time */
#define PAGE_BYTES     ((size_t)4 * 1024 * 1024) /* ...or payload bytes at a time */
#define PAGE_LOW_WATER 100 /* read more when fewer than this are unacknowledged */
#define ERASE_EVERY_MS 10000

/* Acknowledgements are written together: one row per agency every ACK_DELAY_MS,
 * or at ACK_BATCH_MAX of them, rather than one with every commit. Until then an
 * acknowledgement is not durable: a crash means the share is delivered again,
 * which subscribers recognise (share id, and record). */
#define ACK_DELAY_MS  50
#define ACK_BATCH_MAX 4096

/* A delivery sent and not yet acknowledged. */
typedef struct {
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    size_t to_agency;
    size_t cursor;    /* its recipient's cursor for its record type */
    size_t frame_len; /* bytes of the Deliver sent, counted against the recipient */
    int64_t seq;      /* the share's log sequence */
    int64_t sent_at_ms;
} inflight_t;

/* A cursor's state: every share at or below acked_to is acknowledged, and so
 * are those in above (ascending). */
typedef struct {
    int64_t acked_to;
    int64_t *above;
    size_t count;
} cstate_t;

/* One recipient's cursor for one record type (see delivery.h), three times over:
 * as acknowledgements received make it (now), as the database holds it (saved),
 * and as the commit in flight writes it (sending, while in_flight). */
typedef struct {
    char *agency;
    char *record_type;
    int64_t acked_to; /* now: what is received */
    int64_t *above;
    size_t above_count;
    size_t above_cap;
    cstate_t saved;
    cstate_t sending;
    bool in_flight;
    bool unsaved;  /* new with a share not committed yet: its row is to be inserted */
    int64_t stuck; /* the lowest share of it that did not open this run; 0 if none */
} cursor_t;

/* An acknowledgement waiting for the next commit. */
typedef struct {
    size_t cursor;
    int64_t seq;
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
} ack_t;

struct delivery_t {
    inflight_t *inflight;
    size_t inflight_count;
    size_t inflight_cap;
    cursor_t *cursors;
    size_t cursor_count;
    size_t cursor_cap;
    ack_t *acks; /* received, not yet committed, in order */
    size_t ack_count;
    size_t ack_cap;
    int64_t acks_since_ms; /* when the first of them arrived */
    size_t acks_in_flight; /* the first this many are in the commit in flight */
    int64_t erased_at_ms;
};

delivery_t *delivery_new(void)
{
    return acc_xcalloc(1, sizeof(delivery_t));
}

static void s_cursor_free(cursor_t *c)
{
    free(c->agency);
    free(c->record_type);
    free(c->above);
    free(c->saved.above);
    free(c->sending.above);
}

void delivery_destroy(delivery_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    delivery_t *self = *self_p;
    for (size_t i = 0; i < self->cursor_count; i++) {
        s_cursor_free(&self->cursors[i]);
    }
    free(self->cursors);
    free(self->inflight);
    free(self->acks);
    free(self);
    *self_p = NULL;
}

/* ---- cursors ---- */

static size_t s_cursor_find(const delivery_t *self, const char *agency, const char *record_type)
{
    for (size_t i = 0; i < self->cursor_count; i++) {
        if (strcmp(self->cursors[i].agency, agency) == 0 &&
            strcmp(self->cursors[i].record_type, record_type) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

static size_t s_cursor_add(delivery_t *self, const char *agency, const char *record_type,
                           int64_t acked_to)
{
    if (self->cursor_count == self->cursor_cap) {
        self->cursor_cap = self->cursor_cap == 0 ? 16 : self->cursor_cap * 2;
        self->cursors = acc_xrealloc(self->cursors, self->cursor_cap * sizeof(*self->cursors));
    }
    cursor_t *c = &self->cursors[self->cursor_count];
    memset(c, 0, sizeof(*c));
    c->agency = acc_xstrdup(agency);
    c->record_type = acc_xstrdup(record_type);
    c->acked_to = acked_to;
    return self->cursor_count++;
}

static bool s_cursor_has(const cursor_t *c, int64_t seq)
{
    if (seq <= c->acked_to) {
        return true;
    }
    size_t lo = 0;
    size_t hi = c->above_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->above[mid] == seq) {
            return true;
        }
        if (c->above[mid] < seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return false;
}

/* dst = the cursor's current state. */
static void s_state_take(const cursor_t *c, cstate_t *dst)
{
    dst->acked_to = c->acked_to;
    free(dst->above);
    dst->above = NULL;
    dst->count = c->above_count;
    if (c->above_count > 0) {
        dst->above = acc_xmalloc(c->above_count * sizeof(*c->above));
        memcpy(dst->above, c->above, c->above_count * sizeof(*c->above));
    }
}

static void s_state_copy(cstate_t *dst, const cstate_t *src)
{
    dst->acked_to = src->acked_to;
    free(dst->above);
    dst->above = NULL;
    dst->count = src->count;
    if (src->count > 0) {
        dst->above = acc_xmalloc(src->count * sizeof(*src->above));
        memcpy(dst->above, src->above, src->count * sizeof(*src->above));
    }
}

/* True when the cursor has moved since the database last saved it. */
static bool s_cursor_moved(const cursor_t *c)
{
    return c->acked_to != c->saved.acked_to || c->above_count != c->saved.count ||
           (c->above_count > 0 &&
            memcmp(c->above, c->saved.above, c->above_count * sizeof(*c->above)) != 0);
}

static void s_cursor_insert(cursor_t *c, int64_t seq);

/* The cursor goes back to what the database holds. */
static void s_cursor_restore(cursor_t *c)
{
    c->acked_to = c->saved.acked_to;
    c->above_count = 0;
    for (size_t k = 0; k < c->saved.count; k++) {
        s_cursor_insert(c, c->saved.above[k]);
    }
}

static void s_cursor_insert(cursor_t *c, int64_t seq)
{
    if (c->above_count == c->above_cap) {
        c->above_cap = c->above_cap == 0 ? 16 : c->above_cap * 2;
        c->above = acc_xrealloc(c->above, c->above_cap * sizeof(*c->above));
    }
    size_t at = c->above_count;
    while (at > 0 && c->above[at - 1] > seq) {
        c->above[at] = c->above[at - 1];
        at--;
    }
    c->above[at] = seq;
    c->above_count++;
}

/* Moves acked_to up to to, dropping what it now covers. */
static void s_cursor_raise(cursor_t *c, int64_t to)
{
    if (to <= c->acked_to) {
        return;
    }
    c->acked_to = to;
    size_t drop = 0;
    while (drop < c->above_count && c->above[drop] <= to) {
        drop++;
    }
    if (drop > 0) {
        memmove(c->above, c->above + drop, (c->above_count - drop) * sizeof(*c->above));
        c->above_count -= drop;
    }
}

static void s_load_one(void *ctx, const ledger_cursor_t *lc)
{
    delivery_t *self = ctx;
    if (s_cursor_find(self, lc->agency, lc->record_type) != SIZE_MAX) {
        return;
    }
    size_t i = s_cursor_add(self, lc->agency, lc->record_type, lc->acked_to);
    cursor_t *c = &self->cursors[i];
    for (size_t k = 0; k < lc->above_count; k++) {
        if (lc->above[k] > lc->acked_to && !s_cursor_has(c, lc->above[k])) {
            s_cursor_insert(c, lc->above[k]);
        }
    }
    s_state_take(c, &c->saved);
}

acc_rc_t delivery_load(broker_t *b, acc_err_t *err)
{
    return ledger_load_cursors(b->ledger, s_load_one, b->delivery, err);
}

void delivery_note_share(broker_t *b, const char *to, const char *record_type, int64_t seq)
{
    delivery_t *self = b->delivery;
    if (s_cursor_find(self, to, record_type) == SIZE_MAX) {
        /* no share of this type went to this agency before: none is pending below */
        size_t i = s_cursor_add(self, to, record_type, seq - 1);
        cursor_t *c = &self->cursors[i];
        s_state_take(c, &c->saved);
        c->unsaved = true;
    }
}

/* ---- in flight ---- */

static void s_inflight_add(broker_t *b, size_t agency, size_t cursor, const uint8_t *share_id,
                           int64_t seq, size_t frame_len)
{
    delivery_t *self = b->delivery;
    if (self->inflight_count == self->inflight_cap) {
        self->inflight_cap = self->inflight_cap == 0 ? 64 : self->inflight_cap * 2;
        self->inflight = acc_xrealloc(self->inflight, self->inflight_cap * sizeof(*self->inflight));
    }
    inflight_t *f = &self->inflight[self->inflight_count++];
    memcpy(f->share_id, share_id, sizeof(f->share_id));
    f->to_agency = agency;
    f->cursor = cursor;
    f->frame_len = frame_len;
    f->seq = seq;
    f->sent_at_ms = acc_now_ms();
    if (agency < b->agency_slots) {
        b->agency_inflight[agency]++;
        b->agency_inflight_bytes[agency] += frame_len;
    }
}

/* Forgets inflight entry i (the last one takes its place). */
static void s_inflight_remove(broker_t *b, size_t i)
{
    delivery_t *self = b->delivery;
    inflight_t *f = &self->inflight[i];
    size_t agency = f->to_agency;
    /* counters are recounted with each agreement (delivery_agreement_changed) */
    if (agency < b->agency_slots && b->agency_inflight[agency] > 0) {
        b->agency_inflight[agency]--;
        b->agency_inflight_bytes[agency] -= f->frame_len < b->agency_inflight_bytes[agency]
                                                ? f->frame_len
                                                : b->agency_inflight_bytes[agency];
    }
    self->inflight[i] = self->inflight[--self->inflight_count];
}

static inflight_t *s_inflight_find(delivery_t *self, const uint8_t *share_id)
{
    for (size_t i = 0; i < self->inflight_count; i++) {
        if (memcmp(self->inflight[i].share_id, share_id, ACC_LOGROW_SHARE_BYTES) == 0) {
            return &self->inflight[i];
        }
    }
    return NULL;
}

size_t delivery_inflight(const broker_t *b)
{
    return b->delivery->inflight_count;
}

void delivery_forget_connection(broker_t *b, size_t agency)
{
    delivery_t *self = b->delivery;
    for (size_t i = 0; i < self->inflight_count;) {
        inflight_t *f = &self->inflight[i];
        if (f->to_agency == agency) {
            s_inflight_remove(b, i);
            continue;
        }
        i++;
    }
}

/* ---- sending ---- */

/* True when p's subscriptions take stream: a record type it subscribed to (all,
 * when it named none), or outcomes and notifications when its Hello said it
 * reads them (older agents did not: theirs wait in the log). */
static bool s_wants_type(const peer_t *p, const char *record_type)
{
    if (record_type[0] == '@') {
        return p->notices;
    }
    if (p->subscriptions.count == 0) {
        return true;
    }
    for (size_t i = 0; i < p->subscriptions.count; i++) {
        if (strcmp(p->subscriptions.items[i], record_type) == 0) {
            return true;
        }
    }
    return false;
}

static bool s_wants(const peer_t *p, size_t agency, const char *record_type)
{
    if (!p->known || p->who.auditor || p->who.index != agency || !p->welcomed || !p->subscriber ||
        p->closing || p->gone) {
        return false;
    }
    return s_wants_type(p, record_type);
}

static bool s_can_take_more(const broker_t *b, peer_t *p)
{
    size_t agency = p->who.index;
    bool full =
        agency < b->agency_slots && (b->agency_inflight[agency] >= INFLIGHT_MAX ||
                                     b->agency_inflight_bytes[agency] >= INFLIGHT_BYTES_MAX);
    return !full && peers_unread_within(p, SUBSCRIBER_UNREAD_MAX, acc_now_ms());
}

/* Every delivery leaves here: what is sent counts towards the connection's
 * unread bound (peers_unread_within) as it goes. */
static broker_send_rc_t s_send_to(broker_t *b, peer_t *p, const uint8_t *frame, size_t len)
{
    broker_send_rc_t sent = broker_send(b, p->rid, p->rid_len, frame, len);
    if (sent == BROKER_SEND_OK) {
        peers_note_sent(p, len);
    }
    return sent;
}

/* The agency's newest connection that takes deliveries, or NULL. */
static peer_t *s_subscriber(broker_t *b, size_t agency)
{
    for (size_t i = peers_count(b->peers); i-- > 0;) {
        peer_t *p = peers_at(b->peers, i);
        if (p->known && !p->who.auditor && p->who.index == agency && p->welcomed && p->subscriber &&
            !p->closing && !p->gone) {
            return p;
        }
    }
    return NULL;
}

void delivery_send_committed(broker_t *b, const out_t *o)
{
    if (o->to_agency >= acc_policy_agency_count(b->policy)) {
        return; /* its agency left the agreement while it was being committed */
    }
    const char *to = acc_policy_agency_id(b->policy, o->to_agency);
    size_t cursor = s_cursor_find(b->delivery, to, o->record_type);
    peer_t *p = s_subscriber(b, o->to_agency);
    if (p == NULL || cursor == SIZE_MAX || !s_wants(p, o->to_agency, o->record_type) ||
        p->backlog) {
        return; /* it arrives in log order when the subscriber is read from the log */
    }
    if (o->seq <= p->cursor) {
        /* already read from the log: the commit ended in PostgreSQL before the
         * loop saw it end, and delivery_pump ran in between */
        return;
    }
    if (!s_can_take_more(b, p)) {
        acc_log_info("delivery",
                     "%s holds too much unacknowledged or unread; its deliveries wait in the log",
                     p->id);
        p->backlog = true;
        return;
    }
    broker_send_rc_t sent = s_send_to(b, p, o->frame, o->frame_len);
    if (sent == BROKER_SEND_OK) {
        p->cursor = o->seq > p->cursor ? o->seq : p->cursor;
        s_inflight_add(b, o->to_agency, cursor, o->share_id, o->seq, o->frame_len);
    } else if (sent == BROKER_SEND_FULL) {
        acc_log_info("delivery", "%s is not keeping up; its deliveries wait in the log", p->id);
        p->backlog = true;
    }
}

/* A subscriber's Hello starts its deliveries again from the oldest pending one:
 * what was in flight on an earlier connection is sent again, in log order. */
void delivery_subscribe(broker_t *b, peer_t *peer)
{
    for (size_t i = 0; i < peers_count(b->peers); i++) {
        peer_t *other = peers_at(b->peers, i);
        if (other != peer && other->known && !other->who.auditor &&
            other->who.index == peer->who.index && other->subscriber) {
            other->subscriber = false; /* the newest connection receives */
        }
    }
    delivery_forget_connection(b, peer->who.index);
    peer->cursor = 0;
    peer->backlog = true;
    peer->last_ack_ms = acc_now_ms();
}

/* What is in flight on a connection the reload left as it was has not been
 * lost: sent again, it would arrive twice (DESIGN: redelivery is for a lost
 * connection, a timeout or a restart). The connections the reload retired
 * dropped theirs (s_on_retire), under the old indices, before the swap. */
void delivery_agreement_changed(broker_t *b)
{
    delivery_t *self = b->delivery;
    size_t kept = 0;
    for (size_t i = 0; i < self->inflight_count; i++) {
        inflight_t f = self->inflight[i];
        size_t agency = 0;
        if (!acc_policy_find_agency(b->policy, self->cursors[f.cursor].agency, &agency) ||
            s_subscriber(b, agency) == NULL) {
            continue; /* pending again: its agency's next subscriber is sent it from the log */
        }
        f.to_agency = agency;
        self->inflight[kept++] = f;
        if (agency < b->agency_slots) {
            b->agency_inflight[agency]++;
            b->agency_inflight_bytes[agency] += f.frame_len;
        }
    }
    self->inflight_count = kept;
}

/* ---- from the log ---- */

typedef struct {
    broker_t *b;
    peer_t *peer;
    int64_t after_seq;
    bool *pending_seen; /* per cursor: a pending share of it was met on this page */
    bool full;          /* the subscriber stopped taking deliveries: the rest waits */
} s_page_t;

/* An outcome or a lookup's notification read back from the log: its payload is
 * the notice as sent. NULL if it does not unpack. */
static uint8_t *s_notice_from_log(const ledger_share_t *d, size_t *len)
{
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    void *notice = NULL;
    if (strcmp(d->event, "outcome") == 0) {
        env.body_case = ACCORD__V1__ENVELOPE__BODY_OUTCOME_NOTICE;
        env.outcome_notice =
            accord__v1__outcome_notice__unpack(acc_pb_wiping_allocator(), d->record_len, d->record);
        notice = env.outcome_notice;
    } else {
        env.body_case = ACCORD__V1__ENVELOPE__BODY_LOOKUP_NOTICE;
        env.lookup_notice =
            accord__v1__lookup_notice__unpack(acc_pb_wiping_allocator(), d->record_len, d->record);
        notice = env.lookup_notice;
    }
    if (notice == NULL) {
        return NULL;
    }
    *len = accord__v1__envelope__get_packed_size(&env);
    uint8_t *frame = acc_xmalloc(*len);
    (void)accord__v1__envelope__pack(&env, frame);
    protobuf_c_message_free_unpacked(notice, acc_pb_wiping_allocator());
    return frame;
}

/* The Deliver for a share read back from the log: what the recipient was sent
 * when it was committed, rebuilt from its row. NULL if the record does not unpack. */
static uint8_t *s_frame_from_log(const ledger_share_t *d, size_t *len)
{
    if (strcmp(d->event, "shared") != 0) {
        return s_notice_from_log(d, len);
    }
    Accord__V1__ChildRecord *record =
        accord__v1__child_record__unpack(acc_pb_wiping_allocator(), d->record_len, d->record);
    if (record == NULL) {
        return NULL;
    }
    char share_id[37];
    acc_uuid_format(share_id, d->share_id);
    char hash[2 * ACC_POLICY_HASH_BYTES + 1];
    acc_hex_encode(hash, sizeof(hash), d->agreement_hash, ACC_POLICY_HASH_BYTES);
    char *rules = acc_xstrdup(d->rule_ids);
    char *rule_ptrs[ACC_POLICY_MAX_RULES_PER_RECIPIENT];
    size_t rule_count = 0;
    char *save = NULL;
    for (char *id = strtok_r(rules, ",", &save);
         id != NULL && rule_count < ACC_POLICY_MAX_RULES_PER_RECIPIENT;
         id = strtok_r(NULL, ",", &save)) {
        rule_ptrs[rule_count++] = id;
    }
    Accord__V1__Deliver deliver = ACCORD__V1__DELIVER__INIT;
    deliver.share_id = share_id;
    deliver.from_agency = acc_pb_str(d->from_agency);
    deliver.n_rule_ids = rule_count;
    deliver.rule_ids = rule_ptrs;
    deliver.purpose = acc_pb_str(d->purpose);
    deliver.lawful_basis = acc_pb_str(d->lawful_basis);
    deliver.agreement_hash = hash;
    deliver.record = record;
    /* the record keeps a justification only when the share was made on it */
    deliver.safeguarding_justification = record->safeguarding_justification;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER;
    env.deliver = &deliver;
    *len = accord__v1__envelope__get_packed_size(&env);
    uint8_t *frame = acc_xmalloc(*len);
    (void)accord__v1__envelope__pack(&env, frame);
    accord__v1__child_record__free_unpacked(record, acc_pb_wiping_allocator());
    free(rules);
    return frame;
}

static void s_send_frame(s_page_t *page, size_t cursor, const ledger_share_t *d,
                         const uint8_t *frame, size_t len)
{
    peer_t *peer = page->peer;
    broker_send_rc_t sent = s_send_to(page->b, peer, frame, len);
    page->full = sent == BROKER_SEND_FULL;
    if (sent == BROKER_SEND_OK) {
        peer->cursor = d->seq;
        s_inflight_add(page->b, peer->who.index, cursor, d->share_id, d->seq, len);
    }
}

static void s_send_pending(void *ctx, const ledger_share_t *d)
{
    s_page_t *page = ctx;
    peer_t *peer = page->peer;
    if (page->full) {
        return;
    }
    delivery_t *self = page->b->delivery;
    size_t cursor = s_cursor_find(self, peer->id, d->stream);
    if (cursor != SIZE_MAX && s_cursor_has(&self->cursors[cursor], d->seq)) {
        cursor_t *c = &self->cursors[cursor];
        /* read in log order from at or below the cursor, with every share of its
         * type acknowledged so far: the cursor itself can move up to here */
        if (page->after_seq <= c->acked_to && !page->pending_seen[cursor]) {
            s_cursor_raise(c, d->seq);
        }
        peer->cursor = d->seq;
        return;
    }
    if (cursor != SIZE_MAX) {
        page->pending_seen[cursor] = true;
    }
    if (cursor == SIZE_MAX || !s_wants(peer, peer->who.index, d->stream)) {
        peer->cursor = d->seq; /* narrowed away by its subscriptions */
        return;
    }
    if (!s_can_take_more(page->b, peer)) {
        page->full = true;
        return;
    }
    if (d->frame != NULL) {
        s_send_frame(page, cursor, d, d->frame, d->frame_len); /* kept from before 0008 */
        return;
    }
    cursor_t *c = &self->cursors[cursor];
    if (d->record == NULL) {
        /* it stays pending, and its cursor never passes it on this run */
        c->stuck = c->stuck == 0 || d->seq < c->stuck ? d->seq : c->stuck;
        peer->cursor = d->seq;
        return;
    }
    size_t len = 0;
    uint8_t *frame = s_frame_from_log(d, &len);
    if (frame == NULL) {
        acc_log_error("delivery", "a share to %s at seq %lld does not unpack; it is skipped",
                      peer->id, (long long)d->seq);
        peer->cursor = d->seq;
        return;
    }
    s_send_frame(page, cursor, d, frame, len);
    sodium_memzero(frame, len); /* a child's record */
    free(frame);
}

/* Where a subscriber's reading of the log starts: just above the lowest cursor of
 * the record types it takes. false when nothing can be pending for it. */
static bool s_read_from(const broker_t *b, const peer_t *p, int64_t *after)
{
    const delivery_t *self = b->delivery;
    bool any = false;
    int64_t lowest = 0;
    for (size_t i = 0; i < self->cursor_count; i++) {
        const cursor_t *c = &self->cursors[i];
        if (strcmp(c->agency, p->id) != 0 || !s_wants(p, p->who.index, c->record_type)) {
            continue;
        }
        if (!any || c->acked_to < lowest) {
            lowest = c->acked_to;
        }
        any = true;
    }
    *after = any && lowest > p->cursor ? lowest : p->cursor;
    return any;
}

static size_t s_inflight_for(const broker_t *b, size_t agency)
{
    return agency < b->agency_slots ? b->agency_inflight[agency] : 0;
}

/* Feeds each subscriber that is behind from the log, a page at a time, so an
 * agency offline for a week never fills the broker's memory. */
void delivery_pump(broker_t *b)
{
    if (ledger_staged(b->ledger) > 0) {
        return; /* between commits only */
    }
    for (size_t i = 0; i < peers_count(b->peers); i++) {
        peer_t *p = peers_at(b->peers, i);
        /* one that has not read what it was sent is not asked the database for
         * more, every loop turn, only to have it all wait again */
        if (!p->backlog || !p->subscriber || p->closing || p->gone ||
            s_inflight_for(b, p->who.index) >= PAGE_LOW_WATER || !s_can_take_more(b, p)) {
            continue;
        }
        int64_t after = 0;
        if (!s_read_from(b, p, &after)) {
            p->backlog = false;
            continue;
        }
        s_page_t target = { .b = b,
                            .peer = p,
                            .after_seq = after,
                            .pending_seen =
                                acc_xcalloc(b->delivery->cursor_count + 1, sizeof(bool)) };
        ledger_page_t page = { .agency = p->id,
                               .after_seq = after,
                               .limit = PAGE_ROWS,
                               .max_bytes = PAGE_BYTES,
                               .fn = s_send_pending,
                               .ctx = &target };
        acc_err_t err;
        acc_rc_t rc = ledger_pending(b->ledger, &page, &err);
        free(target.pending_seen);
        if (rc != ACC_OK) {
            acc_log_warn("delivery", "pending deliveries for %s not read: %s", p->id, err.msg);
            return;
        }
        p->backlog = page.count == PAGE_ROWS || page.cut || target.full;
    }
}

/* Deliveries unacknowledged for too long: the recipient's connection starts
 * again from its oldest pending share. */
void delivery_redeliver_due(broker_t *b)
{
    delivery_t *self = b->delivery;
    int64_t now = acc_now_ms();
    for (size_t i = 0; i < self->inflight_count; i++) {
        const inflight_t *f = &self->inflight[i];
        if (now - f->sent_at_ms < b->config->redeliver_after_ms) {
            continue;
        }
        peer_t *p = s_subscriber(b, f->to_agency);
        /* a subscriber still acknowledging is slow, not stuck: sending
         * everything again would only slow it further */
        if (p != NULL && now - p->last_ack_ms >= b->config->redeliver_after_ms) {
            acc_log_info("delivery", "redelivering to %s from its oldest pending share", p->id);
            delivery_subscribe(b, p);
            return; /* the inflight table changed under us */
        }
    }
}

/* ---- acknowledgements ---- */

static void s_advance(broker_t *b, size_t cursor, const peer_t *acker);

size_t delivery_acks_waiting(const broker_t *b)
{
    return b->delivery->ack_count;
}

int64_t delivery_acks_due_in_ms(const broker_t *b)
{
    const delivery_t *self = b->delivery;
    if (self->ack_count == 0) {
        return -1;
    }
    if (self->ack_count >= ACK_BATCH_MAX) {
        return 0;
    }
    int64_t left = ACK_DELAY_MS - (acc_now_ms() - self->acks_since_ms);
    return left > 0 ? left : 0;
}

/* What an acknowledgement names: the pending share's cursor and seq, or why it
 * could not be told (the database could not say; the agency has used its reads
 * of the log for the second). */
typedef struct {
    size_t cursor;
    int64_t seq;
    bool db_failed;
    char why[BROKER_BUDGET_WHY_MAX]; /* "" unless turned away for the budget */
} ack_target_t;

/* True when the acknowledgement names a pending share, found into *t. */
static bool s_ack_target(broker_t *b, const peer_t *peer, const uint8_t *share_id, ack_target_t *t)
{
    delivery_t *self = b->delivery;
    inflight_t *f = s_inflight_find(self, share_id);
    if (f != NULL) {
        if (f->to_agency != peer->who.index) {
            return false;
        }
        t->cursor = f->cursor;
        t->seq = f->seq;
        /* no longer in flight: the cursor holds it until its row is committed */
        s_inflight_remove(b, (size_t)(f - self->inflight));
        return true;
    }
    if (!broker_take(b, peer, BROKER_BUDGET_READS, t->why)) {
        return false;
    }
    ledger_share_ref_t ref;
    acc_err_t err;
    if (ledger_find_share(b->ledger, share_id, peer->id, &ref, &err) != ACC_OK) {
        acc_log_warn("delivery", "acknowledgement from %s not recorded yet: %s", peer->id, err.msg);
        t->db_failed = true;
        return false;
    }
    t->cursor = ref.found ? s_cursor_find(self, peer->id, ref.record_type) : SIZE_MAX;
    t->seq = ref.seq;
    return t->cursor != SIZE_MAX && !s_cursor_has(&self->cursors[t->cursor], ref.seq);
}

void delivery_on_ack(broker_t *b, peer_t *peer, uint64_t correlation_id, const char *share_id_text)
{
    delivery_t *self = b->delivery;
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    acc_err_t err;
    ack_target_t t = { .cursor = SIZE_MAX, .seq = 0, .db_failed = false, .why = "" };
    bool pending = !peer->who.auditor && acc_uuid_parse(share_id, share_id_text, &err) == ACC_OK &&
                   s_ack_target(b, peer, share_id, &t);
    if (t.db_failed) {
        return; /* still pending: delivered again later, and acknowledged then */
    }
    if (t.why[0] != '\0') { /* not looked for: if pending, it is delivered again */
        broker_reply_error(b, peer, correlation_id, ACCORD__V1__ERROR_CODE__UNAVAILABLE, t.why);
        return;
    }
    if (!pending) {
        broker_reply_error(b, peer, correlation_id, ACCORD__V1__ERROR_CODE__UNKNOWN_SHARE,
                           "no delivery awaiting acknowledgement has this share id");
        return;
    }
    cursor_t *c = &self->cursors[t.cursor];
    if (s_cursor_has(c, t.seq)) {
        return; /* the same acknowledgement twice in one batch */
    }
    s_cursor_insert(c, t.seq);
    if (self->ack_count == self->ack_cap) {
        self->ack_cap = self->ack_cap == 0 ? 64 : self->ack_cap * 2;
        self->acks = acc_xrealloc(self->acks, self->ack_cap * sizeof(*self->acks));
    }
    if (self->ack_count == 0) {
        self->acks_since_ms = acc_now_ms();
    }
    ack_t *a = &self->acks[self->ack_count++];
    a->cursor = t.cursor;
    a->seq = t.seq;
    memcpy(a->share_id, share_id, sizeof(a->share_id));
    peer->last_ack_ms = acc_now_ms();
    /* now, while the connection that knows what it was sent is surely here: its
     * last frames are read even after it has gone */
    s_advance(b, t.cursor, peer);
}

/* The lowest share of the cursor's agency and type still in flight (not being
 * acknowledged), or INT64_MAX. */
static int64_t s_lowest_unacked(const delivery_t *self, size_t cursor)
{
    int64_t lowest = INT64_MAX;
    for (size_t i = 0; i < self->inflight_count; i++) {
        const inflight_t *f = &self->inflight[i];
        if (f->cursor == cursor && f->seq < lowest) {
            lowest = f->seq;
        }
    }
    return lowest;
}

/* Moves a cursor as far as is known safe: every pending share of its type up to
 * the position of its agency's subscribing connection (acker, if it is that
 * connection, else the newest) was sent on that connection, so what of them is
 * neither in flight nor acknowledged does not exist. */
static void s_advance(broker_t *b, size_t cursor, const peer_t *acker)
{
    cursor_t *c = &b->delivery->cursors[cursor];
    size_t agency = 0;
    if (!acc_policy_find_agency(b->policy, c->agency, &agency)) {
        return;
    }
    const peer_t *p = acker;
    if (p == NULL || !p->subscriber || p->closing || !p->known || p->who.auditor ||
        p->who.index != agency) {
        p = s_subscriber(b, agency);
    }
    if (p == NULL || !p->welcomed || !s_wants_type(p, c->record_type)) {
        return;
    }
    int64_t lowest = s_lowest_unacked(b->delivery, cursor);
    int64_t to = lowest == INT64_MAX ? p->cursor : lowest - 1;
    if (c->stuck != 0 && to >= c->stuck) {
        to = c->stuck - 1; /* a share that did not open is not acknowledged */
    }
    s_cursor_raise(c, to);
}

static int s_cmp_seq(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One `acknowledged` row for agency's acknowledgements among acks[from..]. */
static void s_stage_ack_row(broker_t *b, const char *agency, size_t from)
{
    delivery_t *self = b->delivery;
    int64_t *seqs = acc_xmalloc((self->ack_count - from) * sizeof(*seqs));
    size_t n = 0;
    for (size_t i = from; i < self->ack_count; i++) {
        if (strcmp(self->cursors[self->acks[i].cursor].agency, agency) == 0) {
            seqs[n++] = self->acks[i].seq;
        }
    }
    qsort(seqs, n, sizeof(*seqs), s_cmp_seq);
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "acknowledged";
    row.from_agency = agency;
    row.to_agency = agency;
    row.agreement_hash = acc_policy_hash(b->policy);
    row.acked_seqs = seqs;
    row.acked_count = n;
    (void)ledger_stage(b->ledger, &row, NULL, 0);
    free(seqs);
}

/* Stages the cursor's state st (its current one, or the one saved) for the
 * next commit. */
static void s_stage_cursor(broker_t *b, cursor_t *c, const cstate_t *st)
{
    s_state_copy(&c->sending, st);
    c->in_flight = true;
    ledger_cursor_t lc = { .agency = c->agency,
                           .record_type = c->record_type,
                           .acked_to = st->acked_to,
                           .above = st->above,
                           .above_count = st->count };
    ledger_stage_cursor(b->ledger, &lc);
}

void delivery_stage(broker_t *b, bool final)
{
    delivery_t *self = b->delivery;
    int64_t due = delivery_acks_due_in_ms(b);
    bool acks = due == 0 || (final && due > 0);
    self->acks_in_flight = acks ? self->ack_count : 0;
    for (size_t i = 0; i < self->acks_in_flight; i++) {
        const char *agency = self->cursors[self->acks[i].cursor].agency;
        bool first = true;
        for (size_t k = 0; k < i && first; k++) {
            first = strcmp(self->cursors[self->acks[k].cursor].agency, agency) != 0;
        }
        if (first) {
            s_stage_ack_row(b, agency, i);
        }
        if (ledger_has_legacy_outbox(b->ledger)) {
            ledger_stage_delivered(b->ledger, self->acks[i].share_id);
        }
    }
    bool rows = ledger_staged(b->ledger) > 0;
    for (size_t i = 0; i < self->cursor_count; i++) {
        cursor_t *c = &self->cursors[i];
        c->in_flight = false;
        if (acks) {
            s_advance(b, i, NULL);
        }
        /* the cursors as acknowledgements moved them go only with their rows; a
         * new one goes with its first share, as it was made */
        if (acks && (c->unsaved || s_cursor_moved(c))) {
            cstate_t now = { .acked_to = c->acked_to, .above = c->above, .count = c->above_count };
            s_stage_cursor(b, c, &now);
        } else if (c->unsaved && rows) {
            s_stage_cursor(b, c, &c->saved);
        }
    }
}

/* The acknowledgements were not written: their shares are pending again, and
 * their agencies' subscribers start again from the oldest. */
static void s_undo_acks(broker_t *b)
{
    delivery_t *self = b->delivery;
    for (size_t i = 0; i < self->cursor_count; i++) {
        cursor_t *c = &self->cursors[i];
        if (!s_cursor_moved(c)) {
            continue;
        }
        s_cursor_restore(c);
        size_t agency = 0;
        peer_t *p =
            acc_policy_find_agency(b->policy, c->agency, &agency) ? s_subscriber(b, agency) : NULL;
        if (p != NULL) {
            delivery_subscribe(b, p);
        }
    }
    self->ack_count = 0;
}

void delivery_settle(broker_t *b, bool committed)
{
    delivery_t *self = b->delivery;
    for (size_t i = 0; i < self->cursor_count; i++) {
        cursor_t *c = &self->cursors[i];
        if (committed && c->in_flight) {
            s_state_copy(&c->saved, &c->sending);
            c->unsaved = false;
        }
        c->in_flight = false;
    }
    if (committed) {
        size_t n = self->acks_in_flight;
        if (n > 0) {
            memmove(self->acks, self->acks + n, (self->ack_count - n) * sizeof(*self->acks));
            self->ack_count -= n;
        }
        if (n > 0 && self->ack_count > 0) {
            self->acks_since_ms = acc_now_ms(); /* those received while it was in flight */
        }
    } else if (self->acks_in_flight > 0) {
        s_undo_acks(b);
    }
    self->acks_in_flight = 0;
}

/* ---- the broker's copies of epoch keys ---- */

void delivery_erase_done_epochs(broker_t *b)
{
    delivery_t *self = b->delivery;
    int64_t now = acc_now_ms();
    if (now - self->erased_at_ms < ERASE_EVERY_MS || ledger_staged(b->ledger) > 0 ||
        !ledger_is_up(b->ledger)) {
        return;
    }
    self->erased_at_ms = now;
    uint8_t hash[ACC_LOGROW_HASH_BYTES];
    int64_t first = ledger_head(b->ledger, hash) + 1;
    for (size_t i = 0; i < self->cursor_count; i++) {
        if (self->cursors[i].acked_to + 1 < first) {
            first = self->cursors[i].acked_to + 1;
        }
    }
    acc_err_t err;
    if (ledger_erase_done_epochs(b->ledger, first, &err) != ACC_OK) {
        acc_log_warn("delivery", "acknowledged epochs' keys not erased yet: %s", err.msg);
    }
}
