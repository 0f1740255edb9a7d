"""The dashboard: a small, server-rendered web view of the node for PACS administrators.

Pages: overview (counts by state), studies (pseudonymous, with their series and jobs, and the
result picture), jobs (stages, timings, reasons), outbox (with resend), quarantine, engines
and their model cards.  Two roles: ``viewer`` reads; ``operator`` also resends deliveries,
releases quarantined instances, completes a study now or reruns it, and looks a study up by
its accession number (through the vault, audited).

Security, because a security review will look here first:

- login required for every page; users and scrypt password hashes come from the configuration
  (``dicom-node dashboard-password`` makes a hash), none are built in, and with no user
  configured nobody can log in (fail closed);
- sessions are HMAC-signed cookies (HttpOnly, SameSite=Strict, and Secure over HTTPS) that
  expire, with a per-process secret, so a restart logs everyone out;
- off loopback the configuration refuses the dashboard without HTTPS (``http.tls``), so
  passwords and cookies never cross a network in clear;
- every state change is a POST with a CSRF token bound to the session; a viewer's POST is 403;
- five failed logins for a user within five minutes lock that user for five minutes;
- every value is HTML-escaped; a Content-Security-Policy forbids scripts altogether;
- logins (good and bad) go to the audit trail; pages show pseudonyms only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import io
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from dicom_node.audit import AuditTrail
from dicom_node.config import DashboardUser, NodeConfig
from storage.database import Database
from storage.files import FileStore
from storage.jobs import JobQueue
from storage.monitoring import quarantine_rows, recent_studies, study_result_folders
from storage.outbox import Outbox
from storage.studies import counts

if TYPE_CHECKING:
    from dicom_node.completion import Dispatch

SECONDARY_CAPTURE = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.4")
COOKIE = "dicom_node_session"
LOCKOUT_FAILURES, LOCKOUT_SECONDS = 5, 300
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` for the configuration (``dashboard.users``)."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf: str


class Dashboard:
    """Pages and actions, independent of the HTTP server that carries them."""

    def __init__(self, config: NodeConfig, db: Database, files: FileStore,
                 audit: AuditTrail | None = None, clock: Callable[[], float] = time.time):
        self.config = config
        self.db = db
        self.files = files
        self.audit = audit
        self.clock = clock
        self.users: dict[str, DashboardUser] = {u.name: u for u in config.dashboard.users}
        self._secret = secrets.token_bytes(32)
        # Over HTTPS the browser must never send the session cookie in clear.
        self._cookie_flags = "HttpOnly; SameSite=Strict; Path=/" + (
            "; Secure" if config.http.tls else "")
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    # -- sessions ---------------------------------------------------------------------------
    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def issue(self, user: DashboardUser) -> str:
        expires = int(self.clock() + self.config.dashboard.session_minutes * 60)
        payload = base64.urlsafe_b64encode(json.dumps(
            {"u": user.name, "r": user.role, "e": expires,
             "c": secrets.token_hex(16)}).encode()).decode()
        return f"{payload}.{self._sign(payload.encode())}"

    def session(self, cookie_header: str | None) -> Session | None:
        if not cookie_header:
            return None
        cookie = SimpleCookie()
        try:
            cookie.load(cookie_header)
        except Exception:  # a malformed header is no session
            return None
        token = cookie[COOKIE].value if COOKIE in cookie else ""
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload.encode())):
            return None
        data = json.loads(base64.urlsafe_b64decode(payload))
        user = self.users.get(data["u"])
        if data["e"] < self.clock() or user is None or user.role != data["r"]:
            return None
        return Session(user.name, user.role, data["c"])

    def _locked(self, name: str) -> bool:
        now = self.clock()
        recent = [t for t in self._failures.get(name, []) if now - t < LOCKOUT_SECONDS]
        self._failures[name] = recent
        return len(recent) >= LOCKOUT_FAILURES

    def login(self, name: str, password: str, address: str | None) -> str | None:
        """A session token, or None (wrong user or password, or locked); audited."""
        with self._lock:
            user = self.users.get(name)
            ok = (user is not None and not self._locked(name)
                  and check_password(password, user.password_hash))
            if not ok:
                self._failures.setdefault(name, []).append(self.clock())
        if self.audit is not None:
            self.audit.login(name if user is not None else "(unknown user)", address, ok)
        return self.issue(user) if ok and user is not None else None

    # -- HTTP entry points --------------------------------------------------------------------
    def get(self, path: str, cookie: str | None) -> Response:
        if path == "/login":
            return self._page("Log in", _login_form(), None)
        if not self.users:
            return Response(503, b"The dashboard has no users: add [[dashboard.users]] "
                            b"(dicom-node dashboard-password makes a hash).\n", "text/plain")
        session = self.session(cookie)
        if session is None:
            return Response(303, headers={"Location": "/login"})
        pages: dict[str, Callable[[Session], str]] = {
            "/": self._overview, "/studies": self._studies, "/jobs": self._jobs,
            "/outbox": self._outbox, "/quarantine": self._quarantine,
            "/engines": self._engines}
        if path in pages:
            title = path.strip("/").capitalize() or "Overview"
            return self._page(title, pages[path](session), session)
        if path.startswith("/picture/"):
            return self._picture(path.removeprefix("/picture/"))
        return Response(404, b"not found\n", "text/plain")

    def post(self, path: str, cookie: str | None, form: dict[str, list[str]],
             address: str | None) -> Response:
        if path == "/login":
            token = self.login(_one(form, "user"), _one(form, "password"), address)
            if token is None:
                return self._page("Log in", _login_form("Wrong user or password, or the "
                                                        "user is locked for a while."), None,
                                  status=401)
            return Response(303, headers={"Location": "/", "Set-Cookie":
                                          f"{COOKIE}={token}; {self._cookie_flags}"})
        session = self.session(cookie)
        if session is None:
            return Response(303, headers={"Location": "/login"})
        if not hmac.compare_digest(_one(form, "csrf"), session.csrf):
            return Response(403, b"missing or wrong CSRF token\n", "text/plain")
        if path == "/logout":
            return Response(303, headers={"Location": "/login", "Set-Cookie":
                                          f"{COOKIE}=; Max-Age=0; {self._cookie_flags}"})
        if session.role != "operator":
            return Response(403, b"this action needs the operator role\n", "text/plain")
        if path == "/outbox/resend":
            try:
                item_id = int(_one(form, "id"))
            except ValueError:
                return Response(400, b"bad delivery id\n", "text/plain")
            Outbox(self.db).resend(item_id=item_id)
            return Response(303, headers={"Location": "/outbox"})
        operations: dict[str, Callable[[Session, dict[str, list[str]]], Response]] = {
            "/studies/lookup": self._lookup, "/studies/complete": self._complete,
            "/studies/rerun": self._rerun, "/quarantine/release": self._release}
        if path in operations:
            return operations[path](session, form)
        return Response(404, b"not found\n", "text/plain")

    # -- operator actions (POST, CSRF-checked, operator role) ------------------------------
    def _keys(self):  # noqa: ANN202
        from storage.keys import KeyFolder

        return KeyFolder(self.config.keys_dir)

    def _lookup(self, session: Session, form: dict[str, list[str]]) -> Response:
        """Pseudonymous studies for an accession number, through the vault; audited with the
        kind of identifier and the studies found, never the identifier (which is neither
        logged nor put in a URL: it came in a POST body and is not echoed back)."""
        from dicom_node.lookup import find_studies
        from storage.keys import VAULT, KeyFileError
        from storage.vault import Vault

        accession = _one(form, "accession").strip()
        if not accession or len(accession) > 64:
            return self._studies_after(session, "Give an accession number (at most 64 "
                                       "characters).", 400)
        try:
            found = find_studies(Vault(self.db, self._keys().ring(VAULT)), "accession",
                                 accession)
        except KeyFileError:
            return self._studies_after(session, "The vault key is not available to the "
                                       "dashboard's process.", 503)
        if self.audit is not None:
            self.audit.lookup(session.user, "accession", [f.study_uid for f in found])
        rows = [(f.study_uid, f.patient_pseudonym) for f in found]
        result = (f"<p class=note>{len(found)} studies found for that accession number.</p>"
                  + (_table(["study (pseudonym)", "patient (pseudonym)"], rows) if rows
                     else ""))
        return self._page("Studies", result + self._studies(session), session)

    def _complete(self, session: Session, form: dict[str, list[str]]) -> Response:
        from dicom_node.completion import complete_now

        return self._study_action(session, form, "complete",
                                  lambda uid: complete_now(self.config, self.db, uid))

    def _rerun(self, session: Session, form: dict[str, list[str]]) -> Response:
        from dicom_node.completion import rerun

        engine = _one(form, "engine") or None
        return self._study_action(session, form, "rerun",
                                  lambda uid: rerun(self.config, self.db, uid, engine))

    def _study_action(self, session: Session, form: dict[str, list[str]], action: str,
                      run: Callable[[str], Dispatch]) -> Response:
        from storage.studies import StudyRefused

        study_uid = _one(form, "study")
        if not _is_uid(study_uid):
            return Response(400, b"bad study UID\n", "text/plain")
        try:
            done = run(study_uid)
        except StudyRefused as exc:
            return self._studies_after(session, str(exc), 409)
        if self.audit is not None:
            self.audit.operator_action(session.user, f"study {action}", done.study_uid,
                                       f"revision {done.revision}, jobs {list(done.job_ids)} "
                                       f"for {', '.join(done.engines) or 'no matching route'}")
        jobs = ", ".join(f"#{i} {e}" for i, e in zip(done.job_ids, done.engines, strict=False))
        return self._studies_after(session, f"Study {done.study_uid}: revision {done.revision} "
                                   f"queued ({jobs or 'no route matches its series'}).")

    def _studies_after(self, session: Session, message: str, status: int = 200) -> Response:
        note = f"<p class={'note' if status < 400 else 'error'}>{_e(message)}</p>"
        return self._page("Studies", note + self._studies(session), session, status)

    def _release(self, session: Session, form: dict[str, list[str]]) -> Response:
        from dicom_node.quarantine_release import ReleaseRefused, release
        from storage.keys import KeyFileError

        try:
            quarantine_id = int(_one(form, "id"))
        except ValueError:
            return Response(400, b"bad quarantine id\n", "text/plain")
        why = _one(form, "reason")
        try:
            done = release(self.config, self.db, self.files, self._keys(), quarantine_id,
                           session.user, why, self.audit)
            message, status = (f"Instance {quarantine_id} released ({done.overridden} "
                               f"overridden) into study {done.study_uid}.", 200)
        except ReleaseRefused as exc:
            message, status = str(exc), 409
        except KeyFileError:
            message, status = "The keys a release needs are not available to the " \
                "dashboard's process.", 503
        note = f"<p class={'note' if status < 400 else 'error'}>{_e(message)}</p>"
        return self._page("Quarantine", note + self._quarantine(session), session, status)

    # -- pages ------------------------------------------------------------------------------
    def _page(self, title: str, content: str, session: Session | None,
              status: int = 200) -> Response:
        nav = ""
        if session is not None:
            links = " ".join(f'<a href="{href}">{name}</a>' for href, name in (
                ("/", "Overview"), ("/studies", "Studies"), ("/jobs", "Jobs"),
                ("/outbox", "Outbox"), ("/quarantine", "Quarantine"), ("/engines", "Engines")))
            nav = (f"<nav>{links}<form method=post action=/logout class=inline>"
                   f"{_csrf(session)}<span>{_e(session.user)} ({_e(session.role)})</span> "
                   "<button>Log out</button></form></nav>")
        body = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
                f"<title>{_e(title)} · {_e(self.config.node.ae_title)}</title>"
                f"<style>{_CSS}</style></head><body><header><h1>{_e(self.config.node.ae_title)}"
                f" <small>DICOM AI node</small></h1>{nav}</header><main><h2>{_e(title)}</h2>"
                f"{content}</main></body></html>")
        return Response(status, body.encode())

    def _overview(self, _session: Session) -> str:
        with self.db.session() as session:
            report = counts(session)
        report["outbox"] = Outbox(self.db).counts()
        rows = [(kind, ", ".join(f"{k}: {v}" for k, v in sorted(report[kind].items()))
                 or "none") for kind in ("studies", "series", "instances", "jobs", "outbox")]
        free = self.files.free_bytes() / 2**30
        return _table(["", "by state"], rows) + f"<p>Free disk: {free:.1f} GiB</p>"

    def _studies(self, session: Session) -> str:
        operator = session.role == "operator"
        rows = []
        for study in recent_studies(self.db):
            series = ", ".join(f"{x.modality} ×{x.instances}" for x in study.series)
            jobs = ", ".join(f"#{i} {engine} {state}" + (f" ({code})" if code else "")
                             for i, engine, state, code in study.jobs)
            picture = f'<a href="/picture/{quote(study.study_uid)}">picture</a>' \
                if any(state in ("succeeded", "declined") for _, _, state, _ in study.jobs) \
                else ""
            actions = self._study_actions(session, study.study_uid, study.state) \
                if operator else ""
            rows.append((study.study_uid, study.calling_ae, study.state, str(study.revision),
                         study.last_received_at.strftime("%Y-%m-%d %H:%M:%S"), series, jobs,
                         _Raw(picture + actions)))
        lookup = ("<form method=post action=/studies/lookup class=lookup>"
                  f"{_csrf(session)}<label>Accession number <input name=accession "
                  "autocomplete=off maxlength=64 required></label> <button>Find</button> "
                  "<small>(through the vault; audited)</small></form>") if operator else ""
        return lookup + _table(["study (pseudonym)", "from", "state", "rev", "last received",
                                "series", "jobs", ""], rows)

    def _study_actions(self, session: Session, study_uid: str, state: str) -> str:
        """An operator's buttons for one study: complete now (receiving) or rerun (complete)."""
        hidden = f"{_csrf(session)}<input type=hidden name=study value={_e(study_uid)}>"
        if state != "complete":
            return (f"<form method=post action=/studies/complete class=inline>{hidden}"
                    "<button>Complete now</button></form>")
        engines = "".join(f"<option value={_e(e)}>{_e(e)}</option>" for e in
                          dict.fromkeys(r.engine for r in self.config.routes if r.enabled))
        return (f"<form method=post action=/studies/rerun class=inline>{hidden}"
                f"<select name=engine><option value=''>every route</option>{engines}</select>"
                " <button>Rerun</button></form>")

    def _jobs(self, _session: Session) -> str:
        rows = []
        for job in JobQueue(self.db).list(limit=100):
            timings = (job.summary or {}).get("timings_s", {})
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            rows.append((f"#{job.id}", job.engine, job.state, job.study_uid,
                         f"{job.attempts}/{job.max_attempts}",
                         f"{job.reason_code}: {job.reason}" if job.reason_code else "", stages))
        return _table(["job", "engine", "state", "study", "tries", "reason", "stages"], rows)

    def _outbox(self, session: Session) -> str:
        rows = []
        for item in Outbox(self.db).list(limit=200):
            action = ""
            if session.role == "operator" and item.state in ("failed", "sent"):
                action = (f"<form method=post action=/outbox/resend class=inline>"
                          f"{_csrf(session)}<input type=hidden name=id value={item.id}>"
                          f"<button>Resend</button></form>")
            status = f"0x{item.last_status:04X}" if item.last_status is not None else ""
            rows.append((str(item.id), item.destination, item.modality, item.state,
                         str(item.attempts), status, item.reason or "", item.study_uid,
                         _Raw(action)))
        return _table(["id", "to", "object", "state", "tries", "status", "reason", "study", ""],
                      rows)

    def _quarantine(self, session: Session) -> str:
        from dicom_node.quarantine_release import RELEASABLE

        rows = []
        for q in quarantine_rows(self.db):
            action = ""
            if session.role == "operator" and q.reason_code in RELEASABLE:
                action = (f"<form method=post action=/quarantine/release class=inline>"
                          f"{_csrf(session)}<input type=hidden name=id value={q.id}>"
                          "<input name=reason placeholder='why it may go on' required "
                          "maxlength=200> <button>Release</button></form>")
            rows.append((str(q.id), q.received_at.strftime("%Y-%m-%d %H:%M:%S"), q.calling_ae,
                         q.sop_class_uid, q.reason_code, q.reason, _Raw(action)))
        return _table(["id", "received", "from", "SOP class", "code", "reason", ""], rows) + \
            "<p>Quarantined instances are kept encrypted and are never shown here. A release " \
            "states that a person checked the content for identifying text; it is audited.</p>"

    def _engines(self, _session: Session) -> str:
        from ai_engines.models import list_models
        from ai_engines.registry import available_engines

        engines = ", ".join(available_engines()) or "none"
        rows = [(m.card.name, m.card.version, m.card.label or "", m.source,
                 "research use only" if m.card.research_use_only else "validated",
                 m.card.sha256[:16], m.card.intended_use)
                for m in list_models(self.config.engines.model_dir)]
        return f"<p>Installed engines: {_e(engines)}</p>" + _table(
            ["model", "version", "label", "from", "use", "SHA-256", "intended use"], rows)

    def _picture(self, study_uid: str) -> Response:
        """The study's result picture (secondary capture) as PNG; pseudonymous by design."""
        from PIL import Image
        from pydicom import dcmread

        if not study_uid.replace(".", "").isdigit() or len(study_uid) > 64:
            return Response(400, b"bad study UID\n", "text/plain")
        for folder in study_result_folders(self.db, study_uid):
            for relative in self.files.list(folder):
                ds = dcmread(self.files.absolute(relative))
                if str(ds.SOPClassUID) not in SECONDARY_CAPTURE:
                    continue
                pixels = ds.pixel_array
                frame = pixels[0] if pixels.ndim == 4 or (pixels.ndim == 3 and
                                                          ds.SamplesPerPixel == 1) else pixels
                buffer = io.BytesIO()
                Image.fromarray(frame).save(buffer, format="PNG")
                return Response(200, buffer.getvalue(), "image/png")
        return Response(404, b"no result picture for this study\n", "text/plain")


