"""Job workers: claim a job, run its engine on the study, encode results, fill the outbox.

Workers share nothing but the database and the data folder, so ``dicom-node worker`` on
several machines can share one PostgreSQL database and one data store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from ai_engines.findings import Findings
from ai_engines.models import ModelError, ModelIntegrityError, ModelNotFound
from ai_engines.registry import EngineNotInstalled, get_engine
from ai_engines.volume import SeriesVolume, StudyInput
from dicom_node import __version__
from dicom_node.background import RepeatingStep
from dicom_node.config import SENDER, NodeConfig
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.results.sr import build_measurement_report
from dicom_node.volumes import VolumeError, build_volume
from storage import outbox
from storage.database import Database
from storage.files import FileStore
from storage.jobs import ClaimedJob, JobQueue
from storage.studies import StoredSeries, study_calling_ae, study_series
from storage.tables import utcnow

log = logging.getLogger("dicom_node.worker")


class JobDeclined(Exception):
    """A job that cannot run on this input: terminal, with a stable code."""

    state = "declined"

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


class JobCannotRun(JobDeclined):
    """The node cannot run the job as configured (e.g. model missing or altered): terminal
    ``failed`` without retries, since retrying cannot help until an operator acts."""

    state = "failed"


@dataclass(frozen=True)
class JobOutcome:
    state: str  # succeeded | declined
    reason_code: str | None
    reason: str | None
    summary: dict


def device_observer_uid(uid_secret: bytes) -> str:
    """A stable Device Observer UID for this installation (same on every worker machine)."""
    digest = hmac.new(uid_secret, b"dicom-ai-node device observer", hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def result_destinations(config: NodeConfig, calling_ae: str, engine: str,
                        modalities: Collection[str]) -> list[str]:
    """Peer names that receive the results of ``engine`` on a study from ``calling_ae``.

    The destinations of the enabled routes that created the job (same engine, modality and
    required modalities present in the study); ``"sender"`` is the peer that sent the study
    (when ``results.return_to_sender``).  A sender that is not a configured peer gets nothing.
    """
    names: list[str] = []
    sender = config.peer_by_ae(calling_ae)
    for route in config.routes:
        if not (route.enabled and route.engine == engine and route.modality in modalities
                and set(route.requires) <= set(modalities)):
            continue
        for dest in route.destinations:
            if dest == SENDER:
                if not config.results.return_to_sender or sender is None:
                    continue
                dest = sender.name
            if dest not in names:
                names.append(dest)
    return names


class JobRunner:
    """Runs one claimed job from stored files to queued result objects."""

    def __init__(self, config: NodeConfig, db: Database, files: FileStore,
                 device_observer_uid: str):
        self.config = config
        self.db = db
        self.files = files
        self._engines: dict[str, object] = {}
        self._engines_lock = threading.Lock()
        self.options = ResultOptions(
            manufacturer=config.results.manufacturer,
            manufacturer_model_name="dicom-ai-node",
            software_version=__version__,
            device_serial_number=device_observer_uid[-16:],
            device_observer_uid=device_observer_uid,
            series_number_base=config.results.series_number_base,
            include_secondary_capture=config.results.secondary_capture,
            institution_label=config.results.institution_label,
        )

    def engine(self, name: str):  # noqa: ANN201
        with self._engines_lock:
            if name not in self._engines:
                settings = self.config.engines
                self._engines[name] = get_engine(name, model_dir=settings.model_dir,
                                                 device=settings.device,
                                                 threads=settings.cpu_threads or None)
            return self._engines[name]

    def preload(self) -> None:
        """Construct the engines of the enabled routes now (torch import, weights, checksum),
        so the first study after a start does not wait for them.  A missing or corrupt model
        is only logged here; its jobs get the coded reason when they run."""
        for name in sorted({r.engine for r in self.config.routes if r.enabled}):
            try:
                self.engine(name)
            except EngineNotInstalled:
                log.info("route engine %s is not installed; its jobs will be declined", name)
            except ModelError as exc:
                log.error("engine %s cannot load its model: %s", name, exc)

    def _load(self, stored: Sequence[StoredSeries], modalities: Sequence[str],
              ) -> tuple[list[SeriesVolume], dict[str, list[Dataset]]]:
        """Volumes of the series of the given modalities, and their datasets in volume order."""
        datasets_by_series: dict[str, list[Dataset]] = {}
        volumes = []
        for series in stored:
            if series.modality not in modalities:
                continue
            datasets = [dcmread(self.files.absolute(p)) for p in series.paths]
            try:
                volume = build_volume(datasets)
            except VolumeError as exc:
                raise JobDeclined(exc.code, exc.reason) from exc
            by_uid = {str(d.SOPInstanceUID): d for d in datasets}
            datasets_by_series[series.series_uid] = [
                by_uid[s.sop_instance_uid] for s in volume.slices]
            volumes.append(volume)
        return volumes, datasets_by_series

    def run(self, job: ClaimedJob) -> JobOutcome:
        timings: dict[str, float] = {}
        t_setup = time.perf_counter()
        try:
            engine = self.engine(job.engine)
        except EngineNotInstalled as exc:
            raise JobDeclined("ENGINE_NOT_INSTALLED",
                              f"no engine named {job.engine!r} is installed") from exc
        except ModelIntegrityError as exc:
            raise JobCannotRun("MODEL_INTEGRITY", str(exc)) from exc
        except ModelNotFound as exc:
            raise JobCannotRun("MODEL_NOT_FOUND", str(exc)) from exc
        except ModelError as exc:  # e.g. weights made for another pre-processing version
            raise JobCannotRun("MODEL_INVALID", str(exc)) from exc
        t0 = time.perf_counter()
        if t0 - t_setup > 0.05:
            timings["engine setup"] = t0 - t_setup  # first job of this worker: model loaded
        with self.db.session() as session:
            stored = study_series(session, job.study_id)
            calling_ae = study_calling_ae(session, job.study_id)
        volumes, datasets_by_series = self._load(stored, engine.acceptance.modalities)
        timings["load"] = time.perf_counter() - t0
        if not volumes:
            raise JobDeclined("NO_SUITABLE_SERIES",
                              f"the study holds no series that {job.engine} accepts")
        findings: Findings = engine.run(StudyInput(study_uid=job.study_uid,
                                                   series=tuple(volumes)))
        volumes.clear()  # the voxels are not needed for encoding; free them before it
        timings.update({f"engine.{k}": v for k, v in findings.timings_s.items()})
        t1 = time.perf_counter()
        source = datasets_by_series[findings.source_series_uid]
        objects = build_result_objects(findings, source, self.options)
        destinations = [p for p in (self.config.peer_by_name(n) for n in
                                    result_destinations(self.config, calling_ae, job.engine,
                                                        {x.modality for x in stored})) if p]
        plain_sr = None
        if any(p.sr_storage == "comprehensive" for p in destinations):
            # Older PACS without Comprehensive 3D SR get the same report as Comprehensive SR.
            segmentation = next((d for d in objects if d.Modality == "SEG"), None)
            plain_sr = build_measurement_report(
                findings, source, segmentation, replace(self.options, sr_storage="comprehensive"))
        timings["encode"] = time.perf_counter() - t1
        owed = []
        for ds in objects + ([plain_sr] if plain_sr is not None else []):
            relative = f"results/{job.id}/{ds.SOPInstanceUID}.dcm"
            buffer = BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            self.files.write(relative, buffer.getvalue())
            for peer in destinations:
                if peer.accepts and ds.Modality not in peer.accepts:
                    continue
                if ds.Modality == "SR" and (ds is plain_sr) != (peer.sr_storage ==
                                                                "comprehensive"):
                    continue
                owed.append(outbox.OwedObject(peer.name, str(ds.SOPClassUID),
                                              str(ds.SOPInstanceUID), str(ds.Modality), relative))
        with self.db.session() as session:
            outbox.add(session, job.id, owed, utcnow())
        summary = {
            "objects": [str(ds.Modality) for ds in objects],
            "deliveries": len(owed),
            "segments": [s.label for s in findings.segments],
            "measurements": {
                s.label: {m.name.meaning + (f" ({m.modifier.meaning})" if m.modifier else ""):
                          round(m.value, 2) for m in s.measurements}
                for s in findings.segments
            },
            "classifications": [
                {"finding": c.finding.meaning, "probability": round(c.probability, 3)}
                for c in findings.classifications],
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        if findings.decline is not None:
            return JobOutcome("declined", findings.decline.code, findings.decline.reason,
                              summary)
        return JobOutcome("succeeded", None, None, summary)


class Worker:
    """A loop that claims and runs jobs until stopped; several may run side by side."""

    def __init__(self, config: NodeConfig, db: Database, files: FileStore,
                 device_observer_uid: str, index: int = 0,
                 on_job_finished: Callable[[], None] | None = None):
        self.config = config
        self.on_job_finished = on_job_finished  # e.g. wake the sender: results may be owed
        self.queue = JobQueue(db)
        self.runner = JobRunner(config, db, files, device_observer_uid)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:6]}"
        self.loop = RepeatingStep(self.worker_id, self.run_one, config.jobs.poll_seconds, log)

    def run_one(self) -> bool:
        """Claim and run one job; False when none was due."""
        settings = self.config.jobs
        job = self.queue.claim(self.worker_id, settings.lease_seconds)
        if job is None:
            return False
        log.info("job %d (%s, study %s rev %d) attempt %d/%d started by %s", job.id,
                 job.engine, job.study_uid, job.revision, job.attempts, job.max_attempts,
                 self.worker_id)
        heartbeat = threading.Event()
        renew = threading.Thread(target=self._renew, args=(job.id, heartbeat), daemon=True)
        renew.start()
        try:
            outcome = self.runner.run(job)
            self.queue.finish(job.id, self.worker_id, outcome.state,
                              reason_code=outcome.reason_code, reason=outcome.reason,
                              summary=outcome.summary)
            log.info("job %d %s%s", job.id, outcome.state,
                     f" ({outcome.reason_code})" if outcome.reason_code else "")
        except JobDeclined as exc:
            self.queue.finish(job.id, self.worker_id, exc.state, reason_code=exc.code,
                              reason=exc.reason)
            log.warning("job %d %s: %s", job.id, exc.state, exc.code)
        except Exception as exc:
            state = self.queue.fail_attempt(
                job.id, self.worker_id, "ENGINE_ERROR", f"{type(exc).__name__}: {exc}"[:500],
                settings.backoff_seconds, settings.backoff_max_seconds)
            log.exception("job %d attempt failed; now %s", job.id, state)
        finally:
            heartbeat.set()
        if self.on_job_finished:
            self.on_job_finished()
        return True

    def _renew(self, job_id: int, done: threading.Event) -> None:
        lease = self.config.jobs.lease_seconds
        while not done.wait(lease / 3):
            self.queue.renew(job_id, self.worker_id, lease)

    def start(self) -> None:
        threading.Thread(target=self.runner.preload, name=f"{self.worker_id}-preload",
                         daemon=True).start()
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def join(self, timeout: float | None = None) -> None:
        self.loop.join(timeout)
