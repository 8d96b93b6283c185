// Recording with consent (docs/protocol.md, "Recording"). The server's domain decides who may
// record and tells everyone; this module only:
// - shows a persistent "● Recording" to everyone looking at the room, and a plain-words notice
//   that says who records and that members can download it;
// - asks a joiner before their microphone is opened when the room is being recorded;
// - for the master or the chat admin in the room: a Record / Stop recording button;
// - in the recorder's browser: mixes every remote audio track and the own microphone with
//   WebAudio into one stream, records it with MediaRecorder (Opus in WebM) in 1 s chunks and
//   uploads them in order over HTTP with the upload token startRecording returned (self-hosted),
//   or, when the grant carries `parts` (AWS), PUTs every `chunksPerPart` chunks as one part to
//   its own presigned S3 URL, asks for more URLs (recordingUploadUrls) before they run out, and
//   says finishRecording once the last part is up, so the file is assembled at once;
// - lists the room's recordings with download links (each link is for this user only and
//   short-lived, so the list is fetched again when the room is opened or a recording stops).
//
// app.js calls: consentToJoin(chatRoomId) before opening the microphone, onEvent(ev) for
// recordingStarted/recordingStopped, render(state) after each render.

import { amAdmin, displayName } from './store.js';
import { $, h } from './views.js';

const CHUNK_MS = 1000;
const MAX_ATTEMPTS = 5;
const CONSENT_KEY = 'voiceChat.recordingConsent';

/** The recording a room view says is running, if any. */
export function runningRecording(view) {
  return view && view.status === 'active' && view.recording ? view.recording : null;
}

/** Size in words: "1.2 MB". */
export function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** Plain words for a refusal of the recording actions and routes. */
export function recordingErrorText(e) {
  switch (e && e.code) {
    case 'NOT_ALLOWED':
      return 'Only the host of the voice chat or the room admin can start or stop a recording.';
    case 'NOT_PARTICIPANT':
      return 'Join the voice chat first: the recording is made in your browser.';
    case 'ALREADY_RECORDING':
      return 'This voice chat is already being recorded.';
    case 'NOT_RECORDING':
      return 'This voice chat is not being recorded.';
    case 'RECORDING_UNAVAILABLE':
      return 'Recording is not available on this server.';
    case 'RECORDING_TOO_LARGE':
      return 'The recording reached the size limit of this server and stopped. What was recorded so far is saved.';
    case 'RECORDING_CLOSED':
      return 'The recording was stopped. What was recorded so far is saved.';
    case 'RECORDING_RUNNING':
      return 'The recording is still running: stop it first, then it is saved.';
    case 'UNAUTHORIZED':
      return 'The permission to upload this recording has expired. What was recorded so far is saved.';
    case 'NOT_MEMBER':
    case 'NOT_APPROVED':
      return 'Only approved members of this room can see its recordings.';
    default:
      return 'Something went wrong with the recording. Try again in a moment.';
  }
}

function loadConsents() {
  try {
    return new Set(JSON.parse(sessionStorage.getItem(CONSENT_KEY) || '[]'));
  } catch {
    return new Set();
  }
}

/** Mixes a session's audio (own microphone and every remote audio track) into one stream. */
class Mixer {
  constructor(AudioContextImpl, session) {
    this.ctx = new AudioContextImpl();
    this.dest = this.ctx.createMediaStreamDestination();
    this.session = session;
    this.sources = new Map(); // track id → source node
    this.sync();
    this.timer = setInterval(() => this.sync(), 500);
  }

  tracks() {
    const out = [];
    if (this.session.stream) out.push(...this.session.stream.getAudioTracks());
    for (const link of this.session.peers.values()) {
      if (link.remoteStream) out.push(...link.remoteStream.getAudioTracks());
    }
    return out.filter((t) => t.readyState === 'live');
  }

  /** Adds tracks that appeared (a peer joined or came back), drops those that ended. */
  sync() {
    const live = this.tracks();
    const ids = new Set(live.map((t) => t.id));
    for (const [id, node] of this.sources) {
      if (!ids.has(id)) {
        node.disconnect();
        this.sources.delete(id);
      }
    }
    for (const t of live) {
      if (this.sources.has(t.id)) continue;
      const node = this.ctx.createMediaStreamSource(new MediaStream([t]));
      node.connect(this.dest);
      this.sources.set(t.id, node);
    }
  }

