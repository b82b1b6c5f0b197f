"""The web console through Flask's test client: sign-in, session cookie, CSRF, roles exactly as
the API's, revocation, the API's error text on refusal, live fragments at scale, the vendored
htmx file."""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from labtest.oma import seed_replicating_jobs
from oma.database import database
from oma.database.models import VmaAppliance, VmContext, VmDisk
from oma.database.repos import tokens

STATIC = Path(__file__).resolve().parents[1] / "src" / "oma" / "console" / "static"


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def _flash(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'class="flash \w+"[^>]*>([^<]*)<', page)]


class Console:
    """A browser-like client of the console: cookies, CSRF field, sign-in."""

    def __init__(self, app: Any, base_url: str = "http://localhost") -> None:
        self.client = app.test_client()
        self.base_url = base_url
        self.csrf = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        res = self.client.get(path, base_url=self.base_url, **kwargs)
        if res.status_code == 200 and "csrf_token" in res.text:
            self.csrf = _csrf(res.text)
        return res

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True) -> Any:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.csrf
        return self.client.post(path, data=form, base_url=self.base_url)

    def sign_in(self, token: str) -> Any:
        self.get("/sign-in")
        res = self.post("/sign-in", {"token": token})
        if res.status_code == 302:
            self.get("/")  # signing in starts a new session with a new CSRF token
        return res


def _token(app: Any, role: str, name: str | None = None) -> str:
    with app.app_context(), database.connection_context():
        return tokens.create_token(name or f"console-{role}", role)[1]


def _context(app: Any, name: str = "web-01") -> str:
    with app.app_context(), database.connection_context():
        vma = VmaAppliance.create(name="vma-1", url="http://127.0.0.1:9", token_encrypted="x")
        ctx = VmContext.create(vma=vma.id, vcenter="vc.lab", vm_id="vm-1", name=name)
        VmDisk.create(context=ctx.id, disk_key="2000", capacity_bytes=1 << 30)
        return ctx.id


def _more_context(app: Any, name: str) -> str:
    """Another VM on the VMA :func:`_context` made."""
    with app.app_context(), database.connection_context():
        vma = VmaAppliance.get(VmaAppliance.name == "vma-1")
        return VmContext.create(vma=vma.id, vcenter="vc.lab", vm_id=f"vm-{name}", name=name).id


def test_sign_in_page_and_redirect(app) -> None:
    console = Console(app)
    res = console.get("/vms?state=discovered")
    assert res.status_code == 302
    assert res.headers["Location"].startswith("/sign-in?next=")
    page = console.get("/sign-in").text
    assert '<label for="token">API token</label>' in page
    assert ">Sign in</button>" in page


def test_bad_token_is_refused(app) -> None:
    console = Console(app)
    res = console.sign_in("oma_not-a-token")
    assert res.status_code == 401
    assert "invalid or revoked token" in res.text
    assert console.get("/").status_code == 302


