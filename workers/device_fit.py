"""Which queued runs this worker's device can hold: the predicate `take_next` applies when a worker
claims, with the rule the server applies at submit (app.runs.checks.device_fit), so a run is only
claimed by a worker whose device fits its memory estimate (and, for a quantised base, that can load
that kind: device.quantization).

A run whose config or model does not allow an estimate counts as fitting: the worker then finds
out by trying, as before there were estimates.
"""
import logging

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.models import service as models_service
from app.runs.checks import DeviceFit, MemoryQuery, device_fit, gib
from app.runs.models import Run
from app.runs.schemas import RunCreate

log = logging.getLogger(__name__)


class DeviceFilter:
    """fits(run) for `take_next`; remembers the runs it turned down (declined: id → why, in words)."""

    def __init__(self, session: Session, device: dict, memory_bytes: int | None):
        self.session, self.device, self.memory_bytes = session, device, memory_bytes
        self.declined: dict[int, str] = {}
        self._facts: dict[str, dict | None] = {}

    def facts(self, model_id: str) -> dict | None:
        if model_id not in self._facts:
            model = models_service.get(self.session, model_id=model_id)
            self._facts[model_id] = models_service.shape_facts(self.session, model) if model is not None else None
        return self._facts[model_id]

    def __call__(self, run: Run) -> bool:
        try:
            config = RunCreate.model_validate(run.config, strict=False)
        except ValidationError:
            return True  # the worker fails it with the reason
        # A run on more GPUs than this worker owns waits for one that owns enough.
        gpus, processes = getattr(config.training, "gpus", 1), self.device.get("processes")
        if gpus > 1 and isinstance(processes, int) and gpus > processes:
            self.declined[run.id] = f"run {run.id} asks for {gpus} GPUs, this worker has {processes}"
            return False
        # A worker that reports which quantisation kinds it can load leaves the others to workers that can.
        wanted, kinds = getattr(config.training, "quantization", None), self.device.get("quantization")
        if wanted and isinstance(kinds, list) and wanted not in kinds:
            self.declined[run.id] = f"run {run.id} asks for a {wanted} base, which this worker cannot load"
            return False
        fit: DeviceFit = device_fit(MemoryQuery.of(config), self.facts(run.base_model), self.device, self.memory_bytes)
        if not fit.fits:
            self.declined[run.id] = (f"run {run.id} needs about {gib(fit.needed_bytes)}, this {self.device.get('kind')} "
                                     f"worker has {gib(fit.usable_bytes)} usable")
        return fit.fits

    def describe(self) -> str:
        return "; ".join(self.declined.values())
