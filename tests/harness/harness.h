/* harness.h - integration-test world: a cloned database, keys, an agreement, the
 * real accordd and agents as processes */
#ifndef ACCORD_TESTS_HARNESS_H
#define ACCORD_TESTS_HARNESS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "accord/config.h"
#include "accord/pb.h"
#include "client.h"

#define TH_MAX_AGENCIES 8

/* A child process with pipes to its stdin and stdout. */
typedef struct {
    pid_t pid;
    int in_fd;  /* write end of its stdin, -1 when closed */
    int out_fd; /* read end of its stdout */
    char *out;  /* everything read from stdout so far */
    size_t out_len;
    size_t out_cap;
    size_t lines;     /* newline-terminated lines in out */
    size_t scan_line; /* th_proc_line's place: line number... */
    size_t scan_off;  /* ...and where it starts in out */
} th_proc_t;

/* Starts argv[0] (a path) with stdin/stdout piped; stderr is inherited. */
th_proc_t *th_proc_start(char *const argv[]);
/* The same with stderr appended to stderr_path (NULL: inherited). */
th_proc_t *th_proc_start_logged(char *const argv[], const char *stderr_path);
/* Waits until a line of the file at path contains needle; false at the deadline. */
bool th_file_wait(const char *path, const char *needle, int timeout_ms);
void th_sleep_ms(long ms);
/* A plain HTTP/1.0 GET to 127.0.0.1:port: the whole response (status line,
 * headers, body), malloc'd; *status (if not NULL) gets the status code. */
char *th_http_get(int port, const char *path, int *status);
/* Writes text to its stdin. */
void th_proc_write(th_proc_t *proc, const char *text);
void th_proc_close_stdin(th_proc_t *proc);
/* Reads stdout until it holds at least lines newline-terminated lines or the
 * deadline passes; returns the number of lines held. */
size_t th_proc_wait_lines(th_proc_t *proc, size_t lines, int timeout_ms);
/* Reads whatever its stdout holds now, without waiting. */
void th_proc_drain(th_proc_t *proc);
/* The n-th line (0-based) of what was read, copied; NULL if none. */
char *th_proc_line(th_proc_t *proc, size_t n);
/* Waits for exit (SIGKILL after timeout_ms) and returns the exit status, or
 * 128+signal; frees proc. */
int th_proc_wait(th_proc_t **proc_p, int timeout_ms);
/* Reads its stdout to the end (up to timeout_ms), then waits for exit as
 * th_proc_wait, whose status goes to *status; returns all of stdout, malloc'd. */
char *th_proc_finish(th_proc_t **proc_p, int timeout_ms, int *status);
/* Sends sig, then waits as th_proc_wait. */
int th_proc_stop(th_proc_t **proc_p, int sig, int timeout_ms);

/* One test's world. */
typedef struct {
    char dir[256]; /* temp directory: keys, configs, agreement */
    char dbname[64];
    char conninfo[512];
    PGconn *db; /* superuser connection to the test database */
    char bin_dir[512];
    char broker_pub[41];       /* Z85 */
    char endpoint[256];        /* after th_broker_start */
    char broker_extra[512];    /* more broker.yaml settings, one per line */
    char listen[256];          /* the broker's listen setting; "" = a free port */
    char shared_conninfo[512]; /* conninfo while a private PostgreSQL stands in */
    bool private_pg;
    th_proc_t *broker;
    size_t agency_count;
    char agencies[TH_MAX_AGENCIES][64];
    char agency_keys[TH_MAX_AGENCIES][41];
} th_world_t;

/* Creates the temp dir, clones the database, makes keys for the broker, the
 * agencies named (NULL-terminated) and an auditor "ig-officer" plus a stranger
 * "stranger" whose key is in no agreement. */
th_world_t *th_world_new(const char *const agencies[]);
/* Stops the broker (asserting exit 0), drops the database, removes the dir. */
void th_world_destroy(th_world_t **world_p);

/* The agreement body most tests need: a health-visit record type and one rule,
 * hv-to-cc, from rft-health-visiting to rmbc-childrens-centres (visit_date,
 * visit_type; nhs_number, family_name; consent not required). */
extern const char th_rules_hv_to_cc[];

/* Writes agreement.yaml: the agencies with their keys, the auditor, and body
 * (record_types and rules, YAML text) appended. */
void th_world_agreement(th_world_t *world, const char *body);
/* Writes DIR/broker.yaml for the world's database and keys. */
void th_broker_config(th_world_t *world);
/* Writes broker.yaml, starts accordd and waits for its ready line. */
void th_broker_start(th_world_t *world);
/* Waits until a line of accordd's stderr (DIR/accordd.log) contains needle. */
bool th_broker_logged(th_world_t *world, const char *needle, int timeout_ms);
/* The port the broker's /metrics and /healthz were bound to ("metrics:
 * 127.0.0.1:0" in broker_extra), from its log: its latest start's. */
