// CNN Lens lesson, views: tabs, the overview (the image through every layer), one unit, the head, what if.
{
const { P, el, fmt } = L;
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- tabs
L.views = {};
L.show = function show(id) {
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== 'view-' + id;
  for (const b of document.querySelectorAll('#tabs button')) b.setAttribute('aria-selected', String(b.dataset.id === id));
  if (L.views[id]) L.views[id]();
};
for (const s of document.querySelectorAll('main > section')) {
  const id = s.id.slice(5);
  $('tabs').append(el('button', { type: 'button', 'data-id': id, text: s.dataset.view, onclick: () => L.show(id) }));
}
$('tabs').append(el('button', { type: 'button', class: 'print', text: 'Print worksheet', onclick: () => { L.show('exercises'); window.print(); } }));

// ---------------------------------------------------------------- drawing maps
// one channel (h x w) as a canvas, grey from its own min to max (or a shared range); CSS enlarges it crisply
L.mapCanvas = function mapCanvas(t, c, size, range) {
  const [, h, w] = t.dims, cv = el('canvas', { width: w, height: h, class: 'map' });
  const img = cv.getContext('2d').createImageData(w, h);
  let lo = Infinity, hi = -Infinity;
  const off = c * h * w;
  for (let i = 0; i < h * w; i++) { const v = t.data[off + i]; if (v < lo) lo = v; if (v > hi) hi = v; }
  if (range) [lo, hi] = range;
  const span = hi - lo || 1;
  for (let i = 0; i < h * w; i++) {
    const g = Math.round(255 * (t.data[off + i] - lo) / span);
    img.data.set([g, g, g, 255], 4 * i);
  }
  cv.getContext('2d').putImageData(img, 0, 0);
  cv.style.width = cv.style.height = size + 'px';
  cv.title = `channel ${c}: ${fmt(lo, 3)} … ${fmt(hi, 3)}`;
  return cv;
};
L.imageCanvas = function imageCanvas(x01, size) {
  const [c, h, w] = P.input_shape, cv = el('canvas', { width: w, height: h, class: 'map' });
  const img = cv.getContext('2d').createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const px = c === 1 ? [x01[i], x01[i], x01[i]] : [x01[i], x01[h * w + i], x01[2 * h * w + i]];
    img.data.set([...px.map((v) => Math.round(255 * v)), 255], 4 * i);
  }
  cv.getContext('2d').putImageData(img, 0, 0);
  cv.style.width = cv.style.height = size + 'px';
  return cv;
};
L.scoreBars = function scoreBars(probs, highlight) {
  const order = probs.map((p, k) => k).sort((a, b) => probs[b] - probs[a]).slice(0, 10);
  return el('div', { class: 'scores' }, order.map((k) => el('div', { class: 'bar' + (k === highlight ? ' mark' : '') },
    el('span', { class: 'cls', text: P.classes[k] }),
    el('span', { class: 'fill', style: `width:${Math.max(1, 100 * probs[k]).toFixed(1)}%` }),
    el('span', { class: 'num', text: fmt(probs[k], 4) }))));
};

// ---------------------------------------------------------------- the current image
L.current = { index: 0, x: null, outs: null, label: null };
L.setImage = async function setImage(index, x, label) {
  L.current = { index, x: x || await L.imageInput(index), outs: null, label };
  L.whatIfStamp++;
  L.current.outs = await L.run(L.current.x, L.weight);
  L.refresh();
};
L.refresh = () => { for (const f of [L.drawOverview, L.drawHead, L.drawWhatIf]) f(); if (L.unitShown) L.drawUnit(L.unitShown); };

function thumbs() {
  const box = $('thumbs');
  P.images.forEach((im, i) => {
    const label = im.label == null ? 'no label' : P.classes[im.label];
    const b = el('button', { type: 'button', class: 'thumb', title: `image ${i}: ${label}`, onclick: () => L.setImage(i) },
      el('img', { src: L.pngURL(im.png), alt: `image ${i}: ${label}` }));
    box.append(b);
  });
  $('upload').addEventListener('change', async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    $('upload-status').textContent = '';
    try {
      const x = await L.toInput(f);
      await L.setImage(-1, x, null);
      $('upload-status').textContent = `Showing your photo ${f.name}.`;
    } catch (e) {
      $('upload-status').textContent = `${f.name} cannot be decoded as an image: choose a JPEG, PNG, GIF or WebP photo.`;
    }
  });
}

