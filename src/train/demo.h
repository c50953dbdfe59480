/* demo.h: `cmlab demo`, the README's main job on the embedded default configuration (its
 * command line: src/cli/cmd_demo.c). */
#ifndef CM_DEMO_H
#define CM_DEMO_H

#include <stdbool.h>

typedef struct DemoOpts {
    const char *recipe;          /* "ict" (NULL: the default, ict) or "cd" */
    double seconds;              /* the time budget, split between the recipe's stages */
    const char *cifar10;         /* the CIFAR-10 version of the recipe on this data (NULL: Fashion-MNIST) */
    bool resume;                 /* continue the previous demo run (the stage it stopped in) */
    const char *const *sets;     /* section.key=value overrides of every stage, in order */
    int nset;
} DemoOpts;

/* Whether recipe `name` exists (NULL: the default). */
bool demo_recipe_exists(const char *name);
/* Prints the embedded experiment files of the recipe (its CIFAR-10 version if cifar10). Returns an
 * exit code (CM_EXIT_*). */
int demo_print_config(const char *recipe, bool cifar10);
/* Runs the demo. Returns an exit code (CM_EXIT_*). */
int demo_run(const DemoOpts *o);

#endif
