/* test_rng.c: Philox4x32-10 against Random123's known answers, the four fills against the numpy
 * twin (tests/torch/philox.py, fixture in argv[1]), independence from the thread count and the
 * batch split, sensitivity to seed / stream / step / sample, and the moments of the distributions.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "common.h"
#include "fixture.h"

enum { KIND_UNIFORM, KIND_NORMAL, KIND_BERNOULLI, KIND_U32, KIND_COUNT };
static const char *kind_name[KIND_COUNT] = { "uniform", "normal", "bernoulli", "u32" };

/* Every fill writes 4-byte elements, so one void * signature serves all four. */
static void fill(int kind, const Rng *r, void *out, int nsamples, int sample0, size_t per_sample,
                 float p)
{
    switch (kind) {
    case KIND_UNIFORM:   rng_uniform(r, out, nsamples, sample0, per_sample); break;
    case KIND_NORMAL:    rng_normal(r, out, nsamples, sample0, per_sample); break;
    case KIND_BERNOULLI: rng_bernoulli(r, out, nsamples, sample0, per_sample, p); break;
    case KIND_U32:       rng_u32(r, out, nsamples, sample0, per_sample); break;
    }
}

/* Index of the first 32-bit word that differs, or -1. */
static long first_diff(const void *a, const void *b, size_t n)
{
    const uint32_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return (long)i;
    return -1;
}

