#!/usr/bin/env node
// Voice that survives real networks, in headless Chromium against a running voice-server:
//
//   node tests/browser/resilience.mjs <server-url>
//
// Each user reaches the server through their own loopback TCP proxy (below), which the script
// can reset (every socket dropped with RST), make refuse new connections for N s, or black-hole
// (bytes stop in both directions, nothing closes). Chromium's setOffline does not close an open
// WebSocket, hence the proxy (shared/browser-testing.md).
//
// Alice creates a room, Bob and Carol are approved, Bob starts voice, Alice and Carol join (Carol
// last: she offers to both). Then, with no click by anyone:
//   (e) ICE restart: Carol restarts ICE on her link to Alice (the test hook calls the same code
//       as a `disconnected`/`failed` link); the same RTCPeerConnection reconnects; audio flows.
//   (a) drop: Carol's sockets reset and refused for 5 s; she is back in voice and audible.
//   (c) reload: Carol's page reloads; she is back in the room and in voice (same user).
//   (b) black hole of 40 s on Carol: her page notices (heartbeat) and the server drops her from
//       the others' participant lists (or marks her reconnecting); afterwards she is back. Needs
//       the server's `ping`: without it (UNKNOWN_ACTION) this part is reported SKIPPED.
//   (d) server restart: the script prints "@@RESTART" on stdout; the driver (browser_resilience.rs)
//       restarts the server on the same data dir and answers "@@RESTARTED <url>" on stdin; everyone
//       is back in voice in one voice room; the same id when the server resumes voice (seen by
//       participantReconnecting events during the earlier parts).
//   (f) sign out: Carol leaves voice for everyone, nothing of hers stays in localStorage, and a
//       reload starts at the name form.
//
// Prints figures and a final line "SUMMARY <json>" on stdout; exits 0 on success, 1 on failure.
// Every wait is bounded; the browser and the proxies are always closed.

import { chromium } from 'playwright-core';
import net from 'node:net';
import readline from 'node:readline';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const OVERALL_DEADLINE_MS = Number(process.env.RESILIENCE_DEADLINE_MS || 150_000);
const STEP_TIMEOUT_MS = 20_000;
const AUDIBLE = 0.01;
const BLACK_HOLE_MS = Number(process.env.RESILIENCE_BLACK_HOLE_MS || 40_000);

const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
  '--disable-gpu',
];

// ---------------------------------------------------------------------------------------------
// The per-user proxy

class Proxy {
  constructor(upstream) {
    this.upstream = upstream; // {host, port}
    this.mode = 'pass'; // 'pass' | 'refuse' | 'blackhole'
    this.pairs = new Set();
    this.server = net.createServer((c) => this.accept(c));
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port)));
  }

  accept(c) {
    if (this.mode === 'refuse') {
      c.resetAndDestroy();
      return;
    }
    const pair = { c, u: null };
    this.pairs.add(pair);
    const done = () => {
      this.pairs.delete(pair);
      c.destroy();
      if (pair.u) pair.u.destroy();
    };
    c.on('error', done);
    c.on('close', done);
    const u = net.connect(this.upstream.port, this.upstream.host);
    pair.u = u;
    u.on('error', done);
    u.on('close', done);
    // In a black hole bytes are dropped, not queued, and FIN is not passed on either.
    c.on('data', (d) => {
      if (this.mode !== 'blackhole') u.write(d);
    });
    u.on('data', (d) => {
      if (this.mode !== 'blackhole') c.write(d);
    });
    c.on('end', () => {
      if (this.mode !== 'blackhole') u.end();
    });
    u.on('end', () => {
      if (this.mode !== 'blackhole') c.end();
    });
  }

  /** Every open connection dropped with RST (the network went away). */
  reset() {
    for (const { c, u } of this.pairs) {
      c.resetAndDestroy();
      if (u) u.destroy();
    }
    this.pairs.clear();
  }

  close() {
    this.reset();
    this.server.close();
  }
}

// ---------------------------------------------------------------------------------------------

