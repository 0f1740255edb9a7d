"""The node's configuration: one TOML file, every key with a documented default.

``config/default.toml`` in the repository shows every key with its default; ``config/README.md``
documents them.  :func:`load_config` rejects a bad file with one line per error naming the key
and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

AeTitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]*[^ ]$")]
# A modality defined term (PS3.3 C.7.3.1.1.1): upper case, digits, underscore.
ModalityTerm = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9_]+$")]
# The word in routes.destinations that stands for the peer that sent the study.
SENDER = "sender"
# "(gggg,xxee) CREATOR": an odd group, the element offset within the creator's block.
_PRIVATE_ENTRY = re.compile(r"^\(\s*([0-9A-Fa-f]{4})\s*,\s*[xX]{2}([0-9A-Fa-f]{2})\s*\)\s*(\S.{0,63})$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    ae_title: AeTitle = "AINODE"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    data_dir: Path = Path("var")
    # Escape hatch: accept associations from calling AE titles that are not configured peers
    # (logged as a warning at start and for every such association; check-config warns).
    accept_unknown_calling_ae: bool = False
    # Source networks (CIDR) associations may come from; empty = any (peers' hosts still apply).
    allowed_networks: list[str] = Field(default_factory=list)
    max_pdu_bytes: int = Field(65536, ge=4096, le=1_048_576)
    # Largest data set one C-STORE may carry; a larger one is aborted while it streams in.
    max_dataset_bytes: int = Field(2 * 1024**3, ge=1024 * 1024)
    # A data set up to this size is received in memory; a larger one spills to a private file
    # in the data folder (memory stays bounded by max_associations x this).  0: always a file.
    dataset_memory_bytes: int = Field(16 * 1024**2, ge=0, le=1024**3)
    max_associations: int = Field(10, ge=1, le=200)
    # Processes accepting associations on the DICOM port(s) (one listening socket, shared): the
    # main one plus receiver_processes - 1 children, so concurrent associations scale past the GIL.
    # max_associations applies to each process.
    receiver_processes: int = Field(1, ge=1, le=64)
    dimse_timeout_s: float = Field(60.0, gt=0)
    network_timeout_s: float = Field(60.0, gt=0)
    # Reject new stores while less than this much disk is free under data_dir (status A700).
    min_free_disk_mb: int = Field(500, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=True)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a CIDR network ({exc})") from None
        return v


class TlsSettings(_Section):
    """DICOM TLS (PS3.15 Annex B) with the BCP 195 profile: TLS 1.2+ with ECDHE/AES-GCM, 1.3."""

    # Listen for DICOM TLS on `port` (needs certificate_file, private_key_file, ca_file).
    receive: bool = False
    port: int = Field(2762, ge=1, le=65535)
    # The node's certificate (PEM, chain allowed) and its private key; relative paths are
    # under data_dir like the other key files.
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    # CA certificates (PEM) that peers' certificates must chain to, both directions.
    ca_file: Path | None = None
    # Every TLS peer must present a certificate that chains to ca_file.
    require_client_certificate: bool = True
    # Plain (unencrypted) DICOM on node.port; false = TLS only.
    plain_dicom_enabled: bool = True

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if not self.plain_dicom_enabled and not self.receive:
            raise ValueError("plain_dicom_enabled = false needs receive = true "
                             "(the node would listen nowhere)")
        if self.receive and None in (self.certificate_file, self.private_key_file,
                                     self.ca_file):
            raise ValueError("receive = true needs certificate_file, private_key_file "
                             "and ca_file")
        return self


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address or ``localhost``) listens on loopback only."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name or "" (every interface): not provably loopback
        return False


# libpq modes that encrypt AND check the server's certificate; "require" encrypts but would
# talk to anyone who answers on the server's address.
VERIFIED_SSLMODES = ("verify-ca", "verify-full")


class DatabaseSettings(_Section):
    # Relative sqlite paths are resolved against the working directory, as SQLAlchemy does.
    url: str = "sqlite:///var/node.db"
    # PostgreSQL on another machine without sslmode=verify-ca/verify-full is refused unless
    # this is set: the index (pseudonymous) and the vault's ciphertexts would cross the
    # network in clear.  For a network that never leaves the host (a compose bridge).
    allow_unencrypted_network: bool = False

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v.startswith("sqlite:") or v.startswith("postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        return v

    def remote_server_in_clear(self) -> str | None:
        """The PostgreSQL host reached over the network without a verified TLS connection,
        else None (SQLite, loopback, a Unix socket, or ``sslmode=verify-ca/verify-full``)."""
        if not self.url.startswith("postgresql"):
            return None
        parts = urlsplit(self.url)
        query = parse_qs(parts.query)
        hosts = [parts.hostname or ""] + query.get("host", [])
        remote = [h for h in hosts if h and not h.startswith("/") and not is_loopback(h)]
        if not remote or query.get("sslmode", [""])[-1] in VERIFIED_SSLMODES:
            return None
        return remote[0]

    @model_validator(mode="after")
    def _encrypted_off_host(self) -> DatabaseSettings:
        host = self.remote_server_in_clear()
        if host is not None and not self.allow_unencrypted_network:
            raise ValueError(f"url: PostgreSQL on {host!r} without sslmode=verify-full (or "
                             "verify-ca): the index and the vault's ciphertexts would cross "
                             "the network in clear; add ?sslmode=verify-full&sslrootcert=CA "
                             "(or allow_unencrypted_network = true for a host-internal network)")
        return self


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
    # Job threads (and the inference threads they start) run this much nicer than the
    # receiver, so a PACS sending while a job runs is not slowed down (Linux niceness, 0-19).
    nice: int = Field(10, ge=0, le=19)


class DestinationKind(StrEnum):
    CLINICAL = "clinical"
    RESEARCH = "research"


class Peer(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AeTitle
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    # clinical: results are re-identified; research: results leave pseudonymized.  Required:
    # a missing kind must not silently mean "send identities".
    kind: DestinationKind
    # This peer may send studies to the node.
    may_send: bool = True
    # Associations from this peer's AE title must come from an address `host` resolves to.
    check_host: bool = True
    # Talk to this peer over DICOM TLS only: results are sent with TLS, and associations from
    # it are accepted only on the TLS port.
    tls: bool = False
    # Server name checked against the peer's certificate when sending (default: host).
    tls_server_name: str | None = None
    # Associations from this peer must present a client certificate that chains to tls.ca_file
    # (implied for every peer by tls.require_client_certificate).
    require_client_certificate: bool = False
    # Modalities of result objects this peer receives when it is a configured destination
    # (e.g. ["RTSTRUCT"] for a planning system); empty = all.
    accepts: list[ModalityTerm] = Field(default_factory=list)
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
    modality: ModalityTerm | None = None
    # The study must also hold series of these modalities (e.g. ["RTSTRUCT"]).
    requires: list[ModalityTerm] = Field(default_factory=list)
    enabled: bool = True
    # Where this route's results go: peer names, and "sender" for the peer that sent the
    # study.  Default: back to the sender only.
    destinations: list[str] = Field(default_factory=lambda: [SENDER], min_length=1)


class DeidSettings(_Section):
    """PS3.15 Annex E Basic Application Level Confidentiality Profile and options."""

    retain_longitudinal_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    retain_device_identity: bool = False
    clean_descriptors: bool = True
    # Private attributes kept as "(gggg,xxee) creator" strings, e.g. "(0019,xx0c) SIEMENS MR HEADER".
    private_tag_allowlist: list[str] = Field(default_factory=list)
    # Words (or phrases) cut out of every kept descriptor, e.g. the hospital's and wards' names.
    scrub_words: list[str] = Field(default_factory=list)

    @field_validator("private_tag_allowlist")
    @classmethod
    def _private_entries(cls, v: list[str]) -> list[str]:
        for entry in v:
            m = _PRIVATE_ENTRY.match(entry.strip())
            if m is None or int(m.group(1), 16) % 2 == 0 or int(m.group(1), 16) < 0x0009:
                raise ValueError(f"{entry!r} is not '(gggg,xxee) CREATOR' with an odd "
                                 "private group gggg (e.g. '(0019,xx0c) SIEMENS MR HEADER')")
        return v
    # Maximum date shift (days) when dates are shifted per patient.
    date_shift_max_days: int = Field(3650, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _moved_key_files(cls, data: object) -> object:
        # Key files used to live under data_dir, beside the data they protect.
        moved = sorted(k for k in ("uid_secret_file", "vault_key_file")
                       if isinstance(data, dict) and k in data)
        if moved:
            raise ValueError(
                f"{', '.join(moved)}: no longer used; keys live in the [keys] dir folder, "
                "outside data_dir (config/README.md). Remove these lines, set [keys] dir, then "
                "run 'dicom-node init-keys --import-from <folder of the old key files>'")
        return data


class KeySettings(_Section):
    """Where the node's keys live: a folder of its own, never inside ``node.data_dir``."""

    # uid-secret.key, vault-NNNN.key, quarantine-NNNN.key. Unset: "keys" beside data_dir
    # (data_dir's parent folder / keys; "./keys" with the default data_dir "var"). Relative
    # paths are taken from the working directory, as data_dir is.
    dir: Path | None = None


