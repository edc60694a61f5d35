// The SDK's TypeScript types (www/hearth.d.ts) compile against a publisher's usage under
// --strict, and reject misuse (tests/types/usage.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

test('www/hearth.d.ts types a publisher page, strictly', () => {
  const tsc = spawnSync('node_modules/.bin/tsc', [
    '--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022', '--moduleResolution', 'bundler',
    '--lib', 'es2022,dom', 'tests/types/usage.ts',
  ], { encoding: 'utf8' });
  assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
});
