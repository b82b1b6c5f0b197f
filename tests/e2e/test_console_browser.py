"""The lab migration through the web console only, in Debian's chromium (Playwright): sign in,
enroll the VMA (the one step on the VMA itself: ``vma-api-server enroll`` with the code the
console shows), add the vCenter login and the CloudStack target, discover and add the VM,
replicate it and watch the bar reach 100 %, test failover and end it, live failover, roll back.

The lab is real (``throttled_lab``: vcsim, the CloudStack simulator, the VMA API server, ``oma
serve`` and ``oma worker``), the VMA → OMA link slow enough that the full copy's progress is
seen moving. On failure the test saves a screenshot of the page next to its temporary files.
``CONSOLE_SCREENSHOTS=<dir>`` also saves a PNG of each page there (how docs/images was made).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 180_000


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/system-deps installs Debian's chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Screenshots of pages: into ``CONSOLE_SCREENSHOTS`` when set."""

    def __init__(self, page) -> None:
        self.page = page
        target = os.environ.get("CONSOLE_SCREENSHOTS")
        self.dir = Path(target) if target else None

    def take(self, name: str) -> None:
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(self.dir / f"console-{name}.png"), full_page=True)


def _state(page) -> str:
    return page.locator("#live p").first.inner_text()


def _wait_text(page, selector: str, text: str, timeout: int = WAIT_MS) -> None:
    page.locator(selector, has_text=text).first.wait_for(timeout=timeout)


def test_lab_migration_with_the_console_alone(throttled_lab, browser, tmp_path) -> None:
    from playwright.sync_api import expect

    lab = throttled_lab
    context = browser.new_context(
        viewport={"width": 1360, "height": 900},
        ignore_https_errors=True,  # the lab's own CA
    )
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # every confirmation is answered yes
    shots = Shots(page)
    try:
        _migrate(lab, page, shots, expect)
    except BaseException:
        failure = tmp_path / "console-failure.png"
        page.screenshot(path=str(failure), full_page=True)
        print(f"screenshot of the page at the failure: {failure}")
        raise


