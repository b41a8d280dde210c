// mailsuite capture UI: reads the Mailpit-compatible API of this server, listens to /ui/events
// (Server-Sent Events) for changes.  Message data is only ever put in the page as text
// (textContent), never as markup; the HTML body lives in a sandboxed iframe served with its own CSP.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { query: "", selected: null, message: null, rawLoaded: false, refreshing: null, again: false, signature: "" };
// Remote content the frame's CSP blocks: images, media, backgrounds, style sheets (links to click are not).
const REMOTE = /\b(?:src|srcset|background|poster)\s*=\s*["']?\s*(?:https?:)?\/\/|url\(\s*["']?\s*(?:https?:)?\/\/|<link\b[^>]*\bhref\s*=\s*["']?\s*(?:https?:)?\/\/|@import\s+["']?(?:https?:)?\/\//i;

async function api(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  const type = response.headers.get("content-type") || "";
  return type.startsWith("application/json") ? response.json() : response.text();
}

function when(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function person(a) {
  if (!a) return "";
  return a.Name ? `${a.Name} <${a.Address}>` : a.Address;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// -- the list --------------------------------------------------------------------------
async function refresh() {
  // One request at a time; a change during a request asks for one more afterwards.
  if (state.refreshing) { state.again = true; return state.refreshing; }
  state.refreshing = (async () => {
    do {
      state.again = false;
      const path = state.query
        ? `/api/v1/search?limit=500&query=${encodeURIComponent(state.query)}`
        : "/api/v1/messages?limit=500";
      try {
        renderList(await api(path));
      } catch (error) {
        $("live").textContent = `Could not load messages (${error.message})`;
      }
    } while (state.again);
    state.refreshing = null;
  })();
  return state.refreshing;
}

function renderList(data) {
  // Rebuild only when something shown changed: a rebuild would move focus and disturb screen readers.
  const signature = JSON.stringify([state.query, data.total, data.messages_count, data.messages.map((m) => [m.ID, m.Read])]);
  if (signature === state.signature) return;
  state.signature = signature;
  const list = $("message-list");
  const focused = document.activeElement && document.activeElement.closest("#message-list a");
  const focusedId = focused ? focused.dataset.id : null;
  list.replaceChildren();
  for (const m of data.messages) {
    const link = el("a");
    link.href = `#m/${encodeURIComponent(m.ID)}`;  // "#m/": other fragments (the skip link) are not messages
    link.dataset.id = m.ID;
    if (!m.Read) link.classList.add("unread");
    if (m.ID === state.selected) link.setAttribute("aria-current", "true");
    const from = el("span", "from", person(m.From) || "(no sender)");
    if (!m.Read) from.prepend(el("span", "visually-hidden", "Unread, "));
    link.append(from, el("span", "when", when(m.Created)));
    const subject = el("span", "subject-line", m.Subject || "(no subject)");
    if (m.Attachments) subject.append(el("span", "clip", ` · ${m.Attachments} attachment${m.Attachments > 1 ? "s" : ""}`));
    link.append(subject, el("span", "snippet", m.Snippet));
    const item = el("li");
    item.append(link);
    list.append(item);
  }
  $("list-title").textContent = state.query ? "Search results" : "Inbox";
  $("count").textContent = state.query ? `(${data.messages_count} of ${data.total})` : `(${data.total})`;
  $("list-empty").hidden = data.messages.length > 0;
  $("list-empty").textContent = state.query ? "No message matches this search." : "No messages yet. Mail sent to this server shows up here at once.";
  $("purge").disabled = data.total === 0;
  if (focusedId) {
    const again = list.querySelector(`a[data-id="${CSS.escape(focusedId)}"]`);
    if (again) again.focus();
  }
  if (state.selected && !data.messages.some((m) => m.ID === state.selected) && !state.query) {
    api(`/api/v1/message/${encodeURIComponent(state.selected)}`).catch(() => closeMessage());
  }
}

// -- one message -----------------------------------------------------------------------
function closeMessage() {
  state.selected = null;
  state.message = null;
  $("message-pane").hidden = true;
  $("no-selection").hidden = false;
  document.body.classList.remove("reading");
  $("html-frame").removeAttribute("src");
  for (const a of document.querySelectorAll("#message-list a[aria-current]")) a.removeAttribute("aria-current");
}

async function openMessage(id, focus) {
  let m;
  try {
    m = await api(`/api/v1/message/${encodeURIComponent(id)}`);
  } catch (error) {
    closeMessage();
    $("live").textContent = "That message is gone.";
    return;
  }
  state.selected = id;
  state.message = m;
  state.rawLoaded = false;
  document.body.classList.add("reading");
  $("message-pane").hidden = false;
  $("no-selection").hidden = true;
  for (const a of document.querySelectorAll("#message-list a")) {
    if (a.dataset.id === id) { a.setAttribute("aria-current", "true"); a.classList.remove("unread"); } else a.removeAttribute("aria-current");
  }
  $("message-subject").textContent = m.Subject || "(no subject)";
  const meta = $("message-meta");
  meta.replaceChildren();
  const rows = [["From", person(m.From)], ["To", m.To.map(person).join(", ")], ["Cc", m.Cc.map(person).join(", ")],
    ["Bcc", m.Bcc.map(person).join(", ")], ["Reply-To", m.ReplyTo.map(person).join(", ")], ["Date", when(m.Date)],
    ["Size", size(m.Size)]];
  for (const [name, value] of rows) {
    if (!value) continue;
    meta.append(el("dt", "", name), el("dd", "", value));
  }
  const files = [...m.Attachments, ...m.Inline];
  $("attachments").hidden = files.length === 0;
  const list = $("attachment-list");
  list.replaceChildren();
  for (const a of files) {
    const link = el("a", "", a.FileName || `part ${a.PartID}`);
    link.href = `/api/v1/message/${encodeURIComponent(id)}/part/${encodeURIComponent(a.PartID)}`;
    link.setAttribute("download", a.FileName || `part-${a.PartID}`);
    const item = el("li");
    item.append(link, el("span", "size", ` ${a.ContentType}, ${size(a.Size)}${a.ContentID && !a.FileName ? " (inline)" : ""}`));
    list.append(item);
  }
  $("text-body").textContent = m.Text || "(no text body)";
  const headers = await api(`/api/v1/message/${encodeURIComponent(id)}/headers`);
  const tbody = $("header-rows");
  tbody.replaceChildren();
  for (const [name, values] of Object.entries(headers)) {
    for (const value of values) {
      const row = el("tr");
      row.append(el("td", "", name), el("td", "", value));
      tbody.append(row);
    }
  }
  $("raw-body").textContent = "";
  $("raw-link").href = `/api/v1/message/${encodeURIComponent(id)}/raw`;
  $("raw-link").setAttribute("download", `${id}.eml`);
  const hasHTML = Boolean(m.HTML);
  $("no-html").hidden = hasHTML;
  $("html-frame").hidden = !hasHTML;
  $("remote-notice").hidden = !(hasHTML && REMOTE.test(m.HTML));
  if (hasHTML) $("html-frame").src = `/view/${encodeURIComponent(id)}.html`;
  else $("html-frame").removeAttribute("src");
  selectTab(hasHTML ? "html" : "text", false);
  if (focus) $("message-subject").focus();
}

function allowRemote() {
  if (!state.selected) return;
  $("html-frame").src = `/view/${encodeURIComponent(state.selected)}.html?remote=1`;
  $("remote-notice").hidden = true;
  $("html-frame").focus();
}

async function selectTab(name, focus) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === "raw" && !state.rawLoaded && state.selected) {
    state.rawLoaded = true;
    $("raw-body").textContent = await api(`/api/v1/message/${encodeURIComponent(state.selected)}/raw`);
  }
}

async function deleteSelected() {
  if (!state.selected) return;
  const id = state.selected;
  const next = document.querySelector(`#message-list a[data-id="${CSS.escape(id)}"]`)?.closest("li");
  await api("/api/v1/messages", { method: "DELETE", headers: { "content-type": "application/json" }, body: JSON.stringify({ IDs: [id] }) });
  closeMessage();
  history.replaceState(null, "", location.pathname + location.search);
  $("live").textContent = "Message deleted.";
  await refresh();
  const sibling = next && (next.nextElementSibling || next.previousElementSibling);
  (sibling?.querySelector("a") || $("message-list")).focus();
}

async function purge() {
  if (!window.confirm("Delete every captured message?")) return;
  await api("/api/v1/messages", { method: "DELETE" });
  closeMessage();
  history.replaceState(null, "", location.pathname + location.search);
  $("live").textContent = "All messages deleted.";
  await refresh();
}

function fromHash() {
  if (location.hash.startsWith("#m/")) openMessage(decodeURIComponent(location.hash.slice(3)), true);
  else if (state.selected) closeMessage();
}

// -- live updates ----------------------------------------------------------------------
function listen() {
  const events = new EventSource("/ui/events");
  events.addEventListener("open", () => { $("live").textContent = "Live"; $("live").classList.add("on"); });
  events.addEventListener("hello", () => refresh());
  events.addEventListener("change", () => refresh());
  events.addEventListener("error", () => { $("live").textContent = "Reconnecting…"; $("live").classList.remove("on"); });
}

// -- keyboard --------------------------------------------------------------------------
function onTabKeys(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const i = tabs.indexOf(event.target);
  if (i < 0) return;
  let j = null;
  if (event.key === "ArrowRight") j = (i + 1) % tabs.length;
  else if (event.key === "ArrowLeft") j = (i - 1 + tabs.length) % tabs.length;
  else if (event.key === "Home") j = 0;
  else if (event.key === "End") j = tabs.length - 1;
  if (j === null) return;
  event.preventDefault();
  selectTab(tabs[j].id.slice(4), true);
}

function onListKeys(event) {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  const links = [...document.querySelectorAll("#message-list a")];
  const i = links.indexOf(document.activeElement);
  const j = i < 0 ? 0 : Math.max(0, Math.min(links.length - 1, i + (event.key === "ArrowDown" ? 1 : -1)));
  if (links[j]) { event.preventDefault(); links[j].focus(); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.query = $("search").value.trim();
    refresh();
  });
  $("search").addEventListener("input", () => {
    if ($("search").value.trim() === "" && state.query) { state.query = ""; refresh(); }
  });
  $("purge").addEventListener("click", purge);
  $("delete").addEventListener("click", deleteSelected);
  $("allow-remote").addEventListener("click", allowRemote);
  $("back").addEventListener("click", () => {
    const id = state.selected;
    history.pushState(null, "", location.pathname + location.search);
    closeMessage();
    const link = id && document.querySelector(`#message-list a[data-id="${CSS.escape(id)}"]`);
    (link || $("message-list")).focus();
  });
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectTab(tab.id.slice(4), false));
    tab.addEventListener("keydown", onTabKeys);
  }
  $("message-list").addEventListener("keydown", onListKeys);
  window.addEventListener("hashchange", fromHash);
  listen();
  refresh().then(fromHash);
});
