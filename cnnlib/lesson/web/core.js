// CNN Lens lesson, core: data, the in-browser model (onnxruntime-web, WebAssembly), a unit's arithmetic.
// Everything from the checkpoint is shown with textContent (el() below); nothing here writes markup from data.
'use strict';
const L = window.cnnlensLesson = {};
L.P = JSON.parse(document.getElementById('payload').textContent);
L.R = JSON.parse(document.getElementById('resources').textContent);
const P = L.P;

// ---------------------------------------------------------------- DOM helpers (text only)
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid != null) e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return e;
}
L.el = el;
L.fmt = (v, d = 4) => (v == null || Number.isNaN(v)) ? '–' : Number(v).toFixed(d);
L.status = (text, bad) => { const s = document.getElementById('status'); s.textContent = text; s.classList.toggle('bad', !!bad); };

function b64bytes(b64) {
  const s = atob(b64); const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
L.f32 = (o) => o ? new Float32Array(b64bytes(o.b64).buffer) : null;
L.pngURL = (b64) => 'data:image/png;base64,' + b64;

async function gunzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
async function resource(key) {
  if (L.R.inline) return b64bytes(L.R.inline[key]);
  const r = await fetch(L.R.assets[key]);
  if (!r.ok) throw new Error(`the lesson's file ${L.R.assets[key]} is missing (HTTP ${r.status})`);
  return new Uint8Array(await r.arrayBuffer());
}

// ---------------------------------------------------------------- layers and parameters
L.layers = P.layers;
L.layerByName = Object.fromEntries(P.layers.map((r) => [r.name, r]));
L.param = {};            // name -> Float32Array, decoded once
L.p = (layer, key) => {
  const id = layer.name + '\u0000' + key;
  if (!(id in L.param)) L.param[id] = L.f32(layer[key]);
  return L.param[id];
};
const editable = L.layerByName[P.editable];
L.defaultWeight = () => Float32Array.from(L.p(editable, 'weight'));
L.weight = L.defaultWeight();          // the first conv's kernels fed to the model ("what if" edits them)

// ---------------------------------------------------------------- the model
let ort = null, session = null, queue = Promise.resolve();
async function start() {
  if (typeof WebAssembly !== 'object' || typeof WebAssembly.instantiate !== 'function') {
    throw new Error('This browser has no WebAssembly, which the lesson needs to run the model: open it in a current Chrome, Edge, Firefox or Safari.');
  }
  if (typeof DecompressionStream !== 'function') {
    throw new Error('This browser cannot unpack the lesson (no DecompressionStream): open it in a current Chrome, Edge, Firefox or Safari.');
  }
  const [code, glue, wasm, model] = await Promise.all([resource('ort').then(gunzip), resource('glue').then(gunzip),
    resource('wasm').then(gunzip), resource('model')]);
  const js = (bytes) => URL.createObjectURL(new Blob([bytes], { type: 'text/javascript' }));
  ort = await import(js(code));
  ort.env.logLevel = 'error';           // its warnings (e.g. an unknown CPU vendor) are not for students
  ort.env.wasm.numThreads = 1;          // no SharedArrayBuffer from file:// or a plain static host
  ort.env.wasm.proxy = false;
  // the loader, as a blob: URL, wrapped so that it never builds the .wasm's URL from its own (a blob: URL is
  // no base for relative URLs); it is handed the bytes in wasmBinary and fetches nothing
  const loader = js(glue);
  const wrapper = `import g from ${JSON.stringify(loader)}; export default (arg) => g(Object.assign(arg, { locateFile: (f) => f }));`;
  ort.env.wasm.wasmPaths = { mjs: js(new TextEncoder().encode(wrapper)) };
  ort.env.wasm.wasmBinary = wasm;
  session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
}

// x01: Float32Array C*H*W in [0, 1]; weight: Float32Array -> {name: {data, dims}} (batch axis dropped)
L.run = function run(x01, weight) {
  const job = queue.then(async () => {
    const [c, h, w] = P.input_shape;
    const feeds = { images: new ort.Tensor('float32', x01, [1, c, h, w]) };
    for (const name of P.fed) {       // every conv's kernels are graph inputs; the first conv's may be edited
      const layer = L.layerByName[name];
      feeds['weight:' + name] = new ort.Tensor('float32', name === P.editable ? (weight || L.weight) : L.p(layer, 'weight'), layer.weight.shape);
    }
    const res = await session.run(feeds);
    const out = {};
    P.outputs.forEach((name, i) => { const t = res[P.onnx_outputs[i]]; out[name] = { data: t.data, dims: t.dims.slice(1) }; });
    return out;
  });
  queue = job.catch(() => null);
  return job;
};

// ---------------------------------------------------------------- images -> [0, 1] pixels
function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error('This file cannot be decoded as an image.'));
    img.src = src;
  });
}
// an element or URL -> Float32Array (C, H, W) in [0, 1]. An image already at the model's size is taken as it
// is (the lesson's own images are stored preprocessed); any other is prepared as the checkpoint says: the
// shorter side scaled to `resize`, the centre `crop` x `crop` taken, then scaled to W x H.
L.toInput = async function toInput(src) {
  let img = src;
  if (typeof src === 'string') img = await loadImage(src);
  else if (src instanceof Blob) {
    const url = URL.createObjectURL(src);
    try { img = await loadImage(url); } finally { URL.revokeObjectURL(url); }
  }
  const [c, h, w] = P.input_shape;
  const iw = img.naturalWidth || img.videoWidth || img.width, ih = img.naturalHeight || img.videoHeight || img.height;
  if (!iw || !ih) throw new Error('This file cannot be decoded as an image.');
  const canvas = document.createElement('canvas'); canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  let sx = 0, sy = 0, sw = iw, sh = ih;
  const pre = P.preprocessing;
  if (!(iw === w && ih === h) && pre.resize > 0) {
    const scale = pre.resize / Math.min(iw, ih);
    const cw = (pre.crop || pre.resize) / scale, ch = (pre.crop || pre.resize) / scale;
    sw = Math.min(iw, cw); sh = Math.min(ih, ch); sx = (iw - sw) / 2; sy = (ih - sh) / 2;
  }
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(img, sx, sy, sw, sh, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const x = new Float32Array(c * h * w);
  for (let i = 0; i < h * w; i++) {
    if (c === 1) x[i] = rgba[4 * i] / 255;
    else for (let k = 0; k < 3; k++) x[k * h * w + i] = rgba[4 * i + k] / 255;
  }
  return x;
};
L.imageInput = async (i) => L.toInput(L.pngURL(P.images[i].png));

// ---------------------------------------------------------------- softmax and a unit's arithmetic
L.softmax = function softmax(logits) {
  const max = Math.max(...logits);
  const shifted = Array.from(logits, (v) => v - max);
  const exp = shifted.map(Math.exp);
  const sum = exp.reduce((a, b) => a + b, 0);
  return { max, shifted, exp, sum, probs: exp.map((e) => e / sum) };
};

function erf(x) {   // Abramowitz & Stegun 7.1.26 refined by one Newton-free series for small |x| (error < 2e-7)
  const s = Math.sign(x); x = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * x);
  const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return s * y;
}
const relu6 = (v) => Math.min(Math.max(v, 0), 6);
L.activations = {
  relu: [(v) => Math.max(v, 0), 'max(0, x)'],
  relu6: [relu6, 'min(max(0, x), 6)'],
  leaky_relu: [(v, r) => (v >= 0 ? v : r.negative_slope * v), 'x if x ≥ 0 else slope · x'],
  elu: [(v, r) => (v > 0 ? v : r.alpha * (Math.exp(v) - 1)), 'x if x > 0 else α(eˣ − 1)'],
  silu: [(v) => v / (1 + Math.exp(-v)), 'x · sigmoid(x)'],
  gelu: [(v, r) => (r.approximate === 'tanh' ? 0.5 * v * (1 + Math.tanh(0.7978845608 * (v + 0.044715 * v ** 3))) : 0.5 * v * (1 + erf(v / Math.SQRT2))), 'x · Φ(x)'],
  hardswish: [(v) => v * relu6(v + 3) / 6, 'x · min(max(0, x + 3), 6) / 6'],
  hardsigmoid: [(v) => relu6(v + 3) / 6, 'min(max(0, x + 3), 6) / 6'],
  hardtanh: [(v, r) => Math.min(Math.max(v, r.min_val), r.max_val), 'clamp(x, min, max)'],
  sigmoid: [(v) => 1 / (1 + Math.exp(-v)), '1 / (1 + e⁻ˣ)'],
  tanh: [(v) => Math.tanh(v), 'tanh(x)'],
  mish: [(v) => v * Math.tanh(Math.log1p(Math.exp(v))), 'x · tanh(softplus(x))'],
};

