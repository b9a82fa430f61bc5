// CNN Lens lesson, from the checkpoint: confusion matrix, mistakes with saliency, training curves, filters,
// and the exercises (predict first, then reveal the model's answer; a printable worksheet with its key).
{
const { P, el, fmt } = L;
const $ = (id) => document.getElementById(id);
const thumb = (i, size) => el('img', { src: L.pngURL(P.images[i].png), class: 'pic', width: size, height: size, alt: `image ${i}` });
const label = (i) => (P.images[i].label == null ? 'no label' : P.classes[P.images[i].label]);

// ---------------------------------------------------------------- confusion matrix
L.views.confusion = function confusion() {
  const box = $('confusion'), cm = P.confusion;
  if (box.childElementCount) return;
  if (!cm.matrix) { box.append(el('p', { text: 'This lesson has no labelled test images, so there is no confusion matrix.' })); return; }
  const k = P.classes.length, cells = el('div', { id: 'cell-images' });
  const open = (a, b) => {
    const ids = cm.cells[`${a},${b}`] || [];
    cells.replaceChildren(el('h3', { text: `true ${P.classes[a]}, predicted ${P.classes[b]}: ${ids.length} of this lesson's images` }),
      el('div', { class: 'gallery' }, ids.map((i) => el('figure', {}, thumb(i, 64), el('figcaption', { text: `#${i}` })))));
  };
  box.append(el('p', { text: `Counts from ${cm.source}. Click a cell for this lesson's images in it.` }));
  if (k <= 20) {
    const max = Math.max(...cm.matrix.flat());
    box.append(el('table', { class: 'cm' }, el('tr', {}, el('th', { text: 'true \u2193 / predicted \u2192' }), P.classes.map((c) => el('th', { text: c }))),
      cm.matrix.map((row, a) => el('tr', {}, el('th', { text: P.classes[a] }), row.map((n, b) => el('td', {
        text: String(n), class: a === b ? 'diag' : '', style: `background: rgba(${a === b ? '40,120,200' : '220,80,40'},${(n / (max || 1)).toFixed(3)})`,
        onclick: () => open(a, b) }))))));
  } else {
    const pairs = [];
    cm.matrix.forEach((row, a) => row.forEach((n, b) => { if (a !== b && n) pairs.push([n, a, b]); }));
    pairs.sort((x, y) => y[0] - x[0]);
    box.append(el('h3', { text: 'The most frequent confusions' }), el('ul', {}, pairs.slice(0, 20).map(([n, a, b]) =>
      el('li', {}, el('button', { type: 'button', class: 'link', text: `${P.classes[a]} → ${P.classes[b]}: ${n}`, onclick: () => open(a, b) })))));
  }
  box.append(cells);
};

// ---------------------------------------------------------------- mistakes and saliency
L.views.mistakes = function mistakes() {
  const box = $('mistakes');
  if (box.childElementCount) return;
  if (!P.misclassified.length) { box.append(el('p', { text: P.images.some((im) => im.label != null && im.label !== im.prediction) ? 'This lesson was built without saliency maps for its misclassified images.' : 'The model gets every image in this lesson right (or the lesson has no labelled images).' })); return; }
  box.append(el('p', { text: 'Where the model looked: Grad-CAM (its last convolutional block) and Integrated Gradients (every pixel), for the class it chose and for the true class.' }));
  for (const m of P.misclassified) {
    const pics = Object.entries(m.maps).map(([key, png]) => {
      const [method, which] = key.split(':');
      return el('figure', {}, el('img', { src: L.pngURL(png), class: 'pic', alt: key }),
        el('figcaption', { text: `${method === 'gradcam' ? 'Grad-CAM' : 'Integrated Gradients'}, ${which} (${P.classes[which === 'true' ? m.true : m.predicted]})` }));
    });
    box.append(el('div', { class: 'mistake' }, el('figure', {}, thumb(m.image, 96), el('figcaption', { text: `#${m.image}: true ${P.classes[m.true]}, model says ${P.classes[m.predicted]}` })), pics));
  }
};

// ---------------------------------------------------------------- training curves (a small canvas chart of our own)
const COLORS = ['#1f6fb2', '#d9541e'];
function chart(title, series) {
  const W = 420, H = 220, pad = 40;
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) return el('p', { text: `${title}: not recorded.` });
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + (W - 2 * pad) * (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)), sy = (y) => H - pad - (H - 2 * pad) * (y1 === y0 ? 0.5 : (y - y0) / (y1 - y0));
  const cv = el('canvas', { width: W * 2, height: H * 2, class: 'chart', role: 'img', 'aria-label': title });
  const g = cv.getContext('2d');
  g.scale(2, 2); g.font = '12px sans-serif'; g.strokeStyle = '#888'; g.fillStyle = '#333';
  g.beginPath(); g.moveTo(pad, pad); g.lineTo(pad, H - pad); g.lineTo(W - pad, H - pad); g.stroke();
  g.textAlign = 'center'; g.fillText(title, W / 2, 16);
  g.fillText(`epoch ${x0}`, pad, H - pad + 16); g.fillText(`epoch ${x1}`, W - pad, H - pad + 16);
  g.textAlign = 'left'; g.fillText(fmt(y1, 3), 2, pad); g.fillText(fmt(y0, 3), 2, H - pad);
  series.forEach((s, i) => {
    if (!s.points.length) return;
    g.strokeStyle = g.fillStyle = COLORS[i % COLORS.length]; g.lineWidth = 2; g.beginPath();
    s.points.forEach((p, j) => (j ? g.lineTo(sx(p[0]), sy(p[1])) : g.moveTo(sx(p[0]), sy(p[1]))));
    g.stroke(); g.textAlign = 'right'; g.fillText(s.name, W - pad, pad + 14 * i);
  });
  cv.style.width = W + 'px';
  return cv;
}
L.views.training = function training() {
  const box = $('training');
  if (box.childElementCount) return;
  const h = P.history;
  if (!h.length) { box.append(el('p', { text: 'This checkpoint recorded no training history (an imported model).' })); return; }
  const s = (key) => h.filter((r) => key in r).map((r) => [r.epoch, r[key]]);
  box.append(chart('loss', [{ name: 'train', points: s('train_loss') }, { name: 'validation', points: s('val_loss') }]),
    chart('accuracy', [{ name: 'train', points: s('train_acc') }, { name: 'validation', points: s('val_acc') }]));
  if (P.metrics.test_acc != null) box.append(el('p', { text: `test accuracy ${fmt(100 * P.metrics.test_acc, 2)} %` }));
};

