/* commands.h: the entry points of `cmlab` subcommands that live in src/cli/. Each takes the
 * subcommand's own argv (argv[0] is the subcommand name) and returns an exit code (CM_EXIT_*). */
#ifndef CM_COMMANDS_H
#define CM_COMMANDS_H

#include <stdio.h>

#include "io/experiment.h"

int info_main(int argc, char **argv);
int train_main(int argc, char **argv);
int sample_main(int argc, char **argv);
int edit_main(int argc, char **argv);
int invert_main(int argc, char **argv);
int eval_main(int argc, char **argv);
int ablate_main(int argc, char **argv);
int demo_main(int argc, char **argv);
int trajectories_main(int argc, char **argv);

/* A whole number in [lo, hi] for `--opt` into *out; else -1 after printing "CMD: --opt expects
 * ..." (exit CM_EXIT_INPUT). */
int cli_parse_count(const char *cmd, const char *opt, const char *arg, long long lo, long long hi, long long *out);

/* --precision fp32|bf16 (sample, eval, edit, invert, trajectories; default fp32): the precision of the products
 * (tensor.h), as this CPU runs it (gemm_precision_usable: bf16 without AVX512_BF16 is fp32 with a
 * note) into *out; else -1 after printing "CMD: --precision expects ..." (exit CM_EXIT_INPUT). */
int cli_parse_precision(const char *cmd, const char *arg, CmPrecision *out);

/* The arguments of the commands that run an experiment file (train, ablate): the file and its
 * `--set section.key=value` overrides (repeatable, also `--set=K=V`). */
typedef struct ExpArgs {
    const char *path;
    const char *sets[256];
    int nsets;
} ExpArgs;
/* Takes argv[*i] (and a --set's value, advancing *i), called for each argument that is not one
 * of the command's own options: 0 for a --set or the path; -1 after printing "CMD: ..." (and
 * usage for an unknown option; exit CM_EXIT_INPUT): an unknown option, a --set without a value,
 * a second path. */
int exp_args_take(const char *cmd, void (*usage)(FILE *), ExpArgs *e, int argc, char **argv, int *i);
/* cfg = e->path with the overrides applied; -1 after printing "CMD: <the error>". */
int exp_args_load(const char *cmd, const ExpArgs *e, Config *cfg);

#endif
