#!/usr/bin/env node
// Recording with consent in headless Chromium against a running voice-server (issue 17 item 3):
//
//   node tests/browser/recording.mjs <server-url>
//
// The same script runs against the local AWS stack (aws-recording.test.mjs): there the recorder
// PUTs parts to presigned S3 URLs and the download is a presigned S3 GET.
//
// Alice creates a room (she is its admin), Bob and Carol are approved. Alice starts voice, Bob
// joins. Bob has no Record button (not the host); Alice records. Everyone sees "● Recording";
// Carol, not yet in voice, sees the notice and is asked before her microphone is opened (the
// order of the question and getUserMedia is checked), accepts and joins. The recording then
// runs in three phases, so the file proves whose audio is in it:
//   1. Alice (the recorder) muted, Bob and Carol talking  → the others' audio is in the mix;
//   2. Bob and Carol muted, Alice talking                  → the recorder's own mic is in it;
//   3. everyone muted                                      → silence (the control).
// Alice stops; her browser uploads the rest; Bob's recordings list shows it; Bob downloads it
// through his link and decodes it (decodeAudioData): WebM (EBML header), Opus, peaks per
// phase. Prints a JSON summary on stdout; exits 0 on success, 1 on failure, 2 on bad usage.

import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, CheckFailed, createRun, fail } from './pages.mjs';

const OVERALL_DEADLINE_MS = Number(process.env.RECORDING_DEADLINE_MS || 100_000);
const STEP_TIMEOUT_MS = 15_000;
const PHASE_MS = 2500;

const url = process.argv[2];
if (!url) {
  console.error('usage: node recording.mjs <server-url>');
  process.exit(2);
}

const summary = { ok: false, steps: [], recording: {}, timings: {} };
const harness = createRun({ summary, stepTimeoutMs: STEP_TIMEOUT_MS });
const { users, started, step, waitIn, waitText, newUser, login, waitMeshConnected, joinRoom, approve, joinVoice } = harness;

async function click(user, name) {
  await user.page.getByRole('button', { name, exact: true }).click();
}




async function setMuted(u, muted) {
  const label = muted ? 'Mute' : 'Unmute';
  const b = u.page.locator('#mute-button');
  if ((await b.textContent()).trim() === label) await b.click();
  await waitIn(u, `${u.name} ${muted ? 'muted' : 'unmuted'}`, (m) => window.voiceDebug.micTracks().every((t) => t.enabled === !m), muted);
}

