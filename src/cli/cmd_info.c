/* cmd_info.c: `cmlab info CKPT.h5`, a verified summary of a checkpoint (ckpt_describe). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "common.h"
#include "io/checkpoint.h"

static void info_usage(FILE *out)
{
    fprintf(out, "usage: cmlab info CKPT.h5\n\n"
                 "Verifies a checkpoint (format, completeness, every checksum) and prints its step,\n"
                 "method, seed, data cursor, schedule state, every group and dataset with dtype and\n"
                 "shape, and the resolved configuration it was trained with.\n\n"
                 "options:\n"
                 "  -h, --help  show this help\n\n"
                 "exit status: 0 valid checkpoint, 2 missing, damaged or incomplete file or bad usage,\n"
                 "1 output could not be written\n");
}

int info_main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            info_usage(stdout);
            return fflush(stdout) == 0 ? CM_EXIT_OK : CM_EXIT_RUNTIME;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "cmlab info: unknown option %s\n", argv[i]);
            info_usage(stderr);
            return CM_EXIT_INPUT;
        }
        if (path) {
            fprintf(stderr, "cmlab info: one checkpoint at a time (got %s and %s)\n", path, argv[i]);
            return CM_EXIT_INPUT;
        }
        path = argv[i];
    }
    if (!path) {
        info_usage(stderr);
        return CM_EXIT_INPUT;
    }
    if (ckpt_describe(path, stdout) < 0) {
        fprintf(stderr, "cmlab info: %s\n", cm_errmsg());
        if (access(path, F_OK) == 0)
            fprintf(stderr, "This file is not a usable checkpoint: resuming skips it and falls back to "
                            "the newest valid one in its directory.\n");
        return CM_EXIT_INPUT;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cmlab info: cannot write the output\n");
        return CM_EXIT_RUNTIME;
    }
    return CM_EXIT_OK;
}
