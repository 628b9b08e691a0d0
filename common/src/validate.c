/* validate.c - the one validation boundary for what a peer sends */
#include "accord/validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/record.h"

#define RECORD_ID_CHARS  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
#define FIELD_NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define WALK_FIELDS_MAX  64 /* fields of any message in accord's protocol */
#define TAG_FIELD_MAX    ((1U << 29) - 1)

/* ---- UTF-8 ---- */

/* Length of the well-formed sequence at s[0..len), 0 if there is none. */
static size_t s_utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    if (c >= 0x01 && c <= 0x7f) {
        return 1;
    }
    size_t n = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* overlong */
        hi = c == 0xed ? 0x9f : 0xbf; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        lo = c == 0xf0 ? 0x90 : 0x80; /* overlong */
        hi = c == 0xf4 ? 0x8f : 0xbf; /* above U+10FFFF */
    } else {
        return 0; /* NUL, a continuation byte, 0xc0, 0xc1 or 0xf5-0xff */
    }
    if (len < n || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    return n;
}

bool acc_utf8_is_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = s_utf8_seq(p + i, len - i);
        if (n == 0) {
            return false;
        }
        i += n;
    }
    return true;
}

size_t acc_utf8_prefix_len(const char *s, size_t len, size_t max)
{
    if (len <= max) {
        return len;
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t cut = max;
    /* back over continuation bytes to the start of the character at the cut */
    while (cut > 0 && (p[cut] & 0xc0) == 0x80) {
        cut--;
    }
    return cut;
}

/* ---- the frame walk ---- */

/* One message being walked: where it ends and how often each field came. */
typedef struct {
    const ProtobufCMessageDescriptor *desc;
    const uint8_t *end;
    uint32_t counts[WALK_FIELDS_MAX];
} s_level_t;

/* An explicit stack rather than recursion: the depth is bounded by its size. */
typedef struct {
    const uint8_t *p;
    size_t unknown; /* unknown fields seen in the whole frame */
    size_t depth;   /* levels in use */
    s_level_t levels[ACC_VALIDATE_DEPTH_MAX];
    acc_err_t *reason;
} s_walk_t;

/* "Publish.record appears more than once"; f NULL for the message itself. */
static Accord__V1__ErrorCode s_malformed(acc_err_t *reason, const ProtobufCMessageDescriptor *desc,
                                         const ProtobufCFieldDescriptor *f, const char *what)
{
    (void)acc_err_set(reason, ACC_ERR_INVALID, "%s%s%s %s", desc->short_name, f != NULL ? "." : "",
                      f != NULL ? f->name : "", what);
    return ACCORD__V1__ERROR_CODE__MALFORMED;
}

/* Reads a varint of at most 10 bytes at *p, moving *p past it. */
static bool s_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* Skips a value of wire type wt ending by end; *body and *body_len get a
 * length-delimited one. */
static bool s_skip(s_walk_t *w, const uint8_t *end, unsigned wt, const uint8_t **body,
                   size_t *body_len)
{
    uint64_t v = 0;
    size_t left = (size_t)(end - w->p);
    switch (wt) {
    case 0:
        return s_varint(&w->p, end, &v);
    case 1:
        w->p += left >= 8 ? 8 : 0;
        return left >= 8;
    case 5:
        w->p += left >= 4 ? 4 : 0;
        return left >= 4;
    case 2: {
        /* protobuf-c reads a length in at most 5 bytes (an overlong 0 is refused) */
        const uint8_t *start = w->p;
        if (!s_varint(&w->p, end, &v) || w->p - start > 5 || v > (uint64_t)(end - w->p)) {
            return false;
        }
        *body = w->p;
        *body_len = (size_t)v;
        w->p += v;
        return true;
    }
    default:
        return false; /* groups (3, 4) and 6, 7 */
    }
}

/* The wire type a field of this type is written with (repeated scalars may
 * also come packed, as 2). */
static unsigned s_wire_type(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 1;
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return 5;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return 2;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_BOOL:
    case PROTOBUF_C_TYPE_ENUM:
        break;
    }
    return 0;
}

/* Counts the elements of a packed field's body as protobuf-c reads them:
 * varints of at most 10 bytes, or 4- or 8-byte values filling it exactly.
 * False when an element is cut short or too long. */