const started = Date.now();
const summary = { ok: false, steps: [], figures: {}, skipped: {} };
const users = [];
let currentStep = 'start';
class CheckFailed extends Error {}
const fail = (m) => {
  throw new CheckFailed(m);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  const r = await fn();
  summary.steps.push({ step: name, ms: Date.now() - t0 });
  console.error(`ok   ${name} (${Date.now() - t0} ms)`);
  return r;
}

async function waitIn(user, what, fn, arg, timeout = STEP_TIMEOUT_MS) {
  try {
    const handle = await user.page.waitForFunction(fn, arg, { timeout, polling: 100 });
    const v = await handle.jsonValue();
    await handle.dispose();
    return v;
  } catch (e) {
    if (e.name === 'TimeoutError' || /Timeout/.test(e.message)) fail(`${user.name}: timed out after ${timeout} ms waiting for ${what}`);
    throw e;
  }
}

async function newUser(browser, name, upstream) {
  const proxy = new Proxy(upstream);
  const port = await proxy.listen();
  const url = `http://127.0.0.1:${port}/`;
  const context = await browser.newContext();
  await context.grantPermissions(['microphone'], { origin: `http://127.0.0.1:${port}` });
  const page = await context.newPage();
  const user = { name, proxy, url, context, page, console: [], errors: [] };
  page.on('console', (m) => {
    user.console.push(`${((Date.now() - started) / 1000).toFixed(1)} ${m.type()}: ${m.text()}`);
    if (user.console.length > 400) user.console.shift();
  });
  page.on('pageerror', (e) => user.errors.push(`pageerror: ${e.message}`));
  users.push(user);
  return user;
}

async function login(user) {
  await user.page.goto(user.url, { waitUntil: 'load' });
  await user.page.getByLabel('Display name').fill(user.name);
  await user.page.getByRole('button', { name: 'Connect' }).click();
  await waitIn(user, 'connected', (n) => document.querySelector('#connection-status').textContent.includes(`Connected as ${n}`), user.name);
  user.id = await user.page.evaluate(() => window.voiceDebug.me().userId);
}