function at(t, c, y, x) { const [, h, w] = t.dims; return t.data[(c * h + y) * w + x]; }
L.at = at;

// the input map of a conv: the normalized image, a shown layer, or its own extra output
function convInput(layer, outs, x01) {
  if (layer.source === 'input') {
    const [c, h, w] = P.input_shape, { mean, std } = P.preprocessing;
    const data = new Float32Array(c * h * w);
    for (let k = 0; k < c; k++) for (let i = 0; i < h * w; i++) data[k * h * w + i] = (x01[k * h * w + i] - mean[k]) / std[k];
    return { data, dims: [c, h, w] };
  }
  return outs[layer.source];
}

// One unit of conv `layer`: patch x kernel, sum, bias, then BatchNorm, activation and pooling when they follow.
L.unitSteps = function unitSteps(layerName, channel, row, col, outs, x01, weight) {
  const conv = L.layerByName[layerName];
  if (!conv || conv.type !== 'Conv2d') throw new Error(`${layerName} is not a convolution of this model`);
  const [cout, ho, wo] = conv.shape;
  if (!(channel >= 0 && channel < cout && row >= 0 && row < ho && col >= 0 && col < wo)) {
    throw new Error(`${layerName} has ${cout} channels of ${ho} x ${wo}; (${channel}, ${row}, ${col}) is outside`);
  }
  const inp = convInput(conv, outs, x01);
  const [cin, hi, wi] = inp.dims, [kh, kw] = conv.kernel, g = conv.groups, cg = cin / g;
  const group = Math.floor(channel / (cout / g));
  const W = layerName === P.editable && weight ? weight : L.p(conv, 'weight');
  const bias = conv.bias ? L.p(conv, 'bias')[channel] : null;
  const rows = [], cols = [], patch = [], kernel = [], products = [];
  for (let i = 0; i < kh; i++) rows.push(row * conv.stride[0] - conv.padding[0] + i * conv.dilation[0]);
  for (let j = 0; j < kw; j++) cols.push(col * conv.stride[1] - conv.padding[1] + j * conv.dilation[1]);
  // where a padded position reads from: zeros (none), or the map itself (reflect, replicate, circular)
  const mode = conv.padding_mode || 'zeros';
  const src = (i, n) => {
    if (i >= 0 && i < n) return i;
    if (mode === 'reflect') return i < 0 ? -i : 2 * (n - 1) - i;
    if (mode === 'replicate') return Math.min(Math.max(i, 0), n - 1);
    if (mode === 'circular') return ((i % n) + n) % n;
    return -1;
  };
  let sum = 0;
  for (let k = 0; k < cg; k++) {
    const ic = group * cg + k, P2 = [], K2 = [], X2 = [];
    for (let i = 0; i < kh; i++) {
      const pr = [], kr = [], xr = [];
      for (let j = 0; j < kw; j++) {
        const y = src(rows[i], hi), x = src(cols[j], wi);
        const v = (y >= 0 && x >= 0) ? at(inp, ic, y, x) : 0;
        const wv = W[((channel * cg + k) * kh + i) * kw + j];
        pr.push(v); kr.push(wv); xr.push(v * wv); sum += v * wv;
      }
      P2.push(pr); K2.push(kr); X2.push(xr);
    }
    patch.push(P2); kernel.push(K2); products.push(X2);
  }
  const steps = [];
  const inputChannels = Array.from({ length: cg }, (_, k) => group * cg + k);
  const result = sum + (bias || 0);
  steps.push({ kind: 'conv', layer: layerName, input_from: conv.source, padding_mode: mode, input_channels: inputChannels, rows, cols,
               patch, kernel, products, sum, bias, result, onnx: at(outs[layerName], channel, row, col) });
  let value = result, cur = conv;
  let nxt = L.layerByName[cur.next];
  if (nxt && nxt.type === 'BatchNorm2d') {
    const mean = L.p(nxt, 'mean')[channel], v = L.p(nxt, 'var')[channel], gamma = L.p(nxt, 'gamma')[channel], beta = L.p(nxt, 'beta')[channel];
    const input = at(outs[cur.name], channel, row, col), std = Math.sqrt(v + nxt.eps), normalized = (input - mean) / std;
    value = gamma * normalized + beta;
    steps.push({ kind: 'batchnorm', layer: nxt.name, input, mean, var: v, eps: nxt.eps, std, gamma, beta, normalized,
                 result: value, onnx: at(outs[nxt.name], channel, row, col) });
    cur = nxt; nxt = L.layerByName[cur.next];
  }
  if (nxt && nxt.activation) {
    const input = at(outs[cur.name], channel, row, col), [fn, formula] = L.activations[nxt.activation];
    value = fn(input, nxt);
    steps.push({ kind: 'activation', layer: nxt.name, type: nxt.type, formula, input, result: value,
                 onnx: at(outs[nxt.name], channel, row, col) });
    cur = nxt; nxt = L.layerByName[cur.next];
  }
  if (nxt && nxt.pool) {
    const src = outs[cur.name], [, h, w] = src.dims, [, ph, pw] = nxt.shape;
    const [k0, k1] = nxt.kernel, [s0, s1] = nxt.stride, [p0, p1] = nxt.padding, [d0, d1] = nxt.dilation;
    const first = (r, s, p, k, d, n) => { for (let q = 0; q < n; q++) if (q * s - p <= r && r <= q * s - p + (k - 1) * d) return q; return -1; };
    const py = first(row, s0, p0, k0, d0, ph), px = first(col, s1, p1, k1, d1, pw);
    if (py >= 0 && px >= 0) {
      const prow = [], pcol = [], values = [];
      let best = -Infinity, total = 0, n = 0;
      for (let i = 0; i < k0; i++) prow.push(py * s0 - p0 + i * d0);
      for (let j = 0; j < k1; j++) pcol.push(px * s1 - p1 + j * d1);
      for (const y of prow) {
        const r = [];
        for (const x of pcol) {
          const inside = y >= 0 && y < h && x >= 0 && x < w, v = inside ? at(src, channel, y, x) : NaN;
          r.push(v);
          if (inside) { best = Math.max(best, v); total += v; n++; }
        }
        values.push(r);
      }
      const divisor = nxt.count_include_pad ? k0 * k1 : n;
      value = nxt.pool === 'max' ? best : total / divisor;
      steps.push({ kind: 'pool', layer: nxt.name, pool: nxt.pool, window: [py, px], rows: prow, cols: pcol, values,
                   result: value, onnx: at(outs[nxt.name], channel, py, px) });
    }
  }
  return { layer: layerName, channel, row, col, steps, value: steps[0].result, onnx: steps[0].onnx };
};

