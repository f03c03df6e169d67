"""Signs in to tramy's web UI through a real OpenID Connect provider in headless Chromium, as a
doctor would, and reports what happened as JSON on stdout (tests/oidc_sign_in.rs judges it):

- `asked`: the page asked for without a session (a study's page), and `sign_in_page`: where the
  browser was sent;
- `at_provider`: the provider's page the "sign in with your facility's account" button led to;
- `landed`: where the browser was after the provider's sign-in and consent, and `heading`: the
  page's first heading there;
- `cookies`: tramy's cookies as the browser holds them (name, httpOnly, sameSite).

Usage: oidc_sign_in.py BASE_URL PAGE USER OUT_DIR
"""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

TIMEOUT = 60


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    return driver


def wait_for(driver, what, probe):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        try:
            got = probe()
        except Exception:  # the page is between loads
            got = None
        if got:
            return got
        time.sleep(0.2)
    driver.save_screenshot(f"{OUT}/timeout.png")
    raise SystemExit(f"timed out waiting for {what} at {driver.current_url}: {driver.page_source[:2000]}")


def main():
    global OUT
    base, page, user, OUT = sys.argv[1:5]
    driver = browser()
    report = {"asked": page}
    try:
        driver.get(base + page)
        report["sign_in_page"] = driver.current_url
        driver.find_element(By.ID, "sign-in-sso").click()
        # The provider's own sign-in page (oidc-provider's development interaction).
        field = wait_for(driver, "the provider's sign-in form", lambda: driver.find_element(By.NAME, "login"))
        report["at_provider"] = driver.current_url
        field.send_keys(user)
        driver.find_element(By.NAME, "password").send_keys("any")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # Its consent page, then back to tramy.
        consent = wait_for(
            driver,
            "the provider's consent page",
            lambda: "/interaction/" in driver.current_url
            and not driver.find_elements(By.NAME, "login")
            and driver.find_element(By.CSS_SELECTOR, "button[type=submit]"),
        )
        try:
            consent.click()
        except Exception:  # the page moved on under the probe: find the button again
            wait_for(
                driver,
                "the consent button",
                lambda: driver.find_element(By.CSS_SELECTOR, "button[type=submit]"),
            ).click()
        wait_for(driver, "tramy's page", lambda: driver.current_url.startswith(base + "/ui/"))
        report["landed"] = driver.current_url
        report["heading"] = wait_for(driver, "a heading", lambda: driver.find_element(By.TAG_NAME, "h1").text)
        report["cookies"] = [
            {"name": c["name"], "httpOnly": c.get("httpOnly"), "sameSite": c.get("sameSite")}
            for c in driver.get_cookies()
        ]
        driver.save_screenshot(f"{OUT}/landed.png")
    finally:
        driver.quit()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
