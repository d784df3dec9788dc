/**
 * bench-train: training throughput of the two image models the project trains
 * most, on the chosen tfjs backends, next to the same model and step in PyTorch
 * in the same call when a Python with torch is available (`apt-get install
 * python3-torch` gives Debian's CPU build):
 *   vit: the reference ViT (28×28×1 input, patch 4, width 64, depth 4, 2 heads, MLP 128)
 *   cnn: the CNN teacher, as `train.ts --arch cnn` builds it (conv 32, conv 32, pool, conv 64, pool, fc 128)
 * The fastText student has its own benchmark against the fastText CLI: scripts/bench-text.ts.
 *
 *   tsx scripts/bench-train.ts [--backend wasm] [--models vit,cnn] [--steps 20] [--json]
 *   tsx scripts/bench-train.ts --backends wasm,tensorflow   (each in turn, in one process: the native backend
 *                                                           after `npm run setup:native`)
 *
 * One step = forward, cross-entropy, backward, AdamW update, on random inputs
 * (throughput does not depend on the data), batch 64. Warm-up steps are not timed.
 * Ratios are tfjs / PyTorch measured in the same call: on a shared machine only they compare.
 * PyTorch runs with 1 thread and with one per core (or as --torch-threads / $TORCH_THREADS say),
 * and the faster counts: on a loaded machine its multi-threaded step measured 4× slower than its
 * single-threaded one.
 *
 * On the one-thread backends (wasm, cpu) each model is also timed with data-parallel training over
 * --workers N threads (train.ts --workers, src/train/parallel), the one-thread and N-thread steps
 * alternating in --rounds rounds so that both see the same load: its row gives the ratio to PyTorch
 * and the speed-up over one thread (with its spread over the rounds). The load average is printed
 * at the start and the end: Linux groups a session's threads (autogroup), so on a busy machine a
 * second thread adds little CPU time to the session, and the speed-up cannot show. Hence also, per
 * row, the process's CPU time per step, and for the N-thread rows a projection for free cores: one
 * thread's CPU time per step over the busiest thread's (Linux only; an estimate, not a timing).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { Command, Option } from 'commander';
import { intArg } from '../src/cli/run.ts';
import { BACKEND_CHOICES, selectBackend, tf, type BackendChoice } from '../src/train/backend.ts';
import { createDistillers, type Batch } from '../src/train/distill/index.ts';
import { createStudent, type CnnSpec, type StudentSpec, type VitSpec } from '../src/train/models/index.ts';
import { AdamW } from '../src/train/optim.ts';
import { batchGrads } from '../src/train/parallel/grads.ts';
import { startParallelGrads } from '../src/train/parallel/index.ts';

const MODELS = { vit: 'the reference ViT', cnn: 'the CNN teacher (32,32,64; fc 128)' } as const;
type ModelName = keyof typeof MODELS;

const program = new Command('bench-train')
  .description('training img/s of the reference ViT and the CNN teacher, tfjs against PyTorch (fastText: see bench-text.ts)')
  .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto'))
  .option('--backends <list>', 'several backends in turn, comma-separated (overrides --backend)')
  .option('--models <list>', `models, comma-separated: ${Object.keys(MODELS).join(', ')}`, 'vit,cnn')
  .option('--steps <n>', 'timed steps', intArg(1), 20)
  .option('--warmup <n>', 'untimed steps first', intArg(0), 3)
  .option('--batch-size <n>', 'batch size', intArg(1), 64)
  .option('--python <path>', 'a Python with torch (default: $DISTILLERY_PYTHON, python3, /usr/bin/python3)')
  .option('--torch-threads <list>', 'PyTorch thread counts to try, the fastest counts (default: $TORCH_THREADS, else 1 and one per core)')
  .option('--workers <n>', 'on wasm and cpu, also time data-parallel training over this many threads (1: off)', intArg(1), 2)
  .option('--rounds <n>', 'rounds in which the one-thread and --workers steps alternate', intArg(1), 3)
  .option('--json', 'print one JSON object as the last line', false)
  .addHelpText('after', '\nThe fastText student is benchmarked against the fastText CLI by scripts/bench-text.ts.');

const SPECS: Record<ModelName, StudentSpec> = {
  vit: { kind: 'vit', numClasses: 10, inputShape: [28, 28, 1], patchSize: 4, width: 64, depth: 4, heads: 2, mlpRatio: 2 } satisfies VitSpec,
  // train.ts --arch cnn: { kind: 'cnn', numClasses, inputShape } and the CnnSpec defaults.
  cnn: { kind: 'cnn', numClasses: 10, inputShape: [28, 28, 1] } satisfies CnnSpec,
};

const opts = program.parse().opts();
const choices = (opts.backends ? String(opts.backends).split(',') : [opts.backend]) as BackendChoice[];
for (const c of choices) if (!BACKEND_CHOICES.includes(c)) program.error(`--backends: ${c} is not one of ${BACKEND_CHOICES.join(', ')}`);
const models = String(opts.models).split(',') as ModelName[];
for (const m of models) if (!(m in MODELS)) program.error(`--models: ${m} is not one of ${Object.keys(MODELS).join(', ')}`);
const threadCounts = [
  ...new Set(
    String(opts.torchThreads ?? process.env.TORCH_THREADS ?? `1,${cpus().length}`)
      .split(',')
      .map(Number),
  ),
];
for (const n of threadCounts) if (!Number.isInteger(n) || n < 1) program.error(`--torch-threads: ${n} is not a positive integer`);

const load = { start: loadavg()[0], end: NaN };
console.error(`load average (1 min): ${load.start.toFixed(2)} on ${cpus().length} cores`);
type Measured = {
  model: ModelName;
  backend: string;
  workers: number;
  imgPerS: number;
  speedup: number | null;
  spread: number[] | null;
  cpuMs: number;
  projected: number | null;
};
const measured: Measured[] = [];
for (const choice of choices) {
  const backend = await selectBackend(choice);
  console.error(`backend: ${backend.detail}`);
  // The native backend already spreads a step over every core (train.ts refuses --workers there).
  const workers = backend.backend === 'wasm' || backend.backend === 'cpu' ? opts.workers : 1;
  for (const model of models) {
    const [one, many] = await tfjsImagesPerSecond(SPECS[model], workers > 1 ? [1, workers] : [1]);
    const base = { model, backend: backend.backend };
    measured.push({ ...base, workers: 1, imgPerS: one.imgPerS, speedup: null, spread: null, cpuMs: one.cpuMsPerStep, projected: null });
    if (many) {
      // Per round, N threads' img/s over one thread's: the spread says how much the load moved.
      const perRound = many.perRound.map((x, i) => x / one.perRound[i]);
      const spread = [Math.min(...perRound), Math.max(...perRound)].map((x) => round(x, 2));
      // With a free core per thread a step would take as long as its busiest thread's CPU time: a projection, not a measurement.
      const projected = many.busiestThreadMsPerStep ? round(one.cpuMsPerStep / many.busiestThreadMsPerStep, 2) : null;
      const speedup = round(many.imgPerS / one.imgPerS, 2);
      measured.push({ ...base, workers, imgPerS: many.imgPerS, speedup, spread, cpuMs: many.cpuMsPerStep, projected });
    }
  }
}
/**
 * Debian's python3-torch calls whatever libblas.so.3 is installed: the reference BLAS (libblas3) runs its Linear
 * layers ~10× slower than OpenBLAS (measured here: the ViT at 47 against 611 img/s), which would make a meaningless
 * baseline. One thread of 256×256 float32 products: OpenBLAS and MKL do tens of GFLOP/s, the reference BLAS ~2.
 */