/* fixture_read converts to float, which would round uint32 above 2^24; read these raw. */
static uint32_t *read_u32(Fixture *f, const char *name, size_t n)
{
    hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
    CM_ASSERT(d >= 0, "fixture %s: no dataset %s", f->path, name);
    hid_t sp = H5Dget_space(d);
    CM_ASSERT((size_t)H5Sget_simple_extent_npoints(sp) == n, "fixture %s: %s has %lld elements, "
              "expected %zu", f->path, name, (long long)H5Sget_simple_extent_npoints(sp), n);
    uint32_t *buf = cm_malloc(n * sizeof(uint32_t));
    CM_ASSERT(H5Dread(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0,
              "fixture %s: cannot read %s", f->path, name);
    H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

/* fixture_attr_int reads a signed long long, which cannot hold seeds of 2^63 and above. */
static uint64_t attr_u64(Fixture *f, const char *obj, const char *attr)
{
    CM_ASSERT(H5Aexists_by_name(f->file, obj, attr, H5P_DEFAULT) > 0,
              "fixture %s: %s has no attribute %s", f->path, obj, attr);
    hid_t a = H5Aopen_by_name(f->file, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
    uint64_t v = 0;
    CM_ASSERT(H5Aread(a, H5T_NATIVE_UINT64, &v) >= 0, "fixture %s: cannot read %s@%s", f->path,
              obj, attr);
    H5Aclose(a);
    return v;
}

static void test_kat(void)
{
    /* Random123 tests/kat_vectors, the three "philox4x32 10" lines. */
    static const struct { uint32_t ctr[4], key[2], want[4]; } kat[] = {
        { {0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8} },
        { {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
          {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd} },
        { {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
          {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1} },
    };
    for (size_t k = 0; k < CM_ARRAY_LEN(kat); k++) {
        uint32_t got[4];
        philox4x32_10(kat[k].ctr, kat[k].key, got);
        CHECK(memcmp(got, kat[k].want, sizeof got) == 0,
              "KAT %zu: got %08x %08x %08x %08x, want %08x %08x %08x %08x", k, got[0], got[1],
              got[2], got[3], kat[k].want[0], kat[k].want[1], kat[k].want[2], kat[k].want[3]);
    }
}

/* Each group caseN of the fixture holds the four fills for one parameter set. */
static void test_fixture(const char *path)
{
    Fixture f;
    fixture_open(&f, path);
    char **cases;
    int ncases = fixture_list(&f, "/", &cases);
    CHECK(ncases >= 4, "fixture %s: %d cases, philox.py writes 4", path, ncases);
    double normal_max = 0;
    for (int c = 0; c < ncases; c++) {
        for (int kind = 0; kind < KIND_COUNT; kind++) {
            char name[256];
            snprintf(name, sizeof name, "/%s/%s", cases[c], kind_name[kind]);
            Rng r = { .seed = attr_u64(&f, name, "seed"),
                      .stream = (uint32_t)fixture_attr_int(&f, name, "stream", -1),
                      .step = (uint32_t)fixture_attr_int(&f, name, "step", -1) };
            int sample0 = (int)fixture_attr_int(&f, name, "sample0", -1);
            int nsamples = (int)fixture_attr_int(&f, name, "nsamples", -1);
            size_t per_sample = (size_t)fixture_attr_int(&f, name, "per_sample", -1);
            float p = (float)fixture_attr_double(&f, name, "p", -1);
            CM_ASSERT(sample0 >= 0 && nsamples > 0 && per_sample > 0, "fixture %s: bad attrs on %s",
                      path, name);
            size_t n = (size_t)nsamples * per_sample;
            void *want;
            if (kind == KIND_U32) {
                want = read_u32(&f, name, n);
            } else {
                int ndim, shape[4];
                want = fixture_read(&f, name, &ndim, shape);
                CHECK(ndim == 2 && shape[0] == nsamples && (size_t)shape[1] == per_sample,
                      "%s: fixture shape differs from its attributes", name);
            }
            void *got = cm_malloc(n * sizeof(float));
            fill(kind, &r, got, nsamples, sample0, per_sample, p);
            if (kind == KIND_NORMAL) {
                double maxdiff = 0;
                for (size_t i = 0; i < n; i++) {
                    double d = fabs((double)((float *)got)[i] - ((float *)want)[i]);
                    maxdiff = fmax(maxdiff, isnan(d) ? INFINITY : d);   /* fmax drops NaN */
                }
                normal_max = fmax(normal_max, maxdiff);
                CHECK(maxdiff <= 1e-6, "%s: max |C - numpy| = %.3g > 1e-6", name, maxdiff);
            } else {
                long i = first_diff(got, want, n);
                CHECK(i < 0, "%s: element %ld differs from numpy (C %08x, numpy %08x)", name, i,
                      i < 0 ? 0 : ((uint32_t *)got)[i], i < 0 ? 0 : ((uint32_t *)want)[i]);
            }
            free(got);
            free(want);
        }
        free(cases[c]);
    }
    printf("fixture: %d cases; uniform, bernoulli, u32 bitwise; normal max |C - numpy| = %.3g\n",
           ncases, normal_max);
    free(cases);
    fixture_close(&f);
}

/* Large enough (12288 blocks per fill) that the fills take their parallel path. */
static void test_threads(void)
{
    enum { NS = 64, PS = 3 * 16 * 16 - 2 };
    Rng r = { .seed = 0x0123456789abcdefULL, .stream = 5, .step = 99 };
    float *one = cm_malloc(NS * PS * sizeof(float)), *two = cm_malloc(NS * PS * sizeof(float));
    int saved = omp_get_max_threads();
    for (int kind = 0; kind < KIND_COUNT; kind++) {
        omp_set_num_threads(1);
        fill(kind, &r, one, NS, 0, PS, 0.5f);
        omp_set_num_threads(2);
        fill(kind, &r, two, NS, 0, PS, 0.5f);
        long i = first_diff(one, two, NS * PS);
        CHECK(i < 0, "%s: 1 and 2 threads differ at element %ld", kind_name[kind], i);
    }
    omp_set_num_threads(saved);
    free(one);
    free(two);
}

static void test_split(void)
{
    enum { NS = 64, PS = 75 };
    Rng r = { .seed = 2024, .stream = 1, .step = 3 };
    float *whole = cm_malloc(NS * PS * sizeof(float)), *parts = cm_malloc(NS * PS * sizeof(float));
    for (int kind = 0; kind < KIND_COUNT; kind++) {
        fill(kind, &r, whole, NS, 0, PS, 0.3f);
        fill(kind, &r, parts, NS / 2, 0, PS, 0.3f);
        fill(kind, &r, parts + NS / 2 * PS, NS / 2, NS / 2, PS, 0.3f);
        long i = first_diff(whole, parts, NS * PS);
        CHECK(i < 0, "%s: samples 0..63 at once differ from 0..31 + 32..63 at element %ld",
              kind_name[kind], i);
    }
    free(whole);
    free(parts);
}

/* Changing any one input of the counter or key must change every lane. */
static void test_distinct(void)
{
    enum { N = 64 };
    const Rng base = { .seed = 1, .stream = 0, .step = 0 };
    static const struct { const char *what; uint64_t dseed; uint32_t dstream, dstep; int sample0; }
    variant[] = {
        { "seed lo", 1, 0, 0, 0 },
        { "seed hi", 1ULL << 32, 0, 0, 0 },
        { "stream", 0, 1, 0, 0 },
        { "step", 0, 0, 1, 0 },
        { "sample", 0, 0, 0, 1 },
    };
    uint32_t a[N], b[N];
    rng_u32(&base, a, 1, 0, N);
    for (size_t v = 0; v < CM_ARRAY_LEN(variant); v++) {
        Rng r = { .seed = base.seed + variant[v].dseed, .stream = base.stream + variant[v].dstream,
                  .step = base.step + variant[v].dstep };
        rng_u32(&r, b, 1, variant[v].sample0, N);
        int same = 0;
        for (int i = 0; i < N; i++) same += a[i] == b[i];
        CHECK(same == 0, "changing the %s leaves %d of %d numbers unchanged", variant[v].what,
              same, N);
    }
    /* Blocks within a sample must differ too (element / 4 is in the counter). */
    CHECK(memcmp(a, a + 4, 4 * sizeof(uint32_t)) != 0, "blocks 0 and 1 of a sample are equal");
}

/* Bounds are 5 standard errors of each estimate for iid N(0,1): mean 1/sqrt(n), variance
 * sqrt(2/n), skewness sqrt(6/n), excess kurtosis sqrt(24/n). */
static void test_moments(void)
{
    enum { NS = 512, PS = 4096 };
    const double n = (double)NS * PS;
    float *x = cm_malloc((size_t)NS * PS * sizeof(float));
    Rng r = { .seed = 0xfeedface12345678ULL, .stream = 11, .step = 1000 };

    rng_normal(&r, x, NS, 0, PS);
    double s1 = 0;
    for (size_t i = 0; i < (size_t)n; i++) s1 += x[i];
    double mean = s1 / n, m2 = 0, m3 = 0, m4 = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        double d = x[i] - mean, d2 = d * d;
        m2 += d2; m3 += d2 * d; m4 += d2 * d2;
    }
    m2 /= n; m3 /= n; m4 /= n;
    double skew = m3 / pow(m2, 1.5), kurt = m4 / (m2 * m2) - 3.0;
    double bmean = 5 / sqrt(n), bvar = 5 * sqrt(2 / n), bskew = 5 * sqrt(6 / n),
           bkurt = 5 * sqrt(24 / n);
    printf("normal, n = %.0f: mean %+.5f (bound %.5f), var %.5f (1 +- %.5f), skew %+.5f "
           "(bound %.5f), excess kurtosis %+.5f (bound %.5f)\n",
           n, mean, bmean, m2, bvar, skew, bskew, kurt, bkurt);
    CHECK(fabs(mean) < bmean, "normal mean %g", mean);
    CHECK(fabs(m2 - 1) < bvar, "normal variance %g", m2);
    CHECK(fabs(skew) < bskew, "normal skewness %g", skew);
    CHECK(fabs(kurt) < bkurt, "normal excess kurtosis %g", kurt);

    rng_uniform(&r, x, NS, 0, PS);
    double lo = 1, hi = 0, su = 0;
    for (size_t i = 0; i < (size_t)n; i++) { lo = fmin(lo, x[i]); hi = fmax(hi, x[i]); su += x[i]; }
    double umean = su / n, bu = 5 * sqrt(1.0 / 12 / n);
    printf("uniform, n = %.0f: min %.3g, max %.8f, mean %.5f (0.5 +- %.5f)\n", n, lo, hi, umean, bu);
    CHECK(lo >= 0 && hi < 1, "uniform outside [0, 1): min %g max %.9g", lo, hi);
    CHECK(fabs(umean - 0.5) < bu, "uniform mean %g", umean);

    const float p = 0.3f;
    rng_bernoulli(&r, x, NS, 0, PS, p);
    double ones = 0;
    int other = 0;
    for (size_t i = 0; i < (size_t)n; i++) { ones += x[i] == 1.0f; other += x[i] != 0 && x[i] != 1; }
    double rate = ones / n, bp = 5 * sqrt(p * (1 - p) / n);
    printf("bernoulli(%.1f), n = %.0f: rate %.5f (+- %.5f)\n", p, n, rate, bp);
    CHECK(other == 0, "bernoulli: %d values neither 0 nor 1", other);
    CHECK(fabs(rate - p) < bp, "bernoulli rate %g, p %g", rate, p);
    free(x);
}

int main(int argc, char **argv)
{
    CM_ASSERT(argc == 2, "usage: test_rng FIXTURE.h5");
    test_kat();
    test_fixture(argv[1]);
    test_threads();
    test_split();
    test_distinct();
    test_moments();
    return test_summary("rng");
}
