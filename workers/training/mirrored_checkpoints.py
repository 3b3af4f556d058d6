"""Checkpoints copied to the object store as they are written, so that an attempt on another host resumes.

The worker writes each checkpoint on its own disk as always (workers/training/resume.py), then uploads
its files with `state.json` last: as on disk, only a step whose state.json is there counts. Pruning
removes the same steps from the store, after the new one is up (a kill between the two leaves the
previous checkpoint in place). A resumed attempt first pulls the complete checkpoints it lacks.
"""
import logging
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

from app.storage.base import ObjectStore
from workers.training.resume import _TMP_PREFIX, STATE_FILE, CheckpointStore

log = logging.getLogger(__name__)
_STEP = re.compile(r"^(step-(\d+))/")


class MirroredCheckpointStore(CheckpointStore):
    def __init__(self, directory: Path, *, store: ObjectStore, prefix: str, **kwargs):
        super().__init__(directory, **kwargs)
        self.store, self.prefix = store, prefix.rstrip("/")
        self._uploaded = True  # the last checkpoint reached the store: older ones there may go

    def _remote(self) -> dict[str, list[str]]:
        """{step folder name: its keys} in the store."""
        steps: dict[str, list[str]] = defaultdict(list)
        for info in self.store.list(f"{self.prefix}/"):
            if match := _STEP.match(info.key[len(self.prefix) + 1:]):
                steps[match.group(1)].append(info.key)
        return steps

    def written(self, path: Path) -> None:
        files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: (p.name == STATE_FILE, p.name))
        try:
            for file in files:
                self.store.put_file(f"{self.prefix}/{path.name}/{file.relative_to(path).as_posix()}", file)
            self._uploaded = True
        except Exception:  # noqa: BLE001 — training goes on; the store keeps the previous checkpoint
            log.warning("could not copy the %s checkpoint to the object store", path.name, exc_info=True)
            self._uploaded = False

    def prune(self, keep: set[int | None]) -> None:
        super().prune(keep)
        if not self._uploaded:
            return
        for name in self._remote():
            if int(name.split("-")[1]) not in keep:
                self.store.delete_prefix(f"{self.prefix}/{name}/")

    def pull(self) -> None:
        for name, keys in self._remote().items():
            final = self.directory / name
            if (final / STATE_FILE).is_file() or f"{self.prefix}/{name}/{STATE_FILE}" not in keys:
                continue  # here already, or never completed (its writer died mid-upload)
            tmp = self.directory / f"{_TMP_PREFIX}{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            for key in sorted(keys, key=lambda k: k.endswith(f"/{STATE_FILE}")):
                self.store.get_file(key, tmp / key[len(f"{self.prefix}/{name}/"):])
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            log.info("checkpoint %s fetched from the object store", name)
