//! hearth-gpu: the request side of Hearth's model as a WGSL compute kernel, run through wgpu
//! (WebGPU in the browser, Vulkan natively). It computes what hearth-core's tract scorer
//! computes from the cached ad-side rows, one invocation per ad, and hands the logits back for
//! `Engine::rank_scored`; caps, diversity and explanations stay in the core. When there is no
//! adapter the caller keeps ranking with tract.

use hearth_core::device::engine::Engine;
use hearth_core::model::forward::RequestSide;
use std::future::Future;
use thiserror::Error;
use wgpu::util::DeviceExt;

/// Threads per workgroup; must match `@workgroup_size` in score.wgsl.
const WORKGROUP: u32 = 64;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum GpuError {
    /// The platform: no adapter or device (the caller falls back to tract).
    #[error("no GPU device: {0}")]
    Device(String),
    /// The caller: inputs whose length does not match the loaded model or catalog.
    #[error("{what} has length {found}, expected {expected}")]
    Size { what: &'static str, expected: usize, found: usize },
    /// The platform: a buffer past this device's limits (the caller falls back to tract).
    #[error("{what} needs {needed} bytes; this device allows {limit}")]
    TooLarge { what: &'static str, needed: u64, limit: u64 },
    /// The caller: scoring asked for before a catalog was loaded.
    #[error("no catalog loaded")]
    NotLoaded,
    /// The platform: the dispatch or the read-back failed.
    #[error("GPU scoring failed: {0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, GpuError>;

pub struct GpuScorer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    adapter: String,
    /// Workgroups per dispatch dimension: the device's limit, lowered only by tests.
    max_groups: u32,
    loaded: Option<Loaded>,
}

/// What `load` put on the device for one catalog under one model.
struct Loaded {
    n: usize,
    dim: usize,
    hidden: usize,
    /// None for an empty catalog: there is nothing to bind or dispatch.
    gpu: Option<Bound>,
}

struct Bound {
    bind_group: wgpu::BindGroup,
    request: wgpu::Buffer,
    logits: wgpu::Buffer,
    groups: (u32, u32),
}

impl GpuScorer {
    /// The first adapter the platform offers, or `None` when there is none (no WebGPU in this
    /// browser, no Vulkan driver natively); errors are for an adapter that then fails.
    pub async fn new() -> Result<Option<GpuScorer>> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let options =
            wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() };
        let Ok(adapter) = instance.request_adapter(&options).await else {
            return Ok(None);
        };
        let info = adapter.get_info();
        let name = if info.name.is_empty() { "unnamed adapter".to_string() } else { info.name.clone() };
        let adapter_name = format!("{name} ({:?}, {})", info.device_type, info.backend);
        // The adapter's own limits rather than WebGPU's defaults, so a large catalog fits
        // wherever the hardware allows it; `load` checks against them.
        let descriptor =
            wgpu::DeviceDescriptor { label: Some("hearth"), required_limits: adapter.limits(), ..Default::default() };
        let (device, queue) = adapter.request_device(&descriptor).await.map_err(|e| GpuError::Device(e.to_string()))?;
        let module = device.create_shader_module(wgpu::include_wgsl!("score.wgsl"));
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("hearth score"),
            layout: None,
            module: &module,
            entry_point: Some("score"),
            compilation_options: Default::default(),
            cache: None,
        });
        let max_groups = device.limits().max_compute_workgroups_per_dimension.max(1);
        Ok(Some(GpuScorer { device, queue, pipeline, adapter: adapter_name, max_groups, loaded: None }))
    }

    /// The adapter in words, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, vulkan)".
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// Ads in the loaded catalog (0 before any load).
    pub fn len(&self) -> usize {
        self.loaded.as_ref().map_or(0, |l| l.n)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Embedding width of the loaded model (0 before any load): the request is `q` (hidden)
    /// followed by this many values of user + context.
    pub fn dim(&self) -> usize {
        self.loaded.as_ref().map_or(0, |l| l.dim)
    }

    /// Lowers the workgroups per dispatch dimension so a test can reach the 2-D dispatch with
    /// a small catalog; takes effect at the next `load`.
    #[doc(hidden)]
    pub fn limit_groups_per_dimension(&mut self, max: u32) {
        self.max_groups = max.clamp(1, self.max_groups);
    }

    /// Uploads a catalog's ad-side rows (`n × width`, width = dim + hidden + 1) and the model's
    /// output layer; call again whenever the catalog or the model changes. On error the
    /// previously loaded catalog stays.
    pub fn load(&mut self, catalog_side: &[f32], width: usize, dim: usize, hidden: usize, w2: &[f32], b2: f32) -> Result<()> {
        if width != dim + hidden + 1 {
            return Err(GpuError::Size { what: "ad-side row", expected: dim + hidden + 1, found: width });
        }
        if !catalog_side.len().is_multiple_of(width) {
            let whole = catalog_side.len() / width * width;
            return Err(GpuError::Size { what: "catalog side", expected: whole, found: catalog_side.len() });
        }
        if w2.len() != hidden {
            return Err(GpuError::Size { what: "w2", expected: hidden, found: w2.len() });
        }
        let n = catalog_side.len() / width;
        if n == 0 {
            self.loaded = Some(Loaded { n, dim, hidden, gpu: None });
            return Ok(());
        }
        let limits = self.device.limits();
        let rows_bytes = 4 * catalog_side.len() as u64;
        let storage_limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if rows_bytes > storage_limit {
            return Err(GpuError::TooLarge { what: "catalog side", needed: rows_bytes, limit: storage_limit });
        }
        // One invocation per ad; past one dimension's limit the workgroups go on in y.
        let per_dim = self.max_groups;
        let total = (n as u64).div_ceil(WORKGROUP as u64);
        let x = total.min(per_dim as u64);
        let y = total.div_ceil(x);
        if y > per_dim as u64 {
            return Err(GpuError::TooLarge {
                what: "dispatch (workgroups)",
                needed: total,
                limit: per_dim as u64 * per_dim as u64,
            });
        }
        let (n32, dim32, hidden32, width32) = (to_u32(n)?, to_u32(dim)?, to_u32(hidden)?, to_u32(width)?);
        let dims: Vec<u8> = [n32, dim32, hidden32, width32, b2.to_bits(), 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let init = |label, contents: &[u8], usage| {
            self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents, usage })
        };
        let storage = wgpu::BufferUsages::STORAGE;
        let dims = init("hearth dims", &dims, wgpu::BufferUsages::UNIFORM);
        let rows = init("hearth rows", &bytes(catalog_side), storage);
        // A zero-sized binding is invalid; a model with no hidden units still binds one word.
        let w2 = init("hearth w2", &bytes(if w2.is_empty() { &[0.0] } else { w2 }), storage);
        let request = init("hearth request", &vec![0; 4 * (hidden + dim).max(1)], storage | wgpu::BufferUsages::COPY_DST);
        let logits = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("hearth logits"),
            size: 4 * n as u64,
            usage: storage | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("hearth score"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[&dims, &rows, &w2, &request, &logits]
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
                .collect::<Vec<_>>(),
        });
        let gpu = Bound { bind_group, request, logits, groups: (x as u32, y as u32) };
        self.loaded = Some(Loaded { n, dim, hidden, gpu: Some(gpu) });
        Ok(())
    }

    /// [`GpuScorer::load`] with the engine's installed catalog and model.
    pub fn load_engine(&mut self, engine: &Engine) -> Result<()> {
        let p = &engine.pack().params;
        let b2 = p.get("b2").first().copied().unwrap_or(0.0);
        self.load(engine.catalog_side(), engine.scorer().width(), p.arch.dim, p.arch.hidden, p.get("w2"), b2)
    }

    /// Logits of the loaded catalog, in catalog order, for one request side: `q` (hidden) and
    /// user + context (dim). The work is checked and submitted when this is called; the future
    /// only waits for the read-back and borrows nothing, so calls may overlap (each reads into
    /// its own staging buffer, and the queue keeps their order).
    pub fn logits(&self, q: &[f32], user_plus_context: &[f32]) -> impl Future<Output = Result<Vec<f32>>> + 'static {
        let submitted = self.submit(q, user_plus_context);
        async move {
            match submitted? {
                None => Ok(Vec::new()),
                Some(pending) => pending.read().await,
            }
        }
    }

    fn submit(&self, q: &[f32], uc: &[f32]) -> Result<Option<Pending>> {
        let loaded = self.loaded.as_ref().ok_or(GpuError::NotLoaded)?;
        if q.len() != loaded.hidden {
            return Err(GpuError::Size { what: "q", expected: loaded.hidden, found: q.len() });
        }
        if uc.len() != loaded.dim {
            return Err(GpuError::Size { what: "user + context", expected: loaded.dim, found: uc.len() });
        }
        let Some(gpu) = &loaded.gpu else { return Ok(None) };
        let size = 4 * loaded.n as u64;
        // Validation and out-of-memory errors would otherwise go to the device's uncaptured
        // handler (a panic natively); the scope turns them into this call's error.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let request: Vec<f32> = q.iter().chain(uc).copied().collect();
        self.queue.write_buffer(&gpu.request, 0, &bytes(&request));
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("hearth staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("hearth score") });
        {
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("hearth score"), timestamp_writes: None });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &gpu.bind_group, &[]);
            pass.dispatch_workgroups(gpu.groups.0, gpu.groups.1, 1);
        }
        encoder.copy_buffer_to_buffer(&gpu.logits, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            // The receiver only goes away with the dropped future; nobody is left to tell.
            let _ = tx.send(r);
        });
        let errors = scope.pop();
        Ok(Some(Pending { device: self.device.clone(), staging, mapped: rx, errors: Box::pin(errors) }))
    }
}