async function run(browser) {
  const origin = new URL(url).origin;
  const roomName = `Rec ${new Date().toISOString().slice(11, 19)}`;
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
  await step('Alice starts voice, Bob joins; only the host has a Record button', async () => {
    await click(alice, 'Start Voice Chat');
    await waitIn(alice, 'Alice in voice', () => window.voiceDebug.inVoice());
    await joinVoice(bob);
    await waitMeshConnected([alice, bob]);
    await waitIn(alice, 'a Record button', () => !document.querySelector('#record-button').hidden);
    if (await bob.page.locator('#record-button').isVisible()) fail('Bob, not the host, has a Record button');
  });

  await step('Alice mutes and records: everyone sees "● Recording"', async () => {
    await setMuted(alice, true);
    await click(alice, 'Record');
    await waitIn(alice, 'the recorder running', () => {
      const r = window.voiceDebug.recording().recording;
      return r && r.state === 'recording';
    });
    summary.timings.recordingStartedAt = Date.now();
    for (const u of [alice, bob, carol]) await waitText(u, '#recording-indicator', '● Recording');
    for (const u of [alice, bob]) await waitText(u, '#recording-top', '● Recording');
    await waitText(carol, '#recording-notice', 'If you join, your voice will be recorded too');
  });
  const t0 = summary.timings.recordingStartedAt;

  await step('Carol is asked before her microphone opens, accepts and joins', async () => {
    await carol.page.evaluate(() => {
      window.__order = [];
      const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = (c) => {
        window.__order.push('microphone');
        return gum(c);
      };
      const ask = window.confirm.bind(window);
      window.confirm = (text) => {
        window.__order.push('asked');
        return ask(text);
      };
    });
    let question = null;
    carol.page.once('dialog', async (d) => {
      question = d.message();
      await d.accept();
    });
    await joinVoice(carol);
    const order = await carol.page.evaluate(() => window.__order);
    summary.recording.consent = { question, order };
    if (!question || !/being recorded/.test(question)) fail(`Carol was not told about the recording: ${question}`);
    if (order[0] !== 'asked' || !order.includes('microphone')) fail(`Carol's microphone opened before she was asked: ${order}`);
    await waitMeshConnected([alice, bob, carol]);
    await waitIn(alice, 'the recorder mixing Alice and two peers', () => window.voiceDebug.recording().recording.tracks >= 3);
  });

  // Phase 1 runs from t0 (Alice muted, Bob and Carol talking) until phase 2 begins.
  await alice.page.waitForTimeout(Math.max(0, t0 + PHASE_MS - Date.now()));
  const t1 = Date.now();
  await step('phase 2: Bob and Carol mute, Alice talks', async () => {
    await Promise.all([setMuted(bob, true), setMuted(carol, true), setMuted(alice, false)]);
  });
  await alice.page.waitForTimeout(PHASE_MS);
  const t2 = Date.now();
  await step('phase 3: everyone muted', () => setMuted(alice, true));
  await alice.page.waitForTimeout(PHASE_MS);

  const recordingId = await step('Alice stops; her browser uploads the rest', async () => {
    const id = await alice.page.evaluate(() => window.voiceDebug.recording().recording.recordingId);
    await click(alice, 'Stop recording');
    const done = await waitIn(alice, 'the last chunk uploaded', () => window.voiceDebug.recording().lastDone, undefined, 20_000);
    summary.recording.recorder = done;
    if (done.failed) fail(`the upload failed: ${JSON.stringify(done.failed)}`);
    for (const u of [alice, bob, carol]) await waitIn(u, 'the indicator gone', () => document.querySelector('#recording-indicator').hidden);
    return id;
  });
  summary.recording.recordingId = recordingId;
  summary.recording.phasesMs = { phase2: t1 - t0, phase3: t2 - t0, end: Date.now() - t0 };

  await step('Bob sees it listed and downloads it through his link; it decodes', async () => {
    const link = bob.page.locator(`#recordings-list li[data-recording-id="${recordingId}"] a`);
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    while (!(await link.count())) {
      if (Date.now() > deadline) fail('the recording never appeared in Bob\'s list');
      await bob.page.locator('#refresh-recordings').click();
      await bob.page.waitForTimeout(300);
    }
    const result = await bob.page.evaluate(
      async ({ href, marks }) => {
        const res = await fetch(href);
        const buf = await res.arrayBuffer();
        const bytes = new Uint8Array(buf);
        const head = Array.from(bytes.slice(0, 4)).map((b) => b.toString(16).padStart(2, '0')).join('');
        const text = new TextDecoder('latin1').decode(bytes.slice(0, 4096));
        const ctx = new OfflineAudioContext(1, 48000, 48000);
        const audio = await ctx.decodeAudioData(buf.slice(0));
        const peakIn = (from, to) => {
          let peak = 0;
          for (let c = 0; c < audio.numberOfChannels; c++) {
            const d = audio.getChannelData(c);
            const a = Math.max(0, Math.floor(from * audio.sampleRate));
            const b = Math.min(d.length, Math.floor(to * audio.sampleRate));
            for (let i = a; i < b; i++) peak = Math.max(peak, Math.abs(d[i]));
          }
          return Number(peak.toFixed(4));
        };
        return {
          status: res.status,
          contentType: res.headers.get('content-type'),
          bytes: bytes.length,
          ebmlHeader: head,
          docTypeWebm: text.includes('webm'),
          codecOpus: text.includes('A_OPUS'),
          seconds: Number(audio.duration.toFixed(2)),
          channels: audio.numberOfChannels,
          // Windows well inside each phase (a remote mute silences within ~1 s).
          peaks: {
            othersOnly: peakIn(0.5, marks.p2 - 0.2),
            recorderOnly: peakIn(marks.p2 + 1.3, marks.p3 - 0.1),
            nobody: peakIn(marks.p3 + 1.3, marks.p3 + 2.2),
          },
        };
      },
      { href: await link.getAttribute('href'), marks: { p2: (t1 - t0) / 1000, p3: (t2 - t0) / 1000 } },
    );
    summary.recording.file = result;
    if (result.status !== 200) fail(`download answered ${result.status}`);
    if (result.ebmlHeader !== '1a45dfa3') fail(`not a WebM/EBML file: ${result.ebmlHeader}`);
    if (!result.docTypeWebm || !result.codecOpus) fail(`not WebM with Opus: ${JSON.stringify(result)}`);
    if (!(result.seconds > 5)) fail(`only ${result.seconds} s of audio`);
    if (!(result.peaks.othersOnly > 0.01)) fail(`Bob and Carol are not in the recording: ${JSON.stringify(result.peaks)}`);
    if (!(result.peaks.recorderOnly > 0.01)) fail(`Alice's own microphone is not in the recording: ${JSON.stringify(result.peaks)}`);
    if (!(result.peaks.nobody < 0.005)) fail(`the all-muted phase is not silent, so the peaks prove nothing: ${JSON.stringify(result.peaks)}`);
  });
  for (const u of users) for (const e of u.errors) fail(`${u.name}'s page had errors: ${e}`);
}

let browser = null;
let exitCode = 1;
const deadline = setTimeout(async () => {
  console.error(`RECORDING FAILED: overall deadline of ${OVERALL_DEADLINE_MS} ms passed during step "${harness.currentStep()}"`);
  summary.failedStep = harness.currentStep();
  console.log(JSON.stringify(summary, null, 2));
  try {
    await Promise.race([browser && browser.close(), new Promise((r) => setTimeout(r, 5000))]);
  } finally {
    process.exit(1);
  }
}, OVERALL_DEADLINE_MS);

try {
  // RECORDING_TEST_CERTIFICATE=1: the server's certificate is a throw-away test CA's (the local
  // AWS stack, aws-recording.test.mjs), so certificate errors are ignored.
  const args = process.env.RECORDING_TEST_CERTIFICATE === '1' ? [...CHROMIUM_ARGS, '--ignore-certificate-errors'] : CHROMIUM_ARGS;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  await run(browser);
  summary.ok = true;
  exitCode = 0;
} catch (e) {
  summary.failedStep = harness.currentStep();
  summary.error = e.message;
  console.error(`RECORDING FAILED at step "${harness.currentStep()}": ${e instanceof CheckFailed ? e.message : e.stack || e}`);
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
if (exitCode === 0) console.error(`RECORDING PASSED in ${summary.timings.totalMs} ms`);
process.exit(exitCode);
