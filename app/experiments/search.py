"""The driver of "search" experiments: Optuna asks for trials, the trials run as ordinary queued runs, and
their eval points and results are told back to Optuna as they arrive.

Where the loop runs: every server replica calls `drive_all` every `search_interval_seconds` (app/main.py),
and once right after a search is created. A round over one search first takes its lease, one guarded
UPDATE of its search_studies row, so one replica at a time drives a search; every write that makes a trial
renews the lease in the same transaction, so a replica that stalled past its lease cannot add trials
behind another's back. Optuna's study lives in the same database (its RDB storage), and each round
rebuilds the sampler from the seed and the trial number, so a restarted or another replica carries on
exactly where the last left off.

Pruning: when Optuna says a trial should be pruned, its run is cancelled through the run state machine
(`request_cancel`; the worker stops at its next heartbeat). Once the run has ended `cancelled`, with the
pruner's reason as its error, Optuna is told PRUNED and the trial reads `pruned`. A run that reached its
last step before its worker saw the cancel trained to the end: its trial is complete, with its result.

Imports Optuna (not torch) lazily, so a server that never drives a search does not load it.
"""
import logging
import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import utcnow
from app.experiments import optuna_tables, search_space
from app.experiments.models import Experiment
from app.experiments.plans import PlanError
from app.experiments.search_models import SearchStudy, SearchTrial
from app.experiments.search_schemas import SearchExperiment
from app.metrics import notify
from app.metrics.models import MetricPoint
from app.runs import lifecycle
from app.runs import service as runs_service
from app.runs.models import ACTIVE, TERMINAL, Run
from app.runs.schemas import RunCreate

log = logging.getLogger("peftlab.search")
LEASE_SECONDS = 60  # a round takes well under a second; a replica that dies holding a lease frees it this late
REPLICA = f"{socket.gethostname()}:{os.getpid()}"


def study_name(experiment_id: int) -> str:
    return f"peftlab-experiment-{experiment_id}"


def start(session: Session, experiment: Experiment) -> None:
    """Register the search (not committed: the caller commits it with the experiment)."""
    session.add(SearchStudy(experiment_id=experiment.id, study_name=study_name(experiment.id)))


# ---- the loop -------------------------------------------------------------------------------------------

def drive_all(session: Session) -> None:
    """One round over every unfinished search (a search another replica drives now is skipped)."""
    ids = list(session.scalars(select(SearchStudy.experiment_id).where(SearchStudy.finished_at.is_(None))))
    session.commit()
    for experiment_id in ids:
        try:
            drive(session, experiment_id)
        except Exception:  # noqa: BLE001 — one broken search must not stop the others
            session.rollback()
            log.exception("search of experiment %s: round failed", experiment_id)


def drive(session: Session, experiment_id: int) -> bool:
    """Report, prune, conclude and ask for experiment_id's search, under its lease. False if another holds it."""
    holder = f"{REPLICA}:{uuid.uuid4().hex[:8]}"
    if not _renew(session, experiment_id, holder):
        session.commit()
        return False
    session.commit()
    try:
        _round(session, experiment_id, holder)
    finally:
        session.rollback()
        session.execute(update(SearchStudy).where(SearchStudy.experiment_id == experiment_id,
                                                  SearchStudy.lease_holder == holder)
                        .values(lease_holder=None, lease_expires_at=None))
        session.commit()
    return True


def _renew(session: Session, experiment_id: int, holder: str) -> bool:
    """Take or renew the lease (not committed: callers commit it with what it guards)."""
    now = utcnow()
    free_or_ours = (SearchStudy.lease_holder.is_(None) | (SearchStudy.lease_holder == holder)
                    | (SearchStudy.lease_expires_at < now))
    res = session.execute(update(SearchStudy)
                          .where(SearchStudy.experiment_id == experiment_id, SearchStudy.finished_at.is_(None),
                                 free_or_ours)
                          .values(lease_holder=holder, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS)))
    return res.rowcount == 1


