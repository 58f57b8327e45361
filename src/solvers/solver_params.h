/*
 * solver_params.h -- the solvers' parameter table and the one place their defaults are resolved
 * (solver_params.c).
 *
 * A solver stores what its caller set (val/set, solver.c).  Everything else a run reads comes
 * from stsl__sp_resolve: the caller's value when set, else the table's default for the kind,
 * changed by the table's rules where a default depends on another setting (RMP's VE variant,
 * STSL's Adam rule) or on the operator (DPS's zeta by task, the impulse-noise losses, DPS-MO's
 * step per ||A||^2).  The getters report the same resolution, against the operator of the
 * solver's last run, or before any run against the generic operator (STSL__OP_FACTS_GENERIC).
 */
#ifndef STSL_SOLVER_PARAMS_H
#define STSL_SOLVER_PARAMS_H

#include "core/internal.h"

/* parameter slots: SEED and the solver keys 100..127 */
#define STSL__SP_FIRST 100
#define STSL__SP_LAST 127
#define STSL__SP_COUNT (STSL__SP_LAST - STSL__SP_FIRST + 2)

/* What an operator-dependent default depends on. */
typedef struct stsl__op_facts {
    int op_kind;      /* stsl_operator_kind, -1 for the generic operator */
    int loss;         /* stsl_loss */
    int linear;       /* 1: the operator is linear */
    int latent;       /* 1: the run has an autoencoder (a latent prior) */
} stsl__op_facts;
/* The operator getters resolve against before a solver's first run: no kind of its own, linear,
 * Gaussian noise (squared loss), a pixel-space prior. */
#define STSL__OP_FACTS_GENERIC ((stsl__op_facts){-1, STSL_LOSS_SQUARED, 1, 0})

/* slot of a key, -1 when the key is not a solver key */
int stsl__solver_slot(stsl_param key);
/* 1 and the bounds (default resolved for the generic operator and every other parameter at its
 * default) when `kind` uses `key`, else 0. */
int stsl__sp_bounds(stsl_solver_kind kind, stsl_param key, stsl_param_bounds *b);
/* 1 when `value` is one the kind accepts for key (inside the bounds, and one of the kind's
 * values where the table lists them: STSL's VARIANT). */
int stsl__sp_value_allowed(stsl_solver_kind kind, stsl_param key, double value);
/* The values a run of `kind` uses, one per slot (0 for keys the kind does not use), from the
 * values set (val, set: per slot) and the operator's facts. */
void stsl__sp_resolve(stsl_solver_kind kind, const double *val, const unsigned char *set,
                      const stsl__op_facts *facts, double *out);
/* "name=value ..." of every parameter the kind uses (resolved values p), into buf. */
void stsl__sp_format(stsl_solver_kind kind, const double *p, char *buf, size_t n);

#endif