def _migrate(lab, page, shots, expect) -> None:
    base = lab.oma.url
    # sign in
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/sign-in\?next=/$"))
    shots.take("sign-in")
    page.get_by_label("API token").fill("oma_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("invalid or revoked token")
    page.get_by_label("API token").fill(lab.oma.admin_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "oma_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert cookie["secure"] == base.startswith("https://"), cookie

    # settings: the VMA, the vCenter login, the CloudStack target
    page.locator("header nav").get_by_role("link", name="Settings").click()
    page.get_by_text("Enroll a VMA").click()
    page.locator("#enr-name").fill("vma-lab")
    page.locator("#enr-url").fill("vma.example:8081")
    page.get_by_role("button", name="Create enrollment code").click()
    expect(page.get_by_role("alert")).to_contain_text("url")  # the API's refusal
    page.get_by_text("Enroll a VMA").click()
    page.locator("#enr-name").fill("vma-lab")
    page.locator("#enr-url").fill(f"https://127.0.0.1:{lab.vma.port}")
    page.get_by_role("button", name="Create enrollment code").click()
    code = page.locator("#enrollment-code").inner_text()
    fingerprint = page.locator("#ca-fingerprint").inner_text()
    shots.take("enrollment")
    lab.vma.enroll(lab.oma.url, code, fingerprint)  # on the VMA: vma-api-server enroll
    page.locator("header nav").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("cell", name="vma-lab", exact=True)).to_be_visible()
    page.get_by_text("Add a vCenter login").click()
    page.locator("#vc-name").fill("vcsim")
    page.locator("#vc-host").fill(f"{lab.vc.host}:{lab.vc.port}")
    page.locator("#vc-user").fill(lab.vc.username)
    page.locator("#vc-password").fill(lab.vc.password)
    page.get_by_label("do not verify the vCenter's TLS certificate").check()
    page.get_by_label("default login").check()
    page.get_by_role("button", name="Add vCenter login").click()
    expect(page.get_by_role("status")).to_have_text("vCenter login added.")
    page.get_by_text("Add a CloudStack target").click()
    page.locator("#cs-name").fill("lab-cloud")
    page.locator("#cs-endpoint").fill(lab.sim.endpoint)
    page.locator("#cs-key").fill(lab.sim.api_key)
    page.locator("#cs-secret").fill(lab.sim.secret_key)
    page.locator("#cs-zone").fill(lab.sim.zone_id)
    page.locator("#cs-oma").fill(lab.sim.oma_vm_id)
    page.locator("#cs-offering").fill(lab.sim.custom_disk_offering_id)
    page.get_by_label("default target").check()
    page.get_by_role("button", name="Add CloudStack target").click()
    expect(page.get_by_role("status")).to_have_text("CloudStack target added.")
    page.get_by_role("button", name="Test", exact=True).first.click()
    expect(page.get_by_role("status")).to_have_text("VMA answers.")
    shots.take("settings")

    # discovery: add the lab VM
    page.locator("header nav").get_by_role("link", name="Discovery").click()
    page.get_by_role("button", name="Discover", exact=True).click()
    name = lab.vm["name"]
    page.get_by_label(f"add {name}").check()
    shots.take("discovery")
    page.get_by_role("button", name="Add selected VMs").click()
    expect(page.get_by_role("status")).to_contain_text(f"Added 1 VM(s): {name}.")
    expect(page.locator(f'tr[data-vm="{name}"]')).to_be_visible()
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    vm_url = page.url

    # replicate: the bar moves while the slow link copies, then reaches 100 %
    page.get_by_label("replication type").select_option("full")
    page.wait_for_timeout(1500)  # a few live refreshes of the page: the choice stays
    expect(page.get_by_label("replication type")).to_have_value("full")
    page.get_by_role("button", name="Replicate", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Replication requested.")
    running = page.locator('#live table .bar[data-status="replicating"]')
    running.first.wait_for(timeout=60_000)
    seen: list[float] = []
    toured = False
    for _ in range(200):
        bars = page.locator('#live h2:has-text("Running replication") + table .bar')
        if bars.count() == 0:
            break
        try:
            seen.append(float(bars.first.get_attribute("data-percent", timeout=2000) or 0))
        except Exception:  # the fragment was swapped while reading: read again
            continue
        if len(seen) > 1 and seen[-1] > 0 and shots.dir is not None and not toured:
            toured = True  # the pages while the copy runs
            page.goto(base + "/")
            shots.take("overview")
            page.goto(base + "/vms")
            shots.take("vms")
            page.goto(vm_url)
            page.wait_for_timeout(3000)  # a few samples for the throughput chart
            shots.take("vm-replicating")
        page.wait_for_timeout(250)
    lab.link.rate = None  # later syncs at full speed
    job_bar = page.locator("#live h2:has-text('Jobs') + table .bar").first
    expect(job_bar).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(job_bar).to_have_attribute("data-percent", "100.0")
    expect(job_bar.locator(".pct")).to_have_text("100.0 %")
    expect(page.locator("#live h2:has-text('Jobs') + table tbody tr").first).to_contain_text("full")
    assert any(0 < p < 100 for p in seen), seen  # the bar was seen part-way
    assert seen == sorted(seen), seen  # and never went backwards
    expect(page.locator("#live p").first).to_contain_text("ready_for_failover")

    # test failover, then end it
    page.get_by_role("link", name="Test failover…").click()
    page.locator("#network_0").select_option(lab.sim.network_id)
    page.locator("#service_offering_id").select_option(lab.sim.custom_service_offering_id)
    page.locator("#template_id").select_option(lab.sim.template_id)
    shots.take("test-failover")
    page.get_by_role("button", name="Start test failover").click()
    expect(page.get_by_role("status")).to_have_text("Test failover started.")
    expect(page.locator("#live p").first).to_contain_text("failed_over_test", timeout=WAIT_MS)
    test_box = page.locator("#live h3", has_text="Latest test failover")
    expect(test_box).to_contain_text("completed", timeout=WAIT_MS)
    shots.take("vm-test-failover")
    page.get_by_role("button", name="End test failover").click()
    expect(page.get_by_role("status")).to_have_text("Ending the test failover.")
    expect(page.locator("#live p").first).to_contain_text("ready_for_failover", timeout=WAIT_MS)
    expect(test_box).to_contain_text("ended", timeout=WAIT_MS)

    # live failover
    page.get_by_role("link", name="Live failover…").click()
    page.locator("#network_0").select_option(lab.sim.network_id)
    page.locator("#service_offering_id").select_option(lab.sim.custom_service_offering_id)
    page.locator("#template_id").select_option(lab.sim.template_id)
    page.locator("#graceful_timeout_s").fill("2")
    shots.take("live-failover")
    page.get_by_role("button", name="Start live failover").click()
    expect(page.get_by_role("status")).to_have_text("Live failover started.")
    live_box = page.locator("#live h3", has_text="Latest live failover")
    expect(live_box).to_contain_text("completed", timeout=WAIT_MS)
    expect(page.locator("#live p").first).to_contain_text("failed_over_live")
    shots.take("vm-failed-over")
    status, ctx = lab.oma.api("GET", f"vm-contexts/{vm_url.rsplit('/', 1)[1]}")
    assert status == 200 and ctx["state"] == "failed_over_live", ctx

    # roll back
    page.get_by_role("button", name="Roll back").click()
    expect(page.get_by_role("status")).to_have_text("Rollback started.")
    page.goto(vm_url)
    expect(page.locator("#live p", has_text="Rollback:")).to_contain_text(
        "completed", timeout=WAIT_MS
    )
    expect(live_box).to_contain_text("rolled_back")
    expect(page.locator("#live p").first).to_contain_text("ready_for_failover")

    # a group (wave) with the VM, and a nightly schedule for it
    page.locator("header nav").get_by_role("link", name="Groups").click()
    page.locator("#g-name").fill("wave-1")
    page.locator("#g-priority").fill("10")
    page.locator("#g-max").fill("two")
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("alert")).to_have_text("max_concurrent: must be an integer")
    expect(page.locator("#g-name")).to_have_value("wave-1")  # the form is kept
    page.locator("#g-max").fill("4")
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("status")).to_have_text("Group added.")
    page.get_by_label("VM to add to wave-1").select_option(label=name)
    page.get_by_role("button", name="Add VM").click()
    expect(page.get_by_role("status")).to_have_text("VM added to the group.")
    expect(page.get_by_role("link", name=name)).to_be_visible()
    shots.take("groups")
    page.locator("header nav").get_by_role("link", name="Schedules").click()
    page.locator("#s-name").fill("nightly wave-1")
    page.locator("#s-cron").fill("0 2 * * *")
    page.locator("#s-group").select_option(label="wave-1")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_role("status")).to_have_text("Schedule added.")
    expect(page.get_by_role("cell", name="nightly wave-1")).to_be_visible()
    shots.take("schedules")
    page.locator("header nav").get_by_role("link", name="VMs").click()
    page.get_by_label("Group").select_option(label="wave-1")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f'tr[data-vm="{name}"]')).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
