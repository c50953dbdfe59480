/* PLACEHOLDER */
#include "demo.h"
#include <stdio.h>
int demo_main(int argc, char **argv) { fprintf(stderr, "demo: not implemented yet\n"); return 1; }
