"""The node's configuration: one TOML file, every key with a documented default.

``config/default.toml`` in the repository shows every key with its default; ``config/README.md``
documents them.  :func:`load_config` rejects a bad file with one line per error naming the key
and the reason.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

AeTitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]*[^ ]$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    ae_title: AeTitle = "AINODE"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    data_dir: Path = Path("var")
    # Accept associations from calling AE titles that are not configured peers.
    accept_unknown_calling_ae: bool = False
    max_pdu_bytes: int = Field(65536, ge=4096, le=1_048_576)
    max_associations: int = Field(10, ge=1, le=200)
    dimse_timeout_s: float = Field(60.0, gt=0)
    network_timeout_s: float = Field(60.0, gt=0)
    # Reject new stores while less than this much disk is free under data_dir (status A700).
    min_free_disk_mb: int = Field(500, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DatabaseSettings(_Section):
    # Relative sqlite paths are resolved against the working directory, as SQLAlchemy does.
    url: str = "sqlite:///var/node.db"

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v.startswith("sqlite:") or v.startswith("postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        return v


class CompletionSettings(_Section):
    quiet_seconds: float = Field(10.0, gt=0)
    # How often the completion tracker looks for quiet series.
    poll_seconds: float = Field(1.0, gt=0)
    # Instances arriving for a study already handed to engines: "rerun" re-runs every route
    # on the full, updated series (the only policy; kept explicit so it is visible).
    late_arrival_policy: Literal["rerun"] = "rerun"


class JobSettings(_Section):
    workers: int = Field(1, ge=0, le=64)  # worker threads inside `serve`; 0 = none
    lease_seconds: float = Field(300.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=100)
    backoff_seconds: float = Field(10.0, ge=0)
    backoff_max_seconds: float = Field(600.0, ge=0)
    poll_seconds: float = Field(1.0, gt=0)


class DestinationKind(StrEnum):
    CLINICAL = "clinical"
    RESEARCH = "research"


class Peer(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AeTitle
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    # clinical: results are re-identified; research: results leave pseudonymized.
    kind: DestinationKind = DestinationKind.CLINICAL
    # This peer may send studies to the node.
    may_send: bool = True
    # Modalities of result objects this peer receives when it is a configured destination
    # (e.g. ["RTSTRUCT"] for a planning system); empty = all.
    accepts: list[str] = Field(default_factory=list)
    storage_commitment: bool = False
    # SR SOP class for this peer: Comprehensive 3D SR (default) or plain Comprehensive SR.
    sr_storage: Literal["comprehensive3d", "comprehensive"] = "comprehensive3d"


class Route(_Section):
    """Which engine runs on a completed study; all matching routes fire.

    An installed engine gets the studies its declared acceptance matches (see
    ``dicom-node engines``).  ``modality`` and ``requires`` only route studies to an engine
    that is not installed, so they are declined ``ENGINE_NOT_INSTALLED`` visibly; for an
    installed engine they are ignored (``check-config`` says so).
    """

    engine: str = Field(min_length=1)
    modality: str | None = Field(None, min_length=1, max_length=16)
    # The study must also hold series of these modalities (e.g. ["RTSTRUCT"]).
    requires: list[str] = Field(default_factory=list)
    enabled: bool = True


class DeidSettings(_Section):
    """PS3.15 Annex E Basic Application Level Confidentiality Profile and options."""

    retain_longitudinal_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = False
    clean_descriptors: bool = True
    # Private attributes kept as "(gggg,xxee) creator" strings, e.g. "(0019,xx0c) SIEMENS MR HEADER".
    private_tag_allowlist: list[str] = Field(default_factory=list)
    # Maximum date shift (days) when dates are shifted per patient.
    date_shift_max_days: int = Field(3650, ge=1)
    # Files holding the site secret for UID hashing and the vault key; created 0600 on first
    # start when missing.  Relative paths are under data_dir.
    uid_secret_file: Path = Path("keys/uid-secret.key")
    vault_key_file: Path = Path("keys/vault.key")


class ResultSettings(_Section):
    # Destinations (peer names) that receive every result besides the sending peer.
    destinations: list[str] = Field(default_factory=list)
    return_to_sender: bool = True
    secondary_capture: bool = True
    series_number_base: int = Field(900, ge=1, le=99999)
    manufacturer: str = "AINODE project"
    institution_label: str = ""


class SenderSettings(_Section):
    max_attempts: int = Field(8, ge=1, le=1000)
    # A batch whose sender died is picked up again after this long.
    lease_seconds: float = Field(300.0, gt=0)
    backoff_seconds: float = Field(5.0, ge=0)
    backoff_max_seconds: float = Field(900.0, ge=0)
    poll_seconds: float = Field(1.0, gt=0)
    commitment_timeout_s: float = Field(120.0, gt=0)


class EngineSettings(_Section):
    # A site folder with validated weights; files there replace the packaged ones by name.
    model_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads for inference in this process; 0: one per core (torch's default).
    cpu_threads: int = Field(0, ge=0, le=256)


class NodeConfig(_Section):
    node: NodeSettings = NodeSettings()
    database: DatabaseSettings = DatabaseSettings()
    completion: CompletionSettings = CompletionSettings()
    jobs: JobSettings = JobSettings()
    peers: list[Peer] = Field(default_factory=list)
    routes: list[Route] = Field(
        default_factory=lambda: [
            Route(engine="ct_lung"),
            Route(engine="radiomics", modality="CT", requires=["RTSTRUCT"]),
            Route(engine="mr_glioma", modality="MR"),
            Route(engine="bone_scan", modality="NM"),
        ]
    )
    deid: DeidSettings = DeidSettings()
    results: ResultSettings = ResultSettings()
    sender: SenderSettings = SenderSettings()
    engines: EngineSettings = EngineSettings()

    @model_validator(mode="after")
    def _cross_checks(self) -> NodeConfig:
        names = [p.name for p in self.peers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"peers: duplicate peer name(s) {sorted(dup)}")
        for dest in self.results.destinations:
            if dest not in names:
                raise ValueError(f"results.destinations: {dest!r} is not a configured peer name")
        return self

    def peer_by_ae(self, ae_title: str) -> Peer | None:
        return next((p for p in self.peers if p.ae_title == ae_title), None)

    def peer_by_name(self, name: str) -> Peer | None:
        return next((p for p in self.peers if p.name == name), None)

    def resolve(self, path: Path) -> Path:
        """A path from the config, relative paths taken under ``node.data_dir``."""
        return path if path.is_absolute() else self.node.data_dir / path


class ConfigError(Exception):
    """A configuration file that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"{key}: {msg}")
    return lines


def parse_config(data: dict, source: str = "<config>") -> NodeConfig:
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def load_config(path: Path | None) -> NodeConfig:
    """Load a TOML file, or the embedded defaults when ``path`` is None."""
    if path is None:
        return NodeConfig()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_config(data, str(path))
