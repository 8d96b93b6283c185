// Every refusal a person can see is in plain words (issue 12, "The page tells the truth"): each
// wire error code of docs/protocol.md ("Error codes") has its own sentence in
// voice-server/static/messages.js, the code and the server's own message go to the console
// (`warn`), never into the sentence. The recording codes are worded by recording.js
// (recordingErrorText), next to the recording controls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { ApiError, describeError } from '../../voice-server/static/messages.js';

const PROTOCOL = new URL('../../docs/protocol.md', import.meta.url);
const RECORDING_CODES = new Set(['ALREADY_RECORDING', 'NOT_RECORDING', 'RECORDING_UNAVAILABLE', 'RECORDING_RUNNING', 'RECORDING_CLOSED']);

/** The codes of docs/protocol.md's "Error codes" table, in order. */
function protocolCodes() {
  const text = fs.readFileSync(PROTOCOL, 'utf8');
  const at = text.indexOf('\n## Error codes');
  assert.ok(at >= 0, 'docs/protocol.md has an "Error codes" section');
  const section = text.slice(at + 1).split(/\n## /)[0];
  return [...section.matchAll(/^\| `([A-Z_]+)`/gm)].map((m) => m[1]);
}

test('every wire error code has its own plain sentence; the code and the server text stay in the console', () => {
  const codes = protocolCodes();
  assert.ok(codes.length >= 20, `read ${codes.length} codes from docs/protocol.md`);
  const generic = describeError(new ApiError('x', { code: 'NO_SUCH_CODE_EVER', message: 'm' }));
  for (const code of codes.filter((c) => !RECORDING_CODES.has(c)).concat(['DISCONNECTED', 'TIMEOUT'])) {
    const logged = [];
    const text = describeError(new ApiError('someAction', { code, message: 'server says: raw details' }), { warn: (l) => logged.push(l) });
    assert.notEqual(text, generic, `${code} has words of its own`);
    assert.doesNotMatch(text, /\b[A-Z]{2,}_[A-Z_]+\b|\(([A-Z_]+)\)/, `${code}: no code in "${text}"`);
    assert.ok(!text.includes('raw details'), `${code}: the server's message stays in the console`);
    assert.ok(logged.some((l) => l.includes(code) && l.includes('raw details')), `${code} logged with the server's message`);
  }
});

test('an unknown code still reads as a sentence; a non-API error keeps its own (already plain) message', () => {
  assert.match(describeError(new ApiError('x', { code: 'NEW_CODE' })), /^Something went wrong/);
  assert.equal(describeError(new Error('Microphone access denied. Allow it.')), 'Microphone access denied. Allow it.');
  assert.match(describeError(new ApiError('serverMute', { code: 'NOT_ALLOWED' })), /mute others/, 'action-specific words');
});

test('a refused ban says why in plain words (issue 13: bans per room are bounded, made-up ids refused)', () => {
  assert.match(describeError(new ApiError('banMember', { code: 'QUOTA_EXCEEDED' })), /as many bans as the server allows/);
  assert.match(describeError(new ApiError('banMember', { code: 'BAD_REQUEST' })), /never signed in/);
  assert.doesNotMatch(describeError(new ApiError('requestJoin', { code: 'QUOTA_EXCEEDED' })), /bans/);
});
