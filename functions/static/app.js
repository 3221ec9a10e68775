// barrage page. Text from the network is only ever assigned with textContent.
"use strict";

(function () {
  const WAITING_MAX = 256; // barrages waiting for room on the stage; beyond this the oldest are skipped
  const MAX_WAIT_MS = 4000; // a barrage that waited longer than this is skipped, not shown late
  const CROSS_MS = 7000; // time for a barrage to cross the stage, whatever its width
  const GAP_PX = 28; // space between consecutive barrages in a lane
  // A lane takes a barrage at most this often, however short the text: so each lane holds at most
  // CROSS_MS / MIN_LANE_MS + 2 at once, and the element pool, sized from that, never runs out
  // before the lanes do (a fixed pool of 160 did, for the load run's "666": 12 lanes x 19).
  const MIN_LANE_MS = 250;
  const PER_LANE = Math.ceil(CROSS_MS / MIN_LANE_MS) + 2;
  const MIN_LANES = 12;
  const POLL_MS = 500; // polling interval when SSE is unavailable (<= 1 s)
  const SSE_RETRY_MS = 30000; // after falling back to polling, try SSE again this often
  const SEEN_MAX = 5000;
  const LATENCY_SAMPLES = 2000;
  const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const COLOUR_RE = /^#[0-9a-fA-F]{6}$/;

  const $ = (id) => document.getElementById(id);
  // The server says whether it streams here (FC's built-in runtimes cannot): no SSE attempt where it would fail.
  const streamMeta = document.querySelector('meta[name="barrage-stream"]');
  const STREAMS_OFFERED = !streamMeta || streamMeta.getAttribute("content") !== "off";
  const stage = $("stage");
  const roomSelect = $("room");
  const transportBadge = $("transport");

  const state = {
    room: "lobby",
    cursor: null,
    generation: 0, // bumps on room change so late answers for the old room are ignored
    es: null,
    pollTimer: null,
    sseRetryTimer: null,
    sent: 0,
    received: 0,
    shown: 0,
    skipped: 0,
    shownTimes: [], // timestamps of recent shows, for shown/s
    latencies: [], // ring of send-to-shown latencies (ms)
    latencyNext: 0,
  };

  // -- de-duplication (SSE reconnects and polling fallbacks may overlap) ---------------
  const seen = new Set();
  const seenOrder = [];
  function firstSight(id) {
    if (seen.has(id)) return false;
    seen.add(id);
    seenOrder.push(id);
    if (seenOrder.length > SEEN_MAX) seen.delete(seenOrder.shift());
    return true;
  }

  // -- the stage: lanes, queues, a pool of elements ----------------------------------
  const pool = [];
  let created = 0;
  let onScreen = 0;
  let laneCount = MIN_LANES;
  const laneFreeAt = []; // per lane, when the last barrage put there has left room behind it
  const waiting = []; // barrages not on the stage yet, oldest first

  function ensureLanes(n) {
    while (laneFreeAt.length < n) laneFreeAt.push(0);
    laneCount = Math.max(laneCount, n);
  }
  ensureLanes(MIN_LANES);

  // The barrage's own lane (the processor placed it there) if it has room, else the nearest lane that has.
  function laneFor(lane, now) {
    if (now >= laneFreeAt[lane]) return lane;
    for (let d = 1; d < laneCount; d += 1) {
      if (lane + d < laneCount && now >= laneFreeAt[lane + d]) return lane + d;
      if (lane - d >= 0 && now >= laneFreeAt[lane - d]) return lane - d;
    }
    return -1;
  }

  function takeElement() {
    if (pool.length) return pool.pop();
    if (created >= laneCount * PER_LANE) return null;
    created += 1;
    const el = document.createElement("span");
    el.className = "barrage idle";
    stage.appendChild(el);
    return el;
  }

  function releaseElement(el) {
    el.classList.add("idle");
    el.textContent = "";
    onScreen -= 1;
    pool.push(el);
  }

  function enqueue(item, backlog) {
    const lane = Number.isInteger(item.lane) && item.lane >= 0 && item.lane < 64 ? item.lane : 0;
    ensureLanes(lane + 1);
    waiting.push({ item: item, backlog: backlog, lane: lane, queuedAt: performance.now() });
    if (waiting.length > WAITING_MAX) {
      state.skipped += waiting.length - WAITING_MAX;
      waiting.splice(0, waiting.length - WAITING_MAX);
    }
  }

  // The stage's size, kept from a ResizeObserver: reading it per launch would force a layout.
  let stageWidth = stage.clientWidth;
  let stageHeight = stage.clientHeight;
  if (window.ResizeObserver) {
    new ResizeObserver((entries) => {
      const box = entries[entries.length - 1].contentRect;
      stageWidth = box.width;
      stageHeight = box.height;
    }).observe(stage);
  }

  // Puts a barrage's text and place on an element: DOM writes only, nothing is measured here.
  function prepare(el, item, lane) {
    const laneHeight = stageHeight / laneCount;
    el.textContent = String(item.text);
    el.title = String(item.user || "");
    el.dataset.id = String(item.id);
    el.style.color = COLOUR_RE.test(item.colour) ? item.colour : "#ffffff";
    el.style.top = Math.round(lane * laneHeight + Math.max(0, (laneHeight - 28) / 2)) + "px";
    el.style.fontSize = Math.max(14, Math.min(24, Math.floor(laneHeight * 0.62))) + "px";
    el.classList.remove("idle");
    onScreen += 1;
  }

  // Starts the barrages prepared in this frame. Their widths are read together, after every write,
  // so a frame costs one layout however many it launches (a read per launch costs one each).
  function start(launching, now) {
    for (const launch of launching) launch.textWidth = launch.el.offsetWidth;
    const width = stageWidth;
    const speed = width / CROSS_MS; // px per ms
    for (const launch of launching) {
      const el = launch.el;
      const item = launch.entry.item;
      const textWidth = launch.textWidth;
      const animation = el.animate(
        [{ transform: "translate3d(" + width + "px,0,0)" }, { transform: "translate3d(" + -textWidth + "px,0,0)" }],
        { duration: (width + textWidth) / speed, easing: "linear" }
      );
      animation.onfinish = () => releaseElement(el);
      animation.oncancel = () => releaseElement(el);
      laneFreeAt[launch.lane] = now + Math.max((textWidth + GAP_PX) / speed, MIN_LANE_MS);
      state.shown += 1;
      state.shownTimes.push(now);
      if (!launch.entry.backlog && Number.isFinite(item.sent_at)) {
        // Shown: when the animation started playing, i.e. the first frame that has it on screen
        // (its startTime, on the document timeline: ms since timeOrigin), learnt once it is ready.
        const sentAt = item.sent_at;
        animation.ready.then(() => {
          const started = animation.startTime;
          recordLatency((typeof started === "number" ? performance.timeOrigin + started : Date.now()) - sentAt);
        }, () => {});
      }
    }
  }

  function recordLatency(ms) {
    if (ms < 0) ms = 0; // clock skew between server and browser
    if (state.latencies.length < LATENCY_SAMPLES) state.latencies.push(ms);
    else state.latencies[state.latencyNext] = ms;
    state.latencyNext = (state.latencyNext + 1) % LATENCY_SAMPLES;
  }

  function frame(now) {
    let stale = 0;
    while (stale < waiting.length && now - waiting[stale].queuedAt > MAX_WAIT_MS) stale += 1;
    if (stale) {
      waiting.splice(0, stale);
      state.skipped += stale;
    }
    // Newest first, and the stage never goes back in time: when more arrive than it has room for,
    // the newest go on screen and the live barrages older than them are skipped (overtaken), so what
    // is shown is what is being sent now, not a backlog growing later and later. Below that (room
    // for all), every barrage is shown in its turn. The backlog a fresh page loads just waits.
    const launching = [];
    let i = waiting.length - 1;
    let launchedLive = false;
    for (; i >= 0; i -= 1) {
      const entry = waiting[i];
      const lane = laneFor(entry.lane, now);
      if (lane < 0) break; // every lane is full
      const el = takeElement();
      if (el === null) break; // pool exhausted: wait for elements to finish
      waiting.splice(i, 1);
      laneFreeAt[lane] = Infinity; // taken; start() says until when
      prepare(el, entry.item, lane);
      launching.push({ el: el, entry: entry, lane: lane, textWidth: 0 });
      if (!entry.backlog) launchedLive = true;
    }
    if (i >= 0 && launchedLive) {
      // waiting[0..i] are older than what was just shown and there is no room left for them.
      let kept = 0;
      for (let j = 0; j <= i; j += 1) {
        if (waiting[j].backlog) waiting[kept++] = waiting[j];
        else state.skipped += 1;
      }
      waiting.splice(kept, i + 1 - kept);
    }
    if (launching.length) start(launching, now);
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  function receive(items, backlog) {
    for (const item of items) {
      if (!item || typeof item.id !== "string" || !firstSight(item.id)) continue;
      if (item.room !== state.room) continue;
      state.received += 1;
      enqueue(item, backlog);
    }
  }

  // -- counters ------------------------------------------------------------------------
  function percentile(sorted, p) {
    if (!sorted.length) return null;
    return sorted[Math.min(sorted.length, Math.max(1, Math.ceil(p * sorted.length))) - 1];
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    return (ms < 10 ? ms.toFixed(2) : String(Math.round(ms))) + " ms";
  }
  function renderCounters() {
    const now = performance.now();
    while (state.shownTimes.length && now - state.shownTimes[0] > 1000) state.shownTimes.shift();
    const sorted = state.latencies.slice().sort((a, b) => a - b);
    $("c-sent").textContent = String(state.sent);
    $("c-received").textContent = String(state.received);
    $("c-shown").textContent = String(state.shown);
    $("c-rate").textContent = String(state.shownTimes.length);
    $("c-skipped").textContent = String(state.skipped);
    $("c-p50").textContent = fmtMs(percentile(sorted, 0.5));
    $("c-p99").textContent = fmtMs(percentile(sorted, 0.99));
  }
  setInterval(renderCounters, 250);

  // -- receiving: SSE when it works, polling otherwise ----------------------------------
  function setTransport(mode) {
    transportBadge.textContent = mode === "sse" ? "live (SSE)" : mode === "polling" ? "polling" : "connecting…";
    transportBadge.className = "transport" + (mode === "sse" ? " live" : mode === "polling" ? " polling" : "");
    transportBadge.dataset.mode = mode;
  }

  function stopTransport() {
    if (state.es) {
      state.es.close();
      state.es = null;
    }
    clearTimeout(state.pollTimer);
    clearTimeout(state.sseRetryTimer);
    state.pollTimer = null;
    state.sseRetryTimer = null;
  }

  function barragesUrl(params) {
    const query = new URLSearchParams(params);
    return "/api/barrages?" + query.toString();
  }

  async function connect() {
    stopTransport();
    const generation = ++state.generation;
    setTransport("connecting");
    try {
      // Start with the newest few so a fresh page is not empty; their latency is not counted.
      const response = await fetch(barragesUrl({ room: state.room, limit: "20" }));
      if (!response.ok) throw new Error("HTTP " + response.status);
      const page = await response.json();
      if (generation !== state.generation) return;
      state.cursor = page.cursor;
      receive(page.items, true);
    } catch (err) {
      if (generation !== state.generation) return;
      state.pollTimer = setTimeout(connect, 1000);
      return;
    }
    if (STREAMS_OFFERED && window.EventSource) openStream(generation);
    else startPolling(generation);
  }

  function openStream(generation) {
    const url = "/api/stream?" + new URLSearchParams({ room: state.room, since: state.cursor }).toString();
    const es = new EventSource(url);
    state.es = es;
    es.onopen = () => {
      if (generation === state.generation) setTransport("sse");
    };
    es.onmessage = (event) => {
      if (generation !== state.generation) return;
      const page = JSON.parse(event.data);
      if (typeof page.cursor === "string") state.cursor = page.cursor;
      receive(page.items || [], false);
    };
    es.onerror = () => {
      // CONNECTING means the browser retries by itself (end of a stream's lifetime).
      // CLOSED means it gave up (503: too many streams, or no SSE here): poll instead.
      if (es.readyState === EventSource.CLOSED && generation === state.generation) {
        es.close();
        state.es = null;
        startPolling(generation);
        state.sseRetryTimer = setTimeout(() => {
          if (generation !== state.generation) return;
          clearTimeout(state.pollTimer);
          state.pollTimer = null;
          openStream(generation);
        }, SSE_RETRY_MS);
      }
    };
  }

  function startPolling(generation) {
    setTransport("polling");
    const poll = async () => {
      let delay = POLL_MS;
      try {
        const response = await fetch(barragesUrl({ room: state.room, since: state.cursor, limit: "500" }));
        if (generation !== state.generation || state.es) return;
        if (response.ok) {
          const page = await response.json();
          if (generation !== state.generation || state.es) return;
          state.cursor = page.cursor;
          receive(page.items, false);
          if (page.items.length === 500) delay = 0; // more are waiting
        } else {
          delay = 1000;
        }
      } catch (err) {
        delay = 1000;
      }
      if (generation === state.generation && !state.es) state.pollTimer = setTimeout(poll, delay);
    };
    state.pollTimer = setTimeout(poll, 0);
  }

  // -- rooms ----------------------------------------------------------------------------
  function chooseRoom(room) {
    state.room = room;
    waiting.length = 0;
    const url = new URL(window.location.href);
    url.searchParams.set("room", room);
    window.history.replaceState(null, "", url.toString());
    connect();
  }

  const fromUrl = new URLSearchParams(window.location.search).get("room");
  if (fromUrl && ID_RE.test(fromUrl)) {
    if (![...roomSelect.options].some((o) => o.value === fromUrl)) {
      const option = document.createElement("option");
      option.value = fromUrl;
      option.textContent = fromUrl;
      roomSelect.appendChild(option);
    }
    roomSelect.value = fromUrl;
  }
  roomSelect.addEventListener("change", () => chooseRoom(roomSelect.value));

  // -- sending one ----------------------------------------------------------------------
  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
    return { response: response, payload: payload };
  }

  function showStatus(id, message, isError) {
    const el = $(id);
    el.textContent = message;
    el.classList.toggle("error", Boolean(isError));
  }

  function errorMessage(payload, response) {
    if (payload && payload.error && typeof payload.error.message === "string") return payload.error.message;
    return "HTTP " + response.status;
  }

  $("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("text").value;
    const user = $("user").value.trim();
    const button = $("send");
    button.disabled = true;
    try {
      const { response, payload } = await postJson("/api/barrages", { room: state.room, user: user, text: text });
      if (response.status === 202) {
        state.sent += 1;
        $("text").value = "";
        showStatus("send-status", "sent", false);
      } else {
        showStatus("send-status", errorMessage(payload, response), true);
      }
    } catch (err) {
      showStatus("send-status", "network error: " + err, true);
    } finally {
      button.disabled = false;
      $("text").focus();
    }
  });

  // -- load runs ------------------------------------------------------------------------
  function setStat(id, value) {
    $(id).textContent = value;
  }

  function renderRun(run) {
    $("load-progress").value = run.progress;
    setStat("s-sent", String(run.sent));
    setStat("s-accepted", String(run.accepted));
    setStat("s-rejected", String(run.rejected));
    setStat("s-errors", String(run.errors));
    setStat("s-elapsed", run.elapsed.toFixed(1) + " s");
    setStat("s-throughput", Math.round(run.throughput) + "/s");
    setStat("s-p50", fmtMs(run.latency_ms.p50));
    setStat("s-p95", fmtMs(run.latency_ms.p95));
    setStat("s-p99", fmtMs(run.latency_ms.p99));
  }

  $("load-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("load-send");
    button.disabled = true;
    $("load-progress").value = 0;
    const body = {
      message: $("load-message").value,
      concurrency: Number.parseInt($("load-concurrency").value, 10),
      duration: Number($("load-duration").value),
      room: state.room,
    };
    let accepted = 0;
    try {
      const { response, payload } = await postJson("/api/load", body);
      if (response.status !== 202) {
        showStatus("load-status", errorMessage(payload, response), true);
        button.disabled = false;
        return;
      }
      showStatus("load-status", "running…", false);
      const form = $("load-form");
      form.dataset.run = payload.id;
      form.dataset.state = "running";
      const follow = async () => {
        let run = null;
        try {
          const r = await fetch("/api/load/" + encodeURIComponent(payload.id));
          if (r.ok) run = await r.json();
        } catch (err) {
          run = null;
        }
        if (run) {
          state.sent += run.accepted - accepted;
          accepted = run.accepted;
          renderRun(run);
          if (run.state === "finished") {
            form.dataset.state = "finished";
            showStatus("load-status", run.last_error ? "finished; last error: " + run.last_error : "finished", false);
            button.disabled = false;
            return;
          }
        }
        setTimeout(follow, 300);
      };
      renderRun(payload);
      setTimeout(follow, 300);
    } catch (err) {
      showStatus("load-status", "network error: " + err, true);
      button.disabled = false;
    }
  });

  chooseRoom(roomSelect.value);
})();