/// A submitted scoring, waiting for its staging buffer to map.
struct Pending {
    device: wgpu::Device,
    staging: wgpu::Buffer,
    mapped: futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    errors: std::pin::Pin<Box<dyn Future<Output = Option<wgpu::Error>>>>,
}

impl Pending {
    async fn read(self) -> Result<Vec<f32>> {
        // Natively nothing completes until the device is polled; in the browser this is a no-op
        // and the map callback arrives from the event loop.
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Failed(e.to_string()))?;
        if let Some(e) = self.errors.await {
            return Err(GpuError::Failed(e.to_string()));
        }
        match self.mapped.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Failed(e.to_string())),
            Err(_) => return Err(GpuError::Failed("the device dropped the read-back".into())),
        }
        let out = {
            let view = self.staging.slice(..).get_mapped_range().map_err(|e| GpuError::Failed(e.to_string()))?;
            view.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        self.staging.unmap();
        Ok(out)
    }
}

/// The request side as the kernel reads it: `q` followed by user + context.
pub fn request_vector(rs: &RequestSide) -> Vec<f32> {
    rs.q.iter().copied().chain(rs.user.iter().zip(&rs.context).map(|(u, c)| u + c)).collect()
}

fn to_u32(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| GpuError::TooLarge { what: "catalog dimension", needed: v as u64, limit: u32::MAX as u64 })
}

/// WGSL storage is little-endian, as are wasm32 and the native targets Hearth builds for.
fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
