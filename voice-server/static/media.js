// Pure rules for video in the mesh (no browser APIs, so node:test loads it):
// - what each video sender may send, chosen from the number of peers it sends to (in a mesh
//   every sender encodes once per peer, so the per-link cap shrinks as the room grows);
// - which of a link's video transceivers carries what: every link is offered with one audio and
//   two video transceivers, in that order, so both sides agree without any extra signaling:
//   the first video transceiver carries the camera, the second the screen share.
// docs/web-client.md, "Video and screen sharing", has the table and the room limits.

/** Slots of a link's video transceivers, in m-line order. */
export const VIDEO_SLOTS = ['camera', 'screen'];

/**
 * Camera caps per peer count: [max peers, maxBitrate (bit/s), scaleResolutionDownBy, maxFramerate].
 * The fake/real camera gives 640x480 or 1280x720; the scale applies to that.
 */
export const CAMERA_CAPS = [
  [1, 1_200_000, 1, 30],
  [2, 800_000, 1, 30],
  [3, 500_000, 1.5, 24],
  [5, 300_000, 2, 20],
  [Infinity, 150_000, 3, 15],
];

/** Screen share caps: detail matters more than motion, so full resolution and a low frame rate. */
export const SCREEN_CAPS = [
  [1, 2_500_000, 1, 15],
  [3, 1_500_000, 1, 10],
  [5, 1_000_000, 1, 8],
  [Infinity, 600_000, 1.5, 5],
];

/**
 * The encoding limits for one sender of `slot` ('camera' | 'screen') when `peers` peers receive
 * it: { maxBitrate, scaleResolutionDownBy, maxFramerate }. Fewer than one peer counts as one.
 */
export function videoCaps(slot, peers) {
  const table = slot === 'screen' ? SCREEN_CAPS : CAMERA_CAPS;
  const n = Math.max(1, Math.floor(Number(peers) || 0));
  const row = table.find((r) => n <= r[0]);
  return { maxBitrate: row[1], scaleResolutionDownBy: row[2], maxFramerate: row[3] };
}

/**
 * The video transceivers of a link in slot order: those whose receiver is video, in the order
 * RTCPeerConnection lists them (creation order = m-line order on both sides here).
 */
export function videoTransceivers(transceivers) {
  return (transceivers || []).filter((t) => t.receiver && t.receiver.track && t.receiver.track.kind === 'video').slice(0, VIDEO_SLOTS.length);
}

/** The direction a video transceiver should have: we always receive; we send when we have a track. */
export function directionFor(sending) {
  return sending ? 'sendrecv' : 'recvonly';
}

/** Whether a negotiated direction (`currentDirection`) means the remote side sends to us. */
export function receives(currentDirection) {
  return currentDirection === 'sendrecv' || currentDirection === 'recvonly';
}

/**
 * The video codecs we offer: VP8 (every browser decodes it) and its retransmission (rtx) only.
 * Chromium offers about fifteen video codecs per m-line, which would put an offer with two video
 * m-lines over the 10 KiB signaling message limit (KVS's, and the relay's MAX_PAYLOAD_BYTES).
 * `codecs`: RTCRtpReceiver.getCapabilities('video').codecs. Empty list if VP8 is missing.
 */
export function preferredVideoCodecs(codecs) {
  const list = codecs || [];
  const vp8 = list.filter((c) => /^video\/vp8$/i.test(c.mimeType));
  if (!vp8.length) return [];
  return [...vp8, ...list.filter((c) => /^video\/rtx$/i.test(c.mimeType))];
}

/**
 * The audio codecs we offer: Opus only (every browser has it; the app uses no DTMF, no G.711,
 * no RED). Chromium offers about ten audio codecs; each costs offer and answer bytes.
 * `codecs`: RTCRtpReceiver.getCapabilities('audio').codecs. Empty list if Opus is missing.
 */
export function preferredAudioCodecs(codecs) {
  return (codecs || []).filter((c) => /^audio\/opus$/i.test(c.mimeType));
}

/**
 * RTP header extensions the app needs, by URI; every other one is stopped (not offered):
 * - sdes:mid: BUNDLE demultiplexing of the one transport's m-lines;
 * - transport-wide-cc-01: send-side bandwidth estimation (Chromium's congestion control), which
 *   the per-peer video caps rely on to adapt within them; abs-send-time (REMB, the older
 *   receive-side estimate) is redundant with it;
 * - ssrc-audio-level: the audio level of received packets (RTCRtpReceiver.getSynchronizationSources);
 * - video-orientation: a phone's camera rotation travels as metadata, not re-encoded.
 * Stopped: toffset, abs-send-time, playout-delay, video-content-type, video-timing, color-space,
 * rtp-stream-id / repaired-rtp-stream-id (simulcast, which the app does not use), and any
 * others a browser adds. About 600 bytes less per video m-line, 150 per audio one.
 */
export const NEEDED_HEADER_EXTENSIONS = [
  'urn:ietf:params:rtp-hdrext:sdes:mid',
  'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
  'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  'urn:3gpp:video-orientation',
];

/**
 * The list for RTCRtpTransceiver.setHeaderExtensionsToNegotiate: `exts` (from
 * getHeaderExtensionsToNegotiate) with every extension we do not need stopped, the needed ones
 * left as the browser had them.
 */
export function headerExtensionsToNegotiate(exts) {
  return (exts || []).map((e) => (NEEDED_HEADER_EXTENSIONS.includes(e.uri) ? e : { ...e, direction: 'stopped' }));
}