/** Max peak per remote peer over `ms` from the test's own analysers. */
async function measure(user, ms) {
  return user.page.evaluate(async (windowMs) => {
    const streams = window.voiceDebug.remoteStreams();
    const ctx = new AudioContext();
    await ctx.resume();
    const meters = Object.entries(streams).map(([userId, stream]) => {
      const an = ctx.createAnalyser();
      an.fftSize = 2048;
      ctx.createMediaStreamSource(stream).connect(an);
      return { userId, an, buf: new Float32Array(an.fftSize), peak: 0 };
    });
    const t0 = performance.now();
    while (performance.now() - t0 < windowMs) {
      for (const m of meters) {
        m.an.getFloatTimeDomainData(m.buf);
        for (let i = 0; i < m.buf.length; i++) m.peak = Math.max(m.peak, Math.abs(m.buf[i]));
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await ctx.close();
    return Object.fromEntries(meters.map((m) => [m.userId, m.peak]));
  }, ms);
}

/** Waits until every user of `group` is in voice, connected to and hearing every other one. */
async function waitAudible(group, timeout = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const ok = await Promise.all(
      group.map(async (u) => {
        const st = await u.page.evaluate(() => ({ inVoice: window.voiceDebug.inVoice(), phase: window.voiceDebug.voicePhase(), peers: window.voiceDebug.peers() }));
        if (!st.inVoice || st.phase !== 'connected') return false;
        const others = group.filter((o) => o !== u);
        if (!others.every((o) => st.peers.some((p) => p.userId === o.id && p.connectionState === 'connected' && p.hasRemoteAudio))) return false;
        const lv = await measure(u, 600);
        return others.every((o) => (lv[o.id] || 0) > AUDIBLE);
      }),
    );
    if (ok.every(Boolean)) return;
    if (Date.now() > deadline) {
      const st = await Promise.all(group.map((u) => u.page.evaluate(() => ({ conn: window.voiceDebug.conn(), phase: window.voiceDebug.voicePhase(), peers: window.voiceDebug.peers() }))));
      fail(`not everyone hears everyone within ${timeout} ms: ${JSON.stringify(st)}`);
    }
    await sleep(150);
  }
}

// ---------------------------------------------------------------------------------------------

async function run(browser, serverUrl) {
  const up = new URL(serverUrl);
  const upstream = { host: up.hostname, port: Number(up.port) };
  const [alice, bob, carol] = await Promise.all(['Alice', 'Bob', 'Carol'].map((n) => newUser(browser, n, upstream)));
  const group = [alice, bob, carol];
  const roomName = `Resilience ${new Date().toISOString().slice(11, 19)}`;

  await step('three users connect, each through their own proxy', () => Promise.all(group.map(login)));
  await step('Alice creates a room; Bob and Carol are approved', async () => {
    await alice.page.getByLabel('New room').fill(roomName);
    await alice.page.getByRole('button', { name: 'Create room' }).click();
    await waitIn(alice, 'the room open', (n) => document.querySelector('#room-title').textContent === n, roomName);
    for (const u of [bob, carol]) {
      const item = u.page.locator('#rooms li', { hasText: roomName });
      const deadline = Date.now() + STEP_TIMEOUT_MS;
      while (!(await item.count())) {
        if (Date.now() > deadline) fail(`${u.name}: the room never appeared`);
        await u.page.getByRole('button', { name: 'Refresh' }).click();
        await sleep(200);
      }
      await item.getByRole('button', { name: 'Request to join' }).click();
      const req = alice.page.locator('#requests li', { hasText: u.name });
      await req.waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
      await req.getByRole('button', { name: 'Approve' }).click();
      await waitIn(u, 'the room open', (n) => document.querySelector('#room-title').textContent === n, roomName);
    }
  });
  await step('Bob starts voice; Alice, then Carol join; everyone hears everyone', async () => {
    await bob.page.getByRole('button', { name: 'Start Voice Chat' }).click();
    await waitIn(bob, 'Bob in voice', () => window.voiceDebug.voicePhase() === 'connected');
    for (const u of [alice, carol]) {
      const join = u.page.getByRole('button', { name: 'Join Voice' });
      await join.waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
      await join.click();
      await waitIn(u, `${u.name} in voice`, () => window.voiceDebug.voicePhase() === 'connected');
    }
    await waitAudible(group);
  });

  // (e) ICE restart on the same peer connection.
  await step('(e) Carol restarts ICE on her link to Alice: same connection, audio flows', async () => {
    const before = await carol.page.evaluate(() => window.voiceDebug.linksCreated());
    const t0 = Date.now();
    const started = await carol.page.evaluate((id) => window.voiceDebug.restartIce(id), alice.id);
    if (!started) fail('the ICE restart did not start');
    await waitIn(carol, 'the ICE restart counted', () => window.voiceDebug.iceRestarts() >= 1);
    await waitIn(alice, 'Alice answered a renegotiation on the existing link', () => window.voiceDebug.log().some((l) => l.startsWith('Renegotiating the existing connection')));
    await waitAudible([alice, carol]);
    summary.figures.iceRestartToAudibleMs = Date.now() - t0;
    const after = await carol.page.evaluate(() => window.voiceDebug.linksCreated());
    if (after !== before) fail(`the ICE restart made ${after - before} new peer connection(s) instead of restarting the existing one`);
  });

  // (a) a 5 s drop.
  await step('(a) Carol\'s connection drops for 5 s: back in voice without a click, audible', async () => {
    carol.proxy.mode = 'refuse';
    carol.proxy.reset();
    await waitIn(carol, 'the page to show reconnecting', () => window.voiceDebug.conn() === 'reconnecting' && document.querySelector('#voice-state').textContent.startsWith('Reconnecting'), undefined, 5000);
    await sleep(5000);
    carol.proxy.mode = 'pass';
    const t0 = Date.now();
    await waitIn(carol, 'online again', () => window.voiceDebug.conn() === 'online');
    summary.figures.dropNetworkBackToOnlineMs = Date.now() - t0;
    await waitAudible(group);
    summary.figures.dropNetworkBackToAudibleMs = Date.now() - t0;
    console.log(`figure: 5 s drop, network back -> everyone audible again: ${summary.figures.dropNetworkBackToAudibleMs} ms`);
  });

  // (c) reload.
  await step('(c) Carol reloads the page: same user, back in the room and in voice', async () => {
    const t0 = Date.now();
    await carol.page.reload({ waitUntil: 'load' });
    await waitIn(carol, 'in voice after the reload', () => window.voiceDebug && window.voiceDebug.voicePhase() === 'connected');
    summary.figures.reloadToInVoiceMs = Date.now() - t0;
    const me = await carol.page.evaluate(() => window.voiceDebug.me().userId);
    if (me !== carol.id) fail(`after the reload Carol is a different user (${me}, was ${carol.id})`);
    const title = await carol.page.evaluate(() => document.querySelector('#room-title').textContent);
    if (title !== roomName) fail(`after the reload the room shown is "${title}"`);
    await waitAudible(group);
    summary.figures.reloadToAudibleMs = Date.now() - t0;
    console.log(`figure: reload -> in voice ${summary.figures.reloadToInVoiceMs} ms, -> audible ${summary.figures.reloadToAudibleMs} ms`);
  });

  // (b) a 40 s black hole.
  const ping = await alice.page.evaluate(() => window.voiceDebug.ping());
  // RESILIENCE_FORCE_BLACK_HOLE=1 runs it anyway (the page's side only) against an older server.
  const force = process.env.RESILIENCE_FORCE_BLACK_HOLE === '1';
  const serverPings = ping.code !== 'UNKNOWN_ACTION';
  if (!serverPings && !force) {
    summary.skipped.blackHole = 'the server has no `ping` action yet (UNKNOWN_ACTION), so it does not ping or time out silent connections';
    console.log(`SKIPPED: (b) black hole: ${summary.skipped.blackHole}`);
  } else {
    await step(`(b) Carol's connection is black-holed for ${BLACK_HOLE_MS / 1000} s: detected on both sides, then she is back`, async () => {
      carol.proxy.mode = 'blackhole';
      const t0 = Date.now();
      await waitIn(carol, 'her page to notice the dead server', () => window.voiceDebug.conn() === 'reconnecting', undefined, BLACK_HOLE_MS);
      summary.figures.blackHoleClientDetectMs = Date.now() - t0;
      if (serverPings) await waitIn(
        alice,
        'the server to drop Carol (or mark her reconnecting) in Alice\'s participant list',
        (id) => {
          const li = document.querySelector(`#participants li[data-user-id="${id}"]`);
          return !li || li.classList.contains('reconnecting');
        },
        carol.id,
        Math.max(1000, BLACK_HOLE_MS - (Date.now() - t0)),
      );
      if (serverPings) summary.figures.blackHoleServerDetectMs = Date.now() - t0;
      console.log(`figure: black hole detected by the page after ${summary.figures.blackHoleClientDetectMs} ms, by the server after ${serverPings ? `${summary.figures.blackHoleServerDetectMs} ms` : 'n/a (no ping on this server)'}`);
      await sleep(Math.max(0, BLACK_HOLE_MS - (Date.now() - t0)));
      carol.proxy.reset();
      carol.proxy.mode = 'pass';
      const t1 = Date.now();
      await waitAudible(group, 30_000);
      summary.figures.blackHoleEndToAudibleMs = Date.now() - t1;
    });
  }

  // (d) server restart.
  await step('(d) the server restarts mid-call: everyone back in voice, in one voice room', async () => {
    const before = await bob.page.evaluate(() => window.voiceDebug.voiceRoomId());
    process.stdout.write('@@RESTART\n');
    const line = await nextControlLine(60_000);
    const m = /^@@RESTARTED (\S+)/.exec(line || '');
    if (!m) fail(`the driver did not restart the server: ${JSON.stringify(line)}`);
    const t0 = Date.now();
    const nu = new URL(m[1]);
    for (const u of group) {
      u.proxy.upstream = { host: nu.hostname, port: Number(nu.port) };
    }
    await waitAudible(group, 40_000);
    summary.figures.restartToAudibleMs = Date.now() - t0;
    const ids = await Promise.all(group.map((u) => u.page.evaluate(() => window.voiceDebug.voiceRoomId())));
    if (new Set(ids).size !== 1) fail(`after the restart the users are in different voice rooms: ${ids}`);
    summary.figures.restartSameVoiceRoom = ids[0] === before;
    // A server with voice resume announced participantReconnecting during the drops above: then
    // the restart must keep the voice room too.
    const counts = await Promise.all(group.map((u) => u.page.evaluate(() => window.voiceDebug.eventCounts())));
    summary.serverResumesVoice = counts.some((c) => (c.participantReconnecting || 0) > 0);
    if (summary.serverResumesVoice && ids[0] !== before) fail(`the server resumes voice, yet after the restart everyone is in another voice room (${ids[0]}, was ${before})`);
    console.log(`figure: server restart -> everyone audible ${summary.figures.restartToAudibleMs} ms (same voice room: ${ids[0] === before})`);
  });

  await step('no page error; peer connections bounded and released', async () => {
    for (const u of group) {
      if (u.errors.length) fail(`${u.name}'s page had errors: ${u.errors.join('; ')}`);
      const d = await u.page.evaluate(() => ({ peers: window.voiceDebug.peers(), all: window.voiceDebug.allPeerConnections() }));
      if (d.peers.length !== 2) fail(`${u.name} has ${d.peers.length} live links, expected 2`);
      const live = d.all.filter((p) => p.connectionState !== 'closed');
      if (live.length > 2) fail(`${u.name} keeps ${live.length} peer connections open: ${JSON.stringify(live)}`);
    }
  });

  // (f) sign out forgets who and where we were (issue 12, "Reload": "A sign out clears it").
  await step('(f) Carol signs out: out of voice for everyone, nothing stored; a reload starts at the name form', async () => {
    await carol.page.locator('#sign-out').click();
    await waitIn(carol, 'the name form', () => !document.querySelector('#login').hidden && document.querySelector('#app').hidden);
    for (const u of [alice, bob]) await waitIn(u, 'Carol gone from the participants', (id) => !document.querySelector(`#participants li[data-user-id="${id}"]`), carol.id);
    const stored = await carol.page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('voiceChat.')));
    if (stored.length) fail(`after Sign out the page still stores ${stored.join(', ')}`);
    await carol.page.reload({ waitUntil: 'load' });
    await sleep(1500);
    const after = await carol.page.evaluate(() => ({ login: !document.querySelector('#login').hidden, me: window.voiceDebug.me(), inVoice: window.voiceDebug.inVoice() }));
    if (!after.login || after.me || after.inVoice) fail(`after Sign out and a reload the page did not start over: ${JSON.stringify(after)}`);
  });
}

