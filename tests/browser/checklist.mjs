#!/usr/bin/env node
// The original setup guide's manual voice checklist, run for real in headless Chromium against a
// running voice-server:
//
//   node tests/browser/checklist.mjs <server-url> [--scenario all|checklist|mic-denied]
//        [--expect-refresh-within <seconds>]
//
// Scenario "checklist": Alice creates a room; Bob and Carol ask to join; Alice approves both; Bob
// starts voice; Alice and Carol join; every page hears both others (peak > 0.01 over 1 s, per
// remote peer, measured with an AnalyserNode on each remote stream); Carol mutes and the other two
// measure silence from her while still hearing each other; she unmutes; Bob (the master) mutes her
// for everyone and lets her speak again; (with
// --expect-refresh-within) every page refreshes its credentials before they expire; Alice leaves
// and rejoins (the mesh is rebuilt); Carol is offered Leave, not End Voice (only the master or
// the admin may end); Bob (the
// master, not the admin) ends; every page shows "Voice room ended" with its peer connections
// closed and its microphone stopped; the console shows the original's debugging lines.
// Scenario "mic-denied": a user whose browser context has no microphone permission clicks Start
// Voice Chat and sees the microphone-denied message, and no voice room is created; then, on a
// 390x844 phone viewport, a long room name must not widen the page and the voice controls must
// come before the room list.
//
// One browser, one context per user. Every wait is bounded. Prints a JSON summary on stdout;
// exits 0 on success, 1 on any failure (with the failing step and each page's recent log), 2 on
// bad usage. The browser is always closed.

import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, CheckFailed, createRun, fail } from './pages.mjs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const OVERALL_DEADLINE_MS = Number(process.env.CHECKLIST_DEADLINE_MS || 120_000);
const STEP_TIMEOUT_MS = 15_000;
const AUDIBLE = 0.01; // max peak over a 1 s window above this = audible
const SILENT = 0.001; // max peak below this = silent



function usage(msg) {
  console.error(`${msg}\nusage: node checklist.mjs <server-url> [--scenario all|checklist|mic-denied] [--expect-refresh-within <seconds>]`);
  process.exit(2);
}

function parseArgs(argv) {
  const out = { url: null, scenario: 'all', refreshWithinS: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--scenario') out.scenario = argv[++i];
    else if (a === '--expect-refresh-within') out.refreshWithinS = Number(argv[++i]);
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (!out.url) out.url = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!out.url) usage('missing server URL');
  try {
    out.url = new URL(out.url).toString();
  } catch {
    usage(`not a URL: ${out.url}`);
  }
  if (!['all', 'checklist', 'mic-denied'].includes(out.scenario)) usage(`unknown scenario ${out.scenario}`);
  if (out.refreshWithinS !== null && !(out.refreshWithinS > 0)) usage('--expect-refresh-within needs a positive number');
  return out;
}

// ---------------------------------------------------------------------------------------------

const summary = { ok: false, url: null, steps: [], levels: {}, stats: {}, timings: {} };
const harness = createRun({ summary, stepTimeoutMs: STEP_TIMEOUT_MS, permissions: ['microphone'] });
const { users, started, step, waitIn, waitText, newUser, login, measure, named, waitMeshConnected } = harness;

// ---------------------------------------------------------------------------------------------

