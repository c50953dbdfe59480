/* cmd_train.c: `cmlab train EXP.ini [--set section.key=value ...] [--resume]`. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "common.h"
#include "io/experiment.h"
#include "train/dist.h"
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
    ExpArgs e = {0};
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
        } else if (exp_args_take("cmlab train", usage, &e, argc, argv, &i) != 0) {
            return CM_EXIT_INPUT;
        }
    }
    if (!e.path) {
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    /* Under mpirun or srun this process is one rank of a data-parallel job (train/dist.h). */
    if (dist_init(&argc, &argv) != 0) {
        fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    Config cfg;
    int rc = exp_args_load("cmlab train", &e, &cfg) != 0 ? CM_EXIT_INPUT : trainer_run(&cfg, resume);
    dist_finalize();
    return rc;
}
