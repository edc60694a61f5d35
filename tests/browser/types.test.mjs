// The SDK's TypeScript types (www/hearth.d.ts, and the module's www/pkg/hearth.d.ts it imports)
// compile under --strict in a publisher's browser project that has nothing else: a directory of
// its own with only those two files and a publisher's code (tests/types/usage.ts), ES2022 and
// DOM libraries, and no @types (no node_modules anywhere above it). usage.ts also checks that
// misuse is rejected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

test('www/hearth.d.ts types a publisher page strictly, with no @types and no other library', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-types-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // Nothing above the directory may lend it types (os.tmpdir() is outside the repository).
  for (let up = path.dirname(dir); up !== path.dirname(up); up = path.dirname(up)) {
    assert.ok(!fs.existsSync(path.join(up, 'node_modules')), `${up}/node_modules would lend the project types`);
  }
  fs.mkdirSync(path.join(dir, 'pkg'));
  fs.copyFileSync('www/hearth.d.ts', path.join(dir, 'hearth.d.ts'));
  fs.copyFileSync('www/pkg/hearth.d.ts', path.join(dir, 'pkg/hearth.d.ts'));
  fs.copyFileSync('tests/types/usage.ts', path.join(dir, 'usage.ts'));
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, target: 'ES2022', module: 'ES2022', moduleResolution: 'bundler',
      lib: ['ES2022', 'DOM'], types: [],
    },
    files: ['usage.ts'],
  }));
  const tsc = spawnSync(process.execPath, [path.resolve('node_modules/typescript/bin/tsc'), '-p', dir], { encoding: 'utf8' });
  assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
});
