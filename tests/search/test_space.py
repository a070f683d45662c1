"""The search space: parsing, the grid, budgets, and the errors a user sees."""
from __future__ import annotations

import pytest

from edgesdk.errors import InputError
from edgesdk.search.space import Budgets, SearchSpace, parse_prune


def test_prune_range_list_and_errors():
    assert parse_prune("0:0.6", 4) == (0.0, 0.2, 0.4, 0.6)
    assert parse_prune("0.5,0,0.5") == (0.5, 0.0)
    assert parse_prune(None) == (0.0,)
    for bad in ("0.7:0.2", "1.0", "a:b", "x"):
        with pytest.raises(InputError):
            parse_prune(bad)


def test_grid_counts_an_unpruned_setting_once_and_targets_follow_backends():
    space = SearchSpace.from_options(prune="0,0.5", prune_methods="channel,unstructured", precisions="fp32,int8",
                                     backends="onnxruntime,openvino,litert")
    labels = [t.label for t in space.trials()]
    assert labels == ["fp32", "int8", "prune0.5 fp32", "prune0.5 int8", "prune0.5/unstructured fp32",
                      "prune0.5/unstructured int8"]
    assert space.targets == ("onnx", "tflite")
    assert space.digest() == SearchSpace.from_options(prune="0,0.5", prune_methods="channel,unstructured",
                                                      precisions="fp32,int8",
                                                      backends="onnxruntime,openvino,litert").digest()
    assert space.digest() != SearchSpace.from_options(prune="0,0.5", precisions="fp32").digest()


@pytest.mark.parametrize("options, words", [
    ({"precisions": ""}, "no precision"),
    ({"precisions": "int9"}, "unknown precision"),
    ({"backends": "tensorflow"}, "unknown backend"),
    ({"latency": "p99"}, "latency objective"),
    ({"trials": 0}, "--trials"),
    ({"threads": "one"}, "thread count"),
])
def test_bad_spaces_are_refused(options, words):
    with pytest.raises(InputError, match=words):
        SearchSpace.from_options(**options)


def test_yaml_section_with_flags_over_it():
    space = SearchSpace.from_yaml_section({"prune": "0:0.4", "prune_steps": 3, "precisions": ["fp32", "int8"],
                                           "budgets": {"max_size_mb": 2.0}}, precisions="int8")
    assert space.prune == (0.0, 0.2, 0.4) and space.precisions == ("int8",)
    assert space.budgets == Budgets(max_size_mb=2.0)
    with pytest.raises(InputError, match="unknown key"):
        SearchSpace.from_yaml_section({"prunes": "0:1"})
    with pytest.raises(InputError, match="budget"):
        SearchSpace.from_yaml_section({"budgets": {"max_speed": 1}})


def test_int8_fallback_needs_a_budget_and_carries_it_into_the_trial_recipe():
    from edgesdk.recipe import Recipe
    from edgesdk.search.trial import trial_recipe

    with pytest.raises(InputError, match="the search has none"):
        SearchSpace.from_options(precisions="int8-fallback")
    space = SearchSpace.from_options(prune="0,0.5", precisions="int8,int8-fallback", max_accuracy_drop=1.0)
    plain, fallback, _, pruned = (trial_recipe(Recipe(), t, space) for t in space.trials())
    assert fallback.quantize.mode == "int8" and fallback.quantize.max_accuracy_drop == 1.0
    assert plain.quantize.mode == "int8" and plain.quantize.max_accuracy_drop is None
    # the pruned model keeps the budget a plain trial has (compress's default), not the quantization's
    assert pruned.quantize.max_accuracy_drop == 1.0 and pruned.prune.max_accuracy_drop == 2.0
    # the fallback re-quantizes ONNX and full-integer TFLite: its trial makes the files its backends run
    space = SearchSpace.from_options(precisions="int8,int8-fallback", backends="onnxruntime,litert", min_cosine=0.99)
    plain, fallback = (trial_recipe(Recipe(), t, space) for t in space.trials())
    assert plain.targets == fallback.targets == ("onnx", "tflite")
    assert fallback.benchmark.backends == ("onnxruntime", "litert") and fallback.quantize.min_cosine == 0.99
    space = SearchSpace.from_options(precisions="int8-fallback", backends="litert", min_cosine=0.99)
    assert trial_recipe(Recipe(), space.trials()[0], space).targets == ("tflite",)
    with pytest.raises(InputError, match="none of the backends runs it"):
        SearchSpace.from_options(precisions="int8-fallback", backends="tensorrt", min_cosine=0.99)


def test_budget_shortfalls_name_each_miss():
    b = Budgets(max_accuracy_drop=1.0, max_latency_ms=2.0, max_size_mb=1.0, max_rss_mb=None, min_cosine=0.99)
    c = {"accuracy_drop": 1.5, "p50": 1.0, "size_mb": 3.0, "cosine": 0.999}
    why = b.shortfalls(c, "p50")
    assert len(why) == 2 and "accuracy drop 1.50" in why[0] and "size 3.000 MB" in why[1]
    assert b.shortfalls({"accuracy_drop": 0.5, "p50": 1.0, "size_mb": 0.5, "cosine": 0.999}, "p50") == []
    assert "not measured" in b.shortfalls({"p50": 1.0, "size_mb": 0.5, "cosine": 0.999}, "p50")[0]
