/* tool.c - accord: keys, agreement checks and schema migrations for operators */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accord/harden.h"
#include "accord/keys.h"
#include "accord/migrate.h"
#include "accord/policy.h"
#include "explain.h"

#define EXIT_INVALID 1
#define EXIT_USAGE   2
#define EXIT_FAILED  3

static void s_usage(FILE *out)
{
    (void)fprintf(
        out, "usage: accord keygen --out DIR NAME\n"
             "       accord keygen --subject-key FILE\n"
             "       accord agreement check FILE\n"
             "       accord agreement explain FILE --from AGENCY --type TYPE [--record FILE.json]\n"
             "       accord migrate --db CONNINFO\n"
             "       accord migrate --sql\n"
             "\n"
             "keygen           writes DIR/NAME.curve.{pub,secret} (CURVE, Z85),\n"
             "                 DIR/NAME.box.{pub,secret} (X25519, hex) and\n"
             "                 DIR/NAME.sign.{pub,secret} (Ed25519, hex). Secret files are\n"
             "                 created mode 0600 and never overwritten. --subject-key writes\n"
             "                 the broker's 32-byte subject-tag key (hex, 0600) instead.\n"
             "agreement check  checks an agreement file as a whole and prints every problem\n"
             "                 as FILE:LINE:COL: message.\n"
             "agreement explain\n"
             "                 shows which recipients would receive AGENCY's TYPE records,\n"
             "                 with which fields and subject identifiers, under which rules,\n"
             "                 purposes, lawful bases and consent conditions; with --record,\n"
             "                 exactly what would happen to that one record (JSON, as for\n"
             "                 accord-agent publish) today, and why.\n"
             "migrate          applies the schema migrations this build carries to the\n"
             "                 PostgreSQL database named by CONNINFO (a libpq string).\n"
             "                 It must connect as the role that owns the database (on\n"
             "                 Debian: sudo -u postgres accord migrate --db dbname=accord)\n"
             "                 or a superuser; any other role is refused with the name of\n"
             "                 the one needed. accordd applies pending migrations itself\n"
             "                 only if its own role may. --sql prints the embedded SQL\n"
             "                 instead (what migrate runs on an empty database), to review.\n"
             "\n"
             "Exit status: 0 success, 1 the agreement has errors, 2 usage, 3 failed\n"
             "(file exists, permission, database unreachable...).\n");
}

static int s_subject_key(const char *path)
{
    uint8_t key[32];
    randombytes_buf(key, sizeof(key));
    char hex[65];
    acc_hex_encode(hex, sizeof(hex), key, sizeof(key));
    sodium_memzero(key, sizeof(key));
    FILE *f = NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        f = fdopen(fd, "w");
    }
    bool ok = f != NULL && fprintf(f, "%s\n", hex) > 0 && fflush(f) == 0 && fsync(fd) == 0;
    sodium_memzero(hex, sizeof(hex));
    if (f != NULL) {
        ok = fclose(f) == 0 && ok;
    } else if (fd >= 0) {
        (void)close(fd);
    }
    if (!ok) {
        (void)fprintf(stderr, "accord: could not create key file \"%s\": %s\n", path,
                      strerror(errno));
        return EXIT_FAILED;
    }
    (void)printf("wrote subject-tag key %s (mode 0600)\n", path);
    return EXIT_SUCCESS;
}