async function checklist(browser, url) {
  const origin = new URL(url).origin;
  const roomName = `Checklist ${new Date().toISOString().slice(11, 19)}`;
  const [alice, bob, carol] = await step('open three browser contexts', () =>
    Promise.all(['Alice', 'Bob', 'Carol'].map((n) => newUser(browser, n, origin))),
  );

  await step('connect as Alice, Bob and Carol', () => Promise.all([alice, bob, carol].map((u) => login(u, url))));

  await step('Alice creates a room (becomes admin)', async () => {
    await alice.page.getByLabel('New room').fill(roomName);
    await alice.page.getByRole('button', { name: 'Create room' }).click();
    await waitText(alice, '#room-title', roomName);
  });

  await step('Bob and Carol request to join', () =>
    Promise.all(
      [bob, carol].map(async (u) => {
        const item = u.page.locator('#rooms li', { hasText: roomName });
        const deadline = Date.now() + STEP_TIMEOUT_MS;
        while (!(await item.count())) {
          if (Date.now() > deadline) fail(`${u.name}: room "${roomName}" never appeared in the rooms list`);
          await u.page.getByRole('button', { name: 'Refresh' }).click();
          await u.page.waitForTimeout(200);
        }
        await item.getByRole('button', { name: 'Request to join' }).click();
        await waitIn(u, 'the room to show as pending', (n) => [...document.querySelectorAll('#rooms li')].some((li) => li.textContent.includes(n) && li.textContent.includes('pending')), roomName);
      }),
    ),
  );

  await step('Alice sees both join requests and approves them', async () => {
    for (const u of [bob, carol]) {
      const req = alice.page.locator('#requests li', { hasText: u.name });
      await req.waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
      await req.getByRole('button', { name: 'Approve' }).click();
      await req.waitFor({ state: 'detached', timeout: STEP_TIMEOUT_MS });
    }
    await Promise.all([bob, carol].map((u) => waitText(u, '#room-title', roomName)));
    await waitIn(alice, 'three approved members', () => document.querySelectorAll('#members li').length === 3);
  });

  await step('text chat reaches the other members', async () => {
    await alice.page.getByLabel('Message').fill('Hello from Alice');
    await alice.page.getByRole('button', { name: 'Send' }).click();
    await Promise.all([bob, carol].map((u) => waitText(u, '#messages', 'Hello from Alice')));
  });

  const tVoice = Date.now();
  await step('Bob starts voice chat', async () => {
    await bob.page.getByRole('button', { name: 'Start Voice Chat' }).click();
    await waitIn(bob, 'Bob to be in voice', () => window.voiceDebug.inVoice() && window.voiceDebug.grantCount() >= 1);
  });

  await step('Alice and Carol join voice', async () => {
    await Promise.all(
      [alice, carol].map(async (u) => {
        const join = u.page.getByRole('button', { name: 'Join Voice' });
        await join.waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
        await join.click();
      }),
    );
    await Promise.all([alice, carol].map((u) => waitIn(u, `${u.name} to be in voice`, () => window.voiceDebug.inVoice())));
  });

  const group = [alice, bob, carol];
  await step('full mesh connected (3 peer connections)', () => waitMeshConnected(group));
  summary.timings.voiceStartToMeshConnectedMs = Date.now() - tVoice;

  await step('every page plays each remote stream on an unmuted, playing <audio>', () =>
    Promise.all(
      group.map(async (u) => {
        const els = await u.page.evaluate(() => window.voiceDebug.audioElements());
        for (const o of group.filter((x) => x !== u)) {
          const el = els.find((e) => e.userId === o.id);
          if (!el) fail(`${u.name}: no <audio> element for ${o.name}`);
          if (el.muted) fail(`${u.name}: the <audio> element for ${o.name} is muted`);
          if (el.paused) fail(`${u.name}: the <audio> element for ${o.name} is paused`);
        }
      }),
    ),
  );

  await step('every page hears both others (peak over 1 s > 0.01)', async () => {
    const results = await Promise.all(group.map((u) => measure(u, 1000)));
    summary.levels.allUnmuted = {};
    group.forEach((u, i) => {
      summary.levels.allUnmuted[u.name] = named(results[i]);
      for (const o of group.filter((x) => x !== u)) {
        const r = results[i][o.id];
        if (!r) fail(`${u.name}: no remote stream from ${o.name}`);
        if (!(r.peak > AUDIBLE)) fail(`${u.name} does not hear ${o.name}: peak ${r.peak} <= ${AUDIBLE}`);
      }
    });
  });

  await step('the speaking indicator lights up for a remote speaker', () =>
    waitIn(alice, 'Bob to show as speaking on Alice\'s page', (id) => !!document.querySelector(`#participants li[data-user-id="${id}"].speaking`), bob.id, 5000),
  );

  await step('Carol mutes', async () => {
    await carol.page.getByRole('button', { name: 'Mute', exact: true }).click();
    await carol.page.getByRole('button', { name: 'Unmute' }).waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
    await Promise.all(
      [alice, bob].map((u) =>
        waitIn(u, 'Carol to show as muted', (id) => {
          const li = document.querySelector(`#participants li[data-user-id="${id}"] .mute-state`);
          return !!li && li.textContent === 'muted';
        }, carol.id),
      ),
    );
  });

  await step('Alice and Bob hear silence from Carol and still hear each other', async () => {
    // Silence arrives within about a second; poll short windows, then judge a full second.
    const tMute = Date.now();
    await Promise.all(
      [alice, bob].map(async (u) => {
        for (;;) {
          const r = await measure(u, 300);
          if (r[carol.id] && r[carol.id].peak < SILENT) break;
          if (Date.now() - tMute > 4000) fail(`${u.name} still hears Carol 4 s after she muted: peak ${r[carol.id] && r[carol.id].peak}`);
        }
      }),
    );
    summary.timings.muteToSilenceMs = Date.now() - tMute;
    const results = await Promise.all([alice, bob].map((u) => measure(u, 1000)));
    summary.levels.carolMuted = {};
    [alice, bob].forEach((u, i) => {
      summary.levels.carolMuted[u.name] = named(results[i]);
      const other = u === alice ? bob : alice;
      const c = results[i][carol.id];
      const o = results[i][other.id];
      if (!c || !(c.peak < SILENT)) fail(`${u.name} hears muted Carol: peak ${c && c.peak} >= ${SILENT}`);
      if (!o || !(o.peak > AUDIBLE)) fail(`${u.name} no longer hears ${other.name} while Carol is muted: peak ${o && o.peak}`);
    });
    // Carol still hears the other two.
    const rc = await measure(carol, 1000);
    summary.levels.carolMuted.Carol = named(rc);
    for (const o of [alice, bob]) if (!rc[o.id] || !(rc[o.id].peak > AUDIBLE)) fail(`muted Carol does not hear ${o.name}`);
  });

  await step('Carol unmutes and is heard again', async () => {
    await carol.page.getByRole('button', { name: 'Unmute' }).click();
    await carol.page.getByRole('button', { name: 'Mute', exact: true }).waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
    const t0 = Date.now();
    for (;;) {
      const r = await measure(alice, 500);
      if (r[carol.id] && r[carol.id].peak > AUDIBLE) {
        summary.levels.carolUnmutedOnAlice = Number(r[carol.id].peak);
        break;
      }
      if (Date.now() - t0 > 4000) fail(`Alice does not hear Carol 4 s after she unmuted`);
    }
  });

  await step('Bob (master) mutes Carol for everyone: she cannot unmute, nobody plays her audio, until he allows it', async () => {
    const modButton = bob.page.locator(`#participants li[data-user-id="${carol.id}"] button.moderate`);
    await modButton.click();
    await carol.page.getByRole('button', { name: 'Muted by the host' }).waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
    if (!(await carol.page.getByRole('button', { name: 'Muted by the host' }).isDisabled())) fail('server-muted Carol can press her mute button');
    await waitIn(alice, 'Carol to show as muted by the host, her audio not played', (id) => {
      const li = document.querySelector(`#participants li[data-user-id="${id}"] .mute-state`);
      const el = document.querySelector(`#audio-sink audio[data-user-id="${id}"]`);
      return !!li && li.textContent === 'muted by the host' && !!el && el.muted;
    }, carol.id);
    // Alice is the admin, not a moderator's target for Bob: no control on her row for him.
    if ((await bob.page.locator(`#participants li[data-user-id="${alice.id}"] button.moderate`).count()) !== 0) fail('the master is offered to mute the chat room admin');
    const r = await measure(alice, 1000);
    if (!r[carol.id] || !(r[carol.id].peak < SILENT)) fail(`Alice hears server-muted Carol: peak ${r[carol.id] && r[carol.id].peak}`);
    await bob.page.locator(`#participants li[data-user-id="${carol.id}"] button.moderate`, { hasText: 'Allow to speak' }).click();
    await carol.page.getByRole('button', { name: 'Unmute' }).waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
    await waitIn(alice, 'Carol\'s audio played again', (id) => {
      const el = document.querySelector(`#audio-sink audio[data-user-id="${id}"]`);
      return !!el && !el.muted;
    }, carol.id);
    await carol.page.getByRole('button', { name: 'Unmute' }).click();
    const t0 = Date.now();
    for (;;) {
      const m = await measure(alice, 500);
      if (m[carol.id] && m[carol.id].peak > AUDIBLE) break;
      if (Date.now() - t0 > 4000) fail('Alice does not hear Carol 4 s after the host allowed her and she unmuted');
    }
  });

  if (opts.refreshWithinS) {
    await step(`every page refreshes its voice credentials before they expire (${opts.refreshWithinS} s)`, async () => {
      const left = Math.max(1000, opts.refreshWithinS * 1000 - (Date.now() - tVoice)) + 3000;
      await Promise.all(group.map((u) => waitIn(u, 'a second getVoiceCredentials (refresh)', () => window.voiceDebug.grantCount() >= 2, undefined, left)));
      const logs = await Promise.all(group.map((u) => u.page.evaluate(() => window.voiceDebug.log())));
      logs.forEach((l, i) => {
        if (!l.some((m) => m.startsWith('Voice credentials refreshed'))) fail(`${group[i].name}: no "Voice credentials refreshed" log line`);
      });
      // The mesh survives the refresh.
      const r = await measure(alice, 1000);
      for (const o of [bob, carol]) if (!r[o.id] || !(r[o.id].peak > AUDIBLE)) fail(`after the refresh Alice does not hear ${o.name}`);
    });
  }

  await step('Alice leaves voice: her connections close, Bob and Carol drop her and still hear each other', async () => {
    await alice.page.getByRole('button', { name: 'Leave' }).click();
    await waitText(alice, '#voice-message', 'You left the voice chat');
    const a = await alice.page.evaluate(() => ({
      inVoice: window.voiceDebug.inVoice(),
      all: window.voiceDebug.allPeerConnections(),
      mic: window.voiceDebug.micTracks(),
    }));
    if (a.inVoice) fail('Alice is still in voice after Leave');
    const open = a.all.filter((p) => p.connectionState !== 'closed');
    if (open.length) fail(`Alice left but kept peer connections: ${JSON.stringify(open)}`);
    if (a.mic.some((t) => t.readyState !== 'ended')) fail('Alice left but her microphone is still on');
    await Promise.all(
      [bob, carol].map((u) =>
        waitIn(u, 'Alice to be dropped from the peers and the participant list', (id) =>
          !window.voiceDebug.peers().some((p) => p.userId === id) && !document.querySelector(`#participants li[data-user-id="${id}"]`), alice.id),
      ),
    );
    const [rb, rc] = await Promise.all([measure(bob, 1000), measure(carol, 1000)]);
    summary.levels.afterAliceLeft = { Bob: named(rb), Carol: named(rc) };
    if (!rb[carol.id] || !(rb[carol.id].peak > AUDIBLE)) fail('after Alice left, Bob does not hear Carol');
    if (!rc[bob.id] || !(rc[bob.id].peak > AUDIBLE)) fail('after Alice left, Carol does not hear Bob');
  });

  await step('Alice joins again, now the last joiner: she calls both and all hear each other', async () => {
    const before = alice.console.filter((c) => c.includes('SDP offer sent')).length;
    await alice.page.getByRole('button', { name: 'Join Voice' }).click();
    await waitMeshConnected(group);
    const offers = alice.console.filter((c) => c.includes('SDP offer sent')).length - before;
    if (offers !== 2) fail(`rejoining Alice sent ${offers} offers, expected 2 (one per earlier participant)`);
    const results = await Promise.all(group.map((u) => measure(u, 1000)));
    summary.levels.afterRejoin = {};
    group.forEach((u, i) => {
      summary.levels.afterRejoin[u.name] = named(results[i]);
      for (const o of group.filter((x) => x !== u)) {
        const r = results[i][o.id];
        if (!r || !(r.peak > AUDIBLE)) fail(`after Alice rejoined, ${u.name} does not hear ${o.name}: ${r && r.peak}`);
      }
    });
  });

  await step('Carol (neither master nor admin) cannot end the voice room: she is offered Leave, not End Voice', async () => {
    const d = await carol.page.evaluate(() => ({ end: !document.querySelector('#end-voice').hidden, leave: !document.querySelector('#leave-voice').hidden }));
    if (d.end) fail('Carol (neither master nor admin) is offered End Voice');
    if (!d.leave) fail('Carol is not offered Leave');
    const b = await bob.page.evaluate(() => !document.querySelector('#end-voice').hidden);
    if (!b) fail('Bob (the master) is not offered End Voice');
    const still = await Promise.all(group.map((u) => u.page.evaluate(() => window.voiceDebug.inVoice())));
    if (!still.every(Boolean)) fail('somebody left voice meanwhile');
  });

  await step('Bob (master, not admin) ends the voice room', () => bob.page.getByRole('button', { name: 'End Voice' }).click());

  await step('every page shows the room ended, peer connections closed, microphone stopped', () =>
    Promise.all(
      group.map(async (u) => {
        await waitText(u, '#voice-message', 'Voice room ended');
        const d = await u.page.evaluate(() => ({
          inVoice: window.voiceDebug.inVoice(),
          peers: window.voiceDebug.peers(),
          all: window.voiceDebug.allPeerConnections(),
          mic: window.voiceDebug.micTracks(),
          audio: window.voiceDebug.audioElements(),
          startVisible: !document.querySelector('#start-voice').hidden,
        }));
        if (d.inVoice) fail(`${u.name} is still in voice`);
        if (d.peers.length) fail(`${u.name} still has peer connections: ${JSON.stringify(d.peers)}`);
        if (d.all.length < 2) fail(`${u.name} made ${d.all.length} peer connections, expected at least 2`);
        const open = d.all.filter((p) => p.connectionState !== 'closed');
        if (open.length) fail(`${u.name} has peer connections not closed: ${JSON.stringify(open)}`);
        if (!d.mic.length || d.mic.some((t) => t.readyState !== 'ended')) fail(`${u.name}'s microphone track was not stopped: ${JSON.stringify(d.mic)}`);
        if (d.audio.length) fail(`${u.name} still has ${d.audio.length} remote <audio> elements`);
        if (!d.startVisible) fail(`${u.name} does not offer "Start Voice Chat" after the end`);
      }),
    ),
  );

  await step('the console shows the original\'s debugging lines', async () => {
    const need = ['Microphone access granted', 'Signaling client connected', 'ICE candidate sent', 'ICE candidate received', 'Peer connection state: connected', 'Received remote audio track'];
    for (const u of group) {
      for (const line of need) if (!u.console.some((c) => c.includes(line))) fail(`${u.name}'s console lacks "${line}"`);
      const offers = u.console.some((c) => c.includes('SDP offer sent')) && u.console.some((c) => c.includes('SDP answer received'));
      const answers = u.console.some((c) => c.includes('SDP offer received')) && u.console.some((c) => c.includes('SDP answer sent'));
      if (!offers && !answers) fail(`${u.name}'s console shows no complete SDP offer/answer exchange`);
    }
    // Bob joined first: he only answers; Carol joined last: she only offers.
    if (!bob.console.some((c) => c.includes('SDP answer sent'))) fail('Bob (first in) never sent an SDP answer');
    if (!carol.console.some((c) => c.includes('SDP offer sent'))) fail('Carol (last in) never sent an SDP offer');
  });

  for (const u of group) if (u.errors.length) fail(`${u.name}'s page had errors: ${u.errors.join('; ')}`);
  await Promise.all(group.map((u) => u.context.close()));
}

