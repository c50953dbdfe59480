/* exp_args.c: the arguments `cmlab train` and `cmlab ablate` share, and the option parsing of
 * the other commands (commands.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gemm_bf16.h"
#include "cli/commands.h"
#include "common.h"

int exp_args_take(const char *cmd, void (*usage)(FILE *), ExpArgs *e, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) {
        const char *v = a[5] == '=' ? a + 6 : (*i + 1 < argc ? argv[++*i] : NULL);
        if (!v || e->nsets == (int)CM_ARRAY_LEN(e->sets)) {
            fprintf(stderr, "%s: --set needs section.key=value\n", cmd);
            return -1;
        }
        e->sets[e->nsets++] = v;
        return 0;
    }
    if (a[0] == '-') {
        fprintf(stderr, "%s: unknown option '%s'\n", cmd, a);
        usage(stderr);
        return -1;
    }
    if (e->path) {
        fprintf(stderr, "%s: one experiment file only ('%s' and '%s')\n", cmd, e->path, a);
        return -1;
    }
    e->path = a;
    return 0;
}

int exp_args_load(const char *cmd, const ExpArgs *e, Config *cfg)
{
    if (config_load(cfg, e->path) != 0 || config_set_list(cfg, e->sets, e->nsets) != 0) {
        fprintf(stderr, "%s: %s\n", cmd, cm_errmsg());
        return -1;
    }
    return 0;
}

int cli_parse_precision(const char *cmd, const char *arg, CmPrecision *out)
{
    for (int p = 0; p < CM_PRECISION_COUNT; p++)
        if (strcmp(arg, cm_precision_names[p]) == 0) {
            *out = gemm_precision_usable((CmPrecision)p);
            return 0;
        }
    fprintf(stderr, "%s: --precision expects fp32 or bf16, got '%s'\n", cmd, arg);
    return -1;
}

int cli_parse_count(const char *cmd, const char *opt, const char *arg, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (end == arg || *end || errno == ERANGE || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s expects a whole number from %lld to %lld, got '%s'\n", cmd, opt, lo, hi, arg);
        return -1;
    }
    *out = v;
    return 0;
}
