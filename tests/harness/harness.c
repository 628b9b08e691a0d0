/* harness.c - integration-test world: database clone, keys, agreement, processes */
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "accord/keys.h"
#include "accord/nhs.h"
#include "accord/record.h"

static long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char th_rules_hv_to_cc[] =
    "record_types:\n"
    "  - id: health-visit\n"
    "    fields: {visit_date: date, visit_type: text, concerns: text}\n"
    "rules:\n"
    "  - id: hv-to-cc\n"
    "    from: rft-health-visiting\n"
    "    to: [rmbc-childrens-centres]\n"
    "    record_types: [health-visit]\n"
    "    fields: [visit_date, visit_type]\n"
    "    subject: [nhs_number, family_name]\n"
    "    purpose: Best Start\n"
    "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
    "    consent: not-required\n";

/* ---- processes ---- */

th_proc_t *th_proc_start(char *const argv[])
{
    return th_proc_start_logged(argv, NULL);
}

th_proc_t *th_proc_start_logged(char *const argv[], const char *stderr_path)
{
    int in[2];
    int out[2];
    cr_assert_eq(pipe(in), 0);
    cr_assert_eq(pipe(out), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        if (stderr_path != NULL) {
            int fd = open(stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
            dup2(fd, 2);
            close(fd);
        }
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "could not run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    th_proc_t *proc = calloc(1, sizeof(*proc));
    proc->pid = pid;
    proc->in_fd = in[1];
    proc->out_fd = out[0];
    return proc;
}

void th_proc_write(th_proc_t *proc, const char *text)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(proc->in_fd, text, len);
        cr_assert(n > 0, "write to child stdin failed");
        text += n;
        len -= (size_t)n;
    }
}

void th_proc_close_stdin(th_proc_t *proc)
{
    if (proc->in_fd >= 0) {
        close(proc->in_fd);
        proc->in_fd = -1;
    }
}

/* Reads what is available within wait_ms; false at end of file. */
static bool s_read_some(th_proc_t *proc, int wait_ms)
{
    enum { CHUNK = 65536 };
    struct pollfd pfd = { .fd = proc->out_fd, .events = POLLIN };
    if (poll(&pfd, 1, wait_ms) <= 0) {
        return true;
    }
    if (proc->out_len + CHUNK + 1 > proc->out_cap) {
        proc->out_cap = proc->out_cap == 0 ? 4 * CHUNK : proc->out_cap * 2;
        proc->out = realloc(proc->out, proc->out_cap);
        proc->out[proc->out_len] = '\0';
    }
    ssize_t n = read(proc->out_fd, proc->out + proc->out_len, CHUNK);
    if (n <= 0) {
        return false;
    }
    for (ssize_t i = 0; i < n; i++) {
        proc->lines += proc->out[proc->out_len + (size_t)i] == '\n';
    }
    proc->out_len += (size_t)n;
    proc->out[proc->out_len] = '\0';
    return true;
}

size_t th_proc_wait_lines(th_proc_t *proc, size_t lines, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    while (proc->lines < lines && s_now_ms() < deadline) {
        if (!s_read_some(proc, 100)) {
            break;
        }
    }
    return proc->lines;
}

void th_proc_drain(th_proc_t *proc)
{
    size_t before;
    do {
        before = proc->out_len;
        (void)s_read_some(proc, 0);
    } while (proc->out_len > before);
}

/* Lines are usually read in order: the scan resumes where the last one ended. */
char *th_proc_line(th_proc_t *proc, size_t n)
{
    if (proc->out == NULL || n >= proc->lines) {
        return NULL;
    }
    if (n < proc->scan_line) {
        proc->scan_line = 0;
        proc->scan_off = 0;
    }
    const char *p = proc->out + proc->scan_off;
    for (; proc->scan_line < n; proc->scan_line++) {
        p = strchr(p, '\n') + 1;
    }
    proc->scan_off = (size_t)(p - proc->out);
    const char *end = strchr(p, '\n');
    return strndup(p, (size_t)(end - p));
}

int th_proc_wait(th_proc_t **proc_p, int timeout_ms)
{
    th_proc_t *proc = *proc_p;
    long deadline = s_now_ms() + timeout_ms;
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(proc->pid, &status, WNOHANG)) == 0 && s_now_ms() < deadline) {
        (void)s_read_some(proc, 20);
    }
    if (done == 0) {
        kill(proc->pid, SIGKILL);
        waitpid(proc->pid, &status, 0);
    }
    th_proc_close_stdin(proc);
    close(proc->out_fd);
    free(proc->out);
    free(proc);
    *proc_p = NULL;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

char *th_proc_finish(th_proc_t **proc_p, int timeout_ms, int *status)
{
    th_proc_t *proc = *proc_p;
    (void)th_proc_wait_lines(proc, SIZE_MAX, timeout_ms);
    char *out = strndup(proc->out != NULL ? proc->out : "", proc->out_len);
    cr_assert_not_null(out);
    *status = th_proc_wait(proc_p, timeout_ms);
    return out;
}

int th_proc_stop(th_proc_t **proc_p, int sig, int timeout_ms)
{
    kill((*proc_p)->pid, sig);
    return th_proc_wait(proc_p, timeout_ms);
}

/* ---- database ---- */

