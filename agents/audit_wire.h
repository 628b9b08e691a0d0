/* audit_wire.h - accord-audit's questions asked through the broker with an
 * auditor's CURVE key: the broker answers and logs each question */
#ifndef ACCORD_AGENTS_AUDIT_WIRE_H
#define ACCORD_AGENTS_AUDIT_WIRE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "accord/config.h"
#include "accord/logrow.h"
#include "accord/pb.h"

typedef enum {
    AUDIT_TABLE,
    AUDIT_CSV,
    AUDIT_JSON,
} audit_format_t;

typedef struct {
    Accord__V1__AuditQuery query; /* filters; limit is the total wanted (0: all) */
    audit_format_t format;
} audit_log_args_t;

/* accord-audit log: prints the rows matching the filters. Returns an exit status. */
int audit_log(const acc_agent_config_t *config, const audit_log_args_t *args);

/* accord-audit show SHARE_ID and subject-access NHS_NUMBER: the rows (with
 * payloads and this auditor's sealed epoch keys) fetched through the broker and
 * decrypted here with the auditor's box secret; as JSON, or for subject access a
 * readable report unless args->format is AUDIT_JSON. */
int audit_show(const acc_agent_config_t *config, const char *share_id, const char *key_path);
int audit_subject_access(const acc_agent_config_t *config, const char *nhs, const char *key_path,
                         audit_format_t format);

/* Every row matching query, through the broker, page by page, with payloads;
 * fn gets each row with the page it came in (whose sealed keys open its payload)
 * and returns false to stop. Returns an exit status (0, or 3 when the broker
 * refused or could not answer). */
typedef bool audit_row_fn(void *ctx, const Accord__V1__AuditResult *page,
                          const Accord__V1__AuditRow *row);
int audit_each_row(const acc_agent_config_t *config, Accord__V1__AuditQuery *query,
                   audit_row_fn *fn, void *ctx);

/* Adds the columns schema 0008 added, where a row has them, to its JSON:
 * content_hash (hex; NULL: none), and acked_count, acked_ranges (as
 * audit_acks_ranges) and acked_seqs (every seq). */
void audit_json_0008(json_t *obj, const uint8_t *content_hash, const int64_t *acked_seqs,
                     size_t acked_count);

/* A wire row as the log row the hash chain and the payload's associated data
 * cover; borrows from r, and keeps its refers_to (schema 0009) in refers_to. */
void audit_wire_logrow(acc_logrow_t *out, uint8_t refers_to[ACC_LOGROW_SHARE_BYTES],
                       const Accord__V1__AuditRow *r);

#endif