// ---------------------------------------------------------------- overview
L.drawOverview = function drawOverview() {
  const box = $('overview'), { outs, x } = L.current;
  if (!outs) return;
  box.replaceChildren();
  const big = P.input_shape[1] > 64 ? 56 : 72;
  const inputRow = el('div', { class: 'layer' }, el('div', { class: 'lname' }, el('b', { text: 'input' }), el('span', { text: P.input_shape.join(' × ') })),
    el('div', { class: 'maps' }, L.imageCanvas(x, big)));
  box.append(inputRow);
  for (const layer of L.layers) {
    const t = outs[layer.name], n = Math.min(t.dims[0], 6);
    const maps = [];
    for (let c = 0; c < n; c++) {
      const cv = L.mapCanvas(t, c, big);
      if (layer.type === 'Conv2d') {
        cv.classList.add('clickable');
        cv.addEventListener('click', (ev) => {
          const [, h, w] = t.dims;
          const r = Math.min(h - 1, Math.floor(ev.offsetY / cv.clientHeight * h)), q = Math.min(w - 1, Math.floor(ev.offsetX / cv.clientWidth * w));
          L.openUnit({ layer: layer.name, channel: c, row: r, col: q });
        });
      }
      maps.push(cv);
    }
    box.append(el('div', { class: 'layer', 'data-layer': layer.name },
      el('div', { class: 'lname' }, el('b', { text: layer.name }), el('span', { text: `${layer.type} ${t.dims.join(' × ')}` })),
      el('div', { class: 'maps' }, maps, t.dims[0] > n ? el('span', { class: 'more', text: `+${t.dims[0] - n} channels` }) : null)));
  }
  const { probs } = L.softmax(outs.logits.data);
  box.append(el('div', { class: 'layer' }, el('div', { class: 'lname' }, el('b', { text: 'class scores' }), el('span', { text: 'softmax' })),
    L.scoreBars(probs, L.current.label)));
};

// ---------------------------------------------------------------- one unit
const convs = L.layers.filter((r) => r.type === 'Conv2d');
L.openUnit = (u) => { L.unitShown = u; L.show('unit'); };
function numTable(rows, cls, digits = 3) {
  return el('table', { class: 'nums ' + (cls || '') }, rows.map((r) => el('tr', {}, r.map((v) => el('td', { text: Number.isNaN(v) ? 'pad' : fmt(v, digits) })))));
}
function unitForm() {
  const f = $('unit-form');
  const sel = el('select', { id: 'unit-layer' }, convs.map((r) => el('option', { value: r.name, text: r.name })));
  const num = (id, label) => el('label', {}, label + ' ', el('input', { id, type: 'number', min: '0', value: '0', class: 'small' }));
  f.append(el('label', {}, 'layer ', sel), num('unit-channel', 'channel'), num('unit-row', 'row'), num('unit-col', 'col'),
    el('button', { type: 'button', text: 'Show', onclick: () => L.openUnit({ layer: sel.value, channel: +$('unit-channel').value, row: +$('unit-row').value, col: +$('unit-col').value }) }));
}
L.renderSteps = function renderSteps(u, hide) {
  const box = el('div', { class: 'steps' });
  for (const s of u.steps) {
    const check = hide ? null : el('p', { class: 'check', text: `computed here ${fmt(s.result, 5)} · the ONNX model ${fmt(s.onnx, 5)} · difference ${Math.abs(s.result - s.onnx).toExponential(1)}` });
    if (s.kind === 'conv') {
      const dg = hide ? 4 : 3;      // an exercise shows 4 decimals: enough for the answer to 2
      const parts = s.patch.map((p, k) => el('div', { class: 'chan' }, el('h4', { text: `input channel ${s.input_channels[k]}` }),
        el('div', { class: 'trio' }, el('div', {}, el('small', { text: 'patch' }), numTable(p, '', dg)), el('span', { class: 'op', text: '×' }),
          el('div', {}, el('small', { text: 'kernel' }), numTable(s.kernel[k], 'kernel', dg)),
          hide ? null : el('span', { class: 'op', text: '=' }), hide ? null : el('div', {}, el('small', { text: 'products' }), numTable(s.products[k])))));
      const shown = parts.slice(0, 8);
      box.append(el('div', { class: 'step' }, el('h3', { text: `${s.layer}: convolution` }),
        el('p', { text: `rows ${s.rows.join(', ')} · cols ${s.cols.join(', ')} of ${s.input_from === 'input' ? 'the normalized image' : s.input_from} (outside the map: ${s.padding_mode === 'zeros' ? 'zero' : s.padding_mode} padding)` }),
        shown, parts.length > 8 ? el('p', { text: `… and ${parts.length - 8} more input channels` }) : null,
        hide ? el('p', { text: `bias ${s.bias == null ? 'none' : fmt(s.bias, 4)}` }) :
          el('p', { class: 'eq', text: `sum of products ${fmt(s.sum, 5)} + bias ${s.bias == null ? 0 : fmt(s.bias, 5)} = ${fmt(s.result, 5)}` }), check));
    } else if (!hide && s.kind === 'batchnorm') {
      box.append(el('div', { class: 'step' }, el('h3', { text: `${s.layer}: BatchNorm` }),
        el('p', { class: 'eq', text: `(${fmt(s.input, 4)} − mean ${fmt(s.mean, 4)}) / √(var ${fmt(s.var, 4)} + ${s.eps}) = ${fmt(s.normalized, 4)}; × γ ${fmt(s.gamma, 4)} + β ${fmt(s.beta, 4)} = ${fmt(s.result, 5)}` }), check));
    } else if (!hide && s.kind === 'activation') {
      box.append(el('div', { class: 'step' }, el('h3', { text: `${s.layer}: ${s.type}` }),
        el('p', { class: 'eq', text: `${s.formula}: ${fmt(s.input, 5)} → ${fmt(s.result, 5)}` }), check));
    } else if (!hide && s.kind === 'pool') {
      box.append(el('div', { class: 'step' }, el('h3', { text: `${s.layer}: ${s.pool} pool, window (${s.window.join(', ')})` }),
        numTable(s.values), el('p', { class: 'eq', text: `${s.pool === 'max' ? 'max' : 'mean'} = ${fmt(s.result, 5)}` }), check));
    }
  }
  return box;
};
L.drawUnit = function drawUnit(u) {
  const box = $('unit');
  if (!L.current.outs) return;
  box.replaceChildren();
  $('unit-layer').value = u.layer; $('unit-channel').value = u.channel; $('unit-row').value = u.row; $('unit-col').value = u.col;
  try {
    const r = L.unitSteps(u.layer, u.channel, u.row, u.col, L.current.outs, L.current.x, L.weight);
    box.append(el('h2', { text: `${u.layer}, channel ${u.channel}, row ${u.row}, col ${u.col}` }), L.renderSteps(r));
  } catch (e) {
    box.append(el('p', { class: 'bad', text: e.message }));
  }
};
L.views.unit = () => { if (L.unitShown) L.drawUnit(L.unitShown); else L.openUnitDefault(); };
L.openUnitDefault = () => { const c = convs[0]; L.unitShown = { layer: c.name, channel: 0, row: Math.floor(c.shape[1] / 2), col: Math.floor(c.shape[2] / 2) }; L.drawUnit(L.unitShown); };

