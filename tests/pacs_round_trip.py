"""The hospital round trip for end-to-end tests: a private Orthanc PACS holds a study, sends it
to a node beside it (a real ``dicom-node serve`` child process), and receives the node's
results back into the same study.

One set of steps for every engine's end-to-end test, so each test states only what differs:
the study it sends, the routes, and what it checks in the results.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.net import free_port
from tests.nodeproc import NodeProcess
from tests.peers import OrthancPeer, orthanc_server

# The project's shared validator (dciodvfy, dcmtk and cross-object checks): ../shared beside
# the checkout (CI), or one level further up (a git worktree under the checkout's parent).
_CHECKOUT = Path(__file__).resolve().parents[1]
VALIDATE_OUTPUTS = [p / "shared" / "tools" / "validate_outputs.sh" for p in _CHECKOUT.parents[:2]]


def rest_post(peer: OrthancPeer, path: str, body: bytes,
              content_type: str = "application/dicom") -> Any:
    """POST ``body`` to the PACS's REST API and decode the JSON answer."""
    request = urllib.request.Request(f"{peer.base_url}{path}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


@contextlib.contextmanager
def pacs_with_node(tmp_path: Path, *, routes: Iterable[str] = (), quiet_seconds: float = 2,
                   extra: dict | None = None) -> Iterator[tuple[OrthancPeer, NodeProcess]]:
    """An Orthanc PACS that knows the node as modality ``ainode``, and a running node with one
    worker that sends its results to that PACS as a clinical destination.

    Parameters
    ----------
    tmp_path
        Folder for both (``orthanc/`` and ``node/``).
    routes
        Engines routed to, in order (``[[routes]]`` tables); none: the shipped routes.
    quiet_seconds
        The node's study-completion quiet time.
    extra
        Further node configuration sections (merged over the test defaults).
    """
    node_port = free_port()
    with orthanc_server(tmp_path, {"ainode": ["AINODE", "127.0.0.1", node_port]}) as pacs:
        node = NodeProcess(tmp_path / "node", workers=1, quiet_seconds=quiet_seconds,
                           port=node_port, extra=extra, peers=[
                               {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1",
                                "port": pacs.dicom_port, "kind": "clinical"}])
        with node.config_path.open("a") as config:
            config.writelines(f'[[routes]]\nengine = "{engine}"\n' for engine in routes)
        with node:
            yield pacs, node


def send_through_node(pacs: OrthancPeer, files: Iterable[Path]) -> str:
    """Store ``files`` (one study) in the PACS, then have the PACS C-STORE the study to the
    node; returns the PACS's study id."""
    for path in files:
        rest_post(pacs, "/instances", path.read_bytes())
    (study_id,) = pacs.rest_get("/studies")
    rest_post(pacs, "/modalities/ainode/store", study_id.encode(), "text/plain")
    return str(study_id)


def series_modalities(series: list[dict]) -> set[str]:
    """The modalities of the PACS's series of a study."""
    return {s["MainDicomTags"].get("Modality") for s in series}


def wait_for_series(pacs: OrthancPeer, node: NodeProcess, study_id: str,
                    done: Callable[[list[dict]], bool], timeout_s: float = 240) -> list[dict]:
    """Poll the PACS until ``done(series of the study)``; on time-out fail with the node's
    status and the end of its log, which say where the study stopped."""
    deadline = time.time() + timeout_s
    series: list[dict] = []
    while time.time() < deadline:
        series = pacs.rest_get(f"/studies/{study_id}/series")
        if done(series):
            return series
        time.sleep(1)
    raise AssertionError(
        f"results not in the PACS after {timeout_s} s: {sorted(map(str, series_modalities(series)))}"
        f"\nnode status: {json.dumps(node.status())[:3000]}"
        f"\nnode log: {node.log_path.read_text()[-3000:]}")


def wait_for_modalities(pacs: OrthancPeer, node: NodeProcess, study_id: str, wanted: set[str],
                        timeout_s: float = 240) -> set[str]:
    """Wait until the study holds a series of each modality in ``wanted``."""
    series = wait_for_series(pacs, node, study_id,
                             lambda s: wanted <= series_modalities(s), timeout_s)
    return series_modalities(series)


def results_in_pacs(pacs: OrthancPeer, study_id: str, sent_uids: set[str],
                    out_dir: Path) -> list[Dataset]:
    """The study's instances that were not sent to the node (its results), each also saved
    as ``out_dir/MODALITY-UID.dcm`` for the validators."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for instance in pacs.rest_get(f"/studies/{study_id}/instances"):
        ds = dcmread(io.BytesIO(pacs.rest_get_bytes(f"/instances/{instance['ID']}/file")))
        if str(ds.SOPInstanceUID) not in sent_uids:
            ds.save_as(out_dir / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm")
            results.append(ds)
    return results


def sop_instance_uids(files: Iterable[Path]) -> set[str]:
    """The SOP Instance UIDs of DICOM files (what was sent)."""
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}


def dciodvfy_errors(out_dir: Path) -> list[str]:
    """The ``Error`` lines dciodvfy (``-new``) reports for every ``*.dcm`` in ``out_dir``."""
    return [line for path in sorted(out_dir.glob("*.dcm")) for line in subprocess.run(
        ["dciodvfy", "-new", str(path)], capture_output=True, text=True).stderr.splitlines()
        if line.startswith("Error")]


def validate_outputs(source_dir: Path, out_dir: Path) -> subprocess.CompletedProcess[str] | None:
    """Run the project's shared ``validate_outputs.sh`` on the results (``None`` where
    ``../shared`` is not beside the checkout)."""
    script = next((p for p in VALIDATE_OUTPUTS if p.exists()), None)
    if script is None:
        return None
    return subprocess.run(["bash", str(script), str(source_dir), str(out_dir)],
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable))
