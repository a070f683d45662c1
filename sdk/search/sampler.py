"""Which grid trials to run when the grid is larger than ``--trials``: Optuna's multi-objective TPE sampler.

The sampler sees the grid as categorical dimensions (prune ratio, method, importance, precision) and three
objectives per finished trial, taken from its best candidate (the feasible one with the lowest latency, else
the one that misses the fewest budgets): latency (minimised), accuracy or cosine (maximised) and size
(minimised). A budget miss is a constraint violation (the number of budgets missed), so the sampler learns to
stay inside the budgets; a failed trial is told as failed. It is seeded, so the same search asks the same
trials; a trial it proposes twice is not run twice (after a few re-asks it takes an unasked grid trial at
random, from the same seed). A resumed search replays what finished into a new study before it asks more.

Example::

    sampler = TrialSampler(space, seed=0, budget=12)
    (trial,) = sampler.ask(1, taken=set())
    sampler.tell(trial, Score((3.1, 97.5, 0.2), violation=0))
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .space import SearchSpace, Trial

KIND = "optuna-tpe"
_REASKS = 8  # proposals of an already-taken trial before one is drawn from the untaken ones


@dataclass(frozen=True)
class Score:
    """A finished trial as the sampler sees it: (latency ms, accuracy or cosine, size MB) and how many budgets
    its best candidate misses (0: feasible)."""

    values: tuple[float, float, float]
    violation: int = 0


def optuna_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna") is not None


def _constraints(frozen: Any) -> list[float]:
    return [float(frozen.user_attrs.get("violation", 0))]


class TrialSampler:
    """Ask trials of ``space``'s grid a few at a time; tell each one's :class:`Score` when it finishes."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, budget: int | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space, self.grid = space, space.trials()
        dims = {"prune": space.prune, "prune_method": space.prune_methods, "importance": space.importances,
                "precision": space.precisions}
        self._dists = {k: optuna.distributions.CategoricalDistribution(list(v)) for k, v in dims.items()}
        budget = budget or len(self.grid)
        # a third of the budget (2 to 10 trials) spread at random before the model of the objectives takes over
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, budget // 3)),
                                             constraints_func=_constraints)
        self.study = optuna.create_study(directions=["minimize", "maximize", "minimize"], sampler=sampler)
        self._rng = random.Random(seed)
        self._open: dict[Trial, Any] = {}

    def _trial(self, params: dict[str, Any]) -> Trial:
        ratio = params["prune"]
        return Trial(ratio, params["precision"]) if ratio == 0 else Trial(
            ratio, params["precision"], params["prune_method"], params["importance"])

    def _params(self, t: Trial) -> dict[str, Any]:
        return {"prune": t.prune, "prune_method": t.prune_method if t.prune else self.space.prune_methods[0],
                "importance": t.importance if t.prune else self.space.importances[0], "precision": t.precision}

    def ask(self, n: int, *, taken: set[Trial]) -> list[Trial]:
        """Up to ``n`` trials not in ``taken`` (fewer only when the grid has no more)."""
        from optuna.trial import TrialState

        out: list[Trial] = []
        while len(out) < n:
            left = [g for g in self.grid if g not in taken and g not in out]
            if not left:
                break
            for _ in range(_REASKS):
                ot = self.study.ask(self._dists)
                t = self._trial(ot.params)
                if t in left:
                    break
                self.study.tell(ot, state=TrialState.FAIL)  # already taken: not run again, and not learnt from
            else:
                self.study.enqueue_trial(self._params(self._rng.choice(left)))
                ot = self.study.ask(self._dists)
                t = self._trial(ot.params)
            self._open[t] = ot
            out.append(t)
        return out

    def tell(self, t: Trial, score: Score | None) -> None:
        """The result of an asked trial (None: it failed), or of one that finished before (a resumed search)."""
        import optuna
        from optuna.trial import TrialState

        ot = self._open.pop(t, None)
        if ot is None:  # finished in an earlier run of this search: replay it
            attrs = {} if score is None else {"violation": score.violation}
            self.study.add_trial(optuna.trial.create_trial(
                params=self._params(t), distributions=self._dists, user_attrs=attrs,
                state=TrialState.FAIL if score is None else TrialState.COMPLETE,
                values=None if score is None else list(score.values)))
            return
        if score is None:
            self.study.tell(ot, state=TrialState.FAIL)
            return
        ot.set_user_attr("violation", score.violation)
        self.study.tell(ot, list(score.values))
