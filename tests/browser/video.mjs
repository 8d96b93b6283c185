#!/usr/bin/env node
// Video and screen sharing in headless Chromium against a running voice-server (issue 17):
//
//   node tests/browser/video.mjs <server-url> [--mesh4]
//
// Alice creates a room, Bob and Carol join it and its voice chat (Alice hosts, so she answers
// both links and Bob answers Carol's: renegotiation is exercised from both sides of a link).
// Alice and Bob turn their cameras on, Carol stays audio-only: every page decodes every camera
// sent to it (inbound-rtp video framesDecoded growing), and no page created a new peer connection
// (one per pair). Carol shares her screen: it reaches Alice and Bob, shown large, frames decoding;
// she stops it as the browser's own "Stop sharing" does (the track ends); Bob shares and stops
// from the page's button: the share is gone everywhere. Alice turns her camera off: gone on the
// others. Everyone still hears everyone. With --mesh4, Dave joins and all four cameras run for a
// few seconds: bytes sent per second per page and the browser's CPU are printed for BENCHMARKS.md.
//
// Fake camera: --use-fake-device-for-media-stream; fake screen:
// --auto-select-desktop-capture-source="Entire screen" (docs in shared/browser-testing.md).
// Prints a JSON summary on stdout; exits 0 on success, 1 on failure, 2 on bad usage.

import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, CheckFailed, createRun, fail } from './pages.mjs';
import { readFileSync, readdirSync } from 'node:fs';

const OVERALL_DEADLINE_MS = Number(process.env.VIDEO_DEADLINE_MS || 100_000);
const STEP_TIMEOUT_MS = 15_000;
const AUDIBLE = 0.01;

// Camera and screen capture on top of the shared flags: no permission prompt, the fake screen.
const VIDEO_ARGS = [...CHROMIUM_ARGS, '--use-fake-ui-for-media-stream', '--auto-select-desktop-capture-source=Entire screen'];

function usage(msg) {
  console.error(`${msg}\nusage: node video.mjs <server-url> [--mesh4]`);
  process.exit(2);
}

const opts = { url: null, mesh4: false };
for (const a of process.argv.slice(2)) {
  if (a === '--mesh4') opts.mesh4 = true;
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else if (!opts.url) opts.url = a;
  else usage(`unexpected argument ${a}`);
}
if (!opts.url) usage('missing server URL');
try {
  opts.url = new URL(opts.url).toString();
} catch {
  usage(`not a URL: ${opts.url}`);
}

const summary = { ok: false, steps: [], video: {}, levels: {}, linksCreated: {}, timings: {} };
const harness = createRun({ summary, stepTimeoutMs: STEP_TIMEOUT_MS, permissions: ['microphone', 'camera'] });
const { users, started, step, waitIn, waitText, newUser, login, measure, nameById, named, waitMeshConnected, joinRoom, approve, joinVoice } = harness;

// ---------------------------------------------------------------------------------------------


/** framesDecoded of each video slot each peer sends `user`: { peerId: { camera, screen } }. */
async function framesDecoded(user) {
  return user.page.evaluate(async () => {
    const out = {};
    for (const p of window.voiceDebug.peers()) {
      const pc = window.voiceDebug.peerConnection(p.userId);
      const vts = pc.getTransceivers().filter((t) => t.receiver.track && t.receiver.track.kind === 'video');
      const row = {};
      for (const [i, slot] of ['camera', 'screen'].entries()) {
        if (!vts[i]) continue;
        const stats = await vts[i].receiver.getStats();
        for (const s of stats.values()) if (s.type === 'inbound-rtp' && s.kind === 'video') row[slot] = s.framesDecoded || 0;
      }
      out[p.userId] = row;
    }
    return out;
  });
}

/** Every `slot` video from `senders` decodes on `user`: framesDecoded grows within the deadline. */
async function expectDecoding(user, senders, slot, timeout = 12_000, tag = '') {
  const first = await framesDecoded(user);
  const t0 = Date.now();
  for (;;) {
    await user.page.waitForTimeout(500);
    const now = await framesDecoded(user);
    const stuck = senders.filter((s) => !((now[s.id] || {})[slot] > ((first[s.id] || {})[slot] || 0) + 5));
    if (!stuck.length) {
      summary.video[`${user.name}<-${slot}${tag}`] = Object.fromEntries(senders.map((s) => [s.name, now[s.id][slot]]));
      return;
    }
    if (Date.now() - t0 > timeout) fail(`${user.name} does not decode the ${slot} video of ${stuck.map((s) => s.name).join(', ')}: ${JSON.stringify(now)}`);
  }
}

