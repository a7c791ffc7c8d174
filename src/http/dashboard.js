// The live page's script, served as `/dashboard.js` so that the page's Content-Security-Policy
// allows scripts from the server itself and no inline script.
"use strict";
(() => {
  // Everything shown comes from the API and is written with textContent (or as text nodes):
  // caller ids and webhook parameters are untrusted.

  const TOKEN_KEY = "switchboard.token";
  // Beside the page, so that a proxy publishing Switchboard under a path prefix serves both.
  const API = location.pathname.replace(/\/dashboard\/?$/, "") + "/api/v1";
  const ENDED_LINGER_MS = 10000;   // an ended call stays, marked ended, this long
  const STATS_EVERY_MS = 10000;
  const LOAD_EVERY_MS = 5000;
  const MAX_CAMPAIGN_CHARTS = 8;   // the busiest; a campaign filter shows any other
  const RESYNC_EVERY_MS = 60000;   // re-read the live list now and then, in case a change was missed
  const STREAM_IDLE_MS = 45000;    // the server sends a comment every 15 s; silence this long is a dead stream
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 10000;
  const NAMES_RETRY_MS = 30000;

  const $ = (id) => document.getElementById(id);
  /** What an `Authorization` header can carry: printable ASCII, no spaces. */
  const validToken = (value) => typeof value === "string" && /^[\x21-\x7e]+$/.test(value);
  const INVALID_TOKEN = "A token is printable ASCII without spaces.";
  const ui = {
    portal: $("portal"),
    buyersSection: $("buyers-section"),
    statsSection: $("stats-section"),
    connection: $("connection"),
    signOut: $("sign-out"),
    login: $("login"),
    form: $("token-form"),
    input: $("token-input"),
    tokenError: $("token-error"),
    board: $("board"),
    notice: $("notice"),
    statsBody: $("stats-body"),
    statsUpdated: $("stats-updated"),
    noStats: $("no-stats"),
    callsBody: $("calls-body"),
    liveCount: $("live-count"),
    noCalls: $("no-calls"),
    panel: $("call-panel"),
    panelTitle: $("panel-title"),
    panelClose: $("panel-close"),
    panelStatus: $("panel-status"),
    panelUpdated: $("panel-updated"),
    panelSummary: $("panel-summary"),
    panelDials: $("panel-dials"),
    panelRecordings: $("panel-recordings"),
    timeline: $("timeline"),
    panelPingTitle: $("panel-ping-title"),
    panelPing: $("panel-ping"),
    filters: $("filters"),
    filterCampaign: $("filter-campaign"),
    filterBuyer: $("filter-buyer"),
    filterState: $("filter-state"),
    filterCaller: $("filter-caller"),
    filterSummary: $("filter-summary"),
    rangeHour: $("range-hour"),
    rangeDay: $("range-day"),
    charts: $("charts"),
    chartsUpdated: $("charts-updated"),
    noCharts: $("no-charts"),
    buyers: $("buyers"),
    buyersUpdated: $("buyers-updated"),
    noBuyers: $("no-buyers"),
  };

  class Unauthorized extends Error {}
  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  let token = null;
  // Bumped at every sign-in and sign-out: work started in an earlier session is dropped.
  let session = 0;
  /** `"publisher"` or `"buyer"` for a partner's token (its portal: its own calls, no money of
   * others, no network-wide panels), else `null`. */
  let portal = null;
  let timers = [];
  let streamAbort = null;
  let clockOffset = 0;             // server clock minus this browser's, in ms
  const calls = new Map();         // call sid -> { summary, row, cells, seenAt, removeTimer }
  const gone = new Map();          // call sid -> { version, at } of calls taken off the table
  const names = { campaigns: new Map(), buyers: new Map(), publishers: new Map() };
  let namesLoadedAt = 0;
  let namesLoading = 0;            // the session whose names are being read, 0 for none
  let statsTimer = null;
  let statsRequest = 0;            // numbers requests: only the latest one's answer is shown
  let selectedSid = null;
  let panelTimer = null;
  let panelRequest = 0;
  let pingShown = { sid: null, ping: null };   // the RTB ping that won the call in the panel
  // What the charts, the buyers' gauges and the counters were last drawn from: a filter
  // redraws them without asking the server again.
  let range = "hour";
  let lastTimeline = null;
  let lastLoad = null;
  let lastStats = null;
  let timelineRequest = 0;
  let loadRequest = 0;
  // One read of each kind at a time: a change asked for while one is under way is read once
  // it is done (a big history makes the counters slow to read; they must not pile up).
  const reading = new Map();      // reader -> "busy" | "again"
  const filters = { campaign: "", buyer: "", state: "", caller: "" };

  // ---- helpers ---------------------------------------------------------------------------

  /** An element with properties, attributes and children (strings become text nodes). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child != null && child !== false) node.append(child);
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  /** RFC 3339 to milliseconds; fractions beyond milliseconds are cut (not every parser takes them). */
  function parseTime(text) {
    if (typeof text !== "string") return NaN;
    const match = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$/.exec(text);
    if (!match) return Date.parse(text);
    return Date.parse(match[1] + (match[2] ? match[2].slice(0, 4) : "") + match[3]);
  }

  function serverNow() {
    return Date.now() + clockOffset;
  }

  function duration(ms) {
    if (!Number.isFinite(ms)) return "";
    const total = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function clockTime(text, withMs) {
    const ms = parseTime(text);
    if (!Number.isFinite(ms)) return text ? String(text) : "";
    const date = new Date(ms);
    const hms = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
    return withMs ? `${hms}.${String(date.getMilliseconds()).padStart(3, "0")}` : hms;
  }

  function fullTime(text) {
    const ms = parseTime(text);
    return Number.isFinite(ms) ? new Date(ms).toLocaleString() : (text ? String(text) : "");
  }

  function words(value) {
    return value == null ? "" : String(value).replace(/_/g, " ");
  }

  /** A short id for records whose name is not known (UUIDv7s share their first digits). */
  function shortId(id) {
    return id ? `…${String(id).slice(-6)}` : "—";
  }

  function nameOf(kind, id) {
    if (!id) return "—";
    return names[kind].get(id) ?? shortId(id);
  }

  function money(value) {
    if (typeof value === "number") return value.toFixed(2);
    return value == null ? "" : String(value);
  }

  /** What the call earned its publisher, as far as it is settled. */
  function publisherPayout(call) {
    if (call.publisher_payout == null) return "not settled yet";
    if (call.publisher_duplicate) return `${money(call.publisher_payout)} (a repeat caller: a duplicate for the publisher)`;
    return money(call.publisher_payout);
  }

  function yesNo(value) {
    return value == null ? "unknown" : (value ? "yes" : "no");
  }

  function readStoredToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function storeToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage refused (privacy settings): the token lives in this page only.
    }
  }

  // ---- the API ----------------------------------------------------------------------------

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return String(body.error.message);
    } catch {
      // Not JSON.
    }
    return `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
  }

  function authHeaders(accept) {
    return { Authorization: `Bearer ${token}`, Accept: accept };
  }

  async function api(path) {
    const response = await fetch(API + path, { headers: authHeaders("application/json"), cache: "no-store" });
    if (response.status === 401) throw new Unauthorized(await errorMessage(response));
    if (!response.ok) throw new HttpError(response.status, await errorMessage(response));
    return response.json();
  }

  /** What to do with a failed request of session `gen`: a refused token signs out; anything
   * else is shown until the same kind of request (`source`) succeeds. */
  function failed(gen, error, what, source) {
    if (gen !== session) return;
    if (error instanceof Unauthorized) {
      signOut(`The token was refused (${error.message}). Paste a valid supervisor token.`);
      return;
    }
    notice(`${what}: ${error && error.message ? error.message : error}`, source);
  }

  function notice(message, source) {
    ui.notice.textContent = message || "";
    ui.notice.dataset.source = source || "";
    show(ui.notice, Boolean(message));
  }

  /** Clears the notice if it is about `source`, which just worked. */
  function recovered(source) {
    if (ui.notice.dataset.source === source) notice("");
  }

  // ---- signing in and out -----------------------------------------------------------------

  /** `#token=…` in the address, taken out of it: `null` if there is none (or it is empty),
   * else `{ value }`, the token percent-decoded as written (a `+` stays a `+`), `value: null`
   * if it does not decode. Whether it is a valid token is for `signIn` to say. */
  function takeTokenFromFragment() {
    const hash = location.hash.replace(/^#/, "");
    if (!hash) return null;
    const parts = hash.split("&");
    const at = parts.findIndex((part) => part.startsWith("token="));
    if (at < 0) return null;
    let value;
    try {
      value = decodeURIComponent(parts[at].slice("token=".length)).trim();
    } catch {
      value = null;
    }
    parts.splice(at, 1);
    const rest = parts.join("&");
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    return value === "" ? null : { value };
  }

  function setConnection(state, text) {
    ui.connection.dataset.state = state;
    ui.connection.textContent = text;
  }

  function signIn(value) {
    if (!validToken(value)) {
      signOut(`${INVALID_TOKEN} Paste a valid supervisor token.`);
      return;
    }
    stop();
    closePanel();
    token = value;
    storeToken(value);
    session += 1;
    show(ui.login, false);
    show(ui.tokenError, false);
    show(ui.board, true);
    show(ui.signOut, true);
    start(session);
  }

  function signOut(message) {
    stop();
    session += 1;
    token = null;
    storeToken(null);
    show(ui.board, false);
    show(ui.signOut, false);
    closePanel();
    setConnection("offline", "Signed out");
    ui.tokenError.textContent = message || "";
    show(ui.tokenError, Boolean(message));
    show(ui.login, true);
    ui.input.value = "";
    ui.input.focus();
  }

  /** Stops the stream and the timers and forgets the calls shown. */
  function stop() {
    portal = null;
    for (const timer of timers) clearInterval(timer);
    timers = [];
    clearTimeout(statsTimer);
    statsTimer = null;
    namesLoadedAt = 0;
    if (streamAbort) streamAbort.abort();
    streamAbort = null;
    for (const entry of calls.values()) clearTimeout(entry.removeTimer);
    calls.clear();
    gone.clear();
    ui.callsBody.replaceChildren();
    ui.statsBody.replaceChildren();
    ui.statsUpdated.textContent = "";
    lastStats = lastTimeline = lastLoad = null;
    reading.clear();
    ui.charts.replaceChildren();
    ui.chartsUpdated.textContent = "";
    ui.buyers.replaceChildren();
    ui.buyersUpdated.textContent = "";
    notice("");
    updateCounts();
    show(ui.noStats, true);
  }

  /** Asks the API whose token this is, and shows a partner its portal: the panels that read the
   * whole network (buyers' caps, today's counters) are the staff's, and stay hidden. */
  async function whoAmI(gen) {
    const me = await api("/me");
    if (gen !== session) return;
    portal = me.role === "publisher" || me.role === "buyer" ? me.role : null;
    ui.portal.textContent = portal ? `${portal === "publisher" ? "Publisher" : "Buyer"} portal: ${me.name}` : "";
    show(ui.portal, Boolean(portal));
    show(ui.buyersSection, !portal);
    show(ui.statsSection, !portal);
  }

  function start(gen) {
    setConnection("connecting", "Connecting…");
    whoAmI(gen).then(
      () => { if (gen === session) begin(gen); },
      (error) => failed(gen, error, "Could not read the token's role", "me"),
    );
  }

  function begin(gen) {
    timers.push(setInterval(tick, 1000));
    timers.push(setInterval(() => once(refreshStats, gen), STATS_EVERY_MS));
    timers.push(setInterval(() => once(refreshTimeline, gen), STATS_EVERY_MS));
    timers.push(setInterval(() => once(refreshLoad, gen), LOAD_EVERY_MS));
    timers.push(setInterval(() => resync(gen), RESYNC_EVERY_MS));
    timers.push(setInterval(pruneGone, 60000));
    loadNames(gen);
    refreshStats(gen);
    refreshTimeline(gen);
    refreshLoad(gen);
    resync(gen);
    stream(gen);
  }

  // ---- names of campaigns and buyers ------------------------------------------------------

  async function loadAll(kind) {
    const found = new Map();
    let after = null;
    for (let page = 0; page < 50; page += 1) {
      const body = await api(`/${kind}?limit=1000${after ? "&after=" + encodeURIComponent(after) : ""}`);
      for (const record of body.data || []) {
        if (record && record.id) found.set(record.id, record.name ? String(record.name) : shortId(record.id));
      }
      after = body.next_after;
      if (!after) break;
    }
    return found;
  }

  async function loadNames(gen) {
    if (portal || namesLoading === gen) return;
    namesLoading = gen;
    namesLoadedAt = Date.now();
    try {
      const [campaigns, buyers, publishers] =
        await Promise.all([loadAll("campaigns"), loadAll("buyers"), loadAll("publishers")]);
      if (gen !== session) return;
      names.campaigns = campaigns;
      names.buyers = buyers;
      names.publishers = publishers;
      fillFilterOptions();
      if (lastTimeline) renderCharts(lastTimeline);
      if (lastLoad) renderBuyers(lastLoad);
      for (const entry of calls.values()) renderRow(entry);
      for (const row of ui.statsBody.rows) {
        row.cells[0].textContent = nameOf("campaigns", row.dataset.campaignId);
      }
      recovered("names");
    } catch (error) {
      failed(gen, error, "Could not load campaign and buyer names", "names");
    } finally {
      if (namesLoading === gen) namesLoading = 0;
    }
  }

  /** A campaign or buyer created after the names were read: read them again (now and then). */
  function learnNames(gen, summary) {
    const unknown = [["campaigns", summary.campaign_id], ["campaigns", summary.entry_campaign_id], ["buyers", summary.buyer_id]]
      .some(([kind, id]) => id && !names[kind].has(id));
    if (unknown && Date.now() - namesLoadedAt > NAMES_RETRY_MS) loadNames(gen);
  }

  // ---- today's counters -------------------------------------------------------------------

  async function refreshStats(gen) {
    if (portal) return;
    const midnight = new Date();
    midnight.setHours(0, 0, 0, 0);
    const request = ++statsRequest;
    try {
      const body = await api(`/stats/campaigns?from=${encodeURIComponent(midnight.toISOString())}`);
      if (gen !== session || request !== statsRequest) return;
      lastStats = body.data || [];
      renderStats(lastStats);
      ui.statsUpdated.textContent = `updated ${clockTime(new Date().toISOString())}`;
      recovered("stats");
    } catch (error) {
      if (request !== statsRequest) return;
      failed(gen, error, "Could not load today's counters", "stats");
    }
  }

  /** Soon, and not more than once at a time: after a call started, changed state or ended. */
  function scheduleStats(gen) {
    if (statsTimer) return;
    statsTimer = setTimeout(() => {
      statsTimer = null;
      for (const read of [refreshStats, refreshTimeline, refreshLoad]) once(read, gen);
    }, 700);
  }

  /** Runs `read` unless one is under way; then runs it again once that one is done. */
  async function once(read, gen) {
    if (reading.has(read)) {
      reading.set(read, "again");
      return;
    }
    reading.set(read, "busy");
    try {
      await read(gen);
    } finally {
      const again = reading.get(read) === "again";
      reading.delete(read);
      if (again && gen === session) once(read, gen);
    }
  }

  function renderStats(rows) {
    const sorted = rows.filter((stats) => !filters.campaign || stats.campaign_id === filters.campaign).sort((a, b) =>
      nameOf("campaigns", a.campaign_id).localeCompare(nameOf("campaigns", b.campaign_id)));
    ui.statsBody.replaceChildren(...sorted.map((stats) => {
      const dropped = Object.entries(stats.dropped || {});
      const droppedTotal = dropped.reduce((sum, [, n]) => sum + (Number(n) || 0), 0);
      const reasons = dropped.map(([reason, n]) => `${words(reason)}: ${n}`).join(", ");
      const num = (value, extra) => el("td", { class: "num", ...extra }, value == null ? "" : String(value));
      return el("tr", { "data-campaign-id": stats.campaign_id },
        el("th", { scope: "row", text: nameOf("campaigns", stats.campaign_id) }),
        num(stats.calls),
        num(stats.live),
        num(stats.connected),
        num(stats.converted),
        num(stats.duplicates_avoided),
        num(stats.fallback_used),
        num(stats.redirected),
        num(stats.abandoned),
        num(stats.blocked ?? 0),
        num(droppedTotal, { title: reasons || "none dropped", "data-field": "dropped" }),
        num(money(stats.revenue)),
        num(money(stats.payout)));
    }));
    show(ui.noStats, sorted.length === 0);
  }

  // ---- filters ----------------------------------------------------------------------------

  // Kept in the address (`?campaign=…&caller=…`): a filtered view can be bookmarked and shared.
  const FILTER_PARAMS = ["campaign", "buyer", "state", "caller"];

  function filtering() {
    return FILTER_PARAMS.some((name) => filters[name]);
  }

  function readFilters() {
    const query = new URLSearchParams(location.search);
    for (const name of FILTER_PARAMS) filters[name] = (query.get(name) || "").trim();
    ui.filterState.value = filters.state;
    if (ui.filterState.value !== filters.state) filters.state = "";
    ui.filterCaller.value = filters.caller;
    fillFilterOptions();
  }

  function writeFilters() {
    const query = new URLSearchParams(location.search);
    for (const name of FILTER_PARAMS) {
      if (filters[name]) query.set(name, filters[name]);
      else query.delete(name);
    }
    const search = query.toString();
    history.replaceState(history.state, "", location.pathname + (search ? "?" + search : "") + location.hash);
  }

  function fillFilterOptions() {
    const lists = [[ui.filterCampaign, "campaigns", "campaign", "All campaigns"], [ui.filterBuyer, "buyers", "buyer", "All buyers"]];
    for (const [select, kind, key, all] of lists) {
      const sorted = [...names[kind]].sort((a, b) => a[1].localeCompare(b[1]));
      const options = [el("option", { value: "", text: all }), ...sorted.map(([id, name]) => el("option", { value: id, text: name }))];
      // A filter on a record whose name is not known (yet) stays, shown by its short id.
      if (filters[key] && !names[kind].has(filters[key])) options.push(el("option", { value: filters[key], text: shortId(filters[key]) }));
      select.replaceChildren(...options);
      select.value = filters[key];
    }
  }

  /** Digits match digits wherever they are (`415555` finds `+14155550111`); anything else
   * matches the caller as written (`anonymous`). */
  function callerMatches(caller, wanted) {
    const text = String(caller || "");
    const digits = wanted.replace(/\D/g, "");
    if (digits) return text.replace(/\D/g, "").includes(digits);
    return text.toLowerCase().includes(wanted.toLowerCase());
  }

  function matchesFilters(s) {
    if (filters.campaign && s.campaign_id !== filters.campaign && s.entry_campaign_id !== filters.campaign) return false;
    if (filters.buyer && s.buyer_id !== filters.buyer) return false;
    if (filters.state && s.state !== filters.state) return false;
    if (filters.caller && !callerMatches(s.caller, filters.caller)) return false;
    return true;
  }

  function applyFilters() {
    filters.campaign = ui.filterCampaign.value;
    filters.buyer = ui.filterBuyer.value;
    filters.state = ui.filterState.value;
    filters.caller = ui.filterCaller.value.trim();
    writeFilters();
    for (const entry of calls.values()) entry.row.hidden = !matchesFilters(entry.summary);
    updateCounts();
    if (lastStats) renderStats(lastStats);
    if (lastTimeline) renderCharts(lastTimeline);
    if (lastLoad) renderBuyers(lastLoad);
  }

  // ---- calls over time --------------------------------------------------------------------

  const RANGES = { hour: "minute", day: "hour" };   // the range shown -> its bucket
  const BUCKET_MS = { minute: 60000, hour: 3600000 };
  const METRICS = [
    ["calls", "Calls"],
    ["connected", "Connected"],
    ["converted", "Converted"],
    ["duplicates_avoided", "Duplicates avoided"],
    ["dropped", "Dropped"],
  ];
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attributes, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  async function refreshTimeline(gen) {
    const request = ++timelineRequest;
    try {
      // The server's own clock places the range: the last hour by minute, the last day by hour.
      const body = await api(`/stats/timeline?bucket=${RANGES[range]}`);
      if (gen !== session || request !== timelineRequest) return;
      lastTimeline = body;
      renderCharts(body);
      ui.chartsUpdated.textContent = `updated ${clockTime(new Date().toISOString())}`;
      recovered("timeline");
    } catch (error) {
      if (request !== timelineRequest) return;
      failed(gen, error, "Could not load the calls over time", "timeline");
    }
  }

  function chooseRange(chosen) {
    range = chosen;
    ui.rangeHour.setAttribute("aria-pressed", String(chosen === "hour"));
    ui.rangeDay.setAttribute("aria-pressed", String(chosen === "day"));
    refreshTimeline(session);
  }

  /** A round top for the y axis: 1 to 5 as they are, then 1, 2 or 5 times a power of ten. */
  function axisTop(peak) {
    if (peak <= 5) return Math.max(1, Math.ceil(peak));
    const power = 10 ** Math.floor(Math.log10(peak));
    return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= peak);
  }

  function renderCharts(body) {
    const bucket = body.bucket === "hour" ? "hour" : "minute";
    const from = parseTime(body.from);
    const length = Math.max(0, Math.round((parseTime(body.to) - from) / BUCKET_MS[bucket]));
    const series = (body.data || []).filter((s) => !filters.campaign || s.campaign_id === filters.campaign);
    const total = (values) => values.reduce((sum, n) => sum + (Number(n) || 0), 0);
    const ranked = [...series].sort((a, b) => total(b.calls || []) - total(a.calls || []) ||
      nameOf("campaigns", a.campaign_id).localeCompare(nameOf("campaigns", b.campaign_id)));
    const cards = [];
    if (ranked.length > 1) {
      const sum = {};
      for (const [metric] of METRICS) {
        sum[metric] = Array.from({ length }, (_, i) => ranked.reduce((acc, s) => acc + (Number((s[metric] || [])[i]) || 0), 0));
      }
      cards.push(chart("all", "All campaigns", sum, from, bucket, length));
    }
    for (const s of ranked.slice(0, MAX_CAMPAIGN_CHARTS)) {
      cards.push(chart(s.campaign_id, nameOf("campaigns", s.campaign_id), s, from, bucket, length));
    }
    if (ranked.length > MAX_CAMPAIGN_CHARTS) {
      cards.push(el("p", { class: "muted", text: `${ranked.length - MAX_CAMPAIGN_CHARTS} more campaigns: choose one in the filters to see it.` }));
    }
    ui.charts.replaceChildren(...cards);
    show(ui.noCharts, ranked.length === 0);
  }

  /** One campaign's series as lines over the range, drawn as SVG (no library): each line
   * carries the values it was drawn from, each bucket a tooltip with its counts. */
  function chart(campaignId, title, values, from, bucket, length) {
    const [W, H, left, right, top, bottom] = [520, 150, 30, 8, 8, 20];
    const series = METRICS.map(([metric, label]) => {
      const list = Array.from({ length }, (_, i) => Number((values[metric] || [])[i]) || 0);
      return { metric, label, list, total: list.reduce((a, b) => a + b, 0) };
    });
    const yTop = axisTop(Math.max(0, ...series.flatMap((s) => s.list)));
    const step = (W - left - right) / Math.max(1, length - 1);
    const x = (i) => left + (length <= 1 ? (W - left - right) / 2 : i * step);
    const y = (v) => top + (1 - v / yTop) * (H - top - bottom);
    const at = (i) => new Date(from + i * BUCKET_MS[bucket]);
    const label = (i) => at(i).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    const summary = series.map((s) => `${s.label.toLowerCase()} ${s.total}`).join(", ");
    const drawing = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${summary}` },
      svg("line", { class: "axis", x1: left, x2: W - right, y1: y(0), y2: y(0) }),
      svg("line", { class: "axis", x1: left, x2: W - right, y1: y(yTop), y2: y(yTop) }),
      svg("text", { class: "tick", x: left - 4, y: y(0) + 3, "text-anchor": "end" }, "0"),
      svg("text", { class: "tick", x: left - 4, y: y(yTop) + 3, "text-anchor": "end" }, String(yTop)));
    if (length > 0) {
      for (const i of [...new Set([0, Math.floor((length - 1) / 2), length - 1])]) {
        const anchor = i === 0 ? "start" : (i === length - 1 ? "end" : "middle");
        drawing.append(svg("text", { class: "tick", x: x(i), y: H - 4, "text-anchor": anchor }, label(i)));
      }
    }
    for (let i = 0; i < length; i += 1) {
      const counts = series.map((s) => `${s.label.toLowerCase()} ${s.list[i]}`).join(", ");
      drawing.append(svg("rect", { class: "hover", x: x(i) - step / 2, y: top, width: step, height: H - top - bottom },
        svg("title", {}, `${label(i)}: ${counts}`)));
    }
    for (const s of series) {
      drawing.append(svg("polyline", {
        class: `m-${s.metric}`,
        "data-metric": s.metric,
        "data-values": s.list.join(","),
        points: s.list.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      }));
    }
    const legend = el("ul", { class: "legend" }, ...series.map((s) =>
      el("li", { class: `m-${s.metric}`, "data-metric": s.metric }, `${s.label} `, el("span", { class: "total", text: String(s.total) }))));
    const caption = `${title} · ${bucket === "hour" ? "per hour, last 24 hours" : "per minute, last hour"}`;
    return el("figure", { class: "chart", "data-campaign-id": campaignId, "data-from": new Date(from).toISOString(), "data-bucket": bucket }, el("figcaption", { text: caption }), drawing, legend);
  }

  // ---- buyers against their caps ----------------------------------------------------------

  async function refreshLoad(gen) {
    if (portal) return;
    const request = ++loadRequest;
    try {
      const body = await api("/load");
      if (gen !== session || request !== loadRequest) return;
      lastLoad = body.data || [];
      renderBuyers(lastLoad);
      ui.buyersUpdated.textContent = `updated ${clockTime(new Date().toISOString())}`;
      recovered("load");
    } catch (error) {
      if (request !== loadRequest) return;
      failed(gen, error, "Could not load the buyers' caps", "load");
    }
  }

  const CAP_PERIODS = [["hourly", "This hour"], ["daily", "Today"], ["monthly", "This month"], ["lifetime", "All time"]];

  /** A count against its cap as a bar: amber from 80 %, red when full. */
  function gauge(name, label, count, limit) {
    const capped = limit != null;
    const ratio = capped ? (limit > 0 ? Math.min(1, count / limit) : 1) : 0;
    const level = !capped ? "uncapped" : (count >= limit ? "full" : (ratio >= 0.8 ? "high" : "ok"));
    const text = capped ? `${count} / ${limit}` : `${count} · no cap`;
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(ratio * 100).toFixed(1)}%`;
    return el("div", { class: "gauge", "data-gauge": name, "data-level": level },
      el("span", { text: label }),
      el("div", {
        class: "track", role: "meter", "aria-label": label, "aria-valuemin": 0,
        "aria-valuemax": capped ? limit : Math.max(count, 1), "aria-valuenow": count, "aria-valuetext": text,
      }, fill),
      el("span", { class: "value", text }));
  }

  function renderBuyers(list) {
    const shown = list.filter((buyer) => !filters.buyer || buyer.buyer_id === filters.buyer);
    ui.buyers.replaceChildren(...shown.map((buyer) => {
      const concurrency = buyer.concurrency || {};
      const why = buyer.paused ? "paused" : (buyer.blocked ? `takes no call: ${words(buyer.blocked)}` : "");
      // Today's count always; the other periods where the buyer has a cap on them.
      const periods = CAP_PERIODS.filter(([period]) => period === "daily" || (buyer[period] && buyer[period].limit != null));
      return el("article", { class: "buyer", "data-buyer-id": buyer.buyer_id },
        el("h3", {}, el("span", { text: buyer.name || nameOf("buyers", buyer.buyer_id) }), why ? el("small", { text: why }) : null),
        gauge("live", "Live calls", Number(concurrency.live) || 0, concurrency.limit),
        ...periods.map(([period, label]) => {
          const view = buyer[period] || {};
          return gauge(period, label, Number(view.count) || 0, view.limit);
        }),
        el("p", { class: "counted", text: `Caps count ${buyer.counted_on === "converted" ? "conversions" : "connected calls"}.` }));
    }));
    show(ui.noBuyers, shown.length === 0);
  }

  // ---- the live calls table ---------------------------------------------------------------

  const COLUMNS = ["caller", "campaign", "buyer", "state", "time", "attempts", "started"];

  function createRow(summary) {
    const cells = {};
    const row = el("tr", { "data-call-sid": summary.call_sid, tabindex: 0 });
    for (const column of COLUMNS) {
      const cell = el("td", { class: column === "attempts" ? "num" : column });
      cells[column] = cell;
      row.append(cell);
    }
    // Oldest first, as the API lists them: before the first row that started later.
    const started = parseTime(summary.started_at);
    const after = [...ui.callsBody.rows].find((other) => {
      const shown = calls.get(other.dataset.callSid);
      return shown && parseTime(shown.summary.started_at) > started;
    });
    ui.callsBody.insertBefore(row, after || null);
    row.classList.add("fresh");
    row.addEventListener("animationend", () => row.classList.remove("fresh"), { once: true });
    return { row, cells, summary, seenAt: 0, removeTimer: null };
  }

  function stateText(summary) {
    if (summary.state !== "ended") return words(summary.state);
    const parts = ["ended"];
    if (summary.outcome) parts.push(words(summary.outcome) + (summary.drop_reason ? ` (${words(summary.drop_reason)})` : ""));
    if (summary.converted) parts.push("converted");
    return parts.join(" · ");
  }

  function renderRow(entry) {
    const s = entry.summary;
    const { row, cells } = entry;
    row.dataset.state = s.state || "";
    row.dataset.outcome = s.outcome || "";
    row.classList.toggle("ended", s.state === "ended");
    row.hidden = !matchesFilters(s);
    markSelected(entry);
    cells.caller.textContent = s.caller || "unknown";
    cells.caller.title = s.called ? `called ${s.called}` : "";
    cells.campaign.textContent = nameOf("campaigns", s.campaign_id);
    cells.campaign.title = s.entry_campaign_id && s.entry_campaign_id !== s.campaign_id
      ? `arrived on ${nameOf("campaigns", s.entry_campaign_id)}, redirected ${s.redirects || 0}×` : "";
    cells.buyer.textContent = nameOf("buyers", s.buyer_id) + (s.used_fallback ? " (fallback)" : "");
    cells.state.textContent = stateText(s);
    const flags = [];
    if (s.duplicates_avoided) flags.push(`${s.duplicates_avoided} duplicate buyer(s) avoided`);
    if (s.duplicate) flags.push("a duplicate for this buyer");
    cells.state.title = flags.join("; ");
    cells.attempts.textContent = String(s.attempts ?? "");
    cells.started.textContent = clockTime(s.started_at);
    cells.started.title = fullTime(s.started_at);
    renderTime(entry);
  }

  function renderTime(entry) {
    const s = entry.summary;
    if (s.state === "ended") {
      entry.cells.time.textContent = `took ${duration(parseTime(s.ended_at || s.state_changed_at) - parseTime(s.started_at))}`;
    } else {
      entry.cells.time.textContent = duration(serverNow() - parseTime(s.state_changed_at));
    }
  }

  function tick() {
    for (const entry of calls.values()) renderTime(entry);
  }

  function updateCounts() {
    let live = 0;
    let shown = 0;
    for (const entry of calls.values()) {
      if (entry.summary.state !== "ended") live += 1;
      if (!entry.row.hidden) shown += 1;
    }
    ui.liveCount.textContent = `(${live})`;
    const filtered = filtering();
    ui.filterSummary.textContent = filtered ? `${shown} of ${calls.size} calls shown` : "";
    ui.noCalls.textContent = filtered && calls.size > 0 ? "No live calls match the filters." : "No live calls.";
    show(ui.noCalls, shown === 0);
  }

  /** A call as the stream or the API tells it: shown, updated, or ignored if older than ours. */
  function applySummary(gen, summary) {
    if (gen !== session || !summary || typeof summary.call_sid !== "string") return;
    const sid = summary.call_sid;
    const version = Number(summary.version) || 0;
    let entry = calls.get(sid);
    if (entry && version < (Number(entry.summary.version) || 0)) return;
    if (!entry) {
      // Taken off the table once ended: a late callback still bumps its version, but it stays off.
      const removed = gone.get(sid);
      if (removed) {
        removed.version = Math.max(removed.version, version);
        return;
      }
    }
    const isNew = !entry;
    const wasLive = entry ? entry.summary.state !== "ended" : false;
    const wasState = entry ? entry.summary.state : null;
    if (isNew) entry = createRow(summary);
    entry.summary = summary;
    entry.seenAt = Date.now();
    calls.set(sid, entry);
    renderRow(entry);
    if (summary.state === "ended") {
      if (!entry.removeTimer) entry.removeTimer = setTimeout(() => removeCall(sid), ENDED_LINGER_MS);
      if (wasLive || isNew) scheduleStats(gen);
    } else {
      clearTimeout(entry.removeTimer);
      entry.removeTimer = null;
      if (isNew || wasState !== summary.state) scheduleStats(gen);
    }
    updateCounts();
    learnNames(gen, summary);
    if (sid === selectedSid) schedulePanel(gen);
  }

  function removeCall(sid) {
    const entry = calls.get(sid);
    if (!entry) return;
    clearTimeout(entry.removeTimer);
    entry.row.remove();
    calls.delete(sid);
    gone.set(sid, { version: Number(entry.summary.version) || 0, at: Date.now() });
    updateCounts();
  }

  function pruneGone() {
    const old = Date.now() - 10 * 60000;
    for (const [sid, removed] of gone) if (removed.at < old) gone.delete(sid);
  }

  /** The live list from the API: what the stream may have missed while it was down. */
  async function resync(gen) {
    const asked = Date.now();
    try {
      const body = await api("/calls/live");
      if (gen !== session) return;
      const answered = Date.now();
      const at = parseTime(body.at);
      if (Number.isFinite(at)) clockOffset = at - (asked + answered) / 2;
      const listed = new Set();
      for (const summary of body.data || []) {
        listed.add(summary.call_sid);
        applySummary(gen, summary);
      }
      // Live here, not listed there, and not heard of since we asked: it ended meanwhile. (Not
      // when the list was cut short: an unlisted call may just be beyond its end.)
      if (!body.truncated) {
        for (const [sid, entry] of calls) {
          if (entry.summary.state !== "ended" && !listed.has(sid) && entry.seenAt < asked) finishMissed(gen, sid);
        }
      }
      recovered("live");
      tick();
    } catch (error) {
      failed(gen, error, "Could not load the live calls", "live");
    }
  }

  /** Reads how a call ended. (The stream may tell of a change a moment before the store has
   * it: a call the store does not know yet, or still knows as live, stays as it is.) */
  async function finishMissed(gen, sid) {
    try {
      applySummary(gen, await api(`/calls/${encodeURIComponent(sid)}`));
    } catch (error) {
      if (error instanceof Unauthorized) failed(gen, error, "");
    }
  }

  // ---- the event stream -------------------------------------------------------------------

  /** `/events` read with fetch (EventSource cannot send a bearer token), reconnecting with backoff. */
  async function stream(gen) {
    let delay = BACKOFF_MIN_MS;
    while (gen === session) {
      const controller = new AbortController();
      streamAbort = controller;
      // Silence this long, from the request on (headers that never come included): a dead stream.
      let watchdog = null;
      const arm = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(), STREAM_IDLE_MS);
      };
      arm();
      try {
        const response = await fetch(`${API}/events`, {
          headers: authHeaders("text/event-stream"),
          cache: "no-store",
          signal: controller.signal,
        });
        if (response.status === 401) throw new Unauthorized(await errorMessage(response));
        if (!response.ok || !response.body) throw new HttpError(response.status, await errorMessage(response));
        if (gen !== session) return;
        setConnection("live", "Live");
        resync(gen);
        // The backoff starts again once the stream is heard from, not on headers alone (which
        // a proxy may send for a stream that then fails at once).
        const heard = () => {
          delay = BACKOFF_MIN_MS;
        };
        await readEvents(response.body, arm, heard, (event) => {
          if (event.type !== "call") return;
          let summary;
          try {
            summary = JSON.parse(event.data);
          } catch {
            return;
          }
          applySummary(gen, summary);
        });
      } catch (error) {
        if (gen !== session) return;
        if (error instanceof Unauthorized) {
          failed(gen, error, "");
          return;
        }
      } finally {
        clearTimeout(watchdog);
        controller.abort();
      }
      if (gen !== session) return;
      setConnection("reconnecting", `Reconnecting (next try in ${Math.round(delay / 1000)} s)…`);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
    }
  }

  /** Server-sent events: `field: value` lines, a blank line ends an event, `:` lines are comments.
   * `arm` (re)starts the idle watchdog at every chunk; `heard` is told of each event or comment. */
  async function readEvents(body, arm, heard, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = [];
    let type = "";
    let id = "";
    const line = (text) => {
      if (text === "") {
        if (data.length > 0) {
          heard();
          onEvent({ type: type || "message", data: data.join("\n"), id });
        }
        data = [];
        type = "";
        return;
      }
      if (text.startsWith(":")) {
        heard();
        return;
      }
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id") id = value;
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        let text = buffer + decoder.decode(value, { stream: true });
        // A trailing CR may be the first half of CRLF: keep it for the next chunk.
        let carry = "";
        if (text.endsWith("\r")) {
          carry = "\r";
          text = text.slice(0, -1);
        }
        const lines = text.split(/\r\n|\r|\n/);
        buffer = lines.pop() + carry;
        for (const each of lines) line(each);
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // ---- one call's details -----------------------------------------------------------------

  /** The row of the call shown in the panel is marked, for the eye and for assistive technology. */
  function markSelected(entry) {
    const selected = entry.summary.call_sid === selectedSid;
    entry.row.classList.toggle("selected", selected);
    entry.row.setAttribute("aria-selected", String(selected));
  }

  /** The panel's status is a polite live region: it changes (and is read out) when the panel
   * opens and when the call's state changes, not at each refresh. */
  function panelStatus(text) {
    if (ui.panelStatus.textContent !== text) ui.panelStatus.textContent = text;
  }

  function openPanel(sid) {
    selectedSid = sid;
    panelRequest += 1;
    for (const entry of calls.values()) markSelected(entry);
    const entry = calls.get(sid);
    ui.panelTitle.textContent = `Call from ${entry ? entry.summary.caller || "unknown" : sid}`;
    panelStatus("Loading…");
    ui.panelUpdated.textContent = "";
    ui.panelSummary.replaceChildren();
    ui.panelDials.replaceChildren();
    ui.timeline.replaceChildren();
    pingShown = { sid: null, ping: null };
    fillPing(null);
    show(ui.panel, true);
    ui.panel.scrollTop = 0;
    ui.panelClose.focus();
    loadPanel(session, sid);
  }

  function closePanel() {
    const sid = selectedSid;
    selectedSid = null;
    panelRequest += 1;
    clearTimeout(panelTimer);
    panelTimer = null;
    show(ui.panel, false);
    ui.panelStatus.textContent = "";
    for (const entry of calls.values()) markSelected(entry);
    const entry = sid && calls.get(sid);
    if (entry) entry.row.focus();
  }

  function schedulePanel(gen) {
    clearTimeout(panelTimer);
    panelTimer = setTimeout(() => {
      panelTimer = null;
      if (selectedSid) loadPanel(gen, selectedSid);
    }, 500);
  }

  async function loadPanel(gen, sid) {
    const request = ++panelRequest;
    const current = () => gen === session && sid === selectedSid && request === panelRequest;
    try {
      const call = await api(`/calls/${encodeURIComponent(sid)}`);
      if (!current()) return;
      const ping = await winningPing(call);
      if (!current()) return;
      renderPanel(call, ping);
      panelStatus(`State: ${stateText(call)}`);
      ui.panelUpdated.textContent = `As of ${clockTime(new Date().toISOString())}`;
    } catch (error) {
      if (!current()) return;
      if (error instanceof Unauthorized) {
        failed(gen, error, "");
        return;
      }
      panelStatus(`Could not load the call: ${error.message}`);
    }
  }

  /** The RTB ping whose reservation the call claimed, if it claimed one: read once per call
   * (a reservation, once claimed, does not change). */
  async function winningPing(call) {
    if (portal) return null;
    const claimed = (call.timeline || []).find((entry) => entry.kind === "reservation_claimed");
    if (!claimed) return null;
    if (pingShown.sid === call.call_sid) return pingShown.ping;
    let ping = null;
    try {
      const body = await api(`/rtb?caller=${encodeURIComponent(call.caller || "")}&limit=100`);
      const pings = (body.data || []).filter((p) => p.reservation && p.reservation.uuid === claimed.reservation);
      ping = pings.find((p) => !p.cached) || pings[0] || null;
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      // The call's story reads without it.
    }
    pingShown = { sid: call.call_sid, ping };
    return ping;
  }

  /** Redraws the panel, keeping what the reader had opened, scrolled to and focused on. */
  function renderPanel(call, ping) {
    const scroll = ui.panel.scrollTop;
    const entries = [...ui.timeline.children];
    const opened = new Set();
    entries.forEach((li, index) => {
      if ([...li.querySelectorAll("details")].some((details) => details.open)) opened.add(index);
    });
    const focused = entries.findIndex((li) => li.contains(document.activeElement));

    fillPanel(call);
    fillPing(ping);

    const redrawn = [...ui.timeline.children];
    for (const index of opened) {
      for (const details of redrawn[index] ? redrawn[index].querySelectorAll("details") : []) details.open = true;
    }
    const summary = focused >= 0 && redrawn[focused] && redrawn[focused].querySelector("summary");
    if (summary) summary.focus({ preventScroll: true });
    ui.panel.scrollTop = scroll;
  }

  /** The ping's publisher and every parameter it sent (the publisher's tags): as text, they
   * are the publisher's words. */
  function fillPing(ping) {
    show(ui.panelPingTitle, Boolean(ping));
    show(ui.panelPing, Boolean(ping));
    if (!ping) {
      ui.panelPing.replaceChildren();
      return;
    }
    const rows = [
      ["Received", fullTime(ping.received_at)],
      ["Publisher", ping.publisher_id ? nameOf("publishers", ping.publisher_id) : null],
      ...Object.entries(ping.request || {}).filter(([name]) => name !== "caller_number" && name !== "publisher_id"),
    ];
    ui.panelPing.replaceChildren(...rows
      .filter(([, value]) => value != null && value !== "")
      .flatMap(([label, value]) => [el("dt", { text: String(label) }), el("dd", { "data-tag": label, text: String(value) })]));
  }

  /** What the provider's caller-name lookup said (`CallerName`), if it was asked. */
  function callerName(call) {
    const first = (call.timeline || []).find((entry) => entry.kind === "webhook" && entry.params && entry.params.CallerName);
    return first ? String(first.params.CallerName) : null;
  }

  function fillPanel(call) {
    ui.panelTitle.textContent = `Call from ${call.caller || "unknown"}`;
    const rows = [
      ["Call SID", call.call_sid],
      ["Caller", (call.caller || "unknown") + (call.caller_known === false ? " (not a phone number: not de-duplicated)" : "")],
      ["Caller name", callerName(call)],
      ["Called", call.called],
      ["Caller's state", call.caller_state],
      ["Campaign", nameOf("campaigns", call.campaign_id)],
      ["Entered on", call.entry_campaign_id && call.entry_campaign_id !== call.campaign_id ? nameOf("campaigns", call.entry_campaign_id) : null],
      ["Campaigns visited", (call.campaigns_visited || []).length > 1
        ? call.campaigns_visited.map((id) => nameOf("campaigns", id)).join(" → ") : null],
      ["Buyer", nameOf("buyers", call.buyer_id)],
      ["Publisher", call.publisher_id ? nameOf("publishers", call.publisher_id) : null],
      ["Publisher payout", call.publisher_id ? publisherPayout(call) : null],
      ["State", words(call.state)],
      ["Outcome", call.outcome ? words(call.outcome) : null],
      ["Drop reason", call.drop_reason ? words(call.drop_reason) : null],
      ["Attempts", call.attempts],
      ["Converted", yesNo(call.converted)],
      ["Duplicate", call.duplicate == null ? null : yesNo(call.duplicate)],
      ["Duplicates avoided", call.duplicates_avoided],
      ["Fallback used", yesNo(call.used_fallback)],
      ["Redirects", call.redirects],
      ["Started", fullTime(call.started_at)],
      ["Ended", call.ended_at ? fullTime(call.ended_at) : null],
    ];
    ui.panelSummary.replaceChildren(...rows
      .filter(([, value]) => value != null && value !== "")
      .flatMap(([label, value]) => [el("dt", { text: label }), el("dd", { text: String(value) })]));

    const dials = call.dials || [];
    ui.panelDials.replaceChildren(...dials.map((dial) => {
      const parts = [
        `${nameOf("buyers", dial.buyer_id)}${dial.kind === "fallback" ? " (fallback)" : ""}`,
        dial.status ? words(dial.status) : (dial.answered_at ? "answered" : "ringing"),
      ];
      if (dial.connected_seconds != null) parts.push(`${dial.connected_seconds} s connected`);
      if (dial.converted) parts.push("converted");
      if (dial.duplicate != null) parts.push(dial.duplicate ? "duplicate" : "not a duplicate");
      if (dial.screening) parts.push(SCREENING_WORDS[dial.screening] || words(dial.screening));
      return el("li", { "data-attempt": dial.number }, parts.join(" · "));
    }));
    if (dials.length === 0) ui.panelDials.append(el("li", { class: "muted", text: "No buyer dialed." }));

    const recordings = call.recordings || [];
    ui.panelRecordings.replaceChildren(...recordings.map((recording) => {
      const label = [`Attempt ${recording.attempt}`, words(recording.status)];
      if (recording.duration_seconds != null) label.push(`${recording.duration_seconds} s`);
      if (recording.channels === 2) label.push("both sides");
      // Only a web address is a link: the provider's media URL (it may ask for the account's
      // credentials).
      const web = /^https?:\/\//i.test(String(recording.url || ""));
      const link = web
        ? el("a", { href: recording.url, target: "_blank", rel: "noopener noreferrer", text: "listen" })
        : el("span", { text: String(recording.url || "") });
      return el("li", { "data-recording": recording.sid }, `${label.join(" · ")} `, link);
    }));
    if (recordings.length === 0) ui.panelRecordings.append(el("li", { class: "muted", text: "Not recorded." }));

    const timeline = call.timeline || [];
    ui.timeline.replaceChildren(...timeline.map(renderEntry));
    if (timeline.length === 0) ui.timeline.append(el("li", { class: "muted", text: "Nothing recorded yet." }));
  }

  const KEY_PARAMS = ["CallStatus", "DialCallStatus", "DialCallDuration", "DialBridged", "CallDuration",
    "From", "FromState", "To", "ParentCallSid", "Digits", "RecordingStatus", "AnsweredBy", "ErrorCode"];

  const SCREENING_WORDS = {
    pending: "waiting for the buyer to press 1",
    accepted: "the buyer pressed 1",
    refused: "the buyer refused (another key)",
    no_key: "the buyer pressed nothing: not answered",
  };

  // What a skipped buyer's verdict means, where its name does not say it.
  const VERDICT_WORDS = {
    geo: "not licensed where the caller is",
    already_tried: "already tried",
  };

  function renderEntry(entry) {
    const kind = String(entry.kind || "unknown");
    return el("li", { "data-kind": kind },
      el("div", { class: "entry-head" },
        el("time", { datetime: entry.at, title: fullTime(entry.at), text: clockTime(entry.at, true) }),
        el("span", { class: "kind", text: words(kind) })),
      el("div", { class: "details" }, ...entryDetails(kind, entry)));
  }

  function entryDetails(kind, entry) {
    const buyer = (id) => nameOf("buyers", id);
    switch (kind) {
      case "webhook": {
        const params = entry.params || {};
        const key = KEY_PARAMS.filter((name) => params[name] != null).map((name) => `${name}=${params[name]}`);
        const all = Object.entries(params).map(([name, value]) => `${name}=${value}`).join("\n");
        return [
          el("code", { text: entry.endpoint || "" }),
          key.length ? el("div", { text: key.join(" · ") }) : null,
          all ? el("details", {}, el("summary", { text: `All parameters (${Object.keys(params).length})` }), el("pre", { text: all })) : null,
        ];
      }
      case "decision": {
        const action = entry.action || {};
        let what;
        if (action.type === "dial") what = `dial ${buyer(action.buyer)}${action.kind === "fallback" ? " (fallback)" : ""}`;
        else if (action.type === "redirect") what = `redirect to ${nameOf("campaigns", action.campaign)}`;
        else if (action.type === "end") what = `end the call: ${words(action.reason)}`;
        else what = words(action.type || "no action");
        const considered = entry.considered || [];
        return [
          el("div", {}, `${nameOf("campaigns", entry.campaign_id)}: ${what}`,
            entry.skip_duplicates === false ? el("span", { class: "muted", text: " (duplicates not checked)" }) : null,
            entry.caller_state ? el("span", { class: "muted", text: ` (caller in ${entry.caller_state})` }) : null),
          considered.length ? el("ul", { class: "verdicts", "aria-label": "Buyers considered" }, ...considered.map((c) => {
            const verdict = String(c.verdict || "");
            const label = `${c.name || buyer(c.buyer_id)}${c.fallback ? " (fallback)" : ""}: ${VERDICT_WORDS[verdict] || words(verdict)}`;
            const state = verdict === "chosen" ? "chosen" : (verdict === "eligible" ? "eligible" : "skipped");
            return el("li", { class: state, title: c.priority != null ? `priority ${c.priority}, weight ${c.weight}` : "fallback buyer", text: label });
          })) : el("div", { class: "muted", text: "No buyer considered." }),
        ];
      }
      case "reservation_claimed":
        return [`RTB reservation for ${buyer(entry.buyer_id)} claimed `, el("code", { text: shortId(entry.reservation) })];
      case "answered":
        return [`Attempt ${entry.attempt}: ${buyer(entry.buyer_id)} answered`];
      case "whispered":
        return [`Attempt ${entry.attempt}: ${buyer(entry.buyer_id)} picked up and hears the whisper` +
          (entry.press_1 ? ", then \u201cpress 1\u201d" : "")];
      case "screened":
        return [`Attempt ${entry.attempt}: ${SCREENING_WORDS[entry.screening] || words(entry.screening)}`];
      case "recorded": {
        const parts = [`Attempt ${entry.attempt}: recording ${words(entry.status)}`];
        if (entry.duration_seconds != null) parts.push(`${entry.duration_seconds} s`);
        return [parts.join(" · "), " ", el("code", { text: String(entry.recording_sid || "") })];
      }
      case "dial_ended": {
        const parts = [`Attempt ${entry.attempt}: ${buyer(entry.buyer_id)}`, words(entry.status)];
        if (entry.connected_seconds) parts.push(`${entry.connected_seconds} s connected`);
        if (entry.converted) parts.push("converted");
        if (entry.duplicate != null) parts.push(entry.duplicate ? "duplicate" : "not a duplicate");
        return [parts.join(" · ")];
      }
      case "publisher_settled":
        return [`${nameOf("publishers", entry.publisher_id)} earns ${money(entry.payout)}` +
          (entry.duplicate ? " (a repeat caller inside its window)" : (entry.duplicate == null ? " (its payout rule was not met)" : ""))];
      case "ended":
        return [`Outcome: ${words(entry.outcome)}${entry.drop_reason ? ` (${words(entry.drop_reason)})` : ""}`];
      case "ignored":
        return [`Ignored: ${entry.reason || ""}`];
      default: {
        const rest = { ...entry };
        delete rest.at;
        delete rest.kind;
        return [el("pre", { text: JSON.stringify(rest, null, 2) })];
      }
    }
  }

  // ---- wiring -----------------------------------------------------------------------------

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = ui.input.value.trim();
    if (!validToken(value)) {
      ui.tokenError.textContent = INVALID_TOKEN;
      show(ui.tokenError, true);
      return;
    }
    signIn(value);
  });

  ui.signOut.addEventListener("click", () => signOut(""));

  for (const control of [ui.filterCampaign, ui.filterBuyer, ui.filterState]) control.addEventListener("change", applyFilters);
  ui.filterCaller.addEventListener("input", applyFilters);
  // After the form's own reset has emptied the controls.
  ui.filters.addEventListener("reset", () => setTimeout(applyFilters, 0));
  ui.rangeHour.addEventListener("click", () => chooseRange("hour"));
  ui.rangeDay.addEventListener("click", () => chooseRange("day"));
  readFilters();

  ui.callsBody.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-call-sid]");
    if (row) openPanel(row.dataset.callSid);
  });
  ui.callsBody.addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-call-sid]");
    if (row && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      openPanel(row.dataset.callSid);
    }
  });
  ui.panelClose.addEventListener("click", closePanel);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !ui.panel.hidden) closePanel();
  });

  // A `#token=…` link opened in this tab again.
  window.addEventListener("hashchange", () => {
    const link = takeTokenFromFragment();
    if (link && link.value !== token) signIn(link.value);
  });

  const link = takeTokenFromFragment();
  const stored = readStoredToken();
  if (link) signIn(link.value);
  else if (stored) signIn(stored);
  else signOut("");
})();
