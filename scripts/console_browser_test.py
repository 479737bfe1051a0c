"""The console in a real browser: headless Debian Chromium driven over WebDriver (chromedriver)
against a running iam-local, through the steps of the seed page the console covers so far.

Checks, besides each step's result: the API key typed to sign in is gone from the input, the
DOM, localStorage, sessionStorage, cookies and the URL; a refusal shows the server's words; a
token the server stops accepting asks to sign in again without losing the page; and axe-core
finds no accessibility violation on the signed-in page.

Usage: console_browser_test.py IAM_LOCAL_BINARY AXE_MIN_JS
"""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT_SECONDS = 15
checks = {"passed": 0}


def check(ok, what):
    if not ok:
        raise AssertionError(what)
    checks["passed"] += 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_iam_local(binary):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--in-memory", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
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
    check(key is not None, "iam-local printed a bootstrap key")
    return proc, f"http://127.0.0.1:{port}", key


def api(base, method, path, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, method=method, data=data)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def management_token(base, key):
    config = api(base, "GET", "/console/config.json")
    answer = api(base, "POST", "/iam/auth/token", body={"apiKey": key, "audience": config["managementAudience"]})
    return answer["access_token"]


def browser(profile):
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
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def text_of(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def wait_for_text(driver, element_id, fragment):
    WebDriverWait(driver, WAIT_SECONDS).until(ready.text_to_be_present_in_element((By.ID, element_id), fragment))


def rows(driver):
    # Read in one script: the table is re-rendered as a whole, so element handles go stale.
    return driver.execute_script("return Array.from(document.querySelectorAll('#principals tr'), (r) => Array.from(r.cells, (c) => c.textContent))")


def sign_in(driver, key):
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()


def key_left_anywhere(driver, key):
    """Where the key can still be found by page script or in the page itself."""
    found = driver.execute_script(
        """
        const key = arguments[0];
        const stores = [window.localStorage, window.sessionStorage];
        const stored = stores.some((s) => Array.from({ length: s.length }, (_, i) => s.getItem(s.key(i))).some((v) => v && v.includes(key)));
        // Booleans only: a failure message must not print the key.
        return {
          input: document.getElementById("api-key").value !== "",
          dom: document.documentElement.outerHTML.includes(key),
          storage: stored || window.localStorage.length + window.sessionStorage.length > 0,
          cookie: document.cookie !== "",
          url: location.href.includes(key),
        };
        """,
        key,
    )
    return found


def main():
    binary, axe_js = sys.argv[1], sys.argv[2]
    proc, base, admin_key = start_iam_local(binary)
    profile = tempfile.mkdtemp(prefix="console-browser-")
    driver = browser(profile)
    try:
        driver.get(base + "/console/index.html")
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.execute_script("return document.body.dataset.ready") == "true")
        check(driver.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form shows first")
        check("secret manager" in text_of(driver, "sign-in"), "the sign-in page warns where an admin key belongs")

        # A wrong key: the server's refusal, and nothing signed in.
        sign_in(driver, "ik_" + "A" * 22 + "." + "B" * 50)
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.find_element(By.ID, "notice").is_displayed())
        check(not driver.find_element(By.ID, "api-keys").is_displayed(), "a wrong key opens nothing")

        # The bootstrap administrator signs in; the key is dropped everywhere.
        sign_in(driver, admin_key)
        wait_for_text(driver, "who", "in dev")
        left = key_left_anywhere(driver, admin_key)
        check(not any(left.values()), f"the key is gone from the page (true where it was found): {left}")
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: len(rows(d)) == 1)
        check(rows(driver)[0][:2] == ["Bootstrap admin", "Active"], f"the bootstrap admin is listed: {rows(driver)}")

        # Create API key: name, status, expiry (UTC), then it is listed.
        driver.find_element(By.ID, "display-name").send_keys("browser integration")
        Select(driver.find_element(By.ID, "principal-status")).select_by_visible_text("Suspended")
        driver.execute_script("document.getElementById('expires-at').value = '2099-01-31'")
        driver.find_element(By.CSS_SELECTOR, "#create-form button[type=submit]").click()
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: len(rows(d)) == 2)
        created = next(r for r in rows(driver) if r[0] == "browser integration")
        check(created[1] == "Suspended" and created[2].startswith("Jan 31, 2099") and created[2].endswith("UTC"), f"created as asked: {created}")

        # The status filter.
        Select(driver.find_element(By.ID, "status-filter")).select_by_visible_text("Suspended")
        check([r[0] for r in rows(driver)] == ["browser integration"], f"the filter shows Suspended only: {rows(driver)}")
        Select(driver.find_element(By.ID, "status-filter")).select_by_visible_text("All")

        # A refusal is the server's own detail: a name past its limit.
        driver.find_element(By.ID, "display-name").send_keys("x")
        driver.execute_script("const f = document.getElementById('display-name'); f.removeAttribute('maxlength'); f.value = 'y'.repeat(300)")
        driver.find_element(By.CSS_SELECTOR, "#create-form button[type=submit]").click()
        wait_for_text(driver, "notice", "displayName")
        check(len(rows(driver)) == 2, "a refused create adds nothing")

        # Accessibility of the signed-in page.
        driver.execute_script(open(axe_js, encoding="utf-8").read())
        result = driver.execute_async_script("const done = arguments[arguments.length - 1]; axe.run(document).then((r) => done(r.violations.map((v) => v.id + ': ' + v.help)));")
        check(result == [], f"axe-core violations: {result}")

        # The signed-in principal loses its access: the console asks to sign in again, and keeps the page.
        token = management_token(base, admin_key)
        second = api(base, "POST", "/iam/api-keys", token, {"displayName": "second admin"})
        api(base, "PUT", f"/iam/api-keys/{second['id']}/role-assignments/iam-admin", token)
        issued = api(base, "POST", f"/iam/api-keys/{second['id']}/credentials", token, {"name": "browser"})
        driver.find_element(By.ID, "sign-out").click()
        sign_in(driver, issued["apiKey"])
        wait_for_text(driver, "who", "in dev")
        api(base, "POST", f"/iam/api-keys/{second['id']}/credentials/{issued['credential']['keyId']}/revoke", token)
        driver.find_element(By.ID, "display-name").clear()
        driver.find_element(By.ID, "display-name").send_keys("after revocation")
        driver.find_element(By.CSS_SELECTOR, "#create-form button[type=submit]").click()
        wait_for_text(driver, "notice", "Sign in again")
        check(driver.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form is back")
        check(driver.find_element(By.ID, "api-keys").is_displayed() and len(rows(driver)) == 3, "the page keeps its place")
        check(driver.find_element(By.ID, "display-name").get_attribute("value") == "after revocation", "the form keeps what was typed")
        names = [p["displayName"] for p in api(base, "GET", "/iam/api-keys", token)["items"]]
        check("after revocation" not in names, "nothing was created with the revoked credential's token")

        # The console's own headers.
        with urllib.request.urlopen(base + "/console/index.html", timeout=10) as response:
            csp = response.headers.get("content-security-policy", "")
            check("script-src 'self'" in csp and "frame-ancestors 'none'" in csp, f"a strict CSP: {csp}")
            check(response.headers.get("x-content-type-options") == "nosniff", "nosniff")
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    print(f"console in a real browser: {checks['passed']} checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
