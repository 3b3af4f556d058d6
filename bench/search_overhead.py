"""What a search costs the server: importing Optuna, and one ask + report + tell on its RDB storage in a
peftlab SQLite database (migrated), as the search driver does per trial.

    .venv/bin/python bench/search_overhead.py [--trials 64]

Prints one JSON line: import seconds (fresh interpreters), and the median/max seconds of ask and of
report+should_prune+tell as the study grows to --trials trials (TPE, 2 parameters, median pruner).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_seconds(code: str) -> float:
    """Best of 3 fresh interpreters (the first may pay for a cold disk cache)."""
    best = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", f"import time; t = time.perf_counter()\n{code}\n"
                              "print(time.perf_counter() - t)"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        best.append(float(out.stdout.split()[-1]))
    return min(best)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=64)
    args = parser.parse_args()
    figures = {"optuna_import_s": import_seconds("import optuna"),
               "app_import_and_create_s": import_seconds("import app.main; app.main.create_app()")}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PEFTLAB_DATA_DIR"] = tmp
        sys.path.insert(0, str(ROOT))
        import optuna

        from app.config import get_settings
        from app.experiments import optuna_tables, search
        from app.experiments.search_schemas import SearchExperiment
        from app.migrate import upgrade

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        upgrade()
        storage = optuna_tables.storage(get_settings().resolved_database_url)
        body = SearchExperiment.model_validate({
            "kind": "search", "name": "bench", "base": {}, "trials": args.trials, "parallelism": 2,
            "space": {"training.learning_rate": {"type": "log_uniform", "low": 1e-5, "high": 1e-1},
                      "method.r": {"type": "integer", "low": 2, "high": 32}}})
        study = optuna.create_study(storage=storage, study_name="bench", direction="maximize",
                                    pruner=search._pruner(body))
        asks, tells = [], []
        for number in range(args.trials):
            t = time.perf_counter()
            study.sampler = search._sampler(body, number)
            trial = study.ask(search._distributions(body))
            asks.append(time.perf_counter() - t)
            lr = trial.params["training.learning_rate"]
            t = time.perf_counter()
            for step in range(10, 101, 10):  # ten eval points per trial
                storage.set_trial_intermediate_value(trial._trial_id, step, min(1.0, lr * 100) * step / 100)
            pruned = optuna.trial.Trial(study, trial._trial_id).should_prune()
            study.tell(trial, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(trial, min(1.0, lr * 100))
            tells.append(time.perf_counter() - t)
    figures.update(trials=args.trials, ask_median_s=statistics.median(asks), ask_max_s=max(asks),
                   report_prune_tell_median_s=statistics.median(tells), report_prune_tell_max_s=max(tells),
                   database="sqlite")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