class ResultSettings(_Section):
    # Replaced by [[routes]] destinations; a non-empty list is refused (it sent every result
    # to these peers whoever had sent the study).
    destinations: list[str] = Field(default_factory=list)
    return_to_sender: bool = True
    secondary_capture: bool = True
    series_number_base: int = Field(900, ge=1, le=99999)
    manufacturer: str = "AINODE project"
    institution_label: str = ""


class SenderSettings(_Section):
    # A delivery is retried (with backoff) until this long after its result was queued, so a
    # PACS that is down over a night loses nothing; then it is `failed` until resent.
    retry_window_hours: float = Field(24.0, gt=0)
    # A cap on attempts inside the window (the window is the rule; this only bounds it).
    max_attempts: int = Field(1000, ge=1, le=100000)
    # A batch whose sender died is picked up again after this long.
    lease_seconds: float = Field(300.0, gt=0)
    backoff_seconds: float = Field(5.0, ge=0)
    backoff_max_seconds: float = Field(900.0, ge=0)
    poll_seconds: float = Field(1.0, gt=0)
    commitment_timeout_s: float = Field(120.0, gt=0)


class HttpSettings(_Section):
    """The health and metrics endpoint (``/healthz``, ``/metrics``) of `serve`."""

    enabled: bool = True
    # Loopback by default: metrics name peers and engines; expose them deliberately.
    address: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)  # 0: any free port (logged at start)
    # HTTPS with the node's certificate (tls.certificate_file, tls.private_key_file).  The
    # dashboard sends passwords and session cookies, so it refuses plain HTTP off loopback.
    tls: bool = False


