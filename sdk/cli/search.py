"""``edgesdk search``: the model and data flags of ``compress`` plus the space, the budgets and the engine."""
from __future__ import annotations

import json
from typing import Any

import click

from .common import _say


def _space(o: dict[str, Any]) -> Any:
    """The space from a recipe file's ``search:`` section (if any) with the flags over it."""
    from edgesdk.search.space import SearchSpace

    flags = dict(prune=o["prune"], prune_steps=o["prune_steps"], prune_methods=o["prune_method"],
                 importances=o["prune_importance"], precisions=o["quantize"], backends=o["backends"],
                 threads=o["threads"], batches=o["batch"], latency=o["latency"], trials=o["trials"],
                 max_accuracy_drop=o["max_accuracy_drop"], min_cosine=o["min_cosine"],
                 max_latency_ms=o["max_latency_ms"], max_size_mb=o["max_size_mb"], max_rss_mb=o["max_rss_mb"])
    section = _recipe_file(o["recipe_file"])[0] if o["recipe_file"] else None
    if section is not None:
        return SearchSpace.from_yaml_section(section, **{k: v for k, v in flags.items()
                                                         if v is not None and not (k == "prune_steps" and v == 4)})
    defaults = {"precisions": "fp32", "backends": "onnxruntime", "latency": "p50"}
    return SearchSpace.from_options(**{k: (defaults.get(k) if v is None else v) for k, v in flags.items()})


def _recipe_file(path: str) -> tuple[dict[str, Any] | None, Any]:
    """(the ``search:`` section, the base recipe) of a YAML file."""
    import yaml

    from edgesdk.errors import InputError
    from edgesdk.recipe import Recipe

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise InputError(f"recipe file not found: {path}", found=str(e), hint="check the --recipe path") from None
    except yaml.YAMLError as e:
        raise InputError(f"recipe file {path} is not valid YAML", found=str(e).splitlines()[0]) from None
    if not isinstance(data, dict):
        raise InputError(f"recipe file {path} must hold a mapping", found=type(data).__name__)
    section = data.pop("search", None)
    if section is not None and not isinstance(section, dict):
        raise InputError("the recipe's search section must be a mapping", found=type(section).__name__)
    return section, Recipe.from_dict(data)


@click.command("search")
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False), help=".safetensors or a .pt/.pth state dict.")
@click.option("--input", "input_specs", multiple=True, metavar="NAME:1x3x224x224[:float32]",
              help="An input, as for compress (repeatable).")
@click.option("--dim", "dim_sizes", multiple=True, metavar="SYM=SIZE", help="Tracing size of a symbol in --input.")
@click.option("--example-inputs", type=click.Path(dir_okay=False), help=".npz of example inputs (instead of --input).")
@click.option("--calib", help="Calibration data, as for compress (needed by int8 trials).")
@click.option("--eval-data", type=click.Path(dir_okay=False), help=".npz with the inputs plus `labels`: accuracy.")
@click.option("--metric", metavar="NAME|FILE.py:FN", help="Task metric on --eval-data (default top1).")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False),
              help="YAML recipe every trial starts from; its `search:` section gives the space (flags win).")
@click.option("--prune", metavar="LOW:HIGH|R1,R2,...", help="Prune ratios: a range in --prune-steps points, or a "
              "list (0 = not pruned). Default: not pruned.")
@click.option("--prune-steps", type=int, default=4, show_default=True, help="Points of a --prune range.")
@click.option("--prune-method", metavar="channel,unstructured,2:4", help="Pruning methods to try (default channel).")
@click.option("--prune-importance", metavar="l1,l2,bn,taylor", help="Importances to try (default l1).")
@click.option("--quantize", metavar="fp32,fp16,bf16,int8,int8-dynamic,int8-fallback",
              help="Precisions to try (default fp32). int8-fallback: static INT8 with the layers it hurts most kept "
                   "in float until --max-accuracy-drop / --min-cosine holds.")
