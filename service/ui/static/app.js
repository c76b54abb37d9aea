// PruneKit dashboard: fetches server-rendered fragments with the API key and keeps them live.
//
// The key lives in sessionStorage (this tab only) and is sent as "Authorization: Bearer" to this
// server; it never goes into a URL or a cookie. Fragments are HTML rendered and escaped by the
// server; they are inserted through a <template>, and the page's Content-Security-Policy allows
// no inline script, so nothing in them can run. Job pages follow the job's server-sent events
// (read with fetch, since EventSource cannot send the header) and fall back to polling.
"use strict";

(function () {
  const KEY = "prunekit.apiKey";
  const body = document.body;
  const main = document.getElementById("main");
  const login = document.getElementById("login");
  const live = document.getElementById("live");
  let stopped = false;
  let timer = null;
  let stream = null;

  function key() { return sessionStorage.getItem(KEY); }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const k = key();
    if (k) h["Authorization"] = "Bearer " + k;
    return h;
  }

  class Unauthorized extends Error {}

  async function errorText(resp) {
    try {
      const e = (await resp.json()).error;
      return e && e.message ? e.message : resp.status + " " + resp.statusText;
    } catch (_) {
      return resp.status + " " + resp.statusText;
    }
  }

  async function fetchFragment(url) {
    const resp = await fetch(url, { headers: headers(), cache: "no-store", credentials: "omit" });
    if (resp.status === 401) throw new Unauthorized(await errorText(resp));
    if (!resp.ok) throw new Error(await errorText(resp));
    return resp.text();
  }

  function render(html) {
    const t = document.createElement("template");
    t.innerHTML = html;  // server-rendered and escaped; CSP forbids inline script
    main.replaceChildren(t.content);
    const root = main.firstElementChild;
    const who = document.getElementById("who");
    if (root && root.dataset.tenant !== undefined) {
      who.textContent = "tenant " + root.dataset.tenant + (key() ? "" : " (this machine, no key needed)");
    }
    document.getElementById("logout").hidden = !key();
    return root;
  }

  function showLogin(message) {
    stopAll();
    login.hidden = false;
    main.replaceChildren();
    document.getElementById("login-error").textContent = message || "";
    document.getElementById("who").textContent = "";
    document.getElementById("logout").hidden = true;
    document.getElementById("key").focus();
  }

  function showError(message) {
    document.getElementById("logout").hidden = !key();
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = message;
    main.replaceChildren(p);
  }

  function stopAll() {
    stopped = true;
    if (timer) clearTimeout(timer);
    timer = null;
    if (stream) stream.abort();
    stream = null;
  }

  async function load(url) {
    try {
      const root = render(await fetchFragment(url));
      login.hidden = true;
      document.getElementById("login-error").textContent = "";
      return root;
    } catch (e) {
      if (e instanceof Unauthorized) {
        const hadKey = !!key();  // no key yet: just ask for one; a refused key: say why
        sessionStorage.removeItem(KEY);
        showLogin(hadKey ? e.message : "");
      } else {
        showError(e.message);
      }
      return null;
    }
  }

  // -- the jobs list: refreshed every 2 s while a job on it is active, every 10 s otherwise
  // (new jobs appear), not at all while the tab is hidden -------------------------------------
  async function jobsPage(url) {
    const root = document.hidden ? main.firstElementChild : await load(url);
    if (!root || stopped) return;
    const active = root.hasAttribute("data-active");
    live.textContent = active ? "Live: refreshing while jobs run." : "";
    timer = setTimeout(() => jobsPage(url), active ? 2000 : 10000);
  }

  // -- one job: follow its events, re-render on each change ------------------------------------
  async function jobPage(url) {
    const root = await load(url);
    if (!root || stopped || !root.hasAttribute("data-active")) return;
    live.textContent = "Live: following the job's events.";
    try {
      await follow(body.dataset.job, root.dataset.version, () => load(url));
    } catch (e) {
      if (e.name === "AbortError" || stopped) return;
      live.textContent = "Live: polling.";  // no stream (a proxy, or the server's limit): poll
      const again = async () => {
        const r = await load(url);
        if (r && !stopped && r.hasAttribute("data-active")) timer = setTimeout(again, 2000);
        else live.textContent = "";
      };
      timer = setTimeout(again, 2000);
      return;
    }
    live.textContent = "";
  }

  async function follow(jobId, lastId, onChange) {
    for (let attempt = 0; attempt < 100 && !stopped; attempt++) {
      stream = new AbortController();
      const h = headers({ Accept: "text/event-stream" });
      if (lastId) h["Last-Event-ID"] = lastId;
      const resp = await fetch("/v1/jobs/" + jobId + "/events",
        { headers: h, cache: "no-store", credentials: "omit", signal: stream.signal });
      if (!resp.ok || !resp.body) throw new Error("no event stream (" + resp.status + ")");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message", id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("id: ")) id = line.slice(4);
          }
          if (name === "job") { lastId = id || lastId; await onChange(); }
          else if (name === "end" || name === "gone") { await onChange(); return; }
        }
      }
      // The stream reached its time limit (or a proxy cut it): reconnect where it left off.
    }
  }

  // -- downloads: fetched with the key, saved from a blob ----------------------------------------
  async function download(a) {
    const status = document.getElementById("download-status");
    status.textContent = "Downloading " + a.getAttribute("download") + "…";
    try {
      const resp = await fetch(a.getAttribute("href"),
        { headers: headers(), credentials: "omit", redirect: "manual" });
      if (resp.type === "opaqueredirect") {  // the store presigns downloads: the browser goes there
        const link = await fetch(body.dataset.fragment + "/presigned/" + encodeURIComponent(a.dataset.name),
          { headers: headers(), cache: "no-store", credentials: "omit" });
        if (!link.ok) throw new Error(await errorText(link));
        const url = (await link.json()).url;
        if (!url) throw new Error("the server redirected the download but offers no link");
        status.textContent = "Downloading " + a.getAttribute("download") + " from the artifact store…";
        window.location.assign(url);
        return;
      }
      if (resp.status === 401) throw new Unauthorized(await errorText(resp));
      if (!resp.ok) throw new Error(await errorText(resp));
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const save = document.createElement("a");
      save.href = url;
      save.download = a.getAttribute("download");
      document.body.appendChild(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      status.textContent = "Saved " + save.download + " (" + blob.size + " bytes).";
    } catch (e) {
      if (e instanceof Unauthorized) showLogin(e.message);
      else status.textContent = "Download failed: " + e.message;
    }
  }

  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a");
    if (!a) return;
    if (a.hasAttribute("data-download")) {
      ev.preventDefault();
      download(a);
    } else if (a.hasAttribute("data-fragment-link")) {
      ev.preventDefault();
      stopAll();
      stopped = false;
      jobsPage(a.getAttribute("href"));
    }
  });

  document.getElementById("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("key");
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    start();
  });

  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });

  function start() {
    stopAll();
    stopped = false;
    const url = body.dataset.fragment;
    if (body.dataset.page === "job") jobPage(url);
    else jobsPage(url);
  }

  start();
})();