const SLOW_BLAS_GFLOPS = 10;
const python = findTorchPython(opts.python);
const torch = Object.fromEntries(models.map((m) => [m, python ? fastestTorch(python, m) : null]));
const blasGflops = python ? torchBlasGflops(python) : null;
const rows = measured.map(({ model, backend, workers, imgPerS, speedup, spread, cpuMs, projected }) => ({
  model,
  backend,
  tfjs_img_per_s: round(imgPerS),
  torch_img_per_s: torch[model] ? round(torch[model]!.imgPerS) : null,
  torch_threads: torch[model]?.threads ?? null,
  ratio: torch[model] ? round(imgPerS / torch[model]!.imgPerS, 3) : null,
  workers,
  speedup_vs_1_worker: speedup,
  speedup_spread: spread,
  cpu_ms_per_step: round(cpuMs),
  projected_speedup_free_cores: projected,
}));
load.end = loadavg()[0];
// The goals of issue 11: tfjs / PyTorch ≥ 1.0 on the native backend, ≥ 0.5 on wasm.
const goal = (backend: string) => (backend === 'wasm' ? 0.5 : 1.0);
for (const r of rows) {
  const vs =
    r.ratio === null
      ? ''
      : `; pytorch (${r.torch_threads} threads) ${r.torch_img_per_s} img/s; ratio ${r.ratio} (goal >= ${goal(r.backend)})`;
  const speedup =
    r.speedup_vs_1_worker === null
      ? ''
      : `; ${r.speedup_vs_1_worker}x one thread (rounds ${r.speedup_spread!.join('-')}x; projected with free cores ${r.projected_speedup_free_cores ?? '-'}x)`;
  const label = r.workers > 1 ? `${r.backend} x${r.workers} workers` : r.backend;
  console.log(`${r.model} tfjs (${label}): ${r.tfjs_img_per_s} img/s${vs}${speedup}`);
}
for (const [m, t] of Object.entries(torch))
  if (t) console.log(`pytorch ${m}: ${t.tried.map((x) => `${x.threads} threads ${round(x.imgPerS)} img/s`).join(', ')}`);
