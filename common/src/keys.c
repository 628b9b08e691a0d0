/* keys.c - key pairs on disk: written 0600, read only when no one else can */
#include "accord/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define KEY_FILE_MAX  256 /* bytes read from any key file */
#define NAME_MAX_LEN  64
#define PATH_TEXT_MAX 1100 /* a path in a message, quoted */
#define STDIN_WHAT    "the key on standard input"

void acc_hex_encode(char *out, size_t out_len, const uint8_t *bytes, size_t len)
{
    acc_assert(out_len >= 2 * len + 1);
    (void)sodium_bin2hex(out, out_len, bytes, len);
}

acc_rc_t acc_hex_decode(uint8_t *out, size_t len, const char *text, acc_err_t *err)
{
    size_t got = 0;
    const char *end = NULL;
    if (strlen(text) != 2 * len || sodium_hex2bin(out, len, text, 2 * len, NULL, &got, &end) != 0 ||
        got != len) {
        return acc_err_set(err, ACC_ERR_INVALID, "expected %zu hexadecimal digits", 2 * len);
    }
    return ACC_OK;
}

acc_rc_t acc_keys_decode_z85(uint8_t out[ACC_CURVE_KEY_BYTES], const char *text, acc_err_t *err)
{
    if (strlen(text) != ACC_Z85_KEY_CHARS || zmq_z85_decode(out, text) == NULL) {
        return acc_err_set(err, ACC_ERR_INVALID, "expected a 40-character Z85 CURVE key");
    }
    return ACC_OK;
}

void acc_keys_encode_z85(char out[ACC_Z85_KEY_CHARS + 1], const uint8_t key[ACC_CURVE_KEY_BYTES])
{
    (void)zmq_z85_encode(out, key, ACC_CURVE_KEY_BYTES);
}

void acc_keys_fingerprint(char out[17], const uint8_t key[32])
{
    uint8_t hash[8];
    (void)crypto_generichash(hash, sizeof(hash), key, 32, NULL, 0);
    acc_hex_encode(out, 17, hash, sizeof(hash));
}

/* ---- reading ---- */

/* Checks and reads the open key fd; what names it in messages ("key file \"PATH\"",
 * "the key on standard input"). */
static acc_rc_t s_read_fd_text(char *buf, size_t buf_len, int fd, const char *what, bool secret,
                               acc_err_t *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        return acc_err_set(err, ACC_ERR_INVALID, "%s is not a regular file", what);
    }
    if (secret && (st.st_mode & 077) != 0) {
        return acc_err_set(err, ACC_ERR_PERMISSION,
                           "refusing %s: readable or writable by group or others (mode %04o); run "
                           "chmod 600",
                           what, (unsigned)(st.st_mode & 07777));
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, buf_len - 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return acc_err_set(err, ACC_ERR_IO, "could not read %s: %s", what, strerror(errno));
        }
        len += (size_t)n;
        if (n == 0 || len == buf_len - 1) {
            break;
        }
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ')) {
        len--;
    }
    buf[len] = '\0';
    return ACC_OK;
}

typedef enum { KEY_Z85, KEY_HEX } s_encoding_t;

typedef struct {
    size_t len;            /* bytes of key */
    bool secret;           /* refused if group or others may read or write it */
    s_encoding_t encoding; /* of the text */
} s_kind_t;

static const s_kind_t s_curve_secret = { ACC_CURVE_KEY_BYTES, true, KEY_Z85 };
static const s_kind_t s_box_secret = { ACC_BOX_SECRET_BYTES, true, KEY_HEX };
static const s_kind_t s_sign_secret = { ACC_SIGN_SECRET_BYTES, true, KEY_HEX };
static const s_kind_t s_curve_public = { ACC_CURVE_KEY_BYTES, false, KEY_Z85 };
static const s_kind_t s_hex_public = { 32, false, KEY_HEX };

/* Reads the key from path, or from fd when path is NULL. */
static acc_rc_t s_read_key(uint8_t *out, const s_kind_t *kind, const char *path, int fd,
                           acc_err_t *err)
{
    size_t out_len = kind->len;
    bool secret = kind->secret;
    s_encoding_t encoding = kind->encoding;
    char what[PATH_TEXT_MAX];
    if (path != NULL) {
        (void)snprintf(what, sizeof(what), "key file \"%s\"", path);
    } else {
        (void)snprintf(what, sizeof(what), "%s", STDIN_WHAT);
    }
    int own_fd = path != NULL ? open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : fd;
    if (own_fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not open %s: %s", what, strerror(errno));
    }
    char buf[KEY_FILE_MAX];
    uint8_t key[ACC_SIGN_SECRET_BYTES];
    acc_rc_t rc = s_read_fd_text(buf, sizeof(buf), own_fd, what, secret, err);
    if (path != NULL) {
        (void)close(own_fd);
    }
    if (rc == ACC_OK) {
        rc = encoding == KEY_Z85 ? acc_keys_decode_z85(key, buf, err)
                                 : acc_hex_decode(key, out_len, buf, err);
        if (rc != ACC_OK) {
            rc = acc_err_set(err, ACC_ERR_INVALID, "%s is malformed: %s", what,
                             err != NULL ? err->msg : "");
        }
    }
    if (rc == ACC_OK) {
        memcpy(out, key, out_len);
    }
    sodium_memzero(buf, sizeof(buf));
    sodium_memzero(key, sizeof(key));
    return rc;
}

