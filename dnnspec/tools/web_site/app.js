// Trains the exported step in the browser: the driver of docs/training-graph.md ("A driver
// in plain onnxruntime") in JavaScript, plus validation, reduce-on-plateau and early stop
// as `dnnspec train` does them (continuing a run's, when the site was exported from one).
// site.json (written by `dnnspec export --web`) describes the files; each epoch's sample
// order is precomputed there (numpy's permutation).
"use strict";

const $ = (id) => document.getElementById(id);
const TYPED = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array };
const FIXED = new Set(["step", "seed", "input", "target"]);
const YIELD_MS = 50; // hand the page back to the browser this often, so buttons respond

function setStatus(text) {
  $("status").textContent = text;
}

function note(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("notes").appendChild(item);
}

async function fetchBytes(file) {
  const response = await fetch(file);
  if (!response.ok) throw new Error(`${file}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

async function fetchJson(file) {
  return JSON.parse(new TextDecoder().decode(await fetchBytes(file)));
}

async function loadArray(entry) {
  const data = new TYPED[entry.dtype](await fetchBytes(entry.file));
  return { data, dtype: entry.dtype, shape: entry.shape };
}

function size(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

// The rows `rows` of `array` as a batch tensor.
function gather(array, rows) {
  const width = size(array.shape.slice(1));
  const out = new TYPED[array.dtype](rows.length * width);
  rows.forEach((row, i) => out.set(array.data.subarray(row * width, (row + 1) * width), i * width));
  return new ort.Tensor(array.dtype, out, [rows.length, ...array.shape.slice(1)]);
}

// The samples of a data part: the rows of its arrays (each input and target has one per sample).
function samplesOf(part) {
  return Object.values(part)[0].shape[0];
}

function range(start, end) {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

function scalar(dtype, value) {
  return dtype === "int64"
    ? new ort.Tensor("int64", BigInt64Array.of(BigInt(value)), [])
    : new ort.Tensor("float32", Float32Array.of(value), []);
}

// Sums of a pass's loss and metric statistics, finished as EpochStats.result() does.
class Stats {
  constructor(metricOutputs, targetWidth) {
    this.metrics = metricOutputs;
    this.targetWidth = targetWidth;
    this.loss = 0;
    this.samples = 0;
    this.sums = {};
  }

  add(out, n) {
    this.loss += Number(out.loss.data[0]) * n;
    this.samples += n;
    for (const m of this.metrics) {
      const values = Array.from(out[m.name].data, Number);
      const sum = this.sums[m.name] || values.map(() => 0);
      this.sums[m.name] = sum.map((s, i) => s + values[i]);
    }
  }

  result(prefix) {
    const record = { [`${prefix}loss`]: this.loss / Math.max(1, this.samples) };
    for (const m of this.metrics) {
      const total = this.sums[m.name];
      const key = prefix + m.name.replace(/^metric\./, "");
      if (total.length === 2 && m.shape.length === 1) record[key] = total[0] / Math.max(1, total[1]);
      else if (total.length === 1) {
        const count = m.per === "sample" ? this.samples : this.samples * this.targetWidth;
        record[key] = total[0] / Math.max(1, count);
      }
    }
    return record;
  }
}

// Whether `value` beats `best` by more than `minDelta` (training/early_stop.py's improves).
function improves(value, best, mode, minDelta) {
  if (best === null) return true;
  return mode === "min" ? value < best - minDelta : value > best + minDelta;
}

function plot(canvas, series) {
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const points = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  if (!points.length) return;
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 === y0) y1 = y0 + 1;
  const pad = 30;
  const X = (x) => pad + ((x - x0) / (x1 - x0)) * (canvas.width - 2 * pad);
  const Y = (y) => canvas.height - pad - ((y - y0) / (y1 - y0)) * (canvas.height - 2 * pad);
  g.fillStyle = "#555";
  g.font = "11px sans-serif";
  g.fillText(y1.toPrecision(3), 2, pad - 4);
  g.fillText(y0.toPrecision(3), 2, canvas.height - pad + 12);
  for (const s of series) {
    g.strokeStyle = g.fillStyle = s.color;
    g.beginPath();
    s.points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
    if (s.dots) for (const [x, y] of s.points) g.fillRect(X(x) - 2, Y(y) - 2, 4, 4);
  }
}

const COLORS = ["#2b8a3e", "#862e9c", "#e67700", "#0b7285"];

class Trainer {
  constructor(site, iface, sessions, arrays) {
    Object.assign(this, { site, iface, arrays });
    [this.train, this.evaluator] = sessions;
    this.carried = iface.inputs.filter((i) => !FIXED.has(i.role)).map((i) => i.name);
    this.metricOutputs = iface.outputs.filter((o) => o.role === "metric");
    const target = site.feeds.find((f) => f.role === "target").name;
    this.targetWidth = size(arrays.train[target].shape.slice(1));
    this.step = site.state.step;
    this.samples = samplesOf(arrays.train);
    this.perEpoch = Math.ceil(this.samples / iface.batch);
    this.epoch = Math.floor(this.step / this.perEpoch);
    this.history = [];
    this.stepLosses = [];
    this.paused = false;
    this.resume = null;
    this.stopped = null;
    this.plateau = site.plateau && { ...site.plateau, best: null, waited: 0, current: 1.0 };
    this.stop = site.early_stop && { ...site.early_stop, best: null, waited: 0 };
    this.best = null;
    const done = site.progress; // a run's checkpoint: continue its bookkeeping
    if (done) {
      this.history = done.history.slice();
      this.stopped = done.stopped;
      if (this.plateau && done.plateau) {
        [this.plateau.best, this.plateau.waited, this.plateau.current] = done.plateau;
      }
      if (this.stop && done.early_stop) [this.stop.best, this.stop.waited] = done.early_stop;
    }
  }

  async pauseIfAsked() {
    if (this.paused) await new Promise((resolve) => (this.resume = resolve));
  }

  togglePause() {
    this.paused = !this.paused;
    $("pause").textContent = this.paused ? "Resume" : "Pause";
    if (!this.paused && this.resume) {
      this.resume();
      this.resume = null;
    }
    if (this.paused) setStatus(`paused at step ${this.step}`);
  }

  // One epoch in the epoch's precomputed order: full batches, then the partial last one.
  async runEpoch() {
    const { site, iface } = this;
    const n = this.samples;
    const first = (this.epoch - site.orders.first_epoch) * n;
    const order = this.arrays.orders.data.subarray(first, first + n);
    const stats = new Stats(this.metricOutputs, this.targetWidth);
    const seed = scalar("int64", iface.seed);
    let handed = performance.now();
    for (let start = 0; start < n; start += iface.batch) {
      await this.pauseIfAsked();
      const rows = Array.from(order.subarray(start, start + iface.batch));
      const feeds = { step: scalar("int64", this.step), seed };
      for (const name of this.carried) feeds[name] = this.state[name];
      for (const f of site.feeds) feeds[f.name] = gather(this.arrays.train[f.name], rows);
      const out = await this.train.run(feeds);
      for (const name of this.carried) this.state[name] = out[`${name}.next`];
      stats.add(out, rows.length);
      this.step += 1;
      this.stepLosses.push([this.step, Number(out.loss.data[0])]);
      if (performance.now() - handed > YIELD_MS) {
        setStatus(`epoch ${this.epoch + 1} of ${site.epochs}, step ${this.step}`);
        this.draw();
        await new Promise((resolve) => setTimeout(resolve, 0));
        handed = performance.now();
      }
    }
    return stats.result("");
  }

  // Loss and metrics of the validation data (or `data`) with the current parameters.
  async evaluate(data, prefix) {
    const stats = new Stats(this.metricOutputs, this.targetWidth);
    const n = samplesOf(data);
    const wanted = new Set(this.evaluator.inputNames);
    for (let start = 0; start < n; start += this.site.eval_batch) {
      const rows = range(start, Math.min(n, start + this.site.eval_batch));
      const feeds = {};
      for (const name of this.carried) if (wanted.has(name)) feeds[name] = this.state[name];
      for (const f of this.site.feeds) if (wanted.has(f.name)) feeds[f.name] = gather(data[f.name], rows);
      stats.add(await this.evaluator.run(feeds), rows.length);
    }
    return stats.result(prefix);
  }

  async run() {
    const { site } = this;
    const validation = this.arrays.validation;
    while (this.stopped === null && this.epoch < site.epochs) {
      const record = { epoch: this.epoch + 1, ...(await this.runEpoch()) };
      record.step = this.step;
      if (samplesOf(validation)) Object.assign(record, await this.evaluate(validation, "val_"));
      if (this.plateau) this.updatePlateau(record);
      this.history.push(record);
      this.epoch += 1;
      this.updateStop(record);
      this.log(record);
      this.draw();
    }
    return this.summary();
  }

  updatePlateau(record) {
    const p = this.plateau;
    record.lr_factor = p.current;
    if (improves(record[p.key], p.best, p.mode, p.min_delta)) [p.best, p.waited] = [record[p.key], 0];
    else p.waited += 1;
    if (p.waited > p.patience) {
      p.current = Math.max(p.current * p.factor, p.min_factor);
      p.waited = 0;
    }
    if (p.current !== record.lr_factor) this.state["control/lr_factor"] = scalar("float32", p.current);
  }

  updateStop(record) {
    const s = this.stop;
    if (!s) return;
    if (improves(record[s.key], s.best, s.mode, s.min_delta)) {
      [s.best, s.waited] = [record[s.key], 0];
      this.best = this.params();
    } else s.waited += 1;
    if (s.waited >= s.patience) {
      const epochs = s.patience === 1 ? "1 epoch" : `${s.patience} epochs`;
      this.stopped = `early stop: ${s.key} did not improve for ${epochs}`;
    }
  }

  params() {
    const out = {};
    for (const w of this.site.model.weights) out[w.name] = this.state[w.name].data.slice();
    return out;
  }

  summary() {
    const last = this.history[this.history.length - 1] || {};
    const metrics = Object.fromEntries(
      Object.entries(last).filter(([k]) => !["epoch", "step", "lr_factor"].includes(k)),
    );
    return {
      epochs: this.history.length,
      steps: this.step,
      loss: this.history.map((r) => r.loss),
      val_loss: this.history.map((r) => r.val_loss),
      metrics,
      stopped: this.stopped || "completed",
    };
  }

  log(record) {
    const shown = Object.entries(record).map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(4)}`);
    $("log").textContent += shown.join("  ") + "\n";
  }

  draw() {
    const epochPoint = (key) => this.history.map((r) => [r.step, r[key]]);
    plot($("loss"), [
      { points: this.stepLosses, color: "#999" },
      { points: epochPoint("loss"), color: "#1f5fbf", dots: true },
      { points: epochPoint("val_loss"), color: "#d9480f", dots: true },
    ]);
    const keys = Object.keys(this.history[0] || {}).filter(
      (k) => !["epoch", "step", "loss", "val_loss", "lr_factor"].includes(k),
    );
    $("metric-legend").innerHTML = keys
      .map((k, i) => `<span style="color:${COLORS[i % COLORS.length]}">${k}</span>`)
      .join("");
    plot(
      $("metrics"),
      keys.map((k, i) => ({ points: this.history.map((r) => [r.epoch, r[k]]), color: COLORS[i % COLORS.length], dots: true })),
    );
  }

  // model.onnx with the trained weights written over its initialisers' raw bytes (the
  // offsets come from the export, which checked them against the model's serialisation).
  modelFile(template) {
    const bytes = template.slice();
    const params = (this.stopped && this.best) || this.params();
    for (const w of this.site.model.weights) {
      const values = params[w.name];
      const raw = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      if (raw.length !== w.bytes) throw new Error(`${w.name}: ${raw.length} bytes, model.onnx holds ${w.bytes}`);
      bytes.set(raw, w.offset);
    }
    return new Blob([bytes], { type: "application/octet-stream" });
  }
}

