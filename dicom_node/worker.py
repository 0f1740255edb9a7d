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
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from ai_engines.engine import Engine
from ai_engines.findings import Findings
from ai_engines.models import ModelError, ModelIntegrityError, ModelNotFound
from ai_engines.quality import check_series
from ai_engines.registry import EngineNotInstalled, EngineSpecError, get_engine, get_spec
from ai_engines.selection import SeriesHeader, rank_candidates
from ai_engines.spec import EngineSpec
from ai_engines.volume import RoiContours, SeriesVolume, StudyInput
from dicom_node import __version__
from dicom_node.background import RepeatingStep
from dicom_node.config import SENDER, NodeConfig
from dicom_node.regions import (
    RTSTRUCT_STORAGE,
    SEG_STORAGE,
    lesion_numbers,
    read_regions,
    referenced_series,
)
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.results.sr import build_measurement_report
from dicom_node.volumes import VolumeError, build_volume, series_header
from storage import outbox
from storage.clock import utcnow
from storage.database import Database
from storage.exports import export_name, write_export
from storage.files import FileStore
from storage.jobs import (
    TERMINAL,
    ClaimedJob,
    JobQueue,
    RevisionJob,
    defer,
    record_identity_revision,
    revision_jobs,
)
from storage.studies import StoredSeries, study_calling_ae, study_identity_revision, study_series

log = logging.getLogger("dicom_node.worker")


class JobDeclined(Exception):
    """A job that cannot run on this input: terminal, with a stable code."""

    state = "declined"

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


class JobDeferred(Exception):
    """A job that must wait for other jobs of its study (an engine that measures their
    regions): back to the queue without spending an attempt."""

    def __init__(self, waiting_for: Sequence[str]):
        super().__init__(f"waiting for {', '.join(waiting_for)}")
        self.waiting_for = tuple(waiting_for)


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


