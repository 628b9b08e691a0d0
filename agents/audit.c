/* audit.c - accord-audit: verify the sharing log's hash chain and decrypt a payload */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/harden.h"
#include "accord/keys.h"
#include "accord/log.h"
#include "accord/logrow.h"
#include "accord/pb.h"
#include "accord/pbwipe.h"
#include "accord/record.h"
#include "audit_acks.h"
#include "audit_wire.h"

#define EXIT_TAMPERED 1
#define EXIT_USAGE    2
#define EXIT_FAILED   3
#define EXIT_UNPINNED 4
#define EXIT_CUT      5
#define CUTS_MAX      8 /* restores reported one by one; more are counted */
#define SIGN_KEYS_MAX 8 /* --sign-key given more than once: a broker key rotation */

static const char s_row_columns[] =
    "seq, share_id::text, (extract(epoch FROM at) * 1000000)::bigint, event, from_agency,"
    " to_agency, record_type, record_id, subject_tag, to_json(rule_ids)::text, purpose,"
    " lawful_basis, consent, error_code, reason, agreement_hash, coalesce(key_epoch, 0), nonce,"
    " payload, prev_hash, entry_hash, signature, content_hash, acked_seqs::text, refers_to::text";

enum {
    C_SEQ,
    C_SHARE,
    C_AT,
    C_EVENT,
    C_FROM,
    C_TO,
    C_TYPE,
    C_RECORD,
    C_TAG,
    C_RULES,
    C_PURPOSE,
    C_BASIS,
    C_CONSENT,
    C_CODE,
    C_REASON,
    C_AGREEMENT,
    C_EPOCH,
    C_NONCE,
    C_PAYLOAD,
    C_PREV,
    C_ENTRY,
    C_SIG,
    C_CONTENT,
    C_ACKED,
    C_REFERS
};

/* One fetched row and the memory its pointers refer to. */
typedef struct {
    acc_logrow_t row;
    json_t *rules;
    unsigned char *blobs[8]; /* PQunescapeBytea output, freed with PQfreemem */
    size_t blob_len[8];
    const uint8_t *prev_hash;
    const uint8_t *entry_hash;
    int64_t *acked;                            /* row.acked_seqs */
    uint8_t refers_to[ACC_LOGROW_SHARE_BYTES]; /* row.refers_to */
    bool acked_empty; /* '{}': hashed like NULL, but not the same to accord_log_acks */
} s_fetched_t;

static void s_usage_verify(FILE *out)
{
    (void)fprintf(out,
                  "verify  walks the whole sharing log in sequence order (through the broker\n"
                  "        with --config, or from PostgreSQL with --db), recomputes every\n"
                  "        row's hash from its content and the previous row's hash, checks\n"
                  "        every checkpoint's signature against the broker signing public\n"
                  "        key the auditor pins from outside the database (--sign-key FILE,\n"
                  "        the hex key file `accord keygen` wrote, e.g. broker.sign.pub;\n"
                  "        repeat it, up to 8 times, for a log spanning a key rotation), and\n"
                  "        names the first row that does not verify. It checks every\n"
                  "        acknowledgement too, of either form (a row per share, or a batch\n"
                  "        listing share seqs): only earlier shares to the acknowledging\n"
                  "        agency, ascending, none acknowledged twice; this holds 2 bytes\n"
                  "        per row (20 MB for 10 million). The key the database\n"
                  "        records for each epoch is only a hint: one that is not pinned is\n"
                  "        reported as a WARNING and the signatures decide. Without\n"
                  "        --sign-key the run is UNPINNED: only the chain's internal\n"
                  "        consistency is checked, which anyone who can write the database\n"
                  "        can forge, and it exits 4 unless --unpinned is given. --witness\n"
                  "        FILE keeps the last checkpoint verified (written by pinned runs), so a\n"
                  "        later run notices a log cut back behind it or rewritten.\n"
                  "        A gap in the sequence is accepted only where a `restored` row,\n"
                  "        signed by the broker key, declares exactly those rows lost (the\n"
                  "        database was restored and the operator ran accordd\n"
                  "        --accept-restore); each is reported as RESTORED seq A-B, or as\n"
                  "        CUT seq A-B (exit 5) when the witness's checkpoint was among\n"
                  "        the lost rows.\n"
                  "        --since/--until TIME (ISO 8601; with --db, not with --witness)\n"
                  "        verify one period: the rows whose time is in [since, until),\n"
                  "        walking the chain from the last signed checkpoint at or before\n"
                  "        the first of them to the first signed checkpoint at or after the\n"
                  "        last, and saying which rows and checkpoints those were.\n"
                  "show    decrypts the payload of log row SEQ with the auditor's secret box\n"
                  "        key, on this machine, and prints the row and the record as JSON\n"
                  "        (with content_hash and acked_seqs where the row has them).\n"
                  "\n"
                  "CONNINFO is a libpq connection string; the role needs only accord_reader,\n"
                  "which sees ciphertext and metadata and can change nothing.\n"
                  "\n"
                  "Exit status: 0 verified against a pinned key (or, with --unpinned, the\n"
                  "chain is consistent) / shown / answered, 1 the log does not verify or the\n"
                  "payload does not decrypt, 2 usage, 3 could not read the database or key,\n"
                  "or the broker refused or could not answer (one that answers UNAVAILABLE,\n"
                  "busy with this auditor's other connections or its database, is asked\n"
                  "again for up to a minute), 4 the chain is consistent but\n"
                  "no broker signing key was pinned (--sign-key), so nothing was verified,\n"
                  "5 the log verifies but rows this auditor verified earlier (--witness) were\n"
                  "lost in a declared restore (the witness moves past the cut).\n");
}