/** `user` shows exactly the remote video keys `keys` (e.g. "<id>:camera"). */
async function expectTiles(user, keys, timeout = STEP_TIMEOUT_MS) {
  await waitIn(
    user,
    `video tiles ${JSON.stringify(keys.map((k) => k.replace(/^[^:]+/, (id) => nameById(id))))}`,
    (want) => {
      const v = window.voiceDebug.video();
      if (!v) return false;
      const remote = v.tiles.filter((t) => !t.key.startsWith('me:')).map((t) => t.key).sort();
      const stage = v.tiles.filter((t) => t.slot === 'screen').every((t) => t.inStage);
      return stage && JSON.stringify(remote) === JSON.stringify([...want].sort());
    },
    keys,
    timeout,
  );
}

async function click(user, name) {
  await user.page.getByRole('button', { name, exact: true }).click();
}

/** One peer connection per other participant, none made since `before`. */
async function expectSameLinks(group, before) {
  for (const u of group) {
    const n = await u.page.evaluate(() => ({ made: window.voiceDebug.linksCreated(), open: window.voiceDebug.peers().length }));
    if (n.made !== before[u.name]) fail(`${u.name} created ${n.made - before[u.name]} new peer connection(s) during video changes`);
    if (n.open !== group.length - 1) fail(`${u.name} has ${n.open} peer connections, not ${group.length - 1}`);
  }
}

async function hearsEveryone(group) {
  const results = await Promise.all(group.map((u) => measure(u, 1200)));
  group.forEach((u, i) => {
    summary.levels[u.name] = named(results[i]);
    for (const o of group.filter((x) => x !== u)) {
      const r = results[i][o.id];
      if (!r || !(r.peak > AUDIBLE)) fail(`${u.name} does not hear ${o.name} after the video changes: peak ${r && r.peak}`);
    }
  });
}

/** CPU seconds used so far by every descendant process of this node process (the browser). */
function childCpuSeconds() {
  const tick = 100; // USER_HZ on Linux
  const procs = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      procs.push({ pid: Number(d), ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / tick });
    } catch {
      /* gone */
    }
  }
  const mine = new Set([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs) if (!mine.has(p.pid) && mine.has(p.ppid)) mine.add(p.pid), (grew = true);
  }
  return procs.filter((p) => p.pid !== process.pid && mine.has(p.pid)).reduce((a, p) => a + p.cpu, 0);
}

async function bytesSent(user) {
  return user.page.evaluate(async () => {
    let video = 0;
    let audio = 0;
    for (const p of window.voiceDebug.peers()) {
      const stats = await window.voiceDebug.peerConnection(p.userId).getStats();
      for (const s of stats.values()) {
        if (s.type !== 'outbound-rtp') continue;
        if (s.kind === 'video') video += s.bytesSent || 0;
        else audio += s.bytesSent || 0;
      }
    }
    return { video, audio };
  });
}




