"""``dicom-node``: serve, worker, status, jobs, outbox, purge, echo, find, quarantine, study,
check-config, migrate, init-keys, rotate-keys, dashboard-password, conformance (+ model
commands).

Without ``--config`` the configuration is ``$DICOM_NODE_CONFIG`` when set, else
``/etc/dicom-node/node.toml`` when it exists, else the embedded defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from dicom_node import cli_models
from dicom_node.config import ConfigError, NodeConfig, check_config, load_config
from storage.database import NoDatabase
from storage.keys import KeyFileError

# Where a packaged install keeps its configuration (deploy/dicom-node.service uses it).
SYSTEM_CONFIG = Path("/etc/dicom-node/node.toml")
CONFIG_ENV = "DICOM_NODE_CONFIG"


def config_path(explicit: str | None) -> Path | None:
    """The configuration file to use: ``--config``, else ``$DICOM_NODE_CONFIG``, else
    :data:`SYSTEM_CONFIG` if it exists; None means the embedded defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])  # must exist: load_config reports it otherwise
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def _config(args: argparse.Namespace) -> NodeConfig:
    return load_config(config_path(args.config))


@contextlib.contextmanager
def _existing_database(config: NodeConfig):  # noqa: ANN202
    """The node's database for read-and-repair commands (never created here), disposed of
    when the command is done."""
    from storage.migrate import open_existing

    db = open_existing(config.database.url)
    try:
        yield db
    finally:
        db.dispose()


