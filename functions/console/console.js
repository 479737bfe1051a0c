"use strict";
// The console is a client of the public management API on its own origin. The access token
// lives in this closure only: never in localStorage, sessionStorage, a cookie or a URL. An API
// key typed to sign in is exchanged and dropped at once. Everything the server sends is shown
// with textContent, never parsed as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  const session = { token: null, expiresAt: 0, config: null };
  const listing = { cursor: null, principals: [] };

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
  async function api(method, path, body) {
    if (!session.token || Date.now() >= session.expiresAt) {
      expire();
      throw new ApiError(401, EXPIRED);
    }
    const init = { method, headers: { authorization: `Bearer ${session.token}` }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (response.status === 401) {
      expire();
      throw new ApiError(401, EXPIRED);
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.detail) || `the server answered ${response.status}`);
    }
    return data;
  }

  /** The token expired or was refused: ask to sign in again, keeping what the page shows. */
  function expire() {
    session.token = null;
    session.expiresAt = 0;
    $("who").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    notify(EXPIRED);
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

  async function showSignedIn() {
    const me = await api("GET", "/iam/whoami");
    const who = $("who");
    who.textContent = `Signed in as ${me.sub} in ${me.org_id}`;
    who.hidden = false;
    $("sign-out").hidden = false;
    $("sign-in").hidden = true;
    $("api-keys").hidden = false;
    if (listing.principals.length === 0) {
      await loadPrincipals(true);
    }
  }

  function signOut() {
    session.token = null;
    session.expiresAt = 0;
    listing.principals = [];
    listing.cursor = null;
    $("principals").replaceChildren();
    $("api-keys").hidden = true;
    $("who").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    notify("");
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" });
  const when = (iso) => (iso ? `${dateFormat.format(new Date(iso))} UTC` : "Never");

  function renderPrincipals() {
    const wanted = $("status-filter").value;
    const rows = listing.principals
      .filter((p) => !wanted || p.status === wanted)
      .map((p) => {
        const row = document.createElement("tr");
        for (const text of [p.displayName, p.status, when(p.expiresAt), when(p.createdAt)]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        row.dataset.principalId = p.id;
        return row;
      });
    $("principals").replaceChildren(...rows);
    $("more").hidden = !listing.cursor;
  }

  async function loadPrincipals(fromStart) {
    if (fromStart) {
      listing.principals = [];
      listing.cursor = null;
    }
    const query = new URLSearchParams({ limit: "50" });
    if (listing.cursor) {
      query.set("cursor", listing.cursor);
    }
    const page = await api("GET", `/iam/api-keys?${query}`);
    listing.principals.push(...page.items);
    listing.cursor = page.nextCursor || null;
    renderPrincipals();
  }

  async function createPrincipal(event) {
    event.preventDefault();
    const body = { displayName: $("display-name").value.trim(), status: $("principal-status").value };
    const date = $("expires-at").value;
    if (date) {
      // The end of the chosen day, UTC, as the label says.
      body.expiresAt = `${date}T23:59:59Z`;
    }
    try {
      await api("POST", "/iam/api-keys", body);
      $("create-form").reset();
      notify("");
      await loadPrincipals(true);
    } catch (error) {
      notify(error.message);
    }
  }

  async function start() {
    const response = await fetch("config.json", { cache: "no-store", credentials: "omit" });
    session.config = await response.json();
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("create-form").addEventListener("submit", createPrincipal);
    $("status-filter").addEventListener("change", renderPrincipals);
    $("more").addEventListener("click", () => loadPrincipals(false).catch((e) => notify(e.message)));
    document.body.dataset.ready = "true";
  }

  start().catch((error) => notify(`The console could not start: ${error.message}`));
})();