static void s_usage(FILE *out)
{
    (void)fprintf(
        out, "usage: accord-audit log --config AUDITOR.yaml [FILTERS] [--csv | --json]\n"
             "       accord-audit show SHARE_ID --config AUDITOR.yaml --key AUDITOR.box.secret\n"
             "       accord-audit overdue --config AUDITOR.yaml --days N [FILTERS]\n"
             "                    [--csv | --json]\n"
             "       accord-audit subject-access NHS_NUMBER --config AUDITOR.yaml\n"
             "                    --key AUDITOR.box.secret [--json]\n"
             "       accord-audit verify --config AUDITOR.yaml --sign-key BROKER.sign.pub\n"
             "                    [--sign-key OLD.sign.pub] [--witness FILE]\n"
             "       accord-audit verify --db CONNINFO --sign-key BROKER.sign.pub\n"
             "                    [--sign-key OLD.sign.pub] [--witness FILE]\n"
             "       accord-audit verify --db CONNINFO --sign-key BROKER.sign.pub\n"
             "                    [--since TIME] [--until TIME]\n"
             "       accord-audit verify (--config AUDITOR.yaml | --db CONNINFO) --unpinned\n"
             "       accord-audit show SEQ --db CONNINFO --key AUDITOR.box.secret\n"
             "\n"
             "log     asks the broker, with the auditor's key from AUDITOR.yaml (the\n"
             "        agent.yaml format, agency: the auditor's id), for the log rows that\n"
             "        match every filter given, in sequence order. The broker records\n"
             "        each question as a `queried` row. Filters: --child NHS_NUMBER (found\n"
             "        through the keyed subject tag; the log never holds the number),\n"
             "        --agency ID (either side), --from ID, --to ID, --type TYPE,\n"
             "        --event EVENT, --rule RULE, --since TIME, --until TIME (ISO 8601;\n"
             "        since inclusive, until exclusive), --share SHARE_ID, --limit N.\n"
             "        Output: an aligned table (default), --csv, or --json (an array).\n"
             "        --share also finds the row that acknowledged the share, a row of\n"
             "        its own or a batch: a batch's acknowledged share seqs are\n"
             "        acked_seqs (and acked_count, acked_ranges) in --json, and\n"
             "        \"acknowledges seq A-B,...\" in the table's and CSV's last column.\n"
             "        --event outcome lists the outcomes recipients reported on shares\n"
             "        (status in the reason column), looked-up the involvement lookups,\n"
             "        notified the agencies told of them.\n"
             "overdue lists referrals still waiting: shares under a rule that takes\n"
             "        outcomes, logged more than N days ago, on which the recipient has\n"
             "        reported nothing. The log's filters narrow it (--from, --to,\n"
             "        --type, --rule, --since...), e.g. --from rft-emergency-department\n"
             "        --to rmbc-childrens-social-care --days 3.\n"
             "show SHARE_ID (with --config) fetches that share's rows through the\n"
             "        broker and decrypts the record here, exactly as the recipient\n"
             "        received it, with its rule, purpose, lawful basis and consent,\n"
             "        and when it was acknowledged (acknowledged_at, acknowledged_seq),\n"
             "        and each outcome its recipient reported on it, decrypted. Given a\n"
             "        lookup's id, the lookup's answer and each agency told of it.\n"
             "subject-access  everything shared, withheld or refused about one child,\n"
             "        every outcome reported on those shares, every lookup of the child\n"
             "        and who was told of it, and every query about them, oldest first,\n"
             "        decrypted here, each\n"
             "        share with when its recipient acknowledged it: a readable report,\n"
             "        or --json. Batched acknowledgements, which list other children's\n"
             "        shares too, are not listed; their time is on each share.\n"
             "\n");
    s_usage_verify(out);
}

static const char *s_text(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static const uint8_t *s_blob(s_fetched_t *f, size_t slot, PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        return NULL;
    }
    f->blobs[slot] =
        PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), &f->blob_len[slot]);
    return f->blobs[slot];
}

static void s_fetched_clear(s_fetched_t *f)
{
    for (size_t i = 0; i < sizeof(f->blobs) / sizeof(f->blobs[0]); i++) {
        PQfreemem(f->blobs[i]);
    }
    json_decref(f->rules);
    free(f->acked);
    memset(f, 0, sizeof(*f));
}

/* acked_seqs as PostgreSQL prints a bigint[] ({1,2,3}, {} or NULL); false for
 * anything else (a NULL element, more dimensions), which no row can hash. */
static bool s_parse_acked(s_fetched_t *f, const char *text)
{
    if (text == NULL) {
        return true;
    }
    size_t len = strlen(text);
    if (len < 2 || text[0] != '{' || text[len - 1] != '}') {
        return false;
    }
    size_t n = len > 2 ? 1 : 0;
    for (const char *c = text; *c != '\0'; c++) {
        n += *c == ',';
    }
    f->acked = acc_xcalloc(n + 1, sizeof(int64_t));
    const char *p = text + 1;
    for (size_t i = 0; i < n; i++) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno != 0 || (*end != ',' && *end != '}') || *p < '0' || *p > '9') {
            return false;
        }
        f->acked[i] = v;
        p = end + 1;
    }
    f->row.acked_seqs = f->acked;
    f->row.acked_count = n;
    f->acked_empty = n == 0;
    return n == 0 || p == text + len;
}

/* Fills f from one result row; false if a column has an impossible shape. */
static bool s_fetch(s_fetched_t *f, PGresult *res, int i)
{
    memset(f, 0, sizeof(*f));
    acc_logrow_t *r = &f->row;
    acc_err_t err;
    r->seq = strtoll(PQgetvalue(res, i, C_SEQ), NULL, 10);
    bool ok = acc_uuid_parse(r->share_id, PQgetvalue(res, i, C_SHARE), &err) == ACC_OK;
    r->at_us = strtoll(PQgetvalue(res, i, C_AT), NULL, 10);
    r->event = s_text(res, i, C_EVENT);
    r->from_agency = s_text(res, i, C_FROM);
    r->to_agency = s_text(res, i, C_TO);
    r->record_type = s_text(res, i, C_TYPE);
    r->record_id = s_text(res, i, C_RECORD);
    r->subject_tag = s_blob(f, 0, res, i, C_TAG);
    ok = ok && (r->subject_tag == NULL || f->blob_len[0] == ACC_LOGROW_TAG_BYTES);
    f->rules = json_loads(PQgetvalue(res, i, C_RULES), 0, NULL);
    r->rule_count = json_array_size(f->rules);
    ok = ok && r->rule_count <= ACC_LOGROW_MAX_RULES;
    for (size_t k = 0; ok && k < r->rule_count; k++) {
        r->rule_ids[k] = json_string_value(json_array_get(f->rules, k));
    }
    r->purpose = s_text(res, i, C_PURPOSE);
    r->lawful_basis = s_text(res, i, C_BASIS);
    r->consent = s_text(res, i, C_CONSENT);
    r->error_code = s_text(res, i, C_CODE);
    r->reason = s_text(res, i, C_REASON);
    r->agreement_hash = s_blob(f, 1, res, i, C_AGREEMENT);
    r->key_epoch = strtoll(PQgetvalue(res, i, C_EPOCH), NULL, 10);
    r->nonce = s_blob(f, 2, res, i, C_NONCE);
    r->payload = s_blob(f, 3, res, i, C_PAYLOAD);
    r->payload_len = f->blob_len[3];
    f->prev_hash = s_blob(f, 4, res, i, C_PREV);
    f->entry_hash = s_blob(f, 5, res, i, C_ENTRY);
    r->signature = s_blob(f, 6, res, i, C_SIG);
    ok = ok && (r->signature == NULL || f->blob_len[6] == ACC_LOGROW_SIG_BYTES);
    r->content_hash = s_blob(f, 7, res, i, C_CONTENT);
    ok = ok && (r->content_hash == NULL || f->blob_len[7] == ACC_LOGROW_HASH_BYTES);
    ok = ok && s_parse_acked(f, s_text(res, i, C_ACKED));
    const char *refers = s_text(res, i, C_REFERS);
    if (refers != NULL) {
        ok = ok && acc_uuid_parse(f->refers_to, refers, &err) == ACC_OK;
        r->refers_to = f->refers_to;
    }
    return ok && f->blob_len[1] == 32 &&
           (r->nonce == NULL || f->blob_len[2] == ACC_LOGROW_NONCE_BYTES) &&
           f->blob_len[4] == ACC_LOGROW_HASH_BYTES && f->blob_len[5] == ACC_LOGROW_HASH_BYTES;
}

