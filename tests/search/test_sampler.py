"""The sampler that picks --trials of a larger grid: real Optuna, told scores as a search would tell them."""
from __future__ import annotations

from edgesdk.search.sampler import Score, TrialSampler
from edgesdk.search.space import SearchSpace

SPACE = SearchSpace.from_options(prune="0:0.6", prune_steps=4, prune_methods="channel", importances="l1,taylor",
                                 precisions="fp32,int8,fp16", trials=6)


def _score(t) -> Score:
    """A made-up but consistent trade-off: pruning and int8 are faster and lose accuracy; int8 misses a budget."""
    speed = {"fp32": 1.0, "fp16": 0.8, "int8": 0.4}[t.precision]
    return Score((10 * speed * (1 - t.prune), 99 - 20 * t.prune, 1 - t.prune), violation=int(t.precision == "int8"))


def _asks(seed: int, n: int, width: int = 2) -> list:
    sampler, taken = TrialSampler(SPACE, seed=seed, budget=n), []
    while len(taken) < n:
        asked = sampler.ask(min(width, n - len(taken)), taken=set(taken))
        if not asked:
            break
        taken += asked
        for t in asked:
            sampler.tell(t, None if t.prune == 0.6 and t.importance == "taylor" else _score(t))
    return taken


def test_it_asks_grid_trials_never_twice_and_the_same_ones_for_a_seed():
    grid = SPACE.trials()
    assert len(grid) == 21  # the unpruned setting once per precision, not once per importance
    first = _asks(0, 8)
    assert len(first) == 8 and len(set(first)) == 8 and set(first) <= set(grid)
    assert _asks(0, 8) == first
    assert _asks(1, 8) != first  # another seed, another sample


def test_it_exhausts_the_grid_without_repeating():
    everything = _asks(3, 50, width=5)
    assert sorted(everything, key=str) == sorted(SPACE.trials(), key=str)


def test_a_resumed_sampler_replays_what_finished_and_asks_only_new_trials():
    done = _asks(0, 5)
    sampler = TrialSampler(SPACE, seed=0, budget=8)
    for t in done:
        sampler.tell(t, _score(t))  # replayed into a fresh study, as --resume does
    assert len(sampler.study.trials) == 5
    more = sampler.ask(3, taken=set(done))
    assert len(more) == 3 and not set(more) & set(done) and len(set(more)) == 3