acc_rc_t acc_keys_read_curve_secret(uint8_t out[ACC_CURVE_KEY_BYTES], const char *path,
                                    acc_err_t *err)
{
    return s_read_key(out, &s_curve_secret, path, -1, err);
}

acc_rc_t acc_keys_read_curve_secret_fd(uint8_t out[ACC_CURVE_KEY_BYTES], int fd, acc_err_t *err)
{
    return s_read_key(out, &s_curve_secret, NULL, fd, err);
}

acc_rc_t acc_keys_read_box_secret(uint8_t out[ACC_BOX_SECRET_BYTES], const char *path,
                                  acc_err_t *err)
{
    return s_read_key(out, &s_box_secret, path, -1, err);
}

acc_rc_t acc_keys_read_sign_secret(uint8_t out[ACC_SIGN_SECRET_BYTES], const char *path,
                                   acc_err_t *err)
{
    return s_read_key(out, &s_sign_secret, path, -1, err);
}

acc_rc_t acc_keys_read_curve_public(uint8_t out[ACC_CURVE_KEY_BYTES], const char *path,
                                    acc_err_t *err)
{
    return s_read_key(out, &s_curve_public, path, -1, err);
}

acc_rc_t acc_keys_read_hex_public(uint8_t out[32], const char *path, acc_err_t *err)
{
    return s_read_key(out, &s_hex_public, path, -1, err);
}

/* ---- generating ---- */

static bool s_is_valid_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > NAME_MAX_LEN || name[0] == '.' || name[0] == '-') {
        return false;
    }
    for (const char *p = name; *p != '\0'; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
                  *p == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* Creates path exclusively with mode and writes text and a newline, durably. */
static acc_rc_t s_write_new(const char *path, const char *text, mode_t mode, acc_err_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not create key file \"%s\": %s", path,
                           strerror(errno));
    }
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    int saved = errno;
    ok = close(fd) == 0 && ok;
    if (!ok) {
        (void)unlink(path);
        return acc_err_set(err, ACC_ERR_IO, "could not write key file \"%s\": %s", path,
                           strerror(saved));
    }
    return ACC_OK;
}

typedef struct {
    char curve_pub[ACC_Z85_KEY_CHARS + 1];
    char curve_sec[ACC_Z85_KEY_CHARS + 1];
    char box_pub[2 * ACC_BOX_PUB_BYTES + 1];
    char box_sec[2 * ACC_BOX_SECRET_BYTES + 1];
    char sign_pub[2 * ACC_SIGN_PUB_BYTES + 1];
    char sign_sec[2 * ACC_SIGN_SECRET_BYTES + 1];
} s_keyset_t;

static void s_make_keys(s_keyset_t *k)
{
    (void)zmq_curve_keypair(k->curve_pub, k->curve_sec);
    uint8_t pub[crypto_sign_PUBLICKEYBYTES];
    uint8_t sec[crypto_sign_SECRETKEYBYTES];
    (void)crypto_box_keypair(pub, sec);
    acc_hex_encode(k->box_pub, sizeof(k->box_pub), pub, crypto_box_PUBLICKEYBYTES);
    acc_hex_encode(k->box_sec, sizeof(k->box_sec), sec, crypto_box_SECRETKEYBYTES);
    (void)crypto_sign_keypair(pub, sec);
    acc_hex_encode(k->sign_pub, sizeof(k->sign_pub), pub, sizeof(pub));
    acc_hex_encode(k->sign_sec, sizeof(k->sign_sec), sec, sizeof(sec));
    sodium_memzero(sec, sizeof(sec));
}

acc_rc_t acc_keys_generate(const char *dir, const char *name, acc_err_t *err)
{
    if (!s_is_valid_name(name)) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "key name \"%s\" must be 1-64 of a-z, 0-9, '.', '_', '-'", name);
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return acc_err_set(err, ACC_ERR_IO, "could not create directory \"%s\": %s", dir,
                           strerror(errno));
    }
    s_keyset_t *k = sodium_malloc(sizeof(*k));
    acc_assert(k != NULL);
    s_make_keys(k);
    const struct {
        const char *suffix;
        const char *text;
        mode_t mode;
    } files[] = {
        { "curve.secret", k->curve_sec, 0600 }, { "curve.pub", k->curve_pub, 0644 },
        { "box.secret", k->box_sec, 0600 },     { "box.pub", k->box_pub, 0644 },
        { "sign.secret", k->sign_sec, 0600 },   { "sign.pub", k->sign_pub, 0644 },
    };
    char paths[6][512];
    size_t written = 0;
    acc_rc_t rc = ACC_OK;
    for (; written < 6 && rc == ACC_OK; written++) {
        (void)snprintf(paths[written], sizeof(paths[written]), "%s/%s.%s", dir, name,
                       files[written].suffix);
        rc = s_write_new(paths[written], files[written].text, files[written].mode, err);
    }
    if (rc != ACC_OK) {
        /* Remove what this call created, never a file that existed before it. */
        for (size_t i = 0; i + 1 < written; i++) {
            (void)unlink(paths[i]);
        }
    }
    sodium_free(k);
    return rc;
}