// ---------------------------------------------------------------- first-layer filters across epochs
L.views.filters = function filters() {
  const box = $('filters');
  if (box.childElementCount) return;
  const f = P.filters, img = el('img', { class: 'filters', alt: 'first-layer filters' }), cap = el('p');
  const set = (i) => { img.src = L.pngURL(f[i].png); cap.textContent = f[i].epoch == null ? `the ${f[i].count} trained filters of ${P.editable}` : `${P.editable}, ${f[i].count} filters, epoch ${f[i].epoch}${f[i].epoch === 0 ? ' (initialisation)' : ''}`; };
  const slider = el('input', { type: 'range', min: '0', max: String(f.length - 1), value: String(f.length - 1), id: 'filter-epoch' });
  slider.addEventListener('input', () => set(+slider.value));
  set(f.length - 1);
  box.append(f.length > 1 ? el('label', {}, 'epoch ', slider) : null, cap, img);
};

// ---------------------------------------------------------------- exercises
function filterTile(o, size) {
  const conv = L.layerByName[P.editable], [, cin, kh, kw] = conv.weight.shape, W = L.p(conv, 'weight');
  const vals = Array.from({ length: cin * kh * kw }, (_, i) => W[o * cin * kh * kw + i]), lo = Math.min(...vals), hi = Math.max(...vals);
  const cv = el('canvas', { width: kw, height: kh, class: 'map' }), img = cv.getContext('2d').createImageData(kw, kh);
  for (let i = 0; i < kh * kw; i++) {
    const px = [0, 1, 2].map((k) => vals[Math.min(k, cin - 1) * kh * kw + i]).map((v) => Math.round(255 * (v - lo) / ((hi - lo) || 1)));
    img.data.set([...px, 255], 4 * i);
  }
  cv.getContext('2d').putImageData(img, 0, 0);
  cv.style.width = cv.style.height = size + 'px';
  return cv;
}
const answerText = (e) => {
  if (e.kind === 'unit' || e.kind === 'relu') return fmt(e.answer, 2);
  if (e.kind === 'class') return P.classes[e.answer];
  if (e.kind === 'wrong') return `image ${e.answer} (true ${label(e.answer)}, the model says ${P.classes[P.images[e.answer].prediction]})`;
  return `filter ${e.answer}`;
};
async function exerciseCard(e, n) {
  const card = el('div', { class: 'exercise', 'data-kind': e.kind }), result = el('p', { class: 'result', role: 'status' });
  card.append(el('h3', { text: `Exercise ${n}` }), el('p', { text: e.question }));
  let guess = null;
  const reveal = el('button', { type: 'button', text: 'Check', disabled: '' });
  const choose = (v, btn) => { guess = v; reveal.removeAttribute('disabled'); for (const b of card.querySelectorAll('.choice')) b.classList.toggle('picked', b === btn); };
  if (e.kind === 'unit') {
    const { x, outs } = await L.forImage(e.data.image);
    const u = L.unitSteps(e.data.layer, e.data.channel, e.data.row, e.data.col, outs, x, L.defaultWeight());
    card.append(thumb(e.data.image, 64), L.renderSteps({ steps: [u.steps[0]] }, true));
    const inp = el('input', { type: 'number', step: '0.01', class: 'answer' });
    inp.addEventListener('input', () => { if (inp.value !== '') choose(parseFloat(inp.value)); });
    card.append(el('label', {}, 'your value: ', inp));
  } else if (e.kind === 'relu') {
    const inp = el('input', { type: 'number', step: '0.01', class: 'answer' });
    inp.addEventListener('input', () => { if (inp.value !== '') choose(parseFloat(inp.value)); });
    card.append(el('label', {}, 'your value: ', inp));
  } else if (e.kind === 'class') {
    card.append(thumb(e.data.image, 96), el('div', { class: 'choices' }, e.data.choices.map((k) => {
      const b = el('button', { type: 'button', class: 'choice', text: P.classes[k] }); b.addEventListener('click', () => choose(k, b)); return b;
    })));
  } else if (e.kind === 'wrong') {
    card.append(el('div', { class: 'choices' }, e.data.images.map((i) => {
      const b = el('button', { type: 'button', class: 'choice' }, thumb(i, 80), el('span', { text: `image ${i}: ${label(i)}` }));
      b.addEventListener('click', () => choose(i, b)); return b;
    })));
  } else if (e.kind === 'edge') {
    card.append(el('img', { src: L.pngURL(e.data.png), class: 'pic', width: 80, height: 80, alt: 'edge' }), el('div', { class: 'choices' }, e.data.choices.map((k) => {
      const b = el('button', { type: 'button', class: 'choice' }, filterTile(k, 48), el('span', { text: `filter ${k}` })); b.addEventListener('click', () => choose(k, b)); return b;
    })));
  }
  reveal.addEventListener('click', () => {
    const numeric = e.kind === 'unit' || e.kind === 'relu';
    const ok = numeric ? Math.abs(guess - e.answer) <= 0.01 + 1e-9 : guess === e.answer;   // right to 2 decimals
    result.textContent = `${ok ? 'Right' : 'Not quite'}: the model's answer is ${answerText(e)}.`;
    result.className = 'result ' + (ok ? 'good' : 'bad');
  });
  card.append(reveal, result);
  return card;
}
L.views.exercises = async function exercises() {
  const box = $('exercises');
  if (box.dataset.built) return;
  box.dataset.built = '1';
  box.append(el('p', { text: 'Predict first, then check: every answer comes from this model (numbers count as right within 0.01).' }));
  let n = 1;
  for (const e of P.exercises) box.append(await exerciseCard(e, n++));
  box.append(el('div', { class: 'answer-key' }, el('h2', { text: 'Answer key' }),
    el('ol', {}, P.exercises.map((e) => el('li', { text: answerText(e) })))));
  box.dataset.done = '1';
};

// ---------------------------------------------------------------- start
L.initViews();
L.status('Loading the model…');
L.started.then(async () => {
  await L.setImage(0, null, P.images[0].label);
  L.show('overview');
  L.status(`Ready: ${P.runtime}, running in this browser.`);
  document.body.dataset.readyMs = String(Math.round(performance.now()));   // time to interactive (the bench reads it)
  document.body.dataset.ready = '1';
}).catch((e) => {
  L.status(e && e.message ? e.message : String(e), true);
  document.body.dataset.ready = 'error';
});
}