async function run(browser, url) {
  const origin = new URL(url).origin;
  const roomName = `Video ${new Date().toISOString().slice(11, 19)}`;
  const [alice, bob, carol] = await step('open three contexts and connect', async () => {
    const us = await Promise.all(['Alice', 'Bob', 'Carol'].map((n) => newUser(browser, n, origin)));
    await Promise.all(us.map((u) => login(u, url)));
    return us;
  });
  await step('Alice creates a room; Bob and Carol are approved', async () => {
    await alice.page.getByLabel('New room').fill(roomName);
    await alice.page.getByRole('button', { name: 'Create room' }).click();
    await waitText(alice, '#room-title', roomName);
    await Promise.all([bob, carol].map((u) => joinRoom(u, roomName)));
    for (const u of [bob, carol]) await approve(alice, u, roomName);
  });
  const group = [alice, bob, carol];
  await step('Alice starts voice, Bob then Carol join: mesh connected', async () => {
    await click(alice, 'Start Voice Chat');
    await waitIn(alice, 'Alice in voice', () => window.voiceDebug.inVoice() && window.voiceDebug.grantCount() >= 1);
    await joinVoice(bob);
    await waitMeshConnected([alice, bob]);
    await joinVoice(carol);
    await waitMeshConnected(group);
  });
  const links = {};
  for (const u of group) links[u.name] = await u.page.evaluate(() => window.voiceDebug.linksCreated());
  summary.linksCreated.beforeVideo = { ...links };

  const tCam = Date.now();
  await step('Alice (answering side) and Bob turn cameras on; Carol stays audio-only', async () => {
    await click(alice, 'Camera on');
    await click(bob, 'Camera on');
    await Promise.all([
      expectTiles(alice, [`${bob.id}:camera`]),
      expectTiles(bob, [`${alice.id}:camera`]),
      expectTiles(carol, [`${alice.id}:camera`, `${bob.id}:camera`]),
    ]);
  });
  summary.timings.cameraOnToTilesMs = Date.now() - tCam;
  await step('every page decodes the cameras sent to it (framesDecoded grows)', () =>
    Promise.all([expectDecoding(alice, [bob], 'camera'), expectDecoding(bob, [alice], 'camera'), expectDecoding(carol, [alice, bob], 'camera')]),
  );
  await step('no new peer connection: one per pair', () => expectSameLinks(group, links));

  await step('Carol shares her screen: shown large on Alice and Bob, decoding', async () => {
    await click(carol, 'Share screen');
    await waitIn(carol, 'Carol sharing', () => window.voiceDebug.video().local.screen);
    await Promise.all([
      expectTiles(alice, [`${bob.id}:camera`, `${carol.id}:screen`]),
      expectTiles(bob, [`${alice.id}:camera`, `${carol.id}:screen`]),
    ]);
    await Promise.all([expectDecoding(alice, [carol], 'screen'), expectDecoding(bob, [carol], 'screen')]);
  });
  await step('Carol\'s share ends as with the browser\'s "Stop sharing": gone everywhere', async () => {
    // The browser's own button ends the track and fires `ended`; track.stop() alone does not fire
    // it, so the test stops the track and dispatches the event the browser would.
    await carol.page.evaluate(() => {
      for (const p of window.voiceDebug.peers()) {
        const s = window.voiceDebug.peerConnection(p.userId).getSenders().find((x) => x.track && x.track.contentHint === 'detail');
        if (s) {
          const t = s.track;
          t.stop();
          t.dispatchEvent(new Event('ended'));
          return;
        }
      }
    });
    await waitIn(carol, 'Carol no longer sharing', () => !window.voiceDebug.video().local.screen && document.querySelector('#screen-button').textContent === 'Share screen');
    await Promise.all([expectTiles(alice, [`${bob.id}:camera`]), expectTiles(bob, [`${alice.id}:camera`])]);
  });
  await step('Bob shares and stops from the page: gone everywhere', async () => {
    await click(bob, 'Share screen');
    await Promise.all([
      expectTiles(alice, [`${bob.id}:camera`, `${bob.id}:screen`]),
      expectTiles(carol, [`${alice.id}:camera`, `${bob.id}:camera`, `${bob.id}:screen`]),
    ]);
    await click(bob, 'Stop sharing');
    await Promise.all([expectTiles(alice, [`${bob.id}:camera`]), expectTiles(carol, [`${alice.id}:camera`, `${bob.id}:camera`])]);
  });
  // Who may share is a rule of the domain (docs/protocol.md, "Screen sharing").
  await step('Alice lets only hosts share: Bob and Carol lose the Share button, Bob is refused in plain words', async () => {
    await click(alice, 'Screen sharing: everyone');
    await waitText(alice, '#share-policy-button', 'Screen sharing: hosts only');
    for (const u of [bob, carol]) {
      await waitIn(u, `${u.name} sees no Share button`, () => document.querySelector('#screen-button').hidden && document.querySelector('#share-policy-button').hidden);
    }
    // As if the button were still there: the server refuses before any picker opens.
    await bob.page.evaluate(() => document.querySelector('#screen-button').click());
    await waitIn(bob, 'Bob told why', () => /only the host and the room admin can share their screen/.test(document.querySelector('#voice-message').textContent));
    if (await bob.page.evaluate(() => window.voiceDebug.video().local.screen)) fail('Bob shares his screen although the server refused');
  });
  await step('a screen sent without asking is not shown: receivers show only the announced sharer', async () => {
    await bob.page.evaluate(() => window.voiceDebug.screenUnannounced(true));
    await waitIn(carol, 'Bob\'s unannounced screen track reaches Carol', (bobId) => window.voiceDebug.video().remote.some((r) => r.userId === bobId && r.slot === 'screen'), bob.id);
    await expectTiles(carol, [`${alice.id}:camera`, `${bob.id}:camera`]);
    await expectTiles(alice, [`${bob.id}:camera`]);
    await bob.page.evaluate(() => window.voiceDebug.screenUnannounced(false));
  });
  await step('Alice (the host) shares: shown large on Bob and Carol, decoding; she stops it cleanly', async () => {
    await click(alice, 'Share screen');
    await waitIn(alice, 'Alice sharing', () => window.voiceDebug.video().local.screen);
    await Promise.all([
      expectTiles(bob, [`${alice.id}:camera`, `${alice.id}:screen`]),
      expectTiles(carol, [`${alice.id}:camera`, `${bob.id}:camera`, `${alice.id}:screen`]),
    ]);
    await Promise.all([expectDecoding(bob, [alice], 'screen', 12_000, ':hosts'), expectDecoding(carol, [alice], 'screen', 12_000, ':hosts')]);
    await click(alice, 'Stop sharing');
    await Promise.all([expectTiles(bob, [`${alice.id}:camera`]), expectTiles(carol, [`${alice.id}:camera`, `${bob.id}:camera`])]);
    for (const u of [alice, bob, carol]) await waitIn(u, `${u.name} hears nobody shares`, () => !document.querySelector('#video-stage').children.length);
  });
  await step('Alice turns her camera off: gone on Bob and Carol; Bob\'s still decodes', async () => {
    await click(alice, 'Camera off');
    await Promise.all([expectTiles(bob, []), expectTiles(carol, [`${bob.id}:camera`])]);
    await expectDecoding(carol, [bob], 'camera');
  });
  await step('still one peer connection per pair', () => expectSameLinks(group, links));
  await step('everyone still hears everyone', () => hearsEveryone(group));
  summary.sdpBytesMax = Math.max(
    ...(await Promise.all(
      group.map((u) =>
        u.page.evaluate(() => Math.max(...window.voiceDebug.peers().map((p) => {
          const pc = window.voiceDebug.peerConnection(p.userId);
          return Math.max(pc.localDescription ? pc.localDescription.sdp.length : 0, pc.remoteDescription ? pc.remoteDescription.sdp.length : 0);
        }))),
      ),
    )),
  );
  if (!(summary.sdpBytesMax < 10 * 1024)) fail(`an SDP of ${summary.sdpBytesMax} bytes is over the 10 KiB signaling limit`);
  summary.renegotiations = {};
  for (const u of group) summary.renegotiations[u.name] = await u.page.evaluate(() => window.voiceDebug.renegotiations());
  for (const u of group) for (const e of u.errors) fail(`${u.name}'s page had errors: ${e}`);

  if (opts.mesh4) {
    const dave = await step('Dave joins (4-person mesh)', async () => {
      const d = await newUser(browser, 'Dave', origin);
      await login(d, url);
      await joinRoom(d, roomName);
      await approve(alice, d, roomName);
      await joinVoice(d);
      await waitMeshConnected([...group, d]);
      return d;
    });
    const four = [...group, dave];
    await step('4-person video mesh: bytes sent per second and browser CPU over 5 s', async () => {
      for (const u of four) if (!(await u.page.evaluate(() => window.voiceDebug.video().local.camera))) await click(u, 'Camera on');
      await Promise.all(four.map((u) => expectTiles(u, four.filter((o) => o !== u).map((o) => `${o.id}:camera`))));
      await alice.page.waitForTimeout(3000); // let bandwidth estimation settle
      const b0 = await Promise.all(four.map(bytesSent));
      const c0 = childCpuSeconds();
      const t0 = Date.now();
      await alice.page.waitForTimeout(5000);
      const b1 = await Promise.all(four.map(bytesSent));
      const secs = (Date.now() - t0) / 1000;
      const cpu = childCpuSeconds() - c0;
      summary.mesh4 = {
        seconds: Number(secs.toFixed(1)),
        browserCpuPercentOfOneCore: Math.round((cpu / secs) * 100),
        sentKbitPerSecond: Object.fromEntries(
          four.map((u, i) => [u.name, { video: Math.round(((b1[i].video - b0[i].video) * 8) / secs / 1000), audio: Math.round(((b1[i].audio - b0[i].audio) * 8) / secs / 1000) }]),
        ),
      };
    });
  }
}

