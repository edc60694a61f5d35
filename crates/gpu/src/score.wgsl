// One invocation per ad: the request side of the model over one cached ad-side row.
//   logit_i = Σ_j relu(proj_i[j] + q[j]) · w2[j] + a_i · (user + context) + b_i + b2
// Rows are [a (dim) | proj (hidden) | b], as hearth-core caches them.

struct Dims {
    n: u32,
    dim: u32,
    hidden: u32,
    width: u32,
    b2: f32,
    // Explicit padding: the host writes the uniform as 8 words.
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<f32>;
@group(0) @binding(2) var<storage, read> w2: array<f32>;
// q (hidden) followed by user + context (dim).
@group(0) @binding(3) var<storage, read> request: array<f32>;
@group(0) @binding(4) var<storage, read_write> logits: array<f32>;

@compute @workgroup_size(64)
fn score(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    // A catalog past one dimension's workgroup limit is dispatched as a 2-D grid of 1-D runs.
    let i = gid.y * groups.x * 64u + gid.x;
    if (i >= dims.n) {
        return;
    }
    let row = i * dims.width;
    var mlp = 0.0;
    for (var j = 0u; j < dims.hidden; j++) {
        mlp += max(rows[row + dims.dim + j] + request[j], 0.0) * w2[j];
    }
    var dot = 0.0;
    for (var k = 0u; k < dims.dim; k++) {
        dot += rows[row + k] * request[dims.hidden + k];
    }
    logits[i] = mlp + dot + rows[row + dims.dim + dims.hidden] + dims.b2;
}