def _study(experiment_id: int, direction: str, pruner):
    """The search's study, made on its first round (a search is committed before Optuna hears of it)."""
    import optuna

    # Optuna logs every trial it is told at INFO; the runs and the experiment page say all that already.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna_tables.storage(get_settings().resolved_database_url)
    try:
        return optuna.load_study(study_name=study_name(experiment_id), storage=storage, pruner=pruner)
    except KeyError:
        return optuna.create_study(storage=storage, study_name=study_name(experiment_id), direction=direction,
                                   pruner=pruner, load_if_exists=True)  # load_if_exists: another replica won the race


def _round(session: Session, experiment_id: int, holder: str) -> None:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return
    body = SearchExperiment.model_validate(experiment.spec)
    metric, direction = body.resolved_objective()
    trials = list(session.scalars(select(SearchTrial).where(SearchTrial.experiment_id == experiment_id)
                                  .order_by(SearchTrial.number)))
    run_ids = [t.run_id for t in trials if t.run_id is not None]
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))} if run_ids else {}
    study = _study(experiment_id, direction, _pruner(body))
    for trial in trials:
        run = runs.get(trial.run_id)
        if trial.state == "running":
            _report_and_prune(session, study, body, trial, run, metric)
            if trial.state == "running" and run is not None and run.status == "cancelled" \
                    and _prune_requested(trial):
                _pruned(session, study, trial, run)
            elif trial.state == "running" and (run is None or run.status in TERMINAL):
                if _prune_requested(trial):
                    trial.reason = None  # it trained to the end before the cancel reached its worker
                _conclude(study, trial, run, metric)
            session.commit()
        elif trial.state == "pruned" and run is not None and run.status == "cancelled" and not run.error:
            _note_pruned(session, run.id, trial.reason)
    active = sum(1 for t in trials if (t.state == "running" and t.run_id is not None)
                 or (runs.get(t.run_id) is not None and runs[t.run_id].status in ACTIVE))
    while len(trials) < body.trials and active < body.parallelism:
        trial = _ask(session, study, body, experiment, len(trials), holder)
        if trial is None:  # the lease is gone (another replica, or the search was stopped)
            return
        trials.append(trial)
        active += trial.run_id is not None
    if len(trials) >= body.trials and all(t.state != "running" for t in trials):
        session.execute(update(SearchStudy).where(SearchStudy.experiment_id == experiment_id)
                        .values(finished_at=utcnow()))
        session.commit()


def _pruner(body: SearchExperiment):
    from optuna.pruners import MedianPruner, NopPruner, SuccessiveHalvingPruner

    p = body.pruner
    if p.type == "median":
        return MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    if p.type == "successive_halving":
        return SuccessiveHalvingPruner(min_resource=p.min_resource or "auto", reduction_factor=p.reduction_factor)
    return NopPruner()


def _sampler(body: SearchExperiment, number: int):
    """Seeded by the search's seed and the trial number: the same history gives the same next trial,
    whichever replica asks and however often the server restarted."""
    from optuna.samplers import RandomSampler, TPESampler

    seed = (body.seed * 1_000_003 + number) % 2**32
    if body.sampler == "random":
        return RandomSampler(seed=seed)
    # constant_liar: trials still running count as bad guesses, so parallel trials spread out.
    return TPESampler(seed=seed, n_startup_trials=body.resolved_startup_trials(), constant_liar=body.parallelism > 1)


def _distributions(body: SearchExperiment) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, d in body.space.items():
        if d.type == "choice":
            out[key] = CategoricalDistribution(d.choices)
        elif d.type == "integer":
            out[key] = IntDistribution(d.low, d.high, step=d.step, log=d.log)
        else:
            out[key] = FloatDistribution(d.low, d.high, log=d.type == "log_uniform")
    return out


