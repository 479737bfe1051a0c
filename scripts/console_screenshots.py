"""The README's console screenshots, made by driving the same headless Chromium as the browser
test against a fresh in-memory iam-local. Run by hand when the console changes (the test suite
never writes tracked files):

    ./scripts/browser-tools && cargo build -p iam-local
    .venv-browser/bin/python scripts/console_screenshots.py target/debug/iam-local docs/console

The issued key's dialog is captured with the key replaced by a placeholder: a real key, even
one of a throwaway instance, does not belong in a tracked file.
"""

import pathlib
import sys
import tempfile

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from console_browser import api, browser, click, management_token, open_principal, sign_in, start_iam_local, stop, type_into, wait_for_text, wait_ready, wait_until


def main():
    binary, out = sys.argv[1], pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    proc, base, admin_key = start_iam_local(binary)
    profile = tempfile.mkdtemp(prefix="console-screenshots-")
    driver = browser(profile, 1100, 820)
    try:
        # Some principals to show, made over the API.
        token = management_token(base, admin_key)
        for name, status in (("billing-export", "Active"), ("nightly-reports", "Active"), ("legacy-sync", "Suspended")):
            p = api(base, "POST", "/iam/api-keys", token, {"displayName": name, "status": status, "expiresAt": "2027-06-30T23:59:59Z"})
            api(base, "PUT", f"/iam/api-keys/{p['id']}/role-assignments/device-provisioner", token)
            if status == "Active":
                api(base, "POST", f"/iam/api-keys/{p['id']}/credentials", token, {"name": "production"})
        api(base, "POST", "/iam/roles", token, {"name": "devices-reader", "description": "Read the device registry", "permissions": ["iot:devices:read"], "principalTypes": ["ApiKey", "ServiceAccount"]})

        driver.get(base + "/console/")
        wait_ready(driver)
        driver.save_screenshot(str(out / "sign-in.png"))
        sign_in(driver, admin_key)
        wait_for_text(driver, "who", "in dev")
        wait_until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#principals tr")) == 4)
        driver.save_screenshot(str(out / "api-keys.png"))

        open_principal(driver, "billing-export")
        type_into(driver, "credential-name", "ci-2027")
        click(driver, "issue-submit")
        wait_until(driver, lambda d: d.find_element(By.ID, "key-dialog").is_displayed())
        driver.execute_script("document.getElementById('new-key').textContent = 'ik_<shown once, here>.<secret>'")
        driver.save_screenshot(str(out / "issue-api-key.png"))
        click(driver, "close-key")
        Select(driver.find_element(By.ID, "assign-role")).select_by_value("iam-viewer")
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(out / "principal.png"))
        driver.execute_script("document.getElementById('credentials-title').scrollIntoView()")
        driver.save_screenshot(str(out / "credentials-and-roles.png"))

        driver.execute_script("location.hash = '#roles'")
        wait_until(driver, lambda d: d.find_element(By.ID, "roles").is_displayed())
        driver.save_screenshot(str(out / "roles.png"))
    finally:
        stop(driver, proc, profile)
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    main()