if (!python) console.log('pytorch: no Python with torch found (apt-get install python3-torch); ratio not measured');
if (blasGflops !== null) {
  console.log(`pytorch matrix products: ${blasGflops} GFLOP/s on one thread`);
  if (blasGflops < SLOW_BLAS_GFLOPS)
    console.log(
      'WARNING: PyTorch runs on a slow BLAS (likely the reference libblas3): the ratios flatter tfjs. ' +
        'On Debian: apt-get install libopenblas0-pthread',
    );
}
console.log(`load average (1 min): ${load.start.toFixed(2)} at the start, ${load.end.toFixed(2)} at the end, ${cpus().length} cores`);
if (opts.json)
  console.log(
    JSON.stringify({
      rows,
      batch_size: opts.batchSize,
      steps: opts.steps,
      torch_threads_tried: threadCounts,
      torch_blas_gflops: blasGflops,
      rounds: opts.rounds,
      load_average: { start: round(load.start, 2), end: round(load.end, 2) },
      cores: cpus().length,
    }),
  );

function torchBlasGflops(python: string): number {
  const script = `
import time, torch
torch.set_num_threads(1)
a = torch.randn(256, 256); b = torch.randn(256, 256)
for _ in range(3): a @ b
n = 50; t0 = time.perf_counter()
for _ in range(n): a @ b
print(2 * 256 ** 3 * n / (time.perf_counter() - t0) / 1e9)
`;
  return round(Number(execFileSync(python, ['-c', script], { encoding: 'utf8' }).trim()), 1);
}

/** PyTorch at each thread count; the fastest is the baseline. */
function fastestTorch(python: string, model: ModelName) {
  const tried = threadCounts.map((n) => torchImagesPerSecond(python, model, opts.batchSize, opts.steps, opts.warmup, n));
  const best = tried.reduce((a, b) => (b.imgPerS > a.imgPerS ? b : a));
  return { ...best, tried };
}

/**
 * img/s of one training step (forward, the trainer's cross-entropy term, backward, AdamW) on each
 * of `threads` set-ups (1: the trainer's one-thread step; N: data-parallel over N threads), the
 * set-ups alternating in rounds (the order reversed every other round); also img/s per round.
 */
async function tfjsImagesPerSecond(
  spec: StudentSpec,
  threads: number[],
): Promise<Array<{ imgPerS: number; perRound: number[]; cpuMsPerStep: number; busiestThreadMsPerStep: number | null }>> {
  const setups: Stepper[] = [];
  for (const n of threads) setups.push(await stepper(spec, opts.batchSize, n));
  for (const s of setups) for (let i = 0; i < opts.warmup; i++) await s.step();
  const rounds = Math.min(opts.rounds, opts.steps);
  const secs = setups.map(() => [] as number[]);
  const cpu = setups.map(() => ({ all: 0, main: 0 }));
  const stepsIn = (r: number) => Math.floor((opts.steps * (r + 1)) / rounds) - Math.floor((opts.steps * r) / rounds);
  for (let r = 0; r < rounds; r++) {
    const order = setups.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      const t0 = performance.now();
      const [all0, main0] = [process.cpuUsage(), mainThreadCpuMs()];
      for (let k = 0; k < stepsIn(r); k++) await setups[i].step();
      secs[i].push((performance.now() - t0) / 1000);
      const all = process.cpuUsage(all0);
      cpu[i].all += (all.user + all.system) / 1000;
      cpu[i].main += mainThreadCpuMs() - main0;
    }
  }
  for (const s of setups) await s.close();
  const hasThreadCpu = !Number.isNaN(mainThreadCpuMs());
  return secs.map((ss, i) => ({
    imgPerS: (opts.batchSize * opts.steps) / ss.reduce((a, b) => a + b, 0),
    perRound: ss.map((x, r) => (opts.batchSize * stepsIn(r)) / x),
    cpuMsPerStep: cpu[i].all / opts.steps,
    // The busiest thread: main, or a worker's share of the rest of the process's CPU time (GC and tsx's thread included).
    busiestThreadMsPerStep: hasThreadCpu
      ? Math.max(cpu[i].main, (cpu[i].all - cpu[i].main) / Math.max(1, threads[i] - 1)) / opts.steps
      : null,
  }));
}

