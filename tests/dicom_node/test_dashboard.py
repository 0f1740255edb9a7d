"""The dashboard: login required and audited, lockout, roles, CSRF, escaping, resend, the
result picture, an operator's quarantine release, complete-now, rerun and accession lookup
(audited, the identifier never echoed); and the same pages driven in headless Chromium
(screenshots kept under ``test-artifacts/dashboard/``)."""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import io
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.audit import AuditTrail
from dicom_node.config import parse_config
from dicom_node.dashboard import Dashboard, check_password, hash_password
from dicom_node.deid import Pseudonymizer
from dicom_node.metrics import NodeMetrics
from dicom_node.sample_data import PatientIdentity, ct_series_datasets, phantom_chest_hu
from dicom_node.scp import Receiver
from dicom_node.web import StatusServer
from storage import migrate, outbox
from storage.database import Database
from storage.files import FileStore
from storage.jobs import enqueue
from storage.keys import PURPOSES, QUARANTINE, VAULT, KeyFolder
from storage.studies import ReceivedInstance, complete_quiet_studies, index_instance
from storage.tables import Job, OutboxItem, Quarantined, Study, utcnow
from storage.vault import Vault

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
PASSWORDS = {"olga": "operator-pass-123", "vera": "viewer-pass-4567"}
STUDY = "2.25.4242"
RECEIVING = PatientIdentity(accession="ACC-DASH-1", patient_id="PID-DASH")


def _secondary_capture() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 32, 48, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[..., 0] = 200
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def node(tmp_path):
    """A node database with one study (a finished job, a failed delivery, a result picture)
    and a dashboard with an operator and a viewer, served on a free loopback port."""
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "keys": {"dir": str(tmp_path / "keys")},
        "dashboard": {"users": [
            {"name": "olga", "role": "operator", "password_hash": hash_password(PASSWORDS["olga"])},
            {"name": "vera", "role": "viewer", "password_hash": hash_password(PASSWORDS["vera"])},
        ]}})
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    files = FileStore(tmp_path / "var")
    now = utcnow()
    with db.session() as session:
        indexed = index_instance(session, ReceivedInstance(
            STUDY, "2.25.4243", "2.25.4244", "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.1.2.1", "CT", None, "ANON", "<script>alert(1)</script>", "x", 1,
            "0" * 64), now - dt.timedelta(minutes=5))
        complete_quiet_studies(session, now, set(), now, now)
        (job_id,) = enqueue(session, indexed.study_id, 1, ["ct_lung"], 3, now)
        job = session.get(Job, job_id)
        job.state, job.finished_at = "succeeded", now
        job.summary = '{"timings_s": {"load": 0.4, "engine.tumour": 2.1}}'
        picture = f"results/{job_id}/sc.dcm"
        files.write(picture, _secondary_capture())
        outbox.add(session, job_id, [outbox.OwedObject(
            "pacs", "1.2.840.10008.5.1.4.1.1.7", "2.25.77", "OT", picture)], now)
    with db.session() as session:
        session.execute(OutboxItem.__table__.update().values(
            state="failed", reason="C-STORE status 0xA700", last_status=0xA700, attempts=9))
    # A study still receiving (its identity in the vault) and a quarantined screenshot,
    # both through the receiver's own path.
    keys = KeyFolder(tmp_path / "keys")
    keys.create(PURPOSES)
    receiver = Receiver(config, db, files, Pseudonymizer(config.deid, keys.uid_secret()),
                        Vault(db, keys.ring(VAULT)), keys.ring(QUARANTINE))
    for ds in ct_series_datasets(phantom_chest_hu((2, 8, 8)), identity=RECEIVING):
        assert receiver.ingest(ds, "PACS") == 0
    (screen,) = ct_series_datasets(phantom_chest_hu((1, 8, 8)), identity=RECEIVING)
    screen.SOPClassUID = screen.file_meta.MediaStorageSOPClassUID = \
        "1.2.840.10008.5.1.4.1.1.7"
    assert receiver.ingest(screen, "PACS") == 0
    audit = AuditTrail(tmp_path / "audit.log", "AINODE")
    server = StatusServer("127.0.0.1", 0, db, files, NodeMetrics(), 0,
                          dashboard=Dashboard(config, db, files, audit))
    server.start()
    yield f"http://127.0.0.1:{server.port}", db, tmp_path / "audit.log"
    server.stop()
    audit.close()
    db.dispose()


