"""Opens studies in the real OHIF Viewer (served by tramy) in headless Chromium and reports what
a radiologist would see, as JSON on stdout:

- `sr`: the findings SR opened in its viewport: whether the study browser lists it, the SVG
  text OHIF drew beside the region, and the error notifications shown with their details;
- `image`: an image study opened: statistics of the viewport canvas pixels (a blank or failed
  image is one value) and the frame requests OHIF made, with the Accept header it sent and the
  Content-Type of the first part of each response as the browser received it.

It first signs in on tramy's /login page with the token in TRAMY_TOKEN, as a doctor would, so
that the viewer's requests carry the session cookie.

- `ui`: the study's page in tramy's web UI asked for without a session: the sign-in page it
  leads to, where signing in leads, and the image OHIF drew after "open in viewer".

Usage: ohif_check.py BASE_URL OUT_DIR [ui STUDY] sr STUDY SERIES TEXT [image STUDY]...
Screenshots go to OUT_DIR (one per step), for a person to look at when a check fails.
"""

import base64
import json
import os
import re
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

TIMEOUT = 180  # seconds per step: OHIF's 17 MB bundle on two busy cores with software WebGL (90 s ran out once under parallel builds)

# Notifications OHIF shows (sonner toasts), with their type.
TOASTS_JS = """
return Array.from(document.querySelectorAll('[data-sonner-toast]')).map(t => ({
  type: t.getAttribute('data-type') || '', text: t.innerText }));
"""

# SVG text drawn over the viewports (annotation text boxes).
SVG_TEXT_JS = """
return Array.from(document.querySelectorAll('svg text, svg tspan')).map(t => t.textContent);
"""

# Pixels of each viewport canvas: cornerstone draws every viewport into a 2D canvas.
CANVAS_JS = """
return Array.from(document.querySelectorAll('canvas.cornerstone-canvas')).map(c => {
  if (!c.width || !c.height) return {width: c.width, height: c.height, distinct: 0};
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  let min = 255, max = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i];
    if (v < min) min = v;
    if (v > max) max = v;
    if (seen.size < 1024) seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
  }
  return {width: c.width, height: c.height, min, max, distinct: seen.size};
});
"""

# Dialogs a first visit shows: the investigational-use notice and the tour.
DISMISS_JS = """
const labels = ['Confirm and hide', 'Skip all', 'Skip', 'Got it'];
let clicked = [];
for (const b of document.querySelectorAll('button')) {
  const t = (b.innerText || '').trim();
  if (labels.includes(t)) { b.click(); clicked.push(t); }
}
return clicked;
"""


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    return driver


def wait(driver, what, probe, timeout=TIMEOUT):
    """Polls `probe` (dismissing first-visit dialogs) until it returns something truthy."""
    deadline = time.time() + timeout
    while True:
        driver.execute_script(DISMISS_JS)
        try:
            got = probe()
        except WebDriverException:
            got = None
        if got:
            return got
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def errors(driver):
    """Error notifications, each with the first line of the details OHIF shows for it."""
    toasts = [t for t in driver.execute_script(TOASTS_JS) if t["type"] == "error"]
    if toasts:
        driver.execute_script(
            "for (const b of document.querySelectorAll('button'))"
            " if (b.innerText.trim() == 'Show Details') b.click();"
        )
        time.sleep(1)
        text = driver.execute_script("return document.body.innerText")
        details = sorted({line for line in text.splitlines() if line.startswith("Error")})
        for t in toasts:
            t["details"] = details
    return toasts


def settle(driver):
    """Gives late failures (image loads, thumbnails) time to show as notifications."""
    time.sleep(3)


def unfinished_requests(driver):
    """Requests the page sent that never finished or failed (from Chrome's performance log)."""
    sent, ended = {}, set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif message["method"] in ("Network.loadingFinished", "Network.loadingFailed"):
            ended.add(params["requestId"])
    return [url for rid, url in sent.items() if rid not in ended]


def open_sr(driver, base, out, study, series, text):
    url = f"{base}/viewer?StudyInstanceUIDs={study}&initialSeriesInstanceUID={series}"
    result = {"errors": [], "svg_text": [], "found": False}
    drawn = lambda: any(text in t for t in driver.execute_script(SVG_TEXT_JS))
    driver.get_log("performance")  # start the log afresh for this study
    driver.get(url)
    # OHIF 3.13 now and then never draws the SR's referenced image in its SR viewport (seen in
    # 2 of about 15 runs, on busy cores and in a fresh clone, with no error shown). One reload is
    # what a person would do; it is reported with the requests left unfinished, and the test
    # still fails if the reload does not help.
    try:
        wait(driver, f"'{text}' drawn in the SR viewport", drawn, timeout=TIMEOUT / 2)
        result["found"] = True
    except TimeoutError as e:
        result["first_attempt"] = {
            "timeout": str(e),
            "unfinished_requests": unfinished_requests(driver)[:20],
        }
        driver.save_screenshot(f"{out}/sr-first-attempt.png")
        driver.get(url)
        try:
            wait(driver, f"'{text}' drawn in the SR viewport after a reload", drawn)
            result["found"] = True
            result["reloaded"] = True
        except TimeoutError as e:
            result["timeout"] = str(e)
    settle(driver)
    # The study browser lists the SR series by its description.
    result["listed"] = "AI findings" in driver.execute_script("return document.body.innerText")
    result["svg_text"] = driver.execute_script(SVG_TEXT_JS)
    result["canvases"] = driver.execute_script(CANVAS_JS)
    driver.save_screenshot(f"{out}/sr.png")
    result["errors"] = errors(driver)
    return result


