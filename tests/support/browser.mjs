// Launching Debian's Chromium for the browser tests and the benchmark.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// WebGPU through SwiftShader (software Vulkan) so GPU paths work headless. Without these flags
// headless Chromium has navigator.gpu but no adapter: requestAdapter() resolves null.
export const WEBGPU_ARGS = [
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader',
  '--use-angle=swiftshader',
];

// No background network traffic (the machine may have no network at all).
const BASE_ARGS = [
  '--no-sandbox', // running as root in containers
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

// The same list is in webdriver.json for wasm-bindgen-test-runner.
export const CHROMIUM_ARGS = [...WEBGPU_ARGS, ...BASE_ARGS];

// Playwright gives every launch a fresh temporary --user-data-dir and adds --headless.
// `webgpu: false` launches without WEBGPU_ARGS: a browser with no WebGPU adapter.
export function launchChromium({ webgpu = true } = {}) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: webgpu ? CHROMIUM_ARGS : BASE_ARGS });
}

// Opens a page on the test server. Console errors and uncaught exceptions are
// collected in page.problems so a test can assert there were none.
export async function openPage(context, url) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // Chromium reports failed fetches as console errors without the URL; the
    // response handler below names them instead.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.problems.push(`console.error: ${m.text()}`);
  });
  page.on('response', (r) => r.status() >= 400 && page.problems.push(`HTTP ${r.status()} ${r.url()}`));
  if (url) await page.goto(url);
  return page;
}
