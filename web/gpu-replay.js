// gpu-replay.js: the JS side of driver/backend_js.py (runs in the worker).
//
// Python decides WHAT to dispatch; this module does the per-call WebGPU work so that one Python->JS
// crossing does a whole job: `submit` replays a dispatch list recorded once at load time (one encoder,
// one compute pass per run of dispatches, one queue.submit), and `uploadShard` moves weight bytes from
// the shard cache straight into GPU buffers (they never enter the Python heap).
//
// Adapter choice: core WebGPU first; when there is none, or only a fallback (software) adapter, try
// requestAdapter({featureLevel: 'compatibility'}) and use it if it is a real (non-fallback) adapter.
// Limits the kernels need are raised to the adapter's maximum in requiredLimits (maxStorageBuffersPerShaderStage
// too: the more the device allows, the fewer dispatches qkv_rope_decode is split into).

const KIND_USAGE = () => ({
  storage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  uniform: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  readback: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
});
const BINDING_TYPE = { read: 'read-only-storage', read_write: 'storage', uniform: 'uniform' };
// Device knowledge from modelfmt/device.py (never edit by hand): the limits a manifest's requirements name with their
// WebGPU defaults, the limits raised to the adapter's maximum, the features asked for. `python -m pybuild` writes the
// table between the markers of the built copy; tests/test_pybuild.py checks this copy equals it.
export const DEVICE = /*@DEVICE@*/{"requiredLimits":[{"requirement":"max_storage_buffer_binding_size","limit":"maxStorageBufferBindingSize","default":134217728},{"requirement":"max_buffer_size","limit":"maxBufferSize","default":268435456},{"requirement":"max_storage_buffers_per_shader_stage","limit":"maxStorageBuffersPerShaderStage","default":8}],"raisedLimits":["maxStorageBufferBindingSize","maxBufferSize","maxComputeWorkgroupStorageSize","maxComputeInvocationsPerWorkgroup","maxComputeWorkgroupSizeX","maxComputeWorkgroupSizeY","maxComputeWorkgroupSizeZ","maxStorageBuffersPerShaderStage","maxComputeWorkgroupsPerDimension","maxUniformBufferBindingSize"],"wantedFeatures":["shader-f16","subgroups","timestamp-query","chromium-experimental-subgroup-matrix"]}/*@END@*/;

// What the adapter lacks for a manifest's requirements, as plain reasons ([] when it can run the model): the rules of
// modelfmt.device.unmet (a limit the device does not report has its WebGPU default).
export function checkRequirements(req, limits, features) {
  const problems = [];
  for (const f of (req && req.features) || []) {
    if (!features.includes(f)) problems.push(`the GPU lacks the WebGPU feature "${f}"`);
  }
  for (const { requirement, limit, default: dflt } of DEVICE.requiredLimits) {
    const need = (req && req[requirement]) || 0;
    const have = limits[limit] ?? dflt;
    if (need <= have) continue;
    const mib = limit !== 'maxStorageBuffersPerShaderStage';
    const fmt = (n) => (mib ? `${(n / 2 ** 20).toFixed(0)} MiB` : `${n}`);
    problems.push(`the model needs ${limit} ≥ ${fmt(need)}, this GPU allows ${fmt(have)}`);
  }
  return problems;
}

export class GpuUnavailable extends Error {
  constructor(m) { super(m); this.name = 'WebGPUNotAvailable'; this.kind = 'no-webgpu'; }
}

function limitsObject(limits) {
  const out = {};
  for (const k in limits) if (typeof limits[k] === 'number') out[k] = limits[k];
  return out;
}