// the classifier head: last Linear's input x weights + bias = logits, then the softmax
L.headSteps = function headSteps(outs, target) {
  const logits = Array.from(outs.logits.data);
  const soft = L.softmax(logits);
  const res = { logits, softmax: soft, probs: soft.probs, top: soft.probs.indexOf(Math.max(...soft.probs)) };
  if (!P.head || P.head.scale == null) return res;
  const inp = outs[P.head.name + ':input'].data, W = L.f32c('head.weight', P.head.weight), b = P.head.bias ? L.f32c('head.bias', P.head.bias) : null;
  const d = inp.length, t = target == null ? res.top : target;
  const contributions = Array.from(inp, (v, j) => v * W[t * d + j]);
  const order = contributions.map((v, j) => j).sort((a, c) => Math.abs(contributions[c]) - Math.abs(contributions[a]));
  const sum = contributions.reduce((a, c) => a + c, 0);
  const js = [], scale = P.head.scale;
  for (let k = 0; k < P.classes.length; k++) { let s = b ? b[k] : 0; for (let j = 0; j < d; j++) s += inp[j] * W[k * d + j]; js.push(s * scale); }
  return Object.assign(res, { target: t, input: inp, contributions, top_terms: order.slice(0, 10), sum, bias: b ? b[t] : 0, scale,
                              logit_js: (sum + (b ? b[t] : 0)) * scale, logits_js: js });
};
const cache = {};
L.f32c = (key, o) => (cache[key] = cache[key] || L.f32(o));

