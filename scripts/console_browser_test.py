"""The console in a real browser: headless Debian Chromium driven over WebDriver (chromedriver)
against a fresh iam-local, through every step of the seed page, through the UI only (the test
talks HTTP itself only to exchange the issued key, and to set up a second administrator whose
access it takes away).

Besides each step's result it checks: an API key is gone from the DOM, storage, cookies and URL
once signed in with or once its dialog closes; refusals show the server's words; a viewer sees
write actions disabled with the reason; a session that ends asks to sign in again and comes back
to the same page; creating works from the keyboard alone; nothing overflows a 375 px viewport;
axe-core finds no serious or critical violation on any page; markup in names and descriptions
is shown as text and runs nothing; the CSP header is sent and the browser logs no error.

Then, with --dynamodb, a person signs in through the identity provider again, on an iam-local
serving from DynamoDB (new tables on the given DynamoDB-compatible endpoint, made with
iam-admin), and manages API keys there.

Usage: console_browser_test.py IAM_LOCAL_BINARY AXE_MIN_JS [--dynamodb ENDPOINT_URL --admin IAM_ADMIN_BINARY]
"""

import os
import subprocess
import sys
import tempfile
import urllib.request

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from console_browser import (
    api,
    browser,
    click,
    exchange_status,
    management_token,
    open_principal,
    sign_in,
    start_iam_local,
    stop,
    table_rows,
    type_into,
    wait_for_text,
    wait_ready,
    wait_until,
)
from dynamodb_deployment import dynamodb_deployment
from local_oidc_provider import LocalProvider

checks = {"passed": 0}


def check(ok, what):
    if not ok:
        raise AssertionError(what)
    checks["passed"] += 1


def displayed(driver, element_id):
    return driver.find_element(By.ID, element_id).is_displayed()


def key_left_anywhere(driver, key):
    """Where the key can still be found by page script or in the page itself."""
    return driver.execute_script(
        """
        const key = arguments[0];
        const stores = [window.localStorage, window.sessionStorage];
        const stored = stores.some((s) => Array.from({ length: s.length }, (_, i) => s.getItem(s.key(i))).some((v) => v && v.includes(key)));
        const fields = Array.from(document.querySelectorAll("input, textarea"), (f) => f.value);
        // Booleans only: a failure message must not print the key.
        return {
          field: fields.some((v) => v.includes(key)),
          dom: document.documentElement.outerHTML.includes(key) || document.body.innerText.includes(key),
          storage: stored || window.localStorage.length + window.sessionStorage.length > 0,
          cookie: document.cookie !== "",
          url: location.href.includes(key),
        };
        """,
        key,
    )


def axe_serious(driver, axe_js, where):
    if not driver.execute_script("return typeof axe !== 'undefined'"):
        driver.execute_script(axe_js)
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then((r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help }))));"
    )
    serious = [f"{v['id']}: {v['help']}" for v in found if v["impact"] in ("serious", "critical")]
    check(serious == [], f"axe-core, {where}: serious or critical violations {serious}")
    minor = [f"{v['id']} ({v['impact']})" for v in found if v["impact"] not in ("serious", "critical")]
    if minor:
        print(f"axe-core, {where}: minor findings {minor}")


def fits(driver, where):
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 0, f"{where} fits a {driver.execute_script('return window.innerWidth')} px viewport (overflows by {overflow} px)")


def confirm(driver, yes):
    wait_until(driver, lambda d: displayed(d, "confirm-dialog"))
    click(driver, "confirm-yes" if yes else "confirm-no")
    wait_until(driver, lambda d: not displayed(d, "confirm-dialog"))


def no_alert(driver):
    try:
        driver.switch_to.alert
        return False
    except NoAlertPresentException:
        return True


def reason(driver, element_id):
    element = driver.find_element(By.ID, element_id)
    return element.text if element.is_displayed() else ""


def create_in_ui(driver, name, status="Active", expires=None):
    driver.execute_script("location.hash = '#api-keys'")
    wait_until(driver, lambda d: displayed(d, "api-keys"))
    type_into(driver, "display-name", name)
    Select(driver.find_element(By.ID, "principal-status")).select_by_visible_text(status)
    if expires:
        driver.execute_script("document.getElementById('expires-at').value = arguments[0]", expires)
    click(driver, "create-submit")
    wait_until(driver, lambda d: displayed(d, "principal") and d.find_element(By.ID, "principal-title").text == name)


