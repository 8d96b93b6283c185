// The AWS deployment's connection cut-offs, in real headless Chromium over the local stack
// (./aws-local-stack.mjs: the real voice-lambda bootstrap, moto's tables from the template,
// API Gateway/STS/KVS stand-ins; ChatMode=builtin). The services cut connections off on their
// own, and a call must carry on with no click:
//
//   (a) API Gateway closes a WebSocket after 2 hours (REAL_LIMITS): Carol's connection reaches
//       its cap mid-call. Her page reconnects, says hello with its resume token and resumes the
//       same voice participation on the new connection id; audio flows again both ways; Alice and
//       Bob list her once, never saw her leave.
//   (b) KVS closes a signaling WebSocket after 1 hour: every signaling socket open mid-call
//       reaches its cap. The peer connections carry on (same RTCPeerConnections, still
//       audible), every page re-opens its signaling, and Dave, joining afterwards, connects to
//       all three.
//   (c) KVS TURN credentials live 300 s (GetIceServerConfig's Ttl; here 4 s): the peer
//       connections made after they expired (everyone's link to Dave, and an ICE restart) use
//       credentials issued after that, not the expired ones.
//
// A cut-off is made to happen now, not in hours: the stand-ins apply the real limits by default,
// and the test gives the connections it picks a cap they have already reached
// (stack.capConnection, stack.capKvsConnections) and shortens the TURN lifetime (limits option).
// Times are reported as diagnostics (BENCHMARKS.md), never asserted.
//
// VERBOSE=1 prints every page's console (timestamped) at the end.
//
// Needs what aws-chat-browser.test.mjs needs. Without it: skipped, or a failure under
// VOICE_TEST_STRICT=1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { BOOTSTRAP, startLocalStack, until } from './aws-local-stack.mjs';
import { CHROMIUM, CHROMIUM_ARGS, createRun } from './pages.mjs';

const TURN_TTL_S = 4;

