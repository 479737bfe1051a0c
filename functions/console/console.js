"use strict";
// The console is a client of the public management API on its own origin. The access token
// lives in this closure only: never in localStorage, sessionStorage, a cookie or a URL. An API
// key typed to sign in is exchanged and dropped at once; a key issued here is shown once, in a
// dialog, and removed from the page when the dialog closes. Everything the server sends is
// shown with textContent, never parsed as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  const session = { token: null, expiresAt: 0, config: null, permissions: new Set() };
  const listing = { cursor: null, principals: [], loaded: false };
  // The principal page: what was last read, so that a change sends only what changed and
  // applies only to the version shown (If-Match).
  const opened = { principal: null, credentials: [], assignments: [], roles: [], trust: null, issuers: [] };

  /**
   * A way to sign in: `signIn(secret, config)` answers `{ token, expiresIn }` or throws an
   * Error whose message may be shown. A second method (an identity provider) is another
   * object of this shape.
   */
  const apiKeyProvider = {
    async signIn(apiKey, config) {
      const response = await fetch(config.tokenEndpoint, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ apiKey, audience: config.managementAudience }),
        cache: "no-store",
        credentials: "omit",
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        throw new Error(body.error_description || `sign-in failed (${response.status})`);
      }
      return { token: body.access_token, expiresIn: body.expires_in };
    },
  };

  function notify(message) {
    const notice = $("notice");
    notice.textContent = message;
    notice.hidden = !message;
  }

  const EXPIRED = "Your session expired. Sign in again to go on; this page keeps its place.";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  /** A management API call with the session's token; a 401 ends the session, not the page. */
  async function api(method, path, body, headers = {}) {
    if (!session.token || Date.now() >= session.expiresAt) {
      expire();
      throw new ApiError(401, EXPIRED);
    }
    const init = { method, headers: { ...headers, authorization: `Bearer ${session.token}` }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.status === 401) {
      expire();
      throw new ApiError(401, EXPIRED);
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.detail) || `the server answered ${response.status}`);
    }
    return data;
  }

  /** Runs a user action: its refusal, in the server's words, is the notice. */
  async function attempt(action) {
    try {
      await action();
      notify("");
      return true;
    } catch (error) {
      notify(error.message);
      return false;
    }
  }

  /** The token expired or was refused: ask to sign in again, keeping what the page shows. */
  function expire() {
    session.token = null;
    session.expiresAt = 0;
    $("who").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    notify(EXPIRED);
    $("api-key").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("api-key");
    const secret = input.value.trim();
    // Dropped from the page before the request is even sent.
    input.value = "";
    try {
      const { token, expiresIn } = await apiKeyProvider.signIn(secret, session.config);
      session.token = token;
      session.expiresAt = Date.now() + expiresIn * 1000;
      notify("");
      await showSignedIn();
    } catch (error) {
      notify(error.message);
    }
  }

  // ---- Signing in through the organisation's identity provider. The PKCE verifier is the one
  // thing kept in browser storage, and only across the provider's round trip: the page is left
  // and loaded again in between. It is neither a key nor a token: without the one-time code
  // the provider's redirect brings back, it is worth nothing.

  const SIGN_IN_VERIFIER = "iam-console-sign-in";

  function base64url(bytes) {
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  async function signInThroughProvider(event) {
    event.preventDefault();
    const org = $("sso-org").value.trim();
    const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const challenge = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))));
    sessionStorage.setItem(SIGN_IN_VERIFIER, verifier);
    const start = session.config.tokenEndpoint.replace(/\/auth\/token$/, "/auth/sign-in");
    location.assign(`${start}?${new URLSearchParams({ org, code_challenge: challenge, code_challenge_method: "S256" })}`);
  }

  /** Back from the provider: the one-time code (or why not) is in the fragment. */
  async function returnFromProvider() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (!params.has("sign-in") && !params.has("sign-in-error")) {
      return;
    }
    const verifier = sessionStorage.getItem(SIGN_IN_VERIFIER);
    sessionStorage.removeItem(SIGN_IN_VERIFIER);
    // The code leaves the address bar (and the history) before it is even used.
    history.replaceState(null, "", location.pathname + location.search);
    if (params.has("sign-in-error")) {
      notify(params.get("sign-in-error"));
      return;
    }
    if (!verifier) {
      notify("This sign-in was not started from this page; start it again.");
      return;
    }
    const body = new URLSearchParams({ grant_type: "authorization_code", client_id: "console", code: params.get("sign-in"), code_verifier: verifier });
    const response = await fetch(session.config.tokenEndpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body,
      cache: "no-store",
      credentials: "omit",
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      notify(answer.error_description || `sign-in failed (${response.status})`);
      return;
    }
    session.token = answer.access_token;
    session.expiresAt = Date.now() + answer.expires_in * 1000;
    notify("");
    await showSignedIn();
  }

  async function showSignedIn() {
    const me = await api("GET", "/iam/whoami");
    session.permissions = new Set((me.scope || "").split(" ").filter(Boolean));
    const who = $("who");
    who.textContent = `Signed in as ${me.sub} in ${me.org_id}`;
    who.hidden = false;
    $("sign-out").hidden = false;
    $("nav").hidden = false;
    $("sign-in").hidden = true;
    await route();
  }

  function signOut() {
    session.token = null;
    session.expiresAt = 0;
    session.permissions = new Set();
    listing.principals = [];
    listing.cursor = null;
    listing.loaded = false;
    $("principals").replaceChildren();
    $("activity-list").replaceChildren();
    $("principal-activity").replaceChildren();
    for (const id of ["api-keys", "principal", "roles", "policy", "activity", "webhooks", "issuers", "who", "sign-out", "nav"]) {
      $(id).hidden = true;
    }
    $("sign-in").hidden = false;
    notify("");
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" });
  const when = (iso) => (iso ? `${dateFormat.format(new Date(iso))} UTC` : "Never");
  // A date input's day as the instant the labels promise: the end of that day, UTC.
  const endOfDay = (date) => `${date}T23:59:59Z`;
  const dayOf = (iso) => (iso ? iso.slice(0, 10) : "");

  const cell = (text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  };

  /** Shows why a control is off, in the server's words, or nothing when it is on. */
  function explain(reasonId, reasons) {
    const unique = [...new Set(reasons.filter(Boolean))];
    const reason = $(reasonId);
    reason.textContent = unique.join(" ");
    reason.hidden = unique.length === 0;
  }

  function enable(ids, allowed) {
    for (const id of ids) {
      $(id).disabled = !allowed;
    }
  }

  const needs = (permission) => (session.permissions.has(permission) ? null : `this operation needs the permission ${permission}`);

  // ---- Navigation: #api-keys, #api-keys/<principal id>, #roles, #policy, #activity, #webhooks, #issuers. Ids are
  // not secrets.

  function show(sectionId) {
    for (const id of ["api-keys", "principal", "roles", "policy", "activity", "webhooks", "issuers"]) {
      $(id).hidden = id !== sectionId;
    }
    const links = [
      ["nav-api-keys", "api-keys"], ["nav-roles", "roles"], ["nav-policy", "policy"], ["nav-activity", "activity"], ["nav-webhooks", "webhooks"],
      ["nav-issuers", "issuers"],
    ];
    for (const [link, section] of links) {
      if (section === sectionId || (sectionId === "principal" && section === "api-keys")) {
        $(link).setAttribute("aria-current", "page");
      } else {
        $(link).removeAttribute("aria-current");
      }
    }
  }

  async function route() {
    if (!session.token) {
      return;
    }
    const hash = location.hash.replace(/^#/, "");
    const principal = /^api-keys\/(akp_[A-Za-z0-9]+)$/.exec(hash);
    await attempt(async () => {
      if (principal) {
        await openPrincipal(principal[1]);
      } else if (hash === "roles") {
        await openRoles();
      } else if (hash === "policy") {
        await openPolicy();
      } else if (hash === "activity") {
        await openActivity();
      } else if (hash === "webhooks") {
        await openWebhooks();
      } else if (hash === "issuers") {
        await openIssuers();
      } else {
        await openApiKeys();
      }
    });
  }

  /**
   * Whether the user went elsewhere while a page's data was loading (a save re-reads its page:
   * the answer must not pull the user back from the page they have since opened).
   */
  function navigatedAwayFrom(hash) {
    return location.hash.replace(/^#/, "") !== hash;
  }

  function focusHeading(id) {
    const heading = $(id);
    if (!heading.contains(document.activeElement)) {
      heading.focus();
    }
  }

  // ---- Access > API Keys

  async function openApiKeys() {
    show("api-keys");
    document.title = "Access · API Keys";
    const refusal = needs("iam:api-keys:write");
    enable(["display-name", "principal-status", "expires-at", "create-submit"], !refusal);
    explain("create-reason", [refusal]);
    if (!listing.loaded) {
      await loadPrincipals(true);
    }
  }

  function renderPrincipals() {
    const wanted = $("status-filter").value;
    const rows = listing.principals
      .filter((p) => !wanted || p.status === wanted)
      .map((p) => {
        const row = document.createElement("tr");
        const name = document.createElement("td");
        const link = document.createElement("a");
        link.href = `#api-keys/${encodeURIComponent(p.id)}`;
        link.textContent = p.displayName;
        name.append(link);
        row.append(name, cell(p.status), cell(when(p.expiresAt)), cell(when(p.createdAt)), cell(String(p.activeCredentials)),
          cell({ ServiceAccount: "Service account", User: "Person" }[p.type] || "API key"));
        row.dataset.principalId = p.id;
        return row;
      });
    $("principals").replaceChildren(...rows);
    $("more").hidden = !listing.cursor;
  }

  async function loadPrincipals(fromStart) {
    const query = new URLSearchParams({ limit: "50" });
    if (!fromStart && listing.cursor) {
      query.set("cursor", listing.cursor);
    }
    const page = await api("GET", `/iam/api-keys?${query}`);
    if (fromStart) {
      listing.principals = [];
    }
    listing.principals.push(...page.items);
    listing.cursor = page.nextCursor || null;
    listing.loaded = true;
    renderPrincipals();
  }

  async function createPrincipal(event) {
    event.preventDefault();
    const body = { displayName: $("display-name").value.trim(), status: $("principal-status").value };
    const kind = $("new-principal-type").value;
    if (kind !== "ApiKey") {
      body.type = kind;
    }
    if (kind === "User") {
      body.identity = { subject: $("new-identity-subject").value.trim() };
    }
    const date = $("expires-at").value;
    if (date) {
      body.expiresAt = endOfDay(date);
    }
    await attempt(async () => {
      const created = await api("POST", "/iam/api-keys", body);
      $("create-form").reset();
      listing.loaded = false;
      location.hash = `#api-keys/${created.id}`;
    });
  }

  // ---- The principal's page

  async function openPrincipal(id, { focus } = { focus: true }) {
    const [principal, credentials, assignments, roles] = await Promise.all([
      api("GET", `/iam/api-keys/${id}`),
      api("GET", `/iam/api-keys/${id}/credentials?include=${$("show-all").checked ? "all" : "active"}`),
      api("GET", `/iam/api-keys/${id}/role-assignments`),
      api("GET", "/iam/roles"),
    ]);
    opened.principal = principal;
    opened.credentials = credentials.items;
    opened.assignments = assignments.items;
    opened.roles = roles.items;
    opened.trust = null;
    opened.issuers = [];
    if (principal.type === "ServiceAccount") {
      const [trust, issuers] = await Promise.all([api("GET", `/iam/api-keys/${id}/trust-policies`), api("GET", "/iam/trusted-issuers")]);
      opened.trust = trust;
      opened.issuers = issuers.issuers;
    }
    if (navigatedAwayFrom(`api-keys/${id}`)) {
      return;
    }
    show("principal");
    document.title = `Access · ${principal.displayName}`;
    renderPrincipal();
    await trails.principal.load(true, new URLSearchParams({ principalId: id }));
    if (focus) {
      focusHeading("principal-title");
    }
  }

  /** After a change: read it again, keeping the reader's place unless its control is gone. */
  async function reopenPrincipal() {
    listing.loaded = false;
    await openPrincipal(opened.principal.id, { focus: false });
    if (document.activeElement === document.body) {
      $("principal-title").focus();
    }
  }

  function renderPrincipal() {
    const p = opened.principal;
    const allowed = p.allowedActions;
    $("principal-title").textContent = p.displayName;
    const details = [
      ["Principal ID", p.id],
      ["Type", p.type],
      ["Status", p.status],
      ["Expires", when(p.expiresAt)],
      ["Created", `${when(p.createdAt)} by ${p.createdBy}`],
      ["Active credentials", String(p.activeCredentials)],
    ].flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    });
    $("principal-details").replaceChildren(...details);

    $("edit-name").value = p.displayName;
    $("edit-status").value = p.status;
    $("edit-expires").value = dayOf(p.expiresAt);
    $("edit-name").disabled = !allowed.rename.allowed;
    $("edit-status").disabled = !allowed.changeStatus.allowed;
    $("edit-expires").disabled = !allowed.changeExpiry.allowed;
    $("save").disabled = !(allowed.rename.allowed || allowed.changeStatus.allowed || allowed.changeExpiry.allowed);
    explain("edit-reason", [allowed.rename.reason, allowed.changeStatus.reason, allowed.changeExpiry.reason]);

    enable(
      [
        "credential-name",
        "credential-expires",
        "credential-permissions",
        "credential-sources",
        "credential-audiences",
        "credential-self-rotation",
        "issue-submit",
      ],
      allowed.issueCredential.allowed,
    );
    explain("issue-reason", [allowed.issueCredential.reason]);

    const keyless = p.type === "ServiceAccount";
    $("key-section").hidden = keyless;
    $("trust-section").hidden = !keyless;
    if (keyless) {
      renderTrustPolicies();
    } else {
      renderCredentials();
    }
    renderAssignments();
  }

  // ---- A service account's trust policies: what stands in for its keys.

  function renderTrustPolicies() {
    const manage = opened.principal.allowedActions.manageTrustPolicies || { allowed: false };
    $("client-id").textContent = opened.trust.clientId;
    const rows = opened.trust.items.map((t) => {
      const row = document.createElement("tr");
      const claims = Object.entries(t.requiredClaims || {}).map(([k, v]) => `${k}=${v}`).join(", ");
      row.append(cell(t.issuer), cell(t.audience), cell(t.subject), cell(claims || "None"), cell(String(t.uses)),
        cell(t.lastUsedAt ? when(t.lastUsedAt) : "Not yet"));
      const action = document.createElement("td");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove the trust policy for ${t.subject}`);
      remove.disabled = !manage.allowed;
      remove.addEventListener("click", () => attempt(() => removeTrustPolicy(t)));
      action.append(remove);
      row.append(action);
      row.dataset.trustPolicyId = t.id;
      return row;
    });
    $("trust-policies").replaceChildren(...rows);
    const options = opened.issuers.map((i) => {
      const option = document.createElement("option");
      option.value = i.issuer;
      option.textContent = i.description ? `${i.issuer} (${i.description})` : i.issuer;
      return option;
    });
    $("trust-issuer").replaceChildren(...options);
    const noIssuer = manage.allowed && options.length === 0 ? "The organisation trusts no issuer yet: an administrator adds one under Trusted issuers." : null;
    enable(["trust-issuer", "trust-audience", "trust-subject", "trust-claims", "trust-submit"], manage.allowed && options.length > 0);
    explain("trust-reason", [manage.reason]);
    explain("trust-add-reason", [manage.allowed ? noIssuer : manage.reason]);
  }

  /** `name=value` lines as the claims object, or an Error naming the line that is not one. */
  function claimsOf(text) {
    const claims = {};
    for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const at = line.indexOf("=");
      if (at < 1) {
        throw new Error(`Each required claim is name=value: "${line}" is not.`);
      }
      claims[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return claims;
  }

  async function addTrustPolicy(event) {
    event.preventDefault();
    await attempt(async () => {
      const body = {
        issuer: $("trust-issuer").value,
        audience: $("trust-audience").value.trim(),
        subject: $("trust-subject").value.trim(),
        requiredClaims: claimsOf($("trust-claims").value),
      };
      await api("POST", `/iam/api-keys/${opened.principal.id}/trust-policies`, body);
      $("trust-form").reset();
      await reopenPrincipal();
    });
  }

  async function removeTrustPolicy(t) {
    const sure = await confirmAction(`Remove the trust policy for ${t.subject}? Its workloads can no longer act as this service account.`, "Remove");
    if (!sure) {
      return;
    }
    await api("DELETE", `/iam/api-keys/${opened.principal.id}/trust-policies/${t.id}`);
    await reopenPrincipal();
  }

  function renderCredentials() {
    const revoke = opened.principal.allowedActions.revokeCredential;
    explain("revoke-reason", [revoke.reason]);
    const rows = opened.credentials.map((c) => {
      const row = document.createElement("tr");
      let status = c.revocationReason === "leaked" ? `${c.status} (leaked)` : c.status;
      if (c.rotatedTo) {
        status += `, rotated to ${c.rotatedTo}`;
      }
      row.append(
        cell(c.name),
        cell(c.keyId),
        cell(status),
        cell(when(c.createdAt)),
        cell(when(c.expiresAt)),
        cell(c.lastUsedAt ? `${when(c.lastUsedAt)}${c.lastUsedFrom ? ` from ${c.lastUsedFrom}` : ""}` : "Not yet"),
        cell(describeUsage(c.usage)),
        cell(describeRestrictions(c.restrictions)),
      );
      const action = document.createElement("td");
      if (c.status === "Active") {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Revoke";
        button.setAttribute("aria-label", `Revoke ${c.name} (${c.keyId})`);
        button.disabled = !revoke.allowed;
        button.addEventListener("click", () => revokeCredential(c));
        action.append(button);
        if (!c.rotatedTo) {
          const rotate = document.createElement("button");
          rotate.type = "button";
          rotate.textContent = "Rotate";
          rotate.setAttribute("aria-label", `Rotate ${c.name} (${c.keyId})`);
          rotate.disabled = !opened.principal.allowedActions.issueCredential.allowed;
          rotate.addEventListener("click", () => rotateCredential(c));
          action.append(" ", rotate);
        }
      }
      row.append(action);
      row.dataset.keyId = c.keyId;
      return row;
    });
    $("credentials").replaceChildren(...rows);
  }

  /** The 30-day total, and the busiest day, from the credential's per-day counts. */
  function describeUsage(usage) {
    if (!usage || usage.exchangesLast30Days === 0) {
      return "None";
    }
    const busiest = usage.days.reduce((a, b) => (b.exchanges > a.exchanges ? b : a));
    return `${usage.exchangesLast30Days} (most on ${busiest.date}: ${busiest.exchanges})`;
  }

  function describeRestrictions(restrictions) {
    const parts = [];
    if (restrictions && restrictions.permissions) {
      parts.push(`at most ${restrictions.permissions.join(", ")}`);
    }
    if (restrictions && restrictions.sourceCidrs) {
      parts.push(`from ${restrictions.sourceCidrs.join(", ")}`);
    }
    if (restrictions && restrictions.audiences) {
      parts.push(`for ${restrictions.audiences.join(", ")}`);
    }
    return parts.length > 0 ? parts.join("; ") : "None";
  }

  function renderAssignments() {
    const p = opened.principal;
    const { assignRole, unassignRole } = p.allowedActions;
    const byId = new Map(opened.roles.map((r) => [r.id, r]));
    const items = opened.assignments.map((a) => {
      const li = document.createElement("li");
      const role = byId.get(a.roleId);
      const name = document.createElement("span");
      name.textContent = role ? role.name : a.roleId;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove role ${role ? role.name : a.roleId}`);
      remove.disabled = !unassignRole.allowed;
      remove.addEventListener("click", () => unassignRoleFrom(a.roleId, name.textContent));
      li.append(name, " ", remove);
      li.dataset.roleId = a.roleId;
      return li;
    });
    if (items.length === 0) {
      const none = document.createElement("li");
      none.textContent = "No roles assigned.";
      items.push(none);
    }
    $("assignments").replaceChildren(...items);
    explain("unassign-reason", [opened.assignments.length ? unassignRole.reason : null]);

    // Only roles this principal's type can hold, and not ones it already has.
    const assigned = new Set(opened.assignments.map((a) => a.roleId));
    const offered = opened.roles.filter((r) => r.principalTypes.includes(p.type) && !assigned.has(r.id));
    const options = offered.map((r) => {
      const option = document.createElement("option");
      option.value = r.id;
      option.textContent = r.builtIn ? `${r.name} (built-in)` : r.name;
      return option;
    });
    $("assign-role").replaceChildren(...options);
    enable(["assign-role", "assign-submit"], assignRole.allowed && offered.length > 0);
    explain("assign-reason", [assignRole.reason, assignRole.allowed && offered.length === 0 ? "Every role that supports this principal type is assigned." : null]);
  }

  async function savePrincipal(event) {
    event.preventDefault();
    const p = opened.principal;
    const change = {};
    const name = $("edit-name").value.trim();
    if (name !== p.displayName) {
      change.displayName = name;
    }
    const status = $("edit-status").value;
    if (status !== p.status) {
      change.status = status;
    }
    const day = $("edit-expires").value;
    if (day !== dayOf(p.expiresAt)) {
      change.expiresAt = day ? endOfDay(day) : null;
    }
    if (Object.keys(change).length === 0) {
      notify("Nothing to save: no field was changed.");
      return;
    }
    if (change.status === "Revoked") {
      const sure = await confirmAction(
        `Revoke ${p.displayName}? Revoked is terminal: the principal and all its credentials stop working at once, and it can never be made Active again.`,
        "Revoke principal",
      );
      if (!sure) {
        $("edit-status").value = p.status;
        return;
      }
    }
    await attempt(async () => {
      await api("PATCH", `/iam/api-keys/${p.id}`, change, { "if-match": `"${p.version}"` });
      await reopenPrincipal();
    });
  }

  // ---- Issue API key: the key is shown once, then gone from the page.

  async function issueCredential(event) {
    event.preventDefault();
    const body = { name: $("credential-name").value.trim() };
    const day = $("credential-expires").value;
    if (day) {
      body.expiresAt = endOfDay(day);
    }
    const restrictions = {};
    for (const [field, id] of [["permissions", "credential-permissions"], ["sourceCidrs", "credential-sources"], ["audiences", "credential-audiences"]]) {
      const entries = $(id).value.split(/[\s,]+/).filter((entry) => entry !== "");
      if (entries.length > 0) {
        restrictions[field] = entries;
      }
    }
    if (Object.keys(restrictions).length > 0) {
      body.restrictions = restrictions;
    }
    if ($("credential-self-rotation").checked) {
      body.selfRotation = true;
    }
    await attempt(async () => {
      const issued = await api("POST", `/iam/api-keys/${opened.principal.id}/credentials`, body);
      $("issue-form").reset();
      showKeyOnce(issued.apiKey);
      await reopenPrincipal();
    });
  }

  /** Where focus returns when the once-only dialog closes. */
  let afterKeyDialog = "issue-submit";

  function showKeyOnce(apiKey, note, { title = "Your new API key", returnTo = "issue-submit" } = {}) {
    afterKeyDialog = returnTo;
    $("key-dialog-title").textContent = title;
    $("new-key").textContent = apiKey;
    $("rotated-note").textContent = note || "";
    $("rotated-note").hidden = !note;
    $("copy-status").textContent = "";
    $("key-dialog").showModal();
    $("copy-key").focus();
  }

  async function copyKey() {
    const key = $("new-key").textContent;
    try {
      await navigator.clipboard.writeText(key);
      $("copy-status").textContent = "Copied.";
    } catch {
      // No clipboard permission: select the key so that the user can copy it by hand.
      const range = document.createRange();
      range.selectNodeContents($("new-key"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      $("copy-status").textContent = "Copying was refused by the browser; the key is selected: copy it with your keyboard.";
    }
  }

  /** However the dialog closes (button or Escape), the key leaves the page. */
  function purgeKey() {
    $("new-key").textContent = "";
    $("rotated-note").hidden = true;
    $("copy-status").textContent = "";
    window.getSelection().removeAllRanges();
    $(afterKeyDialog).focus();
  }

  // ---- Active credentials

  async function revokeCredential(credential) {
    const sure = await confirmAction(
      `Revoke the credential ${credential.name} (${credential.keyId})? Anything using this key stops working at once. This cannot be undone.`,
      "Revoke",
    );
    if (!sure) {
      return;
    }
    await attempt(async () => {
      await api("POST", `/iam/api-keys/${opened.principal.id}/credentials/${credential.keyId}/revoke`);
      await reopenPrincipal();
    });
  }

  async function rotateCredential(credential) {
    const grace = Number($("rotate-grace").value);
    const choice = $("rotate-grace").selectedOptions[0].textContent.toLowerCase();
    const sure = await confirmAction(
      `Rotate the credential ${credential.name} (${credential.keyId})? A new key is shown once; the old key keeps working for ${choice}.`,
      "Rotate",
    );
    if (!sure) {
      return;
    }
    await attempt(async () => {
      const rotated = await api("POST", `/iam/api-keys/${opened.principal.id}/credentials/${credential.keyId}/rotate`, {
        gracePeriodSeconds: grace,
      });
      const old = rotated.rotated;
      const note = old.status === "Active"
        ? `The old key ${old.keyId} keeps working until ${when(old.expiresAt)}.`
        : `The old key ${old.keyId} no longer works.`;
      showKeyOnce(rotated.apiKey, note);
      await reopenPrincipal();
    });
  }

  // ---- Role assignments

  async function assignRole(event) {
    event.preventDefault();
    const roleId = $("assign-role").value;
    if (!roleId) {
      return;
    }
    await attempt(async () => {
      await api("PUT", `/iam/api-keys/${opened.principal.id}/role-assignments/${encodeURIComponent(roleId)}`);
      await reopenPrincipal();
    });
  }

  async function unassignRoleFrom(roleId, roleName) {
    const sure = await confirmAction(`Remove the role ${roleName} from ${opened.principal.displayName}?`, "Remove role");
    if (!sure) {
      return;
    }
    await attempt(async () => {
      await api("DELETE", `/iam/api-keys/${opened.principal.id}/role-assignments/${encodeURIComponent(roleId)}`);
      await reopenPrincipal();
    });
  }

  // ---- Access > Roles

  async function openRoles() {
    const roles = await api("GET", "/iam/roles");
    if (navigatedAwayFrom("roles")) {
      return;
    }
    show("roles");
    document.title = "Access · Roles";
    const rows = roles.items.map((r) => {
      const row = document.createElement("tr");
      row.append(cell(r.name), cell(r.description), cell(r.permissions.join(", ")), cell(r.principalTypes.join(", ")), cell(r.builtIn ? "Built-in" : "Organisation"));
      row.dataset.roleId = r.id;
      return row;
    });
    $("role-list").replaceChildren(...rows);
    const refusal = needs("iam:roles:write");
    enable(["role-name", "role-description", "role-permissions", "define-submit"], !refusal);
    for (const box of document.querySelectorAll("input[name=principal-type]")) {
      box.disabled = Boolean(refusal);
    }
    explain("define-reason", [refusal]);
  }

  async function defineRole(event) {
    event.preventDefault();
    const body = {
      name: $("role-name").value.trim(),
      permissions: $("role-permissions").value.split(/[\s,]+/).filter(Boolean),
      principalTypes: Array.from(document.querySelectorAll("input[name=principal-type]:checked"), (box) => box.value),
    };
    const description = $("role-description").value.trim();
    if (description) {
      body.description = description;
    }
    await attempt(async () => {
      await api("POST", "/iam/roles", body);
      $("define-form").reset();
      await openRoles();
    });
  }

  // ---- Access > Credential policy

  async function openPolicy() {
    const policy = await api("GET", "/iam/policy");
    if (navigatedAwayFrom("policy")) {
      return;
    }
    show("policy");
    document.title = "Access · Credential policy";
    $("policy-lifetime").value = policy.maxLifetimeDays ?? "";
    $("policy-idle").value = policy.maxIdleDays ?? "";
    $("policy-expiry-required").checked = policy.expiryRequired;
    $("policy-creation").checked = policy.allowCredentialCreation;
    $("policy-updated").textContent = policy.updatedAt
      ? `Last set ${when(policy.updatedAt)} by ${policy.updatedBy}.`
      : "The organisation has not set a policy: nothing is limited.";
    const refusal = needs("iam:policy:write");
    enable(["policy-lifetime", "policy-idle", "policy-expiry-required", "policy-creation", "policy-submit"], !refusal);
    explain("policy-reason", [refusal]);
    focusHeading("policy-title");
  }

  async function savePolicy(event) {
    event.preventDefault();
    const days = (id) => ($(id).value === "" ? null : Number($(id).value));
    const body = {
      maxLifetimeDays: days("policy-lifetime"),
      maxIdleDays: days("policy-idle"),
      expiryRequired: $("policy-expiry-required").checked,
      allowCredentialCreation: $("policy-creation").checked,
    };
    await attempt(async () => {
      await api("PUT", "/iam/policy", body);
      await openPolicy();
    });
  }

  // ---- Activity: the audit trail, for the organisation and on each principal's page

  /** One line of the trail in words: what was acted on and what changed, or why it was refused. */
  function describe(record) {
    const parts = [];
    if (record.keyId) {
      parts.push(`key ${record.keyId}`);
    }
    if (record.roleId) {
      parts.push(`role ${record.roleId}`);
    }
    if (record.principalId) {
      parts.push(`principal ${record.principalId}`);
    }
    const detail = record.detail || {};
    if (record.outcome === "refused") {
      parts.push(`refused: ${record.reason}${record.repeats > 1 ? ` (${record.repeats} times that minute)` : ""}`);
      if (detail.message) {
        parts.push(detail.message);
      }
    } else {
      for (const field of ["displayName", "name", "status", "previousStatus", "successorKeyId"]) {
        if (detail[field] !== undefined && detail[field] !== null) {
          parts.push(`${field}: ${detail[field]}`);
        }
      }
    }
    return parts.join("; ");
  }

  /** A paged view of the trail into one table body, with its "load more" button. */
  function trailView(bodyId, moreId, reasonId) {
    const view = { cursor: null, query: null };
    view.load = async (fromStart, query) => {
      const refusal = needs("iam:audit:read");
      explain(reasonId, [refusal]);
      if (refusal) {
        $(bodyId).replaceChildren();
        $(moreId).hidden = true;
        return;
      }
      if (fromStart) {
        view.query = query;
        view.cursor = null;
      }
      const params = new URLSearchParams(view.query);
      params.set("limit", "20");
      if (view.cursor) {
        params.set("cursor", view.cursor);
      }
      const page = await api("GET", `/iam/audit-events?${params}`);
      const rows = page.items.map((record) => {
        const row = document.createElement("tr");
        const actor = record.actorKeyId ? `${record.actor} (key ${record.actorKeyId})` : record.actor;
        row.append(cell(when(record.at)), cell(actor), cell(record.action), cell(record.outcome), cell(describe(record)));
        row.dataset.auditId = record.id;
        return row;
      });
      if (fromStart) {
        $(bodyId).replaceChildren(...rows);
      } else {
        $(bodyId).append(...rows);
      }
      view.cursor = page.nextCursor || null;
      $(moreId).hidden = !view.cursor;
    };
    return view;
  }

  const trails = {
    principal: trailView("principal-activity", "principal-activity-more", "principal-activity-reason"),
    organisation: trailView("activity-list", "activity-more", "activity-reason"),
  };

  async function openActivity() {
    show("activity");
    document.title = "Access · Activity";
    const outcome = $("activity-outcome").value;
    await trails.organisation.load(true, new URLSearchParams(outcome ? { outcome } : {}));
    focusHeading("activity-title");
  }

  // ---- Access > Webhooks. A secret is shown once, in the same dialog as a new API key, and
  // leaves the page when it closes.

  async function openWebhooks() {
    show("webhooks");
    document.title = "Access · Webhooks";
    const refusal = needs("iam:webhooks:manage");
    // An endpoint receives the trail as events: directing one takes the trail's permission too.
    const directing = refusal || needs("iam:audit:read");
    enable(["webhook-url", "webhook-description", "webhook-events", "webhook-submit"], !directing);
    explain("webhook-add-reason", [directing]);
    explain("webhooks-reason", [refusal]);
    if (refusal) {
      $("webhook-list").replaceChildren();
      return;
    }
    const webhooks = await api("GET", "/iam/webhooks");
    const rows = webhooks.items.map((w) => {
      const row = document.createElement("tr");
      const actions = document.createElement("td");
      const button = (label, name, action) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.setAttribute("aria-label", `${label}: ${w.url}`);
        b.dataset.action = name;
        b.addEventListener("click", () => attempt(action));
        return b;
      };
      actions.append(
        button("Deliveries", "deliveries", () => openDeliveries(w)),
        button("Rotate secret", "rotate", () => rotateWebhookSecret(w)),
        button(w.enabled ? "Turn off" : "Turn on", "toggle", () => toggleWebhook(w)),
        button("Delete", "delete", () => deleteWebhook(w)),
      );
      const secret = w.previousSecretUntil && new Date(w.previousSecretUntil) > new Date()
        ? `Generation ${w.secretGeneration}; the previous one signs too until ${when(w.previousSecretUntil)}`
        : `Generation ${w.secretGeneration}`;
      row.append(cell(w.url), cell(w.description), cell(w.eventTypes.length ? w.eventTypes.join(", ") : "Every type"),
        cell(w.enabled ? "On" : "Off"), cell(secret), actions);
      row.dataset.webhookId = w.id;
      return row;
    });
    $("webhook-list").replaceChildren(...rows);
  }

  async function addWebhook(event) {
    event.preventDefault();
    const body = { url: $("webhook-url").value.trim() };
    const description = $("webhook-description").value.trim();
    if (description) {
      body.description = description;
    }
    const types = $("webhook-events").value.split(/[\s,]+/).filter(Boolean);
    if (types.length) {
      body.eventTypes = types;
    }
    await attempt(async () => {
      const created = await api("POST", "/iam/webhooks", body);
      $("webhook-form").reset();
      showKeyOnce(created.secret, "Verify each delivery's webhook-signature with it (any Standard Webhooks library takes it as it is).",
        { title: "Your endpoint's signing secret", returnTo: "webhook-submit" });
      await openWebhooks();
    });
  }

  async function rotateWebhookSecret(w) {
    const sure = await confirmAction(`Make a new signing secret for ${w.url}? The current one keeps signing beside it for 24 hours.`, "Rotate secret");
    if (!sure) {
      return;
    }
    const rotated = await api("POST", `/iam/webhooks/${w.id}/rotate-secret`);
    showKeyOnce(rotated.secret, "The previous secret signs too for 24 hours: switch your receiver to this one within that time.",
      { title: "Your endpoint's new signing secret", returnTo: "webhook-submit" });
    await openWebhooks();
  }

  async function toggleWebhook(w) {
    await api("PATCH", `/iam/webhooks/${w.id}`, { enabled: !w.enabled });
    await openWebhooks();
  }

  async function deleteWebhook(w) {
    const sure = await confirmAction(`Delete the endpoint ${w.url}? Nothing more is sent to it.`, "Delete");
    if (!sure) {
      return;
    }
    await api("DELETE", `/iam/webhooks/${w.id}`);
    $("delivery-list").replaceChildren();
    $("deliveries-for").textContent = "Choose an endpoint's Deliveries to see its latest.";
    await openWebhooks();
  }

  async function openDeliveries(w) {
    const deliveries = await api("GET", `/iam/webhooks/${w.id}/deliveries?limit=50`);
    $("deliveries-for").textContent = `The latest deliveries to ${w.url}, newest event first.`;
    const rows = deliveries.items.map((d) => {
      const row = document.createElement("tr");
      const last = d.attempts[d.attempts.length - 1];
      const outcome = last ? `${when(last.at)}: ${last.status ? `HTTP ${last.status}` : last.error} (${last.durationMs} ms)` : "";
      const state = d.state === "pending" && d.nextAttemptAt ? `pending; next attempt ${when(d.nextAttemptAt)}` : d.state;
      row.append(cell(when(d.createdAt)), cell(d.eventType), cell(state), cell(String(d.attemptCount)), cell(outcome));
      return row;
    });
    $("delivery-list").replaceChildren(...rows);
  }

  // ---- Access > Trusted issuers: replaced whole, so each change sends the list as it should be,
  // over the version it was read at (If-Match): a stale page cannot put back a removed issuer.

  const issuers = { list: [], version: 0, signIn: null };

  async function openIssuers() {
    show("issuers");
    document.title = "Access · Trusted issuers";
    const refusal = needs("iam:federation:write");
    enable(["issuer-url", "issuer-description", "issuer-submit"], !refusal);
    explain("issuer-add-reason", [refusal]);
    const read = needs("iam:api-keys:read");
    explain("issuers-reason", [read]);
    if (read) {
      $("issuer-list").replaceChildren();
      return;
    }
    const trusted = await api("GET", "/iam/trusted-issuers");
    if (navigatedAwayFrom("issuers")) {
      return;
    }
    issuers.list = trusted.issuers;
    issuers.version = trusted.version;
    issuers.signIn = trusted.signIn || null;
    $("sign-in-provider").textContent = issuers.signIn
      ? `People sign in through ${issuers.signIn.issuer}, as client ${issuers.signIn.clientId}.`
      : "People do not sign in through an identity provider.";
    $("provider-redirect").textContent = new URL(session.config.tokenEndpoint.replace(/\/auth\/token$/, "/auth/sign-in/callback"), location.href).href;
    const options = trusted.issuers.map((i) => {
      const option = document.createElement("option");
      option.value = i.issuer;
      option.textContent = i.issuer;
      return option;
    });
    $("provider-issuer").replaceChildren(...options);
    if (issuers.signIn) {
      $("provider-issuer").value = issuers.signIn.issuer;
      $("provider-client").value = issuers.signIn.clientId;
    }
    enable(["provider-issuer", "provider-client", "provider-submit"], !refusal && options.length > 0);
    $("provider-clear").disabled = Boolean(refusal) || !issuers.signIn;
    explain("provider-reason", [refusal, !refusal && options.length === 0 ? "Trust an issuer first." : null]);
    $("issuers-updated").textContent = trusted.updatedAt ? `Last changed ${when(trusted.updatedAt)} by ${trusted.updatedBy}.` : "";
    const rows = trusted.issuers.map((i) => {
      const row = document.createElement("tr");
      const action = document.createElement("td");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Stop trusting";
      remove.setAttribute("aria-label", `Stop trusting ${i.issuer}`);
      remove.disabled = Boolean(refusal);
      remove.addEventListener("click", () => attempt(() => removeIssuer(i)));
      action.append(remove);
      row.append(cell(i.issuer), cell(i.description || ""), action);
      return row;
    });
    $("issuer-list").replaceChildren(...rows);
  }

  async function addIssuer(event) {
    event.preventDefault();
    const added = { issuer: $("issuer-url").value.trim() };
    const description = $("issuer-description").value.trim();
    if (description) {
      added.description = description;
    }
    await attempt(async () => {
      await api("PUT", "/iam/trusted-issuers", withSignIn([...issuers.list, added], issuers.signIn), { "if-match": `"${issuers.version}"` });
      $("issuer-form").reset();
      await openIssuers();
    });
  }

  async function removeIssuer(i) {
    const sure = await confirmAction(`Stop trusting ${i.issuer}? Every trust policy naming it stops admitting tokens at once.`, "Stop trusting");
    if (!sure) {
      return;
    }
    const kept = issuers.list.filter((x) => x.issuer !== i.issuer);
    const signIn = issuers.signIn && issuers.signIn.issuer !== i.issuer ? issuers.signIn : null;
    await api("PUT", "/iam/trusted-issuers", withSignIn(kept, signIn), { "if-match": `"${issuers.version}"` });
    await openIssuers();
  }

  /** The list to PUT, with the provider as it should be (`null`: none; left out, it would stay). */
  function withSignIn(list, signIn) {
    return { issuers: list, signIn };
  }

  async function saveProvider(event) {
    event.preventDefault();
    await attempt(async () => {
      const signIn = { issuer: $("provider-issuer").value, clientId: $("provider-client").value.trim() };
      const before = issuers.signIn;
      if (before && (before.issuer !== signIn.issuer || before.clientId !== signIn.clientId)) {
        const sure = await confirmAction("Change the identity provider? Everyone signed in through it, you included, is signed out at once.", "Change");
        if (!sure) {
          return;
        }
      }
      await api("PUT", "/iam/trusted-issuers", withSignIn(issuers.list, signIn), { "if-match": `"${issuers.version}"` });
      await openIssuers();
    });
  }

  async function clearProvider() {
    await attempt(async () => {
      const sure = await confirmAction("Stop signing in through the identity provider? Everyone signed in through it is signed out at once.", "Stop");
      if (!sure) {
        return;
      }
      await api("PUT", "/iam/trusted-issuers", withSignIn(issuers.list, null), { "if-match": `"${issuers.version}"` });
      await openIssuers();
    });
  }

  // ---- Confirmation, in a modal dialog rather than window.confirm: labelled, styled, testable.

  function confirmAction(message, confirmLabel) {
    const dialog = $("confirm-dialog");
    $("confirm-message").textContent = message;
    $("confirm-yes").textContent = confirmLabel;
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-yes").removeEventListener("click", yes);
        $("confirm-no").removeEventListener("click", no);
        dialog.removeEventListener("close", no);
        if (dialog.open) {
          dialog.close();
        }
        resolve(answer);
      };
      const yes = () => done(true);
      const no = () => done(false);
      $("confirm-yes").addEventListener("click", yes);
      $("confirm-no").addEventListener("click", no);
      dialog.addEventListener("close", no);
      dialog.showModal();
      $("confirm-no").focus();
    });
  }

  async function start() {
    const response = await fetch("config.json", { cache: "no-store", credentials: "omit" });
    session.config = await response.json();
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("create-form").addEventListener("submit", createPrincipal);
    $("status-filter").addEventListener("change", renderPrincipals);
    $("more").addEventListener("click", () => attempt(() => loadPrincipals(false)));
    $("edit-form").addEventListener("submit", savePrincipal);
    $("issue-form").addEventListener("submit", issueCredential);
    $("assign-form").addEventListener("submit", assignRole);
    $("define-form").addEventListener("submit", defineRole);
    $("policy-form").addEventListener("submit", savePolicy);
    $("webhook-form").addEventListener("submit", addWebhook);
    $("trust-form").addEventListener("submit", addTrustPolicy);
    $("issuer-form").addEventListener("submit", addIssuer);
    $("provider-form").addEventListener("submit", saveProvider);
    $("provider-clear").addEventListener("click", clearProvider);
    $("sso-form").addEventListener("submit", (event) => attempt(() => signInThroughProvider(event)));
    $("show-all").addEventListener("change", () => attempt(reopenPrincipal));
    $("activity-outcome").addEventListener("change", () => attempt(openActivity));
    $("activity-more").addEventListener("click", () => attempt(() => trails.organisation.load(false)));
    $("principal-activity-more").addEventListener("click", () => attempt(() => trails.principal.load(false)));
    $("copy-key").addEventListener("click", copyKey);
    $("close-key").addEventListener("click", () => $("key-dialog").close());
    $("key-dialog").addEventListener("close", purgeKey);
    window.addEventListener("hashchange", route);
    await returnFromProvider().catch((error) => notify(error.message));
    document.body.dataset.ready = "true";
  }

  start().catch((error) => notify(`The console could not start: ${error.message}`));
})();
