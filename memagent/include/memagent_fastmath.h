/*
 * Float32 helpers shared by memagent's C kernels (memagent/memory/native/access_kernel.c,
 * envs/native/episode_kernel.c). memagent.cbuild puts this folder on the include path of every build and
 * hashes its headers into the cache key. Plain arithmetic only (no libm), so loops calling these
 * vectorise; each kernel compiles them with its own flags.
 */
#ifndef MEMAGENT_FASTMATH_H
#define MEMAGENT_FASTMATH_H

#include <stdint.h>

/* e^x for float32: Cephes' expf polynomial, ~1 ulp on the range used. The argument is clamped to
 * [-87, 88], so inputs below -87 give ~1e-38 instead of 0. */
static inline float memagent_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    const float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale;
    scale.i = ((int32_t)n + 127) << 23;
    return p * scale.f;
}

#endif /* MEMAGENT_FASTMATH_H */