@click.option("--backends", metavar="onnxruntime,openvino,litert",
              help="Backends every trial is measured on (default onnxruntime); litert adds the TFLite target.")
@click.option("--threads", metavar="1,2", help="Thread counts to measure (default: the backend's choice).")
@click.option("--batch", metavar="1,8", help="Batch sizes to measure (default 1).")
@click.option("--trials", type=int, help="The most trials to run; from a larger grid Optuna's multi-objective "
              "TPE sampler chooses them (seeded; --resume with a larger --trials asks more).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler (with --trials).")
@click.option("--latency", type=click.Choice(["p50", "p90"]), help="The latency objective (default p50).")
@click.option("--max-accuracy-drop", type=float, help="Budget: task-metric points below PyTorch (needs --eval-data).")
@click.option("--min-cosine", type=float, help="Budget: least cosine of the outputs vs PyTorch.")
@click.option("--max-latency-ms", type=float, help="Budget: the latency objective, in ms.")
@click.option("--max-size-mb", type=float, help="Budget: artifact size in MB.")
@click.option("--max-rss-mb", type=float, help="Budget: peak resident memory while timed, in MB.")
@click.option("--engine", type=click.Choice(["auto", "ray", "local"]), default="auto", show_default=True,
              help="auto: Ray when installed (a local instance, or --ray-address), else in this process.")
@click.option("--ray-address", metavar="HOST:PORT", help="Join this Ray cluster (default: RAY_ADDRESS, or local).")
@click.option("--trial-cpus", type=float, default=1, show_default=True, help="CPUs each trial's compress holds.")
@click.option("--trial-gpus", type=float, default=0, show_default=True, help="GPUs each trial's compress holds.")
@click.option("--measure-on", metavar="device:NAME", help="Take latency on the node with this Ray resource.")
@click.option("--iterations", type=int, default=100, show_default=True, help="Timed runs per measurement.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Warm-up runs per measurement.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Stage cache (default OUT/cache).")
@click.option("--no-cache", is_flag=True, help="Compute every stage of every trial.")
@click.option("--resume", is_flag=True, help="Continue the search in OUT; finished trials are not run again.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="edgesdk-search", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the candidates of the front as JSON.")
@click.pass_context
def search(ctx: click.Context, model: str, **o: Any) -> None:
    """Find the best way to ship MODEL: every trial is a real compress run (the space's prune settings x
    precisions), timed on every backend, thread count and batch of the space; the candidates that meet the
    budgets are ranked on a noise-aware Pareto front (latency, accuracy, size). Writes OUT/search.json,
    search.html, and front/<candidate>/best.yaml with its artifacts. Exit 4 when no candidate meets the
    budgets (the closest are listed)."""
    from edgesdk.intake import ModelSource
    from edgesdk.search import search as run_search

    space = _space(o)
    recipe = _recipe_file(o["recipe_file"])[1] if o["recipe_file"] else None
    source = ModelSource(model, weights=o["weights"], inputs=tuple(o["input_specs"]), dims=tuple(o["dim_sizes"]),
                         example_inputs=o["example_inputs"])
    result = run_search(source, space, out_dir=o["out_dir"], recipe=recipe, calib=o["calib"],
                        eval_data=o["eval_data"], metric=o["metric"], engine=o["engine"],
                        ray_address=o["ray_address"], trial_cpus=o["trial_cpus"], trial_gpus=o["trial_gpus"],
                        measure_on=o["measure_on"], resume=o["resume"], cache_dir=o["cache_dir"],
                        use_cache=not o["no_cache"], warmup=o["warmup"], iterations=o["iterations"],
                        seed=o["seed"], progress=_say(ctx))
    if o["as_json"]:
        click.echo(json.dumps({"out_dir": str(result.out_dir), "knee": result.state["knee"],
                               "front": [{k: v for k, v in c.items() if k != "samples_ms"} for c in result.front]},
                              indent=2))
        return
    from edgesdk.search.report import to_markdown

    click.echo(to_markdown(result.state))
    click.echo(f"wrote {result.out_dir} (search.json, search.html, front/)")
