"""Gives feedback on an AI finding and shares a study in tramy's web UI, in headless Chromium,
as a doctor would, and reports what the pages showed as JSON on stdout (tests/ui_feedback.rs
judges it):

- `chosen`, `comment`, `entries`: the finding's feedback after agreeing with a comment and
  reloading the page: the button marked as the user's verdict, the comment in its box, and the
  verdicts listed;
- `share`: the share dialog opened and sent as a link: the link shown;
- `vi`: the study page's visible text after the language link was followed;
- `tablet`: whether the study page scrolls sideways at a tablet's portrait width (768 px).

Usage: ui_feedback_check.py BASE_URL OUT_DIR STUDY COMMENT REASON
Signs in with TRAMY_TOKEN. Screenshots go to OUT_DIR, for a person to look at when a check fails.
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

TIMEOUT = 240  # seconds per wait: two busy cores


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


def sign_in(driver, base):
    driver.get(f"{base}/ui/")
    field = driver.find_element(By.NAME, "token")
    field.send_keys(os.environ["TRAMY_TOKEN"])
    field.submit()
    wait("the worklist after signing in", lambda: path(driver) == "/ui/")


FEEDBACK_JS = """
const f = document.querySelector('article.finding');
if (!f) return null;
const chosen = f.querySelector('button.verdict.chosen');
return {chosen: chosen ? chosen.value : null,
        comment: f.querySelector('.feedback-form textarea').value,
        entries: Array.from(f.querySelectorAll('.feedback-list li')).map(li => ({
            name: li.querySelector('.reviewer').innerText,
            verdict: li.querySelector('.verdict-text').innerText,
            comment: (li.querySelector('.comment') || {innerText: ''}).innerText,
            mine: li.classList.contains('mine')}))};
"""


def give_feedback(driver, base, out, study, comment):
    page = f"/ui/studies/{study}"
    driver.get(f"{base}{page}")
    driver.execute_script("window.__before = true")
    finding = driver.find_element(By.CSS_SELECTOR, "article.finding")
    finding.find_element(By.CSS_SELECTOR, ".feedback-form textarea").send_keys(comment)
    finding.find_element(By.CSS_SELECTOR, "button.verdict.agree").click()
    # The form posts and the server sends the browser back to the page, a new document.
    wait("the study page again after the verdict",
         lambda: path(driver) == page
         and driver.execute_script("return window.__before !== true")
         and (driver.execute_script(FEEDBACK_JS) or {}).get("chosen"))
    driver.refresh()
    wait("the reloaded study page", lambda: driver.execute_script(FEEDBACK_JS))
    driver.execute_script("document.querySelector('.feedback').scrollIntoView()")
    driver.save_screenshot(os.path.join(out, "feedback.png"))
    return driver.execute_script(FEEDBACK_JS)


def share(driver, base, out, study, reason):
    driver.get(f"{base}/ui/studies/{study}")
    driver.find_element(By.CSS_SELECTOR, "#share summary").click()
    form = driver.find_element(By.CSS_SELECTOR, "#share form")
    form.find_element(By.NAME, "reason").send_keys(reason)
    form.find_element(By.ID, "share-submit").click()
    link = wait("the share link shown", lambda: driver.find_element(By.ID, "share-link"))
    result = {"href": link.get_attribute("href"), "text": link.text, "path": path(driver)}
    driver.save_screenshot(os.path.join(out, "shared.png"))
    return result


def vietnamese(driver, base, out, study):
    driver.get(f"{base}/ui/studies/{study}")
    driver.find_element(By.ID, "lang-switch").click()
    wait("the page in Vietnamese",
         lambda: driver.execute_script("return document.documentElement.lang") == "vi")
    # The closed share dialog's fields are text of the page too.
    driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    result = {"study": driver.find_element(By.TAG_NAME, "body").text, "path": path(driver)}
    driver.save_screenshot(os.path.join(out, "study-vi.png"))
    return result


LAYOUT_JS = """
return {overflow: Math.max(0, document.documentElement.scrollWidth - document.documentElement.clientWidth)};
"""


def tablet(driver, base, out, study):
    driver.set_window_size(768, 1024)
    driver.get(f"{base}/ui/studies/{study}")
    driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    result = driver.execute_script(LAYOUT_JS)
    driver.save_screenshot(os.path.join(out, "study-tablet.png"))
    return result


def main():
    base, out, study, comment, reason = sys.argv[1:6]
    driver = browser()
    report = {}
    try:
        sign_in(driver, base)
        report["feedback"] = give_feedback(driver, base, out, study, comment)
        report["share"] = share(driver, base, out, study, reason)
        report["vi"] = vietnamese(driver, base, out, study)
        report["tablet"] = tablet(driver, base, out, study)
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
