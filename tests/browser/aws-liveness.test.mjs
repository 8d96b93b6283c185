// Liveness on the AWS deployment in its deployed shape (./aws-local-stack.mjs: raw WebSocket
// clients → API Gateway stand-in → the real voice-lambda bootstrap → moto with the template's
// tables and parameters, so VOICE_LIVENESS_TIMEOUT_SECS is the template's default, 10 s). API
// Gateway does not ping clients: a participant whose network died silently keeps an open,
// half-open connection and just stops sending. Its keepalives (getVoiceRoom, every 5 s from the
// web client while in voice) stop; the others' keepalives, each of which applies the liveness
// rule to the room, then take it out of voice (10 s timeout + 15 s grace + at most one 5 s
// keepalive period: ≤ 30 s after its last keepalive) and the others hear participantReconnecting
// and participantLeft. The test never invokes the sweep, and runs in real time: the only
// deadline it asserts is "gone from the others' lists within 35 s of the link dying".
//
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { BOOTSTRAP, startLocalStack, until } from './aws-local-stack.mjs';

const WAIT_MS = 15000;

function prerequisites() {
  const missing = [];
  if (!fs.existsSync(BOOTSTRAP)) missing.push(`no ${BOOTSTRAP} (cargo build -p voice-lambda --locked)`);
  for (const [cmd, args, what] of [
    ['python3', ['-c', 'import moto.server, boto3, yaml'], 'python3 with moto[server], boto3 and yaml (scripts/setup-test-deps)'],
    ['openssl', ['version'], 'openssl'],
  ]) {
    try {
      execFileSync(cmd, args, { stdio: 'ignore' });
    } catch {
      missing.push(`no ${what}`);
    }
  }
  return missing;
}
const missing = prerequisites();
if (missing.length && process.env.VOICE_TEST_STRICT === '1') throw new Error(`aws-liveness.test.mjs prerequisites missing: ${missing.join('; ')}`);
const skip = missing.length ? `SKIPPED: ${missing.join('; ')}` : false;

/** A raw client of the stack's WebSocket API (as aws-chat.test.mjs's). */
async function client(stack, label) {
  const socket = await stack.connect();
  const c = { label, socket, events: [], replies: new Map(), seq: 0 };
  socket.onmessage = (text) => {
    const m = JSON.parse(text);
    if (m.type === 'reply' && m.requestId) c.replies.set(m.requestId, m);
    else if (m.type === 'event') c.events.push(m);
  };
  c.ok = async (action, body = {}) => {
    const requestId = `${label}-${(c.seq += 1)}`;
    socket.send({ action, requestId, ...body });
    const r = await until(() => c.replies.get(requestId), `${label}'s reply to ${action}`, WAIT_MS);
    assert.equal(r.ok, true, `${label} ${action}: ${JSON.stringify(r.error)}`);
    return r.data;
  };
  c.event = async (name, pred = () => true) => {
    const e = await until(() => c.events.find((x) => x.event === name && pred(x)), `${label} to hear ${name}`, WAIT_MS);
    c.events.splice(c.events.indexOf(e), 1);
    return e;
  };
  return c;
}

/** The stored voice room item (DynamoDB JSON) of `voiceRoomId`. */
async function roomItem(stack, voiceRoomId) {
  const items = await stack.scan(stack.env.VOICE_ROOMS_TABLE);
  const it = items.find((i) => i.voiceRoomId && i.voiceRoomId.S === voiceRoomId);
  assert.ok(it, `the item of ${voiceRoomId}`);
  return it;
}

/** The web client's in-voice keepalive period (voice-server/static/config.js VOICE_KEEPALIVE_MS). */
const KEEPALIVE_MS = 5000;
/** The deadline: the 30 s of the rule with the defaults, and 5 s for the requests' latency. */
const GONE_WITHIN_MS = 35000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Sends `c`'s keepalive (getVoiceRoom for `roomId`) every 5 s, as the page does in voice, until
 * the returned function is called; that one throws the first failure of a keepalive, if any.
 */
function keepSending(c, roomId) {
  let stopped = false;
  let failure = null;
  const done = (async () => {
    while (!stopped && !failure) {
      await c.ok('getVoiceRoom', { roomId }).catch((e) => {
        failure = e;
      });
      if (!stopped) await sleep(KEEPALIVE_MS);
    }
  })();
  return async () => {
    stopped = true;
    await done;
    if (failure) throw failure;
  };
}

test('AWS stack, locally: a participant whose keepalives stop leaves the others\' lists through their keepalives, within 35 s, with no sweep', { skip, timeout: 180000 }, async (t) => {
  const stack = await startLocalStack({ params: { ChatMode: 'builtin' } });
  t.after(() => stack.close());
  assert.equal(String(stack.env.VOICE_LIVENESS_TIMEOUT_SECS), '10', 'the template\'s default');
  const alice = await client(stack, 'alice');
  const bob = await client(stack, 'bob');
  const ha = await alice.ok('hello', { name: 'Alice' });
  const hb = await bob.ok('hello', { name: 'Bob' });
  const { roomId } = await alice.ok('createRoom', { name: 'Standup' });
  await bob.ok('requestJoin', { roomId });
  await alice.ok('approveJoin', { roomId, userId: hb.userId });
  const { voiceRoomId } = await alice.ok('createVoiceRoom', { roomId });
  await alice.ok('getVoiceCredentials', { voiceRoomId });
  await bob.ok('getVoiceCredentials', { voiceRoomId });
  await alice.event('participantJoined', (e) => e.user === hb.userId);

  // Both send their keepalives for longer than the timeout: recorded, and nobody is taken for dead.
  const stopAlice = keepSending(alice, roomId);
  const stopBob = keepSending(bob, roomId);
  await sleep(3 * KEEPALIVE_MS);
  await stopBob();
  // Bob's network dies silently right after his last keepalive: his connection stays open at API
  // Gateway (no $disconnect), he sends nothing more. Alice's page keeps sending every 5 s.
  const diedAt = Date.now();
  const item = await roomItem(stack, voiceRoomId);
  assert.ok(item.participants.L.every((p) => p.M.lastSeen), 'each keepalive recorded');
  assert.equal(
    [...alice.events, ...bob.events].filter((e) => e.event === 'participantReconnecting').length,
    0,
    'nobody sending keepalives is taken for dead',
  );

  const left = await until(
    () => alice.events.find((e) => e.event === 'participantLeft' && e.user === hb.userId),
    'bob to leave alice\'s list',
    GONE_WITHIN_MS - (Date.now() - diedAt),
  );
  assert.equal(left.reason, 'disconnected');
  assert.ok(
    alice.events.some((e) => e.event === 'participantReconnecting' && e.user === hb.userId),
    'reconnecting first',
  );
  await stopAlice();
  const { voiceRoom } = await alice.ok('getVoiceRoom', { roomId });
  assert.deepEqual(
    voiceRoom.participants.map((p) => p.userId),
    [ha.userId],
    'only alice is left',
  );
});
