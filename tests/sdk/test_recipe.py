from __future__ import annotations

import pytest
import yaml

from edgesdk.errors import InputError
from edgesdk.recipe import Recipe, apply_options


def test_round_trip_and_overrides():
    r = apply_options(Recipe(), opset=17, batches=[1, 8], allow_mismatch=True)
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.export.opset == 17 and r.benchmark.batches == (1, 8) and r.parity.allow_mismatch
    assert r.stages == ["export_onnx"]


@pytest.mark.parametrize("data, needle", [
    ({"targets": ["coreml"]}, "unknown target"),
    ({"export": {"opset": 3}}, "opset"),
    ({"export": {"exporter": "magic"}}, "exporter"),
    ({"benchmark": {"batches": [0]}}, "batch"),
    ({"parity": {"atol": -1}}, "atol"),
    ({"nonsense": 1}, "nonsense"),
    ({"export": 5}, "mapping"),
])
def test_invalid_recipes(data, needle):
    with pytest.raises(InputError, match=needle):
        Recipe.from_dict(data)


def test_yaml_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Recipe.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("export: [unclosed\n")
    with pytest.raises(InputError, match="YAML"):
        Recipe.from_yaml(bad)


def _yaml(tmp_path, text: str) -> Recipe:
    f = tmp_path / "recipe.yaml"
    f.write_text(text)
    return Recipe.from_yaml(f)


def test_yaml_values_are_coerced_to_their_field_types(tmp_path):
    r = _yaml(tmp_path, "targets: onnx,tflite\n"
                        "export: {opset: 17.0}\n"
                        "parity: {atol: 1e-3, rtol: 0}\n"  # PyYAML reads 1e-3 (no dot) as a string
                        "benchmark: {batches: 8, backends: onnxruntime}\n"
                        "quantize: {mode: int8, exclude: /stem/Conv}\n"
                        "prune: {ratio: 0.3, protect: head}\n"
                        "tensorrt: {batch: '1:8:32'}\n")
    assert r.targets == ("onnx", "tflite")
    assert r.export.opset == 17 and type(r.export.opset) is int
    assert r.parity.atol == 0.001 and r.parity.rtol == 0.0 and type(r.parity.rtol) is float
    assert r.benchmark.batches == (8,) and r.benchmark.backends == ("onnxruntime",)
    assert r.quantize.exclude == ("/stem/Conv",) and r.prune.protect == ("head",)
    assert r.tensorrt.batch == (1, 8, 32)
    assert Recipe.from_dict(r.to_dict()) == r
    assert _yaml(tmp_path, yaml.safe_dump(r.to_dict())) == r
    assert _yaml(tmp_path, "parity:\n").parity.batches == 16  # an empty section keeps the defaults


@pytest.mark.parametrize("text, needles", [
    ("prune: {method: 2:4}", ["prune.method", 'quote it: "2:4"', "124"]),  # YAML 1.1 base-60: 2:4 -> 124
    ("tensorrt: {batch: 1:8:32}", ["tensorrt.batch", 'quote it: "1:8:32"']),
    ("parity: {batches: null}", ["parity.batches", "cannot be null"]),
    ("export: {opset: '17'}", ["export.opset", "integer", "without quotes"]),
    ("benchmark: {enabled: 'false'}", ["benchmark.enabled", "true or false"]),
    ("export: {simplify: 'no'}", ["export.simplify", "true or false"]),
    ("benchmark: {enabled: 1}", ["benchmark.enabled", "true or false"]),
    ("benchmark: {threads: true}", ["benchmark.threads", "integer"]),
    ("parity: {atol: .nan}", ["parity.atol", "finite"]),
    ("quantize: {min_cosine: .inf, mode: int8}", ["quantize.min_cosine", "finite"]),
    ("parity: {atol: tight}", ["parity.atol", "number"]),
    ("parity: {seed: 1.5}", ["parity.seed", "integer"]),
    ("benchmark: {batches: [1, two]}", ["benchmark.batches", "integer"]),
    ("quantize: {exclude: 5}", ["quantize.exclude", "list of strings"]),
    ("targets: [onnx, 3]", ["targets", "string"]),
    ("tensorrt: {shapes: [1, 2]}", ["tensorrt.shapes", "mapping"]),
    ("schema_version: 2", ["schema_version"]),
])
def test_badly_typed_yaml_values_name_the_field(tmp_path, text, needles):
    with pytest.raises(InputError) as e:
        _yaml(tmp_path, text + "\n")
    message = str(e.value)
    assert "recipe.yaml" in message
    for needle in needles:
        assert needle in message, message


