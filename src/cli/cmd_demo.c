/* cmd_demo.c: `cmlab demo`'s command line; the demo itself is src/train/demo.h. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "common.h"
#include "train/demo.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab demo [--recipe ict|cd] [--seconds S] [--out DIR] [--data DIR | --cifar10 PATH]\n"
            "                  [--threads N] [--set K=V ...] [--resume] [--print-config]\n"
            "Trains a consistency model on Fashion-MNIST (or CIFAR-10) in at most about S seconds\n"
            "(default 900) and writes a 1-step and a 2-step sample grid, whose paths it prints.\n"
            "  --recipe ict    (default) iCT from scratch, N doubling 10 -> 80 over 2000 steps: DIR/demo\n"
            "  --recipe cd     an EDM teacher for 60%% of the time, then consistency distillation of\n"
            "                  it for 40%%: DIR/demo_teacher, DIR/demo_cd\n"
            "  --out DIR       directory of run directories (default runs)\n"
            "  --data DIR      Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
            "  --cifar10 PATH  the same recipe on CIFAR-10 (3x32x32, random flips; iCT over 1500 steps)\n"
            "                  from PATH, cifar-10-binary.tar.gz or the cifar-10-batches-bin directory:\n"
            "                  DIR/demo_cifar10 (cd: DIR/demo_cifar10_teacher, DIR/demo_cifar10_cd)\n"
            "  --set K=V       override an experiment key in every stage (cmlab train --help lists them)\n"
            "  --resume        continue the previous demo run (the stage it stopped in)\n"
            "  --print-config  print the recipe's embedded experiment files and exit\n");
}

typedef struct DemoArgs {
    double seconds;
    const char *recipe;
    const char *cifar10;         /* --cifar10 PATH, or NULL */
    bool data, resume, print;
    int nset;
    char set[64][512];           /* section.key=value, in order */
} DemoArgs;

/* The command line into a: 0, 1 after --help, or -1 (message printed) on a bad option. */
static int parse_args(int argc, char **argv, DemoArgs *a)
{
    static const struct option opts[] = {
        {"seconds", required_argument, 0, 's'}, {"out", required_argument, 0, 'o'},
        {"data", required_argument, 0, 'd'},    {"threads", required_argument, 0, 't'},
        {"set", required_argument, 0, 'S'},     {"resume", no_argument, 0, 'r'},
        {"print-config", no_argument, 0, 'p'},  {"recipe", required_argument, 0, 'R'},
        {"cifar10", required_argument, 0, 'c'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *a = (DemoArgs){.seconds = 900, .recipe = "ict"};
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        const char *key = NULL;
        char *end;
        switch (ch) {
        case 's':
            a->seconds = strtod(optarg, &end);
            if (end == optarg || *end || !(a->seconds > 0)) {
                fprintf(stderr, "cmlab demo: --seconds %s: a positive number of seconds\n", optarg);
                return -1;
            }
            break;
        case 'R':
            a->recipe = optarg;
            if (!demo_recipe_exists(optarg)) {
                fprintf(stderr, "cmlab demo: --recipe %s: ict or cd\n", optarg);
                return -1;
            }
            break;
        case 'o': key = "experiment.out_dir"; break;
        case 'd': key = "data.path"; a->data = true; break;
        case 'c': a->cifar10 = optarg; break;
        case 't': key = "train.threads"; break;
        case 'S': key = ""; break;
        case 'r': a->resume = true; break;
        case 'p': a->print = true; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
        if (!key) continue;
        if (a->nset == (int)CM_ARRAY_LEN(a->set)) {
            fprintf(stderr, "cmlab demo: more than %d settings\n", a->nset);
            return -1;
        }
        char *set = a->set[a->nset++];
        int n = key[0] ? snprintf(set, sizeof a->set[0], "%s=%s", key, optarg)
                       : snprintf(set, sizeof a->set[0], "%s", optarg);
        if (n >= (int)sizeof a->set[0]) {
            fprintf(stderr, "cmlab demo: the setting '%.40s...' is longer than %zu characters\n", set,
                    sizeof a->set[0] - 1);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cmlab demo: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    if (a->data && a->cifar10) {
        fprintf(stderr, "cmlab demo: --data is Fashion-MNIST's directory; --cifar10 takes the CIFAR-10 path\n");
        return -1;
    }
    if (a->cifar10 && !a->cifar10[0]) {
        fprintf(stderr, "cmlab demo: --cifar10 needs the path of cifar-10-binary.tar.gz or cifar-10-batches-bin\n");
        return -1;
    }
    return 0;
}

int demo_main(int argc, char **argv)
{
    static DemoArgs a;
    int rc = parse_args(argc, argv, &a);
    if (rc != 0) return rc > 0 ? CM_EXIT_OK : CM_EXIT_INPUT;
    if (a.print) return demo_print_config(a.recipe, a.cifar10 != NULL);
    const char *sets[CM_ARRAY_LEN(a.set)];
    for (int i = 0; i < a.nset; i++) sets[i] = a.set[i];
    DemoOpts o = {.recipe = a.recipe, .seconds = a.seconds, .cifar10 = a.cifar10, .resume = a.resume, .sets = sets,
                  .nset = a.nset};
    return demo_run(&o);
}