async function micDenied(browser, url) {
  const origin = new URL(url).origin;
  const dave = await step('open a context without microphone permission', () => newUser(browser, 'Dave', origin, { micPermission: false }));
  await step('Dave connects and creates a room', async () => {
    await login(dave, url);
    await dave.page.getByLabel('New room').fill('Dave without a microphone');
    await dave.page.getByRole('button', { name: 'Create room' }).click();
    await waitText(dave, '#room-title', 'Dave without a microphone');
  });
  await step('Start Voice Chat shows "Microphone access denied" and starts nothing', async () => {
    await dave.page.getByRole('button', { name: 'Start Voice Chat' }).click();
    await waitText(dave, '#voice-message', 'Microphone access denied');
    const d = await dave.page.evaluate(() => ({ inVoice: window.voiceDebug.inVoice(), room: window.voiceDebug.voiceRoom(), start: !document.querySelector('#start-voice').hidden }));
    if (d.inVoice) fail('Dave is in voice without a microphone');
    if (d.room) fail(`a voice room was created although the microphone was denied: ${JSON.stringify(d.room)}`);
    if (!d.start) fail('"Start Voice Chat" is no longer offered after the denial');
    if (!dave.console.some((c) => c.includes('NotAllowedError'))) fail('the console does not name NotAllowedError');
  });
  await step('on a 390x844 phone a long room name does not widen the page; the voice controls come before the room list', async () => {
    await dave.page.setViewportSize({ width: 390, height: 844 });
    const long = 'Weekly planning and retrospective for the whole platform team';
    await dave.page.getByLabel('New room').fill(long);
    await dave.page.getByRole('button', { name: 'Create room' }).click();
    await waitText(dave, '#room-title', long);
    const d = await dave.page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      buttons: document.querySelector('#voice-buttons').getBoundingClientRect().top,
      rooms: document.querySelector('#rooms').getBoundingClientRect().top,
    }));
    summary.layout = { phone: d };
    if (d.scrollWidth > 390) fail(`the page is ${d.scrollWidth} px wide on a 390 px screen`);
    if (!(d.buttons < d.rooms)) fail(`the voice controls (top ${d.buttons}) come after the room list (top ${d.rooms})`);
    if (d.buttons > 844) fail(`the voice controls are below the first screen (top ${d.buttons})`);
  });
  for (const e of dave.errors) fail(`Dave's page had errors: ${e}`);
  await dave.context.close();
}