// Control lines from the driver (stdin).
const controlLines = [];
let controlWaiter = null;
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (controlWaiter) {
    const w = controlWaiter;
    controlWaiter = null;
    w(l);
  } else controlLines.push(l);
});
function nextControlLine(timeout) {
  if (controlLines.length) return Promise.resolve(controlLines.shift());
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      controlWaiter = null;
      resolve(null);
    }, timeout);
    controlWaiter = (l) => {
      clearTimeout(t);
      resolve(l);
    };
  });
}

const url = process.argv[2];
if (!url) {
  console.error('usage: node resilience.mjs <server-url>');
  process.exit(2);
}
let browser = null;
let exitCode = 1;
const deadline = setTimeout(() => {
  console.error(`RESILIENCE FAILED: overall deadline of ${OVERALL_DEADLINE_MS} ms passed during "${currentStep}"`);
  summary.failedStep = currentStep;
  console.log(`SUMMARY ${JSON.stringify(summary)}`);
  for (const u of users) u.proxy.close();
  process.exit(1);
}, OVERALL_DEADLINE_MS);
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  await run(browser, url);
  summary.ok = true;
  exitCode = 0;
} catch (e) {
  summary.failedStep = currentStep;
  summary.error = e.message;
  console.error(`RESILIENCE FAILED at "${currentStep}": ${e instanceof CheckFailed ? e.message : e.stack || e}`);
  for (const u of users) {
    console.error(`--- ${u.name}: last console lines ---`);
    for (const l of u.console.slice(-40)) console.error(`  ${l}`);
    for (const l of u.errors) console.error(`  ${l}`);
  }
} finally {
  summary.totalMs = Date.now() - started;
  console.log(`SUMMARY ${JSON.stringify(summary)}`);
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(10_000)]);
  for (const u of users) u.proxy.close();
  clearTimeout(deadline);
}
process.exit(exitCode);