/** CPU time of the calling thread (Linux: /proc/thread-self/stat, 10 ms ticks), NaN elsewhere. */
function mainThreadCpuMs(): number {
  try {
    const fields = readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) * (1000 / 100);
  } catch {
    return NaN;
  }
}

interface Stepper {
  step(): Promise<void>;
  close(): Promise<void>;
}

/** A student, its AdamW and a random batch; its step computes the gradients on `threads` threads. */
async function stepper(spec: StudentSpec, batch: number, threads: number): Promise<Stepper> {
  const student = createStudent(spec, 1);
  const distillers = createDistillers(['ce'], { ceWeight: 1 }, { student: spec, seed: 1 });
  const opt = new AdamW(student.weights, { weightDecay: 0.05 });
  const b: Batch = {
    idx: Array.from({ length: batch }, (_, i) => i),
    x: tf.randomNormal([batch, 28, 28, 1]),
    hard: tf.tensor1d(
      Int32Array.from({ length: batch }, (_, i) => i % 10),
      'int32',
    ),
  };
  const c = { seed: 1, distill: ['ce'], settings: { ceWeight: 1 } };
  const parallel =
    threads > 1 ? await startParallelGrads({ workers: threads, spec, c, student, distillers, trained: student.weights }) : undefined;
  return {
    async step() {
      const r = parallel ? await parallel.grads(b) : batchGrads(student, distillers, student.weights, b);
      opt.apply(r.grads, 1e-3);
      r.value.dataSync();
      tf.dispose([r.value, ...Object.values(r.terms), ...Object.values(r.grads)]);
    },
    async close() {
      await parallel?.close();
      tf.dispose([b.x as tf.Tensor, b.hard!]);
      opt.dispose();
      student.dispose();
    },
  };
}

function findTorchPython(given?: string): string | undefined {
  const candidates = [given, process.env.DISTILLERY_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => !!c);
  return candidates.find((p) => spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);
}

/**
 * The same model and step in PyTorch: the ViT (pre-norm blocks, class token, learned positions) or the CNN
 * ('same' 3×3 convolutions, ReLU, 2×2 max-pools), AdamW.
 */
function torchImagesPerSecond(
  python: string,
  model: ModelName,
  batch: number,
  steps: number,
  warmup: number,
  threads: number,
): { imgPerS: number; threads: number } {
  const script = `
import time, torch, torch.nn as nn
torch.manual_seed(1)
torch.set_num_threads(${threads})
class Block(nn.Module):
    def __init__(s, d, h, m):
        super().__init__(); s.n1 = nn.LayerNorm(d); s.attn = nn.MultiheadAttention(d, h, batch_first=True); s.n2 = nn.LayerNorm(d)
        s.mlp = nn.Sequential(nn.Linear(d, m), nn.GELU(approximate='tanh'), nn.Linear(m, d))
    def forward(s, x):
        y = s.n1(x); x = x + s.attn(y, y, y, need_weights=False)[0]
        return x + s.mlp(s.n2(x))
class ViT(nn.Module):
    def __init__(s, p=4, d=64, depth=4, h=2, m=128, c=10):
        super().__init__(); s.p = p; s.embed = nn.Linear(p * p, d); s.cls = nn.Parameter(torch.zeros(1, 1, d))
        s.pos = nn.Parameter(torch.zeros(1, 1 + (28 // p) ** 2, d)); s.blocks = nn.Sequential(*[Block(d, h, m) for _ in range(depth)])
        s.norm = nn.LayerNorm(d); s.head = nn.Linear(d, c)
    def forward(s, x):
        b = x.shape[0]; p = s.p
        x = x.reshape(b, 28 // p, p, 28 // p, p).permute(0, 1, 3, 2, 4).reshape(b, -1, p * p)
        x = torch.cat([s.cls.expand(b, -1, -1), s.embed(x)], 1) + s.pos
        return s.head(s.norm(s.blocks(x))[:, 0])
def CNN():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(7 * 7 * 64, 128), nn.ReLU(), nn.Linear(128, 10))
model = ${model === 'vit' ? 'ViT()' : 'CNN()'}; opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05); loss_fn = nn.CrossEntropyLoss()
x = torch.randn(${batch}, 1, 28, 28); y = torch.arange(${batch}) % 10
def step():
    opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()
for _ in range(${warmup}): step()
t0 = time.perf_counter()
for _ in range(${steps}): step()
print(${batch} * ${steps} / (time.perf_counter() - t0), torch.get_num_threads())
`;
  const out = execFileSync(python, ['-c', script], { encoding: 'utf8' }).trim().split(/\s+/);
  return { imgPerS: Number(out[0]), threads: Number(out[1]) };
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
