"""Defect 7 of issue 10: a peer without ``kind`` was treated as clinical (and got identities),
duplicate AE titles were allowed (first match won), and results went to every
``results.destinations`` peer whoever had sent the study.  Now ``kind`` is required, AE titles
are unique, and each route names where its results go (by default back to the sender only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.config import ConfigError, parse_config
from dicom_node.worker import result_destinations

ROOT = Path(__file__).resolve().parents[2]


def peer(name: str, ae: str, kind: str = "clinical", **extra) -> dict:  # noqa: ANN003
    return {"name": name, "ae_title": ae, "host": "127.0.0.1", "port": 104, "kind": kind,
            **extra}


def test_peer_without_kind_is_refused():
    with pytest.raises(ConfigError) as err:
        parse_config({"peers": [{"name": "pacs", "ae_title": "PACS", "port": 104}]})
    assert err.value.errors == ["peers.0.kind: Field required"]


def test_duplicate_ae_titles_are_refused():
    with pytest.raises(ConfigError, match=r"duplicate AE title\(s\) \['PACS'\]"):
        parse_config({"peers": [peer("pacs", "PACS"), peer("research", "PACS", "research")]})


def test_results_go_back_to_the_sender_only_by_default():
    config = parse_config({"peers": [peer("pacs", "PACS"), peer("mr", "MRPACS"),
                                     peer("research", "RESEARCH", "research")]})
    assert result_destinations(config, "PACS", "ct_lung", {"CT"}) == ["pacs"]
    assert result_destinations(config, "MRPACS", "ct_lung", {"CT"}) == ["mr"]
    # an unknown sender (escape hatch) gets nothing back, and nobody else does either
    assert result_destinations(config, "STRANGER", "ct_lung", {"CT"}) == []


def test_route_destinations_name_the_peers():
    config = parse_config({
        "peers": [peer("pacs", "PACS"), peer("tps", "PLANNING", may_send=False),
                  peer("research", "RESEARCH", "research", may_send=False)],
        "routes": [{"engine": "ct_lung", "modality": "CT", "destinations": ["sender", "tps"]},
                   {"engine": "radiomics", "modality": "CT", "requires": ["RTSTRUCT"],
                    "destinations": ["research"]}]})
    assert result_destinations(config, "PACS", "ct_lung", {"CT"}) == ["pacs", "tps"]
    assert result_destinations(config, "PACS", "radiomics", {"CT", "RTSTRUCT"}) == ["research"]
    assert result_destinations(config, "PACS", "radiomics", {"CT"}) == []  # route did not match
    no_return = parse_config({**config.model_dump(mode="json"),
                              "results": {"return_to_sender": False}})
    assert result_destinations(no_return, "PACS", "ct_lung", {"CT"}) == ["tps"]


def test_global_results_destinations_and_unknown_route_destinations_are_refused():
    with pytest.raises(ConfigError, match="replaced by \\[\\[routes\\]\\] destinations"):
        parse_config({"peers": [peer("pacs", "PACS"), peer("tps", "PLANNING")],
                      "results": {"destinations": ["tps"]}})
    with pytest.raises(ConfigError, match="'tps' is neither"):
        parse_config({"peers": [peer("pacs", "PACS")],
                      "routes": [{"engine": "ct_lung", "modality": "CT",
                                  "destinations": ["tps"]}]})


def test_shipped_appliance_sends_contours_to_the_planning_system_only_by_route():
    from dicom_node.config import load_config

    config = load_config(ROOT / "deploy" / "appliance.toml")
    assert result_destinations(config, "PACS", "ct_lung", {"CT"}) == ["pacs", "tps"]
    assert result_destinations(config, "PACS", "bone_scan", {"NM"}) == ["pacs"]
