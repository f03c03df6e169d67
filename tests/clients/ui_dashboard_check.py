"""Uses tramy's facility dashboard and admin pages in headless Chromium as a facility's
administrator would, and reports what the pages showed as JSON on stdout (tests/ui_dashboard.rs
judges it):

- `dashboard`: /ui/dashboard?facility=FACILITY: today's row of the per-day table (received
  instances and studies), the totals, each chart's title and number of bars, the failed
  deliveries listed (destination, study, state, reason), and the bars with `days=7`;
- `tablet`: the dashboard and an admin page at a tablet's portrait width (768 px): how far the
  page scrolls sideways;
- `ae`: the AE title list after adding AE_TITLE through the form;
- `token`: the token the page showed once after the form made it; the script writes it to
  OUT_DIR/token and waits for OUT_DIR/checked (the test tries it against the API), then revokes
  it with the page's button and reports the row's revoked date;
- `vi`: the dashboard's visible text after the language link was followed, and its lang.

Usage: ui_dashboard_check.py BASE_URL OUT_DIR FACILITY AE_TITLE
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
from selenium.webdriver.support.ui import Select

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


DASHBOARD_JS = """
const today = new Date().toISOString().slice(0, 10);
const row = document.querySelector(`#per-day tr[data-date="${today}"]`);
const cell = c => row ? row.querySelector('.' + c).innerText : null;
return {
  today: today,
  received: cell('received'), studies: cell('studies'), sent: cell('sent'),
  total_received: document.getElementById('total-received').innerText,
  total_studies: document.getElementById('total-studies').innerText,
  table_rows: document.querySelectorAll('#per-day tbody tr').length,
  charts: Array.from(document.querySelectorAll('svg.chart')).map(s => ({
    id: s.id, role: s.getAttribute('role'),
    title: s.querySelector(':scope > title') ? s.querySelector(':scope > title').textContent : null,
    bars: s.querySelectorAll('rect.chart-bar').length,
    today: s.querySelector('rect.chart-bar:last-of-type') ? s.querySelector('rect.chart-bar:last-of-type').dataset.value : null,
  })),
  deliveries: Array.from(document.querySelectorAll('tr.delivery')).map(r => ({
    peer: r.dataset.peer, study: r.dataset.study, failed: r.classList.contains('failed'),
    reason: r.querySelector('.reason').innerText,
  })),
};
"""


def dashboard(driver, base, out, facility):
    driver.get(f"{base}/ui/dashboard?facility={facility}")
    result = driver.execute_script(DASHBOARD_JS)
    driver.save_screenshot(os.path.join(out, "dashboard.png"))
    driver.get(f"{base}/ui/dashboard?facility={facility}&days=7")
    result["week"] = driver.execute_script(DASHBOARD_JS)["charts"]
    return result


OVERFLOW_JS = """return Math.max(0, document.documentElement.scrollWidth - document.documentElement.clientWidth)"""


def tablet(driver, base, out, facility):
    driver.set_window_size(768, 1024)
    driver.get(f"{base}/ui/dashboard?facility={facility}")
    result = {"dashboard": driver.execute_script(OVERFLOW_JS)}
    driver.save_screenshot(os.path.join(out, "dashboard-tablet.png"))
    driver.get(f"{base}/ui/admin/tokens")
    result["tokens"] = driver.execute_script(OVERFLOW_JS)
    driver.save_screenshot(os.path.join(out, "tokens-tablet.png"))
    driver.set_window_size(1280, 900)
    return result


def listed(driver, selector):
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('{selector}')).map(r => r.innerText)")


def add_ae(driver, base, out, facility, ae_title):
    driver.get(f"{base}/ui/admin/ae-titles")
    form = driver.find_element(By.ID, "add-ae")
    form.find_element(By.NAME, "ae_title").send_keys(ae_title)
    Select(form.find_element(By.NAME, "facility")).select_by_value(facility)
    form.find_element(By.NAME, "host").send_keys("127.0.0.1")
    form.find_element(By.NAME, "port").send_keys("11112")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait("the new AE title listed",
         lambda: driver.find_elements(By.CSS_SELECTOR, f'tr[data-ae="{ae_title}"]'))
    result = {"path": path(driver), "rows": listed(driver, "#ae-titles tbody tr")}
    # The same title again: refused, with the reason in the page.
    form = driver.find_element(By.ID, "add-ae")
    form.find_element(By.NAME, "ae_title").send_keys(ae_title)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait("the refusal", lambda: driver.find_elements(By.ID, "admin-error"))
    result["again"] = driver.find_element(By.ID, "admin-error").text
    driver.save_screenshot(os.path.join(out, "ae-titles.png"))
    return result


def token(driver, base, out, facility):
    driver.get(f"{base}/ui/admin/tokens")
    form = driver.find_element(By.ID, "create-token")
    Select(form.find_element(By.NAME, "facility")).select_by_value(facility)
    Select(form.find_element(By.NAME, "role")).select_by_value("clinician")
    form.find_element(By.NAME, "name").send_keys("made in the browser")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    secret = wait("the new token shown", lambda: driver.find_elements(By.ID, "new-token"))[0].text
    token_id = driver.find_element(By.ID, "new-token-id").text
    driver.save_screenshot(os.path.join(out, "token-made.png"))
    with open(os.path.join(out, "token.tmp"), "w") as f:
        f.write(secret)
    os.rename(os.path.join(out, "token.tmp"), os.path.join(out, "token"))
    wait("the test's check of the token", lambda: os.path.exists(os.path.join(out, "checked")))
    # Reloading the list never shows the secret again.
    driver.get(f"{base}/ui/admin/tokens")
    result = {"shown_again": secret in driver.find_element(By.TAG_NAME, "body").text}
    row = driver.find_element(By.CSS_SELECTOR, f'tr[data-token="{token_id}"]')
    row.find_element(By.CSS_SELECTOR, "button.revoke").click()
    wait("the token revoked",
         lambda: not driver.find_elements(By.CSS_SELECTOR, f'tr[data-token="{token_id}"] button.revoke'))
    result["row"] = driver.find_element(By.CSS_SELECTOR, f'tr[data-token="{token_id}"]').text
    result["path"] = path(driver)
    driver.save_screenshot(os.path.join(out, "token-revoked.png"))
    return result


def vietnamese(driver, base, out, facility):
    driver.get(f"{base}/ui/dashboard?facility={facility}")
    driver.find_element(By.ID, "lang-switch").click()
    wait("the page in Vietnamese",
         lambda: driver.execute_script("return document.documentElement.lang") == "vi")
    result = {"text": driver.find_element(By.TAG_NAME, "body").text, "path": path(driver),
              "chart_titles": driver.execute_script(
                  "return Array.from(document.querySelectorAll('svg.chart > title')).map(t => t.textContent)")}
    driver.save_screenshot(os.path.join(out, "dashboard-vi.png"))
    return result


def main():
    base, out, facility, ae_title = sys.argv[1:5]
    driver = browser()
    report = {}
    try:
        sign_in(driver, base)
        report["dashboard"] = dashboard(driver, base, out, facility)
        report["tablet"] = tablet(driver, base, out, facility)
        report["ae"] = add_ae(driver, base, out, facility, ae_title)
        report["token"] = token(driver, base, out, facility)
        report["vi"] = vietnamese(driver, base, out, facility)
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