static bool s_packed_count(ProtobufCType type, const uint8_t *body, size_t len, size_t *count)
{
    size_t width = 0;
    switch (s_wire_type(type)) {
    case 1:
        width = 8;
        break;
    case 5:
        width = 4;
        break;
    default:
        break;
    }
    if (width != 0) {
        *count = len / width;
        return len % width == 0;
    }
    const uint8_t *p = body;
    const uint8_t *end = body + len;
    uint64_t v = 0;
    *count = 0;
    while (p < end) {
        if (!s_varint(&p, end, &v)) {
            return false;
        }
        ++*count;
    }
    return true;
}

/* True when another member of f's oneof was already seen in this message. */
static bool s_oneof_taken(const s_level_t *level, const ProtobufCFieldDescriptor *f)
{
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) == 0) {
        return false;
    }
    for (unsigned i = 0; i < level->desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *other = &level->desc->fields[i];
        if (other != f && level->counts[i] > 0 &&
            (other->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0 &&
            other->quantifier_offset == f->quantifier_offset) {
            return true;
        }
    }
    return false;
}

static void s_push(s_walk_t *w, const ProtobufCMessageDescriptor *desc, const uint8_t *end)
{
    acc_assert(desc->n_fields <= WALK_FIELDS_MAX); /* our own protocol's shape */
    s_level_t *level = &w->levels[w->depth++];
    level->desc = desc;
    level->end = end;
    memset(level->counts, 0, sizeof(level->counts));
}

/* One occurrence of a known field of the innermost message: counts, oneofs and
 * wire type; a message field's body becomes the innermost message. */
static Accord__V1__ErrorCode s_field(s_walk_t *w, const ProtobufCFieldDescriptor *f, unsigned wt)
{
    s_level_t *level = &w->levels[w->depth - 1];
    bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
    unsigned want = s_wire_type(f->type);
    if (wt != want && !(repeated && want != 2 && wt == 2)) {
        return s_malformed(w->reason, level->desc, f, "has the wrong wire type");
    }
    if (s_oneof_taken(level, f)) {
        return s_malformed(w->reason, level->desc, f, "is a second member of its oneof");
    }
    const uint8_t *body = NULL;
    size_t body_len = 0;
    if (!s_skip(w, level->end, wt, &body, &body_len)) {
        return s_malformed(w->reason, level->desc, f, "is truncated");
    }
    /* a packed field holds any number of elements, each read whole and counted */
    size_t occurrences = 1;
    if (wt == 2 && want != 2 && !s_packed_count(f->type, body, body_len, &occurrences)) {
        return s_malformed(w->reason, level->desc, f, "has a packed element cut short");
    }
    uint32_t *count = &level->counts[f - level->desc->fields];
    if (occurrences > (repeated ? ACC_VALIDATE_REPEATED_MAX : 1) - *count) {
        return s_malformed(w->reason, level->desc, f,
                           repeated ? "is repeated more than 1024 times"
                                    : "appears more than once");
    }
    *count += (uint32_t)occurrences;
    if (f->type == PROTOBUF_C_TYPE_STRING && memchr(body, 0, body_len) != NULL) {
        return s_malformed(w->reason, level->desc, f, "holds a NUL byte");
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        if (w->depth == ACC_VALIDATE_DEPTH_MAX) {
            return s_malformed(w->reason, level->desc, f, "is nested more than 8 levels deep");
        }
        w->p = body; /* its end is where the enclosing message goes on */
        s_push(w, f->descriptor, body + body_len);
    }
    return ACCORD__V1__ERROR_CODE__OK;
}

/* Reads the next field of the innermost message. */
static Accord__V1__ErrorCode s_step(s_walk_t *w)
{
    const s_level_t *level = &w->levels[w->depth - 1];
    uint64_t tag = 0;
    const uint8_t *start = w->p;
    /* as protobuf-c reads them: at most 5 bytes, field numbers 1 to 2^29 - 1 */
    if (!s_varint(&w->p, level->end, &tag) || w->p - start > 5 || tag >> 3 == 0 ||
        tag >> 3 > TAG_FIELD_MAX) {
        return s_malformed(w->reason, level->desc, NULL, "has an invalid field tag");
    }
    unsigned wt = (unsigned)(tag & 7);
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(level->desc, (unsigned)(tag >> 3));
    if (f != NULL) {
        return s_field(w, f, wt);
    }
    const uint8_t *body = NULL;
    size_t body_len = 0;
    if (++w->unknown > ACC_VALIDATE_UNKNOWN_MAX || !s_skip(w, level->end, wt, &body, &body_len)) {
        return s_malformed(w->reason, level->desc, NULL, "has too many or invalid unknown fields");
    }
    return ACCORD__V1__ERROR_CODE__OK;
}