static void s_pg_dir(char *out, size_t len)
{
    const char *state = getenv("ACCORD_PG_STATE");
    cr_assert(state != NULL, "ACCORD_PG_STATE is not set: run through ctest");
    FILE *f = fopen(state, "r");
    cr_assert(f != NULL, "no PostgreSQL state file %s", state);
    char line[512];
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "PGDIR=", 6) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, len, "%.255s", line + 6);
        }
    }
    fclose(f);
    cr_assert(out[0] != '\0', "state file names no PGDIR");
}

static void s_admin(const char *pgdir, const char *sql)
{
    char conninfo[512];
    snprintf(conninfo, sizeof(conninfo), "host=%s user=postgres dbname=postgres", pgdir);
    PGconn *conn = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
    PGresult *res = PQexec(conn, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
}

void th_pg_exec(th_world_t *world, const char *sql)
{
    PGresult *res = PQexec(world->db, sql);
    ExecStatusType st = PQresultStatus(res);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
              PQerrorMessage(world->db));
    PQclear(res);
}

long th_pg_count(th_world_t *world, const char *where)
{
    char sql[2048];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM accord_log WHERE %s", where);
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(world->db));
    long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

long th_pg_wait_lock_waiters(th_world_t *world, const char *query_part, int timeout_ms)
{
    const char *values[1] = { query_part };
    long deadline = s_now_ms() + timeout_ms;
    long n = 0;
    for (;;) {
        PGresult *res = PQexecParams(world->db,
                                     "SELECT count(*) FROM pg_stat_activity WHERE "
                                     "wait_event_type = 'Lock' AND strpos(query, $1) > 0 "
                                     "AND pid <> pg_backend_pid()",
                                     1, NULL, values, NULL, NULL, 0);
        cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
        n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        if (n > 0 || s_now_ms() >= deadline) {
            return n;
        }
        th_sleep_ms(50);
    }
}

long th_pg_wait_count(th_world_t *world, const char *where, long expected, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    long n = th_pg_count(world, where);
    while (n != expected && s_now_ms() < deadline) {
        struct timespec ts = { .tv_sec = 0, .tv_nsec = 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        n = th_pg_count(world, where);
    }
    return n;
}

/* ---- keys and files ---- */

static void s_write(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    cr_assert(fd >= 0, "could not write %s", path);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void s_keygen(th_world_t *world, const char *name, char z85[41])
{
    acc_err_t err;
    cr_assert_eq(acc_keys_generate(world->dir, name, &err), ACC_OK, "%s", err.msg);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.curve.pub", world->dir, name);
    uint8_t key[32];
    cr_assert_eq(acc_keys_read_curve_public(key, path, &err), ACC_OK, "%s", err.msg);
    acc_keys_encode_z85(z85, key);
}

th_world_t *th_world_new(const char *const agencies[])
{
    cr_assert(sodium_init() >= 0);
    th_world_t *w = calloc(1, sizeof(*w));
    snprintf(w->dir, sizeof(w->dir), "/tmp/accord-test.XXXXXX");
    cr_assert(mkdtemp(w->dir) != NULL);
    const char *bin = getenv("ACCORD_BIN_DIR");
    cr_assert(bin != NULL, "ACCORD_BIN_DIR is not set: run through ctest");
    snprintf(w->bin_dir, sizeof(w->bin_dir), "%s", bin);
    char pgdir[256];
    s_pg_dir(pgdir, sizeof(pgdir));
    static unsigned counter;
    snprintf(w->dbname, sizeof(w->dbname), "t_%d_%u", (int)getpid(), counter++);
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE accord_template", w->dbname);
    s_admin(pgdir, sql);
    snprintf(w->conninfo, sizeof(w->conninfo), "host=%s user=postgres dbname=%s", pgdir, w->dbname);
    w->db = PQconnectdb(w->conninfo);
    cr_assert_eq(PQstatus(w->db), CONNECTION_OK);
    s_keygen(w, "broker", w->broker_pub);
    char path[512];
    snprintf(path, sizeof(path), "%s/broker.subject.secret", w->dir);
    s_write(path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 0600);
    char ignored[41];
    s_keygen(w, "ig-officer", ignored);
    s_keygen(w, "stranger", ignored);
    for (size_t i = 0; i < TH_MAX_AGENCIES && agencies[i] != NULL; i++) {
        snprintf(w->agencies[i], sizeof(w->agencies[i]), "%s", agencies[i]);
        s_keygen(w, agencies[i], w->agency_keys[i]);
        w->agency_count++;
    }
    return w;
}

void th_world_destroy(th_world_t **world_p)
{
    th_world_t *w = *world_p;
    if (w == NULL) {
        return;
    }
    if (w->broker != NULL) {
        th_broker_stop(w);
    }
    th_pg_private_remove(w);
    PQfinish(w->db);
    char pgdir[256];
    s_pg_dir(pgdir, sizeof(pgdir));
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", w->dbname);
    s_admin(pgdir, sql);
    /* ACCORD_KEEP_TEST_DIRS=1 keeps keys, configs and every process's log */
    const char *keep = getenv("ACCORD_KEEP_TEST_DIRS");
    if (keep != NULL && strcmp(keep, "1") == 0) {
        fprintf(stderr, "kept %s\n", w->dir);
    } else {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", w->dir);
        cr_assert_eq(system(cmd), 0);
    }
    free(w);
    *world_p = NULL;
}

void th_world_agreement(th_world_t *w, const char *body)
{
    char box_path[512];
    snprintf(box_path, sizeof(box_path), "%s/ig-officer.box.pub", w->dir);
    FILE *f = fopen(box_path, "r");
    char box_hex[80] = "";
    cr_assert(f != NULL && fgets(box_hex, sizeof(box_hex), f) != NULL);
    fclose(f);
    box_hex[strcspn(box_hex, "\n")] = '\0';
    char ig_pub[41];
    uint8_t key[32];
    acc_err_t err;
    snprintf(box_path, sizeof(box_path), "%s/ig-officer.curve.pub", w->dir);
    cr_assert_eq(acc_keys_read_curve_public(key, box_path, &err), ACC_OK);
    acc_keys_encode_z85(ig_pub, key);
    char path[512];
    snprintf(path, sizeof(path), "%s/agreement.yaml", w->dir);
    f = fopen(path, "w");
    fprintf(f, "agreement:\n  id: test-agreement\n  title: Test partnership\n"
               "  valid_from: 2020-01-01\n  valid_until: 2099-12-31\nagencies:\n");
    for (size_t i = 0; i < w->agency_count; i++) {
        fprintf(f, "  - id: %s\n    name: Test agency %s\n    key: \"%s\"\n", w->agencies[i],
                w->agencies[i], w->agency_keys[i]);
    }
    fprintf(f,
            "auditors:\n  - id: ig-officer\n    name: IG officer\n    key: \"%s\"\n"
            "    box_key: \"%s\"\n%s",
            ig_pub, box_hex, body);
    fclose(f);
}

void th_broker_config(th_world_t *w)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/broker.yaml", w->dir);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "listen: %s\ndatabase: \"%s\"\nagreement: agreement.yaml\n"
            "curve_secret_key: broker.curve.secret\nsigning_key: broker.sign.secret\n"
            "subject_key: broker.subject.secret\nlog_level: info\n"
            /* one high-water mark per database: a private cluster is another log */
            "state_directory: %s\n%s",
            w->listen[0] != '\0' ? w->listen : "tcp://127.0.0.1:*", w->conninfo,
            w->private_pg ? "state-private" : "state", w->broker_extra);
    fclose(f);
}

