#include "dist.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#ifdef CMLAB_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_world = 1;

int dist_rank(void) { return g_rank; }
int dist_world(void) { return g_world; }

#ifdef CMLAB_MPI

static bool g_joined;            /* dist_init called MPI_Init */

/* FNV-1a over the bytes: a check of equality, not of integrity. */
static uint64_t dist_hash(const void *x, size_t bytes)
{
    const unsigned char *p = x;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static bool dist_launched(void)
{
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < CM_ARRAY_LEN(vars); i++)
        if (getenv(vars[i])) return true;
    return false;
}

int dist_init(int *argc, char ***argv)
{
    if (!dist_launched()) return 0;
    /* Only the main thread calls MPI (the loader's prefetch thread and OpenMP's team never do). */
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return cm_fail("MPI_Init_thread failed: the launcher's environment is set but MPI cannot start");
    g_joined = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
    return 0;
}

void dist_finalize(void)
{
    if (g_joined) MPI_Finalize();
    g_joined = false;
}

void dist_sum_floats(float *x, size_t n)
{
    if (g_world == 1) return;
    CM_ASSERT(n / g_world < (size_t)INT32_MAX, "dist_sum_floats: %zu floats is more than MPI's int counts take", n);
    int *counts = cm_malloc(2 * (size_t)g_world * sizeof(int)), *displs = counts + g_world;
    for (int r = 0; r < g_world; r++) {
        size_t lo = n * r / g_world, hi = n * (r + 1) / g_world;
        displs[r] = (int)lo;
        counts[r] = (int)(hi - lo);
    }
    float *part = cm_malloc(((size_t)counts[g_rank] + 1) * sizeof(float));
    MPI_Reduce_scatter(x, part, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allgatherv(part, counts[g_rank], MPI_FLOAT, x, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
    free(part);
    free(counts);
}

void dist_sum_doubles(double *v, int n)
{
    if (g_world == 1) return;
    double *all = cm_malloc((size_t)n * g_world * sizeof(double));
    MPI_Allgather(v, n, MPI_DOUBLE, all, n, MPI_DOUBLE, MPI_COMM_WORLD);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < g_world; r++) s += all[(size_t)r * n + i];
        v[i] = s;
    }
    free(all);
}

void dist_bcast(void *x, size_t bytes)
{
    if (g_world == 1) return;
    /* In pieces of at most 1 GB: MPI counts are ints. */
    for (size_t off = 0; off < bytes; off += 1u << 30) {
        size_t len = CM_MIN(bytes - off, (size_t)1 << 30);
        MPI_Bcast((char *)x + off, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
}

int dist_agree(int rc)
{
    if (g_world == 1) return rc;
    /* The lowest failing rank (a max over -rank; -world when none failed) sends its rc and its
     * message. */
    int mine = rc ? -g_rank : -g_world, root;
    MPI_Allreduce(&mine, &root, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    root = -root;
    if (root == g_world) return 0;
    char msg[1024];
    if (g_rank == root) snprintf(msg, sizeof msg, "rank %d: %s", root, cm_errmsg());
    MPI_Bcast(&rc, 1, MPI_INT, root, MPI_COMM_WORLD);
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, root, MPI_COMM_WORLD);
    cm_fail("%s", msg);
    return rc;
}

bool dist_same(const void *x, size_t bytes, int *rank_out)
{
    *rank_out = -1;
    if (g_world == 1) return true;
    uint64_t h = dist_hash(x, bytes), *all = cm_malloc((size_t)g_world * sizeof *all);
    MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
    for (int r = 1; r < g_world && *rank_out < 0; r++)
        if (all[r] != all[0]) *rank_out = r;
    free(all);
    return *rank_out < 0;
}

#else

/* Several copies of a build without MPI would each train the whole run into the same directory. */
int dist_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *size = getenv("OMPI_COMM_WORLD_SIZE"), *pmi = getenv("PMI_SIZE"), *pmix = getenv("PMIX_RANK");
    if ((size && atoi(size) > 1) || (pmi && atoi(pmi) > 1) || (pmix && atoi(pmix) > 0))
        return cm_fail("started by an MPI launcher with several processes, but this cmlab was built without MPI "
                       "(install libopenmpi-dev and reconfigure: meson setup --reconfigure build -Dmpi=enabled)");
    return 0;
}

void dist_finalize(void) {}
void dist_sum_floats(float *x, size_t n) { (void)x, (void)n; }
void dist_sum_doubles(double *v, int n) { (void)v, (void)n; }
void dist_bcast(void *x, size_t bytes) { (void)x, (void)bytes; }
int dist_agree(int rc) { return rc; }

bool dist_same(const void *x, size_t bytes, int *rank_out)
{
    (void)x, (void)bytes;
    *rank_out = -1;
    return true;
}

#endif
