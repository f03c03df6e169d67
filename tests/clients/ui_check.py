"""Uses tramy's web UI in headless Chromium as a doctor would and reports what the pages showed,
as JSON on stdout (tests/ui.rs judges it):

- `before_sign_in`: where the browser landed when it opened /ui/ without a session;
- `order`: the worklist's studies, top to bottom, after signing in with TRAMY_TOKEN;
- `live`: the study LIVE appearing with its AI flag while the page stays open: the test stores
  it once this script has written OUT_DIR/ready, and the page must not reload meanwhile;
- `study`: the flagged study's page: its finding's texts, and the heatmap shown, hidden by its
  toggle, shown again, and its opacity after the slider moved;
- `vi`: the visible text of the worklist and the study page after the language link was followed;
- `tablet`: the worklist and the study page in a tablet's portrait width (768 px): whether the
  page scrolls sideways and whether the worklist's rows became cards;
- `after_sign_out`: where /ui/ leads once signed out.

Usage: ui_check.py BASE_URL OUT_DIR FLAGGED_STUDY LIVE_STUDY
Screenshots go to OUT_DIR, for a person to look at when a check fails.
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

TIMEOUT = 240  # seconds per wait: triage and occlusion heatmaps on two busy cores


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--lang=en-US",
    ]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    return driver


def wait(what, probe, timeout=TIMEOUT):
    """Polls `probe` until it returns something truthy."""
    deadline = time.time() + timeout
    while True:
        try:
            got = probe()
        except WebDriverException:
            got = None
        if got:
            return got
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)


def path(driver):
    return driver.execute_script("return location.pathname")


def sign_in(driver, base, report):
    driver.get(f"{base}/ui/")
    report["before_sign_in"] = path(driver)
    field = driver.find_element(By.NAME, "token")
    field.send_keys(os.environ["TRAMY_TOKEN"])
    field.submit()
    wait("the worklist after signing in", lambda: path(driver) == "/ui/")


def worklist_order(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('tr.study')).map(r => r.dataset.study)"
    )


def live_row(driver, study):
    return driver.execute_script(
        """const r = document.querySelector(`tr.study[data-study="${arguments[0]}"]`);
        if (!r) return null;
        return {flags: r.querySelector('.flags').innerText, urgency: r.className};""",
        study,
    )


def follow_live(driver, out, live):
    """Marks the page, lets the test store LIVE, and waits for its flagged row."""
    wait("the page following the event stream",
         lambda: driver.execute_script("return document.getElementById('worklist').dataset.following"))
    driver.execute_script("window.__sameDocument = true")
    open(os.path.join(out, "ready"), "w").close()
    result = {}
    try:
        row = wait("the live study flagged on the open page",
                   lambda: (lambda r: r if r and r["flags"] else None)(live_row(driver, live)))
        result["row"] = row
    except TimeoutError as e:
        result["timeout"] = str(e)
        result["row"] = live_row(driver, live)
    result["same_document"] = driver.execute_script("return window.__sameDocument === true")
    result["order"] = worklist_order(driver)
    driver.save_screenshot(os.path.join(out, "worklist-live.png"))
    return result


HEATMAP_JS = """
const f = document.querySelector('figure.overlay');
if (!f) return null;
const h = f.querySelector('img.heatmap'), b = f.querySelector('img.base');
return {loaded: h.complete && h.naturalWidth > 0, base_loaded: b.complete && b.naturalWidth > 0,
        shown: getComputedStyle(h).display !== 'none', opacity: getComputedStyle(h).opacity};
"""


def study_page(driver, base, out, study):
    driver.get(f"{base}/ui/studies/{study}")
    result = {"text": driver.find_element(By.TAG_NAME, "main").text}
    finding = driver.find_element(By.CSS_SELECTOR, "article.finding")
    for name in ["label", "probability", "threshold", "model", "statement"]:
        result[name] = finding.find_element(By.CLASS_NAME, name).text
    try:
        wait("the heatmap drawn", lambda: (driver.execute_script(HEATMAP_JS) or {}).get("loaded"))
    except TimeoutError as e:
        result["timeout"] = str(e)
    result["before"] = driver.execute_script(HEATMAP_JS)
    toggle = driver.find_element(By.CSS_SELECTOR, ".heatmap-toggle")
    toggle.click()
    result["toggled_off"] = driver.execute_script(HEATMAP_JS)
    toggle.click()
    result["toggled_on"] = driver.execute_script(HEATMAP_JS)
    driver.execute_script(
        """const s = document.querySelector('.heatmap-opacity'); s.value = 20;
        s.dispatchEvent(new Event('input'));"""
    )
    result["slid"] = driver.execute_script(HEATMAP_JS)
    driver.save_screenshot(os.path.join(out, "study.png"))
    return result


def vietnamese(driver, base, out, study):
    driver.get(f"{base}/ui/")
    driver.find_element(By.ID, "lang-switch").click()
    wait("the page in Vietnamese",
         lambda: driver.execute_script("return document.documentElement.lang") == "vi")
    result = {"worklist": driver.find_element(By.TAG_NAME, "body").text, "path": path(driver)}
    driver.get(f"{base}/ui/studies/{study}")
    result["study"] = driver.find_element(By.TAG_NAME, "body").text
    result["study_lang"] = driver.execute_script("return document.documentElement.lang")
    driver.save_screenshot(os.path.join(out, "study-vi.png"))
    return result


LAYOUT_JS = """
const head = document.querySelector('table.worklist thead');
return {overflow: Math.max(0, document.documentElement.scrollWidth - document.documentElement.clientWidth),
        header_row: head ? getComputedStyle(head).display : null};
"""


def tablet(driver, base, out, study):
    driver.set_window_size(768, 1024)
    driver.get(f"{base}/ui/")
    result = {"worklist": driver.execute_script(LAYOUT_JS)}
    driver.save_screenshot(os.path.join(out, "worklist-tablet.png"))
    driver.get(f"{base}/ui/studies/{study}")
    result["study"] = driver.execute_script(LAYOUT_JS)
    driver.save_screenshot(os.path.join(out, "study-tablet.png"))
    driver.set_window_size(1280, 900)
    return result


def sign_out(driver, base):
    driver.get(f"{base}/ui/")
    driver.find_element(By.ID, "sign-out").click()
    wait("the sign-in page", lambda: path(driver) == "/login")
    driver.get(f"{base}/ui/studies/x")
    return path(driver)


def main():
    base, out, flagged, live = sys.argv[1:5]
    driver = browser()
    report = {}
    try:
        sign_in(driver, base, report)
        report["order"] = worklist_order(driver)
        report["live"] = follow_live(driver, out, live)
        report["study"] = study_page(driver, base, out, flagged)
        report["vi"] = vietnamese(driver, base, out, flagged)
        report["tablet"] = tablet(driver, base, out, flagged)
        report["after_sign_out"] = sign_out(driver, base)
    except Exception as e:  # reported with what was seen so far, for the test to show
        report["error"] = f"{type(e).__name__}: {e}"
        try:
            driver.save_screenshot(os.path.join(out, "error.png"))
        except WebDriverException:
            pass
    finally:
        driver.quit()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
