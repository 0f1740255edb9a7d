import tomllib
from pathlib import Path

import pytest

from dicom_node.cli import main
from dicom_node.config import ConfigError, NodeConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_default_toml_equals_embedded_defaults():
    shipped = load_config(ROOT / "config" / "default.toml")
    assert shipped == NodeConfig()


def test_every_default_key_is_documented():
    doc = (ROOT / "config" / "README.md").read_text()
    data = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    for section, values in data.items():
        if isinstance(values, dict):
            for key in values:
                assert f"`{section}.{key}`" in doc, f"{section}.{key} undocumented"


def test_each_key_has_one_row_in_the_configuration_reference():
    # Two rows for one key drift apart (one said node.data_dir has no keys/ folder).
    rows = [line.split("`")[1] for line in
            (ROOT / "config" / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert len(rows) > 50
    assert sorted({key for key in rows if rows.count(key) > 1}) == []


def test_bad_file_names_each_key_and_reason(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nport = 0\nae_tittle = "X"\n[completion]\nquiet_seconds = -1\n'
                   '[[peers]]\nname = "pacs"\nae_title = "THIS_TITLE_IS_TOO_LONG"\nport = 4242\n'
                   '[results]\ndestinations = ["tps"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = "\n".join(err.value.errors)
    assert "node.port" in text and "node.ae_tittle: unknown key" in text
    assert "completion.quiet_seconds" in text and "peers.0.ae_title" in text


def test_unknown_destination_is_rejected():
    with pytest.raises(ConfigError, match="'tps' is not a configured peer"):
        parse_config({"results": {"destinations": ["tps"]}})


def test_check_config_cli(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('[[peers]]\nname = "pacs"\nae_title = "PACS"\nport = 4242\nkind = "clinical"\n'
                    '[[routes]]\nengine = "ct_lung"\nmodality = "CT"\n')
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nport = 'x'\n")
    assert main(["check-config", str(bad)]) == 2
    assert "node.port" in capsys.readouterr().err


def test_postgresql_off_host_needs_verified_tls():
    from dicom_node.config import check_config

    def url(u: str, **extra: object) -> dict:
        return {"database": {"url": u, **extra}}

    for local in ("postgresql+psycopg://node@127.0.0.1:5432/node",
                  "postgresql+psycopg://node@localhost/node",
                  "postgresql+psycopg://node@/node?host=/var/run/postgresql",
                  "postgresql+psycopg://node@[::1]/node",
                  "postgresql+psycopg://node@db.internal/node?sslmode=verify-full&sslrootcert=ca",
                  "postgresql+psycopg://node@10.0.0.5/node?sslmode=verify-ca"):
        assert parse_config(url(local)).database.remote_server_in_clear() is None, local
    for remote in ("postgresql+psycopg://node:pw@db.internal/node",
                   "postgresql+psycopg://node@10.0.0.5:5432/node?sslmode=require",
                   "postgresql+psycopg://node@10.0.0.5/node?sslmode=disable",
                   "postgresql+psycopg://node@/node?host=db.internal"):
        with pytest.raises(ConfigError, match="sslmode=verify-full"):
            parse_config(url(remote))
        config = parse_config(url(remote, allow_unencrypted_network=True))
        assert config.database.remote_server_in_clear() is not None
        warnings = check_config(config, [])[1]
        assert any("allow_unencrypted_network" in w for w in warnings), warnings
        assert not any("pw" in w for w in warnings)  # the URL's password is never echoed
