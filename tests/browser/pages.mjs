// The browser side every real-browser script here shares (checklist.mjs, video.mjs): Chromium's
// flags, one user per browser context, waiting inside a page with a deadline, logging in, and
// measuring what each page hears. One copy, so a fix to how we wait or measure reaches every
// script. Nothing here asserts by itself: failures are thrown as `CheckFailed` for the caller to
// report.

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// Flags from shared/browser-testing.md, each required there. No --use-fake-ui-for-media-stream:
// microphone permission is granted per context, so one context can be left without it.
export const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
  '--disable-gpu',
];

/** A check that did not hold (as opposed to a bug in the script). */
export class CheckFailed extends Error {}

export function fail(msg) {
  throw new CheckFailed(msg);
}

/**
 * One script's run: its users, its steps (timed into `summary.steps`) and the waits and
 * measurements over them. `stepTimeoutMs` bounds every wait; `permissions` are granted to each
 * user's context (unless a user is created without them).
 */
export function createRun({ summary, stepTimeoutMs = 15_000, permissions = ['microphone'] }) {
  const started = Date.now();
  const users = []; // {name, context, page, console: [], errors: [], id}
  let currentStep = 'start';
  const STEP_TIMEOUT_MS = stepTimeoutMs;

  async function step(name, fn) {
    currentStep = name;
    const t0 = Date.now();
    const r = await fn();
    summary.steps.push({ step: name, ms: Date.now() - t0, atMs: Date.now() - started });
    return r;
  }

  /** Polls `fn(arg)` in the page until truthy; fails with `what` after `timeout`. */
  async function waitIn(user, what, fn, arg, timeout = STEP_TIMEOUT_MS) {
    try {
      const handle = await user.page.waitForFunction(fn, arg, { timeout, polling: 100 });
      const v = await handle.jsonValue();
      await handle.dispose();
      return v;
    } catch (e) {
      if (e.name === 'TimeoutError' || /Timeout/.test(e.message)) {
        fail(`${user.name}: timed out after ${timeout} ms waiting for ${what}`);
      }
      throw e;
    }
  }

  /** Waits for a visible element's text to contain `text`. */
  async function waitText(user, selector, text, timeout = STEP_TIMEOUT_MS) {
    return waitIn(
      user,
      `${selector} to show "${text}"`,
      ([sel, t]) => {
        const el = document.querySelector(sel);
        return !!el && !el.hidden && el.textContent.includes(t);
      },
      [selector, text],
      timeout,
    );
  }

  /** `u` asks to join `roomName` from the room list (refreshing until the room shows up). */
  async function joinRoom(u, roomName) {
    const item = u.page.locator('#rooms li', { hasText: roomName });
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    while (!(await item.count())) {
      if (Date.now() > deadline) fail(`${u.name}: room "${roomName}" never appeared in the rooms list`);
      await u.page.getByRole('button', { name: 'Refresh', exact: true }).first().click();
      await u.page.waitForTimeout(200);
    }
    await item.getByRole('button', { name: 'Request to join' }).click();
  }

  /** The admin approves `u`'s request; `u`'s page then shows the room. */
  async function approve(admin, u, roomName) {
    const req = admin.page.locator('#requests li', { hasText: u.name });
    await req.waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
    await req.getByRole('button', { name: 'Approve' }).click();
    await req.waitFor({ state: 'detached', timeout: STEP_TIMEOUT_MS });
    await waitText(u, '#room-title', roomName);
  }

  /** `u` presses Join Voice and waits until the page says it is in voice. */
  async function joinVoice(u) {
    const join = u.page.getByRole('button', { name: 'Join Voice' });
    await join.waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
    await join.click();
    await waitIn(u, `${u.name} to be in voice`, () => window.voiceDebug.inVoice());
  }

  async function newUser(browser, name, origin, { micPermission = true } = {}) {
    const context = await browser.newContext();
    if (micPermission) await context.grantPermissions(permissions, { origin });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    const page = await context.newPage();
    const user = { name, context, page, console: [], errors: [] };
    page.on('console', (m) => user.console.push(`${((Date.now() - started) / 1000).toFixed(1)} ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => user.errors.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => user.errors.push(`requestfailed: ${r.url()} ${r.failure() && r.failure().errorText}`));
    users.push(user);
    return user;
  }

  async function login(user, url) {
    await user.page.goto(url, { waitUntil: 'load' });
    await user.page.getByLabel('Display name').fill(user.name);
    await user.page.getByRole('button', { name: 'Connect' }).click();
    await waitText(user, '#connection-status', `Connected as ${user.name}`);
    user.id = await user.page.evaluate(() => window.voiceDebug.me().userId);
  }

  async function measure(user, ms) {
    return user.page.evaluate(async (windowMs) => {
      const streams = window.voiceDebug.remoteStreams();
      const ctx = new AudioContext();
      await ctx.resume();
      const meters = Object.entries(streams).map(([userId, stream]) => {
        const src = ctx.createMediaStreamSource(stream);
        const an = ctx.createAnalyser();
        an.fftSize = 2048;
        src.connect(an);
        return { userId, an, buf: new Float32Array(an.fftSize), peak: 0 };
      });
      const energy = async (userId) => {
        const pc = window.voiceDebug.peerConnection(userId);
        if (!pc) return null;
        const stats = await pc.getStats();
        for (const s of stats.values()) {
          if (s.type === 'inbound-rtp' && s.kind === 'audio') return { energy: s.totalAudioEnergy || 0, packets: s.packetsReceived || 0 };
        }
        return null;
      };
      const before = {};
      for (const m of meters) before[m.userId] = await energy(m.userId);
      const t0 = performance.now();
      while (performance.now() - t0 < windowMs) {
        for (const m of meters) {
          m.an.getFloatTimeDomainData(m.buf);
          for (let i = 0; i < m.buf.length; i++) {
            const a = Math.abs(m.buf[i]);
            if (a > m.peak) m.peak = a;
          }
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      const out = {};
      for (const m of meters) {
        const after = await energy(m.userId);
        const b = before[m.userId];
        out[m.userId] = {
          peak: Number(m.peak.toFixed(5)),
          statsEnergy: after && b ? Number((after.energy - b.energy).toExponential(3)) : null,
          packets: after && b ? after.packets - b.packets : null,
        };
      }
      await ctx.close();
      return out;
    }, ms);
  }

  function nameById(id) {
    const u = users.find((x) => x.id === id);
    return u ? u.name : id;
  }

  function named(levels) {
    return Object.fromEntries(Object.entries(levels).map(([id, v]) => [nameById(id), v]));
  }

  /** Every page of `group` has a connected peer connection to each other member of `group`. */
  async function waitMeshConnected(group, timeout = 20_000) {
    await Promise.all(
      group.map((u) =>
        waitIn(
          u,
          `connected peer connections to ${group.filter((o) => o !== u).map((o) => o.name).join(' and ')}`,
          (ids) => {
            const peers = window.voiceDebug.peers();
            return ids.every((id) => peers.some((p) => p.userId === id && p.connectionState === 'connected' && p.hasRemoteAudio));
          },
          group.filter((o) => o !== u).map((o) => o.id),
          timeout,
        ),
      ),
    );
  }

  /**
   * Waits until `u` hears each of `others`: over one `windowMs` window their audio peaks above
   * `audible` and RTP packets keep arriving (inbound-rtp packetsReceived grows). Measured again
   * until the step timeout, since audio takes a moment after a link is (re)built.
   */
  async function waitHears(u, others, { audible = 0.01, windowMs = 1200, timeout = STEP_TIMEOUT_MS } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const levels = await measure(u, windowMs);
      const deaf = others.filter((o) => !(levels[o.id] && levels[o.id].peak > audible && levels[o.id].packets > 0));
      if (!deaf.length) return levels;
      if (Date.now() > deadline) fail(`${u.name} does not hear ${deaf.map((o) => o.name).join(', ')} within ${timeout} ms: ${JSON.stringify(named(levels))}`);
    }
  }

  return {
    users,
    started,
    waitHears,
    currentStep: () => currentStep,
    step,
    waitIn,
    waitText,
    newUser,
    login,
    measure,
    nameById,
    named,
    waitMeshConnected,
    joinRoom,
    approve,
    joinVoice,
  };
}