int th_broker_metrics_port(th_world_t *world);
/* The value of one series ("name" or "name{labels}") in /metrics; -1 if absent. */
double th_metric(int port, const char *series);
/* SIGTERM, asserts exit 0 (printing the end of its log otherwise). */
void th_broker_stop(th_world_t *world);

/* Writes DIR/NAME.agent.yaml for agency (or "stranger", "ig-officer") and returns its path. */
const char *th_agent_config(th_world_t *world, const char *agency, const char *subscriptions);
/* Loads that config into cfg (cleared by the caller with acc_agent_config_clear). */
void th_agent_config_load(th_world_t *world, const char *agency, acc_agent_config_t *cfg);

/* Starts accord-agent with the command and agency's config. */
th_proc_t *th_agent_start(th_world_t *world, const char *command, const char *agency,
                          const char *extra_arg);

/* The same with any number of extra arguments (NULL-terminated). */
th_proc_t *th_agent_start_argv(th_world_t *world, const char *command, const char *agency,
                               const char *const extra[]);

/* The resident set size of a running process, in KiB. */
long th_proc_rss_kib(pid_t pid);

/* Waits until the agent started with th_agent_start logs that the broker welcomed it
 * (its stderr is DIR/AGENCY.COMMAND.log). */
bool th_agent_wait_connected(th_world_t *world, const char *agency, const char *command);

/* Runs a program from ACCORD_BIN_DIR with args (NULL-terminated), stdout piped;
 * waits for it and returns its exit status, with its stdout in *out (yours). */
int th_run(th_world_t *world, char **out, const char *program, ...);

/* Counts log rows matching where (SQL). */
long th_pg_count(th_world_t *world, const char *where);
/* Counts as th_pg_count until the count is expected or timeout_ms pass; returns
 * the last count. For rows written after an answer (acknowledgements). */
long th_pg_wait_count(th_world_t *world, const char *where, long expected, int timeout_ms);
/* A private PostgreSQL (tests/pg/start, migrated, database "accord") for a test
 * that stops it: world->conninfo points at it until th_pg_private_remove, which
 * th_world_destroy also calls. th_pg_private_ctl stops or starts it. */
void th_pg_private_start(th_world_t *world);
void th_pg_private_ctl(th_world_t *world, const char *action);
void th_pg_private_remove(th_world_t *world);

/* Runs sql as superuser; asserts success. */
void th_pg_exec(th_world_t *world, const char *sql);
/* Waits up to timeout_ms for a session whose query text contains query_part to
 * wait for a lock; answers how many do. */
long th_pg_wait_lock_waiters(th_world_t *world, const char *query_part, int timeout_ms);

/* A client-library connection for agency, welcomed by the broker; cfg is filled
 * and must be cleared by the caller after client_destroy. */
client_t *th_client(th_world_t *world, const char *agency, acc_agent_config_t *cfg);
/* Sends rec in a Publish with correlation id correlation (from_agency claim from,
 * NULL or "" for none) without waiting for the answer; asserts it was sent. */
void th_send_record(client_t *client, Accord__V1__ChildRecord *rec, const char *from,
                    uint64_t correlation);
/* The same for the NDJSON record json. */
void th_send_publish(client_t *client, const char *json, const char *from, uint64_t correlation);
/* Publishes the NDJSON record json (from_agency claim from, "" for none) and waits
 * for the answer, which the caller frees with accord__v1__envelope__free_unpacked. */
Accord__V1__Envelope *th_publish(client_t *client, const char *json, const char *from);
/* Publishes json as agency over a connection of its own and returns the result's
 * code (failing the test if the answer is not a PublishResult). */
Accord__V1__ErrorCode th_publish_code(th_world_t *world, const char *agency, const char *json,
                                      const char *from);
/* The publisher agent printed exactly one result per record for n records (each
 * line number once, none more), every one accepted. */
void th_assert_all_accepted(th_proc_t *pub, int n);

/* The health-visiting rule most tests need: visit date and type to the
 * children's centres and early help, subject NHS number and family name. */
#define TH_RULES_HV_TO_PARTNERS                                          \
    "record_types:\n"                                                    \
    "  - id: health-visit\n"                                             \
    "    fields: {visit_date: date, visit_type: text, concerns: text}\n" \
    "rules:\n"                                                           \
    "  - id: hv-to-partners\n"                                           \
    "    from: rft-health-visiting\n"                                    \
    "    to: [rmbc-childrens-centres, rmbc-early-help]\n"                \
    "    record_types: [health-visit]\n"                                 \
    "    fields: [visit_date, visit_type]\n"                             \
    "    subject: [nhs_number, family_name]\n"                           \
    "    purpose: Best Start\n"                                          \
    "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"                            \
    "    consent: not-required\n"

