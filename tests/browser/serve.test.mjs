// tests/support/serve.mjs: MIME types the browser depends on, and nothing served
// outside its mounts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer } from '../support/serve.mjs';

let server;
before(async () => (server = await startServer()));
after(() => server.close());

// fetch() would normalise "..", so send raw paths with http.request.
function get(path, method = 'GET') {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(server.url);
    const req = http.request({ hostname, port, path, method }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], location: res.headers.location }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('serves the module, model and ort files with the right types', async () => {
  const cases = [
    ['/pkg/hearth_bg.wasm', 'application/wasm'],
    ['/pkg/hearth.js', 'text/javascript; charset=utf-8'],
    ['/models/default/manifest.json', 'application/json; charset=utf-8'],
    ['/models/default/model.onnx', 'application/octet-stream'],
    ['/ort/ort-wasm-simd-threaded.wasm', 'application/wasm'],
    ['/demo/', 'text/html; charset=utf-8'],
  ];
  for (const [path, type] of cases) assert.deepEqual(await get(path), { status: 200, type, location: undefined }, path);
  assert.equal((await get('/')).location, '/demo/');
  assert.equal((await get('/demo')).location, '/demo/');
});

test('refuses paths outside its mounts and other methods', async () => {
  for (const path of [
    '/../Cargo.toml', '/pkg/../../Cargo.toml', '/models/../Cargo.toml', '/ort/../package-lock.json',
    '/%2e%2e/Cargo.toml', '/models/%2e%2e/%2e%2e/Cargo.toml', '/%00', '/%E0%A4%A', '/nope.html', '//etc/passwd',
  ]) {
    assert.equal((await get(path)).status, 404, path);
  }
  assert.equal((await get('/demo/', 'POST')).status, 405);
});