class _Raw(str):
    """Markup the dashboard made itself (never received values): not escaped again."""


def _is_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and all(part.isdigit() for part in value.split("."))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _e(c)}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body or ''}</tbody></table>"


def _csrf(session: Session) -> str:
    return f"<input type=hidden name=csrf value={_e(session.csrf)}>"


def _one(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key) or [""]
    return values[0]


def _login_form(message: str = "") -> str:
    note = f"<p class=error>{_e(message)}</p>" if message else ""
    return (f"{note}<form method=post action=/login class=login>"
            "<label>User <input name=user autocomplete=username required></label>"
            "<label>Password <input name=password type=password "
            "autocomplete=current-password required></label><button>Log in</button></form>")


def parse_form(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_CSS = """
body{font:14px system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:8px 16px}
header h1{margin:0;font-size:18px} header small{font-weight:normal;opacity:.7}
nav a{color:#fff;margin-right:14px} nav{margin-top:6px}
main{padding:12px 16px} table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d0d5dc;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#e9edf2} .inline{display:inline;margin-left:12px} .error{color:#b00020}
.note{color:#1d3557;font-weight:600} .lookup{margin:0 0 10px}
.login label{display:block;margin:6px 0} td{font-family:ui-monospace,monospace;font-size:12px}
"""
