// Recording on the AWS deployment (issue 17 item 3), in its deployed shape on this machine
// (./aws-local-stack.mjs: the real voice-lambda bootstrap, the template's tables and recordings
// bucket on moto, API Gateway/STS/KVS/S3 stand-ins on 127.0.0.1):
// 1. over the WebSocket API with raw clients: who may start a recording, mint upload URLs,
//    list and download (the domain's rules, through the Lambda), and a part PUT to its presigned
//    URL becoming the one downloadable object;
// 2. in headless Chromium, ./recording.mjs (the self-hosted recording test, unchanged in what
//    it checks): three users in voice, the host records while the others talk, the recorder's
//    browser PUTs parts to presigned S3 URLs, an approved member downloads the assembled file
//    through its presigned GET and decodes it, with audio from the others and from the recorder.
//
// Needs target/debug/voice-lambda (cargo build -p voice-lambda --locked), python3 with moto,
// openssl, /usr/bin/chromium (or CHROMIUM_PATH) and playwright-core. Without them: skipped, or a
// failure under VOICE_TEST_STRICT=1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BOOTSTRAP, rawClient, startLocalStack } from './aws-local-stack.mjs';
import { CHROMIUM } from './pages.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

function prerequisites() {
  const missing = [];
  if (!fs.existsSync(BOOTSTRAP)) missing.push(`no ${BOOTSTRAP} (cargo build -p voice-lambda --locked)`);
  try {
    execFileSync('python3', ['-c', 'import moto.server, boto3, yaml'], { stdio: 'ignore' });
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    missing.push('no python3 with moto, or no openssl (scripts/setup-test-deps)');
  }
  return missing;
}
const missing = prerequisites();
const browserMissing = [...missing];
if (!fs.existsSync(CHROMIUM)) browserMissing.push(`no Chromium at ${CHROMIUM}`);
if (!fs.existsSync(path.join(HERE, 'node_modules', 'playwright-core'))) browserMissing.push('no playwright-core (cd tests/browser && npm ci)');
if (browserMissing.length && process.env.VOICE_TEST_STRICT === '1') throw new Error(`aws-recording.test.mjs prerequisites missing: ${browserMissing.join('; ')}`);