/* The broker signing keys the auditor pins from outside the database. */
typedef struct {
    uint8_t keys[SIGN_KEYS_MAX][crypto_sign_PUBLICKEYBYTES];
    size_t count;     /* 0: unpinned */
    bool unpinned_ok; /* --unpinned: an unpinned run may still exit 0 */
} s_pins_t;

typedef struct {
    int64_t expected_seq;
    uint8_t hash[ACC_LOGROW_HASH_BYTES];
    uint64_t rows;
    uint64_t checkpoints;
    int64_t last_checkpoint;
    uint8_t last_checkpoint_hash[ACC_LOGROW_HASH_BYTES];
    int64_t witness_seq; /* a checkpoint verified on an earlier run (--state), 0 if none */
    uint8_t witness_hash[ACC_LOGROW_HASH_BYTES];
    bool witness_seen;
    acc_logrow_cut_t cuts[CUTS_MAX]; /* gaps declared by signed restored rows */
    int64_t cut_rows[CUTS_MAX];      /* ...the restored row's seq */
    int64_t cut_at_us[CUTS_MAX];     /* ...and when it was written */
    size_t cut_count;
    bool witness_cut;      /* the checkpoint of an earlier run lies in a declared cut */
    PGresult *broker_keys; /* --db: epoch, broker_key as the database records them */
    const s_pins_t *pins;
    audit_acks_t *acks; /* who acknowledged what, so far */
} s_chain_t;

/* The signing key the database names for an epoch: whoever can write the database
 * chooses it, so it decides nothing once a key is pinned. */
static const uint8_t *s_database_key(const s_chain_t *chain, int64_t epoch)
{
    for (int i = 0; i < PQntuples(chain->broker_keys); i++) {
        if (strtoll(PQgetvalue(chain->broker_keys, i, 0), NULL, 10) == epoch &&
            PQgetlength(chain->broker_keys, i, 1) == crypto_sign_PUBLICKEYBYTES) {
            return (const uint8_t *)PQgetvalue(chain->broker_keys, i, 1);
        }
    }
    return NULL;
}

/* Whether a checkpoint is signed by a pinned key; unpinned, by the key the database
 * names for its epoch, or through the broker (which sends no key) by anyone at all. */
static bool s_signature_holds(const s_chain_t *chain, const acc_logrow_t *row,
                              const uint8_t *message, size_t message_len)
{
    if (row->signature == NULL) {
        return false;
    }
    const s_pins_t *pins = chain->pins;
    for (size_t i = 0; i < pins->count; i++) {
        if (crypto_sign_verify_detached(row->signature, message, message_len, pins->keys[i]) == 0) {
            return true;
        }
    }
    if (pins->count > 0) {
        return false; /* pinned: no other key counts */
    }
    if (chain->broker_keys == NULL) {
        return true; /* unpinned through the broker: there is no key to check against */
    }
    const uint8_t *key = s_database_key(chain, row->key_epoch);
    return key != NULL &&
           crypto_sign_verify_detached(row->signature, message, message_len, key) == 0;
}

/* A checkpoint's signature covers its seq and the hash of the row before it. */
static bool s_verify_checkpoint(s_chain_t *chain, const acc_logrow_t *row)
{
    uint8_t message[ACC_LOGROW_CHECKPOINT_BYTES];
    acc_logrow_checkpoint_message(message, row->seq, chain->hash);
    if (!s_signature_holds(chain, row, message, sizeof(message))) {
        if (chain->pins->count == 0) {
            (void)printf("FAIL seq %lld: checkpoint signature does not verify with the broker "
                         "key the database names for epoch %lld\n",
                         (long long)row->seq, (long long)row->key_epoch);
        } else if (chain->last_checkpoint == 0) {
            (void)printf("FAIL seq %lld: checkpoint signature does not verify with the pinned "
                         "broker signing key: the log up to it may have been rewritten and "
                         "re-signed\n",
                         (long long)row->seq);
        } else {
            (void)printf("FAIL seq %lld: checkpoint signature does not verify with the pinned "
                         "broker signing key: the rows after seq %lld, the last checkpoint "
                         "that did, may have been rewritten and re-signed\n",
                         (long long)row->seq, (long long)chain->last_checkpoint);
        }
        return false;
    }
    chain->checkpoints++;
    chain->last_checkpoint = row->seq;
    return true;
}

static bool s_is_restored(const acc_logrow_t *row)
{
    return row->event != NULL && strcmp(row->event, ACC_LOGROW_EVENT_RESTORED) == 0;
}

static void s_note_cut(s_chain_t *chain, const acc_logrow_t *row, const acc_logrow_cut_t *cut)
{
    if (chain->witness_seq >= cut->lost_from && chain->witness_seq <= cut->lost_to) {
        chain->witness_cut = true;
    }
    if (chain->cut_count < CUTS_MAX) {
        chain->cuts[chain->cut_count] = *cut;
        chain->cut_rows[chain->cut_count] = row->seq;
        chain->cut_at_us[chain->cut_count] = row->at_us;
    }
    chain->cut_count++;
    audit_acks_note_lost(chain->acks, cut->lost_from, cut->lost_to);
}

/* A restored row may follow a gap only if it declares exactly that gap and the
 * broker's signing key vouches for the declaration and the row it is chained to. */
static bool s_verify_restored(s_chain_t *chain, const acc_logrow_t *row)
{
    acc_logrow_cut_t cut;
    acc_err_t err;
    if (acc_logrow_cut_parse(&cut, row->reason, &err) != ACC_OK) {
        (void)printf("FAIL seq %lld: %s\n", (long long)row->seq, err.msg);
        return false;
    }
    if (cut.lost_from != chain->expected_seq || cut.lost_to != row->seq - 1) {
        (void)printf("FAIL seq %lld: a restored row declaring rows %lld-%lld lost, but the rows "
                     "missing before it are %lld-%lld\n",
                     (long long)row->seq, (long long)cut.lost_from, (long long)cut.lost_to,
                     (long long)chain->expected_seq, (long long)row->seq - 1);
        return false;
    }
    uint8_t message[ACC_LOGROW_RESTORED_BYTES];
    acc_logrow_restored_message(message, row->seq, chain->hash, &cut);
    if (!s_signature_holds(chain, row, message, sizeof(message))) {
        (void)printf("FAIL seq %lld: the restored row's signature does not verify with the %s: "
                     "the gap it declares (seq %lld-%lld) is not vouched for\n",
                     (long long)row->seq,
                     chain->pins->count > 0 ? "pinned broker signing key"
                                            : "broker key the database names",
                     (long long)cut.lost_from, (long long)cut.lost_to);
        return false;
    }
    s_note_cut(chain, row, &cut);
    return true;
}

