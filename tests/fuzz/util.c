/* util.c: the harnesses' temporary files and the tiny checkpoint state (fuzz.h). */
#include "fuzz.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_root[512];

static int fuzz_unlink_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void fuzz_cleanup(void)
{
    if (fuzz_root[0]) nftw(fuzz_root, fuzz_unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void)
{
    if (!fuzz_root[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_root, sizeof fuzz_root, "%s/cmlab-fuzz-%ld-XXXXXX",
                 tmp && tmp[0] ? tmp : "/tmp", (long)getpid());
        CM_ASSERT(mkdtemp(fuzz_root), "fuzz: cannot make %s", fuzz_root);
        atexit(fuzz_cleanup);
    }
    return fuzz_root;
}

const char *fuzz_path(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    return path;
}

const char *fuzz_write(const char *name, const void *data, size_t size)
{
    const char *path = fuzz_path(name);
    FILE *f = fopen(path, "wb");
    CM_ASSERT(f, "fuzz: cannot write %s", path);
    CM_ASSERT(fwrite(data, 1, size, f) == size && fclose(f) == 0, "fuzz: cannot write %s", path);
    return path;
}

void fuzz_remove(const char *name)
{
    nftw(fuzz_path(name), fuzz_unlink_cb, 16, FTW_DEPTH | FTW_PHYS);
}

void fuzz_ckpt_init(FuzzCkpt *f)
{
    static const char *const groups[2] = {"online", "ema/0.999"};
    memset(f, 0, sizeof *f);
    params_init(&f->ps);
    params_add(&f->ps, "conv.weight", 4, (int[]){4, 2, 3, 3}, PARAM_INIT_ZERO, 1);
    params_add(&f->ps, "conv.bias", 1, (int[]){4}, PARAM_INIT_ZERO, 1);
    adam_init(&f->adam, f->ps.total, 2e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, false);
    f->st.ps = &f->ps;
    for (int i = 0; i < 2; i++) {
        f->w[i] = params_buffer(&f->ps);
        ckpt_add_weights(&f->st, groups[i], f->w[i]);
    }
    f->st.opt = &f->adam;
    f->st.method = "cd";
    f->st.config = "[experiment]\nname = fuzz\nmethod = cd\n";
}

void fuzz_ckpt_free(FuzzCkpt *f)
{
    for (int i = 0; i < 2; i++) free(f->w[i]);
    adam_free(&f->adam);
    free(f->st.loaded_config);
    params_free(&f->ps);
}