void th_broker_start(th_world_t *w)
{
    th_broker_config(w);
    char path[512];
    snprintf(path, sizeof(path), "%s/broker.yaml", w->dir);
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/accordd", w->bin_dir);
    char opt[] = "--config";
    char *argv[16] = { exe, opt, path, NULL };
    /* ACCORD_BROKER_WRAPPER runs the broker under a tool, e.g. valgrind: the
     * words of the variable come first, then accordd and its arguments. */
    char wrapper[512] = "";
    const char *env = getenv("ACCORD_BROKER_WRAPPER");
    if (env != NULL && env[0] != '\0') {
        snprintf(wrapper, sizeof(wrapper), "%s", env);
        size_t n = 0;
        char *save = NULL;
        for (char *word = strtok_r(wrapper, " ", &save); word != NULL && n < 12;
             word = strtok_r(NULL, " ", &save)) {
            argv[n++] = word;
        }
        argv[n++] = exe;
        argv[n++] = opt;
        argv[n++] = path;
        argv[n] = NULL;
    }
    char log[600];
    snprintf(log, sizeof(log), "%s/accordd.log", w->dir);
    w->broker = th_proc_start_logged(argv, log);
    if (th_proc_wait_lines(w->broker, 1, 30000) < 1) {
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "tail -n 40 '%s' >&2", log);
        if (system(cmd) != 0) {
            fprintf(stderr, "harness: could not show the end of %s\n", log);
        }
        cr_assert_fail("accordd printed no ready line");
    }
    char *line = th_proc_line(w->broker, 0);
    cr_assert(line != NULL && strncmp(line, "ready endpoint=", 15) == 0, "unexpected: %s", line);
    snprintf(w->endpoint, sizeof(w->endpoint), "%s", line + 15);
    free(line);
}

void th_broker_stop(th_world_t *w)
{
    int status = th_proc_stop(&w->broker, SIGTERM, 20000);
    if (status != 0) {
        char cmd[700];
        snprintf(cmd, sizeof(cmd), "tail -n 40 '%s/accordd.log' >&2", w->dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "harness: could not show the end of %s/accordd.log\n", w->dir);
        }
    }
    cr_assert_eq(status, 0, "accordd exited with status %d", status);
}

bool th_broker_logged(th_world_t *w, const char *needle, int timeout_ms)
{
    char log[600];
    snprintf(log, sizeof(log), "%s/accordd.log", w->dir);
    return th_file_wait(log, needle, timeout_ms);
}

const char *th_agent_config(th_world_t *w, const char *agency, const char *subscriptions)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s.agent.yaml", w->dir, agency);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "broker: \"%s\"\nbroker_key: \"%s\"\nagency: %s\n"
            "curve_secret_key: %s.curve.secret\nlog_level: info\n",
            w->endpoint, w->broker_pub, agency, agency);
    if (subscriptions != NULL) {
        fprintf(f, "subscriptions: %s\n", subscriptions);
    }
    fclose(f);
    return path;
}

void th_agent_config_load(th_world_t *w, const char *agency, acc_agent_config_t *cfg)
{
    const char *path = th_agent_config(w, agency, NULL);
    acc_err_t err;
    cr_assert_eq(acc_agent_config_load(cfg, path, NULL, &err), ACC_OK, "%s", err.msg);
}