def test_flat_options_are_coerced_like_recipe_fields():
    r = apply_options(Recipe(), targets="onnx", prune_protect="head", quant_exclude="/stem/Conv", backends="onnxruntime",
                      batches=4, atol="1e-3", trt_batch="1:8:32", quantize="int8")
    assert r.targets == ("onnx",) and r.prune.protect == ("head",) and r.quantize.exclude == ("/stem/Conv",)
    assert r.benchmark.backends == ("onnxruntime",) and r.benchmark.batches == (4,) and r.parity.atol == 0.001
    assert r.tensorrt.batch == (1, 8, 32)
    assert apply_options(Recipe(), targets="onnx, tflite").targets == ("onnx", "tflite")
    assert apply_options(Recipe(), targets=["tflite"]).targets == ("tflite",)
    assert apply_options(Recipe(), threads=None).benchmark.threads is None
    for options, needle in [({"opset": None}, "export.opset"), ({"benchmark": "no"}, "benchmark.enabled"),
                            ({"targets": ""}, "targets cannot be empty"), ({"targets": "onnx,coreml"}, "coreml"),
                            ({"recover": 0}, "prune.recover")]:
        with pytest.raises(InputError, match=needle):
            apply_options(Recipe(), **options)
    with pytest.raises(InputError, match="instance of ExportConfig"):
        Recipe(export={"opset": 17})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="opsett"):
        Recipe().replace(export={"opsett": 17})
    with pytest.raises(InputError, match="must be an edgesdk Recipe"):
        apply_options({"export": {}}, opset=17)  # type: ignore[arg-type]


@pytest.mark.parametrize("options, needle", [
    ({"threads": -1}, "benchmark.threads must be >= 1"),
    ({"threads": 0}, "benchmark.threads"),
    ({"batches": [1, -8]}, "benchmark.batches"),
    ({"batches": []}, "benchmark.batches cannot be empty"),
    ({"iterations": 0}, "benchmark.iterations"),
    ({"warmup": -1}, "benchmark.warmup"),
    ({"duration_s": 0}, "benchmark.duration_s"),
    ({"parity_batches": 0}, "parity.batches"),
    ({"parity_batch_size": 0}, "parity.batch_size"),
    ({"seed": -1}, "parity.seed"),
    ({"parity_min_cosine": 0}, r"parity.min_cosine must be in \(0, 1\]"),
    ({"parity_min_cosine": 1.5}, "parity.min_cosine"),
    ({"quantize": "int8", "calib_samples": 0}, "quantize.calib_samples"),
    ({"quantize": "int8", "min_cosine": 1.01}, "quantize.min_cosine"),
    ({"quantize": "int8", "max_accuracy_drop": -0.5}, "quantize.max_accuracy_drop"),
    ({"prune": 0.5, "prune_round_to": 0}, "prune.round_to"),
    ({"prune": 1.0}, "prune.ratio"),
    ({"opset": 24}, "export.opset"),
    ({"opset": 6}, "export.opset"),
    ({"trt_optimization_level": 6}, "tensorrt.optimization_level"),
    ({"trt_batch": [8, 1, 32]}, "MIN:OPT:MAX"),
    ({"trt_batch": 8}, "tensorrt.batch"),
    ({"quantize": "int4"}, "unknown quantize mode 'int4'"),
    ({"backends": "tvm"}, "unknown backend 'tvm'"),
])
def test_out_of_range_options(options, needle):
    with pytest.raises(InputError, match=needle):
        apply_options(Recipe(), **options).validate()


