/* cmd_train.c: `cmlab train EXP.ini [--set section.key=value ...] [--resume]`. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "common.h"
#include "train/experiment.h"
#include "train/trainer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cmlab train EXP.ini [--set section.key=value ...] [--resume]\n"
               "Trains the run an experiment file describes; the run directory is\n"
               "<experiment.out_dir>/<experiment.name>.\n"
               "  --set K=V   override a key (repeatable), e.g. --set train.iterations=200\n"
               "  --resume    continue from the newest valid checkpoint of the run\n"
               "  --help      this text and every experiment-file key\n"
               "  --keys-markdown  the key list as Markdown (README.md and experiments/README.md hold it)\n\n");
}

int train_main(int argc, char **argv)
{
    const char *path = NULL;
    const char *sets[256];
    int nsets = 0;
    bool resume = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            config_help(stdout);
            return CM_EXIT_OK;
        } else if (!strcmp(a, "--keys-markdown")) {   /* README's key list is this output */
            config_markdown(stdout);
            return CM_EXIT_OK;
        } else if (!strcmp(a, "--resume")) {
            resume = true;
        } else if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) {
            const char *v = a[5] == '=' ? a + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || nsets == (int)CM_ARRAY_LEN(sets)) {
                fprintf(stderr, "cmlab train: --set needs section.key=value\n");
                return CM_EXIT_INPUT;
            }
            sets[nsets++] = v;
        } else if (a[0] == '-') {
            fprintf(stderr, "cmlab train: unknown option '%s'\n", a);
            usage(stderr);
            return CM_EXIT_INPUT;
        } else if (path) {
            fprintf(stderr, "cmlab train: one experiment file only ('%s' and '%s')\n", path, a);
            return CM_EXIT_INPUT;
        } else {
            path = a;
        }
    }
    if (!path) {
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    Config cfg;
    if (config_load(&cfg, path) != 0) {
        fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    if (config_set_list(&cfg, sets, nsets) != 0) {
        fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    return trainer_run(&cfg, resume);
}
