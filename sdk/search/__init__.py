"""``edgesdk search``: the best recipe per device under accuracy and latency budgets.

Each trial is a real compress run; its artifacts are timed with the benchmark loop; the candidates are
ranked on a noise-aware Pareto front. Trials run in this process or as Ray tasks (edgesdk.search.engine).

Example::

    from edgesdk.intake import ModelSource
    from edgesdk.search import SearchSpace, search
    space = SearchSpace.from_options(prune="0:0.5", prune_steps=2, precisions="fp32,int8",
                                     backends="onnxruntime", max_accuracy_drop=1.0)
    result = search(ModelSource("examples/digits/model.py:build", inputs=("x:1x1x8x8",)), space,
                    out_dir="search-out", calib="calib.npz", eval_data="eval.npz", engine="local")
"""
from __future__ import annotations

from typing import Any

from edgesdk.verb import make_callable

from .run import Search, SearchResult
from .space import Budgets, SearchSpace


def search(source: Any, space: SearchSpace, *, out_dir: Any, **options: Any) -> SearchResult:
    """Run a search (see :class:`edgesdk.search.run.Search` for the options) and return its result."""
    return Search(source, space, out_dir=out_dir, **options).run()


__all__ = ["search", "Search", "SearchResult", "SearchSpace", "Budgets"]


make_callable(__name__, search)  # edgesdk.search(...) is the verb, as edgesdk.compress(...) is