def test_valid_edges_are_accepted():
    r = apply_options(Recipe(), threads=1, warmup=0, iterations=1, parity_batches=1, parity_batch_size=1, seed=0,
                      parity_min_cosine=1, quantize="int8", calib_samples=1, min_cosine=1.0, max_accuracy_drop=0,
                      prune=0.5, prune_round_to=None, opset=7)
    assert r.benchmark.threads == 1 and r.prune.round_to is None and r.export.opset == 7
    assert apply_options(Recipe(), opset=23).export.opset == 23


def test_two_four_pruning():
    r = apply_options(Recipe(), prune_method="2:4")  # a fixed 50% pattern: no ratio needed
    assert r.stages == ["export_onnx", "prune", "export_onnx"]
    assert apply_options(Recipe(), prune_method="2:4", prune=0.5).stages == r.stages
    assert "prune" in apply_options(Recipe(), prune_method="2:4", targets="tflite").stages
    for options in ({"prune": 0.3}, {"prune": 0.5, "prune_max": 0.7, "max_accuracy_drop": 1}):
        with pytest.raises(InputError, match="fixed 50%"):
            apply_options(Recipe(), prune_method="2:4", **options).validate()


@pytest.mark.parametrize("options, needle", [
    ({"prune": 0.5, "prune_method": "unstructured", "prune_target_macs": 10**6}, "target_macs needs channel pruning"),
    ({"prune_method": "2:4", "prune_target_macs": 10**6}, "target_macs needs channel pruning"),
    ({"prune_method": "unstructured"}, "unstructured needs a sparsity ratio"),
    ({"prune": 0.3, "prune_max": 0.7, "prune_target_macs": 10**6, "max_accuracy_drop": 1}, "pruning range"),
    ({"prune": 0.7, "prune_max": 0.3, "max_accuracy_drop": 1}, "LOW <= HIGH"),
    ({"prune_max": 0.7, "max_accuracy_drop": 1}, "LOW <= HIGH"),
])
def test_pruning_combinations_that_would_be_ignored(options, needle):
    with pytest.raises(InputError, match=needle):
        apply_options(Recipe(), **options).validate()


def test_channel_pruning_by_macs_is_fine():
    r = apply_options(Recipe(), prune_target_macs=10**6)
    assert r.stages == ["export_onnx", "prune", "export_onnx"]


@pytest.mark.parametrize("options, needle", [
    ({"max_accuracy_drop": 1}, "quantization budget needs --quantize int8/fp16/int8-dynamic"),
    ({"min_cosine": 0.999}, "quantization budget needs --quantize"),
    ({"prune": 0.3, "prune_max": 0.7, "min_cosine": 0.999, "max_accuracy_drop": 1}, "quantize.min_cosine"),
    ({"prune": 0.3, "prune_max": 0.7}, "a pruning range needs an accuracy budget"),
    ({"prune": 0.3, "prune_max": 0.7, "quantize": "int8", "min_cosine": 0.999}, "needs an accuracy budget"),
    ({"prune_max_accuracy_drop": 1}, "prune.max_accuracy_drop is set but nothing is pruned"),
    ({"quantize": "int8", "prune_min_cosine": 0.9}, "prune.min_cosine is set but nothing is pruned"),
])
def test_budgets_that_would_be_ignored(options, needle):
    with pytest.raises(InputError, match=needle):
        apply_options(Recipe(), **options).validate()


@pytest.mark.parametrize("options", [
    {"quantize": "int8", "max_accuracy_drop": 1},
    {"quantize": "fp16", "min_cosine": 0.999},
    {"prune": 0.3, "prune_max": 0.7, "max_accuracy_drop": 1},  # the quantization flag doubles as the search budget
    {"prune": 0.5, "max_accuracy_drop": 1},  # ... and as the most a fixed-ratio pruned model may lose
    {"prune": 0.5, "prune_min_cosine": 0.9, "dynamic_dims": {"x": [2, 3]}, "metric": "cer"},
    {"prune": 0.3, "prune_max": 0.7, "prune_max_accuracy_drop": 1},
    {"prune": 0.5, "quantize": "int8", "max_accuracy_drop": 1},  # the budget applies to quantization
])
def test_budgets_that_apply(options):
    r = apply_options(Recipe(), **options)
    assert Recipe.from_dict(r.to_dict()) == r