def test_session_cookie_flags(app) -> None:
    console = Console(app)
    res = console.sign_in(_token(app, "viewer"))
    assert res.status_code == 302 and res.headers["Location"] == "/"
    cookie = res.headers["Set-Cookie"]
    assert cookie.startswith("oma_console=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP
    assert console.get("/").status_code == 200


def test_session_cookie_is_secure_over_tls(app) -> None:
    console = Console(app, base_url="https://localhost")
    res = console.sign_in(_token(app, "viewer"))
    assert res.status_code == 302
    assert "; Secure" in res.headers["Set-Cookie"]


def test_session_holds_no_token_and_key_is_derived(app, config_overrides) -> None:
    from oma.api import create_app

    token = _token(app, "viewer")
    console = Console(app)
    cookie = console.sign_in(token).headers["Set-Cookie"]
    assert token not in cookie
    assert app.secret_key and config_overrides["SECRET_KEY"].encode() not in app.secret_key
    # another process with the same OMA key accepts the session; another key does not
    same = create_app({**config_overrides, "TESTING": True})
    assert same.secret_key == app.secret_key
    from cryptography.fernet import Fernet

    other = create_app(
        {**config_overrides, "SECRET_KEY": Fernet.generate_key().decode(), "TESTING": True}
    )
    assert other.secret_key != app.secret_key


def test_csrf_is_required_on_every_form(app) -> None:
    console = Console(app)
    console.get("/sign-in")
    res = console.post("/sign-in", {"token": _token(app, "admin")}, csrf=False)
    assert res.status_code == 400
    assert "did not come from this console" in res.text
    assert console.sign_in(_token(app, "operator", "op2")).status_code == 302
    ctx = _context(app)
    res = console.post(f"/vms/{ctx}/replicate", {"type": "full"}, csrf=False)
    assert res.status_code == 400
    res = console.post(f"/vms/{ctx}/replicate", {"type": "full", "csrf_token": "forged"}, False)
    assert res.status_code == 400
    res = console.post("/sign-out", csrf=False)
    assert res.status_code == 400
    assert console.get("/").status_code == 200  # still signed in


def test_viewer_is_refused_with_the_api_text(app, client, auth) -> None:
    ctx = _context(app)
    console = Console(app)
    console.sign_in(auth.tokens["viewer"])
    page = console.get(f"/vms/{ctx}").text
    assert "Replicate</button>" not in page  # the form is not offered
    res = console.post(f"/vms/{ctx}/replicate", {"type": "full"})
    assert res.status_code == 302
    shown = _flash(console.get(res.headers["Location"]).text)
    api = client.post(
        "/api/v1/replications", json={"vm_context_id": ctx, "type": "full"}, headers=auth.viewer
    )
    assert api.status_code == 403
    assert shown == [api.get_json()["error"]["message"]]
    assert shown == ["this action needs the operator role (your token is viewer)"]


def test_admin_only_settings_follow_the_api(app, auth) -> None:
    console = Console(app)
    console.sign_in(auth.tokens["operator"])
    page = console.get("/settings").text
    assert "Register VMA" not in page and "API tokens" not in page
    res = console.post(
        "/create/vma-appliances", {"name": "v", "url": "http://127.0.0.1:1", "token": "t"}
    )
    assert res.status_code == 403
    assert _flash(res.text) == ["this action needs the admin role (your token is operator)"]
    assert console.post("/settings/tokens", {"name": "x", "role": "admin"}).status_code == 403

    admin = Console(app)
    admin.sign_in(auth.tokens["admin"])
    res = admin.post(
        "/create/vma-appliances", {"name": "vma-9", "url": "http://127.0.0.1:1", "token": "t"}
    )
    assert _flash(admin.get(res.headers["Location"]).text) == ["VMA added."]
    with app.app_context(), database.connection_context():
        assert [r.name for r in VmaAppliance.select()] == ["vma-9"]


def test_refusal_shows_the_api_error_text(app, client, auth) -> None:
    ctx = _context(app)
    console = Console(app)
    console.sign_in(auth.tokens["operator"])
    res = console.post(f"/vms/{ctx}/replicate", {"type": "incremental"})
    shown = _flash(console.get(res.headers["Location"]).text)
    api = client.post(
        "/api/v1/replications",
        json={"vm_context_id": ctx, "type": "incremental"},
        headers=auth.operator,
    )
    assert api.status_code in (400, 422)
    assert shown == [api.get_json()["error"]["message"]]
    assert "incremental needs a completed earlier sync" in shown[0]
    # a page for something that does not exist shows the API's 404 text
    res = console.get("/vms/no-such-vm")
    assert res.status_code == 404 and "vm context no-such-vm not found" in res.text


def test_replicate_and_stop_through_the_console(app, auth) -> None:
    ctx = _context(app)
    console = Console(app)
    console.sign_in(auth.tokens["operator"])
    res = console.post(f"/vms/{ctx}/replicate", {"type": "full"})
    assert _flash(console.get(res.headers["Location"]).text) == ["Replication requested."]
    page = console.get(f"/vms/{ctx}").text
    job_id = re.search(r'data-job-id="([^"]+)"', page).group(1)
    assert 'data-status="pending"' in page
    res = console.post(f"/jobs/{job_id}/stop", {"next": f"/vms/{ctx}"})
    assert res.headers["Location"] == f"/vms/{ctx}"
    assert _flash(console.get(res.headers["Location"]).text) == ["Stop requested."]
    res = console.post(f"/jobs/{job_id}/stop", {"next": "//evil.example/"})
    assert res.headers["Location"] == "/"  # only local paths
    assert "already" in _flash(console.get("/").text)[0]


def test_revoked_token_ends_its_sessions(app) -> None:
    token = _token(app, "operator", "to-revoke")
    console = Console(app)
    console.sign_in(token)
    assert console.get("/").status_code == 200
    with app.app_context(), database.connection_context():
        assert tokens.revoke_token("to-revoke")
    res = console.get("/")
    assert res.status_code == 302 and res.headers["Location"].startswith("/sign-in")
    res = console.client.get("/live/overview", headers={"HX-Request": "true"})
    assert res.status_code == 401 and res.headers["HX-Redirect"].startswith("/sign-in")


def test_admin_creates_and_revokes_tokens(app, auth) -> None:
    admin = Console(app)
    admin.sign_in(auth.tokens["admin"])
    page = admin.post("/settings/tokens", {"name": "ops", "role": "operator"}).text
    created = re.search(r'<code id="new-token">([^<]+)</code>', page).group(1)
    admin.csrf = _csrf(page)
    user = Console(app)
    assert user.sign_in(created).status_code == 302
    assert user.get("/").status_code == 200
    res = admin.post("/settings/tokens/ops/revoke")
    assert _flash(admin.get(res.headers["Location"]).text) == ["Token ops revoked."]
    assert user.get("/").status_code == 302


def test_sign_out(app) -> None:
    console = Console(app)
    console.sign_in(_token(app, "viewer"))
    console.get("/")
    res = console.post("/sign-out")
    assert res.status_code == 302 and res.headers["Location"] == "/sign-in"
    assert console.get("/").status_code == 302


@pytest.mark.parametrize("path", ["/", "/vms", "/groups", "/schedules", "/settings", "/discovery"])
def test_pages_render_for_a_viewer(app, path) -> None:
    console = Console(app)
    console.sign_in(_token(app, "viewer"))
    res = console.get(path)
    assert res.status_code == 200, res.text
    assert res.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in res.headers["Content-Security-Policy"]


def _queries(console: Console, path: str) -> tuple[int, str]:
    records: list[logging.LogRecord] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("peewee")
    handler, level = Grab(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        res = console.get(path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert res.status_code == 200
    return len(records), res.text


def test_live_fragments_cost_the_same_for_200_jobs_as_for_10(app, auth) -> None:
    console = Console(app)
    console.sign_in(auth.tokens["viewer"])
    with app.app_context():
        seed_replicating_jobs([("vma-a", "http://127.0.0.1:9")], 10)
    few, page = _queries(console, "/live/overview")
    assert page.count('class="bar"') == 10
    with app.app_context():
        seed_replicating_jobs([("vma-b", "http://127.0.0.1:9")], 190)
    many, page = _queries(console, "/live/overview")
    assert page.count('class="bar"') == 200
    assert "Active jobs (200)" in page
    assert many == few  # one request, a fixed number of queries, whatever the number of jobs
    vms_few, _ = _queries(console, "/live/vms")
    rows = _queries(console, "/live/vms")[1]
    assert rows.count("<tr data-vm=") == 200 and vms_few > 0


def test_vendored_htmx_matches_its_record() -> None:
    record = json.loads((STATIC / "VENDOR.json").read_text())["htmx.min.js"]
    data = (STATIC / "htmx.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert record["package"] == "htmx.org" and record["version"]
    assert f'version:"{record["version"]}"' in data.decode() or record["version"] in data.decode()


def test_refused_create_keeps_the_form_filled(app, auth) -> None:
    admin = Console(app)
    admin.sign_in(auth.tokens["admin"])
    res = admin.post(
        "/create/vmware-credentials",
        {"name": "vc-1", "vcenter": "", "username": "ops", "password": "s3cret", "insecure": "1"},
    )
    assert res.status_code == 400
    assert _flash(res.text) == ["vcenter: is required"]
    assert 'name="username" value="ops"' in res.text
    assert "s3cret" not in res.text  # secrets are typed again
    assert '<input type="checkbox" name="insecure" value="1" checked>' in res.text
    # the other forms on the page stay empty
    assert 'id="vma-name" type="text" name="name" value=""' in res.text


def test_failover_form_shows_the_api_refusal(app, client, auth) -> None:
    ctx = _context(app)
    console = Console(app)
    console.sign_in(auth.tokens["operator"])
    page = console.get(f"/vms/{ctx}/failover?type=live")
    assert page.status_code == 200
    assert "no CloudStack target is registered" in page.text
    body = {"type": "live", "service_offering_id": "so-1", "keep_macs": "1", "force": "1"}
    res = console.post(f"/vms/{ctx}/failover", body)
    api = client.post(
        f"/api/v1/vm-contexts/{ctx}/failover",
        json={
            "type": "live",
            "service_offering_id": "so-1",
            "keep_macs": True,
            "force": True,
            "network_mappings": {},
            "end_test": False,
            "verify_final_sync": False,
        },
        headers=auth.operator,
    )
    assert res.status_code == api.status_code >= 400
    assert html.escape(api.get_json()["error"]["message"], quote=False) in res.text


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/vms/x", "/vms/x"),
        ("//evil.example/", None),
        ("/\\evil.example", None),
        ("https://evil.example/", None),
        ("", None),
    ],
)
def test_only_local_paths_are_followed(target, expected) -> None:
    from oma.console.session import local_path

    assert local_path(target) == expected


def test_admin_creates_a_vma_enrollment_code(app, auth) -> None:
    from oma.database.models import VmaEnrollment

    admin = Console(app)
    admin.sign_in(auth.tokens["admin"])
    page = admin.post(
        "/settings/enrollments", {"name": "vma-dc1", "url": "https://vma-dc1.example:8081"}
    ).text
    code = re.search(r'<code id="enrollment-code">([^<]+)</code>', page).group(1)
    assert "vma-api-server enroll --oma http://localhost --code-file FILE" in page
    assert re.search(r"--ca-fingerprint [0-9a-fA-F:]{20,}", page)
    with app.app_context(), database.connection_context():
        (row,) = VmaEnrollment.select()
        assert row.vma_name == "vma-dc1" and code not in (row.code_hash or "")
    operator = Console(app)
    operator.sign_in(auth.tokens["operator"])
    res = operator.post("/settings/enrollments", {"name": "x", "url": "https://x:1"})
    assert _flash(operator.get(res.headers["Location"]).text) == [
        "this action needs the admin role (your token is operator)"
    ]


def test_vm_list_pages_and_group_filter_span_pages(app, client, auth) -> None:
    with app.app_context():
        seed_replicating_jobs([("vma-a", "http://127.0.0.1:9")], 250)
    console = Console(app)
    console.sign_in(auth.tokens["viewer"])
    first = console.get("/vms").text
    assert first.count("<tr data-vm=") == 200
    assert "VMs 1\u2013200 of 250" in first and ">Next</a>" in first
    second = console.get("/vms?offset=200").text
    assert second.count("<tr data-vm=") == 50 and ">Previous</a>" in second
    last = re.findall(r'<tr data-vm="([^"]+)"', second)[-1]
    with app.app_context(), database.connection_context():
        ctx_id = VmContext.get(VmContext.name == last).id
    group = client.post(
        "/api/v1/groups", json={"name": "wave-9", "vm_context_ids": [ctx_id]}, headers=auth.admin
    ).get_json()
    page = console.get(f"/vms?group={group['id']}").text
    assert re.findall(r'<tr data-vm="([^"]+)"', page) == [last]


def test_overview_lists_failed_workflows(app, auth) -> None:
    from oma.database.models import Workflow

    ctx = _context(app, name="db-07")
    with app.app_context(), database.connection_context():
        Workflow.create(
            kind="failover", context=ctx, status="failed", error="deploy_target: no capacity"
        )
    console = Console(app)
    console.sign_in(auth.tokens["viewer"])
    page = console.get("/").text
    row = re.search(r"<tr><td><a href=\"/vms/[^\"]+\">db-07</a>.*?</tr>", page, re.S).group(0)
    assert "failover" in row and "deploy_target: no capacity" in row


def test_overview_counts_vms_by_state_up_to_the_cap(app, auth, monkeypatch) -> None:
    from oma.database.repos import _select

    _context(app, name="web-00")
    for name in ("web-01", "web-02"):
        _more_context(app, name)
    monkeypatch.setattr(_select, "COUNT_CAP", 2)
    console = Console(app)
    console.sign_in(auth.tokens["viewer"])
    page = console.get("/").text
    cards = dict(
        (label, n)
        for n, label in re.findall(
            r'<div class="n">([^<]+)</div><div class="l">([^<]+)</div>', page
        )
    )
    assert cards["discovered"] == "2+" and cards["ready for failover"] == "0"