async function configureRuntime(wanted) {
  ort.env.wasm.wasmPaths = new URL("./", location.href).href;
  if (self.crossOriginIsolated && typeof SharedArrayBuffer !== "undefined") {
    ort.env.wasm.numThreads = Math.min(4, navigator.hardwareConcurrency || 1);
  } else {
    ort.env.wasm.numThreads = 1;
    note(
      "WebAssembly threads are unavailable (the page is not cross-origin isolated): training on one " +
        "thread. A server that sends Cross-Origin-Opener-Policy: same-origin and " +
        "Cross-Origin-Embedder-Policy: require-corp enables them.",
    );
  }
  if (wanted !== "webgpu") return ["wasm"];
  const adapter = navigator.gpu && (await navigator.gpu.requestAdapter().catch(() => null));
  if (adapter) return ["webgpu", "wasm"];
  note("WebGPU is not available in this browser: training with WebAssembly.");
  $("backend").value = "wasm";
  return ["wasm"];
}

function showResult(value) {
  $("result").textContent = JSON.stringify(value);
}

async function main() {
  if (location.protocol === "file:") {
    setStatus(
      "This page must be served over HTTP (browsers do not let a page opened from a file read " +
        "the files beside it). In this folder run `python3 -m http.server 8000` and open " +
        "http://localhost:8000/",
    );
    return;
  }
  if (typeof WebAssembly === "undefined" || typeof ort === "undefined") {
    setStatus("This browser has no WebAssembly (or ort.min.js did not load): it cannot train here.");
    return;
  }
  const query = new URLSearchParams(location.search);
  if (query.get("backend")) $("backend").value = query.get("backend");
  const site = await fetchJson("site.json");
  const iface = await fetchJson("interface.json");
  const loadPart = async (part) => {
    const arrays = {};
    for (const f of site.feeds) arrays[f.name] = await loadArray(site.data[part][f.name]);
    return arrays;
  };
  const arrays = {
    train: await loadPart("train"),
    validation: await loadPart("validation"),
    orders: await loadArray(site.orders),
  };
  const stateBytes = await fetchBytes(site.state.file);
  const template = new Uint8Array(await fetchBytes(site.model.file));
  setStatus(`ready: ${samplesOf(arrays.train)} training samples, ${site.epochs} epochs`);
  $("start").disabled = false;

  const start = async () => {
    $("start").disabled = true;
    $("backend").disabled = true;
    const providers = await configureRuntime($("backend").value);
    const options = { executionProviders: providers };
    const sessions = [
      await ort.InferenceSession.create("train_step.onnx", options),
      await ort.InferenceSession.create("eval_step.onnx", options),
    ];
    const trainer = new Trainer(site, iface, sessions, arrays);
    trainer.state = {};
    for (const t of site.state.tensors) {
      const values = new Float32Array(stateBytes, t.offset, size(t.shape)).slice();
      trainer.state[t.name] = new ort.Tensor("float32", values, t.shape);
    }
    $("pause").disabled = false;
    $("evaluate").disabled = false;
    $("download").disabled = false;
    $("pause").onclick = () => trainer.togglePause();
    $("evaluate").onclick = async () => {
      const record = await trainer.evaluate(arrays.validation, "val_");
      note(`evaluated at step ${trainer.step}: ${JSON.stringify(record)}`);
    };
    window.trainedModel = () => trainer.modelFile(template); // for scripts driving the page
    $("download").onclick = () => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(window.trainedModel());
      link.download = "model.onnx";
      link.click();
      URL.revokeObjectURL(link.href);
    };
    setStatus(`training with ${providers[0] === "webgpu" ? "WebGPU" : "WebAssembly"}`);
    const summary = await trainer.run();
    $("pause").disabled = true;
    setStatus(`done: ${summary.stopped} after ${summary.epochs} epochs, ${summary.steps} steps`);
    showResult(summary);
  };
  $("start").onclick = () => start().catch(fail);
  if (query.get("autostart")) await start();
}

function fail(err) {
  setStatus(`error: ${err && err.message ? err.message : err}`);
  showResult({ error: String(err && err.message ? err.message : err) });
}

main().catch(fail);