// ---------------------------------------------------------------- head and softmax
L.drawHead = function drawHead() {
  const box = $('head');
  if (!L.current.outs) return;
  box.replaceChildren();
  const h = L.headSteps(L.current.outs);
  if (P.head && h.logit_js != null) {
    box.append(el('h2', { text: `${P.head.name}: the class score of ${P.classes[h.target]}` }),
      el('p', { text: `logit = Σ input × weight + bias over ${h.input.length} inputs. The ten largest terms:` }),
      el('table', { class: 'nums wide' }, el('tr', {}, ['input #', 'input', 'weight', 'product'].map((t) => el('th', { text: t }))),
        h.top_terms.map((j) => el('tr', {}, [j, fmt(h.input[j], 4), fmt(h.input[j] ? h.contributions[j] / h.input[j] : 0, 4), fmt(h.contributions[j], 4)].map((t) => el('td', { text: String(t) }))))),
      el('p', { class: 'eq', text: `(sum ${fmt(h.sum, 4)} + bias ${fmt(h.bias, 4)})${h.scale !== 1 ? ' × ' + h.scale + ' (the network scales its scores)' : ''} = ${fmt(h.logit_js, 4)} (the ONNX model: ${fmt(h.logits[h.target], 4)})` }));
  }
  const s = h.softmax;
  box.append(el('h2', { text: 'Softmax: scores → probabilities' }),
    el('p', { text: `subtract the largest score ${fmt(s.max, 4)}, take eˣ, divide by their sum ${fmt(s.sum, 4)}` }),
    el('table', { class: 'nums wide' }, el('tr', {}, ['class', 'score', 'score − max', 'eˣ', 'probability'].map((t) => el('th', { text: t }))),
      h.logits.map((v, k) => k).sort((a, b) => h.logits[b] - h.logits[a]).slice(0, 20).map((k) => el('tr', { class: k === h.top ? 'mark' : '' },
        [P.classes[k], fmt(h.logits[k], 4), fmt(s.shifted[k], 4), fmt(s.exp[k], 5), fmt(s.probs[k], 5)].map((t) => el('td', { text: String(t) }))))));
};