// ---------------------------------------------------------------------------------------------

const opts = parseArgs(process.argv.slice(2));
summary.url = opts.url;
let browser = null;
let exitCode = 1;

async function diagnostics() {
  const dir = mkdtempSync(join(tmpdir(), 'voice-checklist-'));
  for (const u of users) {
    try {
      await u.page.screenshot({ path: join(dir, `${u.name}.png`), fullPage: true, timeout: 3000 });
    } catch {
      /* page gone */
    }
    console.error(`--- ${u.name}: last console lines ---`);
    for (const l of u.console.slice(-25)) console.error(`  ${l}`);
    for (const e of u.errors) console.error(`  ${e}`);
  }
  console.error(`screenshots: ${dir}`);
}

const deadline = setTimeout(async () => {
  console.error(`CHECKLIST FAILED: overall deadline of ${OVERALL_DEADLINE_MS} ms passed during step "${harness.currentStep()}"`);
  summary.failedStep = harness.currentStep();
  summary.error = 'overall deadline passed';
  console.log(JSON.stringify(summary, null, 2));
  try {
    await Promise.race([browser && browser.close(), new Promise((r) => setTimeout(r, 5000))]);
  } finally {
    process.exit(1);
  }
}, OVERALL_DEADLINE_MS);

try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  summary.timings.browserLaunchMs = Date.now() - started;
  if (opts.scenario === 'all' || opts.scenario === 'checklist') await checklist(browser, opts.url);
  if (opts.scenario === 'all' || opts.scenario === 'mic-denied') await micDenied(browser, opts.url);
  summary.ok = true;
  exitCode = 0;
} catch (e) {
  summary.failedStep = harness.currentStep();
  summary.error = e.message;
  console.error(`CHECKLIST FAILED at step "${harness.currentStep()}": ${e instanceof CheckFailed ? e.message : e.stack || e}`);
  await diagnostics().catch(() => {});
} finally {
  summary.timings.totalMs = Date.now() - started;
  console.log(JSON.stringify(summary, null, 2));
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 10_000))]);
  clearTimeout(deadline);
}
if (exitCode === 0) console.error(`CHECKLIST PASSED in ${summary.timings.totalMs} ms`);
process.exit(exitCode);