def _ask(session: Session, study, body: SearchExperiment, experiment: Experiment, number: int,
         holder: str) -> SearchTrial | None:
    """A new trial from Optuna, and its queued run; both or neither (Optuna is told FAIL when the run cannot be made)."""
    from optuna.trial import TrialState

    study.sampler = _sampler(body, number)
    asked = study.ask(_distributions(body))
    params = dict(asked.params)
    trial = SearchTrial(experiment_id=experiment.id, number=asked.number, optuna_trial_id=asked._trial_id,
                        params=params, state="running")
    run = None
    try:
        config = RunCreate.model_validate(search_space.trial_config(body, params, search_space.label(asked.number, params)))
        dataset, _ = runs_service.validate_references(session, config, None)
        run = runs_service.new_run(config, dataset, owner_id=experiment.owner_id, experiment_id=experiment.id)
    except (PlanError, ValueError, runs_service.FieldErrors) as e:  # pydantic's ValidationError is a ValueError
        trial.state, trial.reason = "failed", f"the trial's config was refused: {e}"[:2000]
        study.tell(asked, state=TrialState.FAIL)
    if not _renew(session, experiment.id, holder):
        session.rollback()
        study.tell(asked, state=TrialState.FAIL)
        return None
    if run is not None:
        session.add(run)
        session.flush()
        trial.run_id = run.id
    session.add(trial)
    session.commit()
    if run is not None:
        runs_service.enqueue(session, run.id)
    return trial


def _report_and_prune(session: Session, study, body: SearchExperiment, trial: SearchTrial, run: Run | None,
                      metric: str) -> None:
    """Tell Optuna the run's new eval points; prune the trial (and cancel its run) when Optuna says so."""
    import optuna

    if run is None or _prune_requested(trial):  # a stopping trial's later points would not count
        return
    points = session.execute(select(MetricPoint.step, MetricPoint.value)
                             .where(MetricPoint.run_id == run.id, MetricPoint.name == metric,
                                    MetricPoint.step > trial.reported_step)
                             .order_by(MetricPoint.step)).all()
    if not points:
        return
    for step, value in points:
        study._storage.set_trial_intermediate_value(trial.optuna_trial_id, step, value)
        trial.reported_step, trial.value = step, value
    session.commit()  # nothing of ours pending while Optuna's connection writes (SQLite has one writer)
    if run.status != "running" or body.pruner.type == "none" or (run.progress or 0) >= 1.0:
        return  # (stopping a run that has trained to the end would save nothing)
    if not optuna.trial.Trial(study, trial.optuna_trial_id).should_prune():
        return
    step, value = points[-1]
    why = ("below the median of earlier trials" if body.pruner.type == "median"
           else "not among the best at this successive-halving rung")
    # Decided, not done: Optuna hears PRUNED only once the run has stopped cancelled. A run that reaches
    # its last step before its worker sees the cancel has trained to the end, and counts as complete.
    trial.reason = f"{PRUNED_PREFIX} at step {step}: {metric} {value:.4g} is {why}"
    session.commit()
    if lifecycle.request_cancel(session, run.id) is None:
        log.info("trial %s of experiment %s: its run %s ended before the prune reached it",
                 trial.number, trial.experiment_id, run.id)


PRUNED_PREFIX = "pruned by the search"


def _prune_requested(trial: SearchTrial) -> bool:
    return trial.state == "running" and (trial.reason or "").startswith(PRUNED_PREFIX)


def _pruned(session: Session, study, trial: SearchTrial, run: Run) -> None:
    """The run of a trial the pruner stopped has ended cancelled: now the trial is pruned."""
    import optuna

    _tell(study, trial.number, optuna.trial.TrialState.PRUNED)
    trial.state = "pruned"
    _note_pruned(session, run.id, trial.reason)


