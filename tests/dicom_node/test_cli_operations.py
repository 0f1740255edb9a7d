"""Operator commands: config discovery, read-only commands that never create a database,
``outbox list/resend``, the delivery retry window and ``echo PEER`` against real dcmtk."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import pytest

from dicom_node import cli
from dicom_node.config import ConfigError
from storage import migrate, outbox
from storage.database import Database
from storage.jobs import enqueue
from storage.studies import ReceivedInstance, index_instance
from storage.tables import OutboxItem, utcnow
from tests.net import free_port, need

PEER = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "kind": "clinical"}


def _write_config(path, db_path, port: int = 4242) -> None:
    path.write_text(
        f'[node]\ndata_dir = "{path.parent / "var"}"\n'
        f'[database]\nurl = "sqlite:///{db_path}"\n'
        '[[peers]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
        f'port = {port}\nkind = "clinical"\n', encoding="utf-8")


def test_config_from_environment_then_system_file(tmp_path, monkeypatch):
    env_file, system_file = tmp_path / "env.toml", tmp_path / "system.toml"
    env_file.write_text('[node]\nae_title = "FROMENV"\n', encoding="utf-8")
    system_file.write_text('[node]\nae_title = "FROMETC"\n', encoding="utf-8")
    monkeypatch.setattr(cli, "SYSTEM_CONFIG", system_file)
    monkeypatch.setenv(cli.CONFIG_ENV, str(env_file))
    assert cli.load_config(cli.config_path(None)).node.ae_title == "FROMENV"
    monkeypatch.delenv(cli.CONFIG_ENV)
    assert cli.load_config(cli.config_path(None)).node.ae_title == "FROMETC"
    assert cli.config_path(str(env_file)) == env_file  # --config always wins
    system_file.unlink()
    assert cli.config_path(None) is None  # embedded defaults


def test_config_from_environment_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(cli.CONFIG_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="file not found"):
        cli.load_config(cli.config_path(None))


@pytest.mark.parametrize("command", [["status"], ["jobs"], ["outbox"]])
def test_read_only_commands_never_create_a_database(tmp_path, capsys, command):
    config, db_path = tmp_path / "node.toml", tmp_path / "db" / "node.db"
    _write_config(config, db_path)
    assert cli.main([*command, "--config", str(config)]) == 2
    assert "no node database" in capsys.readouterr().err
    assert not db_path.exists() and not db_path.parent.exists()


def test_status_refuses_a_database_without_the_node_schema(tmp_path, capsys):
    config, db_path = tmp_path / "node.toml", tmp_path / "other.db"
    _write_config(config, db_path)
    Database(f"sqlite:///{db_path}").engine.connect().close()  # an empty SQLite file
    assert cli.main(["status", "--config", str(config)]) == 2
    assert "no node schema" in capsys.readouterr().err


@pytest.fixture
def deliveries(tmp_path):
    """A node database with three deliveries of one study: failed, sent and refused."""
    config, db_path = tmp_path / "node.toml", tmp_path / "node.db"
    _write_config(config, db_path)
    db = Database(f"sqlite:///{db_path}")
    migrate.upgrade(db)
    now = utcnow()
    with db.session() as session:
        indexed = index_instance(session, ReceivedInstance(
            "2.25.11", "2.25.12", "2.25.13", "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.1.2.1", "CT", None, "ANON", "PACS", "x", 1, "0" * 64), now)
        (job_id,) = enqueue(session, indexed.study_id, 1, ["ct_lung"], 3, now)
        outbox.add(session, job_id, [
            outbox.OwedObject("pacs", "1.2.840.10008.5.1.4.1.1.66.4", f"2.25.{n}", "SEG",
                              f"results/{n}.dcm") for n in (101, 102, 103)], now)
    states = {"2.25.101": "failed", "2.25.102": "sent", "2.25.103": "refused"}
    with db.session() as session:
        for item in session.query(OutboxItem):
            item.state, item.attempts = states[item.sop_instance_uid], 8
            item.reason = "C-STORE status 0xA700" if item.state == "failed" else None
    ids = {}
    with db.session() as session:
        for item in session.query(OutboxItem):
            ids[item.state] = item.id
    yield config, db, ids
    db.dispose()


def test_outbox_list_filters_by_state(deliveries, capsys):
    config, _, ids = deliveries
    assert cli.main(["outbox", "list", "--state", "failed", "--json", "--config", str(config)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in listed] == [ids["failed"]]
    assert listed[0]["study_uid"] == "2.25.11" and listed[0]["reason"] == "C-STORE status 0xA700"


def _state(db: Database, item_id: int) -> tuple[str, int]:
    with db.session() as session:
        item = session.get(OutboxItem, item_id)
        return item.state, item.attempts


def test_outbox_resend_by_peer_takes_only_failed(deliveries, capsys):
    config, db, ids = deliveries
    assert cli.main(["outbox", "resend", "--peer", "pacs", "--config", str(config)]) == 0
    assert "1 delivery queued again" in capsys.readouterr().out
    assert _state(db, ids["failed"]) == ("pending", 0)
    assert _state(db, ids["sent"])[0] == "sent"
    assert _state(db, ids["refused"])[0] == "refused"


def test_outbox_resend_by_study_with_sent(deliveries):
    config, db, ids = deliveries
    assert cli.main(["outbox", "resend", "--study", "2.25.11", "--include-sent",
                     "--config", str(config)]) == 0
    assert _state(db, ids["failed"])[0] == "pending"
    assert _state(db, ids["sent"])[0] == "pending"
    assert _state(db, ids["refused"])[0] == "refused"  # the leak check's decision stands


def test_outbox_resend_refused_by_id_is_not_done(deliveries, capsys):
    config, db, ids = deliveries
    assert cli.main(["outbox", "resend", str(ids["refused"]), "--config", str(config)]) == 1
    assert "0 deliveries" in capsys.readouterr().out
    assert _state(db, ids["refused"])[0] == "refused"


def test_outbox_resend_needs_a_target_and_a_known_peer(deliveries, capsys):
    config, _, _ = deliveries
    assert cli.main(["outbox", "resend", "--config", str(config)]) == 2
    assert cli.main(["outbox", "resend", "--peer", "nope", "--config", str(config)]) == 2
    assert "no configured peer" in capsys.readouterr().err


def test_retry_window_fails_a_delivery_only_after_the_window(deliveries):
    _, db, ids = deliveries
    box, window = outbox.Outbox(db), dt.timedelta(hours=24)
    item_id = ids["failed"]
    with db.session() as session:
        item = session.get(OutboxItem, item_id)
        item.state, item.attempts, item.created_at = "sending", 40, utcnow() - dt.timedelta(hours=23)
    assert box.mark_retry(item_id, "no answer", None, 1000, 5, 900, window) == "pending"
    with db.session() as session:
        item = session.get(OutboxItem, item_id)
        item.state, item.created_at = "sending", utcnow() - dt.timedelta(hours=25)
    assert box.mark_retry(item_id, "no answer", None, 1000, 5, 900, window) == "failed"


def test_default_retry_window_outlasts_a_night():
    from dicom_node.config import NodeConfig
    from storage.leases import backoff

    sender = NodeConfig().sender
    assert sender.retry_window_hours >= 12
    # The attempt cap must not end the window early: attempts that fit in the window.
    elapsed, attempts = 0.0, 0
    while elapsed < sender.retry_window_hours * 3600:
        attempts += 1
        elapsed += backoff(sender.backoff_seconds, sender.backoff_max_seconds,
                           attempts).total_seconds()
    assert attempts < sender.max_attempts


@pytest.mark.slow
def test_echo_a_real_peer_and_a_dead_one(tmp_path, capsys):
    storescp = need("storescp")
    port = free_port()
    config = tmp_path / "node.toml"
    _write_config(config, tmp_path / "node.db", port)
    proc = subprocess.Popen([storescp, "-aet", "PACS", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while cli.main(["echo", "pacs", "--config", str(config)]) != 0:
            assert time.time() < deadline, capsys.readouterr().err
            time.sleep(0.2)
        assert "C-ECHO success" in capsys.readouterr().out
    finally:
        proc.terminate()
        proc.wait(10)
    assert cli.main(["echo", "pacs", "--config", str(config)]) == 1
    assert "no association" in capsys.readouterr().err
    assert cli.main(["echo", "unknown", "--config", str(config)]) == 2
