/* ablate.h: `cmlab ablate EXP.ini`: the runs of an experiment file's [sweep], their evaluation,
 * and a table and report of the results (DESIGN.md "Experiment files"; reference/users.md §2.3).
 *
 * Variants: eval.sweep = grid takes every combination of the [sweep] values
 * (config_sweep_variant); one_at_a_time takes the file's own configuration ("base"), then each
 * swept value that differs from it, changed on its own, and, with several swept keys, last the
 * combination of every key at its last listed value ("all": list the base value first and the
 * alternative last, as CT -> iCT); zip varies the keys together, variant i taking value i of
 * every line (a solver with its own schedule and options, one row per solver). Variant i runs in
 *   <out_dir>/<name>/<NN>-<values>/         (NN = i, the values of its swept keys)
 * as an ordinary run directory (trainer.h), or, when eval.checkpoint is set, evaluates that
 * checkpoint instead of training (sampler ablations) and holds only config.ini, eval.json and the
 * evaluation's sample grids.
 *
 * Resumable: a variant whose checkpoint of step train.iterations is valid is not trained again; a
 * variant with older checkpoints resumes from the newest (--resume); a variant whose eval.json
 * already has a record of the same checkpoint, sampler, NFE, n, seed, weights and feature
 * network for every NFE is not evaluated again. A variant whose training fails at run time (a
 * non-finite loss) is reported as failed and the others go on; bad input stops the ablation, and
 * so does a variant directory whose config.ini is not the variant's resolved configuration (the
 * file changed since it ran: rerunning would mix two experiments).
 *
 * Outputs in <out_dir>/<name>/, rewritten after every variant:
 *   results.csv   one row per variant: index, directory, status, the swept keys' values, steps,
 *                 final loss, training seconds, then FD at each NFE
 *   results.md    the same table in Markdown, under the experiment file's header comment (the
 *                 published ordering it checks)
 *   report.html   self-contained: the table, the sample grids side by side (relative paths), the
 *                 training-loss curves and FD against NFE as inline SVG, and when the directory
 *                 holds trajectories/pca.svg (`cmlab trajectories TEACHER.h5 --pca --out
 *                 <this directory>/trajectories`, trajectories.h) that chart of the teacher's
 *                 trajectory PCA
 */
#ifndef CM_ABLATE_H
#define CM_ABLATE_H

#include <stdbool.h>

#include "io/experiment.h"

typedef struct AblateOpts {
    bool report_only;            /* only rewrite the tables and the report from what is on disk */
    bool list_only;              /* only print the variants */
    int only[CFG_SWEEP_VARIANTS > 64 ? 64 : CFG_SWEEP_VARIANTS];   /* run these variants (indices) ... */
    int nonly;                   /* ... when nonly > 0; the others are only reported */
} AblateOpts;

/* Runs the ablation of base (loaded from exp_path, whose leading comment heads the report).
 * Returns an exit code (CM_EXIT_*): 0 when every variant trained and was evaluated, 1 when one
 * failed at run time or the run was interrupted (SIGINT/SIGTERM: the variant in flight saves a
 * checkpoint), 2 for bad input. */
int ablate_run(const char *exp_path, const Config *base, const AblateOpts *o);

#endif
