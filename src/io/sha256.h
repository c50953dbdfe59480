/* sha256.h: SHA-256 (FIPS 180-4), for the identity of a weight set (the feature network's hash
 * in every evaluation record) and for tests that pin bits. */
#ifndef CM_SHA256_H
#define CM_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct Sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    int used;
} Sha256;
void sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t n);
void sha256_final(Sha256 *s, char hex[65]);

/* The compression function in use: 1 the CPU's SHA extensions, 0 plain C, -1 not yet asked (the
 * first block asks cpuid). Tests set it to run both. */
extern int sha256_kernel;

#endif
