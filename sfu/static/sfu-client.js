// sfu-client.js — a small browser client for the sfu signaling protocol (docs/protocol.md).
//
// Two RTCPeerConnections per participant, the LiveKit model: the publisher transport (we
// offer, the server answers) and the subscriber transport (the server offers, we answer).
//
//   const c = new SfuClient("ws://127.0.0.1:7880/rtc", token);
//   const join = await c.connect();
//   await c.publish(stream, { simulcast: true });
//   c.onTrack = (track, streams, transceiver) => { ... };
//   c.onData = (msg) => { ... };               // {payload (Uint8Array), from_identity, topic}
//   c.sendData(bytes, { reliable: true, destinationIdentities: ["bob"], topic: "chat" });
"use strict";

class SfuClient {
  constructor(url, token, options = {}) {
    this.url = url;
    this.token = token;
    this.options = options;
    this.ws = null;
    this.join = null;
    this.publisher = null;
    this.subscriber = null;
    this.pending = new Map();     // request id -> {resolve, reject}
    this.nextId = 1;
    this.listeners = new Map();   // message type -> [fn]
    this.onTrack = null;
    this.onData = null;
    this.dataChannels = {};       // publisher-side "_reliable" / "_lossy"
    this.subscriberChannels = {};
    this.log = [];                // every server message, for tests
    this.negotiating = Promise.resolve();
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  waitFor(type, predicate = () => true, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for ${type}`)), timeoutMs);
      const fn = (msg) => {
        if (predicate(msg)) { clearTimeout(timer); resolve(msg); return true; }
        return false;
      };
      this.on(type, fn);
    });
  }

  send(msg) { this.ws.send(JSON.stringify(msg)); }

  request(msg) {
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ ...msg, id });
    });
  }

  connect(extraQuery = "") {
    const url = `${this.url}?access_token=${encodeURIComponent(this.token)}${extraQuery}`;
    this.ws = new WebSocket(url);
    this.ws.onmessage = (ev) => this._onMessage(JSON.parse(ev.data));
    this.ws.onclose = (ev) => { this.closeCode = ev.code; };
    return new Promise((resolve, reject) => {
      this.on("join", (msg) => {
        this.join = msg;
        this._createTransports(msg);
        resolve(msg);
        return true;
      });
      this.on("error", (msg) => { if (!this.join) reject(new Error(msg.code)); return false; });
    });
  }

  _onMessage(msg) {
    this.log.push(msg);
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const { resolve, reject } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === "error") reject(Object.assign(new Error(msg.message), { code: msg.code }));
      else resolve(msg);
    }
    switch (msg.type) {
      case "offer": this._onSubscriberOffer(msg); break;
      case "answer": this._onPublisherAnswer(msg); break;
      case "trickle": this._onTrickle(msg); break;
      case "token_refresh": this.token = msg.token; break;
      case "subscribed_quality_update": if (this.options.dynacast) this._onDynacast(msg); break;
    }
    const fns = this.listeners.get(msg.type) || [];
    this.listeners.set(msg.type, fns.filter((fn) => !fn(msg)));
  }

  _pcConfig(join) {
    const config = { iceServers: join.ice_servers || [], bundlePolicy: "max-bundle",
                     rtcpMuxPolicy: "require" };
    if (this.options.iceTransportPolicy) config.iceTransportPolicy = this.options.iceTransportPolicy;
    return config;
  }

  _createTransports(join) {
    this.publisher = new RTCPeerConnection(this._pcConfig(join));
    this.subscriber = new RTCPeerConnection(this._pcConfig(join));
    for (const [target, pc] of [["publisher", this.publisher], ["subscriber", this.subscriber]]) {
      pc.onicecandidate = (ev) => {
        if (!this.ws || this.ws.readyState !== 1) return;
        if (ev.candidate) {
          const c = ev.candidate;
          this.send({ type: "trickle", target, candidate: {
            candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex,
            username_fragment: c.usernameFragment } });
        } else {
          this.send({ type: "trickle", target, candidate: null, end_of_candidates: true });
        }
      };
    }
    this.subscriber.ontrack = (ev) => { if (this.onTrack) this.onTrack(ev.track, ev.streams, ev.transceiver); };
    this.subscriber.ondatachannel = (ev) => {
      const ch = ev.channel;
      this.subscriberChannels[ch.label] = ch;
      ch.binaryType = "arraybuffer";
      ch.onmessage = (m) => this._onDataMessage(m.data);
    };
    if (this.options.dataChannels !== false) {
      this.dataChannels._reliable = this.publisher.createDataChannel("_reliable", { ordered: true });
      this.dataChannels._lossy = this.publisher.createDataChannel("_lossy", { ordered: false, maxRetransmits: 0 });
      // the first negotiation carries the data channels even before any track is published
      this.negotiate();
    }
  }

  _onDataMessage(data) {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    const msg = JSON.parse(text);
    const raw = atob(msg.payload);
    const payload = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) payload[i] = raw.charCodeAt(i);
    const out = { ...msg, payload };
    if (this.onData) this.onData(out);
    const fns = this.listeners.get("data_channel") || [];
    this.listeners.set("data_channel", fns.filter((fn) => !fn(out)));
  }

  sendData(bytes, { reliable = true, destinationIdentities = [], topic } = {}) {
    const ch = this.dataChannels[reliable ? "_reliable" : "_lossy"];
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    const msg = { payload: btoa(binary) };
    if (destinationIdentities.length) msg.destination_identities = destinationIdentities;
    if (topic !== undefined) msg.topic = topic;
    ch.send(JSON.stringify(msg));
  }

  async _onSubscriberOffer(msg) {
    if (msg.target !== "subscriber") return;
    await this.subscriber.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    const answer = await this.subscriber.createAnswer();
    await this.subscriber.setLocalDescription(answer);
    this.send({ type: "answer", target: "subscriber", sdp: this.subscriber.localDescription.sdp });
  }

  async _onPublisherAnswer(msg) {
    if (msg.target !== "publisher") return;
    await this.publisher.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    if (this._answerResolve) { this._answerResolve(); this._answerResolve = null; }
  }

  async _onTrickle(msg) {
    const pc = msg.target === "publisher" ? this.publisher : this.subscriber;
    if (msg.candidate) {
      try { await pc.addIceCandidate({ candidate: msg.candidate.candidate,
                                       sdpMid: msg.candidate.sdp_mid,
                                       sdpMLineIndex: msg.candidate.sdp_mline_index }); }
      catch (e) { /* a candidate for a section not negotiated yet */ }
    }
  }

  // One publisher negotiation at a time; each waits for the server's answer.
  negotiate(options = {}) {
    this.negotiating = this.negotiating.then(async () => {
      const offer = await this.publisher.createOffer(options);
      await this.publisher.setLocalDescription(offer);
      const answered = new Promise((resolve) => { this._answerResolve = resolve; });
      this.send({ type: "offer", target: "publisher", sdp: this.publisher.localDescription.sdp });
      await answered;
    });
    return this.negotiating;
  }

  async publish(stream, { simulcast = false, source } = {}) {
    const added = [];
    for (const track of stream.getTracks()) {
      const init = { direction: "sendonly", streams: [stream] };
      if (simulcast && track.kind === "video") {
        init.sendEncodings = [
          { rid: "q", scaleResolutionDownBy: 4 },
          { rid: "h", scaleResolutionDownBy: 2 },
          { rid: "f" },
        ];
      }
      const transceiver = this.publisher.addTransceiver(track, init);
      added.push({ track, transceiver });
    }
    // mids are assigned by setLocalDescription; announce tracks, then let the server answer
    this.negotiating = this.negotiating.then(async () => {
      const offer = await this.publisher.createOffer();
      await this.publisher.setLocalDescription(offer);
      for (const { track, transceiver } of added) {
        const settings = track.getSettings();
        const msg = { type: "add_track", cid: track.id, kind: track.kind,
                      source: source || (track.kind === "video" ? "camera" : "microphone"),
                      mid: transceiver.mid, muted: !track.enabled };
        if (track.kind === "video") {
          msg.width = settings.width || 0;
          msg.height = settings.height || 0;
          if (simulcast) {
            const w = settings.width || 0, h = settings.height || 0;
            msg.simulcast_layers = [
              { rid: "q", quality: "low", width: Math.round(w / 4), height: Math.round(h / 4) },
              { rid: "h", quality: "medium", width: Math.round(w / 2), height: Math.round(h / 2) },
              { rid: "f", quality: "high", width: w, height: h },
            ];
          }
        }
        const published = await this.request(msg);
        transceiver.trackSid = published.track.sid;
      }
      const answered = new Promise((resolve) => { this._answerResolve = resolve; });
      this.send({ type: "offer", target: "publisher", sdp: this.publisher.localDescription.sdp });
      await answered;
    });
    await this.negotiating;
    return added.map(({ transceiver }) => transceiver);
  }

  // Dynacast (with options.dynacast): stop encoding the simulcast layers nobody receives.
  async _onDynacast(msg) {
    const qualityOfRid = { q: "low", h: "medium", f: "high" };
    for (const t of this.publisher.getTransceivers()) {
      if (t.trackSid !== msg.track_sid || !t.sender) continue;
      const enabled = new Map(msg.qualities.map((q) => [q.quality, q.enabled]));
      const params = t.sender.getParameters();
      let changed = false;
      for (const enc of params.encodings || []) {
        const want = enabled.get(qualityOfRid[enc.rid]);
        if (want !== undefined && enc.active !== want) { enc.active = want; changed = true; }
      }
      if (changed) await t.sender.setParameters(params);
    }
  }

  // Settings for subscribed tracks: {quality: "low"|"medium"|"high"} or {width, height}
  // (the simulcast layer), {disabled: true|false}, {priority: 0..255}.
  trackSettings(trackSids, settings = {}) {
    return this.request({ type: "track_settings", track_sids: trackSids, ...settings });
  }

  async restartIce() {
    this.publisher.restartIce();
    await this.negotiate({ iceRestart: true });
  }

  leave() {
    this.send({ type: "leave" });
  }

  close() {
    if (this.publisher) this.publisher.close();
    if (this.subscriber) this.subscriber.close();
    if (this.ws) this.ws.close();
  }
}

if (typeof window !== "undefined") window.SfuClient = SfuClient;
