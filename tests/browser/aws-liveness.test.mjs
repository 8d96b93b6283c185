// Liveness on the AWS deployment in its deployed shape (./aws-local-stack.mjs: raw WebSocket
// clients → API Gateway stand-in → the real voice-lambda bootstrap → moto with the template's
// tables and parameters, so VOICE_LIVENESS_TIMEOUT_SECS is the template's default, 50 s). API
// Gateway does not ping clients: a participant whose network died silently keeps an open,
// half-open connection and just stops sending. Its keepalives (getVoiceRoom, every 20 s from the
// web client while in voice) stop; the scheduled sweep then takes it out of voice and the others
// hear participantReconnecting and participantLeft. The function runs on the system clock, so
// instead of waiting 65 s the test ages the silent participant's stored last-heard time.
//
// Needs target/debug/voice-lambda (cargo build -p voice-lambda --locked), python3 with moto
// and boto3, and openssl. Without them the test is skipped, or fails under VOICE_TEST_STRICT=1.

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

/** Moves `userId`'s join and last keepalive `agoMs` into the past in the stored item, as if that long had passed. */
async function age(stack, voiceRoomId, userId, agoMs) {
  const it = await roomItem(stack, voiceRoomId);
  const past = { N: String(Date.now() - agoMs) };
  for (const p of it.participants.L) {
    if (p.M.userId.S !== userId) continue;
    p.M.joinedAt = past;
    if (p.M.lastSeen) p.M.lastSeen = past;
  }
  await stack.putItem(stack.env.VOICE_ROOMS_TABLE, it);
}

test('AWS stack, locally: a participant whose keepalives stop leaves the others\' lists after the sweep', { skip, timeout: 180000 }, async (t) => {
  const stack = await startLocalStack({ params: { ChatMode: 'builtin' } });
  t.after(() => stack.close());
  assert.equal(String(stack.env.VOICE_LIVENESS_TIMEOUT_SECS), '50', 'the template\'s default');
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

  // 40 s into the call both send keepalives: recorded, and the sweep keeps everyone.
  for (const [c, h] of [
    [alice, ha],
    [bob, hb],
  ]) {
    await age(stack, voiceRoomId, h.userId, 40000);
    await c.ok('getVoiceRoom', { roomId });
  }
  const item = await roomItem(stack, voiceRoomId);
  assert.ok(item.participants.L.every((p) => p.M.lastSeen), 'each keepalive recorded');
  let report = await stack.sweep();
  assert.equal(report.participantsReconnecting, 0);
  assert.equal(report.participantsRemoved, 0);

  // Bob's network dies silently: his connection stays open at API Gateway, he sends nothing more.
  // 70 s later (the 50 s timeout plus the 15 s grace), Alice still sending keepalives:
  await age(stack, voiceRoomId, hb.userId, 70000);
  await alice.ok('getVoiceRoom', { roomId });
  report = await stack.sweep();
  assert.equal(report.participantsReconnecting, 1, JSON.stringify(report));
  assert.equal(report.participantsRemoved, 1, JSON.stringify(report));
  assert.equal(report.failures, 0);
  await alice.event('participantReconnecting', (e) => e.user === hb.userId);
  const left = await alice.event('participantLeft', (e) => e.user === hb.userId);
  assert.equal(left.reason, 'disconnected');
  const { voiceRoom } = await alice.ok('getVoiceRoom', { roomId });
  assert.deepEqual(
    voiceRoom.participants.map((p) => p.userId),
    [ha.userId],
    'only alice is left',
  );
});