// Pick an adapter: returns {adapter, mode} or throws GpuUnavailable with a plain explanation.
export async function pickAdapter(opts = {}) {
  if (!('gpu' in navigator) || !navigator.gpu) {
    throw new GpuUnavailable('This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge ' +
      'or another WebGPU browser; on Linux Chromium start it with --enable-unsafe-webgpu.');
  }
  let core = null;
  if (opts.mode !== 'compatibility') {
    try { core = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' }); } catch (e) { core = null; }
    if (core && !core.isFallbackAdapter && !core.info?.isFallbackAdapter) return { adapter: core, mode: 'core' };
  }
  let compat = null;
  try {
    compat = await navigator.gpu.requestAdapter({ featureLevel: 'compatibility', powerPreference: 'high-performance' });
  } catch (e) { compat = null; }
  const isFallback = (a) => !!(a && (a.isFallbackAdapter || a.info?.isFallbackAdapter));
  if (compat && (!isFallback(compat) || !core)) {
    const coreFeature = compat.features.has('core-features-and-limits');
    return { adapter: compat, mode: coreFeature ? 'core' : 'compatibility' };
  }
  if (core) return { adapter: core, mode: 'core (software fallback)' };
  throw new GpuUnavailable('WebGPU is present but no GPU adapter is available (blocked driver or no GPU). ' +
    'Update the graphics driver, or enable WebGPU in the browser flags.');
}

export function describeAdapter(adapter, mode) {
  const i = adapter.info || {};
  return {
    vendor: i.vendor || '', architecture: i.architecture || '', device: i.device || '',
    description: i.description || '', mode,
    fallback: !!(adapter.isFallbackAdapter || i.isFallbackAdapter),
    features: [...adapter.features].sort(),
    limits: limitsObject(adapter.limits),
  };
}

// Options every later openDevice call takes (the worker sets them per load: {noMatrix} from the page's bench mode).
let deviceOptions = {};
export function setDeviceOptions(o) { deviceOptions = { ...(o || {}) }; }

// Open a device with the wanted features and raised limits. Returns {device, info, features, limits}.
export async function openDevice(opts = {}) {
  opts = { ...deviceOptions, ...opts };
  const { adapter, mode } = await pickAdapter(opts);
  // opts.noMatrix: without chromium-experimental-subgroup-matrix (the prefill matmuls on FMA tiles; bench A/B)
  const requiredFeatures = DEVICE.wantedFeatures.filter((f) => adapter.features.has(f) &&
    !(opts.noMatrix && f === 'chromium-experimental-subgroup-matrix'));
  const requiredLimits = {};
  for (const k of DEVICE.raisedLimits) if (typeof adapter.limits[k] === 'number') requiredLimits[k] = adapter.limits[k];
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'llama3-webgpu' });
  // allocation failures during the load are collected here and reported as "out of memory" (popLoadScope)
  device.pushErrorScope('out-of-memory');
  const info = describeAdapter(adapter, mode);
  const features = [...device.features].sort();
  // the shaders' Caps use 'subgroups'; the manifest's requirements use WebGPU names
  // WGSL language features (packed_4x8_integer_dot_product gates the q4_0 int8 decode path)
  const languageFeatures = navigator.gpu.wgslLanguageFeatures ? [...navigator.gpu.wgslLanguageFeatures].sort() : [];
  // the matrix units' shapes (shaders.Caps.subgroup_matrix) and subgroup widths, from the adapter's info
  const ai = adapter.info || {};
  const matrixConfigs = [...(ai.subgroupMatrixConfigs || [])].map((c) => ({ componentType: c.componentType,
    resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K }));
  const subgroupSizes = [ai.subgroupMinSize || 0, ai.subgroupMaxSize || 0];
  return { device, info, features, languageFeatures, matrixConfigs, subgroupSizes, limits: limitsObject(device.limits),
    lost: device.lost };
}

// End the load's out-of-memory scope: throws a plain error if any allocation failed.
export async function popLoadScope(device) {
  const err = await device.popErrorScope();
  if (err) throw Object.assign(new Error(`GPU out of memory while loading the model (${err.message})`), { kind: 'oom' });
}

export function createBuffer(device, size, kind, label) {
  const usage = KIND_USAGE()[kind];
  if (usage === undefined) throw new Error(`unknown buffer kind ${kind}`);
  return device.createBuffer({ size, usage, label });
}

export function writeBuffer(device, buffer, offset, u8) {
  device.queue.writeBuffer(buffer, offset, u8, 0, u8.byteLength);
}