class DashboardUser(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Literal["viewer", "operator"]
    # "scrypt$N$r$p$salt$hash" from `dicom-node dashboard-password`; never a plain password.
    password_hash: str = Field(pattern=r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")


class DashboardSettings(_Section):
    """The web dashboard on the [http] endpoint; no users means nobody can log in."""

    enabled: bool = True
    session_minutes: float = Field(30.0, gt=0, le=24 * 60)
    users: list[DashboardUser] = Field(default_factory=list)


class LoggingSettings(_Section):
    """Where the node's log goes besides stderr (the level is ``node.log_level``)."""

    format: Literal["text", "json"] = "text"
    # Rotating log file, relative to data_dir; "" writes none.  Not written under systemd,
    # whose journal already keeps stderr.
    file: str = "logs/node.log"
    file_max_mb: int = Field(50, ge=1)
    file_count: int = Field(10, ge=1, le=1000)


class AuditSettings(_Section):
    """The audit trail (PS3.15 A.5 / IHE ATNA messages), see dicom_node/audit.py."""

    enabled: bool = True
    # Append-only, one XML AuditMessage per line; relative paths are under data_dir.
    file: Path = Path("audit/audit.log")
    # Also send to a syslog collector (an ATNA audit record repository) when set.
    syslog_host: str = ""
    syslog_port: int = Field(6514, ge=1, le=65535)
    syslog_protocol: Literal["tls", "tcp", "udp"] = "tls"
    syslog_ca_file: Path | None = None  # trusted CA for the collector's certificate (tls)
    enterprise_site_id: str = ""


class RetentionSettings(_Section):
    """What the node deletes and when (storage.retention); 0 keeps that data forever."""

    # Whole studies (received instances, results, jobs, deliveries) this long after their
    # last activity, and only once every result owed for them is delivered.
    study_days: float = Field(7.0, ge=0)
    quarantine_days: float = Field(30.0, ge=0)
    # Identities of studies no longer in the index, this long after they were recorded.
    vault_days: float = Field(30.0, ge=0)
    # How often `serve` purges (the `purge` command runs it at once).
    interval_minutes: float = Field(60.0, gt=0)


class EngineSettings(_Section):
    # A site folder with validated weights; files there replace the packaged ones by name.
    model_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads for inference in this process; 0: one per core (torch's default).
    cpu_threads: int = Field(0, ge=0, le=256)


class RadiomicsConfig(_Section):
    """The radiomics engine: IBSI settings per modality, site changes, and the CSV export.

    Each modality starts from an IBSI preset (``ai_engines.radiomics.settings.PRESETS``); the
    optional keys below replace that preset's value for every modality.  The settings used
    are stated in every SR and CSV row.
    """

    preset_ct: str = "IBSI-C"
    preset_mr: str = "IBSI-D"
    preset_pt: str = "IBSI-D"
    # Resampling: [z, y, x] mm, or [] for none (z = 0: in-plane only).
    spacing_mm: list[float] | None = None
    interpolation: Literal["nearest", "linear", "cubic"] | None = None
    discretisation: Literal["FBN", "FBS"] | None = None  # fixed bin number or bin width
    bin_number: int | None = Field(None, ge=1, le=4096)
    bin_width: float | None = Field(None, gt=0)
    # Re-segmentation range [low, high] in the image's unit, or [] for none.
    resegmentation_range: list[float] | None = None
    outlier_sigma: float | None = Field(None, ge=0)  # 0: no outlier filter
    # IBSI texture aggregation: "2D_avg", "2D_slice_merged", "2.5D_direction_merged",
    # "2.5D_merged", "3D_avg", "3D_merged".
    texture_aggregations: list[str] | None = None
    families: list[str] | None = None  # "morph", "loc", "stat", "ih", "ivh", "cm", ...
    feature_maps: bool | None = None  # the GLCM entropy Parametric Map
    map_levels: int | None = Field(None, ge=2, le=256)
    map_window: int | None = Field(None, ge=3, le=31)
    # Also measure the regions other engines find (every GTV of ct_lung, the glioma
    # sub-regions of mr_glioma: their SEG/RTSTRUCT as the node stored it).  The radiomics job
    # then runs on every study another engine runs on, after that engine's job.  Off by
    # default: a research-use report on every CT study is for a site to choose.
    measure_engine_regions: bool = False
    # Folder the features CSV of every radiomics job is written to (absolute, or under
    # data_dir); unset: no export.
    export_dir: Path | None = None

    def site_changes(self) -> dict[str, object]:
        """The keys set here that change the presets (as ``site_settings`` takes them)."""
        changes = {key: getattr(self, key) for key in (
            "spacing_mm", "interpolation", "discretisation", "bin_number", "bin_width",
            "resegmentation_range", "outlier_sigma", "texture_aggregations", "families",
            "map_levels", "map_window") if getattr(self, key) is not None}
        if self.feature_maps is not None:
            changes["entropy_map"] = self.feature_maps
        return changes

    def settings_by_modality(self) -> dict:
        """``{"CT": RadiomicsSettings, "MR": ..., "PT": ...}``."""
        from ai_engines.radiomics.settings import site_settings

        changes = self.site_changes()
        return {"CT": site_settings(self.preset_ct, changes),
                "MR": site_settings(self.preset_mr, changes),
                "PT": site_settings(self.preset_pt, changes)}

    @model_validator(mode="after")
    def _valid_settings(self) -> RadiomicsConfig:
        try:
            self.settings_by_modality()
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return self


class NodeConfig(_Section):
    node: NodeSettings = NodeSettings()
    database: DatabaseSettings = DatabaseSettings()
    completion: CompletionSettings = CompletionSettings()
    jobs: JobSettings = JobSettings()
    tls: TlsSettings = TlsSettings()
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
    keys: KeySettings = KeySettings()
    results: ResultSettings = ResultSettings()
    sender: SenderSettings = SenderSettings()
    engines: EngineSettings = EngineSettings()
    retention: RetentionSettings = RetentionSettings()
    http: HttpSettings = HttpSettings()
    audit: AuditSettings = AuditSettings()
    logging: LoggingSettings = LoggingSettings()
    dashboard: DashboardSettings = DashboardSettings()
    radiomics: RadiomicsConfig = RadiomicsConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> NodeConfig:
        names = [p.name for p in self.peers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"peers: duplicate peer name(s) {sorted(dup)}")
        titles = [p.ae_title for p in self.peers]
        dup = {t for t in titles if titles.count(t) > 1}
        if dup:
            raise ValueError(f"peers: duplicate AE title(s) {sorted(dup)}; an AE title must "
                             "name one peer (its kind and host decide what it gets)")
        for dest in self.results.destinations:
            if dest not in names:
                raise ValueError(f"results.destinations: {dest!r} is not a configured peer name")
        keys, data = self.keys_dir.resolve(), self.node.data_dir.resolve()
        if keys == data or data in keys.parents:
            raise ValueError(f"keys.dir: {self.keys_dir} lies inside node.data_dir "
                             f"({self.node.data_dir}); a copy of the data folder would carry "
                             "its own keys")
        if self.http.tls and None in (self.tls.certificate_file, self.tls.private_key_file):
            raise ValueError("http.tls = true needs tls.certificate_file and "
                             "tls.private_key_file (the node's certificate)")
        if (self.http.enabled and self.dashboard.enabled and self.dashboard.users
                and not self.http.tls and not is_loopback(self.http.address)):
            raise ValueError(f"http.address {self.http.address!r} is not loopback: the "
                             "dashboard's passwords and session cookies would cross the "
                             "network in clear; set http.tls = true (or dashboard.enabled = "
                             "false, or a loopback address behind a TLS proxy)")
        if self.results.destinations:
            raise ValueError("results.destinations is replaced by [[routes]] destinations "
                             "(each route names the peers its results go to, \"sender\" for "
                             "the sending peer)")
        for i, route in enumerate(self.routes):
            for dest in route.destinations:
                if dest != SENDER and dest not in names:
                    raise ValueError(f"routes.{i}.destinations: {dest!r} is neither "
                                     f"\"{SENDER}\" nor a configured peer name")
        tls_ready = None not in (self.tls.certificate_file, self.tls.private_key_file,
                                 self.tls.ca_file)
        for peer in self.peers:
            if peer.tls and not tls_ready:
                raise ValueError(f"peers {peer.name!r}: tls = true needs tls.certificate_file, "
                                 "tls.private_key_file and tls.ca_file")
            if (peer.tls or peer.require_client_certificate) and peer.may_send and \
                    not self.tls.receive:
                raise ValueError(f"peers {peer.name!r}: receiving from it over TLS needs "
                                 "tls.receive = true")
        return self

    @property
    def keys_dir(self) -> Path:
        """The key folder: ``keys.dir``, or ``keys`` beside (never inside) ``node.data_dir``."""
        return self.keys.dir if self.keys.dir is not None else \
            self.node.data_dir.parent / "keys"

    def result_consumers(self) -> frozenset[str]:
        """Engines configured to measure the regions other engines find (spec
        ``consumes_results`` and switched on here)."""
        return frozenset({"radiomics"} if self.radiomics.measure_engine_regions else ())

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


def check_config(config: NodeConfig, installed_engines: list[str]) -> tuple[list[str], list[str]]:
    """What ``check-config`` adds to loading: errors and warnings, one line each, naming the key.

    Parameters
    ----------
    config
        A configuration that loaded.
    installed_engines
        Engine names this installation has (``ai_engines.registry.available_engines()``).

    Returns
    -------
    errors, warnings
    """
    errors: list[str] = []
    warnings: list[str] = []
    for i, route in enumerate(config.routes):
        if route.engine not in installed_engines:
            errors.append(f"routes.{i}.engine: {route.engine!r} is not an installed engine "
                          f"(installed: {', '.join(installed_engines) or 'none'})")
    if config.node.accept_unknown_calling_ae:
        warnings.append("node.accept_unknown_calling_ae: true accepts associations from any "
                        "calling AE title (only node.allowed_networks still applies); use it "
                        "only while setting a node up")
    senders = [p for p in config.peers if p.may_send]
    if not senders and not config.node.accept_unknown_calling_ae:
        warnings.append("peers: no peer with may_send = true; every association is rejected")
    for i, peer in enumerate(config.peers):
        if peer.may_send and not peer.check_host and not config.node.allowed_networks:
            warnings.append(f"peers.{i}.check_host: false and no node.allowed_networks: "
                            f"{peer.ae_title!r} is accepted from any address")
    if None not in (config.tls.certificate_file, config.tls.private_key_file,
                    config.tls.ca_file):
        from dicom_node.tls import TlsConfigError, server_context

        try:
            server_context(config.tls, config.resolve)
        except TlsConfigError as exc:
            errors.extend(exc.errors)
    elif config.http.tls:  # the certificate and key alone serve HTTPS
        from dicom_node.tls import TlsConfigError, https_context

        try:
            https_context(config.tls, config.resolve)
        except TlsConfigError as exc:
            errors.extend(exc.errors)
    in_clear = config.database.remote_server_in_clear()
    if in_clear is not None:  # only reachable with allow_unencrypted_network = true
        warnings.append(f"database.allow_unencrypted_network: PostgreSQL on {in_clear!r} is "
                        "reached without verified TLS; keep that network inside the host")
    cpus = os.cpu_count() or 1
    if config.node.receiver_processes > cpus:
        warnings.append(f"node.receiver_processes: {config.node.receiver_processes} processes "
                        f"on {cpus} CPUs; more receiver processes than CPUs gain nothing")
    if config.tls.receive and config.tls.plain_dicom_enabled:
        warnings.append("tls.plain_dicom_enabled: plain DICOM is still open on node.port "
                        "besides TLS on tls.port")
    return errors, warnings