/** One HTTPS request to the stack (its test CA): status and body. */
function fetchStack(stack, url, { method = 'GET', body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca: stack.ca, headers: body ? { 'content-type': 'audio/webm', 'content-length': body.length } : {} }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('AWS recording over the API: only the host records, only its recorder uploads, only members list and download', { skip: missing.length ? `SKIPPED: ${missing.join('; ')}` : false, timeout: 120000 }, async (t) => {
  const stack = await startLocalStack({ workers: 2, params: { ChatMode: 'builtin' } });
  t.after(() => stack.close());
  const [owen, pat, eve] = await Promise.all(['owen', 'pat', 'eve'].map((n) => rawClient(stack, n)));
  const owenMe = await owen.ok('hello', { name: 'Owen' });
  const patMe = await pat.ok('hello', { name: 'Pat' });
  await eve.ok('hello', { name: 'Eve' });
  const { roomId } = await owen.ok('createRoom', { name: 'Recorded' });
  await pat.ok('requestJoin', { roomId });
  await owen.ok('approveJoin', { roomId, userId: patMe.userId });
  const { voiceRoomId } = await owen.ok('createVoiceRoom', { roomId });
  await owen.ok('getVoiceCredentials', { voiceRoomId });
  await pat.ok('getVoiceCredentials', { voiceRoomId });

  // A participant who is neither the voice room's master nor the chat room's admin.
  const patStart = await pat.request('startRecording', { voiceRoomId });
  assert.equal(patStart.ok, false);
  assert.equal(patStart.error.code, 'NOT_ALLOWED');

  const started = await owen.ok('startRecording', { voiceRoomId });
  const grant = started.upload;
  assert.ok(!grant.uploadToken && !grant.uploadUrl, 'no server upload endpoint on AWS');
  assert.ok(grant.parts.length > 0 && grant.chunksPerPart > 0, JSON.stringify(grant).slice(0, 300));
  const bucket = stack.env.RECORDINGS_BUCKET;
  // The chat's room ids need no escaping in a key (S3Recordings escapes any that would).
  assert.match(roomId, /^[A-Za-z0-9_-]+$/);
  const segment = roomId;
  for (const p of grant.parts) {
    const u = new URL(p.url);
    assert.equal(u.pathname, `/${bucket}/recordings/${segment}/${grant.recordingId}.parts/${String(p.part).padStart(6, '0')}`, 'each URL is for its one part key');
    assert.equal(u.searchParams.get('X-Amz-Expires'), '300', 'upload URLs live 5 minutes');
  }
  // The reply fits API Gateway's 128 KB with room for a real session token in every URL.
  assert.ok(JSON.stringify(started).length < 64 * 1024, `startRecording reply is ${JSON.stringify(started).length} bytes`);

  // Only the recorder's connection gets more URLs; not another participant, not a non-member.
  for (const [who, c] of [['Pat', pat], ['Eve', eve]]) {
    const r = await c.request('recordingUploadUrls', { voiceRoomId, recordingId: grant.recordingId, from: 1 });
    assert.equal(r.ok, false, `${who} got upload URLs`);
    assert.equal(r.error.code, 'NOT_ALLOWED', `${who}: ${JSON.stringify(r.error)}`);
  }
  const more = await owen.ok('recordingUploadUrls', { voiceRoomId, recordingId: grant.recordingId, from: grant.parts.length });
  assert.equal(more.parts[0].part, grant.parts.length);

  const audio = Buffer.from('pretend-webm-part-0;');
  assert.equal((await fetchStack(stack, grant.parts[0].url, { method: 'PUT', body: audio })).status, 200);
  assert.equal((await fetchStack(stack, grant.parts[1].url, { method: 'PUT', body: Buffer.from('part-1') })).status, 200);
  // Finishing a running recording is refused: it would be assembled while still growing.
  const early = await owen.request('finishRecording', { voiceRoomId, recordingId: grant.recordingId });
  assert.equal(early.error && early.error.code, 'RECORDING_RUNNING');
  // Before it is assembled, members see it as being prepared, without a link.
  const preparing = await pat.ok('listRecordings', { roomId });
  assert.equal(preparing.recordings.length, 1);
  assert.equal(preparing.recordings[0].preparing, true);
  assert.equal(preparing.recordings[0].downloadUrl, undefined);

  await owen.ok('stopRecording', { voiceRoomId });
  const patFinish = await pat.request('finishRecording', { voiceRoomId, recordingId: grant.recordingId });
  assert.equal(patFinish.error && patFinish.error.code, 'NOT_ALLOWED', 'only the recorder finishes');
  await owen.ok('finishRecording', { voiceRoomId, recordingId: grant.recordingId });

  const listed = await pat.ok('listRecordings', { roomId });
  const entry = listed.recordings[0];
  assert.equal(entry.recordingId, grant.recordingId);
  assert.equal(entry.by, owenMe.userId);
  assert.ok(!entry.preparing);
  const dl = new URL(entry.downloadUrl);
  assert.equal(dl.pathname, `/${bucket}/recordings/${segment}/${grant.recordingId}.webm`, 'the link is for the one assembled object');
  assert.equal(dl.searchParams.get('X-Amz-Expires'), '300', 'download links live 5 minutes');
  const got = await fetchStack(stack, entry.downloadUrl);
  assert.equal(got.status, 200);
  assert.equal(got.body.toString(), 'pretend-webm-part-0;part-1', 'the parts in order');
  assert.equal(entry.bytes, got.body.length);

  // A non-member can neither list nor get a link.
  const eveList = await eve.request('listRecordings', { roomId });
  assert.equal(eveList.ok, false);
  assert.match(eveList.error.code, /^NOT_(MEMBER|APPROVED)$/);
  // Parts after the stop and the finish are refused by the domain: no new URLs.
  const late = await owen.request('recordingUploadUrls', { voiceRoomId, recordingId: grant.recordingId, from: 2 });
  assert.equal(late.ok, true, 'within the final-chunk grace the recorder may still upload');
  // Nothing but the function's credentials reached S3.
  assert.ok(stack.stats.s3Calls.every((c) => c.status !== null && c.status < 500), JSON.stringify(stack.stats.s3Calls.filter((c) => c.status >= 500)));
});

test('AWS recording in Chromium: the host records three people, a member downloads a playable file through its presigned URL', { skip: browserMissing.length ? `SKIPPED: ${browserMissing.join('; ')}` : false, timeout: 240000 }, async (t) => {
  const stack = await startLocalStack({ workers: 3, params: { ChatMode: 'builtin' } });
  t.after(() => stack.close());
  const child = spawn(process.execPath, [path.join(HERE, 'recording.mjs'), stack.url], { env: { RECORDING_DEADLINE_MS: '200000', ...process.env, RECORDING_TEST_CERTIFICATE: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const out = [];
  const err = [];
  child.stdout.on('data', (d) => out.push(d));
  child.stderr.on('data', (d) => err.push(d));
  const code = await new Promise((resolve) => child.on('exit', resolve));
  let summary = null;
  try {
    summary = JSON.parse(Buffer.concat(out).toString());
  } catch {
    // reported below
  }
  const stderr = Buffer.concat(err).toString();
  const why = stderr.split('\n').filter((l) => /RECORDING FAILED|requestfailed|recording part|finishRecording|upload/.test(l)).slice(0, 20).join('\n');
  assert.ok(summary && summary.ok, `recording.mjs exited ${code} at ${summary && summary.failedStep}: ${summary && summary.error}\n${why}`);
  const rec = summary.recording;
  assert.equal(rec.file.ebmlHeader, '1a45dfa3');
  assert.ok(rec.file.seconds > 5, JSON.stringify(rec.file));
  assert.ok(rec.file.peaks.othersOnly > 0.01, 'Bob and Carol are in the file');
  assert.ok(rec.file.peaks.recorderOnly > 0.01, 'the recorder is in the file');
  assert.ok(rec.file.peaks.nobody < 0.005, 'the silent phase is silent');
  assert.equal(rec.consent.order[0], 'asked');
  // It went through S3: parts PUT by the browser to presigned URLs, the file read through one.
  const calls = stack.stats.s3Calls;
  const parts = calls.filter((c) => c.presigned && c.method === 'PUT' && c.path.includes(`/${rec.recordingId}.parts/`));
  assert.ok(parts.length >= 2 && parts.every((c) => c.status === 200), `part PUTs: ${JSON.stringify(parts.map((c) => c.status))}`);
  const downloads = calls.filter((c) => c.presigned && c.method === 'GET' && c.path.endsWith(`/${rec.recordingId}.webm`));
  assert.ok(downloads.some((c) => c.status === 200), 'the member downloaded the assembled object');
  t.diagnostic(`${parts.length} parts, ${rec.file.bytes} bytes, ${rec.file.seconds} s`);
});