def lower_thread_priority(nice: int) -> int | None:
    """Make the calling thread ``nice`` steps nicer; returns its niceness then (None: not
    supported here).

    On Linux niceness belongs to each thread (``PRIO_PROCESS`` with a thread id), and a thread
    starts with its creator's, so the inference threads torch's OpenMP starts from a job
    thread run at the job's priority while the receiver's threads keep theirs.  Niceness only
    goes up without privileges, so this is done once, in threads that only run jobs.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return None
    tid = threading.get_native_id()
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice)
        os.setpriority(os.PRIO_PROCESS, tid, target)
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError as exc:  # e.g. a sandbox that forbids it: jobs still run, at full priority
        log.warning("could not lower the job thread's CPU priority: %s", exc)
        return None


def device_observer_uid(uid_secret: bytes) -> str:
    """A stable Device Observer UID for this installation (same on every worker machine)."""
    digest = hmac.new(uid_secret, b"dicom-ai-node device observer", hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def result_destinations(config: NodeConfig, calling_ae: str, engine: str,
                        modalities: Collection[str]) -> list[str]:
    """Peer names that receive the results of ``engine`` on a study from ``calling_ae``.

    The destinations of the enabled routes of that engine (a route that names a modality or
    required modalities only when the study holds them); ``"sender"`` is the peer that sent the
    study (when ``results.return_to_sender``).  A sender that is not a configured peer gets
    nothing.
    """
    names: list[str] = []
    sender = config.peer_by_ae(calling_ae)
    for route in config.routes:
        if not (route.enabled and route.engine == engine
                and (route.modality is None or route.modality in modalities)
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
        self._engines: dict[str, Engine] = {}
        self._specs: dict[str, EngineSpec] = {}
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

    def spec(self, name: str) -> EngineSpec:
        """The installed engine's spec (cached: entry points do not change while running)."""
        with self._engines_lock:
            if name not in self._specs:
                self._specs[name] = get_spec(name)
            return self._specs[name]

    def engine(self, name: str) -> Engine:
        spec = self.spec(name)
        with self._engines_lock:
            if name not in self._engines:
                settings = self.config.engines
                self._engines[name] = get_engine(spec.name, model_dir=settings.model_dir,
                                                 device=settings.device,
                                                 threads=settings.cpu_threads or None,
                                                 options=self.engine_options(name))
            return self._engines[name]

    def engine_options(self, name: str) -> dict[str, object]:
        """Constructor arguments an engine takes from the node configuration."""
        if name == "radiomics":
            return {"settings_by_modality": self.config.radiomics.settings_by_modality()}
        return {}

    def producer_jobs(self, job: ClaimedJob) -> list[RevisionJob]:
        """The other engines' jobs of ``job``'s study revision, whose results it measures.

        Raises
        ------
        JobDeferred
            One of them has not finished yet (the order is fixed: results first).
        """
        with self.db.session() as session:
            siblings = revision_jobs(session, job.study_id, job.revision)
        producers = []
        for other in siblings:
            if other.id == job.id:
                continue
            if other.engine in self.config.result_consumers():
                continue  # two consumers never wait for each other
            producers.append(other)
        waiting = [f"{p.engine} (job {p.id})" for p in producers if p.state not in TERMINAL]
        if waiting:
            raise JobDeferred(waiting)
        return sorted(producers, key=lambda p: (p.engine, p.id))

    def _result_region_paths(self, producers: Sequence[RevisionJob],
                             ) -> list[tuple[RevisionJob, list[str]]]:
        """Each producer job's stored SEGs (else its RTSTRUCTs): the SEG holds the engine's
        voxels exactly, its RTSTRUCT is a contour copy."""
        found = []
        for producer in producers:
            by_class: dict[str, list[str]] = {SEG_STORAGE: [], RTSTRUCT_STORAGE: []}
            for path in self.files.results_of(producer.id):
                header = dcmread(self.files.absolute(path), stop_before_pixels=True)
                if str(header.SOPClassUID) in by_class:
                    by_class[str(header.SOPClassUID)].append(path)
            found.append((producer, by_class[SEG_STORAGE] or by_class[RTSTRUCT_STORAGE]))
        return found

    def _result_regions(self, region_paths: Sequence[tuple[RevisionJob, list[str]]],
                        volumes: Sequence[SeriesVolume], notes: list[str],
                        ) -> tuple[RoiContours, ...]:
        """The lesions other engines found, read back from their stored SEG (else RTSTRUCT)
        exactly as a received one is read.  Organs they segment (the CT lung engine's lungs)
        are left out."""
        regions: list[RoiContours] = []
        for producer, paths in region_paths:
            found: list[RoiContours] = []
            for path in paths:
                try:
                    stored = dcmread(self.files.absolute(path))
                    lesions = lesion_numbers(stored)
                    found.extend(r for r in read_regions(stored, volumes)
                                 if r.source_number in lesions)
                except Exception as exc:  # one unreadable result is a note, not a failure
                    notes.append(f"regions of {producer.engine} (job {producer.id}) not read "
                                 f"({type(exc).__name__})")
            if found:
                notes.append(f"{len(found)} region(s) found by {producer.engine} (job "
                             f"{producer.id}) measured")
            elif paths:
                notes.append(f"the regions of {producer.engine} (job {producer.id}) lie on "
                             "no chosen series")
            regions.extend(found)
        return tuple(regions)

    def preload(self) -> None:
        """Construct the engines of the enabled routes now (torch import, weights, checksum),
        so the first study after a start does not wait for them.  A missing or corrupt model
        is only logged here; its jobs get the coded reason when they run."""
        for name in sorted({r.engine for r in self.config.routes if r.enabled}):
            try:
                self.engine(name)
            except EngineNotInstalled:
                log.info("route engine %s is not installed; its jobs will be declined", name)
            except (ModelError, EngineSpecError) as exc:
                log.error("engine %s cannot load: %s", name, exc)

    def _headers(self, stored: Sequence[StoredSeries], notes: list[str],
                 ) -> dict[str, tuple[StoredSeries, SeriesHeader]]:
        """Each series' header (first instance, no pixel data) and its stored paths."""
        out: dict[str, tuple[StoredSeries, SeriesHeader]] = {}
        for series in stored:
            if not series.paths:
                continue
            try:
                first = dcmread(self.files.absolute(series.paths[0]), stop_before_pixels=True)
                header = series_header([first])
            except Exception as exc:  # an unreadable header: that series only is left out
                notes.append(f"a {series.modality} series ignored: header unreadable "
                             f"({type(exc).__name__})")
                continue
            frames = int(first.get("NumberOfFrames", 1) or 1)
            header = replace(header, instances=len(series.paths),
                             frames=len(series.paths) * frames)
            out[series.series_uid] = (series, header)
        return out

    def _read(self, series: StoredSeries) -> list[Dataset]:
        return [dcmread(self.files.absolute(p)) for p in series.paths]

    def _select(self, spec: EngineSpec, stored: Sequence[StoredSeries],
                region_paths: Sequence[str] = (),
                ) -> tuple[list[SeriesVolume], dict[str, list[Dataset]], tuple, list[str]]:
        """Header-first selection: decode only the candidates each role needs.

        Candidates of a role are decoded best first; the first that passes the role's quality
        checks is taken (the best one that decodes is kept when none passes, so the engine
        declines with the real reason).  A series that cannot be decoded fails only as a
        candidate; its reason goes into the notes.  An engine that measures regions tries the
        series its regions lie on first (those the received RTSTRUCT/SEG and the other
        engines' results in ``region_paths`` reference), so a planned GTV on the second CT of
        a study is measured on that CT.

        Returns
        -------
        volumes, datasets by series (one per instance, in volume order), regions, notes
        """
        notes: list[str] = []
        headers = self._headers(stored, notes)
        plan = rank_candidates(spec.acceptance, [h for _, h in headers.values()])
        notes.extend(plan.notes)
        if spec.acceptance.regions is not None:
            region_files = [self.files.absolute(p) for h in plan.region_series
                            for p in headers[h.series_uid][0].paths]
            region_files += [self.files.absolute(p) for p in region_paths]
            preferred: set[str] = set()
            for path in region_files:
                try:
                    preferred |= referenced_series(dcmread(path, stop_before_pixels=True))
                except Exception:  # noqa: S112 - unreadable: read (and noted) with the regions
                    continue
            for role in plan.by_role.values():
                role.sort(key=lambda h: h.series_uid not in preferred)  # stable: rank kept
        decoded: dict[str, tuple[SeriesVolume, list[Dataset]] | VolumeError] = {}
        chosen: dict[str, tuple[SeriesVolume, list[Dataset]]] = {}
        first_failure: VolumeError | None = None
        for req in spec.acceptance.series:
            kept: tuple[SeriesVolume, list[Dataset]] | None = None
            for header in plan.by_role[req.role]:
                uid = header.series_uid
                if uid not in decoded:
                    try:
                        datasets = self._read(headers[uid][0])
                        decoded[uid] = (build_volume(datasets), datasets)
                    except VolumeError as exc:
                        decoded[uid] = exc
                        notes.append(f"{header.label()} not used for {req.role}: {exc.code}")
                outcome = decoded[uid]
                if isinstance(outcome, VolumeError):
                    first_failure = first_failure or outcome
                    continue
                kept = kept or outcome
                failures = check_series(outcome[0], req.geometry)
                if not failures:
                    kept = outcome
                    break
                notes.append(f"{header.label()} not used for {req.role}: {failures[0].code}")
            if kept is not None:
                chosen[req.role] = kept
            # Free the voxels of decoded series no role kept (decoded again if a later role
            # asks for them); decode failures stay, so they are not tried twice.
            for uid, outcome in list(decoded.items()):
                if not isinstance(outcome, VolumeError) and all(
                        outcome[0] is not c[0] for c in chosen.values()):
                    del decoded[uid]
        if not chosen:
            if first_failure is not None:
                raise JobDeclined(first_failure.code, first_failure.reason)
            raise JobDeclined("NO_SUITABLE_SERIES",
                              f"the study holds no series that {spec.name} accepts"
                              + (f" ({'; '.join(notes)})" if notes else ""))
        volumes = list({id(v): v for v, _ in chosen.values()}.values())
        datasets_by_series: dict[str, list[Dataset]] = {}
        for volume, datasets in chosen.values():
            by_uid = {str(d.SOPInstanceUID): d for d in datasets}
            # One dataset per instance: a multi-frame instance holds many slices of the volume.
            order = dict.fromkeys(s.sop_instance_uid for s in volume.slices)
            datasets_by_series[volume.series_uid] = [by_uid[u] for u in order]
        regions = self._regions(plan.region_series, headers, volumes, notes)
        return volumes, datasets_by_series, regions, notes

    def _regions(self, region_series: Sequence[SeriesHeader],
                 headers: dict[str, tuple[StoredSeries, SeriesHeader]],
                 volumes: Sequence[SeriesVolume], notes: list[str]) -> tuple[RoiContours, ...]:
        """RTSTRUCT and SEG series of the study as regions on the chosen volumes."""
        regions: list[RoiContours] = []
        for header in region_series:
            for ds in self._read(headers[header.series_uid][0]):
                try:
                    found = read_regions(ds, volumes)
                except Exception as exc:  # one unreadable structure set is a note, not a failure
                    notes.append(f"{header.label()} regions not read ({type(exc).__name__})")
                    continue
                if not found:
                    notes.append(f"{header.label()} lies on no chosen series")
                regions.extend(found)
        return tuple(regions)

    def run(self, job: ClaimedJob) -> JobOutcome:
        timings: dict[str, float] = {}
        t_setup = time.perf_counter()
        try:
            spec = self.spec(job.engine)
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
        except EngineSpecError as exc:
            raise JobCannotRun("ENGINE_INVALID", str(exc)) from exc
        producers = (self.producer_jobs(job) if spec.consumes_results
                     and spec.name in self.config.result_consumers() else [])
        t0 = time.perf_counter()
        if t0 - t_setup > 0.05:
            timings["engine setup"] = t0 - t_setup  # first job of this worker: model loaded
        with self.db.session() as session:
            stored = study_series(session, job.study_id)
            calling_ae = study_calling_ae(session, job.study_id)
            # Read in the same transaction as the instance list: the results go back with
            # the identity of the newest instance read, not of one that arrives later.
            record_identity_revision(session, job.id,
                                     study_identity_revision(session, job.study_id))
        region_paths = self._result_region_paths(producers)
        volumes, datasets_by_series, regions, notes = self._select(
            spec, stored, [p for _, paths in region_paths for p in paths])
        if region_paths:  # received regions first, then each engine's, by engine name
            regions += self._result_regions(region_paths, volumes, notes)
        timings["load"] = time.perf_counter() - t0
        findings: Findings = engine.run(StudyInput(study_uid=job.study_uid,
                                                   series=tuple(volumes), regions=regions))
        slices = {v.series_uid: v.slices for v in volumes}  # frames of each series, in order
        volumes.clear()  # the voxels are not needed for encoding; free them before it
        # One name per engine: the spec's, whatever title the engine gives itself.
        if findings.engine.name != spec.name:
            findings = replace(findings, engine=replace(findings.engine, name=spec.name))
        if notes:
            findings = replace(findings, notes=findings.notes + tuple(notes))
        timings.update({f"engine.{k}": v for k, v in findings.timings_s.items()})
        summary: dict[str, Any] = {
            "segments": [s.label for s in findings.segments],
            "measurements": {
                s.label: {m.name.meaning + (f" ({m.modifier.meaning})" if m.modifier else ""):
                          round(m.value, 2) for m in s.measurements}
                for s in findings.segments
            },
            "classifications": [
                {"finding": c.finding.meaning, "probability": round(c.probability, 3)}
                for c in findings.classifications],
            "maps": [m.label for m in findings.maps],
            "region_measurements": [r.region.name for r in findings.region_measurements],
            "notes": list(findings.notes),
        }
        source = datasets_by_series.get(findings.source_series_uid)
        if source is None:
            if findings.decline is None:
                raise ValueError(f"{spec.name} returned findings on a series it was not given")
            # A decline about no particular series: recorded, nothing to write on an image.
            summary.update(objects=[], deliveries=0,
                           timings_s={k: round(v, 3) for k, v in timings.items()})
            return JobOutcome("declined", findings.decline.code, findings.decline.reason,
                              summary)
        if findings.region_measurements and spec.name == "radiomics":
            self._export_features(job, findings, summary)
        t1 = time.perf_counter()
        missing = _other_series(findings) - set(datasets_by_series)
        if missing:
            raise ValueError(f"{spec.name} returned findings on {len(missing)} series it was "
                             "not given")
        # Every chosen series goes along: the writers use those the findings lie on (and the
        # SR takes only the series a group references as evidence).
        others = {uid: d for uid, d in datasets_by_series.items()
                  if uid != findings.source_series_uid}
        objects = build_result_objects(findings, source, self.options, sources=others,
                                       slices=slices)
        destinations = [p for p in (self.config.peer_by_name(n) for n in
                                    result_destinations(self.config, calling_ae, job.engine,
                                                        {x.modality for x in stored})) if p]
        plain_sr = None
        if any(p.sr_storage == "comprehensive" for p in destinations):
            # Older PACS without Comprehensive 3D SR get the same report as Comprehensive SR;
            # every SEG goes along (a planar NM study has one per view).
            segmentations = [d for d in objects if d.Modality == "SEG"]
            plain_sr = build_measurement_report(
                findings, source, segmentations or None,
                replace(self.options, sr_storage="comprehensive"), sources=others)
        timings["encode"] = time.perf_counter() - t1
        owed = []
        for ds in objects + ([plain_sr] if plain_sr is not None else []):
            relative = self.files.result_path(job.id, str(ds.SOPInstanceUID))
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
        summary.update(objects=[str(ds.Modality) for ds in objects], deliveries=len(owed),
                       timings_s={k: round(v, 3) for k, v in timings.items()})
        if findings.decline is not None:
            return JobOutcome("declined", findings.decline.code, findings.decline.reason,
                              summary)
        return JobOutcome("succeeded", None, None, summary)


    def _export_features(self, job: ClaimedJob, findings: Findings, summary: dict) -> None:
        """The features CSV into ``radiomics.export_dir`` (before any result is queued: a
        failed write fails the attempt, and the retry writes it again)."""
        folder = self.config.radiomics.export_dir
        if folder is None:
            return
        from ai_engines.radiomics.engine import features_csv

        name = export_name(job.engine, job.study_uid, job.revision, job.id)
        write_export(self.config.resolve(folder), name,
                     features_csv(findings, study_uid=job.study_uid))
        summary["export"] = name


def _other_series(findings: Findings) -> set[str]:
    """Series other than the findings' source that segments, maps or classifications lie on."""
    named = {s.source_series_uid for s in findings.segments}
    named |= {m.source_series_uid for m in findings.maps}
    named |= {c.source_series_uid for c in findings.classifications}
    return {uid for uid in named if uid and uid != findings.source_series_uid}


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
        self.loop = RepeatingStep(self.worker_id, self.run_one, config.jobs.poll_seconds, log,
                                  on_thread_start=self._lower_priority)

    def _lower_priority(self) -> None:
        lower_thread_priority(self.config.jobs.nice)

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
        except JobDeferred as exc:
            defer(self.queue.db, job.id, self.worker_id, max(settings.poll_seconds, 1.0),
                  str(exc))
            log.info("job %d waits for %s", job.id, ", ".join(exc.waiting_for))
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
        def preload() -> None:  # loading weights is job work too
            self._lower_priority()
            self.runner.preload()

        threading.Thread(target=preload, name=f"{self.worker_id}-preload", daemon=True).start()
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def join(self, timeout: float | None = None) -> None:
        self.loop.join(timeout)
