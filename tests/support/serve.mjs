// Tiny static file server for Hearth's www/ (no dependencies).
//
//   node tests/support/serve.mjs [--port N] [--host 127.0.0.1] [--quiet]
//
// URL space (everything else is 404; nothing outside these directories leaks):
//   /          -> www/            (demo/, bench/, pkg/ built by build-wasm.sh)
//   /models/   -> models/         (model packs: model.onnx, manifest.json)
//   /ort/      -> node_modules/onnxruntime-web/dist/   (bench reference engine)
// `/` redirects to /demo/. Port 0 (the default) picks a free port; the chosen
// URL is printed as the first stdout line: "serving http://...".
//
// Also importable: `startServer({port, host, quiet})` resolves to
// {server, url, close()}; the browser tests and the bench use that.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// Longest prefix first.
const MOUNTS = [
  ['/models/', path.join(ROOT, 'models')],
  ['/ort/', path.join(ROOT, 'node_modules', 'onnxruntime-web', 'dist')],
  ['/', path.join(ROOT, 'www')],
];

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm', // required by WebAssembly.instantiateStreaming
  '.onnx': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.ts': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

function resolvePath(urlPath) {
  let p;
  try {
    p = decodeURIComponent(urlPath.split('?')[0].split('#')[0]);
  } catch {
    return null;
  }
  p = path.posix.normalize(p);
  if (p.includes('\0')) return null;
  for (const [prefix, dir] of MOUNTS) {
    if (p === prefix.slice(0, -1)) p = prefix; // "/models" -> "/models/"
    if (!p.startsWith(prefix)) continue;
    const file = path.join(dir, p.slice(prefix.length));
    // normalize() already removed "..", this is belt and braces.
    return file === dir || file.startsWith(dir + path.sep) ? file : null;
  }
  return null;
}

function handler(quiet) {
  return (req, res) => {
    const log = (code) => quiet || console.log(`${code} ${req.method} ${req.url}`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return log(405);
    }
    if (req.url === '/') {
      res.writeHead(302, { Location: '/demo/' }).end();
      return log(302);
    }
    let file = resolvePath(req.url);
    if (file && req.url.split('?')[0].endsWith('/')) file = path.join(file, 'index.html');
    let stat = null;
    try {
      stat = file && fs.statSync(file);
    } catch {}
    if (stat && stat.isDirectory()) {
      // Directory without a trailing slash: redirect so relative URLs work.
      res.writeHead(301, { Location: req.url.split('?')[0] + '/' }).end();
      return log(301);
    }
    if (!stat || !stat.isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return log(404);
    }
    res.writeHead(200, {
      'Content-Type': MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
      'Content-Length': stat.size,
      // Development server: always revalidate, so a rebuilt www/pkg is picked up.
      'Cache-Control': 'no-cache',
      // Cross-origin isolation: gives performance.now() 5 us resolution instead
      // of 100 us (the bench times sub-millisecond calls). Everything is
      // same-origin, so nothing is blocked by it.
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
    });
    if (req.method === 'HEAD') return res.end(), log(200);
    fs.createReadStream(file).pipe(res);
    log(200);
  };
}

export function startServer({ port = 0, host = '127.0.0.1', quiet = true } = {}) {
  const server = http.createServer(handler(quiet));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const { port: p } = server.address();
      const url = `http://${host}:${p}`;
      resolve({ server, url, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
  };
  const { url } = await startServer({
    port: Number(opt('--port', process.env.PORT ?? 0)),
    host: opt('--host', '127.0.0.1'),
    quiet: args.includes('--quiet'),
  });
  console.log(`serving ${url}`);
}
