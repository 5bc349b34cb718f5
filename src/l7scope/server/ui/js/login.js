// The login overlay: shown when an API call answers 401 (no session yet, or it expired). The
// token is sent once to POST /login, which answers with an HttpOnly session cookie; the page is
// then reloaded. The token itself is never stored by the page.

import { $, fill } from "./dom.js";

let shown = false;

export function showLogin() {
  if (shown) return;
  shown = true;
  $("login").hidden = false;
  $("login-token").focus();
}

async function submit(event) {
  event.preventDefault();
  const token = $("login-token").value.trim();
  const err = $("login-error");
  if (!token) return;
  let resp;
  try {
    resp = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch (e) {
    err.hidden = false;
    fill(err, `server unreachable: ${e.message}`);
    return;
  }
  if (resp.ok) {
    location.reload();
    return;
  }
  let message = `HTTP ${resp.status}`;
  try {
    message = (await resp.json())?.error?.message || message;
  } catch {
    // keep the status line
  }
  err.hidden = false;
  fill(err, `Login failed: ${message}`);
}

export function initLogin() {
  $("login-form").addEventListener("submit", submit);
}