th_proc_t *th_agent_start(th_world_t *w, const char *command, const char *agency,
                          const char *extra_arg)
{
    const char *extra[] = { extra_arg, NULL };
    return th_agent_start_argv(w, command, agency, extra);
}

th_proc_t *th_agent_start_argv(th_world_t *w, const char *command, const char *agency,
                               const char *const extra[])
{
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/accord-agent", w->bin_dir);
    char config[512];
    snprintf(config, sizeof(config), "%s/%s.agent.yaml", w->dir, agency);
    if (access(config, R_OK) != 0) {
        (void)th_agent_config(w, agency, NULL);
    }
    char log[600];
    snprintf(log, sizeof(log), "%s/%s.%s.log", w->dir, agency, command);
    char cmd[32];
    char opt[] = "--config";
    snprintf(cmd, sizeof(cmd), "%s", command);
    char *argv[16] = { exe, cmd, opt, config };
    size_t n = 4;
    for (size_t i = 0; extra[i] != NULL && n < 15; i++) {
        argv[n++] = strdup(extra[i]);
    }
    argv[n] = NULL;
    th_proc_t *proc = th_proc_start_logged(argv, log);
    for (size_t i = 4; i < n; i++) {
        free(argv[i]);
    }
    return proc;
}

long th_proc_rss_kib(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no %s", path);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kib;
}

bool th_file_wait(const char *path, const char *needle, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    do {
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            char line[4096];
            bool found = false;
            while (!found && fgets(line, sizeof(line), f) != NULL) {
                found = strstr(line, needle) != NULL;
            }
            fclose(f);
            if (found) {
                return true;
            }
        }
        struct timespec ts = { .tv_sec = 0, .tv_nsec = 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    } while (s_now_ms() < deadline);
    return false;
}

bool th_agent_wait_connected(th_world_t *w, const char *agency, const char *command)
{
    char log[600];
    snprintf(log, sizeof(log), "%s/%s.%s.log", w->dir, agency, command);
    return th_file_wait(log, "connected to", 20000);
}

char *th_health_visit_json(const char *record_id, const char *nhs)
{
    static const char fmt[] =
        "{\"record_id\":\"%s\",\"record_type\":\"health-visit\","
        "\"occurred_at\":\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":\"%s\","
        "\"given_name\":\"Amelia\",\"family_name\":\"Smith\","
        "\"date_of_birth\":\"2026-05-02\",\"postcode\":\"S60 1AA\"},"
        "\"consent\":\"given\",\"fields\":{\"visit_date\":\"2026-11-20\","
        "\"visit_type\":\"6-8-week\",\"concerns\":\"feeding going well\"}}\n";
    int n = snprintf(NULL, 0, fmt, record_id, nhs);
    cr_assert(n > 0);
    char *out = malloc((size_t)n + 1);
    snprintf(out, (size_t)n + 1, fmt, record_id, nhs);
    return out;
}
/* A connected client of the client library, welcomed by the broker. */
client_t *th_client(th_world_t *world, const char *agency, acc_agent_config_t *cfg)
{
    th_agent_config_load(world, agency, cfg);
    client_t *c = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&c, cfg, false, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(client_hello(c, 10000, &err), ACC_OK, "%s", err.msg);
    return c;
}

void th_send_record(client_t *c, Accord__V1__ChildRecord *rec, const char *from,
                    uint64_t correlation)
{
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    publish.record = rec;
    publish.from_agency = acc_pb_str(from != NULL ? from : "");
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = correlation;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env.publish = &publish;
    acc_err_t err;
    cr_assert_eq(client_send(c, &env, &err), ACC_OK, "%s", err.msg);
}

void th_send_publish(client_t *c, const char *json, const char *from, uint64_t correlation)
{
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    cr_assert_eq(acc_record_from_json(&rec, json, strlen(json), &err), ACC_OK, "%s", err.msg);
    th_send_record(c, rec, from, correlation);
    acc_record_free(&rec);
}

Accord__V1__Envelope *th_publish(client_t *c, const char *json, const char *from)
{
    th_send_publish(c, json, from, 7);
    Accord__V1__Envelope *reply = NULL;
    acc_err_t err;
    cr_assert_eq(client_recv(c, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    return reply;
}

int th_broker_metrics_port(th_world_t *w)
{
    cr_assert(th_broker_logged(w, "serving /metrics", 5000));
    char path[600];
    snprintf(path, sizeof(path), "%s/accordd.log", w->dir);
    char *log = th_slurp(path);
    int port = 0;
    for (const char *at = strstr(log, "http://127.0.0.1:"); at != NULL;
         at = strstr(at + 1, "http://127.0.0.1:")) {
        port = atoi(at + strlen("http://127.0.0.1:"));
    }
    free(log);
    cr_assert_gt(port, 0);
    return port;
}

double th_metric(int port, const char *series)
{
    int status = 0;
    char *response = th_http_get(port, "/metrics", &status);
    cr_assert_eq(status, 200, "%s", response);
    double value = -1;
    size_t len = strlen(series);
    for (const char *line = response; line != NULL && *line != '\0';) {
        if (strncmp(line, series, len) == 0 && line[len] == ' ') {
            value = strtod(line + len + 1, NULL);
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    free(response);
    return value;
}

void th_pg_private_start(th_world_t *w)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "%s/tests/pg/start '%s/pg.state' '%s/accord' accord >/dev/null",
             ACCORD_SOURCE_DIR, w->dir, w->bin_dir);
    cr_assert_eq(system(cmd), 0, "the private PostgreSQL did not start");
    char state[600];
    snprintf(state, sizeof(state), "%s/pg.state", w->dir);
    FILE *f = fopen(state, "r");
    cr_assert_not_null(f);
    char line[512];
    char pgdir[256] = "";
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "PGDIR=", 6) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(pgdir, sizeof(pgdir), "%.255s", line + 6);
        }
    }
    fclose(f);
    snprintf(w->shared_conninfo, sizeof(w->shared_conninfo), "%s", w->conninfo);
    snprintf(w->conninfo, sizeof(w->conninfo),
             "host=%s user=postgres dbname=accord connect_timeout=2", pgdir);
    w->private_pg = true;
}