def test_budget_errors_from_yaml(tmp_path):
    with pytest.raises(InputError, match="quantization budget needs"):
        _yaml(tmp_path, "quantize: {max_accuracy_drop: 1}\n").validate()
    with pytest.raises(InputError, match="fixed 50%"):
        _yaml(tmp_path, "prune: {method: '2:4', ratio: 0.3}\n").validate()
    # combinations are judged on the final recipe: a file may rely on the flags given with it
    r = apply_options(_yaml(tmp_path, "quantize: {max_accuracy_drop: 1}\n"), quantize="int8").validate()
    assert r.quantize.max_accuracy_drop == 1
    assert "prune" in _yaml(tmp_path, "prune: {method: '2:4'}\n").stages


def test_every_field_has_one_flat_option_and_each_name_means_one_field():
    from dataclasses import fields

    from edgesdk.recipe import FLAT_OPTIONS, _SECTIONS

    named = {v for v in FLAT_OPTIONS.values()}
    assert named == {(s, f.name) for s, cls in _SECTIONS.items() for f in fields(cls)}
    assert FLAT_OPTIONS["min_cosine"] == ("quantize", "min_cosine")  # the CLI's --min-cosine
    assert FLAT_OPTIONS["parity_min_cosine"] == ("parity", "min_cosine")


# CLI flag (with a value) -> the value given; flags and flat options of the same name must set the same field
_FLAG_VALUES = {"--opset": "17", "--atol": "0.01", "--rtol": "0.02", "--threads": "3", "--warmup": "4",
                "--iterations": "9", "--quantize": "int8", "--calib-method": "entropy", "--quant-target": "cpu",
                "--max-accuracy-drop": "1.5", "--max-metric-drop": "2.5", "--min-cosine": "0.97",
                "--prune-method": "unstructured", "--prune-target-macs": "1000", "--prune-importance": "l2",
                "--recover-steps": "7", "--recover-lr": "0.01", "--trt-dla-core": "1", "--metric": "top5",
                "--exporter": "legacy", "--recover-time": "90", "--train-device": "cpu", "--backends": "onnxruntime", "--targets": "onnx,tflite"}


def _typed(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@pytest.mark.parametrize("flag", sorted(_FLAG_VALUES))
def test_a_cli_flag_and_the_api_option_of_its_name_set_the_same_field(flag):
    import json

    from click.testing import CliRunner

    from edgesdk.cli import main
    from edgesdk.recipe import FLAT_OPTIONS

    extra = ["--prune", "0.5"] if flag.startswith("--prune-method") or flag in ("--recover-time", "--train-device") \
        else []
    extra += ["--quantize", "int8"] if flag in ("--max-accuracy-drop", "--max-metric-drop", "--min-cosine",
                                                  "--calib-method", "--quant-target") else []
    res = CliRunner().invoke(main, ["compress", "m.py:build", "--input", "x:1x4", "--dry-run", flag,
                                    _FLAG_VALUES[flag], *extra])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)["recipe"]
    name = flag[2:].replace("-", "_")
    # --recover-time 90 is recover_time=90 (seconds); "2m" is the CLI's spelling of the same
    assert name in FLAT_OPTIONS or name == "targets", f"{flag} has no API option of the same name"
    given = dict(zip(extra[::2], extra[1::2]))
    api = apply_options(Recipe(), **{k[2:].replace("-", "_"): v for k, v in given.items()},
                        **{name: _typed(_FLAG_VALUES[flag])}).to_dict()
    for key in ("parity", "quantize", "prune", "benchmark", "export", "eval", "tensorrt", "targets"):
        assert cli[key] == api[key], (flag, key)
