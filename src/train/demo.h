/* demo.h: `cmlab demo`, the README's main job on the embedded default configuration. */
#ifndef CM_DEMO_H
#define CM_DEMO_H

/* argv[0] is "demo". Returns an exit code (CM_EXIT_*). */
int demo_main(int argc, char **argv);

#endif
