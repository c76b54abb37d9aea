"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by Selenium against the real API, Celery worker and Redis of the service tests.

A missing browser is a failure, never a skip: ``make test`` installs it
(``scripts/ensure-services.sh``).  ``PRUNEKIT_DASHBOARD_SCREENSHOT=path.png`` keeps a screenshot
of the finished job's page (how ``docs/dashboard.png`` is made).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from svc_helpers import KEY_A, KEY_B, SLOW_SPEC, TENANT_A, TS_SPEC, Models, Stack, submit, wait_job

pytestmark = pytest.mark.timeout(400)

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
# Upload names lose everything up to their last "/" (a path is never kept): markup without one.
XSS_NAME = '<img src=x onerror="window.__pwned=3"><svg onload="window.__pwned=4">'


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("the dashboard test needs Chromium and its driver: apt-get install -y chromium chromium-driver "
                    "(scripts/ensure-services.sh does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1800", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate(driver)
            if value:
                return value
        except Exception as exc:  # the page is being replaced under us: try again
            last_error = exc
        time.sleep(0.2)
    shot = Path(tempfile.gettempdir()) / f"dashboard-timeout-{int(time.time())}.png"
    driver.save_screenshot(str(shot))
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (screenshot {shot}; "
                         f"last error {last_error!r})\n{driver.page_source[:3000]}")


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _csp_violations(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]


def _log_in(driver: Any, url: str, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(url + "/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.get(url + "/ui")
    _wait(driver, lambda d: _css(d, "#login")[0].is_displayed(), 30, "the login form")
    _css(driver, "#key")[0].send_keys(key)
    _css(driver, "#login-form button")[0].click()


def test_dashboard_follows_a_job_and_downloads_its_model(browser: Any, stack: Stack, models: Models) -> None:
    a = stack.client(KEY_A)
    _log_in(browser, stack.url, "not-a-valid-key")
    _wait(browser, lambda d: "invalid API key" in _css(d, "#login-error")[0].text, 30, "the bad key refused")
    assert browser.execute_script("return sessionStorage.getItem('prunekit.apiKey')") is None

    _log_in(browser, stack.url, KEY_A)
    _wait(browser, lambda d: _css(d, "section.jobs"), 30, "the jobs list")
    assert TENANT_A in _css(browser, "#who")[0].text
    # The key is in this tab's session storage and nowhere a server or another site could see it.
    assert browser.execute_script("return sessionStorage.getItem('prunekit.apiKey')") == KEY_A
    assert browser.get_cookies() == [] and KEY_A not in browser.current_url

    # A job submitted through the API while the list is open appears in it (cancelled after).
    extra = submit(a, models.ts, SLOW_SPEC).json()
    _wait(browser, lambda d: _css(d, f".job-row[data-job-id='{extra['id']}']"), 40,
          "the new job in the list (live refresh)")
    assert a.delete(f"/v1/jobs/{extra['id']}").status_code in (202, 204)

    # A job followed live on its page, from queued or running to succeeded, without reloading.
    job = submit(a, models.ts, SLOW_SPEC).json()
    browser.get(f"{stack.url}/ui/jobs/{job['id']}")
    _wait(browser, lambda d: _css(d, f"article.job[data-job-id='{job['id']}']"), 30, "the job page")
    browser.execute_script("window.__sameDocument = 1")
    statuses = set()

    def finished(d: Any) -> bool:
        el = _css(d, "article.job")[0]
        statuses.add(el.get_attribute("data-status"))
        return el.get_attribute("data-status") in ("succeeded", "failed", "cancelled")

    _wait(browser, finished, 240, "the job page to show the job finished (live, without reloading)")
    art = _css(browser, "article.job")[0]
    assert art.get_attribute("data-status") == "succeeded", browser.page_source[:3000]
    assert statuses & {"queued", "running"}, statuses  # it was watched live, not only at the end
    assert _css(browser, "#job-status")[0].text == "succeeded"
    assert browser.execute_script("return window.__sameDocument") == 1  # updated in place, never reloaded

    # The per-layer chart: one row per changed weight of the engine's report, with its widths.
    arts = {x["name"]: x for x in a.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]}
    report = a.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()
    expected = {layer["name"]: (layer["shape_after"][0], layer["shape_before"][0] - layer["shape_after"][0])
                for layer in report["layers"] if len(layer["shape_before"]) >= 2}
    rows = _css(browser, "svg.layer-chart g.layer")
    assert len(rows) == len(expected) > 0
    drawn = {r.get_attribute("data-layer"): (int(r.get_attribute("data-kept")), int(r.get_attribute("data-removed")))
             for r in rows}
    assert drawn == expected
    assert len(_css(browser, "svg.layer-chart rect.kept")) == len(expected) + 1  # + the legend's
    widths = [float(r.get_attribute("width")) for r in _css(browser, "svg.layer-chart g.layer rect.removed")]
    assert any(w > 0 for w in widths)
    done = a.get(f"/v1/jobs/{job['id']}").json()
    assert len(_css(browser, "svg.stage-chart g.stage")) == len(done["result"]["stage_seconds"])
    numbers = {r.get_attribute("data-measure") for r in _css(browser, "table.numbers tr[data-measure]")}
    assert numbers == {"params", "macs", "file_size"}
    assert [k.text for k in _css(browser, ".kept-table td.mono")] == [k["param"] for k in report["kept"]]

    # Download the pruned model through the link: the bytes the API reports.
    model_name = done["result"]["artifacts"][0]
    link = _css(browser, f"a[data-download][data-name='{model_name}']")[0]
    filename = link.get_attribute("download")
    link.click()
    target = browser.downloads / filename
    _wait(browser, lambda d: target.is_file() and not list(browser.downloads.glob("*.crdownload")), 60,
          f"{filename} downloaded")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == arts[model_name]["sha256"]
    assert _csp_violations(browser) == []

    if os.environ.get("PRUNEKIT_DASHBOARD_SCREENSHOT"):
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(height + 20, 4000))
        browser.save_screenshot(os.environ["PRUNEKIT_DASHBOARD_SCREENSHOT"])
        browser.set_window_size(1280, 1800)

    _css(browser, "header.top a.brand")[0].click()  # back to the list: the job is there, finished
    row = f".job-row[data-job-id='{job['id']}'][data-status='succeeded']"
    _wait(browser, lambda d: _css(d, row), 30, "the finished job in the list")


def test_dashboard_escapes_what_users_wrote(browser: Any, stack: Stack, models: Models) -> None:
    """A file name and a spec that carry markup, and the failure message that quotes them, are
    shown as text; nothing of them runs (CSP and escaping)."""
    a = stack.client(KEY_A)
    spec = dict(TS_SPEC, ignore=[XSS])  # unknown name: the job fails quoting it
    r = submit(a, models.ts, spec, filename=f"{XSS_NAME}.pt")
    if r.status_code == 202:
        job_id = r.json()["id"]
        failed, _ = wait_job(a, job_id, timeout=240)
        assert failed["status"] == "failed" and "window.__pwned" in failed["error"]["message"], failed
    else:  # refused at submit: then the file name alone has to do (a job of a harmless spec)
        assert r.status_code == 422, r.text
        job_id = submit(a, models.ts, TS_SPEC, filename=f"{XSS_NAME}.pt").json()["id"]
    _log_in(browser, stack.url, KEY_A)
    _wait(browser, lambda d: _css(d, f".job-row[data-job-id='{job_id}']"), 30, "the job in the list")
    link = _css(browser, f".job-row[data-job-id='{job_id}'] a.job-link")[0]
    assert link.text.startswith("<img src=x")  # shown as the text it is
    link.click()
    _wait(browser, lambda d: _css(d, "article.job .spec"), 30, "the job page")
    assert XSS in _css(browser, "article.job .spec")[0].text or XSS.replace('"', '\\"') in _css(
        browser, "article.job .spec")[0].text
    stored = a.get(f"/v1/jobs/{job_id}").json()["input"]["filename"]  # (the client %-encodes quotes)
    assert "<img src=x onerror=" in stored and _css(browser, "article.job h1")[0].text == stored
    assert browser.execute_script("return window.__pwned === undefined")
    assert _css(browser, "article.job img") == [] and _css(browser, "article.job script") == []
    assert not [e for e in _css(browser, "article.job svg") if e.get_attribute("onload")]
    if r.status_code == 202:  # the failure message quotes the spec: text too
        assert "window.__pwned=1" in _css(browser, "article.job .error-message")[0].text


def test_dashboard_shows_each_tenant_only_its_own(browser: Any, stack: Stack, models: Models) -> None:
    a = stack.client(KEY_A)
    job_id = submit(a, models.ts, TS_SPEC).json()["id"]
    _log_in(browser, stack.url, KEY_B)
    _wait(browser, lambda d: _css(d, "section.jobs"), 30, "bob's job list")
    assert _css(browser, f".job-row[data-job-id='{job_id}']") == []
    browser.get(f"{stack.url}/ui/jobs/{job_id}")
    _wait(browser, lambda d: _css(d, "main p.error"), 30, "alice's job refused to bob")
    assert "no job" in _css(browser, "main p.error")[0].text
    _css(browser, "#logout")[0].click()
    _wait(browser, lambda d: _css(d, "#login")[0].is_displayed(), 10, "the login form after forgetting the key")
    assert browser.execute_script("return sessionStorage.getItem('prunekit.apiKey')") is None
    a.delete(f"/v1/jobs/{job_id}")


def test_dashboard_without_keys_serves_this_machine(browser: Any, embedded_api: tuple[str, Path]) -> None:
    """No keys configured: loopback is served as tenant 'local', as the API does; no key asked."""
    url, _ = embedded_api
    browser.get(url + "/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/ui")
    _wait(browser, lambda d: _css(d, "section.jobs"), 30, "the jobs list without a key")
    assert not _css(browser, "#login")[0].is_displayed()
    assert "local" in _css(browser, "#who")[0].text


def test_api_docs_work_offline(browser: Any, stack: Stack) -> None:
    """Swagger UI and ReDoc come from this server (the browser could reach nothing else)."""
    for path, selector in (("/docs", ".swagger-ui .info .title"), ("/redoc", ".api-info h1")):
        browser.get(stack.url + path)
        title = _wait(browser, lambda d: _css(d, selector), 60, f"{path} rendered")
        assert "PruneKit" in title[0].text
    resp = httpx.get(stack.url + "/docs")
    assert "cdn" not in resp.text.lower() and "Content-Security-Policy" in resp.headers
    schema = httpx.get(stack.url + "/openapi.json").json()
    get_job = schema["paths"]["/v1/jobs/{job_id}"]["get"]
    assert "304" in get_job["responses"] and "text/event-stream" in json.dumps(
        schema["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"])
    assert "HTTPValidationError" not in json.dumps(schema)