void th_pg_private_ctl(th_world_t *w, const char *action)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/tests/pg/ctl '%s/pg.state' %s", ACCORD_SOURCE_DIR, w->dir,
             action);
    cr_assert_eq(system(cmd), 0, "pg ctl %s failed", action);
}

void th_pg_private_remove(th_world_t *w)
{
    if (!w->private_pg) {
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/tests/pg/stop '%s/pg.state'", ACCORD_SOURCE_DIR, w->dir);
    int rc = system(cmd);
    if (rc != 0) { /* cleanup goes on: the test's own result stands */
        fprintf(stderr, "harness: stopping the private PostgreSQL in %s failed (status %d)\n",
                w->dir, rc);
    }
    snprintf(w->conninfo, sizeof(w->conninfo), "%s", w->shared_conninfo);
    w->private_pg = false;
}

int th_run(th_world_t *w, char **out, const char *program, ...)
{
    char *argv[16];
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/%s", w->bin_dir, program);
    argv[0] = exe;
    va_list ap;
    va_start(ap, program);
    size_t n = 1;
    for (char *arg = va_arg(ap, char *); arg != NULL && n < 15; arg = va_arg(ap, char *)) {
        argv[n++] = arg;
    }
    va_end(ap);
    argv[n] = NULL;
    th_proc_t *p = th_proc_start(argv);
    th_proc_close_stdin(p);
    while (s_read_some(p, 100)) {
    }
    *out = strdup(p->out != NULL ? p->out : "");
    return th_proc_wait(&p, 30000);
}

void th_sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

char *th_http_get(int port, const char *path, int *status)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    size_t cap = 65536;
    size_t len = 0;
    char *buf = malloc(cap);
    ssize_t got;
    while ((got = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[len] = '\0';
    close(fd);
    cr_assert(strncmp(buf, "HTTP/1.", 7) == 0 && len > 12, "not an HTTP answer: %s", buf);
    if (status != NULL) {
        *status = atoi(buf + 9);
    }
    return buf;
}

Accord__V1__ErrorCode th_publish_code(th_world_t *world, const char *agency, const char *json,
                                      const char *from)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, agency, &cfg);
    Accord__V1__Envelope *reply = th_publish(c, json, from);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    Accord__V1__ErrorCode code = reply->publish_result->code;
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    return code;
}

void th_assert_all_accepted(th_proc_t *pub, int n)
{
    size_t got = th_proc_wait_lines(pub, (size_t)n, 1000);
    cr_assert_eq(got, (size_t)n, "%zu results for %d records", got, n);
    char *seen = calloc((size_t)n + 1, 1);
    for (int i = 0; i < n; i++) {
        char *line = th_proc_line(pub, (size_t)i);
        json_t *obj = json_loads(line, 0, NULL);
        cr_assert_not_null(obj, "%s", line);
        json_int_t no = json_integer_value(json_object_get(obj, "line"));
        cr_assert(no >= 1 && no <= n && !seen[no], "line %lld answered twice", (long long)no);
        seen[no] = 1;
        cr_assert_str_eq(json_string_value(json_object_get(obj, "result")), "accepted", "%s", line);
        json_decref(obj);
        free(line);
    }
    cr_assert_null(th_proc_line(pub, (size_t)n), "more results than records");
    free(seen);
}

const char *th_nhs(size_t i)
{
    static char pool[TH_NHS_POOL][ACC_NHS_DIGITS + 1];
    if (pool[0][0] == '\0') {
        long base = 943476500;
        for (size_t n = 0; n < TH_NHS_POOL; base++) {
            char digits[24];
            snprintf(digits, sizeof(digits), "%09ld", base);
            int sum = 0;
            for (int k = 0; k < 9; k++) {
                sum += (digits[k] - '0') * (10 - k);
            }
            int check = 11 - sum % 11;
            check = check == 11 ? 0 : check;
            if (check == 10) {
                continue; /* no number has this base */
            }
            memcpy(pool[n], digits, 9);
            pool[n][9] = (char)('0' + check);
            pool[n][10] = '\0';
            cr_assert(acc_nhs_is_valid(pool[n]), "%s", pool[n]);
            n++;
        }
    }
    cr_assert_lt(i, (size_t)TH_NHS_POOL);
    return pool[i];
}

char *th_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t cap = (size_t)1 << 20;
    size_t len = 0;
    char *text = malloc(cap);
    size_t got;
    while ((got = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            cap *= 2;
            text = realloc(text, cap);
        }
    }
    text[len] = '\0';
    fclose(f);
    return text;
}

static bool s_is_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

