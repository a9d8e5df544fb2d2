"""The web explorer in a real browser: Debian's Chromium driven headless by selenium through the
system chromedriver (nothing downloads a browser), against a node with a few blocks.

In CI (CI=true) a missing Chromium is installed with apt-get, and the test fails loudly if that does
not work; elsewhere it is installed when possible, else the test is skipped saying why. Screenshots
go to $LEDGERD_TEST_ARTIFACTS (default: the test's tmp dir); their paths are printed.

The node runs on this test's event loop; the browser is driven from a worker thread so the node
keeps answering while selenium blocks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from ledger.tx import Transfer
from tests.helpers.explorer_chain import HTML_KEY, HTML_VALUE, Explored, explored_node

# The limit covers the test, not the fixture that may first install Chromium (bounded by its own
# subprocess timeouts).
pytestmark = pytest.mark.timeout(120, func_only=True)

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
WAIT_S = 15.0


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None)


def _browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths, installing Debian's packages if they are missing."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    chromium, driver = _first(CHROMIUM), _first(CHROMEDRIVER)
    if chromium and driver:
        return chromium, driver
    why = "chromium and chromium-driver are not installed"
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
        result = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env)
        if result.returncode != 0:  # a fresh image has no package lists yet
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, env=env)
            result = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env)
        chromium, driver = _first(CHROMIUM), _first(CHROMEDRIVER)
        if chromium and driver:
            return chromium, driver
        why += f"; apt-get install failed: {(result.stderr or result.stdout)[-400:]}"
    else:
        why += " (and this is not root with apt-get to install them)"
    if in_ci:
        pytest.fail(f"CI needs the browser test: {why}")
    pytest.skip(why)


def _artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("LEDGERD_TEST_ARTIFACTS") or tmp_path / "artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


class Page:
    """A headless Chromium tab on the explorer, with waits that fail with what the page showed."""

    def __init__(self, base: str, chromium: str, driver: str, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.driver.set_page_load_timeout(WAIT_S)
        self.base = base
        self.shots = shots

    def close(self) -> None:
        self.driver.quit()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def until(self, what: str, check: Callable[[], Any]) -> Any:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def probe(_: Any) -> Any:
            try:
                return check()
            except WebDriverException:
                return None

        try:
            return WebDriverWait(self.driver, WAIT_S, poll_frequency=0.1).until(probe)
        except Exception:
            shot = self.shot("failed-" + what.replace(" ", "-")[:40])
            body = self.driver.find_element("tag name", "body").text[:1500]
            raise AssertionError(f"waited {WAIT_S}s for {what}; page {self.driver.current_url} shows:\n{body}\n"
                                 f"screenshot: {shot}") from None

    def text(self, css: str) -> str:
        return str(self.driver.find_element("css selector", css).text)

    def all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements("css selector", css))

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]


def _drive(ex: Explored, page: Page, loop: asyncio.AbstractEventLoop, proof_missing: bool) -> None:
    """Every browser check, run in a worker thread; node calls go back to the loop."""
    assert ex.transfer is not None and ex.record is not None and ex.proposal is not None
    alice, bob, carol = ex.accounts
    head = ex.node.store.tip.height

    # The root redirects to the overview, which shows the height and goes live.
    page.open("/")
    page.until("the overview height", lambda: page.text("#overview-height") == str(head))
    assert page.driver.current_url.endswith("/explorer/")
    page.until("the live stream", lambda: page.text("#live-text") == "live")
    assert len(page.all("main section")) >= 4
    page.shot("overview")

    # A transfer sent while the overview is open shows up without a reload.
    sent = ex.tx(carol, Transfer(alice.address, "LDG", 1))
    asyncio.run_coroutine_threadsafe(ex.commit(sent), loop).result(timeout=WAIT_S)
    page.until("the live height", lambda: page.text("#overview-height") == str(head + 1))
    page.until("the new block in the list",
               lambda: page.text("#recent-blocks tr:first-child td:first-child") == f"#{head + 1}")
    page.until("the validator's live height and signature", lambda: page.text(
        "table.validators tbody tr td:nth-child(4)") == str(head + 1) and page.text(
        "table.validators tbody tr td:nth-child(5)") == f"#{head + 1}")
    page.shot("overview-live")

    # Searching a transaction hash opens its detail, with the right result and decoded payload.
    box = page.driver.find_element("id", "search-input")
    box.send_keys(ex.transfer.hash)
    box.submit()
    page.until("the tx page", lambda: page.driver.current_url.endswith("/explorer/tx/" + ex.transfer.hash))
    page.until("the tx result", lambda: page.text("#tx-result") == "ok")
    assert page.text("#tx-hash") == ex.transfer.hash
    assert "25 LDG" in page.text("main") and "transfer" in page.text("main")
    page.driver.find_element("id", "proof").click()
    if proof_missing:
        page.until("the missing-proof message", lambda: "does not serve inclusion proofs yet"
                   in page.text("main .notice"))
    page.shot("transaction")

    # A searched height opens that block, with its proposer and certificate signers.
    box = page.driver.find_element("id", "search-input")
    box.clear()
    box.send_keys("1")
    box.submit()
    page.until("block 1", lambda: page.driver.current_url.endswith("/explorer/block/1"))
    page.until("block 1 detail", lambda: "Block #1" in page.text("main"))
    assert ex.node.node_id in page.text("main")

    # The account page lists its transactions, newest first.
    page.open(f"/explorer/account/{bob.address}")
    page.until("bob's transactions", lambda: len(page.all("table.account-txs tbody a[title]")) >= 3)
    listed = [a.get_attribute("title") for a in page.all("table.account-txs tbody tr td:first-child a")]
    assert listed[0] == ex.proposal.hash and listed[-1] == ex.transfer.hash and len(listed) == 3
    page.shot("account")

    # A record whose value is HTML shows as text and runs nothing.
    page.open(f"/explorer/record/{alice.address}/{quote(HTML_KEY, safe='')}")
    page.until("the record value", lambda: page.text("#record-value") == HTML_VALUE)
    assert page.text("#record-key") == HTML_KEY
    assert page.all("#pwned") == [] and page.all("main img") == [] and page.all("main b") == []
    assert page.driver.title != "pwned"
    page.shot("record-html-as-text")

    # The governance view lists the proposal with its votes.
    page.open("/explorer/governance")
    page.until("the proposal", lambda: any(a.get_attribute("title") == ex.proposal.hash
                                           for a in page.all("tr.proposal a")))
    row = page.all("tr.proposal")[0]
    assert "grant-role" in row.text and "executed" in row.text
    voters = {a.get_attribute("title") for a in row.find_elements("css selector", "ul.votes a")}
    assert voters == {ex.members[0].address, ex.members[1].address}
    page.shot("governance")

    # Phone-sized: the page itself does not scroll sideways (wide tables scroll in their box).
    page.driver.set_window_size(390, 844)
    page.open(f"/explorer/tx/{ex.transfer.hash}")
    page.until("the tx page on a phone", lambda: page.text("#tx-result") == "ok")
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than a phone screen"
    page.shot("phone-transaction")

    # Nothing tripped the Content-Security-Policy or threw (the missing proof's 404 is expected).
    errors = [m for m in page.console_errors() if "/proof" not in m]
    assert errors == [], errors


@pytest.fixture
def browser() -> tuple[str, str]:
    return _browser()


async def test_explorer_in_a_real_browser(tmp_path: Path, browser: tuple[str, str]) -> None:
    chromium, driver = browser
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never fetch a driver or browser
    shots = _artifacts(tmp_path)
    print(f"screenshots in {shots}")
    async with explored_node(tmp_path) as ex:
        assert ex.transfer is not None
        async with ex.http.get(f"{ex.url}/v1/transactions/{ex.transfer.hash}/proof") as resp:
            proof_missing = resp.status == 404
        page = await asyncio.to_thread(Page, ex.url, chromium, driver, shots)
        try:
            await asyncio.to_thread(_drive, ex, page, asyncio.get_running_loop(), proof_missing)
        finally:
            await asyncio.to_thread(page.close)
