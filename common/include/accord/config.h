/* config.h - the broker's and the agents' YAML configuration files */
#ifndef ACCORD_CONFIG_H
#define ACCORD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "accord/rc.h"
#include "accord/yaml.h"

/* broker.yaml. Relative paths are resolved against the file's directory. */
typedef struct {
    char *listen;           /* ZeroMQ endpoint, default tcp://127.0.0.1:7400 */
    char *database;         /* libpq conninfo */
    char *agreement;        /* path of the agreement YAML */
    char *curve_secret_key; /* broker CURVE secret (Z85), 0600 */
    char *signing_key;      /* broker Ed25519 secret (hex), 0600 */
    char *subject_key;      /* 32-byte key for subject tags (hex), 0600 */
    char *metrics;          /* host:port for /metrics and /healthz, "" = off */
    char *log_level;        /* error|warn|notice|info|debug */
    int64_t max_message_bytes;
    int64_t batch_max_rows;     /* rows per log transaction */
    int64_t checkpoint_rows;    /* a signed checkpoint at least every this many rows */
    int64_t epoch_max_rows;     /* a new epoch key after this many rows... */
    int64_t epoch_max_seconds;  /* ...or after this long, whichever comes first */
    int64_t redeliver_after_ms; /* unacknowledged deliveries are sent again after this */
    int64_t peer_queue_max;     /* messages queued for one peer before it counts as slow */
    int64_t peer_timeout_ms;    /* a peer silent this long is dead: its deliveries go back */
    int64_t database_connect_timeout_s;    /* libpq connect_timeout unless database names one */
    int64_t database_statement_timeout_ms; /* any statement on the broker's connection */
    int64_t database_query_timeout_ms;     /* auditors' queries and the health figures */
    char *state_directory;                 /* the high-water mark file, outside the database */
    int64_t lookups_per_second;            /* per agency: lookups answered from the log */
    int64_t log_reads_per_second; /* per agency: other reads of the log its messages cause */
} acc_broker_config_t;

/* agent.yaml, for accord-agent and accord-audit. */
typedef struct {
    char *broker;                /* ZeroMQ endpoint */
    char *broker_key;            /* broker CURVE public key, Z85 text */
    char *agency;                /* the agency (or auditor) id this key belongs to */
    char *curve_secret_key;      /* this agent's CURVE secret (Z85), 0600; "stdin": on fd 0 */
    acc_strlist_t subscriptions; /* record types to receive; empty = all allowed */
    char *log_level;
    int64_t window; /* publishes in flight */
    int64_t max_message_bytes;
    int64_t heartbeat_ms;         /* a Heartbeat when nothing else was sent for this long */
    char *publish_spool;          /* publish --spool default: DIR/incoming -> DIR/done, "" = none */
    char *subscribe_spool;        /* subscribe --spool default: deliveries into DIR/incoming */
    char *exec;                   /* subscribe --exec default: run per delivered file */
    char *seen_file;              /* subscribe: share ids already handed over, across restarts */
    int64_t exec_timeout_s;       /* subscribe: an exec hook running longer is killed */
    uint8_t *curve_secret;        /* not from the file: the key read by acc_agent_config_read_key
                                     (sodium_malloc'd, freed by clear); NULL: read at each connect */
    int64_t max_spool_file_bytes; /* publish: a larger file in incoming/ is set aside unread */
} acc_agent_config_t;

/* Loads and checks a config file; every problem goes to diag (may be NULL) as
 * "FILE:LINE:COL: message" and the first is in err. */
ACC_NODISCARD acc_rc_t acc_broker_config_load(acc_broker_config_t *out, const char *path,
                                              acc_diag_t *diag, acc_err_t *err);
void acc_broker_config_clear(acc_broker_config_t *cfg);

ACC_NODISCARD acc_rc_t acc_agent_config_load(acc_agent_config_t *out, const char *path,
                                             acc_diag_t *diag, acc_err_t *err);
void acc_agent_config_clear(acc_agent_config_t *cfg);

/* The value of curve_secret_key that means "the key is on standard input". */
#define ACC_KEY_STDIN "stdin"

/* True when cfg's curve_secret_key is ACC_KEY_STDIN. */
bool acc_agent_config_key_on_stdin(const acc_agent_config_t *cfg);

/* Reads the secret key named by curve_secret_key once, into cfg->curve_secret:
 * from fd 0 when it is ACC_KEY_STDIN (fd 0 must be a regular file that group
 * and others cannot read or write; fd 0 is then replaced by /dev/null, so
 * nothing started later can read the key), otherwise from the key file (which
 * is read again at each connect, so this only checks it early). */
ACC_NODISCARD acc_rc_t acc_agent_config_read_key(acc_agent_config_t *cfg, acc_err_t *err);

#endif
