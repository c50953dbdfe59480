/* commands.h: the entry points of `cmlab` subcommands that live in src/cli/. Each takes the
 * subcommand's own argv (argv[0] is the subcommand name) and returns an exit code (CM_EXIT_*). */
#ifndef CM_COMMANDS_H
#define CM_COMMANDS_H

int info_main(int argc, char **argv);
int train_main(int argc, char **argv);
int sample_main(int argc, char **argv);
int edit_main(int argc, char **argv);
int eval_main(int argc, char **argv);
int ablate_main(int argc, char **argv);

#endif