def _conclude(study, trial: SearchTrial, run: Run | None, metric: str) -> None:
    """The run has ended: tell Optuna its result (the run's final eval metric) or that it failed."""
    from optuna.trial import TrialState

    if run is not None and run.status == "succeeded":
        value = ((run.summary or {}).get("eval") or {}).get(metric.removeprefix("eval/"))
        if value is None:
            value = trial.value  # the last eval point, when the summary has none
        if value is not None:
            _tell(study, trial.number, None, value)
            trial.state, trial.value = "complete", float(value)
            return
        trial.reason = f"the run reported no {metric}"
    elif run is None:
        trial.reason = "its run was deleted"
    elif run.status == "cancelled":
        trial.reason = "its run was cancelled"
    else:
        trial.reason = f"its run failed: {run.error or 'no reason given'}"[:2000]
    _tell(study, trial.number, TrialState.FAIL)
    trial.state = "failed"


def _tell(study, number: int, state, value: float | None = None) -> None:
    """study.tell, tolerating a trial already told (a replica that stalled past its lease told it)."""
    try:
        study.tell(number, value, state=state) if value is not None else study.tell(number, state=state)
    except (RuntimeError, ValueError) as e:
        log.warning("trial %s: %s", number, e)


def _note_pruned(session: Session, run_id: int, reason: str | None) -> None:
    """The cancelled run of a pruned trial says why (the worker's cancel leaves its error empty)."""
    session.execute(update(Run).where(Run.id == run_id, Run.status == "cancelled", Run.error.is_(None))
                    .values(error=reason or "pruned by the search", state_version=Run.state_version + 1))
    notify.changed(session, run_id)
    session.commit()


# ---- stopping and reading --------------------------------------------------------------------------------

def stop(session: Session, experiment_id: int) -> None:
    """No more trials (the experiment is being deleted)."""
    session.execute(update(SearchStudy).where(SearchStudy.experiment_id == experiment_id,
                                              SearchStudy.finished_at.is_(None)).values(finished_at=utcnow()))
    session.commit()


def forget(experiment_id: int) -> None:
    """Remove Optuna's study of a deleted search (our rows go with the experiment)."""
    import optuna

    try:
        optuna.delete_study(study_name=study_name(experiment_id),
                            storage=optuna_tables.storage(get_settings().resolved_database_url))
    except KeyError:  # never created: the search was deleted before its first round
        pass


def _state(trial: SearchTrial, run: Run | None) -> str:
    if trial.state == "running":
        return "queued" if run is not None and run.status == "queued" else "running"
    if trial.state == "complete":
        return "done"
    if trial.state == "failed" and run is not None and run.status == "cancelled":
        return "cancelled"
    return trial.state  # pruned, failed


def summary(session: Session, experiment: Experiment) -> dict:
    """The search as GET /api/experiments/{id} shows it (SearchOut): from our tables, without Optuna."""
    body = SearchExperiment.model_validate(experiment.spec)
    metric, direction = body.resolved_objective()
    rows = list(session.scalars(select(SearchTrial).where(SearchTrial.experiment_id == experiment.id)
                                .order_by(SearchTrial.number)))
    run_ids = [t.run_id for t in rows if t.run_id is not None]
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))} if run_ids else {}
    trials = [{"number": t.number, "run_id": t.run_id, "state": _state(t, runs.get(t.run_id)), "params": t.params,
               "value": t.value, "step": t.reported_step if t.reported_step >= 0 else None, "reason": t.reason}
              for t in rows]
    done = [t for t in trials if t["state"] == "done" and t["value"] is not None]
    pick = max if direction == "maximize" else min
    best = pick(done, key=lambda t: t["value"]) if done else None
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    finished = session.scalar(select(SearchStudy.finished_at).where(SearchStudy.experiment_id == experiment.id))
    return {"metric": metric, "direction": direction, "sampler": body.sampler, "pruner": body.pruner.type,
            "n_trials": body.trials, "parallelism": body.parallelism,
            "space": {k: d.model_dump() for k, d in body.space.items()}, "finished": finished is not None,
            "best": best, "trials": trials, "counts": counts}
