// Pure video rules of the web client (voice-server/static/media.js): the send caps per peer
// count, the codec list that keeps offers small, and the slot bookkeeping of video transceivers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CAMERA_CAPS, NEEDED_HEADER_EXTENSIONS, SCREEN_CAPS, VIDEO_SLOTS, directionFor, headerExtensionsToNegotiate, preferredAudioCodecs, preferredVideoCodecs, receives, videoCaps, videoTransceivers } from '../../voice-server/static/media.js';

test('camera caps shrink as the number of peers grows, never below a usable floor', () => {
  let prev = null;
  for (let n = 1; n <= 12; n++) {
    const c = videoCaps('camera', n);
    assert.ok(c.maxBitrate >= 100_000 && c.scaleResolutionDownBy >= 1 && c.maxFramerate >= 10, `n=${n}`);
    if (prev) {
      assert.ok(c.maxBitrate <= prev.maxBitrate, `bitrate not larger at n=${n}`);
      assert.ok(c.scaleResolutionDownBy >= prev.scaleResolutionDownBy, `resolution not larger at n=${n}`);
      assert.ok(c.maxFramerate <= prev.maxFramerate, `frame rate not larger at n=${n}`);
    }
    prev = c;
  }
  assert.deepEqual(videoCaps('camera', 1), { maxBitrate: 1_200_000, scaleResolutionDownBy: 1, maxFramerate: 30 });
  assert.deepEqual(videoCaps('camera', 3), { maxBitrate: 500_000, scaleResolutionDownBy: 1.5, maxFramerate: 24 });
  assert.deepEqual(videoCaps('camera', 9), { maxBitrate: 150_000, scaleResolutionDownBy: 3, maxFramerate: 15 });
});

test('total camera upload stays bounded: peers × cap never exceeds 2 Mbit/s up to 12 peers', () => {
  for (let n = 1; n <= 12; n++) assert.ok(n * videoCaps('camera', n).maxBitrate <= 2_000_000, `n=${n}`);
});

test('screen caps keep full resolution in small rooms and trade frame rate first', () => {
  assert.equal(videoCaps('screen', 1).scaleResolutionDownBy, 1);
  assert.equal(videoCaps('screen', 5).scaleResolutionDownBy, 1);
  assert.ok(videoCaps('screen', 4).maxFramerate < videoCaps('screen', 1).maxFramerate);
  assert.ok(SCREEN_CAPS.at(-1)[0] === Infinity && CAMERA_CAPS.at(-1)[0] === Infinity, 'every room size has a row');
});

test('odd peer counts count as one', () => {
  for (const n of [0, -3, NaN, undefined, '2x']) assert.deepEqual(videoCaps('camera', n), videoCaps('camera', 1));
  assert.deepEqual(videoCaps('camera', 2.7), videoCaps('camera', 2));
});

test('only VP8 and rtx are offered; nothing when VP8 is missing', () => {
  const caps = ['video/VP8', 'video/rtx', 'video/VP9', 'video/H264', 'video/AV1', 'video/red', 'video/ulpfec'].map((mimeType) => ({ mimeType }));
  assert.deepEqual(preferredVideoCodecs(caps).map((c) => c.mimeType), ['video/VP8', 'video/rtx']);
  assert.deepEqual(preferredVideoCodecs([{ mimeType: 'video/H264' }]), []);
  assert.deepEqual(preferredVideoCodecs(undefined), []);
});

test('video transceivers in slot order: audio and extra ones ignored', () => {
  const t = (kind, name) => ({ name, receiver: { track: { kind } } });
  const list = [t('audio', 'a'), t('video', 'cam'), t('video', 'scr'), t('video', 'extra')];
  assert.deepEqual(videoTransceivers(list).map((x) => x.name), ['cam', 'scr']);
  assert.deepEqual(VIDEO_SLOTS, ['camera', 'screen']);
  assert.deepEqual(videoTransceivers(undefined), []);
});

test('directions: we always receive, send only with a track; receiving read from currentDirection', () => {
  assert.equal(directionFor(true), 'sendrecv');
  assert.equal(directionFor(false), 'recvonly');
  assert.equal(receives('sendrecv'), true);
  assert.equal(receives('recvonly'), true);
  assert.equal(receives('sendonly'), false);
  assert.equal(receives('inactive'), false);
  assert.equal(receives(null), false);
});

test('audio is offered as Opus only', () => {
  const caps = ['audio/opus', 'audio/red', 'audio/G722', 'audio/PCMU', 'audio/PCMA', 'audio/CN', 'audio/telephone-event'].map((mimeType) => ({ mimeType, clockRate: 48000 }));
  assert.deepEqual(preferredAudioCodecs(caps).map((c) => c.mimeType), ['audio/opus']);
  assert.deepEqual(preferredAudioCodecs([{ mimeType: 'audio/PCMU' }]), []);
});

test('header extensions: mid, transport-wide-cc, audio level and video orientation kept as they were, the rest stopped', () => {
  const exts = [
    ['urn:ietf:params:rtp-hdrext:sdes:mid', 'sendrecv'],
    ['http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01', 'sendrecv'],
    ['urn:ietf:params:rtp-hdrext:ssrc-audio-level', 'sendrecv'],
    ['urn:3gpp:video-orientation', 'sendrecv'],
    ['http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time', 'sendrecv'],
    ['urn:ietf:params:rtp-hdrext:toffset', 'sendrecv'],
    ['http://www.webrtc.org/experiments/rtp-hdrext/playout-delay', 'sendrecv'],
    ['urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id', 'sendrecv'],
    ['http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time', 'stopped'],
  ].map(([uri, direction]) => ({ uri, direction }));
  const out = headerExtensionsToNegotiate(exts);
  assert.equal(out.length, exts.length, 'the browser wants the whole list back');
  assert.deepEqual(out.filter((e) => e.direction !== 'stopped').map((e) => e.uri), NEEDED_HEADER_EXTENSIONS);
  assert.deepEqual(headerExtensionsToNegotiate(undefined), []);
});