  close() {
    clearInterval(this.timer);
    for (const node of this.sources.values()) node.disconnect();
    this.sources.clear();
    this.ctx.close().catch(() => {});
  }
}

/** One recording in this browser: mixing, MediaRecorder, ordered chunk uploads. */
class Recorder {
  constructor(grant, session, deps, onDone) {
    this.grant = grant;
    this.deps = deps;
    this.onDone = onDone;
    this.seq = 0;
    this.queue = Promise.resolve();
    this.pending = 0;
    this.uploadedBytes = 0;
    this.failed = null;
    this.stopped = false;
    // AWS: part number → presigned PUT URL; chunks waiting to make a part.
    this.parts = Array.isArray(grant.parts) && grant.parts.length ? new Map(grant.parts.map((p) => [p.part, p.url])) : null;
    this.chunksPerPart = Math.max(1, grant.chunksPerPart || 1);
    this.group = [];
    this.nextPart = 0;
    this.mixer = new Mixer(deps.AudioContext || window.AudioContext, session);
    const type = 'audio/webm;codecs=opus';
    const options = window.MediaRecorder.isTypeSupported(type) ? { mimeType: type, audioBitsPerSecond: 64000 } : {};
    this.mr = new window.MediaRecorder(this.mixer.dest.stream, options);
    this.mr.ondataavailable = (e) => {
      if (e.data && e.data.size > 0) this.enqueue(e.data);
    };
    this.mr.onstop = () => {
      // The last chunk was handed to ondataavailable before onstop.
      if (this.parts) this.flushGroup();
      this.queue = this.queue.then(() => this.finish());
    };
    this.mr.start(CHUNK_MS);
  }

  enqueue(blob) {
    if (this.failed) return;
    if (this.parts) {
      this.group.push(blob);
      if (this.group.length >= this.chunksPerPart) this.flushGroup();
      return;
    }
    const seq = this.seq++;
    this.pending += 1;
    this.queue = this.queue.then(() => this.upload(seq, blob)).finally(() => {
      this.pending -= 1;
    });
  }

  async upload(seq, blob) {
    if (this.failed) return;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
      let res = null;
      try {
        res = await fetch(this.grant.uploadUrl, {
          method: 'POST',
          headers: { Authorization: `Bearer ${this.grant.uploadToken}`, 'X-Chunk-Seq': String(seq), 'Content-Type': 'application/octet-stream' },
          body: blob,
        });
      } catch (e) {
        this.deps.warn(`recording upload ${seq}: ${e.message}`);
      }
      if (res && res.ok) {
        const body = await res.json().catch(() => ({}));
        if (typeof body.bytes === 'number') this.uploadedBytes = body.bytes;
        if (this.onProgress) this.onProgress();
        return;
      }
      if (res && res.status !== 408 && res.status < 500) {
        const body = await res.json().catch(() => ({}));
        this.fail({ code: body.code || `HTTP_${res.status}` });
        return;
      }
      await new Promise((r) => setTimeout(r, 300 * 2 ** attempt));
    }
    this.fail({ code: 'UNAVAILABLE' });
  }

  /** AWS: the chunks gathered so far become the next part, uploaded in order. */
  flushGroup() {
    if (!this.group.length || this.failed) return;
    const blob = new Blob(this.group, { type: 'audio/webm' });
    this.group = [];
    const part = this.nextPart++;
    this.seq = this.nextPart;
    this.pending += 1;
    this.queue = this.queue.then(() => this.putPart(part, blob)).finally(() => {
      this.pending -= 1;
    });
  }

  /** More part URLs from `from` on (recordingUploadUrls), before they run out or expire. */
  async moreUrls(from) {
    const app = this.deps.app();
    if (!app) throw Object.assign(new Error('not connected'), { code: 'UNAVAILABLE' });
    const r = await app.request('recordingUploadUrls', { voiceRoomId: this.grant.voiceRoomId, recordingId: this.grant.recordingId, from });
    if (!r.parts || !r.parts.length) throw Object.assign(new Error('no more parts'), { code: 'RECORDING_TOO_LARGE' });
    for (const p of r.parts) this.parts.set(p.part, p.url);
  }

  async putPart(part, blob) {
    if (this.failed) return;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
      let res = null;
      try {
        if (!this.parts.has(part) || attempt > 1) await this.moreUrls(part);
        res = await fetch(this.parts.get(part), { method: 'PUT', headers: { 'Content-Type': 'audio/webm' }, body: blob });
      } catch (e) {
        if (e.code && e.code !== 'UNAVAILABLE' && e.code !== 'TIMEOUT') {
          this.fail({ code: e.code });
          return;
        }
        this.deps.warn(`recording part ${part}: ${e.message}`);
      }
      // Read the (empty) body: an unread response is cancelled, which shows as an aborted request.
      if (res) await res.arrayBuffer().catch(() => {});
      if (res && res.ok) {
        this.parts.delete(part);
        this.uploadedBytes += blob.size;
        if (this.onProgress) this.onProgress();
        return;
      }
      if (res) this.deps.warn(`recording part ${part}: HTTP ${res.status}`);
      await new Promise((r) => setTimeout(r, 300 * 2 ** attempt));
    }
    this.fail({ code: 'UNAVAILABLE' });
  }

  fail(e) {
    if (this.failed) return;
    this.failed = e;
    this.deps.warn(`recording upload refused: ${e.code}`);
    this.stop();
  }

  /** Stops recording here; what is queued is still uploaded (the server takes it for 30 s). */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    if (this.mr.state !== 'inactive') this.mr.stop();
    else this.queue = this.queue.then(() => this.finish());
  }

  async finish() {
    this.mixer.close();
    // AWS: everything is up; the file is assembled now rather than after the grace.
    const app = this.deps.app();
    if (this.parts && app) {
      await app.request('finishRecording', { voiceRoomId: this.grant.voiceRoomId, recordingId: this.grant.recordingId }).catch((e) => this.deps.warn(`finishRecording: ${e.code || e.message}`));
    }
    this.onDone(this);
  }
}