// Compile a kernel. Returns {pipe, bgl, label}; throws an Error naming the kernel with the WGSL messages.
export async function createPipeline(device, wgsl, entry, kinds, label) {
  // the layout first, in its own scope: a limit it exceeds (e.g. storage buffers per stage) is the real reason
  device.pushErrorScope('validation');
  const bgl = device.createBindGroupLayout({
    label,
    entries: kinds.map((k, i) => ({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type: BINDING_TYPE[k] } })),
  });
  const layoutErr = await device.popErrorScope();
  if (layoutErr) throw new Error(`kernel ${label} cannot run on this GPU: ${layoutErr.message.split('\n')[0]}`);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: wgsl, label });
  let pipe = null, err = null;
  try {
    pipe = await device.createComputePipelineAsync({
      label, layout: device.createPipelineLayout({ bindGroupLayouts: [bgl] }), compute: { module, entryPoint: entry },
    });
  } catch (e) { err = e; }
  const scoped = await device.popErrorScope();
  if (err || scoped) {
    let msgs = '';
    try {
      const info = await module.getCompilationInfo();
      msgs = info.messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; ');
    } catch (e) { /* compilation info is optional */ }
    throw new Error(`kernel ${label} failed to compile: ${msgs || (err || scoped).message}`);
  }
  compiled++;
  if (compileListener) compileListener(compiled);
  return { pipe, bgl, label };
}
let compiled = 0;
let compileListener = null;
export function setCompileListener(fn) { compiled = 0; compileListener = fn; }

// entries: [[buffer, offset, size], ...] in binding order
export function createBindGroup(device, pipeline, entries, label) {
  return device.createBindGroup({
    layout: pipeline.bgl, label,
    entries: entries.map(([buffer, offset, size], i) => ({ binding: i, resource: { buffer, offset, size } })),
  });
}

// ops: [[0, pipeline, bindGroup, x, y, z] | [1, src, srcOffset, dst, dstOffset, size], ...], recorded once.
export function submit(device, ops) {
  const enc = device.createCommandEncoder();
  let cp = null;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    if (op[0] === 0) {
      if (cp === null) cp = enc.beginComputePass();
      cp.setPipeline(op[1].pipe);
      cp.setBindGroup(0, op[2]);
      cp.dispatchWorkgroups(op[3], op[4], op[5]);
    } else {
      if (cp !== null) { cp.end(); cp = null; }
      enc.copyBufferToBuffer(op[1], op[2], op[3], op[4], op[5]);
    }
  }
  if (cp !== null) cp.end();
  device.queue.submit([enc.finish()]);
}

// Map a READBACK buffer, COPY the bytes (unmap detaches the ArrayBuffer), unmap.
export async function mapRead(buffer, offset, size) {
  await buffer.mapAsync(GPUMapMode.READ, offset, size);
  try {
    return new Uint8Array(buffer.getMappedRange(offset, size).slice(0));
  } finally {
    buffer.unmap();
  }
}

const staging = new WeakMap(); // device -> Map(size -> buffer)
export async function read(device, buffer, offset, size) {
  const padded = Math.max(256, 2 ** Math.ceil(Math.log2(Math.ceil(size / 4) * 4)));
  let pool = staging.get(device);
  if (!pool) { pool = new Map(); staging.set(device, pool); }
  let st = pool.get(padded);
  if (!st) { st = createBuffer(device, padded, 'readback', `staging${padded}`); pool.set(padded, st); }
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, offset, st, 0, Math.ceil(size / 4) * 4);
  device.queue.submit([enc.finish()]);
  return (await mapRead(st, 0, Math.ceil(size / 4) * 4)).subarray(0, size);
}

export async function sync(device) {
  await device.queue.onSubmittedWorkDone();
}

// The shard provider is set by the worker: async (index) => ArrayBuffer (verified bytes from the cache).
let shardProvider = null;
let uploadListener = null;
export function setShardProvider(fn, onUploaded) { shardProvider = fn; uploadListener = onUploaded || null; }

// Fill `buffer` with shard `index` (fetch/cache -> ArrayBuffer -> writeBuffer, all in JS).
export async function uploadShard(device, buffer, index) {
  if (!shardProvider) throw new Error('no shard provider: the worker did not set one');
  const ab = await shardProvider(index);
  const n = ab.byteLength;
  const PIECE = 8 << 20; // bounded staging per writeBuffer call
  for (let off = 0; off < n; off += PIECE) {
    const len = Math.min(PIECE, n - off);
    if (len % 4 === 0) {
      device.queue.writeBuffer(buffer, off, ab, off, len);
    } else { // the last piece of an odd-sized shard: pad to 4 bytes
      const tail = new Uint8Array(Math.ceil(len / 4) * 4);
      tail.set(new Uint8Array(ab, off, len));
      device.queue.writeBuffer(buffer, off, tail);
    }
  }
  if (uploadListener) uploadListener(index, n);
}
