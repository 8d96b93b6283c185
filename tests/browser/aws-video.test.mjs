// Video in the web client's AWS mode, in real headless Chromium with the real vendored KVS SDK
// against the local fake stack (./aws-fake-stack.mjs): three users in one voice room, two turn
// their cameras on — one of them the master of both its links — and every page receives every
// camera sent to it, renegotiated over the (paced) KVS transport on the existing peer
// connections: no page creates a new one. Not the real KVS service (docs/web-client.md).
//
// Needs /usr/bin/chromium (or CHROMIUM_PATH), openssl and tests/browser/node_modules
// (playwright-core). Without them the test is skipped, or fails under VOICE_TEST_STRICT=1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WAIT_MS = 20000;

async function prerequisites() {
  const missing = [];
  if (!fs.existsSync(CHROMIUM)) missing.push(`no Chromium at ${CHROMIUM}`);
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    missing.push('no openssl (for the fake stack\'s certificate)');
  }
  let chromium = null;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    missing.push('no playwright-core (cd tests/browser && npm ci)');
  }
  return { missing, chromium };
}

const { missing, chromium } = await prerequisites();
if (missing.length && process.env.VOICE_TEST_STRICT === '1') {
  throw new Error(`aws-video.test.mjs prerequisites missing: ${missing.join('; ')} (scripts/setup-test-deps)`);
}
const skip = missing.length ? `SKIPPED: ${missing.join('; ')}` : false;

const ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--ignore-certificate-errors',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
  '--disable-gpu',
];

test('AWS mode: cameras renegotiated over KVS on the existing links reach every peer', { skip, timeout: 90_000 }, async (t) => {
  const { startFakeStack } = await import('./aws-fake-stack.mjs');
  const stack = await startFakeStack({ credentialTtlMs: 60_000 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  t.after(async () => {
    await browser.close().catch(() => {});
    await stack.close();
  });
  const until = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
  const pages = {};
  const errors = [];
  for (const [name, earlier] of [['alice', 0], ['bob', 1], ['carol', 2]]) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    await page.goto(`${stack.url}?user=${name}#room=room-1`);
    await page.getByRole('button', { name: earlier ? 'Join Voice' : 'Start Voice Chat' }).click();
    await until(page, () => window.voiceDebug.inVoice());
    if (earlier) await until(page, (k) => window.voiceDebug.peers().filter((p) => p.connectionState === 'connected').length === k, earlier);
    pages[name] = page;
  }
  await until(pages.alice, () => window.voiceDebug.peers().filter((p) => p.connectionState === 'connected').length === 2);
  const before = {};
  for (const [n, p] of Object.entries(pages)) before[n] = await p.evaluate(() => window.voiceDebug.linksCreated());

  // Alice joined first: she is master on both her links and must ask her viewers to offer.
  await pages.alice.getByRole('button', { name: 'Camera on' }).click();
  await pages.carol.getByRole('button', { name: 'Camera on' }).click();
  const want = { alice: ['carol:camera'], bob: ['alice:camera', 'carol:camera'], carol: ['alice:camera'] };
  for (const [n, keys] of Object.entries(want)) {
    await until(pages[n], (k) => JSON.stringify(window.voiceDebug.video().remote.map((r) => `${r.userId}:${r.slot}`).sort()) === JSON.stringify(k), keys);
  }
  await pages.alice.getByRole('button', { name: 'Camera off' }).click();
  await until(pages.bob, () => JSON.stringify(window.voiceDebug.video().remote.map((r) => r.userId)) === '["carol"]');
  for (const [n, p] of Object.entries(pages)) {
    const now = await p.evaluate(() => ({ made: window.voiceDebug.linksCreated(), open: window.voiceDebug.peers().length }));
    assert.equal(now.made, before[n], `${n} created no new peer connection`);
    assert.equal(now.open, 2, `${n} has one peer connection per other participant`);
  }
  assert.deepEqual(errors, []);
  // KVS's limits are enforced by the stand-in (aws-fake-stack.mjs): nothing was refused, and the
  // largest offer (camera renegotiation, candidates included) fits 10K of base64 with margin.
  const max = stack.stats.kvsPayloadMax;
  t.diagnostic(`largest KVS messagePayload (base64): offer ${max.offer}, answer ${max.answer}, candidate ${max.candidate}; over a limit: ${stack.stats.kvsOverLimit.length}`);
  assert.deepEqual(stack.stats.kvsOverLimit, []);
  assert.ok(max.offer > 0 && max.offer <= 8500, `largest offer ${max.offer} characters of base64`);
});
