"""``dicom-node``: serve, worker, status, jobs, check-config, migrate (+ model commands)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from dicom_node import cli_models
from dicom_node.config import ConfigError, NodeConfig, load_config


def _config(args: argparse.Namespace) -> NodeConfig:
    return load_config(Path(args.config) if args.config else None)


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
    from dicom_node.node import open_database
    from storage import quarantine
    from storage.outbox import Outbox
    from storage.studies import counts, recent_studies

    config = _config(args)
    db = open_database(config)
    with db.session() as session:
        report = counts(session)
        report["quarantine"] = quarantine.counts(session)
        report["recent_studies"] = recent_studies(session, args.recent)
    report["outbox"] = Outbox(db).counts()
    db.dispose()
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
    from dicom_node.node import open_database
    from storage.jobs import JobQueue
    from storage.outbox import Outbox

    db = open_database(_config(args))
    queue = JobQueue(db)
    try:
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
    finally:
        db.dispose()


def cmd_check_config(args: argparse.Namespace) -> int:
    from ai_engines.registry import engine_specs
    from dicom_node.completion import ignored_route_keys

    config = load_config(Path(args.file))
    print(f"{args.file}: OK ({len(config.peers)} peers, {len(config.routes)} routes, "
          f"AE {config.node.ae_title} on port {config.node.port})")
    for line in ignored_route_keys(config.routes, engine_specs()):
        print(f"  note: {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="TOML configuration (default: embedded defaults)")
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
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)
    p = with_config(sub.add_parser("migrate", help="upgrade the database schema"))
    p.set_defaults(func=cmd_migrate)
    cli_models.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "action", None) in ("show", "retry") and args.job_id is None:
        parser.error(f"jobs {args.action} needs a job id")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"configuration error in {exc.source}:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