class Browser:
    """urllib with cookies and without following redirects."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  NoRedirect)

    def request(self, path: str, form: dict | None = None) -> tuple[int, dict, bytes]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def login(self, user: str, password: str | None = None) -> int:
        return self.request("/login", {"user": user,
                                       "password": password or PASSWORDS[user]})[0]

    def csrf(self, path: str = "/outbox") -> str:
        return re.search(rb"name=csrf value=([0-9a-f]+)", self.request(path)[2]).group(1).decode()


def test_password_hashes():
    stored = hash_password("correct horse battery")
    assert check_password("correct horse battery", stored)
    assert not check_password("correct horse batterY", stored)
    assert not check_password("x", "plain-text-password")


def test_every_page_needs_a_login(node):
    base, _, _ = node
    browser = Browser(base)
    for path in ("/", "/studies", "/jobs", "/outbox", "/quarantine", "/engines",
                 f"/picture/{STUDY}"):
        status, headers, _ = browser.request(path)
        assert status == 303 and headers["Location"] == "/login", path
    status, headers, body = browser.request("/login")
    assert status == 200 and b"Password" in body
    assert "script-src" not in headers["Content-Security-Policy"]  # no scripts at all
    assert headers["X-Frame-Options"] == "DENY"


def test_login_is_audited_and_locks_after_five_failures(node):
    base, _, audit_log = node
    browser = Browser(base)
    for _ in range(5):
        assert browser.login("olga", "wrong") == 401
    assert browser.login("olga") == 401  # locked, even with the right password
    assert Browser(base).login("vera") == 303  # other users are not affected
    lines = audit_log.read_bytes().splitlines()
    assert len(lines) == 7
    assert sum(b'EventOutcomeIndicator="4"' in line for line in lines) == 6
    assert all(b'csd-code="110114"' in line for line in lines)
    assert all(PASSWORDS["olga"].encode() not in line for line in lines)


def test_pages_show_pseudonyms_escaped(node):
    base, _, _ = node
    browser = Browser(base)
    assert browser.login("vera") == 303
    status, _, body = browser.request("/studies")
    assert status == 200 and STUDY.encode() in body and b"ct_lung succeeded" in body
    _, _, jobs = browser.request("/jobs")
    assert b"engine.tumour 2.1s" in jobs
    assert b"<script>" not in body and b"&lt;script&gt;alert(1)&lt;/script&gt;" in body
    _, _, outbox_page = browser.request("/outbox")
    assert b"0xA700" in outbox_page and b"Resend" not in outbox_page  # viewer: no action


def test_viewer_cannot_resend_operator_can_with_csrf(node):
    base, db, _ = node
    viewer, operator = Browser(base), Browser(base)
    viewer.login("vera")
    operator.login("olga")
    with db.session() as session:
        item_id = session.query(OutboxItem).one().id
    status, _, _ = viewer.request("/outbox/resend", {"id": item_id, "csrf": viewer.csrf()})
    assert status == 403
    status, _, _ = operator.request("/outbox/resend", {"id": item_id, "csrf": "0" * 32})
    assert status == 403  # wrong token
    status, headers, _ = operator.request("/outbox/resend",
                                          {"id": item_id, "csrf": operator.csrf()})
    assert status == 303 and headers["Location"] == "/outbox"
    with db.session() as session:
        assert session.get(OutboxItem, item_id).state == "pending"


def _receiving_study(db: Database) -> str:
    with db.session() as session:
        return session.query(Study).filter(Study.state == "receiving").one().study_uid


def test_operations_need_the_operator_role_and_csrf(node):
    base, db, _ = node
    viewer, operator = Browser(base), Browser(base)
    viewer.login("vera")
    operator.login("olga")
    study = _receiving_study(db)
    _, _, page = viewer.request("/studies")
    assert b"Complete now" not in page and b"Accession number" not in page
    _, _, page = viewer.request("/quarantine")
    assert b"Release" not in page
    for path, form in (("/studies/complete", {"study": study}),
                       ("/studies/rerun", {"study": STUDY}),
                       ("/studies/lookup", {"accession": RECEIVING.accession}),
                       ("/quarantine/release", {"id": 1, "reason": "checked"})):
        assert viewer.request(path, {**form, "csrf": viewer.csrf()})[0] == 403, path
        assert operator.request(path, {**form, "csrf": "0" * 32})[0] == 403, path
    with db.session() as session:
        assert session.query(Job).count() == 1 and session.query(Quarantined).count() == 1


def test_operator_looks_up_completes_reruns_and_releases(node, caplog):
    caplog.set_level("DEBUG")
    base, db, audit_log = node
    operator = Browser(base)
    operator.login("olga")
    study = _receiving_study(db)
    status, _, page = operator.request("/studies/lookup", {
        "accession": RECEIVING.accession, "csrf": operator.csrf("/studies")})
    assert status == 200 and b"1 studies found" in page and study.encode() in page
    assert RECEIVING.accession.encode() not in page  # not echoed back
    status, _, page = operator.request("/studies/complete", {
        "study": study, "csrf": operator.csrf("/studies")})
    assert status == 200 and b"revision 1 queued" in page
    status, _, page = operator.request("/studies/complete", {
        "study": study, "csrf": operator.csrf("/studies")})
    assert status == 409 and b"already complete" in page
    status, _, page = operator.request("/studies/rerun", {
        "study": STUDY, "engine": "ct_lung", "csrf": operator.csrf("/studies")})
    assert status == 200 and b"revision 2 queued" in page
    with db.session() as session:
        jobs = sorted((j.revision, j.engine, j.state) for j in session.query(Job))
    assert (1, "ct_lung", "succeeded") in jobs and (2, "ct_lung", "queued") in jobs
    with db.session() as session:
        quarantine_id = session.query(Quarantined).one().id
    status, _, page = operator.request("/quarantine/release", {
        "id": quarantine_id, "reason": "", "csrf": operator.csrf("/quarantine")})
    assert status == 409 and b"needs --reason" in page
    status, _, page = operator.request("/quarantine/release", {
        "id": quarantine_id, "reason": "screen checked: no text",
        "csrf": operator.csrf("/quarantine")})
    assert status == 200 and b"sop-class overridden" in page
    with db.session() as session:
        assert session.query(Quarantined).count() == 0
    lines = audit_log.read_bytes().splitlines()
    assert b'csd-code="110112"' in lines[-4]  # the lookup
    assert b"study complete" in lines[-3] and b"study rerun" in lines[-2]
    assert b"screen checked: no text" in lines[-1] and b'UserID="olga"' in lines[-1]
    assert not any(RECEIVING.accession.encode() in line for line in lines)
    assert RECEIVING.accession not in caplog.text and RECEIVING.patient_id not in caplog.text


def test_result_picture(node):
    base, _, _ = node
    browser = Browser(base)
    browser.login("vera")
    status, headers, body = browser.request(f"/picture/{STUDY}")
    assert status == 200 and headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(body))
    assert image.size == (48, 32) and image.getpixel((0, 0))[:3] == (200, 0, 0)
    assert browser.request("/picture/..%2F..%2Fetc")[0] == 400


def test_forged_session_is_refused(node):
    base, _, _ = node
    browser = Browser(base)
    browser.login("vera")
    cookie = next(iter(browser.jar))
    payload, _, signature = cookie.value.partition(".")
    cookie.value = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB") + "." + signature
    assert browser.request("/jobs")[0] == 303


def test_session_expires(tmp_path):
    now = [1_000_000.0]
    config = parse_config({"dashboard": {"session_minutes": 30, "users": [
        {"name": "vera", "role": "viewer", "password_hash": hash_password(PASSWORDS["vera"])}]}})
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    dashboard = Dashboard(config, db, FileStore(tmp_path), clock=lambda: now[0])
    token = dashboard.login("vera", PASSWORDS["vera"], None)
    cookie = f"dicom_node_session={token}"
    assert dashboard.session(cookie) is not None
    now[0] += 29 * 60
    assert dashboard.get("/", cookie).status == 200
    now[0] += 2 * 60
    assert dashboard.session(cookie) is None and dashboard.get("/", cookie).status == 303
    db.dispose()


def test_no_users_means_no_dashboard(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    dashboard = Dashboard(parse_config({}), db, FileStore(tmp_path))
    assert dashboard.get("/", None).status == 503
    assert dashboard.login("admin", "admin", "127.0.0.1") is None
    db.dispose()


@pytest.mark.slow
def test_dashboard_in_headless_chromium(node):
    chromium = shutil.which("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("Debian chromium is not installed")
    base, db, _ = node
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(base + "/")
        assert page.url.endswith("/login")
        page.fill("input[name=user]", "olga")
        page.fill("input[name=password]", PASSWORDS["olga"])
        page.click("button:has-text('Log in')")
        assert page.locator("h2").inner_text() == "Overview"
        page.screenshot(path=str(ARTIFACTS / "overview.png"))
        for name in ("Studies", "Jobs", "Quarantine", "Engines", "Outbox"):
            page.click(f"nav a:has-text('{name}')")
            assert page.locator("h2").inner_text() == name
            page.screenshot(path=str(ARTIFACTS / f"{name.lower()}.png"), full_page=True)
        page.click("button:has-text('Resend')")
        assert "pending" in page.locator("table").inner_text()
        # The operator's lookup by accession number, complete-now, rerun and release.
        page.click("nav a:has-text('Studies')")
        page.fill("input[name=accession]", RECEIVING.accession)
        page.click("button:has-text('Find')")
        assert "1 studies found" in page.locator("main").inner_text()
        assert RECEIVING.accession not in page.content()
        page.screenshot(path=str(ARTIFACTS / "lookup.png"), full_page=True)
        page.click("button:has-text('Complete now')")
        assert "revision 1 queued" in page.locator("p.note").inner_text()
        page.screenshot(path=str(ARTIFACTS / "complete.png"), full_page=True)
        row = page.locator("tr", has_text=STUDY)
        row.locator("select[name=engine]").select_option("ct_lung")
        row.locator("button:has-text('Rerun')").click()
        assert "revision 2 queued" in page.locator("p.note").inner_text()
        page.screenshot(path=str(ARTIFACTS / "rerun.png"), full_page=True)
        page.click("nav a:has-text('Quarantine')")
        page.fill("input[name=reason]", "screen checked: no text")
        page.click("button:has-text('Release')")
        assert "sop-class overridden" in page.locator("p.note").inner_text()
        page.screenshot(path=str(ARTIFACTS / "release.png"), full_page=True)
        page.goto(f"{base}/picture/{STUDY}")
        page.screenshot(path=str(ARTIFACTS / "picture.png"))
        browser.close()
    with db.session() as session:
        assert session.query(OutboxItem).one().state == "pending"
        assert session.query(Quarantined).count() == 0
        # the released screenshot re-opened its (completed) study, as a late arrival does
        assert session.query(Study).filter(Study.state == "receiving").count() == 1
        assert sorted(j.revision for j in session.query(Job)) == [1, 1, 2]
    assert all((ARTIFACTS / f"{n}.png").stat().st_size > 1000 for n in
               ("overview", "studies", "outbox", "picture", "lookup", "complete", "rerun",
                "release"))