/**
 * deps: { app(), session(), state(), features, refreshVoiceRoom(chatRoomId), notice(chatRoomId,
 * text, kind), toast(text, kind), log, warn, confirm(text), AudioContext }.
 */
export function createRecording(deps) {
  let recorder = null; // { chatRoomId, voiceRoomId, recordingId, rec: Recorder }
  let lastDone = null;
  let busy = false;
  const lists = {}; // chatRoomId → { items, error, loading }
  let listedRoom = null;
  // False once the server said RECORDING_UNAVAILABLE (no storage): the controls go away.
  let available = true;
  const consents = loadConsents();

  const me = () => {
    const s = deps.state();
    return s.me ? s.me.userId : null;
  };
  const nameOf = (userId) => displayName(deps.state(), userId);

  function remember(recordingId) {
    consents.add(recordingId);
    try {
      sessionStorage.setItem(CONSENT_KEY, JSON.stringify([...consents].slice(-50)));
    } catch {
      // Private mode: the question is asked again after a reload.
    }
  }

  /** Before the microphone opens: if the room is being recorded, ask. */
  async function consentToJoin(chatRoomId) {
    const rec = runningRecording(deps.state().voiceRooms[chatRoomId]);
    if (!rec || rec.by === me() || consents.has(rec.recordingId)) return true;
    const ok = await deps.confirm(
      `This voice chat is being recorded by ${nameOf(rec.by)}. Your voice will be in the recording, and approved members of this room can download it. Join anyway?`,
    );
    if (ok) remember(rec.recordingId);
    else deps.notice(chatRoomId, 'You did not join: this voice chat is being recorded.', 'info');
    return ok;
  }

  async function loadList(chatRoomId) {
    const app = deps.app();
    if (!app || !deps.features.hello) return;
    lists[chatRoomId] = { ...(lists[chatRoomId] || { items: [] }), loading: true };
    try {
      const r = await app.request('listRecordings', { roomId: chatRoomId });
      lists[chatRoomId] = { items: r.recordings || [], error: null, loading: false };
    } catch (e) {
      if (e.code === 'RECORDING_UNAVAILABLE') available = false;
      lists[chatRoomId] = { items: [], error: recordingErrorText(e), loading: false, code: e.code };
    }
    render(deps.state());
  }

  function recorderDone(rec) {
    if (recorder && recorder.rec === rec) {
      lastDone = { ...recorder, uploadedBytes: rec.uploadedBytes, failed: rec.failed };
      const chat = recorder.chatRoomId;
      recorder = null;
      if (rec.failed) deps.notice(chat, recordingErrorText(rec.failed), 'error');
      setTimeout(() => loadList(chat), 200);
      render(deps.state());
    }
  }

  async function start(chatRoomId, voiceRoomId) {
    const app = deps.app();
    const session = deps.session();
    if (!app || !session || busy) return;
    busy = true;
    try {
      const r = await app.request('startRecording', { voiceRoomId });
      const grant = { ...r.upload, voiceRoomId };
      remember(grant.recordingId);
      try {
        recorder = { chatRoomId, voiceRoomId, recordingId: grant.recordingId, rec: null };
        recorder.rec = new Recorder(grant, session, deps, recorderDone);
        recorder.rec.onProgress = () => render(deps.state());
        deps.log(`Recording ${grant.recordingId} started`);
      } catch (e) {
        recorder = null;
        deps.warn(`MediaRecorder: ${e.message}`);
        deps.notice(chatRoomId, 'This browser cannot record audio.', 'error');
        app.request('stopRecording', { voiceRoomId }).catch(() => {});
      }
      deps.refreshVoiceRoom(chatRoomId);
    } catch (e) {
      if (e.code === 'RECORDING_UNAVAILABLE') available = false;
      deps.notice(chatRoomId, `Could not start recording. ${recordingErrorText(e)}`, 'error');
    } finally {
      busy = false;
      render(deps.state());
    }
  }

  async function stop(chatRoomId, voiceRoomId) {
    const app = deps.app();
    if (!app || busy) return;
    busy = true;
    try {
      await app.request('stopRecording', { voiceRoomId });
    } catch (e) {
      if (e.code !== 'NOT_RECORDING') deps.notice(chatRoomId, `Could not stop recording. ${recordingErrorText(e)}`, 'error');
    } finally {
      busy = false;
      if (recorder && recorder.voiceRoomId === voiceRoomId) recorder.rec.stop();
      deps.refreshVoiceRoom(chatRoomId);
      render(deps.state());
    }
  }

  function onEvent(ev) {
    if (ev.event === 'recordingStarted') {
      if (ev.by !== me()) deps.toast(`${nameOf(ev.by)} started recording the voice chat`);
    } else if (ev.event === 'recordingStopped') {
      // Ours stopped elsewhere (the admin, or we left or dropped): stop making it.
      if (recorder && recorder.recordingId === ev.recordingId) recorder.rec.stop();
      if (ev.chatRoomId === deps.state().currentRoomId) setTimeout(() => loadList(ev.chatRoomId), 500);
    }
    deps.refreshVoiceRoom(ev.chatRoomId);
  }

  function ensureDom() {
    if ($('#record-button')) return;
    // In the top bar too: someone in a recorded voice chat who opens another room still sees it.
    const top = $('#voice-indicator');
    if (top) top.before(h('span', { id: 'recording-top', className: 'pill pill-rec', textContent: '● Recording', hidden: true }));
    const head = $('#voice-panel .section-head');
    if (head) head.append(h('span', { id: 'recording-indicator', className: 'pill pill-rec', textContent: '● Recording', title: 'This voice chat is being recorded', hidden: true }));
    const buttons = $('#voice-buttons');
    if (buttons) {
      buttons.append(
        h('button', {
          type: 'button',
          id: 'record-button',
          hidden: true,
          onclick: () => {
            const s = deps.state();
            const chat = s.currentRoomId;
            const vr = s.voiceRooms[chat];
            if (!vr) return;
            if (runningRecording(vr)) stop(chat, vr.voiceRoomId);
            else start(chat, vr.voiceRoomId);
          },
        }),
      );
    }
    const status = $('#voice-status');
    if (status) status.after(h('p', { id: 'recording-notice', className: 'notice notice-rec', role: 'status', hidden: true }));
    const panel = $('#voice-panel');
    if (panel) {
      panel.after(
        h(
          'div',
          { className: 'card recordings', id: 'recordings-panel', hidden: true },
          h(
            'div',
            { className: 'section-head' },
            h('h2', { textContent: 'Recordings' }),
            h('button', {
              type: 'button',
              id: 'refresh-recordings',
              className: 'small',
              textContent: 'Reload list',
              title: 'Download links last a few minutes; reload for fresh ones',
              onclick: () => {
                const chat = deps.state().currentRoomId;
                if (chat) loadList(chat);
              },
            }),
          ),
          h('ul', { id: 'recordings-list', className: 'list recordings-list' }),
          h('p', { id: 'recordings-empty', className: 'muted', textContent: 'No recordings in this room.' }),
        ),
      );
    }
  }

  function render(state) {
    ensureDom();
    const chat = state.currentRoomId;
    const vr = chat ? state.voiceRooms[chat] : null;
    const rec = runningRecording(vr);
    const session = deps.session();
    const user = me();
    const inRoom = !!(session && vr && session.voiceRoomId === vr.voiceRoomId);
    // A recording of ours whose session ended here (we left): stop making it.
    if (recorder && !(session && session.voiceRoomId === recorder.voiceRoomId)) recorder.rec.stop();

    const mine = session ? runningRecording(state.voiceRooms[session.chatRoomId]) : null;
    const top = $('#recording-top');
    if (top) {
      top.hidden = !mine;
      top.title = mine ? `The voice chat you are in is being recorded by ${nameOf(mine.by)}` : '';
      top.textContent = recorder ? `● Recording (${sizeText(recorder.rec.uploadedBytes)} saved)` : '● Recording';
    }
    const ind = $('#recording-indicator');
    if (ind) {
      ind.hidden = !rec;
      ind.title = rec ? `Recorded by ${nameOf(rec.by)}` : '';
    }
    const note = $('#recording-notice');
    if (note) {
      note.hidden = !rec;
      if (rec) {
        const who = rec.by === user ? 'You are recording this voice chat' : `${nameOf(rec.by)} is recording this voice chat`;
        note.textContent = inRoom
          ? `${who}. Everything said is saved, and approved members of this room can download it.`
          : `${who}. If you join, your voice will be recorded too, and approved members of this room can download it.`;
      }
    }
    const btn = $('#record-button');
    if (btn) {
      const mayRecord = !!(vr && user && (vr.masterUserId === user || amAdmin(state, chat)));
      const mayStop = !!(rec && (mayRecord || rec.by === user));
      btn.hidden = !available || !deps.features.hello || !inRoom || !(rec ? mayStop : mayRecord);
      btn.textContent = rec ? 'Stop recording' : 'Record';
      btn.className = rec ? 'danger' : '';
      btn.disabled = busy;
    }

    const panel = $('#recordings-panel');
    if (!panel) return;
    const room = state.rooms.find((r) => r.roomId === chat);
    const member = !!(room && (room.myState === 'approved' || amAdmin(state, chat)));
    panel.hidden = !available || !deps.features.hello || !chat || !member;
    if (listedRoom !== chat && member && deps.features.hello && available) {
      listedRoom = chat;
      loadList(chat);
      return;
    }
    if (panel.hidden) return;
    const list = lists[chat] || { items: [] };
    const ul = $('#recordings-list');
    ul.replaceChildren(
      ...list.items.map((r) =>
        h(
          'li',
          { dataset: { recordingId: r.recordingId } },
          r.preparing ? `Recording by ${nameOf(r.by)}` : h('a', { href: r.downloadUrl, download: `${r.recordingId}.webm`, textContent: `Recording by ${nameOf(r.by)}` }),
          r.preparing ? ` — ${new Date(r.startedAt).toLocaleString()}, being prepared` : ` — ${new Date(r.startedAt).toLocaleString()}, ${sizeText(r.bytes)}`,
          rec && rec.recordingId === r.recordingId ? ' (still recording)' : '',
        ),
      ),
    );
    const empty = $('#recordings-empty');
    empty.hidden = list.items.length > 0;
    empty.textContent = list.error || (list.loading ? 'Loading…' : 'No recordings in this room.');
  }

  return {
    consentToJoin,
    onEvent,
    render,
    /** Test hook: what this browser is recording and uploading. */
    test: () => ({
      recording: recorder ? { recordingId: recorder.recordingId, seq: recorder.rec.seq, pending: recorder.rec.pending, uploadedBytes: recorder.rec.uploadedBytes, tracks: recorder.rec.mixer.sources.size, state: recorder.rec.mr.state } : null,
      lastDone,
      list: lists[deps.state().currentRoomId] || null,
    }),
  };
}
