"""The search as an object: check the inputs here, run the trials on the engine (each a real compress
run, then a measurement), keep every event in ``search.json``, then judge the candidates, mark the
noise-aware front and its knee, and write ``best.yaml`` and the front's artifacts.

Example::

    result = Search(source, space, out_dir="search-out", calib="calib.npz", eval_data="eval.npz").run()
    result.knee["id"], [c["id"] for c in result.front]
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgesdk.errors import BudgetError, InputError
from edgesdk.intake import ModelSource

from .candidates import candidates_of, closest, judge, mark_front
from .engine import make_engine
from .sampler import KIND, Score, TrialSampler, optuna_installed
from .space import BACKEND_TARGETS, SearchSpace, Trial
from .store import SearchStore
from .trial import MeasureSpec, TrialJob, trial_id, trial_recipe

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What ``edgesdk.search`` returns: the directory, every candidate, the front and its knee."""

    out_dir: Path
    state: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def front(self) -> list[dict[str, Any]]:
        return [c for c in self.candidates if c["on_front"]]

    @property
    def knee(self) -> dict[str, Any] | None:
        return next((c for c in self.candidates if c["knee"]), None)


class Search:
    """One search; ``run()`` does it all. ``engine``: auto, ray or local (see edgesdk.search.engine)."""

    def __init__(self, source: ModelSource, space: SearchSpace, *, out_dir: str | Path, recipe: Any = None,
                 calib: str | None = None, eval_data: str | None = None, metric: str | None = None,
                 engine: str = "auto", ray_address: str | None = None, trial_cpus: float = 1,
                 trial_gpus: float = 0, measure_on: str | None = None, resume: bool = False,
                 cache_dir: str | Path | None = None, use_cache: bool = True, warmup: int = 10, iterations: int = 100,
                 seed: int = 0, progress: Callable[[str], None] | None = None) -> None:
        from edgesdk.recipe import Recipe

        self.source, self.space, self.out_dir = source, space, out_dir
        self.base = (recipe or Recipe()).validate()
        self.calib, self.eval_data, self.metric = calib, eval_data, metric
        self.engine_kind, self.ray_address, self.measure_on = engine, ray_address, measure_on
        self.trial_cpus, self.trial_gpus, self.resume = trial_cpus, trial_gpus, resume
        self.cache_dir, self.use_cache = cache_dir, use_cache
        self.seed = seed  # of the sampler, when --trials is smaller than the grid
        self.spec = MeasureSpec(space.backends, space.threads, space.batches, warmup, iterations)
        self.say = progress or (lambda msg: log.info(msg))

    # -- the steps -----------------------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        grid = self.plan()
        eval_n = self.check_inputs()
        store = SearchStore.open(self.out_dir, digest=self._digest(), resume=self.resume)
        engine = make_engine(self.engine_kind, address=self.ray_address, trial_cpus=self.trial_cpus,
                             trial_gpus=self.trial_gpus, measure_on=self.measure_on, say=self.say)
        cache = Path(self.cache_dir).absolute() if self.cache_dir else store.root / "cache"
        st = store.state
        sampled = self.space.max_trials is not None and self.space.max_trials < len(grid)
        by_id, by_trial = {entry[0]: entry for entry in grid}, {entry[1]: entry for entry in grid}
        # a sampled search runs what it asked before (a resume) and asks more; a grid runs all of it
        plan = [by_id[p["id"]] for p in st.get("plan") or [] if p["id"] in by_id] if sampled else grid
        st.update(space=self.space.to_dict(), base_recipe=self.base.to_dict(), engine=engine.describe(),
                  model={"ref": self.source.ref, "weights": self.source.weights, "inputs": list(self.source.inputs)},
                  data={"calib": self.calib, "eval_data": self.eval_data, "eval_samples": eval_n}, complete=False,
                  sampler={"kind": KIND, "seed": self.seed, "grid_trials": len(grid),
                           "trials": self.space.max_trials} if sampled else None)
        done_before = sum(1 for tid, _, _ in plan if store.finished(tid))
        self.say(f"search: {max(self.space.max_trials or 0, len(plan))} trials on "
                 f"{engine.describe()['engine']}" + (f", chosen from a grid of {len(grid)} by Optuna's "
                                                      f"multi-objective TPE sampler (seed {self.seed})"
                                                      if sampled else "")
                 + (f" ({done_before} finished before, kept)" if done_before else ""))
        t0 = time.perf_counter()
        self._run_trials(store, engine, plan, cache)
        if sampled:
            sampler = TrialSampler(self.space, seed=self.seed, budget=self.space.max_trials)
            for tid, t, _ in plan:
                sampler.tell(t, self._score(st, tid, t))
            width = max(1, int(engine.describe().get("parallel_trials") or 1))
            while len(plan) < self.space.max_trials:
                asked = sampler.ask(min(width, self.space.max_trials - len(plan)), taken={t for _, t, _ in plan})
                if not asked:
                    break
                new = [by_trial[t] for t in asked]
                plan += new
                self._run_trials(store, engine, new, cache)
                for tid, t, _ in new:
                    sampler.tell(t, self._score(st, tid, t))
        st["wall_time_s"] = round(st.get("wall_time_s", 0) + time.perf_counter() - t0, 3)
        return self.finish(store, plan, eval_n)

    def _run_trials(self, store: SearchStore, engine: Any, entries: list[tuple[str, Trial, Any]],
                    cache: Path) -> None:
        """Run the entries not finished before on the engine, recording every event in search.json."""
        st = store.state
        known = {p["id"] for p in st.get("plan") or []}
        st["plan"] = (st.get("plan") or []) + [{"id": tid, "label": t.label} for tid, t, _ in entries
                                               if tid not in known]
        store.save()
        jobs, measure_only = [], []
        for tid, t, recipe in entries:
            job = TrialJob(tid, t.label, self.source, recipe.to_dict(), str(store.trial_dir(tid)), self.calib,
                           self.eval_data, self.metric, str(cache) if self.use_cache else None,
                           str(store.root / "attempts"))
            if store.finished(tid):
                continue
            (measure_only if store.compressed(tid) else jobs).append(job)
        for kind, job, value in engine.run(jobs, self.spec, measure_only):
            if kind == "compressed":
                st["trials"][job.trial_id] = value
                self.say(f"trial {job.label}: {value['status']}" + (f" - {value['reason']}"
                                                                    if value.get("reason") else ""))
            else:
                st["measurements"][job.trial_id] = value
            store.save()

    def _score(self, st: dict[str, Any], tid: str, t: Trial) -> Score | None:
        """What the sampler learns from a finished trial: its best candidate's objectives (None: it failed)."""
        rec, meas = st["trials"].get(tid) or {}, st["measurements"].get(tid)
        if rec.get("status") != "done" or meas is None or "error" in meas:
            return None
        cands = candidates_of(rec, t, meas)
        if not cands:
            return None
        for c in cands:
            judge(c, self.space)
        lat = self.space.latency
        best = min(cands, key=lambda c: (0 if c["feasible"] else len(c["reasons"]), c[lat]))
        quality = best["accuracy"] if best["accuracy"] is not None else best["cosine"]
        return Score((float(best[lat]), float(quality or 0.0), float(best["size_mb"])),
                     violation=0 if best["feasible"] else len(best["reasons"]))

    def plan(self) -> list[tuple[str, Trial, Any]]:
        """(id, trial, recipe) of every trial of the grid; an empty space is an error, and so is a grid larger
        than --trials when Optuna (which samples such a grid) is not installed."""
        trials = self.space.trials()
        if self.space.max_trials is not None and len(trials) > self.space.max_trials and not optuna_installed():
            raise InputError(f"the grid has {len(trials)} trials, more than --trials {self.space.max_trials}, "
                             "and Optuna, which chooses a sample of them, is not installed",
                             expected=f"--trials >= {len(trials)}, a smaller space, or Optuna",
                             hint="pip install 'edgesdk[search]', or fewer prune steps (--prune-steps), "
                                  "precisions or prune methods")
        out = []
        for t in trials:
            recipe = trial_recipe(self.base, t, self.space)
            out.append((trial_id(recipe), t, recipe))
        return out

    def check_inputs(self) -> int | None:
        """Build the model and read the data here first: a bad flag fails now, not in every trial.
        Returns the number of labelled eval samples (None without)."""
        from edgesdk.intake import load_npz

        self.source.check()
        net = self.source.build()
        self.source.examples(net)
        if self.space.budgets.max_accuracy_drop is not None and not self.eval_data:
            raise InputError("--max-accuracy-drop needs labelled eval data",
                             expected="--eval-data FILE.npz with the inputs and a `labels` array",
                             hint="or use the label-free --min-cosine budget")
        if self.calib is None and any(t.precision == "int8" for t in self.space.trials()):
            raise InputError("static INT8 trials need calibration data", expected="--calib FILE.npz | DIR | random")
        if not self.eval_data:
            return None
        data = load_npz(self.eval_data, what="eval data")
        return len(data["labels"]) if "labels" in data else None

    def _digest(self) -> str:
        import hashlib
        import json

        key = {"space": self.space.digest(), "recipe": self.base.to_dict(), "model": [self.source.ref,
               self.source.weights, list(self.source.inputs)], "calib": self.calib, "eval": self.eval_data,
               "measure_on": self.measure_on}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # -- judging and writing -------------------------------------------------------------------------------------
    def finish(self, store: SearchStore, plan: list[tuple[str, Trial, Any]], eval_n: int | None) -> SearchResult:
        from .report import write_views

        st = store.state
        cands: list[dict[str, Any]] = []
        for tid, t, _ in plan:
            rec = st["trials"].get(tid) or {}
            meas = st["measurements"].get(tid)
            if rec.get("status") == "done" and meas is not None and "error" in meas:
                rec.update(status="failed", reason=f"measurement failed: {meas['error']}")
            cands += candidates_of(rec, t, meas) if rec.get("status") == "done" else []
        knee = mark_front(cands, self.space, eval_n=eval_n)
        by_id = {tid: r for tid, _, r in plan}
        shutil.rmtree(store.root / "front", ignore_errors=True)  # a resumed search may have another front
        for c in cands:
            if c["on_front"]:
                self._write_front_point(store, c, by_id[c["trial"]])
        st["candidates"] = [{k: v for k, v in c.items() if k != "_ci"} for c in cands]
        st["front"] = [c["id"] for c in cands if c["on_front"]]
        st["knee"] = knee["id"] if knee else None
        st["cache"] = _cache_savings(st["trials"].values())
        st["complete"] = True
        write_views(store.root, st)
        store.save()
        result = SearchResult(store.root, st, st["candidates"])
        if cands and knee is None:
            near = closest(st["candidates"])
            raise BudgetError("no candidate meets the budgets; the search directory has every trial",
                              found="; ".join(f"{c['id']} ({c['label']} on {c['backend']}): {', '.join(c['reasons'])}"
                                              for c in near),
                              hint=f"loosen a budget, or widen the space; see {store.root / 'search.html'}")
        if not cands:
            reasons = "; ".join(f"{r.get('label')}: {r.get('reason')}" for r in st["trials"].values()
                                if r.get("status") == "failed")
            raise BudgetError("no trial produced a measured candidate", found=reasons or "no trials ran",
                              hint=f"see {store.root / 'search.json'}")
        return result

    def _write_front_point(self, store: SearchStore, c: dict[str, Any], recipe: Any) -> None:
        """front/<id>/best.yaml (``edgesdk compress --recipe`` re-makes the artifact) and its artifacts."""
        import yaml

        from edgesdk.atomic import write_text
        from edgesdk.recipe import apply_options

        # only the target that makes this candidate's artifact: a trial may make several (onnx and tflite for
        # onnxruntime,litert), and the others could not be verified on this candidate's one backend
        best = apply_options(recipe, targets=(BACKEND_TARGETS[c["backend"]],), backends=(c["backend"],),
                             benchmark=True, batches=(c["batch"],), threads=c["threads"])
        d = store.root / "front" / c["id"]
        d.mkdir(parents=True, exist_ok=True)
        src = self.source
        flags = " ".join([src.ref, *(f"--input {i}" for i in src.inputs), *(f"--dim {x}" for x in src.dims)]
                         + ([f"--weights {src.weights}"] if src.weights else [])
                         + ([f"--example-inputs {src.example_inputs}"] if src.example_inputs else [])
                         + ([f"--calib {self.calib}"] if self.calib else [])
                         + ([f"--eval-data {self.eval_data}"] if self.eval_data else []))
        header = (f"# {c['label']} on {c['backend']} ({c['artifact']}, sha256 {c['sha256'][:16]}...)\n"
                  f"# re-make it: edgesdk compress {flags} --recipe best.yaml -o OUT\n")
        write_text(d / "best.yaml", header + yaml.safe_dump(best.to_dict(), sort_keys=False))
        c["best_yaml"] = str((d / "best.yaml").relative_to(store.root))
        art_dir = d / "artifacts"
        if not art_dir.exists():
            _link_tree(store.trial_dir(c["trial"]), art_dir)
        c["artifact_dir"] = str(art_dir.relative_to(store.root))


def _link_tree(src: Path, dest: Path) -> None:
    """A copy of a trial directory made of hard links where the filesystem allows (no second copy of weights)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=link)
    os.replace(tmp, dest)


def _cache_savings(records: Any) -> dict[str, Any]:
    """How many stage computations the stage cache saved across the trials, and the seconds they took."""
    hits = misses = 0
    saved = 0.0
    for rec in records:
        for entry in (rec.get("manifest") or {}).get("stage_cache") or []:
            if entry.get("hit"):
                hits += 1
                saved += entry.get("saved_s") or 0.0
            else:
                misses += 1
    return {"hits": hits, "computed": misses, "saved_s": round(saved, 3)}
