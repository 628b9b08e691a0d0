/* test_keys.c - key pairs on disk: created 0600, refused when others can read them */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accord/keys.h"

static char s_dir[64];

static void setup(void)
{
    cr_assert(sodium_init() >= 0);
    snprintf(s_dir, sizeof(s_dir), "/tmp/accord-keys.XXXXXX");
    cr_assert(mkdtemp(s_dir) != NULL);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(keys, .init = setup, .fini = teardown);

static const char *s_path(const char *file)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", s_dir, file);
    return path;
}

Test(keys, generates_three_pairs_with_private_secret_files)
{
    acc_err_t err;
    cr_assert_eq(acc_keys_generate(s_dir, "rft-health-visiting", &err), ACC_OK, "%s", err.msg);
    static const char *const secrets[] = { "curve", "box", "sign" };
    for (size_t i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof(name), "rft-health-visiting.%s.secret", secrets[i]);
        struct stat st;
        cr_assert_eq(stat(s_path(name), &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600, "%s has mode %o", name, st.st_mode & 0777);
    }
    uint8_t secret[32];
    uint8_t public_key[32];
    cr_assert_eq(
        acc_keys_read_curve_secret(secret, s_path("rft-health-visiting.curve.secret"), &err),
        ACC_OK, "%s", err.msg);
    cr_assert_eq(
        acc_keys_read_curve_public(public_key, s_path("rft-health-visiting.curve.pub"), &err),
        ACC_OK);
    uint8_t derived[32];
    crypto_scalarmult_base(derived, secret);
    cr_assert_eq(memcmp(derived, public_key, 32), 0, "CURVE public key does not match secret");
    uint8_t box[32];
    cr_assert_eq(acc_keys_read_box_secret(box, s_path("rft-health-visiting.box.secret"), &err),
                 ACC_OK);
    uint8_t sign[64];
    cr_assert_eq(acc_keys_read_sign_secret(sign, s_path("rft-health-visiting.sign.secret"), &err),
                 ACC_OK);
    uint8_t sign_pub[32];
    cr_assert_eq(acc_keys_read_hex_public(sign_pub, s_path("rft-health-visiting.sign.pub"), &err),
                 ACC_OK);
    cr_assert_eq(memcmp(sign + 32, sign_pub, 32), 0);
}

Test(keys, refuses_a_secret_file_others_can_read)
{
    acc_err_t err;
    cr_assert_eq(acc_keys_generate(s_dir, "a", &err), ACC_OK);
    cr_assert_eq(chmod(s_path("a.curve.secret"), 0644), 0);
    uint8_t key[32];
    cr_assert_eq(acc_keys_read_curve_secret(key, s_path("a.curve.secret"), &err),
                 ACC_ERR_PERMISSION);
    cr_assert(strstr(err.msg, "mode 0644") != NULL, "%s", err.msg);
    cr_assert_eq(chmod(s_path("a.box.secret"), 0640), 0);
    cr_assert_eq(acc_keys_read_box_secret(key, s_path("a.box.secret"), &err), ACC_ERR_PERMISSION);
}

Test(keys, never_overwrites_an_existing_key)
{
    acc_err_t err;
    cr_assert_eq(acc_keys_generate(s_dir, "a", &err), ACC_OK);
    uint8_t before[32];
    cr_assert_eq(acc_keys_read_curve_secret(before, s_path("a.curve.secret"), &err), ACC_OK);
    cr_assert_eq(acc_keys_generate(s_dir, "a", &err), ACC_ERR_IO);
    uint8_t after[32];
    cr_assert_eq(acc_keys_read_curve_secret(after, s_path("a.curve.secret"), &err), ACC_OK);
    cr_assert_eq(memcmp(before, after, 32), 0);
}

Test(keys, refuses_symlinks_bad_names_and_malformed_content)
{
    acc_err_t err;
    cr_assert_eq(acc_keys_generate(s_dir, "a", &err), ACC_OK);
    char target[128];
    snprintf(target, sizeof(target), "%s", s_path("a.curve.secret"));
    cr_assert_eq(symlink(target, s_path("link.curve.secret")), 0);
    uint8_t key[64];
    cr_assert_eq(acc_keys_read_curve_secret(key, s_path("link.curve.secret"), &err), ACC_ERR_IO);
    cr_assert_eq(acc_keys_generate(s_dir, "../escape", &err), ACC_ERR_INVALID);
    FILE *f = fopen(s_path("bad.box.secret"), "w");
    fputs("not hex at all\n", f);
    fclose(f);
    cr_assert_eq(chmod(s_path("bad.box.secret"), 0600), 0);
    cr_assert_eq(acc_keys_read_box_secret(key, s_path("bad.box.secret"), &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, "not hex") == NULL, "key content leaked: %s", err.msg);
    /* the reader wraps the decoder's own message in err->msg: it must survive */
    char want[256];
    snprintf(want, sizeof(want), "key file \"%s\" is malformed: expected 64 hexadecimal digits",
             s_path("bad.box.secret"));
    cr_assert_str_eq(err.msg, want);
}

Test(keys, an_error_message_may_quote_the_one_it_replaces)
{
    acc_err_t err;
    (void)acc_err_set(&err, ACC_ERR_INVALID, "expected %d digits", 64);
    cr_assert_eq(acc_err_set(&err, ACC_ERR_IO, "broker_key: %s", err.msg), ACC_ERR_IO);
    cr_assert_str_eq(err.msg, "broker_key: expected 64 digits");
    cr_assert_eq(err.code, ACC_ERR_IO);
}

/* ---- branch subexec ---- */

Test(keys, reads_a_curve_secret_from_a_private_descriptor_and_refuses_any_other)
{
    acc_err_t err;
    cr_assert_eq(acc_keys_generate(s_dir, "agent", &err), ACC_OK, "%s", err.msg);
    const char *path = s_path("agent.curve.secret");
    uint8_t from_path[ACC_CURVE_KEY_BYTES];
    uint8_t from_fd[ACC_CURVE_KEY_BYTES];
    cr_assert_eq(acc_keys_read_curve_secret(from_path, path, &err), ACC_OK, "%s", err.msg);
    int fd = open(path, O_RDONLY);
    cr_assert_eq(acc_keys_read_curve_secret_fd(from_fd, fd, &err), ACC_OK, "%s", err.msg);
    close(fd);
    cr_assert_eq(memcmp(from_path, from_fd, sizeof(from_fd)), 0);

    cr_assert_eq(chmod(path, 0640), 0);
    fd = open(path, O_RDONLY);
    cr_assert_eq(acc_keys_read_curve_secret_fd(from_fd, fd, &err), ACC_ERR_PERMISSION);
    close(fd);
    cr_assert_str_eq(err.msg, "refusing the key on standard input: readable or writable by "
                              "group or others (mode 0640); run chmod 600");

    int pipe_fds[2];
    cr_assert_eq(pipe(pipe_fds), 0);
    cr_assert_eq(acc_keys_read_curve_secret_fd(from_fd, pipe_fds[0], &err), ACC_ERR_INVALID);
    cr_assert_str_eq(err.msg, "the key on standard input is not a regular file");
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}