def issue_in_ui(driver, credential_name, sources=None):
    """Issue API key on the open principal: answers the key, read from the dialog, which it closes."""
    type_into(driver, "credential-name", credential_name)
    if sources:
        type_into(driver, "credential-sources", sources)
    click(driver, "issue-submit")
    wait_until(driver, lambda d: displayed(d, "key-dialog") and d.find_element(By.ID, "new-key").text.startswith("ik_"))
    key = driver.find_element(By.ID, "new-key").text
    check("secret manager" in driver.find_element(By.ID, "key-dialog").text, "the dialog warns where the key belongs")
    click(driver, "copy-key")
    wait_until(driver, lambda d: d.find_element(By.ID, "copy-status").text != "")
    click(driver, "close-key")
    wait_until(driver, lambda d: not displayed(d, "key-dialog"))
    wait_until(driver, lambda d: any(r[0] == credential_name for r in table_rows(d, "credentials")))
    return key


def details(driver):
    return driver.execute_script(
        "const d = Array.from(document.querySelectorAll('#principal-details > *'), (e) => e.textContent);"
        "const out = {}; for (let i = 0; i < d.length; i += 2) out[d[i]] = d[i + 1]; return out;"
    )


def sign_in_on_dynamodb(driver, binary, endpoint, admin_binary, provider):
    """The identity-provider sign-in on the DynamoDB store: the provider trusted and Ada mapped
    over HTTP, then Ada signs in through the console and issues a key that works."""
    env = dict(os.environ, **dynamodb_deployment("br", endpoint), IAM_STORE="dynamodb", RUST_LOG="warn")
    for command in (["create-tables"], ["init-signing-key"]):
        made = subprocess.run([admin_binary, *command], env=env, capture_output=True, text=True, timeout=120)
        check(made.returncode == 0, f"iam-admin {command[0]} on DynamoDB (exit {made.returncode})")
    proc, base, admin_key = start_iam_local(binary, env)
    try:
        check(admin_key is not None, "iam-local on DynamoDB printed a bootstrap key")
        token = management_token(base, admin_key)
        settings = {"issuers": [{"issuer": provider.url}], "signIn": {"issuer": provider.url, "clientId": "iam-console"}}
        api(base, "PUT", "/iam/trusted-issuers", token, settings)
        ada = api(base, "POST", "/iam/api-keys", token, {"displayName": "Ada on DynamoDB", "type": "User", "identity": {"subject": "ada@example.com"}})
        api(base, "PUT", f"/iam/api-keys/{ada['id']}/role-assignments/iam-admin", token)
        provider.subject = "ada@example.com"
        driver.get(base + "/console/")
        wait_ready(driver)
        wait_until(driver, lambda d: displayed(d, "sign-in"))
        type_into(driver, "sso-org", "dev")
        click(driver, "sso-submit")
        wait_for_text(driver, "who", ada["id"])
        check("sign-in=" not in driver.current_url, f"DynamoDB: the one-time code left the address bar: {driver.current_url}")
        create_in_ui(driver, "made by Ada on DynamoDB")
        made = driver.execute_script("return location.hash").split("/")[-1]
        key = issue_in_ui(driver, "ada's DynamoDB key")
        check(exchange_status(base, key) == 200, "DynamoDB: the key Ada issued works")
        trail = api(base, "GET", f"/iam/audit-events?principalId={made}", token)["items"]
        check(len(trail) >= 2 and all(e["actor"] == ada["id"] for e in trail), f"DynamoDB: the trail names Ada as the actor: {trail}")
        left = key_left_anywhere(driver, key)
        check(not any(left.values()), f"DynamoDB: no key anywhere at the end (true where it was found): {left}")
        click(driver, "sign-out")
        wait_until(driver, lambda d: displayed(d, "sign-in"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    binary, axe_path = sys.argv[1], sys.argv[2]
    options = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    if set(options) - {"--dynamodb", "--admin"} or ("--dynamodb" in options) != ("--admin" in options):
        raise SystemExit(__doc__)
    axe_js = open(axe_path, encoding="utf-8").read()
    # The test's identity provider is on loopback: the operator's switch lets iam-local reach it.
    provider = LocalProvider("ada@example.com")
    os.environ["IAM_OUTBOUND_ALLOW_LOOPBACK"] = "true"
    proc, base, admin_key = start_iam_local(binary)
    check(admin_key is not None, "iam-local printed a bootstrap key")
    config = api(base, "GET", "/console/config.json")
    audience = config["managementAudience"]
    profile = tempfile.mkdtemp(prefix="console-browser-")
    driver = browser(profile)
    try:
        # `/` leads to the console.
        driver.get(base + "/")
        wait_ready(driver)
        check(driver.current_url == base + "/console/", f"/ leads to the console: {driver.current_url}")
        check(displayed(driver, "sign-in"), "the sign-in form shows first")
        check("secret manager" in driver.find_element(By.ID, "sign-in").text, "the sign-in page warns where an admin key belongs")

        # A wrong key: the server's refusal, and nothing signed in.
        sign_in(driver, "ik_" + "A" * 22 + "." + "B" * 50)
        wait_until(driver, lambda d: displayed(d, "notice"))
        check(not displayed(driver, "api-keys"), "a wrong key opens nothing")

        # The bootstrap administrator signs in; the key is dropped everywhere.
        sign_in(driver, admin_key)
        wait_for_text(driver, "who", "in dev")
        left = key_left_anywhere(driver, admin_key)
        check(not any(left.values()), f"the sign-in key is gone from the page (true where it was found): {left}")
        wait_until(driver, lambda d: len(table_rows(d, "principals")) == 1)
        first = table_rows(driver, "principals")[0]
        check(first[:2] == ["Bootstrap admin", "Active"] and first[4] == "1", f"the bootstrap admin is listed with its one active credential: {first}")
        axe_serious(driver, axe_js, "Access > API Keys")

        # Create API key with an expiry: the new principal's page opens.
        create_in_ui(driver, "browser integration", "Suspended", "2099-01-31")
        shown = details(driver)
        check(shown.get("Status") == "Suspended", f"created Suspended: {shown}")
        check(shown.get("Expires", "").startswith("Jan 31, 2099") and shown["Expires"].endswith("UTC"), f"expires at the end of the day, UTC: {shown}")

        # Role assignments offer only roles that support API-key principals.
        offered = [o.get_attribute("value") for o in Select(driver.find_element(By.ID, "assign-role")).options]
        check("org-owner" not in offered, f"a User-only role is not offered: {offered}")
        check({"iam-viewer", "iam-admin", "device-provisioner"} <= set(offered), f"the roles supporting ApiKey are offered: {offered}")
        Select(driver.find_element(By.ID, "assign-role")).select_by_value("iam-viewer")
        click(driver, "assign-submit")
        wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#assignments li[data-role-id='iam-viewer']"))
        offered = [o.get_attribute("value") for o in Select(driver.find_element(By.ID, "assign-role")).options]
        check("iam-viewer" not in offered, "an assigned role is no longer offered")

        # Edit: make it Active, so that its key can be used.
        Select(driver.find_element(By.ID, "edit-status")).select_by_visible_text("Active")
        click(driver, "save")
        wait_until(driver, lambda d: details(d).get("Status") == "Active")

        # Issue API key: read from the dialog, gone once it closes; it works over HTTP.
        key = issue_in_ui(driver, "ci")
        left = key_left_anywhere(driver, key)
        check(not any(left.values()), f"the issued key is gone once the dialog closes (true where it was found): {left}")
        check(exchange_status(base, key) == 200, "the issued key exchanges for a token")
        check(details(driver).get("Active credentials") == "1", "the principal counts its active credential")
        axe_serious(driver, axe_js, "the principal's page")

        # Rotate it with an hour's grace: the new key shown once, with the old key's new expiry;
        # both keys work, and the old one offers no second rotation.
        key_id = key.split(".", 1)[0].removeprefix("ik_")
        Select(driver.find_element(By.ID, "rotate-grace")).select_by_value("3600")
        driver.find_element(By.CSS_SELECTOR, f"#credentials tr[data-key-id='{key_id}'] button[aria-label^='Rotate']").click()
        check("1 hour" in driver.find_element(By.ID, "confirm-message").text, "the confirmation says how long the old key keeps working")
        confirm(driver, yes=True)
        wait_until(driver, lambda d: displayed(d, "key-dialog") and d.find_element(By.ID, "new-key").text.startswith("ik_"))
        rotated_key = driver.find_element(By.ID, "new-key").text
        note = driver.find_element(By.ID, "rotated-note").text
        check(key_id in note and "keeps working until" in note and note.endswith("UTC."), f"the dialog gives the old key's new expiry: {note}")
        click(driver, "close-key")
        wait_until(driver, lambda d: not displayed(d, "key-dialog"))
        rotated_id = rotated_key.split(".", 1)[0].removeprefix("ik_")
        wait_until(driver, lambda d: any(r[1] == rotated_id for r in table_rows(d, "credentials")))
        left = key_left_anywhere(driver, rotated_key)
        check(not any(left.values()), f"the rotated key is gone once the dialog closes (true where it was found): {left}")
        check(exchange_status(base, key) == 200 and exchange_status(base, rotated_key) == 200, "both keys work during the grace period")
        check(
            not driver.find_elements(By.CSS_SELECTOR, f"#credentials tr[data-key-id='{key_id}'] button[aria-label^='Rotate']"),
            "a rotated credential offers no second rotation",
        )

        # Revoke the old one in the UI: cancel first, then confirm; the exchange then fails.
        revoke_button = f"#credentials tr[data-key-id='{key_id}'] button"
        driver.find_element(By.CSS_SELECTOR, revoke_button).click()
        confirm(driver, yes=False)
        check(exchange_status(base, key) == 200, "cancelling the confirmation revokes nothing")
        driver.find_element(By.CSS_SELECTOR, revoke_button).click()
        confirm(driver, yes=True)
        wait_until(driver, lambda d: not any(r[1] == key_id for r in table_rows(d, "credentials")))
        check(exchange_status(base, key) != 200, "the revoked key no longer exchanges")
        click(driver, "show-all")
        wait_until(driver, lambda d: any(r[1] == key_id and r[2] == f"Revoked, rotated to {rotated_id}" for r in table_rows(d, "credentials")))
        used = next(r for r in table_rows(driver, "credentials") if r[1] == key_id)
        check(used[6].startswith("3 (most on "), f"the usage column counts the key's three exchanges: {used}")
        check(used[5].endswith("from 127.0.0.1"), f"the last-used column names where from: {used}")
        click(driver, "show-all")

        # A key restricted to networks this browser is not on: shown, and held to them.
        fenced = issue_in_ui(driver, "fenced", "192.0.2.0/24, 2001:db8::/32")
        fenced_id = fenced.split(".", 1)[0].removeprefix("ik_")
        row = next(r for r in table_rows(driver, "credentials") if r[1] == fenced_id)
        check(row[7] == "from 192.0.2.0/24, 2001:db8::/32", f"the restrictions column shows its networks: {row}")
        check(exchange_status(base, fenced) == 400, "a key used from outside its networks is refused")

        # A viewer: every write disabled, with the reason.
        viewer_key = issue_in_ui(driver, "viewer session")
        click(driver, "sign-out")
        sign_in(driver, viewer_key)
        wait_for_text(driver, "who", "in dev")
        driver.execute_script("location.hash = '#api-keys'")
        wait_until(driver, lambda d: displayed(d, "api-keys") and d.find_element(By.ID, "create-submit").get_attribute("disabled"))
        check("iam:api-keys:write" in reason(driver, "create-reason"), "Create API key says which permission it needs")
        open_principal(driver, "Bootstrap admin")
        for control in ("save", "issue-submit", "assign-submit"):
            check(driver.find_element(By.ID, control).get_attribute("disabled"), f"a viewer sees {control} disabled")
        check(all(b.get_attribute("disabled") for b in driver.find_elements(By.CSS_SELECTOR, "#credentials button, #assignments button")), "a viewer cannot revoke or remove")
        check("permission" in reason(driver, "issue-reason") and "permission" in reason(driver, "edit-reason"), "each disabled action says why")
        driver.execute_script("location.hash = '#roles'")
        wait_until(driver, lambda d: displayed(d, "roles") and d.find_element(By.ID, "define-submit").get_attribute("disabled"))
        check("iam:roles:write" in reason(driver, "define-reason"), "Define role says which permission it needs")
        driver.execute_script("location.hash = '#policy'")
        wait_until(driver, lambda d: displayed(d, "policy") and d.find_element(By.ID, "policy-submit").get_attribute("disabled"))
        check("iam:policy:write" in reason(driver, "policy-reason"), "the policy page says which permission saving needs")
        check("has not set a policy" in driver.find_element(By.ID, "policy-updated").text, "the default policy is described")
        driver.execute_script("location.hash = '#activity'")
        wait_until(driver, lambda d: displayed(d, "activity") and table_rows(d, "activity-list"))
        check(reason(driver, "activity-reason") == "", "a viewer reads the activity (iam-viewer holds iam:audit:read)")
        driver.execute_script("location.hash = '#webhooks'")
        wait_until(driver, lambda d: displayed(d, "webhooks") and d.find_element(By.ID, "webhook-submit").get_attribute("disabled"))
        check("iam:webhooks:manage" in reason(driver, "webhook-add-reason"), "the webhooks page says which permission it needs")
        click(driver, "sign-out")

        # Back as the administrator. The credential policy: creation turned off is the server's
        # refusal on the principal's page; an idle limit is saved and read back.
        sign_in(driver, admin_key)
        wait_for_text(driver, "who", "in dev")
        driver.execute_script("location.hash = '#policy'")
        wait_until(driver, lambda d: displayed(d, "policy") and not d.find_element(By.ID, "policy-submit").get_attribute("disabled"))
        axe_serious(driver, axe_js, "Access > Credential policy")
        type_into(driver, "policy-idle", "365")
        click(driver, "policy-creation")
        click(driver, "policy-submit")
        wait_until(driver, lambda d: d.find_element(By.ID, "policy-updated").text.startswith("Last set"))
        policy = api(base, "GET", "/iam/policy", management_token(base, admin_key))
        check(policy["maxIdleDays"] == 365 and policy["allowCredentialCreation"] is False, f"the policy was saved as shown: {policy}")
        open_principal(driver, "Bootstrap admin")
        type_into(driver, "credential-name", "refused by policy")
        click(driver, "issue-submit")
        wait_until(driver, lambda d: displayed(d, "notice") and "does not allow creating credentials" in d.find_element(By.ID, "notice").text)
        driver.execute_script("location.hash = '#policy'")
        wait_until(driver, lambda d: displayed(d, "policy") and d.find_element(By.ID, "policy-idle").get_attribute("value") == "365")
        click(driver, "policy-creation")
        click(driver, "policy-submit")
        wait_until(driver, lambda d: api(base, "GET", "/iam/policy", management_token(base, admin_key))["allowCredentialCreation"] is True)

        # Activity: who did what, for the organisation and on each principal's page.
        driver.execute_script("location.hash = '#activity'")
        wait_until(driver, lambda d: displayed(d, "activity") and len(table_rows(d, "activity-list")) >= 2)
        activity = table_rows(driver, "activity-list")
        check(activity[0][2] == "policy.update" and activity[0][3] == "success", f"the newest change comes first: {activity[0]}")
        check("(key " in activity[0][1], f"each change names who made it and with which key: {activity[0]}")
        actions = {row[2] for row in activity}
        check({"policy.update", "credential.revoke", "credential.rotate", "credential.issue"} <= actions, f"the trail holds the session's changes: {sorted(actions)}")
        axe_serious(driver, axe_js, "Access > Activity")
        Select(driver.find_element(By.ID, "activity-outcome")).select_by_value("success")
        wait_until(driver, lambda d: all(r[3] == "success" for r in table_rows(d, "activity-list")))
        Select(driver.find_element(By.ID, "activity-outcome")).select_by_value("")
        open_principal(driver, "browser integration")
        wait_until(driver, lambda d: table_rows(d, "principal-activity"))
        mine = [r[2] for r in table_rows(driver, "principal-activity")]
        # Newest first; a refusal is timed at the start of its minute, so it may sort below the creation.
        check({"principal.create", "credential.rotate", "credential.revoke"} <= set(mine), f"the principal's own activity: {mine}")

        # Creating from the keyboard alone.
        driver.execute_script("location.hash = '#api-keys'")
        wait_until(driver, lambda d: displayed(d, "api-keys"))
        driver.execute_script("document.getElementById('display-name').focus()")
        focused = lambda: driver.switch_to.active_element  # noqa: E731
        focused().send_keys("keyboard made")
        focused().send_keys(Keys.TAB)
        check(focused().get_attribute("id") == "principal-status", "Tab reaches the status")
        focused().send_keys(Keys.ARROW_DOWN)
        focused().send_keys(Keys.SHIFT, Keys.TAB)
        focused().send_keys(Keys.ENTER)
        wait_until(driver, lambda d: displayed(d, "principal") and d.find_element(By.ID, "principal-title").text == "keyboard made")
        check(focused().get_attribute("id") == "principal-title", "the new principal's page takes the focus")
        check(details(driver).get("Status") == "Suspended", "the status chosen by keyboard")

        # Revoked is terminal: confirmation, then nothing more can change.
        Select(driver.find_element(By.ID, "edit-status")).select_by_visible_text("Revoked")
        click(driver, "save")
        confirm(driver, yes=False)
        check(details(driver).get("Status") == "Suspended", "cancelling keeps the status")
        Select(driver.find_element(By.ID, "edit-status")).select_by_visible_text("Revoked")
        click(driver, "save")
        wait_until(driver, lambda d: displayed(d, "confirm-dialog"))
        check("terminal" in driver.find_element(By.ID, "confirm-message").text, "the confirmation says Revoked is terminal")
        confirm(driver, yes=True)
        wait_until(driver, lambda d: details(d).get("Status") == "Revoked")
        check(driver.find_element(By.ID, "save").get_attribute("disabled") and "revoked" in reason(driver, "edit-reason"), "a revoked principal cannot be changed, and says so")

        # Markup from other principals is text: names and descriptions run nothing.
        hostile = "<img src=x onerror=alert(1)>"
        create_in_ui(driver, hostile)
        check(driver.find_element(By.ID, "principal-title").text == hostile, "the name is shown as typed")
        open_principal(driver, hostile)
        driver.execute_script("location.hash = '#roles'")
        wait_until(driver, lambda d: displayed(d, "roles") and not d.find_element(By.ID, "define-submit").get_attribute("disabled"))
        type_into(driver, "role-name", "markup role")
        description = "<b>bold</b><img src=x onerror=\"window.pwned = 1\">"
        type_into(driver, "role-description", description)
        type_into(driver, "role-permissions", "iot:devices:read\niot:devices:provision")
        click(driver, "define-submit")
        wait_until(driver, lambda d: any(r[0] == "markup role" for r in table_rows(d, "role-list")))
        row = next(r for r in table_rows(driver, "role-list") if r[0] == "markup role")
        check(row[1] == description and row[4] == "Organisation", f"the role's description is shown as text: {row}")
        check(driver.execute_script("return document.querySelectorAll('main img, main b').length") == 0, "no markup was made into elements")
        check(driver.execute_script("return window.pwned === undefined") and no_alert(driver), "no injected script ran")
        axe_serious(driver, axe_js, "Access > Roles")
        # A refusal is the server's own detail.
        type_into(driver, "role-name", "iam-admin")
        type_into(driver, "role-permissions", "iot:devices:read")
        click(driver, "define-submit")
        wait_until(driver, lambda d: displayed(d, "notice") and "built-in" in d.find_element(By.ID, "notice").text)

        # 375 px wide: nothing overflows the viewport.
        # Webhooks: an endpoint added, its secret shown once and gone when the dialog closes,
        # rotated, its deliveries read, turned off, and deleted.
        driver.execute_script("location.hash = '#webhooks'")
        wait_until(driver, lambda d: displayed(d, "webhooks") and not d.find_element(By.ID, "webhook-submit").get_attribute("disabled"))
        axe_serious(driver, axe_js, "Access > Webhooks")
        type_into(driver, "webhook-url", "https://hooks.example.com/iam")
        type_into(driver, "webhook-description", "on-call pager")
        type_into(driver, "webhook-events", "credential.expiring, credential.revoked")
        click(driver, "webhook-submit")
        wait_until(driver, lambda d: displayed(d, "key-dialog") and d.find_element(By.ID, "new-key").text.startswith("whsec_"))
        check(driver.find_element(By.ID, "key-dialog-title").text == "Your endpoint's signing secret", "the dialog says what it shows")
        webhook_secret = driver.find_element(By.ID, "new-key").text
        axe_serious(driver, axe_js, "the webhook secret dialog")
        click(driver, "close-key")
        wait_until(driver, lambda d: not displayed(d, "key-dialog"))
        left = key_left_anywhere(driver, webhook_secret)
        check(not any(left.values()), f"the webhook secret is gone from the page once its dialog closes: {left}")
        wait_until(driver, lambda d: table_rows(d, "webhook-list"))
        row = table_rows(driver, "webhook-list")[0]
        check(row[0] == "https://hooks.example.com/iam" and row[2] == "credential.expiring, credential.revoked" and row[3] == "On", f"the endpoint is listed: {row}")
        driver.find_element(By.CSS_SELECTOR, "#webhook-list button[data-action=rotate]").click()
        confirm(driver, True)
        wait_until(driver, lambda d: displayed(d, "key-dialog") and d.find_element(By.ID, "new-key").text.startswith("whsec_"))
        check(driver.find_element(By.ID, "new-key").text != webhook_secret, "a rotation shows a new secret")
        click(driver, "close-key")
        wait_until(driver, lambda d: "previous one signs too" in table_rows(d, "webhook-list")[0][4])
        driver.find_element(By.CSS_SELECTOR, "#webhook-list button[data-action=deliveries]").click()
        wait_for_text(driver, "deliveries-for", "https://hooks.example.com/iam")
        driver.find_element(By.CSS_SELECTOR, "#webhook-list button[data-action=toggle]").click()
        wait_until(driver, lambda d: table_rows(d, "webhook-list")[0][3] == "Off")
        driver.find_element(By.CSS_SELECTOR, "#webhook-list button[data-action=delete]").click()
        confirm(driver, True)
        wait_until(driver, lambda d: not table_rows(d, "webhook-list"))
        hooks = api(base, "GET", "/iam/webhooks", management_token(base, admin_key))
        check(hooks["items"] == [], f"the endpoint was deleted: {hooks}")

        # Keyless: trust an issuer, create a service account, give it a trust policy.
        driver.execute_script("location.hash = '#issuers'")
        wait_until(driver, lambda d: displayed(d, "issuers") and not d.find_element(By.ID, "issuer-submit").get_attribute("disabled"))
        type_into(driver, "issuer-url", "https://token.actions.githubusercontent.com")
        type_into(driver, "issuer-description", "GitHub Actions")
        click(driver, "issuer-submit")
        wait_until(driver, lambda d: table_rows(d, "issuer-list"))
        check(table_rows(driver, "issuer-list")[0][:2] == ["https://token.actions.githubusercontent.com", "GitHub Actions"], "the issuer is listed")
        axe_serious(driver, axe_js, "Access > Trusted issuers")
        driver.execute_script("location.hash = '#api-keys'")
        wait_until(driver, lambda d: displayed(d, "api-keys"))
        Select(driver.find_element(By.ID, "new-principal-type")).select_by_value("ServiceAccount")
        create_in_ui(driver, "deploy from CI")
        check(details(driver).get("Type") == "ServiceAccount", f"a service account: {details(driver)}")
        check(not displayed(driver, "issue-form") and displayed(driver, "trust-form"), "trust policies instead of keys")
        client_id = driver.find_element(By.ID, "client-id").text
        check(client_id.startswith("sa_"), f"its client id is shown: {client_id}")
        type_into(driver, "trust-audience", "https://iam.example.com")
        type_into(driver, "trust-subject", "repo:acme/api:environment:production")
        type_into(driver, "trust-claims", "repository_id=123456")
        click(driver, "trust-submit")
        wait_for_text(driver, "notice", "repository_owner_id")
        type_into(driver, "trust-claims", "repository_id=123456\nrepository_owner_id=654321")
        click(driver, "trust-submit")
        wait_until(driver, lambda d: table_rows(d, "trust-policies"))
        row = table_rows(driver, "trust-policies")[0]
        check(row[2] == "repo:acme/api:environment:production" and "repository_owner_id=654321" in row[3] and row[4] == "0", f"the policy is listed: {row}")
        axe_serious(driver, axe_js, "a service account's page")
        driver.find_element(By.CSS_SELECTOR, "#trust-policies button").click()
        confirm(driver, True)
        wait_until(driver, lambda d: not table_rows(d, "trust-policies"))
        driver.execute_script("location.hash = '#issuers'")
        wait_until(driver, lambda d: displayed(d, "issuers") and table_rows(d, "issuer-list"))
        driver.find_element(By.CSS_SELECTOR, "#issuer-list button").click()
        confirm(driver, True)
        wait_until(driver, lambda d: not table_rows(d, "issuer-list"))
        trusted = api(base, "GET", "/iam/trusted-issuers", management_token(base, admin_key))
        check(trusted["issuers"] == [], f"the issuer is no longer trusted: {trusted}")

        driver.set_window_size(375, 812)
        fits(driver, "Access > Roles")
        driver.execute_script("location.hash = '#api-keys'")
        wait_until(driver, lambda d: displayed(d, "api-keys"))
        fits(driver, "Access > API Keys")
        driver.execute_script("location.hash = '#policy'")
        wait_until(driver, lambda d: displayed(d, "policy"))
        fits(driver, "Access > Credential policy")
        driver.execute_script("location.hash = '#activity'")
        wait_until(driver, lambda d: displayed(d, "activity") and table_rows(d, "activity-list"))
        fits(driver, "Access > Activity")
        driver.execute_script("location.hash = '#webhooks'")
        wait_until(driver, lambda d: displayed(d, "webhooks"))
        fits(driver, "Access > Webhooks")
        driver.execute_script("location.hash = '#issuers'")
        wait_until(driver, lambda d: displayed(d, "issuers"))
        fits(driver, "Access > Trusted issuers")
        open_principal(driver, "browser integration")
        fits(driver, "the principal's page")
        axe_serious(driver, axe_js, "the principal's page at 375 px")
        driver.set_window_size(1280, 900)

        # The session ends (its credential is revoked): sign in again, and come back to the page.
        token = management_token(base, admin_key)
        second = api(base, "POST", "/iam/api-keys", token, {"displayName": "second admin"})
        api(base, "PUT", f"/iam/api-keys/{second['id']}/role-assignments/iam-admin", token)
        issued = api(base, "POST", f"/iam/api-keys/{second['id']}/credentials", token, {"name": "browser"})
        click(driver, "sign-out")
        sign_in(driver, issued["apiKey"])
        wait_for_text(driver, "who", "in dev")
        open_principal(driver, "browser integration")
        api(base, "POST", f"/iam/api-keys/{second['id']}/credentials/{issued['credential']['keyId']}/revoke", token)
        type_into(driver, "edit-name", "renamed after revocation")
        click(driver, "save")
        wait_for_text(driver, "notice", "Sign in again")
        check(displayed(driver, "sign-in"), "the sign-in form is back")
        check(displayed(driver, "principal"), "the page keeps its place")
        check(driver.find_element(By.ID, "edit-name").get_attribute("value") == "renamed after revocation", "the form keeps what was typed")
        names = [p["displayName"] for p in api(base, "GET", "/iam/api-keys", token)["items"]]
        check("renamed after revocation" not in names, "nothing changed with the revoked credential's token")
        sign_in(driver, admin_key)
        wait_for_text(driver, "who", "in dev")
        wait_until(driver, lambda d: displayed(d, "principal") and d.find_element(By.ID, "principal-title").text == "browser integration")
        type_into(driver, "edit-name", "renamed after signing in again")
        click(driver, "save")
        wait_until(driver, lambda d: d.find_element(By.ID, "principal-title").text == "renamed after signing in again")

        # People sign in through the organisation's identity provider (a provider of the test's
        # own on loopback): a mapped person manages API keys with her roles; nobody else gets in.
        driver.execute_script("location.hash = '#issuers'")
        wait_until(driver, lambda d: displayed(d, "issuers") and not d.find_element(By.ID, "issuer-submit").get_attribute("disabled"))
        type_into(driver, "issuer-url", provider.url)
        click(driver, "issuer-submit")
        wait_until(driver, lambda d: not d.find_element(By.ID, "provider-submit").get_attribute("disabled"))
        Select(driver.find_element(By.ID, "provider-issuer")).select_by_value(provider.url)
        type_into(driver, "provider-client", "iam-console")
        click(driver, "provider-submit")
        wait_for_text(driver, "sign-in-provider", provider.url)
        driver.execute_script("location.hash = '#api-keys'")
        wait_until(driver, lambda d: displayed(d, "api-keys"))
        Select(driver.find_element(By.ID, "new-principal-type")).select_by_value("User")
        type_into(driver, "new-identity-subject", "ada@example.com")
        create_in_ui(driver, "Ada Lovelace")
        check(details(driver).get("Type") == "User", f"a person: {details(driver)}")
        check(reason(driver, "issue-reason") != "", "a person is issued no API key")
        Select(driver.find_element(By.ID, "assign-role")).select_by_value("iam-admin")
        click(driver, "assign-submit")
        wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#assignments li[data-role-id='iam-admin']"))
        ada = {"id": driver.execute_script("return location.hash").split("/")[-1]}
        driver.execute_script("location.hash = '#issuers'")
        wait_for_text(driver, "sign-in-provider", provider.url)
        check(driver.find_element(By.ID, "provider-redirect").text == base + "/iam/auth/sign-in/callback", "the redirect URI to register is shown")
        axe_serious(driver, axe_js, "Access > Trusted issuers with a sign-in provider")
        # Changing the provider signs everyone out, so the console asks first; declined, nothing changes.
        type_into(driver, "provider-client", "another-client")
        click(driver, "provider-submit")
        confirm(driver, False)
        stored = api(base, "GET", "/iam/trusted-issuers", management_token(base, admin_key))
        check(stored["signIn"]["clientId"] == "iam-console", f"a declined change of provider changes nothing: {stored}")
        click(driver, "sign-out")
        axe_serious(driver, axe_js, "the sign-in page")
        type_into(driver, "sso-org", "dev")
        click(driver, "sso-submit")
        wait_for_text(driver, "who", ada["id"])
        check("sign-in=" not in driver.current_url, f"the one-time code left the address bar: {driver.current_url}")
        stored = driver.execute_script("return window.sessionStorage.length + window.localStorage.length + document.cookie.length")
        check(stored == 0, "nothing of the sign-in is left in browser storage")
        create_in_ui(driver, "made by Ada")
        ada_key = issue_in_ui(driver, "ada's key")
        check(exchange_status(base, ada_key) == 200, "the key Ada issued works")
        provider.subject = "eve@example.com"
        click(driver, "sign-out")
        type_into(driver, "sso-org", "dev")
        click(driver, "sso-submit")
        wait_for_text(driver, "notice", "ask an administrator to map you")
        check(displayed(driver, "sign-in") and not displayed(driver, "nav"), "an unmapped person is signed in nowhere")

        # The console's own headers, and a clean browser log.
        with urllib.request.urlopen(base + "/console/", timeout=10) as response:
            csp = response.headers.get("content-security-policy", "")
            check("default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, f"a strict CSP: {csp}")
            check(response.headers.get("x-content-type-options") == "nosniff", "nosniff")
            check(response.headers.get("referrer-policy") == "no-referrer", "no referrer")
        # Refused requests (the wrong key, the ended session) are logged by the network layer
        # by design; anything else (a script error, a CSP violation) is a defect.
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]
        check(errors == [], f"the browser logged no errors: {errors}")
        left = key_left_anywhere(driver, admin_key)
        check(not any(left.values()), f"no key anywhere at the end (true where it was found): {left}")

        if "--dynamodb" in options:
            sign_in_on_dynamodb(driver, binary, options["--dynamodb"], options["--admin"], provider)
        else:
            print("console in a real browser: --dynamodb not given, the DynamoDB sign-in was not run")
    finally:
        stop(driver, proc, profile)
        provider.stop()
    print(f"console in a real browser: {checks['passed']} checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)
