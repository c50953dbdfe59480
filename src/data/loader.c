#include "loader.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "autograd/streams.h"

/* ---- the loader ---- */

/* Lane 0 of the Philox block (seed, stream, step = epoch, sample): exactly
 * rng_u32(&(Rng){seed, stream, epoch}, out, 1, sample, 1). Called directly because rng_u32 runs
 * an OpenMP construct, which the prefetch thread must not start beside the trainer's team. */
static uint32_t loader_draw(uint64_t seed, uint32_t stream, int64_t epoch, int64_t sample)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {0, (uint32_t)sample, (uint32_t)epoch, stream};
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    return out[0];
}

static int loader_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The order of epoch `epoch`: rows sorted by (key, row), one 64-bit sort key per row with the
 * random key above the row index, so ties need no second pass. Cached in slot epoch % 2: a
 * batch walks epochs in increasing order, so the slot it overwrites is never needed again. */
static const int *loader_perm(Loader *l, int64_t epoch)
{
    int s = (int)(epoch & 1);
    if (l->perm_epoch[s] == epoch) return l->perm[s];
    int n = l->data->n;
    uint64_t *keys = cm_malloc((size_t)n * sizeof *keys);
    for (int i = 0; i < n; i++)
        keys[i] = (uint64_t)loader_draw(l->cfg.seed, STREAM_SHUFFLE, epoch, i) << 32 | (uint32_t)i;
    qsort(keys, (size_t)n, sizeof *keys, loader_cmp_u64);
    for (int i = 0; i < n; i++) l->perm[s][i] = (int)(uint32_t)keys[i];
    free(keys);
    l->perm_epoch[s] = epoch;
    return l->perm[s];
}

static LoaderCursor loader_advance(const Loader *l, LoaderCursor cur, int64_t by)
{
    int64_t pos = cur.index + by;
    cur.epoch += pos / l->data->n;
    cur.index = pos % l->data->n;
    return cur;
}

/* This rank's slice of the global batch that starts at cur. Each sample depends only on its
 * (epoch, position), never on the batch size, the rank or the thread doing the work. */
static void loader_fill(Loader *l, LoaderCursor cur, float *x /* [batch_local, c, h, w] */,
                        int *labels /* [batch_local] or NULL */)
{
    const Dataset *d = l->data;
    const int C = l->c, H = l->h, W = l->w;
    for (int j = 0; j < l->batch_local; j++) {
        LoaderCursor at = loader_advance(l, cur, l->row0 + j);
        int row = loader_perm(l, at.epoch)[at.index];
        bool flip = l->cfg.hflip &&
                    (loader_draw(l->cfg.seed, STREAM_HFLIP, at.epoch, at.index) >> 31);
        dataset_image(d, row, H, W, flip, x + (size_t)j * C * H * W);
        if (labels) labels[j] = d->labels[row];
    }
}

/* ---- prefetch ---- */