def frame_exchanges(driver):
    """Frame requests from Chrome's performance log, each with the first part's Content-Type."""
    requests, responses = {}, []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if "/frames/" in url:
                headers = {k.lower(): v for k, v in params["request"]["headers"].items()}
                requests[params["requestId"]] = {"url": url, "accept": headers.get("accept", "")}
        elif message["method"] == "Network.loadingFinished" and params["requestId"] in requests:
            responses.append(params["requestId"])
    out = []
    for rid in responses:
        exchange = requests[rid]
        try:
            body = driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": rid})
            raw = (
                base64.b64decode(body["body"])
                if body.get("base64Encoded")
                else body["body"].encode("latin-1", "replace")
            )
            head = raw[:2048].decode("latin-1")
            match = re.search(r"(?im)^content-type:\s*(.+?)\r?$", head)
            exchange["part_content_type"] = match.group(1) if match else None
            exchange["bytes"] = len(raw)
        except WebDriverException as e:
            exchange["body_error"] = str(e).splitlines()[0]
        out.append(exchange)
    return out


def open_image(driver, base, out, study):
    driver.get_log("performance")  # start the log afresh for this study
    driver.get(f"{base}/viewer?StudyInstanceUIDs={study}")
    result = {}
    try:
        wait(
            driver,
            "an image drawn",
            lambda: any(c.get("distinct", 0) > 1 for c in driver.execute_script(CANVAS_JS)),
        )
    except TimeoutError as e:
        result["timeout"] = str(e)
    settle(driver)
    result["canvases"] = driver.execute_script(CANVAS_JS)
    driver.save_screenshot(f"{out}/image-{study[-12:]}.png")
    result["errors"] = errors(driver)
    result["frames"] = frame_exchanges(driver)
    return result


def open_from_worklist(driver, base, out, study):
    """As a doctor would: asks for the study's page without a session, signs in on the page
    that leads to, lands back on the study's page, and follows its "open in viewer" link."""
    from selenium.webdriver.common.by import By

    page = f"{base}/ui/studies/{study}"
    driver.get(page)
    result = {"sign_in_url": driver.current_url}
    sign_in(driver, base, start=False)
    result["after_sign_in"] = driver.current_url
    driver.get_log("performance")
    driver.find_element(By.ID, "open-viewer").click()
    try:
        wait(
            driver,
            "an image drawn after 'open in viewer'",
            lambda: any(c.get("distinct", 0) > 1 for c in driver.execute_script(CANVAS_JS)),
        )
    except TimeoutError as e:
        result["timeout"] = str(e)
    settle(driver)
    result["viewer_url"] = driver.current_url
    result["canvases"] = driver.execute_script(CANVAS_JS)
    driver.save_screenshot(f"{out}/from-ui-{study[-12:]}.png")
    result["errors"] = errors(driver)
    return result


def sign_in(driver, base, start=True):
    """Signs in on /login with TRAMY_TOKEN (on the page the browser is on unless `start`);
    fails loudly when the page refuses it."""
    from selenium.webdriver.common.by import By

    if start:
        driver.get(f"{base}/login")
    field = driver.find_element(By.NAME, "token")
    field.send_keys(os.environ["TRAMY_TOKEN"])
    field.submit()
    deadline = time.time() + 30
    while time.time() < deadline:
        if not driver.current_url.split("?")[0].rstrip("/").endswith("/login"):
            return
        time.sleep(0.2)
    raise SystemExit(f"sign-in failed: {driver.find_element(By.TAG_NAME, 'body').text}")


def main():
    base, out, steps = sys.argv[1], sys.argv[2], sys.argv[3:]
    driver = browser()
    report = {"sr": [], "image": [], "ui": []}
    try:
        if steps[0] != "ui":
            sign_in(driver, base)
        while steps:
            if steps[0] == "sr":
                report["sr"].append(open_sr(driver, base, out, *steps[1:4]))
                steps = steps[4:]
            elif steps[0] == "ui":
                report["ui"].append(open_from_worklist(driver, base, out, steps[1]))
                steps = steps[2:]
            elif steps[0] == "image":
                report["image"].append(open_image(driver, base, out, steps[1]))
                steps = steps[2:]
            else:
                raise SystemExit(f"unknown step {steps[0]}")
        report["console"] = [
            e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"
        ][:50]
    finally:
        driver.quit()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