// ---------------------------------------------------------------- the public API (tests and embedding)
L.outputsFor = {};      // image index -> outputs with the trained kernels
L.forImage = async (i) => {
  const x = await L.imageInput(i);
  if (!L.outputsFor[i]) L.outputsFor[i] = await L.run(x, L.defaultWeight());
  return { x, outs: L.outputsFor[i] };
};
L.classify = async function classify(src, weight) {
  const x = await L.toInput(src);
  const outs = await L.run(x, weight);
  const { probs } = L.softmax(outs.logits.data);
  const probabilities = {};
  P.classes.forEach((c, k) => { probabilities[c] = probs[k]; });
  return { probabilities, top: P.classes[probs.indexOf(Math.max(...probs))], x, outs };
};
window.cnnlens = {
  classify: async (src) => { const r = await L.classify(src); return { probabilities: r.probabilities, top: r.top }; },
  unit: async (layer, channel, row, col, imageIndex = 0) => {
    const { x, outs } = await L.forImage(imageIndex);
    return L.unitSteps(layer, channel, row, col, outs, x, L.defaultWeight());
  },
  head: async (imageIndex = 0, target = null) => {
    const { outs } = await L.forImage(imageIndex);
    const h = L.headSteps(outs, target);
    return { logits: h.logits, probs: h.probs, top: h.top, logits_js: h.logits_js || null, softmax: h.softmax };
  },
  exercises: () => P.exercises.map((e) => ({ kind: e.kind, data: e.data, answer: e.answer })),
  payload: P,
};
L.started = start();
window.cnnlens.ready = L.started.then(() => true);
window.cnnlens.ready.catch(() => null);