async function prerequisites() {
  const missing = [];
  if (!fs.existsSync(BOOTSTRAP)) missing.push(`no ${BOOTSTRAP} (cargo build -p voice-lambda --locked)`);
  if (!fs.existsSync(CHROMIUM)) missing.push(`no Chromium at ${CHROMIUM}`);
  try {
    execFileSync('python3', ['-c', 'import moto.server, boto3, yaml'], { stdio: 'ignore' });
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    missing.push('no python3 with moto, or no openssl (scripts/setup-test-deps)');
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
if (missing.length && process.env.VOICE_TEST_STRICT === '1') throw new Error(`aws-cutoffs.test.mjs prerequisites missing: ${missing.join('; ')}`);
const skip = missing.length ? `SKIPPED: ${missing.join('; ')}` : false;

/** The TURN entry of a page's peer connection to `peerId`: {username, issuedAtMs} (username = "<expiry s>:<channel>:<client id>"). */
async function turnOf(u, peerId) {
  const username = await u.page.evaluate((id) => {
    const pc = window.voiceDebug.peerConnection(id);
    const turn = pc && pc.getConfiguration().iceServers.find((s) => [].concat(s.urls).some((x) => String(x).startsWith('turn:')));
    return turn ? turn.username : null;
  }, peerId);
  assert.ok(username, `${u.name}'s link to ${peerId} has a TURN server`);
  return { username, issuedAtMs: (Number(username.split(':')[0]) - TURN_TTL_S) * 1000 };
}

test('AWS cut-offs over the local stack: API Gateway 2 h cap, KVS signaling 1 h cap, TURN credentials expiring — the call carries on without a click', { skip, timeout: 300000 }, async (t) => {
  const stack = await startLocalStack({ workers: 3, params: { ChatMode: 'builtin' }, limits: { turnTtlSeconds: TURN_TTL_S } });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, '--ignore-certificate-errors'], headless: true });
  t.after(async () => {
    await browser.close().catch(() => {});
    await stack.close();
  });
  const summary = { steps: [] };
  const run = createRun({ summary, stepTimeoutMs: 40000 });
  const { newUser, login, waitIn, waitText, waitMeshConnected, waitHears, joinRoom, approve, joinVoice } = run;
  const origin = new URL(stack.url).origin;
  const ROOM = 'Cut-offs';
  const hearEachOther = (group) => Promise.all(group.map((u) => waitHears(u, group.filter((o) => o !== u))));
  const connectionsOf = async (u) => (await stack.scan(stack.env.CONNECTIONS_TABLE)).filter((i) => i.userId && i.userId.S === u.id).map((i) => i.connectionId.S);
  /** How `u`'s page lists `who` in the voice room: entries in its state and rows on screen. */
  const listing = (u, who) =>
    u.page.evaluate((id) => {
      const vr = window.voiceDebug.voiceRoom();
      const entries = vr ? vr.participants.filter((p) => p.userId === id) : [];
      const rows = [...document.querySelectorAll('#participants li')].filter((li) => li.dataset.userId === id);
      return { entries: entries.length, reconnecting: entries.some((p) => p.connection === 'reconnecting') || rows.some((li) => li.classList.contains('reconnecting')), rows: rows.length };
    }, who.id);
  try {
    const [alice, bob, carol] = await Promise.all(['Alice', 'Bob', 'Carol'].map((n) => newUser(browser, n, origin)));
    for (const u of [alice, bob, carol]) await login(u, stack.url);
    await alice.page.getByLabel('New room').fill(ROOM);
    await alice.page.getByRole('button', { name: 'Create room' }).click();
    await waitText(alice, '#room-title', ROOM);
    for (const u of [bob, carol]) {
      await joinRoom(u, ROOM);
      await approve(alice, u, ROOM);
    }
    await alice.page.getByRole('button', { name: 'Start Voice Chat' }).click();
    await waitIn(alice, 'Alice in voice', () => window.voiceDebug.inVoice());
    await joinVoice(bob);
    await joinVoice(carol);
    const three = [alice, bob, carol];
    await waitMeshConnected(three, 30000);
    await hearEachOther(three);
    const voiceRoomId = await alice.page.evaluate(() => window.voiceDebug.voiceRoomId());

    // (a) Carol's API Gateway connection reaches the 2-hour cap.
    const [carolConn, ...extra] = await connectionsOf(carol);
    assert.ok(carolConn && !extra.length, `Carol has one API connection: ${[carolConn, ...extra]}`);
    const resumedBefore = (await carol.page.evaluate(() => window.voiceDebug.log())).filter((l) => l.startsWith('Voice resumed')).length;
    const leftBefore = await Promise.all([alice, bob].map((u) => u.page.evaluate(() => window.voiceDebug.eventCounts().participantLeft || 0)));
    const aliceLinks = await alice.page.evaluate(() => window.voiceDebug.linksCreated());
    const tCut = Date.now();
    stack.capConnection(carolConn, 0);
    await until(() => stack.stats.apiGatewayClosed.some((c) => c.connectionId === carolConn && c.why === 'maxDuration'), 'API Gateway to close Carol\'s connection at its cap');
    // The cut is API Gateway's alone: the peer connections and KVS signaling do not go through
    // it, so the call is heard all along (measured while Carol's page is still reconnecting,
    // when it is quick enough to catch it).
    const offline = (await carol.page.evaluate(() => window.voiceDebug.conn())) !== 'online';
    await Promise.all([waitHears(alice, [carol]), waitHears(bob, [carol]), waitHears(carol, [alice, bob])]);
    t.diagnostic(`(a) right after the cut (Carol's page ${offline ? 'reconnecting' : 'already back'}): Carol and the others still hear each other`);
    await until(async () => {
      const now = await connectionsOf(carol);
      return now.length === 1 && now[0] !== carolConn;
    }, 'Carol\'s page on a new API connection', 45000);
    await waitIn(carol, 'Carol back in voice (resumed on the new connection)', (n) => window.voiceDebug.log().filter((l) => l.startsWith('Voice resumed')).length > n && window.voiceDebug.voicePhase() === 'connected', resumedBefore);
    const cutToInVoiceMs = Date.now() - tCut;
    assert.equal(await carol.page.evaluate(() => window.voiceDebug.voiceRoomId()), voiceRoomId, 'Carol is back in the same voice room');
    await waitMeshConnected(three, 30000);
    await hearEachOther(three);
    const cutToAudibleMs = Date.now() - tCut;
    for (const u of [alice, bob]) {
      await waitIn(u, `${u.name} to list Carol as connected again`, (id) => {
        const vr = window.voiceDebug.voiceRoom();
        return !!vr && vr.participants.some((p) => p.userId === id && p.connection !== 'reconnecting');
      }, carol.id);
      assert.deepEqual(await listing(u, carol), { entries: 1, reconnecting: false, rows: 1 }, `${u.name} lists Carol once, connected`);
    }
    const leftAfter = await Promise.all([alice, bob].map((u) => u.page.evaluate(() => window.voiceDebug.eventCounts().participantLeft || 0)));
    assert.deepEqual(leftAfter, leftBefore, 'nobody saw Carol leave: a resume, not a leave and a join');
    // Nothing to rebuild between Carol and Alice (the earlier one, who answers): the link that
    // carried the call through the cut is kept.
    assert.equal(await alice.page.evaluate(() => window.voiceDebug.linksCreated()), aliceLinks, 'Alice kept her peer connection to Carol');
    t.diagnostic(`(a) API Gateway cap on Carol: back in voice ${cutToInVoiceMs} ms, everyone hears everyone ${cutToAudibleMs} ms after the cut`);

    // (b) Every KVS signaling socket open now reaches the 1-hour cap.
    const linksBefore = await Promise.all(three.map((u) => u.page.evaluate(() => window.voiceDebug.linksCreated())));
    const opened = stack.stats.kvsConnections.length;
    const expiredBefore = stack.stats.kvsExpired.length;
    const masters = [...new Set(stack.stats.kvsConnections.filter((c) => c.role === 'MASTER').map((c) => c.arn))];
    const capped = stack.capKvsConnections(() => true, 0);
    assert.ok(capped >= 6, `at least the mesh's 6 signaling sockets (3 masters, 3 viewers) capped, got ${capped}`);
    const tKvs = Date.now();
    await until(() => stack.stats.kvsExpired.slice(expiredBefore).filter((e) => e.why === 'maxDuration').length >= capped, 'KVS to close the capped sockets');
    const live = (arn) => stack.stats.kvsConnections.slice(opened).some((c) => c.arn === arn && c.role === 'MASTER');
    await until(() => masters.filter(live).length >= 3, 'every page to re-open the master socket on its channel', 45000);
    t.diagnostic(`(b) KVS cap on ${capped} sockets: masters re-opened ${Date.now() - tKvs} ms later`);
    await hearEachOther(three);
    const linksAfter = await Promise.all(three.map((u) => u.page.evaluate(() => window.voiceDebug.linksCreated())));
    assert.deepEqual(linksAfter, linksBefore, 'the existing peer connections carried on (none rebuilt)');

    // (c) Every TURN credential handed out so far has expired; Dave joins now.
    const lastExpiry = Math.max(...stack.stats.iceServerConfigs.map((c) => c.expiresAt));
    await until(() => Date.now() > lastExpiry + 1000, 'the TURN credentials handed out so far to expire', TURN_TTL_S * 1000 + 5000);
    const dave = await newUser(browser, 'Dave', origin);
    await login(dave, stack.url);
    await joinRoom(dave, ROOM);
    await approve(alice, dave, ROOM);
    const tDave = Date.now();
    await joinVoice(dave);
    const four = [alice, bob, carol, dave];
    await waitMeshConnected(four, 30000);
    await Promise.all(three.map((u) => waitHears(u, [dave])));
    await waitHears(dave, three);
    t.diagnostic(`(b) Dave joins after the KVS cap: hears and is heard by all three ${Date.now() - tDave} ms after Join Voice`);
    for (const u of three) {
      const turn = await turnOf(u, dave.id);
      assert.ok(turn.issuedAtMs > lastExpiry - 1000, `${u.name}'s new link to Dave uses TURN credentials issued after the old ones expired (${turn.username}, old ones expired at ${lastExpiry})`);
    }
    // An ICE restart after expiry (Carol offers to Alice) also takes fresh credentials.
    await until(() => Date.now() > Math.max(...stack.stats.iceServerConfigs.map((c) => c.expiresAt)) + 1000, 'those credentials to expire too', TURN_TTL_S * 1000 + 5000);
    const tRestart = Date.now();
    assert.equal(await carol.page.evaluate((id) => window.voiceDebug.restartIce(id), alice.id), true, 'the ICE restart started');
    await waitIn(carol, 'the ICE restart counted', () => window.voiceDebug.iceRestarts() >= 1);
    await waitHears(carol, [alice]);
    await waitHears(alice, [carol]);
    const restarted = await turnOf(carol, alice.id);
    assert.ok(restarted.issuedAtMs >= tRestart - 1000, `Carol's ICE restart uses TURN credentials issued for it (${restarted.username})`);

    const ms = stack.stats.invocations.map((i) => i.ms).sort((a, b) => a - b);
    t.diagnostic(`${ms.length} Lambda invocations, median ${ms[Math.floor(ms.length / 2)]} ms, max ${ms.at(-1)} ms`);
    if (process.env.VERBOSE) for (const u of run.users) console.error(`--- ${u.name} ---\n${u.console.map((l) => `  ${l}`).join('\n')}`);
    for (const u of run.users) assert.deepEqual(u.errors.filter((e) => e.startsWith('pageerror')), [], `${u.name}: page errors`);
    assert.deepEqual(stack.stats.initErrors, []);
    assert.deepEqual(stack.stats.exits, []);
    assert.deepEqual(stack.stats.lambdaLog.filter((l) => l.level === 'ERROR' || l.raw), [], 'the function logged errors');
  } catch (e) {
    for (const u of run.users) {
      console.error(`--- ${u.name} ---`);
      for (const l of u.console.slice(-40)) console.error(`  ${l}`);
      for (const l of u.errors) console.error(`  ${l}`);
    }
    throw e;
  }
});