static int s_keygen(int argc, char **argv)
{
    static const struct option options[] = {
        { "out", required_argument, NULL, 'o' },
        { "subject-key", required_argument, NULL, 's' },
        { NULL, 0, NULL, 0 },
    };
    const char *dir = NULL;
    const char *subject = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "o:s:", options, NULL)) != -1) {
        if (opt == 'o') {
            dir = optarg;
        } else if (opt == 's') {
            subject = optarg;
        } else {
            s_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (subject != NULL && dir == NULL && optind == argc) {
        return s_subject_key(subject);
    }
    if (dir == NULL || subject != NULL || optind + 1 != argc) {
        s_usage(stderr);
        return EXIT_USAGE;
    }
    acc_err_t err;
    if (acc_keys_generate(dir, argv[optind], &err) != ACC_OK) {
        (void)fprintf(stderr, "accord: %s\n", err.msg);
        return EXIT_FAILED;
    }
    uint8_t key[ACC_CURVE_KEY_BYTES];
    char *path = acc_xasprintf("%s/%s.curve.pub", dir, argv[optind]);
    if (acc_keys_read_curve_public(key, path, &err) == ACC_OK) {
        char pub[ACC_Z85_KEY_CHARS + 1];
        acc_keys_encode_z85(pub, key);
        (void)printf("wrote %s/%s.{curve,box,sign}.{pub,secret}\ncurve public key: %s\n", dir,
                     argv[optind], pub);
    }
    free(path);
    return EXIT_SUCCESS;
}

static int s_check(const char *file)
{
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    acc_policy_t *policy = NULL;
    acc_rc_t rc = acc_policy_load(&policy, file, &diag, &err);
    for (size_t i = 0; i < diag.count; i++) {
        (void)printf("%s\n", diag.lines[i]);
    }
    if (rc == ACC_OK) {
        (void)printf("%s: agreement \"%s\" is valid: %zu agencies, %zu auditors, %zu rules; "
                     "in force %s to %s; hash %s\n",
                     file, acc_policy_id(policy), acc_policy_agency_count(policy),
                     acc_policy_auditor_count(policy), acc_policy_rule_count(policy),
                     acc_policy_valid_from(policy), acc_policy_valid_until(policy),
                     acc_policy_hash_hex(policy));
    } else if (diag.count == 0) {
        (void)printf("%s\n", err.msg);
    } else {
        (void)printf("%s: %zu error(s)\n", file, diag.count);
    }
    acc_diag_clear(&diag);
    acc_policy_destroy(&policy);
    return rc == ACC_OK ? EXIT_SUCCESS : rc == ACC_ERR_INVALID ? EXIT_INVALID : EXIT_FAILED;
}

static acc_policy_t *s_load_quietly(const char *file)
{
    acc_policy_t *policy = NULL;
    acc_err_t err;
    if (acc_policy_load(&policy, file, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord: %s\n(run `accord agreement check %s` for every error)\n",
                      err.msg, file);
        return NULL;
    }
    return policy;
}

static int s_explain(int argc, char **argv)
{
    static const struct option options[] = {
        { "from", required_argument, NULL, 'f' },
        { "type", required_argument, NULL, 't' },
        { "record", required_argument, NULL, 'r' },
        { NULL, 0, NULL, 0 },
    };
    const char *from = NULL;
    const char *type = NULL;
    const char *record = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "f:t:r:", options, NULL)) != -1) {
        if (opt == 'f') {
            from = optarg;
        } else if (opt == 't') {
            type = optarg;
        } else if (opt == 'r') {
            record = optarg;
        } else {
            return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc || from == NULL || (type == NULL) == (record == NULL)) {
        s_usage(stderr);
        return EXIT_USAGE;
    }
    acc_policy_t *policy = s_load_quietly(argv[optind]);
    if (policy == NULL) {
        return EXIT_INVALID;
    }
    size_t agency = 0;
    int status = EXIT_USAGE;
    if (!acc_policy_find_agency(policy, from, &agency)) {
        (void)fprintf(stderr, "accord: agency \"%s\" is not in the agreement\n", from);
    } else {
        (void)printf("agreement \"%s\" (%s), in force %s to %s, hash %s\n", acc_policy_id(policy),
                     acc_policy_title(policy), acc_policy_valid_from(policy),
                     acc_policy_valid_until(policy), acc_policy_hash_hex(policy));
        status = record != NULL ? explain_record(stdout, policy, agency, record)
                                : explain_type(stdout, policy, agency, type);
    }
    acc_policy_destroy(&policy);
    return status;
}

static int s_migrate(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--sql") == 0) {
        acc_migrate_write_sql(stdout);
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILED;
    }
    if (argc != 3 || strcmp(argv[1], "--db") != 0) {
        s_usage(stderr);
        return EXIT_USAGE;
    }
    PGconn *conn = PQconnectdb(argv[2]);
    int status = EXIT_SUCCESS;
    acc_err_t err;
    int applied = 0;
    if (PQstatus(conn) != CONNECTION_OK) {
        (void)fprintf(stderr, "accord: could not connect to PostgreSQL: %s", PQerrorMessage(conn));
        status = EXIT_FAILED;
    } else if (acc_migrate_apply(conn, &applied, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord: %s\n", err.msg);
        status = EXIT_FAILED;
    } else {
        (void)printf("schema at version %d (%d migration(s) applied)\n", acc_migrate_latest(),
                     applied);
    }
    PQfinish(conn);
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        s_usage(stdout);
        return EXIT_SUCCESS;
    }
    if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        (void)printf("accord %s\n", ACCORD_VERSION);
        return EXIT_SUCCESS;
    }
    if (sodium_init() < 0) {
        return EXIT_FAILED;
    }
    acc_err_t err;
    if (acc_process_harden(&err) != ACC_OK) { /* keygen holds secret keys */
        (void)fprintf(stderr, "accord: %s\n", err.msg);
        return EXIT_FAILED;
    }
    if (argc >= 2 && strcmp(argv[1], "keygen") == 0) {
        return s_keygen(argc - 1, argv + 1);
    }
    if (argc == 4 && strcmp(argv[1], "agreement") == 0 && strcmp(argv[2], "check") == 0) {
        return s_check(argv[3]);
    }
    if (argc >= 3 && strcmp(argv[1], "agreement") == 0 && strcmp(argv[2], "explain") == 0) {
        return s_explain(argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "migrate") == 0) {
        return s_migrate(argc - 1, argv + 1);
    }
    s_usage(stderr);
    return EXIT_USAGE;
}