def _passive_cpu_threads() -> None:
    """Let idle inference threads sleep instead of spinning (unless the site set it).

    Read by OpenMP when torch loads, so it must be set before.  With spinning threads a
    2-thread job ran 2.7x slower while the receiver kept the other core busy.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cmd_serve(args: argparse.Namespace) -> int:
    _passive_cpu_threads()
    from dicom_node.node import Node, configure_logging

    config = _config(args)
    configure_logging(config)
    Node(config).serve()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    _passive_cpu_threads()
    from dicom_node.node import Node, configure_logging

    config = _config(args)
    configure_logging(config)
    Node(config, receive=False, complete=False, send=False, workers=args.count).serve()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from dicom_node.node import open_database

    open_database(_config(args)).dispose()
    print("database schema is up to date")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch:
        try:
            while True:
                print(f"--- {time.strftime('%H:%M:%S')}")
                _print_status(args)
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
    return _print_status(args)


def _print_status(args: argparse.Namespace) -> int:
    from storage import quarantine
    from storage.monitoring import recent_studies
    from storage.outbox import Outbox
    from storage.studies import counts

    with _existing_database(_config(args)) as db:
        with db.session() as session:
            report: dict[str, Any] = dict(counts(session))
            report["quarantine"] = quarantine.counts(session)
        report["recent_studies"] = [s.as_dict() for s in recent_studies(db, args.recent)]
        report["outbox"] = Outbox(db).counts()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        for key in ("studies", "series", "instances", "jobs", "outbox", "quarantine"):
            values = ", ".join(f"{k}={v}" for k, v in sorted(report[key].items())) or "none"
            print(f"{key:11s} {values}")
        for s in report["recent_studies"]:
            series = ", ".join(f"{x['modality']}:{x['instances']}" for x in s["series"])
            print(f"  {s['study']}  {s['state']:9s} rev {s['revision']}  {series}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from storage.jobs import JobQueue
    from storage.outbox import Outbox

    with _existing_database(_config(args)) as db:
        queue = JobQueue(db)
        if args.action == "retry":
            ok = queue.retry(args.job_id)
            print(f"job {args.job_id} queued again" if ok else
                  f"job {args.job_id} is not in a terminal state (or does not exist)")
            return 0 if ok else 1
        if args.action == "show":
            job = queue.get(args.job_id)
            if job is None:
                print(f"no job {args.job_id}", file=sys.stderr)
                return 1
            view = job.as_dict()
            view["deliveries"] = Outbox(db).items_for_job(job.id)
            print(json.dumps(view, indent=2))
            return 0
        jobs = queue.list(state=args.state, limit=args.limit)
        if args.json:
            print(json.dumps([j.as_dict() for j in jobs], indent=2))
        else:
            for j in jobs:
                reason = f"  {j.reason_code}: {j.reason}" if j.reason_code else ""
                print(f"{j.id:6d} {j.state:10s} {j.engine:12s} rev {j.revision} "
                      f"try {j.attempts}/{j.max_attempts} study {j.study_uid}{reason}")
        return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from storage.outbox import Outbox

    config = _config(args)
    with _existing_database(config) as db:
        outbox = Outbox(db)
        if args.action == "resend":
            if args.item_id is None and not (args.peer or args.study):
                print("outbox resend needs an ID, --peer NAME or --study UID", file=sys.stderr)
                return 2
            if args.peer and config.peer_by_name(args.peer) is None:
                print(f"no configured peer named {args.peer!r}", file=sys.stderr)
                return 2
            n = outbox.resend(item_id=args.item_id, destination=args.peer,
                              study_uid=args.study, include_sent=args.include_sent)
            print(f"{n} deliver{'y' if n == 1 else 'ies'} queued again")
            return 0 if n else 1
        items = outbox.list(state=args.state, destination=args.peer, limit=args.limit)
        if args.json:
            print(json.dumps([i.as_dict() for i in items], indent=2))
            return 0
        for i in items:
            status = f" 0x{i.last_status:04X}" if i.last_status is not None else ""
            reason = f"  {i.reason}" if i.reason else ""
            print(f"{i.id:6d} {i.state:8s} {i.destination:12s} {i.modality:8s} "
                  f"try {i.attempts} job {i.job_id} study {i.study_uid}{status}{reason}")
        return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from dicom_node.node import retention_policy
    from storage.clock import utcnow
    from storage.files import FileStore
    from storage.retention import StudyNotPurgeable, purge, purge_study

    config = _config(args)
    files = FileStore(config.node.data_dir)
    with _existing_database(config) as db:
        if args.study:
            try:
                report = purge_study(db, files, args.study, dry_run=args.dry_run)
            except StudyNotPurgeable as exc:
                print(str(exc), file=sys.stderr)
                return 1
        else:
            report = purge(db, files, retention_policy(config), utcnow(), dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    verb = "would purge" if args.dry_run else "purged"
    print(f"{verb} {len(report.studies)} studies ({report.instances} instances, "
          f"{report.result_files} result files), {report.quarantined} quarantined, "
          f"{report.vault_rows} vault rows: {report.bytes_freed / 1e6:.1f} MB")
    for study, reason in sorted(report.held.items()):
        print(f"  kept {study}: {reason}")
    return 0


def cmd_dashboard_password(args: argparse.Namespace) -> int:
    import getpass

    from dicom_node.dashboard import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 12:
        print("use at least 12 characters", file=sys.stderr)
        return 2
    print("[[dashboard.users]]")
    print(f'name = "{args.user}"')
    print(f'role = "{args.role}"')
    print(f'password_hash = "{hash_password(password)}"')
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    """Pseudonymous studies for an identifier the hospital knows, through the vault; audited."""
    from dicom_node.lookup import find_studies
    from dicom_node.node import open_audit_trail
    from storage.keys import VAULT, KeyFolder
    from storage.vault import Vault

    kind, value = next((k, v) for k, v in (("accession", args.accession),
                                            ("patient-id", args.patient_id),
                                            ("study-date", args.study_date)) if v)
    if value == "-":  # keeps the identifier out of the shell history
        value = sys.stdin.readline().strip()
    config = _config(args)
    with _existing_database(config) as db:
        found = find_studies(Vault(db, KeyFolder(config.keys_dir).ring(VAULT)), kind, value)
    audit = open_audit_trail(config)
    if audit is not None:
        audit.lookup(_operator(), kind, [f.study_uid for f in found])
        audit.close()
    for study in found:
        print(f"{study.study_uid}  patient {study.patient_pseudonym}")
    if not found:
        print("no study found", file=sys.stderr)
    return 0 if found else 1


def cmd_quarantine(args: argparse.Namespace) -> int:
    from storage import quarantine
    from storage.files import FileStore
    from storage.monitoring import quarantine_rows

    config = _config(args)
    if args.action == "release":
        return _release(args, config)
    with _existing_database(config) as db:
        if args.action == "purge":
            if args.id is None:
                print("quarantine purge needs an ID (older ones go by [retention] "
                      "quarantine_days)", file=sys.stderr)
                return 2
            ok = quarantine.remove(db, FileStore(config.node.data_dir), args.id)
            print(f"quarantined instance {args.id} deleted" if ok else f"no quarantined "
                  f"instance {args.id}")
            return 0 if ok else 1
        rows = quarantine_rows(db, limit=args.limit)
        if args.action == "show":
            if args.id is None:
                print("quarantine show needs an ID", file=sys.stderr)
                return 2
            rows = [r for r in rows if r.id == args.id]
            if not rows:
                print(f"no quarantined instance {args.id}", file=sys.stderr)
                return 1
        if args.json or args.action == "show":
            print(json.dumps([{**r.__dict__, "received_at": r.received_at.isoformat() + "Z"}
                              for r in rows], indent=2))
            return 0
        for r in rows:
            print(f"{r.id:6d} {r.received_at:%Y-%m-%d %H:%M:%S} from {r.calling_ae:16s} "
                  f"{r.reason_code}: {r.reason}")
        return 0


def _operator() -> str:
    """Who runs a command, for the audit trail (the login name)."""
    import getpass

    return getpass.getuser()


def _release(args: argparse.Namespace, config: NodeConfig) -> int:
    from dicom_node.node import open_audit_trail
    from dicom_node.quarantine_release import ReleaseRefused, release
    from storage.files import FileStore
    from storage.keys import KeyFolder

    if args.id is None or not (args.reason or "").strip():
        print("quarantine release needs an ID and --reason (why it may go on, e.g. 'checked: "
              "no burned-in text')", file=sys.stderr)
        return 2
    audit = open_audit_trail(config)
    try:
        with _existing_database(config) as db:
            done = release(config, db, FileStore(config.node.data_dir),
                           KeyFolder(config.keys_dir), args.id, _operator(), args.reason, audit)
    except ReleaseRefused as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        if audit is not None:
            audit.close()
    print(f"quarantined instance {done.quarantine_id} released ({done.overridden} overridden) "
          f"into study {done.study_uid}; it completes by the usual rule")
    return 0


def _studies_named(args: argparse.Namespace, config: NodeConfig, db) -> list[str]:  # noqa: ANN001
    """The pseudonymous study UID given, or those the accession number resolves to through
    the vault (the lookup audited as ``find`` does, without the identifier)."""
    from dicom_node.lookup import find_studies
    from dicom_node.node import open_audit_trail
    from storage.keys import VAULT, KeyFolder
    from storage.vault import Vault

    if args.study:
        return [args.study]
    value = sys.stdin.readline().strip() if args.accession == "-" else args.accession
    found = find_studies(Vault(db, KeyFolder(config.keys_dir).ring(VAULT)), "accession", value)
    audit = open_audit_trail(config)
    if audit is not None:
        audit.lookup(_operator(), "accession", [f.study_uid for f in found])
        audit.close()
    return [f.study_uid for f in found]


def cmd_study(args: argparse.Namespace) -> int:
    """``study complete --force`` and ``study rerun``, by study UID or accession number."""
    from dicom_node.completion import complete_now, rerun
    from dicom_node.node import open_audit_trail
    from storage.studies import StudyRefused

    if args.action == "complete" and not args.force:  # only ``complete`` has --force
        print("study complete needs --force (without it the completion rule decides)",
              file=sys.stderr)
        return 2
    if bool(args.study) == bool(args.accession):
        print(f"study {args.action} needs a STUDY UID or --accession", file=sys.stderr)
        return 2
    config = _config(args)
    with _existing_database(config) as db:
        studies = _studies_named(args, config, db)
        if len(studies) != 1:
            print("no study found for that accession number" if not studies else
                  f"the accession number names {len(studies)} studies: "
                  f"{', '.join(studies)}; give one STUDY UID", file=sys.stderr)
            return 1
        try:
            if args.action == "complete":
                done = complete_now(config, db, studies[0])
            else:
                done = rerun(config, db, studies[0], args.engine)  # only ``rerun`` has it
        except StudyRefused as exc:
            print(str(exc), file=sys.stderr)
            return 1
    audit = open_audit_trail(config)
    if audit is not None:
        audit.operator_action(_operator(), f"study {args.action}", done.study_uid,
                              f"revision {done.revision}, jobs {list(done.job_ids)} for "
                              f"{', '.join(done.engines) or 'no matching route'}")
        audit.close()
    verb = "completed" if args.action == "complete" else "rerun as"
    print(f"study {done.study_uid} {verb} revision {done.revision}: "
          + (", ".join(f"job {i} ({e})" for i, e in zip(done.job_ids, done.engines,
                                                          strict=False))
             or "no job (no route matches its series)"))
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    from dicom_node.conformance import statement

    sys.stdout.write(statement())
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from dicom_node.sender import echo

    config = _config(args)
    peer = config.peer_by_name(args.peer) or config.peer_by_ae(args.peer)
    if peer is None:
        print(f"no configured peer named {args.peer!r}", file=sys.stderr)
        return 2
    result = echo(config, peer)
    if result.ok:
        print(f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port}): C-ECHO success "
              f"in {result.seconds * 1000:.0f} ms")
        return 0
    detail = result.problem or f"C-ECHO status 0x{result.status:04X}"
    print(f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port}): {detail}", file=sys.stderr)
    return 1


def cmd_init_keys(args: argparse.Namespace) -> int:
    """Create the keys of a fresh installation, or move pre-split keys out of the data folder."""
    from dicom_node.node import open_database
    from storage.keys import PURPOSES, KeyFolder, legacy_key_files, prepare_keys

    config = _config(args)
    folder = KeyFolder(config.keys_dir)
    source = Path(args.import_from) if args.import_from else None
    if source is None and legacy_key_files(config.node.data_dir):
        source = config.node.data_dir / "keys"
    if source is not None:
        for line in folder.import_legacy(source):
            print(f"moved {line}")
        print("the vault and the quarantine still share the old key (id 0): run "
              "'dicom-node rotate-keys' to give each its own")
    db = open_database(config)
    try:
        created = prepare_keys(folder, PURPOSES, db=db, data_dir=config.node.data_dir,
                               may_create=True)
    finally:
        db.dispose()
    for path in created:
        print(f"created {path}")
    if not created:
        print(f"all keys present in {folder.path}")
    print("back the key folder up now, apart from the data folder (docs/operations-backup.md)")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    """New vault and quarantine keys; every vault row and quarantined file re-encrypted."""
    from dicom_node.node import open_database
    from storage import quarantine
    from storage.files import FileStore
    from storage.keys import QUARANTINE, RINGS, VAULT, KeyFolder, prepare_keys
    from storage.vault import Vault

    config = _config(args)
    folder = KeyFolder(config.keys_dir)
    db = open_database(config)
    try:
        prepare_keys(folder, RINGS, db=db, data_dir=config.node.data_dir, may_create=False)
        if not args.finish:
            for purpose in RINGS:
                print(f"new {purpose} key {folder.ring_path(purpose, folder.add_ring_key(purpose))}")
        vault = Vault(db, folder.ring(VAULT))
        rows = vault.reencrypt()
        ring = folder.ring(QUARANTINE)
        moved = quarantine.reencrypt(db, FileStore(config.node.data_dir), ring)
        print(f"re-encrypted {rows} vault rows with vault key {vault.keys.current_id} and "
              f"{moved} quarantined files with quarantine key {ring.current_id}")
        # Checked, not assumed: a node left running may have sealed with an old key meanwhile.
        in_use = {VAULT: vault.key_ids_in_use(),
                  QUARANTINE: quarantine.key_ids_in_use(db, FileStore(config.node.data_dir))}
        stale = {k: sorted(v - {folder.ring(k).current_id}) for k, v in in_use.items()}
        unused = [folder.ring_path(k, i) for k in RINGS for i in folder.ring_ids(k)
                  if i not in in_use[k]]
        if unused:
            print("no data uses these keys any more; keep them with the backups made before "
                  "this rotation, then delete them: " + ", ".join(map(str, unused)))
        print("the UID secret is never rotated (a new one would change every pseudonym)")
        if any(stale.values()):
            print(f"data still sealed with older keys {stale} (was the node running?): stop "
                  "it and run 'dicom-node rotate-keys --finish'", file=sys.stderr)
            return 1
    finally:
        db.dispose()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from ai_engines.registry import available_engines, engine_specs
    from dicom_node.completion import ignored_route_keys

    config = load_config(Path(args.file))
    errors, warnings = check_config(config, available_engines())
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if errors:
        raise ConfigError(args.file, errors)
    print(f"{args.file}: OK ({len(config.peers)} peers, {len(config.routes)} routes, "
          f"AE {config.node.ae_title} on port {config.node.port})")
    for line in ignored_route_keys(config.routes, engine_specs()):
        print(f"  note: {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help=f"TOML configuration (default: ${CONFIG_ENV}, "
                       f"else {SYSTEM_CONFIG} if present, else the embedded defaults)")
        return p

    p = with_config(sub.add_parser("serve", help="run the node in the foreground"))
    p.set_defaults(func=cmd_serve)
    p = with_config(sub.add_parser("worker", help="run job workers only (shared database)"))
    p.add_argument("--count", type=int, default=1, help="worker threads (default 1)")
    p.set_defaults(func=cmd_worker)
    p = with_config(sub.add_parser("status", help="counts of studies, series, jobs by state"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--recent", type=int, default=5, help="recent studies to list")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="print again every SECONDS until interrupted")
    p.set_defaults(func=cmd_status)
    p = with_config(sub.add_parser("jobs", help="list, show or retry jobs"))
    p.add_argument("action", nargs="?", choices=["list", "show", "retry"], default="list")
    p.add_argument("job_id", nargs="?", type=int)
    p.add_argument("--state", help="only jobs in this state")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)
    p = with_config(sub.add_parser("outbox", help="list deliveries or send them again"))
    p.add_argument("action", nargs="?", choices=["list", "resend"], default="list")
    p.add_argument("item_id", nargs="?", type=int, help="delivery id (resend)")
    p.add_argument("--state", choices=["pending", "sending", "sent", "failed", "refused"])
    p.add_argument("--peer", help="only deliveries to this peer (name)")
    p.add_argument("--study", help="resend: the deliveries of this (pseudonymous) study UID")
    p.add_argument("--include-sent", action="store_true",
                   help="resend: also deliveries already sent (a PACS lost them)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox)
    p = with_config(sub.add_parser("purge", help="delete what [retention] no longer keeps"))
    p.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    p.add_argument("--study", help="purge this (pseudonymous) study now, even with failed "
                   "deliveries (never while it is receiving or a job runs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purge)
    p = sub.add_parser("dashboard-password",
                       help="print a [[dashboard.users]] entry with an scrypt password hash")
    p.add_argument("user")
    p.add_argument("--role", choices=["viewer", "operator"], default="viewer")
    p.add_argument("--stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_dashboard_password)
    p = with_config(sub.add_parser("find", help="pseudonymous studies for an accession "
                                   "number, patient ID or study date (audited)"))
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--accession", help="original accession number ('-': read from stdin)")
    which.add_argument("--patient-id", help="original patient ID ('-': read from stdin)")
    which.add_argument("--study-date", help="original study date YYYYMMDD ('-': stdin)")
    p.set_defaults(func=cmd_find)
    p = with_config(sub.add_parser("quarantine", help="list, show or delete quarantined "
                                   "instances (reasons only, never content)"))
    p.add_argument("action", nargs="?", choices=["list", "show", "purge", "release"],
                   default="list")
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--reason", help="release: why the instance may go on (audited)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quarantine)
    study = sub.add_parser("study", help="complete a study now or run its engines again "
                           "(audited)").add_subparsers(dest="action", required=True)
    for action, text in (("complete", "queue the study's jobs now (with --force)"),
                         ("rerun", "new jobs on the study's instances; earlier results stay")):
        p = with_config(study.add_parser(action, help=text))
        p.add_argument("study", nargs="?", help="pseudonymous study UID")
        p.add_argument("--accession", help="original accession number instead, resolved "
                       "through the vault ('-': read from stdin)")
        if action == "complete":
            p.add_argument("--force", action="store_true", help="queue the jobs now, without "
                           "waiting for the completion rule")
        else:
            p.add_argument("--engine", help="only this engine (default: every matching route)")
        p.set_defaults(func=cmd_study)
    p = sub.add_parser("conformance", help="print the DICOM Conformance Statement (Markdown)")
    p.set_defaults(func=cmd_conformance)
    p = with_config(sub.add_parser("echo", help="C-ECHO a configured peer"))
    p.add_argument("peer", help="peer name (or AE title)")
    p.set_defaults(func=cmd_echo)
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)
    p = with_config(sub.add_parser("migrate", help="upgrade the database schema"))
    p.set_defaults(func=cmd_migrate)
    p = with_config(sub.add_parser(
        "init-keys", help="create the keys of a fresh installation (or move old ones out of "
        "the data folder)"))
    p.add_argument("--import-from", metavar="DIR",
                   help="folder holding uid-secret.key / vault.key of an older installation "
                   "(default: data_dir/keys when it holds them)")
    p.set_defaults(func=cmd_init_keys)
    p = with_config(sub.add_parser(
        "rotate-keys", help="new vault and quarantine keys; re-encrypt everything (node "
        "stopped)"))
    p.add_argument("--finish", action="store_true",
                   help="no new key: finish an interrupted rotation with the newest keys")
    p.set_defaults(func=cmd_rotate_keys)
    cli_models.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func is cmd_jobs and args.action in ("show", "retry") and args.job_id is None:
        parser.error(f"jobs {args.action} needs a job id")
    try:
        return args.func(args)
    except NoDatabase as exc:
        print(f"{exc}; start the node once (dicom-node serve) or check --config",
              file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"configuration error in {exc.source}:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyFileError as exc:
        print(f"key error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