/* Checks one row against the chain so far; prints and returns false at the first fault. */
static bool s_verify_row(s_chain_t *chain, const acc_logrow_t *row, const uint8_t *prev_hash,
                         const uint8_t *entry_hash)
{
    int64_t seq = row->seq;
    if (s_is_restored(row) && seq > chain->expected_seq) {
        if (!s_verify_restored(chain, row)) {
            return false;
        }
    } else if (s_is_restored(row)) {
        (void)printf("FAIL seq %lld: a restored row where no rows are missing\n", (long long)seq);
        return false;
    } else if (seq != chain->expected_seq) {
        (void)printf("FAIL seq %lld: %s (expected seq %lld)\n", (long long)seq,
                     seq > chain->expected_seq ? "gap: rows are missing before this one"
                                               : "rows are out of order or duplicated",
                     (long long)chain->expected_seq);
        return false;
    }
    if (sodium_memcmp(prev_hash, chain->hash, ACC_LOGROW_HASH_BYTES) != 0) {
        (void)printf("FAIL seq %lld: previous-hash link does not match the row before it\n",
                     (long long)seq);
        return false;
    }
    bool checkpoint = row->event != NULL && strcmp(row->event, "checkpoint") == 0;
    if (checkpoint && !s_verify_checkpoint(chain, row)) {
        return false;
    }
    uint8_t entry[ACC_LOGROW_HASH_BYTES];
    acc_logrow_hash(entry, chain->hash, row);
    if (sodium_memcmp(entry, entry_hash, sizeof(entry)) != 0) {
        (void)printf("FAIL seq %lld: hash mismatch: the row's content was changed\n",
                     (long long)seq);
        return false;
    }
    if (seq == chain->witness_seq) {
        if (sodium_memcmp(entry, chain->witness_hash, sizeof(entry)) != 0) {
            (void)printf("FAIL seq %lld: differs from the checkpoint this auditor verified "
                         "before: the log was rewritten\n",
                         (long long)seq);
            return false;
        }
        chain->witness_seen = true;
    }
    acc_err_t err;
    if (audit_acks_check(chain->acks, row, &err) != ACC_OK) {
        (void)printf("FAIL seq %lld: %s\n", (long long)seq, err.msg);
        return false;
    }
    if (checkpoint) {
        memcpy(chain->last_checkpoint_hash, entry, sizeof(entry));
    }
    memcpy(chain->hash, entry, sizeof(entry));
    chain->expected_seq = seq + 1;
    chain->rows++;
    return true;
}