// ---------------------------------------------------------------- what if: paint, or change one kernel weight
let brush = 1;
L.drawWhatIf = function drawWhatIf() {
  const box = $('whatif');
  if (!L.current.outs || box.dataset.built === String(L.current.index) + ':' + L.whatIfStamp) { if (L.updateWhatIf) L.updateWhatIf(); return; }
  box.dataset.built = String(L.current.index) + ':' + L.whatIfStamp;
  box.replaceChildren();
  const cv = L.imageCanvas(L.current.x, 256);
  cv.classList.add('paint');
  const [c, h, w] = P.input_shape;
  let down = false, pending = false;
  const paint = (ev) => {
    const y = Math.floor(ev.offsetY / cv.clientHeight * h), x = Math.floor(ev.offsetX / cv.clientWidth * w), r = Math.max(0, Math.round(h / 32));
    for (let dy = -r; dy <= r; dy++) for (let dx = -r; dx <= r; dx++) {
      const yy = y + dy, xx = x + dx;
      if (yy >= 0 && yy < h && xx >= 0 && xx < w) for (let k = 0; k < c; k++) L.current.x[k * h * w + yy * w + xx] = brush;
    }
    const img = L.imageCanvas(L.current.x, 1);
    cv.getContext('2d').drawImage(img, 0, 0);
    if (!pending) { pending = true; requestAnimationFrame(async () => { L.current.outs = await L.run(L.current.x, L.weight); pending = false; L.refreshLive(); }); }
  };
  cv.addEventListener('pointerdown', (ev) => { down = true; paint(ev); });
  cv.addEventListener('pointermove', (ev) => { if (down) paint(ev); });
  window.addEventListener('pointerup', () => { down = false; });
  const conv = L.layerByName[P.editable], [co, cin, kh, kw] = conv.weight.shape;
  const chSel = el('select', {}, Array.from({ length: co }, (_, k) => el('option', { value: k, text: `filter ${k}` })));
  const grid = el('div', { class: 'kernel-edit' });
  const drawKernel = () => {
    grid.replaceChildren();
    const o = +chSel.value;
    for (let k = 0; k < cin; k++) {
      const t = el('table', { class: 'nums' });
      for (let i = 0; i < kh; i++) {
        const tr = el('tr');
        for (let j = 0; j < kw; j++) {
          const idx = ((o * cin + k) * kh + i) * kw + j;
          const inp = el('input', { type: 'number', step: '0.05', value: L.weight[idx].toFixed(3), class: 'w', 'data-index': idx });
          inp.addEventListener('change', async () => { const v = parseFloat(inp.value); if (!Number.isFinite(v)) return; L.weight[idx] = v; L.current.outs = await L.run(L.current.x, L.weight); L.refreshLive(); });
          tr.append(el('td', {}, inp));
        }
        t.append(tr);
      }
      grid.append(el('div', { class: 'chan' }, el('small', { text: `input channel ${k}` }), t));
    }
  };
  chSel.addEventListener('change', drawKernel);
  drawKernel();
  const live = el('div', { id: 'whatif-live' });
  box.append(el('div', { class: 'whatif-grid' },
    el('div', {}, el('h3', { text: 'Paint on the image' }),
      el('div', {}, el('button', { type: 'button', text: 'white brush', onclick: () => { brush = 1; } }), el('button', { type: 'button', text: 'black brush', onclick: () => { brush = 0; } }),
        el('button', { type: 'button', text: 'start again', onclick: () => { L.weight = L.defaultWeight(); L.whatIfStamp = Date.now(); L.setImage(L.current.index < 0 ? 0 : L.current.index); } })),
      cv),
    el('div', {}, el('h3', { text: `Change a kernel weight of ${P.editable}` }), chSel, grid)), live);
  L.updateWhatIf = () => {
    const { outs } = L.current;
    const { probs } = L.softmax(outs.logits.data);
    live.replaceChildren(el('h3', { text: 'Every layer and the class scores, live' }), L.scoreBars(probs, L.current.label),
      el('div', { class: 'strip' }, L.layers.filter((r) => r.type === 'Conv2d' || r.pool).slice(0, 12).map((r) => el('div', { class: 'mini' },
        el('small', { text: r.name }), el('div', {}, [0, 1, 2].filter((k) => k < outs[r.name].dims[0]).map((k) => L.mapCanvas(outs[r.name], k, 48)))))));
  };
  L.updateWhatIf();
};
L.whatIfStamp = 0;
L.refreshLive = () => { L.updateWhatIf && L.updateWhatIf(); L.drawOverview(); L.drawHead(); };

L.initViews = function initViews() {
  $('title').textContent = P.title;
  $('subtitle').textContent = `${P.model}${P.dataset ? ' on ' + P.dataset : ''} · ${P.classes.length} classes · input ${P.input_shape.join(' × ')}${P.source_file ? ' · from ' + P.source_file : ''}`;
  $('footer').textContent = P.images_note;
  thumbs();
  unitForm();
};
}