/* A health-visit NDJSON line for record_id and nhs. */
char *th_health_visit_json(const char *record_id, const char *nhs);

/* Valid NHS numbers from 943 476 5xx upwards (check digit by modulus 11), the
 * same TH_NHS_POOL every run: what tests publish, and what no log may hold. */
#define TH_NHS_POOL 16
const char *th_nhs(size_t i); /* i < TH_NHS_POOL */

/* The whole file at path, NUL-terminated (yours to free). */
char *th_slurp(const char *path);

/* Asserts text (where names it in the failure) names no child: no number of the
 * pool, bare or spaced as "943 476 5919", none of the words (NULL-terminated; NULL
 * for none), and no free-standing ten digits that pass the modulus-11 check.
 * Returns text's line count. */
size_t th_assert_names_no_child(const char *text, const char *where, const char *const words[]);
/* The same for the broker's stderr, DIR/accordd.log. */
size_t th_assert_broker_log_names_no_child(th_world_t *world, const char *const words[]);

/* ---- branch restore ---- */
/* Runs accordd with the world's config and arg (NULL: none) to its end, stderr
 * appended to DIR/accordd.log, and returns its exit status (SIGKILL after 30 s). */
int th_broker_run_once(th_world_t *world, const char *arg);

/* ---- branch subexec ---- */

/* Starts accord-agent COMMAND --config CONFIG EXTRA... with the file at key_path
 * opened (by us, as root) as its standard input, the way systemd's
 * StandardInput=file: does, and stdout to /dev/null; as user (a name or uid for
 * setpriv) when not NULL. Its stderr is appended to CONFIG.COMMAND.log. */
th_proc_t *th_agent_start_keyed(th_world_t *world, const char *config, const char *command,
                                const char *key_path, const char *user, const char *const extra[]);

/* ---- branch audit16 ---- */
#include "accord/logrow.h"

/* Appends row to accord_log the way the broker would: the next seq, chained to the
 * head's entry hash, with the row's own entry hash; the head's agreement hash when
 * row has none, the current time when row->at_us is 0 (both written back to row).
 * For rows the broker under test cannot write yet (batched acknowledgements) and
 * forged ones. Returns the row's seq. */
int64_t th_pg_append_logrow(th_world_t *world, acc_logrow_t *row);
/* Appends the `acknowledged` row the broker wrote before schema 0008 for the
 * shared row with record_id (one row naming the share by its share id), and marks
 * the share acknowledged in its recipient's cursor as the 0008 migration would.
 * Returns the row's seq. */
int64_t th_pg_append_old_ack(th_world_t *world, const char *record_id);
/* ---- branch tests16 ---- */

/* Acknowledged shares, whichever form their acknowledgement took (a row of its
 * own, as before schema 0008, or a seq in a batch's acked_seqs): rows of the view
 * accord_log_acks matching where, SQL over its columns share_seq, share_id,
 * from_agency, to_agency, record_type, record_id, ack_seq, acknowledged_at.
 * Every call also asserts that no share of the whole log is acknowledged twice.
 * The _on form asks over a connection of the caller's (a private cluster). */
long th_pg_acked_count(th_world_t *world, const char *where);
long th_pg_acked_count_on(PGconn *db, const char *where);
/* Counts as th_pg_acked_count until the count is expected or timeout_ms pass;
 * returns the last count. */
long th_pg_wait_acked_count(th_world_t *world, const char *where, long expected, int timeout_ms);
/* Pending deliveries: `shared` log rows matching where (SQL over accord_log's
 * columns) that no acknowledgement in accord_log_acks covers. */
long th_pg_pending_count(th_world_t *world, const char *where);
long th_pg_pending_count_on(PGconn *db, const char *where);
long th_pg_wait_pending_count(th_world_t *world, const char *where, long expected, int timeout_ms);

/* What a restore from a backup does to the world's database, in miniature: the
 * snapshot is a copy of the database as it is now (CREATE DATABASE ... TEMPLATE),
 * and restoring puts that copy in its place. The broker must be stopped for both
 * (no other session may hold the database); world->db is reconnected. */
void th_pg_snapshot(th_world_t *world);
void th_pg_snapshot_restore(th_world_t *world);

/* Drops the world's database and creates it again empty, migrated by the accord
 * program at accord_path (another release's, for an upgrade). The broker must be
 * stopped; world->db is reconnected. */
void th_pg_recreate(th_world_t *world, const char *accord_path);

#endif