let browser = null;
let exitCode = 1;
const deadline = setTimeout(async () => {
  console.error(`VIDEO FAILED: overall deadline of ${OVERALL_DEADLINE_MS} ms passed during step "${harness.currentStep()}"`);
  summary.failedStep = harness.currentStep();
  console.log(JSON.stringify(summary, null, 2));
  try {
    await Promise.race([browser && browser.close(), new Promise((r) => setTimeout(r, 5000))]);
  } finally {
    process.exit(1);
  }
}, OVERALL_DEADLINE_MS);

try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: VIDEO_ARGS, timeout: 30_000 });
  await run(browser, opts.url);
  summary.ok = true;
  exitCode = 0;
} catch (e) {
  summary.failedStep = harness.currentStep();
  summary.error = e.message;
  console.error(`VIDEO FAILED at step "${harness.currentStep()}": ${e instanceof CheckFailed ? e.message : e.stack || e}`);
  for (const u of users) {
    console.error(`--- ${u.name}: last console lines ---`);
    for (const l of u.console.slice(-30)) console.error(`  ${l}`);
    for (const x of u.errors) console.error(`  ${x}`);
  }
} finally {
  summary.timings.totalMs = Date.now() - started;
  console.log(JSON.stringify(summary, null, 2));
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 10_000))]);
  clearTimeout(deadline);
}
if (exitCode === 0) console.error(`VIDEO PASSED in ${summary.timings.totalMs} ms`);
process.exit(exitCode);
