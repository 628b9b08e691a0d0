/* keys.h - key pairs on disk: CURVE (Z85), X25519 box and Ed25519 signing (hex) */
#ifndef ACCORD_KEYS_H
#define ACCORD_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "accord/rc.h"

#define ACC_CURVE_KEY_BYTES   32
#define ACC_Z85_KEY_CHARS     40
#define ACC_BOX_PUB_BYTES     32
#define ACC_BOX_SECRET_BYTES  32
#define ACC_SIGN_PUB_BYTES    32
#define ACC_SIGN_SECRET_BYTES 64

/* Writes DIR/NAME.curve.{pub,secret}, DIR/NAME.box.{pub,secret} and
 * DIR/NAME.sign.{pub,secret}. Secret files are created 0600 with O_EXCL, so an
 * existing key is never overwritten. Creates DIR (0700) if missing. */
ACC_NODISCARD acc_rc_t acc_keys_generate(const char *dir, const char *name, acc_err_t *err);

/* Reads a secret key file: refuses it (ACC_ERR_PERMISSION) if group or others may
 * read or write it, or if it is not a regular file. The three kinds differ by
 * encoding and length; the secret is written to out only on success, and stack
 * copies are wiped. */
ACC_NODISCARD acc_rc_t acc_keys_read_curve_secret(uint8_t out[ACC_CURVE_KEY_BYTES],
                                                  const char *path, acc_err_t *err);
/* The same for a CURVE secret on an open descriptor (the agent's standard input,
 * opened by systemd as root): fstat must show a regular file with no group or
 * other permission bits. Messages call it "the key on standard input"; fd is
 * left open. */
ACC_NODISCARD acc_rc_t acc_keys_read_curve_secret_fd(uint8_t out[ACC_CURVE_KEY_BYTES], int fd,
                                                     acc_err_t *err);
ACC_NODISCARD acc_rc_t acc_keys_read_box_secret(uint8_t out[ACC_BOX_SECRET_BYTES], const char *path,
                                                acc_err_t *err);
ACC_NODISCARD acc_rc_t acc_keys_read_sign_secret(uint8_t out[ACC_SIGN_SECRET_BYTES],
                                                 const char *path, acc_err_t *err);

/* Reads a public key file (any mode): Z85 for .curve.pub, hex for the others. */
ACC_NODISCARD acc_rc_t acc_keys_read_curve_public(uint8_t out[ACC_CURVE_KEY_BYTES],
                                                  const char *path, acc_err_t *err);
ACC_NODISCARD acc_rc_t acc_keys_read_hex_public(uint8_t out[32], const char *path, acc_err_t *err);

/* Decodes a 40-character Z85 CURVE key; ACC_ERR_INVALID if malformed. */
ACC_NODISCARD acc_rc_t acc_keys_decode_z85(uint8_t out[ACC_CURVE_KEY_BYTES], const char *text,
                                           acc_err_t *err);
/* Encodes a key as 40 Z85 characters plus NUL. */
void acc_keys_encode_z85(char out[ACC_Z85_KEY_CHARS + 1], const uint8_t key[ACC_CURVE_KEY_BYTES]);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void acc_hex_encode(char *out, size_t out_len, const uint8_t *bytes, size_t len);
/* Decodes exactly len bytes from hex text (no spaces); ACC_ERR_INVALID otherwise. */
ACC_NODISCARD acc_rc_t acc_hex_decode(uint8_t *out, size_t len, const char *text, acc_err_t *err);

/* A short fingerprint of a public key for logs: first 8 hex digits of BLAKE2b. */
void acc_keys_fingerprint(char out[17], const uint8_t key[32]);

#endif