size_t th_assert_names_no_child(const char *text, const char *where, const char *const words[])
{
    for (size_t i = 0; i < TH_NHS_POOL; i++) {
        const char *n = th_nhs(i);
        char spaced[16];
        snprintf(spaced, sizeof(spaced), "%.3s %.3s %.4s", n, n + 3, n + 6);
        cr_assert(strstr(text, n) == NULL && strstr(text, spaced) == NULL,
                  "%s holds the NHS number %s", where, n);
    }
    for (size_t i = 0; words != NULL && words[i] != NULL; i++) {
        cr_assert(strstr(text, words[i]) == NULL, "%s holds \"%s\"", where, words[i]);
    }
    size_t lines = 0;
    for (const char *p = text; *p != '\0'; p++) {
        lines += *p == '\n';
        if (*p < '0' || *p > '9' || (p > text && s_is_alnum(p[-1]))) {
            continue;
        }
        size_t run = strspn(p, "0123456789");
        if (run == ACC_NHS_DIGITS && !s_is_alnum(p[run])) {
            char digits[ACC_NHS_DIGITS + 1];
            memcpy(digits, p, ACC_NHS_DIGITS);
            digits[ACC_NHS_DIGITS] = '\0';
            cr_assert(!acc_nhs_is_valid(digits), "%s holds an NHS number: %s", where, digits);
        }
        p += run - 1;
    }
    return lines;
}

size_t th_assert_broker_log_names_no_child(th_world_t *world, const char *const words[])
{
    char path[600];
    snprintf(path, sizeof(path), "%s/accordd.log", world->dir);
    char *log = th_slurp(path);
    size_t lines = th_assert_names_no_child(log, "the broker's log", words);
    free(log);
    cr_assert_gt(lines, 0, "the broker's log is empty");
    return lines;
}

/* ---- branch restore: accordd with one more argument, and its exit alone ---- */

int th_broker_run_once(th_world_t *w, const char *arg)
{
    th_broker_config(w);
    char path[512];
    snprintf(path, sizeof(path), "%s/broker.yaml", w->dir);
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/accordd", w->bin_dir);
    char opt[] = "--config";
    char *extra = arg != NULL ? strdup(arg) : NULL;
    char *argv[] = { exe, opt, path, extra, NULL };
    char log[600];
    snprintf(log, sizeof(log), "%s/accordd.log", w->dir);
    th_proc_t *p = th_proc_start_logged(argv, log);
    free(extra);
    return th_proc_wait(&p, 30000);
}

/* ---- branch subexec: agents started the way their systemd unit starts them ---- */