static PGconn *s_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        (void)fprintf(stderr, "accord-audit: could not connect to PostgreSQL: %s",
                      PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* The witness file keeps the last checkpoint this auditor verified, so a later run
 * notices a log cut back behind it, which the chain alone cannot show. */
static bool s_read_witness(s_chain_t *chain, const char *path)
{
    FILE *f = path != NULL ? fopen(path, "r") : NULL;
    if (f == NULL) {
        return path == NULL || errno == ENOENT;
    }
    char line[128] = "";
    bool ok = fgets(line, sizeof(line), f) != NULL;
    char *end = NULL;
    long long seq = ok ? strtoll(line, &end, 10) : 0;
    acc_err_t err;
    ok = ok && seq > 0 && end != NULL && *end == ' ';
    if (ok) {
        end[1 + strcspn(end + 1, "\n")] = '\0';
        ok = acc_hex_decode(chain->witness_hash, ACC_LOGROW_HASH_BYTES, end + 1, &err) == ACC_OK;
    }
    (void)fclose(f);
    chain->witness_seq = ok ? seq : 0;
    if (!ok) {
        (void)fprintf(stderr, "accord-audit: witness file \"%s\" is malformed\n", path);
    }
    return ok;
}

static bool s_write_witness(const s_chain_t *chain, const char *path)
{
    if (path == NULL || chain->checkpoints == 0) {
        return true;
    }
    char hex[2 * ACC_LOGROW_HASH_BYTES + 1];
    acc_hex_encode(hex, sizeof(hex), chain->last_checkpoint_hash, ACC_LOGROW_HASH_BYTES);
    char *tmp = acc_xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    bool ok = f != NULL && fprintf(f, "%lld %s\n", (long long)chain->last_checkpoint, hex) > 0;
    ok = f != NULL && fclose(f) == 0 && ok && rename(tmp, path) == 0;
    if (!ok) {
        (void)fprintf(stderr, "accord-audit: could not write witness file \"%s\": %s\n", path,
                      strerror(errno));
    }
    free(tmp);
    return ok;
}

static void s_print_pins(const s_pins_t *pins)
{
    (void)printf("pinned broker signing key%s:", pins->count > 1 ? "s" : "");
    for (size_t i = 0; i < pins->count; i++) {
        char fingerprint[17];
        acc_keys_fingerprint(fingerprint, pins->keys[i]);
        (void)printf(" %s", fingerprint);
    }
    (void)printf("\n");
}

/* Unpinned, a consistent chain proves nothing against whoever can write the
 * database, and the witness is not moved on to a checkpoint nobody vouched for. */
static int s_finish_unpinned(const s_chain_t *chain, int64_t head)
{
    (void)printf("UNPINNED %llu rows consistent, %llu checkpoints; chain head seq %lld; "
                 "%lld row(s) after the last checkpoint\n"
                 "UNPINNED: no broker signing key was pinned (--sign-key), so only the chain's "
                 "internal consistency was checked (checkpoint signatures %s); anyone who can "
                 "write the database could have rewritten the log and re-signed it\n",
                 (unsigned long long)chain->rows, (unsigned long long)chain->checkpoints,
                 (long long)head, (long long)(head - chain->last_checkpoint),
                 chain->broker_keys != NULL ? "only against the key the database itself names"
                                            : "not at all: the broker sends no key");
    return chain->pins->unpinned_ok ? EXIT_SUCCESS : EXIT_UNPINNED;
}

static void s_format_time(char out[32], int64_t at_us)
{
    time_t t = (time_t)(at_us / 1000000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        (void)snprintf(out, 32, "(time unknown)");
    }
}

/* Every declared cut is reported; one through the checkpoint this auditor verified
 * before is the auditor's to act on: rows it saw are gone. */
static void s_report_cuts(const s_chain_t *chain)
{
    for (size_t i = 0; i < chain->cut_count && i < CUTS_MAX; i++) {
        const acc_logrow_cut_t *cut = &chain->cuts[i];
        char at[32];
        s_format_time(at, chain->cut_at_us[i]);
        bool witnessed = chain->witness_seq >= cut->lost_from && chain->witness_seq <= cut->lost_to;
        (void)printf("%s seq %lld-%lld: %lld row(s) lost when the database was restored from a "
                     "backup (or lost data), declared by the signed restored row seq %lld "
                     "written %s%s\n",
                     witnessed ? "CUT" : "RESTORED", (long long)cut->lost_from,
                     (long long)cut->lost_to,
                     (long long)cut->lost_to - (long long)cut->lost_from + 1,
                     (long long)chain->cut_rows[i], at,
                     witnessed ? "; the checkpoint this auditor verified before (its witness) "
                                 "was among them: rows it verified are no longer in the log"
                               : "");
    }
    if (chain->cut_count > CUTS_MAX) {
        (void)printf("RESTORED: %zu more restored row(s) not listed\n",
                     chain->cut_count - CUTS_MAX);
    }
}

static int s_finish_verify(const s_chain_t *chain, const char *witness)
{
    int64_t head = chain->expected_seq - 1;
    s_report_cuts(chain);
    if (chain->witness_cut) {
        (void)printf("CUT: the log verifies around the cut, but rows this auditor verified "
                     "earlier (witness seq %lld) were lost in a restore; the witness now moves "
                     "past the cut\n",
                     (long long)chain->witness_seq);
    } else if (chain->witness_seq > 0 && !chain->witness_seen) {
        (void)printf("FAIL seq %lld: the log ends at seq %lld, before the checkpoint this "
                     "auditor verified earlier: its tail was removed\n",
                     (long long)chain->witness_seq, (long long)head);
        return EXIT_TAMPERED;
    }
    if (chain->pins->count == 0) {
        int status = s_finish_unpinned(chain, head);
        return status == EXIT_SUCCESS && chain->witness_cut ? EXIT_CUT : status;
    }
    (void)printf("OK %llu rows verified, %llu signed checkpoints; chain head seq %lld; "
                 "%lld row(s) after the last checkpoint\n",
                 (unsigned long long)chain->rows, (unsigned long long)chain->checkpoints,
                 (long long)head, (long long)(head - chain->last_checkpoint));
    if (head > chain->last_checkpoint) {
        (void)printf("NOTE seq %lld-%lld: no signed checkpoint covers these rows yet (a running "
                     "broker leaves at most checkpoint_rows plus one batch, a stopped one none)\n",
                     (long long)chain->last_checkpoint + 1, (long long)head);
    }
    s_print_pins(chain->pins);
    if (!s_write_witness(chain, witness)) {
        return EXIT_FAILED;
    }
    return chain->witness_cut ? EXIT_CUT : EXIT_SUCCESS;
}

static bool s_is_pinned(const s_pins_t *pins, const uint8_t *key, size_t key_len)
{
    for (size_t i = 0; key_len == crypto_sign_PUBLICKEYBYTES && i < pins->count; i++) {
        if (sodium_memcmp(key, pins->keys[i], key_len) == 0) {
            return true;
        }
    }
    return false;
}

/* The database records each epoch's signing key. With keys pinned that is only a
 * hint, and a hint that differs from every pinned key is said out loud. */
static void s_warn_database_keys(const s_chain_t *chain)
{
    PGresult *keys = chain->broker_keys;
    for (int i = 0; chain->pins->count > 0 && i < PQntuples(keys); i++) {
        const uint8_t *key = (const uint8_t *)PQgetvalue(keys, i, 1);
        size_t key_len = (size_t)PQgetlength(keys, i, 1);
        if (s_is_pinned(chain->pins, key, key_len)) {
            continue;
        }
        char fingerprint[17] = "malformed";
        if (key_len == crypto_sign_PUBLICKEYBYTES) {
            acc_keys_fingerprint(fingerprint, key);
        }
        (void)printf("WARNING epoch %lld: the database names broker signing key %s, which is "
                     "not a pinned key; it is ignored, and the checkpoint signatures decide\n",
                     strtoll(PQgetvalue(keys, i, 0), NULL, 10), fingerprint);
    }
}

/* verify --since/--until: the rows whose time lies in the period, with the chain
 * walked from the last signed checkpoint at or before the first of them (its
 * signature vouches for everything before it) to the first signed checkpoint at
 * or after the last (whose signature vouches for them all). */
typedef struct {
    const char *since; /* NULL: from the start */
    const char *until; /* NULL: to the end (exclusive bound) */
    int64_t first;     /* the period's first and last rows; 0: it holds none */
    int64_t last;
    int64_t from; /* the anchor checkpoint, or 1 */
    int64_t to;   /* the closing checkpoint, or the head */
    bool anchored;
    bool closed;
} s_period_t;

static int64_t s_seq_or_zero(PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0 : strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/* Finds the period's rows and the checkpoints around them; EXIT_USAGE names a
 * bound PostgreSQL does not read as a time. */
static int s_plan_period(PGconn *conn, s_period_t *p)
{
    const char *values[2] = { p->since, p->until };
    PGresult *res = PQexecParams(
        conn,
        "WITH p AS (SELECT min(seq) AS first, max(seq) AS last FROM accord_log_chain WHERE "
        "($1::timestamptz IS NULL OR at >= $1::timestamptz) AND ($2::timestamptz IS NULL OR "
        "at < $2::timestamptz)) SELECT p.first, p.last, (SELECT max(seq) FROM accord_log_chain "
        "WHERE event = 'checkpoint' AND seq <= p.first), (SELECT min(seq) FROM accord_log_chain "
        "WHERE event = 'checkpoint' AND seq >= p.last), (SELECT max(seq) FROM accord_log_chain) "
        "FROM p",
        2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool bad_time = state != NULL && strncmp(state, "22", 2) == 0;
        (void)fprintf(stderr, "accord-audit: %s%s", bad_time ? "--since/--until: " : "",
                      bad_time ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        PQclear(res);
        return bad_time ? EXIT_USAGE : EXIT_FAILED;
    }
    p->first = s_seq_or_zero(res, 0);
    p->last = s_seq_or_zero(res, 1);
    int64_t anchor = s_seq_or_zero(res, 2);
    int64_t closing = s_seq_or_zero(res, 3);
    p->anchored = anchor > 0;
    p->closed = closing > 0;
    p->from = p->anchored ? anchor : 1;
    p->to = p->closed ? closing : s_seq_or_zero(res, 4);
    PQclear(res);
    return EXIT_SUCCESS;
}

static int s_finish_period(const s_chain_t *chain, const s_period_t *p)
{
    if (p->first == 0) {
        (void)printf("NOTE the period [%s, %s) holds no log rows; nothing to verify\n",
                     p->since != NULL ? p->since : "start", p->until != NULL ? p->until : "end");
        return EXIT_SUCCESS;
    }
    s_report_cuts(chain);
    if (chain->pins->count == 0) {
        return s_finish_unpinned(chain, chain->expected_seq - 1);
    }
    (void)printf("OK period [%s, %s): rows seq %lld-%lld verified; the chain was checked from "
                 "%s%lld to %s%lld: %llu rows, %llu signed checkpoints\n",
                 p->since != NULL ? p->since : "start", p->until != NULL ? p->until : "end",
                 (long long)p->first, (long long)p->last,
                 p->anchored ? "the signed checkpoint seq " : "the start of the log, seq ",
                 (long long)p->from, p->closed ? "the signed checkpoint seq " : "the head, seq ",
                 (long long)p->to, (unsigned long long)chain->rows,
                 (unsigned long long)chain->checkpoints);
    if (!p->closed) {
        (void)printf("NOTE seq %lld-%lld: no signed checkpoint follows these rows yet, so no "
                     "signature vouches for them\n",
                     (long long)chain->last_checkpoint + 1, (long long)p->to);
    }
    s_print_pins(chain->pins);
    return EXIT_SUCCESS;
}

/* Reads the broker keys the database names, for the unpinned case and warnings. */
static bool s_read_broker_keys(PGconn *conn, s_chain_t *chain)
{
    chain->broker_keys = PQexecParams(conn, "SELECT epoch::text, broker_key FROM accord_epoch", 0,
                                      NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(chain->broker_keys) != PGRES_TUPLES_OK) {
        (void)fprintf(stderr, "accord-audit: could not read the broker keys: %s",
                      PQerrorMessage(conn));
        return false;
    }
    s_warn_database_keys(chain);
    return true;
}

/* One streamed row; the first row of an anchored period is taken on the word of
 * its own signature, which s_verify_row then checks. */
static int s_verify_fetched(s_chain_t *chain, PGresult *res, const s_period_t *period)
{
    s_fetched_t f;
    bool shaped = s_fetch(&f, res, 0);
    if (!shaped) {
        (void)printf("FAIL seq %lld: a column has an impossible value\n", (long long)f.row.seq);
    } else if (period != NULL && period->anchored && chain->rows == 0) {
        memcpy(chain->hash, f.prev_hash, ACC_LOGROW_HASH_BYTES);
        chain->expected_seq = f.row.seq;
    }
    int status = shaped && s_verify_row(chain, &f.row, f.prev_hash, f.entry_hash) ? EXIT_SUCCESS
                                                                                  : EXIT_TAMPERED;
    if (status == EXIT_SUCCESS && f.acked_empty) {
        (void)printf("FAIL seq %lld: an acknowledged row with an empty acked_seqs ({}, not NULL): "
                     "the hash chain cannot tell the two apart, but accord_log_acks no longer "
                     "counts the share it names as acknowledged\n",
                     (long long)f.row.seq);
        status = EXIT_TAMPERED;
    }
    s_fetched_clear(&f);
    return status;
}

/* Streams rows one at a time (single-row mode): a log of any length is verified
 * holding no rows, only the acknowledgement check's 2 bytes a row (audit_acks.h). */
static int s_stream(PGconn *conn, s_chain_t *chain, const s_period_t *period)
{
    char *sql = period != NULL
                    ? acc_xasprintf("SELECT %s FROM accord_log_chain WHERE seq >= %lld "
                                    "AND seq <= %lld ORDER BY seq",
                                    s_row_columns, (long long)period->from, (long long)period->to)
                    : acc_xasprintf("SELECT %s FROM accord_log_chain ORDER BY seq", s_row_columns);
    int sent = PQsendQuery(conn, sql);
    free(sql);
    if (sent != 1 || PQsetSingleRowMode(conn) != 1) {
        (void)fprintf(stderr, "accord-audit: could not read the log: %s", PQerrorMessage(conn));
        return EXIT_FAILED;
    }
    int status = EXIT_SUCCESS;
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE && status == EXIT_SUCCESS) {
            status = s_verify_fetched(chain, res, period);
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK) {
            (void)fprintf(stderr, "accord-audit: could not read the log: %s",
                          PQresultErrorMessage(res));
            status = EXIT_FAILED;
        }
        PQclear(res);
    }
    return status;
}

static int s_verify(const char *conninfo, const s_pins_t *pins, const char *witness,
                    s_period_t *period)
{
    s_chain_t chain = { .expected_seq = 1, .pins = pins };
    if (!s_read_witness(&chain, witness)) {
        return EXIT_FAILED;
    }
    PGconn *conn = s_connect(conninfo);
    if (conn == NULL) {
        return EXIT_FAILED;
    }
    int status = s_read_broker_keys(conn, &chain) ? EXIT_SUCCESS : EXIT_FAILED;
    if (status == EXIT_SUCCESS && period != NULL) {
        status = s_plan_period(conn, period);
    }
    if (status == EXIT_SUCCESS && (period == NULL || period->first > 0)) {
        chain.acks = audit_acks_new(period != NULL ? period->from : 1);
        status = s_stream(conn, &chain, period);
        audit_acks_destroy(&chain.acks);
    }
    PQclear(chain.broker_keys);
    PQfinish(conn);
    if (status != EXIT_SUCCESS) {
        return status;
    }
    return period != NULL ? s_finish_period(&chain, period) : s_finish_verify(&chain, witness);
}

static json_t *s_row_json(const acc_logrow_t *r)
{
    char share[37];
    acc_uuid_format(share, r->share_id);
    json_t *rules = json_array();
    for (size_t i = 0; i < r->rule_count; i++) {
        json_array_append_new(rules, json_string(r->rule_ids[i]));
    }
    json_t *obj = json_pack("{s:I, s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:o, s:s?, s:s?, s:s?, "
                            "s:s?, s:I}",
                            "seq", (json_int_t)r->seq, "share_id", share, "event", r->event, "from",
                            r->from_agency, "to", r->to_agency, "record_type", r->record_type,
                            "record_id", r->record_id, "rules", rules, "purpose", r->purpose,
                            "lawful_basis", r->lawful_basis, "consent", r->consent, "reason",
                            r->reason, "key_epoch", (json_int_t)r->key_epoch);
    audit_json_0008(obj, r->content_hash, r->acked_seqs, r->acked_count);
    return obj;
}

/* Opens the epoch key sealed to this auditor's box key, on this machine. */
static bool s_epoch_key(PGconn *conn, int64_t epoch, const uint8_t *box_secret, uint8_t *key)
{
    uint8_t box_public[crypto_box_PUBLICKEYBYTES];
    (void)crypto_scalarmult_base(box_public, box_secret);
    char epoch_text[32];
    (void)snprintf(epoch_text, sizeof(epoch_text), "%lld", (long long)epoch);
    const char *values[2] = { epoch_text, (const char *)box_public };
    int lengths[2] = { 0, (int)sizeof(box_public) };
    int formats[2] = { 0, 1 };
    PGresult *res = PQexecParams(conn,
                                 "SELECT sealed_key FROM accord_epoch_seal WHERE epoch = $1 AND "
                                 "box_key = $2",
                                 2, NULL, values, lengths, formats, 1);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
              PQgetlength(res, 0, 0) == crypto_box_SEALBYTES + ACC_LOGROW_KEY_BYTES &&
              crypto_box_seal_open(key, (const uint8_t *)PQgetvalue(res, 0, 0),
                                   (unsigned long long)PQgetlength(res, 0, 0), box_public,
                                   box_secret) == 0;
    PQclear(res);
    return ok;
}

static int s_decrypt_and_print(PGconn *conn, const s_fetched_t *f, const uint8_t *box_secret)
{
    uint8_t *key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    acc_assert(key != NULL);
    json_t *obj = s_row_json(&f->row);
    int status = EXIT_SUCCESS;
    acc_err_t err;
    if (f->row.payload == NULL) {
        json_object_set_new(obj, "record", json_null());
    } else if (!s_epoch_key(conn, f->row.key_epoch, box_secret, key)) {
        (void)fprintf(stderr,
                      "accord-audit: epoch %lld's key is not sealed to this auditor "
                      "key, or the seal does not open\n",
                      (long long)f->row.key_epoch);
        status = EXIT_TAMPERED;
    } else {
        size_t len = f->row.payload_len - ACC_LOGROW_MAC_BYTES;
        uint8_t *plain = acc_xmalloc(len);
        if (acc_logrow_open(plain, len, &f->row, key, &err) != ACC_OK) {
            (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
            status = EXIT_TAMPERED;
        } else {
            Accord__V1__ChildRecord *rec =
                accord__v1__child_record__unpack(acc_pb_wiping_allocator(), len, plain);
            json_object_set_new(obj, "record", rec != NULL ? acc_record_to_json(rec) : json_null());
            acc_record_free(&rec);
        }
        sodium_memzero(plain, len);
        free(plain);
    }
    sodium_free(key);
    if (status == EXIT_SUCCESS) {
        char *text = json_dumps(obj, JSON_INDENT(2));
        (void)printf("%s\n", text);
        free(text);
    }
    json_decref(obj);
    return status;
}

static int s_show(const char *seq, const char *conninfo, const char *key_path)
{
    uint8_t *box_secret = sodium_malloc(ACC_BOX_SECRET_BYTES);
    acc_assert(box_secret != NULL);
    acc_err_t err;
    if (acc_keys_read_box_secret(box_secret, key_path, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
        sodium_free(box_secret);
        return EXIT_FAILED;
    }
    PGconn *conn = s_connect(conninfo);
    int status = EXIT_FAILED;
    if (conn != NULL) {
        char *sql = acc_xasprintf("SELECT %s FROM accord_log_chain WHERE seq = $1", s_row_columns);
        PGresult *res = PQexecParams(conn, sql, 1, NULL, &seq, NULL, NULL, 0);
        free(sql);
        s_fetched_t f;
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            (void)fprintf(stderr, "accord-audit: no log row with seq %s\n", seq);
        } else if (!s_fetch(&f, res, 0)) {
            (void)fprintf(stderr, "accord-audit: log row %s has an impossible value\n", seq);
            s_fetched_clear(&f);
        } else {
            status = s_decrypt_and_print(conn, &f, box_secret);
            s_fetched_clear(&f);
        }
        PQclear(res);
        PQfinish(conn);
    }
    sodium_free(box_secret);
    return status;
}

typedef struct {
    s_chain_t chain;
    bool ok;
} s_wire_verify_t;

static bool s_wire_row(void *ctx, const Accord__V1__AuditResult *page,
                       const Accord__V1__AuditRow *r)
{
    (void)page;
    s_wire_verify_t *v = ctx;
    acc_logrow_t row;
    uint8_t refers_to[ACC_LOGROW_SHARE_BYTES];
    audit_wire_logrow(&row, refers_to, r);
    if (r->prev_hash.len != ACC_LOGROW_HASH_BYTES || r->entry_hash.len != ACC_LOGROW_HASH_BYTES) {
        (void)printf("FAIL seq %lld: the row has no hash link\n", (long long)row.seq);
        v->ok = false;
    } else if (r->content_hash.len != 0 && r->content_hash.len != ACC_LOGROW_HASH_BYTES) {
        (void)printf("FAIL seq %lld: a column has an impossible value\n", (long long)row.seq);
        v->ok = false;
    } else {
        v->ok = s_verify_row(&v->chain, &row, r->prev_hash.data, r->entry_hash.data);
    }
    return v->ok;
}

/* The broker streams the chain; the hashes and signatures are checked here, with
 * the broker's signing key as the auditor holds it, so a broker that was broken
 * into cannot vouch for its own log. */
static int s_verify_wire(const char *config_path, const s_pins_t *pins, const char *witness)
{
    acc_agent_config_t config;
    acc_err_t err;
    if (acc_agent_config_load(&config, config_path, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
        return EXIT_FAILED;
    }
    acc_log_setup(ACC_LOG_WARN);
    s_wire_verify_t v = { .chain = { .expected_seq = 1, .pins = pins }, .ok = true };
    int status = s_read_witness(&v.chain, witness) ? EXIT_SUCCESS : EXIT_FAILED;
    if (status == EXIT_SUCCESS) {
        Accord__V1__AuditQuery query = ACCORD__V1__AUDIT_QUERY__INIT;
        v.chain.acks = audit_acks_new(1);
        status = audit_each_row(&config, &query, s_wire_row, &v);
        audit_acks_destroy(&v.chain.acks);
        status = status != EXIT_SUCCESS ? EXIT_FAILED
                 : v.ok                 ? s_finish_verify(&v.chain, witness)
                                        : EXIT_TAMPERED;
    }
    acc_agent_config_clear(&config);
    return status;
}

typedef struct {
    const char *db;
    const char *key;
    const char *witness;
    const char *config;
    const char *sign_keys[SIGN_KEYS_MAX];
    size_t sign_key_count;
    bool unpinned;
    const char *command;
    audit_log_args_t log;
} s_args_t;

static bool s_filter_option(s_args_t *a, int opt)
{
    Accord__V1__AuditQuery *q = &a->log.query;
    switch (opt) {
    case 'C':
        q->child = optarg;
        return true;
    case 'a':
        q->agency = optarg;
        return true;
    case 'f':
        q->from_agency = optarg;
        return true;
    case 't':
        q->to_agency = optarg;
        return true;
    case 'T':
        q->record_type = optarg;
        return true;
    case 'e':
        q->event = optarg;
        return true;
    case 'r':
        q->rule = optarg;
        return true;
    case 's':
        q->since = optarg;
        return true;
    case 'u':
        q->until = optarg;
        return true;
    case 'S':
        q->share_id = optarg;
        return true;
    case 'l':
        q->limit = (uint32_t)strtoul(optarg, NULL, 10);
        return true;
    case 'D': {
        char *end = NULL;
        unsigned long days = strtoul(optarg, &end, 10);
        if (end == optarg || *end != '\0' || days == 0 || days > 3660) {
            (void)fprintf(stderr, "accord-audit: --days is a whole number of days, 1 to 3660\n");
            return false;
        }
        q->overdue_days = (uint32_t)days;
        return true;
    }
    case 'v':
        a->log.format = AUDIT_CSV;
        return true;
    case 'j':
        a->log.format = AUDIT_JSON;
        return true;
    case 'K':
        if (a->sign_key_count == SIGN_KEYS_MAX) {
            return false;
        }
        a->sign_keys[a->sign_key_count++] = optarg;
        return true;
    case 'U':
        a->unpinned = true;
        return true;
    default:
        return false;
    }
}

/* log, show and subject-access through the broker: arg is the share id or the
 * NHS number (the command is in a->command). */
static int s_run_log(const s_args_t *a, const char *arg)
{
    acc_agent_config_t config;
    acc_err_t err;
    if (acc_agent_config_load(&config, a->config, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
        return EXIT_FAILED;
    }
    acc_log_setup(ACC_LOG_WARN); /* stdout is the answer; stderr only for trouble */
    int status = arg == NULL ? audit_log(&config, &a->log)
                 : strcmp(a->command, "show") == 0
                     ? audit_show(&config, arg, a->key)
                     : audit_subject_access(&config, arg, a->key, a->log.format);
    acc_agent_config_clear(&config);
    return status;
}

/* verify, from PostgreSQL or through the broker, with the keys the auditor pins. */
static int s_run_verify(const s_args_t *a)
{
    s_pins_t pins = { .count = a->sign_key_count, .unpinned_ok = a->unpinned };
    for (size_t i = 0; i < pins.count; i++) {
        acc_err_t err;
        if (acc_keys_read_hex_public(pins.keys[i], a->sign_keys[i], &err) != ACC_OK) {
            (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
            return EXIT_FAILED;
        }
    }
    const Accord__V1__AuditQuery *q = &a->log.query;
    bool has_period = q->since[0] != '\0' || q->until[0] != '\0';
    if (has_period && (a->db == NULL || a->witness != NULL)) {
        (void)fprintf(stderr, "accord-audit: verify --since/--until %s\n",
                      a->db == NULL ? "reads the log from PostgreSQL: give --db CONNINFO (through "
                                      "the broker, --config, verify walks the whole log)"
                                    : "cannot take --witness: the witness follows the whole log");
        return EXIT_USAGE;
    }
    s_period_t period = { .since = q->since[0] != '\0' ? q->since : NULL,
                          .until = q->until[0] != '\0' ? q->until : NULL };
    return a->db != NULL ? s_verify(a->db, &pins, a->witness, has_period ? &period : NULL)
                         : s_verify_wire(a->config, &pins, a->witness);
}

/* The command and its operand, after the options. */
static int s_dispatch(s_args_t *a, int argc, char **argv)
{
    const char *command = argv[0];
    a->command = command;
    if (a->config != NULL && argc == 1 && strcmp(command, "log") == 0 &&
        a->log.query.overdue_days == 0) {
        return s_run_log(a, NULL);
    }
    if (a->config != NULL && argc == 1 && strcmp(command, "overdue") == 0 &&
        a->log.query.overdue_days > 0) {
        return s_run_log(a, NULL);
    }
    if (a->config != NULL && a->key != NULL && argc == 2 &&
        (strcmp(command, "subject-access") == 0 ||
         (a->db == NULL && strcmp(command, "show") == 0))) {
        return s_run_log(a, argv[1]);
    }
    if ((a->config != NULL) != (a->db != NULL) && strcmp(command, "verify") == 0 && argc == 1) {
        return s_run_verify(a);
    }
    if (a->db != NULL && strcmp(command, "show") == 0 && argc == 2 && a->key != NULL) {
        return s_show(argv[1], a->db, a->key);
    }
    s_usage(stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    /* one option a line: with 22 entries clang-format would pack them in two columns */
    /* clang-format off */
    static const struct option options[] = {
        { "db", required_argument, NULL, 'd' },
        { "witness", required_argument, NULL, 'w' },
        { "key", required_argument, NULL, 'k' },
        { "config", required_argument, NULL, 'c' },
        { "child", required_argument, NULL, 'C' },
        { "agency", required_argument, NULL, 'a' },
        { "from", required_argument, NULL, 'f' },
        { "to", required_argument, NULL, 't' },
        { "type", required_argument, NULL, 'T' },
        { "event", required_argument, NULL, 'e' },
        { "rule", required_argument, NULL, 'r' },
        { "since", required_argument, NULL, 's' },
        { "until", required_argument, NULL, 'u' },
        { "share", required_argument, NULL, 'S' },
        { "limit", required_argument, NULL, 'l' },
        { "days", required_argument, NULL, 'D' },
        { "csv", no_argument, NULL, 'v' },
        { "json", no_argument, NULL, 'j' },
        { "sign-key", required_argument, NULL, 'K' },
        { "unpinned", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    /* clang-format on */
    s_args_t a = { 0 };
    accord__v1__audit_query__init(&a.log.query);
    int opt;
    while ((opt = getopt_long(argc, argv, "d:k:w:c:hV", options, NULL)) != -1) {
        if (opt == 'd') {
            a.db = optarg;
        } else if (opt == 'k') {
            a.key = optarg;
        } else if (opt == 'w') {
            a.witness = optarg;
        } else if (opt == 'c') {
            a.config = optarg;
        } else if (opt == 'h' || opt == 'V') {
            opt == 'h' ? s_usage(stdout) : (void)printf("accord-audit %s\n", ACCORD_VERSION);
            return EXIT_SUCCESS;
        } else if (!s_filter_option(&a, opt)) {
            s_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (sodium_init() < 0 || optind >= argc) {
        s_usage(stderr);
        return EXIT_USAGE;
    }
    acc_err_t err;
    if (acc_process_harden(&err) != ACC_OK) { /* before any key or record is read */
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
        return EXIT_FAILED;
    }
    return s_dispatch(&a, argc - optind, argv + optind);
}
