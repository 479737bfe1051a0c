"""What the console's browser test and its screenshot script share: a fresh iam-local, the
management API over HTTP, and headless Debian Chromium driven over WebDriver (chromedriver from
Debian, so nothing downloads a driver)."""

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

WAIT_SECONDS = 15


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_iam_local(binary, env=None):
    """A fresh in-memory iam-local (or one on the store `env` names): (process, base URL,
    bootstrap admin key or None)."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--in-memory", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    key = None
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise SystemExit("iam-local exited before listening")
        if line.startswith("Bootstrap API key for dev: "):
            key = line.split(": ", 1)[1].strip()
        if "listening on" in line:
            break
    return proc, f"http://127.0.0.1:{port}", key


def api(base, method, path, token=None, body=None):
    """The JSON answer, or urllib.error.HTTPError for a non-2xx status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, method=method, data=data)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def exchange_status(base, key, audience=None):
    """The HTTP status of exchanging `key` at the token endpoint."""
    body = {"apiKey": key}
    if audience:
        body["audience"] = audience
    try:
        api(base, "POST", "/iam/auth/token", body=body)
        return 200
    except urllib.error.HTTPError as refused:
        return refused.code


def management_token(base, key):
    config = api(base, "GET", "/console/config.json")
    answer = api(base, "POST", "/iam/auth/token", body={"apiKey": key, "audience": config["managementAudience"]})
    return answer["access_token"]


def browser(profile, width=1280, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--lang=en-US",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def wait_until(driver, condition):
    # A list re-rendered while the condition reads it is read again, not a failure.
    return WebDriverWait(driver, WAIT_SECONDS, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def wait_for_text(driver, element_id, fragment):
    wait_until(driver, ready.text_to_be_present_in_element((By.ID, element_id), fragment))


def wait_ready(driver):
    wait_until(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "true")


def click(driver, element_id):
    driver.find_element(By.ID, element_id).click()


def type_into(driver, element_id, text):
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def sign_in(driver, key):
    type_into(driver, "api-key", key)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def table_rows(driver, tbody_id):
    # Read in one script: tables are re-rendered as a whole, so element handles go stale.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(`#${arguments[0]} tr`), (r) => Array.from(r.cells, (c) => c.textContent))",
        tbody_id,
    )


def open_principal(driver, display_name):
    """From Access > API Keys, follow the principal's link; wait for its page."""
    driver.execute_script("location.hash = '#api-keys'")
    wait_until(driver, lambda d: d.find_element(By.ID, "api-keys").is_displayed() and any(r[0] == display_name for r in table_rows(d, "principals")))
    link = next(a for a in driver.find_elements(By.CSS_SELECTOR, "#principals a") if a.text == display_name)
    link.click()
    wait_until(driver, lambda d: d.find_element(By.ID, "principal").is_displayed() and d.find_element(By.ID, "principal-title").text == display_name)


def stop(driver, proc, profile):
    """Closes the browser, stops iam-local and removes the browser profile."""
    driver.quit()
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(profile, ignore_errors=True)
