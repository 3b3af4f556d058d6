"""The server drives searches with Optuna: neither the app nor a whole ask/report/prune/tell cycle of the
samplers and pruners it uses may pull in torch, transformers or peft."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CYCLE = """
import sys
import app.main
app.main.create_app()
import optuna
from app.experiments import search
from app.experiments.search_schemas import SearchExperiment
body = SearchExperiment.model_validate({"kind": "search", "name": "x", "base": {}, "trials": 4, "parallelism": 2,
    "space": {"training.learning_rate": {"type": "log_uniform", "low": 1e-5, "high": 1e-2},
              "method.r": {"type": "integer", "low": 2, "high": 16}, "method.type": {"type": "choice", "choices": ["lora", "full"]}},
    "pruner": {"type": "median", "startup_trials": 1}})
study = optuna.create_study(direction="maximize", pruner=search._pruner(body))
for number in range(6):
    study.sampler = search._sampler(body, number)
    trial = study.ask(search._distributions(body))
    trial.report(0.5 + number / 100, 10)
    if trial.should_prune():
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, 0.5 + number / 100)
body = body.model_copy(update={"pruner": body.pruner.model_copy(update={"type": "successive_halving"})})
search._pruner(body)
print(" ".join(sorted(sys.modules)))
"""


def test_a_search_cycle_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", CYCLE], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert "optuna" in loaded
    assert not {"torch", "transformers", "peft", "workers"} & loaded


def test_the_server_starts_without_optuna():
    """Optuna (about 0.4 s to import) loads only when a search is driven, not when the app is built."""
    code = "import sys, app.main\napp.main.create_app()\nprint('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