Accord__V1__ErrorCode acc_validate_frame(const uint8_t *buf, size_t len, size_t max_bytes,
                                         acc_err_t *reason)
{
    if (len > max_bytes) {
        (void)acc_err_set(reason, ACC_ERR_LIMIT, "frame of %zu bytes is over the limit of %zu", len,
                          max_bytes);
        return ACCORD__V1__ERROR_CODE__TOO_LARGE;
    }
    if (len == 0) {
        return ACCORD__V1__ERROR_CODE__OK; /* an empty Envelope (buf may be NULL) */
    }
    s_walk_t *w = acc_xcalloc(1, sizeof(*w));
    w->p = buf;
    w->reason = reason;
    s_push(w, &accord__v1__envelope__descriptor, buf + len);
    Accord__V1__ErrorCode code = ACCORD__V1__ERROR_CODE__OK;
    while (code == ACCORD__V1__ERROR_CODE__OK && w->depth > 0) {
        if (w->p == w->levels[w->depth - 1].end) {
            w->depth--;
        } else {
            code = s_step(w);
        }
    }
    free(w);
    return code;
}

/* ---- strings ---- */

typedef struct {
    acc_err_t *reason;
} s_check_t;

/* s must be valid UTF-8 and at most max bytes; path names it in the reason. */
static bool s_text(const s_check_t *c, const char *s, size_t max, const char *path)
{
    size_t len = strnlen(s, max + 1);
    if (len > max) {
        (void)acc_err_set(c->reason, ACC_ERR_INVALID, "%s is longer than %zu bytes", path, max);
        return false;
    }
    if (!acc_utf8_is_valid(s, len)) {
        (void)acc_err_set(c->reason, ACC_ERR_INVALID, "%s is not valid UTF-8", path);
        return false;
    }
    return true;
}

/* s must be 0-max bytes of chars (after s_text). */
static bool s_charset(const s_check_t *c, const char *s, size_t max, bool colon, const char *path)
{
    if (!s_text(c, s, max, path)) {
        return false;
    }
    if (strspn(s, colon ? RECORD_ID_CHARS : FIELD_NAME_CHARS) != strlen(s)) {
        (void)acc_err_set(c->reason, ACC_ERR_INVALID, "%s may hold only %s", path,
                          colon ? "A-Z a-z 0-9 . _ : -" : "A-Z a-z 0-9 . _ -");
        return false;
    }
    return true;
}

bool acc_validate_is_record_id(const char *id)
{
    size_t len = strnlen(id, ACC_VALIDATE_RECORD_ID_MAX + 1);
    return len > 0 && len <= ACC_VALIDATE_RECORD_ID_MAX && strspn(id, RECORD_ID_CHARS) == len;
}

bool acc_validate_is_agency_id(const char *id)
{
    size_t len = strnlen(id, ACC_VALIDATE_AGENCY_ID_MAX + 1);
    return len > 0 && len <= ACC_VALIDATE_AGENCY_ID_MAX && strspn(id, RECORD_ID_CHARS) == len;
}

bool acc_validate_is_record_type(const char *type)
{
    size_t len = strnlen(type, ACC_VALIDATE_RECORD_TYPE_MAX + 1);
    return len > 0 && len <= ACC_VALIDATE_RECORD_TYPE_MAX && strspn(type, RECORD_ID_CHARS) == len;
}

bool acc_validate_is_field_name(const char *name, size_t len)
{
    if (len == 0 || len > ACC_VALIDATE_FIELD_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '\0' || strchr(FIELD_NAME_CHARS, name[i]) == NULL) {
            return false;
        }
    }
    return true;
}

/* ---- records ---- */

static bool s_subject(const s_check_t *c, const Accord__V1__Subject *s)
{
    return s == NULL ||
           (s_text(c, s->nhs_number, ACC_VALIDATE_NHS_NUMBER_MAX, "subject.nhs_number") &&
            s_text(c, s->local_id, ACC_VALIDATE_LOCAL_ID_MAX, "subject.local_id") &&
            s_text(c, s->given_name, ACC_VALIDATE_NAME_MAX, "subject.given_name") &&
            s_text(c, s->family_name, ACC_VALIDATE_NAME_MAX, "subject.family_name") &&
            s_text(c, s->date_of_birth, ACC_VALIDATE_DATE_OF_BIRTH_MAX, "subject.date_of_birth") &&
            s_text(c, s->postcode, ACC_VALIDATE_POSTCODE_MAX, "subject.postcode"));
}