th_proc_t *th_agent_start_keyed(th_world_t *w, const char *config, const char *command,
                                const char *key_path, const char *user, const char *const extra[])
{
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/accord-agent", w->bin_dir);
    char log[600];
    snprintf(log, sizeof(log), "%s.%s.log", config, command);
    char *argv[24];
    size_t n = 0;
    if (user != NULL) {
        argv[n++] = strdup("setpriv");
        argv[n++] = acc_xasprintf("--reuid=%s", user);
        argv[n++] = acc_xasprintf("--regid=%s", user);
        argv[n++] = strdup("--clear-groups");
        argv[n++] = strdup("--");
    }
    argv[n++] = strdup(exe);
    argv[n++] = strdup(command);
    argv[n++] = strdup("--config");
    argv[n++] = strdup(config);
    for (size_t i = 0; extra[i] != NULL && n < 23; i++) {
        argv[n++] = strdup(extra[i]);
    }
    argv[n] = NULL;
    int key_fd =
        open(key_path, O_RDONLY | O_CLOEXEC); /* as systemd does, before the user changes */
    cr_assert(key_fd >= 0, "could not open %s: %s", key_path, strerror(errno));
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        dup2(key_fd, 0);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        close(fd);
        int out = open("/dev/null", O_WRONLY);
        dup2(out, 1);
        close(out);
        execvp(argv[0], argv);
        fprintf(stderr, "could not run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(key_fd);
    for (size_t i = 0; i < n; i++) {
        free(argv[i]);
    }
    th_proc_t *proc = calloc(1, sizeof(*proc));
    proc->pid = pid;
    int pipe_fds[2];
    cr_assert_eq(pipe(pipe_fds), 0); /* a stdout that stays empty, for th_proc_wait */
    proc->out_fd = pipe_fds[0];
    proc->in_fd = pipe_fds[1]; /* closed with the rest by th_proc_wait */
    return proc;
}

/* ---- branch audit16 ---- */

static char *s_hex_param(const uint8_t *bytes, size_t len)
{
    if (bytes == NULL) {
        return NULL;
    }
    char *out = acc_xmalloc(2 * len + 3);
    out[0] = '\\';
    out[1] = 'x';
    acc_hex_encode(out + 2, 2 * len + 1, bytes, len);
    return out;
}

/* {a,b} for a text[] or bigint[] parameter. */
static char *s_array_param(const char *const *texts, const int64_t *ints, size_t n)
{
    size_t cap = 3 + n * 70;
    char *out = acc_xcalloc(cap, 1);
    size_t len = (size_t)snprintf(out, cap, "{");
    for (size_t i = 0; i < n; i++) {
        len += texts != NULL
                   ? (size_t)snprintf(out + len, cap - len, "%s\"%s\"", i > 0 ? "," : "", texts[i])
                   : (size_t)snprintf(out + len, cap - len, "%s%lld", i > 0 ? "," : "",
                                      (long long)ints[i]);
    }
    (void)snprintf(out + len, cap - len, "}");
    return out;
}

static void s_head(th_world_t *world, int64_t *seq, uint8_t prev[ACC_LOGROW_HASH_BYTES],
                   uint8_t agreement[32])
{
    PGresult *res = PQexecParams(world->db,
                                 "SELECT seq::text AS head, entry_hash, agreement_hash FROM "
                                 "accord_log ORDER BY seq DESC LIMIT 1",
                                 0, NULL, NULL, NULL, NULL, 1);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    cr_assert_eq(PQntuples(res), 1, "the log is empty: nothing to chain to");
    cr_assert_eq(PQgetlength(res, 0, 1), ACC_LOGROW_HASH_BYTES);
    cr_assert_eq(PQgetlength(res, 0, 2), 32);
    char text[32];
    snprintf(text, sizeof(text), "%.*s", PQgetlength(res, 0, 0), PQgetvalue(res, 0, 0));
    *seq = strtoll(text, NULL, 10);
    memcpy(prev, PQgetvalue(res, 0, 1), ACC_LOGROW_HASH_BYTES);
    memcpy(agreement, PQgetvalue(res, 0, 2), 32);
    PQclear(res);
}

int64_t th_pg_append_logrow(th_world_t *world, acc_logrow_t *row)
{
    static uint8_t agreement[32]; /* row->agreement_hash may point here after the call */
    uint8_t prev[ACC_LOGROW_HASH_BYTES];
    int64_t head = 0;
    s_head(world, &head, prev, agreement);
    row->seq = head + 1;
    row->agreement_hash = row->agreement_hash != NULL ? row->agreement_hash : agreement;
    if (row->at_us == 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        row->at_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    }
    uint8_t entry[ACC_LOGROW_HASH_BYTES];
    acc_logrow_hash(entry, prev, row);
    char seq[24];
    char at[24];
    char epoch[24];
    char share[37];
    snprintf(seq, sizeof(seq), "%lld", (long long)row->seq);
    snprintf(at, sizeof(at), "%lld", (long long)row->at_us);
    snprintf(epoch, sizeof(epoch), "%lld", (long long)row->key_epoch);
    acc_uuid_format(share, row->share_id);
    char *blobs[9] = {
        s_hex_param(row->subject_tag, ACC_LOGROW_TAG_BYTES),
        s_hex_param(row->agreement_hash, 32),
        s_hex_param(row->nonce, ACC_LOGROW_NONCE_BYTES),
        s_hex_param(row->payload, row->payload_len),
        s_hex_param(row->signature, ACC_LOGROW_SIG_BYTES),
        s_hex_param(prev, sizeof(prev)),
        s_hex_param(entry, sizeof(entry)),
        s_hex_param(row->content_hash, ACC_LOGROW_HASH_BYTES),
        row->acked_count > 0 ? s_array_param(NULL, row->acked_seqs, row->acked_count) : NULL,
    };
    char *rules = s_array_param(row->rule_ids, NULL, row->rule_count);
    const char *values[24] = { seq,
                               share,
                               at,
                               row->event,
                               row->from_agency,
                               row->to_agency,
                               row->record_type,
                               row->record_id,
                               blobs[0],
                               rules,
                               row->purpose,
                               row->lawful_basis,
                               row->consent,
                               row->error_code,
                               row->reason,
                               blobs[1],
                               row->key_epoch != 0 ? epoch : NULL,
                               blobs[2],
                               blobs[3],
                               blobs[4],
                               blobs[5],
                               blobs[6],
                               blobs[7],
                               blobs[8] };
    PGresult *res = PQexecParams(
        world->db,
        "INSERT INTO accord_log (seq, share_id, at, event, from_agency, to_agency, record_type, "
        "record_id, subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason, "
        "agreement_hash, key_epoch, nonce, payload, signature, prev_hash, entry_hash, "
        "content_hash, acked_seqs) VALUES ($1, $2, to_timestamp(0) + $3::bigint * interval "
        "'1 microsecond', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, "
        "$19, $20, $21, $22, $23, $24)",
        24, NULL, values, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "appending seq %s: %s", seq,
                 PQerrorMessage(world->db));
    PQclear(res);
    for (size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++) {
        free(blobs[i]);
    }
    free(rules);
    return row->seq;
}

int64_t th_pg_append_old_ack(th_world_t *world, const char *record_id)
{
    const char *values[1] = { record_id };
    PGresult *res = PQexecParams(world->db,
                                 "SELECT share_id::text, seq::text AS share_seq, from_agency, "
                                 "to_agency, record_type FROM accord_log WHERE event = 'shared' "
                                 "AND record_id = $1",
                                 1, NULL, values, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    cr_assert_eq(PQntuples(res), 1, "one shared row has record id %s", record_id);
    acc_logrow_t row = { 0 };
    acc_err_t err;
    cr_assert_eq(acc_uuid_parse(row.share_id, PQgetvalue(res, 0, 0), &err), ACC_OK);
    row.event = "acknowledged";
    row.from_agency = PQgetvalue(res, 0, 2);
    row.to_agency = PQgetvalue(res, 0, 3);
    row.record_type = PQgetvalue(res, 0, 4);
    row.record_id = record_id;
    int64_t seq = th_pg_append_logrow(world, &row);
    const char *cursor[3] = { PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 1) };
    PGresult *up = PQexecParams(world->db,
                                "INSERT INTO accord_cursor (to_agency, record_type, acked_to, "
                                "acked_above) VALUES ($1, $2, 0, ARRAY[$3::bigint]) "
                                "ON CONFLICT (to_agency, record_type) DO UPDATE SET acked_above "
                                "= accord_cursor.acked_above || $3::bigint "
                                "WHERE accord_cursor.acked_to < $3::bigint",
                                3, NULL, cursor, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(up), PGRES_COMMAND_OK, "%s", PQerrorMessage(world->db));
    PQclear(up);
    PQclear(res);
    return seq;
}

/* ---- branch tests16 ---- */

static long s_pg_long_on(PGconn *db, const char *sql, long *second)
{
    PGresult *res = PQexec(db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(db));
    long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    if (second != NULL) {
        *second = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    return n;
}

long th_pg_acked_count_on(PGconn *db, const char *where)
{
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FILTER (WHERE %s), count(*) - count(DISTINCT share_seq) "
             "FROM accord_log_acks",
             where);
    long twice = 0;
    long n = s_pg_long_on(db, sql, &twice);
    cr_assert_eq(twice, 0, "%ld acknowledgement(s) of a share already acknowledged", twice);
    return n;
}

long th_pg_acked_count(th_world_t *world, const char *where)
{
    return th_pg_acked_count_on(world->db, where);
}

long th_pg_wait_acked_count(th_world_t *world, const char *where, long expected, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    long n = th_pg_acked_count(world, where);
    while (n != expected && s_now_ms() < deadline) {
        th_sleep_ms(20);
        n = th_pg_acked_count(world, where);
    }
    return n;
}

long th_pg_pending_count_on(PGconn *db, const char *where)
{
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM accord_log WHERE event = 'shared' AND NOT EXISTS (SELECT 1 "
             "FROM accord_log_acks k WHERE k.share_seq = accord_log.seq) AND (%s)",
             where);
    return s_pg_long_on(db, sql, NULL);
}

long th_pg_pending_count(th_world_t *world, const char *where)
{
    return th_pg_pending_count_on(world->db, where);
}

long th_pg_wait_pending_count(th_world_t *world, const char *where, long expected, int timeout_ms)
{
    long deadline = s_now_ms() + timeout_ms;
    long n = th_pg_pending_count(world, where);
    while (n != expected && s_now_ms() < deadline) {
        th_sleep_ms(20);
        n = th_pg_pending_count(world, where);
    }
    return n;
}

/* s_admin, but a database another session is just leaving (a broker that has
 * exited, whose server process is still ending) is waited for, up to 10 s. */
static void s_admin_when_free(const char *pgdir, const char *sql)
{
    char conninfo[512];
    snprintf(conninfo, sizeof(conninfo), "host=%s user=postgres dbname=postgres", pgdir);
    PGconn *conn = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
    long deadline = s_now_ms() + 10000;
    for (;;) {
        PGresult *res = PQexec(conn, sql);
        bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool busy = !ok && state != NULL && strcmp(state, "55006") == 0; /* object in use */
        if (ok || !busy || s_now_ms() >= deadline) {
            cr_assert(ok, "%s: %s", sql, PQerrorMessage(conn));
            PQclear(res);
            break;
        }
        PQclear(res);
        th_sleep_ms(100);
    }
    PQfinish(conn);
}

static void s_world_reconnect(th_world_t *w)
{
    w->db = PQconnectdb(w->conninfo);
    cr_assert_eq(PQstatus(w->db), CONNECTION_OK, "%s", PQerrorMessage(w->db));
}

void th_pg_snapshot(th_world_t *w)
{
    cr_assert(w->broker == NULL && !w->private_pg, "a snapshot needs the broker stopped");
    char pgdir[256];
    s_pg_dir(pgdir, sizeof(pgdir));
    PQfinish(w->db);
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s_snap TEMPLATE %s", w->dbname, w->dbname);
    s_admin_when_free(pgdir, sql);
    s_world_reconnect(w);
}

void th_pg_snapshot_restore(th_world_t *w)
{
    cr_assert(w->broker == NULL && !w->private_pg, "a restore needs the broker stopped");
    char pgdir[256];
    s_pg_dir(pgdir, sizeof(pgdir));
    PQfinish(w->db);
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", w->dbname);
    s_admin(pgdir, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE %s_snap", w->dbname, w->dbname);
    s_admin_when_free(pgdir, sql);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s_snap", w->dbname);
    s_admin(pgdir, sql);
    s_world_reconnect(w);
}

void th_pg_recreate(th_world_t *w, const char *accord_path)
{
    cr_assert(w->broker == NULL && !w->private_pg, "the database is recreated with no broker");
    char pgdir[256];
    s_pg_dir(pgdir, sizeof(pgdir));
    PQfinish(w->db);
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", w->dbname);
    s_admin(pgdir, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", w->dbname);
    s_admin(pgdir, sql);
    char exe[600];
    snprintf(exe, sizeof(exe), "%s", accord_path);
    char migrate[] = "migrate";
    char db_opt[] = "--db";
    char *argv[] = { exe, migrate, db_opt, w->conninfo, NULL };
    th_proc_t *p = th_proc_start(argv);
    th_proc_close_stdin(p);
    th_proc_wait_lines(p, 1, 60000);
    char *line = th_proc_line(p, 0);
    int status = th_proc_wait(&p, 60000);
    cr_assert_eq(status, 0, "%s migrate exited %d: %s", accord_path, status,
                 line != NULL ? line : "(nothing printed)");
    free(line);
    s_world_reconnect(w);
}
