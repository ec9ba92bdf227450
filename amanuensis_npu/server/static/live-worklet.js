// The Live button's audio tap: the microphone's samples (at the AudioContext's rate, which
// the page sets to 24 kHz) as PCM16 in 100 ms blocks, posted to the page; "flush" sends
// what is left. It outputs silence.
"use strict";
class PCM16Tap extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Int16Array(Math.round(sampleRate / 10));
    this.used = 0;
    this.port.onmessage = (e) => { if (e.data === "flush") this.send(); };
  }
  send() {
    if (this.used) this.port.postMessage(this.block.slice(0, this.used).buffer);
    this.used = 0;
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        const s = Math.max(-1, Math.min(1, channel[i]));
        this.block[this.used++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.used === this.block.length) this.send();
      }
    }
    return true;
  }
}
registerProcessor("pcm16-tap", PCM16Tap);