/* Names and text values of a list of fields; what names the list in reasons. */
static bool s_field_list(const s_check_t *c, Accord__V1__Field *const *fields, size_t n, size_t max,
                         const char *what)
{
    if (n > max) {
        (void)acc_err_set(c->reason, ACC_ERR_INVALID, "%s: more than %zu fields", what, max);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const Accord__V1__Field *f = fields[i];
        char path[64];
        (void)snprintf(path, sizeof(path), "%s[%zu].name", what, i);
        if (!s_charset(c, f->name, ACC_VALIDATE_FIELD_NAME_MAX, false, path)) {
            return false;
        }
        (void)snprintf(path, sizeof(path), "%s[%zu].text", what, i);
        if (f->value_case == ACCORD__V1__FIELD__VALUE_TEXT &&
            !s_text(c, f->text, ACC_VALIDATE_TEXT_MAX, path)) {
            return false;
        }
    }
    return true;
}

static bool s_fields(const s_check_t *c, const Accord__V1__ChildRecord *rec)
{
    return s_field_list(c, rec->fields, rec->n_fields, ACC_VALIDATE_FIELDS_MAX, "fields");
}

/* Lengths, UTF-8 and charsets of the record's own strings. */
static bool s_record_strings(const s_check_t *c, const Accord__V1__ChildRecord *rec)
{
    return s_charset(c, rec->record_id, ACC_VALIDATE_RECORD_ID_MAX, true, "record_id") &&
           s_charset(c, rec->record_type, ACC_VALIDATE_RECORD_TYPE_MAX, true, "record_type") &&
           s_text(c, rec->occurred_at, ACC_VALIDATE_OCCURRED_AT_MAX, "occurred_at") &&
           s_text(c, rec->safeguarding_justification, ACC_VALIDATE_JUSTIFICATION_MAX,
                  "safeguarding_justification") &&
           s_subject(c, rec->subject);
}

Accord__V1__ErrorCode acc_validate_record(const Accord__V1__ChildRecord *rec, acc_err_t *reason)
{
    s_check_t c = { .reason = reason };
    if (!s_record_strings(&c, rec)) {
        return ACCORD__V1__ERROR_CODE__INVALID_RECORD;
    }
    if (!s_fields(&c, rec)) {
        return ACCORD__V1__ERROR_CODE__INVALID_FIELD;
    }
    size_t packed = accord__v1__child_record__get_packed_size(rec);
    if (packed > ACC_VALIDATE_RECORD_BYTES_MAX) {
        (void)acc_err_set(reason, ACC_ERR_LIMIT, "record of %zu bytes is over the limit of %zu",
                          packed, ACC_VALIDATE_RECORD_BYTES_MAX);
        return ACCORD__V1__ERROR_CODE__TOO_LARGE;
    }
    return acc_record_check(rec, reason);
}

Accord__V1__ErrorCode acc_validate_publish(const Accord__V1__Envelope *env, size_t max_bytes,
                                           acc_err_t *reason)
{
    Accord__V1__ErrorCode code = acc_validate_envelope(env, reason);
    if (code == ACCORD__V1__ERROR_CODE__OK &&
        env->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH && env->publish->record != NULL) {
        code = acc_validate_record(env->publish->record, reason);
    }
    size_t len = accord__v1__envelope__get_packed_size(env);
    if (code == ACCORD__V1__ERROR_CODE__OK && len > max_bytes) {
        (void)acc_err_set(reason, ACC_ERR_LIMIT, "message of %zu bytes is over the limit of %zu",
                          len, max_bytes);
        code = ACCORD__V1__ERROR_CODE__TOO_LARGE;
    }
    return code;
}

/* ---- envelopes ---- */

static bool s_hello(const s_check_t *c, const Accord__V1__Hello *h)
{
    if (!s_text(c, h->agency_id, ACC_VALIDATE_AGENCY_ID_MAX, "hello.agency_id") ||
        !s_text(c, h->software, ACC_VALIDATE_SOFTWARE_MAX, "hello.software")) {
        return false;
    }
    if (h->n_subscriptions > ACC_VALIDATE_SUBSCRIPTIONS_MAX) {
        (void)acc_err_set(c->reason, ACC_ERR_INVALID, "hello.subscriptions: more than %d",
                          ACC_VALIDATE_SUBSCRIPTIONS_MAX);
        return false;
    }
    for (size_t i = 0; i < h->n_subscriptions; i++) {
        char path[48];
        (void)snprintf(path, sizeof(path), "hello.subscriptions[%zu]", i);
        if (!s_charset(c, h->subscriptions[i], ACC_VALIDATE_RECORD_TYPE_MAX, true, path)) {
            return false;
        }
    }
    return true;
}

