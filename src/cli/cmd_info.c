/* PLACEHOLDER */
#include "cli/commands.h"
#include <stdio.h>
int info_main(int argc, char **argv) { fprintf(stderr, "info: not implemented\n"); return 1; }
