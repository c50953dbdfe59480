/* main.c: the `cmlab` command. It only dispatches: each subcommand is a row of the table below,
 * whose function receives argv starting at the subcommand's name and returns an exit code
 * (CM_EXIT_*). `cmlab --help` is generated from the same table. */
#include "common.h"
#include "cli/commands.h"
#include "autograd/tensor.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* meson.build passes the project version; the fallback keeps other builds working. */
#ifndef CMLAB_VERSION
#define CMLAB_VERSION "0.1.0"
#endif

typedef struct Command {
    const char *name;
    int (*run)(int argc, char **argv);   /* argv[0] is the subcommand's name */
    const char *help;                    /* one line for `cmlab --help` */
    bool wait_note;                      /* says OpenMP's waiting policy and why on stderr (threads.h) */
} Command;

static const Command commands[] = {
    {"demo", demo_main, "train a consistency model on Fashion-MNIST or CIFAR-10 and write sample grids", false},
    {"train", train_main, "train the run an experiment file describes (--resume to continue)", true},
    {"sample", sample_main, "draw a sample grid from a checkpoint with an ODE solver", true},
    {"invert", invert_main, "BCM or EDM: images -> latents -> reconstructions, and the reconstruction MSE", false},
    {"edit", edit_main, "zero-shot editing: inpaint, colorize, superres, denoise, interpolate", false},
    {"eval", eval_main, "Frechet distance of a checkpoint's samples in a cmlab classifier's features", true},
    {"ablate", ablate_main, "run an experiment file's [sweep], evaluate it, write tables and a report", false},
    {"trajectories", trajectories_main, "PCA of a diffusion model's ODE sampling trajectories (--pca)", false},
    {"info", info_main, "list a checkpoint's groups, shapes, step and config", false},
};

static void print_usage(FILE *out)
{
    fprintf(out, "usage: cmlab COMMAND [ARGS...]\n"
                 "       cmlab --help | --version\n\n"
                 "Consistency-model training on the CPU (cmlab %s).\n\n"
                 "commands:\n", CMLAB_VERSION);
    for (size_t i = 0; i < CM_ARRAY_LEN(commands); i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\noptions:\n"
                 "  -h, --help  show this help\n"
                 "  --version   print the version\n\n"
                 "Run 'cmlab COMMAND --help' for the options of a command.\n");
}

/* The valid name nearest to `name`: an option for "-...", else a command. */
static const char *nearest_name(const char *name)
{
    static const char *const options[] = {"--help", "-h", "--version"};
    bool option = name[0] == '-';
    size_t n = option ? CM_ARRAY_LEN(options) : CM_ARRAY_LEN(commands);
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        const char *candidate = option ? options[i] : commands[i].name;
        size_t d = (size_t)cm_edit_distance(name, candidate);
        if (d < best_d) {
            best = candidate;
            best_d = d;
        }
    }
    return best;
}

/* Help and version go to stdout; a failed write (a full disk, a closed pipe) is a failure. */
static int finish_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cmlab: cannot write to standard output\n");
        return CM_EXIT_RUNTIME;
    }
    return CM_EXIT_OK;
}

/* Whether the command line may run a command that computes: not `cmlab --help`, `--version` or
 * `info` (a command's own --help still counts: it is how test_wait asks for the choice). */
static bool computes(int argc, char **argv)
{
    return argc >= 2 && argv[1][0] != '-' && strcmp(argv[1], "info") != 0;
}

int main(int argc, char **argv)
{
    cm_select_env(argv, computes(argc, argv));
    if (argc < 2) {
        print_usage(stderr);
        return CM_EXIT_INPUT;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        print_usage(stdout);
        return finish_stdout();
    }
    if (strcmp(name, "--version") == 0) {
        printf("cmlab %s (OpenBLAS core %s)\n", CMLAB_VERSION, cm_blas_core());
        return finish_stdout();
    }
    for (size_t i = 0; i < CM_ARRAY_LEN(commands); i++)
        if (strcmp(name, commands[i].name) == 0) {
            if (commands[i].wait_note) fprintf(stderr, "cmlab: %s\n", cm_wait_note());
            return commands[i].run(argc - 1, argv + 1);
        }

    fprintf(stderr, "cmlab: unknown %s '%s'; did you mean '%s'? (see cmlab --help)\n",
            name[0] == '-' ? "option" : "command", name, nearest_name(name));
    return CM_EXIT_INPUT;
}
