#include "rundir.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/atomic.h"

void rundir_paths(RunDir *d, const Config *cfg)
{
    snprintf(d->root, sizeof d->root, "%s/%s", cfg->experiment.out_dir, cfg->experiment.name);
    snprintf(d->ckpt, sizeof d->ckpt, "%s/ckpt", d->root);
    snprintf(d->samples, sizeof d->samples, "%s/samples", d->root);
    snprintf(d->metrics, sizeof d->metrics, "%s/metrics.jsonl", d->root);
}

bool rundir_has_checkpoints(const RunDir *rd)
{
    const char *dir = rd->ckpt;
    DIR *d = opendir(dir);
    bool found = false;
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        found = !strncmp(e->d_name, "step_", 5) && n > 3 && !strcmp(e->d_name + n - 3, ".h5");
    }
    if (d) closedir(d);
    return found;
}

int rundir_create(const RunDir *d, const char *config_text, bool resume)
{
    if (!resume && rundir_has_checkpoints(d))
        return cm_fail("%s already has checkpoints: add --resume to continue that run, or choose "
                       "another experiment.name (or remove the directory)", d->root);
    if (cm_mkdir_p(d->ckpt) || cm_mkdir_p(d->samples)) return -1;
    char path[700];
    snprintf(path, sizeof path, "%s/config.ini", d->root);
    return atomic_write(path, config_text, strlen(config_text));
}

int rundir_metrics_truncate(const RunDir *d, long step)
{
    const char *path = d->metrics;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t cap = 1 << 16, len = 0;
    char *out = cm_malloc(cap), line[4096];
    while (fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"step\":");
        if (s && atol(s + 7) > step) continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            cap = 2 * (len + n + 1);
            out = realloc(out, cap);
            CM_ASSERT(out, "out of memory");
        }
        memcpy(out + len, line, n);
        len += n;
    }
    fclose(f);
    out[len] = 0;
    int rc = atomic_write(path, out, len);
    free(out);
    return rc;
}

void rundir_of_checkpoint(const char *ckpt_path, char *out, size_t len)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", ckpt_path);
    char *slash = strrchr(buf, '/');
    if (!slash) {
        snprintf(out, len, ".");
        return;
    }
    *slash = '\0';
    const char *base = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    if (strcmp(base, "ckpt") == 0) {
        if (base == buf) snprintf(buf, sizeof buf, ".");
        else buf[base - buf - 1] = '\0';
    }
    snprintf(out, len, "%s", buf[0] ? buf : "/");
}