static void *loader_worker(void *arg)
{
    Loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->job_pending && !l->quit) pthread_cond_wait(&l->wake, &l->mu);
        if (l->quit) break;
        LoaderCursor cur = l->job_cursor;
        pthread_mutex_unlock(&l->mu);
        loader_fill(l, cur, l->pf_x, l->pf_labels);
        pthread_mutex_lock(&l->mu);
        l->job_pending = false;
        l->job_ready = true;
        pthread_cond_signal(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Returns once no job is in flight: the caller then owns the perm cache and pf_* again. True if
 * pf_* hold the batch at cur. */
static bool loader_wait(Loader *l, LoaderCursor cur)
{
    if (!l->thread_started) return false;
    pthread_mutex_lock(&l->mu);
    while (l->job_pending) pthread_cond_wait(&l->done, &l->mu);
    bool hit = l->job_ready && l->job_cursor.epoch == cur.epoch &&
               l->job_cursor.index == cur.index;
    pthread_mutex_unlock(&l->mu);
    return hit;
}

static void loader_start(Loader *l, LoaderCursor cur)
{
    pthread_mutex_lock(&l->mu);
    l->job_cursor = cur;
    l->job_ready = false;
    l->job_pending = true;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
}

/* ---- public ---- */

int loader_init(Loader *l, const Dataset *d, const LoaderConfig *cfg)
{
    memset(l, 0, sizeof *l);
    CM_ASSERT(d->n >= 1 && d->pix && d->labels, "loader_init: empty dataset %s", d->source);
    CM_ASSERT(cfg->world >= 1 && cfg->rank >= 0 && cfg->rank < cfg->world,
              "loader_init: rank %d of world %d", cfg->rank, cfg->world);
    if (cfg->batch < cfg->world)
        return cm_fail("train.batch_size = %d is smaller than the %d processes; every process "
                       "needs at least one sample per batch", cfg->batch, cfg->world);
    if (cfg->pad_to != 0 && (cfg->pad_to < d->h || cfg->pad_to < d->w))
        return cm_fail("data.pad_to = %d is smaller than the %dx%d images of %s; set it to 0 "
                       "(no padding) or at least %d", cfg->pad_to, d->w, d->h, d->source,
                       CM_MAX(d->h, d->w));

    l->data = d;
    l->cfg = *cfg;
    l->row0 = (int)((int64_t)cfg->rank * cfg->batch / cfg->world);
    l->batch_local = (int)((int64_t)(cfg->rank + 1) * cfg->batch / cfg->world) - l->row0;
    l->c = d->c;
    l->h = cfg->pad_to ? cfg->pad_to : d->h;
    l->w = cfg->pad_to ? cfg->pad_to : d->w;
    for (int s = 0; s < 2; s++) {
        l->perm[s] = cm_malloc((size_t)d->n * sizeof *l->perm[s]);
        l->perm_epoch[s] = -1;
    }

    if (cfg->prefetch) {
        l->pf_x = cm_malloc((size_t)l->batch_local * l->c * l->h * l->w * sizeof *l->pf_x);
        l->pf_labels = cm_malloc((size_t)l->batch_local * sizeof *l->pf_labels);
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->wake, NULL);
        pthread_cond_init(&l->done, NULL);
        int err = pthread_create(&l->thread, NULL, loader_worker, l);
        if (err) {
            pthread_mutex_destroy(&l->mu);
            pthread_cond_destroy(&l->wake);
            pthread_cond_destroy(&l->done);
            loader_free(l);
            return cm_fail("cannot start the data prefetch thread: %s", strerror(err));
        }
        l->thread_started = true;
    }
    return 0;
}

void loader_free(Loader *l)
{
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->quit = true;
        pthread_cond_signal(&l->wake);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->wake);
        pthread_cond_destroy(&l->done);
    }
    free(l->perm[0]);
    free(l->perm[1]);
    free(l->pf_x);
    free(l->pf_labels);
    memset(l, 0, sizeof *l);
}

void loader_next(Loader *l, float *x, int *labels)
{
    if (loader_wait(l, l->cursor)) {
        memcpy(x, l->pf_x, (size_t)l->batch_local * l->c * l->h * l->w * sizeof *x);
        if (labels) memcpy(labels, l->pf_labels, (size_t)l->batch_local * sizeof *labels);
    } else {
        loader_fill(l, l->cursor, x, labels);
    }
    l->cursor = loader_advance(l, l->cursor, l->cfg.batch);
    if (l->thread_started) loader_start(l, l->cursor);
}

LoaderCursor loader_get_cursor(const Loader *l) { return l->cursor; }

int loader_set_cursor(Loader *l, LoaderCursor cur)
{
    if (cur.epoch < 0 || cur.epoch > UINT32_MAX || cur.index < 0 || cur.index >= l->data->n)
        return cm_fail("data cursor (epoch %lld, index %lld) does not fit %s of %d images; the "
                       "checkpoint was made with another dataset", (long long)cur.epoch,
                       (long long)cur.index, l->data->source, l->data->n);
    /* A batch being prefetched for the old cursor is left to finish: loader_next waits for it
     * and uses it only if it was made for the cursor it then has. */
    l->cursor = cur;
    return 0;
}