static bool s_audit_query(const s_check_t *c, const Accord__V1__AuditQuery *q)
{
    return s_text(c, q->child, ACC_VALIDATE_NHS_NUMBER_MAX, "audit_query.child") &&
           s_text(c, q->agency, ACC_VALIDATE_AGENCY_ID_MAX, "audit_query.agency") &&
           s_text(c, q->record_type, ACC_VALIDATE_RECORD_TYPE_MAX, "audit_query.record_type") &&
           s_text(c, q->event, ACC_VALIDATE_FILTER_MAX, "audit_query.event") &&
           s_text(c, q->since, ACC_VALIDATE_OCCURRED_AT_MAX, "audit_query.since") &&
           s_text(c, q->until, ACC_VALIDATE_OCCURRED_AT_MAX, "audit_query.until") &&
           s_text(c, q->from_agency, ACC_VALIDATE_AGENCY_ID_MAX, "audit_query.from_agency") &&
           s_text(c, q->to_agency, ACC_VALIDATE_AGENCY_ID_MAX, "audit_query.to_agency") &&
           s_text(c, q->rule, ACC_VALIDATE_FILTER_MAX, "audit_query.rule") &&
           s_text(c, q->share_id, ACC_VALIDATE_SHARE_ID_MAX, "audit_query.share_id");
}

static bool s_outcome(const s_check_t *c, const Accord__V1__Outcome *o)
{
    return s_text(c, o->share_id, ACC_VALIDATE_SHARE_ID_MAX, "outcome.share_id") &&
           s_charset(c, o->status, ACC_VALIDATE_STATUS_MAX, true, "outcome.status") &&
           s_field_list(c, o->fields, o->n_fields, ACC_VALIDATE_OUTCOME_FIELDS_MAX,
                        "outcome.fields");
}

static bool s_lookup(const s_check_t *c, const Accord__V1__Lookup *l)
{
    return s_text(c, l->purpose, ACC_VALIDATE_PURPOSE_MAX, "lookup.purpose") &&
           s_subject(c, l->subject);
}

static bool s_body(const s_check_t *c, const Accord__V1__Envelope *env)
{
    switch (env->body_case) {
    case ACCORD__V1__ENVELOPE__BODY_HELLO:
        return s_hello(c, env->hello);
    case ACCORD__V1__ENVELOPE__BODY_PUBLISH:
        return s_text(c, env->publish->from_agency, ACC_VALIDATE_AGENCY_ID_MAX,
                      "publish.from_agency");
    case ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK:
        return s_text(c, env->deliver_ack->share_id, ACC_VALIDATE_SHARE_ID_MAX,
                      "deliver_ack.share_id");
    case ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY:
        return s_audit_query(c, env->audit_query);
    case ACCORD__V1__ENVELOPE__BODY_OUTCOME:
        return s_outcome(c, env->outcome);
    case ACCORD__V1__ENVELOPE__BODY_LOOKUP:
        return s_lookup(c, env->lookup);
    case ACCORD__V1__ENVELOPE__BODY_HEARTBEAT:
    case ACCORD__V1__ENVELOPE__BODY__NOT_SET:
    case ACCORD__V1__ENVELOPE__BODY_WELCOME:
    case ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT:
    case ACCORD__V1__ENVELOPE__BODY_DELIVER:
    case ACCORD__V1__ENVELOPE__BODY_ERROR:
    case ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT:
    case ACCORD__V1__ENVELOPE__BODY_OUTCOME_RESULT:
    case ACCORD__V1__ENVELOPE__BODY_OUTCOME_NOTICE:
    case ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT:
    case ACCORD__V1__ENVELOPE__BODY_LOOKUP_NOTICE:
    case _ACCORD__V1__ENVELOPE__BODY__CASE_IS_INT_SIZE:
        break; /* nothing to check, or not accepted from a peer at all */
    }
    return true;
}

Accord__V1__ErrorCode acc_validate_envelope(const Accord__V1__Envelope *env, acc_err_t *reason)
{
    s_check_t c = { .reason = reason };
    return s_body(&c, env) ? ACCORD__V1__ERROR_CODE__OK : ACCORD__V1__ERROR_CODE__MALFORMED;
}
